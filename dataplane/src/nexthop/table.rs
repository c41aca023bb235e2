//! The snapshot the workers query: interfaces, the main routing table as a
//! longest-prefix-match structure, and the neighbour table.
//!
//! A [`NextHopTable`] is immutable once built. A lookup walks the prefix
//! lengths present in the table from the longest down, with a binary search
//! per length, then binary-searches the interface and neighbour arrays: no
//! allocation, no lock, no system call.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

/// An Ethernet (MAC) address.
pub type Mac = [u8; 6];

/// A neighbour table entry's key: the interface it is on and its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NeighbourKey {
    /// Interface index.
    pub ifindex: u32,
    /// The neighbour's IP address (the gateway, or the destination itself
    /// when it is on-link).
    pub addr: IpAddr,
}

/// Where to send a packet: everything needed to write its Ethernet header
/// and queue it on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    /// Outgoing interface index.
    pub ifindex: u32,
    /// Source MAC: the outgoing interface's address.
    pub src_mac: Mac,
    /// Destination MAC: the next hop's address from the neighbour table.
    pub dst_mac: Mac,
    /// Path MTU: the route's `mtu` metric if it has one, else the interface's.
    pub mtu: u32,
    /// The next hop's IP address (the gateway, or the destination if on-link).
    pub next_hop: IpAddr,
}

/// Why a lookup found no usable next hop. Each reason is a drop counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MissReason {
    /// No route in the main table covers the destination (through the
    /// requested interface, if one was given).
    NoRoute,
    /// The best route is a blackhole, unreachable, prohibit or throw route.
    Unreachable,
    /// The route's interface is administratively down, has no carrier, or is
    /// unknown.
    InterfaceDown,
    /// The route's interface has no Ethernet address (loopback, tun, ...).
    NotEthernet,
    /// The neighbour table has no entry for the next hop yet.
    NeighbourUnknown,
    /// The kernel is resolving the next hop (NUD_INCOMPLETE or NUD_NONE).
    NeighbourIncomplete,
    /// The kernel failed to resolve the next hop (NUD_FAILED).
    NeighbourFailed,
}

impl MissReason {
    /// Number of reasons, for arrays of per-reason counters.
    pub const COUNT: usize = 7;

    /// Every reason, in [`MissReason::index`] order.
    pub const ALL: [MissReason; Self::COUNT] = [
        MissReason::NoRoute,
        MissReason::Unreachable,
        MissReason::InterfaceDown,
        MissReason::NotEthernet,
        MissReason::NeighbourUnknown,
        MissReason::NeighbourIncomplete,
        MissReason::NeighbourFailed,
    ];

    /// A dense index in `0..COUNT`.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// A short snake_case name, for counters and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            MissReason::NoRoute => "no_route",
            MissReason::Unreachable => "unreachable",
            MissReason::InterfaceDown => "interface_down",
            MissReason::NotEthernet => "not_ethernet",
            MissReason::NeighbourUnknown => "neighbour_unknown",
            MissReason::NeighbourIncomplete => "neighbour_incomplete",
            MissReason::NeighbourFailed => "neighbour_failed",
        }
    }
}

impl fmt::Display for MissReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A lookup that found no usable next hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Miss {
    /// Why.
    pub reason: MissReason,
    /// For the neighbour reasons: the entry to ask the kernel to resolve
    /// (pass it to [`crate::nexthop::Resolver::request`]).
    pub neighbour: Option<NeighbourKey>,
    /// For the neighbour reasons: the path MTU the hop will have once
    /// resolved (a packet waiting for it is sized against it).
    pub mtu: Option<u32>,
}

/// The answer of [`NextHopTable::lookup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A usable next hop.
    Resolved(Resolved),
    /// No usable next hop: drop the packet, count the reason, and ask for
    /// resolution if [`Miss::neighbour`] is set.
    Miss(Miss),
}

impl Lookup {
    /// The next hop, if resolved.
    pub fn resolved(self) -> Option<Resolved> {
        match self {
            Lookup::Resolved(r) => Some(r),
            Lookup::Miss(_) => None,
        }
    }

