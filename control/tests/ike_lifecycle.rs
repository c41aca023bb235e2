//! The life of established SAs: Child and IKE rekeys from either side
//! (make-before-break), simultaneous rekeys, deletes, DPD, lifetimes,
//! retransmission give-up, and a bounded IKE_SA_INIT flood.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use xdpsec_api::Direction;
use xdpsec_control::ike::{ChildSaId, Event, IkeSaId, LifetimeSeverity, Reason, Settings, Target};

fn established(proposal: &str, extra_conn: &str, extra_child: &str, seed: u64) -> Sim {
    let a = node(
        &psk_config(A, B, proposal, extra_conn, extra_child),
        A,
        seed,
        fast_settings(),
    );
    let b = node(
        &psk_config(B, A, proposal, extra_conn, extra_child),
        B,
        seed + 1,
        fast_settings(),
    );
    let mut sim = Sim::new(vec![a, b], seed);
    sim.nodes[0].ep.initiate(sim.now, "gw").unwrap();
    sim.run_for(Duration::from_secs(5));
    for n in 0..2 {
        assert_eq!(
            count(sim.events(n), |e| matches!(e, Event::ChildSaUp { .. })),
            1
        );
    }
    sim
}

fn child_of(sim: &Sim, n: usize) -> ChildSaId {
    let sas = sim.nodes[n].ep.list_sas(sim.now);
    assert_eq!(sas.len(), 1, "{sas:#?}");
    assert_eq!(sas[0].children.len(), 1, "{sas:#?}");
    sas[0].children[0].id
}

fn ike_of(sim: &Sim, n: usize) -> IkeSaId {
    sim.nodes[n].ep.list_sas(sim.now)[0].id
}

/// The data-plane events after index `from`, as (kind, spi, direction).
fn dataplane_ops(events: &[Event]) -> Vec<(&'static str, u32, Option<Direction>)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::InstallSa { spec, .. } => Some(("add", spec.spi, Some(spec.direction))),
            Event::DeleteSa { spi, direction, .. } => Some(("del", *spi, Some(*direction))),
            Event::InstallPolicies { policies, .. } => {
                Some(("pol", policies[0].spi.unwrap_or(0), None))
            }
            Event::DeletePolicies { .. } => Some(("unpol", 0, None)),
            _ => None,
        })
        .collect()
}

fn assert_make_before_break(events: &[Event], from: usize) {
    let ops = dataplane_ops(&events[from..]);
    let first_del = ops
        .iter()
        .position(|o| o.0 == "del")
        .expect("old SAs deleted");
    let adds: Vec<_> = ops.iter().filter(|o| o.0 == "add").collect();
    assert_eq!(adds.len(), 2, "{ops:?}");
    assert_eq!(adds[0].2, Some(Direction::In), "new inbound first: {ops:?}");
    assert!(
        ops.iter().rposition(|o| o.0 == "add").unwrap() < first_del,
        "{ops:?}"
    );
    // The policies move to the new SA, never away.
    assert!(!ops.iter().any(|o| o.0 == "unpol"), "{ops:?}");
}

#[test]
fn child_rekey_from_either_side_is_make_before_break() {
    for side in 0..2 {
        let mut sim = established("aes128gcm16-prfsha256-x25519", "", "", 30 + side as u64);
        let marks = [sim.events(0).len(), sim.events(1).len()];
        let child = child_of(&sim, side);
        let now = sim.now;
        sim.nodes[side].ep.rekey_child(now, child).unwrap();
        sim.run_for(Duration::from_secs(5));
        for (n, mark) in marks.into_iter().enumerate() {
            assert_make_before_break(sim.events(n), mark);
            let sas = sim.nodes[n].ep.list_sas(sim.now);
            assert_eq!(sas[0].children.len(), 1, "side {side} node {n}: {sas:#?}");
            assert!(sim.events(n).iter().any(|e| matches!(
                e,
                Event::ChildSaUp {
                    replaces: Some(_),
                    ..
                }
            )));
        }
        let (a, b) = (installed(sim.events(0)), installed(sim.events(1)));
        assert_eq!(a.len(), 2);
        assert_sas_match(&a, &b);
    }
}

