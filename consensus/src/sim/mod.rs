//! Deterministic simulation of whole clusters.
//!
//! One thread, virtual time, one seeded RNG. The network model delays
//! (uniform within a range, with occasional slow deliveries), loses,
//! duplicates and reorders messages, and partitions and heals the cluster.
//! Honest replicas crash and restart with what they had made durable:
//! unacknowledged writes are lost. Byzantine replicas (at most f) run the
//! honest core but tamper with what it sends ([`Behaviour`]).
//!
//! After every step the [`Checker`] verifies:
//! 1. honest committed logs are prefixes of one another (checked against
//!    one reference log, which also covers acknowledged entries keeping
//!    their index across crashes);
//! 2. quorum checkpoints agree with that log: same size, same root, so any
//!    two are consistent;
//! 3. no honest replica signs two roots for one size, or votes for two
//!    blocks in one round (across restarts);
//! 4. liveness: once the network is healed and faults stop, every entry
//!    submitted to an honest replica commits, and honest replicas catch up,
//!    within a bounded virtual time.
//!
//! A failure reports its seed; `SIM_SEED=<n>` reproduces it exactly.

mod byzantine;
mod checker;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Duration;

use bftlog_spec::merkle::{self, CompactRange};
use bftlog_spec::note::{KeyType, Note, VerifierKey};
use bftlog_spec::wire::{self, Block, ConsensusMessage, ReplicaId};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::threshold::{ClusterShare, NonceSecret};
use crate::{CheckpointEvent, ClientId, Config, Outgoing, Recovered, Replica, SafetyState, Target};
pub use byzantine::{ALL_BEHAVIOURS, Behaviour};
pub use checker::{Checker, Violation};

/// How long a simulated client waits for its entry to commit before
/// submitting it again.
const CLIENT_RETRY: Duration = Duration::from_millis(3000);

/// What a simulation run does. [`Scenario::from_seed`] draws one.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub seed: u64,
    pub n: usize,
    /// Byzantine replicas and what they do (at most f, counting twins as
    /// one replica).
    pub byzantine: Vec<(ReplicaId, Behaviour)>,
    /// Delivery delay range, milliseconds.
    pub min_delay_ms: u64,
    pub max_delay_ms: u64,
    /// Per-message probabilities.
    pub loss: f64,
    pub duplicate: f64,
    /// Whether random partitions (and heals) happen before `heal_at_ms`.
    pub partitions: bool,
    /// Whether honest replicas crash and restart before `heal_at_ms`.
    pub crashes: bool,
    /// Entries submitted, spread over `[0, heal_at_ms)`.
    pub entries: usize,
    /// Replicas each entry is submitted to.
    pub submit_to: usize,
    /// From here on: no loss, no partitions, no crashes.
    pub heal_at_ms: u64,
    /// Liveness deadline after the heal.
    pub liveness_ms: u64,
    pub round_timeout_ms: u64,
    /// Longest time a durable write takes, microseconds.
    pub write_latency_max_us: u64,
    /// Whether the cluster has a cluster key (dealt from the seed) and
    /// signs each checkpoint with it too. `from_seed` gives half the
    /// seeds one.
    pub cluster_key: bool,
}

impl Scenario {
    /// A random scenario for `seed` with `n` replicas.
    pub fn from_seed(seed: u64, n: usize) -> Self {
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_5eed);
        let f = (n - 1) / 3;
        let byzantine_count = rng.random_range(0..=f);
        let mut ids: Vec<ReplicaId> = (0..n as ReplicaId).collect();
        for i in (1..ids.len()).rev() {
            ids.swap(i, rng.random_range(0..=i));
        }
        let byzantine = ids[..byzantine_count]
            .iter()
            .map(|id| (*id, Behaviour::random(&mut rng)))
            .collect();
        let hostile = rng.random_bool(0.7);
        Scenario {
            seed,
            n,
            byzantine,
            min_delay_ms: rng.random_range(1..=5),
            max_delay_ms: rng.random_range(10..=if hostile { 400 } else { 50 }),
            loss: if hostile {
                rng.random_range(0.0..0.15)
            } else {
                0.0
            },
            duplicate: if hostile {
                rng.random_range(0.0..0.1)
            } else {
                0.0
            },
            partitions: hostile && rng.random_bool(0.5),
            crashes: hostile && rng.random_bool(0.5),
            entries: rng.random_range(1..=60),
            submit_to: f + 1,
            heal_at_ms: rng.random_range(2_000..=10_000),
            liveness_ms: 120_000,
            round_timeout_ms: 500,
            write_latency_max_us: 3000,
            // Half the runs (drawn on a stream of their own, so the other
            // draws stay as they were): the cluster key's FROST work
            // doubled the suite's time when every run had it.
            cluster_key: StdRng::seed_from_u64(seed ^ 0xc1a5_7e55).random_bool(0.5),
        }
    }
}

