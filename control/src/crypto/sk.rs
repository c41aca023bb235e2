//! Protection of the Encrypted and Authenticated payload (SK, RFC 7296
//! section 3.14; SKF, RFC 7383): AES-GCM-16 per RFC 5282 and AES-CBC with
//! an HMAC-SHA2 ICV.
//!
//! ```text
//! IV | ciphertext(inner payloads | padding | pad length) | ICV
//! ```
//!
//! The caller lays out everything before the IV (IKE header and the SK or
//! SKF payload header, with their final lengths from [`SkCipher::sealed_len`])
//! and this module appends the rest. GCM authenticates that prefix as AAD;
//! CBC's HMAC covers the whole message up to the ICV.

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::cipher::{
    DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128,
    AES_256,
};
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use zeroize::Zeroizing;

use super::{CryptoError, EncrAlg, IntegAlg, Random};

const GCM_IV_LEN: usize = 8;
const GCM_ICV_LEN: usize = 16;
const CBC_IV_LEN: usize = 16;
const AES_BLOCK: usize = 16;

/// The protection of one direction of an IKE SA (SK_e* and SK_a*).
pub struct SkCipher {
    encr: EncrAlg,
    integ: Option<IntegAlg>,
    encr_key: Zeroizing<Vec<u8>>,
    integ_key: Zeroizing<Vec<u8>>,
    /// GCM nonces must never repeat under one key: a counter guarantees it
    /// where random 64-bit IVs would only make it likely.
    next_iv: u64,
}

impl std::fmt::Debug for SkCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SkCipher({:?}, {:?}, <redacted>)", self.encr, self.integ)
    }
}

impl SkCipher {
    /// A cipher from SK_e (key, plus 4-byte salt for GCM) and SK_a (empty
    /// for GCM).
    pub fn new(
        encr: EncrAlg,
        integ: Option<IntegAlg>,
        encr_key: &[u8],
        integ_key: &[u8],
    ) -> Result<Self, CryptoError> {
        if encr_key.len() != encr.keymat_len() {
            return Err(CryptoError::Internal("SK_e of the wrong length"));
        }
        if encr.is_aead() != integ.is_none()
            || integ_key.len() != integ.map_or(0, IntegAlg::key_len)
        {
            return Err(CryptoError::Internal("SK_a does not fit the transforms"));
        }
        Ok(SkCipher {
            encr,
            integ,
            encr_key: Zeroizing::new(encr_key.to_vec()),
            integ_key: Zeroizing::new(integ_key.to_vec()),
            next_iv: 1,
        })
    }

    fn iv_len(&self) -> usize {
        if self.encr.is_aead() {
            GCM_IV_LEN
        } else {
            CBC_IV_LEN
        }
    }

    fn icv_len(&self) -> usize {
        self.integ.map_or(GCM_ICV_LEN, IntegAlg::icv_len)
    }

    fn padded_len(&self, plain_len: usize) -> usize {
        if self.encr.is_aead() {
            plain_len + 1
        } else {
            (plain_len + 1).div_ceil(AES_BLOCK) * AES_BLOCK
        }
    }

    /// How many bytes [`SkCipher::seal`] appends for `plain_len` bytes of
    /// inner payloads: IV, padded ciphertext and ICV.
    pub fn sealed_len(&self, plain_len: usize) -> usize {
        self.iv_len() + self.padded_len(plain_len) + self.icv_len()
    }

    /// The largest plaintext that fits in `room` sealed bytes (for
    /// fragmentation).
    pub fn max_plain_len(&self, room: usize) -> usize {
        let body = room.saturating_sub(self.iv_len() + self.icv_len());
        if self.encr.is_aead() {
            body.saturating_sub(1)
        } else {
            (body / AES_BLOCK * AES_BLOCK).saturating_sub(1)
        }
    }

