//! The Security Association payload (RFC 7296 section 3.3): proposals,
//! transforms and transform attributes.
//!
//! ```text
//! proposal:  0 last(0|2) | 1 reserved | 2 length (2) | 4 number | 5 protocol ID
//!            6 SPI size  | 7 transform count | 8 SPI | transforms
//! transform: 0 last(0|3) | 1 reserved | 2 length (2) | 4 type | 5 reserved
//!            6 transform ID (2) | 8 attributes
//! attribute: 0 AF:1 type:15 | 2 value (2) if AF, else length (2) then value
//! ```

use super::consts::attribute;
use super::{be16, len16, len8, Error};

const MORE_PROPOSALS: u8 = 2;
const MORE_TRANSFORMS: u8 = 3;
const AF: u16 = 0x8000;

/// The value of a transform attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeValue {
    /// Type/Value format (AF = 1): two bytes.
    Short(u16),
    /// Type/Length/Value format (AF = 0).
    Long(Vec<u8>),
}

/// A transform attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// The attribute type, without the AF bit.
    pub kind: u16,
    /// The value.
    pub value: AttributeValue,
}

/// A transform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transform {
    /// The transform type (see [`super::consts::transform_type`]).
    pub kind: u8,
    /// The transform ID.
    pub id: u16,
    /// The attributes in order (the state machine rejects a transform with
    /// an attribute it does not know).
    pub attributes: Vec<Attribute>,
}

impl Transform {
    /// A transform without attributes.
    pub fn new(kind: u8, id: u16) -> Self {
        Transform {
            kind,
            id,
            attributes: Vec::new(),
        }
    }

    /// A transform with a Key Length attribute (in bits).
    pub fn with_key_length(kind: u8, id: u16, bits: u16) -> Self {
        Transform {
            kind,
            id,
            attributes: vec![Attribute {
                kind: attribute::KEY_LENGTH,
                value: AttributeValue::Short(bits),
            }],
        }
    }

    /// The Key Length attribute, in bits, if present in TV format.
    pub fn key_length(&self) -> Option<u16> {
        self.attributes.iter().find_map(|a| match a {
            Attribute {
                kind: attribute::KEY_LENGTH,
                value: AttributeValue::Short(v),
            } => Some(*v),
            _ => None,
        })
    }

    /// Parses one transform substructure's fields after its length check;
    /// `buf` is the whole substructure.
    fn parse(buf: &[u8]) -> Result<Self, Error> {
        const E: Error = Error::Malformed("SA payload: transform too short");
        let kind = *buf.get(4).ok_or(E)?;
        let id = be16(buf, 6).ok_or(E)?;
        let mut rest = buf.get(8..).ok_or(E)?;
        let mut attributes = Vec::new();
        while !rest.is_empty() {
            const A: Error = Error::Malformed("SA payload: attribute truncated");
            let t = be16(rest, 0).ok_or(A)?;
            let v = be16(rest, 2).ok_or(A)?;
            if t & AF != 0 {
                attributes.push(Attribute {
                    kind: t & !AF,
                    value: AttributeValue::Short(v),
                });
                rest = rest.get(4..).ok_or(A)?;
            } else {
                let end = 4 + usize::from(v);
                let value = rest.get(4..end).ok_or(A)?;
                attributes.push(Attribute {
                    kind: t,
                    value: AttributeValue::Long(value.to_vec()),
                });
                rest = rest.get(end..).ok_or(A)?;
            }
        }
        Ok(Transform {
            kind,
            id,
            attributes,
        })
    }

    fn emit(&self, last: bool, out: &mut Vec<u8>) -> Result<(), Error> {
        let start = out.len();
        out.extend_from_slice(&[if last { 0 } else { MORE_TRANSFORMS }, 0, 0, 0]);
        out.push(self.kind);
        out.push(0);
        out.extend_from_slice(&self.id.to_be_bytes());
        for a in &self.attributes {
            if a.kind & AF != 0 {
                return Err(Error::TooLong("attribute type"));
            }
            match &a.value {
                AttributeValue::Short(v) => {
                    out.extend_from_slice(&(a.kind | AF).to_be_bytes());
                    out.extend_from_slice(&v.to_be_bytes());
                }
                AttributeValue::Long(v) => {
                    out.extend_from_slice(&a.kind.to_be_bytes());
                    out.extend_from_slice(&len16(v.len(), "attribute value")?.to_be_bytes());
                    out.extend_from_slice(v);
                }
            }
        }
        let len = len16(out.len() - start, "transform")?;
        out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }
}

