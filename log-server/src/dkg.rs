//! Distributed generation of the cluster key (`bftlog dkg round1|round2|
//! finish`): the replicas' operators run FROST's DKG (RFC 9591's
//! companion, Pedersen's DKG with proofs of knowledge, as `frost-ed25519`
//! implements it) each on their own machine, exchanging only files that
//! are safe to publish, and no one ever holds the whole key.
//!
//! Every file an operator publishes is a C2SP signed note signed by that
//! operator's replica key, which `cluster.toml` lists, so a file cannot be
//! forged or swapped in transit. Round 2 sends each other replica a
//! secret share of the sender's polynomial: it travels sealed (libsodium's
//! sealed box, `crypto_box`) to an X25519 key the recipient published in
//! round 1. The exchange folder is `DIR/dkg/`: each operator copies every
//! other operator's `round1-J.txt` and the `round2-J-to-I.txt` addressed to
//! them into it.
//!
//! Secrets stay in `DIR/dkg/replica-I.round1-secret` and
//! `.round2-secret` (mode 0600, never replaced: starting over means
//! deleting `DIR/dkg/`), and the result in `replica-I.cluster-share`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bftlog_consensus::threshold::{ClusterShare, identifier};
use bftlog_spec::note::{KeyRing, Note, SignerKey, VerifierKey};
use frost_ed25519 as frost;
use zeroize::Zeroizing;

use crate::config::{
    CLUSTER_VKEY_FILE, Cluster, ReplicaFile, cluster_share_file, edit_replica_file,
    write_cluster_files, write_secret,
};

/// The exchange folder, inside the cluster directory.
pub const DKG_DIR: &str = "dkg";
const ROUND1_LABEL: &str = "bftlog dkg round1 v1";
const ROUND2_LABEL: &str = "bftlog dkg round2 v1";
const SECRET1_LABEL: &str = "bftlog dkg round1 secret v1";
const SECRET2_LABEL: &str = "bftlog dkg round2 secret v1";
/// Largest DKG file read: a round-1 package for 64 replicas is about 3 KB.
const MAX_DKG_FILE_BYTES: u64 = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DkgError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    KeyFile(#[from] bftlog_witness::key_file::KeyFileError),
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("FROST: {0}")]
    Frost(#[from] frost::Error),
    #[error("{0}")]
    Cluster(String),
}

