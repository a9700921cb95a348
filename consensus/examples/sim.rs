//! Runs the deterministic simulator over many seeds.
//!
//! ```text
//! cargo run --release -p bftlog-consensus --example sim -- --seeds 100000 [--start 0] [--n 4|7|both]
//! SIM_SEED=1234 cargo run --release -p bftlog-consensus --example sim   # one seed, verbose
//! ```
//!
//! Exits 1 on the first failing seed, printing it.

// The wall clock here only reports how long the runs took; the simulation
// itself runs on virtual time.
#![allow(clippy::disallowed_types)]

use std::time::Instant;

use bftlog_consensus::sim::{Scenario, Sim};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| -> Option<String> {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let sizes: Vec<usize> = match value("--n").as_deref() {
        None | Some("both") => vec![4, 7],
        Some(n) => vec![n.parse().expect("--n takes a number or 'both'")],
    };
    if let Ok(seed) = std::env::var("SIM_SEED") {
        let seed: u64 = seed.parse().expect("SIM_SEED is a number");
        for n in sizes {
            let scenario = Scenario::from_seed(seed, n);
            println!("{scenario:#?}");
            match Sim::new(scenario).run() {
                Ok(o) => println!("ok: {o:?}"),
                Err(f) => {
                    println!("FAILED: {f}");
                    std::process::exit(1);
                }
            }
        }
        return;
    }
    let seeds: u64 = value("--seeds").map_or(1000, |s| s.parse().expect("--seeds N"));
    let start: u64 = value("--start").map_or(0, |s| s.parse().expect("--start S"));
    let began = Instant::now();
    let mut runs = 0u64;
    let mut entries = 0u64;
    let mut max_round = 0u64;
    for seed in start..start + seeds {
        for &n in &sizes {
            match Sim::new(Scenario::from_seed(seed, n)).run() {
                Ok(o) => {
                    runs += 1;
                    entries += o.committed_entries;
                    max_round = max_round.max(o.max_round);
                }
                Err(f) => {
                    println!("FAILED (n = {n}): {f}");
                    std::process::exit(1);
                }
            }
        }
        if (seed - start + 1) % 1000 == 0 {
            eprintln!(
                "{} seeds, {runs} runs ok, {:.0?}",
                seed - start + 1,
                began.elapsed()
            );
        }
    }
    println!(
        "all {runs} runs passed (seeds {start}..{}, n = {sizes:?}); {entries} entries committed; highest round {max_round}; {:.1?}",
        start + seeds,
        began.elapsed()
    );
}
