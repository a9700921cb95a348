//! `bftlog init` and the files it writes: a new cluster's keys and
//! configuration, its cluster key (dealt, or removed for `bftlog dkg`),
//! and the shared files rewritten after a change.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bftlog_spec::note::{KeyType, SignerKey, VerifierKey};

use super::*;
use crate::admission::{AdmissionMode, AdmissionSection};

/// [`init_cluster_admitting`] in open admission mode.
pub fn init_cluster(
    dir: &Path,
    origin: &str,
    replicas: usize,
    host: std::net::IpAddr,
    base_port: u16,
) -> Result<Cluster, ConfigError> {
    init_cluster_admitting(dir, origin, replicas, host, base_port, AdmissionMode::Open)
}

/// The submitters file `bftlog init` writes in keys mode.
pub const SUBMITTERS_FILE: &str = "submitters.toml";
/// The submitter key `bftlog init` creates and lists in keys mode.
pub const FIRST_SUBMITTER_KEY_FILE: &str = "submitter.key";

/// Writes keys and configuration for a new cluster into `dir`: one
/// `replica-N.key` and `replica-N.toml` per replica, and `cluster.toml`;
/// in keys mode also `submitters.toml`, listing one new submitter key
/// (`submitter.key`). Refuses to overwrite an existing cluster.
pub fn init_cluster_admitting(
    dir: &Path,
    origin: &str,
    replicas: usize,
    host: std::net::IpAddr,
    base_port: u16,
    admission: AdmissionMode,
) -> Result<Cluster, ConfigError> {
    let cluster_path = dir.join("cluster.toml");
    if cluster_path.exists() {
        return Err(invalid(
            &cluster_path,
            "a cluster already exists here; refusing to overwrite it",
        ));
    }
    if replicas == 0 || replicas > MAX_CLUSTER_REPLICAS {
        return Err(invalid(
            dir,
            format!("--replicas must be 1 to {MAX_CLUSTER_REPLICAS}"),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|source| ConfigError::Read {
        path: dir.to_owned(),
        source,
    })?;
    let mut rng = crate::system_rng();
    let mut keys = Vec::new();
    let mut signers = Vec::new();
    let mut addresses = Vec::new();
    for i in 0..replicas {
        let signer = SignerKey::generate(origin, KeyType::Ed25519, &mut rng)
            .map_err(|e| invalid(dir, format!("origin {origin:?}: {e}")))?;
        keys.push(signer.verifier());
        signers.push(signer);
        let port = base_port
            .checked_add(i as u16)
            .ok_or_else(|| invalid(dir, "port range overflows"))?;
        addresses.push(SocketAddr::new(host, port));
    }
    let cluster = Cluster {
        origin: origin.to_owned(),
        epoch: 1,
        keys,
        addresses,
        witnesses: Vec::new(),
        witness_quorum: 0,
        wait_for_witnesses: true,
        witness_timeout_ms: default_witness_timeout_ms(),
        cluster_key: None,
    };
    // Validate what we are about to write.
    Cluster::from_file(cluster.to_file(), &cluster_path)?;
    let write = |path: PathBuf, text: String| {
        std::fs::write(&path, text).map_err(|source| ConfigError::Read { path, source })
    };
    let quota = crate::admission::Quota::DEFAULT;
    let admission_section = AdmissionSection {
        mode: Some(admission),
        submitters_file: (admission == AdmissionMode::Keys).then(|| SUBMITTERS_FILE.into()),
        entries_per_s: Some(quota.entries_per_s),
        burst_entries: Some(quota.burst_entries),
        bytes_per_day: Some(quota.bytes_per_day),
        max_tracked_addresses: None,
    };
    if admission == AdmissionMode::Keys {
        let key_path = dir.join(FIRST_SUBMITTER_KEY_FILE);
        let key = crate::admission::submitters::create_key_file(&key_path)?;
        let text = format!(
            "# Submitter keys allowed to append, each with optional quotas of its own\n\
             # (entries_per_s, burst_entries, bytes_per_day; the [admission] section's\n\
             # otherwise). Replicas read this file again on SIGHUP.\n\
             \n[[submitter]]\nname = \"first\"\nkey = \"{}\"\n",
            crate::admission::submitters::format_public_key(&key.verifying_key())
        );
        write(dir.join(SUBMITTERS_FILE), text)?;
    }
    for (i, signer) in signers.iter().enumerate() {
        let key_path = dir.join(format!("replica-{i}.key"));
        write_secret(&key_path, &format!("{}\n", signer.to_skey_string())).map_err(|source| {
            ConfigError::Read {
                path: key_path.clone(),
                source,
            }
        })?;
        let file = ReplicaFile {
            id: i as u16,
            cluster: "cluster.toml".into(),
            key_file: format!("replica-{i}.key").into(),
            data_dir: format!("replica-{i}").into(),
            listen: None,
            metrics_listen: None,
            tiles_listen: None,
            consensus: ConsensusSection::default(),
            limits: LimitsSection::default(),
            storage: StorageSection::default(),
            admission: admission_section.clone(),
            tiles: TilesSection::default(),
            cluster_share_file: None,
        };
        let text = format!(
            "# bftlog replica {i}; every field is described in docs/operating.md\n{}",
            toml::to_string(&file).expect("serializable")
        );
        write(dir.join(format!("replica-{i}.toml")), text)?;
    }
    let mut cluster = cluster;
    cluster.cluster_key = write_cluster_key(dir, &cluster)?;
    if cluster.cluster_key.is_some() {
        for i in 0..replicas {
            edit_replica_file(&dir.join(format!("replica-{i}.toml")), |file| {
                file.cluster_share_file = Some(cluster_share_file(i).into());
            })?;
        }
    }
    write_cluster_files(dir, &cluster)?;
    Ok(cluster)
}

/// Share file of replica `i`'s part of the cluster key.
pub fn cluster_share_file(i: usize) -> String {
    format!("replica-{i}.cluster-share")
}

/// The cluster key's vkey file.
pub const CLUSTER_VKEY_FILE: &str = "log.vkey";

/// The policy of the cluster key alone, for any C2SP client.
pub const CLUSTER_KEY_POLICY_FILE: &str = "policy.cluster-key";

/// Deals the cluster's threshold key (any quorum of replicas signs) with a
/// trusted dealer: a share file per replica and `log.vkey`; returns the
/// key. A cluster whose quorum is one replica has no threshold key (FROST
/// needs at least two signers); it writes neither.
fn write_cluster_key(dir: &Path, cluster: &Cluster) -> Result<Option<VerifierKey>, ConfigError> {
    let threshold = cluster.quorum();
    if threshold < 2 {
        return Ok(None);
    }
    let frost_error = |e: crate::cluster_key::ClusterKeyError| invalid(dir, e.to_string());
    let shares =
        crate::cluster_key::deal(cluster.n() as u16, threshold as u16).map_err(frost_error)?;
    for (i, share) in shares.iter().enumerate() {
        crate::cluster_key::write_share(&dir.join(cluster_share_file(i)), &cluster.origin, share)
            .map_err(frost_error)?;
    }
    let vkey = crate::cluster_key::verifier_key(&cluster.origin, &shares[0].public)
        .map_err(frost_error)?;
    let path = dir.join(CLUSTER_VKEY_FILE);
    std::fs::write(&path, format!("{vkey}\n"))
        .map_err(|source| ConfigError::Read { path, source })?;
    Ok(Some(vkey))
}

/// Removes the cluster key from the cluster in `dir`: `cluster.toml`
/// names none, no replica file names a share, and the share files,
/// `log.vkey` and `policy.cluster-key` go. For clusters whose operators
/// then make one with `bftlog dkg`, and for comparisons without one.
pub fn strip_cluster_key(dir: &Path, mut cluster: Cluster) -> Result<Cluster, ConfigError> {
    cluster.cluster_key = None;
    write_cluster_files(dir, &cluster)?;
    for i in 0..cluster.n() {
        edit_replica_file(&dir.join(format!("replica-{i}.toml")), |f| {
            f.cluster_share_file = None
        })?;
        let _ = std::fs::remove_file(dir.join(cluster_share_file(i)));
    }
    let _ = std::fs::remove_file(dir.join(CLUSTER_VKEY_FILE));
    let _ = std::fs::remove_file(dir.join(CLUSTER_KEY_POLICY_FILE));
    Ok(cluster)
}

/// Rewrites a replica file with `change` applied (its comments become
/// the header `init` writes).
pub fn edit_replica_file(
    path: &Path,
    change: impl FnOnce(&mut ReplicaFile),
) -> Result<(), ConfigError> {
    let text = read(path)?;
    let mut file: ReplicaFile = toml::from_str(&text).map_err(|e| invalid(path, e.to_string()))?;
    change(&mut file);
    let text = format!(
        "# bftlog replica {}; every field is described in docs/operating.md\n{}",
        file.id,
        toml::to_string(&file).expect("serializable")
    );
    std::fs::write(path, text).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Writes `cluster.toml`, `policy` and `log.vkeys` for `cluster` (after
/// validating it as a freshly read file would be).
pub fn write_cluster_files(dir: &Path, cluster: &Cluster) -> Result<(), ConfigError> {
    let cluster_path = dir.join("cluster.toml");
    let text = format!(
        "# bftlog cluster: shared by replicas and clients\n{}",
        toml::to_string(&cluster.to_file()).expect("serializable")
    );
    Cluster::parse(&text, &cluster_path)?;
    let write = |path: PathBuf, text: String| {
        std::fs::write(&path, text).map_err(|source| ConfigError::Read { path, source })
    };
    write(cluster_path, text)?;
    write(dir.join("policy"), cluster.policy_text())?;
    write(dir.join("log.vkeys"), cluster.vkeys_text())?;
    if let Some(text) = cluster.cluster_key_policy_text() {
        write(dir.join(CLUSTER_KEY_POLICY_FILE), text)?;
    }
    Ok(())
}

/// Creates a file readable only by its owner (never briefly readable by
/// others) and refuses to replace an existing one.
pub(crate) fn write_secret(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}
