//! The IKE header (RFC 7296 section 3.1).
//!
//! ```text
//!  0 initiator SPI (8) | 8 responder SPI (8) | 16 next payload (1)
//! 17 major:4 minor:4   | 18 exchange type (1) | 19 flags (1)
//! 20 message ID (4)    | 24 length (4), the whole message header included
//! ```

use super::{be32, be64, Error};

/// The length of the IKE header.
pub const HEADER_LEN: usize = 28;

/// The IKE major version this implementation speaks.
pub const MAJOR_VERSION: u8 = 2;

/// The header flags (the I, V and R bits; the others are ignored on receipt
/// and sent as zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags {
    /// I (Initiator): set by the original initiator of the IKE SA.
    pub initiator: bool,
    /// V (Version): a higher major version is spoken; never set by IKEv2.
    pub version: bool,
    /// R (Response): the message answers one with the same message ID.
    pub response: bool,
}

impl Flags {
    /// The I bit.
    pub const INITIATOR: u8 = 0x08;
    /// The V bit.
    pub const VERSION: u8 = 0x10;
    /// The R bit.
    pub const RESPONSE: u8 = 0x20;

    /// Decodes the flags octet.
    pub const fn from_byte(b: u8) -> Self {
        Flags {
            initiator: b & Self::INITIATOR != 0,
            version: b & Self::VERSION != 0,
            response: b & Self::RESPONSE != 0,
        }
    }

    /// Encodes the flags octet.
    pub const fn to_byte(self) -> u8 {
        (if self.initiator { Self::INITIATOR } else { 0 })
            | (if self.version { Self::VERSION } else { 0 })
            | (if self.response { Self::RESPONSE } else { 0 })
    }
}

/// The IKE header as a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IkeHeader {
    /// The initiator's SPI (never zero).
    pub spi_i: u64,
    /// The responder's SPI (zero in the first IKE_SA_INIT request).
    pub spi_r: u64,
    /// The type of the first payload.
    pub next_payload: u8,
    /// The minor version (sent as 0, ignored on receipt).
    pub minor_version: u8,
    /// The exchange type (see [`super::consts::exchange`]).
    pub exchange: u8,
    /// The I, V and R flags.
    pub flags: Flags,
    /// The message ID.
    pub message_id: u32,
    /// The length of the whole message, header included.
    pub length: u32,
}

impl IkeHeader {
    /// Reads the header's fields, checking only that there are 28 bytes and
    /// that the major version is 2: enough to answer INVALID_MAJOR_VERSION
    /// or INVALID_IKE_SPI without looking at the rest.
    pub fn peek(buf: &[u8]) -> Result<Self, Error> {
        let h = buf
            .get(..HEADER_LEN)
            .ok_or(Error::TruncatedHeader(buf.len()))?;
        let major = h[17] >> 4;
        if major != MAJOR_VERSION {
            return Err(Error::UnsupportedMajorVersion(major));
        }
        let get64 = |at| be64(h, at).ok_or(Error::TruncatedHeader(buf.len()));
        let get32 = |at| be32(h, at).ok_or(Error::TruncatedHeader(buf.len()));
        Ok(IkeHeader {
            spi_i: get64(0)?,
            spi_r: get64(8)?,
            next_payload: h[16],
            minor_version: h[17] & 0x0f,
            exchange: h[18],
            flags: Flags::from_byte(h[19]),
            message_id: get32(20)?,
            length: get32(24)?,
        })
    }

    /// Parses the header of a whole datagram: [`IkeHeader::peek`] plus the
    /// check that the length field equals the datagram's length.
    pub fn parse(buf: &[u8]) -> Result<Self, Error> {
        let h = Self::peek(buf)?;
        if usize::try_from(h.length).ok() != Some(buf.len()) {
            return Err(Error::LengthMismatch {
                header: h.length,
                actual: buf.len(),
            });
        }
        Ok(h)
    }

    /// Appends the 28 header bytes to `out`, as they are (the caller sets
    /// `length` and `next_payload`; [`super::Message::emit`] does).
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.spi_i.to_be_bytes());
        out.extend_from_slice(&self.spi_r.to_be_bytes());
        out.push(self.next_payload);
        out.push((MAJOR_VERSION << 4) | (self.minor_version & 0x0f));
        out.push(self.exchange);
        out.push(self.flags.to_byte());
        out.extend_from_slice(&self.message_id.to_be_bytes());
        out.extend_from_slice(&self.length.to_be_bytes());
    }
}