/// How a run ended.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub seed: u64,
    pub steps: u64,
    pub committed_entries: u64,
    pub max_round: u64,
    pub virtual_time_ms: u64,
    /// `EntryRequest`s honest replicas sent: how often the fetch path ran.
    pub entry_requests: u64,
    /// Sizes whose quorum note carried the cluster signature.
    pub cluster_signed_sizes: usize,
    /// Bad cluster-key shares honest replicas identified (summed over
    /// their latest incarnations).
    pub bad_threshold_shares: u64,
    /// Recovery sessions honest replicas started as coordinators (summed
    /// over their latest incarnations).
    pub recovery_sessions: u64,
}

/// A run that broke an invariant.
#[derive(Clone, Debug)]
pub struct Failure {
    pub seed: u64,
    pub at_ms: u64,
    pub violation: Violation,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed {} failed at {} ms: {:?} (reproduce with SIM_SEED={})",
            self.seed, self.at_ms, self.violation, self.seed
        )
    }
}

#[derive(Debug)]
enum Event {
    Deliver {
        to: usize,
        from: ReplicaId,
        message: ConsensusMessage,
    },
    Timer {
        node: usize,
        generation: u64,
    },
    Persisted {
        node: usize,
        generation: u64,
        token: u64,
        state: SafetyState,
        blocks: Vec<Block>,
        nonces: Vec<(u64, NonceSecret)>,
    },
    Submit {
        entry: Vec<u8>,
        targets: Vec<ReplicaId>,
    },
    /// The client checks whether its entry committed, and resubmits to
    /// other replicas if not (as the client library does).
    Retry {
        entry: Vec<u8>,
    },
    Crash {
        node: usize,
    },
    Restart {
        node: usize,
    },
    Partition,
    Heal,
}

/// One simulated replica process. Twins are two processes with one
/// replica id.
struct Process {
    replica_id: ReplicaId,
    replica: Option<Replica<StdRng>>,
    /// Bumped on crash so in-flight timers and write acknowledgements of
    /// the old incarnation are ignored.
    generation: u64,
    durable_safety: SafetyState,
    durable_blocks: Vec<Block>,
    /// Voted blocks made durable, by round (pruned as commits pass them).
    durable_voted: BTreeMap<u64, Vec<Block>>,
    /// Cluster-key nonces made durable, by height (those at or below the
    /// durable last share's height deleted, as the store does).
    durable_nonces: BTreeMap<u64, NonceSecret>,
    /// Quorum notes as a driver stores them (kept across restarts): a
    /// cluster signature that forms later is added to its size's note.
    quorum_notes: BTreeMap<u64, Note>,
    /// Commits not durable yet, each with the token of the write that
    /// makes it durable: the write of its own step, or else the next one
    /// (a step without a state write stores its commits without a flush,
    /// as the driver does). Lost in a crash.
    pending_commits: Vec<(u64, Block)>,
    /// The token of this incarnation's latest write request.
    last_token: u64,
    timer_at: Option<Duration>,
    /// When the last requested write completes (writes are ordered).
    last_write_done: Duration,
    byzantine: Option<Behaviour>,
    /// For twins: which partition side this copy talks to.
    side: Option<u8>,
    /// When this incarnation started, and the sync answer bytes it sent
    /// each peer since (checked against the per-peer rate).
    started_at: Duration,
    sync_served: BTreeMap<ReplicaId, u64>,
}

