//! CREATE_CHILD_SA (RFC 7296 section 1.3): new and rekeyed Child SAs
//! (make-before-break, optional PFS, the simultaneous-rekey rule of section
//! 2.8.1) and IKE SA rekeying (section 2.18).

use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::auth::child_sa_payload;
use super::child::{install_child, select_child, ResourceRole};
use super::common::{
    error_notify, notify_of, random_child_spi, random_ike_spi, random_vec, sa_payload, tsi, tsr,
    NONCE_LEN,
};
use super::endpoint::{CommandError, Endpoint};
use super::event::{ChildSaState, Event, Reason};
use super::per_resource;
use super::proposal::{select_esp, select_ike, ChildAlgorithms, EspProposal, IkeProposal};
use super::sa::{Channel, IkeSa, Phase, Queued, Request};
use super::ts;
use super::ChildSaId;
use crate::crypto::{child_keymat, DhGroup, DhPrivate, IkeKeys};
use crate::wire::consts::{exchange, notify, protocol};
use crate::wire::{
    Delete, IkeHeader, KeyExchange, Notify, Payload, SecurityAssociation, TrafficSelector,
    TrafficSelectors,
};

/// How long before an unfinished rekey is tried again after
/// TEMPORARY_FAILURE: between this and twice this, at random, so that two
/// ends that collided do not collide again.
const REKEY_RETRY: Duration = Duration::from_secs(10);

/// A CREATE_CHILD_SA we sent for a Child SA.
#[derive(Debug)]
pub(crate) struct ChildRequest {
    config: usize,
    spi_in: u32,
    nonce_i: Vec<u8>,
    dh: Option<DhPrivate>,
    rekey: Option<ChildSaId>,
    local_ts: Vec<TrafficSelector>,
    remote_ts: Vec<TrafficSelector>,
    ke_retried: bool,
    /// RFC 9611: what the child is to be (a rekey: what the old one is).
    role: ResourceRole,
}

/// A CREATE_CHILD_SA we sent to rekey the IKE SA.
#[derive(Debug)]
pub(crate) struct IkeRekeyRequest {
    spi: u64,
    nonce_i: Vec<u8>,
    dh: DhPrivate,
    ke_retried: bool,
}

fn nonce(p: &[Payload]) -> Option<&Vec<u8>> {
    p.iter().find_map(|x| match x {
        Payload::Nonce(n) if (16..=256).contains(&n.len()) => Some(n),
        _ => None,
    })
}

fn ke(p: &[Payload]) -> Option<&KeyExchange> {
    p.iter().find_map(|x| match x {
        Payload::Ke(k) => Some(k),
        _ => None,
    })
}

fn build_child_request(sa: &IkeSa, req: &ChildRequest) -> Vec<Payload> {
    let mut p = Vec::new();
    if let Some(old) = req
        .rekey
        .and_then(|id| sa.children.iter().find(|c| c.id == id))
    {
        p.push(Payload::Notify(Notify {
            protocol: protocol::ESP,
            spi: old.spi_in.to_be_bytes().to_vec(),
            kind: notify::REKEY_SA,
            data: Vec::new(),
        }));
    }
    if req.role.announced() {
        p.push(per_resource::notify());
    }
    let proposals = sa
        .conn
        .children
        .get(req.config)
        .map(|c| c.esp_proposals.clone())
        .unwrap_or_default();
    let proposals: Vec<EspProposal> = match &req.dh {
        // After INVALID_KE_PAYLOAD the requested group goes first.
        Some(dh) => proposals
            .into_iter()
            .map(|mut e| {
                if let Some(i) = e.dh.iter().position(|g| *g == dh.group()) {
                    e.dh.swap(0, i);
                }
                e
            })
            .collect(),
        None => proposals,
    };
    p.push(child_sa_payload(&proposals, req.spi_in, true));
    p.push(Payload::Nonce(req.nonce_i.clone()));
    if let Some(dh) = &req.dh {
        p.push(Payload::Ke(KeyExchange {
            group: dh.group().id(),
            data: dh.public().to_vec(),
        }));
    }
    p.push(Payload::TsI(TrafficSelectors {
        selectors: req.local_ts.clone(),
    }));
    p.push(Payload::TsR(TrafficSelectors {
        selectors: req.remote_ts.clone(),
    }));
    p
}

/// What a new child request is for, beside its config.
#[derive(Debug, Clone, Copy)]
enum Purpose {
    /// A further child of the connection (RFC 9611 fallback SA if the
    /// connection does per-resource SAs and the peer agrees).
    New,
    /// A rekey of this child; role and selectors are the old child's.
    Rekey(ChildSaId),
    /// A per-resource child for worker `w` with the selectors of the
    /// fallback child `ChildSaId`.
    PerResource(ChildSaId, u32),
}

