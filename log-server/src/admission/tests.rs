use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

const S: Duration = Duration::from_secs(1);

fn quota(entries_per_s: u64, bytes_per_day: u64) -> Quota {
    Quota {
        entries_per_s,
        burst_entries: 4096,
        bytes_per_day,
    }
}

fn open(q: Quota) -> Admission {
    Admission::new(AdmissionConfig {
        quota: q,
        max_tracked_addresses: 1024,
        ..AdmissionConfig::default()
    })
    .unwrap()
}

fn v4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
}

#[test]
fn an_address_gets_its_burst_then_its_rate() {
    let mut a = open(quota(100, 1 << 30));
    let now = Duration::ZERO;
    assert!(a.admit(now, v4(1), None, 4096, 4096).is_ok());
    // The burst is spent: 50 entries need half a second.
    assert_eq!(
        a.admit(now, v4(1), None, 50, 50),
        Err(Refusal::QuotaExceeded {
            retry_after_ms: 500,
            what: "entries a second".into()
        })
    );
    // Another address is not charged for it.
    assert!(a.admit(now, v4(2), None, 4096, 4096).is_ok());
    // After the wait it fits, and a refused append charged nothing.
    assert!(a.admit(S / 2, v4(1), None, 50, 50).is_ok());
    assert!(a.admit(S / 2, v4(1), None, 1, 1).is_err());
}

#[test]
fn bytes_a_day_bind_when_entries_do_not() {
    // 864,000 bytes a day: 10 a second.
    let mut a = open(quota(1_000_000, 864_000));
    let now = Duration::ZERO;
    assert!(a.admit(now, v4(1), None, 1, 864_000).is_ok());
    assert_eq!(
        a.admit(now, v4(1), None, 1, 100),
        Err(Refusal::QuotaExceeded {
            retry_after_ms: 10_000,
            what: "bytes a day".into()
        })
    );
    // Neither bucket was charged by the refusal: the entry fits later.
    assert!(a.admit(10 * S, v4(1), None, 1, 100).is_ok());
    assert!(matches!(
        a.admit(now, v4(1), None, 1, 864_001),
        Err(Refusal::LargerThanQuota(_))
    ));
    assert!(matches!(
        a.admit(now, v4(3), None, 4097, 1),
        Err(Refusal::LargerThanQuota(_))
    ));
}

#[test]
fn an_ipv6_slash_64_is_one_submitter() {
    let mut a = open(quota(1, 1 << 30));
    let x = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 0, 0, 0, 1));
    let y = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, 9, 9, 9, 9));
    let other = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 3, 0, 0, 0, 1));
    let now = Duration::ZERO;
    let id = a.admit(now, x, None, 4096, 1).unwrap().0;
    assert!(a.admit(now, y, None, 1, 1).is_err(), "same /64, same quota");
    assert_ne!(a.admit(now, other, None, 1, 1).unwrap().0, id);
    // An IPv4-mapped address is its IPv4 address.
    let mapped = IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped());
    let id4 = a.admit(now, v4(1), None, 4096, 1).unwrap().0;
    assert!(a.admit(now, mapped, None, 1, 1).is_err());
    assert_ne!(id4, id);
}

#[test]
fn open_mode_remembers_a_bounded_number_of_addresses() {
    let mut a = open(quota(1, 1 << 30));
    for i in 0..5000u32 {
        let address = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
        assert!(
            a.admit(Duration::from_millis(i as u64), address, None, 1, 1)
                .is_ok()
        );
        assert!(a.tracked() <= 1024);
    }
    // The most recent ones are still charged; the oldest were forgotten
    // (a forgotten address starts with a full bucket).
    let recent = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + 4999u32));
    assert!(
        a.admit(Duration::from_secs(5), recent, None, 4096, 1)
            .is_err()
    );
    let forgotten = IpAddr::V4(Ipv4Addr::from(0x0a00_0000u32));
    assert!(
        a.admit(Duration::from_secs(5), forgotten, None, 4096, 1)
            .is_ok()
    );
}

fn key(seed: u8) -> [u8; 32] {
    ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
        .verifying_key()
        .to_bytes()
}

fn submitters_file(rows: &[(u8, Option<u64>)]) -> String {
    let mut text = String::new();
    for (seed, rate) in rows {
        let k = ed25519_dalek::SigningKey::from_bytes(&[*seed; 32]).verifying_key();
        text.push_str(&format!(
            "[[submitter]]\nname = \"s{seed}\"\nkey = \"{}\"\n",
            submitters::format_public_key(&k)
        ));
        if let Some(rate) = rate {
            text.push_str(&format!("entries_per_s = {rate}\n"));
        }
    }
    text
}