pub struct Sim {
    scenario: Scenario,
    rng: StdRng,
    now: Duration,
    seq: u64,
    queue: BinaryHeap<Reverse<(Duration, u64, usize)>>,
    events: BTreeMap<usize, Event>,
    next_event: usize,
    nodes: Vec<Process>,
    keys: Vec<ed25519_dalek::SigningKey>,
    cfg: Config,
    /// Each replica's share of the cluster key, if it has one.
    cluster_shares: Vec<ClusterShare>,
    /// Partition side per replica id, while partitioned.
    partition: Option<Vec<u8>>,
    healed: bool,
    checker: Checker,
    byz: byzantine::State,
    steps: u64,
    /// `EntryRequest`s honest replicas sent (proposals naming entries they
    /// had not received).
    entry_requests: u64,
}

impl Sim {
    pub fn new(scenario: Scenario) -> Self {
        let mut rng = StdRng::seed_from_u64(scenario.seed);
        let keys: Vec<ed25519_dalek::SigningKey> = (0..scenario.n)
            .map(|_| ed25519_dalek::SigningKey::generate(&mut rng))
            .collect();
        let mut cfg = Config::new(
            1,
            "sim.bftlog.test/log",
            keys.iter().map(|k| k.verifying_key()).collect(),
        );
        cfg.round_timeout_ms = scenario.round_timeout_ms;
        cfg.max_round_timeout_ms = scenario.round_timeout_ms * 8;
        cfg.max_block_entries = 16;
        // Small enough that a forward flood fills it within a few rounds
        // (then only the flooder's share holds its junk); far above what
        // the simulated clients keep pending.
        cfg.mempool_max_entries = 4096;
        cfg.sync_batch_blocks = 8;
        cfg.sync_timeout_ms = 1000;
        // Simulated blocks are small: a low sync rate makes the limit
        // bite (under `SyncFlood`, and in honest catch-up).
        cfg.sync_serve_bytes_per_s = 64 << 10;
        cfg.sync_serve_burst_bytes = 16 << 10;
        let byz_map: BTreeMap<ReplicaId, Behaviour> = scenario.byzantine.iter().cloned().collect();
        let mut nodes = Vec::new();
        for id in 0..scenario.n as ReplicaId {
            let behaviour = byz_map.get(&id).copied();
            let copies = if behaviour == Some(Behaviour::Twins) {
                2
            } else {
                1
            };
            for side in 0..copies {
                nodes.push(Process {
                    replica_id: id,
                    replica: None,
                    generation: 0,
                    durable_safety: SafetyState::genesis(cfg.epoch),
                    durable_blocks: Vec::new(),
                    durable_voted: BTreeMap::new(),
                    durable_nonces: BTreeMap::new(),
                    quorum_notes: BTreeMap::new(),
                    pending_commits: Vec::new(),
                    last_token: 0,
                    timer_at: None,
                    last_write_done: Duration::ZERO,
                    byzantine: behaviour,
                    side: (copies == 2).then_some(side as u8),
                    started_at: Duration::ZERO,
                    sync_served: BTreeMap::new(),
                });
            }
        }
        let honest: Vec<ReplicaId> = (0..scenario.n as ReplicaId)
            .filter(|id| !byz_map.contains_key(id))
            .collect();
        let mut checker = Checker::new(&cfg, honest);
        // Dealt from a stream of its own, so the cluster key leaves the
        // run's other draws as they were.
        let cluster_shares = if scenario.cluster_key {
            let mut deal_rng = StdRng::seed_from_u64(scenario.seed ^ 0xc1a5_7e55);
            let shares =
                crate::threshold::deal(scenario.n as u16, cfg.quorum() as u16, &mut deal_rng)
                    .expect("valid threshold");
            let key = shares[0].verifying_key().expect("a valid key");
            let vkey = VerifierKey::new(&cfg.origin, KeyType::Ed25519, key).expect("valid origin");
            checker = checker.with_cluster_key(vkey, true);
            shares
        } else {
            Vec::new()
        };
        let mut sim = Sim {
            rng,
            now: Duration::ZERO,
            seq: 0,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            next_event: 0,
            nodes,
            keys,
            cfg,
            cluster_shares,
            partition: None,
            healed: false,
            checker,
            byz: byzantine::State::default(),
            steps: 0,
            entry_requests: 0,
            scenario,
        };
        for i in 0..sim.nodes.len() {
            sim.start_node(i);
        }
        sim.schedule_workload();
        sim
    }

    fn schedule(&mut self, at: Duration, event: Event) {
        let id = self.next_event;
        self.next_event += 1;
        self.seq += 1;
        self.events.insert(id, event);
        self.queue.push(Reverse((at, self.seq, id)));
    }

