//! Finishing the partial TCP/UDP checksums of hosts with TX checksum
//! offload (issue 12).
//!
//! A host on a veth (a container, a namespace, a VM's tap) has TX checksum
//! offload on by default. Its stack then leaves TCP and UDP checksums
//! *partial* (`CHECKSUM_PARTIAL`): the checksum field holds the folded,
//! not complemented sum of the pseudo-header, and the device is trusted to
//! add the segment and complement. Linux writes exactly that value:
//! `__tcp_v4_send_check` and `__tcp_v6_send_check` store
//! `~tcp_v{4,6}_check(len, saddr, daddr, 0)`, `udp4_hwcsum` and
//! `udp6_hwcsum_outgoing` store `~csum_tcpudp_magic(..)` /
//! `~csum_ipv6_magic(..)` (IPv4 in net/ipv4/tcp_ipv4.c and udp.c, IPv6 in
//! net/ipv6/tcp_ipv6.c and ip6_checksum.c); `csum_*_magic` is
//! `csum_fold` = the complemented fold, so the field is the plain fold of
//! the pseudo-header, never 0 (the pseudo-header sum is not). A veth
//! "device" never finishes it: the skb keeps `ip_summed`, `csum_start`
//! and `csum_offset` for the receiving stack.
//!
//! What reaches XDP and AF_XDP says nothing of it (checked on Linux 6.12
//! and the 6.18 this runs on):
//! - drivers/net/veth.c `veth_xdp_rcv_skb` / `veth_convert_skb_to_xdp_buff`
//!   turn the skb into an `xdp_buff` (data pointers only); the XDP
//!   metadata kfuncs veth offers (`veth_xdp_metadata_ops`) are RX
//!   timestamp, RX hash and VLAN tag, no checksum status (an
//!   `xmo_rx_checksum` kfunc was proposed on bpf-next in 2025; 6.18's
//!   /proc/kallsyms has only the three);
//! - net/xdp/xsk.c `__xsk_rcv` copies the frame into the UMEM (copy mode)
//!   and `xskq_prod_reserve_desc` fills a `struct xdp_desc` of address,
//!   length and options, whose only option bit is `XDP_PKT_CONTD`.
//!
//! So user space cannot know which frames are partial and must recognise
//! them: a TCP/UDP checksum field equal to the pseudo-header's fold. A
//! full checksum equals that value only by a 1-in-65536 chance, and then
//! the segment sum tells the two apart. Anything else is left as it is: a
//! valid checksum needs nothing, and a wrong one that is not the partial
//! value is not laundered into a valid one.
//!
//! Order of work in [`finish`]: the field is compared with the pseudo-header
//! fold first (a few loads), and only a frame that matches has its segment
//! summed. The verdict is the same as summing every frame first ("valid:
//! leave; partial value: write the sum; else leave"), but a frame from a
//! host with offload off costs no pass over its payload.
//!
//! Pure functions on byte slices; no input panics.

use crate::wire::{checksum, ip_proto, ipv4, ipv6};
use std::net::Ipv6Addr;

const TCP_HEADER_LEN: usize = 20;
const UDP_HEADER_LEN: usize = 8;
/// Offset of the checksum field in the TCP and UDP headers.
const TCP_CHECKSUM: usize = 16;
const UDP_CHECKSUM: usize = 6;
/// Offset of the UDP length field.
const UDP_LENGTH: usize = 4;

/// What [`finish`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Not a TCP or UDP packet this module looks into (another protocol,
    /// an IPv4 fragment, IPv6 extension headers, inconsistent lengths):
    /// left alone.
    Skipped,
    /// UDP over IPv4 with checksum 0 (none): left alone.
    NoChecksum,
    /// The checksum field is not the partial value: a full checksum (or a
    /// wrong one, which is not ours to fix); left alone.
    NotPartial,
    /// The field held the partial value but the segment already verifies:
    /// left alone.
    AlreadyValid,
    /// The field held the partial value: the full checksum was written.
    Finished,
}

