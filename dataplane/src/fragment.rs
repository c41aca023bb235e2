//! Fragmenting an outer packet after encryption (RFC 4303 section 3.3.4,
//! as the Linux kernel does): the first fragment is cut in place in the
//! packet's own frame, the others are written into fresh frames from a
//! [`Plan`] that reads the payload where it still lies.
//!
//! Only outer packets the gateway built itself are cut: an IPv4 header
//! without options, or an IPv6 header with no extension header, so the
//! whole header is the unfragmentable part.

use crate::wire::{ip_proto, ipv4, ipv6};
use std::ops::Range;

/// The IPv6 Fragment header (RFC 8200 section 4.5).
pub const V6_FRAGMENT_HEADER_LEN: usize = 8;

/// How the rest of an outer packet is cut, once its first fragment is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    v6: bool,
    /// The original IP header (20 or 40 bytes used).
    header: [u8; ipv6::HEADER_LEN],
    header_len: usize,
    /// The original payload, as absolute offsets in the buffer.
    payload: Range<usize>,
    /// Payload bytes per fragment, a multiple of 8.
    chunk: usize,
    /// IPv6: the Fragment header's identification.
    ident: u32,
    /// IPv6: the original next header.
    next_header: u8,
}

impl Plan {
    /// Fragments in all, the first included.
    pub fn count(&self) -> usize {
        self.payload.len().div_ceil(self.chunk)
    }

    /// Writes fragment `index` (1 or more) of the packet whose payload is
    /// still in `buf` into the front of `out`; its length, or `None` if
    /// there is no such fragment or `out` is too short.
    pub fn write(&self, index: usize, buf: &[u8], out: &mut [u8]) -> Option<usize> {
        let offset = index.checked_mul(self.chunk)?;
        if index == 0 || offset >= self.payload.len() {
            return None;
        }
        let len = self.chunk.min(self.payload.len() - offset);
        let last = offset + len == self.payload.len();
        let piece = buf.get(self.payload.start + offset..self.payload.start + offset + len)?;
        let head = if self.v6 {
            self.header_len + V6_FRAGMENT_HEADER_LEN
        } else {
            self.header_len
        };
        let out = out.get_mut(..head + len)?;
        self.write_header(out, offset, len, last);
        out[head..].copy_from_slice(piece);
        Some(head + len)
    }

    /// The IP header (and for IPv6 the Fragment header) of the fragment
    /// carrying `len` bytes at `offset`, at the front of `out`.
    fn write_header(&self, out: &mut [u8], offset: usize, len: usize, last: bool) {
        let hl = self.header_len;
        out[..hl].copy_from_slice(&self.header[..hl]);
        // Offsets are in 8-byte units; a payload of an IP packet cannot be
        // over 64 KiB, so the casts below do not truncate.
        let units = (offset / 8) as u16;
        if self.v6 {
            let payload_len = (V6_FRAGMENT_HEADER_LEN + len) as u16;
            out[ipv6::field::PAYLOAD_LEN..ipv6::field::PAYLOAD_LEN + 2]
                .copy_from_slice(&payload_len.to_be_bytes());
            out[ipv6::field::NEXT_HEADER] = ip_proto::IPV6_FRAGMENT;
            let frag = &mut out[hl..hl + V6_FRAGMENT_HEADER_LEN];
            frag[0] = self.next_header;
            frag[1] = 0;
            let word = (units << 3) | u16::from(!last);
            frag[2..4].copy_from_slice(&word.to_be_bytes());
            frag[4..8].copy_from_slice(&self.ident.to_be_bytes());
        } else {
            let mut ip = ipv4::Packet::new_unchecked(&mut out[..hl]);
            ip.set_total_len((hl + len) as u16);
            // DF is cleared: these are fragments now.
            ip.set_flags_frag(units | if last { 0 } else { ipv4::FLAG_MF });
            ip.fill_checksum();
        }
    }
}

