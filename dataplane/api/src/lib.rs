//! The SA API of xdpsec and its static-SA configuration file.
//!
//! The data plane serves the SA API on a Unix stream socket (mode 0600);
//! the IKE daemon and the CLI are its clients. This crate holds what both
//! sides share and nothing that needs aya or AF_XDP:
//!
//! - [`sa`], [`policy`], [`prefix`]: what an SA and a policy are, validated.
//! - [`messages`]: requests, responses and events of the wire protocol.
//! - [`framing`]: newline-delimited JSON with bounded lines, and
//!   [`serve_connection`] for the server side of one connection.
//! - [`client`]: the blocking [`ApiClient`].
//! - [`config`]: the TOML file `xdpsec dataplane --config FILE` reads.
//! - [`notify`]: readiness and watchdog messages to systemd, for both
//!   daemons.
//!
//! Wire protocol (version [`PROTOCOL_VERSION`]): one JSON object per line,
//! UTF-8, `\n`-terminated. Client lines are [`ClientMessage`]s
//! `{"id":N,"request":{"op":...}}`; the first must be `hello` with the
//! client's version, answered by `hello` with the server's (a mismatch is
//! answered `version_mismatch` and the server closes). Server lines are
//! [`ServerMessage`]s: `{"kind":"reply","id":N,"response":{"status":...}}`
//! for each request in order, and after `subscribe_events` also
//! `{"kind":"event","event":{"type":...}}`. Request lines over 1 MiB are
//! answered `line_too_long` and skipped; unparsable ones `bad_request`.
//! Keys travel as hex (`key || salt`) and are never printed by Debug.
#![deny(unsafe_code)]

pub mod client;
pub mod config;
pub mod framing;
mod hex;
pub mod messages;
pub mod notify;
pub mod policy;
pub mod prefix;
pub mod sa;

pub use client::{ApiClient, ApiError};
pub use config::{sample_config, ConfigError, StaticConfig};
pub use framing::{
    bind_api_socket, bind_api_socket_for_group, serve_connection, serve_connection_with,
    write_message, Handler, Line, LineReader, ServeOptions,
};
pub use messages::{
    ClientMessage, DropReason, ErrorCode, Event, LifetimeKind, Request, Response, SaInfo,
    ServerMessage, WorkerStats, PROTOCOL_VERSION,
};
pub use policy::{Policy, PolicyAction, PolicyKey};
pub use prefix::Prefix;
pub use sa::{Direction, GcmKey, Lifetimes, SaSpec, SaUpdate, TrafficSelector, UdpEncap};
