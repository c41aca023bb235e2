//! The xdpsec data plane: the ESP transform (RFC 4303, tunnel mode, AES-GCM
//! per RFC 4106), security associations, the anti-replay window, the crypto
//! backends and the loader of the XDP steering program.
#![deny(unsafe_code)]

pub mod crypto;
