//! The ESP transform: tunnel-mode encapsulation and decapsulation (RFC 4303)
//! with AES-GCM (RFC 4106), in place in caller-owned frame buffers. No I/O,
//! no allocation, no locks.
//!
//! # Encapsulation
//!
//! The caller has the inner IPv4 or IPv6 packet at `buf[offset..offset+len]`
//! with at least [`OutboundSa::headroom`] bytes in front of it (at most
//! [`MAX_HEADROOM`]) and [`OutboundSa::tailroom`] bytes after it (at most
//! [`MAX_TAILROOM`]). [`encapsulate`] turns that into
//!
//! ```text
//! | outer IPv4/IPv6 | UDP (NAT-T) | SPI | seq | IV = seq (8) | inner ... | pad | pad len | next hdr | ICV (16) |
//!                                               '------------ encrypted -----------------------'
//! ```
//!
//! and returns where the outer IP packet is; the worker puts the Ethernet
//! header in front. The outer header comes from a template precomputed per SA
//! (addresses, protocol, TTL, ports, SPI, the constant part of the IPv4
//! checksum); per packet only lengths, the traffic class (DSCP and ECN copied
//! from the inner header, RFC 6040 normal mode), the IPv4 ID and DF, and the
//! checksums are written. The payload is encrypted where it lies.
//!
//! # Decapsulation
//!
//! The caller has parsed the outer headers, found the SPI and looked up the
//! inbound SA; [`decapsulate`] gets the ESP packet (from the SPI to the end of
//! the outer IP payload) and, after bounds, replay, authentication, padding,
//! next-header, inner-length and selector checks, returns where the inner
//! packet is inside it. The inner packet is decrypted in place.
//!
//! Every failure is one variant of [`EspError`], which has a stable
//! [`EspError::index`] so that per-worker drop counters can be arrays.

use std::net::{IpAddr, Ipv4Addr};
use std::ops::Range;

use thiserror::Error;

use crate::crypto::{CryptoError, NONCE_LEN, TAG_LEN};
use crate::replay::ReplayError;
use crate::sa::{DfPolicy, InboundSa, LifetimeEvent, OutboundSa, SaCore, SALT_LEN};
use crate::wire::esp::{pad_len, parse_trailer, TRAILER_LEN};
use crate::wire::{checksum, ip_proto, ipv4, ipv6, put16, put32, udp, IpVersion};

/// The RFC 4106 IV: the 64-bit sequence number.
pub const IV_LEN: usize = 8;
/// The RFC 4106 ICV (the GCM tag).
pub const ICV_LEN: usize = TAG_LEN;
/// SPI and sequence number.
pub const ESP_HEADER_LEN: usize = crate::wire::esp::HEADER_LEN;
/// Most bytes written in front of the inner packet: outer IPv6 (40), UDP (8),
/// ESP header (8), IV (8). Without NAT-T over IPv4 it is 36. The Ethernet
/// header the worker adds is not included.
pub const MAX_HEADROOM: usize = ipv6::HEADER_LEN + udp::HEADER_LEN + ESP_HEADER_LEN + IV_LEN;
/// Most bytes written after the inner packet: padding (0 to 3), pad length,
/// next header, ICV (16).
pub const MAX_TAILROOM: usize = 3 + TRAILER_LEN + ICV_LEN;
/// Most bytes encapsulation adds to an inner packet (85).
pub const MAX_OVERHEAD: usize = MAX_HEADROOM + MAX_TAILROOM;
/// The shortest ESP packet: header, IV, pad length, next header, ICV (34).
pub const MIN_ESP_LEN: usize = ESP_HEADER_LEN + IV_LEN + TRAILER_LEN + ICV_LEN;

