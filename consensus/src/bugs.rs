//! Known consensus bugs, re-introduced on demand so tests can prove the
//! simulator's checker catches each of them. Only builds with the feature
//! `inject-bugs` can switch one on (tests enable it); elsewhere [`active`]
//! is a constant `false`. The switch is per thread: a simulation runs on
//! one thread.

#[cfg(feature = "inject-bugs")]
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
    /// A restarted leader forgets that it may have proposed, before its
    /// write, in the round after its durable last-voted round.
    ForgetEarlyProposal,
    /// Proposals for rounds ahead of the replica's are stored, so a
    /// replica can make the others keep a block for every round it leads.
    StoreFutureProposals,
    /// The checkpoint-signature table is bounded in rows for all signers
    /// together, so one signer's rows for sizes no one else signs crowd
    /// out the honest replicas' signatures.
    SharedSignatureTable,
    /// The mempool is bounded only in all, so one peer forwarding junk (or
    /// one client) fills it and everyone else's entries are refused.
    NoMempoolShares,
    /// Checkpoints whose signing set did not deliver are never recovered.
    NoClusterRecovery,
    /// A member keeps a recovery nonce after signing with it, so a second
    /// session naming it makes it sign another message.
    KeepRecoveryNonce,
}

#[cfg(feature = "inject-bugs")]
thread_local! {
    static ACTIVE: Cell<Option<Bug>> = const { Cell::new(None) };
}

/// Turns one bug on for this thread (`None`: all off).
#[cfg(feature = "inject-bugs")]
pub fn set(bug: Option<Bug>) {
    ACTIVE.with(|a| a.set(bug));
}

#[cfg(feature = "inject-bugs")]
pub fn active(bug: Bug) -> bool {
    ACTIVE.with(|a| a.get() == Some(bug))
}

#[cfg(not(feature = "inject-bugs"))]
#[inline(always)]
pub fn active(_: Bug) -> bool {
    false
}
