//! How blocks are laid out: a block's header and its entries in runs in
//! `block_parts`, voted blocks listed in `voted_blocks`, committed ones in
//! `block_starts` and `blocks` (see the module docs of `storage`).

use bftlog_spec::merkle::Hash;
use bftlog_spec::wire::{self, Block, BoundedVec, Entry};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::*;

/// A committed block without its entries, which are in `entries`.
#[derive(Serialize, Deserialize)]
pub(super) struct BlockRecord {
    pub(super) header: Block,
    pub(super) first_index: u64,
    pub(super) entry_count: u64,
}

/// Committed blocks from `from_height` for a sync answer: at most `max`,
/// each taken only while `admit` accepts it (the answer's byte budget),
/// and the justify of the block after the last one taken (the QC that
/// certifies it), read without that block's entries. A block is read
/// only if the ones before it fit, so the work follows the answer's
/// size, not the request's.
pub(super) fn read_sync_blocks(
    read: &redb::ReadTransaction,
    from_height: u64,
    max: u64,
    mut admit: impl FnMut(&Block) -> bool,
) -> Result<(Vec<Block>, Option<bftlog_spec::wire::QuorumCert>), StoreError> {
    let blocks = read.open_table(BLOCKS)?;
    let mut out = Vec::new();
    for row in blocks.range(from_height..)? {
        let (_, bytes) = row?;
        let record: BlockRecord = decode(bytes.value(), "block")?;
        if out.len() as u64 == max {
            return Ok((out, Some(record.header.justify)));
        }
        let block = with_entries(read, record)?;
        if !admit(&block) {
            return Ok((out, Some(block.justify)));
        }
        out.push(block);
    }
    // The stored chain ends here: no stored QC certifies the last block.
    Ok((out, None))
}

/// Up to `max` committed blocks from `from_height`, entries included.
pub(super) fn read_blocks(
    read: &redb::ReadTransaction,
    from_height: u64,
    max: u64,
) -> Result<Vec<Block>, StoreError> {
    let blocks = read.open_table(BLOCKS)?;
    let mut out = Vec::new();
    for row in blocks.range(from_height..from_height.saturating_add(max))? {
        let (_, bytes) = row?;
        let record: BlockRecord = decode(bytes.value(), "block")?;
        out.push(with_entries(read, record)?);
    }
    Ok(out)
}

/// The committed block of `record`, its entries read from their runs.
fn with_entries(read: &redb::ReadTransaction, record: BlockRecord) -> Result<Block, StoreError> {
    let end = record.first_index + record.entry_count;
    let items = read_entries(read, record.first_index, end)?;
    if items.len() as u64 != record.entry_count {
        return Err(StoreError::Corrupt("block entries missing".into()));
    }
    let mut block = record.header;
    block.entries =
        BoundedVec::new(items).map_err(|e| StoreError::Corrupt(format!("block: {e}")))?;
    Ok(block)
}

/// The stored entries `start..end` (fewer if the log ends first), from
/// their blocks' runs.
pub(super) fn read_entries(
    read: &redb::ReadTransaction,
    start: u64,
    end: u64,
) -> Result<Vec<Entry>, StoreError> {
    let mut out = Vec::new();
    if start >= end {
        return Ok(out);
    }
    let from = start;
    let starts = read.open_table(BLOCK_STARTS)?;
    let parts = read.open_table(BLOCK_PARTS)?;
    // The block holding `from` is the last one that starts at or before it.
    let first = match starts.range(..=from)?.next_back() {
        Some(row) => row?.0.value(),
        None => return Ok(out),
    };
    let mut expected = first;
    for row in starts.range(first..end)? {
        let (key, value) = row?;
        let block_start = key.value();
        let (round, id, count) = value.value();
        if block_start != expected {
            return Err(StoreError::Corrupt(format!(
                "blocks' entries jump from {expected} to {block_start}"
            )));
        }
        read_block_entries(
            &parts,
            (round, id),
            count,
            from.saturating_sub(block_start),
            end - block_start,
            &mut out,
        )?;
        expected = block_start + count;
    }
    Ok(out)
}

/// Pushes the entries of one run (each a 4-byte big-endian length, then
/// the bytes) numbered `first..` that lie in `wanted` onto `out`; returns
/// the number after the run's last entry.
pub(super) fn push_run_entries(
    run: &[u8],
    first: u64,
    wanted: std::ops::Range<u64>,
    out: &mut Vec<Entry>,
) -> Result<u64, StoreError> {
    let mut rest = run;
    let mut index = first;
    let corrupt =
        |index: u64| StoreError::Corrupt(format!("run of entries at {first}, entry {index}"));
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| corrupt(index))?;
        let len = u32::from_be_bytes(*len) as usize;
        let body = tail.get(..len).ok_or_else(|| corrupt(index))?;
        if wanted.contains(&index) {
            out.push(
                Entry::new(body.to_vec())
                    .map_err(|e| StoreError::Corrupt(format!("entry {index}: {e}")))?,
            );
        }
        rest = &tail[len..];
        index += 1;
    }
    Ok(index)
}

