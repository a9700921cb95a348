//! Mode 1: an honest cluster on a fuzzer-chosen schedule.

use super::*;

struct InFlight {
    to: usize,
    from: ReplicaId,
    message: ConsensusMessage,
}

/// Mode 1 (see the module docs).
pub fn cluster(input: &mut Input) -> Progress {
    let cfg = config();
    let keys: &KeyRing = &KEYS;
    let quorum = cfg.quorum();
    let mut now = Duration::from_millis(1);
    let mut nodes: Vec<Process> = (0..REPLICAS)
        .map(|i| Process::new(&cluster_config(i as ReplicaId), i as ReplicaId, now))
        .collect();
    let mut checker = Checker::new(&cfg, (0..REPLICAS as ReplicaId).collect())
        .with_cluster_key(cluster_verifier(), false);
    let mut net: Vec<InFlight> = Vec::new();
    let flush =
        |nodes: &mut Vec<Process>, i: usize, checker: &mut Checker, net: &mut Vec<InFlight>| {
            for out in nodes[i].drain(checker, keys, quorum, true) {
                let from = nodes[i].id;
                let targets: Vec<usize> = match out.to {
                    Target::All => (0..REPLICAS).filter(|t| *t != i).collect(),
                    Target::One(t) => vec![t as usize],
                };
                for to in targets {
                    // A bounded network: beyond this, messages are lost.
                    if net.len() < 256 {
                        net.push(InFlight {
                            to,
                            from,
                            message: out.message.clone(),
                        });
                    }
                }
            }
        };
    for i in 0..REPLICAS {
        flush(&mut nodes, i, &mut checker, &mut net);
    }
    let mut ops = 0;
    while !input.is_empty() && ops < 512 {
        ops += 1;
        match input.u8() % 16 {
            0..=4 => {
                if !net.is_empty() {
                    let m = net.remove(input.below(net.len()));
                    nodes[m.to].replica.handle_message(now, m.from, m.message);
                    flush(&mut nodes, m.to, &mut checker, &mut net);
                }
            }
            5 => {
                if !net.is_empty() {
                    net.remove(input.below(net.len()));
                }
            }
            6 => {
                if !net.is_empty() && net.len() < 256 {
                    let m = &net[input.below(net.len())];
                    let copy = InFlight {
                        to: m.to,
                        from: m.from,
                        message: m.message.clone(),
                    };
                    net.push(copy);
                }
            }
            7 => {
                // Deliver everything in flight, in order.
                let batch: Vec<InFlight> = std::mem::take(&mut net);
                for m in batch {
                    nodes[m.to].replica.handle_message(now, m.from, m.message);
                    flush(&mut nodes, m.to, &mut checker, &mut net);
                }
            }
            8 | 9 => {
                let i = input.below(REPLICAS);
                if let Some(t) = nodes[i].replica.poll_timeout() {
                    now = now.max(t);
                }
                nodes[i].replica.handle_timeout(now);
                flush(&mut nodes, i, &mut checker, &mut net);
            }
            10 | 11 => {
                let i = input.below(REPLICAS);
                if input.bool() {
                    nodes[i].ack_all();
                } else {
                    nodes[i].ack_one();
                }
                flush(&mut nodes, i, &mut checker, &mut net);
            }
            12 => {
                for i in 0..REPLICAS {
                    nodes[i].ack_all();
                    flush(&mut nodes, i, &mut checker, &mut net);
                }
            }
            13 => {
                let i = input.below(REPLICAS);
                if input.u8().is_multiple_of(4) {
                    nodes[i].restart(now, &mut checker);
                    net.retain(|m| m.to != i || input.bool());
                    flush(&mut nodes, i, &mut checker, &mut net);
                }
            }
            14 => {
                let entry = format!("entry {}", input.u8() % 32).into_bytes();
                checker.submitted(&entry, true);
                let i = input.below(REPLICAS);
                nodes[i].replica.submit(now, ClientId([0; 16]), vec![entry]);
                flush(&mut nodes, i, &mut checker, &mut net);
            }
            _ => now += Duration::from_millis(input.u16() as u64 % 2000),
        }
        if let Some(v) = checker.take_violation() {
            panic!("honest cluster broke an invariant: {v:?}");
        }
    }
    nodes
        .iter()
        .map(Process::progress)
        .max()
        .unwrap_or_default()
}
