//! Mode 2: the simulator with a fuzzer-chosen seed and fault plan.

use super::*;

/// Mode 2, the `consensus_sim` target (see the module docs).
pub fn simulate(data: &[u8]) {
    let input = &mut Input::new(data);
    let seed = input.u64();
    let n = if input.u8().is_multiple_of(4) { 7 } else { 4 };
    let mut s = Scenario::from_seed(seed, n);
    let f = (n - 1) / 3;
    // Each knob within the range from_seed draws it from, so any failure
    // is one a random seed could hit.
    let byzantine = input.below(f + 1);
    s.byzantine = (0..byzantine)
        .map(|_| {
            (
                input.below(n) as ReplicaId,
                ALL_BEHAVIOURS[input.below(ALL_BEHAVIOURS.len())],
            )
        })
        .collect();
    s.byzantine.sort_by_key(|(id, _)| *id);
    s.byzantine.dedup_by_key(|(id, _)| *id);
    s.min_delay_ms = 1 + input.below(5) as u64;
    s.max_delay_ms = 10 + input.below(391) as u64;
    s.loss = (input.u8() % 16) as f64 / 100.0;
    s.duplicate = (input.u8() % 11) as f64 / 100.0;
    s.partitions = input.bool();
    s.crashes = input.bool();
    s.entries = 1 + input.below(12);
    s.heal_at_ms = 2_000 + input.below(2001) as u64;
    if let Err(failure) = Sim::new(s.clone()).run() {
        panic!("{failure}\nscenario: {s:?}");
    }
}
