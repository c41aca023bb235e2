//! Traffic selectors (RFC 7296 section 3.13, RFC 4301 section 4.4.1): which
//! inner packets an SA may carry.
//!
//! A [`TrafficSelector`] is written in packet orientation: `src` and `dst`
//! are the inner packet's source and destination. For an outbound SA the
//! source is the local side; for an inbound SA it is the remote side
//! ([`TrafficSelector::reversed`] turns one into the other).
//!
//! Ports are compared for TCP, UDP and SCTP packets that are not fragments.
//! A packet whose ports cannot be read (a fragment, another protocol, a
//! transport header cut short) matches only selectors whose port ranges are
//! both "any". ICMP type/code selectors (RFC 4301 section 4.4.1.3) are not
//! supported.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use thiserror::Error;

use crate::wire::{ip_proto, ipv4, ipv6, WireError};

/// Why a selector could not be built.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SelectorError {
    #[error("address range mixes IPv4 and IPv6")]
    FamilyMismatch,
    #[error("address range start {0} is above its end {1}")]
    EmptyAddressRange(IpAddr, IpAddr),
    #[error("prefix length {0} is too long for the address family")]
    BadPrefixLength(u8),
    #[error("port range start {0} is above its end {1}")]
    EmptyPortRange(u16, u16),
    #[error("cannot parse address range {0:?}")]
    Parse(String),
}

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddrFamily {
    V4,
    V6,
}

impl AddrFamily {
    pub fn of(addr: &IpAddr) -> AddrFamily {
        match addr {
            IpAddr::V4(_) => AddrFamily::V4,
            IpAddr::V6(_) => AddrFamily::V6,
        }
    }

    fn bits(self) -> u8 {
        match self {
            AddrFamily::V4 => 32,
            AddrFamily::V6 => 128,
        }
    }
}

fn to_raw(addr: &IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(*a)),
        IpAddr::V6(a) => u128::from(*a),
    }
}

fn from_raw(family: AddrFamily, raw: u128) -> IpAddr {
    match family {
        AddrFamily::V4 => IpAddr::V4(Ipv4Addr::from(raw as u32)),
        AddrFamily::V6 => IpAddr::V6(Ipv6Addr::from(raw)),
    }
}

/// An inclusive range of IPv4 or IPv6 addresses.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpRange {
    family: AddrFamily,
    start: u128,
    end: u128,
}

impl IpRange {
    /// `start..=end`; both of one family, `start <= end`.
    pub fn new(start: IpAddr, end: IpAddr) -> Result<IpRange, SelectorError> {
        let family = AddrFamily::of(&start);
        if family != AddrFamily::of(&end) {
            return Err(SelectorError::FamilyMismatch);
        }
        let (s, e) = (to_raw(&start), to_raw(&end));
        if s > e {
            return Err(SelectorError::EmptyAddressRange(start, end));
        }
        Ok(IpRange {
            family,
            start: s,
            end: e,
        })
    }

    /// `addr/len`; host bits of `addr` are ignored.
    pub fn prefix(addr: IpAddr, len: u8) -> Result<IpRange, SelectorError> {
        let family = AddrFamily::of(&addr);
        let bits = family.bits();
        if len > bits {
            return Err(SelectorError::BadPrefixLength(len));
        }
        let host_bits = u32::from(bits - len);
        let host_mask: u128 = if host_bits == 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        let raw = to_raw(&addr);
        Ok(IpRange {
            family,
            start: raw & !host_mask,
            end: raw | host_mask,
        })
    }

    /// A single address.
    pub fn single(addr: IpAddr) -> IpRange {
        let raw = to_raw(&addr);
        IpRange {
            family: AddrFamily::of(&addr),
            start: raw,
            end: raw,
        }
    }

    /// Every address of `family`.
    pub fn any(family: AddrFamily) -> IpRange {
        let end = match family {
            AddrFamily::V4 => u128::from(u32::MAX),
            AddrFamily::V6 => u128::MAX,
        };
        IpRange {
            family,
            start: 0,
            end,
        }
    }

    pub fn family(&self) -> AddrFamily {
        self.family
    }

    pub fn start(&self) -> IpAddr {
        from_raw(self.family, self.start)
    }