/// A proposal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// The proposal number (1 for the first, then one more each).
    pub number: u8,
    /// The protocol ID (see [`super::consts::protocol`]).
    pub protocol: u8,
    /// The SPI (empty in an IKE SA's first proposal, 4 bytes for ESP).
    pub spi: Vec<u8>,
    /// The transforms.
    pub transforms: Vec<Transform>,
}

/// Splits a chain of substructures ("last" octet, reserved, two-byte
/// length) off `buf`, checking the last/more marker.
fn split_sub<'a>(
    buf: &'a [u8],
    more: u8,
    min: usize,
    what: &'static str,
) -> Result<(&'a [u8], &'a [u8], bool), Error> {
    let marker = *buf.first().ok_or(Error::Malformed(what))?;
    let len = usize::from(be16(buf, 2).ok_or(Error::Malformed(what))?);
    if len < min {
        return Err(Error::Malformed(what));
    }
    let sub = buf.get(..len).ok_or(Error::Malformed(what))?;
    let rest = buf.get(len..).ok_or(Error::Malformed(what))?;
    let last = match marker {
        0 => true,
        m if m == more => false,
        _ => return Err(Error::Malformed(what)),
    };
    Ok((sub, rest, last))
}

impl Proposal {
    fn parse(buf: &[u8]) -> Result<Self, Error> {
        const E: Error = Error::Malformed("SA payload: proposal too short");
        let number = *buf.get(4).ok_or(E)?;
        let protocol = *buf.get(5).ok_or(E)?;
        let spi_size = usize::from(*buf.get(6).ok_or(E)?);
        let count = usize::from(*buf.get(7).ok_or(E)?);
        let spi = buf.get(8..8 + spi_size).ok_or(E)?;
        let mut rest = buf.get(8 + spi_size..).ok_or(E)?;
        let mut transforms = Vec::with_capacity(count);
        let mut last = rest.is_empty();
        while !last {
            let (sub, r, l) =
                split_sub(rest, MORE_TRANSFORMS, 8, "SA payload: bad transform header")?;
            transforms.push(Transform::parse(sub)?);
            rest = r;
            last = l;
        }
        if !rest.is_empty() {
            return Err(Error::Malformed(
                "SA payload: bytes after the last transform",
            ));
        }
        if transforms.len() != count {
            return Err(Error::Malformed("SA payload: transform count disagrees"));
        }
        Ok(Proposal {
            number,
            protocol,
            spi: spi.to_vec(),
            transforms,
        })
    }

    fn emit(&self, last: bool, out: &mut Vec<u8>) -> Result<(), Error> {
        let start = out.len();
        out.extend_from_slice(&[if last { 0 } else { MORE_PROPOSALS }, 0, 0, 0]);
        out.push(self.number);
        out.push(self.protocol);
        out.push(len8(self.spi.len(), "proposal SPI")?);
        out.push(len8(self.transforms.len(), "transform count")?);
        out.extend_from_slice(&self.spi);
        for (i, t) in self.transforms.iter().enumerate() {
            t.emit(i + 1 == self.transforms.len(), out)?;
        }
        let len = len16(out.len() - start, "proposal")?;
        out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }
}

/// The SA payload body: one or more proposals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityAssociation {
    /// The proposals in order of preference.
    pub proposals: Vec<Proposal>,
}

impl SecurityAssociation {
    /// Parses the body.
    pub fn parse(body: &[u8]) -> Result<Self, Error> {
        let mut proposals = Vec::new();
        let mut rest = body;
        let mut last = rest.is_empty();
        while !last {
            let (sub, r, l) =
                split_sub(rest, MORE_PROPOSALS, 8, "SA payload: bad proposal header")?;
            proposals.push(Proposal::parse(sub)?);
            rest = r;
            last = l;
        }
        if !rest.is_empty() {
            return Err(Error::Malformed(
                "SA payload: bytes after the last proposal",
            ));
        }
        Ok(SecurityAssociation { proposals })
    }

    /// Appends the body.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        for (i, p) in self.proposals.iter().enumerate() {
            p.emit(i + 1 == self.proposals.len(), out)?;
        }
        Ok(())
    }
}
