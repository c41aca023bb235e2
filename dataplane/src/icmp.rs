//! ICMP "fragmentation needed" (RFC 792 type 3 code 4, with the next-hop MTU
//! of RFC 1191) and ICMPv6 "packet too big" (RFC 4443 section 3.2), built in
//! place around the packet they answer: the new headers go into the headroom
//! in front of it and the quote is the packet itself, cut to length, so no
//! byte of it is copied. And the per-worker token bucket that limits them.

use crate::wire::{checksum, ip_proto, ipv4, ipv6};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::time::Instant;

/// ICMP header: type, code, checksum, 4 bytes of type-specific data.
pub const HEADER_LEN: usize = 8;
/// Bytes an ICMP error for IPv4 puts in front of the quote.
pub const V4_OVERHEAD: usize = ipv4::MIN_HEADER_LEN + HEADER_LEN;
/// Bytes an ICMPv6 error puts in front of the quote.
pub const V6_OVERHEAD: usize = ipv6::HEADER_LEN + HEADER_LEN;
/// An IPv4 ICMP error is at most 576 bytes (RFC 1812 section 4.3.2.3).
const V4_MAX: usize = 576;
/// An ICMPv6 error is at most the minimum MTU (RFC 4443 section 2.4 (c)).
const V6_MAX: usize = 1280;
/// TTL / hop limit of the errors the gateway sends.
const TTL: u8 = 64;
/// DSCP CS6 (internetwork control), as routers send their ICMP.
const TOS_CS6: u8 = 0xc0;

/// Turns the IPv4 packet at `buf[l3..l3 + len]` into an ICMP "fragmentation
/// needed" from `src` to its sender announcing `mtu`, in place, and returns
/// where the ICMP packet is. `None` when RFC 1812 section 4.3.2.7 forbids an
/// error (the packet is itself an ICMP error, a non-first fragment, or from
/// an address that is no single host), or there is no room in front.
pub fn frag_needed_v4(
    buf: &mut [u8],
    l3: usize,
    len: usize,
    mtu: u32,
    src: Ipv4Addr,
) -> Option<Range<usize>> {
    let original = ipv4::Packet::new_checked(buf.get(l3..l3.checked_add(len)?)?).ok()?;
    let to = original.src_addr();
    if to.is_unspecified() || to.is_broadcast() || to.is_multicast() || to.is_loopback() {
        return None;
    }
    if original.frag_offset() != 0 || is_icmp_error(original.protocol(), original.payload(), false)
    {
        return None;
    }
    let start = l3.checked_sub(V4_OVERHEAD)?;
    let quote = len
        .min(usize::from(original.total_len()))
        .min(V4_MAX - V4_OVERHEAD);
    let end = l3 + quote;
    let icmp_len = HEADER_LEN + quote;
    ipv4::Repr {
        src,
        dst: to,
        protocol: ip_proto::ICMP,
        payload_len: icmp_len,
        ttl: TTL,
        dscp_ecn: TOS_CS6,
        ident: 0,
        dont_frag: false,
    }
    .emit(&mut buf[start..end])
    .ok()?;
    let icmp = start + ipv4::MIN_HEADER_LEN;
    let mtu = u16::try_from(mtu).unwrap_or(u16::MAX).to_be_bytes();
    buf[icmp..icmp + HEADER_LEN].copy_from_slice(&[3, 4, 0, 0, 0, 0, mtu[0], mtu[1]]);
    let sum = checksum::finish(checksum::add(0, &buf[icmp..end]));
    buf[icmp + 2..icmp + 4].copy_from_slice(&sum.to_be_bytes());
    Some(start..end)
}

