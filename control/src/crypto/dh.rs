//! Diffie-Hellman: X25519 and the NIST curves through aws-lc-rs, MODP-2048
//! with num-bigint. The private value comes from the injected [`Random`],
//! so a seeded generator reproduces a run.

use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey};
use num_bigint::BigUint;
use zeroize::Zeroizing;

use super::{CryptoError, DhGroup, Random};

/// RFC 3526 group 14, generator 2.
const MODP_2048_P: &str = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF";

/// A private exponent of 256 bits: RFC 3526 asks for twice the group's
/// ~110-bit strength at least, and a short exponent keeps modpow cheap.
const MODP_EXPONENT_BYTES: usize = 32;

enum Secret {
    Ec(PrivateKey),
    Modp(Zeroizing<Vec<u8>>),
}

/// Our half of a Diffie-Hellman exchange.
pub struct DhPrivate {
    group: DhGroup,
    secret: Secret,
    public: Vec<u8>,
}

impl std::fmt::Debug for DhPrivate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DhPrivate({:?}, <redacted>)", self.group)
    }
}

fn modp_p() -> BigUint {
    // The constant is valid hex; an empty number would make every exchange fail
    // visibly rather than panic.
    BigUint::parse_bytes(MODP_2048_P.as_bytes(), 16).unwrap_or_default()
}

/// Left-pads a big-endian number to `len` bytes (KE payloads and shared
/// secrets of MODP groups have the prime's length, section 3.4).
fn pad_to(v: Vec<u8>, len: usize) -> Vec<u8> {
    if v.len() >= len {
        return v;
    }
    let mut out = vec![0u8; len - v.len()];
    out.extend_from_slice(&v);
    out
}

impl DhPrivate {
    /// A fresh key pair in `group`.
    pub fn generate(group: DhGroup, rng: &mut dyn Random) -> Result<Self, CryptoError> {
        let ec_alg = match group {
            DhGroup::Curve25519 => Some((&agreement::X25519, 32)),
            DhGroup::Ecp256 => Some((&agreement::ECDH_P256, 32)),
            DhGroup::Ecp384 => Some((&agreement::ECDH_P384, 48)),
            DhGroup::Modp2048 => None,
        };
        match ec_alg {
            Some((alg, len)) => {
                // A random scalar at or above the curve order is rejected;
                // for P-256/P-384 that happens with probability < 2^-32.
                for _ in 0..8 {
                    let mut bytes = Zeroizing::new(vec![0u8; len]);
                    rng.fill(&mut bytes)?;
                    let Ok(key) = PrivateKey::from_private_key(alg, &bytes) else {
                        continue;
                    };
                    let public = key
                        .compute_public_key()
                        .map_err(|_| CryptoError::Internal("EC public key"))?;
                    let mut public = public.as_ref().to_vec();
                    if group != DhGroup::Curve25519 {
                        // SEC1 uncompressed 0x04 || x || y; IKE sends x || y (RFC 5903).
                        public.remove(0);
                    }
                    return Ok(DhPrivate {
                        group,
                        secret: Secret::Ec(key),
                        public,
                    });
                }
                Err(CryptoError::Random)
            }
            None => {
                let mut x = Zeroizing::new(vec![0u8; MODP_EXPONENT_BYTES]);
                rng.fill(&mut x)?;
                let p = modp_p();
                let y = BigUint::from(2u8).modpow(&BigUint::from_bytes_be(&x), &p);
                Ok(DhPrivate {
                    group,
                    secret: Secret::Modp(x),
                    public: pad_to(y.to_bytes_be(), group.public_len()),
                })
            }
        }
    }

    /// The group.
    pub fn group(&self) -> DhGroup {
        self.group
    }

    /// Our public value as the KE payload carries it.
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// The shared secret g^ir from the peer's KE payload data.
    pub fn agree(&self, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let invalid = CryptoError::InvalidPublicValue {
            group: self.group.name(),
        };
        if peer.len() != self.group.public_len() {
            return Err(invalid);
        }
        match &self.secret {
            Secret::Ec(key) => {
                let peer_bytes = if self.group == DhGroup::Curve25519 {
                    peer.to_vec()
                } else {
                    let mut v = Vec::with_capacity(peer.len() + 1);
                    v.push(0x04);
                    v.extend_from_slice(peer);
                    v
                };
                let alg = key.algorithm();
                agreement::agree(
                    key,
                    UnparsedPublicKey::new(alg, &peer_bytes),
                    invalid.clone(),
                    |s| {
                        // An all-zero X25519 output means a small-order point.
                        if s.iter().all(|&b| b == 0) {
                            return Err(invalid.clone());
                        }
                        Ok(Zeroizing::new(s.to_vec()))
                    },
                )
            }
            Secret::Modp(x) => {
                let p = modp_p();
                let y = BigUint::from_bytes_be(peer);
                let one = BigUint::from(1u8);
                // Section 3.4 / RFC 6989: reject 0, 1 and p-1 and anything >= p.
                if y <= one || y >= &p - &one {
                    return Err(invalid);
                }
                let s = y.modpow(&BigUint::from_bytes_be(x), &p);
                Ok(Zeroizing::new(pad_to(
                    s.to_bytes_be(),
                    self.group.public_len(),
                )))
            }
        }
    }
}