#[test]
fn keys_mode_admits_listed_keys_and_reloads_the_list() {
    let dir = crate::test_dir::TestDir::new(&format!("admission-keys-{}", std::process::id()));
    let path = dir.join("submitters.toml");
    std::fs::write(&path, submitters_file(&[(1, None), (2, Some(10))])).unwrap();
    let mut a = Admission::new(AdmissionConfig {
        mode: AdmissionMode::Keys,
        quota: quota(1000, 1 << 30),
        submitters_file: Some(path.clone()),
        max_tracked_addresses: 1024,
    })
    .unwrap();
    let now = Duration::ZERO;
    assert_eq!(a.listed(), 2);
    // The address does not matter; the key does.
    let one = a.admit(now, v4(1), Some(key(1)), 3596, 1).unwrap().0;
    assert_eq!(a.admit(now, v4(9), Some(key(1)), 500, 1).unwrap().0, one);
    assert!(a.admit(now, v4(1), Some(key(2)), 4096, 1).is_ok());
    // Key 2's own rate: 10 a second.
    assert!(matches!(
        a.admit(now, v4(1), Some(key(2)), 10, 1),
        Err(Refusal::QuotaExceeded {
            retry_after_ms: 1000,
            ..
        })
    ));
    assert_eq!(
        a.admit(now, v4(1), Some(key(3)), 1, 1),
        Err(Refusal::Forbidden)
    );
    assert_eq!(a.admit(now, v4(1), None, 1, 1), Err(Refusal::Forbidden));
    // Reload: key 1 kept (its use too), key 2 dropped, key 3 added.
    std::fs::write(&path, submitters_file(&[(1, None), (3, None)])).unwrap();
    assert_eq!(a.reload().unwrap(), 2);
    assert!(
        a.admit(now, v4(1), Some(key(1)), 4096, 1).is_err(),
        "use kept"
    );
    assert_eq!(
        a.admit(now, v4(1), Some(key(2)), 1, 1),
        Err(Refusal::Forbidden)
    );
    assert!(a.admit(now, v4(1), Some(key(3)), 1, 1).is_ok());
    // A broken file leaves the previous list in force.
    std::fs::write(&path, "[[submitter]]\nname = 1\n").unwrap();
    assert!(a.reload().is_err());
    assert!(a.admit(now, v4(1), Some(key(3)), 1, 1).is_ok());
    assert_eq!(a.tracked(), 2);
}

#[test]
fn sections_are_validated() {
    let base = Path::new("/etc/bftlog");
    let keys = AdmissionSection {
        mode: Some(AdmissionMode::Keys),
        ..Default::default()
    };
    assert!(
        AdmissionConfig::from_section(&keys, base)
            .unwrap_err()
            .contains("submitters_file")
    );
    let with_file = AdmissionSection {
        submitters_file: Some("s.toml".into()),
        ..keys
    };
    let c = AdmissionConfig::from_section(&with_file, base).unwrap();
    assert_eq!(c.submitters_file.unwrap(), base.join("s.toml"));
    let open_with_file = AdmissionSection {
        mode: Some(AdmissionMode::Open),
        ..with_file
    };
    assert!(AdmissionConfig::from_section(&open_with_file, base).is_err());
    let small_burst = AdmissionSection {
        burst_entries: Some(100),
        ..Default::default()
    };
    assert!(
        AdmissionConfig::from_section(&small_burst, base)
            .unwrap_err()
            .contains("burst_entries")
    );
    let c = AdmissionConfig::from_section(&AdmissionSection::default(), base).unwrap();
    assert_eq!(c.mode, AdmissionMode::Open);
    assert_eq!(c.quota, Quota::DEFAULT);
}

#[test]
fn a_refused_append_is_refunded() {
    let mut a = open(quota(100, 1 << 30));
    let now = Duration::ZERO;
    let (_, charge) = a.admit(now, v4(1), None, 4096, 4096).unwrap();
    assert!(a.admit(now, v4(1), None, 100, 100).is_err());
    // The replica refused that append (overloaded): the client retries
    // as told and pays once.
    a.refund(&charge);
    assert!(a.admit(now, v4(1), None, 4096, 4096).is_ok());
    // Never above the burst.
    a.refund(&charge);
    a.refund(&charge);
    assert!(a.admit(now, v4(1), None, 4096, 1).is_ok());
    assert!(a.admit(now, v4(1), None, 1, 1).is_err());
}
