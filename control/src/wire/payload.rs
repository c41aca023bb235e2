//! The generic payload header chain (RFC 7296 section 3.2), the typed
//! payloads and a whole message.
//!
//! ```text
//! 0 next payload (1) | 1 C:1 reserved:7 | 2 payload length (2), header included
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};

use super::consts::{id, payload as pt};
use super::header::{IkeHeader, HEADER_LEN};
use super::sa::SecurityAssociation;
use super::ts::TrafficSelectors;
use super::{be16, len16, len8, Error};

/// The length of the generic payload header.
pub const GENERIC_HEADER_LEN: usize = 4;

/// The critical bit in the generic payload header's second octet.
const CRITICAL: u8 = 0x80;

/// One payload of the chain, as bytes: its type, the critical bit, the next
/// payload field and the body after the generic header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawPayload<'a> {
    /// This payload's type (from the previous payload's next payload field,
    /// or the IKE header's).
    pub kind: u8,
    /// The critical bit.
    pub critical: bool,
    /// The next payload field; for SK it is the type of the first payload
    /// inside the encrypted data.
    pub next_payload: u8,
    /// The body after the generic header.
    pub body: &'a [u8],
}

/// Walks the payload chain of a message's body.
///
/// Yields known payloads, skips unknown payloads without the critical bit,
/// and stops after yielding one error: a truncated generic header, a length
/// smaller than 4 or past the end, trailing bytes after the last payload, or
/// an unknown payload with the critical bit
/// ([`Error::UnsupportedCriticalPayload`]). An SK payload ends the chain: its
/// next payload field names the first encrypted payload.
#[derive(Debug, Clone)]
pub struct PayloadIter<'a> {
    next: u8,
    rest: &'a [u8],
    done: bool,
}

impl<'a> PayloadIter<'a> {
    /// Iterates over `buf` whose first payload has type `first` (the IKE
    /// header's next payload field, or SK's for decrypted contents).
    pub fn new(first: u8, buf: &'a [u8]) -> Self {
        PayloadIter {
            next: first,
            rest: buf,
            done: false,
        }
    }

    fn fail(&mut self, e: Error) -> Option<Result<RawPayload<'a>, Error>> {
        self.done = true;
        Some(Err(e))
    }
}

impl<'a> Iterator for PayloadIter<'a> {
    type Item = Result<RawPayload<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            if self.next == pt::NONE {
                self.done = true;
                if !self.rest.is_empty() {
                    return Some(Err(Error::TrailingBytes(self.rest.len())));
                }
                return None;
            }
            let rest = self.rest;
            let (Some(length), Some(&flags), Some(&next)) =
                (be16(rest, 2), rest.get(1), rest.first())
            else {
                return self.fail(Error::TruncatedPayload(rest.len()));
            };
            if usize::from(length) < GENERIC_HEADER_LEN {
                return self.fail(Error::PayloadTooShort(length));
            }
            let Some(body) = rest.get(GENERIC_HEADER_LEN..usize::from(length)) else {
                return self.fail(Error::PayloadOverflow {
                    length,
                    available: rest.len(),
                });
            };
            let kind = self.next;
            let critical = flags & CRITICAL != 0;
            self.next = next;
            self.rest = rest.get(usize::from(length)..).unwrap_or_default();
            if kind == pt::SK || kind == pt::SKF {
                self.done = true;
                if !self.rest.is_empty() {
                    return Some(Err(Error::TrailingBytes(self.rest.len())));
                }
            }
            if !pt::is_known(kind) {
                if critical {
                    return self.fail(Error::UnsupportedCriticalPayload(kind));
                }
                continue;
            }
            return Some(Ok(RawPayload {
                kind,
                critical,
                next_payload: next,
                body,
            }));
        }
    }
}

/// The Key Exchange payload (section 3.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyExchange {
    /// The Diffie-Hellman group (see [`super::consts::dh`]).
    pub group: u16,
    /// The public value.
    pub data: Vec<u8>,
}

impl KeyExchange {
    /// Parses the body.
    pub fn parse(body: &[u8]) -> Result<Self, Error> {
        let group = be16(body, 0).ok_or(Error::Malformed("KE payload: too short"))?;
        let data = body
            .get(4..)
            .ok_or(Error::Malformed("KE payload: too short"))?;
        Ok(KeyExchange {
            group,
            data: data.to_vec(),
        })
    }

    /// Appends the body.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.group.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.data);
    }
}

