//! What a worker does to one frame, without I/O: find the policy or the SA,
//! run the ESP transform in place, and put the next hop's Ethernet header in
//! front. The worker owns the rings; this module owns the decisions, so it
//! can be tested on plain buffers.
//!
//! A frame arrives as `buf[start..start + len]` with headroom before `start`
//! and tailroom after the end; the result names the bytes to transmit and
//! the interface to send them on.

use crate::batch_memo::BatchMemo;
use crate::esp::{self, EspError};
use crate::fragment;
use crate::icmp::{self, RateLimit, SourceAddrs};
use crate::l4_checksum::{self, Outcome};
use crate::mss;
use crate::nexthop::{Lookup, MissReason, NeighbourKey, NextHopTable, Resolved, Resolver};
use crate::pmtu::{self, MIN_PMTU_V6};
use crate::reassembly::{FragDrop, Reassembly};
use crate::sa::{DfPolicy, OutboundSa};
use crate::stats::{Event, WorkerStatsCell};
use crate::tables::{PathDrop, SaStats, Snapshot, Verdict};
use crate::tunnel::TunnelPort;
use crate::wire::{checksum, ethernet, ip_proto, ipv4, ipv6, udp};
use std::net::IpAddr;
use std::ops::Range;
use std::time::{Duration, Instant};

/// Transmit `buf[range]` on interface `ifindex`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub range: Range<usize>,
    pub ifindex: u32,
    /// `range` is the first fragment of an outer packet; the others are
    /// to be written into frames of their own from this plan (each behind
    /// a copy of the first's Ethernet header).
    pub fragments: Option<fragment::Plan>,
    /// The next hop's neighbour entry is being resolved: `range` is the IP
    /// packet without its Ethernet header, to wait in the worker's
    /// [`crate::neighbour_queue`] (with the path MTU its lookup gave).
    pub awaiting: Option<(NeighbourKey, u32)>,
}

/// Where a packet goes next.
#[derive(Debug, Clone, Copy)]
enum Hop {
    /// Everything for its Ethernet header is known.
    Ready(Resolved),
    /// The kernel is resolving the neighbour (asked by [`hop_or_drop`]);
    /// the packet waits for it.
    Awaiting { neighbour: NeighbourKey, mtu: u32 },
}

impl Hop {
    fn mtu(&self) -> u32 {
        match self {
            Hop::Ready(hop) => hop.mtu,
            Hop::Awaiting { mtu, .. } => *mtu,
        }
    }

    fn ifindex(&self) -> u32 {
        match self {
            Hop::Ready(hop) => hop.ifindex,
            Hop::Awaiting { neighbour, .. } => neighbour.ifindex,
        }
    }

    /// The transmit of the IP packet at `ip` towards this hop: with its
    /// Ethernet header when the hop is ready, bare while it is awaited.
    fn transmit(&self, buf: &mut [u8], ip: Range<usize>) -> Result<Transmit, Dropped> {
        let (range, awaiting) = match self {
            Hop::Ready(hop) => (with_ethernet(buf, ip, hop)?, None),
            Hop::Awaiting { neighbour, mtu } => (ip, Some((*neighbour, *mtu))),
        };
        Ok(Transmit {
            range,
            ifindex: self.ifindex(),
            fragments: None,
            awaiting,
        })
    }
}

/// Why a frame was dropped. Counted per worker; drops that belong to an SA
/// are also counted on the SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Not IPv4 or IPv6, or its IP header is broken.
    NotIp,
    /// Outer headers of an ESP packet are broken, or it is not ESP.
    MalformedOuter,
    /// An outbound packet no policy covers (the XDP program and the tables
    /// disagree for a moment after an update).
    NoPolicy,
    /// A policy says drop, or its SA is gone.
    PolicyDrop,
    /// TTL or hop limit would reach 0.
    TtlExpired,
    /// The TX ring of the outgoing interface was full.
    TxRingFull,
    /// The next hop is on an interface the data plane does not serve.
    NotOurInterface,
    Esp(EspError),
    NextHop(MissReason),
    /// An inner packet did not fit the tunnel and its sender could not be
    /// told: the ICMP rate limit was reached, no error may be sent about
    /// it (RFC 1812 / RFC 4443 rules), or the gateway has no address on
    /// the interface towards the sender.
    TooBigNoIcmp,
    /// An ICMP message from the underlay that is not a well-formed "too
    /// big" about one of our SAs' outer packets.
    IcmpNotForAnSa,
    /// No free frame for the second or a later outer fragment.
    NoFrameForFragment,
    /// The packet's next hop is being resolved and its queue (or the
    /// worker's, see [`crate::neighbour_queue`]) has no room for it (and
    /// all its outer fragments).
    NeighbourQueueFull,
    /// An outer fragment (or the datagram it belongs to) was refused.
    Fragment(FragDrop),
}

