//! The xdpsec control plane: IKEv2 (RFC 7296).
//!
//! What is here now: [`wire`], the IKEv2 wire format (RFC 7296 section 3) as
//! sans-IO parse/emit representations that never panic on any input: the IKE
//! header, the generic payload chain (skipping unknown non-critical payloads
//! and reporting unknown critical ones), the typed payloads (SA with
//! proposals and transforms, KE, Nonce, Notify, Delete, Vendor ID,
//! Identification, Traffic Selectors) and the protocol's constants.
//!
//! [`cert`] is X.509 certificate authentication for IKE_AUTH (RFC 7427
//! signatures, chain and identity checks, CERTREQ).
//!
//! [`config`] is the daemon's TOML configuration in strongSwan's swanctl
//! vocabulary (connections, children, proposals, secrets, pools).
//!
//! [`pool`] leases virtual IPs per client identity; [`vip`] answers a
//! remote-access client's CFG_REQUEST from them (and builds and reads the
//! client's side of the exchange).
//!
//! What comes next: the sans-IO IKEv2 state machine (quinn-proto style,
//! `handle_datagram`/`handle_timeout`/`poll_*`) on top of this wire format,
//! then the daemon that drives it (UDP 500/4500 sockets, timers, config and
//! the SA API client). This crate never depends on aya or AF_XDP.
#![deny(unsafe_code)]

pub mod cert;
pub mod config;
pub mod pool;
pub mod vip;
pub mod wire;
