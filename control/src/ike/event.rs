//! What the endpoint tells the daemon: data-plane actions, SA lifecycle
//! reports and snapshots for `xdpsec sa list`.

use std::net::SocketAddr;
use std::time::Duration;

use xdpsec_api::{Direction, Policy, PolicyKey, SaSpec};

use super::{ChildSaId, IkeSaId};

/// Why an SA went down or could not come up. `Display` gives the log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    /// Deleted by a local command.
    #[error("deleted locally")]
    LocalDelete,
    /// The peer sent a Delete.
    #[error("deleted by the peer")]
    PeerDelete,
    /// Replaced by a rekeyed SA.
    #[error("rekeyed")]
    Rekeyed,
    /// The peer did not answer after all retransmissions.
    #[error("peer did not answer after {0} retransmissions")]
    Timeout(u32),
    /// Dead peer detection found the peer gone.
    #[error("dead peer detected")]
    DeadPeer,
    /// No common proposal (we or the peer sent NO_PROPOSAL_CHOSEN).
    #[error("no proposal chosen: {0}")]
    NoProposalChosen(String),
    /// Authentication failed (the peer's AUTH, or ours as the peer saw it).
    #[error("authentication failed: {0}")]
    AuthenticationFailed(String),
    /// The traffic selectors did not fit (TS_UNACCEPTABLE).
    #[error("traffic selectors unacceptable: {0}")]
    TsUnacceptable(String),
    /// The peer answered with another error notify.
    #[error("peer sent error notify {0}")]
    PeerError(u16),
    /// The hard lifetime was reached before a rekey completed.
    #[error("lifetime expired")]
    Expired,
    /// The peer's message broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A local failure (random generator, key derivation).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Soft (rekey now) or hard (the SA is dead) lifetime from the data plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LifetimeSeverity {
    /// Time to rekey.
    Soft,
    /// The SA no longer carries traffic.
    Hard,
}

/// What the daemon must do or report, in order.
///
/// Data-plane actions come in make-before-break order: for a new or
/// rekeyed Child SA, [`Event::InstallSa`] inbound, then
/// [`Event::InstallSa`] outbound, then [`Event::InstallPolicies`] (which
/// replace policies with the same key, pointing them at the new outbound
/// SPI), and only later [`Event::DeleteSa`] for the SAs it replaces.
/// [`Event::DeletePolicies`] comes only when a Child SA goes with no
/// replacement, before its SAs are deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An IKE SA is established (IKE_AUTH done, or an IKE rekey finished).
    IkeSaUp {
        /// Its id.
        ike: IkeSaId,
        /// The connection name.
        connection: String,
        /// Our address and port now (4500 after a NAT float).
        local: SocketAddr,
        /// The peer's.
        remote: SocketAddr,
        /// The peer's authenticated identity, printable.
        peer_id: String,
        /// Algorithms as a strongSwan proposal string.
        algorithms: String,
        /// Whether a NAT was detected (ESP is UDP-encapsulated).
        nat: bool,
        /// True after an IKE rekey (the SA continues under new SPIs).
        rekeyed: bool,
    },
    /// An IKE SA is gone (its Child SAs got their own down events first),
    /// or an attempt to set one up failed.
    IkeSaDown {
        /// Its id.
        ike: IkeSaId,
        /// The connection name.
        connection: String,
        /// Why.
        reason: Reason,
    },
    /// The gateway assigned us virtual IPs (and DNS servers) in IKE_AUTH's
    /// CFG_REPLY: the host puts the addresses on its tunnel interface and
    /// uses the DNS servers while connected.
    VirtualIp {
        /// The IKE SA.
        ike: IkeSaId,
        /// The connection name.
        connection: String,
        /// Our virtual IPs.
        addresses: Vec<std::net::IpAddr>,
        /// DNS servers, possibly none.
        dns: Vec<std::net::IpAddr>,
    },
    /// Install one ESP SA in the data plane (`AddSa`).
    InstallSa {
        /// The IKE SA it belongs to.
        ike: IkeSaId,
        /// The Child SA it belongs to.
        child: ChildSaId,
        /// What to install. Keys inside; never log it with `{:?}` beyond
        /// what `SaSpec`'s redacting Debug shows.
        spec: SaSpec,
    },
    /// Install (or replace, by key) the Child SA's policies (`AddPolicy`,
    /// after `DeletePolicy` of an existing one with the same key).
    InstallPolicies {
        /// The Child SA.
        child: ChildSaId,
        /// The policies, both directions, `protect` with the SPIs just installed.
        policies: Vec<Policy>,
    },
    /// Remove one ESP SA (`DeleteSa`).
    DeleteSa {
        /// The Child SA it belonged to.
        child: ChildSaId,
        /// Its SPI.
        spi: u32,
        /// Its direction.
        direction: Direction,
    },
    /// Remove policies of a Child SA that goes without replacement.
    DeletePolicies {
        /// The Child SA.
        child: ChildSaId,
        /// The policies' keys.
        keys: Vec<PolicyKey>,
    },
    /// Move installed SAs to a new peer address or encapsulation (`UpdateSa`),
    /// after the peer's NAT mapping changed.
    UpdateSa {
        /// The Child SA.
        child: ChildSaId,
        /// The change.
        update: xdpsec_api::SaUpdate,
    },
    /// A Child SA is established (after its InstallSa/InstallPolicies).
    ChildSaUp {
        /// The IKE SA.
        ike: IkeSaId,
        /// The Child SA.
        child: ChildSaId,
        /// The connection name.
        connection: String,
        /// The child's name in the connection.
        name: String,
        /// The Child SA it replaces, when it is a rekey.
        replaces: Option<ChildSaId>,
        /// Inbound SPI.
        spi_in: u32,
        /// Outbound SPI.
        spi_out: u32,
        /// Algorithms as a strongSwan proposal string.
        algorithms: String,
        /// Whether we sent the request that made it: then the peer has
        /// its SAs in before ours. As responder, the peer installs them
        /// only once our answer arrived.
        initiator: bool,
    },
    /// A Child SA is gone (after its DeleteSa events) or could not be set up
    /// (`child` is then `None`).
    ChildSaDown {
        /// The IKE SA.
        ike: IkeSaId,
        /// The Child SA, if it existed.
        child: Option<ChildSaId>,
        /// The connection name.
        connection: String,
        /// The child's name.
        name: String,
        /// Why.
        reason: Reason,
    },
}

