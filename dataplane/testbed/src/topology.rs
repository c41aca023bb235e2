//! The project's standard topology:
//!
//! ```text
//!  hostA            gwA                          gwB            hostB
//!  eth0 ------- lan0   wan0 ---- underlay ---- wan0   lan0 ------- eth0
//!  10.1.0.2     10.1.0.1  198.18.0.1/30  198.18.0.2  10.2.0.1     10.2.0.2
//!  fd00:1::2    fd00:1::1 fd00:18::1/64  fd00:18::2  fd00:2::1    fd00:2::2
//! ```
//!
//! [`TopologyOptions`] can give every veth several queues (one per data-plane
//! worker) and can put the underlay through a bridge in a fifth namespace
//! (`{prefix}-wire`, see [`UnderlayTap`]): the gateways' own underlay
//! interfaces show a capture nothing that AF_XDP sends or that XDP redirects,
//! so packets on the underlay can only be watched from in between.
//!
//! The hosts route everything through their gateway. The gateways know only
//! their connected networks: the far inner network is what the VPN carries
//! ([`StandardTopology::route_inner_in_clear`] adds plain routes for a
//! baseline without it).

use crate::{LinkInfo, Netns, Result, Testbed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One interface of the topology with its addresses.
#[derive(Debug, Clone)]
pub struct Iface {
    /// Interface name inside its namespace.
    pub name: String,
    /// Interface index inside its namespace.
    pub ifindex: u32,
    /// MAC address.
    pub mac: [u8; 6],
    /// IPv4 address.
    pub ipv4: Ipv4Addr,
    /// IPv4 prefix length.
    pub ipv4_prefix: u8,
    /// IPv6 address.
    pub ipv6: Ipv6Addr,
    /// IPv6 prefix length.
    pub ipv6_prefix: u8,
}

/// An end host: one interface towards its gateway.
#[derive(Debug, Clone)]
pub struct Host {
    /// Its namespace.
    pub ns: Netns,
    /// Its interface (`eth0`).
    pub eth: Iface,
}

/// A gateway: an inside (LAN) and an outside (WAN, underlay) interface.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// Its namespace.
    pub ns: Netns,
    /// Towards its host (`lan0`).
    pub lan: Iface,
    /// Towards the other gateway (`wan0`).
    pub wan: Iface,
}

/// How [`crate::Testbed::standard_topology_with`] builds the topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopologyOptions {
    /// RX and TX queues of every veth end (`numrxqueues`/`numtxqueues`);
    /// 1 is the kernel's default.
    pub queues: u32,
    /// Put the underlay through a bridge in namespace `{prefix}-wire`, where
    /// it can be captured ([`StandardTopology::underlay`]).
    pub underlay_tap: bool,
}

impl Default for TopologyOptions {
    fn default() -> Self {
        TopologyOptions {
            queues: 1,
            underlay_tap: false,
        }
    }
}

/// The namespace in the middle of the underlay when
/// [`TopologyOptions::underlay_tap`] is set: a bridge (`br0`; no addresses,
/// and IPv6, STP and multicast snooping off, so it sends nothing itself)
/// joining a port towards each gateway. Capturing on a port sees every frame
/// between the gateways.
#[derive(Debug, Clone)]
pub struct UnderlayTap {
    /// The namespace (`{prefix}-wire`).
    pub ns: Netns,
    /// The bridge port whose peer is gateway A's `wan0`.
    pub port_a: String,
    /// The bridge port whose peer is gateway B's `wan0`.
    pub port_b: String,
}

/// host A - gateway A - underlay - gateway B - host B, four namespaces
/// (`{prefix}-hostA`, `-gwA`, `-gwB`, `-hostB`) joined by three veth pairs.
#[derive(Debug, Clone)]
pub struct StandardTopology {
    /// Host A, on 10.1.0.0/24 and fd00:1::/64.
    pub host_a: Host,
    /// Gateway A.
    pub gw_a: Gateway,
    /// Gateway B.
    pub gw_b: Gateway,
    /// Host B, on 10.2.0.0/24 and fd00:2::/64.
    pub host_b: Host,
    /// The capture point in the underlay, if asked for.
    pub underlay: Option<UnderlayTap>,
}

impl StandardTopology {
    /// Adds plain (unencrypted) routes between the inner networks on both
    /// gateways, for a baseline without the VPN.
    pub fn route_inner_in_clear(&self) -> Result<()> {
        let a = &self.gw_a;
        let b = &self.gw_b;
        a.ns.add_route("10.2.0.0/24", b.wan.ipv4.into())?;
        a.ns.add_route("fd00:2::/64", b.wan.ipv6.into())?;
        b.ns.add_route("10.1.0.0/24", a.wan.ipv4.into())?;
        b.ns.add_route("fd00:1::/64", a.wan.ipv6.into())?;
        Ok(())
    }
}

