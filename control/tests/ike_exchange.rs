//! Pairs of IKE endpoints on a virtual clock: establishment with each
//! proposal, loss/duplication/reordering, both sides initiating, NAT,
//! cookies, INVALID_KE_PAYLOAD, failures with the right notify and reason.

mod common;

use std::time::Duration;

use common::*;
use xdpsec_api::Direction;
use xdpsec_control::ike::{Event, Reason, Settings};

fn pair(proposal: &str, seed: u64) -> Sim {
    let a = node(
        &psk_config(A, B, proposal, "", ""),
        A,
        seed,
        fast_settings(),
    );
    let b = node(
        &psk_config(B, A, proposal, "", ""),
        B,
        seed + 1000,
        fast_settings(),
    );
    Sim::new(vec![a, b], seed)
}

fn up(events: &[Event]) -> usize {
    count(events, |e| matches!(e, Event::IkeSaUp { .. }))
}

fn child_up(events: &[Event]) -> usize {
    count(events, |e| matches!(e, Event::ChildSaUp { .. }))
}

#[test]
fn establishes_with_each_proposal() {
    for (i, p) in [
        "aes128gcm16-prfsha256-x25519",
        "aes256gcm16-prfsha384-ecp384",
        "aes128-sha256-modp2048",
        "aes256-sha512-ecp256",
        "aes256-sha384-prfsha384-x25519",
    ]
    .iter()
    .enumerate()
    {
        let mut sim = pair(p, 10 + i as u64);
        sim.nodes[0].ep.initiate(sim.now, "gw").unwrap();
        sim.run_for(Duration::from_secs(5));
        for n in 0..2 {
            assert_eq!(up(sim.events(n)), 1, "{p}: node {n}: {:#?}", sim.events(n));
            assert_eq!(child_up(sim.events(n)), 1, "{p}: node {n}");
        }
        let (a, b) = (installed(sim.events(0)), installed(sim.events(1)));
        assert_eq!(a.len(), 2);
        assert_sas_match(&a, &b);
        // No NAT here: plain ESP.
        assert!(a.values().all(|s| s.encap.is_none()));
        // A's outbound SA carries 10.1/16 -> 10.2/16.
        let out = a.values().find(|s| s.direction == Direction::Out).unwrap();
        assert_eq!(out.selectors[0].local.to_string(), "10.1.0.0/16");
        assert_eq!(out.selectors[0].remote.to_string(), "10.2.0.0/16");
        let listed = sim.nodes[0].ep.list_sas(sim.now);
        assert_eq!(listed.len(), 1);
        assert_eq!(
            listed[0]
                .algorithms
                .as_deref()
                .map(|a| a.starts_with(p.split('-').next().unwrap())),
            Some(true)
        );
        assert_eq!(listed[0].children.len(), 1);
    }
}

fn established_pair(sim: &mut Sim) {
    sim.nodes[0].ep.initiate(sim.now, "gw").unwrap();
    sim.run_for(Duration::from_secs(5));
    assert_eq!(up(sim.events(0)), 1, "{:#?}", sim.events(0));
    assert_eq!(up(sim.events(1)), 1, "{:#?}", sim.events(1));
}

#[test]
fn survives_loss_duplication_and_reordering() {
    for seed in 0..12u64 {
        let mut sim = pair("aes128gcm16-prfsha256-x25519", 100 + seed);
        sim.loss = 300;
        sim.dup = 300;
        sim.jitter = Duration::from_millis(400);
        sim.nodes[0].ep.initiate(sim.now, "gw").unwrap();
        sim.run_for(Duration::from_secs(60));
        for n in 0..2 {
            assert_eq!(
                up(sim.events(n)),
                1,
                "seed {seed} node {n}: {:#?}",
                sim.events(n)
            );
            assert_eq!(child_up(sim.events(n)), 1, "seed {seed} node {n}");
        }
        assert_sas_match(&installed(sim.events(0)), &installed(sim.events(1)));
        // Duplicates were answered from the cache, never processed twice.
        let drops = sim.nodes[1].ep.drops();
        assert_eq!(drops.integrity, 0, "seed {seed}: {drops:?}");
    }
}

