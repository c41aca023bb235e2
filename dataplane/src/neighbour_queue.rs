//! Packets waiting for their next hop's link-layer address, as the
//! kernel's ARP/ND queue holds them (`unres_qlen_bytes`): the first packets
//! to a host or gateway not yet in the neighbour table are sent once the
//! kernel has resolved it, not dropped.
//!
//! One queue per worker, a bounded FIFO per unresolved neighbour and a
//! bound on the whole (the frames come out of the worker's UMEM, which RX
//! needs too). A packet that does not fit is dropped and counted; so are
//! the packets of a neighbour the kernel could not resolve (FAILED), or
//! still unresolved after [`HOLD_TIME`], the time the kernel's own probes
//! take (3 solicitations 1 s apart) before it gives up.
//!
//! Generic over what is held, so the policy is tested without a UMEM.

use crate::nexthop::{Interface, MissReason, NeighbourKey, NeighbourState, NextHopTable, Resolved};
use std::time::{Duration, Instant};

/// Packets held per unresolved neighbour.
pub const PER_NEIGHBOUR: usize = 64;
/// Packets held by one worker in all.
pub const TOTAL: usize = 256;
/// How long a packet waits for its neighbour.
pub const HOLD_TIME: Duration = Duration::from_secs(3);

/// What became of a held packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    /// The neighbour is resolved: send it with this hop.
    Send(Resolved),
    /// Dropped, counted under this reason (`NeighbourFailed`, or
    /// `NeighbourIncomplete` when it waited too long).
    Drop(MissReason),
}

#[derive(Debug)]
struct Held<T> {
    neighbour: NeighbourKey,
    /// The path MTU the lookup gave (a route's metric, or the interface's).
    mtu: u32,
    since: Instant,
    item: T,
}

/// The held packets of one worker, oldest first.
#[derive(Debug)]
pub struct NeighbourQueue<T> {
    held: Vec<Held<T>>,
    generation: u64,
}

impl<T> Default for NeighbourQueue<T> {
    fn default() -> Self {
        NeighbourQueue {
            held: Vec::new(),
            generation: u64::MAX,
        }
    }
}

impl<T> NeighbourQueue<T> {
    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Packets waiting.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// How many more packets `neighbour` may have held now.
    pub fn room(&self, neighbour: NeighbourKey) -> usize {
        let mine = self
            .held
            .iter()
            .filter(|h| h.neighbour == neighbour)
            .count();
        PER_NEIGHBOUR
            .saturating_sub(mine)
            .min(TOTAL.saturating_sub(self.held.len()))
    }

    /// Holds `item` until `neighbour` resolves (`mtu`: the path MTU its
    /// lookup gave); gives it back if its neighbour's queue or the whole is
    /// full (the caller drops and counts it).
    pub fn hold(
        &mut self,
        neighbour: NeighbourKey,
        mtu: u32,
        item: T,
        now: Instant,
    ) -> Result<(), T> {
        if self.room(neighbour) == 0 {
            return Err(item);
        }
        self.held.push(Held {
            neighbour,
            mtu,
            since: now,
            item,
        });
        Ok(())
    }

    /// Hands every packet whose neighbour resolved or failed in `table`, or
    /// that waited [`HOLD_TIME`], to `out`, oldest first. Cheap when
    /// nothing changed: the table is only searched when its generation is
    /// new or a packet may have timed out.
    pub fn release(
        &mut self,
        table: &NextHopTable,
        now: Instant,
        mut out: impl FnMut(T, Released),
    ) {
        let oldest = self.held.first().map(|h| h.since);
        let timed_out = oldest.is_some_and(|t| now.duration_since(t) >= HOLD_TIME);
        if self.held.is_empty() || (table.generation() == self.generation && !timed_out) {
            return;
        }
        self.generation = table.generation();
        let mut kept = Vec::with_capacity(self.held.len());
        for h in self.held.drain(..) {
            match verdict(table, h.neighbour, h.mtu) {
                Some(released) => out(h.item, released),
                None if now.duration_since(h.since) >= HOLD_TIME => {
                    out(h.item, Released::Drop(MissReason::NeighbourIncomplete))
                }
                None => kept.push(h),
            }
        }
        self.held = kept;
    }
}