fn iface(ns: &Netns, link: LinkInfo, v4: (Ipv4Addr, u8), v6: (Ipv6Addr, u8)) -> Result<Iface> {
    ns.add_addr(&link.name, IpAddr::V4(v4.0), v4.1)?;
    ns.add_addr(&link.name, IpAddr::V6(v6.0), v6.1)?;
    Ok(Iface {
        name: link.name,
        ifindex: link.ifindex,
        mac: link.mac,
        ipv4: v4.0,
        ipv4_prefix: v4.1,
        ipv6: v6.0,
        ipv6_prefix: v6.1,
    })
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().expect("a valid literal")
}

pub(crate) fn build(tb: &Testbed, options: &TopologyOptions) -> Result<StandardTopology> {
    let host_a = tb.add_netns("hostA")?;
    let gw_a = tb.add_netns("gwA")?;
    let gw_b = tb.add_netns("gwB")?;
    let host_b = tb.add_netns("hostB")?;
    let q = options.queues;

    let (ha_eth, ga_lan) = tb.add_veth_with_queues(&host_a, "eth0", &gw_a, "lan0", q)?;
    let (ga_wan, gb_wan, underlay) = if options.underlay_tap {
        let wire = tb.add_netns("wire")?;
        // The bridge must not send router solicitations or MLD reports of
        // its own into the capture.
        wire.sysctl(&[
            ("net.ipv6.conf.all.disable_ipv6", "1"),
            ("net.ipv6.conf.default.disable_ipv6", "1"),
        ])?;
        let (port_a, port_b) = ("to_gwA", "to_gwB");
        let (ga_wan, _) = tb.add_veth_with_queues(&gw_a, "wan0", &wire, port_a, q)?;
        let (gb_wan, _) = tb.add_veth_with_queues(&gw_b, "wan0", &wire, port_b, q)?;
        // No STP and no multicast snooping: the bridge sends no frame itself
        // (snooping would join 224.0.0.106 with IGMP).
        wire.ip([
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
            "mcast_snooping",
            "0",
        ])?;
        for port in [port_a, port_b] {
            wire.ip(["link", "set", port, "master", "br0"])?;
        }
        wire.ip(["link", "set", "br0", "up"])?;
        let tap = UnderlayTap {
            ns: wire,
            port_a: port_a.to_string(),
            port_b: port_b.to_string(),
        };
        (ga_wan, gb_wan, Some(tap))
    } else {
        let (ga_wan, gb_wan) = tb.add_veth_with_queues(&gw_a, "wan0", &gw_b, "wan0", q)?;
        (ga_wan, gb_wan, None)
    };
    let (gb_lan, hb_eth) = tb.add_veth_with_queues(&gw_b, "lan0", &host_b, "eth0", q)?;

    let ha_eth = iface(
        &host_a,
        ha_eth,
        (Ipv4Addr::new(10, 1, 0, 2), 24),
        (v6("fd00:1::2"), 64),
    )?;
    let ga_lan = iface(
        &gw_a,
        ga_lan,
        (Ipv4Addr::new(10, 1, 0, 1), 24),
        (v6("fd00:1::1"), 64),
    )?;
    let ga_wan = iface(
        &gw_a,
        ga_wan,
        (Ipv4Addr::new(198, 18, 0, 1), 30),
        (v6("fd00:18::1"), 64),
    )?;
    let gb_wan = iface(
        &gw_b,
        gb_wan,
        (Ipv4Addr::new(198, 18, 0, 2), 30),
        (v6("fd00:18::2"), 64),
    )?;
    let gb_lan = iface(
        &gw_b,
        gb_lan,
        (Ipv4Addr::new(10, 2, 0, 1), 24),
        (v6("fd00:2::1"), 64),
    )?;
    let hb_eth = iface(
        &host_b,
        hb_eth,
        (Ipv4Addr::new(10, 2, 0, 2), 24),
        (v6("fd00:2::2"), 64),
    )?;

    host_a.add_route("default", ga_lan.ipv4.into())?;
    host_a.add_route("default", ga_lan.ipv6.into())?;
    host_b.add_route("default", gb_lan.ipv4.into())?;
    host_b.add_route("default", gb_lan.ipv6.into())?;

    Ok(StandardTopology {
        host_a: Host {
            ns: host_a,
            eth: ha_eth,
        },
        gw_a: Gateway {
            ns: gw_a,
            lan: ga_lan,
            wan: ga_wan,
        },
        gw_b: Gateway {
            ns: gw_b,
            lan: gb_lan,
            wan: gb_wan,
        },
        host_b: Host {
            ns: host_b,
            eth: hb_eth,
        },
        underlay,
    })
}
