//! UDP headers (RFC 768) and the ESP-in-UDP demultiplexing of RFC 3948.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{be16, checksum, ip_proto, put16, WireError};

/// Length of a UDP header.
pub const HEADER_LEN: usize = 8;

/// The IKE / NAT-T port on which ESP-in-UDP arrives (RFC 3948).
pub const NAT_T_PORT: u16 = 4500;

pub(crate) mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LENGTH: usize = 4;
    pub const CHECKSUM: usize = 6;
}

/// A view of a UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    #[inline]
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps a buffer after checking that the header is present, the length
    /// field is at least 8 and that many bytes are present. The buffer may be
    /// longer; [`Packet::payload`] stops at the length field.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Packet { buffer };
        packet.check_len()?;
        Ok(packet)
    }

    #[inline]
    pub fn check_len(&self) -> Result<(), WireError> {
        let data = self.buffer.as_ref();
        if data.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let len = usize::from(self.len());
        if len < HEADER_LEN {
            return Err(WireError::BadLength);
        }
        if data.len() < len {
            return Err(WireError::Truncated);
        }
        Ok(())
    }

    #[inline]
    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT)
    }

    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// The length field: header plus payload.
    #[inline]
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        be16(self.buffer.as_ref(), field::LENGTH)
    }

    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }

    /// The datagram, header included, up to the length field (clamped).
    #[inline]
    pub fn datagram(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        &data[..usize::from(self.len()).min(data.len())]
    }

    /// The payload, up to the length field (clamped to the buffer).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        let data = self.buffer.as_ref();
        let end = usize::from(self.len()).min(data.len());
        &data[HEADER_LEN.min(end)..end]
    }

    /// Verifies the checksum over IPv4; a zero checksum means "none" there
    /// and is accepted.
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        if self.checksum() == 0 {
            return true;
        }
        let acc = checksum::pseudo_header_v4(src, dst, ip_proto::UDP, self.len());
        checksum::fold(checksum::add(acc, self.datagram())) == 0xffff
    }

    /// Verifies the checksum over IPv6, where a zero checksum is invalid.
    pub fn verify_checksum_v6(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        if self.checksum() == 0 {
            return false;
        }
        let acc = checksum::pseudo_header_v6(src, dst, ip_proto::UDP, u32::from(self.len()));
        checksum::fold(checksum::add(acc, self.datagram())) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    #[inline]
    pub fn set_src_port(&mut self, port: u16) {
        put16(self.buffer.as_mut(), field::SRC_PORT, port);
    }

    #[inline]
    pub fn set_dst_port(&mut self, port: u16) {
        put16(self.buffer.as_mut(), field::DST_PORT, port);
    }

    #[inline]
    pub fn set_len(&mut self, len: u16) {
        put16(self.buffer.as_mut(), field::LENGTH, len);
    }

    #[inline]
    pub fn set_checksum(&mut self, value: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, value);
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = usize::from(self.len());
        let data = self.buffer.as_mut();
        let end = len.min(data.len());
        &mut data[HEADER_LEN.min(end)..end]
    }

    /// Computes and writes the checksum over IPv4.
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let acc = checksum::pseudo_header_v4(src, dst, ip_proto::UDP, self.len());
        let sum = checksum::finish(checksum::add(acc, self.datagram()));
        self.set_checksum(if sum == 0 { 0xffff } else { sum });
    }

    /// Computes and writes the checksum over IPv6.
    pub fn fill_checksum_v6(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.set_checksum(0);
        let acc = checksum::pseudo_header_v6(src, dst, ip_proto::UDP, u32::from(self.len()));
        let sum = checksum::finish(checksum::add(acc, self.datagram()));
        self.set_checksum(if sum == 0 { 0xffff } else { sum });
    }
}

/// What a UDP payload on the NAT-T port is (RFC 3948 section 2.2, RFC 3947).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatTPayload {
    /// ESP: the first four bytes (the SPI) are non-zero.
    Esp,
    /// IKE: the four-byte non-ESP marker (zero) precedes an IKE message.
    Ike,
    /// A NAT-keepalive: the single byte 0xff.
    Keepalive,
    /// Shorter than a marker and not a keepalive.
    Invalid,
}

/// Classifies the payload of a UDP datagram received on the NAT-T port.
#[inline]
pub fn classify_nat_t(payload: &[u8]) -> NatTPayload {
    match payload {
        [0xff] => NatTPayload::Keepalive,
        [0, 0, 0, 0, ..] => NatTPayload::Ike,
        [_, _, _, _, ..] => NatTPayload::Esp,
        _ => NatTPayload::Invalid,
    }
}

/// The fields of a UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Repr {
    pub src_port: u16,
    pub dst_port: u16,
    pub payload_len: usize,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, WireError> {
        packet.check_len()?;
        Ok(Repr {
            src_port: packet.src_port(),
            dst_port: packet.dst_port(),
            payload_len: usize::from(packet.len()) - HEADER_LEN,
        })
    }

    /// Writes the header with a zero checksum into the front of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), WireError> {
        if buf.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let len = u16::try_from(HEADER_LEN + self.payload_len).map_err(|_| WireError::BadLength)?;
        let mut packet = Packet::new_unchecked(&mut buf[..HEADER_LEN]);
        packet.set_src_port(self.src_port);
        packet.set_dst_port(self.dst_port);
        packet.set_len(len);
        packet.set_checksum(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums() {
        let mut buf = [0u8; 13];
        Repr {
            src_port: 4500,
            dst_port: 4500,
            payload_len: 5,
        }
        .emit(&mut buf)
        .unwrap();
        buf[8..].copy_from_slice(b"hello");
        let src4 = Ipv4Addr::new(198, 18, 0, 1);
        let dst4 = Ipv4Addr::new(198, 18, 0, 2);
        let mut packet = Packet::new_checked(&mut buf[..]).unwrap();
        packet.fill_checksum_v4(src4, dst4);
        assert!(packet.verify_checksum_v4(src4, dst4));
        assert!(!packet.verify_checksum_v4(dst4, Ipv4Addr::new(1, 1, 1, 1)));
        let src6: Ipv6Addr = "fd00::1".parse().unwrap();
        let dst6: Ipv6Addr = "fd00::2".parse().unwrap();
        packet.fill_checksum_v6(&src6, &dst6);
        assert!(packet.verify_checksum_v6(&src6, &dst6));
        packet.set_checksum(0);
        assert!(!packet.verify_checksum_v6(&src6, &dst6));
        assert_eq!(packet.payload(), b"hello");
    }

    #[test]
    fn nat_t() {
        assert_eq!(classify_nat_t(&[0xff]), NatTPayload::Keepalive);
        assert_eq!(classify_nat_t(&[0, 0, 0, 0, 1]), NatTPayload::Ike);
        assert_eq!(classify_nat_t(&[0, 0, 1, 0]), NatTPayload::Esp);
        assert_eq!(classify_nat_t(&[1, 2]), NatTPayload::Invalid);
    }
}
