//! What a worker learns once per batch and reuses for the batch's other
//! packets: the next hop towards a destination, and the packets an SA
//! carried, added to the SA's shared counters in one go.
//!
//! A batch works on one snapshot of the tables and of the next hops, so
//! nothing learned here can go stale within it; a new batch starts empty.
//! Most packets of a batch share their SA and next hop (a tunnel's peer, a
//! LAN's few hosts): a route and neighbour lookup per packet, and two
//! atomic adds on a cache line every worker writes, cost more than the
//! rest of a small packet's path outside the AEAD.

use crate::nexthop::Resolved;
use crate::tables::SaStats;
use std::cell::Cell;
use std::net::IpAddr;
use std::time::Instant;

/// How many destinations a batch remembers: a tunnel's peer, and a few
/// hosts for decrypted traffic. Replaced round robin.
const HOPS: usize = 4;

/// A batch's memory; lives in the per-batch [`crate::pipeline::Context`].
#[derive(Default)]
pub struct BatchMemo<'a> {
    hops: [Cell<Option<(IpAddr, Resolved)>>; HOPS],
    next_slot: Cell<usize>,
    carried: Cell<Option<Carried<'a>>>,
}

/// Packets and bytes carried on one SA, not yet added to its counters.
#[derive(Clone, Copy)]
struct Carried<'a> {
    stats: &'a SaStats,
    packets: u64,
    bytes: u64,
    now: Instant,
}

impl<'a> BatchMemo<'a> {
    /// The next hop found for `dst` earlier in this batch.
    #[inline]
    pub fn hop(&self, dst: IpAddr) -> Option<Resolved> {
        self.hops
            .iter()
            .find_map(|slot| slot.get().filter(|(d, _)| *d == dst))
            .map(|(_, hop)| hop)
    }

    /// Remembers the resolved next hop towards `dst`.
    #[inline]
    pub fn remember_hop(&self, dst: IpAddr, hop: Resolved) {
        let slot = self.next_slot.get();
        self.hops[slot].set(Some((dst, hop)));
        self.next_slot.set((slot + 1) % HOPS);
    }

    /// Counts one carried packet on `stats`; added to its shared counters
    /// when the batch moves to another SA or ends ([`BatchMemo::flush`]).
    #[inline]
    pub fn carried(&self, stats: &'a SaStats, bytes: u64, now: Instant) {
        let pending = match self.carried.get() {
            Some(c) if std::ptr::eq(c.stats, stats) => Carried {
                packets: c.packets + 1,
                bytes: c.bytes + bytes,
                now,
                ..c
            },
            other => {
                if let Some(c) = other {
                    c.stats.add_carried(c.packets, c.bytes, c.now);
                }
                Carried {
                    stats,
                    packets: 1,
                    bytes,
                    now,
                }
            }
        };
        self.carried.set(Some(pending));
    }

    /// Adds what is pending to the SA's counters.
    pub fn flush(&self) {
        if let Some(c) = self.carried.take() {
            c.stats.add_carried(c.packets, c.bytes, c.now);
        }
    }
}

impl Drop for BatchMemo<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

impl std::fmt::Debug for BatchMemo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchMemo")
            .field(
                "pending_packets",
                &self.carried.get().map_or(0, |c| c.packets),
            )
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carried_packets_reach_the_sa_counters_once_each() {
        let (a, b) = (SaStats::new(), SaStats::new());
        let now = Instant::now();
        {
            let memo = BatchMemo::default();
            memo.carried(&a, 100, now);
            memo.carried(&a, 50, now);
            assert_eq!(a.counters().packets, 0, "added per batch, not per packet");
            memo.carried(&b, 10, now);
            assert_eq!((a.counters().packets, a.counters().bytes), (2, 150));
            memo.carried(&a, 1, now);
            memo.flush();
            memo.flush();
            assert_eq!((a.counters().packets, a.counters().bytes), (3, 151));
            memo.carried(&b, 10, now);
        }
        assert_eq!((b.counters().packets, b.counters().bytes), (2, 20));
    }

    #[test]
    fn hops_are_remembered_per_destination() {
        let memo = BatchMemo::default();
        let hop = |ifindex| Resolved {
            ifindex,
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            mtu: 1500,
            next_hop: "198.18.0.2".parse().unwrap(),
        };
        let dst = |i: u8| IpAddr::from([10, 0, 0, i]);
        assert_eq!(memo.hop(dst(1)), None);
        for i in 1..=5u8 {
            memo.remember_hop(dst(i), hop(u32::from(i)));
        }
        // Five destinations in four slots: the first was replaced.
        assert_eq!(memo.hop(dst(1)), None);
        assert_eq!(memo.hop(dst(5)).map(|h| h.ifindex), Some(5));
        assert_eq!(memo.hop(dst(2)).map(|h| h.ifindex), Some(2));
    }
}
