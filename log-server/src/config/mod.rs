//! Configuration files: `cluster.toml` (shared by replicas and clients) and
//! one `replica-N.toml` per replica. Every field and its default is
//! documented in `docs/operating.md`. Parsing refuses unknown fields and
//! inconsistent values with a message naming the file and the field.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bftlog_spec::note::{KeyType, SignerKey, VerifierKey};
use bftlog_spec::policy::Policy;
use serde::{Deserialize, Serialize};

use crate::admission::{AdmissionConfig, AdmissionSection};
use crate::net::Limits;

mod init;
mod tiles;
use bftlog_consensus::MAX_CLUSTER_REPLICAS;
pub(crate) use init::write_secret;
pub use init::{
    CLUSTER_KEY_POLICY_FILE, CLUSTER_VKEY_FILE, FIRST_SUBMITTER_KEY_FILE, SUBMITTERS_FILE,
    cluster_share_file, edit_replica_file, init_cluster, init_cluster_admitting, strip_cluster_key,
    write_cluster_files,
};
pub use tiles::{PublishTarget, TilesSection};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(transparent)]
    KeyFile(#[from] bftlog_witness::key_file::KeyFileError),
}

pub(crate) fn invalid(path: &Path, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_owned(),
        message: message.into(),
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

/// `cluster.toml` as written.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// The log's origin: checkpoint origin line and replica key name.
    pub origin: String,
    /// Cluster epoch; consensus messages of other epochs are rejected.
    #[serde(default = "default_epoch")]
    pub epoch: u64,
    /// Witness cosignatures a checkpoint needs (policy group `witnesses`).
    /// Default: a majority of the listed witnesses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness_quorum: Option<usize>,
    /// Whether receipts and served checkpoints wait until the witness
    /// quorum has cosigned. Default true. With false, clients get replica-
    /// quorum checkpoints at once and cosignatures are added as they come.
    #[serde(default = "default_true")]
    pub wait_for_witnesses: bool,
    /// Per-request timeout for witness submissions. Default 10000.
    #[serde(default = "default_witness_timeout_ms")]
    pub witness_timeout_ms: u64,
    /// Replicas in id order (the first is replica 0).
    pub replicas: Vec<ClusterReplica>,
    /// C2SP tlog-witnesses every replica submits quorum checkpoints to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub witnesses: Vec<ClusterWitness>,
    /// The cluster key (C2SP vkey, named after the origin): quorum
    /// checkpoints also carry one signature under it, made by any quorum
    /// of replicas together. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_key: Option<String>,
}

fn default_epoch() -> u64 {
    1
}

fn default_true() -> bool {
    true
}