fn new_child_request(
    sa: &IkeSa,
    config: usize,
    purpose: Purpose,
    group: Option<DhGroup>,
    ep: &mut Endpoint,
) -> Result<ChildRequest, Reason> {
    let rekey = match purpose {
        Purpose::Rekey(id) => Some(id),
        _ => None,
    };
    let cfg = sa
        .conn
        .children
        .get(config)
        .ok_or_else(|| Reason::Internal("child config vanished".into()))?;
    let group = group.or_else(|| {
        cfg.esp_proposals
            .first()
            .and_then(|e| e.dh.first().copied())
    });
    let dh = match group {
        Some(g) => Some(
            DhPrivate::generate(g, &mut *ep.rng).map_err(|e| Reason::Internal(e.to_string()))?,
        ),
        None => None,
    };
    let like = match purpose {
        Purpose::Rekey(id) | Purpose::PerResource(id, _) => sa.children.iter().find(|c| c.id == id),
        Purpose::New => None,
    };
    let (local_ts, remote_ts) = match like {
        Some(old) => (old.local_ts.clone(), old.remote_ts.clone()),
        None => (sa.our_ts(cfg), sa.peer_ts(cfg)),
    };
    let role = match purpose {
        Purpose::New if sa.conn.per_resource_sas => ResourceRole::Fallback,
        Purpose::New => ResourceRole::Plain,
        Purpose::Rekey(_) => like.map_or(ResourceRole::Plain, |c| c.role),
        Purpose::PerResource(_, w) => ResourceRole::PerResource(w),
    };
    Ok(ChildRequest {
        config,
        spi_in: random_child_spi(ep)?,
        nonce_i: random_vec(ep, NONCE_LEN)?,
        dh,
        rekey,
        local_ts,
        remote_ts,
        ke_retried: false,
        role,
    })
}

/// Queues a CREATE_CHILD_SA for a further child of the connection (called
/// while the channel is out of the SA).
pub(crate) fn queue_new_child(
    sa: &mut IkeSa,
    config: usize,
    chan: &mut Channel,
    ep: &mut Endpoint,
) -> Result<(), Reason> {
    let req = new_child_request(sa, config, Purpose::New, None, ep)?;
    chan.queue.push_back(Queued {
        exchange: exchange::CREATE_CHILD_SA,
        payloads: build_child_request(sa, &req),
        request: Request::CreateChild(req),
    });
    Ok(())
}

/// Queues a CREATE_CHILD_SA for an RFC 9611 per-resource child of worker
/// `worker`, with the selectors of the fallback child `fallback`.
pub(crate) fn queue_per_resource(
    sa: &mut IkeSa,
    config: usize,
    fallback: ChildSaId,
    worker: u32,
    chan: &mut Channel,
    ep: &mut Endpoint,
) -> Result<(), Reason> {
    let req = new_child_request(sa, config, Purpose::PerResource(fallback, worker), None, ep)?;
    chan.queue.push_back(Queued {
        exchange: exchange::CREATE_CHILD_SA,
        payloads: build_child_request(sa, &req),
        request: Request::CreateChild(req),
    });
    Ok(())
}

pub(crate) fn start_child_rekey(
    sa: &mut IkeSa,
    now: Instant,
    id: ChildSaId,
    ep: &mut Endpoint,
) -> Result<(), CommandError> {
    if !matches!(sa.phase, Phase::Established) {
        return Err(CommandError::InvalidState("the IKE SA is not established"));
    }
    let child = sa
        .children
        .iter()
        .find(|c| c.id == id)
        .ok_or(CommandError::UnknownChildSa(id))?;
    if child.state != ChildSaState::Installed {
        return Err(CommandError::InvalidState(
            "the Child SA is already being rekeyed or deleted",
        ));
    }
    let Some(config) = sa.conn.children.iter().position(|c| c.name == child.name) else {
        return Err(CommandError::InvalidState(
            "the Child SA's config is no longer loaded",
        ));
    };
    let req = new_child_request(sa, config, Purpose::Rekey(id), None, ep)
        .map_err(|r| CommandError::Internal(r.to_string()))?;
    if let Some(c) = sa.children.iter_mut().find(|c| c.id == id) {
        c.state = ChildSaState::Rekeying;
        c.rekey_at = None;
    }
    info!(ike = %sa.id, child = %id, "CREATE_CHILD_SA: rekeying Child SA");
    let payloads = build_child_request(sa, &req);
    sa.request(
        now,
        exchange::CREATE_CHILD_SA,
        payloads,
        Request::CreateChild(req),
        ep,
    );
    Ok(())
}