/// What the table says now about the neighbour a packet waits for;
/// `None` while it is still being resolved.
fn verdict(table: &NextHopTable, neighbour: NeighbourKey, mtu: u32) -> Option<Released> {
    let dst_mac = match table.neighbour(neighbour.ifindex, neighbour.addr) {
        Some(NeighbourState::Usable(mac)) => mac,
        Some(NeighbourState::Failed) => return Some(Released::Drop(MissReason::NeighbourFailed)),
        Some(NeighbourState::Incomplete) | None => return None,
    };
    Some(match table.interface(neighbour.ifindex) {
        Some(Interface {
            up: true,
            mac: Some(src_mac),
            ..
        }) => Released::Send(Resolved {
            ifindex: neighbour.ifindex,
            src_mac: *src_mac,
            dst_mac,
            mtu,
            next_hop: neighbour.addr,
        }),
        _ => Released::Drop(MissReason::InterfaceDown),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nexthop::TableBuilder;
    use std::net::IpAddr;

    const GW_MAC: [u8; 6] = [2, 0, 0, 0, 1, 1];

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn key(addr: &str) -> NeighbourKey {
        NeighbourKey {
            ifindex: 3,
            addr: ip(addr),
        }
    }

    fn table(generation: u64, neighbours: &[(&str, NeighbourState)]) -> NextHopTable {
        let mut b = TableBuilder::new();
        b.interface(Interface {
            ifindex: 3,
            name: "wan0".into(),
            mac: Some([2, 0, 0, 0, 0, 3]),
            mtu: 1500,
            up: true,
        });
        for (addr, state) in neighbours {
            b.neighbour(key(addr), *state);
        }
        b.build(generation)
    }

    fn drain(q: &mut NeighbourQueue<u32>, t: &NextHopTable, now: Instant) -> Vec<(u32, Released)> {
        let mut out = Vec::new();
        q.release(t, now, |item, r| out.push((item, r)));
        out
    }

    #[test]
    fn packets_wait_for_their_neighbour_and_leave_in_order() {
        let now = Instant::now();
        let mut q = NeighbourQueue::default();
        for i in 0..3 {
            q.hold(key("198.18.0.2"), 1500, i, now).unwrap();
        }
        q.hold(key("198.18.0.9"), 1500, 100, now).unwrap();
        let incomplete = table(1, &[("198.18.0.2", NeighbourState::Incomplete)]);
        assert!(drain(&mut q, &incomplete, now).is_empty());
        let resolved = table(2, &[("198.18.0.2", NeighbourState::Usable(GW_MAC))]);
        let out = drain(&mut q, &resolved, now + Duration::from_millis(5));
        let items: Vec<u32> = out.iter().map(|o| o.0).collect();
        assert_eq!(items, [0, 1, 2]);
        for (_, r) in &out {
            let Released::Send(hop) = r else {
                panic!("{r:?}")
            };
            assert_eq!((hop.ifindex, hop.dst_mac, hop.mtu), (3, GW_MAC, 1500));
        }
        assert_eq!(q.len(), 1, "the other neighbour's packet still waits");
    }

    #[test]
    fn a_failed_neighbour_or_a_long_wait_drops_and_says_why() {
        let now = Instant::now();
        let mut q = NeighbourQueue::default();
        q.hold(key("198.18.0.2"), 1500, 1, now).unwrap();
        q.hold(key("198.18.0.3"), 1500, 2, now).unwrap();
        let t = table(1, &[("198.18.0.2", NeighbourState::Failed)]);
        assert_eq!(
            drain(&mut q, &t, now),
            [(1, Released::Drop(MissReason::NeighbourFailed))]
        );
        // Same table generation: only the clock can release the other.
        assert!(drain(&mut q, &t, now + HOLD_TIME / 2).is_empty());
        assert_eq!(
            drain(&mut q, &t, now + HOLD_TIME),
            [(2, Released::Drop(MissReason::NeighbourIncomplete))]
        );
        assert!(q.is_empty());
    }

    #[test]
    fn overflow_gives_the_packet_back() {
        let now = Instant::now();
        let mut q = NeighbourQueue::default();
        for i in 0..PER_NEIGHBOUR as u32 {
            q.hold(key("198.18.0.2"), 1500, i, now).unwrap();
        }
        assert_eq!(q.hold(key("198.18.0.2"), 1500, 999, now), Err(999));
        assert_eq!(q.room(key("198.18.0.2")), 0);
        assert_eq!(q.room(key("198.18.0.3")), PER_NEIGHBOUR);
        // Other neighbours still have room, up to the total.
        let mut i = 0u32;
        while q.len() < TOTAL {
            let addr = format!("198.18.0.{}", 10 + i as usize / PER_NEIGHBOUR);
            q.hold(key(&addr), 1500, i, now).unwrap();
            i += 1;
        }
        assert_eq!(q.hold(key("198.18.0.250"), 1500, 7, now), Err(7));
    }
}
