//! The checker must be able to fail: a known consensus bug, switched on
//! (feature `inject-bugs`, enabled for tests only), is caught by the
//! simulator within a fixed seed budget, and the same scenario passes with
//! the bug off. Covered so far: votes sent before the last-voted round is
//! durable, the commit rule without "child round = parent round + 1", and
//! QCs whose round is not bound to their block, a restart that recovers
//! the QC but not the TC, and a restarted leader that forgets it may have
//! proposed before its write; proposals stored for rounds no certificate
//! reached, one checkpoint-signature bound shared by all signers, a
//! mempool bounded only in all (one peer's forwards fill it), cluster
//! signatures never recovered, and a recovery nonce kept after use.

use bftlog_consensus::bugs::{self, Bug};
use bftlog_consensus::sim::{Behaviour, Failure, Scenario, Sim, Violation};

/// Runs seeds with `bug` on until one fails; returns the failure. The
/// same scenario must pass with the bug off, so the failure is the bug's.
fn hunt(
    bug: Bug,
    n: usize,
    seeds: std::ops::Range<u64>,
    adjust: impl Fn(&mut Scenario),
) -> Option<Failure> {
    for seed in seeds {
        let mut scenario = Scenario::from_seed(seed, n);
        // The seeds named here were found without the cluster key, whose
        // messages change every later draw of a run (`adjust` may set it).
        scenario.cluster_key = false;
        adjust(&mut scenario);
        bugs::set(Some(bug));
        let with_bug = Sim::new(scenario.clone()).run();
        bugs::set(None);
        if let Err(f) = with_bug {
            if let Err(g) = Sim::new(scenario).run() {
                panic!("seed {seed} fails even without {bug:?}: {g}");
            }
            return Some(f);
        }
    }
    None
}

#[test]
fn commit_without_the_round_plus_one_condition_is_caught() {
    // Loss and delays let a round end in a TC while its block was
    // certified somewhere: the gap the "round + 1" condition guards. (A
    // replica sending each vote to at most one peer was the lever before
    // leaders rotated among active replicas, ADR 0003: such a replica now
    // rarely leads. This catch is rare: with rand 0.10's draws, seed 23524
    // alone of 0..30000 (`scan_commit_rule_seeds` lists them), so the hunt
    // starts near it to keep the suite short, and moves whenever the random
    // draws change. The rule itself is pinned by the scripted unit test
    // `a_child_certified_after_a_timeout_does_not_commit_its_parent`.)
    let found = hunt(
        Bug::CommitWithoutConsecutiveRound,
        4,
        23500..24000,
        commit_rule_scenario,
    );
    let failure = found.expect("the simulator must catch a commit rule without round + 1");
    // The bug's own kinds of violation: a replica that commits a parent
    // without the consecutive child forks from the others, or, when their
    // guard refuses to commit across what it committed, the cluster stops
    // committing (the liveness check). `hunt` has already run the same
    // seed without the bug, and it passed.
    assert!(
        matches!(
            failure.violation,
            Violation::BlockFork { .. } | Violation::Fork { .. } | Violation::NotLive { .. }
        ),
        "{failure}"
    );
    eprintln!("caught: {failure}");
}

/// The scenario of [`commit_without_the_round_plus_one_condition_is_caught`].
/// The equivocating replica is pinned (it is what seed 23524 drew when
/// there were ten behaviours), so that adding behaviours does not move
/// the catch.
fn commit_rule_scenario(s: &mut Scenario) {
    s.loss = 0.3;
    s.max_delay_ms = 600;
    s.byzantine = vec![(1, Behaviour::Equivocate)];
}

/// Lists the seeds of a range that catch the commit rule without round + 1,
/// for moving that test's window when the random draws change:
/// `BFTLOG_HUNT=0..30000 cargo test --release -p bftlog-consensus --test
/// known_bugs -- --ignored --nocapture scan_commit_rule_seeds`
/// (split the range over processes to use more cores).
#[test]
#[ignore = "long: scans thousands of seeds"]
fn scan_commit_rule_seeds() {
    let range = std::env::var("BFTLOG_HUNT").unwrap_or_else(|_| "0..2000".into());
    let (start, end) = range.split_once("..").expect("BFTLOG_HUNT is START..END");
    let (start, end): (u64, u64) = (start.parse().unwrap(), end.parse().unwrap());
    let mut caught = 0;
    for seed in start..end {
        if hunt(
            Bug::CommitWithoutConsecutiveRound,
            4,
            seed..seed + 1,
            commit_rule_scenario,
        )
        .is_some()
        {
            println!("seed {seed} catches the commit rule without round + 1");
            caught += 1;
        }
    }
    println!("{caught} of {} seeds catch it", end - start);
}

#[test]
fn qc_round_not_bound_to_its_block_is_caught() {
    // A forger relabels an old QC as the previous round's to extend a
    // stale block without a TC. Bound rounds make the relabelled QC's
    // signatures fail; unbound, honest replicas vote for the fork, and the
    // commit path's own guard (never commit across the committed tip)
    // turns it into a stall that the liveness check reports.
    let found = hunt(Bug::QcRoundUnbound, 4, 0..300, |s| {
        s.byzantine = vec![(3, Behaviour::ForgeCertificates)];
    });
    let failure = found.expect("the simulator must catch QCs whose round is not bound");
    eprintln!("caught: {failure}");
}