fn ike_rekey_payloads(sa: &IkeSa, req: &IkeRekeyRequest) -> Vec<Payload> {
    let proposals: Vec<IkeProposal> = sa
        .conn
        .proposals
        .iter()
        .cloned()
        .map(|mut p| {
            if let Some(i) = p.dh.iter().position(|g| *g == req.dh.group()) {
                p.dh.swap(0, i);
            }
            p
        })
        .collect();
    vec![
        Payload::Sa(SecurityAssociation {
            proposals: proposals
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    p.to_wire(
                        u8::try_from(i + 1).unwrap_or(u8::MAX),
                        req.spi.to_be_bytes().to_vec(),
                    )
                })
                .collect(),
        }),
        Payload::Nonce(req.nonce_i.clone()),
        Payload::Ke(KeyExchange {
            group: req.dh.group().id(),
            data: req.dh.public().to_vec(),
        }),
    ]
}

pub(crate) fn start_ike_rekey(
    sa: &mut IkeSa,
    now: Instant,
    ep: &mut Endpoint,
) -> Result<(), CommandError> {
    start_ike_rekey_with(sa, now, None, ep)
}

fn start_ike_rekey_with(
    sa: &mut IkeSa,
    now: Instant,
    group: Option<DhGroup>,
    ep: &mut Endpoint,
) -> Result<(), CommandError> {
    if !matches!(sa.phase, Phase::Established) || sa.old_chan_busy() {
        return Err(CommandError::InvalidState(
            "the IKE SA is not established or still finishing a rekey",
        ));
    }
    sa.drop_old_chan(ep);
    let Some(chan) = sa.chan.as_ref() else {
        return Err(CommandError::InvalidState("the IKE SA has no keys"));
    };
    let busy = chan
        .outstanding
        .as_ref()
        .is_some_and(|o| matches!(o.request, Request::RekeyIke(_)))
        || chan
            .queue
            .iter()
            .any(|q| matches!(q.request, Request::RekeyIke(_)));
    if busy {
        return Err(CommandError::InvalidState(
            "an IKE rekey is already in progress",
        ));
    }
    let group = group.unwrap_or(chan.algs.dh);
    let internal = |r: Reason| CommandError::Internal(r.to_string());
    let req = IkeRekeyRequest {
        spi: random_ike_spi(ep).map_err(internal)?,
        nonce_i: random_vec(ep, NONCE_LEN).map_err(internal)?,
        dh: DhPrivate::generate(group, &mut *ep.rng)
            .map_err(|e| CommandError::Internal(e.to_string()))?,
        ke_retried: group != chan.algs.dh,
    };
    // Responses to the new SPI must find this SA.
    ep.by_spi.insert(req.spi, sa.id);
    sa.rekey_at = None;
    info!(ike = %sa.id, "CREATE_CHILD_SA: rekeying IKE SA");
    let payloads = ike_rekey_payloads(sa, &req);
    sa.request(
        now,
        exchange::CREATE_CHILD_SA,
        payloads,
        Request::RekeyIke(req),
        ep,
    );
    Ok(())
}

fn temporary_failure(
    sa: &IkeSa,
    chan: &mut Channel,
    header: &IkeHeader,
    n: u16,
    ep: &mut Endpoint,
) {
    sa.respond(
        chan,
        exchange::CREATE_CHILD_SA,
        header.message_id,
        &[Payload::Notify(Notify::new(n, Vec::new()))],
        ep,
    );
}