    pub fn end(&self) -> IpAddr {
        from_raw(self.family, self.end)
    }

    pub fn contains(&self, addr: IpAddr) -> bool {
        AddrFamily::of(&addr) == self.family && self.contains_raw(to_raw(&addr))
    }

    /// True if every address of `other` is in `self`.
    pub fn covers(&self, other: &IpRange) -> bool {
        self.family == other.family && self.start <= other.start && other.end <= self.end
    }

    #[inline]
    fn contains_raw(&self, raw: u128) -> bool {
        self.start <= raw && raw <= self.end
    }

    /// The prefix length if the range is exactly one CIDR prefix.
    pub fn prefix_len(&self) -> Option<u8> {
        let span = self.start ^ self.end;
        // A prefix: span is 2^k - 1 and start has those k bits clear.
        if span & span.wrapping_add(1) != 0 || self.start & span != 0 {
            return None;
        }
        let host_bits = 128 - span.leading_zeros() as u8;
        self.family.bits().checked_sub(host_bits)
    }
}

impl fmt::Display for IpRange {
    /// `10.0.0.0/24` when the range is a prefix, `a-b` otherwise.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.prefix_len() {
            Some(len) => write!(f, "{}/{}", self.start(), len),
            None => write!(f, "{}-{}", self.start(), self.end()),
        }
    }
}

impl fmt::Debug for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IpRange({self})")
    }
}

impl FromStr for IpRange {
    type Err = SelectorError;

    /// Accepts `addr`, `addr/len` and `start-end`.
    fn from_str(s: &str) -> Result<IpRange, SelectorError> {
        let bad = || SelectorError::Parse(s.to_owned());
        if let Some((addr, len)) = s.split_once('/') {
            let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
            let len: u8 = len.trim().parse().map_err(|_| bad())?;
            IpRange::prefix(addr, len)
        } else if let Some((start, end)) = s.split_once('-') {
            let start: IpAddr = start.trim().parse().map_err(|_| bad())?;
            let end: IpAddr = end.trim().parse().map_err(|_| bad())?;
            IpRange::new(start, end)
        } else {
            Ok(IpRange::single(s.trim().parse().map_err(|_| bad())?))
        }
    }
}

/// An inclusive range of ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    start: u16,
    end: u16,
}

impl PortRange {
    /// Every port.
    pub const ANY: PortRange = PortRange {
        start: 0,
        end: u16::MAX,
    };

    pub fn new(start: u16, end: u16) -> Result<PortRange, SelectorError> {
        if start > end {
            return Err(SelectorError::EmptyPortRange(start, end));
        }
        Ok(PortRange { start, end })
    }

    pub const fn single(port: u16) -> PortRange {
        PortRange {
            start: port,
            end: port,
        }
    }

    pub fn start(&self) -> u16 {
        self.start
    }

    pub fn end(&self) -> u16 {
        self.end
    }

    pub fn is_any(&self) -> bool {
        *self == PortRange::ANY
    }

    #[inline]
    pub fn contains(&self, port: u16) -> bool {
        self.start <= port && port <= self.end
    }
}

impl Default for PortRange {
    fn default() -> Self {
        PortRange::ANY
    }
}

/// One traffic selector: source and destination address ranges of one
/// family, an IP protocol (or any), and source and destination port ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrafficSelector {
    src: IpRange,
    dst: IpRange,
    protocol: Option<u8>,
    src_ports: PortRange,
    dst_ports: PortRange,
}

impl TrafficSelector {
    /// Any protocol and port between `src` and `dst` (of one family).
    pub fn new(src: IpRange, dst: IpRange) -> Result<TrafficSelector, SelectorError> {
        if src.family != dst.family {
            return Err(SelectorError::FamilyMismatch);
        }
        Ok(TrafficSelector {
            src,
            dst,
            protocol: None,
            src_ports: PortRange::ANY,
            dst_ports: PortRange::ANY,
        })
    }

    /// Every packet of `family`.
    pub fn any(family: AddrFamily) -> TrafficSelector {
        TrafficSelector {
            src: IpRange::any(family),
            dst: IpRange::any(family),
            protocol: None,
            src_ports: PortRange::ANY,
            dst_ports: PortRange::ANY,
        }
    }