/// Where an IP packet's TCP or UDP segment is and the running sum of its
/// pseudo-header.
struct Segment {
    start: usize,
    end: usize,
    udp: bool,
    v4: bool,
    pseudo: u64,
}

/// Finishes the TCP or UDP checksum of the IP packet `packet` (IPv4 or
/// IPv6, starting at the IP header, ending where the IP header says) if it
/// is partial. See the module documentation.
pub fn finish(packet: &mut [u8]) -> Outcome {
    let Some(seg) = segment(packet) else {
        return Outcome::Skipped;
    };
    let Some(l4) = packet.get_mut(seg.start..seg.end) else {
        return Outcome::Skipped;
    };
    let at = if seg.udp { UDP_CHECKSUM } else { TCP_CHECKSUM };
    let field = u16::from_be_bytes([l4[at], l4[at + 1]]);
    if seg.udp && seg.v4 && field == 0 {
        return Outcome::NoChecksum;
    }
    let partial = checksum::fold(seg.pseudo);
    // 0x0000 and 0xffff are the same one's-complement number; Linux writes
    // the fold (never 0), another TCP sender might write 0. A UDP 0 is
    // "no checksum" (IPv4) or invalid (IPv6), never partial.
    let is_partial = field == partial || (!seg.udp && field == 0 && partial == 0xffff);
    if !is_partial {
        return Outcome::NotPartial;
    }
    let sum = checksum::fold(checksum::add(0, l4));
    if checksum::fold(checksum::add_u16(seg.pseudo, sum)) == 0xffff {
        return Outcome::AlreadyValid;
    }
    // The field holds the pseudo-header's sum, so the segment's sum as it
    // stands is the whole sum a device would complement. A complemented
    // sum of 0 goes out as 0xffff only for UDP, where 0 means "none"
    // (RFC 768); TCP sends it as 0x0000, the only value a computation
    // from scratch gives (RFC 1624 section 3). Receivers accept either,
    // but a checker that follows RFC 1624 (tshark) calls 0xffff bad.
    let full = match !sum {
        0 if seg.udp => 0xffff,
        v => v,
    };
    l4[at..at + 2].copy_from_slice(&full.to_be_bytes());
    Outcome::Finished
}

/// Whether the TCP or UDP checksum of `packet` verifies; `None` if it is
/// not a packet [`finish`] looks into, or UDP over IPv4 without checksum.
pub fn verifies(packet: &[u8]) -> Option<bool> {
    let seg = segment(packet)?;
    let l4 = packet.get(seg.start..seg.end)?;
    if seg.udp && seg.v4 && l4.get(UDP_CHECKSUM..UDP_CHECKSUM + 2)? == [0, 0] {
        return None;
    }
    Some(checksum::fold(checksum::add(seg.pseudo, l4)) == 0xffff)
}

fn segment(packet: &[u8]) -> Option<Segment> {
    let (start, end, protocol, pseudo, v4) = match packet.first()? >> 4 {
        4 => {
            let ip = ipv4::Packet::new_checked(packet).ok()?;
            // A fragment's checksum covers the whole datagram, which is
            // not here; the host's stack finished it anyway (IP
            // fragmentation needs a full checksum, see ip_do_fragment).
            if ip.is_fragment() {
                return None;
            }
            let (start, end) = (ip.header_len(), usize::from(ip.total_len()));
            let len = u16::try_from(end.checked_sub(start)?).ok()?;
            let pseudo =
                |proto| checksum::pseudo_header_v4(ip.src_addr(), ip.dst_addr(), proto, len);
            (start, end, ip.protocol(), pseudo(ip.protocol()), true)
        }
        6 => {
            let ip = ipv6::Packet::new_checked(packet).ok()?;
            // Extension headers (a routing header even changes the
            // pseudo-header's destination) are left alone.
            let (start, end) = (ipv6::HEADER_LEN, ip.total_len());
            let len = u32::try_from(end.checked_sub(start)?).ok()?;
            let proto = ip.next_header();
            let (src, dst) = (v6(&packet[8..24])?, v6(&packet[24..40])?);
            let pseudo = checksum::pseudo_header_v6(&src, &dst, proto, len);
            (start, end, proto, pseudo, false)
        }
        _ => return None,
    };
    let l4 = packet.get(start..end)?;
    let udp = match protocol {
        ip_proto::TCP => {
            if l4.len() < TCP_HEADER_LEN {
                return None;
            }
            false
        }
        ip_proto::UDP => {
            // The pseudo-header carries the UDP length; one that disagrees
            // with IP's is not a packet whose partial value we can know.
            let len = l4.get(UDP_LENGTH..UDP_LENGTH + 2)?;
            if l4.len() < UDP_HEADER_LEN
                || usize::from(u16::from_be_bytes([len[0], len[1]])) != l4.len()
            {
                return None;
            }
            true
        }
        _ => return None,
    };
    Some(Segment {
        start,
        end,
        udp,
        v4,
        pseudo,
    })
}

