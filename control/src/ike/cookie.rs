//! Stateless cookies (RFC 7296 section 2.6):
//! `Cookie = <secret version> | HMAC-SHA256(secret, Ni | IPi | SPIi)[..16]`.
//! Two secrets are valid at a time so a rotation does not break an
//! exchange in flight.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use aws_lc_rs::{constant_time, hmac};

use crate::crypto::Random;

const COOKIE_MAC_LEN: usize = 16;

#[derive(Debug, Default)]
pub(crate) struct CookieJar {
    /// (version, key); the current one last.
    secrets: Vec<(u8, hmac::Key)>,
    rotated_at: Option<Instant>,
    version: u8,
}

impl CookieJar {
    /// Makes a new secret when none exists or the current one is older than
    /// `lifetime`, keeping the previous one.
    pub(crate) fn rotate(&mut self, now: Instant, lifetime: Duration, rng: &mut dyn Random) {
        let due = match self.rotated_at {
            None => true,
            Some(t) => now.saturating_duration_since(t) >= lifetime,
        };
        if !due {
            return;
        }
        let mut secret = zeroize::Zeroizing::new([0u8; 32]);
        if rng.fill(&mut secret[..]).is_err() {
            return;
        }
        self.version = self.version.wrapping_add(1);
        self.secrets
            .push((self.version, hmac::Key::new(hmac::HMAC_SHA256, &secret[..])));
        if self.secrets.len() > 2 {
            self.secrets.remove(0);
        }
        self.rotated_at = Some(now);
    }

    fn mac(key: &hmac::Key, nonce_i: &[u8], ip: IpAddr, spi_i: u64) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(key);
        ctx.update(nonce_i);
        match ip {
            IpAddr::V4(a) => ctx.update(&a.octets()),
            IpAddr::V6(a) => ctx.update(&a.octets()),
        }
        ctx.update(&spi_i.to_be_bytes());
        ctx.sign()
    }

    /// The cookie for this initiator under the current secret.
    pub(crate) fn make(&self, nonce_i: &[u8], ip: IpAddr, spi_i: u64) -> Option<Vec<u8>> {
        let (version, key) = self.secrets.last()?;
        let mut c = vec![*version];
        c.extend_from_slice(&Self::mac(key, nonce_i, ip, spi_i).as_ref()[..COOKIE_MAC_LEN]);
        Some(c)
    }

    /// Whether `cookie` was made by [`CookieJar::make`] under a live secret.
    pub(crate) fn check(&self, cookie: &[u8], nonce_i: &[u8], ip: IpAddr, spi_i: u64) -> bool {
        let Some((&version, mac)) = cookie.split_first() else {
            return false;
        };
        self.secrets.iter().any(|(v, key)| {
            *v == version
                && constant_time::verify_slices_are_equal(
                    &Self::mac(key, nonce_i, ip, spi_i).as_ref()[..COOKIE_MAC_LEN],
                    mac,
                )
                .is_ok()
        })
    }
}