impl Dropped {
    /// Every reason's counter slot: [`Dropped::index`] is below this.
    pub const COUNT: usize = 7 + EspError::COUNT + MissReason::COUNT + 4 + FragDrop::ALL.len();

    pub fn index(self) -> usize {
        match self {
            Dropped::NotIp => 0,
            Dropped::MalformedOuter => 1,
            Dropped::NoPolicy => 2,
            Dropped::PolicyDrop => 3,
            Dropped::TtlExpired => 4,
            Dropped::TxRingFull => 5,
            Dropped::NotOurInterface => 6,
            Dropped::Esp(e) => 7 + e.index(),
            Dropped::NextHop(m) => 7 + EspError::COUNT + m.index(),
            Dropped::TooBigNoIcmp => 7 + EspError::COUNT + MissReason::COUNT,
            Dropped::IcmpNotForAnSa => 8 + EspError::COUNT + MissReason::COUNT,
            Dropped::NoFrameForFragment => 9 + EspError::COUNT + MissReason::COUNT,
            Dropped::NeighbourQueueFull => 10 + EspError::COUNT + MissReason::COUNT,
            Dropped::Fragment(f) => 11 + EspError::COUNT + MissReason::COUNT + f.index(),
        }
    }

    /// Every reason, in index order.
    pub fn all() -> impl Iterator<Item = Dropped> {
        [
            Dropped::NotIp,
            Dropped::MalformedOuter,
            Dropped::NoPolicy,
            Dropped::PolicyDrop,
            Dropped::TtlExpired,
            Dropped::TxRingFull,
            Dropped::NotOurInterface,
        ]
        .into_iter()
        .chain(EspError::ALL.into_iter().map(Dropped::Esp))
        .chain(MissReason::ALL.into_iter().map(Dropped::NextHop))
        .chain([
            Dropped::TooBigNoIcmp,
            Dropped::IcmpNotForAnSa,
            Dropped::NoFrameForFragment,
            Dropped::NeighbourQueueFull,
        ])
        .chain(FragDrop::ALL.into_iter().map(Dropped::Fragment))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Dropped::NotIp => "not_ip",
            Dropped::MalformedOuter => "malformed_outer",
            Dropped::NoPolicy => "no_policy",
            Dropped::PolicyDrop => "policy_drop",
            Dropped::TtlExpired => "ttl_expired",
            Dropped::TxRingFull => "tx_ring_full",
            Dropped::NotOurInterface => "next_hop_not_on_a_data_plane_interface",
            Dropped::Esp(e) => e.as_str(),
            Dropped::NextHop(m) => m.as_str(),
            Dropped::TooBigNoIcmp => "too_big_no_icmp_sent",
            Dropped::IcmpNotForAnSa => "icmp_not_for_an_sa",
            Dropped::NoFrameForFragment => "no_frame_for_fragment",
            Dropped::NeighbourQueueFull => "neighbour_queue_full",
            Dropped::Fragment(f) => f.as_str(),
        }
    }
}

/// A soft lifetime (or nearly used sequence space) an SA reached, for the
/// control side to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftExpiry {
    pub spi: u32,
    pub outbound: bool,
    pub event: crate::sa::LifetimeEvent,
}

/// What one frame needs from the rest of the data plane.
#[derive(Debug)]
pub struct Context<'a> {
    pub tables: &'a Snapshot,
    pub next_hops: &'a NextHopTable,
    pub resolver: &'a Resolver,
    pub now: Instant,
    /// Lower the MSS of outbound TCP SYNs to what fits the tunnel
    /// (`[dataplane] mss_clamp`).
    pub mss_clamp: bool,
    /// The route-based tunnel interface, if the config has one: decrypted
    /// traffic for the host goes back into it.
    pub tunnel: Option<TunnelPort>,
    /// Fragment the outer packet of an inner IPv4 packet without DF that
    /// does not fit (`[dataplane] outer_fragmentation`).
    pub outer_fragmentation: bool,
    /// How long a learned path MTU holds (`[dataplane] pmtu_timeout_secs`).
    pub pmtu_hold: Duration,
    /// The gateway's addresses, the sources of its ICMP errors.
    pub sources: &'a SourceAddrs,
    /// The worker's own counters, for what is neither a forward nor a drop.
    pub events: &'a WorkerStatsCell,
    /// Next hops and SA counts learned earlier in the batch
    /// (`BatchMemo::default()` for each new batch).
    pub memo: BatchMemo<'a>,
}

