//! Recomputing a log's Merkle tree from an exported entries file and
//! comparing it with a checkpoint.
//!
//! The entries file (`spec/entries.md`) holds one entry per line as
//! canonical padded base64, every line ending in `"\n"`; line `i + 1` is the
//! entry at index `i`. The audit streams it: memory stays O(log n) (a
//! compact range of at most 64 hashes plus one line buffer).

use std::io::{BufRead, Read};

use bftlog_spec::encoding::decode_base64;
use bftlog_spec::merkle::{self, CompactRange, Hash};
use serde::Serialize;

/// Default limit on one decoded entry.
pub const DEFAULT_MAX_ENTRY_BYTES: usize = 1 << 20;
/// How often, in entries, the progress callback runs.
pub const PROGRESS_INTERVAL_ENTRIES: u64 = 1 << 16;

/// How far an audit has got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub entries: u64,
    pub bytes: u64,
}

/// The tree over the export's first `size` entries matched the checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    pub entries_checked: u64,
    pub root: String,
    pub bytes_read: u64,
    /// The export continues past the checkpoint's size; the rest was not
    /// checked.
    pub more_entries: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("read error after {entries} entries: {error}")]
    Read { entries: u64, error: std::io::Error },
    #[error("line {line}: {reason}")]
    Line { line: u64, reason: &'static str },
    #[error("line {line}: entry longer than {max} bytes")]
    TooLarge { line: u64, max: usize },
    #[error("the export ends after {found} entries but the checkpoint covers {size}")]
    TooFew { found: u64, size: u64 },
    #[error("the first {size} entries hash to root {computed}, the checkpoint says {expected}")]
    RootMismatch {
        size: u64,
        computed: Hash,
        expected: Hash,
    },
}

impl AuditError {
    pub fn status(&self) -> crate::Status {
        match self {
            AuditError::TooFew { .. } | AuditError::RootMismatch { .. } => crate::Status::Invalid,
            _ => crate::Status::Malformed,
        }
    }
}

/// Recomputes the root of the first `size` entries read from `reader` and
/// compares it with `root`.
pub fn audit_entries<R: BufRead>(
    mut reader: R,
    size: u64,
    root: &Hash,
    max_entry_bytes: usize,
    mut progress: impl FnMut(Progress),
) -> Result<AuditReport, AuditError> {
    // Longest accepted line: base64 of the largest entry, plus "\n".
    let max_line = max_entry_bytes.div_ceil(3) * 4 + 1;
    let mut range = CompactRange::new();
    let mut line = Vec::with_capacity(1024);
    let mut bytes = 0u64;
    while range.size() < size {
        let entries = range.size();
        let line_no = entries + 1;
        line.clear();
        let n = reader
            .by_ref()
            .take(max_line as u64)
            .read_until(b'\n', &mut line)
            .map_err(|error| AuditError::Read { entries, error })?;
        bytes += n as u64;
        if n == 0 {
            return Err(AuditError::TooFew {
                found: entries,
                size,
            });
        }
        if line.pop() != Some(b'\n') {
            return Err(if n == max_line {
                AuditError::TooLarge {
                    line: line_no,
                    max: max_entry_bytes,
                }
            } else {
                AuditError::Line {
                    line: line_no,
                    reason: "last line has no newline (truncated export?)",
                }
            });
        }
        let text = std::str::from_utf8(&line).map_err(|_| AuditError::Line {
            line: line_no,
            reason: "not canonical padded base64",
        })?;
        let entry = decode_base64(text).map_err(|_| AuditError::Line {
            line: line_no,
            reason: "not canonical padded base64",
        })?;
        if entry.len() > max_entry_bytes {
            return Err(AuditError::TooLarge {
                line: line_no,
                max: max_entry_bytes,
            });
        }
        range.append(merkle::leaf_hash(&entry));
        if range.size() % PROGRESS_INTERVAL_ENTRIES == 0 {
            progress(Progress {
                entries: range.size(),
                bytes,
            });
        }
    }
    let computed = range.root();
    if computed != *root {
        return Err(AuditError::RootMismatch {
            size,
            computed,
            expected: *root,
        });
    }
    let more_entries = !reader
        .fill_buf()
        .map_err(|error| AuditError::Read {
            entries: size,
            error,
        })?
        .is_empty();
    progress(Progress {
        entries: size,
        bytes,
    });
    Ok(AuditReport {
        entries_checked: size,
        root: computed.to_base64(),
        bytes_read: bytes,
        more_entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bftlog_spec::encoding::encode_base64;

    fn export(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in entries {
            out.extend_from_slice(encode_base64(e).as_bytes());
            out.push(b'\n');
        }
        out
    }

    fn tree(entries: &[Vec<u8>]) -> Hash {
        let leaves: Vec<Hash> = entries.iter().map(|e| merkle::leaf_hash(e)).collect();
        merkle::root_from_leaf_hashes(&leaves)
    }

    fn entries(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("entry {i}").into_bytes()).collect()
    }

    #[test]
    fn audit_matches_the_tree_at_every_size() {
        let all = entries(40);
        let file = export(&all);
        for size in 0..=40 {
            let root = tree(&all[..size]);
            let report = audit_entries(&file[..], size as u64, &root, 1024, |_| {}).unwrap();
            assert_eq!(report.entries_checked, size as u64);
            assert_eq!(report.more_entries, size < 40);
        }
    }

    #[test]
    fn audit_finds_a_changed_entry_and_a_short_export() {
        let mut all = entries(10);
        let root = tree(&all);
        all[7] = b"forged".to_vec();
        let file = export(&all);
        assert!(matches!(
            audit_entries(&file[..], 10, &root, 1024, |_| {}),
            Err(AuditError::RootMismatch { size: 10, .. })
        ));
        let file = export(&all[..9]);
        assert!(matches!(
            audit_entries(&file[..], 10, &root, 1024, |_| {}),
            Err(AuditError::TooFew { found: 9, size: 10 })
        ));
    }

    #[test]
    fn audit_rejects_malformed_lines_by_number() {
        let root = tree(&entries(3));
        let mut file = export(&entries(3));
        file.pop();
        assert!(matches!(
            audit_entries(&file[..], 3, &root, 1024, |_| {}),
            Err(AuditError::Line { line: 3, .. })
        ));
        let bad = b"ZW50cnkgMA==\nZW50cnkgMQ\nZW50cnkgMg==\n";
        assert!(matches!(
            audit_entries(&bad[..], 3, &root, 1024, |_| {}),
            Err(AuditError::Line { line: 2, .. })
        ));
        let big = export(&[vec![0u8; 100]]);
        assert!(matches!(
            audit_entries(&big[..], 1, &root, 99, |_| {}),
            Err(AuditError::TooLarge { line: 1, max: 99 })
        ));
        // Exactly at the limit is fine (the root differs, so it fails later).
        assert!(matches!(
            audit_entries(&big[..], 1, &root, 100, |_| {}),
            Err(AuditError::RootMismatch { .. })
        ));
    }

    #[test]
    fn progress_reports_every_interval_and_at_the_end() {
        let n = PROGRESS_INTERVAL_ENTRIES as usize + 5;
        let all: Vec<Vec<u8>> = (0..n).map(|i| (i as u32).to_be_bytes().to_vec()).collect();
        let root = tree(&all);
        let file = export(&all);
        let mut seen = Vec::new();
        audit_entries(&file[..], n as u64, &root, 16, |p| seen.push(p.entries)).unwrap();
        assert_eq!(seen, vec![PROGRESS_INTERVAL_ENTRIES, n as u64]);
    }
}