fn default_witness_timeout_ms() -> u64 {
    10_000
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterWitness {
    /// The witness's name in the policy (a label, e.g. `w1`).
    pub name: String,
    /// Its cosignature/v1 verifier key.
    pub key: String,
    /// Its submission prefix, `http://host:port[/prefix]`.
    pub url: String,
}

/// A witness of the cluster, validated.
#[derive(Debug, Clone)]
pub struct Witness {
    pub name: String,
    pub key: VerifierKey,
    pub url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterReplica {
    /// C2SP verifier key (`<origin>+<key id>+<base64>`).
    pub key: String,
    /// QUIC address (`host:port`).
    pub address: SocketAddr,
}

/// A validated cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub origin: String,
    pub epoch: u64,
    pub keys: Vec<VerifierKey>,
    pub addresses: Vec<SocketAddr>,
    pub witnesses: Vec<Witness>,
    /// Cosignatures needed (meaningful only with witnesses).
    pub witness_quorum: usize,
    pub wait_for_witnesses: bool,
    pub witness_timeout_ms: u64,
    /// The cluster key, if the cluster has one.
    pub cluster_key: Option<VerifierKey>,
}

impl Cluster {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&read(path)?, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let file: ClusterFile = toml::from_str(text).map_err(|e| invalid(path, e.to_string()))?;
        Self::from_file(file, path)
    }

    pub fn from_file(file: ClusterFile, path: &Path) -> Result<Self, ConfigError> {
        let n = file.replicas.len();
        if n == 0 || n > MAX_CLUSTER_REPLICAS {
            return Err(invalid(
                path,
                format!("replicas: need 1 to {MAX_CLUSTER_REPLICAS}, found {n}"),
            ));
        }
        bftlog_spec::note::check_name(&file.origin)
            .map_err(|e| invalid(path, format!("origin {:?}: {e}", file.origin)))?;
        let mut keys = Vec::with_capacity(n);
        let mut addresses = Vec::with_capacity(n);
        let mut seen_keys = HashSet::new();
        let mut seen_addresses = HashSet::new();
        for (i, r) in file.replicas.iter().enumerate() {
            let key = VerifierKey::parse(&r.key)
                .map_err(|e| invalid(path, format!("replicas[{i}].key: {e}")))?;
            if key.name() != file.origin {
                return Err(invalid(
                    path,
                    format!(
                        "replicas[{i}].key is named {:?}; replica keys must be named after the origin {:?}",
                        key.name(),
                        file.origin
                    ),
                ));
            }
            if key.key_type() != KeyType::Ed25519 {
                return Err(invalid(
                    path,
                    format!("replicas[{i}].key is not an Ed25519 key"),
                ));
            }
            if !seen_keys.insert(key.public_key().to_bytes()) {
                return Err(invalid(path, format!("replicas[{i}].key is listed twice")));
            }
            if !seen_addresses.insert(r.address) {
                return Err(invalid(
                    path,
                    format!("replicas[{i}].address {} is listed twice", r.address),
                ));
            }
            keys.push(key);
            addresses.push(r.address);
        }
        let mut witnesses = Vec::with_capacity(file.witnesses.len());
        for (i, w) in file.witnesses.iter().enumerate() {
            let key = VerifierKey::parse(&w.key)
                .map_err(|e| invalid(path, format!("witnesses[{i}].key: {e}")))?;
            if key.key_type() != KeyType::CosignatureV1 {
                return Err(invalid(
                    path,
                    format!("witnesses[{i}].key is not a cosignature/v1 (type 0x04) key"),
                ));
            }
            if !w.url.starts_with("http://") {
                return Err(invalid(
                    path,
                    format!("witnesses[{i}].url must start with http://"),
                ));
            }
            witnesses.push(Witness {
                name: w.name.clone(),
                key,
                url: w.url.clone(),
            });
        }
        let witness_quorum = file.witness_quorum.unwrap_or(witnesses.len() / 2 + 1);
        if !witnesses.is_empty() && !(1..=witnesses.len()).contains(&witness_quorum) {
            return Err(invalid(
                path,
                format!(
                    "witness_quorum {witness_quorum}: need 1 to {} (the number of witnesses)",
                    witnesses.len()
                ),
            ));
        }
        if file.witness_timeout_ms == 0 {
            return Err(invalid(path, "witness_timeout_ms must be positive"));
        }
        let cluster_key = match &file.cluster_key {
            Some(text) => {
                let key = VerifierKey::parse(text)
                    .map_err(|e| invalid(path, format!("cluster_key: {e}")))?;
                if key.name() != file.origin || key.key_type() != KeyType::Ed25519 {
                    return Err(invalid(
                        path,
                        format!(
                            "cluster_key must be an Ed25519 key named after the origin {:?}",
                            file.origin
                        ),
                    ));
                }
                if !seen_keys.insert(key.public_key().to_bytes()) {
                    return Err(invalid(path, "cluster_key is also a replica key"));
                }
                Some(key)
            }
            None => None,
        };
        let cluster = Cluster {
            cluster_key,
            origin: file.origin,
            epoch: file.epoch,
            keys,
            addresses,
            witnesses,
            witness_quorum,
            wait_for_witnesses: file.wait_for_witnesses,
            witness_timeout_ms: file.witness_timeout_ms,
        };
        // Names, duplicate keys and the rest of the policy rules.
        Policy::parse(cluster.policy_text().as_bytes())
            .map_err(|e| invalid(path, format!("witnesses: {e}")))?;
        Ok(cluster)
    }

    pub fn to_file(&self) -> ClusterFile {
        ClusterFile {
            origin: self.origin.clone(),
            epoch: self.epoch,
            witness_quorum: (!self.witnesses.is_empty()).then_some(self.witness_quorum),
            wait_for_witnesses: self.wait_for_witnesses,
            witness_timeout_ms: self.witness_timeout_ms,
            witnesses: self
                .witnesses
                .iter()
                .map(|w| ClusterWitness {
                    name: w.name.clone(),
                    key: w.key.to_string(),
                    url: w.url.clone(),
                })
                .collect(),
            replicas: self
                .keys
                .iter()
                .zip(&self.addresses)
                .map(|(k, a)| ClusterReplica {
                    key: k.to_string(),
                    address: *a,
                })
                .collect(),
            cluster_key: self.cluster_key.as_ref().map(|k| k.to_string()),
        }
    }

    pub fn n(&self) -> usize {
        self.keys.len()
    }

    pub fn f(&self) -> usize {
        bftlog_consensus::max_faulty(self.n())
    }

    /// Replica signatures a checkpoint needs: the consensus quorum.
    pub fn quorum(&self) -> usize {
        bftlog_consensus::quorum_size(self.n())
    }

    pub fn public_keys(&self) -> Vec<ed25519_dalek::VerifyingKey> {
        self.keys.iter().map(|k| *k.public_key()).collect()
    }

    /// The tlog-policy that accepts this cluster's checkpoints: every
    /// replica key with the consensus quorum as `replica-quorum`, and the
    /// witnesses with a `witnesses` group of `witness_quorum`.
    pub fn policy_text(&self) -> String {
        self.policy_text_with(!self.witnesses.is_empty())
    }

    fn policy_text_with(&self, witnesses: bool) -> String {
        let mut out = format!(
            "# bftlog trust policy for {}: checkpoints need {} of {} replica signatures{}\n",
            self.origin,
            self.quorum(),
            self.n(),
            if witnesses {
                format!(
                    " and {} of {} witness cosignatures",
                    self.witness_quorum,
                    self.witnesses.len()
                )
            } else {
                String::new()
            }
        );
        for key in &self.keys {
            out.push_str(&format!("log {key}\n"));
        }
        // The threshold is written out: it is the consensus quorum
        // ⌊(n+f)/2⌋+1, which is 2f+1 for n = 3f+1 and stays intersecting
        // for every other n.
        out.push_str(&format!(
            "replica-quorum {} {}\n",
            self.origin,
            self.quorum()
        ));
        out.push_str(&self.quorum_lines(witnesses));
        out
    }

    /// A policy's witness lines and quorum line: the witnesses and a
    /// `witnesses` group of `witness_quorum` when `witnesses`, else
    /// `quorum none`.
    fn quorum_lines(&self, witnesses: bool) -> String {
        if !witnesses {
            return "quorum none\n".into();
        }
        let mut out = String::new();
        let mut names = String::new();
        for w in &self.witnesses {
            out.push_str(&format!("witness {} {} {}\n", w.name, w.key, w.url));
            names.push(' ');
            names.push_str(&w.name);
        }
        out.push_str(&format!("group witnesses {}{names}\n", self.witness_quorum));
        out.push_str("quorum witnesses\n");
        out
    }

    pub fn policy(&self) -> Policy {
        Policy::parse(self.policy_text().as_bytes())
            .expect("a validated cluster makes a valid policy")
    }

    /// The tlog-policy any C2SP client can use for this log: the cluster
    /// key alone (`log <vkey>`), with the witness group if the cluster
    /// has witnesses. `None` without a cluster key.
    pub fn cluster_key_policy_text(&self) -> Option<String> {
        let key = self.cluster_key.as_ref()?;
        let mut out = format!(
            "# bftlog trust policy for {}: checkpoints need the cluster key's signature (any {} of {} replicas together){}\nlog {key}\n",
            self.origin,
            self.quorum(),
            self.n(),
            if self.witnesses.is_empty() {
                String::new()
            } else {
                format!(
                    " and {} of {} witness cosignatures",
                    self.witness_quorum,
                    self.witnesses.len()
                )
            }
        );
        out.push_str(&self.quorum_lines(!self.witnesses.is_empty()));
        Some(out)
    }

    /// Whether receipts and served checkpoints wait for the witness
    /// quorum's cosignatures (the one place this rule is written).
    pub fn receipts_wait_for_witnesses(&self) -> bool {
        !self.witnesses.is_empty() && self.wait_for_witnesses
    }

    /// The policy a receipt or served checkpoint is checked against at the
    /// moment it is handed out: the full policy, or the replica quorum only
    /// when `wait_for_witnesses` is false.
    pub fn receipt_policy(&self) -> Policy {
        Policy::parse(
            self.policy_text_with(self.receipts_wait_for_witnesses())
                .as_bytes(),
        )
        .expect("a validated cluster makes a valid policy")
    }

    /// One C2SP verifier key per line.
    pub fn vkeys_text(&self) -> String {
        self.keys.iter().map(|k| format!("{k}\n")).collect()
    }
}

