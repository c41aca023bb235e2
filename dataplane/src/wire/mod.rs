//! Wire formats as views over bytes, in the style of smoltcp's `wire` module.
//!
//! Each protocol has a `Packet<T: AsRef<[u8]>>` (or `Frame`) view:
//! `new_checked` validates every length an accessor relies on, so that after
//! it succeeds no accessor can panic; `new_unchecked` skips the checks (the
//! caller vouches for the buffer, e.g. one it just wrote). Setters are
//! available when `T: AsMut<[u8]>`. Payload accessors additionally clamp to
//! the buffer, so they stay panic-free even after a setter wrote a length
//! field that no longer fits.
//!
//! Nothing here allocates.

pub mod checksum;
pub mod esp;
pub mod ethernet;
pub mod ipv4;
pub mod ipv6;
pub mod udp;

use thiserror::Error;

/// Why a view refused a buffer.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WireError {
    /// The buffer is shorter than the header, or than a length field says.
    #[error("truncated")]
    Truncated,
    /// The IP version nibble is not the one this view parses.
    #[error("wrong IP version")]
    BadVersion,
    /// A header length field is below the minimum (e.g. IPv4 IHL < 5).
    #[error("bad header length")]
    BadHeaderLength,
    /// A total/payload length field is inconsistent with the header.
    #[error("bad length field")]
    BadLength,
    /// A checksum does not verify.
    #[error("bad checksum")]
    BadChecksum,
    /// Something else in the header is invalid.
    #[error("malformed")]
    Malformed,
}

/// IP protocol numbers (IANA "Assigned Internet Protocol Numbers"), as they
/// appear in the IPv4 protocol field, the IPv6 next-header field and the ESP
/// next-header field.
pub mod ip_proto {
    pub const HOP_BY_HOP: u8 = 0;
    pub const ICMP: u8 = 1;
    /// IPv4 encapsulated (ESP next header for an IPv4 inner packet).
    pub const IPV4: u8 = 4;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    /// IPv6 encapsulated (ESP next header for an IPv6 inner packet).
    pub const IPV6: u8 = 41;
    pub const IPV6_ROUTING: u8 = 43;
    pub const IPV6_FRAGMENT: u8 = 44;
    pub const ESP: u8 = 50;
    pub const AH: u8 = 51;
    pub const ICMPV6: u8 = 58;
    /// No next header: an ESP dummy packet (RFC 4303 section 2.6).
    pub const NO_NEXT_HEADER: u8 = 59;
    pub const IPV6_DEST_OPTS: u8 = 60;
    pub const SCTP: u8 = 132;
}

/// The IP version of a packet, read from its first nibble.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpVersion {
    V4,
    V6,
}

impl IpVersion {
    /// Reads the version nibble of the first byte; `None` if the buffer is
    /// empty or the version is neither 4 nor 6.
    #[inline]
    pub fn of_packet(packet: &[u8]) -> Option<IpVersion> {
        match packet.first().map(|b| b >> 4) {
            Some(4) => Some(IpVersion::V4),
            Some(6) => Some(IpVersion::V6),
            _ => None,
        }
    }

    /// The ESP / IP-in-IP next-header value for a packet of this version
    /// (4 for IPv4, 41 for IPv6).
    #[inline]
    pub fn next_header(self) -> u8 {
        match self {
            IpVersion::V4 => ip_proto::IPV4,
            IpVersion::V6 => ip_proto::IPV6,
        }
    }
}

/// Reads a big-endian u16 at `at`; the caller has checked the bounds.
#[inline]
pub(crate) fn be16(data: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([data[at], data[at + 1]])
}

/// Reads a big-endian u32 at `at`; the caller has checked the bounds.
#[inline]
pub(crate) fn be32(data: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

#[inline]
pub(crate) fn put16(data: &mut [u8], at: usize, value: u16) {
    data[at..at + 2].copy_from_slice(&value.to_be_bytes());
}

#[inline]
pub(crate) fn put32(data: &mut [u8], at: usize, value: u32) {
    data[at..at + 4].copy_from_slice(&value.to_be_bytes());
}
