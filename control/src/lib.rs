//! The xdpsec control plane: IKEv2 (RFC 7296).
//!
//! - [`wire`]: the IKEv2 wire format (RFC 7296 section 3) as sans-IO
//!   parse/emit representations that never panic on any input.
//! - [`crypto`]: PRFs, key derivation, Diffie-Hellman, SK payload
//!   protection and PSK authentication.
//! - [`cert`]: X.509 certificate authentication for IKE_AUTH (RFC 7427
//!   signatures, chain and identity checks, CERTREQ).
//! - [`config`]: the daemon's TOML configuration in strongSwan's swanctl
//!   vocabulary (connections, children, proposals, secrets, pools).
//! - [`ike`]: the sans-IO IKEv2 state machine ([`ike::Endpoint`], quinn-proto
//!   style: `handle_datagram`/`handle_timeout` in, `poll_transmit`/
//!   `poll_timeout`/`poll_event` out); it never reads the clock or a socket.
//! - [`pool`]: virtual IP pools, leased per client identity; [`vip`]:
//!   a remote-access client's CFG_REQUEST answered from them, and the
//!   client's side of that exchange.
//! - [`daemon`]: `xdpsec ike`, the I/O around the state machine (UDP 500 and
//!   4500, timers, the SA API client, the state file); [`ctl`]: the
//!   control-socket protocol the CLI speaks to it.
//!
//! This crate never depends on aya or AF_XDP: the SA API types come from
//! `xdpsec-api`.
#![deny(unsafe_code)]

pub mod cert;
pub mod config;
pub mod crypto;
pub mod ctl;
pub mod daemon;
pub mod ike;
pub mod pool;
pub mod vip;
pub mod wire;
