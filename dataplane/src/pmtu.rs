//! Path MTU of an outbound SA: the outer interface's MTU as the workers last
//! saw it, and a smaller MTU learned from an ICMP "too big" about one of the
//! SA's outer packets (RFC 1191, RFC 8201), which holds for a configurable
//! time and never goes below the family's floor (576 for IPv4, 1280 for
//! IPv6).
//!
//! The state is relaxed atomics shared by every worker that sends on the SA:
//! a worker reads two of them per packet and writes only when something
//! changed, so the cache line stays shared in the normal case.

use crate::mss;
use crate::wire::{checksum, ip_proto, ipv4, ipv6, udp};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use xdpsec_api::messages::SaMtu;

/// The smallest path MTU learned for an IPv4 outer path: an ICMP claiming
/// less is taken as this (RFC 1191 section 3 allows 68; 576 is what every
/// IPv4 host must accept and what Linux's `min_pmtu` defaults to).
pub const MIN_PMTU_V4: u32 = 576;
/// The smallest IPv6 link MTU (RFC 8200 section 5).
pub const MIN_PMTU_V6: u32 = 1280;

/// RFC 1191 section 7's plateaus, for a "fragmentation needed" from an old
/// router that leaves the next-hop MTU at zero.
const PLATEAUS: [u32; 10] = [32000, 17914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68];

/// One SA's path MTU state. Read for every packet; the counters beside it
/// in `SaStats` are written once per batch (`batch_memo`), so it needs no
/// cache lines of its own, which with 100,000 SAs would cost 180 bytes each.
#[derive(Debug)]
pub struct PathMtu {
    base: Instant,
    /// The outer interface's (or route's) MTU a worker last used; 0 before
    /// the first packet.
    link_mtu: AtomicU32,
    /// A learned path MTU; 0 for none.
    learned: AtomicU32,
    /// When `learned` stops holding, in ns after `base`.
    expires_ns: AtomicU64,
    updates: AtomicU64,
}

impl Default for PathMtu {
    fn default() -> Self {
        PathMtu::new()
    }
}

impl PathMtu {
    pub fn new() -> PathMtu {
        PathMtu {
            base: Instant::now(),
            link_mtu: AtomicU32::new(0),
            learned: AtomicU32::new(0),
            expires_ns: AtomicU64::new(0),
            updates: AtomicU64::new(0),
        }
    }

    fn ns(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The MTU outer packets must fit now: the learned one while it holds
    /// and is below the link's, else the link's.
    #[inline]
    pub fn effective(&self, link_mtu: u32, now: Instant) -> u32 {
        if self.link_mtu.load(Ordering::Relaxed) != link_mtu {
            self.link_mtu.store(link_mtu, Ordering::Relaxed);
        }
        let learned = self.learned.load(Ordering::Relaxed);
        if learned != 0
            && learned < link_mtu
            && self.ns(now) < self.expires_ns.load(Ordering::Relaxed)
        {
            learned
        } else {
            link_mtu
        }
    }

    /// An ICMP "too big" said the path takes `mtu` bytes. Lowers the path
    /// MTU (not below the floor of the outer family; a value at or above
    /// what is in force now only refreshes it, as a too-big cannot raise
    /// the MTU), holds it for `hold`. Returns the path MTU now in force.
    pub fn learn(&self, mtu: u32, outer_v6: bool, now: Instant, hold: Duration) -> u32 {
        let floor = if outer_v6 { MIN_PMTU_V6 } else { MIN_PMTU_V4 };
        let link = self.link_mtu.load(Ordering::Relaxed);
        let current = if link == 0 {
            u32::MAX
        } else {
            self.effective(link, now)
        };
        let mtu = mtu.max(floor);
        let until = self
            .ns(now)
            .saturating_add(u64::try_from(hold.as_nanos()).unwrap_or(u64::MAX));
        self.updates.fetch_add(1, Ordering::Relaxed);
        if mtu <= current {
            self.learned.store(mtu, Ordering::Relaxed);
            self.expires_ns.store(until, Ordering::Relaxed);
            mtu
        } else {
            current
        }
    }

    /// What `sa list` shows, for an SA whose encapsulation writes `headroom`
    /// bytes in front of the inner packet; `None` before the first packet.
    pub fn describe(&self, headroom: usize, now: Instant) -> Option<SaMtu> {
        let link_mtu = self.link_mtu.load(Ordering::Relaxed);
        if link_mtu == 0 {
            return None;
        }
        let path = self.effective(link_mtu, now);
        let learned = path < link_mtu;
        let expires_ms = learned.then(|| {
            self.expires_ns
                .load(Ordering::Relaxed)
                .saturating_sub(self.ns(now))
                / 1_000_000
        });
        Some(SaMtu {
            inner_mtu: mss::inner_mtu(path, headroom),
            link_mtu,
            path_mtu: learned.then_some(path),
            path_mtu_expires_ms: expires_ms,
            path_mtu_updates: self.updates.load(Ordering::Relaxed),
        })
    }
}

/// An ICMP "too big" from the underlay about one of our outer packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooBig {
    /// The MTU the reporting router gave (for IPv4 with no MTU, a plateau
    /// below the quoted packet's length).
    pub mtu: u32,
    /// Source of the quoted packet: our tunnel address.
    pub local: IpAddr,
    /// Destination of the quoted packet: the peer.
    pub remote: IpAddr,
    /// The SPI of the quoted ESP header.
    pub spi: u32,
    /// The quoted packet was ESP in UDP (RFC 3948).
    pub udp: bool,
}