/// Why a packet was not encapsulated or decapsulated. Each variant is its own
/// drop reason; `index()` is stable (new variants are appended).
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum EspError {
    /// Inbound: shorter than header + IV + trailer + ICV.
    #[error("ESP packet truncated")]
    Truncated = 0,
    /// Inbound: no SA for this SPI (the caller's lookup), or the SPI is not
    /// the SA's.
    #[error("unknown SPI")]
    UnknownSpi,
    /// Inbound: the sequence number was already received.
    #[error("replayed sequence number")]
    Replayed,
    /// Inbound: the sequence number is left of the anti-replay window (or 0).
    #[error("sequence number left of the replay window")]
    TooOld,
    /// Inbound: the ICV does not verify.
    #[error("authentication failed")]
    AuthenticationFailed,
    /// Inbound: the padding is not 1, 2, 3, ..., or the pad length does not
    /// fit.
    #[error("bad ESP padding")]
    BadPadding,
    /// Inbound: next header is neither 4 nor 41, or disagrees with the inner
    /// packet's IP version.
    #[error("bad ESP next header")]
    BadNextHeader,
    /// Inbound: a dummy packet (next header 59, RFC 4303 section 2.6).
    #[error("dummy packet")]
    DummyPacket,
    /// The inner packet's IP header is invalid, or its length does not fit.
    #[error("malformed inner packet")]
    MalformedInner,
    /// Outbound: the inner packet is neither IPv4 nor IPv6.
    #[error("inner packet is not IP")]
    InnerNotIp,
    /// The inner packet is outside the SA's traffic selectors.
    #[error("inner packet outside the SA's traffic selectors")]
    PolicyMismatch,
    /// A hard lifetime (packets or bytes) is reached: the SA is dead.
    #[error("SA hard lifetime reached")]
    LifetimeExpired,
    /// Outbound: the sequence number space is used up: the SA is dead.
    #[error("sequence numbers exhausted")]
    SequenceExhausted,
    /// Outbound: not enough room in front of the inner packet.
    #[error("not enough headroom")]
    NoHeadroom,
    /// Outbound: not enough room after the inner packet (or the inner range
    /// is outside the buffer).
    #[error("not enough tailroom")]
    NoTailroom,
    /// Outbound: the outer packet would exceed the IP length limit.
    #[error("outer packet too big")]
    TooBig,
    /// The crypto backend failed (not an authentication failure).
    #[error("crypto backend failure")]
    CryptoFailure,
    /// Outbound: the next sequence number is past what the state directory
    /// has reserved (a static SA, whose nonces must not repeat across
    /// restarts); the reservation catches up within milliseconds.
    #[error("sequence number not yet reserved on disk")]
    SeqNotReserved,
}

impl EspError {
    /// Number of variants: the length of a counter array.
    pub const COUNT: usize = 18;

    /// Every variant, in `index()` order.
    pub const ALL: [EspError; EspError::COUNT] = [
        EspError::Truncated,
        EspError::UnknownSpi,
        EspError::Replayed,
        EspError::TooOld,
        EspError::AuthenticationFailed,
        EspError::BadPadding,
        EspError::BadNextHeader,
        EspError::DummyPacket,
        EspError::MalformedInner,
        EspError::InnerNotIp,
        EspError::PolicyMismatch,
        EspError::LifetimeExpired,
        EspError::SequenceExhausted,
        EspError::NoHeadroom,
        EspError::NoTailroom,
        EspError::TooBig,
        EspError::CryptoFailure,
        EspError::SeqNotReserved,
    ];

    /// A stable index in `0..COUNT`.
    #[inline]
    pub const fn index(self) -> usize {
        self as usize
    }

    /// A stable snake_case name, for counters and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            EspError::Truncated => "truncated",
            EspError::UnknownSpi => "unknown_spi",
            EspError::Replayed => "replayed",
            EspError::TooOld => "too_old",
            EspError::AuthenticationFailed => "authentication_failed",
            EspError::BadPadding => "bad_padding",
            EspError::BadNextHeader => "bad_next_header",
            EspError::DummyPacket => "dummy_packet",
            EspError::MalformedInner => "malformed_inner",
            EspError::InnerNotIp => "inner_not_ip",
            EspError::PolicyMismatch => "policy_mismatch",
            EspError::LifetimeExpired => "lifetime_expired",
            EspError::SequenceExhausted => "sequence_exhausted",
            EspError::NoHeadroom => "no_headroom",
            EspError::NoTailroom => "no_tailroom",
            EspError::TooBig => "too_big",
            EspError::SeqNotReserved => "seq_not_reserved",
            EspError::CryptoFailure => "crypto_failure",
        }
    }
}