    fn schedule_workload(&mut self) {
        let s = self.scenario.clone();
        let heal = Duration::from_millis(s.heal_at_ms);
        for i in 0..s.entries {
            let at = Duration::from_millis(self.rng.random_range(0..s.heal_at_ms));
            let ids = self.random_replicas(s.submit_to);
            let entry = format!("seed {} entry {i}", s.seed).into_bytes();
            self.schedule(
                at,
                Event::Submit {
                    entry,
                    targets: ids,
                },
            );
        }
        if s.partitions {
            let mut t = 0;
            while t < s.heal_at_ms {
                t += self.rng.random_range(300..2000);
                let at = Duration::from_millis(t.min(s.heal_at_ms));
                let event = if self.rng.random_bool(0.5) {
                    Event::Partition
                } else {
                    Event::Heal
                };
                self.schedule(at, event);
            }
        }
        if s.crashes {
            let honest_nodes: Vec<usize> = (0..self.nodes.len())
                .filter(|i| self.nodes[*i].byzantine.is_none())
                .collect();
            let mut t = 0;
            while t < s.heal_at_ms {
                t += self.rng.random_range(500..3000);
                if t >= s.heal_at_ms {
                    break;
                }
                let node = honest_nodes[self.rng.random_range(0..honest_nodes.len())];
                let down = self.rng.random_range(50..1500);
                self.schedule(Duration::from_millis(t), Event::Crash { node });
                let up = (t + down).min(s.heal_at_ms);
                self.schedule(Duration::from_millis(up), Event::Restart { node });
            }
        }
        self.schedule(heal, Event::Heal);
    }

    fn random_replicas(&mut self, count: usize) -> Vec<ReplicaId> {
        let mut ids: Vec<ReplicaId> = (0..self.scenario.n as ReplicaId).collect();
        for j in (1..ids.len()).rev() {
            ids.swap(j, self.rng.random_range(0..=j));
        }
        ids.truncate(count);
        ids
    }

    fn start_node(&mut self, i: usize) {
        let node = &self.nodes[i];
        let id = node.replica_id;
        let mut tree = CompactRange::new();
        let mut recent_checkpoints = Vec::new();
        for (i, b) in node.durable_blocks.iter().enumerate() {
            for e in b.entries.iter() {
                tree.append(merkle::leaf_hash(e));
            }
            if !b.entries.is_empty() {
                recent_checkpoints.push((i as u64 + 1, tree.size(), tree.root()));
            }
        }
        let durable_size = tree.size();
        let recovered = Recovered {
            safety: node.durable_safety.clone(),
            tree,
            committed_blocks: node.durable_blocks.clone(),
            first_height: 1,
            voted_blocks: node.durable_voted.values().flatten().cloned().collect(),
            nonces: node
                .durable_nonces
                .iter()
                .map(|(h, n)| (*h, n.clone()))
                .collect(),
            recent_checkpoints,
        };
        let rng = StdRng::seed_from_u64(self.rng.random());
        let mut cfg = self.cfg.clone();
        cfg.cluster_share = self.cluster_shares.get(id as usize).cloned();
        let replica = Replica::new(
            cfg,
            id,
            self.keys[id as usize].clone(),
            rng,
            recovered,
            self.now,
        )
        .expect("valid simulated configuration");
        if self.nodes[i].byzantine.is_none() {
            // It resumes from its durable commits; those lost in a crash
            // are committed again and checked again.
            self.checker.restarted(id, durable_size);
        }
        self.nodes[i].replica = Some(replica);
        self.nodes[i].timer_at = None;
        self.nodes[i].started_at = self.now;
        self.nodes[i].sync_served.clear();
        self.drain(i);
    }

