//! Admission control: who may append to this replica, and how much
//! (`docs/operating.md`, "Admission").
//!
//! - `mode = "open"`: anyone may append; each source address (an IPv4
//!   address, an IPv6 /64) has the section's quota.
//! - `mode = "keys"`: only the Ed25519 keys of the submitters file, which
//!   clients present as their TLS identity; each key has its own quota
//!   (the section's, unless its row says otherwise). Others get
//!   `Forbidden`. The file is read again on SIGHUP.
//!
//! A quota is entries a second with a burst, and bytes a day: two token
//! buckets, charged both or neither when an append arrives, before it
//! reaches the core. Over quota the append is answered `QuotaExceeded`
//! with the wait after which it would fit. Reads are never charged.
//!
//! Quota use lives in memory: a restart forgets it. Every replica applies
//! the same rules to the appends it is sent; a client that spread its
//! appends over all n replicas could use up to n quotas, so quotas are
//! best set per replica at 1/n of what a submitter may append in all.
//!
//! Sans-IO like the consensus core: every call takes `now`, a `Duration`
//! from the caller's origin.

pub mod submitters;

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bftlog_consensus::ClientId;
use bftlog_consensus::token_bucket::TokenBucket;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use submitters::Listed;

use crate::config::ConfigError;

/// Seconds in the day of `bytes_per_day`.
const DAY_S: u64 = 86_400;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdmissionMode {
    /// Anyone may append, within a quota per source address.
    #[default]
    Open,
    /// Only listed submitter keys may append, each within its quota.
    Keys,
}

/// `[admission]` as written in a replica file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionSection {
    /// "open" or "keys". Default "open".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<AdmissionMode>,
    /// Keys mode: the submitters file (relative to the replica file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitters_file: Option<PathBuf>,
    /// The quota of each address (open mode) or of each listed key that
    /// sets none of its own (keys mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries_per_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst_entries: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_per_day: Option<u64>,
    /// Open mode: addresses whose quota use is remembered. Default 65536.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tracked_addresses: Option<usize>,
}

/// One submitter's quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Entries a second, refilled continuously.
    pub entries_per_s: u64,
    /// Entries that may come at once after a rest; at least one full
    /// append (4,096 entries).
    pub burst_entries: u64,
    /// Entry bytes a day: a bucket of one day's bytes, refilled at
    /// `bytes_per_day / 86,400` a second.
    pub bytes_per_day: u64,
}

impl Quota {
    /// 1,000 entries/s, bursts of 8,192 (two full appends), 8 GiB a day.
    pub const DEFAULT: Quota = Quota {
        entries_per_s: 1_000,
        burst_entries: 8_192,
        bytes_per_day: 8 << 30,
    };

    /// No limit in practice (the largest a TOML integer holds): for
    /// trusted submitters and benchmarks.
    pub const UNLIMITED: Quota = Quota {
        entries_per_s: i64::MAX as u64,
        burst_entries: i64::MAX as u64,
        bytes_per_day: i64::MAX as u64,
    };

    pub(crate) fn check(&self) -> Result<(), &'static str> {
        if self.entries_per_s == 0 {
            return Err("entries_per_s must be at least 1");
        }
        if self.burst_entries < bftlog_spec::wire::MAX_APPEND_ENTRIES as u64 {
            return Err("burst_entries must be at least 4096 (one full append)");
        }
        if self.bytes_per_day < DAY_S {
            return Err("bytes_per_day must be at least 86400 (one byte a second)");
        }
        Ok(())
    }
}

/// Most addresses remembered in open mode, by default.
pub const DEFAULT_MAX_TRACKED_ADDRESSES: usize = 65_536;

/// Validated `[admission]`.
#[derive(Clone, Debug)]
pub struct AdmissionConfig {
    pub mode: AdmissionMode,
    pub quota: Quota,
    /// Keys mode: the submitters file's path.
    pub submitters_file: Option<PathBuf>,
    pub max_tracked_addresses: usize,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        AdmissionConfig {
            mode: AdmissionMode::Open,
            quota: Quota::DEFAULT,
            submitters_file: None,
            max_tracked_addresses: DEFAULT_MAX_TRACKED_ADDRESSES,
        }
    }
}

