//! The messages of the SA API, version [`PROTOCOL_VERSION`].
//!
//! Each message is one line of JSON. A client sends
//! [`ClientMessage`]s (`{"id":7,"request":{"op":"list_sas"}}`); the server
//! answers each with a [`ServerMessage::Reply`] carrying the same id
//! (`{"kind":"reply","id":7,"response":{"status":"sas","sas":[...]}}`) and,
//! after `subscribe_events`, also pushes [`ServerMessage::Event`]s
//! (`{"kind":"event","event":{"type":"idle_sa",...}}`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::policy::{Policy, PolicyKey};
use crate::sa::{Direction, Lifetimes, SaSpec, SaUpdate, TrafficSelector, UdpEncap};

/// The protocol version this crate speaks. Bumped on any incompatible
/// change; a `hello` with another version is refused.
pub const PROTOCOL_VERSION: u32 = 1;

/// One line from client to server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientMessage {
    /// Chosen by the client, echoed in the reply.
    pub id: u64,
    /// What to do.
    pub request: Request,
}

/// A request. The first request on a connection must be [`Request::Hello`].
/// Unknown fields are refused, except on requests that take no field
/// (`list_sas` and the like), where serde ignores them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Handshake: the client's protocol version and software.
    Hello {
        /// Must equal the server's [`PROTOCOL_VERSION`].
        version: u32,
        /// Free text naming the client, for logs.
        #[serde(default)]
        client: String,
    },
    /// Install an SA. Fails with `already_exists` if (spi, direction) is taken.
    AddSa {
        /// The SA.
        sa: SaSpec,
    },
    /// Change lifetimes, peer address or encapsulation of an SA.
    UpdateSa {
        /// The change.
        update: SaUpdate,
    },
    /// Remove an SA.
    DeleteSa {
        /// Its SPI.
        spi: u32,
        /// Its direction.
        direction: Direction,
    },
    /// Install a policy.
    AddPolicy {
        /// The policy.
        policy: Policy,
    },
    /// Install a policy, or replace the one with the same selector and
    /// direction in one step (a rekey moves traffic to the new SA without
    /// a moment with no policy).
    ReplacePolicy {
        /// The policy.
        policy: Policy,
    },
    /// Remove the policy with this selector and direction.
    DeletePolicy {
        /// Which policy.
        policy: PolicyKey,
    },
    /// List SAs with their counters (never their keys).
    ListSas,
    /// List policies.
    ListPolicies,
    /// Per-worker statistics.
    WorkerStats,
    /// From now on, push [`Event`]s on this connection.
    SubscribeEvents,
}

impl Request {
    /// The `op` name on the wire, for logs.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Hello { .. } => "hello",
            Request::AddSa { .. } => "add_sa",
            Request::UpdateSa { .. } => "update_sa",
            Request::DeleteSa { .. } => "delete_sa",
            Request::AddPolicy { .. } => "add_policy",
            Request::ReplacePolicy { .. } => "replace_policy",
            Request::DeletePolicy { .. } => "delete_policy",
            Request::ListSas => "list_sas",
            Request::ListPolicies => "list_policies",
            Request::WorkerStats => "worker_stats",
            Request::SubscribeEvents => "subscribe_events",
        }
    }
}

/// A response to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    /// Answer to `hello`: the server's version and software.
    Hello {
        /// The server's [`PROTOCOL_VERSION`].
        version: u32,
        /// Free text naming the server.
        server: String,
    },
    /// Done, nothing to return.
    Ok,
    /// Answer to `list_sas`.
    Sas {
        /// The SAs.
        sas: Vec<SaInfo>,
    },
    /// Answer to `list_policies`.
    Policies {
        /// The policies.
        policies: Vec<Policy>,
    },
    /// Answer to `worker_stats`.
    WorkerStats {
        /// One entry per worker.
        workers: Vec<WorkerStats>,
    },
    /// Answer to `subscribe_events`: events follow on this connection.
    Subscribed,
    /// The request failed.
    Error {
        /// Machine-readable class.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
    },
}

