//! Child SAs: their state, key material, and the data-plane events that
//! install and remove them (make-before-break).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use xdpsec_api::{Direction, GcmKey, Policy, PolicyAction, PolicyKey, SaSpec, UdpEncap};

use tracing::info;

use super::common::jittered;
use super::endpoint::Endpoint;
use super::event::{ChildSaSnapshot, ChildSaState, Event, Reason};
use super::proposal::select_esp;
use super::proposal::ChildAlgorithms;
use super::sa::IkeSa;
use super::ts;
use super::{ChildSaId, IkeSaId};
use crate::crypto::ChildKeys;
use crate::wire::consts::notify;
use crate::wire::TrafficSelector;

/// What a Child SA is under RFC 9611.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResourceRole {
    /// No SA_RESOURCE_INFO was exchanged for it: an ordinary Child SA.
    Plain,
    /// The first Child SA of its selectors, made with SA_RESOURCE_INFO on
    /// both sides: its policies are the selectors', and every worker
    /// without a per-resource SA of its own sends on it.
    Fallback,
    /// A further Child SA with the same selectors, bound to one worker.
    /// It installs no policy: the data plane finds it by its selectors.
    PerResource(u32),
}

impl ResourceRole {
    /// Whether SA_RESOURCE_INFO goes with its exchanges (a rekey keeps
    /// saying what the SA is).
    pub(crate) fn announced(self) -> bool {
        self != ResourceRole::Plain
    }

    fn index(self) -> Option<u32> {
        match self {
            ResourceRole::PerResource(w) => Some(w),
            _ => None,
        }
    }
}

/// One Child SA (a pair of ESP SAs).
#[derive(Debug)]
pub(crate) struct ChildSa {
    pub id: ChildSaId,
    /// The child's name in the connection.
    pub name: String,
    pub spi_in: u32,
    pub spi_out: u32,
    pub algs: ChildAlgorithms,
    pub local_ts: Vec<TrafficSelector>,
    pub remote_ts: Vec<TrafficSelector>,
    pub state: ChildSaState,
    pub installed_at: Instant,
    pub rekey_at: Option<Instant>,
    pub expire_at: Option<Instant>,
    pub encap: bool,
    /// Set while we answered the peer's rekey of this SA during our own
    /// (RFC 7296 section 2.8.1): the SA the peer's exchange created and the
    /// lowest nonce of that exchange.
    pub collision: Option<(ChildSaId, Vec<u8>)>,
    /// RFC 9611: plain, fallback or per-resource.
    pub role: ResourceRole,
}

/// Everything needed to emit the install events of a Child SA.
pub(crate) struct Install<'a> {
    pub ike: IkeSaId,
    pub connection: &'a str,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub encap: bool,
    /// Whether we initiated the exchange that created the SA (KEYMAT order).
    pub exchange_initiator: bool,
    pub keys: &'a ChildKeys,
    pub replaces: Option<ChildSaId>,
}

fn gcm(keymat: &[u8]) -> Option<GcmKey> {
    let split = keymat.len().checked_sub(4)?;
    let mut salt = [0u8; 4];
    salt.copy_from_slice(&keymat[split..]);
    GcmKey::new(&keymat[..split], salt).ok()
}

