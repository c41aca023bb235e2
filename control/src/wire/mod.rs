//! The IKEv2 wire format (RFC 7296 section 3), sans-IO.
//!
//! Everything here is a parse/emit representation over byte slices, in the
//! style of smoltcp's `Repr::parse`/`emit`: parsing never panics on any input
//! and reports what is wrong through [`Error`]; emitting writes into a
//! caller-owned `Vec<u8>` and fails (instead of truncating) when a field does
//! not fit its on-wire width.
//!
//! - [`header`]: the 28-byte IKE header ([`IkeHeader`]).
//! - [`payload`]: the generic payload header chain ([`PayloadIter`]), the
//!   typed payloads ([`Payload`]) and a whole message ([`Message`]).
//! - [`sa`]: the SA payload with its proposals, transforms and attributes.
//! - [`ts`]: the Traffic Selector payload.
//! - [`cp`]: the Configuration payload (virtual IPs and DNS for
//!   remote-access clients).
//! - [`consts`]: the numbers of RFC 7296 (exchange, payload, notify,
//!   transform types and IDs).

pub mod consts;
pub mod cp;
pub mod header;
pub mod payload;
pub mod sa;
pub mod ts;

pub use cp::{CfgAttribute, Configuration};
pub use header::{Flags, IkeHeader, HEADER_LEN};
pub use payload::{
    Auth, Delete, Identification, KeyExchange, Message, Notify, Payload, PayloadIter, RawPayload,
    GENERIC_HEADER_LEN,
};
pub use sa::{Attribute, AttributeValue, Proposal, SecurityAssociation, Transform};
pub use ts::{AddressRange, TrafficSelector, TrafficSelectors};

/// Everything that can go wrong while parsing or emitting IKEv2 messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Fewer than 28 bytes: no room for the IKE header.
    #[error("datagram too short for the 28-byte IKE header ({0} bytes)")]
    TruncatedHeader(usize),
    /// The major version is not 2 (answer with INVALID_MAJOR_VERSION).
    #[error("unsupported IKE major version {0}")]
    UnsupportedMajorVersion(u8),
    /// The header's length field disagrees with the datagram's length.
    #[error("IKE header length {header} does not match the datagram length {actual}")]
    LengthMismatch {
        /// The header's length field.
        header: u32,
        /// The number of bytes received.
        actual: usize,
    },
    /// Fewer than 4 bytes left where a generic payload header was expected.
    #[error("generic payload header truncated ({0} bytes left)")]
    TruncatedPayload(usize),
    /// A payload length smaller than the 4-byte generic header.
    #[error("payload length {0} is smaller than the 4-byte generic payload header")]
    PayloadTooShort(u16),
    /// A payload length that runs past the end of the message.
    #[error("payload length {length} runs past the end of the message ({available} bytes left)")]
    PayloadOverflow {
        /// The payload's length field.
        length: u16,
        /// The bytes that were left, generic header included.
        available: usize,
    },
    /// Bytes left after the last payload (next payload 0, or an SK payload).
    #[error("{0} trailing bytes after the last payload")]
    TrailingBytes(usize),
    /// A payload type this implementation does not know, with the critical
    /// bit set: the peer expects UNSUPPORTED_CRITICAL_PAYLOAD with this type.
    #[error("unsupported critical payload type {0}")]
    UnsupportedCriticalPayload(u8),
    /// The body of a known payload is inconsistent.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A value does not fit its on-wire field when emitting.
    #[error("cannot emit: {0} too long for its length field")]
    TooLong(&'static str),
}

/// Reads a big-endian u16 at `at`; the caller has checked the bounds.
pub(crate) fn be16(buf: &[u8], at: usize) -> Option<u16> {
    let b = buf.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

/// Reads a big-endian u32 at `at`.
pub(crate) fn be32(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Reads a big-endian u64 at `at`.
pub(crate) fn be64(buf: &[u8], at: usize) -> Option<u64> {
    let b = buf.get(at..at.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_be_bytes(a))
}

/// Converts a length to u16 for a length field, or [`Error::TooLong`].
pub(crate) fn len16(len: usize, what: &'static str) -> Result<u16, Error> {
    u16::try_from(len).map_err(|_| Error::TooLong(what))
}

/// Converts a length to u8 for a length field, or [`Error::TooLong`].
pub(crate) fn len8(len: usize, what: &'static str) -> Result<u8, Error> {
    u8::try_from(len).map_err(|_| Error::TooLong(what))
}
