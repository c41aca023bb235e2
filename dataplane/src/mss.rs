//! TCP MSS clamping for packets that go through the tunnel.
//!
//! A LAN host with a 1500-byte MTU announces an MSS of 1460; once ESP is
//! added its full-size segments no longer fit the WAN path. The gateway
//! lowers the MSS option of SYN and SYN-ACK segments to what fits inside the
//! tunnel, like `iptables -j TCPMSS --clamp-mss-to-pmtu`.
//!
//! Pure functions over a packet buffer: the MSS is only ever lowered, the
//! TCP checksum is updated incrementally (RFC 1624), and anything that does
//! not parse cleanly (fragments, extension headers, malformed options) is
//! left alone.

use crate::esp;
use crate::wire::{checksum, ip_proto, ipv4, ipv6};

/// The TCP header without options.
const TCP_HEADER_LEN: usize = 20;
/// SYN in the TCP flags byte.
const TCP_SYN: u8 = 0x02;
/// TCP option kinds.
const OPT_END: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;
const OPT_MSS_LEN: usize = 4;

/// The largest inner IP packet that still fits a path of `path_mtu` bytes
/// after encapsulation with `headroom` bytes in front (outer IP, UDP if
/// encapsulated, ESP header, IV) and the worst-case ESP tail (padding,
/// trailer, ICV).
pub fn inner_mtu(path_mtu: u32, headroom: usize) -> u32 {
    let overhead = u32::try_from(headroom + esp::MAX_TAILROOM).unwrap_or(u32::MAX);
    path_mtu.saturating_sub(overhead)
}

/// Lowers the MSS option of a TCP SYN (or SYN-ACK) in the IP packet
/// `packet` so that a full-size segment fits an inner MTU of `inner_mtu`.
/// Returns whether the packet was changed.
pub fn clamp(packet: &mut [u8], inner_mtu: u32) -> bool {
    let Some((tcp_start, tcp_end, ip_header)) = tcp_segment(packet) else {
        return false;
    };
    let max_mss = inner_mtu.saturating_sub((ip_header + TCP_HEADER_LEN) as u32);
    let max_mss = u16::try_from(max_mss).unwrap_or(u16::MAX);
    clamp_segment(&mut packet[tcp_start..tcp_end], max_mss)
}

/// Where the TCP segment of an IP packet is, and the fixed IP header length
/// the MSS is relative to (20 for IPv4, 40 for IPv6). `None` unless the
/// packet is TCP right after the IP header and not a later fragment.
fn tcp_segment(packet: &[u8]) -> Option<(usize, usize, usize)> {
    match packet.first()? >> 4 {
        4 => {
            let ip = ipv4::Packet::new_checked(packet).ok()?;
            if ip.protocol() != ip_proto::TCP || ip.frag_offset() != 0 {
                return None;
            }
            Some((
                ip.header_len(),
                usize::from(ip.total_len()),
                ipv4::MIN_HEADER_LEN,
            ))
        }
        6 => {
            let ip = ipv6::Packet::new_checked(packet).ok()?;
            if ip.next_header() != ip_proto::TCP {
                return None;
            }
            Some((ipv6::HEADER_LEN, ip.total_len(), ipv6::HEADER_LEN))
        }
        _ => None,
    }
}

/// Lowers the MSS option of the TCP segment `tcp` to `max_mss` if it is a
/// SYN and announces more. Returns whether the segment was changed.
pub fn clamp_segment(tcp: &mut [u8], max_mss: u16) -> bool {
    if tcp.len() < TCP_HEADER_LEN || tcp[13] & TCP_SYN == 0 {
        return false;
    }
    let header_len = usize::from(tcp[12] >> 4) * 4;
    if header_len < TCP_HEADER_LEN || header_len > tcp.len() {
        return false;
    }
    let Some(at) = find_mss(&tcp[TCP_HEADER_LEN..header_len]) else {
        return false;
    };
    let value = TCP_HEADER_LEN + at + 2;
    let old = u16::from_be_bytes([tcp[value], tcp[value + 1]]);
    if old <= max_mss {
        return false;
    }
    let new = max_mss.to_be_bytes();
    // RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), one changed byte at a time so
    // an MSS at an odd offset (after a single NOP) is handled too: a byte at
    // an even offset is the high half of its 16-bit word, at an odd one the
    // low half.
    let mut sum = u64::from(!u16::from_be_bytes([tcp[16], tcp[17]]));
    for (i, &byte) in new.iter().enumerate() {
        let offset = value + i;
        let weight = |b: u8| {
            if offset.is_multiple_of(2) {
                u16::from(b) << 8
            } else {
                u16::from(b)
            }
        };
        sum = checksum::add_u16(sum, !weight(tcp[offset]));
        sum = checksum::add_u16(sum, weight(byte));
        tcp[offset] = byte;
    }
    let fixed = !checksum::fold(sum);
    tcp[16..18].copy_from_slice(&fixed.to_be_bytes());
    true
}