impl AdmissionConfig {
    /// Validates a section; paths in it are relative to `base`.
    pub fn from_section(section: &AdmissionSection, base: &Path) -> Result<Self, String> {
        let mode = section.mode.unwrap_or_default();
        let d = Quota::DEFAULT;
        let quota = Quota {
            entries_per_s: section.entries_per_s.unwrap_or(d.entries_per_s),
            burst_entries: section.burst_entries.unwrap_or(d.burst_entries),
            bytes_per_day: section.bytes_per_day.unwrap_or(d.bytes_per_day),
        };
        quota.check().map_err(|m| format!("admission.{m}"))?;
        let submitters_file = match (mode, &section.submitters_file) {
            (AdmissionMode::Keys, Some(file)) => Some(base.join(file)),
            (AdmissionMode::Keys, None) => {
                return Err("admission.mode = \"keys\" needs admission.submitters_file".into());
            }
            (AdmissionMode::Open, Some(_)) => {
                return Err(
                    "admission.submitters_file is read only in mode = \"keys\"; remove it or set the mode"
                        .into(),
                );
            }
            (AdmissionMode::Open, None) => None,
        };
        let max_tracked_addresses = section
            .max_tracked_addresses
            .unwrap_or(DEFAULT_MAX_TRACKED_ADDRESSES);
        if max_tracked_addresses < 1024 {
            return Err("admission.max_tracked_addresses must be at least 1024".into());
        }
        Ok(AdmissionConfig {
            mode,
            quota,
            submitters_file,
            max_tracked_addresses,
        })
    }
}

/// Reads the submitters file of `config` (`None` in open mode).
pub fn load_submitters(
    config: &AdmissionConfig,
) -> Result<Option<HashMap<[u8; 32], Listed>>, ConfigError> {
    match &config.submitters_file {
        Some(path) => submitters::load(path, config.quota).map(Some),
        None => Ok(None),
    }
}

/// Why an append was not admitted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Over quota: it would fit after `retry_after_ms`.
    QuotaExceeded { retry_after_ms: u64, what: String },
    /// Keys mode, and the client's key is not listed.
    Forbidden,
    /// Larger than the quota's burst or a day's bytes: it never fits.
    LargerThanQuota(String),
}

/// What one admitted append was charged, and to whom.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Charge {
    who: Submitter,
    entries: u64,
    bytes: u64,
}

/// What quotas are kept by: an IPv4 address, an IPv6 /64, or a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Submitter {
    V4([u8; 4]),
    V6Prefix([u8; 8]),
    Key([u8; 32]),
}

impl Submitter {
    fn of_address(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(v4) => Submitter::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Submitter::V4(v4.octets()),
                None => {
                    let mut prefix = [0; 8];
                    prefix.copy_from_slice(&v6.octets()[..8]);
                    Submitter::V6Prefix(prefix)
                }
            },
        }
    }

    /// The consensus core's name for this submitter (its mempool share).
    fn client_id(&self) -> ClientId {
        let mut h = Sha256::new();
        match self {
            Submitter::V4(a) => h.update([&b"bftlog ipv4 "[..], a].concat()),
            Submitter::V6Prefix(p) => h.update([&b"bftlog ipv6/64 "[..], p].concat()),
            Submitter::Key(k) => h.update([&b"bftlog key "[..], k].concat()),
        }
        let digest = h.finalize();
        ClientId(digest[..16].try_into().expect("16 of 32 bytes"))
    }
}

/// One submitter's buckets.
struct Usage {
    quota: Quota,
    entries: TokenBucket,
    bytes: TokenBucket,
    last_used: Duration,
}

impl Usage {
    fn new(quota: Quota, now: Duration) -> Self {
        Usage {
            quota,
            entries: TokenBucket::new(quota.entries_per_s, quota.burst_entries, now),
            bytes: TokenBucket::new(quota.bytes_per_day / DAY_S, quota.bytes_per_day, now),
            last_used: now,
        }
    }
}

/// A replica's admission state: the listed keys and every submitter's
/// quota use.
pub struct Admission {
    config: AdmissionConfig,
    /// Keys mode: the submitters file as last loaded.
    listed: HashMap<[u8; 32], Listed>,
    usage: HashMap<Submitter, Usage>,
    /// `usage`'s rows by last use, oldest first: open mode forgets the
    /// oldest when it holds `max_tracked_addresses`.
    by_last_use: BTreeSet<(Duration, Submitter)>,
}

impl Admission {
    /// Loads the submitters file in keys mode.
    pub fn new(config: AdmissionConfig) -> Result<Self, ConfigError> {
        let mut admission = Admission {
            config,
            listed: HashMap::new(),
            usage: HashMap::new(),
            by_last_use: BTreeSet::new(),
        };
        admission.reload()?;
        Ok(admission)
    }

    pub fn mode(&self) -> AdmissionMode {
        self.config.mode
    }

    /// Keys listed (keys mode), and submitters whose use is remembered.
    pub fn listed(&self) -> usize {
        self.listed.len()
    }

