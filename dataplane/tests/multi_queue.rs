//! Multi-queue interfaces, as multi-queue NICs have them: every veth of the
//! bed (LAN and WAN) with 4 RX and TX queues, and 1, 2 or 4 workers (worker
//! `w` serves the queues `q` with `q % workers == w`). Many UDP flows from
//! host A spread over gateway A's LAN queues by the host's TX hash; every
//! datagram must reach host B exactly once, and be handled by exactly one
//! worker of each gateway.
//!
//! Root only (namespaces, XDP, AF_XDP); each test builds and removes its
//! own namespaces.

use serde_json::Value;
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use xdpsec_testbed::tunnel::{Side, TunnelBed, TunnelOptions};

const QUEUES: u32 = 4;
/// Enough flows that each of 4 queues gets some whatever the hash does
/// (all 64 missing one queue: 4 * 0.75^64, about 1e-8).
const FLOWS: u32 = 64;
const PER_FLOW: u32 = 20;
const PORT: u16 = 7300;

/// Per worker of `side`: (packets received, the queues it serves).
fn workers(bed: &TunnelBed, side: Side) -> Vec<(u64, Vec<String>)> {
    let status = bed.status(side).unwrap();
    status["workers"]
        .as_array()
        .unwrap_or_else(|| panic!("no workers in {status}"))
        .iter()
        .map(|w| {
            let queues = w["queues"]
                .as_array()
                .map(|q| {
                    q.iter()
                        .filter_map(Value::as_str)
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            (w["rx_packets"].as_u64().unwrap_or(0), queues)
        })
        .collect()
}

fn received_per_worker(bed: &TunnelBed, side: Side) -> Vec<u64> {
    workers(bed, side).into_iter().map(|w| w.0).collect()
}

fn each_datagram_once_through(workers_per_gateway: u32) {
    let bed = TunnelBed::new(
        env!("CARGO_BIN_EXE_xdpsec"),
        TunnelOptions {
            workers: workers_per_gateway,
            queues: Some(QUEUES),
            ipv6: false,
            ..TunnelOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));

    // Each worker serves its share of every interface's queues.
    for side in Side::BOTH {
        let served = workers(&bed, side);
        assert_eq!(served.len(), workers_per_gateway as usize);
        for (w, (_, queues)) in served.iter().enumerate() {
            for iface in ["lan0", "wan0"] {
                let want: Vec<String> = (0..QUEUES)
                    .filter(|q| q % workers_per_gateway == w as u32)
                    .map(|q| format!("{iface}:{q}"))
                    .collect();
                let got: Vec<String> = queues
                    .iter()
                    .filter(|q| q.starts_with(&format!("{iface}:")))
                    .cloned()
                    .collect();
                assert_eq!(got, want, "gateway {side}, worker {w}");
            }
        }
    }

    // Resolve the neighbours first, so the counts below are the flows'
    // alone (cold tables would hold, or past 64 per next hop drop, the
    // first burst: tests/cold_neighbours.rs covers that).
    let ping = bed.ping(Side::A, Side::B, false, 1).unwrap();
    assert!(ping.all_answered_once(), "{}", ping.output);
    let before: Vec<Vec<u64>> = Side::BOTH
        .iter()
        .map(|&s| received_per_worker(&bed, s))
        .collect();

    let to = SocketAddr::new(bed.host_addr(Side::B, false), PORT);
    let sink = bed
        .host(Side::B)
        .ns
        .run_in(|| UdpSocket::bind(to))
        .unwrap()
        .unwrap();
    sink.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let senders: Vec<UdpSocket> = (0..FLOWS)
        .map(|_| {
            bed.host(Side::A)
                .ns
                .run_in(|| UdpSocket::bind("10.1.0.2:0"))
                .unwrap()
                .unwrap()
        })
        .collect();
    let total = (FLOWS * PER_FLOW) as usize;
    // Read while sending: the sink's socket buffer holds a few hundred.
    let seen: HashMap<(u32, u32), u32> = std::thread::scope(|s| {
        let receiver = s.spawn(|| {
            let mut seen: HashMap<(u32, u32), u32> = HashMap::new();
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut buf = [0u8; 64];
            let mut quiet_since = None;
            // Until all arrived and a moment more (a duplicate would
            // arrive right behind its first copy), or the deadline.
            while Instant::now() < deadline {
                match sink.recv_from(&mut buf) {
                    Ok((8, _)) => {
                        let flow = u32::from_be_bytes(buf[..4].try_into().unwrap());
                        let seq = u32::from_be_bytes(buf[4..8].try_into().unwrap());
                        *seen.entry((flow, seq)).or_default() += 1;
                        quiet_since = None;
                    }
                    _ if seen.len() == total => {
                        let since = *quiet_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > Duration::from_millis(300) {
                            break;
                        }
                    }
                    _ => {}
                }
            }
            seen
        });
        for seq in 0..PER_FLOW {
            for (flow, socket) in senders.iter().enumerate() {
                let mut payload = [0u8; 8];
                payload[..4].copy_from_slice(&(flow as u32).to_be_bytes());
                payload[4..].copy_from_slice(&seq.to_be_bytes());
                socket.send_to(&payload, to).unwrap();
            }
            // One round of all flows at a time: the test is about where
            // packets go, not about how much a veth ring absorbs at once.
            std::thread::sleep(Duration::from_millis(2));
        }
        receiver.join().unwrap()
    });
    let twice: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(
        seen.len(),
        total,
        "{workers_per_gateway} worker(s): {} of {total} datagrams arrived",
        seen.len()
    );

    let after: Vec<Vec<u64>> = Side::BOTH
        .iter()
        .map(|&s| received_per_worker(&bed, s))
        .collect();
    for (i, side) in Side::BOTH.iter().enumerate() {
        let per_worker: Vec<u64> = after[i]
            .iter()
            .zip(&before[i])
            .map(|(a, b)| a - b)
            .collect();
        eprintln!(
            "gateway {side}, {workers_per_gateway} worker(s): received per worker {per_worker:?}"
        );
        assert_eq!(
            per_worker.iter().sum::<u64>(),
            total as u64,
            "gateway {side}: each datagram handled by exactly one worker"
        );
        // Host A's flows spread over gateway A's LAN queues, so every
        // worker of gateway A has its share. (Gateway B's ESP all comes
        // from one tunnel address pair: its spread is the wire's hash.)
        if *side == Side::A {
            assert!(
                per_worker.iter().all(|&n| n > 0),
                "gateway A: a worker saw none of {FLOWS} flows: {per_worker:?}"
            );
        }
    }
}

#[test]
fn one_worker_serves_four_queues() {
    each_datagram_once_through(1);
}

#[test]
fn two_workers_share_four_queues() {
    each_datagram_once_through(2);
}

#[test]
fn four_workers_each_serve_a_queue() {
    each_datagram_once_through(4);
}
