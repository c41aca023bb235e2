//! X.509 certificate authentication for IKE_AUTH (RFC 7296 section 2.15,
//! RFC 7427 digital signatures), sans-IO apart from loading PEM files.
//!
//! - [`LocalCredential`]: our certificate chain and private key (ECDSA
//!   P-256/P-384 or RSA); signs the AUTH octets and says which identities
//!   the certificate vouches for.
//! - [`TrustStore`]: the CA certificates a peer's chain must lead to;
//!   verifies the peer's chain at a given time, its identity against the
//!   end-entity certificate and its AUTH signature; produces CERTREQ data.
//!
//! Signatures use auth method 14 (RFC 7427): ecdsa-with-SHA256 for P-256
//! keys, ecdsa-with-SHA384 for P-384, sha256WithRSAEncryption (PKCS#1
//! v1.5) for RSA. That is what strongSwan 5.9.8 itself signs with by
//! default (its `rsa_pss` option is off) and verifies without extra
//! configuration. Peers may sign with any of ecdsa-with-SHA256/384/512,
//! sha256/384/512WithRSAEncryption and RSASSA-PSS (SHA-256/384/512, MGF1
//! with the same hash, salt as long as the hash, as strongSwan writes it),
//! or with auth methods 9/10 (RFC 4754 ECDSA).
//!
//! Extended key usage is not restricted (as in strongSwan): IKE
//! certificates carry serverAuth, clientAuth, ipsecIKE or none at all.

mod local;
mod signature;
mod trust;
mod x509;

use std::path::{Path, PathBuf};

pub use local::LocalCredential;
pub use signature::{SignatureScheme, SIGNATURE_HASH_ALGORITHMS};
pub use trust::TrustStore;
pub use x509::identity_matches_certificate;

use crate::wire::consts::hash_algorithm;

/// Why a credential could not be loaded or a peer was not authenticated.
/// Each variant says exactly what failed so that a log line can too.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// A file could not be read.
    #[error("{}: {reason}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        reason: String,
    },
    /// A file holds no usable PEM object of the expected kind.
    #[error("{}: {reason}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is missing or wrong.
        reason: String,
    },
    /// A certificate does not parse.
    #[error("certificate {index} does not parse: {reason}")]
    BadCertificate {
        /// Its position (0: end entity, or the CA list order).
        index: usize,
        /// The parser's complaint.
        reason: String,
    },
    /// A key type or curve xdpsec does not sign or verify with.
    #[error("unsupported key: {0}")]
    UnsupportedKey(String),
    /// The private key does not belong to the end-entity certificate.
    #[error("the private key does not match the certificate {subject}")]
    KeyMismatch {
        /// The certificate's subject.
        subject: String,
    },
    /// The peer sent no certificate.
    #[error("the peer sent no certificate")]
    NoCertificate,
    /// No configured CA issued (a certificate of) the peer's chain.
    #[error("untrusted issuer: no configured CA certificate issued {subject} (issuer {issuer})")]
    UntrustedIssuer {
        /// The end entity's subject.
        subject: String,
        /// The end entity's issuer.
        issuer: String,
    },
    /// A certificate of the chain expired.
    #[error("certificate expired: the chain of {subject} was valid until {not_after} (unix time), now is {now}")]
    Expired {
        /// The end entity's subject.
        subject: String,
        /// The notAfter that was passed, in seconds since the epoch.
        not_after: u64,
        /// The time of the check.
        now: u64,
    },
    /// A certificate of the chain is not valid yet.
    #[error("certificate not valid yet: the chain of {subject} is valid from {not_before} (unix time), now is {now}")]
    NotYetValid {
        /// The end entity's subject.
        subject: String,
        /// The notBefore not yet reached, in seconds since the epoch.
        not_before: u64,
        /// The time of the check.
        now: u64,
    },
    /// The chain fails for another reason (bad CA signature, a CA used as
    /// end entity, path length, name constraints ...).
    #[error("invalid certificate chain for {subject}: {reason}")]
    InvalidChain {
        /// The end entity's subject.
        subject: String,
        /// The validator's reason.
        reason: String,
    },
    /// The peer's IKE identity is not in its certificate.
    #[error("identity mismatch: {id} is neither the subject nor a subjectAltName of {subject}")]
    IdentityMismatch {
        /// The identity from the ID payload.
        id: String,
        /// The certificate's subject.
        subject: String,
    },
    /// An AUTH method other than the signatures supported.
    #[error("unsupported auth method {0} (expected 14, digital signature; or 9/10, ECDSA)")]
    UnsupportedAuthMethod(u8),
    /// The AUTH data names a signature algorithm xdpsec does not verify.
    #[error("unsupported signature algorithm: {0}")]
    UnsupportedSignatureAlgorithm(String),
    /// The signature algorithm does not fit the certificate's key.
    #[error("signature algorithm {scheme} does not fit the {key} key of {subject}")]
    AlgorithmMismatch {
        /// The scheme named in AUTH.
        scheme: String,
        /// The key type of the certificate.
        key: String,
        /// The certificate's subject.
        subject: String,
    },
    /// The AUTH payload data is malformed.
    #[error("malformed AUTH data: {0}")]
    MalformedAuth(&'static str),
    /// The AUTH signature does not verify with the certificate's key.
    #[error("bad signature: the AUTH payload does not verify with the key of {subject}")]
    BadSignature {
        /// The certificate's subject.
        subject: String,
    },
    /// Signing failed in the crypto library.
    #[error("signing failed")]
    SigningFailed,
}

/// The SIGNATURE_HASH_ALGORITHMS notify data (RFC 7427 section 4): the
/// hashes we verify with, two octets each.
pub fn signature_hash_algorithms_notify_data() -> Vec<u8> {
    SIGNATURE_HASH_ALGORITHMS
        .iter()
        .flat_map(|h| h.to_be_bytes())
        .collect()
}

/// Whether `hash` (a SIGNATURE_HASH_ALGORITHMS value) is one we support.
pub fn supports_hash(hash: u16) -> bool {
    matches!(
        hash,
        hash_algorithm::SHA2_256 | hash_algorithm::SHA2_384 | hash_algorithm::SHA2_512
    )
}

/// Reads a whole file, naming it in the error.
fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|e| CertError::Io {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// The certificates of a PEM file, in order (DER bytes also accepted
/// when the file is not PEM).
fn read_certificates(path: &Path) -> Result<Vec<Vec<u8>>, CertError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let bytes = read(path)?;
    if bytes.first() == Some(&0x30) {
        return Ok(vec![bytes]);
    }
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem {
            path: path.to_owned(),
            reason: format!("bad PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(CertError::Pem {
            path: path.to_owned(),
            reason: "no \"-----BEGIN CERTIFICATE-----\" block".to_owned(),
        });
    }
    Ok(certs)
}
