//! The replica's queues, bounded in bytes: the core loop's inbox (a lane
//! per peer, one for clients, one for the replica's own tasks) and the
//! per-peer outboxes the core loop's messages wait in.
//!
//! **Consensus first.** The inbox hands the core loop peers' messages
//! before clients' appends: at most [`PEER_INPUTS_PER_CLIENT_INPUT`] peer
//! inputs in a row while appends wait, so an append flood cannot delay
//! votes and proposals behind it (and a peer flood still lets appends
//! through). Peers' lanes are taken in turn, so one peer's flood fills
//! only its own lane.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bftlog_consensus::token_bucket::TokenBucket;
use bftlog_spec::wire::ReplicaId;
use tokio::sync::mpsc as tmpsc;

use super::shared::CoreInput;

/// Peer inputs the core loop takes in a row while client inputs wait.
pub const PEER_INPUTS_PER_CLIENT_INPUT: usize = 8;

/// What an input costs in its lane beyond its payload (the queue slot,
/// the boxed message, a reply channel): so that inputs without payload
/// are bounded too.
pub const INPUT_OVERHEAD_BYTES: usize = 256;

/// The lane was full: the input was not queued.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

#[derive(Default)]
struct Lane {
    inputs: VecDeque<(CoreInput, usize)>,
    bytes: usize,
    /// A push found it full since it was last drained from.
    refused: bool,
}

impl Lane {
    /// Whether an input of `bytes` fits under `limit` (an empty lane
    /// takes any one input, so the largest message always gets through);
    /// if not, the lane remembers that a push was refused.
    fn fits(&mut self, bytes: usize, limit: usize) -> bool {
        let fits = self.inputs.is_empty() || self.bytes + bytes + INPUT_OVERHEAD_BYTES <= limit;
        if !fits {
            self.refused = true;
        }
        fits
    }

    fn push_unchecked(&mut self, input: CoreInput, bytes: usize) {
        let bytes = bytes + INPUT_OVERHEAD_BYTES;
        self.bytes += bytes;
        self.inputs.push_back((input, bytes));
    }

    /// Queues `input` if it [`Lane::fits`].
    fn push(&mut self, input: CoreInput, bytes: usize, limit: usize) -> Result<(), Full> {
        if !self.fits(bytes, limit) {
            return Err(Full);
        }
        self.push_unchecked(input, bytes);
        Ok(())
    }

    fn pop(&mut self) -> Option<CoreInput> {
        let (input, bytes) = self.inputs.pop_front()?;
        self.bytes -= bytes;
        Some(input)
    }
}

#[derive(Default)]
struct Lanes {
    /// The replica's own inputs (witness cosignatures, shutdown): few,
    /// small, never dropped.
    control: VecDeque<CoreInput>,
    peers: Vec<Lane>,
    /// The peer lane to look at first next time.
    next_peer: usize,
    clients: Lane,
    /// Peer inputs taken since the last client input.
    peer_streak: usize,
}

impl Lanes {
    /// The next peer input, and the peer whose full lane just got room.
    fn pop_peer(&mut self) -> Option<(CoreInput, Option<usize>)> {
        let n = self.peers.len();
        for k in 0..n {
            let i = (self.next_peer + k) % n;
            if let Some(input) = self.peers[i].pop() {
                self.next_peer = (i + 1) % n;
                let room = std::mem::take(&mut self.peers[i].refused).then_some(i);
                return Some((input, room));
            }
        }
        None
    }

    fn pop(&mut self) -> Option<(CoreInput, Option<usize>)> {
        if let Some(input) = self.control.pop_front() {
            return Some((input, None));
        }
        let clients_waiting = !self.clients.inputs.is_empty();
        if !clients_waiting || self.peer_streak < PEER_INPUTS_PER_CLIENT_INPUT {
            if let Some(popped) = self.pop_peer() {
                self.peer_streak += 1;
                return Some(popped);
            }
        }
        let input = self.clients.pop()?;
        self.peer_streak = 0;
        Some((input, None))
    }
}

/// The core loop's input queue.
pub(crate) struct CoreInbox {
    lanes: Mutex<Lanes>,
    ready: Condvar,
    /// Per peer: wakes its reader waiting for room in its full lane.
    room: Vec<tokio::sync::Notify>,
    peer_lane_bytes: usize,
    client_lane_bytes: usize,
}