/// The Notify payload (section 3.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// The protocol ID (0 or IKE for the IKE SA, ESP or AH for a Child SA).
    pub protocol: u8,
    /// The SPI of the SA concerned (empty for the IKE SA).
    pub spi: Vec<u8>,
    /// The notify message type (see [`super::consts::notify`]).
    pub kind: u16,
    /// The notification data.
    pub data: Vec<u8>,
}

impl Notify {
    /// A notify about the IKE SA (protocol 0, no SPI).
    pub fn new(kind: u16, data: impl Into<Vec<u8>>) -> Self {
        Notify {
            protocol: 0,
            spi: Vec::new(),
            kind,
            data: data.into(),
        }
    }

    /// Parses the body.
    pub fn parse(body: &[u8]) -> Result<Self, Error> {
        const E: Error = Error::Malformed("Notify payload: too short");
        let protocol = *body.first().ok_or(E)?;
        let spi_size = usize::from(*body.get(1).ok_or(E)?);
        let kind = be16(body, 2).ok_or(E)?;
        let spi = body.get(4..4 + spi_size).ok_or(E)?;
        let data = body.get(4 + spi_size..).ok_or(E)?;
        Ok(Notify {
            protocol,
            spi: spi.to_vec(),
            kind,
            data: data.to_vec(),
        })
    }

    /// Appends the body.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        out.push(self.protocol);
        out.push(len8(self.spi.len(), "Notify SPI")?);
        out.extend_from_slice(&self.kind.to_be_bytes());
        out.extend_from_slice(&self.spi);
        out.extend_from_slice(&self.data);
        Ok(())
    }
}

/// The Delete payload (section 3.11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    /// The protocol ID (IKE, ESP or AH).
    pub protocol: u8,
    /// The size of each SPI (0 for IKE, 4 for ESP and AH).
    pub spi_size: u8,
    /// The SPIs, each `spi_size` bytes long.
    pub spis: Vec<Vec<u8>>,
}

impl Delete {
    /// Parses the body.
    pub fn parse(body: &[u8]) -> Result<Self, Error> {
        const E: Error = Error::Malformed("Delete payload: too short");
        let protocol = *body.first().ok_or(E)?;
        let spi_size = *body.get(1).ok_or(E)?;
        let count = usize::from(be16(body, 2).ok_or(E)?);
        let spis = body.get(4..).ok_or(E)?;
        if spis.len() != count * usize::from(spi_size) {
            return Err(Error::Malformed(
                "Delete payload: SPI count and size disagree with its length",
            ));
        }
        let spis = if spi_size == 0 {
            if count != 0 {
                return Err(Error::Malformed("Delete payload: SPIs of size zero"));
            }
            Vec::new()
        } else {
            spis.chunks_exact(usize::from(spi_size))
                .map(<[u8]>::to_vec)
                .collect()
        };
        Ok(Delete {
            protocol,
            spi_size,
            spis,
        })
    }

    /// Appends the body; every SPI must be `spi_size` bytes long.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        if self
            .spis
            .iter()
            .any(|s| s.len() != usize::from(self.spi_size))
        {
            return Err(Error::Malformed("Delete payload: an SPI of the wrong size"));
        }
        out.push(self.protocol);
        out.push(self.spi_size);
        out.extend_from_slice(&len16(self.spis.len(), "Delete SPI count")?.to_be_bytes());
        for s in &self.spis {
            out.extend_from_slice(s);
        }
        Ok(())
    }
}

/// The Identification payload body (section 3.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identification {
    /// ID_IPV4_ADDR.
    Ipv4(Ipv4Addr),
    /// ID_IPV6_ADDR.
    Ipv6(Ipv6Addr),
    /// ID_FQDN, raw bytes (no terminator, not checked).
    Fqdn(Vec<u8>),
    /// ID_RFC822_ADDR, raw bytes.
    Rfc822(Vec<u8>),
    /// ID_DER_ASN1_DN, the DER bytes as they are.
    DerDn(Vec<u8>),
    /// Any other ID type, raw.
    Other {
        /// The ID type.
        kind: u8,
        /// The identification data.
        data: Vec<u8>,
    },
}

impl Identification {
    /// Parses the body.
    pub fn parse(body: &[u8]) -> Result<Self, Error> {
        let kind = *body
            .first()
            .ok_or(Error::Malformed("ID payload: too short"))?;
        let data = body
            .get(4..)
            .ok_or(Error::Malformed("ID payload: too short"))?;
        Ok(match kind {
            id::IPV4_ADDR => {
                let a: [u8; 4] = data
                    .try_into()
                    .map_err(|_| Error::Malformed("ID payload: IPv4 address not 4 bytes"))?;
                Identification::Ipv4(Ipv4Addr::from(a))
            }
            id::IPV6_ADDR => {
                let a: [u8; 16] = data
                    .try_into()
                    .map_err(|_| Error::Malformed("ID payload: IPv6 address not 16 bytes"))?;
                Identification::Ipv6(Ipv6Addr::from(a))
            }
            id::FQDN => Identification::Fqdn(data.to_vec()),
            id::RFC822_ADDR => Identification::Rfc822(data.to_vec()),
            id::DER_ASN1_DN => Identification::DerDn(data.to_vec()),
            kind => Identification::Other {
                kind,
                data: data.to_vec(),
            },
        })
    }