impl Response {
    /// An error response.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Response::Error {
            code,
            message: message.into(),
        }
    }

    /// The `status` name on the wire, for messages.
    pub fn status(&self) -> &'static str {
        match self {
            Response::Hello { .. } => "hello",
            Response::Ok => "ok",
            Response::Sas { .. } => "sas",
            Response::Policies { .. } => "policies",
            Response::WorkerStats { .. } => "worker_stats",
            Response::Subscribed => "subscribed",
            Response::Error { .. } => "error",
        }
    }
}

/// Classes of errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The line was not a valid request (bad JSON, unknown op or field).
    BadRequest,
    /// The line exceeded the server's limit; it was skipped.
    LineTooLong,
    /// `hello` carried another protocol version; the server closes.
    VersionMismatch,
    /// A request came before `hello`.
    HandshakeRequired,
    /// A field failed validation (the message names it).
    InvalidArgument,
    /// No such SA or policy.
    NotFound,
    /// The SA or policy exists already.
    AlreadyExists,
    /// The server does not offer this.
    Unsupported,
    /// The server failed.
    Internal,
}

impl ErrorCode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::LineTooLong => "line_too_long",
            ErrorCode::VersionMismatch => "version_mismatch",
            ErrorCode::HandshakeRequired => "handshake_required",
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line from server to client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ServerMessage {
    /// The answer to the request with this id; `null` when the request line
    /// could not be read far enough to find its id.
    Reply {
        /// The request's id.
        id: Option<u64>,
        /// The answer.
        response: Response,
    },
    /// A pushed event (only after `subscribe_events`).
    Event {
        /// The event.
        event: Event,
    },
}

/// Which volume limit an SA reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifetimeKind {
    /// The byte limit.
    Bytes,
    /// The packet limit.
    Packets,
}

/// Something the data plane tells subscribed clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Event {
    /// A soft limit was reached: time to rekey.
    SoftLifetimeExpired {
        /// The SA's SPI.
        spi: u32,
        /// Its direction.
        direction: Direction,
        /// Which limit.
        reason: LifetimeKind,
    },
    /// A hard limit was reached: the SA no longer carries traffic.
    HardLifetimeExpired {
        /// The SA's SPI.
        spi: u32,
        /// Its direction.
        direction: Direction,
        /// Which limit.
        reason: LifetimeKind,
    },
    /// The SA carried no packet for `idle_ms` milliseconds.
    IdleSa {
        /// The SA's SPI.
        spi: u32,
        /// Its direction.
        direction: Direction,
        /// How long it has been idle.
        idle_ms: u64,
    },
}

/// Why the data plane dropped a packet; the names are the keys of
/// [`SaCounters::drops`]. They are the data plane's own reason names
/// (`EspError::as_str` and friends), which has finer ones besides these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// Sequence number replayed or left of the window.
    Replay,
    /// ICV check failed.
    AuthFailed,
    /// Decrypted packet outside the SA's traffic selectors.
    SelectorMismatch,
    /// Truncated or malformed ESP or inner packet.
    Malformed,
    /// No route to the next hop.
    NoRoute,
    /// Next hop's MAC not (yet) resolved.
    NoNeighbour,
    /// Outbound sequence numbers used up.
    SeqExhausted,
    /// Hard lifetime reached.
    HardLifetime,
    /// Encapsulated packet would exceed the MTU.
    TooBig,
    /// TX ring full.
    TxRingFull,
}