impl CoreInbox {
    pub(crate) fn new(n: usize, peer_lane_bytes: usize, client_lane_bytes: usize) -> Self {
        let lanes = Lanes {
            peers: (0..n).map(|_| Lane::default()).collect(),
            ..Lanes::default()
        };
        CoreInbox {
            lanes: Mutex::new(lanes),
            ready: Condvar::new(),
            room: (0..n).map(|_| tokio::sync::Notify::new()).collect(),
            peer_lane_bytes,
            client_lane_bytes,
        }
    }

    fn push_with(&self, f: impl FnOnce(&mut Lanes) -> Result<(), Full>) -> Result<(), Full> {
        let result = f(&mut self.lanes.lock().expect("inbox lock"));
        if result.is_ok() {
            self.ready.notify_one();
        }
        result
    }

    /// A peer's message, `bytes` its frame length, waiting while the
    /// peer's lane is full: the peer's reader then stops reading, and QUIC
    /// flow control slows the peer to what the core loop takes from it
    /// (rather than the reader decoding a flood only to drop it).
    pub(crate) async fn push_peer_waiting(
        &self,
        from: ReplicaId,
        input: CoreInput,
        bytes: usize,
    ) -> Result<(), Full> {
        let room = self.room.get(from as usize).ok_or(Full)?;
        loop {
            let notified = room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut lanes = self.lanes.lock().expect("inbox lock");
                let lane = &mut lanes.peers[from as usize];
                if lane.fits(bytes, self.peer_lane_bytes) {
                    lane.push_unchecked(input, bytes);
                    drop(lanes);
                    self.ready.notify_one();
                    return Ok(());
                }
            }
            notified.await;
        }
    }

    /// A peer's message, `bytes` its frame length, or `Full`.
    #[cfg(test)]
    pub(crate) fn push_peer(
        &self,
        from: ReplicaId,
        input: CoreInput,
        bytes: usize,
    ) -> Result<(), Full> {
        let limit = self.peer_lane_bytes;
        self.push_with(|lanes| match lanes.peers.get_mut(from as usize) {
            Some(lane) => lane.push(input, bytes, limit),
            None => Err(Full),
        })
    }

    /// A client's input, `bytes` its payload.
    pub(crate) fn push_client(&self, input: CoreInput, bytes: usize) -> Result<(), Full> {
        let limit = self.client_lane_bytes;
        self.push_with(|lanes| lanes.clients.push(input, bytes, limit))
    }

    /// One of the replica's own inputs: always queued.
    pub(crate) fn push_control(&self, input: CoreInput) {
        let _ = self.push_with(|lanes| {
            lanes.control.push_back(input);
            Ok(())
        });
    }

    /// Takes the next input and wakes the reader of a peer whose full
    /// lane it made room in.
    fn pop(&self, lanes: &mut Lanes) -> Option<CoreInput> {
        let (input, room) = lanes.pop()?;
        if let Some(peer) = room {
            self.room[peer].notify_waiters();
        }
        Some(input)
    }

    /// The next input, if one is queued.
    pub(crate) fn try_recv(&self) -> Option<CoreInput> {
        let mut lanes = self.lanes.lock().expect("inbox lock");
        self.pop(&mut lanes)
    }

    /// The next input, waiting up to `timeout` for one.
    pub(crate) fn recv_timeout(&self, timeout: Duration) -> Option<CoreInput> {
        let deadline = Instant::now() + timeout;
        let mut lanes = self.lanes.lock().expect("inbox lock");
        loop {
            if let Some(input) = self.pop(&mut lanes) {
                return Some(input);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            lanes = self.ready.wait_timeout(lanes, left).expect("inbox lock").0;
        }
    }

    /// Bytes queued in the peers' lanes and in the clients' lane.
    pub(crate) fn queued_bytes(&self) -> (usize, usize) {
        let lanes = self.lanes.lock().expect("inbox lock");
        (
            lanes.peers.iter().map(|l| l.bytes).sum(),
            lanes.clients.bytes,
        )
    }
}

