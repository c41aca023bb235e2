//! The Traffic Selector payload (RFC 7296 section 3.13).
//!
//! ```text
//! payload:  0 number of TSs | 1 reserved (3) | 4 selectors
//! selector: 0 TS type | 1 IP protocol ID | 2 selector length (2)
//!           4 start port (2) | 6 end port (2) | 8 start address | end address
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};

use super::consts::ts;
use super::{be16, len8, Error};

/// An inclusive address range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressRange {
    /// TS_IPV4_ADDR_RANGE.
    V4(Ipv4Addr, Ipv4Addr),
    /// TS_IPV6_ADDR_RANGE.
    V6(Ipv6Addr, Ipv6Addr),
}

/// One traffic selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrafficSelector {
    /// The IP protocol (0 for any).
    pub ip_protocol: u8,
    /// The first port (0 for any).
    pub start_port: u16,
    /// The last port (65535 for any).
    pub end_port: u16,
    /// The addresses.
    pub range: AddressRange,
}

impl TrafficSelector {
    /// Any protocol, any port, in this address range.
    pub fn any(range: AddressRange) -> Self {
        TrafficSelector {
            ip_protocol: 0,
            start_port: 0,
            end_port: u16::MAX,
            range,
        }
    }

    fn parse(buf: &[u8]) -> Result<(Self, &[u8]), Error> {
        const E: Error = Error::Malformed("TS payload: selector truncated");
        let kind = *buf.first().ok_or(E)?;
        let ip_protocol = *buf.get(1).ok_or(E)?;
        let len = usize::from(be16(buf, 2).ok_or(E)?);
        let start_port = be16(buf, 4).ok_or(E)?;
        let end_port = be16(buf, 6).ok_or(E)?;
        let sel = buf.get(..len).ok_or(E)?;
        let addrs = sel.get(8..).ok_or(E)?;
        let range = match (kind, addrs.len()) {
            (ts::IPV4_ADDR_RANGE, 8) => {
                let mut a = [0u8; 4];
                let mut b = [0u8; 4];
                a.copy_from_slice(&addrs[..4]);
                b.copy_from_slice(&addrs[4..]);
                AddressRange::V4(a.into(), b.into())
            }
            (ts::IPV6_ADDR_RANGE, 32) => {
                let mut a = [0u8; 16];
                let mut b = [0u8; 16];
                a.copy_from_slice(&addrs[..16]);
                b.copy_from_slice(&addrs[16..]);
                AddressRange::V6(a.into(), b.into())
            }
            (ts::IPV4_ADDR_RANGE | ts::IPV6_ADDR_RANGE, _) => {
                return Err(Error::Malformed(
                    "TS payload: selector length wrong for its type",
                ))
            }
            _ => return Err(Error::Malformed("TS payload: unknown selector type")),
        };
        let rest = buf.get(len..).ok_or(E)?;
        Ok((
            TrafficSelector {
                ip_protocol,
                start_port,
                end_port,
                range,
            },
            rest,
        ))
    }

    fn emit(&self, out: &mut Vec<u8>) {
        let (kind, len) = match self.range {
            AddressRange::V4(..) => (ts::IPV4_ADDR_RANGE, 16u16),
            AddressRange::V6(..) => (ts::IPV6_ADDR_RANGE, 40u16),
        };
        out.push(kind);
        out.push(self.ip_protocol);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&self.start_port.to_be_bytes());
        out.extend_from_slice(&self.end_port.to_be_bytes());
        match self.range {
            AddressRange::V4(a, b) => {
                out.extend_from_slice(&a.octets());
                out.extend_from_slice(&b.octets());
            }
            AddressRange::V6(a, b) => {
                out.extend_from_slice(&a.octets());
                out.extend_from_slice(&b.octets());
            }
        }
    }
}

/// The TSi or TSr payload body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficSelectors {
    /// The selectors.
    pub selectors: Vec<TrafficSelector>,
}

impl TrafficSelectors {
    /// Parses the body; the count must match the selectors present.
    pub fn parse(body: &[u8]) -> Result<Self, Error> {
        const E: Error = Error::Malformed("TS payload: too short");
        let count = usize::from(*body.first().ok_or(E)?);
        let mut rest = body.get(4..).ok_or(E)?;
        let mut selectors = Vec::with_capacity(count);
        while !rest.is_empty() {
            let (s, r) = TrafficSelector::parse(rest)?;
            selectors.push(s);
            rest = r;
        }
        if selectors.len() != count {
            return Err(Error::Malformed("TS payload: selector count disagrees"));
        }
        Ok(TrafficSelectors { selectors })
    }

    /// Appends the body.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        out.push(len8(self.selectors.len(), "TS count")?);
        out.extend_from_slice(&[0, 0, 0]);
        for s in &self.selectors {
            s.emit(out);
        }
        Ok(())
    }
}
