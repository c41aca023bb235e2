//! RFC 9611 per-resource Child SAs between two endpoints on a virtual
//! clock: one fallback child plus one per worker when both sides do it,
//! exactly one child when either does not, TS_MAX_QUEUE when the responder
//! runs out of workers, and each per-resource child rekeyed and deleted on
//! its own.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use xdpsec_api::{Direction, SaSpec};
use xdpsec_control::ike::{ChildSaId, Event, Target};
use xdpsec_control::wire::consts::notify;

const PROPOSAL: &str = "aes128gcm16-prfsha256-x25519";

/// A and B with `workers_a`/`workers_b` data-plane workers; `extra_b` goes
/// into B's connection section.
fn pair(workers_a: u32, workers_b: u32, extra_b: &str, seed: u64) -> Sim {
    let mut a = node(
        &psk_config(A, B, PROPOSAL, "", ""),
        A,
        seed,
        fast_settings(),
    );
    let mut b = node(
        &psk_config(B, A, PROPOSAL, extra_b, ""),
        B,
        seed + 1000,
        fast_settings(),
    );
    a.ep.set_resources(workers_a);
    b.ep.set_resources(workers_b);
    Sim::new(vec![a, b], seed)
}

fn up(sim: &mut Sim) {
    sim.nodes[0].ep.initiate(sim.now, "gw").unwrap();
    sim.run_for(Duration::from_secs(5));
}

/// The installed outbound SAs of a node by resource (`None`: fallback).
fn outbound_by_resource(events: &[Event]) -> BTreeMap<Option<u32>, Vec<SaSpec>> {
    let mut m: BTreeMap<Option<u32>, Vec<SaSpec>> = BTreeMap::new();
    for ((_, dir), spec) in installed(events) {
        if dir == Direction::Out {
            m.entry(spec.resource).or_default().push(spec);
        }
    }
    m
}

/// The child an installed SA belongs to.
fn child_of(events: &[Event], spi: u32, direction: Direction) -> ChildSaId {
    events
        .iter()
        .rev()
        .find_map(|e| match e {
            Event::InstallSa { child, spec, .. }
                if spec.spi == spi && spec.direction == direction =>
            {
                Some(*child)
            }
            _ => None,
        })
        .expect("the SA was installed")
}

fn children(sim: &Sim, node: usize) -> usize {
    sim.nodes[node]
        .ep
        .list_sas(sim.now)
        .iter()
        .map(|s| s.children.len())
        .sum()
}

#[test]
fn the_notify_numbers_are_rfc_9611s() {
    // IANA: SA_RESOURCE_INFO 16444 (16442 is RFC 9347's USE_AGGFRAG),
    // TS_MAX_QUEUE 48.
    assert_eq!(notify::SA_RESOURCE_INFO, 16444);
    assert_eq!(notify::TS_MAX_QUEUE, 48);
    assert!(!notify::is_error(notify::SA_RESOURCE_INFO));
    assert!(notify::is_error(notify::TS_MAX_QUEUE));
}

