//! The xdpsec data plane: the ESP transform (RFC 4303, tunnel mode, AES-GCM
//! per RFC 4106), security associations, the anti-replay window, the crypto
//! backends and the loader of the XDP steering program.
#![deny(unsafe_code)]

// AF_XDP sockets: the only module allowed unsafe code (each block has a SAFETY comment).
#[allow(unsafe_code)]
pub mod afxdp;
pub mod crypto;
pub mod esp;
pub mod nexthop;
pub mod replay;
pub mod sa;
pub mod selector;
pub mod steer;
pub mod wire;
