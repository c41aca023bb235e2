//! The CA certificates a peer's chain must lead to, and the verification
//! of a peer's IKE_AUTH: chain, validity time, identity, signature.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest;
use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, ExtendedKeyUsageValidator, KeyPurposeIdIter};

use super::signature::SignatureScheme;
use super::x509;
use super::{read_certificates, CertError};
use crate::wire::consts::cert_encoding;
use crate::wire::Identification;

/// The configured CA certificates (`remote.cacerts`).
#[derive(Debug, Clone)]
pub struct TrustStore {
    cas: Vec<Vec<u8>>,
    anchors: Vec<TrustAnchor<'static>>,
    /// SHA-1 of each CA's subjectPublicKeyInfo (RFC 7296 section 3.7).
    key_hashes: Vec<[u8; 20]>,
}

/// strongSwan does not restrict extended key usage for IKE, and IKE
/// certificates in the wild carry serverAuth, clientAuth, ipsecIKE or
/// none; a malformed extension still fails.
struct AnyKeyUsage;

impl ExtendedKeyUsageValidator for AnyKeyUsage {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        for purpose in iter {
            purpose?;
        }
        Ok(())
    }
}

impl TrustStore {
    /// Loads the CA certificates of `ca_paths` (PEM, several per file
    /// allowed, or DER).
    pub fn load<P: AsRef<Path>>(ca_paths: &[P]) -> Result<Self, CertError> {
        let mut cas = Vec::new();
        for p in ca_paths {
            cas.extend(read_certificates(p.as_ref())?);
        }
        Self::from_der(cas)
    }

    /// From DER CA certificates.
    pub fn from_der(cas: Vec<Vec<u8>>) -> Result<Self, CertError> {
        let mut anchors = Vec::with_capacity(cas.len());
        let mut key_hashes = Vec::with_capacity(cas.len());
        for (i, der) in cas.iter().enumerate() {
            let cert = x509::parse(der, i)?;
            let hash = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, cert.public_key().raw);
            let mut h = [0u8; 20];
            h.copy_from_slice(hash.as_ref());
            key_hashes.push(h);
            let anchor = webpki::anchor_from_trusted_cert(&CertificateDer::from(der.as_slice()))
                .map_err(|e| CertError::BadCertificate {
                    index: i,
                    reason: format!("not usable as a trust anchor: {e}"),
                })?
                .to_owned();
            anchors.push(anchor);
        }
        Ok(TrustStore {
            cas,
            anchors,
            key_hashes,
        })
    }

    /// The CA certificates in DER.
    pub fn ca_der(&self) -> &[Vec<u8>] {
        &self.cas
    }

    /// SHA-1 hashes of the CAs' SubjectPublicKeyInfo, the Certification
    /// Authority field of a CERTREQ payload.
    pub fn certreq_hashes(&self) -> &[[u8; 20]] {
        &self.key_hashes
    }

    /// The CERTREQ payload body: encoding 4 (X.509 signature) and the
    /// concatenated hashes.
    pub fn certreq_body(&self) -> Vec<u8> {
        let mut body = vec![cert_encoding::X509_SIGNATURE];
        for h in &self.key_hashes {
            body.extend_from_slice(h);
        }
        body
    }

    /// Whether a received CERTREQ body asks for one of our CAs (or names
    /// none, which asks for any).
    pub fn certreq_matches(&self, body: &[u8]) -> bool {
        match body.split_first() {
            Some((&cert_encoding::X509_SIGNATURE, hashes)) => {
                hashes.is_empty()
                    || hashes
                        .chunks(20)
                        .any(|h| self.key_hashes.iter().any(|k| k.as_slice() == h))
            }
            _ => false,
        }
    }

    /// Verifies a peer's chain (`chain_der`: the CERT payloads' DER, end
    /// entity first) leads to one of our CAs and is valid at `now`.
    /// Returns the end entity's subject for log lines.
    pub fn verify_chain(&self, chain_der: &[&[u8]], now: SystemTime) -> Result<String, CertError> {
        let (ee_der, intermediates) = chain_der.split_first().ok_or(CertError::NoCertificate)?;
        let ee = x509::parse(ee_der, 0)?;
        for (i, der) in intermediates.iter().enumerate() {
            x509::parse(der, i + 1)?;
        }
        let subject = x509::subject(&ee);
        let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let ee_cert = CertificateDer::from(*ee_der);
        let end_entity =
            EndEntityCert::try_from(&ee_cert).map_err(|e| CertError::BadCertificate {
                index: 0,
                reason: e.to_string(),
            })?;
        let intermediates: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .map(|d| CertificateDer::from(*d))
            .collect();
        let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(now_secs));
        let result = end_entity.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &self.anchors,
            &intermediates,
            time,
            AnyKeyUsage,
            None,
            None,
        );
        match result {
            Ok(_) => Ok(subject),
            Err(webpki::Error::UnknownIssuer) => Err(CertError::UntrustedIssuer {
                issuer: x509::issuer(&ee),
                subject,
            }),
            Err(webpki::Error::CertExpired { not_after, .. }) => Err(CertError::Expired {
                subject,
                not_after: not_after.as_secs(),
                now: now_secs,
            }),
            Err(webpki::Error::CertNotValidYet { not_before, .. }) => Err(CertError::NotYetValid {
                subject,
                not_before: not_before.as_secs(),
                now: now_secs,
            }),
            Err(e) => Err(CertError::InvalidChain {
                subject,
                reason: e.to_string(),
            }),
        }
    }

    /// Authenticates a peer in IKE_AUTH: its chain leads to one of our CAs
    /// and is valid at `now`, its end-entity certificate vouches for
    /// `peer_id` (the IDi/IDr it sent), and `auth_data` (the AUTH payload
    /// data of method `auth_method`) is its signature over `octets`.
    /// Returns the end entity's subject for log lines.
    pub fn verify_peer(
        &self,
        chain_der: &[&[u8]],
        now: SystemTime,
        peer_id: &Identification,
        auth_method: u8,
        auth_data: &[u8],
        octets: &[u8],
    ) -> Result<String, CertError> {
        let subject = self.verify_chain(chain_der, now)?;
        let ee = x509::parse(chain_der[0], 0)?;
        if !x509::vouches_for(&ee, peer_id) {
            return Err(CertError::IdentityMismatch {
                id: x509::id_text(peer_id),
                subject,
            });
        }
        let (scheme, signature) = SignatureScheme::parse_auth(auth_method, auth_data)?;
        let spki = ee.public_key();
        let kind = x509::key_kind(spki)?;
        scheme.verify(
            kind,
            &spki.subject_public_key.data,
            octets,
            signature,
            &subject,
        )?;
        Ok(subject)
    }
}
