//! A witness directory: `witness.key` (the cosignature/v1 signer key,
//! mode 0600), `witness.vkey` and the database `witness.redb`.

use crate::store::{Store, StoreError};
use crate::witness::{OpenError, Witness};
use bftlog_spec::note::{KeyError, KeyType, SignerKey, VerifierKey};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const KEY_FILE: &str = "witness.key";
pub const VKEY_FILE: &str = "witness.vkey";
pub const DB_FILE: &str = "witness.redb";

#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bad witness name or key: {0}")]
    Key(#[from] KeyError),
    #[error("{0} does not exist: run `bftlog-witness init` first")]
    Missing(PathBuf),
    #[error("opening {path} (a running witness holds it; stop it first): {source}")]
    Store { path: PathBuf, source: StoreError },
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    KeyFile(#[from] crate::key_file::KeyFileError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DirError + '_ {
    move |source| DirError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Creates the directory with a new key and an empty database; refuses to
/// replace an existing key. Returns the witness's verifier key.
pub fn init(dir: &Path, name: &str) -> Result<VerifierKey, DirError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let key = SignerKey::generate(
        name,
        KeyType::CosignatureV1,
        &mut rand_core::UnwrapErr(rand::rngs::SysRng),
    )?;
    let key_path = dir.join(KEY_FILE);
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&key_path)
            .map_err(io(&key_path))?;
        file.write_all(format!("{}\n", key.to_skey_string()).as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io(&key_path))?;
    }
    let vkey_path = dir.join(VKEY_FILE);
    std::fs::write(&vkey_path, format!("{}\n", key.verifier())).map_err(io(&vkey_path))?;
    open_store(dir)?;
    Ok(key.verifier())
}

/// Opens the database of an initialised directory.
pub fn open_store(dir: &Path) -> Result<Store, DirError> {
    let path = dir.join(DB_FILE);
    if !dir.join(KEY_FILE).exists() {
        return Err(DirError::Missing(dir.join(KEY_FILE)));
    }
    Store::open(&path).map_err(|source| DirError::Store { path, source })
}

/// Opens the witness of an initialised directory.
pub fn open(dir: &Path) -> Result<Witness, DirError> {
    let key_path = dir.join(KEY_FILE);
    if !key_path.exists() {
        return Err(DirError::Missing(key_path));
    }
    let text = crate::key_file::read_key_file(&key_path)?;
    let key = SignerKey::parse(text.trim_end())?;
    Ok(Witness::new(key, open_store(dir)?)?)
}