impl ChildSa {
    /// The two SAs and the policies; inbound first.
    pub(crate) fn install(
        &self,
        i: &Install<'_>,
        events: &mut VecDeque<Event>,
    ) -> Result<(), Reason> {
        let (key_in, key_out) = if i.exchange_initiator {
            (&i.keys.encr_r, &i.keys.encr_i)
        } else {
            (&i.keys.encr_i, &i.keys.encr_r)
        };
        let (Some(key_in), Some(key_out)) = (gcm(key_in), gcm(key_out)) else {
            return Err(Reason::Internal(
                "Child SA key material of the wrong size".into(),
            ));
        };
        let selectors = ts::to_api(&self.local_ts, &self.remote_ts);
        if selectors.is_empty() {
            return Err(Reason::TsUnacceptable(
                "the negotiated selectors mix address families".into(),
            ));
        }
        let spec = |spi, direction, key, encap| SaSpec {
            spi,
            direction,
            key,
            esn: self.algs.esn,
            replay_window: xdpsec_api::sa::DEFAULT_REPLAY_WINDOW,
            tunnel_local: i.local.ip(),
            tunnel_remote: i.remote.ip(),
            encap,
            selectors: selectors.clone(),
            lifetime: xdpsec_api::Lifetimes::default(),
            initial_seq: None,
            resource: self.role.index(),
        };
        let (enc_in, enc_out) = if i.encap {
            (
                Some(UdpEncap {
                    sport: i.remote.port(),
                    dport: i.local.port(),
                }),
                Some(UdpEncap {
                    sport: i.local.port(),
                    dport: i.remote.port(),
                }),
            )
        } else {
            (None, None)
        };
        events.push_back(Event::InstallSa {
            ike: i.ike,
            child: self.id,
            spec: spec(self.spi_in, Direction::In, key_in, enc_in),
        });
        events.push_back(Event::InstallSa {
            ike: i.ike,
            child: self.id,
            spec: spec(self.spi_out, Direction::Out, key_out, enc_out),
        });
        let policies = self.policies();
        if !policies.is_empty() {
            events.push_back(Event::InstallPolicies {
                child: self.id,
                policies,
            });
        }
        events.push_back(Event::ChildSaUp {
            ike: i.ike,
            child: self.id,
            connection: i.connection.to_owned(),
            name: self.name.clone(),
            replaces: i.replaces,
            spi_in: self.spi_in,
            spi_out: self.spi_out,
            algorithms: self.algs.to_string(),
            initiator: i.exchange_initiator,
        });
        Ok(())
    }

    pub(crate) fn policies(&self) -> Vec<Policy> {
        let mut out: Vec<Policy> = Vec::new();
        if self.role.index().is_some() {
            // The fallback child's policies cover these selectors.
            return out;
        }
        for sel in ts::to_api(&self.local_ts, &self.remote_ts) {
            for (direction, spi) in [(Direction::Out, self.spi_out), (Direction::In, self.spi_in)] {
                let p = Policy {
                    local: sel.local,
                    remote: sel.remote,
                    direction,
                    action: PolicyAction::Protect,
                    spi: Some(spi),
                };
                if !out.iter().any(|q| q.key() == p.key()) {
                    out.push(p);
                }
            }
        }
        out
    }

    /// The events that take the SA out of the data plane. Policies whose
    /// keys are in `keep` stay: another Child SA (the replacement of a
    /// rekey) already points them at its own SPIs.
    pub(crate) fn remove(
        &self,
        ike: IkeSaId,
        connection: &str,
        keep: &[PolicyKey],
        reason: Reason,
        events: &mut VecDeque<Event>,
    ) {
        let keys: Vec<PolicyKey> = self
            .policies()
            .iter()
            .map(Policy::key)
            .filter(|k| !keep.contains(k))
            .collect();
        if !keys.is_empty() {
            events.push_back(Event::DeletePolicies {
                child: self.id,
                keys,
            });
        }
        for (spi, direction) in [(self.spi_out, Direction::Out), (self.spi_in, Direction::In)] {
            events.push_back(Event::DeleteSa {
                child: self.id,
                spi,
                direction,
            });
        }
        events.push_back(Event::ChildSaDown {
            ike,
            child: Some(self.id),
            connection: connection.to_owned(),
            name: self.name.clone(),
            reason,
        });
    }

    pub(crate) fn snapshot(&self, now: Instant) -> ChildSaSnapshot {
        ChildSaSnapshot {
            id: self.id,
            name: self.name.clone(),
            state: self.state,
            spi_in: self.spi_in,
            spi_out: self.spi_out,
            algorithms: self.algs.to_string(),
            local_ts: self.local_ts.iter().map(ts::display).collect(),
            remote_ts: self.remote_ts.iter().map(ts::display).collect(),
            encap: self.encap,
            age: now.saturating_duration_since(self.installed_at),
            rekey_in: self.rekey_at.map(|t| t.saturating_duration_since(now)),
            resource: match self.role {
                ResourceRole::Plain => None,
                ResourceRole::Fallback => Some("fallback".into()),
                ResourceRole::PerResource(w) => Some(format!("worker {w}")),
            },
        }
    }
}

