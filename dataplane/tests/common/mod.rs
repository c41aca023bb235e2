//! Helpers shared by the ESP tests: SAs, inner packets, frames, and a way to
//! seal arbitrary ESP plaintext (to craft packets the transform itself would
//! never produce).
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use xdpsec_dataplane::crypto::{new_aead, Backend, SecretBytes};
use xdpsec_dataplane::esp::{self, Encapsulated, MAX_HEADROOM, MAX_TAILROOM};
use xdpsec_dataplane::sa::{
    Cipher, DfPolicy, Direction, InboundSa, Lifetimes, OutboundSa, SaConfig, UdpEncap,
};
use xdpsec_dataplane::selector::{AddrFamily, TrafficSelector};
use xdpsec_dataplane::wire::{ip_proto, ipv4, ipv6, udp};
use zeroize::Zeroizing;

/// Ethernet header length the frames leave in front of the headroom.
pub const ETH_LEN: usize = 14;
/// The SPI the helpers use unless told otherwise.
pub const SPI: u32 = 0xc0de_0101;
/// IP protocol number for experiments (RFC 3692): inner packets too short to
/// carry a UDP header use it.
pub const PROTO_EXPERIMENT: u8 = 253;

/// An address family, for the outer or the inner header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];

    pub fn addr_family(self) -> AddrFamily {
        match self {
            Family::V4 => AddrFamily::V4,
            Family::V6 => AddrFamily::V6,
        }
    }

    pub fn ip_header_len(self) -> usize {
        match self {
            Family::V4 => ipv4::MIN_HEADER_LEN,
            Family::V6 => ipv6::HEADER_LEN,
        }
    }
}

/// Every pair (encrypting backend, decrypting backend) this build has.
/// Fails the test if fewer than two backends are compiled in, since then no
/// cross-backend check would run.
pub fn backend_pairs() -> Vec<(Backend, Backend)> {
    let backends = Backend::available();
    assert!(
        backends.len() >= 2,
        "only {backends:?} compiled in: run the tests with `--features rustcrypto` so both \
         backends are checked against each other"
    );
    let mut pairs = Vec::new();
    for &a in backends {
        for &b in backends {
            pairs.push((a, b));
        }
    }
    pairs
}

/// Deterministic keying material (key || salt) for `cipher`.
pub fn keying_material(cipher: Cipher, seed: u8) -> SecretBytes {
    Zeroizing::new(
        (0..cipher.keying_material_len())
            .map(|i| {
                seed.wrapping_mul(31)
                    .wrapping_add((i as u8).wrapping_mul(7))
                    ^ 0x5a
            })
            .collect(),
    )
}

/// Tunnel endpoints from the benchmarking ranges: (local, remote) of the
/// sending side.
pub fn endpoints(family: Family) -> (IpAddr, IpAddr) {
    match family {
        Family::V4 => (
            Ipv4Addr::new(198, 18, 0, 1).into(),
            Ipv4Addr::new(198, 19, 0, 1).into(),
        ),
        Family::V6 => (
            "fd00:18::1".parse::<Ipv6Addr>().unwrap().into(),
            "fd00:19::1".parse::<Ipv6Addr>().unwrap().into(),
        ),
    }
}

/// Selectors that let every IPv4 and IPv6 packet through.
pub fn any_selectors() -> Vec<TrafficSelector> {
    vec![
        TrafficSelector::any(AddrFamily::V4),
        TrafficSelector::any(AddrFamily::V6),
    ]
}

/// Everything needed to build a matching outbound / inbound SA pair.
#[derive(Debug, Clone)]
pub struct SaParams {
    pub spi: u32,
    pub cipher: Cipher,
    pub seed: u8,
    pub outer: Family,
    pub esn: bool,
    pub udp: Option<UdpEncap>,
    pub out_backend: Backend,
    pub in_backend: Backend,
    /// Selectors of the outbound SA (packet orientation: local -> remote).
    pub out_selectors: Vec<TrafficSelector>,
    /// Selectors of the inbound SA (packet orientation: remote -> local).
    pub in_selectors: Vec<TrafficSelector>,
    pub initial_seq: u64,
    pub replay_window: u32,
    pub ttl: u8,
    pub df: DfPolicy,
    pub out_lifetimes: Lifetimes,
    pub in_lifetimes: Lifetimes,
}