impl From<ReplayError> for EspError {
    fn from(e: ReplayError) -> EspError {
        match e {
            ReplayError::Replayed => EspError::Replayed,
            // Sequence number 0 is left of every window.
            ReplayError::TooOld | ReplayError::ZeroSequence => EspError::TooOld,
        }
    }
}

/// A packet [`encapsulate`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encapsulated {
    /// Where the outer IP packet is in the buffer.
    pub range: Range<usize>,
    /// The sequence number it was sent with.
    pub seq: u64,
    /// A soft limit this packet reached, to be reported once (to IKE).
    pub event: Option<LifetimeEvent>,
}

/// A packet [`decapsulate`] recovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decapsulated {
    /// Where the inner IP packet is in the ESP buffer (TFC padding removed).
    pub range: Range<usize>,
    /// The inner packet's IP version.
    pub version: IpVersion,
    /// The full (ESN-inferred) sequence number.
    pub seq: u64,
    /// A soft limit this packet reached, to be reported once (to IKE).
    pub event: Option<LifetimeEvent>,
}

/// The outer headers of an outbound SA, built once: IPv4 or IPv6 header,
/// optional UDP header, SPI (the sequence number slot is patched per packet).
#[derive(Debug, Clone)]
pub(crate) struct OuterTemplate {
    bytes: [u8; MAX_HEADROOM - IV_LEN],
    /// Outer IP header length (20 or 40).
    ip_len: usize,
    /// IP header + UDP header (if any) + ESP header.
    len: usize,
    v6: bool,
    udp: bool,
    df: DfPolicy,
    /// IPv4: one's-complement sum of the header fields that do not change.
    ipv4_sum: u64,
    /// IPv6 + UDP: sum of the pseudo-header's addresses and next header.
    udp6_sum: u64,
    /// Mixed into the IPv4 ID so SAs between one pair of hosts differ.
    ident_salt: u16,
}

impl OuterTemplate {
    pub(crate) fn new(sa: &SaCore, ttl: u8, df: DfPolicy) -> OuterTemplate {
        let mut bytes = [0u8; MAX_HEADROOM - IV_LEN];
        let udp = sa.udp_encap();
        let protocol = if udp.is_some() {
            ip_proto::UDP
        } else {
            ip_proto::ESP
        };
        let (ip_len, v6, ipv4_sum, udp6_sum) = match (sa.local(), sa.remote()) {
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                let mut ip = ipv6::Packet::new_unchecked(&mut bytes[..ipv6::HEADER_LEN]);
                ip.set_version_tc_flow(0, 0);
                ip.set_payload_len(0);
                ip.set_next_header(protocol);
                ip.set_hop_limit(ttl);
                ip.set_src_addr(&src);
                ip.set_dst_addr(&dst);
                let udp6_sum = checksum::pseudo_header_v6(&src, &dst, ip_proto::UDP, 0);
                (ipv6::HEADER_LEN, true, 0, udp6_sum)
            }
            (src, dst) => {
                // SaCore::new guarantees that both are of one family.
                let (src, dst) = match (src, dst) {
                    (IpAddr::V4(src), IpAddr::V4(dst)) => (src, dst),
                    _ => (Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED),
                };
                let mut ip = ipv4::Packet::new_unchecked(&mut bytes[..ipv4::MIN_HEADER_LEN]);
                ip.set_version_and_header_len(ipv4::MIN_HEADER_LEN);
                ip.set_ttl(ttl);
                ip.set_protocol(protocol);
                ip.set_src_addr(src);
                ip.set_dst_addr(dst);
                // Everything variable (TOS, length, ID, flags, checksum) is
                // still zero here.
                let sum = checksum::add(0, &bytes[..ipv4::MIN_HEADER_LEN]);
                (ipv4::MIN_HEADER_LEN, false, sum, 0)
            }
        };
        let mut len = ip_len;
        if let Some(ports) = udp {
            let mut hdr = udp::Packet::new_unchecked(&mut bytes[len..len + udp::HEADER_LEN]);
            hdr.set_src_port(ports.local_port);
            hdr.set_dst_port(ports.remote_port);
            len += udp::HEADER_LEN;
        }
        put32(&mut bytes, len, sa.spi());
        len += ESP_HEADER_LEN;
        OuterTemplate {
            bytes,
            ip_len,
            len,
            v6,
            udp: udp.is_some(),
            df,
            ipv4_sum,
            udp6_sum,
            ident_salt: (sa.spi() ^ (sa.spi() >> 16)) as u16,
        }
    }

    /// Bytes in front of the inner packet: headers and IV.
    #[inline]
    pub(crate) fn headroom(&self) -> usize {
        self.len + IV_LEN
    }
}