/// A worker's own mutable state that the pipeline uses.
#[derive(Debug)]
pub struct Local {
    /// The worker's index: which RFC 9611 per-resource SA it sends on.
    pub worker: usize,
    /// Limits the ICMP errors this worker sends.
    pub icmp_limit: RateLimit,
    /// Outer fragments waiting for the rest of their datagram.
    pub reassembly: Reassembly,
}

/// Where [`inbound`] writes a reassembled datagram in the frame: its
/// Ethernet header after this much room, so the ESP transform's view of the
/// buffer is the same as for a packet that came whole.
const REASSEMBLED_AT: usize = 64;

/// A LAN frame that a policy may protect: encapsulate and send to the peer.
/// On success also returns a soft expiry to report, if this packet reached one.
///
/// An inner packet larger than the SA's inner MTU (the path MTU less ESP's
/// worst-case overhead) is either carried in outer fragments (IPv4 without
/// DF, when `outer_fragmentation` is on) or answered with an ICMP "too big"
/// to its sender, which is what the returned frame then holds.
pub fn outbound<'a>(
    ctx: &Context<'a>,
    local: &mut Local,
    buf: &mut [u8],
    start: usize,
    len: usize,
) -> Result<(Transmit, Option<SoftExpiry>), Dropped> {
    let (l3, inner_len) = ip_after_ethernet(buf, start, len)?;
    let (src, dst) = ip_addresses(&buf[l3..l3 + inner_len]).ok_or(Dropped::NotIp)?;
    let tables: &'a Snapshot = ctx.tables;
    let protection = match tables.outbound_verdict(src, dst) {
        Verdict::Protect(protection) => protection,
        Verdict::Bypass => return bypass(ctx, buf, l3, inner_len, dst),
        Verdict::Drop => return Err(Dropped::PolicyDrop),
        Verdict::NoPolicy => return Err(Dropped::NoPolicy),
    };
    let entry = protection.for_worker(local.worker);
    // Before MSS clamping: its RFC 1624 update is right on a full checksum
    // but turns a partial one into garbage (l4_checksum's tests show it).
    finish_checksum(
        ctx,
        &mut buf[l3..l3 + inner_len],
        Event::ChecksumFinishedOutbound,
    );
    // The next hop is looked up before sealing so its MTU is known for the
    // size check and MSS clamping; a miss is still reported only after the
    // ESP transform, so the drop reasons and counters stay the same.
    let towards = entry.sa.remote();
    let hop = resolve(ctx, towards);
    let mut fragment_to = None;
    if let Ok(hop) = &hop {
        let path_mtu = entry.stats.pmtu.effective(hop.mtu(), ctx.now);
        let inner_mtu = mss::inner_mtu(path_mtu, entry.sa.headroom());
        if inner_len > inner_mtu as usize {
            match oversize(ctx, &entry.sa, &buf[l3..l3 + inner_len], inner_mtu) {
                Oversize::FragmentOuter => fragment_to = Some(path_mtu as usize),
                Oversize::TellSender(mtu) => {
                    entry.stats.add_path_drop(PathDrop::InnerMtuExceeded);
                    return too_big(ctx, local, buf, l3, inner_len, mtu, src);
                }
            }
        }
        if ctx.mss_clamp {
            mss::clamp(&mut buf[l3..l3 + inner_len], inner_mtu);
        }
    }
    decrement_ttl(&mut buf[l3..l3 + inner_len])?;
    let sealed = esp::encapsulate(&entry.sa, buf, l3, inner_len).map_err(|e| {
        entry.stats.add_esp_drop(e);
        Dropped::Esp(e)
    })?;
    let expiry = sealed.event.map(|event| SoftExpiry {
        spi: entry.sa.spi(),
        outbound: true,
        event,
    });
    let mut outer = sealed.range;
    let mut plan = None;
    if let Some(mtu) = fragment_to {
        // IPv6 needs a Fragment header identification; the sequence number
        // is unique per SA, the SPI tells SAs between one pair apart.
        let ident = (sealed.seq as u32) ^ entry.sa.spi().rotate_left(16);
        if let Some((first, rest)) = fragment::first_in_place(buf, outer.clone(), mtu, ident) {
            outer = first;
            plan = Some(rest);
            ctx.events.event(Event::OuterFragmented);
        }
    }
    let (mut transmit, expiry) =
        forward(ctx, buf, outer, hop, &entry.stats, inner_len as u64, expiry)?;
    transmit.fragments = plan;
    Ok((transmit, expiry))
}