#[test]
fn both_sides_initiating_get_two_working_ike_sas() {
    let mut sim = pair("aes128gcm16-prfsha256-x25519", 7);
    let now = sim.now;
    sim.nodes[0].ep.initiate(now, "gw").unwrap();
    sim.nodes[1].ep.initiate(now, "gw").unwrap();
    sim.run_for(Duration::from_secs(5));
    for n in 0..2 {
        assert_eq!(up(sim.events(n)), 2, "node {n}");
        assert_eq!(child_up(sim.events(n)), 2, "node {n}");
    }
    assert_sas_match(&installed(sim.events(0)), &installed(sim.events(1)));
}

#[test]
fn invalid_ke_payload_makes_the_initiator_retry_with_the_asked_group() {
    let a = node(
        &psk_config(A, B, "aes128gcm16-prfsha256-x25519-ecp256", "", ""),
        A,
        1,
        fast_settings(),
    );
    let b = node(
        &psk_config(B, A, "aes128gcm16-prfsha256-ecp256", "", ""),
        B,
        2,
        fast_settings(),
    );
    let mut sim = Sim::new(vec![a, b], 3);
    established_pair(&mut sim);
    let algs = sim.nodes[0].ep.list_sas(sim.now)[0]
        .algorithms
        .clone()
        .unwrap();
    assert!(algs.ends_with("ecp256"), "{algs}");
    // The first IKE_SA_INIT (x25519) was refused, the second (ecp256) taken.
    let inits = sim.sent[0]
        .iter()
        .filter(|t| t.remote.port() == 500 && t.payload[18] == 34)
        .count();
    assert!(inits >= 2, "{inits}");
}

#[test]
fn cookies_when_half_open_sas_pass_the_threshold() {
    let a = node(
        &psk_config(A, B, "aes128gcm16-prfsha256-x25519", "", ""),
        A,
        1,
        fast_settings(),
    );
    let b = node(
        &psk_config(B, A, "aes128gcm16-prfsha256-x25519", "", ""),
        B,
        2,
        Settings {
            cookie_threshold: 0,
            ..fast_settings()
        },
    );
    let mut sim = Sim::new(vec![a, b], 3);
    established_pair(&mut sim);
    assert_eq!(sim.nodes[1].ep.drops().cookie_requested, 1);
    assert_sas_match(&installed(sim.events(0)), &installed(sim.events(1)));
}

#[test]
fn nat_moves_ike_to_4500_and_encapsulates_esp() {
    let a = node(
        &psk_config(A, B, "aes128gcm16-prfsha256-x25519", "", ""),
        A,
        1,
        fast_settings(),
    );
    // B sees A at the NAT's address only.
    let b_cfg = psk_config(B, A, "aes128gcm16-prfsha256-x25519", "", "").replace(
        "remote_addrs = [\"198.18.0.1\"]",
        "remote_addrs = [\"%any\"]",
    );
    let b = node(&b_cfg, B, 2, fast_settings());
    let mut sim = Sim::new(vec![a, b], 21);
    sim.nodes[0].behind_nat = true;
    established_pair(&mut sim);
    let (a, b) = (installed(sim.events(0)), installed(sim.events(1)));
    // A sees its own port 4500 and B's 4500; B sees the NAT's mapped port.
    for s in a.values() {
        let e = s.encap.expect("encapsulated");
        assert_eq!((e.sport, e.dport), (4500, 4500));
    }
    for s in b.values() {
        let e = s.encap.expect("encapsulated");
        let want = if s.direction == Direction::Out {
            (4500, 14500)
        } else {
            (14500, 4500)
        };
        assert_eq!((e.sport, e.dport), want);
        assert_eq!(s.tunnel_remote.to_string(), "198.18.0.100");
    }
    // IKE_AUTH went over 4500 with the marker (checked by the harness).
    assert!(sim.sent[0]
        .iter()
        .any(|t| t.local.port() == 4500 && t.non_esp_marker));
    // A is behind the NAT: it sends keepalives.
    sim.run_for(Duration::from_secs(45));
    assert!(sim.sent[0]
        .iter()
        .any(|t| t.payload == [0xff] && !t.non_esp_marker));
    assert!(!sim.sent[1].iter().any(|t| t.payload == [0xff]));
}