#[test]
fn child_rekey_with_pfs() {
    let mut sim = established("aes128gcm16-prfsha256-x25519", "", "", 40);
    // Replace the ESP proposals with PFS ones on both sides and reconnect.
    let pfs = |me, peer| {
        psk_config(me, peer, "aes128gcm16-prfsha256-x25519", "", "").replace(
            "esp_proposals = [\"aes128gcm16\", \"aes256gcm16\"]",
            "esp_proposals = [\"aes256gcm16-ecp256\"]",
        )
    };
    sim.nodes[0].ep.set_connections(connections(&pfs(A, B)));
    sim.nodes[1].ep.set_connections(connections(&pfs(B, A)));
    let now = sim.now;
    sim.nodes[0]
        .ep
        .terminate(now, Target::Connection("gw".into()))
        .unwrap();
    sim.run_for(Duration::from_secs(5));
    let marks = [sim.events(0).len(), sim.events(1).len()];
    sim.nodes[0].ep.initiate(sim.now, "gw").unwrap();
    sim.run_for(Duration::from_secs(5));
    let child = child_of(&sim, 0);
    let now = sim.now;
    sim.nodes[0].ep.rekey_child(now, child).unwrap();
    sim.run_for(Duration::from_secs(5));
    let a = installed(sim.events(0));
    assert_eq!(a.len(), 2);
    assert_sas_match(&a, &installed(sim.events(1)));
    let algs = &sim.nodes[0].ep.list_sas(sim.now)[0].children[0].algorithms;
    assert!(algs.contains("ecp256"), "{algs}");
    assert!(sim.events(1)[marks[1]..].iter().any(|e| matches!(
        e,
        Event::ChildSaUp {
            replaces: Some(_),
            ..
        }
    )));
}

#[test]
fn simultaneous_child_rekey_ends_with_one_pair() {
    let mut collisions = 0;
    for seed in 0..8u64 {
        let mut sim = established("aes128gcm16-prfsha256-x25519", "", "", 50 + seed);
        sim.jitter = Duration::from_millis(3);
        let (ca, cb) = (child_of(&sim, 0), child_of(&sim, 1));
        let now = sim.now;
        sim.nodes[0].ep.rekey_child(now, ca).unwrap();
        sim.nodes[1].ep.rekey_child(now, cb).unwrap();
        sim.run_for(Duration::from_secs(10));
        let (a, b) = (installed(sim.events(0)), installed(sim.events(1)));
        assert_eq!(
            a.len(),
            2,
            "seed {seed}: {:?}",
            dataplane_ops(sim.events(0))
        );
        assert_sas_match(&a, &b);
        for n in 0..2 {
            let sas = sim.nodes[n].ep.list_sas(sim.now);
            assert_eq!(sas[0].children.len(), 1, "seed {seed} node {n}: {sas:#?}");
        }
        // The surviving pair is the one the policies point at.
        let out_a = a.keys().find(|k| k.1 == Direction::Out).unwrap().0;
        let last_pol = sim.events(0).iter().rev().find_map(|e| match e {
            Event::InstallPolicies { policies, .. } => policies
                .iter()
                .find(|p| p.direction == Direction::Out)
                .and_then(|p| p.spi),
            _ => None,
        });
        assert_eq!(last_pol, Some(out_a), "seed {seed}");
        // Both exchanges created an SA somewhere: the 2.8.1 rule resolved it.
        let replacing = |n: usize| {
            count(sim.events(n), |e| {
                matches!(
                    e,
                    Event::ChildSaUp {
                        replaces: Some(_),
                        ..
                    }
                )
            })
        };
        if replacing(0) + replacing(1) > 2 {
            collisions += 1;
        }
    }
    assert!(collisions > 0, "no seed produced a real collision");
}

