//! Frame parsing: Ethernet (optionally one 802.1Q tag), then IPv4 (options
//! skipped with IHL) or IPv6 (fixed header only), then ESP, UDP-encapsulated
//! ESP (RFC 3948) or IKE (RFC 7296).
//!
//! Safe code only: every read goes through [`Frame::load`], which checks the
//! bounds (against `data_end` in the kernel, against the slice on the host).

use xdpsec_ebpf_common::{
    FragKey, IKE_PORT, IPPROTO_ESP, IPPROTO_FRAGMENT, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_UDP,
    NAT_T_PORT, NON_ESP_MARKER_LEN,
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
const IPV4_SRC_OFF: usize = 12;
const IPV4_DST_OFF: usize = 16;
const IPV4_ID_OFF: usize = 4;
/// The fragment offset alone (in 8-byte units).
const IPV4_OFFSET_MASK: u16 = 0x1fff;
/// More-fragments flag and fragment offset.
const IPV4_FRAG_MASK: u16 = 0x3fff;

const IPV6_HLEN: usize = 40;
const IPV6_NEXT_HEADER_OFF: usize = 6;
const IPV6_SRC_OFF: usize = 8;
const IPV6_DST_OFF: usize = 24;
const IPV6_FRAG_HLEN: usize = 8;

const ICMP_HLEN: usize = 8;
/// ICMP destination unreachable, code fragmentation needed (RFC 1191).
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
/// ICMPv6 packet too big (RFC 4443).
const ICMPV6_PACKET_TOO_BIG: u8 = 2;

const ESP_HLEN: usize = 8;

const UDP_HLEN: usize = 8;
const UDP_DST_PORT_OFF: usize = 2;
const UDP_LEN_OFF: usize = 4;

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

/// A destination address, in network byte order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Addr {
    V4([u8; 4]),
    V6([u8; 16]),
}

impl Addr {
    /// Multicast, limited broadcast (and the rest of 240/4), or link-local:
    /// never the destination of traffic to protect.
    #[inline(always)]
    pub(crate) fn is_link_scope(&self) -> bool {
        match self {
            // 224/4 multicast, 240/4 reserved and 255.255.255.255.
            Addr::V4(a) => a[0] >= 224 || (a[0] == 169 && a[1] == 254),
            // ff00::/8 multicast, fe80::/10 link-local.
            Addr::V6(a) => a[0] == 0xff || (a[0] == 0xfe && a[1] & 0xc0 == 0x80),
        }
    }
}

/// What follows the IP header, as far as steering cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum L4 {
    /// IP protocol 50 with at least the SPI and sequence number.
    Esp,
    /// UDP to 4500 whose first payload word (the SPI) is non-zero.
    EspInUdp,
    /// UDP to 500, or to 4500 with the zero non-ESP marker.
    Ike,
    /// A fragment of ESP (IPv4 protocol 50, or an IPv6 Fragment header
    /// followed by ESP).
    EspFragment,
    /// The first fragment of a UDP datagram, with what its UDP header says
    /// (ESP in UDP, IKE, other) and the datagram's identity, so the later
    /// fragments can follow it.
    UdpFirstFragment { inner: UdpKind, key: FragKey },
    /// A later fragment of a UDP datagram: it goes where the first went.
    UdpLaterFragment { key: FragKey },
    /// A first fragment of UDP too short for its UDP header.
    Fragment,
    /// ICMP "fragmentation needed" or ICMPv6 "packet too big" quoting an
    /// ESP or UDP packet (possibly ours: the worker checks).
    IcmpTooBig,
    /// The ESP or UDP header (or the marker word) is cut short.
    Truncated,
    /// Anything else: other protocols and ports, NAT keepalives, IPv6
    /// extension headers other than Fragment.
    Other,
}

/// What a UDP header says, for steering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UdpKind {
    EspInUdp,
    Ike,
    Other,
}

/// The outcome of parsing a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// Not IPv4 or IPv6.
    NonIp,
    /// The Ethernet, VLAN or IP header (options included) is cut short, or
    /// the IP header is malformed (version, IHL).
    Truncated,
    /// An IPv4 or IPv6 packet to `dst`.
    Ip { dst: Addr, l4: L4 },
}

#[inline(always)]
fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

