//! Asking the kernel to resolve a neighbour, off the hot path.
//!
//! A worker that misses hands the neighbour to [`Resolver::request`]: a
//! `try_send` on a bounded channel that never blocks (when the queue is full
//! the request is dropped; the next miss asks again). The resolver thread
//! rate-limits per neighbour and sends RTM_NEWNEIGH with NTF_USE, which makes
//! the kernel treat the entry as used: an unknown or failed entry is created
//! or restarted in NUD_INCOMPLETE and an ARP request / neighbour solicitation
//! goes out at once; a stale one is re-confirmed. The answer reaches the
//! cache through the neighbour notifications like any other change.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use netlink_packet_core::NLM_F_CREATE;
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage,
    NeighbourState as NudState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::netlink::RtSocket;
use super::table::{Miss, NeighbourKey};
use super::{Counters, NextHopError};

/// Neighbours remembered for rate limiting, at most; past that, requests
/// for new neighbours are dropped until old ones expire.
const MAX_TRACKED: usize = 65_536;

#[derive(Debug)]
pub(crate) enum Request {
    Resolve(NeighbourKey),
    Stop,
}

/// A cheap, cloneable handle for workers to ask for neighbour resolution.
/// It never blocks and makes no system call of its own (the channel may wake
/// the sleeping resolver thread).
#[derive(Debug, Clone)]
pub struct Resolver {
    pub(crate) tx: SyncSender<Request>,
}

impl Resolver {
    /// A resolver whose requests go nowhere (always refused): for running
    /// the pipeline on in-memory tables whose neighbours are all resolved,
    /// as `cargo xtask bench pipeline` does.
    pub fn detached() -> Resolver {
        let (tx, _) = std::sync::mpsc::sync_channel(1);
        Resolver { tx }
    }

    /// Queues a request to resolve `addr` on interface `ifindex`. `false` if
    /// the queue is full (or the cache is gone): the request is dropped.
    pub fn request_resolution(&self, ifindex: u32, addr: IpAddr) -> bool {
        match self
            .tx
            .try_send(Request::Resolve(NeighbourKey { ifindex, addr }))
        {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }

    /// Queues the resolution a miss asks for, if any. `false` if the miss
    /// needs none or the queue is full.
    pub fn request(&self, miss: &Miss) -> bool {
        match miss.neighbour {
            Some(n) => self.request_resolution(n.ifindex, n.addr),
            None => false,
        }
    }
}

#[derive(Debug)]
pub(crate) struct ResolverThread {
    pub(crate) sock: RtSocket,
    pub(crate) rx: Receiver<Request>,
    pub(crate) interval: Duration,
    pub(crate) counters: Arc<Counters>,
    pub(crate) recent: HashMap<NeighbourKey, Instant>,
    pub(crate) last_prune: Instant,
}

/// RTM_NEWNEIGH with NTF_USE for `key` (state NUD_NONE: the kernel keeps an
/// existing entry's state and address and only marks it used).
pub(crate) fn use_neighbour(key: NeighbourKey) -> RouteNetlinkMessage {
    let mut m = NeighbourMessage::default();
    m.header.ifindex = key.ifindex;
    m.header.state = NudState::None;
    m.header.flags = NeighbourFlags::Use;
    let dst = match key.addr {
        IpAddr::V4(a) => {
            m.header.family = AddressFamily::Inet;
            NeighbourAddress::Inet(a)
        }
        IpAddr::V6(a) => {
            m.header.family = AddressFamily::Inet6;
            NeighbourAddress::Inet6(a)
        }
    };
    m.attributes.push(NeighbourAttribute::Destination(dst));
    RouteNetlinkMessage::NewNeighbour(m)
}

impl ResolverThread {
    pub(crate) fn run(mut self) {
        while let Ok(Request::Resolve(key)) = self.rx.recv() {
            let now = Instant::now();
            if !self.admit(key, now) {
                self.counters
                    .resolve_limited
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            match self.resolve(key) {
                Ok(()) => {
                    self.counters.resolve_sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    self.counters.resolve_failed.fetch_add(1, Ordering::Relaxed);
                    self.counters.set_last_error(format!(
                        "resolving {} on ifindex {}: {e}",
                        key.addr, key.ifindex
                    ));
                }
            }
        }
    }

    /// Whether a request for `key` may go out now (at most one per
    /// interval per neighbour).
    fn admit(&mut self, key: NeighbourKey, now: Instant) -> bool {
        let interval = self.interval;
        if let Some(t) = self.recent.get(&key) {
            if now.duration_since(*t) < interval {
                return false;
            }
        }
        if self.recent.len() >= MAX_TRACKED {
            // Forget expired entries, at most once per interval.
            if now.duration_since(self.last_prune) >= interval {
                self.recent.retain(|_, t| now.duration_since(*t) < interval);
                self.last_prune = now;
            }
            if self.recent.len() >= MAX_TRACKED {
                return false;
            }
        }
        self.recent.insert(key, now);
        true
    }

    fn resolve(&mut self, key: NeighbourKey) -> Result<(), NextHopError> {
        self.sock.request(
            use_neighbour(key),
            NLM_F_CREATE,
            "neighbour resolution (RTM_NEWNEIGH with NTF_USE)",
        )
    }
}