#[test]
fn ike_rekey_from_either_side_keeps_the_children() {
    for side in 0..2 {
        let mut sim = established("aes256gcm16-prfsha384-ecp384", "", "", 60 + side as u64);
        let before = installed(sim.events(0));
        let spis = {
            let s = &sim.nodes[0].ep.list_sas(sim.now)[0];
            (s.spi_i, s.spi_r)
        };
        let ike = ike_of(&sim, side);
        let now = sim.now;
        sim.nodes[side].ep.rekey_ike(now, ike).unwrap();
        sim.run_for(Duration::from_secs(5));
        for n in 0..2 {
            assert!(
                sim.events(n)
                    .iter()
                    .any(|e| matches!(e, Event::IkeSaUp { rekeyed: true, .. })),
                "side {side} node {n}: {:#?}",
                sim.events(n)
            );
            assert!(!sim
                .events(n)
                .iter()
                .any(|e| matches!(e, Event::IkeSaDown { .. })));
        }
        let s = &sim.nodes[0].ep.list_sas(sim.now)[0];
        assert_ne!((s.spi_i, s.spi_r), spis);
        assert_eq!(installed(sim.events(0)), before);
        // The new IKE SA works: a Child rekey over it.
        let child = child_of(&sim, 1 - side);
        let now = sim.now;
        sim.nodes[1 - side].ep.rekey_child(now, child).unwrap();
        sim.run_for(Duration::from_secs(5));
        let (a, b) = (installed(sim.events(0)), installed(sim.events(1)));
        assert_eq!(a.len(), 2);
        assert_ne!(
            a.keys().collect::<Vec<_>>(),
            before.keys().collect::<Vec<_>>()
        );
        assert_sas_match(&a, &b);
        // Old SPIs are gone from both endpoints.
        sim.run_for(Duration::from_secs(120));
        let drops = sim.nodes[0].ep.drops();
        assert_eq!(drops.integrity, 0, "{drops:?}");
    }
}

#[test]
fn rekeys_happen_on_their_timers() {
    let mut sim = established(
        "aes128gcm16-prfsha256-x25519",
        "rekey_time = \"100s\"",
        "rekey_time = \"40s\"\nlife_time = \"60s\"",
        70,
    );
    sim.run_for(Duration::from_secs(250));
    for n in 0..2 {
        let ike_rekeys = count(sim.events(n), |e| {
            matches!(e, Event::IkeSaUp { rekeyed: true, .. })
        });
        let child_rekeys = count(sim.events(n), |e| {
            matches!(
                e,
                Event::ChildSaUp {
                    replaces: Some(_),
                    ..
                }
            )
        });
        assert!(ike_rekeys >= 2, "node {n}: {ike_rekeys}");
        assert!(child_rekeys >= 5, "node {n}: {child_rekeys}");
        // Never expired: each child was rekeyed in time.
        assert!(!sim.events(n).iter().any(|e| matches!(
            e,
            Event::ChildSaDown {
                reason: Reason::Expired,
                ..
            }
        )));
    }
    assert_sas_match(&installed(sim.events(0)), &installed(sim.events(1)));
}

#[test]
fn delete_from_either_side_removes_everything_on_both() {
    for side in 0..2 {
        let mut sim = established("aes128gcm16-prfsha256-x25519", "", "", 80 + side as u64);
        let now = sim.now;
        sim.nodes[side]
            .ep
            .terminate(now, Target::Connection("gw".into()))
            .unwrap();
        sim.run_for(Duration::from_secs(5));
        for n in 0..2 {
            assert!(installed(sim.events(n)).is_empty(), "side {side} node {n}");
            assert!(
                sim.nodes[n].ep.list_sas(sim.now).is_empty(),
                "side {side} node {n}"
            );
            let want = if n == side {
                Reason::LocalDelete
            } else {
                Reason::PeerDelete
            };
            assert!(sim
                .events(n)
                .iter()
                .any(|e| matches!(e, Event::IkeSaDown { reason, .. } if *reason == want)));
            assert!(sim
                .events(n)
                .iter()
                .any(|e| matches!(e, Event::DeletePolicies { .. })));
        }
    }
}