/// `replica-N.toml` as written. Paths are relative to the file's directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaFile {
    /// This replica's index in the cluster file.
    pub id: u16,
    /// The cluster file.
    pub cluster: PathBuf,
    /// The replica's signing key (C2SP signer key text), readable only by
    /// the replica.
    pub key_file: PathBuf,
    /// redb database and other state.
    pub data_dir: PathBuf,
    /// Address to listen on. Default: this replica's address in the
    /// cluster file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Address of the Prometheus text endpoint (`GET /metrics`, plain
    /// HTTP). Default: none (off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<SocketAddr>,
    /// Address of the C2SP tlog-tiles endpoint (plain HTTP: `/checkpoint`,
    /// `/tile/…`). Default: none (off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tiles_listen: Option<SocketAddr>,
    #[serde(default)]
    pub consensus: ConsensusSection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub storage: StorageSection,
    #[serde(default)]
    pub admission: AdmissionSection,
    #[serde(default)]
    pub tiles: TilesSection,
    /// This replica's share of the cluster key (written by `bftlog init`
    /// or `bftlog dkg finish`), readable only by the replica. Default:
    /// none; the cluster then has no cluster key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_share_file: Option<PathBuf>,
}

/// redb settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    /// redb's page cache, in MiB. Default 256. Proof serving reads about
    /// 128 bytes of stored hashes per entry at random: a cache that holds
    /// them (1,280 MiB for 10M entries) avoids a system call per page.
    pub cache_mb: Option<usize>,
}