#[test]
fn forced_encap_encapsulates_without_a_nat() {
    let a = node(
        &psk_config(A, B, "aes128gcm16-prfsha256-x25519", "encap = true", ""),
        A,
        1,
        fast_settings(),
    );
    let b = node(
        &psk_config(B, A, "aes128gcm16-prfsha256-x25519", "", ""),
        B,
        2,
        fast_settings(),
    );
    let mut sim = Sim::new(vec![a, b], 4);
    established_pair(&mut sim);
    let (a, b) = (installed(sim.events(0)), installed(sim.events(1)));
    assert!(a.values().chain(b.values()).all(|s| s.encap.is_some()));
    assert_sas_match(&a, &b);
}

fn down_reason(events: &[Event]) -> Option<&Reason> {
    events.iter().find_map(|e| match e {
        Event::IkeSaDown { reason, .. } => Some(reason),
        _ => None,
    })
}

#[test]
fn wrong_psk_fails_on_both_sides_with_authentication_failed() {
    let a = node(
        &psk_config(A, B, "aes128gcm16-prfsha256-x25519", "", ""),
        A,
        1,
        fast_settings(),
    );
    let b_cfg = psk_config(B, A, "aes128gcm16-prfsha256-x25519", "", "")
        .replace("correct horse battery staple", "wrong horse");
    let b = node(&b_cfg, B, 2, fast_settings());
    let mut sim = Sim::new(vec![a, b], 5);
    sim.nodes[0].ep.initiate(sim.now, "gw").unwrap();
    sim.run_for(Duration::from_secs(30));
    for n in 0..2 {
        assert_eq!(up(sim.events(n)), 0);
        match down_reason(sim.events(n)) {
            Some(Reason::AuthenticationFailed(why)) => {
                if n == 1 {
                    assert!(why.contains("a.example"), "{why}");
                }
            }
            other => panic!("node {n}: {other:?}"),
        }
        assert!(installed(sim.events(n)).is_empty());
        assert!(
            sim.nodes[n].ep.list_sas(sim.now).is_empty(),
            "node {n} kept state"
        );
    }
}

#[test]
fn no_common_proposal_fails_with_no_proposal_chosen() {
    let a = node(
        &psk_config(A, B, "aes128gcm16-prfsha256-x25519", "", ""),
        A,
        1,
        fast_settings(),
    );
    let b = node(
        &psk_config(B, A, "aes256-sha384-ecp384", "", ""),
        B,
        2,
        fast_settings(),
    );
    let mut sim = Sim::new(vec![a, b], 6);
    sim.nodes[0].ep.initiate(sim.now, "gw").unwrap();
    sim.run_for(Duration::from_secs(30));
    assert!(
        matches!(
            down_reason(sim.events(0)),
            Some(Reason::NoProposalChosen(_))
        ),
        "{:?}",
        sim.events(0)
    );
    // The responder kept nothing.
    assert!(sim.events(1).is_empty());
    assert!(sim.nodes[1].ep.list_sas(sim.now).is_empty());
}