/// A packet a bypass policy lets through, inside a protected prefix: the
/// XDP program steers by destination prefix, not by policy, and a frame
/// cannot go back to the kernel from here, so it is forwarded in
/// cleartext as the kernel would (TTL - 1, next hop).
fn bypass(
    ctx: &Context<'_>,
    buf: &mut [u8],
    l3: usize,
    len: usize,
    dst: IpAddr,
) -> Result<(Transmit, Option<SoftExpiry>), Dropped> {
    // As after encryption: nothing past XDP would finish it.
    finish_checksum(ctx, &mut buf[l3..l3 + len], Event::ChecksumFinishedOutbound);
    decrement_ttl(&mut buf[l3..l3 + len])?;
    let hop = resolve_inbound(ctx, dst)?;
    let transmit = hop.transmit(buf, l3..l3 + len)?;
    ctx.events.event(Event::BypassForwarded);
    Ok((transmit, None))
}

/// Finishes the partial TCP/UDP checksum of the inner packet `packet`, if
/// it has one, counting `finished` (see [`l4_checksum`]).
#[inline]
fn finish_checksum(ctx: &Context<'_>, packet: &mut [u8], finished: Event) {
    match l4_checksum::finish(packet) {
        Outcome::Finished => ctx.events.event(finished),
        Outcome::AlreadyValid => ctx.events.event(Event::ChecksumPartialLookalike),
        Outcome::Skipped | Outcome::NoChecksum | Outcome::NotPartial => {}
    }
}

/// What to do with an inner packet that does not fit the tunnel.
enum Oversize {
    /// Carry it in outer fragments.
    FragmentOuter,
    /// Drop it and send its sender an ICMP "too big" with this MTU.
    TellSender(u32),
}

fn oversize(ctx: &Context<'_>, sa: &OutboundSa, packet: &[u8], inner_mtu: u32) -> Oversize {
    if packet[0] >> 4 == 6 {
        // IPv6 hosts never go below 1280 (RFC 8200 section 5): a packet up
        // to that is carried in outer fragments when the path is narrower.
        if packet.len() <= MIN_PMTU_V6 as usize {
            return Oversize::FragmentOuter;
        }
        return Oversize::TellSender(inner_mtu.max(MIN_PMTU_V6));
    }
    let df = packet.len() > 6 && packet[6] & 0x40 != 0;
    if df || !ctx.outer_fragmentation || sa.df() == DfPolicy::Set {
        Oversize::TellSender(inner_mtu)
    } else {
        Oversize::FragmentOuter
    }
}

/// Turns the inner packet at `buf[l3..l3 + len]` into an ICMP "too big" to
/// `sender` announcing `mtu`, from the gateway's address on the interface
/// towards the sender.
fn too_big(
    ctx: &Context<'_>,
    local: &mut Local,
    buf: &mut [u8],
    l3: usize,
    len: usize,
    mtu: u32,
    sender: IpAddr,
) -> Result<(Transmit, Option<SoftExpiry>), Dropped> {
    let hop = resolve_inbound(ctx, sender)?;
    let icmp = match sender {
        IpAddr::V4(_) => ctx
            .sources
            .v4(hop.ifindex())
            .and_then(|from| icmp::frag_needed_v4(buf, l3, len, mtu, from)),
        IpAddr::V6(_) => ctx
            .sources
            .v6(hop.ifindex())
            .and_then(|from| icmp::packet_too_big_v6(buf, l3, len, mtu, from)),
    };
    let icmp = icmp.ok_or(Dropped::TooBigNoIcmp)?;
    if !local.icmp_limit.allow(ctx.now) {
        return Err(Dropped::TooBigNoIcmp);
    }
    let transmit = hop.transmit(buf, icmp)?;
    ctx.events.event(Event::IcmpTooBigSent);
    Ok((transmit, None))
}