impl Default for SaParams {
    fn default() -> Self {
        let backend = Backend::available()[0];
        SaParams {
            spi: SPI,
            cipher: Cipher::AesGcm128,
            seed: 1,
            outer: Family::V4,
            esn: false,
            udp: None,
            out_backend: backend,
            in_backend: backend,
            out_selectors: any_selectors(),
            in_selectors: any_selectors(),
            initial_seq: 1,
            replay_window: 1024,
            ttl: 64,
            df: DfPolicy::Copy,
            out_lifetimes: Lifetimes::default(),
            in_lifetimes: Lifetimes::default(),
        }
    }
}

/// NAT-T with the standard ports.
pub fn nat_t() -> Option<UdpEncap> {
    Some(UdpEncap {
        local_port: udp::NAT_T_PORT,
        remote_port: udp::NAT_T_PORT,
    })
}

impl SaParams {
    /// The config of one side. The inbound SA is the peer's view of the same
    /// SA, so its local and remote are swapped.
    pub fn config(&self, direction: Direction) -> SaConfig {
        let (a, b) = endpoints(self.outer);
        let (local, remote, selectors, backend, lifetimes, udp) = match direction {
            Direction::Outbound => (
                a,
                b,
                self.out_selectors.clone(),
                self.out_backend,
                self.out_lifetimes,
                self.udp,
            ),
            Direction::Inbound => (
                b,
                a,
                self.in_selectors.clone(),
                self.in_backend,
                self.in_lifetimes,
                self.udp.map(|u| UdpEncap {
                    local_port: u.remote_port,
                    remote_port: u.local_port,
                }),
            ),
        };
        let mut config = SaConfig::new(
            self.spi,
            direction,
            self.cipher,
            keying_material(self.cipher, self.seed),
            local,
            remote,
            selectors,
        );
        config.backend = backend;
        config.esn = self.esn;
        config.udp_encap = udp;
        config.replay_window = self.replay_window;
        config.ttl = self.ttl;
        config.df = self.df;
        config.lifetimes = lifetimes;
        config.initial_seq = self.initial_seq;
        config
    }

    pub fn outbound(&self) -> OutboundSa {
        OutboundSa::new(self.config(Direction::Outbound)).expect("outbound SA config")
    }

    pub fn inbound(&self) -> InboundSa {
        InboundSa::new(self.config(Direction::Inbound)).expect("inbound SA config")
    }

    pub fn pair(&self) -> (OutboundSa, InboundSa) {
        (self.outbound(), self.inbound())
    }
}

/// The default inner addresses: 10.1.0.1 -> 10.2.0.1, fd00:1::1 -> fd00:2::1.
pub fn inner_addrs(family: Family) -> (IpAddr, IpAddr) {
    match family {
        Family::V4 => (
            Ipv4Addr::new(10, 1, 0, 1).into(),
            Ipv4Addr::new(10, 2, 0, 1).into(),
        ),
        Family::V6 => (
            "fd00:1::1".parse::<Ipv6Addr>().unwrap().into(),
            "fd00:2::1".parse::<Ipv6Addr>().unwrap().into(),
        ),
    }
}

/// Options for [`inner_packet_with`].
#[derive(Debug, Clone, Copy)]
pub struct InnerSpec {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Bytes after the IP header. At least 8: a UDP datagram (ports below);
    /// fewer: raw bytes with protocol 253.
    pub payload_len: usize,
    pub src_port: u16,
    pub dst_port: u16,
    /// IPv4 TOS / IPv6 traffic class.
    pub tos: u8,
    /// IPv4 DF.
    pub df: bool,
}