    /// The ID type.
    pub fn kind(&self) -> u8 {
        match self {
            Identification::Ipv4(_) => id::IPV4_ADDR,
            Identification::Ipv6(_) => id::IPV6_ADDR,
            Identification::Fqdn(_) => id::FQDN,
            Identification::Rfc822(_) => id::RFC822_ADDR,
            Identification::DerDn(_) => id::DER_ASN1_DN,
            Identification::Other { kind, .. } => *kind,
        }
    }

    /// Appends the body.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.kind(), 0, 0, 0]);
        match self {
            Identification::Ipv4(a) => out.extend_from_slice(&a.octets()),
            Identification::Ipv6(a) => out.extend_from_slice(&a.octets()),
            Identification::Fqdn(d)
            | Identification::Rfc822(d)
            | Identification::DerDn(d)
            | Identification::Other { data: d, .. } => out.extend_from_slice(d),
        }
    }
}

/// The Authentication payload (section 3.8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// The authentication method (see [`super::consts::auth_method`]).
    pub method: u8,
    /// The authentication data.
    pub data: Vec<u8>,
}

impl Auth {
    /// Parses the body.
    pub fn parse(body: &[u8]) -> Result<Self, Error> {
        let method = *body
            .first()
            .ok_or(Error::Malformed("AUTH payload: too short"))?;
        let data = body
            .get(4..)
            .ok_or(Error::Malformed("AUTH payload: too short"))?;
        Ok(Auth {
            method,
            data: data.to_vec(),
        })
    }

    /// Appends the body.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.method, 0, 0, 0]);
        out.extend_from_slice(&self.data);
    }
}

/// A typed payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Security Association.
    Sa(SecurityAssociation),
    /// Key Exchange.
    Ke(KeyExchange),
    /// Identification - Initiator.
    IdI(Identification),
    /// Identification - Responder.
    IdR(Identification),
    /// Nonce (16 to 256 bytes; the length is left to the state machine).
    Nonce(Vec<u8>),
    /// Notify.
    Notify(Notify),
    /// Delete.
    Delete(Delete),
    /// Vendor ID.
    VendorId(Vec<u8>),
    /// Authentication.
    Auth(Auth),
    /// Traffic Selector - Initiator.
    TsI(TrafficSelectors),
    /// Traffic Selector - Responder.
    TsR(TrafficSelectors),
    /// Encrypted and Authenticated (SK): the IV, ciphertext, padding and ICV
    /// as they are, and the type of the first payload inside.
    Encrypted {
        /// The type of the first payload inside the encrypted data.
        first_inner: u8,
        /// The body: IV, ciphertext and ICV.
        body: Vec<u8>,
    },
    /// A known payload without a typed form here (CERT, CERTREQ, CP, EAP,
    /// SKF), its body raw.
    Other {
        /// The payload type.
        kind: u8,
        /// The body.
        body: Vec<u8>,
    },
}

impl Payload {
    /// The payload type.
    pub fn kind(&self) -> u8 {
        match self {
            Payload::Sa(_) => pt::SA,
            Payload::Ke(_) => pt::KE,
            Payload::IdI(_) => pt::IDI,
            Payload::IdR(_) => pt::IDR,
            Payload::Nonce(_) => pt::NONCE,
            Payload::Notify(_) => pt::NOTIFY,
            Payload::Delete(_) => pt::DELETE,
            Payload::VendorId(_) => pt::VENDOR_ID,
            Payload::Auth(_) => pt::AUTH,
            Payload::TsI(_) => pt::TSI,
            Payload::TsR(_) => pt::TSR,
            Payload::Encrypted { .. } => pt::SK,
            Payload::Other { kind, .. } => *kind,
        }
    }