/// A WAN frame the XDP program took for ESP: decapsulate and send the inner
/// packet towards its destination. An outer fragment goes into the
/// reassembly table (`Ok(None)` while its datagram is incomplete); an ICMP
/// "too big" about one of our outer packets sets that SA's path MTU
/// (`Ok(None)`: nothing to send).
pub fn inbound<'a>(
    ctx: &Context<'a>,
    local: &mut Local,
    buf: &mut [u8],
    start: usize,
    len: usize,
) -> Result<Option<(Transmit, Option<SoftExpiry>)>, Dropped> {
    let (l3, ip_len) = ip_after_ethernet(buf, start, len)?;
    let packet = &buf[l3..l3 + ip_len];
    match outer_kind(packet) {
        OuterKind::Packet => decapsulate(ctx, buf, l3, ip_len).map(Some),
        OuterKind::Icmp => {
            learn_path_mtu(ctx, packet)?;
            Ok(None)
        }
        OuterKind::Fragment => {
            ctx.events.event(Event::FragmentReceived);
            let Some(datagram) = local
                .reassembly
                .insert(ctx.now, packet)
                .map_err(Dropped::Fragment)?
            else {
                return Ok(None);
            };
            let at = REASSEMBLED_AT + ethernet::HEADER_LEN;
            let target = buf
                .get_mut(at..at + datagram.len())
                .ok_or(Dropped::Fragment(FragDrop::TooLarge))?;
            target.copy_from_slice(datagram);
            let ethertype = match datagram[0] >> 4 {
                6 => ethernet::ethertype::IPV6,
                _ => ethernet::ethertype::IPV4,
            };
            buf[at - 2..at].copy_from_slice(&ethertype.to_be_bytes());
            ctx.events.event(Event::Reassembled);
            let len = datagram.len();
            decapsulate(ctx, buf, at, len).map(Some)
        }
    }
}

/// What the XDP program may steer to a worker from the outside.
enum OuterKind {
    /// A whole ESP (or ESP-in-UDP) packet, or anything else to refuse.
    Packet,
    /// An ICMP or ICMPv6 message.
    Icmp,
    /// An IPv4 fragment or an IPv6 packet with a Fragment header.
    Fragment,
}

fn outer_kind(packet: &[u8]) -> OuterKind {
    match packet.first().map(|b| b >> 4) {
        Some(4) => match ipv4::Packet::new_checked(packet) {
            Ok(ip) if ip.is_fragment() => OuterKind::Fragment,
            Ok(ip) if ip.protocol() == ip_proto::ICMP => OuterKind::Icmp,
            _ => OuterKind::Packet,
        },
        Some(6) => match packet.get(ipv6::field::NEXT_HEADER) {
            Some(&ip_proto::IPV6_FRAGMENT) => OuterKind::Fragment,
            Some(&ip_proto::ICMPV6) => OuterKind::Icmp,
            _ => OuterKind::Packet,
        },
        _ => OuterKind::Packet,
    }
}

/// An ICMP "too big" from the underlay: the outbound SA whose packet it
/// quotes (SPI, both tunnel addresses and the encapsulation must match)
/// gets the reported path MTU.
fn learn_path_mtu(ctx: &Context<'_>, packet: &[u8]) -> Result<(), Dropped> {
    let report = pmtu::parse_too_big(packet).map_err(|_| Dropped::IcmpNotForAnSa)?;
    let entry = ctx
        .tables
        .outbound_sa(report.spi)
        .filter(|e| {
            e.sa.local() == report.local
                && e.sa.remote() == report.remote
                && e.sa.udp_encap().is_some() == report.udp
        })
        .ok_or(Dropped::IcmpNotForAnSa)?;
    entry
        .stats
        .pmtu
        .learn(report.mtu, report.local.is_ipv6(), ctx.now, ctx.pmtu_hold);
    ctx.events.event(Event::PathMtuLearned);
    Ok(())
}