    /// Restricts to one IP protocol (as RFC 7296, 0 means any).
    pub fn with_protocol(mut self, protocol: u8) -> TrafficSelector {
        self.protocol = (protocol != 0).then_some(protocol);
        self
    }

    pub fn with_src_ports(mut self, ports: PortRange) -> TrafficSelector {
        self.src_ports = ports;
        self
    }

    pub fn with_dst_ports(mut self, ports: PortRange) -> TrafficSelector {
        self.dst_ports = ports;
        self
    }

    /// The same selector for the opposite direction (source and destination
    /// swapped).
    pub fn reversed(&self) -> TrafficSelector {
        TrafficSelector {
            src: self.dst,
            dst: self.src,
            protocol: self.protocol,
            src_ports: self.dst_ports,
            dst_ports: self.src_ports,
        }
    }

    pub fn family(&self) -> AddrFamily {
        self.src.family
    }

    /// True if this selector matches every packet of its family that
    /// [`FlowKey::parse`] accepts: all addresses, any protocol, any ports.
    pub fn is_any(&self) -> bool {
        let family = self.src.family;
        self.src == IpRange::any(family)
            && self.dst == IpRange::any(family)
            && self.protocol.is_none()
            && self.src_ports.is_any()
            && self.dst_ports.is_any()
    }

    pub fn src(&self) -> &IpRange {
        &self.src
    }

    pub fn dst(&self) -> &IpRange {
        &self.dst
    }

    /// `None` means any protocol.
    pub fn protocol(&self) -> Option<u8> {
        self.protocol
    }

    pub fn src_ports(&self) -> PortRange {
        self.src_ports
    }

    pub fn dst_ports(&self) -> PortRange {
        self.dst_ports
    }

    /// True if the IP packet `packet` (from its IP header on) is in this
    /// selector. A packet that does not parse matches nothing.
    pub fn matches(&self, packet: &[u8]) -> bool {
        FlowKey::parse(packet).is_ok_and(|key| self.matches_flow(&key))
    }

    /// True if a parsed packet is in this selector.
    #[inline]
    pub fn matches_flow(&self, key: &FlowKey) -> bool {
        if self.src.family != key.family
            || !self.src.contains_raw(key.src)
            || !self.dst.contains_raw(key.dst)
        {
            return false;
        }
        if let Some(protocol) = self.protocol {
            if protocol != key.protocol {
                return false;
            }
        }
        if self.src_ports.is_any() && self.dst_ports.is_any() {
            return true;
        }
        match key.ports {
            Some((src, dst)) => self.src_ports.contains(src) && self.dst_ports.contains(dst),
            None => false,
        }
    }
}

/// True if `packet` is in at least one of `selectors` (parsing it once).
#[inline]
pub fn matches_any(selectors: &[TrafficSelector], packet: &[u8]) -> bool {
    FlowKey::parse(packet).is_ok_and(|key| selectors.iter().any(|ts| ts.matches_flow(&key)))
}

/// True if `next` is an IPv6 extension header that [`FlowKey::parse`] walks
/// (and so may refuse); any other next header ends the walk at once.
#[inline]
pub fn is_walked_extension_header(next: u8) -> bool {
    matches!(
        next,
        ip_proto::HOP_BY_HOP
            | ip_proto::IPV6_ROUTING
            | ip_proto::IPV6_DEST_OPTS
            | ip_proto::IPV6_FRAGMENT
            | ip_proto::AH
    )
}

/// What selectors look at in a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    family: AddrFamily,
    src: u128,
    dst: u128,
    /// The upper-layer protocol (after IPv6 extension headers).
    pub protocol: u8,
    /// Source and destination ports of a non-fragment TCP, UDP or SCTP packet.
    pub ports: Option<(u16, u16)>,
}

/// IPv6 extension headers walked before giving up.
const MAX_EXTENSION_HEADERS: usize = 8;