impl InnerSpec {
    pub fn new(family: Family, payload_len: usize) -> InnerSpec {
        let (src, dst) = inner_addrs(family);
        InnerSpec {
            src,
            dst,
            payload_len,
            src_port: 5001,
            dst_port: 5201,
            tos: 0x2a,
            df: payload_len.is_multiple_of(2),
        }
    }
}

/// An inner IPv4 or IPv6 packet with `payload_len` bytes after the IP header.
pub fn inner_packet(family: Family, payload_len: usize) -> Vec<u8> {
    inner_packet_with(InnerSpec::new(family, payload_len))
}

pub fn inner_packet_with(spec: InnerSpec) -> Vec<u8> {
    let protocol = if spec.payload_len >= udp::HEADER_LEN {
        ip_proto::UDP
    } else {
        PROTO_EXPERIMENT
    };
    let ip_len = match spec.src {
        IpAddr::V4(_) => ipv4::MIN_HEADER_LEN,
        IpAddr::V6(_) => ipv6::HEADER_LEN,
    };
    let mut packet = vec![0u8; ip_len + spec.payload_len];
    for (i, byte) in packet[ip_len..].iter_mut().enumerate() {
        *byte = (i as u8)
            .wrapping_mul(13)
            .wrapping_add(spec.payload_len as u8);
    }
    match (spec.src, spec.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => ipv4::Repr {
            src,
            dst,
            protocol,
            payload_len: spec.payload_len,
            ttl: 63,
            dscp_ecn: spec.tos,
            ident: spec.payload_len as u16,
            dont_frag: spec.df,
        }
        .emit(&mut packet)
        .unwrap(),
        (IpAddr::V6(src), IpAddr::V6(dst)) => ipv6::Repr {
            src,
            dst,
            next_header: protocol,
            payload_len: spec.payload_len,
            hop_limit: 63,
            traffic_class: spec.tos,
            flow_label: 0x12345,
        }
        .emit(&mut packet)
        .unwrap(),
        _ => panic!("inner addresses of different families"),
    }
    if protocol == ip_proto::UDP {
        udp::Repr {
            src_port: spec.src_port,
            dst_port: spec.dst_port,
            payload_len: spec.payload_len - udp::HEADER_LEN,
        }
        .emit(&mut packet[ip_len..])
        .unwrap();
    }
    packet
}

/// A frame buffer holding `inner` after room for an Ethernet header and the
/// largest headroom, with the largest tailroom after it.
#[derive(Debug, Clone)]
pub struct Frame {
    pub buf: Vec<u8>,
    pub offset: usize,
    pub len: usize,
}

impl Frame {
    pub fn new(inner: &[u8]) -> Frame {
        Frame::with_room(inner, ETH_LEN + MAX_HEADROOM, MAX_TAILROOM)
    }

    pub fn with_room(inner: &[u8], headroom: usize, tailroom: usize) -> Frame {
        let mut buf = vec![0xa5u8; headroom + inner.len() + tailroom];
        buf[headroom..headroom + inner.len()].copy_from_slice(inner);
        Frame {
            buf,
            offset: headroom,
            len: inner.len(),
        }
    }

    pub fn encapsulate(&mut self, sa: &OutboundSa) -> Result<Encapsulated, esp::EspError> {
        esp::encapsulate(sa, &mut self.buf, self.offset, self.len)
    }
}

/// Encapsulates `inner` and returns the outer IP packet.
pub fn encap(sa: &OutboundSa, inner: &[u8]) -> (Vec<u8>, Encapsulated) {
    let mut frame = Frame::new(inner);
    let out = frame.encapsulate(sa).expect("encapsulate");
    (frame.buf[out.range.clone()].to_vec(), out)
}