    /// Runs to the end of the liveness window; `Err` on the first
    /// violated invariant.
    pub fn run(mut self) -> Result<Outcome, Failure> {
        let end = Duration::from_millis(self.scenario.heal_at_ms + self.scenario.liveness_ms);
        let max_steps = 2_000_000u64;
        while let Some(Reverse((at, _, id))) = self.queue.pop() {
            if at > end || self.steps >= max_steps {
                break;
            }
            self.now = at;
            self.steps += 1;
            let event = self.events.remove(&id).expect("scheduled");
            self.step(event);
            if let Some(v) = self.checker.take_violation() {
                return Err(self.failure(v));
            }
            if self.healed
                && self.checker.all_done(self.scenario.entries)
                && self.checker.cluster_done()
                && self.queue_idle()
            {
                break;
            }
        }
        if let Err(v) = self.checker.check_liveness(self.scenario.entries) {
            return Err(self.failure(v));
        }
        Ok(Outcome {
            seed: self.scenario.seed,
            steps: self.steps,
            committed_entries: self.checker.log_len(),
            max_round: self
                .nodes
                .iter()
                .filter_map(|n| n.replica.as_ref().map(|r| r.round()))
                .max()
                .unwrap_or(0),
            virtual_time_ms: self.now.as_millis() as u64,
            entry_requests: self.entry_requests,
            cluster_signed_sizes: self.checker.cluster_signed(),
            bad_threshold_shares: self.honest_total(|m| m.bad_threshold_shares),
            recovery_sessions: self.honest_total(|m| m.recovery_sessions),
        })
    }

    /// A metric summed over the honest replicas' latest incarnations.
    fn honest_total(&self, metric: impl Fn(&crate::Metrics) -> u64) -> u64 {
        self.nodes
            .iter()
            .filter(|n| n.byzantine.is_none())
            .filter_map(|n| n.replica.as_ref())
            .map(|r| metric(&r.metrics))
            .sum()
    }

    fn queue_idle(&self) -> bool {
        // Only timers left: nothing in flight.
        self.events
            .values()
            .all(|e| matches!(e, Event::Timer { .. }))
    }

    fn failure(&self, violation: Violation) -> Failure {
        if std::env::var_os("SIM_TRACE").is_some() {
            for n in &self.nodes {
                match &n.replica {
                    Some(r) => eprintln!("{} (gen {})", r.describe(), n.generation),
                    None => eprintln!("replica {} down", n.replica_id),
                }
            }
        }
        Failure {
            seed: self.scenario.seed,
            at_ms: self.now.as_millis() as u64,
            violation,
        }
    }

    fn step(&mut self, event: Event) {
        match event {
            Event::Deliver { to, from, message } => {
                let now = self.now;
                if let Some(r) = self.nodes[to].replica.as_mut() {
                    r.handle_message(now, from, message);
                    self.drain(to);
                }
            }
            Event::Timer { node, generation } => {
                let now = self.now;
                let n = &mut self.nodes[node];
                if n.generation != generation || n.timer_at != Some(now) {
                    return;
                }
                n.timer_at = None;
                if let Some(r) = n.replica.as_mut() {
                    r.handle_timeout(now);
                    self.drain(node);
                }
            }
            Event::Persisted {
                node,
                generation,
                token,
                state,
                blocks,
                nonces,
            } => {
                let n = &mut self.nodes[node];
                if n.generation != generation {
                    return; // lost in a crash
                }
                n.durable_nonces.extend(nonces);
                let used_through = state.last_share.as_ref().map_or(0, |s| s.height);
                n.durable_nonces = n.durable_nonces.split_off(&(used_through + 1));
                n.durable_safety = state;
                for b in blocks {
                    n.durable_voted.entry(b.round).or_default().push(b);
                }
                let durable = n
                    .pending_commits
                    .iter()
                    .take_while(|(t, _)| *t <= token)
                    .count();
                for (_, block) in n.pending_commits.drain(..durable) {
                    // The store drops voted blocks its commits settle.
                    n.durable_voted = n.durable_voted.split_off(&(block.round + 1));
                    n.durable_blocks.push(block);
                }
                if let Some(r) = n.replica.as_mut() {
                    r.handle_persisted(token);
                    self.drain(node);
                }
            }
            Event::Submit { entry, targets } => {
                let now = self.now;
                let honest = targets
                    .iter()
                    .any(|t| !self.scenario.byzantine.iter().any(|(b, _)| b == t));
                self.checker.submitted(&entry, honest);
                for t in targets {
                    for i in 0..self.nodes.len() {
                        if self.nodes[i].replica_id != t {
                            continue;
                        }
                        if let Some(r) = self.nodes[i].replica.as_mut() {
                            r.submit(now, ClientId([0; 16]), vec![entry.clone()]);
                            self.drain(i);
                        }
                    }
                }
                self.schedule(now + CLIENT_RETRY, Event::Retry { entry });
            }
            Event::Retry { entry } => {
                if !self.checker.is_committed(&entry) {
                    let targets = self.random_replicas(self.scenario.submit_to);
                    self.step(Event::Submit { entry, targets });
                }
            }
            Event::Crash { node } => {
                let n = &mut self.nodes[node];
                if n.replica.is_some() && !self.healed {
                    n.replica = None;
                    n.generation += 1;
                    n.timer_at = None;
                    n.pending_commits.clear();
                    n.last_token = 0;
                }
            }
            Event::Restart { node } => {
                if self.nodes[node].replica.is_none() {
                    self.start_node(node);
                }
            }
            Event::Partition => {
                if !self.healed {
                    let sides = (0..self.scenario.n)
                        .map(|_| self.rng.random_range(0..2u8))
                        .collect();
                    self.partition = Some(sides);
                }
            }
            Event::Heal => {
                self.partition = None;
                if self.now >= Duration::from_millis(self.scenario.heal_at_ms) {
                    self.healed = true;
                    self.checker.healed(self.now);
                    // Restart anything still down.
                    for i in 0..self.nodes.len() {
                        if self.nodes[i].replica.is_none() {
                            self.start_node(i);
                        }
                    }
                }
            }
        }
    }