/// Turns the IPv6 packet at `buf[l3..l3 + len]` into an ICMPv6 "packet too
/// big" from `src` to its sender announcing `mtu`, in place; `None` when
/// RFC 4443 section 2.4 (e) forbids it (an ICMPv6 error, or a sender that
/// is unspecified or multicast) or there is no room in front.
pub fn packet_too_big_v6(
    buf: &mut [u8],
    l3: usize,
    len: usize,
    mtu: u32,
    src: Ipv6Addr,
) -> Option<Range<usize>> {
    let original = ipv6::Packet::new_checked(buf.get(l3..l3.checked_add(len)?)?).ok()?;
    let to = original.src_addr();
    if to.is_unspecified() || to.is_multicast() || to.is_loopback() {
        return None;
    }
    if is_icmp_error(original.next_header(), original.payload(), true) {
        return None;
    }
    let start = l3.checked_sub(V6_OVERHEAD)?;
    let quote = len.min(original.total_len()).min(V6_MAX - V6_OVERHEAD);
    let end = l3 + quote;
    let icmp_len = HEADER_LEN + quote;
    ipv6::Repr {
        src,
        dst: to,
        next_header: ip_proto::ICMPV6,
        payload_len: icmp_len,
        hop_limit: TTL,
        traffic_class: TOS_CS6,
        flow_label: 0,
    }
    .emit(&mut buf[start..end])
    .ok()?;
    let icmp = start + ipv6::HEADER_LEN;
    let mut head = [2, 0, 0, 0, 0, 0, 0, 0];
    head[4..].copy_from_slice(&mtu.to_be_bytes());
    buf[icmp..icmp + HEADER_LEN].copy_from_slice(&head);
    let pseudo = checksum::pseudo_header_v6(&src, &to, ip_proto::ICMPV6, icmp_len as u32);
    let sum = checksum::finish(checksum::add(pseudo, &buf[icmp..end]));
    buf[icmp + 2..icmp + 4].copy_from_slice(&sum.to_be_bytes());
    Some(start..end)
}

/// Whether an IP payload of `protocol` is an ICMP (or ICMPv6) error, about
/// which no error may be sent. Informational messages (echo and the like)
/// are not errors.
fn is_icmp_error(protocol: u8, payload: &[u8], v6: bool) -> bool {
    match (v6, protocol, payload.first()) {
        // ICMPv6: types below 128 are errors.
        (true, ip_proto::ICMPV6, Some(&kind)) => kind < 128,
        // ICMP: unreachable, source quench, redirect, time exceeded,
        // parameter problem.
        (false, ip_proto::ICMP, Some(&kind)) => matches!(kind, 3 | 4 | 5 | 11 | 12),
        _ => false,
    }
}

/// The gateway's own addresses per interface: where its ICMP errors come
/// from (the interface the error leaves by, as a router answers).
#[derive(Debug, Clone, Default)]
pub struct SourceAddrs {
    v4: Vec<(u32, Ipv4Addr)>,
    v6: Vec<(u32, Ipv6Addr)>,
}

impl SourceAddrs {
    /// From (interface index, address) pairs: per interface the first
    /// IPv4 address and the first IPv6 address that is not link-local
    /// (a link-local one if there is nothing else).
    pub fn new(addrs: impl IntoIterator<Item = (u32, std::net::IpAddr)>) -> SourceAddrs {
        let mut out = SourceAddrs::default();
        let mut link_local = Vec::new();
        for (ifindex, addr) in addrs {
            match addr {
                std::net::IpAddr::V4(a) if out.v4(ifindex).is_none() => out.v4.push((ifindex, a)),
                std::net::IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80 => {
                    link_local.push((ifindex, a))
                }
                std::net::IpAddr::V6(a) if out.v6(ifindex).is_none() => out.v6.push((ifindex, a)),
                _ => {}
            }
        }
        for (ifindex, a) in link_local {
            if out.v6(ifindex).is_none() {
                out.v6.push((ifindex, a));
            }
        }
        out
    }

    pub fn v4(&self, ifindex: u32) -> Option<Ipv4Addr> {
        self.v4.iter().find(|(i, _)| *i == ifindex).map(|(_, a)| *a)
    }

    pub fn v6(&self, ifindex: u32) -> Option<Ipv6Addr> {
        self.v6.iter().find(|(i, _)| *i == ifindex).map(|(_, a)| *a)
    }
}