#[test]
fn child_delete_and_hard_lifetime_keep_the_ike_sa() {
    let mut sim = established("aes128gcm16-prfsha256-x25519", "", "", 90);
    let child = child_of(&sim, 1);
    let now = sim.now;
    sim.nodes[1]
        .ep
        .terminate(now, Target::ChildSa(child))
        .unwrap();
    sim.run_for(Duration::from_secs(5));
    for n in 0..2 {
        assert!(installed(sim.events(n)).is_empty());
        assert_eq!(sim.nodes[n].ep.list_sas(sim.now).len(), 1);
    }
    // A new child (another IKE SA for simplicity), then the data plane's
    // soft lifetime rekeys it and the hard one deletes it.
    let now = sim.now;
    sim.nodes[0]
        .ep
        .terminate(now, Target::Connection("gw".into()))
        .unwrap();
    sim.run_for(Duration::from_secs(5));
    sim.nodes[0].ep.initiate(sim.now, "gw").unwrap();
    sim.run_for(Duration::from_secs(5));
    let a = installed(sim.events(0));
    let spi_out = a.keys().find(|k| k.1 == Direction::Out).unwrap().0;
    let now = sim.now;
    sim.nodes[0]
        .ep
        .handle_lifetime_event(now, spi_out, LifetimeSeverity::Soft)
        .unwrap();
    sim.run_for(Duration::from_secs(5));
    let a2 = installed(sim.events(0));
    assert_eq!(a2.len(), 2);
    assert!(!a2.contains_key(&(spi_out, Direction::Out)));
    let spi_in = a2.keys().find(|k| k.1 == Direction::In).unwrap().0;
    let now = sim.now;
    sim.nodes[0]
        .ep
        .handle_lifetime_event(now, spi_in, LifetimeSeverity::Hard)
        .unwrap();
    sim.run_for(Duration::from_secs(5));
    assert!(installed(sim.events(0)).is_empty());
    assert!(installed(sim.events(1)).is_empty());
    assert!(sim.nodes[0]
        .ep
        .handle_lifetime_event(sim.now, spi_in, LifetimeSeverity::Hard)
        .is_err());
}

#[test]
fn dpd_finds_a_dead_peer_and_restart_reconnects() {
    for (action, restarts) in [("clear", false), ("restart", true)] {
        // keyingtries = 0: attempts go on until the peer is back.
        let extra = format!("dpd_delay = \"10s\"\ndpd_action = \"{action}\"\nkeyingtries = 0");
        let mut sim = established("aes128gcm16-prfsha256-x25519", &extra, "", 100);
        // Quiet but alive: DPD exchanges keep it up.
        sim.run_for(Duration::from_secs(60));
        assert!(!sim
            .events(0)
            .iter()
            .any(|e| matches!(e, Event::IkeSaDown { .. })));
        sim.cut = true;
        sim.run_for(Duration::from_secs(60));
        let reason = sim.events(0).iter().find_map(|e| match e {
            Event::IkeSaDown { reason, .. } => Some(reason.clone()),
            _ => None,
        });
        assert!(
            matches!(reason, Some(Reason::DeadPeer | Reason::Timeout(_))),
            "{reason:?}"
        );
        assert!(installed(sim.events(0)).is_empty());
        sim.cut = false;
        sim.run_for(Duration::from_secs(60));
        let ups = count(sim.events(0), |e| {
            matches!(e, Event::IkeSaUp { rekeyed: false, .. })
        });
        assert_eq!(ups > 1, restarts, "{action}: {ups}");
    }
}

#[test]
fn an_unanswered_initiator_gives_up_after_its_retransmissions() {
    let a = node(
        &psk_config(A, B, "aes128gcm16-prfsha256-x25519", "", ""),
        A,
        1,
        fast_settings(),
    );
    let mut sim = Sim::new(vec![a], 2);
    sim.nodes[0].ep.initiate(sim.now, "gw").unwrap();
    sim.run_for(Duration::from_secs(120));
    // One request and five retransmissions with growing gaps.
    let times = sim.sent[0].len();
    assert_eq!(times, 6);
    assert!(matches!(
        sim.events(0).last(),
        Some(Event::IkeSaDown {
            reason: Reason::Timeout(5),
            ..
        })
    ));
    assert!(sim.nodes[0].ep.list_sas(sim.now).is_empty());
    assert_eq!(sim.nodes[0].ep.poll_timeout(), None);
}

