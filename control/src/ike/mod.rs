//! The sans-IO IKEv2 state machine (RFC 7296), in the style of quinn-proto.
//!
//! One [`Endpoint`] holds every IKE SA of the process. It never touches a
//! socket or the clock: the daemon feeds it
//!
//! - datagrams: [`Endpoint::handle_datagram`]`(now, local, remote, bytes)`
//!   where `bytes` is the IKE message *without* the 4-byte non-ESP marker
//!   of port 4500 (the daemon strips it, and drops ESP-in-UDP, which the
//!   data plane handles);
//! - the time: [`Endpoint::handle_timeout`]`(now)` once
//!   [`Endpoint::poll_timeout`] is reached (it may be called early or
//!   late; it does whatever is due);
//! - commands: [`Endpoint::initiate`], [`Endpoint::terminate`],
//!   [`Endpoint::rekey_child`], [`Endpoint::rekey_ike`],
//!   [`Endpoint::handle_lifetime_event`] (soft/hard lifetimes the data plane
//!   reports);
//!
//! and after each call drains
//!
//! - [`Endpoint::poll_transmit`] -> [`Transmit`]: send `payload` from
//!   `local` to `remote`; when [`Transmit::non_esp_marker`] is set, prepend
//!   four zero bytes (messages on port 4500); NAT keepalives (one 0xFF byte)
//!   go out without it;
//! - [`Endpoint::poll_event`] -> [`Event`]: what to do on the data plane
//!   (install/delete SAs and policies, in the order given: a new inbound SA
//!   comes before the new outbound one, and old SAs are deleted only after
//!   their replacement is installed) and what to log or report (IKE and
//!   Child SA up/down with a reason);
//! - [`Endpoint::poll_timeout`]: the next instant to call `handle_timeout`.
//!
//! [`Endpoint::list_sas`] gives snapshots of every IKE and Child SA for
//! `xdpsec sa list`. Connections come from the TOML config through
//! [`Connection`] (resolved: proposals parsed, identities and secrets
//! loaded). Randomness comes from an injected [`crate::crypto::Random`].

mod auth;
mod child;
mod connection;
mod cookie;
mod create_child;
mod endpoint;
mod event;
mod exchange;
mod fragment;
mod informational;
mod proposal;
mod sa;
pub mod ts;
mod virtual_ip;

pub use crate::config::{DpdAction, StartAction};
pub use connection::{
    ChildConfig, Connection, Identity, LocalAuth, LocalMethod, RemoteAuth, RemoteMethod,
};
pub use endpoint::{CommandError, Endpoint, Settings, Transmit};
pub use event::{
    ChildSaSnapshot, ChildSaState, Event, IkeSaSnapshot, IkeSaState, LifetimeSeverity, Reason,
};
pub use proposal::{ChildAlgorithms, EspProposal, IkeAlgorithms, IkeProposal};

/// Identifies an IKE SA in this endpoint for its whole life, rekeys
/// included (an IKE rekey moves the id to the new SPIs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IkeSaId(pub u64);

impl std::fmt::Display for IkeSaId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ike#{}", self.0)
    }
}

/// Identifies a Child SA (one pair of ESP SAs). A rekeyed Child SA gets a
/// new id; the event that installs it names the one it replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChildSaId(pub u64);

impl std::fmt::Display for ChildSaId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "child#{}", self.0)
    }
}

/// What to [`Endpoint::terminate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every IKE SA of the connection with this name.
    Connection(String),
    /// One IKE SA (with its Child SAs).
    IkeSa(IkeSaId),
    /// One Child SA (the IKE SA stays).
    ChildSa(ChildSaId),
}
