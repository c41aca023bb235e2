//! `xdpsec ike --config FILE`: the I/O around the sans-IO IKEv2 state
//! machine.
//!
//! - [`udp`]: the UDP sockets on 500 and 4500 (non-ESP marker, keepalives,
//!   the local address of each datagram).
//! - [`ctl_server`]: the control socket the CLI talks to ([`crate::ctl`]).
//! - [`install`]: Child SAs into and out of the data plane (SA API).
//! - [`state`]: the state file that lets a restarted daemon resume.

pub mod ctl_server;
pub mod install;
pub mod state;
pub mod udp;
