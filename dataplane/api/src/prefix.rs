//! IP prefixes (`10.1.0.0/24`, `fd00:1::/64`) for traffic selectors and
//! policies: validated on construction, serialized as strings.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// An IPv4 or IPv6 prefix with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

/// Why a prefix was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// The part before `/` is not an IP address.
    #[error("invalid prefix {input:?}: {addr:?} is not an IPv4 or IPv6 address")]
    BadAddress {
        /// The whole input.
        input: String,
        /// The address part.
        addr: String,
    },
    /// The part after `/` is not a number.
    #[error("invalid prefix {input:?}: prefix length {len:?} is not a number")]
    BadLength {
        /// The whole input.
        input: String,
        /// The length part.
        len: String,
    },
    /// The length exceeds 32 (IPv4) or 128 (IPv6).
    #[error("invalid prefix {input}: prefix length {len} exceeds {max} for {family}")]
    LengthTooLong {
        /// The whole input.
        input: String,
        /// The given length.
        len: u32,
        /// 32 or 128.
        max: u8,
        /// "IPv4" or "IPv6".
        family: &'static str,
    },
    /// Bits beyond the prefix length are set, e.g. `10.1.0.1/24`.
    #[error(
        "invalid prefix {input}: host bits are set beyond /{len} (did you mean {suggestion}?)"
    )]
    HostBitsSet {
        /// The whole input.
        input: String,
        /// The given length.
        len: u8,
        /// The same prefix with host bits cleared.
        suggestion: Prefix,
    },
}

fn mask_v4(addr: Ipv4Addr, len: u8) -> Ipv4Addr {
    let bits = u32::from(addr);
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    Ipv4Addr::from(bits & mask)
}

fn mask_v6(addr: Ipv6Addr, len: u8) -> Ipv6Addr {
    let bits = u128::from(addr);
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    Ipv6Addr::from(bits & mask)
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => IpAddr::V4(mask_v4(a, len)),
        IpAddr::V6(a) => IpAddr::V6(mask_v6(a, len)),
    }
}

fn max_len(addr: &IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

impl Prefix {
    /// A prefix from an address and a length; the address must have no bits
    /// set beyond `len`.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, PrefixError> {
        let max = max_len(&addr);
        let input = format!("{addr}/{len}");
        if len > max {
            return Err(PrefixError::LengthTooLong {
                input,
                len: u32::from(len),
                max,
                family: family(&addr),
            });
        }
        let masked = mask(addr, len);
        if masked != addr {
            return Err(PrefixError::HostBitsSet {
                input,
                len,
                suggestion: Prefix { addr: masked, len },
            });
        }
        Ok(Prefix { addr, len })
    }

    /// The host prefix (/32 or /128) of one address.
    pub fn host(addr: IpAddr) -> Self {
        Prefix {
            addr,
            len: max_len(&addr),
        }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// True for `0.0.0.0/0` and `::/0`.
    pub fn is_default(&self) -> bool {
        self.len == 0
    }

    /// True for an IPv4 prefix.
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// Whether `addr` lies inside this prefix (always false across families).
    pub fn contains(&self, addr: IpAddr) -> bool {
        self.addr.is_ipv4() == addr.is_ipv4() && mask(addr, self.len) == self.addr
    }

    /// Whether `other` lies entirely inside this prefix.
    pub fn covers(&self, other: &Prefix) -> bool {
        other.len >= self.len && self.contains(other.addr)
    }
}

fn family(addr: &IpAddr) -> &'static str {
    if addr.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    /// Parses `ADDR/LEN`, or a bare address as a host prefix.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr_part, len_part) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr_part.parse().map_err(|_| PrefixError::BadAddress {
            input: s.to_owned(),
            addr: addr_part.to_owned(),
        })?;
        let Some(len_part) = len_part else {
            return Ok(Prefix::host(addr));
        };
        let bad_len = || PrefixError::BadLength {
            input: s.to_owned(),
            len: len_part.to_owned(),
        };
        if len_part.is_empty() || !len_part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad_len());
        }
        let len: u32 = len_part.parse().map_err(|_| bad_len())?;
        let max = max_len(&addr);
        if len > u32::from(max) {
            return Err(PrefixError::LengthTooLong {
                input: s.to_owned(),
                len,
                max,
                family: family(&addr),
            });
        }
        // len <= 128 here.
        let len = u8::try_from(len).map_err(|_| bad_len())?;
        Prefix::new(addr, len).map_err(|e| match e {
            PrefixError::HostBitsSet {
                len, suggestion, ..
            } => PrefixError::HostBitsSet {
                input: s.to_owned(),
                len,
                suggestion,
            },
            other => other,
        })
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl Serialize for Prefix {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Prefix;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an IP prefix such as \"10.1.0.0/24\" or \"fd00:1::/64\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Prefix, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        let p: Prefix = "10.1.0.0/24".parse().unwrap();
        assert_eq!(p.to_string(), "10.1.0.0/24");
        assert!(p.contains("10.1.0.77".parse().unwrap()));
        assert!(!p.contains("10.1.1.1".parse().unwrap()));
        assert!(!p.contains("::1".parse().unwrap()));
        let h: Prefix = "fd00::1".parse().unwrap();
        assert_eq!(h.prefix_len(), 128);
        let d: Prefix = "0.0.0.0/0".parse().unwrap();
        assert!(d.is_default() && d.covers(&p) && !p.covers(&d));
        let v6: Prefix = "fd00:1::/64".parse().unwrap();
        assert!(v6.contains("fd00:1::9".parse().unwrap()));
    }

    #[test]
    fn rejects() {
        for bad in [
            "10.1.0.0/33",
            "10.1.0.1/24",
            "10.1.0/24",
            "10.1.0.0/",
            "10.1.0.0/+4",
            "fd00::/129",
            "",
            "/24",
            "10.1.0.0/99999999999999999999",
        ] {
            assert!(bad.parse::<Prefix>().is_err(), "{bad} accepted");
        }
        let e = "10.1.0.1/24".parse::<Prefix>().unwrap_err().to_string();
        assert!(e.contains("did you mean 10.1.0.0/24"), "{e}");
    }
}
