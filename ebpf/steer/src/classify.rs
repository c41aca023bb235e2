//! Frame classification: Ethernet (optionally one 802.1Q tag), then IPv4
//! (options skipped with IHL) or IPv6 (fixed header only), then ESP, UDP-
//! encapsulated ESP (RFC 3948) or IKE (RFC 7296).
//!
//! Safe code only: every read goes through [`Frame::load`], which checks the
//! bounds (against `data_end` in the kernel, against the slice on the host).
//! Anything that cannot be read in full is [`Class::Other`].

use xdpsec_ebpf_common::{
    Class, IKE_PORT, IPPROTO_ESP, IPPROTO_UDP, NAT_T_PORT, NON_ESP_MARKER_LEN,
};

const ETH_HLEN: usize = 14;
const ETH_TYPE_OFF: usize = 12;
const VLAN_HLEN: usize = 4;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;

const IPV4_MIN_HLEN: usize = 20;
const IPV4_FRAG_OFF: usize = 6;
const IPV4_PROTO_OFF: usize = 9;
/// More-fragments flag and fragment offset.
const IPV4_FRAG_MASK: u16 = 0x3fff;

const IPV6_HLEN: usize = 40;
const IPV6_NEXT_HEADER_OFF: usize = 6;

const ESP_HLEN: usize = 8;

const UDP_HLEN: usize = 8;
const UDP_DST_PORT_OFF: usize = 2;

/// Bounds-checked reads of a frame.
pub(crate) trait Frame {
    /// The `N` bytes at `offset`, or `None` if the frame ends before.
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]>;
}

/// Host-side frames (unit tests).
#[cfg(not(target_arch = "bpf"))]
impl Frame for [u8] {
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        self.get(offset..offset.checked_add(N)?)?.try_into().ok()
    }
}

#[inline(always)]
fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// Classifies one frame. Never fails: whatever is not recognised, including
/// truncated headers, is [`Class::Other`].
///
/// Each header is read whole with one [`Frame::load`] and its fields picked
/// from the copy: one bounds check per header, at the header's own offset,
/// which is also the shape the verifier follows when the offset is variable
/// (after IPv4 options).
#[inline(always)]
pub(crate) fn classify<F: Frame + ?Sized>(frame: &F) -> Class {
    try_classify(frame).unwrap_or(Class::Other)
}

#[inline(always)]
fn try_classify<F: Frame + ?Sized>(frame: &F) -> Option<Class> {
    let eth = frame.load::<ETH_HLEN>(0)?;
    let mut l3 = ETH_HLEN;
    let mut ether_type = be16(&eth, ETH_TYPE_OFF);
    if ether_type == ETH_P_8021Q {
        let tag = frame.load::<VLAN_HLEN>(ETH_HLEN)?;
        ether_type = be16(&tag, 2);
        l3 += VLAN_HLEN;
    }

    let (proto, l4) = match ether_type {
        ETH_P_IP => ipv4(frame, l3)?,
        ETH_P_IPV6 => ipv6(frame, l3)?,
        _ => return None,
    };

    match proto {
        IPPROTO_ESP => {
            // SPI and sequence number: without them it is not ESP.
            frame.load::<ESP_HLEN>(l4)?;
            Some(Class::Esp)
        }
        IPPROTO_UDP => udp(frame, l4),
        _ => None,
    }
}

/// The IP protocol and the offset of the transport header of an IPv4 packet
/// at `l3`. Fragments are not classified: a non-first fragment has no
/// transport header, and the data plane does not reassemble.
#[inline(always)]
fn ipv4<F: Frame + ?Sized>(frame: &F, l3: usize) -> Option<(u8, usize)> {
    let h = frame.load::<IPV4_MIN_HLEN>(l3)?;
    if h[0] >> 4 != 4 {
        return None;
    }
    let hlen = usize::from(h[0] & 0x0f) * 4;
    if hlen < IPV4_MIN_HLEN || be16(&h, IPV4_FRAG_OFF) & IPV4_FRAG_MASK != 0 {
        return None;
    }
    // Options, if any, are skipped; the transport header's own load checks
    // that they are in the frame.
    Some((h[IPV4_PROTO_OFF], l3 + hlen))
}

/// The next header and the offset after the fixed header of an IPv6 packet
/// at `l3`. An extension header in front of ESP or UDP makes it "other".
#[inline(always)]
fn ipv6<F: Frame + ?Sized>(frame: &F, l3: usize) -> Option<(u8, usize)> {
    let h = frame.load::<IPV6_HLEN>(l3)?;
    if h[0] >> 4 != 6 {
        return None;
    }
    Some((h[IPV6_NEXT_HEADER_OFF], l3 + IPV6_HLEN))
}

