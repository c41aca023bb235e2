//! The frames the generator sends: Ethernet + IPv4 (20 bytes, DF set) +
//! UDP (checksum 0, legal over IPv4) + a [`crate::payload`] header and
//! filler. Sizes are of the IP packet, as a tunnel's inner MTU counts them.

use crate::payload;
use std::net::Ipv4Addr;
use std::str::FromStr;
use xdpsec_dataplane::wire::{ethernet, ip_proto, ipv4, udp};

/// Ethernet + IPv4 + UDP headers.
pub const HEADERS: usize = ethernet::HEADER_LEN + 20 + udp::HEADER_LEN;

/// Smallest IP packet that carries a payload header.
pub const MIN_IP_SIZE: usize = 20 + udp::HEADER_LEN + payload::LEN;

/// The IMIX of the issue: 7 : 4 : 1 of 64, 576 and 1500-byte IP packets,
/// interleaved so that any 12 consecutive packets hold the mix.
pub const IMIX_CYCLE: [usize; 12] = [64, 576, 64, 64, 576, 64, 1500, 64, 576, 64, 64, 576];

/// Packet sizes to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeSpec {
    /// Every IP packet this long.
    Fixed(usize),
    /// [`IMIX_CYCLE`], each size capped at the path's MTU.
    Imix,
}

impl SizeSpec {
    /// The IP packet sizes of one cycle, each capped at `mtu`.
    pub fn cycle(self, mtu: usize) -> Vec<usize> {
        match self {
            SizeSpec::Fixed(n) => vec![n.min(mtu)],
            SizeSpec::Imix => IMIX_CYCLE.iter().map(|&n| n.min(mtu)).collect(),
        }
    }

    /// Mean IP packet size of a cycle at `mtu`.
    pub fn mean(self, mtu: usize) -> f64 {
        let c = self.cycle(mtu);
        c.iter().sum::<usize>() as f64 / c.len() as f64
    }

    /// `64`, `1400`, `imix`.
    pub fn label(self) -> String {
        match self {
            SizeSpec::Fixed(n) => n.to_string(),
            SizeSpec::Imix => "imix".into(),
        }
    }
}

impl FromStr for SizeSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("imix") {
            return Ok(SizeSpec::Imix);
        }
        let n: usize = s
            .parse()
            .map_err(|_| format!("size {s:?}: a number of bytes or `imix`"))?;
        if !(MIN_IP_SIZE..=9000).contains(&n) {
            return Err(format!("size {n}: between {MIN_IP_SIZE} and 9000 bytes"));
        }
        Ok(SizeSpec::Fixed(n))
    }
}

/// Where the generated packets go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    /// Source MAC (the generator's interface).
    pub src_mac: [u8; 6],
    /// Destination MAC (the next hop: the gateway's LAN interface).
    pub dst_mac: [u8; 6],
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address (the sink's).
    pub dst: Ipv4Addr,
    /// UDP source port of stream 0; stream `i` uses `src_port + i`.
    pub src_port: u16,
    /// UDP destination port.
    pub dst_port: u16,
}

/// A frame of `ip_size` bytes of IP packet for `stream`, payload header
/// left zero (the generator stamps it per packet); the filler is a fixed
/// pattern.
pub fn template(flow: &Flow, stream: u16, ip_size: usize) -> Vec<u8> {
    let ip_size = ip_size.max(MIN_IP_SIZE);
    let mut f = vec![0u8; ethernet::HEADER_LEN + ip_size];
    let udp_payload = ip_size - 20 - udp::HEADER_LEN;
    // The buffer is sized for every header: emit cannot fail.
    let _ = ethernet::Repr {
        dst: flow.dst_mac,
        src: flow.src_mac,
        ethertype: ethernet::ethertype::IPV4,
    }
    .emit(&mut f);
    let _ = ipv4::Repr {
        src: flow.src,
        dst: flow.dst,
        protocol: ip_proto::UDP,
        payload_len: udp::HEADER_LEN + udp_payload,
        ttl: 64,
        dscp_ecn: 0,
        ident: 0,
        dont_frag: true,
    }
    .emit(&mut f[ethernet::HEADER_LEN..]);
    let _ = udp::Repr {
        src_port: flow.src_port.wrapping_add(stream),
        dst_port: flow.dst_port,
        payload_len: udp_payload,
    }
    .emit(&mut f[ethernet::HEADER_LEN + 20..]);
    for (i, b) in f[HEADERS + payload::LEN..].iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    f
}

