//! The transforms the IKE crypto implements, with their IANA numbers, sizes
//! and strongSwan's keywords for log lines (`aes128gcm16`, `prfsha256`, ...).

use crate::wire::consts::{dh, encr, integ, prf};

/// An encryption transform (ENCR).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncrAlg {
    /// ENCR_AES_CBC with a 128- or 256-bit key; needs an integrity transform.
    AesCbc {
        /// Key length in bits.
        bits: u16,
    },
    /// ENCR_AES_GCM_16 (RFC 5282 for IKE, RFC 4106 for ESP), 128 or 256 bits.
    AesGcm16 {
        /// Key length in bits.
        bits: u16,
    },
}

impl EncrAlg {
    /// The transform from its ID and Key Length attribute, if implemented.
    pub fn from_transform(id: u16, key_bits: Option<u16>) -> Option<Self> {
        let bits = key_bits?;
        if bits != 128 && bits != 256 {
            return None;
        }
        match id {
            encr::AES_CBC => Some(EncrAlg::AesCbc { bits }),
            encr::AES_GCM_16 => Some(EncrAlg::AesGcm16 { bits }),
            _ => None,
        }
    }

    /// The transform ID.
    pub fn id(self) -> u16 {
        match self {
            EncrAlg::AesCbc { .. } => encr::AES_CBC,
            EncrAlg::AesGcm16 { .. } => encr::AES_GCM_16,
        }
    }

    /// The Key Length attribute in bits.
    pub fn bits(self) -> u16 {
        match self {
            EncrAlg::AesCbc { bits } | EncrAlg::AesGcm16 { bits } => bits,
        }
    }

    /// Whether it is an AEAD (then the integrity transform is NONE/absent).
    pub fn is_aead(self) -> bool {
        matches!(self, EncrAlg::AesGcm16 { .. })
    }

    /// The AES key length in bytes.
    pub fn key_len(self) -> usize {
        usize::from(self.bits() / 8)
    }

    /// Key material taken from prf+: the key plus, for GCM, the 4-byte
    /// salt (RFC 5282 section 7.1, RFC 4106 section 8.1).
    pub fn keymat_len(self) -> usize {
        self.key_len() + if self.is_aead() { 4 } else { 0 }
    }

    /// The strongSwan keyword.
    pub fn name(self) -> &'static str {
        match self {
            EncrAlg::AesCbc { bits: 128 } => "aes128",
            EncrAlg::AesCbc { .. } => "aes256",
            EncrAlg::AesGcm16 { bits: 128 } => "aes128gcm16",
            EncrAlg::AesGcm16 { .. } => "aes256gcm16",
        }
    }
}

/// A pseudorandom function (PRF).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrfAlg {
    /// PRF_HMAC_SHA2_256.
    HmacSha256,
    /// PRF_HMAC_SHA2_384.
    HmacSha384,
    /// PRF_HMAC_SHA2_512.
    HmacSha512,
}

impl PrfAlg {
    /// From the transform ID.
    pub fn from_id(id: u16) -> Option<Self> {
        match id {
            prf::HMAC_SHA2_256 => Some(PrfAlg::HmacSha256),
            prf::HMAC_SHA2_384 => Some(PrfAlg::HmacSha384),
            prf::HMAC_SHA2_512 => Some(PrfAlg::HmacSha512),
            _ => None,
        }
    }

    /// The transform ID.
    pub fn id(self) -> u16 {
        match self {
            PrfAlg::HmacSha256 => prf::HMAC_SHA2_256,
            PrfAlg::HmacSha384 => prf::HMAC_SHA2_384,
            PrfAlg::HmacSha512 => prf::HMAC_SHA2_512,
        }
    }

    /// Output length, which is also the preferred key length (SK_d, SK_p*).
    pub fn output_len(self) -> usize {
        match self {
            PrfAlg::HmacSha256 => 32,
            PrfAlg::HmacSha384 => 48,
            PrfAlg::HmacSha512 => 64,
        }
    }

    /// The strongSwan keyword.
    pub fn name(self) -> &'static str {
        match self {
            PrfAlg::HmacSha256 => "prfsha256",
            PrfAlg::HmacSha384 => "prfsha384",
            PrfAlg::HmacSha512 => "prfsha512",
        }
    }

    pub(crate) fn hmac(self) -> aws_lc_rs::hmac::Algorithm {
        match self {
            PrfAlg::HmacSha256 => aws_lc_rs::hmac::HMAC_SHA256,
            PrfAlg::HmacSha384 => aws_lc_rs::hmac::HMAC_SHA384,
            PrfAlg::HmacSha512 => aws_lc_rs::hmac::HMAC_SHA512,
        }
    }
}

