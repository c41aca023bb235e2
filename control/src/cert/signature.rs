//! RFC 7427 signature schemes: the ASN.1 AlgorithmIdentifiers that start
//! an AUTH payload of method 14, and verification with aws-lc-rs.

use std::fmt;

use aws_lc_rs::signature::{self as sig, UnparsedPublicKey, VerificationAlgorithm};
use x509_parser::prelude::FromDer;
use x509_parser::signature_algorithm::SignatureAlgorithm;
use x509_parser::x509::AlgorithmIdentifier;

use super::x509::KeyKind;
use super::CertError;
use crate::wire::consts::{auth_method, hash_algorithm};

/// The hashes announced in SIGNATURE_HASH_ALGORITHMS, in preference order.
pub const SIGNATURE_HASH_ALGORITHMS: &[u16] = &[
    hash_algorithm::SHA2_256,
    hash_algorithm::SHA2_384,
    hash_algorithm::SHA2_512,
];

/// A signature scheme of an AUTH payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureScheme {
    /// ecdsa-with-SHA256 (DER signature).
    EcdsaSha256,
    /// ecdsa-with-SHA384.
    EcdsaSha384,
    /// ecdsa-with-SHA512.
    EcdsaSha512,
    /// sha256WithRSAEncryption (PKCS#1 v1.5).
    RsaPkcs1Sha256,
    /// sha384WithRSAEncryption.
    RsaPkcs1Sha384,
    /// sha512WithRSAEncryption.
    RsaPkcs1Sha512,
    /// RSASSA-PSS, SHA-256, MGF1-SHA-256, 32-byte salt.
    RsaPssSha256,
    /// RSASSA-PSS, SHA-384, MGF1-SHA-384, 48-byte salt.
    RsaPssSha384,
    /// RSASSA-PSS, SHA-512, MGF1-SHA-512, 64-byte salt.
    RsaPssSha512,
    /// Auth method 9: ECDSA P-256 with SHA-256, r || s (RFC 4754).
    Ecdsa256Fixed,
    /// Auth method 10: ECDSA P-384 with SHA-384, r || s (RFC 4754).
    Ecdsa384Fixed,
}

// DER of the AlgorithmIdentifiers (RFC 7427 appendix A).
const SHA256_WITH_RSA: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b, 0x05, 0x00,
];
const SHA384_WITH_RSA: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c, 0x05, 0x00,
];
const SHA512_WITH_RSA: &[u8] = &[
    0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d, 0x05, 0x00,
];
const ECDSA_WITH_SHA256: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02,
];
const ECDSA_WITH_SHA384: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03,
];
const ECDSA_WITH_SHA512: &[u8] = &[
    0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04,
];

const OID_RSA_PSS: &str = "1.2.840.113549.1.1.10";
const OID_MGF1: &str = "1.2.840.113549.1.1.8";
const OID_SHA256: &str = "2.16.840.1.101.3.4.2.1";
const OID_SHA384: &str = "2.16.840.1.101.3.4.2.2";
const OID_SHA512: &str = "2.16.840.1.101.3.4.2.3";

impl SignatureScheme {
    /// The auth method an AUTH payload with this scheme carries.
    pub fn auth_method(self) -> u8 {
        match self {
            SignatureScheme::Ecdsa256Fixed => auth_method::ECDSA_SHA256_P256,
            SignatureScheme::Ecdsa384Fixed => auth_method::ECDSA_SHA384_P384,
            _ => auth_method::DIGITAL_SIGNATURE,
        }
    }

    /// The AlgorithmIdentifier DER for method 14 (empty for 9 and 10).
    pub fn algorithm_identifier(self) -> Vec<u8> {
        match self {
            SignatureScheme::EcdsaSha256 => ECDSA_WITH_SHA256.to_vec(),
            SignatureScheme::EcdsaSha384 => ECDSA_WITH_SHA384.to_vec(),
            SignatureScheme::EcdsaSha512 => ECDSA_WITH_SHA512.to_vec(),
            SignatureScheme::RsaPkcs1Sha256 => SHA256_WITH_RSA.to_vec(),
            SignatureScheme::RsaPkcs1Sha384 => SHA384_WITH_RSA.to_vec(),
            SignatureScheme::RsaPkcs1Sha512 => SHA512_WITH_RSA.to_vec(),
            SignatureScheme::RsaPssSha256 => pss_identifier(OID_SHA256_DER, 32),
            SignatureScheme::RsaPssSha384 => pss_identifier(OID_SHA384_DER, 48),
            SignatureScheme::RsaPssSha512 => pss_identifier(OID_SHA512_DER, 64),
            SignatureScheme::Ecdsa256Fixed | SignatureScheme::Ecdsa384Fixed => Vec::new(),
        }
    }