/// The `block_parts` part number of the run whose first entry is at
/// `offset` in its block (part 0 is the header).
pub(super) fn run_part(offset: u64) -> u32 {
    u32::try_from(offset + 1).expect("a block holds far fewer than 2^32 entries")
}

/// Writes `block` into `block_parts`: its header as part 0, then its
/// entries in runs (a 4-byte big-endian length, then the bytes, each),
/// a run of at most [`BLOCK_PART_BYTES`] unless it is one larger entry.
pub(super) fn put_block(
    parts: &mut redb::Table<(u64, [u8; 32], u32), &[u8]>,
    id: &Hash,
    block: &Block,
    scratch: &mut Vec<u8>,
) -> Result<(), StoreError> {
    let key = |part| (block.round, id.0, part);
    scratch.clear();
    wire::encode_into(&bftlog_consensus::crypto::header_of(block), scratch);
    parts.insert(key(0), scratch.as_slice())?;
    scratch.clear();
    let mut run_first = 0;
    for (offset, entry) in block.entries.iter().enumerate() {
        if offset != run_first && scratch.len() + 4 + entry.len() > BLOCK_PART_BYTES {
            parts.insert(key(run_part(run_first as u64)), scratch.as_slice())?;
            scratch.clear();
            run_first = offset;
        }
        scratch.extend_from_slice(&(entry.len() as u32).to_be_bytes());
        scratch.extend_from_slice(entry);
    }
    if !block.entries.is_empty() {
        parts.insert(key(run_part(run_first as u64)), scratch.as_slice())?;
    }
    Ok(())
}

/// Records `block` as voted (with its entry count) and writes it, unless
/// it is listed already (its rows are then written).
pub(super) fn put_voted(
    parts: &mut redb::Table<(u64, [u8; 32], u32), &[u8]>,
    voted: &mut redb::Table<(u64, [u8; 32]), u64>,
    id: &Hash,
    block: &Block,
    scratch: &mut Vec<u8>,
) -> Result<(), StoreError> {
    let count = block.entries.len() as u64;
    if voted.insert((block.round, id.0), count)?.is_none() {
        put_block(parts, id, block, scratch)?;
    }
    Ok(())
}

/// Reads the entries at offsets `from..end` of the block (`round`, `id`)
/// of `count` entries into `out`. A missing or misplaced run is
/// corruption: runs are written in the transaction that refers to them.
pub(super) fn read_block_entries(
    parts: &impl ReadableTable<(u64, [u8; 32], u32), &'static [u8]>,
    (round, id): (u64, [u8; 32]),
    count: u64,
    from: u64,
    end: u64,
    out: &mut Vec<Entry>,
) -> Result<(), StoreError> {
    let corrupt = |offset: u64| {
        StoreError::Corrupt(format!(
            "block of round {round} lacks its run at entry {offset}"
        ))
    };
    let end = end.min(count);
    if from >= end {
        return Ok(());
    }
    // The run holding `from` is the last one that begins at or before it.
    let from_part = u32::try_from(from + 1).map_err(|_| corrupt(from))?;
    let first = match parts
        .range((round, id, 1)..=(round, id, from_part))?
        .next_back()
    {
        Some(row) => row?.0.value().2,
        None => return Err(corrupt(from)),
    };
    let mut offset = u64::from(first) - 1;
    for row in parts.range((round, id, first)..=(round, id, u32::MAX))? {
        if offset >= end {
            break;
        }
        let (key, bytes) = row?;
        if u64::from(key.value().2) != offset + 1 {
            return Err(corrupt(offset));
        }
        offset = push_run_entries(bytes.value(), offset, from..end, out)?;
    }
    if offset < end || (end == count && offset != count) {
        return Err(corrupt(offset));
    }
    Ok(())
}

/// The block (`round`, `id`) of `count` entries read back from
/// `block_parts`.
pub(super) fn read_block(
    parts: &impl ReadableTable<(u64, [u8; 32], u32), &'static [u8]>,
    (round, id): (u64, [u8; 32]),
    count: u64,
) -> Result<Block, StoreError> {
    let header = parts
        .get((round, id, 0))?
        .ok_or_else(|| StoreError::Corrupt(format!("block of round {round} lacks its header")))?;
    let mut block: Block = decode(header.value(), "block header")?;
    let mut entries = Vec::with_capacity(count as usize);
    read_block_entries(parts, (round, id), count, 0, count, &mut entries)?;
    block.entries =
        BoundedVec::new(entries).map_err(|e| StoreError::Corrupt(format!("block: {e}")))?;
    Ok(block)
}

/// The voted blocks not settled by a commit yet, oldest round first.
pub(super) fn read_voted(read: &redb::ReadTransaction) -> Result<Vec<Block>, StoreError> {
    let parts = read.open_table(BLOCK_PARTS)?;
    let mut blocks = Vec::new();
    for row in read.open_table(VOTED)?.iter()? {
        let (key, count) = row?;
        blocks.push(read_block(&parts, key.value(), count.value())?);
    }
    Ok(blocks)
}
