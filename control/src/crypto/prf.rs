//! The PRF and prf+ (RFC 7296 section 2.13).

use aws_lc_rs::hmac;
use zeroize::Zeroizing;

use super::PrfAlg;

impl PrfAlg {
    /// `prf(key, data[0] | data[1] | ...)`.
    pub fn prf(self, key: &[u8], data: &[&[u8]]) -> Zeroizing<Vec<u8>> {
        let key = hmac::Key::new(self.hmac(), key);
        let mut ctx = hmac::Context::with_key(&key);
        for d in data {
            ctx.update(d);
        }
        Zeroizing::new(ctx.sign().as_ref().to_vec())
    }

    /// prf+(key, seed) truncated to `len` bytes:
    /// T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n).
    ///
    /// The counter is one octet, so at most 255 blocks exist; asking for
    /// more is a bug in the caller and yields `None`.
    pub fn prf_plus(self, key: &[u8], seed: &[&[u8]], len: usize) -> Option<Zeroizing<Vec<u8>>> {
        if len > 255 * self.output_len() {
            return None;
        }
        let key = hmac::Key::new(self.hmac(), key);
        let mut out = Zeroizing::new(Vec::with_capacity(len + self.output_len()));
        let mut prev: Option<hmac::Tag> = None;
        let mut n: u8 = 1;
        while out.len() < len {
            let mut ctx = hmac::Context::with_key(&key);
            if let Some(t) = &prev {
                ctx.update(t.as_ref());
            }
            for s in seed {
                ctx.update(s);
            }
            ctx.update(&[n]);
            let t = ctx.sign();
            out.extend_from_slice(t.as_ref());
            prev = Some(t);
            n = n.wrapping_add(1);
        }
        out.truncate(len);
        Some(out)
    }
}