#[test]
fn an_ike_sa_init_flood_brings_cookies_and_stays_bounded() {
    let settings = Settings {
        cookie_threshold: 10,
        max_half_open: 50,
        ..fast_settings()
    };
    let mut sim = initiator_and_open_responder(settings);
    // A real initiator's first request, to copy its shape.
    sim.nodes[0].ep.initiate(sim.now, "gw").unwrap();
    let template = sim.nodes[0].ep.poll_transmit().unwrap().payload;
    let local: SocketAddr = "198.18.0.2:500".parse().unwrap();
    let mut answered_with_cookie = 0;
    for i in 0..5000u64 {
        let mut m = template.clone();
        m[..8].copy_from_slice(&(0x1000 + i).to_be_bytes());
        let from: SocketAddr = format!("198.19.{}.{}:500", (i / 250) % 250, i % 250 + 1)
            .parse()
            .unwrap();
        let now = sim.now + Duration::from_millis(i);
        sim.nodes[1].ep.handle_datagram(now, local, from, &m);
        while let Some(t) = sim.nodes[1].ep.poll_transmit() {
            let msg = xdpsec_control::wire::Message::parse(&t.payload).unwrap();
            if msg
                .payloads
                .iter()
                .any(|p| matches!(p, xdpsec_control::wire::Payload::Notify(n) if n.kind == 16390))
            {
                answered_with_cookie += 1;
            }
        }
        assert!(
            sim.nodes[1].ep.list_sas(now).len() <= 11,
            "half-open grew past the cookie threshold"
        );
    }
    assert!(answered_with_cookie >= 4900, "{answered_with_cookie}");
    assert!(sim.nodes[1].ep.drops().cookie_requested >= 4900);
    // Half-open SAs time out.
    sim.now += Duration::from_secs(5);
    sim.run_for(Duration::from_secs(60));
    let half_open = |sim: &Sim| {
        sim.nodes[1]
            .ep
            .list_sas(sim.now)
            .iter()
            .filter(|s| s.state == xdpsec_control::ike::IkeSaState::Connecting)
            .count()
    };
    assert_eq!(half_open(&sim), 0);
    // A real initiator still gets through (with a cookie if needed).
    let now = sim.now;
    sim.nodes[0].ep.initiate(now, "gw").unwrap();
    sim.run_for(Duration::from_secs(10));
    assert!(sim
        .events(1)
        .iter()
        .any(|e| matches!(e, Event::ChildSaUp { .. })));
}

#[test]
fn simultaneous_ike_rekey_ends_with_one_new_ike_sa() {
    let mut sim = established(
        "aes128gcm16-prfsha256-x25519",
        "rekey_time = \"4h\"\nrand_time = \"0s\"",
        "",
        120,
    );
    let before = installed(sim.events(0));
    let (ia, ib) = (ike_of(&sim, 0), ike_of(&sim, 1));
    let now = sim.now;
    sim.nodes[0].ep.rekey_ike(now, ia).unwrap();
    sim.nodes[1].ep.rekey_ike(now, ib).unwrap();
    sim.run_for(Duration::from_secs(120));
    let (a, b) = (
        &sim.nodes[0].ep.list_sas(sim.now),
        &sim.nodes[1].ep.list_sas(sim.now),
    );
    assert_eq!(a.len(), 1);
    assert_eq!(b.len(), 1);
    assert_eq!((a[0].spi_i, a[0].spi_r), (b[0].spi_i, b[0].spi_r));
    let rekeys = |n: usize| {
        count(sim.events(n), |e| {
            matches!(e, Event::IkeSaUp { rekeyed: true, .. })
        })
    };
    assert!(
        rekeys(0) >= 1 && rekeys(0) == rekeys(1),
        "{} {}",
        rekeys(0),
        rekeys(1)
    );
    assert_eq!(installed(sim.events(0)), before);
    // And the new one carries traffic: DPD-free delete over it works.
    let now = sim.now;
    sim.nodes[1].ep.terminate(now, Target::IkeSa(ib)).unwrap();
    sim.run_for(Duration::from_secs(10));
    assert!(sim.events(0).iter().any(|e| matches!(
        e,
        Event::IkeSaDown {
            reason: Reason::PeerDelete,
            ..
        }
    )));
}