/// The state of an IKE SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IkeSaState {
    /// IKE_SA_INIT or IKE_AUTH in progress.
    Connecting,
    /// Authenticated.
    Established,
    /// A rekey of it is in progress.
    Rekeying,
    /// A Delete is in flight.
    Deleting,
}

/// The state of a Child SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildSaState {
    /// Installed and carrying traffic.
    Installed,
    /// A rekey of it is in progress.
    Rekeying,
    /// Rekeyed; kept until the old SAs are deleted.
    Rekeyed,
    /// A Delete is in flight.
    Deleting,
}

/// One Child SA in [`IkeSaSnapshot::children`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSaSnapshot {
    /// Its id.
    pub id: ChildSaId,
    /// The child's name.
    pub name: String,
    /// Its state.
    pub state: ChildSaState,
    /// Inbound SPI (ours).
    pub spi_in: u32,
    /// Outbound SPI (the peer's).
    pub spi_out: u32,
    /// Algorithms, strongSwan notation.
    pub algorithms: String,
    /// Our traffic selectors, printable.
    pub local_ts: Vec<String>,
    /// The peer's traffic selectors, printable.
    pub remote_ts: Vec<String>,
    /// Whether ESP is UDP-encapsulated.
    pub encap: bool,
    /// Time since installation.
    pub age: Duration,
    /// Time until the rekey, if one is scheduled.
    pub rekey_in: Option<Duration>,
    /// RFC 9611: `fallback`, or `worker N` for a per-resource Child SA;
    /// `None` for an ordinary one.
    pub resource: Option<String>,
}

/// One IKE SA in [`super::Endpoint::list_sas`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkeSaSnapshot {
    /// Its id.
    pub id: IkeSaId,
    /// The connection name.
    pub connection: String,
    /// Its state.
    pub state: IkeSaState,
    /// Whether we are the original initiator.
    pub initiator: bool,
    /// Our address.
    pub local: SocketAddr,
    /// The peer's.
    pub remote: SocketAddr,
    /// Initiator SPI.
    pub spi_i: u64,
    /// Responder SPI (0 before the responder answered).
    pub spi_r: u64,
    /// The peer's identity once authenticated.
    pub peer_id: Option<String>,
    /// Algorithms once negotiated, strongSwan notation.
    pub algorithms: Option<String>,
    /// Whether a NAT was detected.
    pub nat: bool,
    /// Time since establishment (or since the first message).
    pub age: Duration,
    /// Time until the IKE rekey, if one is scheduled.
    pub rekey_in: Option<Duration>,
    /// Its Child SAs.
    pub children: Vec<ChildSaSnapshot>,
}