/// Parses one frame. Never fails: whatever cannot be read is
/// [`Parsed::Truncated`] or [`L4::Truncated`].
///
/// Each header is read whole with one [`Frame::load`] and its fields picked
/// from the copy: one bounds check per header, at the header's own offset,
/// which is also the shape the verifier follows when the offset is variable
/// (after IPv4 options).
#[inline(always)]
pub(crate) fn parse<F: Frame + ?Sized>(frame: &F) -> Parsed {
    let Some(eth) = frame.load::<ETH_HLEN>(0) else {
        return Parsed::Truncated;
    };
    let mut l3 = ETH_HLEN;
    let mut ether_type = be16(&eth, ETH_TYPE_OFF);
    if ether_type == ETH_P_8021Q {
        let Some(tag) = frame.load::<VLAN_HLEN>(ETH_HLEN) else {
            return Parsed::Truncated;
        };
        ether_type = be16(&tag, 2);
        l3 += VLAN_HLEN;
    }
    match ether_type {
        ETH_P_IP => ipv4(frame, l3),
        ETH_P_IPV6 => ipv6(frame, l3),
        _ => Parsed::NonIp,
    }
}

/// An IPv4 packet at `l3`.
#[inline(always)]
fn ipv4<F: Frame + ?Sized>(frame: &F, l3: usize) -> Parsed {
    let Some(h) = frame.load::<IPV4_MIN_HLEN>(l3) else {
        return Parsed::Truncated;
    };
    let hlen = usize::from(h[0] & 0x0f) * 4;
    if h[0] >> 4 != 4 || hlen < IPV4_MIN_HLEN {
        return Parsed::Truncated;
    }
    let dst = Addr::V4([
        h[IPV4_DST_OFF],
        h[IPV4_DST_OFF + 1],
        h[IPV4_DST_OFF + 2],
        h[IPV4_DST_OFF + 3],
    ]);
    // Options, if any, must be in the frame; their last byte is enough.
    if hlen > IPV4_MIN_HLEN && frame.load::<1>(l3 + hlen - 1).is_none() {
        return Parsed::Truncated;
    }
    let proto = h[IPV4_PROTO_OFF];
    let frag = be16(&h, IPV4_FRAG_OFF);
    let l4 = if frag & IPV4_FRAG_MASK != 0 {
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&h[IPV4_SRC_OFF..IPV4_SRC_OFF + 4]);
        let key = FragKey {
            src,
            ident: u32::from(be16(&h, IPV4_ID_OFF)),
            family: 4,
        };
        fragment(frame, proto, frag & IPV4_OFFSET_MASK == 0, l3 + hlen, key)
    } else if proto == IPPROTO_ICMP {
        icmp_too_big(frame, l3 + hlen, false)
    } else {
        transport(frame, proto, l3 + hlen)
    };
    Parsed::Ip { dst, l4 }
}

/// An IPv6 packet at `l3`. Only the fixed header is parsed: an extension
/// header other than Fragment in front of ESP or UDP makes it "other".
#[inline(always)]
fn ipv6<F: Frame + ?Sized>(frame: &F, l3: usize) -> Parsed {
    let Some(h) = frame.load::<IPV6_HLEN>(l3) else {
        return Parsed::Truncated;
    };
    if h[0] >> 4 != 6 {
        return Parsed::Truncated;
    }
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&h[IPV6_DST_OFF..IPV6_DST_OFF + 16]);
    let next_header = h[IPV6_NEXT_HEADER_OFF];
    let l4 = if next_header == IPPROTO_FRAGMENT {
        let Some(f) = frame.load::<IPV6_FRAG_HLEN>(l3 + IPV6_HLEN) else {
            return Parsed::Ip {
                dst: Addr::V6(dst),
                l4: L4::Truncated,
            };
        };
        let mut src = [0u8; 16];
        src.copy_from_slice(&h[IPV6_SRC_OFF..IPV6_SRC_OFF + 16]);
        let key = FragKey {
            src,
            ident: u32::from_be_bytes([f[4], f[5], f[6], f[7]]),
            family: 6,
        };
        let first = be16(&f, 2) & !7 == 0;
        fragment(frame, f[0], first, l3 + IPV6_HLEN + IPV6_FRAG_HLEN, key)
    } else if next_header == IPPROTO_ICMPV6 {
        icmp_too_big(frame, l3 + IPV6_HLEN, true)
    } else {
        transport(frame, next_header, l3 + IPV6_HLEN)
    };
    Parsed::Ip {
        dst: Addr::V6(dst),
        l4,
    }
}

