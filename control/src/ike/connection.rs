//! A connection as the state machine uses it: the TOML config (strongSwan
//! vocabulary, `crate::config`) resolved into algorithms, identities,
//! secrets and durations. The daemon builds these from the config file;
//! tests build them directly.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use zeroize::Zeroizing;

use super::proposal::{EspProposal, IkeProposal};
use crate::wire::{Identification, TrafficSelector};

/// An IKE identity (ID payload contents): FQDN, IPv4/IPv6, RFC822 or DN.
pub type Identity = Identification;

/// How one side authenticates.
#[derive(Clone)]
#[non_exhaustive]
pub enum AuthMethod {
    /// A pre-shared key (AUTH method 2, RFC 7296 section 2.15).
    Psk(Arc<Zeroizing<Vec<u8>>>),
}

impl std::fmt::Debug for AuthMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthMethod::Psk(_) => f.write_str("Psk(<redacted>)"),
        }
    }
}

impl AuthMethod {
    /// A PSK from its bytes.
    pub fn psk(secret: impl Into<Vec<u8>>) -> Self {
        AuthMethod::Psk(Arc::new(Zeroizing::new(secret.into())))
    }
}

/// Our side of a connection (strongSwan's `local` section).
#[derive(Debug, Clone)]
pub struct LocalAuth {
    /// The identity we send in IDi/IDr.
    pub id: Identity,
    /// How we prove it.
    pub auth: AuthMethod,
}

/// The peer's side of a connection (strongSwan's `remote` section).
#[derive(Debug, Clone)]
pub struct RemoteAuth {
    /// The identity the peer must present; `None` accepts any (`%any`).
    pub id: Option<Identity>,
    /// How the peer must prove it.
    pub auth: AuthMethod,
}

/// What to do when the peer stops answering liveness checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DpdAction {
    /// Delete the IKE SA and its Child SAs.
    #[default]
    Clear,
    /// Delete them and initiate the connection again.
    Restart,
}

/// What to do with a connection when it is loaded (strongSwan `start_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartAction {
    /// Wait for the peer or a command.
    #[default]
    None,
    /// Initiate right away.
    Start,
}

/// A Child SA template (strongSwan's `children.<name>` section). Tunnel
/// mode only.
#[derive(Debug, Clone)]
pub struct ChildConfig {
    /// Its name.
    pub name: String,
    /// Our traffic selectors (sent as TSi by an initiator, TSr by a responder).
    pub local_ts: Vec<TrafficSelector>,
    /// The peer's traffic selectors.
    pub remote_ts: Vec<TrafficSelector>,
    /// ESP proposals in order of preference (AES-GCM only: the data plane
    /// implements RFC 4106).
    pub esp_proposals: Vec<EspProposal>,
    /// Rekey this long after establishment (`rekey_time`), `None` to never.
    pub rekey_time: Option<Duration>,
    /// Delete this long after establishment if not rekeyed (`life_time`).
    pub life_time: Option<Duration>,
    /// Start action of the connection for this child.
    pub start_action: StartAction,
}

/// A connection (strongSwan's `connections.<name>` section), resolved.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Its name.
    pub name: String,
    /// Our addresses; the first one is used to initiate. Empty: any
    /// (responder only).
    pub local_addrs: Vec<IpAddr>,
    /// The peer's addresses; the first one is initiated to. Empty: any
    /// (responder only).
    pub remote_addrs: Vec<IpAddr>,
    /// The peer's IKE port (500 normally).
    pub remote_port: u16,
    /// IKE proposals in order of preference.
    pub proposals: Vec<IkeProposal>,
    /// Our side.
    pub local: LocalAuth,
    /// The peer's side.
    pub remote: RemoteAuth,
    /// The Child SAs; the first one is created in IKE_AUTH when initiating.
    pub children: Vec<ChildConfig>,
    /// Rekey the IKE SA this long after establishment.
    pub rekey_time: Option<Duration>,
    /// Liveness check after this long without hearing from the peer.
    pub dpd_delay: Option<Duration>,
    /// What to do when the peer does not answer.
    pub dpd_action: DpdAction,
    /// Force UDP encapsulation of ESP (strongSwan `encap`), even without NAT.
    pub encap: bool,
    /// Offer and accept IKE fragmentation (RFC 7383).
    pub fragmentation: bool,
    /// Whether to initiate on load.
    pub start_action: StartAction,
}

impl Connection {
    /// A connection with strongSwan's defaults: port 500, fragmentation on,
    /// no DPD, no rekeying, no children.
    pub fn new(name: impl Into<String>, local: LocalAuth, remote: RemoteAuth) -> Self {
        Connection {
            name: name.into(),
            local_addrs: Vec::new(),
            remote_addrs: Vec::new(),
            remote_port: 500,
            proposals: Vec::new(),
            local,
            remote,
            children: Vec::new(),
            rekey_time: None,
            dpd_delay: None,
            dpd_action: DpdAction::Clear,
            encap: false,
            fragmentation: true,
            start_action: StartAction::None,
        }
    }
}