/// The responder's CREATE_CHILD_SA.
pub(crate) fn handle_request(
    sa: &mut IkeSa,
    now: Instant,
    header: IkeHeader,
    p: Vec<Payload>,
    chan: &mut Channel,
    ep: &mut Endpoint,
) {
    if !matches!(sa.phase, Phase::Established) {
        return temporary_failure(sa, chan, &header, notify::TEMPORARY_FAILURE, ep);
    }
    let (Some(s), Some(nonce_i)) = (sa_payload(&p), nonce(&p)) else {
        return temporary_failure(sa, chan, &header, notify::INVALID_SYNTAX, ep);
    };
    if s.proposals.iter().any(|x| x.protocol == protocol::IKE) {
        return ike_rekey_request(sa, now, header, &p, s, nonce_i.clone(), chan, ep);
    }
    let rekey = notify_of(&p, notify::REKEY_SA).map(|n| n.spi.clone());
    let old = match &rekey {
        None => None,
        Some(spi) => {
            let spi = <[u8; 4]>::try_from(spi.as_slice())
                .map(u32::from_be_bytes)
                .unwrap_or(0);
            match sa.children.iter().find(|c| c.spi_out == spi) {
                None => {
                    info!(ike = %sa.id, spi = format_args!("{spi:08x}"), "rekey of an unknown Child SA");
                    return temporary_failure(sa, chan, &header, notify::CHILD_SA_NOT_FOUND, ep);
                }
                Some(c) if matches!(c.state, ChildSaState::Rekeyed | ChildSaState::Deleting) => {
                    // Section 2.25.1: it is on its way out; the peer retries or
                    // already has our replacement.
                    return temporary_failure(sa, chan, &header, notify::TEMPORARY_FAILURE, ep);
                }
                Some(c) => Some(c.id),
            }
        }
    };
    let (Some(ti), Some(tr)) = (tsi(&p), tsr(&p)) else {
        return temporary_failure(sa, chan, &header, notify::INVALID_SYNTAX, ep);
    };
    let conn = sa.conn.clone();
    let chosen = match old.and_then(|id| sa.children.iter().find(|c| c.id == id)) {
        Some(oc) => {
            let cfg = conn.children.iter().position(|c| c.name == oc.name);
            match cfg.and_then(|i| {
                select_esp(&s.proposals, &conn.children[i].esp_proposals, true).map(|x| (i, x))
            }) {
                Some((i, (algs, _, spi_out))) => {
                    let remote_ts = ts::narrow(&ti.selectors, &sa.peer_ts(&conn.children[i]));
                    let local_ts = ts::narrow(&tr.selectors, &sa.our_ts(&conn.children[i]));
                    if remote_ts.is_empty() || local_ts.is_empty() {
                        Err((
                            notify::TS_UNACCEPTABLE,
                            Reason::TsUnacceptable("rekey with other selectors".into()),
                        ))
                    } else {
                        Ok((i, algs, spi_out, local_ts, remote_ts))
                    }
                }
                None => Err((
                    notify::NO_PROPOSAL_CHOSEN,
                    Reason::NoProposalChosen("no ESP proposal of the peer's rekey matches".into()),
                )),
            }
        }
        None => select_child(sa, &s.proposals, &ti.selectors, &tr.selectors, true),
    };
    let (config, algs, spi_out, local_ts, remote_ts) = match chosen {
        Ok(c) => c,
        Err((n, r)) => {
            warn!(ike = %sa.id, reason = %r, "CREATE_CHILD_SA refused");
            return temporary_failure(sa, chan, &header, n, ep);
        }
    };
    let role = match old.and_then(|id| sa.children.iter().find(|c| c.id == id)) {
        Some(oc) => oc.role,
        None => {
            let offered = per_resource::present(&p);
            match per_resource::responder_role(sa, config, &local_ts, &remote_ts, offered, ep) {
                Ok(role) => role,
                Err(()) => {
                    info!(ike = %sa.id, "CREATE_CHILD_SA: every worker has a per-resource Child SA for these selectors");
                    return temporary_failure(sa, chan, &header, notify::TS_MAX_QUEUE, ep);
                }
            }
        }
    };
    let pfs = match algs.dh {
        None => None,
        Some(g) => match ke(&p).filter(|k| k.group == g.id()) {
            Some(k) => Some((g, k.data.clone())),
            None => {
                sa.respond(
                    chan,
                    exchange::CREATE_CHILD_SA,
                    header.message_id,
                    &[Payload::Notify(Notify::new(
                        notify::INVALID_KE_PAYLOAD,
                        g.id().to_be_bytes().to_vec(),
                    ))],
                    ep,
                );
                return;
            }
        },
    };
    let result = (|| -> Result<Vec<Payload>, Reason> {
        let nonce_r = random_vec(ep, NONCE_LEN)?;
        let (ke_r, shared) = match &pfs {
            None => (None, None),
            Some((g, data)) => {
                let dh = DhPrivate::generate(*g, &mut *ep.rng)
                    .map_err(|e| Reason::Internal(e.to_string()))?;
                let shared = dh
                    .agree(data)
                    .map_err(|e| Reason::Protocol(e.to_string()))?;
                (
                    Some(KeyExchange {
                        group: g.id(),
                        data: dh.public().to_vec(),
                    }),
                    Some(shared),
                )
            }
        };
        let keys = child_keymat(
            chan.algs.prf,
            &chan.keys.sk_d,
            shared.as_deref().map(|v| v.as_slice()),
            nonce_i,
            &nonce_r,
            algs.encr,
            None,
        )
        .map_err(|e| Reason::Internal(e.to_string()))?;
        let spi_in = random_child_spi(ep)?;
        let new_id = install_child(
            sa,
            now,
            config,
            algs,
            spi_in,
            spi_out,
            local_ts.clone(),
            remote_ts.clone(),
            &keys,
            false,
            old,
            role,
            ep,
        )?;
        if let Some(oid) = old {
            let min_nonce = std::cmp::min(nonce_i.clone(), nonce_r.clone());
            if let Some(oc) = sa.children.iter_mut().find(|c| c.id == oid) {
                if oc.state == ChildSaState::Rekeying {
                    debug!(ike = %sa.id, child = %oid, "simultaneous rekey detected");
                    oc.collision = Some((new_id, min_nonce));
                } else {
                    oc.state = ChildSaState::Rekeyed;
                    oc.rekey_at = None;
                }
            }
        }
        let mut out = vec![
            Payload::Sa(SecurityAssociation {
                proposals: vec![EspProposal::from_chosen(&algs).to_wire(
                    super::proposal::esp_number(&s.proposals, &algs, true),
                    spi_in,
                    true,
                )],
            }),
            Payload::Nonce(nonce_r),
        ];
        if let Some(k) = ke_r {
            out.push(Payload::Ke(k));
        }
        if role.announced() {
            out.push(per_resource::notify());
        }
        out.push(Payload::TsI(TrafficSelectors {
            selectors: remote_ts.clone(),
        }));
        out.push(Payload::TsR(TrafficSelectors {
            selectors: local_ts.clone(),
        }));
        Ok(out)
    })();
    match result {
        Ok(out) => {
            info!(ike = %sa.id, rekey = old.is_some(), "CREATE_CHILD_SA: responded");
            sa.respond(chan, exchange::CREATE_CHILD_SA, header.message_id, &out, ep);
        }
        Err(r) => {
            warn!(ike = %sa.id, reason = %r, "CREATE_CHILD_SA failed");
            let n = if matches!(r, Reason::Protocol(_)) {
                notify::INVALID_SYNTAX
            } else {
                notify::TEMPORARY_FAILURE
            };
            temporary_failure(sa, chan, &header, n, ep);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn ike_rekey_request(
    sa: &mut IkeSa,
    now: Instant,
    header: IkeHeader,
    p: &[Payload],
    s: &SecurityAssociation,
    nonce_i: Vec<u8>,
    chan: &mut Channel,
    ep: &mut Endpoint,
) {
    // Anything of ours in flight would be stranded on the old SPIs, and a
    // simultaneous IKE rekey is resolved by both retrying later.
    if chan.outstanding.is_some() || sa.old_chan_busy() {
        info!(ike = %sa.id, "IKE rekey request while busy: TEMPORARY_FAILURE");
        return temporary_failure(sa, chan, &header, notify::TEMPORARY_FAILURE, ep);
    }
    sa.drop_old_chan(ep);
    let Some((algs, number)) = select_ike(&s.proposals, &sa.conn.proposals) else {
        warn!(ike = %sa.id, "IKE rekey: no proposal chosen");
        return temporary_failure(sa, chan, &header, notify::NO_PROPOSAL_CHOSEN, ep);
    };
    let peer_spi = s
        .proposals
        .iter()
        .find(|x| x.number == number && x.protocol == protocol::IKE)
        .and_then(|x| <[u8; 8]>::try_from(x.spi.as_slice()).ok())
        .map(u64::from_be_bytes)
        .filter(|s| *s != 0);
    let Some(peer_spi) = peer_spi else {
        return temporary_failure(sa, chan, &header, notify::INVALID_SYNTAX, ep);
    };
    let Some(k) = ke(p).filter(|k| k.group == algs.dh.id()) else {
        sa.respond(
            chan,
            exchange::CREATE_CHILD_SA,
            header.message_id,
            &[Payload::Notify(Notify::new(
                notify::INVALID_KE_PAYLOAD,
                algs.dh.id().to_be_bytes().to_vec(),
            ))],
            ep,
        );
        return;
    };
    let result = (|| -> Result<(Vec<Payload>, Channel), Reason> {
        let dh = DhPrivate::generate(algs.dh, &mut *ep.rng)
            .map_err(|e| Reason::Internal(e.to_string()))?;
        let shared = dh
            .agree(&k.data)
            .map_err(|e| Reason::Protocol(e.to_string()))?;
        let our_spi = random_ike_spi(ep)?;
        let nonce_r = random_vec(ep, NONCE_LEN)?;
        let keys = IkeKeys::derive(
            algs.prf,
            algs.encr,
            algs.integ,
            &shared,
            &nonce_i,
            &nonce_r,
            peer_spi,
            our_spi,
            Some((chan.algs.prf, &chan.keys.sk_d)),
        )
        .map_err(|e| Reason::Internal(e.to_string()))?;
        let new = Channel::new(peer_spi, our_spi, false, algs, keys)?;
        new.log_keys(ep);
        let out = vec![
            Payload::Sa(SecurityAssociation {
                proposals: vec![
                    IkeProposal::from_chosen(&algs).to_wire(number, our_spi.to_be_bytes().to_vec())
                ],
            }),
            Payload::Nonce(nonce_r),
            Payload::Ke(KeyExchange {
                group: algs.dh.id(),
                data: dh.public().to_vec(),
            }),
        ];
        Ok((out, new))
    })();
    match result {
        Ok((out, new)) => {
            sa.respond(chan, exchange::CREATE_CHILD_SA, header.message_id, &out, ep);
            ep.by_spi.insert(new.spi_r, sa.id);
            info!(ike = %sa.id, algorithms = %algs, "IKE SA rekeyed (responder)");
            let mut old = std::mem::replace(chan, new);
            // Our requests not sent yet go out on the new SPIs.
            chan.queue = std::mem::take(&mut old.queue);
            // The old SPIs stay until the initiator deletes them.
            sa.old_chan = Some((old, now + ep.settings.linger * 6));
            super::auth::established(sa, now, true, &algs, ep);
        }
        Err(r) => {
            warn!(ike = %sa.id, reason = %r, "IKE rekey failed");
            temporary_failure(sa, chan, &header, notify::TEMPORARY_FAILURE, ep);
        }
    }
}

/// What a usable CREATE_CHILD_SA response gave: algorithms, the peer's
/// SPI, its nonce, the PFS secret, our local and remote selectors.
type ChildAnswer = (
    ChildAlgorithms,
    u32,
    Vec<u8>,
    Option<zeroize::Zeroizing<Vec<u8>>>,
    Vec<TrafficSelector>,
    Vec<TrafficSelector>,
);

/// The answer to our CREATE_CHILD_SA for a Child SA.
pub(crate) fn handle_child_response(
    sa: &mut IkeSa,
    now: Instant,
    mut req: ChildRequest,
    p: Vec<Payload>,
    chan: &mut Channel,
    ep: &mut Endpoint,
) {
    let conn = sa.conn.clone();
    let name = conn
        .children
        .get(req.config)
        .map(|c| c.name.clone())
        .unwrap_or_default();
    let retry_delay = super::common::jittered(REKEY_RETRY * 2, REKEY_RETRY, ep);
    let back_to_installed = |sa: &mut IkeSa, retry: bool| {
        if let Some(c) = req
            .rekey
            .and_then(|id| sa.children.iter_mut().find(|c| c.id == id))
        {
            if c.state == ChildSaState::Rekeying {
                c.state = ChildSaState::Installed;
                c.collision = None;
                if retry {
                    c.rekey_at = Some(now + retry_delay);
                }
            }
        }
    };
    if let Some(n) = error_notify(&p) {
        ep.child_spis.remove(&req.spi_in);
        if n.kind == notify::INVALID_KE_PAYLOAD && !req.ke_retried {
            let g = crate::wire::be16(&n.data, 0).and_then(DhGroup::from_id);
            let ok = g.is_some_and(|g| {
                conn.children
                    .get(req.config)
                    .is_some_and(|c| c.esp_proposals.iter().any(|e| e.dh.contains(&g)))
            });
            if ok {
                info!(ike = %sa.id, "CREATE_CHILD_SA: peer asks for another PFS group");
                let purpose = match (req.rekey, req.role) {
                    (Some(id), _) => Some(Purpose::Rekey(id)),
                    (None, ResourceRole::PerResource(w)) => sa
                        .children
                        .iter()
                        .find(|c| {
                            c.role == ResourceRole::Fallback
                                && c.local_ts == req.local_ts
                                && c.remote_ts == req.remote_ts
                        })
                        .map(|c| Purpose::PerResource(c.id, w)),
                    (None, _) => Some(Purpose::New),
                };
                match purpose
                    .ok_or_else(|| Reason::Internal("the fallback child is gone".into()))
                    .and_then(|purpose| new_child_request(sa, req.config, purpose, g, ep))
                {
                    Ok(mut again) => {
                        again.ke_retried = true;
                        let payloads = build_child_request(sa, &again);
                        chan.queue.push_front(Queued {
                            exchange: exchange::CREATE_CHILD_SA,
                            payloads,
                            request: Request::CreateChild(again),
                        });
                        return;
                    }
                    Err(r) => warn!(ike = %sa.id, reason = %r, "cannot retry CREATE_CHILD_SA"),
                }
            }
        }
        if n.kind == notify::TS_MAX_QUEUE {
            // RFC 9611: the peer has a per-resource SA for each of its
            // resources; our worker without one sends on the fallback SA.
            info!(ike = %sa.id, child = %name, role = ?req.role, "CREATE_CHILD_SA: the peer takes no further per-resource Child SA");
            back_to_installed(sa, false);
            return;
        }
        let reason = match n.kind {
            notify::NO_PROPOSAL_CHOSEN => {
                Reason::NoProposalChosen("the peer accepted none of our ESP proposals".into())
            }
            notify::TS_UNACCEPTABLE => {
                Reason::TsUnacceptable("the peer accepted none of our traffic selectors".into())
            }
            k => Reason::PeerError(k),
        };
        let retry = matches!(n.kind, notify::TEMPORARY_FAILURE);
        info!(ike = %sa.id, child = %name, %reason, "CREATE_CHILD_SA not done");
        back_to_installed(sa, retry);
        if req.rekey.is_none() {
            ep.events.push_back(Event::ChildSaDown {
                ike: sa.id,
                child: None,
                connection: conn.name.clone(),
                name,
                reason,
            });
        }
        return;
    }
    let result = (|| -> Result<ChildAnswer, Reason> {
        let cfg = conn
            .children
            .get(req.config)
            .ok_or_else(|| Reason::Internal("child config vanished".into()))?;
        let s = sa_payload(&p)
            .ok_or_else(|| Reason::Protocol("no SA in the CREATE_CHILD_SA response".into()))?;
        if s.proposals.len() != 1 {
            return Err(Reason::Protocol("peer chose more than one proposal".into()));
        }
        let (algs, _, spi_out) =
            select_esp(&s.proposals, &cfg.esp_proposals, true).ok_or_else(|| {
                Reason::NoProposalChosen("peer chose an ESP proposal we did not offer".into())
            })?;
        let nonce_r = nonce(&p)
            .ok_or_else(|| Reason::Protocol("no nonce".into()))?
            .clone();
        let shared = match (algs.dh, &req.dh) {
            (None, _) => None,
            (Some(g), Some(dh)) if dh.group() == g => {
                let k = ke(&p)
                    .filter(|k| k.group == g.id())
                    .ok_or_else(|| Reason::Protocol("no KE for PFS".into()))?;
                Some(
                    dh.agree(&k.data)
                        .map_err(|e| Reason::Protocol(e.to_string()))?,
                )
            }
            _ => {
                return Err(Reason::Protocol(
                    "peer chose a PFS group other than our KE's".into(),
                ))
            }
        };
        let (Some(ti), Some(tr)) = (tsi(&p), tsr(&p)) else {
            return Err(Reason::Protocol("no traffic selectors".into()));
        };
        if !ts::within(&ti.selectors, &req.local_ts) || !ts::within(&tr.selectors, &req.remote_ts) {
            return Err(Reason::TsUnacceptable(
                "peer widened our traffic selectors".into(),
            ));
        }
        Ok((
            algs,
            spi_out,
            nonce_r,
            shared,
            ti.selectors.clone(),
            tr.selectors.clone(),
        ))
    })();
    let (algs, spi_out, nonce_r, shared, local_ts, remote_ts) = match result {
        Ok(x) => x,
        Err(r) => {
            warn!(ike = %sa.id, child = %name, reason = %r, "CREATE_CHILD_SA response unusable");
            ep.child_spis.remove(&req.spi_in);
            back_to_installed(sa, false);
            // Whatever the peer installed for it goes again.
            let d = vec![Payload::Delete(Delete {
                protocol: protocol::ESP,
                spi_size: 4,
                spis: vec![req.spi_in.to_be_bytes().to_vec()],
            })];
            chan.queue.push_back(Queued {
                exchange: exchange::INFORMATIONAL,
                payloads: d,
                request: Request::DeleteChildren,
            });
            return;
        }
    };
    // Section 2.8.1: both sides rekeyed the same SA; the SA created with
    // the lowest of the four nonces is redundant and its creator deletes it.
    let collision = req
        .rekey
        .and_then(|id| sa.children.iter().find(|c| c.id == id))
        .and_then(|c| c.collision.clone());
    if let Some((_peer_new, peer_min)) = &collision {
        let ours_min = std::cmp::min(&req.nonce_i, &nonce_r);
        if ours_min < peer_min {
            info!(ike = %sa.id, child = %name, "simultaneous rekey lost: deleting our redundant SA");
            let d = vec![Payload::Delete(Delete {
                protocol: protocol::ESP,
                spi_size: 4,
                spis: vec![req.spi_in.to_be_bytes().to_vec()],
            })];
            ep.child_spis.remove(&req.spi_in);
            if let Some(c) = req
                .rekey
                .and_then(|id| sa.children.iter_mut().find(|c| c.id == id))
            {
                // The peer won and deletes the old SA.
                c.state = ChildSaState::Rekeyed;
                c.collision = None;
            }
            chan.queue.push_back(Queued {
                exchange: exchange::INFORMATIONAL,
                payloads: d,
                request: Request::DeleteChildren,
            });
            return;
        }
        info!(ike = %sa.id, child = %name, "simultaneous rekey won");
    }
    let keys = match child_keymat(
        chan.algs.prf,
        &chan.keys.sk_d,
        shared.as_deref().map(|v| v.as_slice()),
        &req.nonce_i,
        &nonce_r,
        algs.encr,
        None,
    ) {
        Ok(k) => k,
        Err(e) => {
            warn!(ike = %sa.id, error = %e, "Child SA key derivation failed");
            return;
        }
    };
    let role = per_resource::initiator_role(req.role, &p);
    match install_child(
        sa, now, req.config, algs, req.spi_in, spi_out, local_ts, remote_ts, &keys, true,
        req.rekey, role, ep,
    ) {
        Ok(id) => {
            if req.rekey.is_none() && role == ResourceRole::Fallback {
                per_resource::queue_for_workers(sa, req.config, id, chan, ep);
            }
        }
        Err(r) => {
            warn!(ike = %sa.id, reason = %r, "Child SA not installed");
            return;
        }
    }
    req.dh = None;
    if let Some(old) = req.rekey {
        // Make-before-break: the new SAs are in, the old ones go.
        let spi = sa.children.iter().find(|c| c.id == old).map(|c| c.spi_in);
        if let Some(spi) = spi {
            sa.remove_child(old, Reason::Rekeyed, ep);
            let d = vec![Payload::Delete(Delete {
                protocol: protocol::ESP,
                spi_size: 4,
                spis: vec![spi.to_be_bytes().to_vec()],
            })];
            chan.queue.push_back(Queued {
                exchange: exchange::INFORMATIONAL,
                payloads: d,
                request: Request::DeleteChildren,
            });
        }
    }
}

/// The answer to our IKE rekey.
pub(crate) fn handle_ike_rekey_response(
    sa: &mut IkeSa,
    now: Instant,
    req: IkeRekeyRequest,
    p: Vec<Payload>,
    chan: &mut Channel,
    ep: &mut Endpoint,
) {
    if let Some(n) = error_notify(&p) {
        if ep.by_spi.get(&req.spi) == Some(&sa.id) {
            ep.by_spi.remove(&req.spi);
        }
        if n.kind == notify::INVALID_KE_PAYLOAD && !req.ke_retried {
            if let Some(g) = crate::wire::be16(&n.data, 0).and_then(DhGroup::from_id) {
                if sa.conn.proposals.iter().any(|x| x.dh.contains(&g)) {
                    // Retry right after this call returns the channel.
                    sa.rekey_at = Some(now);
                    sa.pending_rekey_group = Some(g);
                    return;
                }
            }
        }
        info!(ike = %sa.id, notify = n.kind, "IKE rekey not done, retrying later");
        sa.rekey_at = Some(now + super::common::jittered(REKEY_RETRY * 2, REKEY_RETRY, ep));
        return;
    }
    let result = (|| -> Result<(Channel, super::proposal::IkeAlgorithms), Reason> {
        let s = sa_payload(&p)
            .ok_or_else(|| Reason::Protocol("no SA in the IKE rekey response".into()))?;
        if s.proposals.len() != 1 {
            return Err(Reason::Protocol("peer chose more than one proposal".into()));
        }
        let (algs, _) = select_ike(&s.proposals, &sa.conn.proposals).ok_or_else(|| {
            Reason::NoProposalChosen("peer chose an IKE proposal we did not offer".into())
        })?;
        let peer_spi = <[u8; 8]>::try_from(s.proposals[0].spi.as_slice())
            .map(u64::from_be_bytes)
            .map_err(|_| Reason::Protocol("IKE rekey proposal without an 8-byte SPI".into()))?;
        let nonce_r = nonce(&p).ok_or_else(|| Reason::Protocol("no nonce".into()))?;
        let k = ke(&p)
            .filter(|k| k.group == algs.dh.id() && req.dh.group() == algs.dh)
            .ok_or_else(|| Reason::Protocol("KE does not match the chosen group".into()))?;
        let shared = req
            .dh
            .agree(&k.data)
            .map_err(|e| Reason::Protocol(e.to_string()))?;
        let keys = IkeKeys::derive(
            algs.prf,
            algs.encr,
            algs.integ,
            &shared,
            &req.nonce_i,
            nonce_r,
            req.spi,
            peer_spi,
            Some((chan.algs.prf, &chan.keys.sk_d)),
        )
        .map_err(|e| Reason::Internal(e.to_string()))?;
        let new = Channel::new(req.spi, peer_spi, true, algs, keys)?;
        new.log_keys(ep);
        Ok((new, algs))
    })();
    match result {
        Ok((new, algs)) => {
            info!(ike = %sa.id, algorithms = %algs, "IKE SA rekeyed");
            let mut old = std::mem::replace(chan, new);
            // Requests still queued belong on the new SPIs.
            chan.queue = std::mem::take(&mut old.queue);
            let d = [Payload::Delete(Delete {
                protocol: protocol::IKE,
                spi_size: 0,
                spis: Vec::new(),
            })];
            if let Err(r) = sa.send_on(
                &mut old,
                now,
                exchange::INFORMATIONAL,
                &d,
                Request::DeleteIke,
                ep,
            ) {
                warn!(ike = %sa.id, reason = %r, "cannot delete the old IKE SA");
            }
            sa.old_chan = Some((old, now + ep.settings.linger));
            super::auth::established(sa, now, true, &algs, ep);
        }
        Err(r) => {
            warn!(ike = %sa.id, reason = %r, "IKE rekey response unusable");
            if ep.by_spi.get(&req.spi) == Some(&sa.id) {
                ep.by_spi.remove(&req.spi);
            }
            sa.rekey_at = Some(now + super::common::jittered(REKEY_RETRY * 2, REKEY_RETRY, ep));
        }
    }
}

pub(crate) fn pending_rekey(
    sa: &mut IkeSa,
    now: Instant,
    ep: &mut Endpoint,
) -> Result<(), CommandError> {
    let g = sa.pending_rekey_group.take();
    start_ike_rekey_with(sa, now, g, ep)
}