fn v6(bytes: &[u8]) -> Option<Ipv6Addr> {
    let octets: [u8; 16] = bytes.try_into().ok()?;
    Some(Ipv6Addr::from(octets))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mss;
    use std::net::Ipv4Addr;

    const SRC4: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
    const DST4: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 2);
    const SRC6: [u8; 16] = [0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    const DST6: [u8; 16] = [0xfd, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    /// RFC 1071, 16 bits at a time, written independently of `checksum`.
    fn ref_sum(pieces: &[&[u8]]) -> u16 {
        let mut sum: u64 = 0;
        for piece in pieces {
            for pair in piece.chunks(2) {
                let hi = u64::from(pair[0]) << 8;
                sum += hi | pair.get(1).map_or(0, |&b| u64::from(b));
            }
        }
        while sum > 0xffff {
            sum = (sum >> 16) + (sum & 0xffff);
        }
        sum as u16
    }

    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Ck {
        /// As Linux leaves it with TX checksum offload.
        Partial,
        /// Complete and valid.
        Full,
        /// Complete, then one bit of it flipped.
        Corrupt,
        /// 0.
        Zero,
    }

    fn pseudo(v6: bool, proto: u8, l4_len: usize) -> Vec<u8> {
        let mut p = Vec::new();
        if v6 {
            p.extend_from_slice(&SRC6);
            p.extend_from_slice(&DST6);
            p.extend_from_slice(&(l4_len as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, proto]);
        } else {
            p.extend_from_slice(&SRC4.octets());
            p.extend_from_slice(&DST4.octets());
            p.extend_from_slice(&[0, proto]);
            p.extend_from_slice(&(l4_len as u16).to_be_bytes());
        }
        p
    }

    /// An IP packet carrying TCP (`udp` false) or UDP with `payload`.
    fn packet(v6: bool, udp: bool, payload: &[u8], ck: Ck) -> Vec<u8> {
        let proto = if udp { ip_proto::UDP } else { ip_proto::TCP };
        let mut l4 = if udp {
            let len = (UDP_HEADER_LEN + payload.len()) as u16;
            let mut h = vec![0x30, 0x39, 0x00, 0x07];
            h.extend_from_slice(&len.to_be_bytes());
            h.extend_from_slice(&[0, 0]);
            h
        } else {
            let mut h = vec![0u8; TCP_HEADER_LEN];
            h[..4].copy_from_slice(&[0x9c, 0x40, 0x14, 0x51]);
            h[4..8].copy_from_slice(&0x0102_0304u32.to_be_bytes());
            h[12] = 5 << 4;
            h[13] = 0x18;
            h[14..16].copy_from_slice(&64240u16.to_be_bytes());
            h
        };
        l4.extend_from_slice(payload);
        let at = if udp { UDP_CHECKSUM } else { TCP_CHECKSUM };
        let ph = pseudo(v6, proto, l4.len());
        let value = match ck {
            Ck::Partial => ref_sum(&[&ph]),
            Ck::Full => !ref_sum(&[&ph, &l4]),
            Ck::Corrupt => !ref_sum(&[&ph, &l4]) ^ 0x0100,
            Ck::Zero => 0,
        };
        l4[at..at + 2].copy_from_slice(&value.to_be_bytes());
        let mut ip = if v6 {
            let mut h = vec![0x60, 0, 0, 0];
            h.extend_from_slice(&(l4.len() as u16).to_be_bytes());
            h.extend_from_slice(&[proto, 64]);
            h.extend_from_slice(&SRC6);
            h.extend_from_slice(&DST6);
            h
        } else {
            let mut h = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, proto, 0, 0];
            h[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
            h.extend_from_slice(&SRC4.octets());
            h.extend_from_slice(&DST4.octets());
            let c = !ref_sum(&[&h]);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            h
        };
        ip.extend_from_slice(&l4);
        ip
    }

    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + 7) as u8).collect()
    }

    #[test]
    fn table() {
        use Outcome::*;
        let sizes = [0usize, 1, 2, 17, 64, 511, 1400];
        // (ipv6, udp, checksum, expected outcome, verifies afterwards)
        let cases: &[(bool, bool, Ck, Outcome, Option<bool>)] = &[
            (false, false, Ck::Partial, Finished, Some(true)),
            (false, false, Ck::Full, NotPartial, Some(true)),
            (false, false, Ck::Corrupt, NotPartial, Some(false)),
            (false, true, Ck::Partial, Finished, Some(true)),
            (false, true, Ck::Full, NotPartial, Some(true)),
            (false, true, Ck::Corrupt, NotPartial, Some(false)),
            (false, true, Ck::Zero, NoChecksum, None),
            (true, false, Ck::Partial, Finished, Some(true)),
            (true, false, Ck::Full, NotPartial, Some(true)),
            (true, false, Ck::Corrupt, NotPartial, Some(false)),
            (true, true, Ck::Partial, Finished, Some(true)),
            (true, true, Ck::Full, NotPartial, Some(true)),
            (true, true, Ck::Corrupt, NotPartial, Some(false)),
            // UDP over IPv6 must have a checksum; 0 is not ours to invent.
            (true, true, Ck::Zero, NotPartial, Some(false)),
        ];
        for &len in &sizes {
            for &(v6, udp, ck, want, after) in cases {
                let mut p = packet(v6, udp, &payload(len), ck);
                let before = p.clone();
                let got = finish(&mut p);
                let what = format!("v6={v6} udp={udp} {ck:?} payload {len}");
                // A coincidence (a full checksum equal to the partial value)
                // is its own case below; none of these sizes hits it.
                assert_eq!(got, want, "{what}");
                assert_eq!(verifies(&p), after, "{what}");
                if got != Finished {
                    assert_eq!(p, before, "{what}: changed");
                } else {
                    let diff: Vec<usize> = (0..p.len()).filter(|&i| p[i] != before[i]).collect();
                    let at =
                        if v6 { 40 } else { 20 } + if udp { UDP_CHECKSUM } else { TCP_CHECKSUM };
                    assert!(
                        diff.iter().all(|&i| i == at || i == at + 1),
                        "{what}: {diff:?}"
                    );
                    // A second pass finds nothing to do.
                    assert_eq!(finish(&mut p), NotPartial, "{what}");
                }
            }
        }
    }

    #[test]
    fn fragments_are_left_alone() {
        for (flags, name) in [
            (0x2000u16, "MF"),
            (0x0001, "offset 8"),
            (0x2005, "MF+offset"),
        ] {
            let mut p = packet(false, true, &payload(100), Ck::Partial);
            p[6..8].copy_from_slice(&flags.to_be_bytes());
            let before = p.clone();
            assert_eq!(finish(&mut p), Outcome::Skipped, "{name}");
            assert_eq!(p, before, "{name}");
        }
        // DF alone is not a fragment.
        let mut p = packet(false, true, &payload(100), Ck::Partial);
        p[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
        assert_eq!(finish(&mut p), Outcome::Finished);
    }

    #[test]
    fn ipv6_extension_headers_are_left_alone() {
        for ext in [0u8, 43, 44, 60] {
            let mut p = packet(true, false, &payload(64), Ck::Partial);
            p[6] = ext;
            let before = p.clone();
            assert_eq!(finish(&mut p), Outcome::Skipped, "next header {ext}");
            assert_eq!(p, before);
        }
    }

    #[test]
    fn ipv4_options_shift_the_segment() {
        let mut p = packet(false, false, &payload(40), Ck::Partial);
        // Four bytes of NOP options after the fixed header.
        p.splice(20..20, [1u8, 1, 1, 1]);
        p[0] = 0x46;
        let total = (p.len() as u16).to_be_bytes();
        p[2..4].copy_from_slice(&total);
        assert_eq!(finish(&mut p), Outcome::Finished);
        assert_eq!(verifies(&p), Some(true));
    }

    #[test]
    fn truncated_and_inconsistent_lengths_are_left_alone() {
        let whole = packet(false, false, &payload(64), Ck::Partial);
        // Shorter than the IP header says.
        for cut in [0, 1, 19, 20, 39, whole.len() - 1] {
            let mut p = whole[..cut].to_vec();
            assert_eq!(finish(&mut p), Outcome::Skipped, "cut at {cut}");
        }
        // A TCP header cut short by the IP length.
        let mut p = whole.clone();
        p[2..4].copy_from_slice(&39u16.to_be_bytes());
        assert_eq!(finish(&mut p), Outcome::Skipped);
        // UDP length disagreeing with IP's.
        for v6 in [false, true] {
            let mut p = packet(v6, true, &payload(64), Ck::Partial);
            let at = if v6 { 40 } else { 20 } + UDP_LENGTH;
            p[at + 1] ^= 4;
            let before = p.clone();
            assert_eq!(finish(&mut p), Outcome::Skipped, "v6={v6}");
            assert_eq!(p, before);
        }
        // IPv6 payload length beyond the buffer.
        let mut p = packet(true, true, &payload(64), Ck::Partial);
        p[4..6].copy_from_slice(&2000u16.to_be_bytes());
        assert_eq!(finish(&mut p), Outcome::Skipped);
        // Ethernet padding after the packet is not summed.
        let mut p = packet(false, true, &payload(10), Ck::Partial);
        let len = p.len();
        p.extend_from_slice(&[0xaa; 20]);
        assert_eq!(finish(&mut p), Outcome::Finished);
        assert_eq!(verifies(&p[..len]), Some(true));
    }

    #[test]
    fn other_protocols_are_left_alone() {
        let mut p = packet(false, true, &payload(30), Ck::Partial);
        p[9] = ip_proto::ICMP;
        p[10..12].copy_from_slice(&[0, 0]);
        assert_eq!(finish(&mut p), Outcome::Skipped);
        assert_eq!(finish(&mut [0x50u8; 64]), Outcome::Skipped);
        assert_eq!(finish(&mut []), Outcome::Skipped);
    }

    /// A full checksum that happens to equal the partial value: the
    /// segment verifies, so it is left as it is.
    #[test]
    fn full_checksum_equal_to_the_partial_value_is_left_alone() {
        for (v6, udp) in [(false, false), (false, true), (true, false), (true, true)] {
            let mut found = false;
            for w in 0..=u16::MAX {
                let mut body = payload(32);
                body[..2].copy_from_slice(&w.to_be_bytes());
                let p = packet(v6, udp, &body, Ck::Full);
                let at = if v6 { 40 } else { 20 } + if udp { UDP_CHECKSUM } else { TCP_CHECKSUM };
                let partial = packet(v6, udp, &body, Ck::Partial);
                if p[at..at + 2] == partial[at..at + 2] {
                    let mut q = p.clone();
                    assert_eq!(finish(&mut q), Outcome::AlreadyValid, "v6={v6} udp={udp}");
                    assert_eq!(q, p);
                    found = true;
                    break;
                }
            }
            assert!(
                found,
                "no payload word makes the full checksum the partial value"
            );
        }
    }

    /// A computed sum of 0 goes out as 0xffff for UDP (RFC 768: 0 means
    /// no checksum), as the kernel does, and as 0x0000 for TCP (RFC 1624:
    /// 0xffff would verify at a Linux receiver but RFC 1624 checkers such
    /// as tshark call it bad).
    #[test]
    fn a_sum_of_zero_is_sent_as_each_protocol_wants() {
        for (udp, want) in [(true, [0xff, 0xff]), (false, [0, 0])] {
            for v6 in [false, true] {
                let at = if v6 { 40 } else { 20 } + if udp { UDP_CHECKSUM } else { TCP_CHECKSUM };
                // A payload word that makes the full checksum 0.
                let body = (0..=u16::MAX)
                    .map(|w| {
                        let mut body = payload(16);
                        body[..2].copy_from_slice(&w.to_be_bytes());
                        body
                    })
                    .find(|body| packet(v6, udp, body, Ck::Full)[at..at + 2] == [0, 0])
                    .expect("some payload word sums to 0");
                let mut p = packet(v6, udp, &body, Ck::Partial);
                assert_eq!(finish(&mut p), Outcome::Finished);
                assert_eq!(p[at..at + 2], want, "udp={udp} v6={v6}");
                assert_eq!(verifies(&p), Some(true));
            }
        }
    }

    /// The RFC 1624 update `mss::clamp` makes is right for a full checksum
    /// only: on a partial one the field holds the pseudo-header sum, which
    /// an MSS change does not touch (netfilter's inet_proto_csum_replace2
    /// leaves CHECKSUM_PARTIAL alone for that reason), and "updating" it
    /// makes it neither partial nor valid. Hence finish first, then clamp.
    #[test]
    fn finish_before_mss_clamp() {
        for v6 in [false, true] {
            let syn = {
                let mut p = packet(v6, false, &[], Ck::Partial);
                let l4 = if v6 { 40 } else { 20 };
                // SYN with an MSS option of 1460.
                p.splice(l4 + 20..l4 + 20, [2u8, 4, 0x05, 0xb4]);
                p[l4 + 12] = 6 << 4;
                p[l4 + 13] = 0x02;
                if v6 {
                    p[4..6].copy_from_slice(&24u16.to_be_bytes());
                } else {
                    let total = (p.len() as u16).to_be_bytes();
                    p[2..4].copy_from_slice(&total);
                    p[10..12].copy_from_slice(&[0, 0]);
                    let c = !ref_sum(&[&p[..20]]);
                    p[10..12].copy_from_slice(&c.to_be_bytes());
                }
                let ph = pseudo(v6, ip_proto::TCP, 24);
                p[l4 + 16..l4 + 18].copy_from_slice(&ref_sum(&[&ph]).to_be_bytes());
                p
            };
            let mut right = syn.clone();
            assert_eq!(finish(&mut right), Outcome::Finished);
            assert!(mss::clamp(&mut right, 1400));
            assert_eq!(verifies(&right), Some(true), "v6={v6}: finish, clamp");

            let mut wrong = syn.clone();
            assert!(mss::clamp(&mut wrong, 1400));
            assert_eq!(finish(&mut wrong), Outcome::NotPartial, "v6={v6}");
            assert_eq!(verifies(&wrong), Some(false), "v6={v6}: clamp, finish");
        }
    }

    /// No input panics, and whatever is changed ends up verifying.
    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..20_000 {
            let len = (next() % 120) as usize;
            let mut p: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if let Some(b) = p.first_mut() {
                *b = (*b & 0x0f) | if next() % 2 == 0 { 0x45 } else { 0x60 };
            }
            let before = p.clone();
            if finish(&mut p) == Outcome::Finished {
                assert_eq!(verifies(&p), Some(true));
            } else {
                assert_eq!(p, before);
            }
        }
        // Mutations of real packets.
        let base = packet(false, false, &payload(40), Ck::Partial);
        for i in 0..base.len() {
            for bit in 0..8 {
                let mut p = base.clone();
                p[i] ^= 1 << bit;
                let _ = finish(&mut p);
                let _ = verifies(&p);
            }
        }
    }
}
