//! Proof generation from stored hashes: roots, inclusion and consistency
//! proofs, each with one batched read.

use super::*;

#[derive(Debug, thiserror::Error)]
pub enum ProveError {
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("old size {old_size} is larger than new size {new_size}")]
    OldSizeTooLarge { old_size: u64, new_size: u64 },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Multiproof(#[from] MultiproofError),
}

/// A subtree `[start, end)` whose MTH appears in a proof.
#[derive(Clone, Copy, Debug)]
pub(super) struct Span {
    pub(super) start: u64,
    pub(super) end: u64,
}

/// Largest power of two strictly less than `n` (n ≥ 2).
pub(super) fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// Reads the MTH of every span with one storage call.
pub(super) fn span_hashes<R: HashReader + ?Sized>(
    reader: &R,
    spans: &[Span],
) -> Result<Vec<Hash>, ProveError> {
    let mut out = Vec::with_capacity(spans.len());
    span_hashes_into(reader, spans, &mut Scratch::default(), &mut out)?;
    Ok(out)
}

/// Buffers [`span_hashes_into`] reuses across calls: proving many indexes
/// allocated about fifteen times per proof without them.
#[derive(Default)]
pub(super) struct Scratch {
    pub(super) indexes: Vec<u64>,
    pub(super) counts: Vec<usize>,
}

/// [`span_hashes`], appending to `out`.
pub(super) fn span_hashes_into<R: HashReader + ?Sized>(
    reader: &R,
    spans: &[Span],
    scratch: &mut Scratch,
    out: &mut Vec<Hash>,
) -> Result<(), ProveError> {
    scratch.indexes.clear();
    scratch.counts.clear();
    for span in spans {
        let before = scratch.indexes.len();
        scratch
            .indexes
            .extend(peak_subtrees(span.start, span.end).map(|(l, i)| stored_hash_index(l, i)));
        scratch.counts.push(scratch.indexes.len() - before);
    }
    let hashes = read_exact(reader, &scratch.indexes)?;
    let mut offset = 0;
    for &count in &scratch.counts {
        let part = &hashes[offset..offset + count];
        offset += count;
        let (last, rest) = part.split_last().expect("a span is never empty");
        out.push(
            rest.iter()
                .rev()
                .fold(*last, |acc, left| node_hash(left, &acc)),
        );
    }
    Ok(())
}

/// Root of the tree of `size` leaves, from stored hashes.
pub fn tree_root<R: HashReader + ?Sized>(size: u64, reader: &R) -> Result<Hash, ProveError> {
    if size == 0 {
        return Ok(empty_root());
    }
    Ok(span_hashes(
        reader,
        &[Span {
            start: 0,
            end: size,
        }],
    )?[0])
}

/// RFC 6962 `PATH(index, D[0:size])`: the inclusion proof for a leaf, ordered
/// from the leaf's sibling up to the root's child.
pub fn prove_inclusion<R: HashReader + ?Sized>(
    index: u64,
    size: u64,
    reader: &R,
) -> Result<Vec<Hash>, ProveError> {
    if index >= size {
        return Err(ProveError::IndexOutOfRange { index, size });
    }
    let mut spans = Vec::with_capacity(64);
    inclusion_spans(index, size, &mut spans);
    span_hashes(reader, &spans)
}

/// [`prove_inclusion`] for each of `indexes` in one tree: the subtrees
/// ending at the tree's right edge (the only ones that may be incomplete,
/// and so need hashing) are computed once for all the proofs. Same
/// results and errors as proving each index alone.
pub fn prove_inclusions<R: HashReader + ?Sized>(
    indexes: &[u64],
    size: u64,
    reader: &R,
) -> Result<Vec<Vec<Hash>>, ProveError> {
    // (start, hash) of subtrees [start, size) already computed.
    let mut right_edge: Vec<(u64, Hash)> = Vec::new();
    // Buffers reused for every index (see `Scratch`).
    let mut spans = Vec::with_capacity(64);
    let mut known: Vec<Option<Hash>> = Vec::with_capacity(64);
    let mut todo = Vec::with_capacity(64);
    let mut computed = Vec::with_capacity(64);
    let mut scratch = Scratch::default();
    let mut proofs = Vec::with_capacity(indexes.len());
    for &index in indexes {
        if index >= size {
            return Err(ProveError::IndexOutOfRange { index, size });
        }
        inclusion_spans(index, size, &mut spans);
        known.clear();
        known.extend(spans.iter().map(|span| {
            (span.end == size)
                .then(|| right_edge.iter().find(|(s, _)| *s == span.start))
                .flatten()
                .map(|(_, hash)| *hash)
        }));
        todo.clear();
        todo.extend(
            spans
                .iter()
                .zip(&known)
                .filter(|(_, known)| known.is_none())
                .map(|(span, _)| *span),
        );
        computed.clear();
        span_hashes_into(reader, &todo, &mut scratch, &mut computed)?;
        let mut computed = computed.iter();
        let mut todo_spans = todo.iter();
        let proof: Vec<Hash> = known
            .iter()
            .map(|slot| match slot {
                Some(hash) => *hash,
                None => {
                    let span = todo_spans.next().expect("one span per unknown hash");
                    let hash = *computed.next().expect("one hash per span");
                    if span.end == size {
                        right_edge.push((span.start, hash));
                    }
                    hash
                }
            })
            .collect();
        proofs.push(proof);
    }
    Ok(proofs)
}

/// The subtrees whose hashes make up `PATH(index, D[0:size])`, from the
/// leaf's sibling up. Requires `index < size`.
pub(super) fn inclusion_spans(index: u64, size: u64, spans: &mut Vec<Span>) {
    // Walk down from the root; each level contributes the sibling span.
    spans.clear();
    let (mut start, mut end) = (0u64, size);
    while end - start > 1 {
        let k = split_point(end - start);
        if index - start < k {
            spans.push(Span {
                start: start + k,
                end,
            });
            end = start + k;
        } else {
            spans.push(Span {
                start,
                end: start + k,
            });
            start += k;
        }
    }
    spans.reverse();
}

/// RFC 6962 `PROOF(old_size, D[0:new_size])`. Empty when `old_size` is 0 or
/// equal to `new_size` (see `spec/merkle.md`).
pub fn prove_consistency<R: HashReader + ?Sized>(
    old_size: u64,
    new_size: u64,
    reader: &R,
) -> Result<Vec<Hash>, ProveError> {
    if old_size > new_size {
        return Err(ProveError::OldSizeTooLarge { old_size, new_size });
    }
    if old_size == 0 || old_size == new_size {
        return Ok(Vec::new());
    }
    // SUBPROOF(m, D[start:end], b), unrolled.
    let mut spans = Vec::new();
    let (mut start, mut end, mut m, mut whole) = (0u64, new_size, old_size, true);
    loop {
        let n = end - start;
        if m == n {
            if !whole {
                spans.push(Span { start, end });
            }
            break;
        }
        let k = split_point(n);
        if m <= k {
            spans.push(Span {
                start: start + k,
                end,
            });
            end = start + k;
        } else {
            spans.push(Span {
                start,
                end: start + k,
            });
            start += k;
            m -= k;
            whole = false;
        }
    }
    spans.reverse();
    span_hashes(reader, &spans)
}