#[test]
fn restart_recovering_the_qc_but_not_the_tc_is_caught() {
    // A replica times out in a round, crashes, comes back without its TC
    // (and so without the round it gave up on), and votes in that round
    // when the late proposal arrives.
    let found = hunt(Bug::RecoverQcButNotTc, 4, 0..1000, |s| {
        s.crashes = true;
        s.max_delay_ms = s.max_delay_ms.max(400);
    });
    let failure = found.expect("the simulator must catch a restart that loses the TC");
    // The bug's own kinds of violation, not another switch's: the vote in
    // the round it gave up on, or, found first when the restarted replica
    // holds its voted block, that block's round ahead of the round it
    // recovered to (the bounds check: a proposal is kept only in a round
    // its certificates reached).
    assert!(
        match &failure.violation {
            Violation::VoteAfterTimeout { .. } => true,
            Violation::OverBound { what, .. } => what.starts_with("stored block rounds"),
            _ => false,
        },
        "{failure}"
    );
    eprintln!("caught: {failure}");
}

#[test]
fn vote_before_its_round_is_durable_is_caught() {
    let found = hunt(Bug::VoteBeforePersist, 4, 0..1000, |s| {
        s.crashes = true;
        s.write_latency_max_us = 40_000;
        s.byzantine = vec![(1, Behaviour::Equivocate)];
    });
    let failure = found.expect("the simulator must catch votes sent before they are durable");
    // The bug's own kind of violation, not another switch's.
    assert!(
        matches!(failure.violation, Violation::DoubleVote { .. }),
        "{failure}"
    );
    eprintln!("caught: {failure}");
}

#[test]
fn a_restarted_leader_forgetting_its_early_proposal_is_caught() {
    // A leader's proposal leaves before its own vote is durable; a crash
    // in between, and a restart that proposes again in that round, is a
    // second proposal by an honest leader.
    let found = hunt(Bug::ForgetEarlyProposal, 4, 0..1000, |s| {
        s.crashes = true;
        s.write_latency_max_us = s.write_latency_max_us.max(20_000);
    });
    let failure = found.expect("the simulator must catch a leader proposing twice after a restart");
    // The bug's own kind of violation, not another switch's.
    assert!(
        matches!(failure.violation, Violation::DoubleProposal { .. }),
        "{failure}"
    );
    eprintln!("caught: {failure}");
}

#[test]
fn storing_proposals_for_rounds_ahead_is_caught() {
    // A faulty replica proposes, on the current high QC, for the rounds it
    // leads far ahead; kept, they are stored blocks beyond the replica's
    // round, which the bounds check refuses.
    let found = hunt(Bug::StoreFutureProposals, 4, 0..50, |s| {
        s.byzantine = vec![(2, Behaviour::FarFutureFlood)];
    });
    let failure = found.expect("the simulator must catch proposals stored ahead of the round");
    assert!(
        matches!(failure.violation, Violation::OverBound { .. }),
        "{failure}"
    );
    eprintln!("caught: {failure}");
}

#[test]
fn one_signature_table_bound_for_all_signers_is_caught() {
    // A faulty replica signs checkpoints for sizes no one else signs;
    // with one row bound for all signers it holds more rows than one
    // signer may, and the honest rows it crowds out are lost.
    let found = hunt(Bug::SharedSignatureTable, 4, 0..50, |s| {
        s.byzantine = vec![(2, Behaviour::SignatureFlood)];
    });
    let failure = found.expect("the simulator must catch a signature table bounded for all");
    assert!(
        matches!(failure.violation, Violation::OverBound { .. }),
        "{failure}"
    );
    eprintln!("caught: {failure}");
}

#[test]
fn a_mempool_bounded_only_in_all_is_caught() {
    // A faulty replica forwards junk far faster than blocks carry it;
    // bounded only in all, the receivers' mempools hold more of its
    // entries than a peer's share (and then refuse the clients').
    let found = hunt(Bug::NoMempoolShares, 4, 0..50, |s| {
        s.byzantine = vec![(2, Behaviour::ForwardFlood)];
    });
    let failure = found.expect("the simulator must catch a mempool without per-peer shares");
    assert!(
        matches!(
            failure.violation,
            Violation::OverBound { .. } | Violation::NotLive { .. }
        ),
        "{failure}"
    );
    eprintln!("caught: {failure}");
}

#[test]
fn no_recovery_of_unsigned_checkpoints_is_caught() {
    // A replica that votes but withholds its cluster-key shares leaves
    // every height whose signing set includes it unsigned: without
    // recovery sessions those quorum checkpoints never carry the cluster
    // signature.
    let found = hunt_with_cluster_key(Bug::NoClusterRecovery, 0..20, |s| {
        s.byzantine = vec![(1, Behaviour::WithholdShares)];
    });
    let failure = found.expect("the simulator must catch checkpoints left unsigned");
    assert!(
        matches!(failure.violation, Violation::NoClusterSignature { .. }),
        "{failure}"
    );
    eprintln!("caught: {failure}");
}

#[test]
fn a_recovery_nonce_kept_after_use_is_caught() {
    // A faulty coordinator sends each session again with one member's
    // commitment altered: a member that kept its nonce signs a second
    // package with it.
    let found = hunt_with_cluster_key(Bug::KeepRecoveryNonce, 0..40, |s| {
        s.byzantine = vec![(1, Behaviour::MisleadRecovery)];
    });
    let failure = found.expect("the simulator must catch a recovery nonce signing twice");
    assert!(
        matches!(failure.violation, Violation::NonceReuse { .. }),
        "{failure}"
    );
    eprintln!("caught: {failure}");
}

/// [`hunt`] at n = 4 with the cluster key, many heights with entries.
fn hunt_with_cluster_key(
    bug: Bug,
    seeds: std::ops::Range<u64>,
    adjust: impl Fn(&mut Scenario),
) -> Option<Failure> {
    hunt(bug, 4, seeds, |s| {
        s.cluster_key = true;
        s.entries = 120;
        adjust(s);
    })
}
