//! Our own certificate chain and private key.

use std::fmt;
use std::path::Path;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self as sig, EcdsaKeyPair, KeyPair, RsaKeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

use super::signature::SignatureScheme;
use super::x509::{self, KeyKind};
use super::{read, read_certificates, CertError};
use crate::wire::consts::cert_encoding;
use crate::wire::Identification;

enum SigningKey {
    Ecdsa(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// Our certificate chain (end entity first) and its private key.
pub struct LocalCredential {
    chain: Vec<Vec<u8>>,
    key: SigningKey,
    scheme: SignatureScheme,
    subject: String,
    subject_der: Vec<u8>,
    rng: SystemRandom,
}

impl fmt::Debug for LocalCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalCredential")
            .field("subject", &self.subject)
            .field("chain_len", &self.chain.len())
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

impl LocalCredential {
    /// Loads the certificates of `cert_paths` (PEM, several per file
    /// allowed; end entity first, then intermediates) and the private key
    /// at `key_path` (PEM: PKCS#8, SEC1 "EC PRIVATE KEY" or PKCS#1 "RSA
    /// PRIVATE KEY", as strongSwan's `pki --gen` writes them).
    pub fn load<P: AsRef<Path>>(cert_paths: &[P], key_path: &Path) -> Result<Self, CertError> {
        let mut chain = Vec::new();
        for p in cert_paths {
            chain.extend(read_certificates(p.as_ref())?);
        }
        let key_bytes = zeroize::Zeroizing::new(read(key_path)?);
        let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| CertError::Pem {
            path: key_path.to_owned(),
            reason: format!("no usable private key: {e}"),
        })?;
        Self::from_der(chain, &key)
    }

    /// The same from PEM text held in memory.
    pub fn from_pem(certs_pem: &[u8], key_pem: &[u8]) -> Result<Self, CertError> {
        let chain = rustls_pki_types::CertificateDer::pem_slice_iter(certs_pem)
            .map(|c| c.map(|c| c.to_vec()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CertError::Pem {
                path: "<memory>".into(),
                reason: format!("bad certificate PEM: {e}"),
            })?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| CertError::Pem {
            path: "<memory>".into(),
            reason: format!("no usable private key: {e}"),
        })?;
        Self::from_der(chain, &key)
    }

    /// From DER certificates (end entity first) and a DER private key.
    pub fn from_der(chain: Vec<Vec<u8>>, key: &PrivateKeyDer<'_>) -> Result<Self, CertError> {
        let ee_der = chain.first().ok_or(CertError::NoCertificate)?;
        let ee = x509::parse(ee_der, 0)?;
        for (i, der) in chain.iter().enumerate().skip(1) {
            x509::parse(der, i)?;
        }
        let subject = x509::subject(&ee);
        let subject_der = ee.subject().as_raw().to_vec();
        let spki = ee.public_key();
        let kind = x509::key_kind(spki)?;
        let cert_key: &[u8] = &spki.subject_public_key.data;
        let rejected = |e: aws_lc_rs::error::KeyRejected| {
            CertError::UnsupportedKey(format!("the {kind} private key is rejected: {e}"))
        };
        let (key, scheme, public): (SigningKey, SignatureScheme, Vec<u8>) = match kind {
            KeyKind::EcP256 | KeyKind::EcP384 => {
                let (alg, scheme) = if kind == KeyKind::EcP256 {
                    (
                        &sig::ECDSA_P256_SHA256_ASN1_SIGNING,
                        SignatureScheme::EcdsaSha256,
                    )
                } else {
                    (
                        &sig::ECDSA_P384_SHA384_ASN1_SIGNING,
                        SignatureScheme::EcdsaSha384,
                    )
                };
                let der = match key {
                    PrivateKeyDer::Pkcs8(k) => k.secret_pkcs8_der(),
                    PrivateKeyDer::Sec1(k) => k.secret_sec1_der(),
                    PrivateKeyDer::Pkcs1(_) => {
                        return Err(CertError::KeyMismatch { subject });
                    }
                    _ => return Err(CertError::UnsupportedKey("unknown key format".into())),
                };
                let pair = EcdsaKeyPair::from_private_key_der(alg, der).map_err(|e| {
                    if matches!(key, PrivateKeyDer::Pkcs8(_)) {
                        // A PKCS#8 key of another type or curve.
                        CertError::KeyMismatch {
                            subject: subject.clone(),
                        }
                    } else {
                        rejected(e)
                    }
                })?;
                let public = pair.public_key().as_ref().to_vec();
                (SigningKey::Ecdsa(pair), scheme, public)
            }
            KeyKind::Rsa => {
                let pair = match key {
                    PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
                    PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
                    PrivateKeyDer::Sec1(_) => return Err(CertError::KeyMismatch { subject }),
                    _ => return Err(CertError::UnsupportedKey("unknown key format".into())),
                }
                .map_err(|_| CertError::KeyMismatch {
                    subject: subject.clone(),
                })?;
                let public = pair.public_key().as_ref().to_vec();
                (
                    SigningKey::Rsa(pair),
                    SignatureScheme::RsaPkcs1Sha256,
                    public,
                )
            }
        };
        if public != cert_key {
            return Err(CertError::KeyMismatch { subject });
        }
        Ok(LocalCredential {
            chain,
            key,
            scheme,
            subject,
            subject_der,
            rng: SystemRandom::new(),
        })
    }

    /// The certificates in DER, end entity first: one CERT payload each.
    pub fn chain_der(&self) -> &[Vec<u8>] {
        &self.chain
    }

    /// The CERT payload bodies (encoding 4, X.509 signature, then the
    /// DER), end entity first.
    pub fn cert_payload_bodies(&self) -> Vec<Vec<u8>> {
        self.chain
            .iter()
            .map(|der| {
                let mut body = Vec::with_capacity(1 + der.len());
                body.push(cert_encoding::X509_SIGNATURE);
                body.extend_from_slice(der);
                body
            })
            .collect()
    }

    /// The auth method of our AUTH payloads: 14, digital signature.
    pub fn auth_method(&self) -> u8 {
        self.scheme.auth_method()
    }

    /// The scheme we sign with.
    pub fn signature_scheme(&self) -> SignatureScheme {
        self.scheme
    }

    /// The AUTH payload data over `octets` (InitiatorSignedOctets or
    /// ResponderSignedOctets, RFC 7296 section 2.15): the RFC 7427
    /// AlgorithmIdentifier prefix and the signature.
    pub fn sign_auth(&self, octets: &[u8]) -> Result<Vec<u8>, CertError> {
        let signature = match &self.key {
            SigningKey::Ecdsa(pair) => pair
                .sign(&self.rng, octets)
                .map_err(|_| CertError::SigningFailed)?
                .as_ref()
                .to_vec(),
            SigningKey::Rsa(pair) => {
                let mut out = vec![0u8; pair.public_modulus_len()];
                pair.sign(&sig::RSA_PKCS1_SHA256, &self.rng, octets, &mut out)
                    .map_err(|_| CertError::SigningFailed)?;
                out
            }
        };
        Ok(self.scheme.auth_data(&signature))
    }

    /// Whether our end-entity certificate vouches for `id`, the identity
    /// we send in IDi/IDr (DN: the subject; FQDN/RFC822/IP: a
    /// subjectAltName). A peer would reject the AUTH otherwise.
    pub fn identity_matches(&self, id: &Identification) -> bool {
        x509::identity_matches_certificate(&self.chain[0], id)
    }

    /// The ID to send when none is configured: the subject DN exactly as
    /// the certificate encodes it.
    pub fn subject_id(&self) -> Identification {
        Identification::DerDn(self.subject_der.clone())
    }

    /// The subject as text, for log lines.
    pub fn subject(&self) -> &str {
        &self.subject
    }
}
