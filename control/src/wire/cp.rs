//! The Configuration payload (RFC 7296 section 3.15): how a remote-access
//! client asks for a virtual IP and DNS servers (CFG_REQUEST) and how the
//! gateway answers (CFG_REPLY).
//!
//! ```text
//! payload:   0 CFG type | 1 reserved (3) | 4 attributes
//! attribute: 0 R:1 attribute type:15 (2) | 2 length (2) | 4 value
//! ```
//!
//! A request carries attributes with an empty value (or the address the
//! client would like); a reply carries the values. The types this code
//! interprets are parsed into [`CfgAttribute`] variants with their RFC
//! lengths checked; every other type is kept as
//! [`CfgAttribute::Other`] so that it can be ignored, as RFC 7296 asks.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{be16, len16, Error};

/// CFG types (RFC 7296 section 3.15).
pub mod cfg_type {
    /// The client asks.
    pub const REQUEST: u8 = 1;
    /// The gateway answers a request.
    pub const REPLY: u8 = 2;
    /// A party sets values unasked.
    pub const SET: u8 = 3;
    /// Acknowledges a SET.
    pub const ACK: u8 = 4;
}

/// Configuration attribute types (RFC 7296 section 3.15.1).
pub mod attr {
    /// INTERNAL_IP4_ADDRESS: 0 or 4 bytes.
    pub const INTERNAL_IP4_ADDRESS: u16 = 1;
    /// INTERNAL_IP4_NETMASK: 0 or 4 bytes.
    pub const INTERNAL_IP4_NETMASK: u16 = 2;
    /// INTERNAL_IP4_DNS: 0 or 4 bytes.
    pub const INTERNAL_IP4_DNS: u16 = 3;
    /// INTERNAL_IP6_ADDRESS: 0 or 17 bytes (address, prefix length).
    pub const INTERNAL_IP6_ADDRESS: u16 = 8;
    /// INTERNAL_IP6_DNS: 0 or 16 bytes.
    pub const INTERNAL_IP6_DNS: u16 = 10;
    /// INTERNAL_IP4_SUBNET: 0 or 8 bytes (address, netmask).
    pub const INTERNAL_IP4_SUBNET: u16 = 13;
    /// INTERNAL_IP6_SUBNET: 0 or 17 bytes (address, prefix length).
    pub const INTERNAL_IP6_SUBNET: u16 = 15;
}

/// The attribute type's 15 bits; the top bit is reserved.
const TYPE_MASK: u16 = 0x7fff;

/// One configuration attribute. `None` is the empty value of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CfgAttribute {
    /// INTERNAL_IP4_ADDRESS.
    Ip4Address(Option<Ipv4Addr>),
    /// INTERNAL_IP4_NETMASK.
    Ip4Netmask(Option<Ipv4Addr>),
    /// INTERNAL_IP4_DNS.
    Ip4Dns(Option<Ipv4Addr>),
    /// INTERNAL_IP6_ADDRESS: the address and its prefix length.
    Ip6Address(Option<(Ipv6Addr, u8)>),
    /// INTERNAL_IP6_DNS.
    Ip6Dns(Option<Ipv6Addr>),
    /// INTERNAL_IP4_SUBNET: a network the gateway protects (address, mask).
    Ip4Subnet(Option<(Ipv4Addr, Ipv4Addr)>),
    /// INTERNAL_IP6_SUBNET: a network the gateway protects.
    Ip6Subnet(Option<(Ipv6Addr, u8)>),
    /// Any other type, value raw.
    Other {
        /// The attribute type (15 bits).
        kind: u16,
        /// The value.
        value: Vec<u8>,
    },
}

impl CfgAttribute {
    /// The attribute type.
    pub fn kind(&self) -> u16 {
        match self {
            CfgAttribute::Ip4Address(_) => attr::INTERNAL_IP4_ADDRESS,
            CfgAttribute::Ip4Netmask(_) => attr::INTERNAL_IP4_NETMASK,
            CfgAttribute::Ip4Dns(_) => attr::INTERNAL_IP4_DNS,
            CfgAttribute::Ip6Address(_) => attr::INTERNAL_IP6_ADDRESS,
            CfgAttribute::Ip6Dns(_) => attr::INTERNAL_IP6_DNS,
            CfgAttribute::Ip4Subnet(_) => attr::INTERNAL_IP4_SUBNET,
            CfgAttribute::Ip6Subnet(_) => attr::INTERNAL_IP6_SUBNET,
            CfgAttribute::Other { kind, .. } => *kind & TYPE_MASK,
        }
    }