#[test]
fn traffic_selectors_that_do_not_fit_keep_the_ike_sa_without_a_child() {
    let a = node(
        &psk_config(A, B, "aes128gcm16-prfsha256-x25519", "", ""),
        A,
        1,
        fast_settings(),
    );
    let b_cfg = psk_config(B, A, "aes128gcm16-prfsha256-x25519", "", "")
        .replace("10.1.0.0/16", "10.9.0.0/16");
    let b = node(&b_cfg, B, 2, fast_settings());
    let mut sim = Sim::new(vec![a, b], 8);
    established_pair(&mut sim);
    for n in 0..2 {
        assert_eq!(child_up(sim.events(n)), 0);
        let r = sim.events(n).iter().find_map(|e| match e {
            Event::ChildSaDown {
                reason,
                child: None,
                ..
            } => Some(reason.clone()),
            _ => None,
        });
        assert!(
            matches!(r, Some(Reason::TsUnacceptable(_))),
            "node {n}: {r:?}"
        );
        assert!(installed(sim.events(n)).is_empty());
    }
}

#[test]
fn narrowing_gives_the_intersection() {
    let a = node(
        &psk_config(A, B, "aes128gcm16-prfsha256-x25519", "", ""),
        A,
        1,
        fast_settings(),
    );
    // B only allows part of A's LAN and offers a wider own side.
    let b_cfg = psk_config(B, A, "aes128gcm16-prfsha256-x25519", "", "").replace(
        "remote_ts = [\"10.1.0.0/16\"]",
        "remote_ts = [\"10.1.2.0/24\"]",
    );
    let b = node(&b_cfg, B, 2, fast_settings());
    let mut sim = Sim::new(vec![a, b], 9);
    established_pair(&mut sim);
    let a_sas = installed(sim.events(0));
    let out = a_sas
        .values()
        .find(|s| s.direction == Direction::Out)
        .unwrap();
    assert_eq!(out.selectors.len(), 1);
    assert_eq!(out.selectors[0].local.to_string(), "10.1.2.0/24");
    assert_eq!(out.selectors[0].remote.to_string(), "10.2.0.0/16");
    assert_sas_match(&a_sas, &installed(sim.events(1)));
}

#[test]
fn fragmentation_carries_big_messages() {
    let settings = Settings {
        fragment_size: 200,
        ..fast_settings()
    };
    let a = node(
        &psk_config(A, B, "aes128gcm16-prfsha256-x25519", "", ""),
        A,
        1,
        settings.clone(),
    );
    let b = node(
        &psk_config(B, A, "aes128gcm16-prfsha256-x25519", "", ""),
        B,
        2,
        settings,
    );
    let mut sim = Sim::new(vec![a, b], 10);
    sim.loss = 100;
    sim.jitter = Duration::from_millis(50);
    established_pair(&mut sim);
    // IKE_AUTH went out in several SKF fragments of at most 200 bytes.
    let auth_frags = sim.sent[0]
        .iter()
        .filter(|t| t.payload.len() > 28 && t.payload[16] == 53)
        .count();
    assert!(auth_frags >= 2, "{auth_frags}");
    assert!(sim.sent[0]
        .iter()
        .all(|t| t.payload.len() <= 200 || t.payload[18] == 34));
    assert_sas_match(&installed(sim.events(0)), &installed(sim.events(1)));
}

#[test]
fn an_unknown_critical_payload_is_answered_with_unsupported_critical_payload() {
    let b = node(
        &psk_config(B, A, "aes128gcm16-prfsha256-x25519", "", ""),
        B,
        2,
        fast_settings(),
    );
    let mut sim = Sim::new(vec![b], 11);
    // IKE_SA_INIT whose only payload has type 200 and the critical bit.
    let mut m = vec![0u8; 28];
    m[..8].copy_from_slice(&7u64.to_be_bytes());
    m[16] = 200;
    m[17] = 0x20;
    m[18] = 34;
    m[19] = 0x08;
    m.extend_from_slice(&[0, 0x80, 0, 8, 1, 2, 3, 4]);
    let len = m.len() as u32;
    m[24..28].copy_from_slice(&len.to_be_bytes());
    let now = sim.now;
    sim.nodes[0].ep.handle_datagram(
        now,
        "198.18.0.2:500".parse().unwrap(),
        "198.18.0.1:500".parse().unwrap(),
        &m,
    );
    let t = sim.nodes[0].ep.poll_transmit().expect("an answer");
    let msg = xdpsec_control::wire::Message::parse(&t.payload).unwrap();
    assert!(msg.header.flags.response);
    match &msg.payloads[..] {
        [xdpsec_control::wire::Payload::Notify(n)] => {
            assert_eq!(n.kind, 1);
            assert_eq!(n.data, vec![200]);
        }
        p => panic!("{p:?}"),
    }
    assert!(sim.nodes[0].ep.list_sas(now).is_empty());
}