#[test]
fn an_ike_sa_past_its_life_time_is_deleted() {
    let mut sim = established(
        "aes128gcm16-prfsha256-x25519",
        "rekey_time = \"0\"\nlife_time = \"60s\"",
        "",
        130,
    );
    sim.run_for(Duration::from_secs(50));
    assert_eq!(sim.nodes[0].ep.list_sas(sim.now).len(), 1);
    sim.run_for(Duration::from_secs(20));
    for n in 0..2 {
        assert!(sim.nodes[n].ep.list_sas(sim.now).is_empty(), "node {n}");
        assert!(installed(sim.events(n)).is_empty());
    }
    let reasons: Vec<Reason> = (0..2)
        .map(|n| {
            sim.events(n)
                .iter()
                .find_map(|e| match e {
                    Event::IkeSaDown { reason, .. } => Some(reason.clone()),
                    _ => None,
                })
                .unwrap()
        })
        .collect();
    // Both had the same life time; whoever went first deleted, the other
    // heard it (or both expired at once).
    assert!(reasons.contains(&Reason::Expired), "{reasons:?}");
}

#[test]
fn keyingtries_bounds_the_initiation_attempts() {
    let a = node(
        &psk_config(A, B, "aes128gcm16-prfsha256-x25519", "keyingtries = 3", ""),
        A,
        1,
        fast_settings(),
    );
    let mut sim = Sim::new(vec![a], 2);
    sim.nodes[0].ep.initiate(sim.now, "gw").unwrap();
    sim.run_for(Duration::from_secs(300));
    // Three attempts of one request and five retransmissions each.
    assert_eq!(sim.sent[0].len(), 18);
    assert_eq!(
        count(sim.events(0), |e| matches!(e, Event::IkeSaDown { .. })),
        3
    );
    assert_eq!(sim.nodes[0].ep.poll_timeout(), None);
}

#[test]
fn close_action_start_initiates_again_after_a_peer_delete() {
    let mut sim = established(
        "aes128gcm16-prfsha256-x25519",
        "",
        "close_action = \"start\"",
        140,
    );
    let ib = ike_of(&sim, 1);
    let now = sim.now;
    sim.nodes[1].ep.terminate(now, Target::IkeSa(ib)).unwrap();
    sim.run_for(Duration::from_secs(10));
    // B deleted; A (close_action start) came back with a new IKE SA.
    for n in 0..2 {
        assert_eq!(sim.nodes[n].ep.list_sas(sim.now).len(), 1, "node {n}");
        assert_eq!(
            count(sim.events(n), |e| matches!(
                e,
                Event::IkeSaUp { rekeyed: false, .. }
            )),
            2
        );
    }
    assert_sas_match(&installed(sim.events(0)), &installed(sim.events(1)));
}

#[test]
fn initial_contact_from_a_restarted_peer_drops_its_old_sas() {
    let mut sim = established("aes128gcm16-prfsha256-x25519", "", "", 150);
    // A restarts: a fresh endpoint that knows nothing.
    sim.nodes[0] = node(
        &psk_config(A, B, "aes128gcm16-prfsha256-x25519", "", ""),
        A,
        999,
        fast_settings(),
    );
    sim.nodes[0].ep.initiate(sim.now, "gw").unwrap();
    sim.run_for(Duration::from_secs(5));
    assert_eq!(sim.nodes[1].ep.list_sas(sim.now).len(), 1);
    assert!(sim.events(1).iter().any(|e| matches!(
        e,
        Event::IkeSaDown {
            reason: Reason::PeerDelete,
            ..
        }
    )));
    assert_sas_match(&installed(sim.events(0)), &installed(sim.events(1)));
    // A second IKE SA from the same (running) peer does not drop the first.
    sim.nodes[0].ep.initiate(sim.now, "gw").unwrap();
    sim.run_for(Duration::from_secs(5));
    assert_eq!(sim.nodes[1].ep.list_sas(sim.now).len(), 2);
}