/// The offset of a well-formed MSS option in TCP options `options`, or
/// `None` if there is none or the options are malformed.
fn find_mss(options: &[u8]) -> Option<usize> {
    let mut i = 0;
    let mut found = None;
    while i < options.len() {
        match options[i] {
            OPT_END => break,
            OPT_NOP => i += 1,
            kind => {
                let len = usize::from(*options.get(i + 1)?);
                if len < 2 || i + len > options.len() {
                    return None;
                }
                if kind == OPT_MSS {
                    if len != OPT_MSS_LEN || found.is_some() {
                        return None;
                    }
                    found = Some(i);
                }
                i += len;
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const SRC4: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
    const DST4: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 2);

    /// A TCP segment with `flags` and `options` (padded to 4 bytes with
    /// END) and a few payload bytes, without a checksum.
    fn segment(flags: u8, options: &[u8]) -> Vec<u8> {
        let mut opts = options.to_vec();
        while !opts.len().is_multiple_of(4) {
            opts.push(OPT_END);
        }
        let mut tcp = vec![0u8; TCP_HEADER_LEN];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&5201u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        tcp[12] = (((TCP_HEADER_LEN + opts.len()) / 4) as u8) << 4;
        tcp[13] = flags;
        tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
        tcp.extend_from_slice(&opts);
        tcp.extend_from_slice(&[0xab, 0xcd, 0xef]);
        tcp
    }

    fn v4(tcp: &[u8]) -> Vec<u8> {
        let mut packet = vec![0u8; ipv4::MIN_HEADER_LEN + tcp.len()];
        ipv4::Repr {
            src: SRC4,
            dst: DST4,
            protocol: ip_proto::TCP,
            payload_len: tcp.len(),
            ttl: 64,
            dscp_ecn: 0,
            ident: 1,
            dont_frag: true,
        }
        .emit(&mut packet)
        .unwrap();
        packet[ipv4::MIN_HEADER_LEN..].copy_from_slice(tcp);
        let sum = checksum::pseudo_header_v4(SRC4, DST4, ip_proto::TCP, tcp.len() as u16);
        let c = checksum::finish(checksum::add(sum, tcp));
        packet[ipv4::MIN_HEADER_LEN + 16..ipv4::MIN_HEADER_LEN + 18]
            .copy_from_slice(&c.to_be_bytes());
        packet
    }

    fn v6_addrs() -> (Ipv6Addr, Ipv6Addr) {
        ("fd00:1::2".parse().unwrap(), "fd00:2::2".parse().unwrap())
    }

    fn v6(tcp: &[u8]) -> Vec<u8> {
        let (src, dst) = v6_addrs();
        let mut packet = vec![0u8; ipv6::HEADER_LEN];
        packet[0] = 0x60;
        packet[4..6].copy_from_slice(&(tcp.len() as u16).to_be_bytes());
        packet[6] = ip_proto::TCP;
        packet[7] = 64;
        packet[8..24].copy_from_slice(&src.octets());
        packet[24..40].copy_from_slice(&dst.octets());
        packet.extend_from_slice(tcp);
        let sum = checksum::pseudo_header_v6(&src, &dst, ip_proto::TCP, tcp.len() as u32);
        let c = checksum::finish(checksum::add(sum, tcp));
        packet[ipv6::HEADER_LEN + 16..ipv6::HEADER_LEN + 18].copy_from_slice(&c.to_be_bytes());
        packet
    }

    /// Whether the TCP checksum of an IP packet verifies from scratch.
    fn tcp_checksum_ok(packet: &[u8]) -> bool {
        let (start, end, _) = tcp_segment(packet).unwrap();
        let tcp = &packet[start..end];
        let pseudo = if packet[0] >> 4 == 4 {
            checksum::pseudo_header_v4(SRC4, DST4, ip_proto::TCP, tcp.len() as u16)
        } else {
            let (src, dst) = v6_addrs();
            checksum::pseudo_header_v6(&src, &dst, ip_proto::TCP, tcp.len() as u32)
        };
        checksum::fold(checksum::add(pseudo, tcp)) == 0xffff
    }

    fn mss_of(packet: &[u8]) -> Option<u16> {
        let (start, _, _) = tcp_segment(packet)?;
        let tcp = &packet[start..];
        let header_len = usize::from(tcp[12] >> 4) * 4;
        let at = TCP_HEADER_LEN + find_mss(&tcp[TCP_HEADER_LEN..header_len])?;
        Some(u16::from_be_bytes([tcp[at + 2], tcp[at + 3]]))
    }

    fn mss_opt(mss: u16) -> [u8; 4] {
        let [hi, lo] = mss.to_be_bytes();
        [OPT_MSS, 4, hi, lo]
    }

    #[test]
    fn inner_mtu_subtracts_the_worst_case_overhead() {
        // Outer IPv4 + ESP header + IV = 36; tail 3 + 2 + 16 = 21.
        assert_eq!(inner_mtu(1500, 36), 1443);
        // With UDP: 44 + 21.
        assert_eq!(inner_mtu(1500, 44), 1435);
        assert_eq!(inner_mtu(10, 44), 0);
    }

    #[test]
    fn syn_and_syn_ack_are_clamped_with_a_valid_checksum() {
        let layouts: [Vec<u8>; 3] = [
            // Linux's SYN: MSS first.
            [
                &mss_opt(1460)[..],
                &[4, 2, 8, 10, 1, 2, 3, 4, 5, 6, 7, 8, 1, 3, 3, 7],
            ]
            .concat(),
            // MSS at an odd offset after one NOP.
            [&[OPT_NOP][..], &mss_opt(1460), &[OPT_NOP, 4, 2]].concat(),
            // MSS after SACK-permitted and NOPs.
            [&[OPT_NOP, OPT_NOP, 4, 2][..], &mss_opt(0xffff)].concat(),
        ];
        for flags in [TCP_SYN, TCP_SYN | 0x10] {
            for options in &layouts {
                let tcp = segment(flags, options);
                // Inner MTU 1400: MSS 1360 over IPv4, 1340 over IPv6.
                for (mut packet, want) in [(v4(&tcp), 1360), (v6(&tcp), 1340)] {
                    assert!(tcp_checksum_ok(&packet));
                    assert!(clamp(&mut packet, 1400), "{options:?}");
                    assert_eq!(mss_of(&packet), Some(want));
                    assert!(tcp_checksum_ok(&packet), "{options:?} flags {flags:#x}");
                }
            }
        }
    }

    #[test]
    fn what_is_left_alone() {
        let cases: [(&str, Vec<u8>); 7] = [
            ("no MSS option", segment(TCP_SYN, &[4, 2, OPT_NOP, 3, 3, 7])),
            ("MSS already small", segment(TCP_SYN, &mss_opt(1200))),
            ("MSS exactly the limit", segment(TCP_SYN, &mss_opt(1360))),
            ("not a SYN", segment(0x10, &mss_opt(1460))),
            ("option length 0", segment(TCP_SYN, &[8, 0, 2, 4, 5, 0xb4])),
            (
                "option running past the header",
                segment(TCP_SYN, &[OPT_NOP, OPT_NOP, OPT_NOP, 8, 10, 1, 2]),
            ),
            ("MSS of length 3", segment(TCP_SYN, &[2, 3, 5, 0xb4])),
        ];
        for (what, tcp) in cases {
            let mut packet = v4(&tcp);
            let before = packet.clone();
            assert!(!clamp(&mut packet, 1400), "{what}");
            assert_eq!(packet, before, "{what}");
        }
    }

    #[test]
    fn broken_packets_do_not_panic() {
        let tcp = segment(TCP_SYN, &mss_opt(1460));
        let good = v4(&tcp);
        // Truncated anywhere, and a data offset beyond the segment.
        for len in 0..good.len() {
            let mut short = good[..len].to_vec();
            clamp(&mut short, 1400);
        }
        let mut bad_offset = good.clone();
        bad_offset[ipv4::MIN_HEADER_LEN + 12] = 0xf0;
        assert!(!clamp(&mut bad_offset, 1400));
        let mut tiny_offset = good.clone();
        tiny_offset[ipv4::MIN_HEADER_LEN + 12] = 0x10;
        assert!(!clamp(&mut tiny_offset, 1400));
        // A later fragment is not TCP header.
        let mut fragment = good.clone();
        fragment[7] = 1;
        assert!(!clamp(&mut fragment, 1400));
        // Segment-level: every truncation of the options.
        for len in 0..tcp.len() {
            let mut short = tcp[..len].to_vec();
            clamp_segment(&mut short, 1000);
        }
        // An IPv6 packet with an extension header first is left alone.
        let mut ext = v6(&tcp);
        ext[6] = 0;
        assert!(!clamp(&mut ext, 1400));
    }
}