/// Why an ICMP message that reached a worker changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotTooBig {
    /// Not an ICMP "fragmentation needed" / "packet too big", or its
    /// checksum is wrong, or it is cut short.
    Malformed,
    /// It quotes no ESP header (a non-first fragment, another protocol, or
    /// too little of the packet to reach the SPI).
    NoSpi,
}

/// Reads an ICMP "fragmentation needed" (type 3 code 4) or ICMPv6 "packet
/// too big" (type 2) in the IP packet `packet`, with the ESP (or ESP in UDP)
/// packet it quotes.
pub fn parse_too_big(packet: &[u8]) -> Result<TooBig, NotTooBig> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => too_big_v4(packet),
        Some(6) => too_big_v6(packet),
        _ => Err(NotTooBig::Malformed),
    }
}

fn too_big_v4(packet: &[u8]) -> Result<TooBig, NotTooBig> {
    let ip = ipv4::Packet::new_checked(packet).map_err(|_| NotTooBig::Malformed)?;
    if ip.protocol() != ip_proto::ICMP || ip.is_fragment() {
        return Err(NotTooBig::Malformed);
    }
    let icmp = ip.payload();
    if icmp.len() < 8 + ipv4::MIN_HEADER_LEN || icmp[0] != 3 || icmp[1] != 4 {
        return Err(NotTooBig::Malformed);
    }
    if checksum::data(icmp) != 0xffff {
        return Err(NotTooBig::Malformed);
    }
    let quoted = &icmp[8..];
    let ihl = usize::from(quoted[0] & 0x0f) * 4;
    if quoted[0] >> 4 != 4 || ihl < ipv4::MIN_HEADER_LEN || quoted.len() < ihl {
        return Err(NotTooBig::Malformed);
    }
    let q = ipv4::Packet::new_unchecked(quoted);
    if q.frag_offset() != 0 {
        return Err(NotTooBig::NoSpi);
    }
    let (spi, udp) = quoted_spi(q.protocol(), &quoted[ihl..])?;
    let mut mtu = u32::from(u16::from_be_bytes([icmp[6], icmp[7]]));
    if mtu == 0 {
        let quoted_len = u32::from(q.total_len());
        mtu = PLATEAUS
            .into_iter()
            .find(|&p| p < quoted_len)
            .unwrap_or(MIN_PMTU_V4);
    }
    Ok(TooBig {
        mtu,
        local: q.src_addr().into(),
        remote: q.dst_addr().into(),
        spi,
        udp,
    })
}

