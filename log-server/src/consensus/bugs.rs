//! Known consensus bugs, re-introduced on demand (feature `inject-bugs`) so
//! tests can prove the simulator's checker catches each of them. The switch
//! is per thread: a simulation runs on one thread.

use std::cell::Cell;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// Commit a block as soon as its child is certified, ignoring the
    /// "child round = parent round + 1" condition.
    CommitWithoutConsecutiveRound,
    /// Votes do not sign the round, so a QC can be relabelled to any round.
    QcRoundUnbound,
    /// Votes leave before the last-voted round is durable.
    VoteBeforePersist,
    /// A restarted replica recovers its highest QC but not its highest TC.
    RecoverQcButNotTc,
}

thread_local! {
    static ACTIVE: Cell<Option<Bug>> = const { Cell::new(None) };
}

/// Turns one bug on for this thread (`None`: all off).
pub fn set(bug: Option<Bug>) {
    ACTIVE.with(|a| a.set(bug));
}

pub fn active(bug: Bug) -> bool {
    ACTIVE.with(|a| a.get() == Some(bug))
}
