//! Which incoming connections a replica takes: client connections are
//! capped in all and per source IP address, and above a threshold a new
//! one must first prove its address (QUIC Retry). Connections from the
//! cluster's replica addresses are not counted: a flood of clients from
//! a replica's address must not lock that replica out.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use crate::net::Limits;

/// What to do with a connection attempt.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Take it; the slot is held until the connection ends (or turns out
    /// to be a peer's).
    Take(Option<ConnectionSlot>),
    /// Answer with a QUIC Retry: the client proves its address first.
    Retry,
    /// Refuse it: over the total or the per-address cap.
    Refuse(&'static str),
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// The client connections open or in their handshake.
#[derive(Debug)]
pub(crate) struct ConnectionTable {
    counts: Arc<Mutex<Counts>>,
    replica_addresses: HashSet<SocketAddr>,
    max_total: usize,
    max_per_ip: usize,
    retry_above: usize,
}

/// One counted client connection; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    counts: Arc<Mutex<Counts>>,
    ip: IpAddr,
}

impl PartialEq for ConnectionSlot {
    fn eq(&self, other: &Self) -> bool {
        self.ip == other.ip && Arc::ptr_eq(&self.counts, &other.counts)
    }
}

impl Eq for ConnectionSlot {}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().expect("connection table lock");
        counts.total -= 1;
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

impl ConnectionTable {
    pub(crate) fn new(limits: &Limits, replica_addresses: &[SocketAddr]) -> Self {
        ConnectionTable {
            counts: Arc::default(),
            replica_addresses: replica_addresses.iter().copied().collect(),
            max_total: limits.max_client_connections,
            max_per_ip: limits.max_connections_per_ip,
            retry_above: limits.retry_above_connections,
        }
    }

    /// Decides on an attempt from `remote`; `validated` is whether its
    /// address is proven (it came back with a Retry token).
    pub(crate) fn admit(&self, remote: SocketAddr, validated: bool) -> Admit {
        if self.replica_addresses.contains(&remote) {
            return Admit::Take(None);
        }
        let mut counts = self.counts.lock().expect("connection table lock");
        if !validated && counts.total >= self.retry_above {
            return Admit::Retry;
        }
        if counts.total >= self.max_total {
            return Admit::Refuse("too many client connections");
        }
        let ip = remote.ip();
        let from_ip = counts.per_ip.entry(ip).or_default();
        if *from_ip >= self.max_per_ip {
            return Admit::Refuse("too many connections from this address");
        }
        *from_ip += 1;
        counts.total += 1;
        Admit::Take(Some(ConnectionSlot {
            counts: self.counts.clone(),
            ip,
        }))
    }

    /// Client connections counted now.
    pub(crate) fn open(&self) -> usize {
        self.counts.lock().expect("connection table lock").total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> ConnectionTable {
        let limits = Limits {
            max_client_connections: 4,
            max_connections_per_ip: 2,
            retry_above_connections: 3,
            ..Limits::default()
        };
        ConnectionTable::new(&limits, &["127.0.0.1:7000".parse().unwrap()])
    }

    fn take(table: &ConnectionTable, remote: &str, validated: bool) -> Option<ConnectionSlot> {
        match table.admit(remote.parse().unwrap(), validated) {
            Admit::Take(slot) => slot,
            other => panic!("{remote}: {other:?}"),
        }
    }

    #[test]
    fn caps_per_address_and_in_all_with_retry_above_the_threshold() {
        let table = table();
        let a1 = take(&table, "10.0.0.1:1", false);
        let _a2 = take(&table, "10.0.0.1:2", false);
        assert_eq!(
            table.admit("10.0.0.1:3".parse().unwrap(), true),
            Admit::Refuse("too many connections from this address")
        );
        let _b1 = take(&table, "10.0.0.2:1", false);
        // Three open: an unproven address is asked to retry first.
        assert_eq!(
            table.admit("10.0.0.3:1".parse().unwrap(), false),
            Admit::Retry
        );
        let _c1 = take(&table, "10.0.0.3:1", true);
        assert_eq!(
            table.admit("10.0.0.4:1".parse().unwrap(), true),
            Admit::Refuse("too many client connections")
        );
        // A replica's address is never counted nor refused.
        assert_eq!(
            table.admit("127.0.0.1:7000".parse().unwrap(), false),
            Admit::Take(None)
        );
        assert_eq!(table.open(), 4);
        drop(a1);
        assert_eq!(table.open(), 3);
        let _a3 = take(&table, "10.0.0.1:4", true);
    }
}