/// The ESP packet in the outer IP packet at `buf[l3..l3 + ip_len]`:
/// decapsulate it and send the inner packet towards its destination.
fn decapsulate<'a>(
    ctx: &Context<'a>,
    buf: &mut [u8],
    l3: usize,
    ip_len: usize,
) -> Result<(Transmit, Option<SoftExpiry>), Dropped> {
    let esp_range = esp_in_outer(&buf[l3..l3 + ip_len]).ok_or(Dropped::MalformedOuter)?;
    let esp_range = l3 + esp_range.start..l3 + esp_range.end;
    let spi_bytes = buf
        .get(esp_range.start..esp_range.start + 4)
        .ok_or(Dropped::Esp(EspError::Truncated))?;
    let spi = u32::from_be_bytes([spi_bytes[0], spi_bytes[1], spi_bytes[2], spi_bytes[3]]);
    let tables: &'a Snapshot = ctx.tables;
    let entry = tables
        .inbound(spi)
        .ok_or(Dropped::Esp(EspError::UnknownSpi))?;
    let opened = esp::decapsulate(&entry.sa, &mut buf[esp_range.clone()]).map_err(|e| {
        entry.stats.add_esp_drop(e);
        Dropped::Esp(e)
    })?;
    let inner = esp_range.start + opened.range.start..esp_range.start + opened.range.end;
    decrement_ttl(&mut buf[inner.clone()])?;
    let (_, dst) = ip_addresses(&buf[inner.clone()]).ok_or(Dropped::NotIp)?;
    let expiry = opened.event.map(|event| SoftExpiry {
        spi,
        outbound: false,
        event,
    });
    // A peer that does not finish its hosts' partial checksums (an older
    // xdpsec; anything that encrypts what a veth hands it) would otherwise
    // have this LAN's hosts drop its TCP and UDP. The packet is
    // authenticated, so a partial value in it is what the far host wrote,
    // not damage on the way; finishing costs a header read when the peer
    // did its job.
    finish_checksum(ctx, &mut buf[inner.clone()], Event::ChecksumFinishedInbound);
    let inner_len = inner.len() as u64;
    // No MSS clamping here: the inbound SA does not know the outbound
    // path's MTU or overhead. A peer gateway that clamps its own outbound
    // SYNs (as this one does) covers the SYN-ACKs and SYNs arriving here; a
    // peer that does not leaves this LAN's full-size segments to PMTU.
    let hop = resolve_inbound(ctx, dst);
    forward(ctx, buf, inner, hop, &entry.stats, inner_len, expiry)
}

/// The tail both directions share: the next hop (as [`resolve`] found it),
/// its Ethernet header in front of the IP packet at `ip`, and the packet
/// counted on its SA.
fn forward<'a>(
    ctx: &Context<'a>,
    buf: &mut [u8],
    ip: Range<usize>,
    hop: Result<Hop, Dropped>,
    stats: &'a SaStats,
    carried_bytes: u64,
    expiry: Option<SoftExpiry>,
) -> Result<(Transmit, Option<SoftExpiry>), Dropped> {
    let hop = hop.inspect_err(|dropped| {
        stats.add_path_drop(match dropped {
            Dropped::NextHop(MissReason::NoRoute | MissReason::Unreachable) => PathDrop::NoRoute,
            _ => PathDrop::NoNeighbour,
        })
    })?;
    let transmit = hop.transmit(buf, ip)?;
    ctx.memo.carried(stats, carried_bytes, ctx.now);
    Ok((transmit, expiry))
}

/// For one-armed gateways, where both directions arrive on one port:
/// whether a frame is ESP (or ESP in UDP) rather than cleartext to protect,
/// or an outer fragment or ICMP message to one of the SAs' tunnel
/// addresses (what the XDP program steers from the outside).
pub fn looks_like_esp(tables: &Snapshot, frame: &[u8]) -> bool {
    let Ok((l3, len)) = ip_after_ethernet(frame, 0, frame.len()) else {
        return false;
    };
    let Some(packet) = frame.get(l3..l3 + len) else {
        return false;
    };
    match outer_kind(packet) {
        OuterKind::Packet => esp_in_outer(packet).is_some(),
        OuterKind::Fragment | OuterKind::Icmp => {
            ip_addresses(packet).is_some_and(|(_, dst)| tables.is_tunnel_local(dst))
        }
    }
}