/// Creates and installs a Child SA; emits its events.
#[allow(clippy::too_many_arguments)]
pub(crate) fn install_child(
    sa: &mut IkeSa,
    now: Instant,
    config: usize,
    algs: ChildAlgorithms,
    spi_in: u32,
    spi_out: u32,
    local_ts: Vec<crate::wire::TrafficSelector>,
    remote_ts: Vec<crate::wire::TrafficSelector>,
    keys: &crate::crypto::ChildKeys,
    exchange_initiator: bool,
    replaces: Option<super::ChildSaId>,
    role: ResourceRole,
    ep: &mut Endpoint,
) -> Result<super::ChildSaId, Reason> {
    let cfg = sa
        .conn
        .children
        .get(config)
        .ok_or_else(|| Reason::Internal("child config vanished".into()))?;
    let encap = sa.nat_local || sa.nat_remote || sa.conn.encap;
    let child = ChildSa {
        id: ep.alloc_child_id(),
        name: cfg.name.clone(),
        spi_in,
        spi_out,
        algs,
        local_ts,
        remote_ts,
        state: ChildSaState::Installed,
        installed_at: now,
        rekey_at: cfg.rekey_time.map(|d| now + jittered(d, cfg.rand_time, ep)),
        expire_at: cfg.life_time.map(|d| now + d),
        encap,
        collision: None,
        role,
    };
    let install = Install {
        ike: sa.id,
        connection: &sa.conn.name,
        local: sa.local,
        remote: sa.remote,
        encap,
        exchange_initiator,
        keys,
        replaces,
    };
    child.install(&install, &mut ep.events)?;
    info!(ike = %sa.id, child = %child.id, name = %child.name, role = ?role, spi_in = format_args!("{:08x}", spi_in), spi_out = format_args!("{:08x}", spi_out), algorithms = %algs, "Child SA installed");
    let id = child.id;
    sa.children.push(child);
    Ok(id)
}

/// A responder's choice for a Child SA: config index, algorithms, the
/// peer's SPI, our local and remote selectors.
pub(crate) type ChildChoice = (
    usize,
    ChildAlgorithms,
    u32,
    Vec<crate::wire::TrafficSelector>,
    Vec<crate::wire::TrafficSelector>,
);

/// The responder's choice of child config, ESP proposal and narrowed
/// selectors: the first child whose proposals and selectors both fit.
/// `tsi`/`tsr` are the initiator's (its side first). Returns the config
/// index, algorithms, the peer's SPI, and our local and remote selectors.
#[allow(clippy::type_complexity)]
pub(crate) fn select_child(
    sa: &IkeSa,
    proposals: &[crate::wire::Proposal],
    tsi: &[crate::wire::TrafficSelector],
    tsr: &[crate::wire::TrafficSelector],
    with_dh: bool,
) -> Result<
    (
        usize,
        ChildAlgorithms,
        u32,
        Vec<crate::wire::TrafficSelector>,
        Vec<crate::wire::TrafficSelector>,
    ),
    (u16, Reason),
> {
    let conn = &sa.conn;
    let mut proposal_fit = false;
    for (i, cfg) in conn.children.iter().enumerate() {
        let Some((algs, _, spi_out)) = select_esp(proposals, &cfg.esp_proposals, with_dh) else {
            continue;
        };
        proposal_fit = true;
        let remote_ts = ts::narrow(tsi, &sa.peer_ts(cfg));
        let local_ts = ts::narrow(tsr, &sa.our_ts(cfg));
        if remote_ts.is_empty() || local_ts.is_empty() {
            continue;
        }
        return Ok((i, algs, spi_out, local_ts, remote_ts));
    }
    if proposal_fit || conn.children.is_empty() {
        let show = |v: &[crate::wire::TrafficSelector]| {
            v.iter().map(ts::display).collect::<Vec<_>>().join(",")
        };
        Err((
            notify::TS_UNACCEPTABLE,
            Reason::TsUnacceptable(format!(
                "peer proposed TSi {} TSr {}, no child of {:?} allows them",
                show(tsi),
                show(tsr),
                conn.name
            )),
        ))
    } else {
        Err((
            notify::NO_PROPOSAL_CHOSEN,
            Reason::NoProposalChosen(format!(
                "no ESP proposal of the peer matches connection {:?}",
                conn.name
            )),
        ))
    }
}