fn too_big_v6(packet: &[u8]) -> Result<TooBig, NotTooBig> {
    let ip = ipv6::Packet::new_checked(packet).map_err(|_| NotTooBig::Malformed)?;
    if ip.next_header() != ip_proto::ICMPV6 {
        return Err(NotTooBig::Malformed);
    }
    let icmp = ip.payload();
    if icmp.len() < 8 + ipv6::HEADER_LEN || icmp[0] != 2 || icmp[1] != 0 {
        return Err(NotTooBig::Malformed);
    }
    let len = u32::try_from(icmp.len()).map_err(|_| NotTooBig::Malformed)?;
    let sum = checksum::pseudo_header_v6(&ip.src_addr(), &ip.dst_addr(), ip_proto::ICMPV6, len);
    if checksum::fold(checksum::add(sum, icmp)) != 0xffff {
        return Err(NotTooBig::Malformed);
    }
    let quoted = &icmp[8..];
    let q = ipv6::Packet::new_unchecked(quoted);
    if q.version() != 6 {
        return Err(NotTooBig::Malformed);
    }
    let mut next = q.next_header();
    let mut l4 = &quoted[ipv6::HEADER_LEN..];
    if next == ip_proto::IPV6_FRAGMENT {
        // Our own first fragment: the ESP header follows the Fragment header.
        if l4.len() < 8 || u16::from_be_bytes([l4[2], l4[3]]) >> 3 != 0 {
            return Err(NotTooBig::NoSpi);
        }
        next = l4[0];
        l4 = &l4[8..];
    }
    let (spi, udp) = quoted_spi(next, l4)?;
    Ok(TooBig {
        mtu: u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]]),
        local: q.src_addr().into(),
        remote: q.dst_addr().into(),
        spi,
        udp,
    })
}