fn file_error(path: &Path, reason: impl Into<String>) -> DkgError {
    DkgError::File {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// One operator's view: its cluster, replica id and replica signing key.
struct Operator {
    dir: PathBuf,
    cluster: Cluster,
    id: u16,
    key: SignerKey,
}

impl Operator {
    fn load(dir: &Path, id: u16) -> Result<Self, DkgError> {
        let replica_path = dir.join(format!("replica-{id}.toml"));
        let text = std::fs::read_to_string(&replica_path)
            .map_err(|e| file_error(&replica_path, e.to_string()))?;
        let file: ReplicaFile =
            toml::from_str(&text).map_err(|e| file_error(&replica_path, e.to_string()))?;
        if file.id != id {
            return Err(file_error(
                &replica_path,
                format!("is replica {}'s file", file.id),
            ));
        }
        let cluster = Cluster::load(&dir.join(&file.cluster))?;
        if cluster.quorum() < 2 {
            return Err(DkgError::Cluster(
                "a cluster whose quorum is one replica has no cluster key".into(),
            ));
        }
        let key_path = dir.join(&file.key_file);
        let key_text = bftlog_witness::key_file::read_key_file(&key_path)?;
        let key = SignerKey::parse(key_text.trim_end())
            .map_err(|e| file_error(&key_path, format!("not a C2SP signer key: {e}")))?;
        if cluster.keys.get(id as usize).map(|k| k.to_string()) != Some(key.verifier().to_string())
        {
            return Err(file_error(
                &key_path,
                format!("is not replica {id}'s key in cluster.toml"),
            ));
        }
        Ok(Operator {
            dir: dir.to_owned(),
            cluster,
            id,
            key,
        })
    }

    fn exchange(&self) -> PathBuf {
        self.dir.join(DKG_DIR)
    }

    fn secret_path(&self, round: u8) -> PathBuf {
        self.exchange()
            .join(format!("replica-{}.round{round}-secret", self.id))
    }

    /// `text` as a note signed by this replica's key.
    fn signed(&self, text: &str) -> Result<String, DkgError> {
        let mut note = Note::new(text).map_err(|e| DkgError::Cluster(e.to_string()))?;
        let signature = self
            .key
            .sign_text(text)
            .map_err(|e| DkgError::Cluster(e.to_string()))?;
        note.add_signature(signature)
            .map_err(|e| DkgError::Cluster(e.to_string()))?;
        Ok(note.format())
    }

    /// The body lines of a published file, checked: a note signed by
    /// replica `from`'s key, with `label` and this cluster's origin.
    fn read_published(
        &self,
        path: &Path,
        from: u16,
        label: &str,
        fields: usize,
    ) -> Result<Vec<String>, DkgError> {
        let bytes = read_bounded(path)?;
        let note = Note::parse(&bytes).map_err(|e| file_error(path, e.to_string()))?;
        let key: VerifierKey = self.cluster.keys[from as usize].clone();
        let ring = KeyRing::from_keys([key]).map_err(|e| DkgError::Cluster(e.to_string()))?;
        let verified = note
            .verify(&ring)
            .map_err(|e| file_error(path, format!("not signed by replica {from}: {e}")))?;
        if verified.signatures().is_empty() {
            return Err(file_error(path, format!("not signed by replica {from}")));
        }
        let lines: Vec<String> = note
            .text()
            .strip_suffix('\n')
            .unwrap_or_default()
            .split('\n')
            .map(str::to_owned)
            .collect();
        if lines.len() != fields || lines[0] != label || lines[1] != self.cluster.origin {
            return Err(file_error(
                path,
                format!(
                    "not a {label:?} file of {:?} ({fields} lines)",
                    self.cluster.origin
                ),
            ));
        }
        Ok(lines)
    }

    fn others(&self) -> impl Iterator<Item = u16> + '_ {
        (0..self.cluster.n() as u16).filter(move |j| *j != self.id)
    }
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, DkgError> {
    let len = std::fs::metadata(path)
        .map_err(|e| file_error(path, e.to_string()))?
        .len();
    if len > MAX_DKG_FILE_BYTES {
        return Err(file_error(
            path,
            format!("larger than {MAX_DKG_FILE_BYTES} bytes"),
        ));
    }
    std::fs::read(path).map_err(|e| file_error(path, e.to_string()))
}

fn decode(path: &Path, what: &str, text: &str) -> Result<Zeroizing<Vec<u8>>, DkgError> {
    B64.decode(text)
        .map(Zeroizing::new)
        .map_err(|e| file_error(path, format!("{what} is not base64: {e}")))
}

/// A secret file's lines after its label, origin and id.
fn read_secret(
    op: &Operator,
    path: &Path,
    label: &str,
    fields: usize,
) -> Result<Vec<Zeroizing<String>>, DkgError> {
    let text = bftlog_witness::key_file::read_key_file(path)?;
    let lines: Vec<Zeroizing<String>> = text
        .strip_suffix('\n')
        .unwrap_or_default()
        .split('\n')
        .map(|l| Zeroizing::new(l.to_owned()))
        .collect();
    if lines.len() != fields + 3
        || *lines[0] != label
        || *lines[1] != op.cluster.origin
        || *lines[2] != op.id.to_string()
    {
        return Err(file_error(
            path,
            format!("not replica {}'s {label:?} file", op.id),
        ));
    }
    Ok(lines.into_iter().skip(3).collect())
}

fn round1_path(op: &Operator, from: u16) -> PathBuf {
    op.exchange().join(format!("round1-{from}.txt"))
}

fn round2_path(op: &Operator, from: u16, to: u16) -> PathBuf {
    op.exchange().join(format!("round2-{from}-to-{to}.txt"))
}

/// Round 1: commits to this replica's secret polynomial. Writes
/// `dkg/round1-I.txt` (publish it to every other operator) and the round-1
/// secret; returns the published file.
pub fn round1(dir: &Path, id: u16) -> Result<PathBuf, DkgError> {
    let op = Operator::load(dir, id)?;
    std::fs::create_dir_all(op.exchange())
        .map_err(|e| file_error(&op.exchange(), e.to_string()))?;
    let n = op.cluster.n() as u16;
    let t = op.cluster.quorum() as u16;
    let (secret, package) = frost::keys::dkg::part1(identifier(id), n, t, rand_core06::OsRng)?;
    let box_secret = crypto_box::SecretKey::generate(&mut rand_core06::OsRng);
    let secret_text = Zeroizing::new(format!(
        "{SECRET1_LABEL}\n{}\n{id}\n{}\n{}\n",
        op.cluster.origin,
        *Zeroizing::new(B64.encode(secret.serialize()?)),
        *Zeroizing::new(B64.encode(box_secret.to_bytes())),
    ));
    let secret_path = op.secret_path(1);
    write_secret(&secret_path, &secret_text).map_err(|e| {
        file_error(
            &secret_path,
            format!("{e} (round 1 ran already? to start over, delete the dkg directory)"),
        )
    })?;
    let text = format!(
        "{ROUND1_LABEL}\n{}\n{id}\n{}\n{}\n",
        op.cluster.origin,
        B64.encode(package.serialize()?),
        B64.encode(box_secret.public_key().as_bytes()),
    );
    let path = round1_path(&op, id);
    std::fs::write(&path, op.signed(&text)?).map_err(|e| file_error(&path, e.to_string()))?;
    Ok(path)
}

/// Every other replica's round-1 package, by FROST identifier.
type Round1Packages = BTreeMap<frost::Identifier, frost::keys::dkg::round1::Package>;

/// Every other replica's round-1 package and sealing key, checked.
fn round1_packages(
    op: &Operator,
) -> Result<(Round1Packages, BTreeMap<u16, crypto_box::PublicKey>), DkgError> {
    let mut packages = BTreeMap::new();
    let mut box_keys = BTreeMap::new();
    for j in op.others() {
        let path = round1_path(op, j);
        if !path.exists() {
            return Err(file_error(
                &path,
                format!("missing: copy replica {j}'s round-1 file here"),
            ));
        }
        let lines = op.read_published(&path, j, ROUND1_LABEL, 5)?;
        if lines[2] != j.to_string() {
            return Err(file_error(&path, format!("is not replica {j}'s")));
        }
        let package = frost::keys::dkg::round1::Package::deserialize(&decode(
            &path,
            "the package",
            &lines[3],
        )?)
        .map_err(|e| file_error(&path, format!("the package: {e}")))?;
        let box_key: [u8; 32] = decode(&path, "the sealing key", &lines[4])?
            .as_slice()
            .try_into()
            .map_err(|_| file_error(&path, "the sealing key is not 32 bytes"))?;
        packages.insert(identifier(j), package);
        box_keys.insert(j, crypto_box::PublicKey::from_bytes(box_key));
    }
    Ok((packages, box_keys))
}

/// Round 2: checks every other replica's round-1 file and sends each a
/// share of this replica's polynomial, sealed to it. Writes
/// `dkg/round2-I-to-J.txt` for every other J (give each to operator J) and
/// the round-2 secret; returns the published files.
pub fn round2(dir: &Path, id: u16) -> Result<Vec<PathBuf>, DkgError> {
    let op = Operator::load(dir, id)?;
    let secret1 = read_secret(&op, &op.secret_path(1), SECRET1_LABEL, 2)?;
    let secret1_path = op.secret_path(1);
    let secret = frost::keys::dkg::round1::SecretPackage::deserialize(&decode(
        &secret1_path,
        "the secret package",
        &secret1[0],
    )?)?;
    let (packages, box_keys) = round1_packages(&op)?;
    let (secret2, outgoing) = frost::keys::dkg::part2(secret, &packages)?;
    let secret_text = Zeroizing::new(format!(
        "{SECRET2_LABEL}\n{}\n{id}\n{}\n",
        op.cluster.origin,
        *Zeroizing::new(B64.encode(secret2.serialize()?)),
    ));
    let secret_path = op.secret_path(2);
    write_secret(&secret_path, &secret_text).map_err(|e| {
        file_error(
            &secret_path,
            format!("{e} (round 2 ran already? to start over, delete the dkg directory)"),
        )
    })?;
    let mut written = Vec::new();
    for j in op.others() {
        let package = outgoing
            .get(&identifier(j))
            .ok_or_else(|| DkgError::Cluster(format!("FROST made no package for replica {j}")))?;
        let plain = Zeroizing::new(package.serialize()?);
        let sealed = box_keys[&j]
            .seal(&mut rand_core06::OsRng, &plain)
            .map_err(|_| DkgError::Cluster("sealing a round-2 package failed".into()))?;
        let text = format!(
            "{ROUND2_LABEL}\n{}\n{id}\n{j}\n{}\n",
            op.cluster.origin,
            B64.encode(sealed),
        );
        let path = round2_path(&op, id, j);
        std::fs::write(&path, op.signed(&text)?).map_err(|e| file_error(&path, e.to_string()))?;
        written.push(path);
    }
    Ok(written)
}

/// What `finish` made: the cluster key, and a digest of the public
/// package (every replica's verifying share). Operators compare both: a
/// malicious operator could send different round-1 packages to
/// different operators with one constant term, giving everyone the same
/// key but public packages (and shares) that do not sign together.
pub struct Finished {
    pub key: VerifierKey,
    /// SHA-256 of `frost-ed25519`'s encoding of the public package, hex.
    pub public_package_sha256: String,
}

/// Finish: opens the round-2 packages addressed to this replica, derives
/// its share and the cluster key, writes `replica-I.cluster-share` (and
/// points `replica-I.toml` at it), `log.vkey`, and the key into
/// `cluster.toml`. Every operator must get the same key and public
/// package digest: compare them.
pub fn finish(dir: &Path, id: u16) -> Result<Finished, DkgError> {
    let op = Operator::load(dir, id)?;
    let secret1 = read_secret(&op, &op.secret_path(1), SECRET1_LABEL, 2)?;
    let box_secret: [u8; 32] = decode(&op.secret_path(1), "the sealing secret", &secret1[1])?
        .as_slice()
        .try_into()
        .map_err(|_| file_error(&op.secret_path(1), "the sealing secret is not 32 bytes"))?;
    let box_secret = crypto_box::SecretKey::from_bytes(box_secret);
    let secret2 = read_secret(&op, &op.secret_path(2), SECRET2_LABEL, 1)?;
    let secret = frost::keys::dkg::round2::SecretPackage::deserialize(&decode(
        &op.secret_path(2),
        "the secret package",
        &secret2[0],
    )?)?;
    let (round1, _) = round1_packages(&op)?;
    let mut round2 = BTreeMap::new();
    for j in op.others() {
        let path = round2_path(&op, j, id);
        if !path.exists() {
            return Err(file_error(
                &path,
                format!("missing: copy replica {j}'s round-2 file for replica {id} here"),
            ));
        }
        let lines = op.read_published(&path, j, ROUND2_LABEL, 5)?;
        if lines[2] != j.to_string() || lines[3] != id.to_string() {
            return Err(file_error(
                &path,
                format!("is not replica {j}'s file for replica {id}"),
            ));
        }
        let sealed = decode(&path, "the sealed package", &lines[4])?;
        let plain =
            Zeroizing::new(box_secret.unseal(&sealed).map_err(|_| {
                file_error(&path, "cannot be opened with this replica's round-1 key")
            })?);
        let package = frost::keys::dkg::round2::Package::deserialize(&plain)
            .map_err(|e| file_error(&path, format!("the package: {e}")))?;
        round2.insert(identifier(j), package);
    }
    let (key_package, public) = frost::keys::dkg::part3(&secret, &round1, &round2)?;
    let share = ClusterShare {
        key_package,
        public,
    };
    share
        .check_for(id, op.cluster.n(), op.cluster.quorum())
        .map_err(|e| DkgError::Cluster(e.to_string()))?;
    let vkey = crate::cluster_key::verifier_key(&op.cluster.origin, &share.public)
        .map_err(|e| DkgError::Cluster(e.to_string()))?;
    let mut cluster = op.cluster.clone();
    match &cluster.cluster_key {
        Some(existing) if existing.to_string() != vkey.to_string() => {
            return Err(DkgError::Cluster(format!(
                "cluster.toml already names the cluster key {existing}; this run made {vkey}"
            )));
        }
        _ => cluster.cluster_key = Some(vkey.clone()),
    }
    let share_name = cluster_share_file(id as usize);
    crate::cluster_key::write_share(&dir.join(&share_name), &cluster.origin, &share)
        .map_err(|e| DkgError::Cluster(e.to_string()))?;
    edit_replica_file(&dir.join(format!("replica-{id}.toml")), |file| {
        file.cluster_share_file = Some(share_name.clone().into());
    })?;
    let vkey_path = dir.join(CLUSTER_VKEY_FILE);
    std::fs::write(&vkey_path, format!("{vkey}\n"))
        .map_err(|e| file_error(&vkey_path, e.to_string()))?;
    write_cluster_files(dir, &cluster)?;
    use sha2::Digest;
    let digest = sha2::Sha256::digest(share.public.serialize()?);
    Ok(Finished {
        key: vkey,
        public_package_sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
    })
}

#[cfg(test)]
mod tests;
