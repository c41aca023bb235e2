//! The route-based tunnel interface (`role = "tunnel"`): a veth pair the
//! data plane owns. The host end (`name`) is where routes point: what the
//! host itself sends there (a gateway's own traffic into a tunnel, every
//! app of a remote-access client) arrives on the data plane's end
//! (`name-dp`), where the XDP program steers it to the workers like LAN
//! traffic. Decrypted packets for one of the host's own addresses, or for
//! a destination the host routes into the tunnel, are sent back out of the
//! data plane's end, so the host's stack receives them on the host end.
//!
//! The host end is NOARP: the kernel then puts the host end's own MAC as the
//! destination of what it sends there, so no neighbour resolution is needed
//! in either direction.

use crate::afxdp;
use crate::nexthop::netlink::RtSocket;
use crate::nexthop::{Lookup, NextHopError, NextHopTable, Resolved};
use anyhow::{Context as _, Result};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::RouteNetlinkMessage;
use std::net::IpAddr;
use std::time::Duration;
use xdpsec_api::config::{tunnel_peer_name, Deliver};

const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NETLINK_TIMEOUT: Duration = Duration::from_secs(2);

/// What the workers need to send into the tunnel: both ends' indexes. The
/// MACs and the MTU are read from the next-hop snapshot, so they follow
/// changes like any other interface's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelPort {
    /// The host's end, where routes point.
    pub host_ifindex: u32,
    /// The data plane's end, with the XDP program and the AF_XDP sockets.
    pub peer_ifindex: u32,
    /// Hand every decrypted packet to the host (`deliver = "all"`).
    pub all: bool,
}

impl TunnelPort {
    /// Where a decrypted packet for `dst` goes if the tunnel takes it: into
    /// the host's stack when `dst` is one of the host's addresses, or when
    /// the host's route for `dst` points into the tunnel (`lookup` is that
    /// route's answer). `None` leaves the packet to `lookup`.
    pub fn inbound_hop(
        &self,
        table: &NextHopTable,
        dst: IpAddr,
        lookup: &Lookup,
    ) -> Option<Resolved> {
        let routed_here = match lookup {
            Lookup::Resolved(hop) => hop.ifindex == self.host_ifindex,
            Lookup::Miss(miss) => miss
                .neighbour
                .is_some_and(|n| n.ifindex == self.host_ifindex),
        };
        if !self.all && !routed_here && !table.is_local(dst) {
            return None;
        }
        let host = table.interface(self.host_ifindex)?;
        let peer = table.interface(self.peer_ifindex)?;
        Some(Resolved {
            ifindex: self.peer_ifindex,
            src_mac: peer.mac?,
            dst_mac: host.mac?,
            mtu: host.mtu.min(peer.mtu),
            next_hop: dst,
        })
    }
}

/// A tunnel interface the data plane created; dropping it deletes the pair
/// (and with it every route that points into it).
#[derive(Debug)]
pub struct TunnelInterface {
    name: String,
    peer_name: String,
    port: TunnelPort,
}

/// Whether the data plane may create its tunnel interface `name` here:
/// nothing has that name, or a pair a previous run left (which it
/// replaces). Anything else by that name belongs to someone else.
pub fn check_name_free(name: &str) -> Result<(), String> {
    let peer_name = tunnel_peer_name(name);
    if afxdp::ifindex(name).is_ok() && afxdp::ifindex(&peer_name).is_err() {
        return Err(format!(
            "interface {name} exists and is not a tunnel pair a data plane made (no \
             {peer_name}); choose another name for the tunnel interface"
        ));
    }
    Ok(())
}

impl TunnelInterface {
    /// Creates the veth pair `name` / `name-dp` with `queues` queues each
    /// (one per worker), the host end NOARP and without TX checksum offload
    /// (AF_XDP would get its unfinished checksums), both up. A pair left by
    /// a previous run that did not stop cleanly is replaced.
    pub fn create(name: &str, queues: u32, deliver: Deliver) -> Result<Self> {
        let peer_name = tunnel_peer_name(name);
        let mut sock = RtSocket::open(NETLINK_TIMEOUT)?;
        if let Ok(existing) = afxdp::ifindex(name) {
            check_name_free(name).map_err(anyhow::Error::msg)?;
            tracing::warn!("replacing the tunnel interface {name} a previous run left");
            delete_link(&mut sock, existing)
                .with_context(|| format!("deleting the stale tunnel interface {name}"))?;
        }
        let queues = queues.max(1);
        let mut peer = LinkMessage::default();
        peer.attributes.extend([
            LinkAttribute::IfName(peer_name.clone()),
            LinkAttribute::NumTxQueues(queues),
            LinkAttribute::NumRxQueues(queues),
        ]);
        let mut host = LinkMessage::default();
        host.attributes.extend([
            LinkAttribute::IfName(name.to_string()),
            LinkAttribute::NumTxQueues(queues),
            LinkAttribute::NumRxQueues(queues),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
            ]),
        ]);
        sock.request(
            RouteNetlinkMessage::NewLink(host),
            NLM_F_CREATE | NLM_F_EXCL,
            "creating the tunnel veth pair (RTM_NEWLINK)",
        )
        .with_context(|| format!("creating the tunnel interface {name} / {peer_name}"))?;
        let port = TunnelPort {
            host_ifindex: afxdp::ifindex(name)
                .with_context(|| format!("{name} is gone right after it was created"))?,
            peer_ifindex: afxdp::ifindex(&peer_name)
                .with_context(|| format!("{peer_name} is gone right after it was created"))?,
            all: deliver == Deliver::All,
        };
        let tunnel = TunnelInterface {
            name: name.to_string(),
            peer_name,
            port,
        };
        afxdp::disable_tx_checksum_offload(name)
            .with_context(|| format!("turning off TX checksum offload on {name}"))?;
        set_flags(
            &mut sock,
            port.host_ifindex,
            LinkFlags::Up | LinkFlags::Noarp,
            LinkFlags::Up | LinkFlags::Noarp,
        )
        .with_context(|| format!("bringing {name} up"))?;
        set_flags(&mut sock, port.peer_ifindex, LinkFlags::Up, LinkFlags::Up)
            .with_context(|| format!("bringing {} up", tunnel.peer_name))?;
        tracing::info!(
            "tunnel interface {} up (data plane end {}, {queues} queue(s))",
            tunnel.name,
            tunnel.peer_name
        );
        Ok(tunnel)
    }

    /// The host's end, where routes point.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The data plane's end, where XDP and the AF_XDP sockets go.
    pub fn peer_name(&self) -> &str {
        &self.peer_name
    }

    pub fn port(&self) -> TunnelPort {
        self.port
    }
}