#[test]
fn a_fallback_child_and_one_per_worker() {
    let mut sim = pair(2, 2, "", 11);
    up(&mut sim);
    for n in 0..2 {
        let events = sim.events(n);
        assert_eq!(
            count(events, |e| matches!(e, Event::ChildSaUp { .. })),
            3,
            "node {n}: {events:#?}"
        );
        assert_eq!(children(&sim, n), 3);
        let out = outbound_by_resource(events);
        let keys: Vec<Option<u32>> = out.keys().copied().collect();
        assert_eq!(keys, vec![None, Some(0), Some(1)], "node {n}");
        assert!(out.values().all(|v| v.len() == 1));
        // Every per-resource SA carries exactly the fallback's selectors:
        // that is how the data plane pairs them with its policy.
        let fallback = &out[&None][0];
        for w in [0, 1] {
            assert_eq!(out[&Some(w)][0].selectors, fallback.selectors);
            assert_eq!(out[&Some(w)][0].tunnel_remote, fallback.tunnel_remote);
        }
        // Only the fallback child installs policies.
        let policy_events: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                Event::InstallPolicies { child, policies } => Some((*child, policies.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(policy_events.len(), 1, "node {n}");
        assert_eq!(
            policy_events[0].0,
            child_of(events, fallback.spi, Direction::Out)
        );
        assert!(policy_events[0]
            .1
            .iter()
            .any(|p| p.direction == Direction::Out && p.spi == Some(fallback.spi)));
    }
    assert_sas_match(&installed(sim.events(0)), &installed(sim.events(1)));
}

#[test]
fn one_worker_makes_no_per_resource_child() {
    let mut sim = pair(1, 4, "", 12);
    up(&mut sim);
    for n in 0..2 {
        assert_eq!(children(&sim, n), 1, "node {n}");
        assert!(installed(sim.events(n))
            .values()
            .all(|s| s.resource.is_none()));
    }
}

#[test]
fn a_peer_without_support_gets_exactly_one_child() {
    // B stands for a peer that does not know RFC 9611 (strongSwan 5.9):
    // it neither answers nor sends SA_RESOURCE_INFO.
    let mut sim = pair(2, 2, "per_resource_sas = false", 13);
    up(&mut sim);
    for n in 0..2 {
        let events = sim.events(n);
        assert_eq!(
            count(events, |e| matches!(e, Event::ChildSaUp { .. })),
            1,
            "node {n}: {events:#?}"
        );
        assert_eq!(children(&sim, n), 1);
        assert!(installed(events).values().all(|s| s.resource.is_none()));
        assert_eq!(count(events, |e| matches!(e, Event::ChildSaDown { .. })), 0);
    }
    // The same when the initiator is the one without support.
    let mut a = node(
        &psk_config(A, B, PROPOSAL, "per_resource_sas = false", ""),
        A,
        15,
        fast_settings(),
    );
    let mut b = node(&psk_config(B, A, PROPOSAL, "", ""), B, 16, fast_settings());
    a.ep.set_resources(2);
    b.ep.set_resources(2);
    let mut sim = Sim::new(vec![a, b], 16);
    up(&mut sim);
    for n in 0..2 {
        assert_eq!(children(&sim, n), 1, "node {n}");
    }
}

#[test]
fn the_responder_takes_one_per_worker_of_its_own() {
    let mut sim = pair(3, 2, "", 17);
    up(&mut sim);
    // A asked for three; B has two workers and answered the third with
    // TS_MAX_QUEUE: A's third worker sends on the fallback SA.
    for n in 0..2 {
        assert_eq!(children(&sim, n), 3, "node {n}");
        let keys: Vec<Option<u32>> = outbound_by_resource(sim.events(n))
            .keys()
            .copied()
            .collect();
        assert_eq!(keys, vec![None, Some(0), Some(1)], "node {n}");
        assert_eq!(
            count(sim.events(n), |e| matches!(e, Event::ChildSaDown { .. })),
            0
        );
    }
    assert_sas_match(&installed(sim.events(0)), &installed(sim.events(1)));
}

#[test]
fn each_per_resource_child_rekeys_and_goes_on_its_own() {
    let mut sim = pair(2, 2, "", 18);
    up(&mut sim);
    let before = outbound_by_resource(sim.events(0));
    let worker1 = &before[&Some(1)][0];
    let child = child_of(sim.events(0), worker1.spi, Direction::Out);

    sim.nodes[0].ep.rekey_child(sim.now, child).unwrap();
    sim.run_for(Duration::from_secs(5));
    for n in 0..2 {
        assert_eq!(children(&sim, n), 3, "node {n}");
        let after = outbound_by_resource(sim.events(n));
        let keys: Vec<Option<u32>> = after.keys().copied().collect();
        assert_eq!(
            keys,
            vec![None, Some(0), Some(1)],
            "node {n}: still one each"
        );
        // A policy event only ever for the fallback child.
        assert_eq!(
            count(sim.events(n), |e| matches!(
                e,
                Event::InstallPolicies { .. }
            )),
            1
        );
    }
    let after = outbound_by_resource(sim.events(0));
    assert_ne!(after[&Some(1)][0].spi, worker1.spi, "worker 1's SA is new");
    assert_eq!(after[&Some(0)][0].spi, before[&Some(0)][0].spi);
    assert_eq!(after[&None][0].spi, before[&None][0].spi);
    assert_sas_match(&installed(sim.events(0)), &installed(sim.events(1)));

    // Deleting worker 0's child leaves the fallback and its policies.
    let worker0 = child_of(sim.events(0), after[&Some(0)][0].spi, Direction::Out);
    sim.nodes[0]
        .ep
        .terminate(sim.now, Target::ChildSa(worker0))
        .unwrap();
    sim.run_for(Duration::from_secs(5));
    for n in 0..2 {
        assert_eq!(children(&sim, n), 2, "node {n}");
        let keys: Vec<Option<u32>> = outbound_by_resource(sim.events(n))
            .keys()
            .copied()
            .collect();
        assert_eq!(keys, vec![None, Some(1)], "node {n}");
        assert_eq!(
            count(sim.events(n), |e| matches!(e, Event::DeletePolicies { .. })),
            0,
            "node {n}"
        );
    }

    // Rekeying the fallback child keeps it the fallback.
    let fallback = child_of(sim.events(0), after[&None][0].spi, Direction::Out);
    sim.nodes[0].ep.rekey_child(sim.now, fallback).unwrap();
    sim.run_for(Duration::from_secs(5));
    for n in 0..2 {
        let keys: Vec<Option<u32>> = outbound_by_resource(sim.events(n))
            .keys()
            .copied()
            .collect();
        assert_eq!(keys, vec![None, Some(1)], "node {n}");
        assert_eq!(
            count(sim.events(n), |e| matches!(
                e,
                Event::InstallPolicies { .. }
            )),
            2,
            "node {n}: the new fallback child's policies"
        );
    }
    assert_ne!(
        outbound_by_resource(sim.events(0))[&None][0].spi,
        after[&None][0].spi
    );
    assert_sas_match(&installed(sim.events(0)), &installed(sim.events(1)));
}

#[test]
fn deleting_the_fallback_child_takes_its_per_resource_children_along() {
    let mut sim = pair(2, 2, "", 19);
    up(&mut sim);
    let fallback_spi = outbound_by_resource(sim.events(0))[&None][0].spi;
    let fallback = child_of(sim.events(0), fallback_spi, Direction::Out);
    sim.nodes[0]
        .ep
        .terminate(sim.now, Target::ChildSa(fallback))
        .unwrap();
    sim.run_for(Duration::from_secs(5));
    for n in 0..2 {
        assert_eq!(children(&sim, n), 0, "node {n}");
        assert!(installed(sim.events(n)).is_empty(), "node {n}");
        assert_eq!(
            count(sim.events(n), |e| matches!(e, Event::DeletePolicies { .. })),
            1,
            "node {n}: the fallback's policies"
        );
    }
}