/// The 8- or 12-byte RFC 4106 AAD: SPI || seq (low) or SPI || seq-high ||
/// seq-low with ESN.
#[inline]
fn aad(buf: &mut [u8; 12], spi: u32, seq: u64, esn: bool) -> &[u8] {
    buf[..4].copy_from_slice(&spi.to_be_bytes());
    if esn {
        buf[4..].copy_from_slice(&seq.to_be_bytes());
        &buf[..12]
    } else {
        buf[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
        &buf[..8]
    }
}

#[inline]
fn nonce(salt: &[u8; SALT_LEN], iv: &[u8; IV_LEN]) -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    nonce[..SALT_LEN].copy_from_slice(salt);
    nonce[SALT_LEN..].copy_from_slice(iv);
    nonce
}

/// What encapsulation needs from the inner header.
struct InnerInfo {
    version: IpVersion,
    /// Length from the IP header (the buffer may hold trailing padding).
    len: usize,
    /// IPv4 TOS / IPv6 traffic class.
    tos: u8,
    /// DF of an IPv4 inner packet; true for IPv6.
    df: bool,
}

#[inline]
fn inspect_inner(inner: &[u8]) -> Result<InnerInfo, EspError> {
    match IpVersion::of_packet(inner) {
        Some(IpVersion::V4) => {
            let ip = ipv4::Packet::new_checked(inner).map_err(|_| EspError::MalformedInner)?;
            Ok(InnerInfo {
                version: IpVersion::V4,
                len: usize::from(ip.total_len()),
                tos: ip.dscp_ecn(),
                df: ip.dont_frag(),
            })
        }
        Some(IpVersion::V6) => {
            let ip = ipv6::Packet::new_checked(inner).map_err(|_| EspError::MalformedInner)?;
            Ok(InnerInfo {
                version: IpVersion::V6,
                len: ip.total_len(),
                tos: ip.traffic_class(),
                df: true,
            })
        }
        None if inner.is_empty() => Err(EspError::MalformedInner),
        None => Err(EspError::InnerNotIp),
    }
}