/// A token bucket: `rate` tokens a second, at most `rate` saved up. One
/// per worker, so it needs no atomics.
#[derive(Debug, Clone)]
pub struct RateLimit {
    /// Nanoseconds of credit one token costs; 0 when nothing may be sent.
    cost_ns: u64,
    burst_ns: u64,
    credit_ns: u64,
    last: Instant,
}

impl RateLimit {
    /// `rate` per second; 0 allows nothing. Starts full.
    pub fn new(rate: u32, now: Instant) -> RateLimit {
        let cost_ns = if rate == 0 {
            0
        } else {
            1_000_000_000 / u64::from(rate)
        };
        let burst_ns = cost_ns.saturating_mul(u64::from(rate));
        RateLimit {
            cost_ns,
            burst_ns,
            credit_ns: burst_ns,
            last: now,
        }
    }

    /// Takes a token if there is one.
    pub fn allow(&mut self, now: Instant) -> bool {
        if self.cost_ns == 0 {
            return false;
        }
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now.max(self.last);
        let earned = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.credit_ns = self.credit_ns.saturating_add(earned).min(self.burst_ns);
        if self.credit_ns >= self.cost_ns {
            self.credit_ns -= self.cost_ns;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const HOST: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
    const GW: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);

    /// A UDP packet from the LAN host, `len` bytes, at offset 64 of a buffer.
    fn v4_packet(len: usize, protocol: u8, frag: u16) -> Vec<u8> {
        let mut buf = vec![0u8; 64 + len];
        ipv4::Repr {
            src: HOST,
            dst: Ipv4Addr::new(10, 2, 0, 2),
            protocol,
            payload_len: len - 20,
            ttl: 64,
            dscp_ecn: 0,
            ident: 77,
            dont_frag: true,
        }
        .emit(&mut buf[64..])
        .unwrap();
        for (i, b) in buf[84..].iter_mut().enumerate() {
            *b = i as u8;
        }
        if frag != 0 {
            buf[64 + 6..64 + 8].copy_from_slice(&frag.to_be_bytes());
            ipv4::Packet::new_unchecked(&mut buf[64..]).fill_checksum();
        }
        buf
    }

    #[test]
    fn frag_needed_quotes_the_packet_with_valid_checksums() {
        let mut buf = v4_packet(1500, ip_proto::UDP, 0);
        let original = buf[64..64 + 548].to_vec();
        let r = frag_needed_v4(&mut buf, 64, 1500, 1443, GW).unwrap();
        assert_eq!(r, 36..64 + 548, "576 bytes, the quote in place");
        let ip = ipv4::Packet::new_checked(&buf[r.clone()]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!((ip.src_addr(), ip.dst_addr()), (GW, HOST));
        assert_eq!(ip.protocol(), ip_proto::ICMP);
        assert_eq!(usize::from(ip.total_len()), 576);
        let icmp = ip.payload();
        assert_eq!(&icmp[..2], &[3, 4]);
        assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1443);
        assert_eq!(checksum::data(icmp), 0xffff, "ICMP checksum verifies");
        assert_eq!(&icmp[8..], &original[..]);

        // A short packet is quoted whole.
        let mut small = v4_packet(100, ip_proto::UDP, 0);
        let r = frag_needed_v4(&mut small, 64, 100, 1000, GW).unwrap();
        assert_eq!(r.len(), 128);
    }

    #[test]
    fn no_error_about_errors_fragments_or_non_hosts() {
        let mut icmp_error = v4_packet(100, ip_proto::ICMP, 0);
        icmp_error[84] = 3;
        assert_eq!(frag_needed_v4(&mut icmp_error, 64, 100, 1000, GW), None);
        let mut echo = v4_packet(100, ip_proto::ICMP, 0);
        echo[84] = 8;
        assert!(frag_needed_v4(&mut echo, 64, 100, 1000, GW).is_some());
        let mut later_fragment = v4_packet(100, ip_proto::UDP, 0x2010);
        assert_eq!(frag_needed_v4(&mut later_fragment, 64, 100, 1000, GW), None);
        let mut from_nobody = v4_packet(100, ip_proto::UDP, 0);
        from_nobody[64 + 12..64 + 16].copy_from_slice(&[0, 0, 0, 0]);
        ipv4::Packet::new_unchecked(&mut from_nobody[64..]).fill_checksum();
        assert_eq!(frag_needed_v4(&mut from_nobody, 64, 100, 1000, GW), None);
        // No headroom, or a range outside the buffer.
        let mut tight = v4_packet(100, ip_proto::UDP, 0);
        assert_eq!(frag_needed_v4(&mut tight[40..], 24, 100, 1000, GW), None);
        assert_eq!(frag_needed_v4(&mut tight, 64, 1000, 1000, GW), None);
    }

    #[test]
    fn packet_too_big_quotes_up_to_1280_bytes_with_a_valid_checksum() {
        let host: Ipv6Addr = "fd00:1::2".parse().unwrap();
        let gw: Ipv6Addr = "fd00:1::1".parse().unwrap();
        let mut buf = vec![0u8; 64 + 1500];
        ipv6::Repr {
            src: host,
            dst: "fd00:2::2".parse().unwrap(),
            next_header: ip_proto::ICMPV6,
            payload_len: 1460,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
        }
        .emit(&mut buf[64..])
        .unwrap();
        buf[104] = 128; // echo request: not an error
        let r = packet_too_big_v6(&mut buf, 64, 1500, 1443, gw).unwrap();
        assert_eq!(r, 16..64 + 1232);
        let ip = ipv6::Packet::new_checked(&buf[r.clone()]).unwrap();
        assert_eq!((ip.src_addr(), ip.dst_addr()), (gw, host));
        assert_eq!(ip.total_len(), 1280);
        let icmp = ip.payload();
        assert_eq!(icmp[0], 2);
        assert_eq!(
            u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]]),
            1443
        );
        let pseudo = checksum::pseudo_header_v6(&gw, &host, ip_proto::ICMPV6, icmp.len() as u32);
        assert_eq!(checksum::fold(checksum::add(pseudo, icmp)), 0xffff);

        // About an ICMPv6 error: nothing.
        let mut err = buf.clone();
        ipv6::Repr {
            src: host,
            dst: "fd00:2::2".parse().unwrap(),
            next_header: ip_proto::ICMPV6,
            payload_len: 100,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
        }
        .emit(&mut err[64..])
        .unwrap();
        err[104] = 1;
        assert_eq!(packet_too_big_v6(&mut err, 64, 140, 1280, gw), None);
    }

    #[test]
    fn source_addresses_prefer_global_ipv6() {
        let ll: std::net::IpAddr = "fe80::1".parse().unwrap();
        let ula: std::net::IpAddr = "fd00:1::1".parse().unwrap();
        let s = SourceAddrs::new([
            (3, ll),
            (3, GW.into()),
            (3, ula),
            (3, Ipv4Addr::new(10, 9, 9, 9).into()),
            (4, ll),
        ]);
        assert_eq!(s.v4(3), Some(GW));
        assert_eq!(s.v6(3), Some("fd00:1::1".parse().unwrap()));
        assert_eq!(s.v6(4), Some("fe80::1".parse().unwrap()));
        assert_eq!(s.v4(4), None);
    }

    #[test]
    fn rate_limit_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut limit = RateLimit::new(10, t0);
        let burst = (0..100).filter(|_| limit.allow(t0)).count();
        assert_eq!(burst, 10);
        assert!(!limit.allow(t0));
        // 100 ms later: one more token.
        let t1 = t0 + Duration::from_millis(100);
        assert!(limit.allow(t1));
        assert!(!limit.allow(t1));
        // Long idle: back to a full burst, not more.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..100).filter(|_| limit.allow(t2)).count(), 10);
        let mut never = RateLimit::new(0, t0);
        assert!(!never.allow(t0 + Duration::from_secs(5)));
    }
}
