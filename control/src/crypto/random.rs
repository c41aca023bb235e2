//! Injected randomness: the state machine never reaches for a global RNG,
//! so tests can replay an exchange bit for bit from a seed.

use aws_lc_rs::hmac;

use super::CryptoError;

/// A source of cryptographically strong random bytes.
pub trait Random: Send + std::fmt::Debug {
    /// Fills `out` with random bytes.
    fn fill(&mut self, out: &mut [u8]) -> Result<(), CryptoError>;
}

/// The operating system's generator (through aws-lc-rs): what the daemon
/// uses.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRandom;

impl Random for SystemRandom {
    fn fill(&mut self, out: &mut [u8]) -> Result<(), CryptoError> {
        aws_lc_rs::rand::fill(out).map_err(|_| CryptoError::Random)
    }
}

/// A deterministic generator for tests: HMAC-SHA256 of the seed over a
/// block counter. Not for production: anyone who knows the seed knows every
/// key.
#[derive(Debug)]
pub struct SeededRandom {
    key: hmac::Key,
    counter: u64,
}

impl SeededRandom {
    /// A generator whose whole output follows from `seed`.
    pub fn new(seed: u64) -> Self {
        SeededRandom {
            key: hmac::Key::new(hmac::HMAC_SHA256, &seed.to_be_bytes()),
            counter: 0,
        }
    }
}

impl Random for SeededRandom {
    fn fill(&mut self, out: &mut [u8]) -> Result<(), CryptoError> {
        for chunk in out.chunks_mut(32) {
            let block = hmac::sign(&self.key, &self.counter.to_be_bytes());
            self.counter += 1;
            chunk.copy_from_slice(&block.as_ref()[..chunk.len()]);
        }
        Ok(())
    }
}