#[test]
fn a_retransmitted_request_gets_the_cached_response_and_nothing_else() {
    let mut sim = pair("aes128-sha256-modp2048", 12);
    established_pair(&mut sim);
    let is_auth = |t: &xdpsec_control::ike::Transmit, response: bool| {
        t.payload.len() > 28 && t.payload[18] == 35 && (t.payload[19] & 0x20 != 0) == response
    };
    let request = sim.sent[0]
        .iter()
        .find(|t| is_auth(t, false))
        .unwrap()
        .clone();
    let response = sim.sent[1]
        .iter()
        .find(|t| is_auth(t, true))
        .unwrap()
        .clone();
    let events_before = sim.events(1).len();
    let now = sim.now;
    sim.nodes[1]
        .ep
        .handle_datagram(now, request.remote, request.local, &request.payload);
    let again = sim.nodes[1]
        .ep
        .poll_transmit()
        .expect("the cached response");
    assert_eq!(again.payload, response.payload);
    assert!(sim.nodes[1].ep.poll_transmit().is_none());
    assert!(sim.nodes[1].ep.poll_event().is_none());
    assert_eq!(sim.events(1).len(), events_before);
    // An old request beyond the window is dropped and counted.
    let init = sim.sent[0]
        .iter()
        .find(|t| t.payload[18] == 34)
        .unwrap()
        .clone();
    let mut stale = request.payload.clone();
    stale[20..24].copy_from_slice(&7u32.to_be_bytes());
    sim.nodes[1]
        .ep
        .handle_datagram(now, init.remote, init.local, &stale);
    assert!(sim.nodes[1].ep.poll_transmit().is_none());
    assert_eq!(sim.nodes[1].ep.drops().message_id, 1);
}

#[test]
fn ipv4_and_ipv6_selectors_in_one_child() {
    let dual = |me, peer| {
        psk_config(me, peer, "aes128gcm16-prfsha256-x25519", "", "")
            .replace("\"10.1.0.0/16\"", "\"10.1.0.0/16\", \"fd00:1::/64\"")
            .replace("\"10.2.0.0/16\"", "\"10.2.0.0/16\", \"fd00:2::/64\"")
    };
    let a = node(&dual(A, B), A, 1, fast_settings());
    let b = node(&dual(B, A), B, 2, fast_settings());
    let mut sim = Sim::new(vec![a, b], 13);
    established_pair(&mut sim);
    let sas = installed(sim.events(0));
    assert_sas_match(&sas, &installed(sim.events(1)));
    let out = sas
        .values()
        .find(|s| s.direction == Direction::Out)
        .unwrap();
    let pairs: Vec<(String, String)> = out
        .selectors
        .iter()
        .map(|s| (s.local.to_string(), s.remote.to_string()))
        .collect();
    assert_eq!(
        pairs,
        vec![
            ("10.1.0.0/16".to_owned(), "10.2.0.0/16".to_owned()),
            ("fd00:1::/64".to_owned(), "fd00:2::/64".to_owned()),
        ]
    );
    let policies = sim.events(0).iter().find_map(|e| match e {
        Event::InstallPolicies { policies, .. } => Some(policies.len()),
        _ => None,
    });
    assert_eq!(policies, Some(4));
}
