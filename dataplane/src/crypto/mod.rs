//! AES-GCM for ESP (RFC 4106) behind one small trait, so the ESP transform does
//! not care which library does the arithmetic.

use thiserror::Error;
use zeroize::Zeroizing;

#[cfg(feature = "aws-lc")]
mod aws_lc;
mod null;
#[cfg(feature = "rustcrypto")]
mod rustcrypto;

/// Length of the GCM authentication tag ESP uses (RFC 4106 ICV of 16 octets).
pub const TAG_LEN: usize = 16;
/// Length of the GCM nonce: 4-byte salt || 8-byte IV.
pub const NONCE_LEN: usize = 12;

#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum CryptoError {
    #[error("AES-GCM key must be 16 or 32 bytes, got {0}")]
    BadKeyLength(usize),
    #[error("authentication failed")]
    AuthenticationFailed,
    #[error("crypto backend {0} is not compiled in")]
    BackendUnavailable(Backend),
    #[error("the crypto backend refused the operation")]
    BackendFailure,
}

/// Which library implements AES-GCM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// aws-lc-rs (AES-NI / VAES assembly); the default.
    AwsLc,
    /// RustCrypto `aes-gcm` (pure Rust); the `rustcrypto` cargo feature.
    RustCrypto,
    /// No encryption and no authentication: the same pipeline without the
    /// cipher, to measure the I/O ceiling. A benchmark switch of the data
    /// plane's command line, never in [`Backend::available`], never
    /// negotiated.
    NullBenchmarkOnly,
}

impl Backend {
    /// Every backend this build has, default first.
    pub fn available() -> &'static [Backend] {
        &[
            #[cfg(feature = "aws-lc")]
            Backend::AwsLc,
            #[cfg(feature = "rustcrypto")]
            Backend::RustCrypto,
        ]
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::AwsLc => "aws-lc-rs",
            Backend::RustCrypto => "rustcrypto",
            Backend::NullBenchmarkOnly => "null-benchmark-only",
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// An AES-GCM key bound to one backend. Sealing and opening work in place on
/// caller-owned buffers so the hot path never allocates.
pub trait Aead: Send + Sync + std::fmt::Debug {
    /// Encrypts `in_out` in place and returns the tag.
    fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError>;

    /// Authenticates and decrypts `in_out` in place. On failure the contents
    /// of `in_out` are unspecified and must not be used.
    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CryptoError>;

    fn backend(&self) -> Backend;

    /// Key length in bytes (16 or 32).
    fn key_len(&self) -> usize;
}

/// Builds an AES-GCM key (16 bytes: AES-128, 32 bytes: AES-256) on `backend`.
pub fn new_aead(backend: Backend, key: &[u8]) -> Result<Box<dyn Aead>, CryptoError> {
    if key.len() != 16 && key.len() != 32 {
        return Err(CryptoError::BadKeyLength(key.len()));
    }
    match backend {
        #[cfg(feature = "aws-lc")]
        Backend::AwsLc => Ok(Box::new(aws_lc::AwsLcAesGcm::new(key)?)),
        #[cfg(feature = "rustcrypto")]
        Backend::RustCrypto => Ok(Box::new(rustcrypto::RustCryptoAesGcm::new(key)?)),
        Backend::NullBenchmarkOnly => Ok(Box::new(null::NullCipher::new(key))),
        #[allow(unreachable_patterns)]
        other => Err(CryptoError::BackendUnavailable(other)),
    }
}

/// Key material as it arrives from config or IKE: kept zeroized on drop.
pub type SecretBytes = Zeroizing<Vec<u8>>;
