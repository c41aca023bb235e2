//! Key derivation: SKEYSEED and the seven SK_* keys of an IKE SA (RFC 7296
//! sections 2.14 and 2.18) and the KEYMAT of a Child SA (section 2.17).

use zeroize::Zeroizing;

use super::{CryptoError, EncrAlg, IntegAlg, PrfAlg};

/// The keys of one IKE SA. Debug prints the algorithms, never the keys.
pub struct IkeKeys {
    /// The negotiated PRF.
    pub prf: PrfAlg,
    /// SK_d: the seed of Child SA keys and of the next IKE SA's SKEYSEED.
    pub sk_d: Zeroizing<Vec<u8>>,
    /// SK_ai: integrity key of the initiator's messages (empty with AEAD).
    pub sk_ai: Zeroizing<Vec<u8>>,
    /// SK_ar: integrity key of the responder's messages.
    pub sk_ar: Zeroizing<Vec<u8>>,
    /// SK_ei: encryption key (plus salt for GCM) of the initiator's messages.
    pub sk_ei: Zeroizing<Vec<u8>>,
    /// SK_er: encryption key (plus salt) of the responder's messages.
    pub sk_er: Zeroizing<Vec<u8>>,
    /// SK_pi: the initiator's key for the AUTH payload.
    pub sk_pi: Zeroizing<Vec<u8>>,
    /// SK_pr: the responder's key for the AUTH payload.
    pub sk_pr: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for IkeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IkeKeys({:?}, <redacted>)", self.prf)
    }
}

impl IkeKeys {
    /// Derives the keys of a new IKE SA from the DH shared secret.
    ///
    /// `old_sk_d` is the SK_d of the IKE SA being rekeyed (section 2.18:
    /// SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr)), or `None` for
    /// IKE_SA_INIT (SKEYSEED = prf(Ni | Nr, g^ir)). Every PRF here is an
    /// HMAC, which takes the nonces whole as its key.
    #[allow(clippy::too_many_arguments)]
    pub fn derive(
        prf: PrfAlg,
        encr: EncrAlg,
        integ: Option<IntegAlg>,
        shared_secret: &[u8],
        nonce_i: &[u8],
        nonce_r: &[u8],
        spi_i: u64,
        spi_r: u64,
        old_sk_d: Option<(PrfAlg, &[u8])>,
    ) -> Result<Self, CryptoError> {
        let skeyseed = match old_sk_d {
            None => {
                let mut key = Zeroizing::new(Vec::with_capacity(nonce_i.len() + nonce_r.len()));
                key.extend_from_slice(nonce_i);
                key.extend_from_slice(nonce_r);
                prf.prf(&key, &[shared_secret])
            }
            Some((old_prf, sk_d)) => old_prf.prf(sk_d, &[shared_secret, nonce_i, nonce_r]),
        };
        let prf_len = prf.output_len();
        let integ_len = integ.map_or(0, IntegAlg::key_len);
        let encr_len = encr.keymat_len();
        let total = prf_len * 3 + integ_len * 2 + encr_len * 2;
        let km = prf
            .prf_plus(
                &skeyseed,
                &[nonce_i, nonce_r, &spi_i.to_be_bytes(), &spi_r.to_be_bytes()],
                total,
            )
            .ok_or(CryptoError::Internal(
                "prf+ asked for too much key material",
            ))?;
        let mut at = 0;
        let mut take = |n: usize| {
            let k = Zeroizing::new(km[at..at + n].to_vec());
            at += n;
            k
        };
        Ok(IkeKeys {
            prf,
            sk_d: take(prf_len),
            sk_ai: take(integ_len),
            sk_ar: take(integ_len),
            sk_ei: take(encr_len),
            sk_er: take(encr_len),
            sk_pi: take(prf_len),
            sk_pr: take(prf_len),
        })
    }
}

/// The keys of one Child SA, per direction as seen from the IKE initiator.
pub struct ChildKeys {
    /// Encryption key (plus 4-byte salt for GCM) of initiator-to-responder traffic.
    pub encr_i: Zeroizing<Vec<u8>>,
    /// Integrity key of initiator-to-responder traffic (empty with AEAD).
    pub integ_i: Zeroizing<Vec<u8>>,
    /// Encryption key (plus salt) of responder-to-initiator traffic.
    pub encr_r: Zeroizing<Vec<u8>>,
    /// Integrity key of responder-to-initiator traffic.
    pub integ_r: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for ChildKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChildKeys(<redacted>)")
    }
}

/// KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr), taken in the order
/// initiator-to-responder encryption, integrity, then the other direction
/// (section 2.17).
pub fn child_keymat(
    prf: PrfAlg,
    sk_d: &[u8],
    pfs_secret: Option<&[u8]>,
    nonce_i: &[u8],
    nonce_r: &[u8],
    encr: EncrAlg,
    integ: Option<IntegAlg>,
) -> Result<ChildKeys, CryptoError> {
    let e = encr.keymat_len();
    let a = integ.map_or(0, IntegAlg::key_len);
    let km = prf
        .prf_plus(
            sk_d,
            &[pfs_secret.unwrap_or_default(), nonce_i, nonce_r],
            2 * (e + a),
        )
        .ok_or(CryptoError::Internal(
            "prf+ asked for too much key material",
        ))?;
    let part = |from: usize, n: usize| Zeroizing::new(km[from..from + n].to_vec());
    Ok(ChildKeys {
        encr_i: part(0, e),
        integ_i: part(e, a),
        encr_r: part(e + a, e),
        integ_r: part(2 * e + a, a),
    })
}