/// UDP at `l4`, read together with the first payload word: port 500 is IKE;
/// on port 4500 that word tells ESP (its SPI, never zero) from IKE (the zero
/// non-ESP marker). Shorter datagrams (NAT keepalives) are "other".
#[inline(always)]
fn udp<F: Frame + ?Sized>(frame: &F, l4: usize) -> Option<Class> {
    let u = frame.load::<{ UDP_HLEN + NON_ESP_MARKER_LEN }>(l4)?;
    match be16(&u, UDP_DST_PORT_OFF) {
        IKE_PORT => Some(Class::Ike),
        NAT_T_PORT => {
            let word = [
                u[UDP_HLEN],
                u[UDP_HLEN + 1],
                u[UDP_HLEN + 2],
                u[UDP_HLEN + 3],
            ];
            if u32::from_ne_bytes(word) == 0 {
                Some(Class::Ike)
            } else {
                Some(Class::EspInUdp)
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth(ether_type: u16) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        f.extend_from_slice(&ether_type.to_be_bytes());
        f
    }

    fn ipv4(proto: u8, options: usize) -> Vec<u8> {
        let ihl = 5 + options / 4;
        let mut h = vec![0x40 | ihl as u8, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
        h.extend_from_slice(&[198, 18, 0, 1, 198, 19, 0, 1]);
        h.extend(std::iter::repeat_n(1u8, options));
        h
    }

    fn ipv6(next_header: u8) -> Vec<u8> {
        let mut h = vec![0x60, 0, 0, 0, 0, 0, next_header, 64];
        h.extend_from_slice(&[0xfd; 32]);
        h
    }

    fn udp(dst: u16, payload: &[u8]) -> Vec<u8> {
        let mut h = Vec::from(4500u16.to_be_bytes());
        h.extend_from_slice(&dst.to_be_bytes());
        h.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        h.extend_from_slice(&[0, 0]);
        h.extend_from_slice(payload);
        h
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    const ESP: &[u8] = &[0, 0, 0x10, 0x01, 0, 0, 0, 1, 0xaa, 0xbb];

    #[test]
    fn classes() {
        let cases: Vec<(&str, Vec<u8>, Class)> = vec![
            (
                "v4 esp",
                cat(&[&eth(ETH_P_IP), &ipv4(50, 0), ESP]),
                Class::Esp,
            ),
            (
                "v4 opts esp",
                cat(&[&eth(ETH_P_IP), &ipv4(50, 8), ESP]),
                Class::Esp,
            ),
            (
                "v6 esp",
                cat(&[&eth(ETH_P_IPV6), &ipv6(50), ESP]),
                Class::Esp,
            ),
            (
                "vlan v4 esp",
                cat(&[&eth(ETH_P_8021Q), &[0, 7, 0x08, 0x00], &ipv4(50, 0), ESP]),
                Class::Esp,
            ),
            (
                "udp 4500 esp",
                cat(&[&eth(ETH_P_IP), &ipv4(17, 0), &udp(4500, ESP)]),
                Class::EspInUdp,
            ),
            (
                "udp 4500 ike",
                cat(&[
                    &eth(ETH_P_IP),
                    &ipv4(17, 0),
                    &udp(4500, &[0, 0, 0, 0, 1, 2]),
                ]),
                Class::Ike,
            ),
            (
                "udp 500",
                cat(&[&eth(ETH_P_IP), &ipv4(17, 0), &udp(500, &[1; 28])]),
                Class::Ike,
            ),
            (
                "v6 udp 4500",
                cat(&[&eth(ETH_P_IPV6), &ipv6(17), &udp(4500, ESP)]),
                Class::EspInUdp,
            ),
            (
                "udp 4500 keepalive",
                cat(&[&eth(ETH_P_IP), &ipv4(17, 0), &udp(4500, &[0xff])]),
                Class::Other,
            ),
            (
                "udp 53",
                cat(&[&eth(ETH_P_IP), &ipv4(17, 0), &udp(53, &[1; 12])]),
                Class::Other,
            ),
            (
                "tcp",
                cat(&[&eth(ETH_P_IP), &ipv4(6, 0), &[0; 20]]),
                Class::Other,
            ),
            ("arp", cat(&[&eth(0x0806), &[0; 28]]), Class::Other),
            (
                "v4 truncated",
                cat(&[&eth(ETH_P_IP), &ipv4(50, 0)[..12]]),
                Class::Other,
            ),
            (
                "v4 opts truncated",
                cat(&[&eth(ETH_P_IP), &ipv4(50, 8)[..24]]),
                Class::Other,
            ),
            (
                "v6 truncated",
                cat(&[&eth(ETH_P_IPV6), &ipv6(50)[..39]]),
                Class::Other,
            ),
            ("eth only", eth(ETH_P_IP), Class::Other),
            ("runt", vec![0; 6], Class::Other),
            (
                "bad ihl",
                {
                    let mut f = cat(&[&eth(ETH_P_IP), &ipv4(50, 0), ESP]);
                    f[14] = 0x44;
                    f
                },
                Class::Other,
            ),
            (
                "v6 in v4 ethertype",
                cat(&[&eth(ETH_P_IP), &ipv6(50), ESP]),
                Class::Other,
            ),
            (
                "v4 fragment",
                {
                    let mut f = cat(&[&eth(ETH_P_IP), &ipv4(50, 0), ESP]);
                    f[14 + 6] = 0x20; // MF
                    f
                },
                Class::Other,
            ),
            (
                "v6 ext header",
                cat(&[&eth(ETH_P_IPV6), &ipv6(0), &[50, 0, 0, 0, 0, 0, 0, 0], ESP]),
                Class::Other,
            ),
        ];
        for (name, frame, want) in cases {
            assert_eq!(classify(frame.as_slice()), want, "{name}");
        }
    }
}
