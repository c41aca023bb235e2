//! Issue 13.3, the IKE side: 5000 Child SAs reach their soft lifetime
//! within one second (the data plane reports each once, see
//! dataplane/tests/api_server.rs) and every one is rekeyed.
//!
//! 5000 IKE SAs with one child each (one connection per tunnel, as a
//! gateway with 5000 sites has), set up in small batches (the responder's
//! per-source half-open quota would otherwise make them wait), then a soft
//! lifetime event for every child's SPI at the same instant.

mod common;

use std::time::Duration;

use common::*;
use xdpsec_control::ike::{Event, LifetimeSeverity, Settings};

const TUNNELS: usize = 5000;

/// `TUNNELS` connections from `me`: connection i has its own identities
/// (a PSK peer recognises its connection by them) and its own /32s.
fn config(me: &str) -> String {
    let mut toml = String::new();
    let mut ids = Vec::new();
    for i in 0..TUNNELS {
        let (hi, lo) = (i / 250, i % 250 + 1);
        let site = format!("site{i}.example");
        let (local_id, remote_id, local_ts, remote_ts, peer) = if me == A {
            (
                site.clone(),
                "hub.example".to_owned(),
                format!("10.1.{hi}.{lo}/32"),
                format!("10.2.{hi}.{lo}/32"),
                B,
            )
        } else {
            (
                "hub.example".to_owned(),
                site.clone(),
                format!("10.2.{hi}.{lo}/32"),
                format!("10.1.{hi}.{lo}/32"),
                A,
            )
        };
        toml += &format!(
            r#"
[connections.t{i}]
local_addrs = ["{me}"]
remote_addrs = ["{peer}"]
proposals = ["aes128gcm16-prfsha256-x25519"]
[connections.t{i}.local]
auth = "psk"
id = "{local_id}"
[connections.t{i}.remote]
auth = "psk"
id = "{remote_id}"
[connections.t{i}.children.net]
local_ts = ["{local_ts}"]
remote_ts = ["{remote_ts}"]
esp_proposals = ["aes128gcm16"]
"#
        );
        ids.push(format!("{site:?}"));
    }
    ids.push("\"hub.example\"".into());
    toml += &format!(
        "\n[secrets.ike-all]\nid = [{}]\nsecret = \"correct horse battery staple\"\n",
        ids.join(", ")
    );
    toml
}

#[test]
fn five_thousand_children_at_their_soft_lifetime_are_all_rekeyed() {
    let settings = Settings {
        max_half_open: 10_000,
        ..fast_settings()
    };
    let a = node(&config(A), A, 11, settings.clone());
    let b = node(&config(B), B, 12, settings);
    let mut sim = Sim::new(vec![a, b], 13);
    let up = |sim: &Sim| count(sim.events(0), |e| matches!(e, Event::ChildSaUp { .. }));
    for batch in (0..TUNNELS).collect::<Vec<_>>().chunks(4) {
        for i in batch {
            let now = sim.now;
            sim.nodes[0].ep.initiate(now, &format!("t{i}")).unwrap();
        }
        sim.run_for(Duration::from_millis(30));
    }
    sim.run_for(Duration::from_secs(5));
    assert_eq!(up(&sim), TUNNELS, "tunnels up");

    // Every child's outbound SPI on A, as the data plane would report it.
    let spis: Vec<u32> = sim
        .events(0)
        .iter()
        .filter_map(|e| match e {
            Event::ChildSaUp { spi_out, .. } => Some(*spi_out),
            _ => None,
        })
        .collect();
    let before = up(&sim);
    let now = sim.now;
    for spi in &spis {
        sim.nodes[0]
            .ep
            .handle_lifetime_event(now, *spi, LifetimeSeverity::Soft)
            .unwrap();
    }
    sim.run_for(Duration::from_secs(60));
    let rekeyed = sim
        .events(0)
        .iter()
        .filter(|e| {
            matches!(
                e,
                Event::ChildSaUp {
                    replaces: Some(_),
                    ..
                }
            )
        })
        .count();
    eprintln!("{TUNNELS} tunnels; {rekeyed} children rekeyed after their soft lifetime");
    assert_eq!(rekeyed, TUNNELS, "children rekeyed");
    assert_eq!(up(&sim) - before, TUNNELS);
}
