//! The cryptography of IKEv2 (RFC 7296 sections 2.13-2.17 and 2.15) on top
//! of aws-lc-rs: PRFs and prf+, the IKE SA and Child SA key derivation, the
//! Diffie-Hellman groups, the SK payload's protection and PSK AUTH.
//!
//! Randomness is injected through [`Random`] so that a seeded generator
//! makes a whole exchange reproducible in tests. Key material lives in
//! [`zeroize::Zeroizing`] buffers and no type here prints it.

pub mod algorithms;
pub mod dh;
pub mod keys;
pub mod prf;
pub mod random;
pub mod sk;

pub use algorithms::{DhGroup, EncrAlg, IntegAlg, PrfAlg};
pub use dh::DhPrivate;
pub use keys::{child_keymat, ChildKeys, IkeKeys};
pub use random::{Random, SeededRandom, SystemRandom};
pub use sk::SkCipher;

/// Why a cryptographic operation failed. Never carries key bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The peer's public value is not a valid point or number of the group.
    #[error("invalid {group} public value from the peer")]
    InvalidPublicValue {
        /// The group's name.
        group: &'static str,
    },
    /// The system's random generator failed.
    #[error("random generator failed")]
    Random,
    /// Integrity check of an SK payload failed (wrong keys or tampering).
    #[error("integrity check failed")]
    Integrity,
    /// The SK payload's length does not fit its cipher (IV, blocks, ICV).
    #[error("encrypted payload of {0} bytes does not fit the cipher")]
    BadLength(usize),
    /// The padding length inside the decrypted SK payload is impossible.
    #[error("bad padding in the decrypted payload")]
    BadPadding,
    /// A key of the wrong length was handed to a cipher (a bug upstream).
    #[error("internal: {0}")]
    Internal(&'static str),
}
