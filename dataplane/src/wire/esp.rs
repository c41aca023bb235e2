//! ESP headers and trailers (RFC 4303).
//!
//! ```text
//!  0                   1                   2                   3
//! +---------------------------------------------------------------+
//! |               Security Parameters Index (SPI)                 |
//! +---------------------------------------------------------------+
//! |                      Sequence Number                          |
//! +---------------------------------------------------------------+
//! |  IV (8 bytes for AES-GCM, RFC 4106) and Payload Data ...      |
//! |               ...     | Padding (0-255 bytes)                 |
//! |                       | Pad Length    | Next Header           |
//! |  ICV (16 bytes for AES-GCM)                                   |
//! +---------------------------------------------------------------+
//! ```
//!
//! The header view knows only SPI and sequence number; what follows depends
//! on the SA's algorithm. The trailer helpers work on the decrypted or
//! to-be-encrypted plaintext (payload || padding || pad length || next
//! header).

use thiserror::Error;

use super::{be32, put32, WireError};

/// SPI and sequence number.
pub const HEADER_LEN: usize = 8;
/// Pad length and next header.
pub const TRAILER_LEN: usize = 2;
/// Padding is at most 255 bytes.
pub const MAX_PAD_LEN: usize = 255;
/// RFC 4303 section 2.4: pad length and next header end on a 4-byte
/// boundary.
pub const ALIGN: usize = 4;

mod field {
    pub const SPI: usize = 0;
    pub const SEQ: usize = 4;
}

/// A view of an ESP packet (from the SPI to the end of the ICV).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps a buffer that holds at least SPI and sequence number.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Packet { buffer })
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn spi(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SPI)
    }

    /// The low 32 bits of the sequence number, as sent.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SEQ)
    }

    /// Everything after the header: IV, ciphertext, ICV.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        &data[HEADER_LEN.min(data.len())..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    #[inline]
    pub fn set_spi(&mut self, spi: u32) {
        put32(self.buffer.as_mut(), field::SPI, spi);
    }

    #[inline]
    pub fn set_seq_number(&mut self, seq: u32) {
        put32(self.buffer.as_mut(), field::SEQ, seq);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let data = self.buffer.as_mut();
        let start = HEADER_LEN.min(data.len());
        &mut data[start..]
    }
}

/// The fields of an ESP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    pub spi: u32,
    pub seq_number: u32,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, WireError> {
        if packet.buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Repr {
            spi: packet.spi(),
            seq_number: packet.seq_number(),
        })
    }

    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        let mut packet = Packet::new_checked(buf)?;
        packet.set_spi(self.spi);
        packet.set_seq_number(self.seq_number);
        Ok(())
    }
}

/// Padding needed after `payload_len` bytes so that payload, padding, pad
/// length and next header together are a multiple of [`ALIGN`] (0 to 3).
#[inline]
pub const fn pad_len(payload_len: usize) -> usize {
    (ALIGN - (payload_len + TRAILER_LEN) % ALIGN) % ALIGN
}

/// Writes padding (1, 2, 3, ...), pad length and next header: `dst` is
/// exactly the trailer, i.e. `dst.len() - 2` padding bytes (at most 255).
#[inline]
pub fn write_trailer(dst: &mut [u8], next_header: u8) -> Result<(), TrailerError> {
    let Some(pad) = dst.len().checked_sub(TRAILER_LEN) else {
        return Err(TrailerError::Truncated);
    };
    if pad > MAX_PAD_LEN {
        return Err(TrailerError::BadPadding);
    }
    for (i, byte) in dst[..pad].iter_mut().enumerate() {
        *byte = (i + 1) as u8;
    }
    dst[pad] = pad as u8;
    dst[pad + 1] = next_header;
    Ok(())
}

/// A decoded ESP trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Trailer {
    /// Length of the payload data before the padding.
    pub payload_len: usize,
    pub pad_len: u8,
    pub next_header: u8,
}

/// Why a trailer is rejected.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrailerError {
    /// Fewer bytes than pad length + next header + the padding it announces.
    #[error("ESP trailer truncated")]
    Truncated,
    /// The padding bytes are not 1, 2, 3, ... (RFC 4303 section 2.4).
    #[error("ESP padding is not 1, 2, 3, ...")]
    BadPadding,
}

/// Decodes and validates the trailer at the end of a decrypted ESP payload
/// (`plaintext` = payload || padding || pad length || next header).
#[inline]
pub fn parse_trailer(plaintext: &[u8]) -> Result<Trailer, TrailerError> {
    let [.., pad_len, next_header] = *plaintext else {
        return Err(TrailerError::Truncated);
    };
    let pad = usize::from(pad_len);
    let Some(payload_len) = plaintext.len().checked_sub(TRAILER_LEN + pad) else {
        return Err(TrailerError::Truncated);
    };
    let padding = &plaintext[payload_len..payload_len + pad];
    // Padding is 0 to 3 bytes in practice; an accumulate-and-compare loop
    // keeps it branch-free per byte.
    let mut diff = 0u8;
    for (i, &byte) in padding.iter().enumerate() {
        diff |= byte ^ ((i + 1) as u8);
    }
    if diff != 0 {
        return Err(TrailerError::BadPadding);
    }
    Ok(Trailer {
        payload_len,
        pad_len,
        next_header,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header() {
        let mut buf = [0u8; 12];
        Repr {
            spi: 0x0102_0304,
            seq_number: 0xa0b0_c0d0,
        }
        .emit(&mut buf)
        .unwrap();
        let packet = Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(packet.spi(), 0x0102_0304);
        assert_eq!(packet.seq_number(), 0xa0b0_c0d0);
        assert_eq!(packet.payload().len(), 4);
        assert_eq!(Packet::new_checked(&buf[..7]), Err(WireError::Truncated));
    }

    #[test]
    fn padding() {
        for len in 0..64usize {
            let pad = pad_len(len);
            assert!(pad < 4);
            assert_eq!((len + pad + 2) % 4, 0);
        }
    }

    #[test]
    fn trailer_roundtrip() {
        for pad in 0..=255usize {
            let mut buf = vec![0xeeu8; 5 + pad + 2];
            write_trailer(&mut buf[5..], 41).unwrap();
            let t = parse_trailer(&buf).unwrap();
            assert_eq!(
                t,
                Trailer {
                    payload_len: 5,
                    pad_len: pad as u8,
                    next_header: 41
                }
            );
            if pad > 0 {
                buf[5 + pad - 1] ^= 0x80;
                assert_eq!(parse_trailer(&buf), Err(TrailerError::BadPadding));
            }
        }
        assert_eq!(parse_trailer(&[4]), Err(TrailerError::Truncated));
        assert_eq!(parse_trailer(&[2, 1, 4]), Err(TrailerError::BadPadding));
        assert_eq!(parse_trailer(&[1, 2, 4]), Err(TrailerError::Truncated));
        assert_eq!(parse_trailer(&[1, 4]), Err(TrailerError::Truncated));
        assert_eq!(parse_trailer(&[0, 4]).unwrap().payload_len, 0);
        assert_eq!(
            write_trailer(&mut [0u8; 1], 4),
            Err(TrailerError::Truncated)
        );
    }
}
