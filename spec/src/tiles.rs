//! C2SP tlog-tiles (`spec/tiles.md`): tile paths, which tiles a tree has,
//! and entry bundles.
//!
//! A tile at level `L`, index `N` and width `W` (256 when full) holds the
//! hashes of the complete subtrees of `256^L` leaves numbered `N·256` to
//! `N·256 + W − 1`: in the stored-hash layout of [`crate::merkle`], the
//! subtrees at Merkle level `8·L`. An entry bundle `N` holds the entries
//! of the level-0 tile `N`, each prefixed by its length as a big-endian
//! uint16.

use std::fmt;

/// Hashes in a full tile (and entries in a full bundle).
pub const TILE_WIDTH: u64 = 256;

/// Merkle levels one tile level spans.
pub const TILE_HEIGHT: u32 = 8;

/// Bytes of a full hash tile.
pub const FULL_TILE_BYTES: usize = 256 * 32;

/// Highest tile level a path may name.
pub const MAX_TILE_LEVEL: u8 = 63;

/// Largest entry a bundle can carry (its length prefix is a uint16).
pub const MAX_BUNDLE_ENTRY_BYTES: usize = u16::MAX as usize;

/// Largest entry bundle: 256 entries of 65,535 bytes, each with its
/// two-byte length.
pub const MAX_BUNDLE_BYTES: usize = 256 * (2 + MAX_BUNDLE_ENTRY_BYTES);

/// What a tile holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TileKind {
    /// Merkle tree hashes at this tile level (0 to 63).
    Hashes { level: u8 },
    /// The entries of the level-0 tile of the same index.
    Entries,
}

/// One tile or entry bundle: what the path `tile/<L>/<N>[.p/<W>]` or
/// `tile/entries/<N>[.p/<W>]` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tile {
    pub kind: TileKind,
    pub index: u64,
    /// 1 to 256; 256 is a full tile (no `.p/<W>` suffix).
    pub width: u16,
}

/// Why a tile path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TilePathError {
    #[error("not a tile path (tile/<L>/<N>[.p/<W>] or tile/entries/<N>[.p/<W>])")]
    NotATile,
    #[error("tile level {0:?} is not a decimal 0 to 63 without leading zeros")]
    Level(String),
    #[error("tile index {0:?} is not in x-prefixed three-digit groups (e.g. x001/x234/067)")]
    Index(String),
    #[error("tile width {0:?} is not a decimal 1 to 255 without leading zeros")]
    Width(String),
}

impl Tile {
    /// A full tile.
    pub fn full(kind: TileKind, index: u64) -> Self {
        Tile {
            kind,
            index,
            width: TILE_WIDTH as u16,
        }
    }

    pub fn is_full(&self) -> bool {
        u64::from(self.width) == TILE_WIDTH
    }

    /// The tile level: entry bundles are at level 0.
    pub fn level(&self) -> u8 {
        match self.kind {
            TileKind::Hashes { level } => level,
            TileKind::Entries => 0,
        }
    }

    /// Leaves one hash of the tile covers: `256^level` (`None` beyond u64).
    pub fn leaves_per_hash(&self) -> Option<u64> {
        1u64.checked_shl(TILE_HEIGHT * u32::from(self.level()))
            .filter(|_| u32::from(self.level()) * TILE_HEIGHT < 64)
    }

    /// The smallest tree that holds this tile: the leaves up to the end of
    /// its last hash (`None` if beyond u64).
    pub fn tree_size_needed(&self) -> Option<u64> {
        self.index
            .checked_mul(TILE_WIDTH)?
            .checked_add(u64::from(self.width))?
            .checked_mul(self.leaves_per_hash()?)
    }

    /// Whether a tree of `size` leaves holds this tile. A partial tile is
    /// held while the tree's tile at that position is at least as wide.
    pub fn is_in_tree(&self, size: u64) -> bool {
        self.tree_size_needed().is_some_and(|needed| needed <= size)
    }

    /// Parses a path relative to the log's prefix, e.g. `tile/0/x001/234.p/5`
    /// (a leading `/` is allowed). Strict: canonical levels, indexes and
    /// widths only, so each tile has exactly one path.
    pub fn parse_path(path: &str) -> Result<Self, TilePathError> {
        let path = path.strip_prefix('/').unwrap_or(path);
        let rest = path.strip_prefix("tile/").ok_or(TilePathError::NotATile)?;
        let (kind_text, rest) = rest.split_once('/').ok_or(TilePathError::NotATile)?;
        let kind = if kind_text == "entries" {
            TileKind::Entries
        } else {
            TileKind::Hashes {
                level: parse_level(kind_text)?,
            }
        };
        let (index_text, width) = match rest.split_once(".p/") {
            Some((index_text, width_text)) => (index_text, parse_width(width_text)?),
            None => (rest, TILE_WIDTH as u16),
        };
        let index = parse_index(index_text)?;
        Ok(Tile { kind, index, width })
    }

