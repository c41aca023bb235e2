//! IKE identities written the strongSwan way: `moon.strongswan.org`,
//! `@moon`, `198.18.0.1`, `fd00::1`, `carol@strongswan.org`,
//! `C=CH, O=strongSwan, CN=moon`, `%any`, or with an explicit type prefix
//! (`fqdn:`, `email:`, `rfc822:`, `ipv4:`, `ipv6:`, `asn1dn:`).
//!
//! Distinguished names compare the way strongSwan compares them: attribute
//! by attribute, values case-insensitively, whatever ASN.1 string type the
//! encoder chose; a value `*` in a configured remote ID matches any value.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use crate::wire::Identification;

/// An identity as configured (`local.id`, `remote.id`, `secrets.*.id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// `%any`: matches every peer identity; never sent.
    Any,
    /// ID_IPV4_ADDR.
    Ipv4(Ipv4Addr),
    /// ID_IPV6_ADDR.
    Ipv6(Ipv6Addr),
    /// ID_FQDN (a leading `*.` in a remote ID matches any subdomain).
    Fqdn(String),
    /// ID_RFC822_ADDR (`*@example.org` in a remote ID matches any user).
    Rfc822(String),
    /// ID_DER_ASN1_DN.
    Dn(DistinguishedName),
}

/// Why an identity string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid identity {input:?}: {reason}")]
pub struct IdentityError {
    input: String,
    reason: String,
}

impl FromStr for Identity {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| IdentityError {
            input: s.to_owned(),
            reason: reason.to_owned(),
        };
        let t = s.trim();
        if t.is_empty() {
            return Err(err("empty"));
        }
        if t == "%any" || t == "%any6" {
            return Ok(Identity::Any);
        }
        if let Some((prefix, rest)) = t.split_once(':') {
            let typed = match prefix.to_ascii_lowercase().as_str() {
                "fqdn" => Some(Identity::Fqdn(nonempty(rest, s)?)),
                "email" | "rfc822" | "userfqdn" => Some(Identity::Rfc822(nonempty(rest, s)?)),
                "ipv4" => Some(Identity::Ipv4(
                    rest.parse().map_err(|_| err("not an IPv4 address"))?,
                )),
                "ipv6" => Some(Identity::Ipv6(
                    rest.parse().map_err(|_| err("not an IPv6 address"))?,
                )),
                "asn1dn" | "dn" => {
                    Some(Identity::Dn(rest.parse().map_err(|e: DnError| err(&e.0))?))
                }
                _ => None,
            };
            if let Some(id) = typed {
                return Ok(id);
            }
        }
        if let Ok(ip) = t.parse::<IpAddr>() {
            return Ok(match ip {
                IpAddr::V4(a) => Identity::Ipv4(a),
                IpAddr::V6(a) => Identity::Ipv6(a),
            });
        }
        if t.contains('=') {
            return t.parse().map(Identity::Dn).map_err(|e: DnError| err(&e.0));
        }
        if let Some(fqdn) = t.strip_prefix('@') {
            // strongSwan: `@name` is an FQDN that is never resolved.
            return Ok(Identity::Fqdn(nonempty(fqdn, s)?));
        }
        if t.contains('@') {
            return Ok(Identity::Rfc822(t.to_owned()));
        }
        if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err(
                "an FQDN has no whitespace (a DN is written like \"C=CH, O=strongSwan, CN=moon\")",
            ));
        }
        Ok(Identity::Fqdn(t.to_owned()))
    }
}

fn nonempty(s: &str, input: &str) -> Result<String, IdentityError> {
    if s.trim().is_empty() {
        return Err(IdentityError {
            input: input.to_owned(),
            reason: "nothing after the type prefix".to_owned(),
        });
    }
    Ok(s.trim().to_owned())
}

impl Identity {
    /// The Identification payload body for this identity; `None` for
    /// `%any`, which is never sent.
    pub fn to_wire(&self) -> Option<Identification> {
        Some(match self {
            Identity::Any => return None,
            Identity::Ipv4(a) => Identification::Ipv4(*a),
            Identity::Ipv6(a) => Identification::Ipv6(*a),
            Identity::Fqdn(s) => Identification::Fqdn(s.as_bytes().to_vec()),
            Identity::Rfc822(s) => Identification::Rfc822(s.as_bytes().to_vec()),
            Identity::Dn(dn) => Identification::DerDn(dn.to_der()),
        })
    }