    /// Appends IV, ciphertext and ICV of `plaintext` to `out`, which holds
    /// the message up to the IV with its final length fields.
    pub fn seal(
        &mut self,
        out: &mut Vec<u8>,
        plaintext: &[u8],
        rng: &mut dyn Random,
    ) -> Result<(), CryptoError> {
        let pad = self.padded_len(plaintext.len()) - plaintext.len() - 1;
        let mut body = Vec::with_capacity(plaintext.len() + pad + 1 + self.icv_len());
        body.extend_from_slice(plaintext);
        body.resize(plaintext.len() + pad, 0);
        body.push(u8::try_from(pad).map_err(|_| CryptoError::Internal("padding"))?);
        let bits = self.encr.bits();
        if self.encr.is_aead() {
            let iv = self.next_iv.to_be_bytes();
            self.next_iv += 1;
            let key = gcm_key(bits, &self.encr_key)?;
            let nonce = gcm_nonce(&self.encr_key, &iv)?;
            let tag = key
                .seal_in_place_separate_tag(nonce, Aad::from(&out[..]), &mut body)
                .map_err(|_| CryptoError::Internal("AES-GCM seal"))?;
            out.extend_from_slice(&iv);
            out.extend_from_slice(&body);
            out.extend_from_slice(tag.as_ref());
        } else {
            let mut iv = [0u8; CBC_IV_LEN];
            rng.fill(&mut iv)?;
            let key = EncryptingKey::cbc(cbc_key(bits, &self.encr_key)?)
                .map_err(|_| CryptoError::Internal("AES-CBC key"))?;
            key.less_safe_encrypt(&mut body, EncryptionContext::Iv128(FixedLength::from(iv)))
                .map_err(|_| CryptoError::Internal("AES-CBC encrypt"))?;
            out.extend_from_slice(&iv);
            out.extend_from_slice(&body);
            let integ = self
                .integ
                .ok_or(CryptoError::Internal("CBC without integrity"))?;
            let icv = hmac::sign(&hmac::Key::new(integ.hmac(), &self.integ_key), out);
            out.extend_from_slice(&icv.as_ref()[..integ.icv_len()]);
        }
        Ok(())
    }

    /// Checks and decrypts the SK (or SKF) payload of `msg` whose IV starts
    /// at `iv_at` and which runs to the end of the message; returns the
    /// inner payloads without padding.
    pub fn open(&self, msg: &[u8], iv_at: usize) -> Result<Vec<u8>, CryptoError> {
        let sealed = msg.get(iv_at..).ok_or(CryptoError::BadLength(0))?;
        let (iv_len, icv_len) = (self.iv_len(), self.icv_len());
        if sealed.len() < iv_len + icv_len + 1 {
            return Err(CryptoError::BadLength(sealed.len()));
        }
        let iv = &sealed[..iv_len];
        let bits = self.encr.bits();
        let mut body = if self.encr.is_aead() {
            let key = gcm_key(bits, &self.encr_key)?;
            let nonce = gcm_nonce(&self.encr_key, iv)?;
            let mut ct = sealed[iv_len..].to_vec();
            let plain_len = key
                .open_in_place(nonce, Aad::from(&msg[..iv_at]), &mut ct)
                .map_err(|_| CryptoError::Integrity)?
                .len();
            ct.truncate(plain_len);
            ct
        } else {
            let integ = self
                .integ
                .ok_or(CryptoError::Internal("CBC without integrity"))?;
            let split = msg.len() - icv_len;
            let icv = hmac::sign(
                &hmac::Key::new(integ.hmac(), &self.integ_key),
                &msg[..split],
            );
            if aws_lc_rs::constant_time::verify_slices_are_equal(
                &icv.as_ref()[..icv_len],
                &msg[split..],
            )
            .is_err()
            {
                return Err(CryptoError::Integrity);
            }
            let mut ct = sealed[iv_len..sealed.len() - icv_len].to_vec();
            if ct.len() % AES_BLOCK != 0 {
                return Err(CryptoError::BadLength(sealed.len()));
            }
            let mut iv16 = [0u8; CBC_IV_LEN];
            iv16.copy_from_slice(iv);
            let key = DecryptingKey::cbc(cbc_key(bits, &self.encr_key)?)
                .map_err(|_| CryptoError::Internal("AES-CBC key"))?;
            let n = key
                .decrypt(&mut ct, DecryptionContext::Iv128(FixedLength::from(iv16)))
                .map_err(|_| CryptoError::Integrity)?
                .len();
            ct.truncate(n);
            ct
        };
        let pad = usize::from(*body.last().ok_or(CryptoError::BadPadding)?);
        if pad + 1 > body.len() {
            return Err(CryptoError::BadPadding);
        }
        body.truncate(body.len() - pad - 1);
        Ok(body)
    }
}

fn gcm_key(bits: u16, keymat: &[u8]) -> Result<LessSafeKey, CryptoError> {
    let alg = if bits == 256 {
        &aead::AES_256_GCM
    } else {
        &aead::AES_128_GCM
    };
    let key = UnboundKey::new(alg, &keymat[..keymat.len() - 4])
        .map_err(|_| CryptoError::Internal("AES-GCM key"))?;
    Ok(LessSafeKey::new(key))
}

/// salt (the last 4 bytes of the key material) || the 8-byte explicit IV.
fn gcm_nonce(keymat: &[u8], iv: &[u8]) -> Result<Nonce, CryptoError> {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(&keymat[keymat.len() - 4..]);
    n[4..].copy_from_slice(iv);
    Ok(Nonce::assume_unique_for_key(n))
}

fn cbc_key(bits: u16, key: &[u8]) -> Result<UnboundCipherKey, CryptoError> {
    let alg = if bits == 256 { &AES_256 } else { &AES_128 };
    UnboundCipherKey::new(alg, key).map_err(|_| CryptoError::Internal("AES key"))
}