    /// The path relative to the log's prefix, without a leading `/`.
    pub fn path(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Tile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            TileKind::Hashes { level } => write!(f, "tile/{level}/")?,
            TileKind::Entries => write!(f, "tile/entries/")?,
        }
        let mut groups = Vec::new();
        let mut n = self.index;
        loop {
            groups.push(n % 1000);
            n /= 1000;
            if n == 0 {
                break;
            }
        }
        for (i, group) in groups.iter().rev().enumerate() {
            if i + 1 < groups.len() {
                write!(f, "x{group:03}/")?;
            } else {
                write!(f, "{group:03}")?;
            }
        }
        if !self.is_full() {
            write!(f, ".p/{}", self.width)?;
        }
        Ok(())
    }
}

/// A decimal without sign or leading zeros, at most `max`.
fn canonical_decimal(text: &str, max: u64) -> Option<u64> {
    if text.is_empty()
        || text.len() > 20
        || !text.bytes().all(|b| b.is_ascii_digit())
        || (text.len() > 1 && text.starts_with('0'))
    {
        return None;
    }
    text.parse::<u64>().ok().filter(|v| *v <= max)
}

fn parse_level(text: &str) -> Result<u8, TilePathError> {
    canonical_decimal(text, u64::from(MAX_TILE_LEVEL))
        .map(|v| v as u8)
        .ok_or_else(|| TilePathError::Level(text.to_owned()))
}

fn parse_width(text: &str) -> Result<u16, TilePathError> {
    canonical_decimal(text, TILE_WIDTH - 1)
        .filter(|v| *v >= 1)
        .map(|v| v as u16)
        .ok_or_else(|| TilePathError::Width(text.to_owned()))
}

fn parse_index(text: &str) -> Result<u64, TilePathError> {
    let bad = || TilePathError::Index(text.to_owned());
    let groups: Vec<&str> = text.split('/').collect();
    // u64::MAX has 20 digits: seven groups.
    if groups.len() > 7 {
        return Err(bad());
    }
    let mut index: u64 = 0;
    for (i, group) in groups.iter().enumerate() {
        let last = i + 1 == groups.len();
        let digits = if last {
            *group
        } else {
            group.strip_prefix('x').ok_or_else(bad)?
        };
        if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        // The first group of a multi-group index is never 000: the
        // encoding uses as few groups as the index needs.
        if i == 0 && !last && digits == "000" {
            return Err(bad());
        }
        let value: u64 = digits.parse().expect("three digits");
        index = index
            .checked_mul(1000)
            .and_then(|v| v.checked_add(value))
            .ok_or_else(bad)?;
    }
    Ok(index)
}

/// The tiles a tree of `size` leaves has at its right edge that are not
/// full: per level, the partial tile of width `floor(size / 256^L) mod 256`
/// where that is not zero. With the full tiles below them these are what a
/// checkpoint of `size` needs published.
pub fn partial_tiles(size: u64) -> Vec<Tile> {
    let mut out = Vec::new();
    let mut level = 0u8;
    let mut count = size; // hashes at this tile level: floor(size / 256^level)
    while count > 0 {
        let width = (count % TILE_WIDTH) as u16;
        if width > 0 {
            out.push(Tile {
                kind: TileKind::Hashes { level },
                index: count / TILE_WIDTH,
                width,
            });
        }
        count /= TILE_WIDTH;
        level += 1;
    }
    out
}

/// Why an entry bundle was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("entry {index} has {len} bytes; a bundle carries at most 65535")]
    EntryTooLarge { index: usize, len: usize },
    #[error("the bundle ends inside entry {0}")]
    Truncated(usize),
    #[error("the bundle holds {found} entries, {expected} expected")]
    Count { found: usize, expected: usize },
}

/// An entry bundle: each entry prefixed by its length as a big-endian
/// uint16.
pub fn encode_bundle<'a>(
    entries: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<u8>, BundleError> {
    let mut out = Vec::new();
    for (index, entry) in entries.into_iter().enumerate() {
        let len = u16::try_from(entry.len()).map_err(|_| BundleError::EntryTooLarge {
            index,
            len: entry.len(),
        })?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(entry);
    }
    Ok(out)
}

/// The entries of a bundle that must hold exactly `expected` of them.
pub fn parse_bundle(bytes: &[u8], expected: usize) -> Result<Vec<&[u8]>, BundleError> {
    let mut out = Vec::with_capacity(expected.min(TILE_WIDTH as usize));
    let mut rest = bytes;
    while !rest.is_empty() {
        let index = out.len();
        let [a, b, tail @ ..] = rest else {
            return Err(BundleError::Truncated(index));
        };
        let len = usize::from(u16::from_be_bytes([*a, *b]));
        if tail.len() < len {
            return Err(BundleError::Truncated(index));
        }
        let (entry, after) = tail.split_at(len);
        out.push(entry);
        rest = after;
    }
    if out.len() != expected {
        return Err(BundleError::Count {
            found: out.len(),
            expected,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