/// [`StorageSection::cache_mb`]'s default.
pub const DEFAULT_CACHE_MB: usize = 256;

/// Consensus tunables; `None` means the default of [`bftlog_consensus::Config`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsensusSection {
    pub round_timeout_ms: Option<u64>,
    pub max_round_timeout_ms: Option<u64>,
    pub max_block_entries: Option<usize>,
    pub max_block_bytes: Option<usize>,
    pub mempool_max_entries: Option<usize>,
    pub mempool_max_bytes: Option<usize>,
    pub mempool_max_entries_per_client: Option<usize>,
    pub mempool_max_bytes_per_client: Option<usize>,
    pub retain_committed_blocks: Option<usize>,
    pub retain_committed_bytes: Option<usize>,
    pub dedup_window_entries: Option<usize>,
    pub sync_batch_blocks: Option<u16>,
    pub status_interval_ms: Option<u64>,
    pub sync_timeout_ms: Option<u64>,
    pub sync_serve_bytes_per_s: Option<u64>,
    pub sync_serve_burst_bytes: Option<u64>,
    pub cluster_recovery_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Largest entry accepted. Default 65535, the protocol maximum (what a
    /// tlog-tiles entry bundle carries).
    pub max_entry_bytes: Option<usize>,
    /// Concurrent requests per client connection. Default 256.
    pub max_concurrent_requests: Option<u32>,
    /// Idle connections close after this. Default 30000.
    pub idle_timeout_ms: Option<u64>,
    /// How long an append waits for its receipt before answering
    /// `Overloaded` (resubmitting is idempotent). Default 30000.
    pub append_timeout_ms: Option<u64>,
    /// Entries waiting for receipts, over all clients. Default 200000.
    pub max_waiting_entries: Option<usize>,
    /// Entries of one client (one admission submitter) waiting for
    /// receipts. Default 25000.
    pub max_waiting_entries_per_client: Option<usize>,
    /// Client connections open or in their handshake. Default 4096.
    pub max_client_connections: Option<usize>,
    /// Client connections from one IP address. Default 64.
    pub max_connections_per_ip: Option<usize>,
    /// Client connections above which a new one must prove its address
    /// (QUIC Retry). Default 1024.
    pub retry_above_connections: Option<usize>,
    /// Time a client has to send a whole request frame. Default 10000.
    pub request_read_timeout_ms: Option<u64>,
    /// Time a client has to take a whole response. Default 10000.
    pub response_write_timeout_ms: Option<u64>,
    /// Client request bytes being read or handled at once. Default
    /// 268435456 (256 MiB).
    pub max_inflight_request_bytes: Option<usize>,
    /// Bytes of one peer's messages queued for the core loop. Default
    /// 33554432 (32 MiB).
    pub peer_inbox_bytes: Option<usize>,
    /// Bytes of clients' appends queued for the core loop. Default
    /// 67108864 (64 MiB).
    pub client_inbox_bytes: Option<usize>,
    /// Bytes of frames queued to go to one peer. Default 67108864 (64 MiB).
    pub peer_outbox_bytes: Option<usize>,
    /// Messages a second read from one peer. Default 10000.
    pub peer_messages_per_s: Option<u64>,
}

/// The byte bounds of the replica's queues (`node::queues`).
#[derive(Debug, Clone)]
pub struct QueueLimits {
    pub peer_inbox_bytes: usize,
    pub client_inbox_bytes: usize,
    pub peer_outbox_bytes: usize,
    pub peer_messages_per_s: u64,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            peer_inbox_bytes: 32 << 20,
            client_inbox_bytes: 64 << 20,
            peer_outbox_bytes: 64 << 20,
            peer_messages_per_s: 10_000,
        }
    }
}

/// Everything a replica needs to run, validated.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    pub id: u16,
    pub cluster: Cluster,
    pub key: ed25519_dalek::SigningKey,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub consensus: bftlog_consensus::Config,
    pub limits: Limits,
    pub queues: QueueLimits,
    pub append_timeout_ms: u64,
    pub max_waiting_entries: usize,
    pub max_waiting_entries_per_client: usize,
    pub admission: AdmissionConfig,
    /// Prometheus endpoint address, if enabled.
    pub metrics_listen: Option<SocketAddr>,
    /// Tiles endpoint address, if enabled.
    pub tiles_listen: Option<SocketAddr>,
    /// Where tiles are published, if anywhere.
    pub tiles_publish: Option<PublishTarget>,
    /// redb page cache size in MiB.
    pub cache_mb: usize,
}