/// Where the ESP packet is in an outer IP packet (after the IP and any UDP
/// header), as the worker finds it. Panics on anything unexpected.
pub fn esp_range(outer: &[u8]) -> Range<usize> {
    let (protocol, l4) = match outer[0] >> 4 {
        4 => {
            let ip = ipv4::Packet::new_checked(outer).unwrap();
            (ip.protocol(), ip.header_len()..usize::from(ip.total_len()))
        }
        6 => {
            let ip = ipv6::Packet::new_checked(outer).unwrap();
            (ip.next_header(), ipv6::HEADER_LEN..ip.total_len())
        }
        v => panic!("outer IP version {v}"),
    };
    match protocol {
        ip_proto::ESP => l4,
        ip_proto::UDP => l4.start + udp::HEADER_LEN..l4.end,
        p => panic!("outer protocol {p}"),
    }
}

/// Seals an arbitrary ESP plaintext (payload || padding || pad length ||
/// next header, as given) into an ESP packet under `params`' key, with the
/// RFC 4106 nonce and AAD. For crafting packets the transform would not
/// produce.
pub fn seal_raw(params: &SaParams, seq: u64, plaintext: &[u8]) -> Vec<u8> {
    let km = keying_material(params.cipher, params.seed);
    let key_len = params.cipher.key_len();
    let aead = new_aead(params.out_backend, &km[..key_len]).unwrap();
    let mut packet = Vec::with_capacity(16 + plaintext.len() + 16);
    packet.extend_from_slice(&params.spi.to_be_bytes());
    packet.extend_from_slice(&(seq as u32).to_be_bytes());
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(plaintext);
    let mut nonce = [0u8; 12];
    nonce[..4].copy_from_slice(&km[key_len..]);
    nonce[4..].copy_from_slice(&seq.to_be_bytes());
    let mut aad = Vec::with_capacity(12);
    aad.extend_from_slice(&params.spi.to_be_bytes());
    if params.esn {
        aad.extend_from_slice(&seq.to_be_bytes());
    } else {
        aad.extend_from_slice(&(seq as u32).to_be_bytes());
    }
    let tag = aead.seal_in_place(&nonce, &aad, &mut packet[16..]).unwrap();
    packet.extend_from_slice(&tag);
    packet
}

/// A correct ESP plaintext for `inner`: the packet, `extra` bytes of TFC
/// padding, RFC 4303 padding, pad length and `next_header`.
pub fn esp_plaintext(inner: &[u8], extra: usize, next_header: u8) -> Vec<u8> {
    let mut plaintext = inner.to_vec();
    plaintext.resize(inner.len() + extra, 0);
    let pad = xdpsec_dataplane::wire::esp::pad_len(plaintext.len());
    for i in 1..=pad {
        plaintext.push(i as u8);
    }
    plaintext.push(pad as u8);
    plaintext.push(next_header);
    plaintext
}

/// Opens an ESP packet sealed under `params`' key without the transform:
/// nonce and AAD built here from RFC 4106 (the full 64-bit sequence number
/// `seq` is given, as the receiver would infer it). Returns the plaintext
/// (payload || padding || pad length || next header), or `None` if the ICV
/// does not verify.
pub fn open_raw(params: &SaParams, seq: u64, esp_packet: &[u8]) -> Option<Vec<u8>> {
    let km = keying_material(params.cipher, params.seed);
    let key_len = params.cipher.key_len();
    let aead = new_aead(params.in_backend, &km[..key_len]).unwrap();
    let n = esp_packet.len();
    let mut nonce = [0u8; 12];
    nonce[..4].copy_from_slice(&km[key_len..]);
    nonce[4..].copy_from_slice(&esp_packet[8..16]);
    let mut aad = esp_packet[..4].to_vec();
    if params.esn {
        aad.extend_from_slice(&((seq >> 32) as u32).to_be_bytes());
    }
    aad.extend_from_slice(&esp_packet[4..8]);
    let tag: [u8; 16] = esp_packet[n - 16..].try_into().unwrap();
    let mut plaintext = esp_packet[16..n - 16].to_vec();
    aead.open_in_place(&nonce, &aad, &mut plaintext, &tag)
        .ok()
        .map(|()| plaintext)
}