    /// Drains a node's outputs: writes, commits, checkpoint events, sends
    /// and its next timer.
    fn drain(&mut self, i: usize) {
        let now = self.now;
        let generation = self.nodes[i].generation;
        let id = self.nodes[i].replica_id;
        let honest = self.nodes[i].byzantine.is_none();
        let Some(r) = self.nodes[i].replica.as_mut() else {
            return;
        };
        let step = r.poll_step();
        let state = std::env::var_os("SIM_TRACE").map(|_| r.describe());
        // The write this input issued, which its commits share.
        let mut step_write: Option<u64> = None;
        for p in step.persist {
            // Writes complete in order, like appends to one log file.
            let delay = Duration::from_micros(
                self.rng
                    .random_range(100..self.scenario.write_latency_max_us.max(101)),
            );
            let done = (now + delay).max(self.nodes[i].last_write_done);
            self.nodes[i].last_write_done = done;
            self.nodes[i].last_token = p.token;
            step_write = Some(p.token);
            let ev = Event::Persisted {
                node: i,
                generation,
                token: p.token,
                state: p.state,
                blocks: p.blocks.iter().map(|(_, b)| Block::clone(b)).collect(),
                nonces: p.nonces,
            };
            self.schedule(done, ev);
        }
        for c in step.commits {
            let node = &mut self.nodes[i];
            let durable_with = step_write.unwrap_or(node.last_token + 1);
            node.pending_commits
                .push((durable_with, Block::clone(&c.block)));
            if honest {
                self.checker.committed(id, &c);
            }
        }
        for ev in step.checkpoints {
            match &ev {
                CheckpointEvent::Signed { size, root } if honest => {
                    self.checker.signed(id, *size, *root)
                }
                CheckpointEvent::Quorum { size, note } => {
                    self.checker.quorum(*size, note);
                    let notes = &mut self.nodes[i].quorum_notes;
                    notes.insert(*size, note.clone());
                    if notes.len() > 256 {
                        notes.pop_first();
                    }
                }
                CheckpointEvent::ClusterSigned { size, line, .. } => {
                    if let Some(note) = self.nodes[i].quorum_notes.get_mut(size) {
                        if !note.signatures().contains(line) {
                            note.add_signature(line.clone()).expect("room for one more");
                            let note = note.clone();
                            self.checker.quorum(*size, &note);
                        }
                    }
                }
                CheckpointEvent::Refused { .. } if honest => self.checker.refused(id, &ev),
                _ => {}
            }
        }
        for out in step.sends {
            if let Some(state) = &state {
                if let ConsensusMessage::ProposalLeaves { header, leaves, .. } = &out.message {
                    eprintln!(
                        "{:?} node {i} gen {generation} proposes round {} ({} entries) {}",
                        now,
                        header.round,
                        leaves.len(),
                        state
                    );
                }
            }
            if honest {
                self.check_sync_rate(i, &out);
                self.checker.sent(id, &out.message);
                if matches!(out.message, ConsensusMessage::EntryRequest { .. }) {
                    self.entry_requests += 1;
                }
            }
            self.route(i, out);
        }
        let r = self.nodes[i].replica.as_ref().expect("alive");
        if honest {
            if let Err(what) = r.footprint().check(&self.cfg) {
                self.checker.over_bound(id, what);
            }
        }
        if let Some(t) = r.poll_timeout() {
            let t = t.max(now);
            if self.nodes[i].timer_at != Some(t) {
                self.nodes[i].timer_at = Some(t);
                self.schedule(
                    t,
                    Event::Timer {
                        node: i,
                        generation,
                    },
                );
            }
        } else {
            self.nodes[i].timer_at = None;
        }
    }

