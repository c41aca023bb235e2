//! An IKE responder under a flood (issue 13): one host that answers every
//! COOKIE challenge, plus spoofed sources that cannot, while a legitimate
//! peer connects. The per-source half-open quota keeps the one host to its
//! share, cookies keep the spoofed ones from making state, and the peer
//! gets its tunnel within 2 s.

mod common;

use std::alloc::System;
use std::net::SocketAddr;
use std::time::Duration;

use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

use common::*;
use xdpsec_control::ike::{Event, IkeSaState, Settings};
use xdpsec_control::wire::{Message, Notify, Payload};

/// The heap of this test process, counted: what the responder holds under
/// the flood is measured, not estimated.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// What the flood may add to the heap: 17 IKE SAs with their keys and
/// first messages, and the bookkeeping around them.
const MEMORY_BOUND: isize = 256 << 10;

const COOKIE: u16 = 16390;
const ATTACKER: &str = "198.19.9.9";

/// An IKE_SA_INIT request like `template`, with initiator SPI `spi` and,
/// if given, a COOKIE notify first (RFC 7296 section 2.6).
fn init_request(template: &[u8], spi: u64, cookie: Option<&[u8]>) -> Vec<u8> {
    let mut m = Message::parse(template).unwrap();
    m.header.spi_i = spi;
    if let Some(c) = cookie {
        m.payloads
            .insert(0, Payload::Notify(Notify::new(COOKIE, c.to_vec())));
    }
    m.emit().unwrap()
}

fn cookie_of(payload: &[u8]) -> Option<(u64, Vec<u8>)> {
    let m = Message::parse(payload).ok()?;
    m.payloads.iter().find_map(|p| match p {
        Payload::Notify(n) if n.kind == COOKIE => Some((m.header.spi_i, n.data.clone())),
        _ => None,
    })
}

#[test]
fn a_host_that_answers_cookies_and_spoofed_sources_do_not_lock_out_a_peer() {
    let settings = Settings {
        cookie_threshold: 10,
        max_half_open: 50,
        max_half_open_per_source: 5,
        ..fast_settings()
    };
    let mut sim = initiator_and_open_responder(settings);
    let template = {
        let mut probe = node(
            &psk_config(A, B, "aes128gcm16-prfsha256-x25519", "", ""),
            A,
            9,
            fast_settings(),
        );
        probe.ep.initiate(sim.now, "gw").unwrap();
        probe.ep.poll_transmit().unwrap().payload
    };
    let local: SocketAddr = "198.18.0.2:500".parse().unwrap();
    let attacker: SocketAddr = format!("{ATTACKER}:500").parse().unwrap();
    let region = Region::new(GLOBAL);
    let live = |r: &Region<System>| {
        let c = r.change();
        // Reallocations are in both already (bytes_reallocated repeats them).
        c.bytes_allocated as isize - c.bytes_deallocated as isize
    };
    let mut peak = 0;
    let mut up_after = None;
    let started = sim.now;
    let mut initiated_at = None;
    // 3 s of flood, 2 requests per millisecond (one from the host that
    // answers cookies, one from a spoofed source); the peer starts at 0.5 s.
    for step in 0..3000u64 {
        let now = sim.now;
        let spoofed: SocketAddr = format!("198.19.{}.{}:500", step / 250 % 250, step % 250 + 1)
            .parse()
            .unwrap();
        let b = &mut sim.nodes[1].ep;
        b.handle_datagram(
            now,
            local,
            attacker,
            &init_request(&template, 0x1_0000 + step, None),
        );
        b.handle_datagram(
            now,
            local,
            spoofed,
            &init_request(&template, 0x9_0000 + step, None),
        );
        if step == 500 {
            sim.nodes[0].ep.initiate(now, "gw").unwrap();
            initiated_at = Some(now);
        }
        sim.run_for(Duration::from_millis(1));
        // The host answers every cookie it is sent, at once.
        // What the simulated wire keeps of the flood is not the
        // responder's memory.
        let answers: Vec<(u64, Vec<u8>)> = sim.sent[1]
            .drain(..)
            .filter(|t| t.remote == attacker)
            .filter_map(|t| cookie_of(&t.payload))
            .collect();
        sim.sent[0].clear();
        for (spi, cookie) in answers {
            let now = sim.now;
            sim.nodes[1].ep.handle_datagram(
                now,
                local,
                attacker,
                &init_request(&template, spi, Some(&cookie)),
            );
        }
        let sas = sim.nodes[1].ep.list_sas(sim.now);
        let from_attacker = sas
            .iter()
            .filter(|s| s.state == IkeSaState::Connecting && s.remote.ip() == attacker.ip())
            .count();
        assert!(
            from_attacker <= 5,
            "the host holds {from_attacker} half-open SAs"
        );
        // Memory: at most the cookie threshold of unverified SAs, the
        // host's quota and the peer's.
        assert!(
            sas.len() <= 10 + 5 + 2,
            "{} IKE SAs at step {step}",
            sas.len()
        );
        drop(sas);
        peak = peak.max(live(&region));
        if up_after.is_none()
            && sim
                .events(0)
                .iter()
                .any(|e| matches!(e, Event::ChildSaUp { .. }))
        {
            up_after = initiated_at.map(|t| sim.now - t);
        }
    }
    let up_after = up_after.expect("the peer never got its tunnel during the flood");
    assert!(
        up_after <= Duration::from_secs(2),
        "the peer's tunnel took {up_after:?} under the flood"
    );
    let drops = sim.nodes[1].ep.drops();
    assert!(drops.half_open_source_full > 0, "{drops:?}");
    assert!(drops.cookie_requested > 1000, "{drops:?}");
    eprintln!(
        "{:?} of flood: peer up {up_after:?} after initiating; heap at most {peak} bytes \
         above the start; {drops:?}",
        sim.now - started
    );
    assert!(
        peak <= MEMORY_BOUND,
        "the flood grew the heap by {peak} bytes"
    );
}
