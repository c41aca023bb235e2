//! What every generated UDP datagram carries at the start of its payload,
//! big-endian:
//!
//! ```text
//!  0      4        6        8                16               24
//!  +------+--------+--------+----------------+----------------+---------
//!  | XSB1 | stream | 0      | sequence       | tx time (ns)   | filler..
//!  +------+--------+--------+----------------+----------------+---------
//! ```
//!
//! The stream is the generator's TX queue; sequence numbers count from 0
//! per stream; the transmit time is CLOCK_MONOTONIC ([`crate::clock`]).

/// The magic that marks a generated datagram.
pub const MAGIC: [u8; 4] = *b"XSB1";

/// Bytes of the header above; a datagram's payload is at least this long.
pub const LEN: usize = 24;

/// The fields of a payload header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Which stream (generator TX queue) sent it.
    pub stream: u16,
    /// Its sequence number within the stream.
    pub seq: u64,
    /// CLOCK_MONOTONIC nanoseconds when it was put on the TX ring.
    pub tx_ns: u64,
}

/// Why a payload is not one of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Shorter than [`LEN`].
    #[error("payload shorter than {LEN} bytes")]
    Short,
    /// No [`MAGIC`].
    #[error("no XSB1 magic")]
    Foreign,
}

impl Stamp {
    /// Writes the header into the front of `payload` (at least [`LEN`]
    /// bytes, else nothing is written and this fails).
    pub fn write(&self, payload: &mut [u8]) -> Result<(), PayloadError> {
        let head = payload.get_mut(..LEN).ok_or(PayloadError::Short)?;
        head[0..4].copy_from_slice(&MAGIC);
        head[4..6].copy_from_slice(&self.stream.to_be_bytes());
        head[6..8].copy_from_slice(&[0, 0]);
        head[8..16].copy_from_slice(&self.seq.to_be_bytes());
        head[16..24].copy_from_slice(&self.tx_ns.to_be_bytes());
        Ok(())
    }

    /// Reads the header from the front of `payload`.
    pub fn read(payload: &[u8]) -> Result<Stamp, PayloadError> {
        let head = payload.get(..LEN).ok_or(PayloadError::Short)?;
        if head[0..4] != MAGIC {
            return Err(PayloadError::Foreign);
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&head[at..at + 8]);
            u64::from_be_bytes(b)
        };
        Ok(Stamp {
            stream: u16::from_be_bytes([head[4], head[5]]),
            seq: u64_at(8),
            tx_ns: u64_at(16),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_layout() {
        let stamp = Stamp {
            stream: 0x0102,
            seq: 0x1112_1314_1516_1718,
            tx_ns: 0x2122_2324_2526_2728,
        };
        let mut buf = [0xeeu8; 30];
        stamp.write(&mut buf).unwrap();
        assert_eq!(&buf[..4], b"XSB1");
        assert_eq!(&buf[4..8], &[1, 2, 0, 0]);
        assert_eq!(
            &buf[8..16],
            &[0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]
        );
        assert_eq!(
            &buf[16..24],
            &[0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28]
        );
        assert_eq!(&buf[24..], &[0xee; 6], "the filler is left alone");
        assert_eq!(Stamp::read(&buf), Ok(stamp));
    }

    #[test]
    fn rejects_short_and_foreign_payloads() {
        let mut short = [0u8; LEN - 1];
        let stamp = Stamp {
            stream: 0,
            seq: 1,
            tx_ns: 2,
        };
        assert_eq!(stamp.write(&mut short), Err(PayloadError::Short));
        assert_eq!(short, [0u8; LEN - 1], "nothing written");
        assert_eq!(Stamp::read(&short), Err(PayloadError::Short));
        let mut other = [0u8; LEN];
        stamp.write(&mut other).unwrap();
        other[0] = b'Y';
        assert_eq!(Stamp::read(&other), Err(PayloadError::Foreign));
    }
}
