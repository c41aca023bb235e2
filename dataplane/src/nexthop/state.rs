//! The control side's model of the kernel's link, route and neighbour
//! tables, kept from dumps and notifications, and the translation of
//! rtnetlink messages into it.

use std::collections::BTreeMap;
use std::net::IpAddr;

use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage,
    NeighbourState as NudState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteMetric,
    RouteNextHopFlags, RouteType, RouteVia,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::table::{
    Hop, Interface, Mac, NeighbourKey, NeighbourState, NextHopTable, Route, RouteTarget,
};

/// What a notification changed, so the monitor knows what to refresh.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Change {
    /// The model changed (a new snapshot is due).
    pub dirty: bool,
    /// The route table must be dumped again.
    pub routes: bool,
    /// Everything must be dumped again.
    pub resync: bool,
}

impl Change {
    pub(crate) fn merge(&mut self, other: Change) {
        self.dirty |= other.dirty;
        self.routes |= other.routes;
        self.resync |= other.resync;
    }

    pub(crate) fn any(self) -> bool {
        self.dirty || self.routes || self.resync
    }
}

/// Links and neighbours are kept from notifications, one entry at a time.
/// Routes are dumped again whenever a route notification arrives: route
/// notifications are not enough to track the table exactly (replace and
/// append semantics, multipath hops, IPv4 routes flushed without a
/// notification when a device goes away), and routes change seldom.
#[derive(Debug, Default)]
pub(crate) struct Model {
    links: BTreeMap<u32, Interface>,
    routes: Vec<Route>,
    /// This host's addresses, from the local table's RTN_LOCAL routes
    /// (they come with every route dump and route notification).
    local_addresses: Vec<IpAddr>,
    neighbours: BTreeMap<NeighbourKey, NeighbourState>,
}

impl Model {
    pub(crate) fn set_links(&mut self, msgs: &[RouteNetlinkMessage]) {
        self.links.clear();
        for m in msgs {
            if let RouteNetlinkMessage::NewLink(l) = m {
                if let Some(iface) = parse_link(l) {
                    self.links.insert(iface.ifindex, iface);
                }
            }
        }
    }

    pub(crate) fn set_neighbours(&mut self, msgs: &[RouteNetlinkMessage]) {
        self.neighbours.clear();
        for m in msgs {
            if let RouteNetlinkMessage::NewNeighbour(n) = m {
                if let Some((key, Some(state))) = parse_neighbour(n) {
                    self.neighbours.insert(key, state);
                }
            }
        }
    }

    pub(crate) fn set_routes(&mut self, msgs: &[RouteNetlinkMessage]) {
        self.routes = msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => parse_route(r),
                _ => None,
            })
            .collect();
        self.local_addresses = msgs
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => parse_local_address(r),
                _ => None,
            })
            .collect();
    }

    /// Applies one notification.
    pub(crate) fn apply(&mut self, msg: &RouteNetlinkMessage) -> Change {
        let dirty = Change {
            dirty: true,
            ..Change::default()
        };
        match msg {
            RouteNetlinkMessage::NewLink(l) => match parse_link(l) {
                Some(iface) => {
                    if self.links.get(&iface.ifindex) == Some(&iface) {
                        return Change::default();
                    }
                    // IPv4 flushes a device's routes when it goes down
                    // without notifications: dump them again on any change.
                    self.links.insert(iface.ifindex, iface);
                    Change {
                        dirty: true,
                        routes: true,
                        resync: false,
                    }
                }
                None => Change::default(),
            },
            RouteNetlinkMessage::DelLink(l) => {
                if l.header.interface_family != AddressFamily::Unspec {
                    return Change::default();
                }
                let ifindex = l.header.index;
                self.links.remove(&ifindex);
                self.neighbours.retain(|k, _| k.ifindex != ifindex);
                // IPv4 flushes the device's routes without notifications.
                Change {
                    dirty: true,
                    routes: true,
                    resync: false,
                }
            }
            RouteNetlinkMessage::NewNeighbour(n) => match parse_neighbour(n) {
                Some((key, Some(state))) => {
                    if self.neighbours.insert(key, state) == Some(state) {
                        Change::default()
                    } else {
                        dirty
                    }
                }
                Some((key, None)) => {
                    if self.neighbours.remove(&key).is_some() {
                        dirty
                    } else {
                        Change::default()
                    }
                }
                None => Change::default(),
            },
            RouteNetlinkMessage::DelNeighbour(n) => match parse_neighbour(n) {
                Some((key, _)) if self.neighbours.remove(&key).is_some() => dirty,
                _ => Change::default(),
            },
            RouteNetlinkMessage::NewRoute(r) | RouteNetlinkMessage::DelRoute(r) => {
                if route_family(&r.header).is_some() {
                    Change {
                        dirty: true,
                        routes: true,
                        resync: false,
                    }
                } else {
                    Change::default()
                }
            }
            _ => Change::default(),
        }
    }

    pub(crate) fn snapshot(&self, generation: u64) -> NextHopTable {
        NextHopTable::build(
            generation,
            self.links.values(),
            &self.routes,
            self.neighbours.iter().map(|(k, s)| (*k, *s)),
        )
        .with_local_addresses(self.local_addresses.clone())
    }
}

