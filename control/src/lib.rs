//! The xdpsec control plane: IKEv2 (RFC 7296). The sans-IO state machine, its
//! wire format and the daemon arrive with the IKEv2 issue; this crate holds
//! the place in the workspace and must never depend on aya or AF_XDP.
#![deny(unsafe_code)]
