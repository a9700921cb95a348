use super::*;
use crate::config::{init_cluster, strip_cluster_key};
use bftlog_spec::checkpoint::Checkpoint;
use bftlog_spec::merkle;

/// Copies `file` from operator `from`'s exchange folder to `to`'s.
fn pass(dirs: &[PathBuf], from: usize, to: usize, file: &str) {
    std::fs::copy(
        dirs[from].join(DKG_DIR).join(file),
        dirs[to].join(DKG_DIR).join(file),
    )
    .unwrap();
}

/// Four operators, each with only its own replica's files, run the three
/// rounds exchanging the published files; they get one cluster key, any
/// three of their shares sign under it, and a tampered file is refused.
#[test]
fn four_operators_make_one_cluster_key_that_any_quorum_signs_with() {
    let base = crate::test_dir::TestDir::new(&format!("dkg-{}", std::process::id()));
    let cluster = init_cluster(&base, "dkg.example/log", 4, [127, 0, 0, 1].into(), 7500).unwrap();
    strip_cluster_key(&base, cluster).unwrap();
    let dirs: Vec<PathBuf> = (0..4)
        .map(|i| {
            let dir = base.join(format!("operator-{i}"));
            std::fs::create_dir_all(dir.join(DKG_DIR)).unwrap();
            for file in [
                "cluster.toml".to_owned(),
                format!("replica-{i}.toml"),
                format!("replica-{i}.key"),
            ] {
                std::fs::copy(base.join(&file), dir.join(&file)).unwrap();
            }
            dir
        })
        .collect();
    // Round 2 needs everyone's round 1.
    round1(&dirs[0], 0).unwrap();
    assert!(
        round2(&dirs[0], 0)
            .unwrap_err()
            .to_string()
            .contains("missing")
    );
    for (i, dir) in dirs.iter().enumerate().skip(1) {
        round1(dir, i as u16).unwrap();
    }
    // Round 1 twice is refused (its secret is never replaced).
    assert!(round1(&dirs[1], 1).is_err());
    for i in 0..4 {
        for j in 0..4 {
            if i != j {
                pass(&dirs, i, j, &format!("round1-{i}.txt"));
            }
        }
    }
    // A round-1 file altered in transit fails its signature check.
    let tampered = dirs[3].join(DKG_DIR).join("round1-2.txt");
    let good = std::fs::read_to_string(&tampered).unwrap();
    let lines: Vec<&str> = good.lines().collect();
    let mut package = B64.decode(lines[3]).unwrap();
    package[40] ^= 1;
    std::fs::write(&tampered, good.replacen(lines[3], &B64.encode(package), 1)).unwrap();
    let err = round2(&dirs[3], 3).unwrap_err().to_string();
    assert!(err.contains("not signed by replica 2"), "{err}");
    std::fs::write(&tampered, &good).unwrap();
    for (i, dir) in dirs.iter().enumerate() {
        round2(dir, i as u16).unwrap();
    }
    for i in 0..4 {
        for j in 0..4 {
            if i != j {
                pass(&dirs, i, j, &format!("round2-{i}-to-{j}.txt"));
            }
        }
    }
    let finished: Vec<Finished> = (0..4)
        .map(|i| finish(&dirs[i], i as u16).unwrap())
        .collect();
    // One key and one public package for all.
    assert!(
        finished
            .iter()
            .all(|f| f.key.to_string() == finished[0].key.to_string()
                && f.public_package_sha256 == finished[0].public_package_sha256)
    );
    let keys: Vec<VerifierKey> = finished.into_iter().map(|f| f.key).collect();
    // Each operator's files now name the key and its share.
    let shares: Vec<ClusterShare> = (0..4)
        .map(|i| {
            let cfg =
                crate::config::ReplicaConfig::load(&dirs[i].join(format!("replica-{i}.toml")))
                    .unwrap();
            assert_eq!(
                cfg.cluster.cluster_key.as_ref().map(|k| k.to_string()),
                Some(keys[0].to_string())
            );
            cfg.consensus
                .cluster_share
                .expect("finish points the replica at its share")
        })
        .collect();
    let text = Checkpoint::new("dkg.example/log", 1, merkle::leaf_hash(b"x")).format();
    for which in [[0usize, 1, 3], [1, 2, 3]] {
        let mut nonces = BTreeMap::new();
        let mut commitments = BTreeMap::new();
        for &i in &which {
            let kp = &shares[i].key_package;
            let (n, c) = frost::round1::commit(kp.signing_share(), &mut rand_core06::OsRng);
            nonces.insert(*kp.identifier(), n);
            commitments.insert(*kp.identifier(), c);
        }
        let package = frost::SigningPackage::new(commitments, text.as_bytes());
        let signed: BTreeMap<_, _> = which
            .iter()
            .map(|&i| {
                let kp = &shares[i].key_package;
                let s = frost::round2::sign(&package, &nonces[kp.identifier()], kp).unwrap();
                (*kp.identifier(), s)
            })
            .collect();
        let signature = frost::aggregate(&package, &signed, &shares[0].public).unwrap();
        let bytes: [u8; 64] = signature.serialize().unwrap().try_into().unwrap();
        keys[0]
            .public_key()
            .verify_strict(
                text.as_bytes(),
                &ed25519_dalek::Signature::from_bytes(&bytes),
            )
            .unwrap();
    }
}