    /// The AUTH payload data for `signature`: for method 14 the
    /// one-octet length of the AlgorithmIdentifier, the identifier and the
    /// signature (RFC 7427 section 3); for 9/10 the signature alone.
    pub fn auth_data(self, signature: &[u8]) -> Vec<u8> {
        let id = self.algorithm_identifier();
        let mut out = Vec::with_capacity(1 + id.len() + signature.len());
        if self.auth_method() == auth_method::DIGITAL_SIGNATURE {
            // Every identifier above is shorter than 256 bytes.
            out.push(id.len() as u8);
            out.extend_from_slice(&id);
        }
        out.extend_from_slice(signature);
        out
    }

    /// Splits AUTH payload data into the scheme and the signature.
    pub fn parse_auth(method: u8, data: &[u8]) -> Result<(Self, &[u8]), CertError> {
        match method {
            auth_method::ECDSA_SHA256_P256 => return Ok((SignatureScheme::Ecdsa256Fixed, data)),
            auth_method::ECDSA_SHA384_P384 => return Ok((SignatureScheme::Ecdsa384Fixed, data)),
            auth_method::DIGITAL_SIGNATURE => {}
            other => return Err(CertError::UnsupportedAuthMethod(other)),
        }
        let (&len, rest) = data
            .split_first()
            .ok_or(CertError::MalformedAuth("empty"))?;
        let len = usize::from(len);
        if rest.len() < len {
            return Err(CertError::MalformedAuth(
                "AlgorithmIdentifier length runs past the data",
            ));
        }
        let (id, signature) = rest.split_at(len);
        if signature.is_empty() {
            return Err(CertError::MalformedAuth(
                "no signature after the AlgorithmIdentifier",
            ));
        }
        Ok((Self::from_algorithm_identifier(id)?, signature))
    }

    fn from_algorithm_identifier(der: &[u8]) -> Result<Self, CertError> {
        let (rest, alg) = AlgorithmIdentifier::from_der(der)
            .map_err(|_| CertError::MalformedAuth("AlgorithmIdentifier is not valid DER"))?;
        if !rest.is_empty() {
            return Err(CertError::MalformedAuth(
                "bytes after the AlgorithmIdentifier",
            ));
        }
        let oid = alg.algorithm.to_id_string();
        let null_or_absent = alg
            .parameters
            .as_ref()
            .is_none_or(|p| p.tag() == x509_parser::der_parser::asn1_rs::Tag::Null);
        let scheme = match oid.as_str() {
            "1.2.840.10045.4.3.2" => SignatureScheme::EcdsaSha256,
            "1.2.840.10045.4.3.3" => SignatureScheme::EcdsaSha384,
            "1.2.840.10045.4.3.4" => SignatureScheme::EcdsaSha512,
            "1.2.840.113549.1.1.11" if null_or_absent => SignatureScheme::RsaPkcs1Sha256,
            "1.2.840.113549.1.1.12" if null_or_absent => SignatureScheme::RsaPkcs1Sha384,
            "1.2.840.113549.1.1.13" if null_or_absent => SignatureScheme::RsaPkcs1Sha512,
            OID_RSA_PSS => pss_scheme(&alg)?,
            _ => {
                return Err(CertError::UnsupportedSignatureAlgorithm(format!(
                    "AlgorithmIdentifier {oid}"
                )))
            }
        };
        Ok(scheme)
    }

    /// Checks `signature` over `message` with a certificate's public key
    /// (`key` is the subjectPublicKey BIT STRING content).
    pub(crate) fn verify(
        self,
        kind: KeyKind,
        key: &[u8],
        message: &[u8],
        signature: &[u8],
        subject: &str,
    ) -> Result<(), CertError> {
        use SignatureScheme as S;
        let alg: &'static dyn VerificationAlgorithm = match (self, kind) {
            (S::EcdsaSha256, KeyKind::EcP256) => &sig::ECDSA_P256_SHA256_ASN1,
            (S::EcdsaSha384, KeyKind::EcP256) => &sig::ECDSA_P256_SHA384_ASN1,
            (S::EcdsaSha512, KeyKind::EcP256) => &sig::ECDSA_P256_SHA512_ASN1,
            (S::EcdsaSha256, KeyKind::EcP384) => &sig::ECDSA_P384_SHA256_ASN1,
            (S::EcdsaSha384, KeyKind::EcP384) => &sig::ECDSA_P384_SHA384_ASN1,
            (S::EcdsaSha512, KeyKind::EcP384) => &sig::ECDSA_P384_SHA512_ASN1,
            (S::Ecdsa256Fixed, KeyKind::EcP256) => &sig::ECDSA_P256_SHA256_FIXED,
            (S::Ecdsa384Fixed, KeyKind::EcP384) => &sig::ECDSA_P384_SHA384_FIXED,
            (S::RsaPkcs1Sha256, KeyKind::Rsa) => &sig::RSA_PKCS1_2048_8192_SHA256,
            (S::RsaPkcs1Sha384, KeyKind::Rsa) => &sig::RSA_PKCS1_2048_8192_SHA384,
            (S::RsaPkcs1Sha512, KeyKind::Rsa) => &sig::RSA_PKCS1_2048_8192_SHA512,
            (S::RsaPssSha256, KeyKind::Rsa) => &sig::RSA_PSS_2048_8192_SHA256,
            (S::RsaPssSha384, KeyKind::Rsa) => &sig::RSA_PSS_2048_8192_SHA384,
            (S::RsaPssSha512, KeyKind::Rsa) => &sig::RSA_PSS_2048_8192_SHA512,
            _ => {
                return Err(CertError::AlgorithmMismatch {
                    scheme: self.to_string(),
                    key: kind.to_string(),
                    subject: subject.to_owned(),
                })
            }
        };
        UnparsedPublicKey::new(alg, key)
            .verify(message, signature)
            .map_err(|_| CertError::BadSignature {
                subject: subject.to_owned(),
            })
    }
}

