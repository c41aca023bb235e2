//! A connection as the state machine uses it: one `[connections.NAME]` of
//! the TOML config ([`crate::config`]) with its proposals turned into the
//! algorithms [`crate::crypto`] implements and its certificates loaded.
//! Addresses, traffic selectors (`dynamic` needs the IKE addresses) and
//! pre-shared keys (chosen by the identities seen) stay in the config's
//! own types and are resolved when an exchange needs them.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::proposal::{EspProposal, IkeProposal};
use crate::cert::{LocalCredential, TrustStore};
use crate::config::{
    self, AddrSpec, AuthMethod as ConfigAuth, Credentials, DpdAction, Fragmentation, IkeConfig,
    StartAction, TsSpec,
};
use crate::wire::{Identification, TrafficSelector};

/// An IKE identity as sent in IDi/IDr.
pub type Identity = Identification;

/// How we authenticate.
#[derive(Debug, Clone)]
pub enum LocalMethod {
    /// A pre-shared key from `[secrets]`, chosen by both identities.
    Psk,
    /// Our certificate and key (RFC 7427 signatures).
    Cert(Arc<LocalCredential>),
}

/// How the peer must authenticate.
#[derive(Debug, Clone)]
pub enum RemoteMethod {
    /// A pre-shared key from `[secrets]`.
    Psk,
    /// A certificate chain leading to one of these CAs.
    Cert(Arc<TrustStore>),
}

/// Our side (`local`).
#[derive(Debug, Clone)]
pub struct LocalAuth {
    /// The identity we send; `None`: our IKE address (PSK) or the
    /// certificate's subject.
    pub id: Option<Identity>,
    /// How we prove it.
    pub method: LocalMethod,
}

/// The peer's side (`remote`).
#[derive(Debug, Clone)]
pub struct RemoteAuth {
    /// The identity the peer must present (`%any` accepts any).
    pub id: config::Identity,
    /// How it must prove it.
    pub method: RemoteMethod,
}

/// A Child SA template (`children.NAME`); tunnel mode.
#[derive(Debug, Clone)]
pub struct ChildConfig {
    /// Its name.
    pub name: String,
    /// Our selectors (`dynamic` is our IKE address).
    pub local_ts: Vec<TsSpec>,
    /// The peer's selectors (`dynamic` is its IKE address).
    pub remote_ts: Vec<TsSpec>,
    /// ESP proposals in preference order.
    pub esp_proposals: Vec<EspProposal>,
    /// Rekey this long after installation.
    pub rekey_time: Option<Duration>,
    /// Delete this long after installation if not rekeyed.
    pub life_time: Option<Duration>,
    /// Up to this much is taken off `rekey_time` at random, so that both
    /// ends rarely rekey at once (`rand_time`).
    pub rand_time: Duration,
    /// What the daemon does on load.
    pub start_action: StartAction,
    /// What to do when the peer closes it.
    pub close_action: config::CloseAction,
}

impl ChildConfig {
    /// Our selectors for an IKE SA whose local address is `ike_local`.
    pub fn local_wire(&self, ike_local: IpAddr) -> Vec<TrafficSelector> {
        self.local_ts.iter().map(|t| t.to_wire(ike_local)).collect()
    }

    /// The peer's selectors for an IKE SA with the peer at `ike_remote`.
    pub fn remote_wire(&self, ike_remote: IpAddr) -> Vec<TrafficSelector> {
        self.remote_ts
            .iter()
            .map(|t| t.to_wire(ike_remote))
            .collect()
    }
}

/// A connection (`connections.NAME`), resolved.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Its name.
    pub name: String,
    /// Our addresses; the first single address initiates.
    pub local_addrs: Vec<AddrSpec>,
    /// The peer's addresses; the first single address is initiated to.
    pub remote_addrs: Vec<AddrSpec>,
    /// The peer's IKE port.
    pub remote_port: u16,
    /// IKE proposals in preference order.
    pub proposals: Vec<IkeProposal>,
    /// Our side.
    pub local: LocalAuth,
    /// The peer's side.
    pub remote: RemoteAuth,
    /// The Child SAs; the first one comes with IKE_AUTH.
    pub children: Vec<ChildConfig>,
    /// Rekey the IKE SA this long after establishment.
    pub rekey_time: Option<Duration>,
    /// Up to this much is taken off `rekey_time` at random.
    pub rand_time: Duration,
    /// Delete the IKE SA this long after establishment if no rekey
    /// replaced its keys.
    pub life_time: Option<Duration>,
    /// Liveness check after this long without a message from the peer.
    pub dpd_delay: Option<Duration>,
    /// What to do when the peer is gone.
    pub dpd_action: DpdAction,
    /// Force UDP encapsulation of ESP.
    pub encap: bool,
    /// RFC 9611 per-resource Child SAs (`per_resource_sas`).
    pub per_resource_sas: bool,
    /// Announce and accept IKE fragmentation (RFC 7383).
    pub fragmentation: bool,
    /// Fragment our own big messages when the peer supports it.
    pub fragment_ours: bool,
    /// Initiation attempts before giving up; 0: forever.
    pub keyingtries: u32,
    /// Where pre-shared keys come from.
    pub secrets: Arc<IkeConfig>,
    /// Gateway: the pools a client's virtual IPs come from.
    pub pools: Vec<String>,
    /// Client: the virtual IPs to ask for.
    pub vips: Vec<std::net::IpAddr>,
}

