//! Reading inputs: bounded file reads (`-` is standard input) and the
//! "base64 hashes, one per line" proof format.

use std::io::Read;
use std::path::Path;

use bftlog_spec::merkle::Hash;

/// Largest entry file hashed by `inclusion` (the log's own default limit
/// is 64 KiB; this only stops a runaway read).
pub const MAX_ENTRY_FILE_BYTES: usize = 256 << 20;
/// Largest proof-hash file or stdin proof accepted.
pub const MAX_HASH_LINES_BYTES: usize = 64 * 1024;
/// Most hashes a proof file may hold: the longest RFC 9162 proof (64) plus
/// the prefix root a full consistency path may carry.
pub const MAX_PROOF_HASHES: usize = bftlog_spec::merkle::MAX_PROOF_LEN + 1;

/// A file (or standard input) that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("{name}: cannot read: {error}")]
    Read { name: String, error: std::io::Error },
    #[error("{name}: larger than {max} bytes")]
    TooLarge { name: String, max: usize },
}

/// How a path is named in messages: `-` is standard input.
pub fn display_name(path: &Path) -> String {
    if path.as_os_str() == "-" {
        "<stdin>".to_owned()
    } else {
        path.display().to_string()
    }
}

/// Reads at most `max` bytes from `path` (or stdin for `-`); more is an
/// error, never a silent truncation.
pub fn read_bounded(path: &Path, max: usize) -> Result<Vec<u8>, InputError> {
    let name = display_name(path);
    let read_err = |error| InputError::Read {
        name: name.clone(),
        error,
    };
    let mut bytes = Vec::new();
    let limit = max as u64 + 1;
    if path.as_os_str() == "-" {
        std::io::stdin()
            .lock()
            .take(limit)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
    } else {
        std::fs::File::open(path)
            .map_err(read_err)?
            .take(limit)
            .read_to_end(&mut bytes)
            .map_err(read_err)?;
    }
    if bytes.len() > max {
        return Err(InputError::TooLarge { name, max });
    }
    Ok(bytes)
}

/// Why a list of proof hashes was rejected. `line` is 1-based.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashLinesError {
    #[error("larger than {MAX_HASH_LINES_BYTES} bytes")]
    TooLarge,
    #[error("not valid UTF-8")]
    NotUtf8,
    #[error("line {line}: empty line (only the last line may end without a newline)")]
    EmptyLine { line: usize },
    #[error("line {line}: not canonical base64 of 32 bytes")]
    Hash { line: usize },
    #[error("line {line}: more than {max} hashes")]
    TooMany { line: usize, max: usize },
}

/// Parses proof hashes: canonical padded base64 of exactly 32 bytes, one per
/// line. The final newline is optional; blank lines, CR and spaces are
/// rejected. Empty input is an empty proof.
pub fn parse_hash_lines(bytes: &[u8], max: usize) -> Result<Vec<Hash>, HashLinesError> {
    if bytes.len() > MAX_HASH_LINES_BYTES {
        return Err(HashLinesError::TooLarge);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| HashLinesError::NotUtf8)?;
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let text = text.strip_suffix('\n').unwrap_or(text);
    let mut hashes = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let line_no = i + 1;
        if line.is_empty() {
            return Err(HashLinesError::EmptyLine { line: line_no });
        }
        if hashes.len() == max {
            return Err(HashLinesError::TooMany { line: line_no, max });
        }
        hashes.push(Hash::from_base64(line).map_err(|_| HashLinesError::Hash { line: line_no })?);
    }
    Ok(hashes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";

    #[test]
    fn hash_lines_parse_strictly() {
        assert_eq!(parse_hash_lines(b"", 4).unwrap(), vec![]);
        assert_eq!(
            parse_hash_lines(b"\n", 4),
            Err(HashLinesError::EmptyLine { line: 1 })
        );
        let two = format!("{H}\n{H}\n");
        assert_eq!(parse_hash_lines(two.as_bytes(), 4).unwrap().len(), 2);
        let no_final_newline = format!("{H}\n{H}");
        assert_eq!(
            parse_hash_lines(no_final_newline.as_bytes(), 4)
                .unwrap()
                .len(),
            2
        );
        let blank = format!("{H}\n\n{H}\n");
        assert_eq!(
            parse_hash_lines(blank.as_bytes(), 4),
            Err(HashLinesError::EmptyLine { line: 2 })
        );
        let crlf = format!("{H}\r\n");
        assert_eq!(
            parse_hash_lines(crlf.as_bytes(), 4),
            Err(HashLinesError::Hash { line: 1 })
        );
        let unpadded = format!("{H}\n{}\n", H.trim_end_matches('='));
        assert_eq!(
            parse_hash_lines(unpadded.as_bytes(), 4),
            Err(HashLinesError::Hash { line: 2 })
        );
        let short = "AAAA\n";
        assert_eq!(
            parse_hash_lines(short.as_bytes(), 4),
            Err(HashLinesError::Hash { line: 1 })
        );
        let three = format!("{H}\n{H}\n{H}\n");
        assert_eq!(
            parse_hash_lines(three.as_bytes(), 2),
            Err(HashLinesError::TooMany { line: 3, max: 2 })
        );
        assert_eq!(parse_hash_lines(b"\xff\n", 2), Err(HashLinesError::NotUtf8));
        let huge = vec![b'A'; MAX_HASH_LINES_BYTES + 1];
        assert_eq!(parse_hash_lines(&huge, 2), Err(HashLinesError::TooLarge));
    }
}