/// The SPI after the quoted IP header: right there for ESP, after the UDP
/// header for ESP in UDP.
fn quoted_spi(protocol: u8, l4: &[u8]) -> Result<(u32, bool), NotTooBig> {
    let (at, udp) = match protocol {
        ip_proto::ESP => (0, false),
        ip_proto::UDP => (udp::HEADER_LEN, true),
        _ => return Err(NotTooBig::NoSpi),
    };
    let b = l4.get(at..at + 4).ok_or(NotTooBig::NoSpi)?;
    let spi = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    // Zero is IKE's non-ESP marker, not an SPI.
    if spi == 0 {
        return Err(NotTooBig::NoSpi);
    }
    Ok((spi, udp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::icmp;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const HOLD: Duration = Duration::from_secs(600);

    #[test]
    fn learned_mtu_lowers_holds_and_expires() {
        let p = PathMtu::new();
        let t0 = Instant::now();
        assert_eq!(p.describe(36, t0), None, "nothing before the first packet");
        assert_eq!(p.effective(1500, t0), 1500);
        assert_eq!(p.learn(1280, false, t0, HOLD), 1280);
        assert_eq!(p.effective(1500, t0), 1280);
        let shown = p.describe(36, t0).unwrap();
        assert_eq!(shown.path_mtu, Some(1280));
        assert_eq!(shown.inner_mtu, 1280 - 36 - 21);
        // A larger report cannot raise it; a floor-breaking one is floored.
        assert_eq!(p.learn(1400, false, t0, HOLD), 1280);
        assert_eq!(p.learn(100, false, t0, HOLD), MIN_PMTU_V4);
        assert_eq!(p.effective(1500, t0), MIN_PMTU_V4);
        // A link MTU below the learned one wins.
        assert_eq!(p.effective(500, t0), 500);
        // It expires.
        let later = t0 + HOLD + Duration::from_secs(1);
        assert_eq!(p.effective(1500, later), 1500);
        assert_eq!(p.describe(36, later).unwrap().path_mtu, None);
        assert_eq!(p.describe(36, later).unwrap().path_mtu_updates, 3);
        let v6 = PathMtu::new();
        v6.effective(1500, t0);
        assert_eq!(v6.learn(600, true, t0, HOLD), MIN_PMTU_V6);
    }

    /// An outer ESP packet (optionally in UDP) from 198.18.0.1 to
    /// 198.18.0.2 with SPI `spi`, `len` bytes long.
    fn outer_v4(spi: u32, udp_encap: bool, len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        ipv4::Repr {
            src: Ipv4Addr::new(198, 18, 0, 1),
            dst: Ipv4Addr::new(198, 18, 0, 2),
            protocol: if udp_encap {
                ip_proto::UDP
            } else {
                ip_proto::ESP
            },
            payload_len: len - 20,
            ttl: 64,
            dscp_ecn: 0,
            ident: 9,
            dont_frag: true,
        }
        .emit(&mut p)
        .unwrap();
        let at = if udp_encap {
            p[20..22].copy_from_slice(&4500u16.to_be_bytes());
            p[22..24].copy_from_slice(&4500u16.to_be_bytes());
            28
        } else {
            20
        };
        p[at..at + 4].copy_from_slice(&spi.to_be_bytes());
        p
    }

    #[test]
    fn reads_a_router_s_frag_needed_about_our_esp() {
        for udp_encap in [false, true] {
            let quoted = outer_v4(0x1234_5678, udp_encap, 1500);
            // A router's error, built with the same builder the worker uses
            // towards LAN hosts (its checksum is verified by the parser).
            let mut buf = vec![0u8; 64];
            buf.extend_from_slice(&quoted);
            let range = icmp::frag_needed_v4(
                &mut buf,
                64,
                quoted.len(),
                1280,
                Ipv4Addr::new(198, 19, 0, 9),
            )
            .unwrap();
            let tb = parse_too_big(&buf[range.clone()]).unwrap();
            assert_eq!(
                tb,
                TooBig {
                    mtu: 1280,
                    local: Ipv4Addr::new(198, 18, 0, 1).into(),
                    remote: Ipv4Addr::new(198, 18, 0, 2).into(),
                    spi: 0x1234_5678,
                    udp: udp_encap,
                }
            );
            // A flipped bit fails the checksum.
            let mut bad = buf[range.clone()].to_vec();
            bad[40] ^= 1;
            assert_eq!(parse_too_big(&bad), Err(NotTooBig::Malformed));
            // Every truncation is refused without a panic.
            for len in 0..range.len() {
                let _ = parse_too_big(&buf[range.start..range.start + len]);
            }
        }
    }

    #[test]
    fn zero_mtu_takes_a_plateau_and_non_esp_is_refused() {
        let quoted = outer_v4(0x1000, false, 1500);
        let mut buf = vec![0u8; 64];
        buf.extend_from_slice(&quoted);
        let r = icmp::frag_needed_v4(&mut buf, 64, quoted.len(), 0, Ipv4Addr::new(198, 19, 0, 9))
            .unwrap();
        assert_eq!(parse_too_big(&buf[r]).unwrap().mtu, 1492);

        let mut tcp = outer_v4(0x1000, false, 60);
        tcp[9] = ip_proto::TCP;
        ipv4::Packet::new_unchecked(&mut tcp[..]).fill_checksum();
        let mut buf = vec![0u8; 64];
        buf.extend_from_slice(&tcp);
        let r = icmp::frag_needed_v4(&mut buf, 64, tcp.len(), 1280, Ipv4Addr::new(198, 19, 0, 9))
            .unwrap();
        assert_eq!(parse_too_big(&buf[r]), Err(NotTooBig::NoSpi));
    }

    #[test]
    fn reads_an_icmpv6_packet_too_big_about_our_esp() {
        let src: Ipv6Addr = "fd00:18::1".parse().unwrap();
        let dst: Ipv6Addr = "fd00:18::2".parse().unwrap();
        let mut quoted = vec![0u8; 1500];
        ipv6::Repr {
            src,
            dst,
            next_header: ip_proto::ESP,
            payload_len: 1460,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
        }
        .emit(&mut quoted)
        .unwrap();
        quoted[40..44].copy_from_slice(&0xabcdu32.to_be_bytes());
        let mut buf = vec![0u8; 64];
        buf.extend_from_slice(&quoted);
        let r = icmp::packet_too_big_v6(
            &mut buf,
            64,
            quoted.len(),
            1280,
            "fd00:19::9".parse().unwrap(),
        )
        .unwrap();
        let tb = parse_too_big(&buf[r]).unwrap();
        assert_eq!((tb.mtu, tb.spi, tb.udp), (1280, 0xabcd, false));
        assert_eq!((tb.local, tb.remote), (src.into(), dst.into()));
    }
}