impl FlowKey {
    /// Parses an IPv4 or IPv6 packet: the IP header must be valid and
    /// complete (lengths as in the wire views; the IPv4 checksum is not
    /// checked here), as must the IPv6 extension header chain.
    pub fn parse(packet: &[u8]) -> Result<FlowKey, WireError> {
        match packet.first().map(|b| b >> 4) {
            Some(4) => {
                let ip = ipv4::Packet::new_checked(packet)?;
                let protocol = ip.protocol();
                let ports = if ip.is_fragment() {
                    None
                } else {
                    ports_of(protocol, ip.payload())
                };
                Ok(FlowKey {
                    family: AddrFamily::V4,
                    src: u128::from(u32::from(ip.src_addr())),
                    dst: u128::from(u32::from(ip.dst_addr())),
                    protocol,
                    ports,
                })
            }
            Some(6) => {
                let ip = ipv6::Packet::new_checked(packet)?;
                let (protocol, fragment, rest) =
                    skip_extension_headers(ip.next_header(), ip.payload())?;
                let ports = if fragment {
                    None
                } else {
                    ports_of(protocol, rest)
                };
                Ok(FlowKey {
                    family: AddrFamily::V6,
                    src: u128::from(ip.src_addr()),
                    dst: u128::from(ip.dst_addr()),
                    protocol,
                    ports,
                })
            }
            Some(_) => Err(WireError::BadVersion),
            None => Err(WireError::Truncated),
        }
    }

    pub fn family(&self) -> AddrFamily {
        self.family
    }

    pub fn src_addr(&self) -> IpAddr {
        from_raw(self.family, self.src)
    }

    pub fn dst_addr(&self) -> IpAddr {
        from_raw(self.family, self.dst)
    }
}

#[inline]
fn ports_of(protocol: u8, l4: &[u8]) -> Option<(u16, u16)> {
    match (protocol, l4) {
        (ip_proto::TCP | ip_proto::UDP | ip_proto::SCTP, [a, b, c, d, ..]) => {
            Some((u16::from_be_bytes([*a, *b]), u16::from_be_bytes([*c, *d])))
        }
        _ => None,
    }
}

