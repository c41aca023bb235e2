//! AES-GCM on aws-lc-rs (AES-NI / VAES / PCLMULQDQ assembly).
//!
//! Both directions work on the caller's buffer with the tag kept apart, which
//! is how ESP lays a packet out (the ICV trails the payload in the frame, but
//! the transform hands it over as its own slice): `seal_in_place_separate_tag`
//! to seal and `open_in_place_separate_tag` (aws-lc's
//! `EVP_AEAD_CTX_open_gather` with `out == in`) to open. Neither allocates or
//! copies the payload.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};

use super::{Aead, Backend, CryptoError, NONCE_LEN, TAG_LEN};

/// An AES-128-GCM or AES-256-GCM key held by aws-lc.
///
/// The expanded key lives in aws-lc's `EVP_AEAD_CTX`, which aws-lc cleanses
/// when the context is freed (on drop); no copy of the raw key is kept here.
pub(crate) struct AwsLcAesGcm {
    key: LessSafeKey,
}

impl AwsLcAesGcm {
    pub(crate) fn new(key: &[u8]) -> Result<Self, CryptoError> {
        let algorithm = match key.len() {
            16 => &AES_128_GCM,
            32 => &AES_256_GCM,
            n => return Err(CryptoError::BadKeyLength(n)),
        };
        let unbound = UnboundKey::new(algorithm, key).map_err(|_| CryptoError::BackendFailure)?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
        })
    }
}

impl std::fmt::Debug for AwsLcAesGcm {
    // Never the key: only which algorithm it is for.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsLcAesGcm")
            .field("key_bits", &(self.key_len() * 8))
            .finish_non_exhaustive()
    }
}

impl Aead for AwsLcAesGcm {
    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                in_out,
            )
            .map_err(|_| CryptoError::BackendFailure)?;
        tag.as_ref()
            .try_into()
            .map_err(|_| CryptoError::BackendFailure)
    }

    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CryptoError> {
        // aws-lc reports every failure here (bad tag, or a length past the
        // GCM limit, which an ESP frame cannot reach) as one opaque error, so
        // all of them read as "not authentic": the packet is dropped either way.
        self.key
            .open_in_place_separate_tag(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                tag,
                in_out,
            )
            .map(|_| ())
            .map_err(|_| CryptoError::AuthenticationFailed)
    }

    fn backend(&self) -> Backend {
        Backend::AwsLc
    }

    fn key_len(&self) -> usize {
        self.key.algorithm().key_len()
    }
}