/// Encapsulates the inner packet at `buf[offset..offset + len]` in ESP tunnel
/// mode for `sa`, in place. See the module documentation for the layout.
///
/// If the inner IP header says the packet is shorter than `len` (e.g.
/// Ethernet padding), only the IP packet is encapsulated. Checks happen
/// before a sequence number is taken, so a refused packet uses none; a packet
/// that hits the hard lifetime uses one (the SA is dead anyway).
///
/// Does not change the inner packet (no TTL decrement: forwarding is the
/// caller's business). On error, `buf` outside the inner packet may have been
/// written.
pub fn encapsulate(
    sa: &OutboundSa,
    buf: &mut [u8],
    offset: usize,
    len: usize,
) -> Result<Encapsulated, EspError> {
    let t = sa.template();
    let end = offset
        .checked_add(len)
        .filter(|&end| end <= buf.len())
        .ok_or(EspError::NoTailroom)?;
    let inner = inspect_inner(&buf[offset..end])?;
    let inner_end = offset + inner.len;
    if !sa.selectors_match(inner.version, &buf[offset..inner_end]) {
        return Err(EspError::PolicyMismatch);
    }
    let start = offset
        .checked_sub(t.headroom())
        .ok_or(EspError::NoHeadroom)?;
    let pad = pad_len(inner.len);
    let ct_end = inner_end + pad + TRAILER_LEN;
    let out_end = ct_end + ICV_LEN;
    if out_end > buf.len() {
        return Err(EspError::NoTailroom);
    }
    let outer_len = out_end - start;
    let ip_len_field = if t.v6 {
        outer_len - t.ip_len
    } else {
        outer_len
    };
    let ip_len_field = u16::try_from(ip_len_field).map_err(|_| EspError::TooBig)?;

    let (seq, seq_soft) = sa.take_seq()?;
    let mut event = sa
        .charge(inner.len as u64)
        .map_err(|_| EspError::LifetimeExpired)?;
    event.seq_nearly_exhausted = seq_soft;

    // Trailer: padding 1, 2, 3, pad length, next header.
    for (i, byte) in buf[inner_end..inner_end + pad].iter_mut().enumerate() {
        *byte = i as u8 + 1;
    }
    buf[ct_end - 2] = pad as u8;
    buf[ct_end - 1] = inner.version.next_header();

    // Headers from the template, then sequence number and IV.
    let esp_start = start + t.len - ESP_HEADER_LEN;
    buf[start..start + t.len].copy_from_slice(&t.bytes[..t.len]);
    put32(buf, esp_start + 4, seq as u32);
    let iv = seq.to_be_bytes();
    buf[esp_start + ESP_HEADER_LEN..offset].copy_from_slice(&iv);

    let mut aad_buf = [0u8; 12];
    let aad = aad(&mut aad_buf, sa.spi(), seq, sa.esn());
    let tag = sa
        .aead()
        .seal_in_place(&nonce(sa.salt(), &iv), aad, &mut buf[offset..ct_end])
        .map_err(|_| EspError::CryptoFailure)?;
    buf[ct_end..out_end].copy_from_slice(&tag);

    let outer = &mut buf[start..out_end];
    if t.v6 {
        put32(outer, 0, (6u32 << 28) | (u32::from(inner.tos) << 20));
        put16(outer, ipv6::field::PAYLOAD_LEN, ip_len_field);
        if t.udp {
            // Over IPv6 the UDP checksum is mandatory (RFC 8200 section 8.1).
            let udp_len = ip_len_field;
            let udp_start = t.ip_len;
            put16(outer, udp_start + udp::field::LENGTH, udp_len);
            let acc = checksum::add_u32(t.udp6_sum, u32::from(udp_len));
            let acc = checksum::add(acc, &outer[udp_start..]);
            let sum = match checksum::finish(acc) {
                0 => 0xffff,
                sum => sum,
            };
            put16(outer, udp_start + udp::field::CHECKSUM, sum);
        }
    } else {
        let flags = match t.df {
            DfPolicy::Set => ipv4::FLAG_DF,
            DfPolicy::Clear => 0,
            DfPolicy::Copy if inner.df => ipv4::FLAG_DF,
            DfPolicy::Copy => 0,
        };
        // RFC 6864: the ID only has to be unique per (src, dst, protocol)
        // for datagrams that may be fragmented; the sequence number gives
        // that without another shared counter.
        let ident = (seq as u16) ^ t.ident_salt;
        outer[ipv4::field::DSCP_ECN] = inner.tos;
        put16(outer, ipv4::field::TOTAL_LEN, ip_len_field);
        put16(outer, ipv4::field::IDENT, ident);
        put16(outer, ipv4::field::FLAGS_FRAG, flags);
        let mut acc = checksum::add_u16(t.ipv4_sum, u16::from(inner.tos));
        acc = checksum::add_u16(acc, ip_len_field);
        acc = checksum::add_u16(acc, ident);
        acc = checksum::add_u16(acc, flags);
        put16(outer, ipv4::field::CHECKSUM, checksum::finish(acc));
        if t.udp {
            // Zero: no checksum, as RFC 3948 section 3.1 allows over IPv4.
            put16(
                outer,
                t.ip_len + udp::field::LENGTH,
                ip_len_field - ipv4::MIN_HEADER_LEN as u16,
            );
        }
    }

    Ok(Encapsulated {
        range: start..out_end,
        seq,
        event: (event != LifetimeEvent::default()).then_some(event),
    })
}