/// Messages a second taken from each peer (`limits.peer_messages_per_s`,
/// a second's worth at once).
pub(crate) struct PeerMessageRate {
    origin: std::time::Instant,
    buckets: Vec<Mutex<TokenBucket>>,
}

impl PeerMessageRate {
    pub(crate) fn new(n: usize, per_s: u64) -> Self {
        PeerMessageRate {
            origin: std::time::Instant::now(),
            buckets: (0..n)
                .map(|_| Mutex::new(TokenBucket::new(per_s, per_s.max(1), Duration::ZERO)))
                .collect(),
        }
    }

    /// Waits until `peer` may send one more message.
    pub(crate) async fn wait_for_one(&self, peer: ReplicaId) {
        let Some(bucket) = self.buckets.get(peer as usize) else {
            return;
        };
        loop {
            let wait = {
                let mut bucket = bucket.lock().expect("rate lock");
                match bucket.try_take(self.origin.elapsed(), 1) {
                    Ok(()) => return,
                    Err(wait) => wait.min(Duration::from_secs(1)),
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// Frames waiting to go to one peer, bounded in bytes: when the peer
/// does not take them (slow, away, or not reading), new ones are dropped
/// and consensus recovers them by its own means (timeouts, sync).
#[derive(Clone)]
pub(crate) struct PeerOutbox {
    tx: tmpsc::UnboundedSender<Arc<Vec<u8>>>,
    queued_bytes: Arc<AtomicUsize>,
    limit_bytes: usize,
}

/// The receiving end, for the peer's sender task.
pub(crate) struct PeerOutboxReceiver {
    rx: tmpsc::UnboundedReceiver<Arc<Vec<u8>>>,
    queued_bytes: Arc<AtomicUsize>,
}

pub(crate) fn peer_outbox(limit_bytes: usize) -> (PeerOutbox, PeerOutboxReceiver) {
    let (tx, rx) = tmpsc::unbounded_channel();
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    (
        PeerOutbox {
            tx,
            queued_bytes: queued_bytes.clone(),
            limit_bytes,
        },
        PeerOutboxReceiver { rx, queued_bytes },
    )
}

impl PeerOutbox {
    /// Queues `frame` unless that would pass the byte limit.
    pub(crate) fn try_send(&self, frame: Arc<Vec<u8>>) -> Result<(), Full> {
        let len = frame.len();
        let before = self.queued_bytes.fetch_add(len, Ordering::AcqRel);
        if before + len > self.limit_bytes || self.tx.send(frame).is_err() {
            self.queued_bytes.fetch_sub(len, Ordering::AcqRel);
            return Err(Full);
        }
        Ok(())
    }
}

impl PeerOutboxReceiver {
    /// The next frame; `None` once every sender is gone.
    pub(crate) async fn recv(&mut self) -> Option<Arc<Vec<u8>>> {
        let frame = self.rx.recv().await?;
        self.queued_bytes.fetch_sub(frame.len(), Ordering::AcqRel);
        Some(frame)
    }

    /// Drops what is queued (the peer is away: sync repairs it).
    pub(crate) fn clear(&mut self) {
        while let Ok(frame) = self.rx.try_recv() {
            self.queued_bytes.fetch_sub(frame.len(), Ordering::AcqRel);
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.rx.is_closed()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bftlog_spec::wire::ConsensusMessage;

    fn peer_input(from: ReplicaId, height: u64) -> CoreInput {
        CoreInput::Peer {
            from,
            message: Box::new(ConsensusMessage::SyncRequest {
                from_height: height,
                max_blocks: 1,
            }),
        }
    }

    fn shutdown_marker() -> CoreInput {
        CoreInput::Shutdown
    }

    fn kind(input: &CoreInput) -> String {
        match input {
            CoreInput::Peer { from, message } => match **message {
                ConsensusMessage::SyncRequest { from_height, .. } => {
                    format!("p{from}:{from_height}")
                }
                _ => "p?".into(),
            },
            CoreInput::Append { .. } => "client".into(),
            CoreInput::Cosigned { .. } => "cosigned".into(),
            CoreInput::Shutdown => "control".into(),
        }
    }

    fn append() -> CoreInput {
        let (reply, _) = tokio::sync::oneshot::channel();
        CoreInput::Append {
            client: bftlog_consensus::ClientId([0; 16]),
            entries: Vec::new(),
            reply,
        }
    }

    #[test]
    fn lanes_are_bounded_in_bytes_and_peers_come_first_but_not_only() {
        let inbox = CoreInbox::new(3, 4 * INPUT_OVERHEAD_BYTES, 3 * INPUT_OVERHEAD_BYTES);
        // Peer 1 floods: its lane takes what fits, 4 of them.
        let taken = (0..10)
            .filter(|h| inbox.push_peer(1, peer_input(1, *h), 0).is_ok())
            .count();
        assert_eq!(taken, 4);
        // Peer 2's lane is its own.
        assert_eq!(inbox.push_peer(2, peer_input(2, 0), 0), Ok(()));
        assert_eq!(inbox.push_peer(7, peer_input(7, 0), 0), Err(Full));
        // The clients' lane takes what fits, then refuses.
        for _ in 0..3 {
            assert_eq!(inbox.push_client(append(), 0), Ok(()));
        }
        assert_eq!(inbox.push_client(append(), 0), Err(Full));
        inbox.push_control(shutdown_marker());
        let order: Vec<String> = std::iter::from_fn(|| inbox.try_recv())
            .map(|i| kind(&i))
            .collect();
        // The replica's own input first; then peers in turn; clients get
        // a turn after at most 8 peer inputs (here the peers run out).
        assert_eq!(
            order,
            [
                "control", "p1:0", "p2:0", "p1:1", "p1:2", "p1:3", "client", "client", "client"
            ]
        );
        assert_eq!(inbox.queued_bytes(), (0, 0));
    }

    #[test]
    fn a_peer_flood_still_lets_clients_through() {
        let inbox = CoreInbox::new(2, 1 << 20, 1 << 20);
        for h in 0..20 {
            inbox.push_peer(1, peer_input(1, h), 0).unwrap();
        }
        inbox.push_client(append(), 0).unwrap();
        let order: Vec<String> = std::iter::from_fn(|| inbox.try_recv())
            .map(|i| kind(&i))
            .collect();
        let client_at = order.iter().position(|k| k == "client").unwrap();
        assert_eq!(client_at, PEER_INPUTS_PER_CLIENT_INPUT);
        assert_eq!(
            inbox.recv_timeout(Duration::from_millis(1)).map(|_| ()),
            None
        );
    }

    #[tokio::test]
    async fn a_reader_waits_for_room_in_its_full_lane() {
        let inbox = Arc::new(CoreInbox::new(2, 2 * INPUT_OVERHEAD_BYTES, 1 << 20));
        inbox.push_peer(1, peer_input(1, 0), 0).unwrap();
        inbox.push_peer(1, peer_input(1, 1), 0).unwrap();
        let waiting = {
            let inbox = inbox.clone();
            tokio::spawn(async move { inbox.push_peer_waiting(1, peer_input(1, 2), 0).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the lane is full: the reader waits");
        assert!(inbox.try_recv().is_some());
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("room wakes the reader")
            .unwrap()
            .unwrap();
        let rest: Vec<String> = std::iter::from_fn(|| inbox.try_recv())
            .map(|i| kind(&i))
            .collect();
        assert_eq!(rest, ["p1:1", "p1:2"]);
        // The largest input fits an empty lane whatever its limit.
        inbox.push_peer(1, peer_input(1, 3), 16 << 20).unwrap();
    }

    #[tokio::test]
    async fn a_peer_outbox_drops_past_its_bytes_and_frees_them_as_frames_go() {
        let (outbox, mut rx) = peer_outbox(10);
        assert_eq!(outbox.try_send(Arc::new(vec![0; 6])), Ok(()));
        assert_eq!(outbox.try_send(Arc::new(vec![0; 6])), Err(Full));
        assert_eq!(outbox.try_send(Arc::new(vec![0; 4])), Ok(()));
        assert_eq!(rx.recv().await.map(|f| f.len()), Some(6));
        assert_eq!(outbox.try_send(Arc::new(vec![0; 6])), Ok(()));
        rx.clear();
        assert!(rx.is_empty());
        assert_eq!(outbox.try_send(Arc::new(vec![0; 10])), Ok(()));
    }
}