impl DropReason {
    /// Every reason, in wire-name order of declaration.
    pub const ALL: [DropReason; 10] = [
        DropReason::Replay,
        DropReason::AuthFailed,
        DropReason::SelectorMismatch,
        DropReason::Malformed,
        DropReason::NoRoute,
        DropReason::NoNeighbour,
        DropReason::SeqExhausted,
        DropReason::HardLifetime,
        DropReason::TooBig,
        DropReason::TxRingFull,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Replay => "replayed",
            DropReason::AuthFailed => "authentication_failed",
            DropReason::SelectorMismatch => "policy_mismatch",
            DropReason::Malformed => "malformed_inner",
            DropReason::NoRoute => "no_route",
            DropReason::NoNeighbour => "no_neighbour",
            DropReason::SeqExhausted => "sequence_exhausted",
            DropReason::HardLifetime => "lifetime_expired",
            DropReason::TooBig => "too_big",
            DropReason::TxRingFull => "tx_ring_full",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Traffic counters of one SA, summed over workers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaCounters {
    /// Packets carried.
    pub packets: u64,
    /// Bytes carried (inner packet bytes).
    pub bytes: u64,
    /// Drops by [`DropReason`] name; reasons with no drop may be absent.
    /// String keys so that a newer server's reasons do not break an older
    /// client.
    #[serde(default)]
    pub drops: BTreeMap<String, u64>,
}

impl SaCounters {
    /// Drops counted for `reason`.
    pub fn drops_for(&self, reason: DropReason) -> u64 {
        self.drops.get(reason.as_str()).copied().unwrap_or(0)
    }

    /// Adds `n` drops for `reason`.
    pub fn add_drops(&mut self, reason: DropReason, n: u64) {
        let c = self.drops.entry(reason.as_str().to_owned()).or_insert(0);
        *c = c.saturating_add(n);
    }
}

/// An SA as `list_sas` shows it: its parameters without the key, and its
/// counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaInfo {
    /// SPI.
    pub spi: u32,
    /// Direction.
    pub direction: Direction,
    /// `aes-gcm-128` or `aes-gcm-256`.
    pub cipher: String,
    /// Extended sequence numbers.
    pub esn: bool,
    /// Anti-replay window.
    pub replay_window: u32,
    /// Our tunnel address.
    pub tunnel_local: IpAddr,
    /// The peer's tunnel address.
    pub tunnel_remote: IpAddr,
    /// UDP encapsulation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encap: Option<UdpEncap>,
    /// Traffic selectors.
    pub selectors: Vec<TrafficSelector>,
    /// Volume lifetimes.
    #[serde(default)]
    pub lifetime: Lifetimes,
    /// Last sequence number sent (out) or highest accepted (in).
    pub seq: u64,
    /// Counters.
    pub counters: SaCounters,
    /// Milliseconds since the SA was installed.
    pub age_ms: u64,
    /// Milliseconds since the last packet; absent if none yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_ms: Option<u64>,
    /// Outbound SAs: what fits the tunnel, once a packet has gone out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<SaMtu>,
    /// The worker of an RFC 9611 per-resource SA (see [`SaSpec::resource`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<u32>,
}

/// The MTUs of an outbound SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaMtu {
    /// The largest inner packet that fits after ESP's worst-case overhead.
    pub inner_mtu: u32,
    /// The MTU of the outer interface (or its route) towards the peer.
    pub link_mtu: u32,
    /// A smaller path MTU learned from an ICMP "too big", while it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_mtu: Option<u32>,
    /// Milliseconds until the learned path MTU expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_mtu_expires_ms: Option<u64>,
    /// ICMP "too big" messages about this SA's packets that lowered (or
    /// confirmed) its path MTU.
    #[serde(default)]
    pub path_mtu_updates: u64,
}

impl SaInfo {
    /// The description of a freshly installed SA: zero counters, age 0.
    pub fn from_spec(sa: &SaSpec) -> Self {
        SaInfo {
            spi: sa.spi,
            direction: sa.direction,
            cipher: sa.key.cipher_name().to_owned(),
            esn: sa.esn,
            replay_window: sa.replay_window,
            tunnel_local: sa.tunnel_local,
            tunnel_remote: sa.tunnel_remote,
            encap: sa.encap,
            selectors: sa.selectors.clone(),
            lifetime: sa.lifetime,
            seq: sa.initial_seq.map_or(0, |s| s.saturating_sub(1)),
            counters: SaCounters::default(),
            age_ms: 0,
            last_used_ms: None,
            mtu: None,
            resource: sa.resource,
        }
    }
}