/// Cuts the outer IP packet at `buf[ip]` so that each piece fits `mtu`: the
/// first fragment in place (for IPv6 it grows 8 bytes to the front, which
/// must be headroom), and returns its range and the plan for the others.
/// `None` if the packet fits, is not one the gateway built (IPv4 options,
/// IPv6 extension headers, already a fragment) or `mtu` leaves no room for
/// 8 bytes of payload. `ident` is the IPv6 Fragment identification (IPv4
/// keeps its header's ID).
pub fn first_in_place(
    buf: &mut [u8],
    ip: Range<usize>,
    mtu: usize,
    ident: u32,
) -> Option<(Range<usize>, Plan)> {
    let packet = buf.get(ip.clone())?;
    if packet.len() <= mtu {
        return None;
    }
    let mut header = [0u8; ipv6::HEADER_LEN];
    let (v6, header_len, next_header) = match packet.first()? >> 4 {
        4 => {
            let p = ipv4::Packet::new_checked(packet).ok()?;
            if p.header_len() != ipv4::MIN_HEADER_LEN || p.is_fragment() {
                return None;
            }
            (false, ipv4::MIN_HEADER_LEN, p.protocol())
        }
        6 => {
            let p = ipv6::Packet::new_checked(packet).ok()?;
            if !matches!(p.next_header(), ip_proto::ESP | ip_proto::UDP) {
                return None;
            }
            (true, ipv6::HEADER_LEN, p.next_header())
        }
        _ => return None,
    };
    header[..header_len].copy_from_slice(&packet[..header_len]);
    let room = if v6 {
        mtu.checked_sub(header_len + V6_FRAGMENT_HEADER_LEN)?
    } else {
        mtu.checked_sub(header_len)?
    };
    let chunk = room & !7;
    if chunk == 0 {
        return None;
    }
    let plan = Plan {
        v6,
        header,
        header_len,
        payload: ip.start + header_len..ip.end,
        chunk,
        ident,
        next_header,
    };
    let first_start = if v6 {
        ip.start.checked_sub(V6_FRAGMENT_HEADER_LEN)?
    } else {
        ip.start
    };
    let first_end = ip.start + header_len + chunk;
    plan.write_header(&mut buf[first_start..first_end], 0, chunk, false);
    Some((first_start..first_end, plan))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reassembly::{Reassembly, ReassemblyLimits};
    use std::net::Ipv4Addr;
    use std::time::{Duration, Instant};

    fn ipv4_header_ok(packet: &[u8]) -> bool {
        ipv4::Packet::new_checked(packet).is_ok_and(|p| p.verify_checksum())
    }

    /// An outer ESP packet of `len` bytes at offset 64 of a buffer, its
    /// payload a counting pattern.
    fn outer(v6: bool, len: usize) -> (Vec<u8>, Range<usize>) {
        let mut buf = vec![0u8; 64 + len];
        let ip = 64..64 + len;
        if v6 {
            ipv6::Repr {
                src: "fd00:18::1".parse().unwrap(),
                dst: "fd00:18::2".parse().unwrap(),
                next_header: ip_proto::ESP,
                payload_len: len - 40,
                hop_limit: 64,
                traffic_class: 0,
                flow_label: 0,
            }
            .emit(&mut buf[ip.clone()])
            .unwrap();
        } else {
            ipv4::Repr {
                src: Ipv4Addr::new(198, 18, 0, 1),
                dst: Ipv4Addr::new(198, 18, 0, 2),
                protocol: ip_proto::ESP,
                payload_len: len - 20,
                ttl: 64,
                dscp_ecn: 0,
                ident: 0x4242,
                dont_frag: false,
            }
            .emit(&mut buf[ip.clone()])
            .unwrap();
        }
        let hl = if v6 { 40 } else { 20 };
        for (i, b) in buf[ip.start + hl..ip.end].iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        (buf, ip)
    }

    #[test]
    fn fragments_reassemble_to_the_original() {
        for v6 in [false, true] {
            for (len, mtu) in [(1557, 1500), (1557, 576), (3000, 1280), (1501, 1500)] {
                let (mut buf, ip) = outer(v6, len);
                let original = buf[ip.clone()].to_vec();
                let (first, plan) = first_in_place(&mut buf, ip, mtu, 7).unwrap();
                assert!(first.len() <= mtu);
                let mut pieces = vec![buf[first].to_vec()];
                for i in 1..plan.count() {
                    let mut out = vec![0u8; 2048];
                    let n = plan.write(i, &buf, &mut out).unwrap();
                    assert!(n <= mtu, "fragment {i} is {n} bytes for MTU {mtu}");
                    pieces.push(out[..n].to_vec());
                }
                assert!(plan.write(plan.count(), &buf, &mut [0u8; 2048]).is_none());
                if !v6 {
                    assert!(pieces.iter().all(|p| ipv4_header_ok(p)));
                }
                // The receive side's reassembly, fed in reverse order, gives
                // back the original packet (DF and fragment fields aside).
                let mut table = Reassembly::new(ReassemblyLimits {
                    slots: 4,
                    max_datagram: 4096,
                    timeout: Duration::from_secs(1),
                });
                let now = Instant::now();
                let mut done = None;
                for p in pieces.iter().rev() {
                    if let Some(d) = table.insert(now, p).unwrap() {
                        done = Some(d.to_vec());
                    }
                }
                let done = done.expect("complete");
                assert_eq!(done.len(), original.len(), "v6 {v6} len {len} mtu {mtu}");
                let hl = if v6 { 40 } else { 20 };
                assert_eq!(done[hl..], original[hl..]);
                assert_eq!(done[..6], original[..6]);
            }
        }
    }

    #[test]
    fn what_is_not_cut() {
        let (mut buf, ip) = outer(false, 1400);
        assert!(
            first_in_place(&mut buf, ip.clone(), 1500, 0).is_none(),
            "fits"
        );
        assert!(
            first_in_place(&mut buf, ip.clone(), 27, 0).is_none(),
            "no room"
        );
        let (mut buf, ip) = outer(false, 1600);
        buf[ip.start + 6] = 0x20;
        assert!(
            first_in_place(&mut buf, ip, 1500, 0).is_none(),
            "a fragment"
        );
        let (buf, ip) = outer(true, 1600);
        let mut tight = buf[ip.start - 4..].to_vec();
        assert!(
            first_in_place(&mut tight, 4..4 + 1600, 1500, 0).is_none(),
            "no headroom"
        );
    }
}