    /// Parses one payload of the chain into its typed form.
    pub fn parse(raw: &RawPayload<'_>) -> Result<Self, Error> {
        let body = raw.body;
        Ok(match raw.kind {
            pt::SA => Payload::Sa(SecurityAssociation::parse(body)?),
            pt::KE => Payload::Ke(KeyExchange::parse(body)?),
            pt::IDI => Payload::IdI(Identification::parse(body)?),
            pt::IDR => Payload::IdR(Identification::parse(body)?),
            pt::NONCE => Payload::Nonce(body.to_vec()),
            pt::NOTIFY => Payload::Notify(Notify::parse(body)?),
            pt::DELETE => Payload::Delete(Delete::parse(body)?),
            pt::VENDOR_ID => Payload::VendorId(body.to_vec()),
            pt::AUTH => Payload::Auth(Auth::parse(body)?),
            pt::TSI => Payload::TsI(TrafficSelectors::parse(body)?),
            pt::TSR => Payload::TsR(TrafficSelectors::parse(body)?),
            pt::SK => Payload::Encrypted {
                first_inner: raw.next_payload,
                body: body.to_vec(),
            },
            kind => Payload::Other {
                kind,
                body: body.to_vec(),
            },
        })
    }

    /// Appends the body (without the generic header).
    pub fn emit_body(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        match self {
            Payload::Sa(sa) => sa.emit(out)?,
            Payload::Ke(ke) => ke.emit(out),
            Payload::IdI(i) | Payload::IdR(i) => i.emit(out),
            Payload::Nonce(d) | Payload::VendorId(d) => out.extend_from_slice(d),
            Payload::Notify(n) => n.emit(out)?,
            Payload::Delete(d) => d.emit(out)?,
            Payload::Auth(a) => a.emit(out),
            Payload::TsI(t) | Payload::TsR(t) => t.emit(out)?,
            Payload::Encrypted { body, .. } | Payload::Other { body, .. } => {
                out.extend_from_slice(body)
            }
        }
        Ok(())
    }

    /// Appends the payload with its generic header, `next` being the type of
    /// the payload that follows (ignored for SK, which names its first inner
    /// payload instead). The critical bit is sent as zero, as RFC 7296 asks
    /// for the payloads it defines.
    pub fn emit(&self, next: u8, out: &mut Vec<u8>) -> Result<(), Error> {
        let start = out.len();
        let next = match self {
            Payload::Encrypted { first_inner, .. } => *first_inner,
            _ => next,
        };
        out.extend_from_slice(&[next, 0, 0, 0]);
        self.emit_body(out)?;
        let len = len16(out.len() - start, "payload")?;
        out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }
}

/// Parses a chain of payloads into typed payloads (unknown non-critical
/// payloads are skipped).
pub fn parse_payloads(first: u8, buf: &[u8]) -> Result<Vec<Payload>, Error> {
    PayloadIter::new(first, buf)
        .map(|raw| raw.and_then(|raw| Payload::parse(&raw)))
        .collect()
}

/// Appends a chain of payloads and returns the type of the first one (for
/// the IKE header's or SK's next payload field).
pub fn emit_payloads(payloads: &[Payload], out: &mut Vec<u8>) -> Result<u8, Error> {
    for (i, p) in payloads.iter().enumerate() {
        let next = payloads.get(i + 1).map_or(pt::NONE, Payload::kind);
        p.emit(next, out)?;
    }
    Ok(payloads.first().map_or(pt::NONE, Payload::kind))
}

/// A whole IKE message: the header and its typed payloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The header; [`Message::emit`] fills in `next_payload` and `length`.
    pub header: IkeHeader,
    /// The payloads in order.
    pub payloads: Vec<Payload>,
}

impl Message {
    /// Parses a whole datagram (after the non-ESP marker on port 4500).
    pub fn parse(buf: &[u8]) -> Result<Self, Error> {
        let header = IkeHeader::parse(buf)?;
        let body = buf.get(HEADER_LEN..).unwrap_or_default();
        let payloads = parse_payloads(header.next_payload, body)?;
        Ok(Message { header, payloads })
    }

    /// Emits the message, setting the header's next payload and length.
    pub fn emit(&self) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(256);
        let mut header = self.header;
        header.emit(&mut out);
        header.next_payload = emit_payloads(&self.payloads, &mut out)?;
        header.length = u32::try_from(out.len()).map_err(|_| Error::TooLong("message"))?;
        let mut fixed = Vec::with_capacity(HEADER_LEN);
        header.emit(&mut fixed);
        out[..HEADER_LEN].copy_from_slice(&fixed);
        Ok(out)
    }

    /// The message with its header's `next_payload` and `length` as
    /// [`Message::emit`] would set them (handy to compare with a parse).
    pub fn normalized(&self) -> Result<Self, Error> {
        let bytes = self.emit()?;
        Ok(Message {
            header: IkeHeader::peek(&bytes)?,
            payloads: self.payloads.clone(),
        })
    }
}