/// The IP packet of an Ethernet frame (one 802.1Q tag allowed): its offset
/// and its length by its own header (Ethernet padding excluded).
fn ip_after_ethernet(buf: &[u8], start: usize, len: usize) -> Result<(usize, usize), Dropped> {
    let frame = buf.get(start..start + len).ok_or(Dropped::NotIp)?;
    let eth = ethernet::Frame::new_checked(frame).map_err(|_| Dropped::NotIp)?;
    let (mut ethertype, mut l3) = (eth.ethertype(), ethernet::HEADER_LEN);
    if ethertype == ethernet::ethertype::VLAN {
        let tag = frame.get(16..18).ok_or(Dropped::NotIp)?;
        ethertype = u16::from_be_bytes([tag[0], tag[1]]);
        l3 += 4;
    }
    let packet = &frame[l3.min(frame.len())..];
    let ip_len = match ethertype {
        ethernet::ethertype::IPV4 => {
            let ip = ipv4::Packet::new_checked(packet).map_err(|_| Dropped::NotIp)?;
            usize::from(ip.total_len())
        }
        ethernet::ethertype::IPV6 => {
            let ip = ipv6::Packet::new_checked(packet).map_err(|_| Dropped::NotIp)?;
            ip.total_len()
        }
        _ => return Err(Dropped::NotIp),
    };
    Ok((start + l3, ip_len))
}

fn ip_addresses(packet: &[u8]) -> Option<(IpAddr, IpAddr)> {
    match packet.first()? >> 4 {
        4 => {
            let ip = ipv4::Packet::new_checked(packet).ok()?;
            Some((ip.src_addr().into(), ip.dst_addr().into()))
        }
        6 => {
            let ip = ipv6::Packet::new_checked(packet).ok()?;
            Some((ip.src_addr().into(), ip.dst_addr().into()))
        }
        _ => None,
    }
}

/// Where the ESP packet is in an outer IP packet: after the IP header, or
/// after the UDP header of ESP in UDP (RFC 3948). Fragments are refused:
/// [`inbound`] reassembles them first.
fn esp_in_outer(packet: &[u8]) -> Option<Range<usize>> {
    let (protocol, l4) = match packet.first()? >> 4 {
        4 => {
            let ip = ipv4::Packet::new_checked(packet).ok()?;
            if ip.is_fragment() {
                return None;
            }
            (ip.protocol(), ip.header_len()..usize::from(ip.total_len()))
        }
        6 => {
            let ip = ipv6::Packet::new_checked(packet).ok()?;
            (ip.next_header(), ipv6::HEADER_LEN..ip.total_len())
        }
        _ => return None,
    };
    match protocol {
        ip_proto::ESP => Some(l4),
        ip_proto::UDP => {
            let datagram = udp::Packet::new_checked(packet.get(l4.clone())?).ok()?;
            let payload = datagram.payload();
            let is_esp = datagram.dst_port() == udp::NAT_T_PORT
                && udp::classify_nat_t(payload) == udp::NatTPayload::Esp;
            is_esp.then(|| l4.end - payload.len()..l4.end)
        }
        _ => None,
    }
}

/// A router's TTL / hop-limit decrement, with the IPv4 checksum updated
/// incrementally (RFC 1624) rather than recomputed.
fn decrement_ttl(packet: &mut [u8]) -> Result<(), Dropped> {
    match packet.first().map(|b| b >> 4) {
        Some(4) if packet.len() >= ipv4::MIN_HEADER_LEN => {
            let ttl = packet[8];
            if ttl <= 1 {
                return Err(Dropped::TtlExpired);
            }
            packet[8] = ttl - 1;
            // The TTL is the high byte of the 16-bit word it shares with the
            // protocol: that word drops by 0x0100.
            let old = u16::from_be_bytes([packet[10], packet[11]]);
            let sum = checksum::add_u16(u64::from(!old), 0xfeff);
            let new = !checksum::fold(sum);
            packet[10..12].copy_from_slice(&new.to_be_bytes());
            Ok(())
        }
        Some(6) if packet.len() >= ipv6::HEADER_LEN => {
            let hops = packet[7];
            if hops <= 1 {
                return Err(Dropped::TtlExpired);
            }
            packet[7] = hops - 1;
            Ok(())
        }
        _ => Err(Dropped::NotIp),
    }
}

fn resolve(ctx: &Context<'_>, dst: IpAddr) -> Result<Hop, Dropped> {
    hop_or_drop(ctx, lookup(ctx, dst))
}

