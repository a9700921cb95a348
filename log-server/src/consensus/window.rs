//! The committed leaves a replica remembers so that it neither re-proposes
//! an entry nor votes for a block that repeats one.

use bftlog_spec::merkle::Hash;

use super::digest_hash::DigestSet;

/// At least the last `min_entries` committed leaves, and at most twice
/// that, in two generations. A leaf goes into `current`; once `current`
/// holds `min_entries`, the older generation is emptied in one go and the
/// two swap. A queue of single leaves, each leaving the set when it left
/// the queue, cost a set insert, a set remove and a queue push and pop per
/// committed leaf on every replica (the remove alone was 3% of a core
/// thread at 50,000 entries/s: the oldest leaf's bucket is a cache miss).
pub struct CommittedWindow {
    current: DigestSet<Hash>,
    previous: DigestSet<Hash>,
    min_entries: usize,
}

impl CommittedWindow {
    pub fn new(min_entries: usize) -> Self {
        CommittedWindow {
            current: DigestSet::default(),
            previous: DigestSet::default(),
            min_entries,
        }
    }

    pub fn contains(&self, leaf: &Hash) -> bool {
        self.current.contains(leaf) || self.previous.contains(leaf)
    }

    /// Remembers a committed leaf.
    pub fn insert(&mut self, leaf: Hash) {
        if self.min_entries == 0 {
            return;
        }
        if self.current.len() >= self.min_entries {
            // `clear` keeps the table's allocation: the next generation
            // fills it without growing.
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.clear();
        }
        self.current.insert(leaf);
    }

    /// Leaves remembered now (between `min_entries` and twice that once
    /// that many were committed).
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
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
        let mut window = CommittedWindow::new(10);
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
        let mut window = CommittedWindow::new(0);
        window.insert(leaf(1));
        assert!(!window.contains(&leaf(1)));
        assert!(window.is_empty());
    }
}