    fn parse(kind: u16, value: &[u8]) -> Result<Self, Error> {
        let v4 = |v: &[u8]| -> Option<Ipv4Addr> { Some(<[u8; 4]>::try_from(v).ok()?.into()) };
        let v6 = |v: &[u8]| -> Option<Ipv6Addr> { Some(<[u8; 16]>::try_from(v).ok()?.into()) };
        let v6_prefix = |v: &[u8], what| -> Result<Option<(Ipv6Addr, u8)>, Error> {
            let addr = v6(v.get(..16).ok_or(Error::Malformed(what))?);
            let len = v[16];
            if len > 128 {
                return Err(Error::Malformed(what));
            }
            Ok(addr.map(|a| (a, len)))
        };
        Ok(match (kind, value.len()) {
            (attr::INTERNAL_IP4_ADDRESS, 0) => CfgAttribute::Ip4Address(None),
            (attr::INTERNAL_IP4_ADDRESS, 4) => CfgAttribute::Ip4Address(v4(value)),
            (attr::INTERNAL_IP4_NETMASK, 0) => CfgAttribute::Ip4Netmask(None),
            (attr::INTERNAL_IP4_NETMASK, 4) => CfgAttribute::Ip4Netmask(v4(value)),
            (attr::INTERNAL_IP4_DNS, 0) => CfgAttribute::Ip4Dns(None),
            (attr::INTERNAL_IP4_DNS, 4) => CfgAttribute::Ip4Dns(v4(value)),
            (attr::INTERNAL_IP6_ADDRESS, 0) => CfgAttribute::Ip6Address(None),
            (attr::INTERNAL_IP6_ADDRESS, 17) => CfgAttribute::Ip6Address(v6_prefix(
                value,
                "CP payload: INTERNAL_IP6_ADDRESS prefix length over 128",
            )?),
            (attr::INTERNAL_IP6_DNS, 0) => CfgAttribute::Ip6Dns(None),
            (attr::INTERNAL_IP6_DNS, 16) => CfgAttribute::Ip6Dns(v6(value)),
            (attr::INTERNAL_IP4_SUBNET, 0) => CfgAttribute::Ip4Subnet(None),
            (attr::INTERNAL_IP4_SUBNET, 8) => {
                CfgAttribute::Ip4Subnet(v4(&value[..4]).zip(v4(&value[4..])))
            }
            (attr::INTERNAL_IP6_SUBNET, 0) => CfgAttribute::Ip6Subnet(None),
            (attr::INTERNAL_IP6_SUBNET, 17) => CfgAttribute::Ip6Subnet(v6_prefix(
                value,
                "CP payload: INTERNAL_IP6_SUBNET prefix length over 128",
            )?),
            (
                attr::INTERNAL_IP4_ADDRESS
                | attr::INTERNAL_IP4_NETMASK
                | attr::INTERNAL_IP4_DNS
                | attr::INTERNAL_IP6_ADDRESS
                | attr::INTERNAL_IP6_DNS
                | attr::INTERNAL_IP4_SUBNET
                | attr::INTERNAL_IP6_SUBNET,
                _,
            ) => {
                return Err(Error::Malformed(
                    "CP payload: attribute length wrong for its type",
                ))
            }
            _ => CfgAttribute::Other {
                kind,
                value: value.to_vec(),
            },
        })
    }

    fn emit(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        let mut value = Vec::new();
        match self {
            CfgAttribute::Ip4Address(a) | CfgAttribute::Ip4Netmask(a) | CfgAttribute::Ip4Dns(a) => {
                if let Some(a) = a {
                    value.extend_from_slice(&a.octets());
                }
            }
            CfgAttribute::Ip6Address(a) | CfgAttribute::Ip6Subnet(a) => {
                if let Some((a, len)) = a {
                    if *len > 128 {
                        return Err(Error::Malformed("CP payload: IPv6 prefix length over 128"));
                    }
                    value.extend_from_slice(&a.octets());
                    value.push(*len);
                }
            }
            CfgAttribute::Ip6Dns(a) => {
                if let Some(a) = a {
                    value.extend_from_slice(&a.octets());
                }
            }
            CfgAttribute::Ip4Subnet(s) => {
                if let Some((a, m)) = s {
                    value.extend_from_slice(&a.octets());
                    value.extend_from_slice(&m.octets());
                }
            }
            CfgAttribute::Other { value: v, .. } => value.extend_from_slice(v),
        }
        out.extend_from_slice(&self.kind().to_be_bytes());
        out.extend_from_slice(&len16(value.len(), "CP attribute value")?.to_be_bytes());
        out.extend_from_slice(&value);
        Ok(())
    }
}

/// The CP payload body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Configuration {
    /// [`cfg_type`]: request, reply, set or ack.
    pub cfg_type: u8,
    /// The attributes in order.
    pub attributes: Vec<CfgAttribute>,
}

impl Configuration {
    /// Parses the body (after the generic payload header).
    pub fn parse(body: &[u8]) -> Result<Self, Error> {
        const E: Error = Error::Malformed("CP payload: too short");
        const TRUNCATED: Error = Error::Malformed("CP payload: attribute truncated");
        let cfg_type = *body.first().ok_or(E)?;
        if !(cfg_type::REQUEST..=cfg_type::ACK).contains(&cfg_type) {
            return Err(Error::Malformed("CP payload: unknown CFG type"));
        }
        let mut rest = body.get(4..).ok_or(E)?;
        let mut attributes = Vec::new();
        while !rest.is_empty() {
            let kind = be16(rest, 0).ok_or(TRUNCATED)? & TYPE_MASK;
            let len = usize::from(be16(rest, 2).ok_or(TRUNCATED)?);
            let value = rest.get(4..4 + len).ok_or(TRUNCATED)?;
            attributes.push(CfgAttribute::parse(kind, value)?);
            rest = &rest[4 + len..];
        }
        Ok(Configuration {
            cfg_type,
            attributes,
        })
    }

    /// Appends the body.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        out.push(self.cfg_type);
        out.extend_from_slice(&[0, 0, 0]);
        for a in &self.attributes {
            a.emit(out)?;
        }
        Ok(())
    }
}