/// One bucket of the batch-size histogram: batches of at most `le` packets
/// (and more than the previous bucket's `le`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistogramBucket {
    /// Upper bound (inclusive).
    pub le: u32,
    /// Batches in this bucket.
    pub count: u64,
}

/// Per-packet processing time percentiles, in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyPercentiles {
    /// Packets measured; the percentiles are 0 when this is 0.
    pub samples: u64,
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
}

/// Statistics of one worker thread.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerStats {
    /// Worker index.
    pub worker: u32,
    /// CPU it is pinned to, if pinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<u32>,
    /// Packets received from its RX rings.
    pub rx_packets: u64,
    /// Packets put on its TX rings.
    pub tx_packets: u64,
    /// Batches processed (non-empty RX drains).
    pub batches: u64,
    /// Batch sizes, ascending `le`.
    pub batch_sizes: Vec<HistogramBucket>,
    /// Per-packet processing time.
    pub packet_ns: LatencyPercentiles,
    /// Times the worker woke from poll() or kicked the kernel.
    pub wakeups: u64,
    /// Frames the worker dropped, by reason name (those that belong to an
    /// SA are also in its counters); reasons with none are absent.
    #[serde(default)]
    pub drops: BTreeMap<String, u64>,
    /// What else happened, by name (ICMP errors sent, outer fragments sent
    /// and reassembled, path MTUs learned); absent when zero.
    #[serde(default)]
    pub events: BTreeMap<String, u64>,
    /// The receive queues it serves, as `interface:queue`.
    #[serde(default)]
    pub queues: Vec<String>,
    /// Whether its thread is running (a dead worker stops the data plane).
    #[serde(default = "running")]
    pub running: bool,
    /// Why it died, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
    /// The NUMA node of its CPU, where its UMEMs were allocated (absent:
    /// not pinned, or a kernel without NUMA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa_node: Option<u32>,
    /// Its AF_XDP sockets, one per queue, as they were bound.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sockets: Vec<SocketInfo>,
}

/// One AF_XDP socket of a worker, as bound: what the kernel gave, not only
/// what the config asked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketInfo {
    /// `interface:queue`.
    pub queue: String,
    /// The mode the kernel bound it in: `zerocopy` or `copy`.
    pub bind: String,
    /// What the kernel said when `xdp_bind = "auto"` asked for zero-copy
    /// and fell back to copy mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zero_copy_refused: Option<String>,
    /// Bound with `XDP_USE_NEED_WAKEUP`.
    pub need_wakeup: bool,
    /// RX ring entries.
    pub rx_ring: u32,
    /// TX ring entries.
    pub tx_ring: u32,
    /// Fill ring entries.
    pub fill_ring: u32,
    /// Completion ring entries.
    pub completion_ring: u32,
    /// Which of the worker's UMEMs it uses (sockets with the same number
    /// share frames: a zero-copy interface has a UMEM of its own, the
    /// copy-mode ones share one).
    #[serde(default)]
    pub umem: u32,
    /// Frames of its UMEM.
    pub umem_frames: u32,
    /// Bytes per frame.
    pub frame_size: u32,
    /// The NUMA node its UMEM's memory is on, as the kernel reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa_node: Option<u32>,
    /// The NUMA node of the interface's device (`/sys/class/net/IF/device/
    /// numa_node`), when it has one: a worker on another node reaches its
    /// frames across the interconnect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_numa_node: Option<u32>,
    /// Why the UMEM is not bound to the worker's node, if it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa_note: Option<String>,
    /// `SO_BUSY_POLL`, when busy polling is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy_poll_usecs: Option<u32>,
    /// `SO_BUSY_POLL_BUDGET`, when busy polling is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy_poll_budget: Option<u32>,
}

fn running() -> bool {
    true
}