    /// The reason, if a miss.
    pub fn miss_reason(self) -> Option<MissReason> {
        match self {
            Lookup::Resolved(_) => None,
            Lookup::Miss(m) => Some(m.reason),
        }
    }
}

/// An interface as the link table shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Interface index.
    pub ifindex: u32,
    /// Interface name.
    pub name: String,
    /// Its MAC address; `None` unless it is an Ethernet interface.
    pub mac: Option<Mac>,
    /// Its MTU.
    pub mtu: u32,
    /// Administratively up and running (has a carrier).
    pub up: bool,
}

/// One hop of a route: an interface and, unless the destination is on-link,
/// a gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    /// Outgoing interface index.
    pub ifindex: u32,
    /// The gateway; `None` for an on-link (connected) route.
    pub gateway: Option<IpAddr>,
}

/// What a route does with matching packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTarget {
    /// Forward through one of these hops (several for a multipath route; the
    /// first usable one is taken).
    Hops(Vec<Hop>),
    /// Drop: blackhole, unreachable, prohibit or throw.
    Reject,
}

/// A route of the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination network (host bits are ignored).
    pub dst: IpAddr,
    /// Prefix length (0 for a default route).
    pub prefix_len: u8,
    /// Metric (priority): among routes to the same prefix, the lowest wins.
    pub metric: u32,
    /// The route's `mtu` metric, if set.
    pub mtu: Option<u32>,
    /// What it does.
    pub target: RouteTarget,
}

/// A neighbour table entry's usable state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighbourState {
    /// Has a link-layer address the kernel considers valid (REACHABLE,
    /// STALE, DELAY, PROBE, PERMANENT or NOARP with an address).
    Usable(Mac),
    /// Being resolved (INCOMPLETE, or NONE).
    Incomplete,
    /// Resolution failed (FAILED).
    Failed,
}

/// One candidate of a prefix, ordered by metric.
#[derive(Debug, Clone, Copy)]
enum Candidate {
    Reject,
    Hop {
        ifindex: u32,
        gateway: Option<IpAddr>,
        mtu: Option<u32>,
    },
}

/// All prefixes of one length.
#[derive(Debug)]
struct Level {
    mask: u128,
    /// Sorted by masked prefix; each with its candidates, best first.
    prefixes: Vec<(u128, Box<[Candidate]>)>,
}

/// Longest-prefix match over one address family: the lengths present,
/// longest first.
#[derive(Debug, Default)]
struct Lpm {
    levels: Vec<Level>,
}

const V4_WIDTH: u8 = 32;
const V6_WIDTH: u8 = 128;

fn mask(width: u8, len: u8) -> u128 {
    let len = len.min(width);
    if len == 0 {
        return 0;
    }
    let all = if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    (u128::MAX << (width - len)) & all
}

/// An address as the key of its family's table, and the family's width.
fn key_of(addr: IpAddr) -> (u128, u8) {
    match addr {
        IpAddr::V4(a) => (u128::from(u32::from(a)), V4_WIDTH),
        IpAddr::V6(a) => (u128::from(a), V6_WIDTH),
    }
}

impl Lpm {
    fn build(entries: BTreeMap<(u8, u128), Vec<(u32, Candidate)>>, width: u8) -> Self {
        let mut levels: Vec<(u8, Level)> = Vec::new();
        for ((len, prefix), mut cands) in entries {
            // Stable: among equal metrics (multipath hops, appended routes),
            // the kernel's order is kept.
            cands.sort_by_key(|(metric, _)| *metric);
            let cands: Box<[Candidate]> = cands.into_iter().map(|(_, c)| c).collect();
            match levels.last_mut() {
                Some((l, level)) if *l == len => level.prefixes.push((prefix, cands)),
                _ => levels.push((
                    len,
                    Level {
                        mask: mask(width, len),
                        prefixes: vec![(prefix, cands)],
                    },
                )),
            }
        }
        // BTreeMap order is ascending (len, prefix): prefixes within a level
        // are sorted; the levels are wanted longest first.
        levels.reverse();
        Lpm {
            levels: levels.into_iter().map(|(_, l)| l).collect(),
        }
    }
}