    /// The identity a received Identification payload carries; `None` for
    /// types xdpsec does not handle or a DN that does not parse.
    pub fn from_wire(id: &Identification) -> Option<Identity> {
        Some(match id {
            Identification::Ipv4(a) => Identity::Ipv4(*a),
            Identification::Ipv6(a) => Identity::Ipv6(*a),
            Identification::Fqdn(d) => Identity::Fqdn(String::from_utf8(d.clone()).ok()?),
            Identification::Rfc822(d) => Identity::Rfc822(String::from_utf8(d.clone()).ok()?),
            Identification::DerDn(d) => Identity::Dn(DistinguishedName::from_der(d)?),
            Identification::Other { .. } => return None,
        })
    }

    /// Whether a peer's identity (as received) satisfies this configured
    /// one: `%any` takes everything, FQDNs and e-mail addresses compare
    /// case-insensitively with the wildcards described on the variants,
    /// DNs compare attribute by attribute.
    pub fn matches(&self, peer: &Identification) -> bool {
        match (self, peer) {
            (Identity::Any, _) => true,
            (Identity::Ipv4(a), Identification::Ipv4(b)) => a == b,
            (Identity::Ipv6(a), Identification::Ipv6(b)) => a == b,
            (Identity::Fqdn(want), Identification::Fqdn(got)) => match want.strip_prefix("*.") {
                Some(domain) => {
                    let suffix = format!(".{domain}");
                    got.len() > suffix.len()
                        && got[got.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
                }
                None => want.as_bytes().eq_ignore_ascii_case(got),
            },
            (Identity::Rfc822(want), Identification::Rfc822(got)) => {
                match want.strip_prefix("*@") {
                    Some(domain) => {
                        let suffix = format!("@{domain}");
                        got.len() > suffix.len()
                            && got[got.len() - suffix.len()..]
                                .eq_ignore_ascii_case(suffix.as_bytes())
                    }
                    None => want.as_bytes().eq_ignore_ascii_case(got),
                }
            }
            (Identity::Dn(want), Identification::DerDn(got)) => {
                DistinguishedName::from_der(got).is_some_and(|got| want.matches(&got))
            }
            _ => false,
        }
    }

    /// Whether this is `%any`.
    pub fn is_any(&self) -> bool {
        matches!(self, Identity::Any)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Any => f.write_str("%any"),
            Identity::Ipv4(a) => write!(f, "{a}"),
            Identity::Ipv6(a) => write!(f, "{a}"),
            Identity::Fqdn(s) | Identity::Rfc822(s) => f.write_str(s),
            Identity::Dn(dn) => write!(f, "{dn}"),
        }
    }
}

impl<'de> Deserialize<'de> for Identity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::values::from_str(d, "an identity such as \"moon.strongswan.org\", an address, \"user@fqdn\" or \"C=CH, O=strongSwan, CN=moon\"")
    }
}

/// One attribute of a DN, e.g. `CN=moon`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnAttribute {
    /// The attribute type's OID in dotted form (`2.5.4.3` for CN).
    pub oid: String,
    /// The value as text.
    pub value: String,
}

/// An X.500 distinguished name, one attribute per RDN, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistinguishedName {
    /// The attributes, most significant (usually C) first.
    pub attributes: Vec<DnAttribute>,
}

