//! The committed leaves a replica remembers so that it neither re-proposes
//! an entry nor votes for a block that repeats one.

use bftlog_spec::merkle::Hash;

use super::digest_hash::DigestMap;

/// At least the last `min_entries` committed leaves, and at most twice
/// that, in two generations. Each leaf maps to the generation it was
/// committed in; once a generation holds `min_entries`, a new one starts
/// and the leaves of the one before the previous go, in one pass.
///
/// One map, not a set per generation: almost every lookup is of a leaf
/// that is not there (a new entry), and with two sets each such lookup
/// missed the cache twice (`contains` was 5% of a follower's CPU in a
/// DWARF profile). A queue of single leaves, each leaving the
/// set when it left the queue, cost a set insert, a set remove and a
/// queue push and pop per committed leaf (the remove alone was 3% of a
/// core thread at 50,000 entries/s: the oldest leaf's bucket is a cache
/// miss).
pub struct DedupWindow {
    leaves: DigestMap<Hash, u64>,
    generation: u64,
    in_generation: usize,
    min_entries: usize,
}

impl DedupWindow {
    pub fn new(min_entries: usize) -> Self {
        DedupWindow {
            leaves: DigestMap::default(),
            generation: 0,
            in_generation: 0,
            min_entries,
        }
    }

    pub fn contains(&self, leaf: &Hash) -> bool {
        self.leaves.contains_key(leaf)
    }

    /// Remembers a committed leaf.
    pub fn insert(&mut self, leaf: Hash) {
        if self.min_entries == 0 {
            return;
        }
        if self.in_generation >= self.min_entries {
            self.generation += 1;
            self.in_generation = 0;
            // `retain` keeps the table's allocation: the next generation
            // fills it without growing.
            let previous = self.generation - 1;
            self.leaves.retain(|_, generation| *generation >= previous);
        }
        self.leaves.insert(leaf, self.generation);
        self.in_generation += 1;
    }

    /// Leaves remembered now (between `min_entries` and twice that once
    /// that many were committed).
    pub fn len(&self) -> usize {
        self.leaves.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bftlog_spec::merkle;

    fn leaf(i: u64) -> Hash {
        merkle::leaf_hash(&i.to_be_bytes())
    }

    #[test]
    fn the_last_min_entries_are_always_remembered_and_at_most_twice_as_many() {
        let mut window = DedupWindow::new(10);
        for n in 0..100u64 {
            window.insert(leaf(n));
            let remembered = (0..=n).filter(|i| window.contains(&leaf(*i))).count();
            assert_eq!(remembered, window.len());
            for i in n.saturating_sub(9)..=n {
                assert!(window.contains(&leaf(i)), "leaf {i} after {n}");
            }
            assert!(window.len() <= 20, "{} after {n}", window.len());
            if n >= 20 {
                assert!(!window.contains(&leaf(n - 20)), "leaf {} after {n}", n - 20);
            }
        }
        assert!(!window.contains(&leaf(1000)));
    }

    #[test]
    fn a_window_of_zero_remembers_nothing() {
        let mut window = DedupWindow::new(0);
        window.insert(leaf(1));
        assert!(!window.contains(&leaf(1)));
        assert!(window.is_empty());
    }
}