impl Connection {
    /// Resolves `[connections.NAME]` of `cfg` with its loaded `creds`.
    pub fn from_config(
        name: &str,
        conn: &config::Connection,
        cfg: &Arc<IkeConfig>,
        creds: Option<&Credentials>,
    ) -> Result<Self, String> {
        let local_method = match conn.local.auth {
            ConfigAuth::Psk => LocalMethod::Psk,
            ConfigAuth::Pubkey => LocalMethod::Cert(
                creds
                    .and_then(|c| c.local.clone())
                    .ok_or_else(|| format!("connections.{name}.local: certificate not loaded"))?,
            ),
        };
        let remote_method = match conn.remote.auth {
            ConfigAuth::Psk => RemoteMethod::Psk,
            ConfigAuth::Pubkey => {
                RemoteMethod::Cert(creds.and_then(|c| c.trust.clone()).ok_or_else(|| {
                    format!("connections.{name}.remote: CA certificates not loaded")
                })?)
            }
        };
        let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
        Ok(Connection {
            name: name.to_owned(),
            local_addrs: conn.local_addrs.clone(),
            remote_addrs: conn.remote_addrs.clone(),
            remote_port: conn.remote_port,
            proposals: conn
                .proposals
                .iter()
                .map(IkeProposal::from_config)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("connections.{name}.proposals: {e}"))?,
            local: LocalAuth {
                id: conn.local.id.as_ref().and_then(config::Identity::to_wire),
                method: local_method,
            },
            remote: RemoteAuth {
                id: conn.remote.id_or_any(),
                method: remote_method,
            },
            children: conn
                .children
                .iter()
                .map(|(cname, c)| {
                    Ok(ChildConfig {
                        name: cname.clone(),
                        local_ts: c.local_ts.clone(),
                        remote_ts: c.remote_ts.clone(),
                        esp_proposals: c
                            .esp_proposals
                            .iter()
                            .map(EspProposal::from_config)
                            .collect::<Result<_, _>>()
                            .map_err(|e| {
                                format!("connections.{name}.children.{cname}.esp_proposals: {e}")
                            })?,
                        rekey_time: nonzero(c.rekey_time),
                        life_time: c.hard_life_time(),
                        rand_time: c.rand_time(),
                        start_action: c.start_action,
                        close_action: c.close_action,
                    })
                })
                .collect::<Result<_, String>>()?,
            rekey_time: nonzero(conn.rekey_time),
            rand_time: conn.ike_rand_time(),
            life_time: conn.ike_life_time(),
            dpd_delay: nonzero(conn.dpd_delay),
            dpd_action: conn.dpd_action,
            encap: conn.encap,
            per_resource_sas: conn.per_resource_sas,
            fragmentation: conn.fragmentation != Fragmentation::No,
            fragment_ours: conn.fragmentation == Fragmentation::Yes,
            pools: conn.pools.clone(),
            vips: conn.vips.clone(),
            keyingtries: conn.keyingtries,
            secrets: cfg.clone(),
        })
    }

    /// Every connection of a loaded config (`creds` from
    /// [`IkeConfig::load_credentials`]).
    pub fn all_from_config(
        cfg: &Arc<IkeConfig>,
        creds: &BTreeMap<String, Credentials>,
    ) -> Result<Vec<Self>, String> {
        cfg.connections
            .iter()
            .map(|(name, c)| Self::from_config(name, c, cfg, creds.get(name)))
            .collect()
    }

    /// Whether a message from `remote` to `local` may belong here.
    pub fn matches_addrs(&self, local: IpAddr, remote: IpAddr) -> bool {
        self.local_addrs.iter().any(|a| a.matches(local))
            && self.remote_addrs.iter().any(|a| a.matches(remote))
    }

    /// The identity we send from IKE address `ike_local`.
    pub fn local_id(&self, ike_local: IpAddr) -> Identity {
        if let Some(id) = &self.local.id {
            return id.clone();
        }
        match &self.local.method {
            LocalMethod::Cert(c) => c.subject_id(),
            LocalMethod::Psk => match ike_local {
                IpAddr::V4(a) => Identification::Ipv4(a),
                IpAddr::V6(a) => Identification::Ipv6(a),
            },
        }
    }

    /// The pre-shared key for our identity and the peer's.
    pub(crate) fn psk(&self, local: &Identity, remote: &Identity) -> Option<&[u8]> {
        self.secrets
            .find_psk(Some(local), remote)
            .map(|p| p.as_bytes())
    }

    /// Whether any child wants to be started on load.
    pub fn starts_on_load(&self) -> bool {
        self.children
            .iter()
            .any(|c| c.start_action == StartAction::Start)
    }
}
