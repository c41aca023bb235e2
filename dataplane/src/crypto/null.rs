//! The null cipher: leaves the payload as it is and writes an all-zero tag.
//! It exists so a benchmark can run the data plane's whole pipeline without
//! the cipher and so measure the I/O ceiling; see [`super::Backend::NullBenchmarkOnly`].

use super::{Aead, Backend, CryptoError, NONCE_LEN, TAG_LEN};

#[derive(Debug)]
pub(crate) struct NullCipher {
    key_len: usize,
}

impl NullCipher {
    pub(crate) fn new(key: &[u8]) -> NullCipher {
        NullCipher { key_len: key.len() }
    }
}

impl Aead for NullCipher {
    fn seal_in_place(
        &self,
        _nonce: &[u8; NONCE_LEN],
        _aad: &[u8],
        _in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        Ok([0; TAG_LEN])
    }

    fn open_in_place(
        &self,
        _nonce: &[u8; NONCE_LEN],
        _aad: &[u8],
        _in_out: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CryptoError> {
        // Still refuses what a real peer sealed, so a mixed setup fails
        // loudly instead of forwarding ciphertext.
        if tag == &[0; TAG_LEN] {
            Ok(())
        } else {
            Err(CryptoError::AuthenticationFailed)
        }
    }

    fn backend(&self) -> Backend {
        Backend::NullBenchmarkOnly
    }

    fn key_len(&self) -> usize {
        self.key_len
    }
}
