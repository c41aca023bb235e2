//! INFORMATIONAL (RFC 7296 section 1.4): deletes of IKE and Child SAs in
//! both directions, liveness checks, error notifies.

use std::time::Instant;

use tracing::{info, warn};

use super::endpoint::{CommandError, Endpoint};
use super::event::{ChildSaState, Reason};
use super::sa::{Channel, IkeSa, Phase, Request};
use super::ChildSaId;
use crate::wire::consts::{exchange, notify, protocol};
use crate::wire::{Delete, IkeHeader, Payload};

pub(crate) fn deletes_ike(p: &[Payload]) -> bool {
    p.iter()
        .any(|x| matches!(x, Payload::Delete(d) if d.protocol == protocol::IKE))
}

/// `terminate`: the Child SAs leave the data plane now, the peer is told.
pub(crate) fn delete_ike(sa: &mut IkeSa, now: Instant, ep: &mut Endpoint) {
    if sa.chan.is_none() || matches!(sa.phase, Phase::Deleting) {
        sa.die(Reason::LocalDelete, ep);
        return;
    }
    info!(ike = %sa.id, "INFORMATIONAL: deleting IKE SA");
    let ids: Vec<ChildSaId> = sa.children.iter().map(|c| c.id).collect();
    for id in ids {
        sa.remove_child(id, Reason::LocalDelete, ep);
    }
    sa.phase = Phase::Deleting;
    if let Some(chan) = sa.chan.as_mut() {
        chan.queue.clear();
    }
    let d = vec![Payload::Delete(Delete {
        protocol: protocol::IKE,
        spi_size: 0,
        spis: Vec::new(),
    })];
    sa.request(now, exchange::INFORMATIONAL, d, Request::DeleteIke, ep);
}

/// Deletes Child SAs (command, hard lifetime): out of the data plane now,
/// then the peer is told.
pub(crate) fn delete_children(
    sa: &mut IkeSa,
    now: Instant,
    ids: &[ChildSaId],
    reason: Reason,
    ep: &mut Endpoint,
) -> Result<(), CommandError> {
    if let Some(unknown) = ids
        .iter()
        .find(|id| !sa.children.iter().any(|c| c.id == **id))
    {
        return Err(CommandError::UnknownChildSa(*unknown));
    }
    // RFC 9611: the per-resource children of a fallback child that goes
    // carry nothing without its policies; they go with it.
    let mut all = ids.to_vec();
    all.extend(super::per_resource::siblings_of(sa, ids));
    let mut spis = Vec::new();
    for id in &all {
        if let Some(c) = sa.remove_child(*id, reason.clone(), ep) {
            spis.push(c.spi_in.to_be_bytes().to_vec());
        }
    }
    if spis.is_empty() || !matches!(sa.phase, Phase::Established) {
        return Ok(());
    }
    info!(ike = %sa.id, count = spis.len(), "INFORMATIONAL: deleting Child SAs");
    let d = vec![Payload::Delete(Delete {
        protocol: protocol::ESP,
        spi_size: 4,
        spis,
    })];
    sa.request(now, exchange::INFORMATIONAL, d, Request::DeleteChildren, ep);
    Ok(())
}

/// A request from the peer.
pub(crate) fn handle_request(
    sa: &mut IkeSa,
    _now: Instant,
    header: IkeHeader,
    p: Vec<Payload>,
    chan: &mut Channel,
    ep: &mut Endpoint,
) {
    if deletes_ike(&p) {
        info!(ike = %sa.id, "INFORMATIONAL: peer deletes the IKE SA");
        sa.respond(chan, exchange::INFORMATIONAL, header.message_id, &[], ep);
        let restart = sa
            .conn
            .children
            .iter()
            .any(|c| c.close_action == crate::config::CloseAction::Start);
        sa.die(Reason::PeerDelete, ep);
        if restart {
            ep.restart.push((sa.conn.name.clone(), 1));
        }
        return;
    }
    if let Some(n) = super::common::error_notify(&p) {
        if n.kind == notify::AUTHENTICATION_FAILED {
            warn!(ike = %sa.id, "peer rejected our authentication after IKE_AUTH");
            sa.respond(chan, exchange::INFORMATIONAL, header.message_id, &[], ep);
            sa.die(
                Reason::AuthenticationFailed("the peer rejected our authentication".into()),
                ep,
            );
            return;
        }
    }
    let mut ours = Vec::new();
    for x in &p {
        let Payload::Delete(d) = x else { continue };
        if d.protocol != protocol::ESP {
            continue;
        }
        for spi in &d.spis {
            let Ok(b) = <[u8; 4]>::try_from(spi.as_slice()) else {
                continue;
            };
            let spi = u32::from_be_bytes(b);
            let found = sa
                .children
                .iter()
                .find(|c| c.spi_out == spi)
                .map(|c| (c.id, c.spi_in, c.state));
            if let Some((id, spi_in, state)) = found {
                let rekeyed = state == ChildSaState::Rekeyed;
                let reason = if rekeyed {
                    Reason::Rekeyed
                } else {
                    Reason::PeerDelete
                };
                if let Some(c) = sa.remove_child(id, reason, ep) {
                    let config = sa.conn.children.iter().position(|k| {
                        k.name == c.name && k.close_action == crate::config::CloseAction::Start
                    });
                    if let (Some(config), false) = (config, rekeyed) {
                        if let Err(r) = super::create_child::queue_new_child(sa, config, chan, ep) {
                            tracing::warn!(ike = %sa.id, reason = %r, "cannot start the child again");
                        }
                    }
                }
                ours.push(spi_in.to_be_bytes().to_vec());
            }
        }
    }
    let out = if ours.is_empty() {
        Vec::new()
    } else {
        info!(ike = %sa.id, count = ours.len(), "INFORMATIONAL: peer deleted Child SAs");
        vec![Payload::Delete(Delete {
            protocol: protocol::ESP,
            spi_size: 4,
            spis: ours,
        })]
    };
    sa.respond(chan, exchange::INFORMATIONAL, header.message_id, &out, ep);
}

/// A request on the SPIs an IKE rekey replaced: the Delete of that old IKE
/// SA is answered empty, other INFORMATIONALs as usual (Child SA deletes
/// still apply), a CREATE_CHILD_SA with TEMPORARY_FAILURE.
pub(crate) fn handle_old_request(
    sa: &mut IkeSa,
    now: Instant,
    header: IkeHeader,
    p: Vec<Payload>,
    chan: &mut Channel,
    ep: &mut Endpoint,
) {
    if deletes_ike(&p) {
        info!(ike = %sa.id, "old IKE SA deleted by the peer after rekey");
    } else if header.exchange == exchange::INFORMATIONAL {
        // Child SA deletes still apply: the Child SAs moved to the new SPIs.
        handle_request(sa, now, header, p, chan, ep);
        return;
    }
    // Anything else was sent before the peer saw the rekey: it may try
    // again on the new SPIs (section 2.25).
    let answer = if header.exchange == exchange::CREATE_CHILD_SA {
        vec![Payload::Notify(crate::wire::Notify::new(
            notify::TEMPORARY_FAILURE,
            Vec::new(),
        ))]
    } else {
        Vec::new()
    };
    sa.respond(chan, header.exchange, header.message_id, &answer, ep);
}