/// The attribute names strongSwan knows, with their OIDs.
const ATTRIBUTE_NAMES: &[(&str, &str)] = &[
    ("C", "2.5.4.6"),
    ("ST", "2.5.4.8"),
    ("S", "2.5.4.8"),
    ("L", "2.5.4.7"),
    ("O", "2.5.4.10"),
    ("OU", "2.5.4.11"),
    ("CN", "2.5.4.3"),
    ("SN", "2.5.4.4"),
    ("serialNumber", "2.5.4.5"),
    ("street", "2.5.4.9"),
    ("T", "2.5.4.12"),
    ("title", "2.5.4.12"),
    ("PC", "2.5.4.17"),
    ("postalCode", "2.5.4.17"),
    ("N", "2.5.4.41"),
    ("G", "2.5.4.42"),
    ("I", "2.5.4.43"),
    ("dnQualifier", "2.5.4.46"),
    ("pseudonym", "2.5.4.65"),
    ("E", "1.2.840.113549.1.9.1"),
    ("email", "1.2.840.113549.1.9.1"),
    ("emailAddress", "1.2.840.113549.1.9.1"),
    ("UN", "1.2.840.113549.1.9.2"),
    ("unstructuredName", "1.2.840.113549.1.9.2"),
    ("DC", "0.9.2342.19200300.100.1.25"),
    ("UID", "0.9.2342.19200300.100.1.1"),
];

/// IA5String attributes (e-mail, DC); the rest are PrintableString when
/// they can be, UTF8String otherwise (as strongSwan encodes them).
const IA5_OIDS: &[&str] = &["1.2.840.113549.1.9.1", "0.9.2342.19200300.100.1.25"];

/// Why a DN string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DnError(String);

impl FromStr for DistinguishedName {
    type Err = DnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_dn(s)
    }
}

fn parse_dn(s: &str) -> Result<DistinguishedName, DnError> {
    // strongSwan accepts "C=CH, O=x, CN=y" and "/C=CH/O=x/CN=y"; `\` escapes
    // a separator inside a value.
    let t = s.trim();
    let (body, sep) = match t.strip_prefix('/') {
        Some(rest) => (rest, '/'),
        None => (t, ','),
    };
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(n) => cur.push(n),
                None => return Err(DnError("trailing backslash".into())),
            }
        } else if c == sep {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    parts.push(cur);
    let mut attributes = Vec::new();
    for part in parts {
        let Some((name, value)) = part.split_once('=') else {
            return Err(DnError(format!(
                "{:?} is not NAME=VALUE (write a DN like \"C=CH, O=strongSwan, CN=moon\")",
                part.trim()
            )));
        };
        let (name, value) = (name.trim(), value.trim());
        let oid = ATTRIBUTE_NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, oid)| (*oid).to_owned())
            .or_else(|| is_dotted_oid(name).then(|| name.to_owned()))
            .ok_or_else(|| {
                DnError(format!(
                    "unknown DN attribute {name:?} (known: C, ST, L, O, OU, CN, SN, \
                     serialNumber, T, G, E, DC, UID, ... or a dotted OID)"
                ))
            })?;
        if value.is_empty() {
            return Err(DnError(format!("{name} has an empty value")));
        }
        attributes.push(DnAttribute {
            oid,
            value: value.to_owned(),
        });
    }
    Ok(DistinguishedName { attributes })
}

/// An OID in dotted form that goes through DER and back unchanged: at
/// least two arcs, decimal without leading zeros, the first 0, 1 or 2
/// (X.660) and the second below 40. DER packs the first two arcs into one
/// number, 40 * first + second, so another first arc is sent as a
/// different OID than the one configured (`6.1` would go out as 2.161).
/// Under 2 X.660 allows any second arc, but the DER parser used for peers'
/// IDs and certificates (x509-parser, asn1-rs) reads the first arc as that
/// number / 40, so a configured `2.40` or `2.999` would never match what
/// it reads (3.0, 3.16.55). Every DN attribute in use (2.5.4.*,
/// 0.9.2342.*, 1.2.840.*) fits.
fn is_dotted_oid(s: &str) -> bool {
    let arcs: Vec<&str> = s.split('.').collect();
    let canonical = |a: &&str| {
        !a.is_empty()
            && a.len() <= 9
            && a.bytes().all(|b| b.is_ascii_digit())
            && (a.len() == 1 || !a.starts_with('0'))
    };
    if arcs.len() < 2 || !arcs.iter().all(canonical) {
        return false;
    }
    matches!(arcs[0], "0" | "1" | "2") && arcs[1].parse::<u32>().is_ok_and(|second| second < 40)
}