/// The next-hop table's answer for `dst`, remembered for the batch when it
/// is a usable hop (a miss is asked again: its packet may be held).
#[inline]
fn lookup(ctx: &Context<'_>, dst: IpAddr) -> Lookup {
    if let Some(hop) = ctx.memo.hop(dst) {
        return Lookup::Resolved(hop);
    }
    let found = ctx.next_hops.lookup(None, dst);
    if let Lookup::Resolved(hop) = found {
        ctx.memo.remember_hop(dst, hop);
    }
    found
}

/// [`resolve`] for decrypted packets: what is for the host itself goes into
/// the tunnel interface, if there is one.
fn resolve_inbound(ctx: &Context<'_>, dst: IpAddr) -> Result<Hop, Dropped> {
    let lookup = lookup(ctx, dst);
    if let Some(hop) = ctx
        .tunnel
        .and_then(|t| t.inbound_hop(ctx.next_hops, dst, &lookup))
    {
        return Ok(Hop::Ready(hop));
    }
    hop_or_drop(ctx, lookup)
}

/// The hop of a lookup. A neighbour the kernel does not know yet, or is
/// resolving, is asked for and awaited, as the kernel's own ARP/ND queue
/// does; one it failed to resolve drops the packet.
fn hop_or_drop(ctx: &Context<'_>, lookup: Lookup) -> Result<Hop, Dropped> {
    match lookup {
        Lookup::Resolved(hop) => Ok(Hop::Ready(hop)),
        Lookup::Miss(miss) => {
            // Off the hot path's clock: a bounded try_send the resolver
            // thread drains; a full queue only means this one is not asked.
            ctx.resolver.request(&miss);
            match (miss.reason, miss.neighbour, miss.mtu) {
                (
                    MissReason::NeighbourUnknown | MissReason::NeighbourIncomplete,
                    Some(neighbour),
                    Some(mtu),
                ) => Ok(Hop::Awaiting { neighbour, mtu }),
                _ => Err(Dropped::NextHop(miss.reason)),
            }
        }
    }
}

/// Writes the next hop's Ethernet header in front of the IP packet at `ip`
/// and returns the frame's range.
pub fn with_ethernet(
    buf: &mut [u8],
    ip: Range<usize>,
    hop: &Resolved,
) -> Result<Range<usize>, Dropped> {
    let start = ip
        .start
        .checked_sub(ethernet::HEADER_LEN)
        .ok_or(Dropped::Esp(EspError::NoHeadroom))?;
    let ethertype = match buf.get(ip.start).map(|b| b >> 4) {
        Some(6) => ethernet::ethertype::IPV6,
        _ => ethernet::ethertype::IPV4,
    };
    let mut eth = ethernet::Frame::new_unchecked(&mut buf[start..ip.end]);
    eth.set_dst_addr(hop.dst_mac);
    eth.set_src_addr(hop.src_mac);
    eth.set_ethertype(ethertype);
    Ok(start..ip.end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_decrement_keeps_the_ipv4_checksum_valid() {
        for ttl in [2u8, 64, 255] {
            let mut packet = vec![0u8; 28];
            ipv4::Repr {
                src: [10, 1, 0, 2].into(),
                dst: [10, 2, 0, 2].into(),
                protocol: 17,
                payload_len: 8,
                ttl,
                dscp_ecn: 0,
                ident: 7,
                dont_frag: true,
            }
            .emit(&mut packet)
            .unwrap();
            decrement_ttl(&mut packet).unwrap();
            let ip = ipv4::Packet::new_checked(&packet[..]).unwrap();
            assert_eq!(ip.ttl(), ttl - 1);
            assert!(
                ip.verify_checksum(),
                "checksum after TTL {ttl} -> {}",
                ttl - 1
            );
        }
    }

    #[test]
    fn ttl_of_one_is_not_forwarded() {
        let mut v6 = vec![0u8; 40];
        v6[0] = 0x60;
        v6[7] = 1;
        assert_eq!(decrement_ttl(&mut v6), Err(Dropped::TtlExpired));
        assert_eq!(decrement_ttl(&mut [0u8; 3]), Err(Dropped::NotIp));
    }

    #[test]
    fn drop_indices_are_dense_and_unique() {
        let all: Vec<Dropped> = Dropped::all().collect();
        assert_eq!(all.len(), Dropped::COUNT);
        for (i, d) in all.iter().enumerate() {
            assert_eq!(d.index(), i, "{d:?}");
        }
    }
}

#[cfg(test)]
#[path = "pipeline_mtu_tests.rs"]
mod mtu_tests;