fn mac_of(bytes: &[u8]) -> Option<Mac> {
    bytes.try_into().ok()
}

/// An interface from RTM_NEWLINK; `None` for messages of other families
/// (bridge port information comes as AF_BRIDGE link messages).
pub(crate) fn parse_link(l: &LinkMessage) -> Option<Interface> {
    if l.header.interface_family != AddressFamily::Unspec {
        return None;
    }
    let mut name = String::new();
    let mut mac = None;
    let mut mtu = 0;
    for a in &l.attributes {
        match a {
            LinkAttribute::IfName(n) => name.clone_from(n),
            LinkAttribute::Address(a) => mac = mac_of(a),
            LinkAttribute::Mtu(m) => mtu = *m,
            _ => {}
        }
    }
    if l.header.link_layer_type != LinkLayerType::Ether {
        mac = None;
    }
    let flags = l.header.flags;
    Some(Interface {
        ifindex: l.header.index,
        name,
        mac,
        mtu,
        up: flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::Running),
    })
}

/// The entry's key and state from RTM_NEWNEIGH / RTM_DELNEIGH; the state is
/// `None` when the entry holds nothing usable or pending (to be removed).
/// `None` altogether for entries that are not IPv4/IPv6 neighbours (bridge
/// FDB, proxy entries).
pub(crate) fn parse_neighbour(
    n: &NeighbourMessage,
) -> Option<(NeighbourKey, Option<NeighbourState>)> {
    if !matches!(n.header.family, AddressFamily::Inet | AddressFamily::Inet6)
        || n.header.flags.contains(NeighbourFlags::Proxy)
    {
        return None;
    }
    let mut addr = None;
    let mut lladdr = None;
    for a in &n.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                addr = Some(IpAddr::V4(*a))
            }
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                addr = Some(IpAddr::V6(*a))
            }
            NeighbourAttribute::LinkLayerAddress(l) => lladdr = mac_of(l),
            _ => {}
        }
    }
    let key = NeighbourKey {
        ifindex: n.header.ifindex,
        addr: addr?,
    };
    let state = match (n.header.state, lladdr) {
        (NudState::Failed, _) => Some(NeighbourState::Failed),
        (NudState::Incomplete | NudState::None, _) => Some(NeighbourState::Incomplete),
        (
            NudState::Reachable
            | NudState::Stale
            | NudState::Delay
            | NudState::Probe
            | NudState::Permanent
            | NudState::Noarp,
            Some(mac),
        ) => Some(NeighbourState::Usable(mac)),
        // Probing an entry whose address went away: still being resolved.
        (NudState::Delay | NudState::Probe | NudState::Stale, None) => {
            Some(NeighbourState::Incomplete)
        }
        _ => None,
    };
    Some((key, state))
}

