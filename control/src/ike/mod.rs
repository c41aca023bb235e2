//! The sans-IO IKEv2 state machine (RFC 7296), in the style of quinn-proto.
//!
//! One [`Endpoint`] holds every IKE SA of the process. It never touches a
//! socket or the clock. Setting one up:
//!
//! ```text
//! let cfg = Arc::new(IkeConfig::load(path)?);
//! let creds = cfg.load_credentials(path)?;
//! let conns = Connection::all_from_config(&cfg, &creds)?;
//! let mut ep = Endpoint::new(Settings::from_daemon(&cfg.daemon), conns, Box::new(SystemRandom));
//! ep.set_wall_clock(Instant::now(), SystemTime::now()); // certificate validity
//! ep.reserve_spis(spis_the_data_plane_holds);           // after a restart
//! ```
//!
//! The daemon feeds it
//!
//! - datagrams: [`Endpoint::handle_datagram`]`(now, local, remote, bytes)`
//!   where `bytes` is the IKE message *without* the 4-byte non-ESP marker
//!   of port 4500 (the daemon strips it, and drops ESP-in-UDP, which the
//!   data plane handles); `local` is the address and port it arrived on;
//! - the time: [`Endpoint::handle_timeout`]`(now)` once
//!   [`Endpoint::poll_timeout`] is reached (early or late calls are fine:
//!   it does whatever is due);
//! - commands: [`Endpoint::initiate`]`(now, name)`,
//!   [`Endpoint::terminate`]`(now, `[`Target`]`)` (a connection, an IKE SA or
//!   a Child SA), [`Endpoint::rekey_child`], [`Endpoint::rekey_ike`],
//!   [`Endpoint::handle_lifetime_event`]`(now, spi, `[`LifetimeSeverity`]`)`
//!   for the data plane's soft/hard lifetime events (soft rekeys, hard
//!   deletes), [`Endpoint::set_connections`] on reload;
//!
//! and after each call drains
//!
//! - [`Endpoint::poll_transmit`] -> [`Transmit`]: send `payload` from
//!   `local` to `remote`; when [`Transmit::non_esp_marker`] is set, prepend
//!   four zero bytes (IKE on port 4500); NAT keepalives (one 0xFF byte)
//!   go out without it;
//! - [`Endpoint::poll_event`] -> [`Event`]: the data-plane actions, in the
//!   order to perform them (`InstallSa` inbound, `InstallSa` outbound,
//!   `InstallPolicies`, later `DeleteSa` of what a rekey replaced;
//!   `DeletePolicies` only when a Child SA goes without replacement;
//!   `UpdateSa` when the peer's NAT mapping moved), and the lifecycle
//!   reports (`IkeSaUp`/`IkeSaDown`, `ChildSaUp`/`ChildSaDown`, each down
//!   with a [`Reason`] whose `Display` is the log line);
//! - [`Endpoint::poll_timeout`]: the next instant to call `handle_timeout`.
//!
//! [`Endpoint::list_sas`]`(now)` gives [`IkeSaSnapshot`]s (with their
//! [`ChildSaSnapshot`]s) for `xdpsec sa list`; [`Endpoint::drops`] counts
//! what was dropped and why. Connections come from the TOML config
//! ([`crate::config`]) through [`Connection::all_from_config`]; a
//! connection whose children have `start_action = "start"`
//! ([`Connection::starts_on_load`]) is the daemon's to initiate on load.
//! Randomness comes from an injected [`crate::crypto::Random`]; a
//! [`crate::crypto::SeededRandom`] makes a whole run reproducible.

mod auth;
mod child;
mod common;
mod connection;
mod cookie;
mod create_child;
mod endpoint;
mod event;
mod exchange;
mod fragment;
mod informational;
mod init;
mod log_limit;
mod per_resource;
mod proposal;
mod sa;
mod ts;
mod virtual_ip;

pub use crate::config::{DpdAction, StartAction};
pub use connection::{
    ChildConfig, Connection, Identity, LocalAuth, LocalMethod, RemoteAuth, RemoteMethod,
};
pub use endpoint::{CommandError, Drops, Endpoint, Settings, Transmit};
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
