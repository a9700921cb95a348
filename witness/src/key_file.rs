//! Reading secret key files. Like ssh, a key that the group or others may
//! read is refused, naming the file and the fix: a key readable by other
//! accounts may already be someone else's, and signing on with it would
//! hide that.

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Why a key file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} can be read by its group or others (mode {mode:04o}); a private key must be \
         readable by its owner only: chmod 600 {path}"
    )]
    TooOpen { path: PathBuf, mode: u32 },
}

/// The text of the secret key file at `path`, wiped from memory when
/// dropped. Refused if its permissions let the group or others read it.
pub fn read_key_file(path: &Path) -> Result<Zeroizing<String>, KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::TooOpen {
                path: path.to_owned(),
                mode,
            });
        }
    }
    std::fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_key_others_can_read_is_refused_with_the_fix_and_an_owner_only_key_is_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replica-0.key");
        std::fs::write(&path, "PRIVATE+KEY+example\n").unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let refused = read_key_file(&path).unwrap_err();
            assert!(
                matches!(refused, KeyFileError::TooOpen { mode: m, .. } if m == mode),
                "{refused}"
            );
            let message = refused.to_string();
            assert!(message.contains("chmod 600"), "{message}");
            assert!(message.contains("replica-0.key"), "{message}");
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(
                read_key_file(&path).unwrap().as_str(),
                "PRIVATE+KEY+example\n"
            );
        }
    }
}