impl Drop for TunnelInterface {
    fn drop(&mut self) {
        let deleted = RtSocket::open(NETLINK_TIMEOUT)
            .and_then(|mut sock| delete_link(&mut sock, self.port.host_ifindex));
        if let Err(e) = deleted {
            tracing::error!("could not delete the tunnel interface {}: {e}", self.name);
        }
    }
}

fn set_flags(
    sock: &mut RtSocket,
    ifindex: u32,
    flags: LinkFlags,
    mask: LinkFlags,
) -> Result<(), NextHopError> {
    let mut msg = LinkMessage::default();
    msg.header.index = ifindex;
    msg.header.flags = flags;
    msg.header.change_mask = mask;
    sock.request(
        RouteNetlinkMessage::SetLink(msg),
        0,
        "setting link flags (RTM_SETLINK)",
    )
}

fn delete_link(sock: &mut RtSocket, ifindex: u32) -> Result<(), NextHopError> {
    let mut msg = LinkMessage::default();
    msg.header.index = ifindex;
    sock.request(
        RouteNetlinkMessage::DelLink(msg),
        0,
        "deleting a link (RTM_DELLINK)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nexthop::{Hop, Interface, Mac, Route, RouteTarget, TableBuilder};

    const LAN: u32 = 2;
    const HOST_END: u32 = 7;
    const DP_END: u32 = 8;
    const HOST_MAC: Mac = [2, 0, 0, 0, 7, 7];
    const DP_MAC: Mac = [2, 0, 0, 0, 8, 8];

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn iface(ifindex: u32, mac: Mac, mtu: u32) -> Interface {
        Interface {
            ifindex,
            name: format!("if{ifindex}"),
            mac: Some(mac),
            mtu,
            up: true,
        }
    }

    fn route(dst: &str, len: u8, ifindex: u32) -> Route {
        Route {
            dst: ip(dst),
            prefix_len: len,
            metric: 0,
            mtu: None,
            target: RouteTarget::Hops(vec![Hop {
                ifindex,
                gateway: None,
            }]),
        }
    }

    fn table() -> NextHopTable {
        let mut b = TableBuilder::new();
        b.interface(iface(LAN, [2, 0, 0, 0, 2, 2], 1500))
            .interface(iface(HOST_END, HOST_MAC, 1500))
            .interface(iface(DP_END, DP_MAC, 1400))
            .route(route("10.1.0.0", 24, LAN))
            .route(route("0.0.0.0", 0, HOST_END));
        b.build(1)
            .with_local_addresses(vec![ip("10.1.0.1"), ip("fd00:1::1")])
    }

    const PORT: TunnelPort = TunnelPort {
        host_ifindex: HOST_END,
        peer_ifindex: DP_END,
        all: false,
    };

    fn hop(t: &NextHopTable, dst: &str) -> Option<Resolved> {
        let dst = ip(dst);
        PORT.inbound_hop(t, dst, &t.lookup(None, dst))
    }

    #[test]
    fn the_hosts_own_addresses_go_into_the_tunnel() {
        let t = table();
        for dst in ["10.1.0.1", "fd00:1::1"] {
            let hop = hop(&t, dst).unwrap_or_else(|| panic!("{dst} not taken"));
            assert_eq!(hop.ifindex, DP_END);
            assert_eq!(hop.src_mac, DP_MAC);
            assert_eq!(hop.dst_mac, HOST_MAC);
            assert_eq!(hop.mtu, 1400);
        }
    }

    #[test]
    fn destinations_routed_into_the_tunnel_go_into_it() {
        // The default route points at the host end (a remote-access client).
        let hop = hop(&table(), "10.9.9.9").expect("routed into the tunnel");
        assert_eq!((hop.ifindex, hop.dst_mac), (DP_END, HOST_MAC));
    }

    #[test]
    fn deliver_all_hands_everything_to_the_host() {
        let t = table();
        let all = TunnelPort { all: true, ..PORT };
        for dst in ["10.1.0.2", "fd00:9::1"] {
            let dst = ip(dst);
            let hop = all.inbound_hop(&t, dst, &t.lookup(None, dst));
            assert_eq!(hop.map(|h| h.ifindex), Some(DP_END), "{dst}");
        }
    }

    #[test]
    fn other_destinations_are_left_to_their_routes() {
        // On the LAN, not local: the LAN's next hop decides.
        assert_eq!(hop(&table(), "10.1.0.2"), None);
        assert_eq!(hop(&table(), "fd00:9::1"), None);
    }
}