/// Decapsulates the ESP packet `esp` (from the SPI to the end of the outer IP
/// payload; for NAT-T, the UDP payload) received on `sa`, in place, and
/// returns where the inner packet is in `esp`.
///
/// Order: length, SPI, anti-replay check, hard lifetime, AES-GCM open,
/// anti-replay update (only for authentic packets), padding, next header,
/// inner IP header and length (TFC padding after the inner packet is
/// allowed and cut off; an IPv4 inner header checksum must verify), traffic
/// selectors, lifetime accounting.
pub fn decapsulate(sa: &InboundSa, esp: &mut [u8]) -> Result<Decapsulated, EspError> {
    if esp.len() < MIN_ESP_LEN {
        return Err(EspError::Truncated);
    }
    let Some((head, rest)) = esp.split_first_chunk_mut::<{ ESP_HEADER_LEN + IV_LEN }>() else {
        return Err(EspError::Truncated);
    };
    let Some((ciphertext, tag)) = rest.split_last_chunk_mut::<ICV_LEN>() else {
        return Err(EspError::Truncated);
    };
    let spi = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if spi != sa.spi() {
        return Err(EspError::UnknownSpi);
    }
    let seq_low = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    let replay = sa.replay_window();
    let seq = replay.check(seq_low)?;
    if sa.is_hard_expired() {
        return Err(EspError::LifetimeExpired);
    }

    let mut iv = [0u8; IV_LEN];
    iv.copy_from_slice(&head[ESP_HEADER_LEN..]);
    let mut aad_buf = [0u8; 12];
    let aad = aad(&mut aad_buf, spi, seq, sa.esn());
    sa.aead()
        .open_in_place(&nonce(sa.salt(), &iv), aad, ciphertext, tag)
        .map_err(|e| match e {
            CryptoError::AuthenticationFailed => EspError::AuthenticationFailed,
            _ => EspError::CryptoFailure,
        })?;
    replay.accept(seq)?;

    let trailer = parse_trailer(ciphertext).map_err(|_| EspError::BadPadding)?;
    let version = match trailer.next_header {
        ip_proto::IPV4 => IpVersion::V4,
        ip_proto::IPV6 => IpVersion::V6,
        ip_proto::NO_NEXT_HEADER => return Err(EspError::DummyPacket),
        _ => return Err(EspError::BadNextHeader),
    };
    let payload = &ciphertext[..trailer.payload_len];
    match IpVersion::of_packet(payload) {
        Some(v) if v == version => {}
        Some(_) => return Err(EspError::BadNextHeader),
        None if payload.is_empty() => return Err(EspError::MalformedInner),
        None => return Err(EspError::BadNextHeader),
    }
    let inner_len = match version {
        IpVersion::V4 => {
            let ip = ipv4::Packet::new_checked(payload).map_err(|_| EspError::MalformedInner)?;
            if !ip.verify_checksum() {
                return Err(EspError::MalformedInner);
            }
            usize::from(ip.total_len())
        }
        IpVersion::V6 => ipv6::Packet::new_checked(payload)
            .map_err(|_| EspError::MalformedInner)?
            .total_len(),
    };
    let inner = &payload[..inner_len];
    if !sa.selectors_match(version, inner) {
        return Err(EspError::PolicyMismatch);
    }
    let event = sa
        .charge(inner_len as u64)
        .map_err(|_| EspError::LifetimeExpired)?;

    let start = ESP_HEADER_LEN + IV_LEN;
    Ok(Decapsulated {
        range: start..start + inner_len,
        version,
        seq,
        event: (event != LifetimeEvent::default()).then_some(event),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_indices_are_stable_and_dense() {
        for (i, e) in EspError::ALL.iter().enumerate() {
            assert_eq!(e.index(), i, "{e:?}");
        }
        let mut names: Vec<_> = EspError::ALL.iter().map(|e| e.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), EspError::COUNT);
    }

    #[test]
    fn constants() {
        assert_eq!(MAX_HEADROOM, 64);
        assert_eq!(MAX_TAILROOM, 21);
        assert_eq!(MIN_ESP_LEN, 34);
    }
}
