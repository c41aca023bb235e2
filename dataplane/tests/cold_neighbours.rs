//! Cold neighbour tables, as on a freshly booted gateway: the first packets
//! to a peer gateway or a LAN host the kernel has not resolved yet wait in
//! the worker's per-next-hop queue (`dataplane/src/neighbour_queue.rs`)
//! instead of being dropped, and what the queue cannot hold, or what waits
//! for a host that never answers, is dropped and counted.
//!
//! Root only (namespaces, XDP, AF_XDP); each test builds and removes its
//! own namespaces.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use xdpsec_testbed::tunnel::{Side, TunnelBed, TunnelOptions};

fn bed() -> TunnelBed {
    TunnelBed::new(env!("CARGO_BIN_EXE_xdpsec"), TunnelOptions::default())
        .unwrap_or_else(|e| panic!("{e}"))
}

fn neighbour_drops(bed: &TunnelBed, side: Side) -> u64 {
    [
        "neighbour_unknown",
        "neighbour_incomplete",
        "neighbour_failed",
    ]
    .iter()
    .map(|name| bed.worker_total(side, "drops", name).unwrap())
    .sum()
}

fn diagnostics(bed: &TunnelBed) -> String {
    Side::BOTH
        .iter()
        .map(|&side| {
            format!(
                "{side}: {}",
                bed.status(side)
                    .map_or_else(|e| e.to_string(), |v| v.to_string())
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_first_packet_to_unresolved_neighbours_is_delivered() {
    let bed = bed();
    // One echo each way per family, no retry: gateway A must wait for
    // gateway B's MAC, gateway B for host B's, and the reply for host A's
    // (only the hosts' own stacks have resolved their gateways by then).
    for ipv6 in [false, true] {
        let dst = bed.host_addr(Side::B, ipv6);
        let report = bed
            .host(Side::A)
            .ns
            .ping_report(dst, 1, Duration::from_secs(3))
            .unwrap();
        assert_eq!(
            report.received,
            1,
            "the first echo to {dst} through cold neighbour tables\n{}",
            diagnostics(&bed)
        );
    }
    for side in Side::BOTH {
        let held = bed
            .worker_total(side, "events", "held_for_neighbour")
            .unwrap();
        assert!(
            held >= 1,
            "gateway {side} held no packet for a neighbour\n{}",
            diagnostics(&bed)
        );
        assert_eq!(neighbour_drops(&bed, side), 0, "{}", diagnostics(&bed));
        assert_eq!(
            bed.worker_total(side, "drops", "neighbour_queue_full")
                .unwrap(),
            0
        );
    }
}

#[test]
fn packets_for_a_host_that_never_answers_are_bounded_and_counted() {
    const SENT: u64 = 200;
    let bed = bed();
    // Gateway A learns gateway B's address first, or its own queue would
    // hold and bound the burst before gateway B sees it.
    bed.ping(Side::A, Side::B, false, 1).unwrap();
    let held_before = bed
        .worker_total(Side::B, "events", "held_for_neighbour")
        .unwrap();
    // 10.2.0.99 is inside the protected prefix, on gateway B's LAN, and no
    // one has it: gateway B decrypts each datagram and must hold it while
    // the kernel tries to resolve the address, then give up.
    let to = SocketAddr::new(IpAddr::from([10, 2, 0, 99]), 9);
    bed.host(Side::A)
        .ns
        .run_in(|| {
            let socket = UdpSocket::bind("10.1.0.2:0").unwrap();
            for i in 0..SENT {
                socket.send_to(&i.to_be_bytes(), to).unwrap();
            }
        })
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut overflow, mut dropped) = (0, 0);
    while Instant::now() < deadline {
        overflow = bed
            .worker_total(Side::B, "drops", "neighbour_queue_full")
            .unwrap();
        dropped = neighbour_drops(&bed, Side::B);
        if overflow + dropped >= SENT {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let held = bed
        .worker_total(Side::B, "events", "held_for_neighbour")
        .unwrap()
        - held_before;
    eprintln!(
        "gateway B: {held} held, {overflow} over the queue's bound, {dropped} dropped unresolved"
    );
    assert_eq!(
        overflow + dropped,
        SENT,
        "every datagram is accounted for once\n{}",
        diagnostics(&bed)
    );
    assert!(
        (1..=64).contains(&held),
        "held {held}: at least the first, at most one neighbour's bound"
    );
    assert!(overflow >= 1, "the burst overflowed the queue");
    // Nothing for anyone else was lost meanwhile.
    bed.ping(Side::A, Side::B, false, 3)
        .map(|stats| assert!(stats.all_answered_once(), "{}", stats.output))
        .unwrap();
}