/// Walks hop-by-hop, routing, destination options, fragment and AH headers.
/// Returns the upper-layer protocol, whether the packet is a fragment, and
/// the bytes after the last extension header.
fn skip_extension_headers(mut next: u8, mut rest: &[u8]) -> Result<(u8, bool, &[u8]), WireError> {
    let mut fragment = false;
    for _ in 0..MAX_EXTENSION_HEADERS {
        let len = match next {
            ip_proto::HOP_BY_HOP | ip_proto::IPV6_ROUTING | ip_proto::IPV6_DEST_OPTS => {
                match rest {
                    [_, hdr_len, ..] => (usize::from(*hdr_len) + 1) * 8,
                    _ => return Err(WireError::Truncated),
                }
            }
            ip_proto::IPV6_FRAGMENT => match rest {
                [_, _, off_hi, off_lo, ..] => {
                    let word = u16::from_be_bytes([*off_hi, *off_lo]);
                    // Offset (13 bits) or the M flag: part of a fragmented packet.
                    if word & 0xfff9 != 0 {
                        fragment = true;
                    }
                    8
                }
                _ => return Err(WireError::Truncated),
            },
            ip_proto::AH => match rest {
                [_, payload_len, ..] => (usize::from(*payload_len) + 2) * 4,
                _ => return Err(WireError::Truncated),
            },
            protocol => return Ok((protocol, fragment, rest)),
        };
        if rest.len() < len {
            return Err(WireError::Truncated);
        }
        next = rest[0];
        rest = &rest[len..];
    }
    Err(WireError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, frag: u16) -> Vec<u8> {
        let mut p = vec![0u8; 28];
        ipv4::Repr {
            src: src.into(),
            dst: dst.into(),
            protocol: ip_proto::UDP,
            payload_len: 8,
            ttl: 64,
            dscp_ecn: 0,
            ident: 1,
            dont_frag: false,
        }
        .emit(&mut p)
        .unwrap();
        p[6..8].copy_from_slice(&frag.to_be_bytes());
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p[24..26].copy_from_slice(&8u16.to_be_bytes());
        p
    }

    #[test]
    fn ranges() {
        let r: IpRange = "10.1.0.0/16".parse().unwrap();
        assert!(r.contains("10.1.255.255".parse().unwrap()));
        assert!(!r.contains("10.2.0.0".parse().unwrap()));
        assert!(!r.contains("::a01:0".parse().unwrap()));
        assert_eq!(r.to_string(), "10.1.0.0/16");
        let r: IpRange = "10.0.0.3-10.0.0.9".parse().unwrap();
        assert_eq!(r.to_string(), "10.0.0.3-10.0.0.9");
        assert_eq!(IpRange::any(AddrFamily::V6).to_string(), "::/0");
        assert_eq!(IpRange::any(AddrFamily::V4).to_string(), "0.0.0.0/0");
        assert_eq!(
            "fd00::1".parse::<IpRange>().unwrap().prefix_len(),
            Some(128)
        );
        assert!("10.0.0.9-10.0.0.3".parse::<IpRange>().is_err());
        assert!("10.0.0.0-fd00::".parse::<IpRange>().is_err());
        assert!("10.0.0.0/33".parse::<IpRange>().is_err());
        assert!("x".parse::<IpRange>().is_err());
    }

    #[test]
    fn v4_selectors() {
        let ts = TrafficSelector::new(
            "10.1.0.0/16".parse().unwrap(),
            "10.2.0.0/16".parse().unwrap(),
        )
        .unwrap()
        .with_protocol(ip_proto::UDP)
        .with_dst_ports(PortRange::new(1000, 2000).unwrap());
        assert!(ts.matches(&v4_udp([10, 1, 0, 1], [10, 2, 3, 4], 5, 1500, 0)));
        assert!(!ts.matches(&v4_udp([10, 1, 0, 1], [10, 2, 3, 4], 5, 2001, 0)));
        assert!(!ts.matches(&v4_udp([10, 3, 0, 1], [10, 2, 3, 4], 5, 1500, 0)));
        assert!(!ts
            .reversed()
            .matches(&v4_udp([10, 1, 0, 1], [10, 2, 3, 4], 5, 1500, 0)));
        assert!(ts
            .reversed()
            .matches(&v4_udp([10, 2, 3, 4], [10, 1, 0, 1], 1500, 5, 0)));
        // A fragment has no ports: only port-less selectors match.
        assert!(!ts.matches(&v4_udp([10, 1, 0, 1], [10, 2, 3, 4], 5, 1500, 0x2000)));
        let any_port = ts.with_dst_ports(PortRange::ANY);
        assert!(any_port.matches(&v4_udp([10, 1, 0, 1], [10, 2, 3, 4], 5, 1500, 0x2000)));
        assert!(!any_port.with_protocol(ip_proto::TCP).matches(&v4_udp(
            [10, 1, 0, 1],
            [10, 2, 3, 4],
            5,
            1500,
            0
        )));
        assert!(!TrafficSelector::any(AddrFamily::V6).matches(&v4_udp([1; 4], [2; 4], 1, 2, 0)));
        assert!(!ts.matches(&[]));
        assert!(!ts.matches(&[0x45; 19]));
    }

    #[test]
    fn v6_extension_headers() {
        // IPv6 / hop-by-hop (8 bytes) / fragment (first, M=1) / UDP.
        let mut p = vec![0u8; 40 + 8 + 8 + 8];
        ipv6::Repr {
            src: "fd00::1".parse().unwrap(),
            dst: "fd00::2".parse().unwrap(),
            next_header: ip_proto::HOP_BY_HOP,
            payload_len: 24,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
        }
        .emit(&mut p)
        .unwrap();
        p[40] = ip_proto::IPV6_FRAGMENT;
        p[48] = ip_proto::UDP;
        p[56..58].copy_from_slice(&53u16.to_be_bytes());
        p[58..60].copy_from_slice(&4242u16.to_be_bytes());
        let key = FlowKey::parse(&p).unwrap();
        assert_eq!(key.protocol, ip_proto::UDP);
        assert_eq!(key.ports, Some((53, 4242)));
        p[51] = 1; // M flag
        let key = FlowKey::parse(&p).unwrap();
        assert_eq!(key.ports, None);
        // Truncated chain.
        p[41] = 5;
        assert!(FlowKey::parse(&p).is_err());
    }
}