/// Collects interfaces, routes and neighbours, then builds a
/// [`NextHopTable`]. [`crate::nexthop::NextHopCache`] fills one from the
/// kernel's tables; tests and benchmarks can fill one by hand.
#[derive(Debug, Default, Clone)]
pub struct TableBuilder {
    interfaces: BTreeMap<u32, Interface>,
    routes: Vec<Route>,
    neighbours: BTreeMap<NeighbourKey, NeighbourState>,
}

impl TableBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces, by index) an interface.
    pub fn interface(&mut self, iface: Interface) -> &mut Self {
        self.interfaces.insert(iface.ifindex, iface);
        self
    }

    /// Adds a route.
    pub fn route(&mut self, route: Route) -> &mut Self {
        self.routes.push(route);
        self
    }

    /// Adds (or replaces) a neighbour entry.
    pub fn neighbour(&mut self, key: NeighbourKey, state: NeighbourState) -> &mut Self {
        self.neighbours.insert(key, state);
        self
    }

    /// Builds the table, tagged with `generation`.
    pub fn build(&self, generation: u64) -> NextHopTable {
        NextHopTable::build(
            generation,
            self.interfaces.values(),
            &self.routes,
            self.neighbours.iter().map(|(k, s)| (*k, *s)),
        )
    }
}

/// An immutable snapshot of the next-hop state. See the module documentation.
#[derive(Debug, Default)]
pub struct NextHopTable {
    generation: u64,
    v4: Lpm,
    v6: Lpm,
    route_count: usize,
    /// Sorted by ifindex.
    interfaces: Box<[Interface]>,
    /// Sorted by key.
    neighbours: Box<[(NeighbourKey, NeighbourState)]>,
    /// This host's own addresses, sorted.
    local_addresses: Box<[IpAddr]>,
}

