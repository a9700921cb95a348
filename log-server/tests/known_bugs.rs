//! The checker must be able to fail: a known consensus bug, switched on
//! (feature `inject-bugs`, enabled for tests only), is caught by the
//! simulator within a fixed seed budget, and the same scenario passes with
//! the bug off. Covered so far: votes sent before the last-voted round is
//! durable. The other switches (`consensus::bugs::Bug`) exist but their
//! catching scenarios are still being built (docs/testing.md).

use bftlog_server::consensus::bugs::{self, Bug};
use bftlog_server::sim::{Behaviour, Failure, Scenario, Sim};

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
fn vote_before_its_round_is_durable_is_caught() {
    let found = hunt(Bug::VoteBeforePersist, 4, 0..1000, |s| {
        s.crashes = true;
        s.write_latency_max_us = 40_000;
        s.byzantine = vec![(1, Behaviour::Equivocate)];
    });
    let failure = found.expect("the simulator must catch votes sent before they are durable");
    eprintln!("caught: {failure}");
}
