//! What IKE needs from a parsed certificate: its key type, its subject
//! for log lines, and whether it vouches for an IKE identity.

use std::fmt;
use std::net::IpAddr;

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::CertError;
use crate::config::DistinguishedName;
use crate::wire::Identification;

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";
const OID_P256: &str = "1.2.840.10045.3.1.7";
const OID_P384: &str = "1.3.132.0.34";

/// The public key types xdpsec signs and verifies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    /// ECDSA on NIST P-256.
    EcP256,
    /// ECDSA on NIST P-384.
    EcP384,
    /// RSA (2048 to 8192 bits).
    Rsa,
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyKind::EcP256 => "ECDSA P-256",
            KeyKind::EcP384 => "ECDSA P-384",
            KeyKind::Rsa => "RSA",
        })
    }
}

/// The key type of a subjectPublicKeyInfo.
pub(crate) fn key_kind(spki: &SubjectPublicKeyInfo<'_>) -> Result<KeyKind, CertError> {
    let alg = spki.algorithm.algorithm.to_id_string();
    match alg.as_str() {
        OID_RSA_ENCRYPTION => Ok(KeyKind::Rsa),
        OID_EC_PUBLIC_KEY => {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .map(|o| o.to_id_string());
            match curve.as_deref() {
                Some(OID_P256) => Ok(KeyKind::EcP256),
                Some(OID_P384) => Ok(KeyKind::EcP384),
                other => Err(CertError::UnsupportedKey(format!(
                    "EC curve {} (P-256 and P-384 are supported)",
                    other.unwrap_or("missing")
                ))),
            }
        }
        other => Err(CertError::UnsupportedKey(format!(
            "public key algorithm {other} (ECDSA and RSA are supported)"
        ))),
    }
}

/// Parses one DER certificate; `index` names it in the error.
pub(crate) fn parse(der: &[u8], index: usize) -> Result<X509Certificate<'_>, CertError> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(CertError::BadCertificate {
            index,
            reason: "trailing bytes after the certificate".to_owned(),
        }),
        Err(e) => Err(CertError::BadCertificate {
            index,
            reason: e.to_string(),
        }),
    }
}

/// The subject as text, for errors and log lines.
pub(crate) fn subject(cert: &X509Certificate<'_>) -> String {
    DistinguishedName::from_x509(cert.subject())
        .map(|dn| dn.to_string())
        .unwrap_or_else(|| cert.subject().to_string())
}

/// The issuer as text.
pub(crate) fn issuer(cert: &X509Certificate<'_>) -> String {
    DistinguishedName::from_x509(cert.issuer())
        .map(|dn| dn.to_string())
        .unwrap_or_else(|| cert.issuer().to_string())
}

/// Whether the certificate vouches for `id`: an ID_DER_ASN1_DN must be its
/// subject (compared attribute by attribute, values ignoring case); an
/// FQDN, RFC822 address or IP address must be one of its subjectAltNames
/// (dNSName, rfc822Name, iPAddress).
pub(crate) fn vouches_for(cert: &X509Certificate<'_>, id: &Identification) -> bool {
    if let Identification::DerDn(der) = id {
        if der.as_slice() == cert.subject().as_raw() {
            return true;
        }
        let (Some(want), Some(have)) = (
            DistinguishedName::from_der(der),
            DistinguishedName::from_x509(cert.subject()),
        ) else {
            return false;
        };
        return want.attributes.len() == have.attributes.len()
            && want
                .attributes
                .iter()
                .zip(&have.attributes)
                .all(|(a, b)| a.oid == b.oid && a.value.eq_ignore_ascii_case(&b.value));
    }
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    san.value.general_names.iter().any(|name| match (name, id) {
        (GeneralName::DNSName(n), Identification::Fqdn(f)) => n.as_bytes().eq_ignore_ascii_case(f),
        (GeneralName::RFC822Name(n), Identification::Rfc822(r)) => {
            n.as_bytes().eq_ignore_ascii_case(r)
        }
        (GeneralName::IPAddress(ip), Identification::Ipv4(a)) => *ip == a.octets().as_slice(),
        (GeneralName::IPAddress(ip), Identification::Ipv6(a)) => *ip == a.octets().as_slice(),
        _ => false,
    })
}

/// Whether the DER certificate `cert_der` vouches for the IKE identity
/// `id` (see [`super::LocalCredential::identity_matches`]); false when the
/// certificate does not parse.
pub fn identity_matches_certificate(cert_der: &[u8], id: &Identification) -> bool {
    parse(cert_der, 0).is_ok_and(|c| vouches_for(&c, id))
}

/// The identity text of an ID payload, for errors.
pub(crate) fn id_text(id: &Identification) -> String {
    match crate::config::Identity::from_wire(id) {
        Some(i) => i.to_string(),
        None => match id {
            Identification::Ipv4(a) => IpAddr::V4(*a).to_string(),
            Identification::Ipv6(a) => IpAddr::V6(*a).to_string(),
            other => format!("an ID of type {}", other.kind()),
        },
    }
}
