//! A fault-injecting UDP proxy for drills: one in front of each replica.
//!
//! `cluster.toml` lists the proxies' addresses; each replica listens on a
//! private address (`listen` in `replica-N.toml`). For every source address
//! that sends to the proxy, the proxy opens an upstream socket towards the
//! replica (like a NAT), so replies return through the same mapping.
//! Sources whose address is a replica's private address are known by id,
//! which is what lets a [`Faults`] plan partition replicas from each other.
//!
//! Faults apply per packet, in both directions: drop with a probability,
//! delay by a fixed time plus jitter, duplicate with a probability, and
//! block entirely between partitioned replicas (or all traffic of an
//! isolated one, clients included).

use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The fault plan shared by all proxies of a drill.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Probability (0..=1) that a packet is dropped.
    pub drop: f64,
    /// Fixed delay added to every packet.
    pub delay: Duration,
    /// Extra uniformly random delay, 0..jitter.
    pub jitter: Duration,
    /// Probability that a packet is sent twice.
    pub duplicate: f64,
    /// Groups of replica ids; traffic between replicas in different groups
    /// is dropped. Replicas in no group talk to everyone.
    pub partition: Vec<HashSet<u16>>,
    /// Replicas cut off from everything, clients included.
    pub isolated: HashSet<u16>,
}

impl Faults {
    pub fn none() -> Self {
        Faults::default()
    }

    fn group_of(&self, id: u16) -> Option<usize> {
        self.partition.iter().position(|g| g.contains(&id))
    }

    /// Whether traffic between the proxied replica and `peer` (None: a
    /// client) is blocked.
    fn blocked(&self, replica: u16, peer: Option<u16>) -> bool {
        if self.isolated.contains(&replica) || peer.is_some_and(|p| self.isolated.contains(&p)) {
            return true;
        }
        match peer {
            Some(p) => match (self.group_of(replica), self.group_of(p)) {
                (Some(a), Some(b)) => a != b,
                _ => false,
            },
            None => false,
        }
    }
}

/// A small deterministic PRNG (xorshift) so drills replay from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (self.next() % 1_000_000) as f64 / 1_000_000.0 < p
    }

    fn below(&mut self, d: Duration) -> Duration {
        if d.is_zero() {
            return d;
        }
        Duration::from_nanos(self.next() % d.as_nanos() as u64)
    }
}

struct Delayed {
    at: Instant,
    seq: u64,
    socket: Arc<UdpSocket>,
    to: SocketAddr,
    data: Vec<u8>,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delayed {
    // A min-heap on (time, sequence).
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

struct Shared {
    faults: Arc<Mutex<Faults>>,
    /// Private replica address → replica id.
    replicas: HashMap<SocketAddr, u16>,
    queue: Mutex<(BinaryHeap<Delayed>, u64)>,
    wake: Condvar,
    stop: AtomicBool,
    rng: Mutex<Rng>,
}

impl Shared {
    /// Sends now or later, per the plan. `peer` is the other side's
    /// replica id, if it is a replica.
    fn forward(
        &self,
        replica: u16,
        peer: Option<u16>,
        socket: &Arc<UdpSocket>,
        to: SocketAddr,
        data: &[u8],
    ) {
        let faults = self.faults.lock().unwrap().clone();
        if faults.blocked(replica, peer) {
            return;
        }
        let mut rng = self.rng.lock().unwrap();
        if rng.chance(faults.drop) {
            return;
        }
        let copies = if rng.chance(faults.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let delay = faults.delay + rng.below(faults.jitter);
            if delay.is_zero() {
                let _ = socket.send_to(data, to);
            } else {
                let mut queue = self.queue.lock().unwrap();
                queue.1 += 1;
                let seq = queue.1;
                queue.0.push(Delayed {
                    at: Instant::now() + delay,
                    seq,
                    socket: socket.clone(),
                    to,
                    data: data.to_vec(),
                });
                self.wake.notify_one();
            }
        }
    }
}

/// The proxies of one drill; dropping it stops them.
pub struct Proxies {
    pub faults: Arc<Mutex<Faults>>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Proxies {
    /// One proxy per replica: `public[i]` forwards to `private[i]`.
    pub fn start(public: &[SocketAddr], private: &[SocketAddr], seed: u64) -> Proxies {
        assert_eq!(public.len(), private.len());
        let faults = Arc::new(Mutex::new(Faults::none()));
        let shared = Arc::new(Shared {
            faults: faults.clone(),
            replicas: private
                .iter()
                .enumerate()
                .map(|(i, a)| (*a, i as u16))
                .collect(),
            queue: Mutex::new((BinaryHeap::new(), 0)),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            rng: Mutex::new(Rng(seed | 1)),
        });
        let mut threads = Vec::new();
        for (i, (&public, &private)) in public.iter().zip(private).enumerate() {
            let listener = Arc::new(UdpSocket::bind(public).expect("bind proxy"));
            listener
                .set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            let shared = shared.clone();
            threads.push(std::thread::spawn(move || {
                run_proxy(i as u16, listener, private, shared)
            }));
        }
        {
            let shared = shared.clone();
            threads.push(std::thread::spawn(move || run_delayed(shared)));
        }
        Proxies {
            faults,
            shared,
            threads,
        }
    }

    pub fn set(&self, faults: Faults) {
        *self.faults.lock().unwrap() = faults;
    }
}

impl Drop for Proxies {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Upstream mapping of one source address.
struct Mapping {
    upstream: Arc<UdpSocket>,
}

fn run_proxy(replica: u16, listener: Arc<UdpSocket>, private: SocketAddr, shared: Arc<Shared>) {
    let mut mappings: HashMap<SocketAddr, Mapping> = HashMap::new();
    let mut buf = vec![0u8; 65536];
    let mut readers: Vec<JoinHandle<()>> = Vec::new();
    while !shared.stop.load(Ordering::SeqCst) {
        let (len, source) = match listener.recv_from(&mut buf) {
            Ok(x) => x,
            Err(_) => continue,
        };
        let peer = shared.replicas.get(&source).copied();
        let mapping = mappings.entry(source).or_insert_with(|| {
            let upstream = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("bind upstream"));
            upstream
                .set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            // Replies from the replica go back to `source` from the
            // public address, as if the proxy were the replica.
            let (up, back, sh) = (upstream.clone(), listener.clone(), shared.clone());
            readers.push(std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                while !sh.stop.load(Ordering::SeqCst) {
                    if let Ok((len, from)) = up.recv_from(&mut buf) {
                        if from == private {
                            sh.forward(replica, peer, &back, source, &buf[..len]);
                        }
                    }
                }
            }));
            Mapping { upstream }
        });
        let upstream = mapping.upstream.clone();
        shared.forward(replica, peer, &upstream, private, &buf[..len]);
    }
    for r in readers {
        let _ = r.join();
    }
}

fn run_delayed(shared: Arc<Shared>) {
    let mut queue = shared.queue.lock().unwrap();
    while !shared.stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        match queue.0.peek() {
            Some(next) if next.at <= now => {
                let item = queue.0.pop().unwrap();
                let _ = item.socket.send_to(&item.data, item.to);
            }
            Some(next) => {
                let wait = next.at - now;
                queue = shared.wake.wait_timeout(queue, wait).unwrap().0;
            }
            None => {
                queue = shared
                    .wake
                    .wait_timeout(queue, Duration::from_millis(50))
                    .unwrap()
                    .0;
            }
        }
    }
}
