//! RFC 9611 per-resource Child SAs.
//!
//! The first Child SA of a set of selectors is made with SA_RESOURCE_INFO
//! (in IKE_AUTH or CREATE_CHILD_SA); if the peer answers with it too, that
//! child is the *fallback* SA, and the side that made it adds one Child SA
//! with the same selectors per data-plane worker (CREATE_CHILD_SA with
//! SA_RESOURCE_INFO). Each is bound to one worker, which sends on it with
//! its own sequence numbers and counters; the peer checks each in its own
//! replay window. The responder binds each to its own next free worker and
//! answers TS_MAX_QUEUE when it has none left. A peer without support never
//! answers with the notify (RFC 7296 says to ignore unknown status
//! notifies), so it gets one Child SA as before.
//!
//! Each per-resource child is rekeyed and deleted on its own, as any
//! child; a rekey keeps its role and announces it again.

use tracing::info;

use super::child::ResourceRole;
use super::endpoint::Endpoint;
use super::sa::IkeSa;
use crate::wire::consts::notify;
use crate::wire::{Notify, Payload, TrafficSelector};

/// The SA_RESOURCE_INFO notify we send: no resource identifier, since the
/// peer must not interpret one and ours would only name a local worker.
pub(crate) fn notify() -> Payload {
    Payload::Notify(Notify::new(notify::SA_RESOURCE_INFO, Vec::new()))
}

/// Whether a message carries SA_RESOURCE_INFO.
pub(crate) fn present(p: &[Payload]) -> bool {
    super::common::notify_of(p, notify::SA_RESOURCE_INFO).is_some()
}

/// What a Child SA we initiated is, once the peer answered: a fallback SA
/// only if the peer said SA_RESOURCE_INFO too; a per-resource SA stays
/// one either way (the peer holds a working pair, and which worker sends
/// on our side is ours to say).
pub(crate) fn initiator_role(asked: ResourceRole, answer: &[Payload]) -> ResourceRole {
    match asked {
        ResourceRole::Fallback if !present(answer) => ResourceRole::Plain,
        role => role,
    }
}

/// The responder's role for a new (not rekeyed) Child SA of config
/// `config` with these selectors, whose request carried SA_RESOURCE_INFO
/// (`offered`): plain if either side does not do RFC 9611, per-resource
/// if a fallback child with the same selectors is up (bound to our lowest
/// worker without one), fallback otherwise. `Err` when every worker has
/// one already: the answer is TS_MAX_QUEUE.
pub(crate) fn responder_role(
    sa: &IkeSa,
    config: usize,
    local_ts: &[TrafficSelector],
    remote_ts: &[TrafficSelector],
    offered: bool,
    ep: &Endpoint,
) -> Result<ResourceRole, ()> {
    if !offered || !sa.conn.per_resource_sas {
        return Ok(ResourceRole::Plain);
    }
    let Some(name) = sa.conn.children.get(config).map(|c| c.name.as_str()) else {
        return Ok(ResourceRole::Plain);
    };
    let same = |c: &&super::child::ChildSa| {
        c.name == name && c.local_ts == local_ts && c.remote_ts == remote_ts
    };
    if !sa
        .children
        .iter()
        .filter(same)
        .any(|c| c.role == ResourceRole::Fallback)
    {
        return Ok(ResourceRole::Fallback);
    }
    let taken: Vec<u32> = sa
        .children
        .iter()
        .filter(same)
        .filter_map(|c| match c.role {
            ResourceRole::PerResource(w) => Some(w),
            _ => None,
        })
        .collect();
    (0..ep.resources)
        .find(|w| !taken.contains(w))
        .map(ResourceRole::PerResource)
        .ok_or(())
}

/// The per-resource children (not in `ids`) of the fallback children in
/// `ids`: same config name and selectors. None of a fallback child that
/// has a successor (a rekeyed one that expires): they are the new one's.
pub(crate) fn siblings_of(sa: &IkeSa, ids: &[super::ChildSaId]) -> Vec<super::ChildSaId> {
    let same = |a: &super::child::ChildSa, b: &super::child::ChildSa| {
        a.name == b.name && a.local_ts == b.local_ts && a.remote_ts == b.remote_ts
    };
    let fallbacks: Vec<&super::child::ChildSa> = sa
        .children
        .iter()
        .filter(|c| ids.contains(&c.id) && c.role == ResourceRole::Fallback)
        .filter(|f| {
            !sa.children
                .iter()
                .any(|o| !ids.contains(&o.id) && o.role == ResourceRole::Fallback && same(o, f))
        })
        .collect();
    sa.children
        .iter()
        .filter(|c| matches!(c.role, ResourceRole::PerResource(_)) && !ids.contains(&c.id))
        .filter(|c| fallbacks.iter().any(|f| same(f, c)))
        .map(|c| c.id)
        .collect()
}

/// After a fallback child we initiated is up: one per-resource child per
/// worker, when there is more than one (with one worker the fallback SA
/// is that worker's alone already).
pub(crate) fn queue_for_workers(
    sa: &mut IkeSa,
    config: usize,
    fallback: super::ChildSaId,
    chan: &mut super::sa::Channel,
    ep: &mut Endpoint,
) {
    let workers = ep.resources;
    if workers < 2 {
        return;
    }
    info!(ike = %sa.id, child = %fallback, workers, "RFC 9611: requesting a per-resource Child SA per worker");
    for w in 0..workers {
        if let Err(r) = super::create_child::queue_per_resource(sa, config, fallback, w, chan, ep) {
            tracing::warn!(ike = %sa.id, reason = %r, "cannot request a per-resource Child SA");
            return;
        }
    }
}