/// A fragment of `proto` whose fragmentable part starts at `l4`.
#[inline(always)]
fn fragment<F: Frame + ?Sized>(frame: &F, proto: u8, first: bool, l4: usize, key: FragKey) -> L4 {
    match proto {
        IPPROTO_ESP => L4::EspFragment,
        IPPROTO_UDP if first => {
            let inner = match udp(frame, l4) {
                L4::EspInUdp => UdpKind::EspInUdp,
                L4::Ike => UdpKind::Ike,
                L4::Truncated => return L4::Fragment,
                _ => UdpKind::Other,
            };
            L4::UdpFirstFragment { inner, key }
        }
        IPPROTO_UDP => L4::UdpLaterFragment { key },
        // Fragments of TCP, ICMP, ... are nothing the outside rule steers.
        _ => L4::Other,
    }
}

/// ICMP (or ICMPv6) at `l4`: a "too big" whose quoted packet is ESP, or
/// ESP in UDP (a non-zero SPI after the UDP header, neither port 500), is
/// [`L4::IcmpTooBig`]; IPv6 quoting a Fragment header is too (the worker
/// looks further). Anything else, IKE's own "too big" included, is other:
/// the kernel's sockets need those.
#[inline(always)]
fn icmp_too_big<F: Frame + ?Sized>(frame: &F, l4: usize, v6: bool) -> L4 {
    let Some(icmp) = frame.load::<ICMP_HLEN>(l4) else {
        return L4::Truncated;
    };
    let quoted = l4 + ICMP_HLEN;
    let (proto, quoted_l4) = if v6 {
        if icmp[0] != ICMPV6_PACKET_TOO_BIG {
            return L4::Other;
        }
        match frame.load::<IPV6_HLEN>(quoted) {
            Some(q) => (q[IPV6_NEXT_HEADER_OFF], quoted + IPV6_HLEN),
            None => return L4::Truncated,
        }
    } else {
        if icmp[0] != ICMP_DEST_UNREACH || icmp[1] != ICMP_FRAG_NEEDED {
            return L4::Other;
        }
        match frame.load::<IPV4_MIN_HLEN>(quoted) {
            Some(q) => (q[IPV4_PROTO_OFF], quoted + usize::from(q[0] & 0x0f) * 4),
            None => return L4::Truncated,
        }
    };
    match proto {
        IPPROTO_ESP => L4::IcmpTooBig,
        IPPROTO_FRAGMENT if v6 => L4::IcmpTooBig,
        IPPROTO_UDP => match frame.load::<{ UDP_HLEN + NON_ESP_MARKER_LEN }>(quoted_l4) {
            Some(u) => {
                let spi = u32::from_ne_bytes([u[8], u[9], u[10], u[11]]);
                if spi == 0 || be16(&u, 0) == IKE_PORT || be16(&u, UDP_DST_PORT_OFF) == IKE_PORT {
                    L4::Other
                } else {
                    L4::IcmpTooBig
                }
            }
            // Too little quoted to tell: the kernel's.
            None => L4::Other,
        },
        _ => L4::Other,
    }
}

#[inline(always)]
fn transport<F: Frame + ?Sized>(frame: &F, proto: u8, l4: usize) -> L4 {
    match proto {
        IPPROTO_ESP => {
            // SPI and sequence number: without them it is not ESP.
            if frame.load::<ESP_HLEN>(l4).is_some() {
                L4::Esp
            } else {
                L4::Truncated
            }
        }
        IPPROTO_UDP => udp(frame, l4),
        _ => L4::Other,
    }
}