    /// An honest replica's sync answers to one peer stay within the
    /// per-peer rate: its burst, the rate since it started, and the one
    /// answer that may take the bucket below zero.
    fn check_sync_rate(&mut self, i: usize, out: &Outgoing) {
        let (Target::One(peer), ConsensusMessage::SyncResponse { blocks, .. }) =
            (out.to, &out.message)
        else {
            return;
        };
        let bytes: u64 = blocks.iter().map(|b| wire::encoded_len(b) as u64).sum();
        let node = &mut self.nodes[i];
        let served = node.sync_served.entry(peer).or_default();
        *served += bytes;
        let elapsed = self.now.saturating_sub(node.started_at).as_secs_f64();
        let allowed = self.cfg.sync_serve_burst_bytes as f64
            + self.cfg.sync_serve_bytes_per_s as f64 * elapsed
            + bytes as f64;
        if *served as f64 > allowed {
            let what = format!("served {served} sync bytes to {peer} in {elapsed:.3} s");
            self.checker.over_bound(node.replica_id, what);
        }
    }

    /// Sends one message through the network model (and, for a Byzantine
    /// sender, through its tampering first).
    fn route(&mut self, from_node: usize, out: Outgoing) {
        let from = self.nodes[from_node].replica_id;
        let outs = match self.nodes[from_node].byzantine {
            Some(b) => byzantine::tamper(self, from_node, b, out),
            None => vec![out],
        };
        for out in outs {
            let targets: Vec<ReplicaId> = match out.to {
                Target::All => (0..self.scenario.n as ReplicaId)
                    .filter(|t| *t != from)
                    .collect(),
                Target::One(t) => vec![t],
            };
            for t in targets {
                for to in 0..self.nodes.len() {
                    if self.nodes[to].replica_id != t {
                        continue;
                    }
                    // Twins: each copy talks only to its own side.
                    if let (Some(a), Some(b)) = (self.nodes[from_node].side, self.twin_side(to)) {
                        if a != b {
                            continue;
                        }
                    }
                    if let (Some(a), Some(b)) = (self.twin_side(from_node), self.nodes[to].side) {
                        if a != b {
                            continue;
                        }
                    }
                    self.transmit(from, to, out.message.clone());
                }
            }
        }
    }

    /// Twins partition the honest replicas into two sides by id parity.
    fn twin_side(&self, node: usize) -> Option<u8> {
        let twins = self.nodes.iter().any(|n| n.side.is_some());
        (twins && self.nodes[node].side.is_none()).then(|| (self.nodes[node].replica_id % 2) as u8)
    }

    fn transmit(&mut self, from: ReplicaId, to: usize, message: ConsensusMessage) {
        let to_id = self.nodes[to].replica_id;
        if !self.healed {
            if let Some(sides) = &self.partition {
                if sides[from as usize] != sides[to_id as usize] {
                    return;
                }
            }
            if self.rng.random_bool(self.scenario.loss) {
                return;
            }
        }
        let copies = if !self.healed && self.rng.random_bool(self.scenario.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut delay = self
                .rng
                .random_range(self.scenario.min_delay_ms..=self.scenario.max_delay_ms);
            if !self.healed && self.rng.random_bool(0.02) {
                delay *= 10; // a slow path now and then
            }
            let at = self.now + Duration::from_millis(delay);
            self.schedule(
                at,
                Event::Deliver {
                    to,
                    from,
                    message: message.clone(),
                },
            );
        }
    }
}

/// Runs one seed; the scenario is drawn from the seed.
pub fn run_seed(seed: u64, n: usize) -> Result<Outcome, Failure> {
    Sim::new(Scenario::from_seed(seed, n)).run()
}