impl NextHopTable {
    pub(crate) fn build<'a>(
        generation: u64,
        interfaces: impl IntoIterator<Item = &'a Interface>,
        routes: &[Route],
        neighbours: impl IntoIterator<Item = (NeighbourKey, NeighbourState)>,
    ) -> Self {
        let mut interfaces: Vec<Interface> = interfaces.into_iter().cloned().collect();
        interfaces.sort_by_key(|i| i.ifindex);
        interfaces.dedup_by_key(|i| i.ifindex);
        let mut neighbours: Vec<(NeighbourKey, NeighbourState)> = neighbours.into_iter().collect();
        // Stable sort, then keep the last of equal keys.
        neighbours.sort_by_key(|(k, _)| *k);
        let mut dedup: Vec<(NeighbourKey, NeighbourState)> = Vec::with_capacity(neighbours.len());
        for n in neighbours {
            match dedup.last_mut() {
                Some(last) if last.0 == n.0 => *last = n,
                _ => dedup.push(n),
            }
        }

        let mut v4 = BTreeMap::new();
        let mut v6 = BTreeMap::new();
        for r in routes {
            let (key, width) = key_of(r.dst);
            let len = r.prefix_len.min(width);
            let prefix = key & mask(width, len);
            let table = if width == V4_WIDTH { &mut v4 } else { &mut v6 };
            let cands: &mut Vec<(u32, Candidate)> = table.entry((len, prefix)).or_default();
            match &r.target {
                RouteTarget::Reject => cands.push((r.metric, Candidate::Reject)),
                RouteTarget::Hops(hops) => cands.extend(hops.iter().map(|h| {
                    (
                        r.metric,
                        Candidate::Hop {
                            ifindex: h.ifindex,
                            gateway: h.gateway,
                            mtu: r.mtu,
                        },
                    )
                })),
            }
        }
        NextHopTable {
            generation,
            v4: Lpm::build(v4, V4_WIDTH),
            v6: Lpm::build(v6, V6_WIDTH),
            route_count: routes.len(),
            interfaces: interfaces.into_boxed_slice(),
            neighbours: dedup.into_boxed_slice(),
            local_addresses: Box::default(),
        }
    }

    /// The same table, knowing `addresses` as this host's own.
    pub fn with_local_addresses(mut self, mut addresses: Vec<IpAddr>) -> Self {
        addresses.sort_unstable();
        addresses.dedup();
        self.local_addresses = addresses.into_boxed_slice();
        self
    }

    /// Whether `addr` is one of this host's own addresses (the kernel's
    /// local routing table), which no next hop reaches: packets for it
    /// belong to the host's own stack.
    pub fn is_local(&self, addr: IpAddr) -> bool {
        self.local_addresses.binary_search(&addr).is_ok()
    }

    /// Increases by one with every snapshot the cache publishes.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Number of routes (IPv4 and IPv6) the table was built from.
    pub fn route_count(&self) -> usize {
        self.route_count
    }

    /// Number of neighbour entries.
    pub fn neighbour_count(&self) -> usize {
        self.neighbours.len()
    }

    /// All interfaces, by index.
    pub fn interfaces(&self) -> &[Interface] {
        &self.interfaces
    }

    /// An interface by index.
    pub fn interface(&self, ifindex: u32) -> Option<&Interface> {
        self.interfaces
            .binary_search_by_key(&ifindex, |i| i.ifindex)
            .ok()
            .map(|i| &self.interfaces[i])
    }

    /// An interface by name.
    pub fn interface_by_name(&self, name: &str) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.name == name)
    }

    /// A neighbour entry.
    pub fn neighbour(&self, ifindex: u32, addr: IpAddr) -> Option<NeighbourState> {
        let key = NeighbourKey { ifindex, addr };
        self.neighbours
            .binary_search_by(|(k, _)| k.cmp(&key))
            .ok()
            .map(|i| self.neighbours[i].1)
    }

    /// Finds the next hop towards `dst`: the longest-prefix route of the main
    /// table (restricted to routes through interface `oif` if given), its
    /// interface, and the neighbour entry of its gateway (or of `dst` itself
    /// for an on-link route).
    ///
    /// Among routes to the same prefix the lowest metric wins; of a multipath
    /// route the first hop whose interface is up. If every candidate of the
    /// best prefix is on a down interface the answer is
    /// [`MissReason::InterfaceDown`]; shorter prefixes are not tried then.
    pub fn lookup(&self, oif: Option<u32>, dst: IpAddr) -> Lookup {
        let (key, width) = key_of(dst);
        let lpm = if width == V4_WIDTH {
            &self.v4
        } else {
            &self.v6
        };
        for level in &lpm.levels {
            let k = key & level.mask;
            let Ok(i) = level.prefixes.binary_search_by_key(&k, |p| p.0) else {
                continue;
            };
            let mut down = None;
            for cand in level.prefixes[i].1.iter() {
                match *cand {
                    Candidate::Reject => return miss(MissReason::Unreachable, None),
                    Candidate::Hop {
                        ifindex,
                        gateway,
                        mtu,
                    } => {
                        if oif.is_some_and(|o| o != ifindex) {
                            continue;
                        }
                        match self.resolve_hop(ifindex, gateway.unwrap_or(dst), mtu) {
                            Lookup::Miss(m) if m.reason == MissReason::InterfaceDown => {
                                down.get_or_insert(m);
                            }
                            other => return other,
                        }
                    }
                }
            }
            if let Some(m) = down {
                return Lookup::Miss(m);
            }
            // No candidate through `oif` at this length: try shorter ones.
        }
        miss(MissReason::NoRoute, None)
    }

    fn resolve_hop(&self, ifindex: u32, next_hop: IpAddr, mtu: Option<u32>) -> Lookup {
        let Some(iface) = self.interface(ifindex) else {
            return miss(MissReason::InterfaceDown, None);
        };
        if !iface.up {
            return miss(MissReason::InterfaceDown, None);
        }
        let Some(src_mac) = iface.mac else {
            return miss(MissReason::NotEthernet, None);
        };
        let key = NeighbourKey {
            ifindex,
            addr: next_hop,
        };
        let mtu = mtu.unwrap_or(iface.mtu);
        let unresolved = |reason| {
            Lookup::Miss(Miss {
                reason,
                neighbour: Some(key),
                mtu: Some(mtu),
            })
        };
        match self.neighbour(ifindex, next_hop) {
            Some(NeighbourState::Usable(dst_mac)) => Lookup::Resolved(Resolved {
                ifindex,
                src_mac,
                dst_mac,
                mtu,
                next_hop,
            }),
            Some(NeighbourState::Incomplete) => unresolved(MissReason::NeighbourIncomplete),
            Some(NeighbourState::Failed) => unresolved(MissReason::NeighbourFailed),
            None => unresolved(MissReason::NeighbourUnknown),
        }
    }
}