/// The payload of a frame the generator built (after [`HEADERS`]).
pub fn payload_of(frame: &mut [u8]) -> &mut [u8] {
    let at = HEADERS.min(frame.len());
    &mut frame[at..]
}

/// A received frame's IPv4 + UDP to `dst`:`port`: its IP packet length and
/// UDP payload, or `None` if it is something else.
pub fn parse_udp(frame: &[u8], dst: Ipv4Addr, port: u16) -> Option<(usize, &[u8])> {
    let eth = ethernet::Frame::new_checked(frame).ok()?;
    if eth.ethertype() != ethernet::ethertype::IPV4 {
        return None;
    }
    let ip = ipv4::Packet::new_checked(eth.payload()).ok()?;
    if ip.protocol() != ip_proto::UDP || ip.dst_addr() != dst || ip.is_fragment() {
        return None;
    }
    let total = usize::from(ip.total_len());
    let datagram = udp::Packet::new_checked(ip.payload()).ok()?;
    if datagram.dst_port() != port {
        return None;
    }
    // The views are checked: the UDP payload lies within the frame.
    let at = ethernet::HEADER_LEN + ip.header_len() + udp::HEADER_LEN;
    let len = usize::from(datagram.len()) - udp::HEADER_LEN;
    Some((total, frame.get(at..at + len)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::Stamp;

    fn flow() -> Flow {
        Flow {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src: Ipv4Addr::new(10, 1, 0, 2),
            dst: Ipv4Addr::new(10, 2, 0, 3),
            src_port: 10_000,
            dst_port: 9,
        }
    }

    #[test]
    fn templates_have_the_asked_ip_size_and_parse_back() {
        for size in [64, 512, 1400] {
            let mut f = template(&flow(), 3, size);
            assert_eq!(f.len(), 14 + size);
            Stamp {
                stream: 3,
                seq: 7,
                tx_ns: 9,
            }
            .write(payload_of(&mut f))
            .unwrap();
            let (ip_len, payload) = parse_udp(&f, flow().dst, 9).unwrap();
            assert_eq!(ip_len, size);
            assert_eq!(payload.len(), size - 28);
            let stamp = Stamp::read(payload).unwrap();
            assert_eq!((stamp.stream, stamp.seq, stamp.tx_ns), (3, 7, 9));
            let ip = ipv4::Packet::new_checked(&f[14..]).unwrap();
            assert!(ip.verify_checksum());
            assert!(ip.dont_frag());
            assert_eq!(
                udp::Packet::new_checked(ip.payload()).unwrap().src_port(),
                10_003
            );
        }
        assert!(parse_udp(&template(&flow(), 0, 64), Ipv4Addr::new(10, 2, 0, 2), 9).is_none());
        assert!(parse_udp(&template(&flow(), 0, 64), flow().dst, 10).is_none());
        assert!(parse_udp(&[0u8; 20], flow().dst, 9).is_none());
    }

    #[test]
    fn imix_is_seven_four_one_and_capped() {
        let c = SizeSpec::Imix.cycle(1500);
        assert_eq!(c.iter().filter(|&&n| n == 64).count(), 7);
        assert_eq!(c.iter().filter(|&&n| n == 576).count(), 4);
        assert_eq!(c.iter().filter(|&&n| n == 1500).count(), 1);
        assert!(SizeSpec::Imix.cycle(1400).contains(&1400));
        assert!(
            (SizeSpec::Imix.mean(1500) - (7.0 * 64.0 + 4.0 * 576.0 + 1500.0) / 12.0).abs() < 1e-9
        );
        assert_eq!("imix".parse(), Ok(SizeSpec::Imix));
        assert_eq!("512".parse(), Ok(SizeSpec::Fixed(512)));
        assert!("20".parse::<SizeSpec>().is_err());
        assert!("big".parse::<SizeSpec>().is_err());
    }
}