/// UDP at `l4`: port 500 is IKE; on port 4500 the first payload word tells
/// ESP (its SPI, never zero) from IKE (the zero non-ESP marker). Datagrams
/// whose UDP length leaves no room for that word (NAT keepalives) are
/// "other", whatever Ethernet padding follows them.
#[inline(always)]
fn udp<F: Frame + ?Sized>(frame: &F, l4: usize) -> L4 {
    let Some(u) = frame.load::<UDP_HLEN>(l4) else {
        return L4::Truncated;
    };
    match be16(&u, UDP_DST_PORT_OFF) {
        IKE_PORT => L4::Ike,
        NAT_T_PORT => {
            if usize::from(be16(&u, UDP_LEN_OFF)) < UDP_HLEN + NON_ESP_MARKER_LEN {
                return L4::Other;
            }
            match frame.load::<NON_ESP_MARKER_LEN>(l4 + UDP_HLEN) {
                None => L4::Truncated,
                Some(word) if u32::from_ne_bytes(word) == 0 => L4::Ike,
                Some(_) => L4::EspInUdp,
            }
        }
        _ => L4::Other,
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

    const V4_DST: [u8; 4] = [198, 19, 0, 1];
    const V6_DST: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

    fn ipv4(proto: u8, options: usize) -> Vec<u8> {
        let ihl = 5 + options / 4;
        let mut h = vec![0x40 | ihl as u8, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
        h.extend_from_slice(&[198, 18, 0, 1]);
        h.extend_from_slice(&V4_DST);
        h.extend(std::iter::repeat_n(1u8, options));
        h
    }

    fn ipv6(next_header: u8) -> Vec<u8> {
        let mut h = vec![0x60, 0, 0, 0, 0, 0, next_header, 64];
        h.extend_from_slice(&[0xfd; 16]);
        h.extend_from_slice(&V6_DST);
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

    /// The datagram identity of the test IPv4 header (source 198.18.0.1,
    /// ID 0).
    const V4_FRAG: FragKey = FragKey {
        src: [198, 18, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ident: 0,
        family: 4,
    };

    fn v4(l4: L4) -> Parsed {
        Parsed::Ip {
            dst: Addr::V4(V4_DST),
            l4,
        }
    }

    fn v6(l4: L4) -> Parsed {
        Parsed::Ip {
            dst: Addr::V6(V6_DST),
            l4,
        }
    }

    #[test]
    fn parses() {
        let cases: Vec<(&str, Vec<u8>, Parsed)> = vec![
            (
                "v4 esp",
                cat(&[&eth(ETH_P_IP), &ipv4(50, 0), ESP]),
                v4(L4::Esp),
            ),
            (
                "v4 opts esp",
                cat(&[&eth(ETH_P_IP), &ipv4(50, 8), ESP]),
                v4(L4::Esp),
            ),
            (
                "v6 esp",
                cat(&[&eth(ETH_P_IPV6), &ipv6(50), ESP]),
                v6(L4::Esp),
            ),
            (
                "vlan v4 esp",
                cat(&[&eth(ETH_P_8021Q), &[0, 7, 0x08, 0x00], &ipv4(50, 0), ESP]),
                v4(L4::Esp),
            ),
            (
                "udp 4500 esp",
                cat(&[&eth(ETH_P_IP), &ipv4(17, 0), &udp(4500, ESP)]),
                v4(L4::EspInUdp),
            ),
            (
                "udp 4500 ike",
                cat(&[
                    &eth(ETH_P_IP),
                    &ipv4(17, 0),
                    &udp(4500, &[0, 0, 0, 0, 1, 2]),
                ]),
                v4(L4::Ike),
            ),
            (
                "udp 500",
                cat(&[&eth(ETH_P_IP), &ipv4(17, 0), &udp(500, &[1; 28])]),
                v4(L4::Ike),
            ),
            (
                "v6 udp 4500",
                cat(&[&eth(ETH_P_IPV6), &ipv6(17), &udp(4500, ESP)]),
                v6(L4::EspInUdp),
            ),
            (
                "udp 4500 keepalive",
                cat(&[&eth(ETH_P_IP), &ipv4(17, 0), &udp(4500, &[0xff])]),
                v4(L4::Other),
            ),
            (
                "udp 4500 keepalive padded to 60 bytes",
                {
                    let mut f = cat(&[&eth(ETH_P_IP), &ipv4(17, 0), &udp(4500, &[0xff])]);
                    f.resize(60, 0xee);
                    f
                },
                v4(L4::Other),
            ),
            (
                "udp 4500 marker cut short",
                {
                    let mut f = cat(&[&eth(ETH_P_IP), &ipv4(17, 0), &udp(4500, ESP)]);
                    f.truncate(14 + 20 + 8 + 3);
                    f
                },
                v4(L4::Truncated),
            ),
            (
                "udp header cut short",
                cat(&[&eth(ETH_P_IP), &ipv4(17, 0), &[0x11, 0x94, 0x11]]),
                v4(L4::Truncated),
            ),
            (
                "esp header cut short",
                cat(&[&eth(ETH_P_IP), &ipv4(50, 0), &ESP[..7]]),
                v4(L4::Truncated),
            ),
            (
                "udp 53",
                cat(&[&eth(ETH_P_IP), &ipv4(17, 0), &udp(53, &[1; 12])]),
                v4(L4::Other),
            ),
            (
                "tcp",
                cat(&[&eth(ETH_P_IP), &ipv4(6, 0), &[0; 20]]),
                v4(L4::Other),
            ),
            ("arp", cat(&[&eth(0x0806), &[0; 28]]), Parsed::NonIp),
            (
                "two vlan tags",
                cat(&[&eth(ETH_P_8021Q), &[0, 7, 0x81, 0x00], &[0, 8, 0x08, 0]]),
                Parsed::NonIp,
            ),
            (
                "vlan tag cut short",
                cat(&[&eth(ETH_P_8021Q), &[0, 7]]),
                Parsed::Truncated,
            ),
            (
                "v4 truncated",
                cat(&[&eth(ETH_P_IP), &ipv4(50, 0)[..12]]),
                Parsed::Truncated,
            ),
            (
                "v4 opts truncated",
                cat(&[&eth(ETH_P_IP), &ipv4(50, 8)[..24]]),
                Parsed::Truncated,
            ),
            (
                "v6 truncated",
                cat(&[&eth(ETH_P_IPV6), &ipv6(50)[..39]]),
                Parsed::Truncated,
            ),
            ("eth only", eth(ETH_P_IP), Parsed::Truncated),
            ("runt", vec![0; 6], Parsed::Truncated),
            (
                "bad ihl",
                {
                    let mut f = cat(&[&eth(ETH_P_IP), &ipv4(50, 0), ESP]);
                    f[14] = 0x44;
                    f
                },
                Parsed::Truncated,
            ),
            (
                "v6 in v4 ethertype",
                cat(&[&eth(ETH_P_IP), &ipv6(50), ESP]),
                Parsed::Truncated,
            ),
            (
                "v4 first fragment of esp",
                {
                    let mut f = cat(&[&eth(ETH_P_IP), &ipv4(50, 0), ESP]);
                    f[14 + 6] = 0x20; // MF
                    f
                },
                v4(L4::EspFragment),
            ),
            (
                "v4 non-first fragment of udp",
                {
                    let mut f = cat(&[&eth(ETH_P_IP), &ipv4(17, 0), ESP]);
                    f[14 + 7] = 0x10; // offset 16 x 8 bytes
                    f
                },
                v4(L4::UdpLaterFragment { key: V4_FRAG }),
            ),
            (
                "v4 first fragment of udp 4500 esp",
                {
                    let mut f = cat(&[&eth(ETH_P_IP), &ipv4(17, 0), &udp(4500, ESP)]);
                    f[14 + 6] = 0x20; // MF
                    f
                },
                v4(L4::UdpFirstFragment {
                    inner: UdpKind::EspInUdp,
                    key: V4_FRAG,
                }),
            ),
            (
                "v4 first fragment of ike",
                {
                    let mut f = cat(&[&eth(ETH_P_IP), &ipv4(17, 0), &udp(500, &[1; 28])]);
                    f[14 + 6] = 0x20;
                    f
                },
                v4(L4::UdpFirstFragment {
                    inner: UdpKind::Ike,
                    key: V4_FRAG,
                }),
            ),
            (
                "v4 icmp frag needed quoting esp",
                cat(&[
                    &eth(ETH_P_IP),
                    &ipv4(1, 0),
                    &[3, 4, 0, 0, 0, 0, 5, 0],
                    &ipv4(50, 0),
                    ESP,
                ]),
                v4(L4::IcmpTooBig),
            ),
            (
                "v4 icmp frag needed quoting tcp",
                cat(&[
                    &eth(ETH_P_IP),
                    &ipv4(1, 0),
                    &[3, 4, 0, 0, 0, 0, 5, 0],
                    &ipv4(6, 0),
                ]),
                v4(L4::Other),
            ),
            (
                "v4 icmp echo",
                cat(&[&eth(ETH_P_IP), &ipv4(1, 0), &[8, 0, 0, 0, 0, 0, 0, 1]]),
                v4(L4::Other),
            ),
            (
                "v4 icmp frag needed cut short",
                cat(&[
                    &eth(ETH_P_IP),
                    &ipv4(1, 0),
                    &[3, 4, 0, 0, 0, 0, 5, 0],
                    &ipv4(50, 0)[..12],
                ]),
                v4(L4::Truncated),
            ),
            (
                "v4 icmp frag needed quoting esp in udp",
                cat(&[
                    &eth(ETH_P_IP),
                    &ipv4(1, 0),
                    &[3, 4, 0, 0, 0, 0, 5, 0],
                    &ipv4(17, 0),
                    &udp(4500, ESP),
                ]),
                v4(L4::IcmpTooBig),
            ),
            (
                "v4 icmp frag needed quoting ike on 4500",
                cat(&[
                    &eth(ETH_P_IP),
                    &ipv4(1, 0),
                    &[3, 4, 0, 0, 0, 0, 5, 0],
                    &ipv4(17, 0),
                    &udp(4500, &[0, 0, 0, 0, 1, 2, 3, 4]),
                ]),
                v4(L4::Other),
            ),
            (
                "v4 icmp frag needed quoting ike on 500",
                cat(&[
                    &eth(ETH_P_IP),
                    &ipv4(1, 0),
                    &[3, 4, 0, 0, 0, 0, 5, 0],
                    &ipv4(17, 0),
                    &udp(500, &[1; 8]),
                ]),
                v4(L4::Other),
            ),
            (
                "v6 packet too big quoting esp",
                cat(&[
                    &eth(ETH_P_IPV6),
                    &ipv6(58),
                    &[2, 0, 0, 0, 0, 0, 5, 0],
                    &ipv6(50),
                    ESP,
                ]),
                v6(L4::IcmpTooBig),
            ),
            (
                "v6 fragment header cut short",
                cat(&[&eth(ETH_P_IPV6), &ipv6(44), &[50, 0, 0]]),
                v6(L4::Truncated),
            ),
            (
                "v4 fragment of tcp",
                {
                    let mut f = cat(&[&eth(ETH_P_IP), &ipv4(6, 0), &[0; 20]]);
                    f[14 + 6] = 0x20;
                    f
                },
                v4(L4::Other),
            ),
            (
                "v6 fragment header",
                cat(&[&eth(ETH_P_IPV6), &ipv6(44), &[50, 0, 0, 1, 0, 0, 0, 1], ESP]),
                v6(L4::EspFragment),
            ),
            (
                "v6 later fragment of udp",
                cat(&[
                    &eth(ETH_P_IPV6),
                    &ipv6(44),
                    &[17, 0, 0, 0x81, 0, 0, 0, 9],
                    ESP,
                ]),
                v6(L4::UdpLaterFragment {
                    key: FragKey {
                        src: [0xfd; 16],
                        ident: 9,
                        family: 6,
                    },
                }),
            ),
            (
                "v6 ext header",
                cat(&[&eth(ETH_P_IPV6), &ipv6(0), &[50, 0, 0, 0, 0, 0, 0, 0], ESP]),
                v6(L4::Other),
            ),
        ];
        for (name, frame, want) in cases {
            assert_eq!(parse(frame.as_slice()), want, "{name}");
        }
    }

    #[test]
    fn link_scope() {
        for (a, want) in [
            ([224, 0, 0, 251], true),
            ([239, 255, 255, 250], true),
            ([255, 255, 255, 255], true),
            ([169, 254, 1, 1], true),
            ([10, 0, 0, 1], false),
            ([198, 18, 0, 1], false),
            ([223, 255, 255, 255], false),
            ([169, 253, 0, 1], false),
        ] {
            assert_eq!(Addr::V4(a).is_link_scope(), want, "{a:?}");
        }
        let v6 = |head: [u8; 2]| {
            let mut a = [0u8; 16];
            a[..2].copy_from_slice(&head);
            a[15] = 1;
            Addr::V6(a)
        };
        assert!(v6([0xff, 0x02]).is_link_scope());
        assert!(v6([0xfe, 0x80]).is_link_scope());
        assert!(v6([0xfe, 0xbf]).is_link_scope());
        assert!(!v6([0xfe, 0xc0]).is_link_scope());
        assert!(!v6([0xfd, 0x00]).is_link_scope());
        assert!(!v6([0x20, 0x01]).is_link_scope());
    }
}