fn route_family(h: &RouteHeader) -> Option<AddressFamily> {
    matches!(h.address_family, AddressFamily::Inet | AddressFamily::Inet6)
        .then_some(h.address_family)
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(a) => Some(IpAddr::V4(*a)),
        RouteAddress::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

fn via_ip(v: &RouteVia) -> Option<IpAddr> {
    match v {
        RouteVia::Inet(a) => Some(IpAddr::V4(*a)),
        RouteVia::Inet6(a) => Some(IpAddr::V6(*a)),
        _ => None,
    }
}

fn gateway_of(attrs: &[RouteAttribute]) -> Option<IpAddr> {
    attrs.iter().find_map(|a| match a {
        RouteAttribute::Gateway(g) => route_ip(g),
        RouteAttribute::Via(v) => via_ip(v),
        _ => None,
    })
}

/// The kernel's local routing table (RT_TABLE_LOCAL), where each of the
/// host's addresses has an RTN_LOCAL route.
const RT_TABLE_LOCAL: u32 = 255;

/// The address of a local-table RTN_LOCAL route: one of this host's own
/// addresses. `None` for every other route.
pub(crate) fn parse_local_address(r: &RouteMessage) -> Option<IpAddr> {
    let h = &r.header;
    route_family(h)?;
    let table = r
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(h.table));
    if table != RT_TABLE_LOCAL || h.kind != RouteType::Local {
        return None;
    }
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(d) => route_ip(d),
        _ => None,
    })
}

/// A main-table IPv4/IPv6 route from RTM_NEWROUTE. `None` for other tables
/// and families, cached clones, routes with a source prefix or a TOS (the
/// data plane looks up by destination only), local/broadcast/multicast
/// routes, and routes using nexthop objects (RTA_NH_ID, not supported).
pub(crate) fn parse_route(r: &RouteMessage) -> Option<Route> {
    let h = &r.header;
    let family = route_family(h)?;
    let table = r
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(h.table));
    if table != u32::from(RouteHeader::RT_TABLE_MAIN)
        || h.source_prefix_length != 0
        || h.tos != 0
        || h.flags.contains(RouteFlags::Cloned)
    {
        return None;
    }
    let dst = r
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Destination(d) => route_ip(d),
            _ => None,
        })
        .unwrap_or(match family {
            AddressFamily::Inet => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            _ => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        });
    let mut metric = 0;
    let mut mtu = None;
    let mut oif = None;
    let mut multipath = None;
    for a in &r.attributes {
        match a {
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::Oif(o) => oif = Some(*o),
            RouteAttribute::MultiPath(m) => multipath = Some(m),
            RouteAttribute::Metrics(ms) => {
                for m in ms {
                    if let RouteMetric::Mtu(v) = m {
                        if *v != 0 {
                            mtu = Some(*v);
                        }
                    }
                }
            }
            _ => {}
        }
    }
    let target = match h.kind {
        RouteType::Unicast => {
            let hops: Vec<Hop> = match multipath {
                Some(nhs) => nhs
                    .iter()
                    .filter(|nh| !nh.flags.contains(RouteNextHopFlags::Dead))
                    .map(|nh| Hop {
                        ifindex: nh.interface_index,
                        gateway: gateway_of(&nh.attributes),
                    })
                    .collect(),
                None if h.flags.contains(RouteFlags::Dead) => Vec::new(),
                None => vec![Hop {
                    ifindex: oif?,
                    gateway: gateway_of(&r.attributes),
                }],
            };
            if hops.is_empty() {
                return None;
            }
            RouteTarget::Hops(hops)
        }
        RouteType::BlackHole | RouteType::Unreachable | RouteType::Prohibit | RouteType::Throw => {
            RouteTarget::Reject
        }
        _ => return None,
    };
    Some(Route {
        dst,
        prefix_len: h.destination_prefix_length,
        metric,
        mtu,
        target,
    })
}