/// An integrity transform (INTEG) for AES-CBC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntegAlg {
    /// AUTH_HMAC_SHA2_256_128.
    HmacSha256_128,
    /// AUTH_HMAC_SHA2_384_192.
    HmacSha384_192,
    /// AUTH_HMAC_SHA2_512_256.
    HmacSha512_256,
}

impl IntegAlg {
    /// From the transform ID (NONE is not an algorithm here).
    pub fn from_id(id: u16) -> Option<Self> {
        match id {
            integ::HMAC_SHA2_256_128 => Some(IntegAlg::HmacSha256_128),
            integ::HMAC_SHA2_384_192 => Some(IntegAlg::HmacSha384_192),
            integ::HMAC_SHA2_512_256 => Some(IntegAlg::HmacSha512_256),
            _ => None,
        }
    }

    /// The transform ID.
    pub fn id(self) -> u16 {
        match self {
            IntegAlg::HmacSha256_128 => integ::HMAC_SHA2_256_128,
            IntegAlg::HmacSha384_192 => integ::HMAC_SHA2_384_192,
            IntegAlg::HmacSha512_256 => integ::HMAC_SHA2_512_256,
        }
    }

    /// Key length (the hash's output length, RFC 4868).
    pub fn key_len(self) -> usize {
        match self {
            IntegAlg::HmacSha256_128 => 32,
            IntegAlg::HmacSha384_192 => 48,
            IntegAlg::HmacSha512_256 => 64,
        }
    }

    /// The truncated ICV length.
    pub fn icv_len(self) -> usize {
        self.key_len() / 2
    }

    /// The strongSwan keyword.
    pub fn name(self) -> &'static str {
        match self {
            IntegAlg::HmacSha256_128 => "sha256",
            IntegAlg::HmacSha384_192 => "sha384",
            IntegAlg::HmacSha512_256 => "sha512",
        }
    }

    pub(crate) fn hmac(self) -> aws_lc_rs::hmac::Algorithm {
        match self {
            IntegAlg::HmacSha256_128 => aws_lc_rs::hmac::HMAC_SHA256,
            IntegAlg::HmacSha384_192 => aws_lc_rs::hmac::HMAC_SHA384,
            IntegAlg::HmacSha512_256 => aws_lc_rs::hmac::HMAC_SHA512,
        }
    }
}

/// A Diffie-Hellman group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DhGroup {
    /// Group 14, 2048-bit MODP (RFC 3526).
    Modp2048,
    /// Group 19, NIST P-256 (RFC 5903).
    Ecp256,
    /// Group 20, NIST P-384 (RFC 5903).
    Ecp384,
    /// Group 31, Curve25519 (RFC 8031).
    Curve25519,
}

impl DhGroup {
    /// From the transform ID.
    pub fn from_id(id: u16) -> Option<Self> {
        match id {
            dh::MODP_2048 => Some(DhGroup::Modp2048),
            dh::ECP_256 => Some(DhGroup::Ecp256),
            dh::ECP_384 => Some(DhGroup::Ecp384),
            dh::CURVE25519 => Some(DhGroup::Curve25519),
            _ => None,
        }
    }

    /// The transform ID (also the KE payload's group number).
    pub fn id(self) -> u16 {
        match self {
            DhGroup::Modp2048 => dh::MODP_2048,
            DhGroup::Ecp256 => dh::ECP_256,
            DhGroup::Ecp384 => dh::ECP_384,
            DhGroup::Curve25519 => dh::CURVE25519,
        }
    }

    /// The length of the public value in a KE payload.
    pub fn public_len(self) -> usize {
        match self {
            DhGroup::Modp2048 => 256,
            DhGroup::Ecp256 => 64,
            DhGroup::Ecp384 => 96,
            DhGroup::Curve25519 => 32,
        }
    }

    /// The strongSwan keyword.
    pub fn name(self) -> &'static str {
        match self {
            DhGroup::Modp2048 => "modp2048",
            DhGroup::Ecp256 => "ecp256",
            DhGroup::Ecp384 => "ecp384",
            DhGroup::Curve25519 => "x25519",
        }
    }
}