fn miss(reason: MissReason, neighbour: Option<NeighbourKey>) -> Lookup {
    Lookup::Miss(Miss {
        reason,
        neighbour,
        mtu: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC_A: Mac = [2, 0, 0, 0, 0, 0xa];
    const MAC_B: Mac = [2, 0, 0, 0, 0, 0xb];
    const MAC_GW1: Mac = [2, 0, 0, 0, 1, 1];
    const MAC_GW2: Mac = [2, 0, 0, 0, 1, 2];

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn iface(ifindex: u32, mac: Option<Mac>, up: bool) -> Interface {
        Interface {
            ifindex,
            name: format!("if{ifindex}"),
            mac,
            mtu: 1500,
            up,
        }
    }

    fn via(dst: &str, len: u8, metric: u32, ifindex: u32, gw: Option<&str>) -> Route {
        Route {
            dst: ip(dst),
            prefix_len: len,
            metric,
            mtu: None,
            target: RouteTarget::Hops(vec![Hop {
                ifindex,
                gateway: gw.map(ip),
            }]),
        }
    }

    fn usable(b: &mut TableBuilder, ifindex: u32, addr: &str, mac: Mac) {
        b.neighbour(
            NeighbourKey {
                ifindex,
                addr: ip(addr),
            },
            NeighbourState::Usable(mac),
        );
    }

    fn base() -> TableBuilder {
        let mut b = TableBuilder::new();
        b.interface(iface(2, Some(MAC_A), true))
            .interface(iface(3, Some(MAC_B), true))
            .route(via("198.18.1.0", 24, 0, 2, None))
            .route(via("198.18.2.0", 24, 0, 3, None))
            .route(via("0.0.0.0", 0, 100, 2, Some("198.18.1.1")))
            .route(via("10.1.0.0", 16, 0, 3, Some("198.18.2.1")))
            .route(via("10.1.2.0", 24, 0, 2, Some("198.18.1.1")));
        usable(&mut b, 2, "198.18.1.1", MAC_GW1);
        usable(&mut b, 3, "198.18.2.1", MAC_GW2);
        b
    }

    fn resolved(t: &NextHopTable, oif: Option<u32>, dst: &str) -> Resolved {
        match t.lookup(oif, ip(dst)) {
            Lookup::Resolved(r) => r,
            other => panic!("{dst}: expected resolved, got {other:?}"),
        }
    }

    fn reason(t: &NextHopTable, oif: Option<u32>, dst: &str) -> MissReason {
        t.lookup(oif, ip(dst))
            .miss_reason()
            .unwrap_or_else(|| panic!("{dst}: expected a miss"))
    }

    #[test]
    fn mask_edges() {
        assert_eq!(mask(32, 0), 0);
        assert_eq!(mask(32, 32), 0xffff_ffff);
        assert_eq!(mask(32, 24), 0xffff_ff00);
        assert_eq!(mask(32, 40), 0xffff_ffff);
        assert_eq!(mask(128, 128), u128::MAX);
        assert_eq!(mask(128, 1), 1u128 << 127);
        assert_eq!(mask(128, 0), 0);
    }

    #[test]
    fn longest_prefix_wins() {
        let t = base().build(1);
        let r = resolved(&t, None, "10.1.2.3");
        assert_eq!((r.ifindex, r.dst_mac, r.src_mac), (2, MAC_GW1, MAC_A));
        assert_eq!(r.next_hop, ip("198.18.1.1"));
        let r = resolved(&t, None, "10.1.3.3");
        assert_eq!((r.ifindex, r.dst_mac, r.src_mac), (3, MAC_GW2, MAC_B));
        // Only the default route covers this one.
        let r = resolved(&t, None, "10.9.9.9");
        assert_eq!((r.ifindex, r.dst_mac), (2, MAC_GW1));
        assert_eq!(r.mtu, 1500);
        assert_eq!(t.generation(), 1);
        assert_eq!(t.route_count(), 5);
    }

    #[test]
    fn on_link_uses_the_destination_as_neighbour() {
        let mut b = base();
        usable(&mut b, 3, "198.18.2.7", [2, 0, 0, 0, 2, 7]);
        let t = b.build(1);
        let r = resolved(&t, None, "198.18.2.7");
        assert_eq!((r.ifindex, r.next_hop), (3, ip("198.18.2.7")));
        assert_eq!(r.dst_mac, [2, 0, 0, 0, 2, 7]);
        let m = t.lookup(None, ip("198.18.2.8"));
        assert_eq!(
            m,
            Lookup::Miss(Miss {
                reason: MissReason::NeighbourUnknown,
                neighbour: Some(NeighbourKey {
                    ifindex: 3,
                    addr: ip("198.18.2.8")
                }),
                mtu: Some(1500),
            })
        );
    }

    #[test]
    fn no_route_without_default() {
        let mut b = TableBuilder::new();
        b.interface(iface(2, Some(MAC_A), true))
            .route(via("198.18.1.0", 24, 0, 2, None));
        let t = b.build(1);
        assert_eq!(reason(&t, None, "10.0.0.1"), MissReason::NoRoute);
        assert_eq!(reason(&t, None, "fd00::1"), MissReason::NoRoute);
        // The IPv4 route does not cover the IPv6 space, even at length 0.
        let mut b = TableBuilder::new();
        b.route(via("0.0.0.0", 0, 0, 2, None));
        assert_eq!(reason(&b.build(1), None, "::"), MissReason::NoRoute);
    }

    #[test]
    fn oif_restricts_candidates_and_falls_back_to_shorter_prefixes() {
        let t = base().build(1);
        // 10.1.2.0/24 is via if2; asking for if3 falls back to 10.1.0.0/16.
        let r = resolved(&t, Some(3), "10.1.2.3");
        assert_eq!((r.ifindex, r.dst_mac), (3, MAC_GW2));
        // No route through if9 at all.
        assert_eq!(reason(&t, Some(9), "10.1.2.3"), MissReason::NoRoute);
    }

    #[test]
    fn lowest_metric_wins_and_down_interfaces_are_skipped() {
        let mut b = base();
        b.route(via("10.5.0.0", 16, 200, 3, Some("198.18.2.1")))
            .route(via("10.5.0.0", 16, 100, 2, Some("198.18.1.1")));
        let t = b.build(1);
        assert_eq!(resolved(&t, None, "10.5.0.1").ifindex, 2);

        b.interface(iface(2, Some(MAC_A), false));
        let t = b.build(2);
        assert_eq!(resolved(&t, None, "10.5.0.1").ifindex, 3);
        // Only if2 serves 10.1.2.0/24: down, and no fallback to /16.
        assert_eq!(reason(&t, None, "10.1.2.3"), MissReason::InterfaceDown);
        // Unknown interface counts as down.
        let mut b = TableBuilder::new();
        b.route(via("10.6.0.0", 16, 0, 42, None));
        assert_eq!(
            reason(&b.build(1), None, "10.6.0.1"),
            MissReason::InterfaceDown
        );
    }

    #[test]
    fn multipath_takes_first_usable_hop() {
        let mut b = base();
        b.route(Route {
            dst: ip("10.7.0.0"),
            prefix_len: 16,
            metric: 0,
            mtu: Some(1400),
            target: RouteTarget::Hops(vec![
                Hop {
                    ifindex: 2,
                    gateway: Some(ip("198.18.1.1")),
                },
                Hop {
                    ifindex: 3,
                    gateway: Some(ip("198.18.2.1")),
                },
            ]),
        });
        let r = resolved(&b.build(1), None, "10.7.1.1");
        assert_eq!((r.ifindex, r.mtu), (2, 1400));
        b.interface(iface(2, Some(MAC_A), false));
        let r = resolved(&b.build(2), None, "10.7.1.1");
        assert_eq!((r.ifindex, r.dst_mac, r.mtu), (3, MAC_GW2, 1400));
        let r = resolved(&b.build(2), Some(3), "10.7.1.1");
        assert_eq!(r.ifindex, 3);
    }

    #[test]
    fn reject_routes_and_non_ethernet() {
        let mut b = base();
        b.route(Route {
            dst: ip("10.1.2.128"),
            prefix_len: 25,
            metric: 0,
            mtu: None,
            target: RouteTarget::Reject,
        })
        .interface(iface(4, None, true))
        .route(via("10.8.0.0", 16, 0, 4, None));
        let t = b.build(1);
        assert_eq!(reason(&t, None, "10.1.2.200"), MissReason::Unreachable);
        assert_eq!(resolved(&t, None, "10.1.2.100").ifindex, 2);
        assert_eq!(reason(&t, None, "10.8.0.1"), MissReason::NotEthernet);
    }

    #[test]
    fn neighbour_states() {
        let mut b = base();
        b.route(via("198.18.3.0", 24, 0, 3, None));
        let k = |a: &str| NeighbourKey {
            ifindex: 3,
            addr: ip(a),
        };
        b.neighbour(k("198.18.3.1"), NeighbourState::Incomplete)
            .neighbour(k("198.18.3.2"), NeighbourState::Failed)
            .neighbour(k("198.18.3.3"), NeighbourState::Failed)
            // A later entry for the same key replaces the earlier one.
            .neighbour(k("198.18.3.3"), NeighbourState::Usable(MAC_GW1));
        let t = b.build(1);
        let m = t.lookup(None, ip("198.18.3.1"));
        assert_eq!(m.miss_reason(), Some(MissReason::NeighbourIncomplete));
        assert!(matches!(m, Lookup::Miss(Miss { neighbour: Some(n), .. }) if n == k("198.18.3.1")));
        assert_eq!(reason(&t, None, "198.18.3.2"), MissReason::NeighbourFailed);
        assert_eq!(resolved(&t, None, "198.18.3.3").dst_mac, MAC_GW1);
        assert_eq!(
            t.neighbour(3, ip("198.18.3.3")),
            Some(NeighbourState::Usable(MAC_GW1))
        );
    }

    #[test]
    fn ipv6_lpm_and_ipv4_via_ipv6_gateway() {
        let mut b = TableBuilder::new();
        b.interface(iface(2, Some(MAC_A), true))
            .route(via("fd00:1::", 64, 256, 2, None))
            .route(via("fd00:99::", 48, 1024, 2, Some("fe80::1")))
            .route(via("fd00:99:0:5::", 64, 1024, 2, Some("fd00:1::2")))
            .route(via("::", 0, 1024, 2, Some("fe80::2")))
            .route(via("10.9.0.0", 16, 0, 2, Some("fe80::1")));
        usable(&mut b, 2, "fe80::1", MAC_GW1);
        usable(&mut b, 2, "fd00:1::2", MAC_GW2);
        let t = b.build(1);
        let r = resolved(&t, None, "fd00:99:0:1::7");
        assert_eq!((r.dst_mac, r.next_hop), (MAC_GW1, ip("fe80::1")));
        let r = resolved(&t, None, "fd00:99:0:5::7");
        assert_eq!((r.dst_mac, r.next_hop), (MAC_GW2, ip("fd00:1::2")));
        assert_eq!(
            reason(&t, None, "fd00:aaaa::1"),
            MissReason::NeighbourUnknown
        );
        let r = resolved(&t, None, "10.9.1.1");
        assert_eq!((r.dst_mac, r.next_hop), (MAC_GW1, ip("fe80::1")));
        // Host bits of a route's destination are ignored.
        let mut b = TableBuilder::new();
        b.interface(iface(2, Some(MAC_A), true))
            .route(via("fd00:1::ffff", 64, 0, 2, None));
        usable(&mut b, 2, "fd00:1::9", MAC_GW1);
        assert_eq!(resolved(&b.build(1), None, "fd00:1::9").dst_mac, MAC_GW1);
    }

    #[test]
    fn reasons_index_densely() {
        for (i, r) in MissReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert!(!r.as_str().is_empty());
        }
    }
}