impl DistinguishedName {
    /// Parses the DER encoding of a Name (an ID_DER_ASN1_DN payload or a
    /// certificate's subject); `None` if it is not one.
    pub fn from_der(der: &[u8]) -> Option<Self> {
        use x509_parser::prelude::FromDer;
        let (rest, name) = x509_parser::x509::X509Name::from_der(der).ok()?;
        if !rest.is_empty() {
            return None;
        }
        Self::from_x509(&name)
    }

    /// The DN of a parsed certificate name; `None` if an attribute value
    /// is not a string.
    pub(crate) fn from_x509(name: &x509_parser::x509::X509Name<'_>) -> Option<Self> {
        let mut attributes = Vec::new();
        for rdn in name.iter() {
            for atv in rdn.iter() {
                attributes.push(DnAttribute {
                    oid: atv.attr_type().to_id_string(),
                    value: atv.as_str().ok()?.to_owned(),
                });
            }
        }
        Some(DistinguishedName { attributes })
    }

    /// The DER encoding: a SEQUENCE of single-attribute RDN SETs.
    pub fn to_der(&self) -> Vec<u8> {
        let mut rdns = Vec::new();
        for a in &self.attributes {
            let tag = if IA5_OIDS.contains(&a.oid.as_str()) {
                der::IA5_STRING
            } else if a.value.bytes().all(is_printable) {
                der::PRINTABLE_STRING
            } else {
                der::UTF8_STRING
            };
            let mut atv = der::tlv(der::OID, &der::oid(&a.oid));
            atv.extend(der::tlv(tag, a.value.as_bytes()));
            rdns.extend(der::tlv(der::SET, &der::tlv(der::SEQUENCE, &atv)));
        }
        der::tlv(der::SEQUENCE, &rdns)
    }

    /// Whether `other` names the same entity: same attribute types in the
    /// same order, values equal ignoring ASCII case; a value `*` here
    /// matches any value there.
    pub fn matches(&self, other: &DistinguishedName) -> bool {
        self.attributes.len() == other.attributes.len()
            && self.attributes.iter().zip(&other.attributes).all(|(a, b)| {
                a.oid == b.oid && (a.value == "*" || a.value.eq_ignore_ascii_case(&b.value))
            })
    }
}

fn is_printable(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b" '()+,-./:=?".contains(&b)
}

impl fmt::Display for DistinguishedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.attributes.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            let name = ATTRIBUTE_NAMES
                .iter()
                .find(|(_, oid)| *oid == a.oid)
                .map_or(a.oid.as_str(), |(n, _)| n);
            write!(f, "{name}={}", a.value.replace(',', "\\,"))?;
        }
        Ok(())
    }
}

/// Just enough DER to write a Name.
mod der {
    pub const OID: u8 = 0x06;
    pub const UTF8_STRING: u8 = 0x0c;
    pub const PRINTABLE_STRING: u8 = 0x13;
    pub const IA5_STRING: u8 = 0x16;
    pub const SEQUENCE: u8 = 0x30;
    pub const SET: u8 = 0x31;

    pub fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = value.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|&&b| b == 0).count();
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend_from_slice(&bytes[skip..]);
        }
        out.extend_from_slice(value);
        out
    }

    /// The content octets of a dotted OID the caller has checked.
    pub fn oid(dotted: &str) -> Vec<u8> {
        let arcs: Vec<u64> = dotted.split('.').filter_map(|a| a.parse().ok()).collect();
        let mut out = Vec::new();
        let (first, second) = (
            arcs.first().copied().unwrap_or(0),
            arcs.get(1).copied().unwrap_or(0),
        );
        base128(first * 40 + second, &mut out);
        for &arc in arcs.iter().skip(2) {
            base128(arc, &mut out);
        }
        out
    }

    fn base128(mut v: u64, out: &mut Vec<u8>) {
        let mut tmp = vec![(v & 0x7f) as u8];
        v >>= 7;
        while v > 0 {
            tmp.push(0x80 | (v & 0x7f) as u8);
            v >>= 7;
        }
        out.extend(tmp.iter().rev());
    }
}