impl fmt::Display for SignatureScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SignatureScheme::EcdsaSha256 => "ecdsa-with-SHA256",
            SignatureScheme::EcdsaSha384 => "ecdsa-with-SHA384",
            SignatureScheme::EcdsaSha512 => "ecdsa-with-SHA512",
            SignatureScheme::RsaPkcs1Sha256 => "sha256WithRSAEncryption",
            SignatureScheme::RsaPkcs1Sha384 => "sha384WithRSAEncryption",
            SignatureScheme::RsaPkcs1Sha512 => "sha512WithRSAEncryption",
            SignatureScheme::RsaPssSha256 => "RSASSA-PSS-SHA256",
            SignatureScheme::RsaPssSha384 => "RSASSA-PSS-SHA384",
            SignatureScheme::RsaPssSha512 => "RSASSA-PSS-SHA512",
            SignatureScheme::Ecdsa256Fixed => "ECDSA-P256-SHA256 (auth method 9)",
            SignatureScheme::Ecdsa384Fixed => "ECDSA-P384-SHA384 (auth method 10)",
        })
    }
}

const OID_SHA256_DER: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
const OID_SHA384_DER: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
const OID_SHA512_DER: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03];

fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    // Short lengths only: every structure here is under 128 bytes.
    let mut out = vec![tag, value.len() as u8];
    out.extend_from_slice(value);
    out
}

/// RSASSA-PSS-params with the hash, MGF1 over the same hash and the salt
/// length; trailerField left at its default (RFC 7427 appendix A.4.3).
fn pss_identifier(hash_oid: &[u8], salt: u8) -> Vec<u8> {
    let mut hash_alg = tlv(0x06, hash_oid);
    hash_alg.extend_from_slice(&[0x05, 0x00]);
    let hash_alg = tlv(0x30, &hash_alg);
    let mut mgf = tlv(
        0x06,
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x08],
    );
    mgf.extend_from_slice(&hash_alg);
    let mgf = tlv(0x30, &mgf);
    let mut params = tlv(0xa0, &hash_alg);
    params.extend(tlv(0xa1, &mgf));
    params.extend(tlv(0xa2, &tlv(0x02, &[salt])));
    let mut id = tlv(
        0x06,
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a],
    );
    id.extend(tlv(0x30, &params));
    tlv(0x30, &id)
}

/// The PSS variant aws-lc-rs verifies: MGF1 with the message hash and a
/// salt as long as the hash.
fn pss_scheme(alg: &AlgorithmIdentifier<'_>) -> Result<SignatureScheme, CertError> {
    let unsupported =
        |why: &str| CertError::UnsupportedSignatureAlgorithm(format!("RSASSA-PSS with {why}"));
    let SignatureAlgorithm::RSASSA_PSS(params) = SignatureAlgorithm::try_from(alg)
        .map_err(|_| CertError::MalformedAuth("RSASSA-PSS parameters do not parse"))?
    else {
        return Err(CertError::MalformedAuth(
            "RSASSA-PSS parameters do not parse",
        ));
    };
    let hash = params.hash_algorithm_oid().to_id_string();
    let (scheme, salt) = match hash.as_str() {
        OID_SHA256 => (SignatureScheme::RsaPssSha256, 32),
        OID_SHA384 => (SignatureScheme::RsaPssSha384, 48),
        OID_SHA512 => (SignatureScheme::RsaPssSha512, 64),
        other => return Err(unsupported(&format!("hash {other}"))),
    };
    let mgf = params
        .mask_gen_algorithm()
        .map_err(|_| CertError::MalformedAuth("RSASSA-PSS mask generation does not parse"))?;
    if mgf.mgf.to_id_string() != OID_MGF1 || mgf.hash.to_id_string() != hash {
        return Err(unsupported(
            "a mask generation other than MGF1 over the message hash",
        ));
    }
    if params.salt_length() != salt {
        return Err(unsupported(&format!(
            "salt length {} (only the hash length, {salt}, is supported)",
            params.salt_length()
        )));
    }
    if params.trailer_field() != 1 {
        return Err(unsupported("a trailer field other than 1"));
    }
    Ok(scheme)
}
