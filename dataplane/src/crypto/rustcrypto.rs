//! AES-GCM on RustCrypto's `aes-gcm` 0.11 (pure Rust; AES-NI and CLMUL are
//! picked at run time where the CPU has them).
//!
//! `AeadInOut::{encrypt,decrypt}_inout_detached` on a plain `&mut [u8]` are the
//! in-place, detached-tag calls (0.11's names for the now deprecated
//! `{encrypt,decrypt}_in_place_detached`, which forward to them). Neither
//! allocates.

use aes_gcm::aead::array::Array;
use aes_gcm::{AeadInOut, Aes128Gcm, Aes256Gcm, KeyInit};

use super::{Aead, Backend, CryptoError, NONCE_LEN, TAG_LEN};

/// An AES-128-GCM or AES-256-GCM key.
///
/// The workspace enables `aes-gcm`'s `zeroize` feature, so the AES round keys
/// and the GHASH key are wiped when this value is dropped. The cipher state is
/// boxed so that it keeps one address for its whole life: moving the key
/// (into a `Box<dyn Aead>`, into an SA) moves a pointer, not the round keys,
/// so no stale unwiped copy is left behind. The one copy we cannot rule out
/// without `unsafe` is the compiler's temporary while building it.
pub(crate) enum RustCryptoAesGcm {
    Aes128(Box<Aes128Gcm>),
    Aes256(Box<Aes256Gcm>),
}

impl RustCryptoAesGcm {
    pub(crate) fn new(key: &[u8]) -> Result<Self, CryptoError> {
        let bad_len = |_| CryptoError::BadKeyLength(key.len());
        match key.len() {
            16 => Ok(Self::Aes128(Box::new(
                Aes128Gcm::new_from_slice(key).map_err(bad_len)?,
            ))),
            32 => Ok(Self::Aes256(Box::new(
                Aes256Gcm::new_from_slice(key).map_err(bad_len)?,
            ))),
            n => Err(CryptoError::BadKeyLength(n)),
        }
    }
}

impl std::fmt::Debug for RustCryptoAesGcm {
    // Never the key: only which algorithm it is for.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RustCryptoAesGcm")
            .field("key_bits", &(self.key_len() * 8))
            .finish_non_exhaustive()
    }
}

impl Aead for RustCryptoAesGcm {
    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        let nonce: &Array<u8, _> = nonce.into();
        let tag = match self {
            Self::Aes128(c) => c.encrypt_inout_detached(nonce, aad, in_out.into()),
            Self::Aes256(c) => c.encrypt_inout_detached(nonce, aad, in_out.into()),
        }
        .map_err(|_| CryptoError::BackendFailure)?;
        Ok(tag.into())
    }

    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CryptoError> {
        let nonce: &Array<u8, _> = nonce.into();
        let tag: &Array<u8, _> = tag.into();
        // As with aws-lc, a too-long input and a bad tag are one opaque error;
        // both mean the packet is dropped.
        match self {
            Self::Aes128(c) => c.decrypt_inout_detached(nonce, aad, in_out.into(), tag),
            Self::Aes256(c) => c.decrypt_inout_detached(nonce, aad, in_out.into(), tag),
        }
        .map_err(|_| CryptoError::AuthenticationFailed)
    }

    fn backend(&self) -> Backend {
        Backend::RustCrypto
    }

    fn key_len(&self) -> usize {
        match self {
            Self::Aes128(_) => 16,
            Self::Aes256(_) => 32,
        }
    }
}