impl ReplicaConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = read(path)?;
        let file: ReplicaFile = toml::from_str(&text).map_err(|e| invalid(path, e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let cluster = Cluster::load(&base.join(&file.cluster))?;
        let key_path = base.join(&file.key_file);
        let key_text = bftlog_witness::key_file::read_key_file(&key_path)?;
        let key = SignerKey::parse(key_text.trim_end())
            .map_err(|e| invalid(&key_path, format!("not a C2SP signer key: {e}")))?;
        Self::build(file, cluster, key, base, path)
    }

    pub fn build(
        file: ReplicaFile,
        cluster: Cluster,
        key: SignerKey,
        base: &Path,
        path: &Path,
    ) -> Result<Self, ConfigError> {
        let id = file.id;
        let Some(listed) = cluster.keys.get(id as usize) else {
            return Err(invalid(
                path,
                format!("id {id} is not in the cluster of {} replicas", cluster.n()),
            ));
        };
        if key.key_type() != KeyType::Ed25519 || key.verifier().to_string() != listed.to_string() {
            return Err(invalid(
                path,
                format!(
                    "key_file holds {}, but the cluster lists {} for replica {id}",
                    key.verifier(),
                    listed
                ),
            ));
        }
        let mut c =
            bftlog_consensus::Config::new(cluster.epoch, &cluster.origin, cluster.public_keys());
        c.cluster_share = match (&file.cluster_share_file, &cluster.cluster_key) {
            (Some(share_path), Some(cluster_key)) => {
                let share_path = base.join(share_path);
                let share = crate::cluster_key::load_share(&share_path, &cluster.origin)
                    .map_err(|e| invalid(&share_path, e.to_string()))?;
                let key = crate::cluster_key::verifier_key(&cluster.origin, &share.public)
                    .map_err(|e| invalid(&share_path, e.to_string()))?;
                if key.to_string() != cluster_key.to_string() {
                    return Err(invalid(
                        &share_path,
                        format!("a share of {key}, but the cluster's key is {cluster_key}"),
                    ));
                }
                share
                    .check_for(id, cluster.n(), cluster.quorum())
                    .map_err(|e| invalid(&share_path, e.to_string()))?;
                Some(share)
            }
            (None, None) => None,
            (None, Some(_)) => {
                return Err(invalid(
                    path,
                    "the cluster has a cluster_key, but this replica has no cluster_share_file",
                ));
            }
            (Some(_), None) => {
                return Err(invalid(
                    path,
                    "cluster_share_file is set, but the cluster file names no cluster_key",
                ));
            }
        };
        let s = &file.consensus;
        macro_rules! set {
            ($($f:ident),*) => {$( if let Some(v) = s.$f { c.$f = v; } )*};
        }
        set!(
            round_timeout_ms,
            max_round_timeout_ms,
            max_block_entries,
            max_block_bytes,
            mempool_max_entries,
            mempool_max_bytes,
            mempool_max_entries_per_client,
            mempool_max_bytes_per_client,
            retain_committed_blocks,
            retain_committed_bytes,
            dedup_window_entries,
            sync_batch_blocks,
            status_interval_ms,
            sync_timeout_ms,
            sync_serve_bytes_per_s,
            sync_serve_burst_bytes,
            cluster_recovery_ms
        );
        let l = &file.limits;
        if let Some(v) = l.max_entry_bytes {
            c.max_entry_bytes = v;
        }
        let checks: [(bool, &str); 19] = [
            (
                c.mempool_max_bytes >= c.max_entry_bytes,
                "consensus.mempool_max_bytes must be at least limits.max_entry_bytes",
            ),
            (
                c.mempool_max_entries_per_client >= 1,
                "consensus.mempool_max_entries_per_client must be at least 1",
            ),
            (
                c.mempool_max_bytes_per_client >= c.max_entry_bytes,
                "consensus.mempool_max_bytes_per_client must be at least limits.max_entry_bytes",
            ),
            (
                l.max_waiting_entries_per_client
                    .is_none_or(|v| v >= bftlog_spec::wire::MAX_APPEND_ENTRIES),
                "limits.max_waiting_entries_per_client must be at least 4096 (one full append)",
            ),
            (
                c.sync_timeout_ms >= 10,
                "consensus.sync_timeout_ms must be at least 10",
            ),
            (
                l.append_timeout_ms.is_none_or(|v| v >= 100),
                "limits.append_timeout_ms must be at least 100",
            ),
            (
                l.max_waiting_entries
                    .is_none_or(|v| v >= bftlog_spec::wire::MAX_APPEND_ENTRIES),
                "limits.max_waiting_entries must be at least 4096 (one full append)",
            ),
            (
                c.round_timeout_ms >= 10,
                "consensus.round_timeout_ms must be at least 10",
            ),
            (
                c.max_round_timeout_ms >= c.round_timeout_ms,
                "consensus.max_round_timeout_ms must be at least round_timeout_ms",
            ),
            (
                (1..=bftlog_spec::wire::MAX_BLOCK_ENTRIES).contains(&c.max_block_entries),
                "consensus.max_block_entries must be 1 to 65536",
            ),
            (
                c.max_block_bytes >= c.max_entry_bytes
                    && c.max_block_bytes <= bftlog_consensus::MAX_BLOCK_BYTES,
                "consensus.max_block_bytes must be at least limits.max_entry_bytes and at most 12 MiB (a proposal must fit a 16 MiB frame)",
            ),
            (
                (1..=bftlog_spec::wire::MAX_ENTRY_BYTES).contains(&c.max_entry_bytes),
                "limits.max_entry_bytes must be 1 to 65535 (a tiles entry bundle carries at most 65535)",
            ),
            (
                c.mempool_max_entries >= 1,
                "consensus.mempool_max_entries must be at least 1",
            ),
            (
                c.retain_committed_blocks >= bftlog_consensus::MIN_RETAINED_BLOCKS,
                "consensus.retain_committed_blocks must be at least 16",
            ),
            (
                (2..=bftlog_spec::wire::MAX_SYNC_BLOCKS as u16).contains(&c.sync_batch_blocks),
                "consensus.sync_batch_blocks must be 2 to 64 (batches overlap by one block)",
            ),
            (
                c.status_interval_ms >= 10,
                "consensus.status_interval_ms must be at least 10",
            ),
            (
                c.cluster_recovery_ms >= 10,
                "consensus.cluster_recovery_ms must be at least 10",
            ),
            (
                c.sync_serve_bytes_per_s >= 1 << 20,
                "consensus.sync_serve_bytes_per_s must be at least 1048576 (1 MiB/s), or a lagging replica cannot catch up",
            ),
            (
                c.sync_serve_burst_bytes >= bftlog_consensus::SYNC_RESPONSE_BYTES as u64,
                "consensus.sync_serve_burst_bytes must be at least 12582912 (one full sync answer)",
            ),
        ];
        for (ok, message) in checks {
            if !ok {
                return Err(invalid(path, message));
            }
        }
        let mut limits = Limits::default();
        if let Some(v) = l.max_concurrent_requests {
            if v == 0 {
                return Err(invalid(
                    path,
                    "limits.max_concurrent_requests must be at least 1",
                ));
            }
            limits.max_concurrent_requests = v;
        }
        if let Some(v) = l.idle_timeout_ms {
            if !(1000..=600_000).contains(&v) {
                return Err(invalid(
                    path,
                    "limits.idle_timeout_ms must be 1000 to 600000",
                ));
            }
            limits.idle_timeout_ms = v;
        }
        let frame = bftlog_spec::wire::MAX_MESSAGE_BYTES;
        macro_rules! bounded {
            ($field:ident, $target:expr, $ok:expr, $message:expr) => {
                if let Some(v) = l.$field {
                    if !$ok(v) {
                        return Err(invalid(path, $message));
                    }
                    $target = v;
                }
            };
        }
        bounded!(
            max_client_connections,
            limits.max_client_connections,
            |v| v >= 1,
            "limits.max_client_connections must be at least 1"
        );
        bounded!(
            max_connections_per_ip,
            limits.max_connections_per_ip,
            |v| v >= 1,
            "limits.max_connections_per_ip must be at least 1"
        );
        bounded!(
            retry_above_connections,
            limits.retry_above_connections,
            |_| true,
            ""
        );
        bounded!(
            request_read_timeout_ms,
            limits.request_read_timeout_ms,
            |v| v >= 100,
            "limits.request_read_timeout_ms must be at least 100"
        );
        bounded!(
            response_write_timeout_ms,
            limits.response_write_timeout_ms,
            |v| v >= 100,
            "limits.response_write_timeout_ms must be at least 100"
        );
        bounded!(
            max_inflight_request_bytes,
            limits.max_inflight_request_bytes,
            |v| v >= frame,
            "limits.max_inflight_request_bytes must be at least 16777216 (one largest request)"
        );
        let mut queues = QueueLimits::default();
        bounded!(
            peer_inbox_bytes,
            queues.peer_inbox_bytes,
            |v| v >= frame,
            "limits.peer_inbox_bytes must be at least 16777216 (one largest message)"
        );
        bounded!(
            client_inbox_bytes,
            queues.client_inbox_bytes,
            |v| v >= frame,
            "limits.client_inbox_bytes must be at least 16777216 (one largest append)"
        );
        bounded!(
            peer_outbox_bytes,
            queues.peer_outbox_bytes,
            |v| v >= frame,
            "limits.peer_outbox_bytes must be at least 16777216 (one largest message)"
        );
        bounded!(
            peer_messages_per_s,
            queues.peer_messages_per_s,
            |v| v >= 1000,
            "limits.peer_messages_per_s must be at least 1000"
        );
        let cache_mb = file.storage.cache_mb.unwrap_or(DEFAULT_CACHE_MB);
        if !(16..=1 << 20).contains(&cache_mb) {
            return Err(invalid(path, "storage.cache_mb must be 16 to 1048576"));
        }
        let admission =
            AdmissionConfig::from_section(&file.admission, base).map_err(|m| invalid(path, m))?;
        let tiles_publish =
            PublishTarget::from_section(&file.tiles, base).map_err(|m| invalid(path, m))?;
        let listen = file.listen.unwrap_or(cluster.addresses[id as usize]);
        Ok(ReplicaConfig {
            id,
            key: key.signing_key().clone(),
            data_dir: base.join(&file.data_dir),
            listen,
            consensus: c,
            limits,
            queues,
            append_timeout_ms: l.append_timeout_ms.unwrap_or(30_000),
            max_waiting_entries: l.max_waiting_entries.unwrap_or(200_000),
            max_waiting_entries_per_client: l.max_waiting_entries_per_client.unwrap_or(25_000),
            admission,
            metrics_listen: file.metrics_listen,
            tiles_listen: file.tiles_listen,
            tiles_publish,
            cache_mb,
            cluster,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> crate::test_dir::TestDir {
        crate::test_dir::TestDir::new(&format!("config-{tag}-{}", std::process::id()))
    }

    #[test]
    fn init_writes_a_cluster_every_replica_can_load() {
        let dir = tempdir("init");
        let cluster =
            init_cluster(&dir, "example.com/log", 4, [127, 0, 0, 1].into(), 7100).unwrap();
        assert_eq!(cluster.n(), 4);
        for i in 0..4 {
            let cfg = ReplicaConfig::load(&dir.join(format!("replica-{i}.toml"))).unwrap();
            assert_eq!(cfg.id, i);
            assert_eq!(cfg.listen.port(), 7100 + i);
            assert_eq!(cfg.consensus.round_timeout_ms, 1000);
        }
        Policy::parse(&std::fs::read(dir.join("policy")).unwrap()).unwrap();
        assert!(init_cluster(&dir, "example.com/log", 4, [127, 0, 0, 1].into(), 7100).is_err());
    }

    /// `init` deals the cluster key: every replica's share loads and
    /// belongs to the key in `log.vkey`; a one-replica cluster has none.
    #[test]
    fn init_deals_the_cluster_key() {
        let dir = tempdir("cluster-key");
        init_cluster(&dir, "example.com/log", 4, [127, 0, 0, 1].into(), 7170).unwrap();
        let vkey_text = std::fs::read_to_string(dir.join(CLUSTER_VKEY_FILE)).unwrap();
        let vkey = bftlog_spec::note::VerifierKey::parse(vkey_text.trim_end()).unwrap();
        assert_eq!(vkey.name(), "example.com/log");
        for i in 0..4 {
            let share =
                crate::cluster_key::load_share(&dir.join(cluster_share_file(i)), "example.com/log")
                    .unwrap();
            assert_eq!(
                crate::cluster_key::verifier_key("example.com/log", &share.public).unwrap(),
                vkey
            );
            assert_eq!(*share.key_package.min_signers(), 3);
        }
        let lone = tempdir("cluster-key-lone");
        init_cluster(&lone, "example.com/log", 1, [127, 0, 0, 1].into(), 7180).unwrap();
        assert!(!lone.join(CLUSTER_VKEY_FILE).exists());
        assert!(!lone.join(cluster_share_file(0)).exists());
    }

    /// A replica key that others can read is refused at load, naming the
    /// file and the fix, like ssh.
    #[cfg(unix)]
    #[test]
    fn a_replica_key_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempdir("key-mode");
        init_cluster(&dir, "example.com/log", 4, [127, 0, 0, 1].into(), 7150).unwrap();
        let key = dir.join("replica-1.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = ReplicaConfig::load(&dir.join("replica-1.toml")).unwrap_err();
        assert!(matches!(err, ConfigError::KeyFile(_)), "{err}");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        ReplicaConfig::load(&dir.join("replica-1.toml")).unwrap();
    }

    #[test]
    fn witnesses_go_into_the_policy_and_are_validated() {
        let dir = tempdir("witnesses");
        let cluster =
            init_cluster(&dir, "example.com/log", 4, [127, 0, 0, 1].into(), 7200).unwrap();
        let witness_key = |i: u8| {
            SignerKey::new(
                &format!("witness.example/w{i}"),
                KeyType::CosignatureV1,
                ed25519_dalek::SigningKey::from_bytes(&[i; 32]),
            )
            .unwrap()
            .verifier()
            .to_string()
        };
        let mut file = cluster.to_file();
        for i in 1..=3u8 {
            file.witnesses.push(ClusterWitness {
                name: format!("w{i}"),
                key: witness_key(i),
                url: format!("http://127.0.0.1:{}", 7380 + i as u16),
            });
        }
        let path = dir.join("cluster.toml");
        let with = Cluster::from_file(file.clone(), &path).unwrap();
        assert_eq!(with.witness_quorum, 2, "default: a majority");
        let policy = with.policy();
        assert_eq!(policy.witnesses().len(), 3);
        assert!(
            with.policy_text()
                .ends_with("group witnesses 2 w1 w2 w3\nquorum witnesses\n")
        );
        assert_eq!(with.receipt_policy().witnesses().len(), 3);
        // Round trip through TOML.
        let text = toml::to_string(&with.to_file()).unwrap();
        let again = Cluster::parse(&text, &path).unwrap();
        assert_eq!(again.policy_text(), with.policy_text());
        // Not waiting: receipts are checked against the replicas only.
        let mut no_wait = file.clone();
        no_wait.wait_for_witnesses = false;
        let no_wait = Cluster::from_file(no_wait, &path).unwrap();
        assert!(no_wait.receipt_policy().witnesses().is_empty());
        assert_eq!(no_wait.policy().witnesses().len(), 3);
        // Refused: bad quorum, wrong key type, non-HTTP URL, duplicate name.
        let mut bad = file.clone();
        bad.witness_quorum = Some(4);
        assert!(Cluster::from_file(bad, &path).is_err());
        let mut bad = file.clone();
        bad.witnesses[0].key = cluster.keys[0].to_string();
        assert!(Cluster::from_file(bad, &path).is_err());
        let mut bad = file.clone();
        bad.witnesses[0].url = "https://w1.example".into();
        assert!(Cluster::from_file(bad, &path).is_err());
        let mut bad = file;
        bad.witnesses[1].name = "w1".into();
        assert!(Cluster::from_file(bad, &path).is_err());
    }

    #[test]
    fn the_policy_threshold_is_the_consensus_quorum_for_every_size() {
        for n in 1..=MAX_CLUSTER_REPLICAS {
            let keys: Vec<VerifierKey> = (0..n)
                .map(|i| {
                    let mut seed = [0u8; 32];
                    seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
                    let key = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
                    VerifierKey::new("example.com/log", KeyType::Ed25519, key).unwrap()
                })
                .collect();
            let cluster = Cluster {
                origin: "example.com/log".into(),
                epoch: 1,
                addresses: (0..n)
                    .map(|i| ([127, 0, 0, 1], 1000 + i as u16).into())
                    .collect(),
                keys,
                witnesses: Vec::new(),
                witness_quorum: 0,
                wait_for_witnesses: true,
                witness_timeout_ms: 10_000,
                cluster_key: None,
            };
            let consensus =
                bftlog_consensus::Config::new(1, "example.com/log", cluster.public_keys());
            assert_eq!(cluster.quorum(), consensus.quorum(), "n={n}");
            let policy = cluster.policy();
            assert_eq!(
                policy.log_threshold("example.com/log"),
                consensus.quorum(),
                "n={n}"
            );
        }
    }

    #[test]
    fn inconsistent_configuration_is_refused_with_the_field_named() {
        let dir = tempdir("bad");
        init_cluster(&dir, "example.com/log", 4, [127, 0, 0, 1].into(), 7200).unwrap();
        let path = dir.join("replica-1.toml");
        let original = std::fs::read_to_string(&path).unwrap();
        let cases = [
            (original.replace("id = 1", "id = 9"), "not in the cluster"),
            (
                original.replace("replica-1.key", "replica-2.key"),
                "key_file holds",
            ),
            (format!("{original}bogus = 1\n"), "unknown field"),
            (
                original.replace("[consensus]", "[consensus]\nmax_block_bytes = 100"),
                "max_block_bytes",
            ),
            (
                original.replace("[limits]", "[limits]\nmax_entry_bytes = 70000"),
                "max_entry_bytes",
            ),
            (
                original.replace("[consensus]", "[consensus]\nmempool_max_bytes = 1000"),
                "mempool_max_bytes",
            ),
            (
                original.replace("[limits]", "[limits]\nmax_waiting_entries = 0"),
                "max_waiting_entries",
            ),
            (original.replace("id = 1", "id = \"one\""), "line"),
            (
                original.replace("[storage]", "[storage]\ncache_mb = 8"),
                "storage.cache_mb",
            ),
            (
                original.replace("[storage]", "[storage]\ncache_size = 8"),
                "unknown field",
            ),
        ];
        assert!(original.contains("[storage]"), "{original}");
        let tuned = original.replace("[storage]", "[storage]\ncache_mb = 2048");
        std::fs::write(&path, &tuned).unwrap();
        assert_eq!(ReplicaConfig::load(&path).unwrap().cache_mb, 2048);
        for (text, expected) in cases {
            std::fs::write(&path, &text).unwrap();
            let err = ReplicaConfig::load(&path).unwrap_err().to_string();
            assert!(err.contains(expected), "{err} should mention {expected}");
        }
        let cluster = std::fs::read_to_string(dir.join("cluster.toml")).unwrap();
        let doubled = cluster.replace("127.0.0.1:7201", "127.0.0.1:7200");
        let err = Cluster::parse(&doubled, Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("listed twice"), "{err}");
    }
}