    pub fn tracked(&self) -> usize {
        self.usage.len()
    }

    /// Reads the submitters file again (keys mode; open mode has none):
    /// keys no longer listed lose their rows, keys whose quota changed
    /// start afresh on the new one, the others keep their use. On error
    /// the previous list stays in force. Returns the keys listed.
    pub fn reload(&mut self) -> Result<usize, ConfigError> {
        let Some(listed) = load_submitters(&self.config)? else {
            return Ok(0);
        };
        Ok(self.apply(listed))
    }

    /// Puts a freshly read list in force, as [`Admission::reload`] says.
    pub fn apply(&mut self, listed: HashMap<[u8; 32], Listed>) -> usize {
        let usage = &mut self.usage;
        let by_last_use = &mut self.by_last_use;
        usage.retain(|who, row| {
            let keep = match who {
                Submitter::Key(k) => listed.get(k).is_some_and(|l| l.quota == row.quota),
                _ => false,
            };
            if !keep {
                by_last_use.remove(&(row.last_used, *who));
            }
            keep
        });
        self.listed = listed;
        self.listed.len()
    }

    /// Gives back what [`Admission::admit`] charged, for an append the
    /// replica then refused without submitting it (overloaded, too
    /// large): a client retrying as told pays once. A submitter forgotten
    /// or unlisted since is not refunded.
    pub fn refund(&mut self, charge: &Charge) {
        if let Some(row) = self.usage.get_mut(&charge.who) {
            row.entries.give_back(charge.entries);
            row.bytes.give_back(charge.bytes);
        }
    }

    /// Charges an append of `entries` entries and `bytes` entry bytes to
    /// its submitter: the client's key in keys mode (`None`: it presented
    /// none), its address in open mode. Returns the submitter's name for
    /// the consensus core's mempool share, and the charge (to refund if
    /// the append is then refused).
    pub fn admit(
        &mut self,
        now: Duration,
        address: IpAddr,
        key: Option<[u8; 32]>,
        entries: u64,
        bytes: u64,
    ) -> Result<(ClientId, Charge), Refusal> {
        let (who, quota) = match self.config.mode {
            AdmissionMode::Open => (Submitter::of_address(address), self.config.quota),
            AdmissionMode::Keys => {
                let Some((key, listed)) = key.and_then(|k| Some((k, self.listed.get(&k)?))) else {
                    return Err(Refusal::Forbidden);
                };
                (Submitter::Key(key), listed.quota)
            }
        };
        if entries > quota.burst_entries {
            return Err(Refusal::LargerThanQuota(format!(
                "{entries} entries in one append exceed the submitter's burst of {}",
                quota.burst_entries
            )));
        }
        if bytes > quota.bytes_per_day {
            return Err(Refusal::LargerThanQuota(format!(
                "{bytes} entry bytes in one append exceed the submitter's {} bytes a day",
                quota.bytes_per_day
            )));
        }
        if !self.usage.contains_key(&who) {
            if self.config.mode == AdmissionMode::Open
                && self.usage.len() >= self.config.max_tracked_addresses
            {
                // The least recently used goes: an address that appended
                // since is kept, and one idle long enough is as good as
                // new anyway.
                if let Some((used, oldest)) = self.by_last_use.pop_first() {
                    self.usage.remove(&oldest);
                    debug_assert!(used <= now);
                }
            }
            self.usage.insert(who, Usage::new(quota, now));
            self.by_last_use.insert((now, who));
        }
        let row = self.usage.get_mut(&who).expect("inserted above");
        let waits = [
            (row.entries.can_take(now, entries).err(), "entries a second"),
            (row.bytes.can_take(now, bytes).err(), "bytes a day"),
        ];
        if let Some((wait, what)) = waits
            .into_iter()
            .filter_map(|(w, what)| Some((w?, what)))
            .max_by_key(|(w, _)| *w)
        {
            // Whole milliseconds, rounded up: retrying after exactly
            // this long fits.
            let retry_after_ms = wait
                .as_nanos()
                .div_ceil(1_000_000)
                .min(DAY_S as u128 * 1000);
            return Err(Refusal::QuotaExceeded {
                retry_after_ms: retry_after_ms as u64,
                what: what.to_owned(),
            });
        }
        row.entries.try_take(now, entries).expect("checked");
        row.bytes.try_take(now, bytes).expect("checked");
        self.by_last_use.remove(&(row.last_used, who));
        row.last_used = now;
        self.by_last_use.insert((now, who));
        Ok((
            who.client_id(),
            Charge {
                who,
                entries,
                bytes,
            },
        ))
    }
}

#[cfg(test)]
mod tests;
