//! RFC 9611 per-resource Child SAs, `xdpsec ike` against `xdpsec ike`,
//! two data-plane workers per gateway (two queues on every veth), on the
//! bed's user defaults: the IKE daemons make a fallback child and one
//! child per worker; many UDP flows from host A spread over gateway A's
//! LAN queues, so both per-resource SAs carry traffic; every datagram
//! arrives once and each flow in order; the SAs' counters add up to what
//! was sent. With per-resource SAs off on one side (a peer without RFC
//! 9611, as strongSwan 5.9 is), exactly one child is made and carries it
//! all.
//!
//! Root only (namespaces, XDP, AF_XDP); needs iputils' ping.

mod ike_common;

use ike_common::*;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use xdpsec_testbed::tunnel::{Encapsulation, IkeOptions, Side, TunnelBed, TunnelOptions};

const WORKERS: u32 = 2;
/// Enough flows that both queues get some whatever the host's hash does
/// (all on one: 2 * 0.5^32).
const FLOWS: u32 = 32;
const PER_FLOW: u32 = 20;
const PORT: u16 = 7400;

fn bed(per_resource_sas: [Option<bool>; 2]) -> TunnelBed {
    TunnelBed::new(
        env!("CARGO_BIN_EXE_xdpsec"),
        TunnelOptions {
            ipv6: false,
            encap: Encapsulation::Esp,
            workers: WORKERS,
            ike: Some(IkeOptions {
                per_resource_sas,
                ..options()
            }),
            start_timeout: SETTLE,
            ..TunnelOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Packets carried so far by each SA of `side` in `direction`, by
/// (resource, SPI); resource `None` for the fallback (or only) SA.
fn packets(bed: &TunnelBed, side: Side, direction: &str) -> BTreeMap<(Option<u64>, u64), u64> {
    dataplane_sas(bed, side)
        .iter()
        .filter(|sa| sa["direction"] == direction)
        .map(|sa| {
            (
                (sa["resource"].as_u64(), sa["spi"].as_u64().unwrap()),
                sa["counters"]["packets"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

fn delta(
    after: &BTreeMap<(Option<u64>, u64), u64>,
    before: &BTreeMap<(Option<u64>, u64), u64>,
) -> BTreeMap<(Option<u64>, u64), u64> {
    after
        .iter()
        .map(|(k, n)| (*k, n - before.get(k).copied().unwrap_or(0)))
        .collect()
}

/// Sends `PER_FLOW` numbered datagrams on each of `FLOWS` sockets from host
/// A to host B, a round of all flows at a time. Returns, per flow, the
/// sequence numbers in the order they arrived.
fn flows(bed: &TunnelBed) -> HashMap<u32, Vec<u32>> {
    Flows::start(bed, Side::A).finish().0
}

/// `FLOWS` UDP flows from the host of one side to the other's, sent in
/// rounds (one numbered datagram per flow) until [`Flows::finish`], at
/// least `PER_FLOW` rounds.
struct Flows {
    stop: Arc<AtomicBool>,
    sender: std::thread::JoinHandle<u32>,
    receiver: std::thread::JoinHandle<HashMap<u32, Vec<u32>>>,
}

impl Flows {
    fn start(bed: &TunnelBed, from: Side) -> Flows {
        let to = SocketAddr::new(bed.host_addr(from.other(), false), PORT);
        let sink = bed
            .host(from.other())
            .ns
            .run_in(|| UdpSocket::bind(to))
            .unwrap()
            .unwrap();
        sink.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        // Room for a second of every flow: on a loaded machine the reader
        // may not run for tens of milliseconds, and a full socket buffer
        // would drop datagrams the tunnel carried (the default holds about
        // six rounds). A property of this test's socket, not of the host.
        nix::sys::socket::setsockopt(&sink, nix::sys::socket::sockopt::RcvBufForce, &(16 << 20))
            .unwrap();
        let source = bed.host_addr(from, false);
        let senders: Vec<UdpSocket> = (0..FLOWS)
            .map(|_| {
                bed.host(from)
                    .ns
                    .run_in(|| UdpSocket::bind(SocketAddr::new(source, 0)))
                    .unwrap()
                    .unwrap()
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        // Rounds sent, once the sender is done; u32::MAX before.
        let sent = Arc::new(AtomicU32::new(u32::MAX));
        let receiver = {
            let sent = sent.clone();
            std::thread::spawn(move || {
                let mut arrived: HashMap<u32, Vec<u32>> = HashMap::new();
                let mut count = 0usize;
                let mut buf = [0u8; 64];
                let mut quiet_since = None;
                let mut sent_at = None;
                // Until all arrived and a moment more (a duplicate would
                // come right behind its first copy), or 10 s after the
                // last send.
                while sent_at.is_none_or(|at: Instant| at.elapsed() < Duration::from_secs(10)) {
                    let rounds = sent.load(Ordering::Acquire);
                    if sent_at.is_none() && rounds != u32::MAX {
                        sent_at = Some(Instant::now());
                    }
                    match sink.recv_from(&mut buf) {
                        Ok((8, _)) => {
                            let flow = u32::from_be_bytes(buf[..4].try_into().unwrap());
                            let seq = u32::from_be_bytes(buf[4..8].try_into().unwrap());
                            arrived.entry(flow).or_default().push(seq);
                            count += 1;
                            quiet_since = None;
                        }
                        _ if rounds != u32::MAX && count >= (rounds * FLOWS) as usize => {
                            let since = *quiet_since.get_or_insert_with(Instant::now);
                            if since.elapsed() > Duration::from_millis(300) {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                arrived
            })
        };
        let sender = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut seq = 0u32;
                while seq < PER_FLOW || !stop.load(Ordering::Acquire) {
                    for (flow, socket) in senders.iter().enumerate() {
                        let mut payload = [0u8; 8];
                        payload[..4].copy_from_slice(&(flow as u32).to_be_bytes());
                        payload[4..].copy_from_slice(&seq.to_be_bytes());
                        socket.send_to(&payload, to).unwrap();
                    }
                    seq += 1;
                    // A round at a time: this is about which SA carries
                    // what, not about how much a veth ring absorbs at once.
                    std::thread::sleep(Duration::from_millis(2));
                }
                sent.store(seq, Ordering::Release);
                seq
            })
        };
        Flows {
            stop,
            sender,
            receiver,
        }
    }

    /// Stops sending; per flow the sequence numbers as they arrived, and
    /// the rounds sent.
    fn finish(self) -> (HashMap<u32, Vec<u32>>, u32) {
        self.stop.store(true, Ordering::Release);
        let rounds = self.sender.join().unwrap();
        (self.receiver.join().unwrap(), rounds)
    }
}

/// Every datagram of every flow arrived once, in the order it was sent.
fn assert_each_flow_whole_and_in_order(
    bed: &TunnelBed,
    arrived: &HashMap<u32, Vec<u32>>,
    rounds: u32,
) {
    let expected: Vec<u32> = (0..rounds).collect();
    let mut wrong = Vec::new();
    for flow in 0..FLOWS {
        let got = arrived.get(&flow).cloned().unwrap_or_default();
        if got != expected {
            let missing: Vec<u32> = expected
                .iter()
                .filter(|q| !got.contains(q))
                .copied()
                .collect();
            let out_of_order: Vec<(u32, u32)> = got
                .windows(2)
                .filter(|w| w[1] <= w[0])
                .map(|w| (w[0], w[1]))
                .collect();
            wrong.push(format!(
                "flow {flow}: {} of {rounds} arrived, missing {missing:?}, out of order {out_of_order:?}",
                got.len()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}\n{}", wrong.join("\n"), bed.ike_logs());
}

#[test]
fn per_resource_sas_carry_each_workers_flows_in_order_and_add_up() {
    let bed = bed([None, None]);
    for side in Side::BOTH {
        bed.wait_for_children(side, SETTLE, |c| c.len() == 1 + WORKERS as usize)
            .unwrap_or_else(|e| panic!("{e}\n{}", bed.ike_logs()));
        let mut roles: Vec<String> = bed
            .installed_children(side)
            .unwrap()
            .iter()
            .map(|c| c["resource"].as_str().unwrap_or("-").to_owned())
            .collect();
        roles.sort();
        assert_eq!(roles, ["fallback", "worker 0", "worker 1"], "{side}");
        // The side that answered puts a per-resource outbound SA in once
        // the peer sends under the child, or after 2 s.
        wait_until(&bed, "an outbound SA per worker and the fallback", || {
            let resources: Vec<Option<u64>> =
                packets(&bed, side, "out").keys().map(|k| k.0).collect();
            resources == [None, Some(0), Some(1)]
        });
    }
    // Only the fallback child has policies; the data plane pairs the
    // per-resource SAs with them.
    let fallback_out = packets(&bed, Side::A, "out")
        .keys()
        .find(|k| k.0.is_none())
        .unwrap()
        .1;
    let policies = dataplane_policies(&bed, Side::A);
    let out_policies: Vec<&Value> = policies
        .iter()
        .filter(|p| p["direction"] == "out")
        .collect();
    assert_eq!(out_policies.len(), 1, "{policies:?}");
    assert_eq!(out_policies[0]["spi"].as_u64(), Some(fallback_out));

    // Resolve the neighbours first (a cold table holds the first packets,
    // which is tests/cold_neighbours.rs's business), then count from here.
    ping_ok(&bed, Side::A, Side::B, false, 1);
    let before_a = packets(&bed, Side::A, "out");
    let before_b = packets(&bed, Side::B, "in");

    let arrived = flows(&bed);
    assert_each_flow_whole_and_in_order(&bed, &arrived, PER_FLOW);

    let sent = u64::from(FLOWS * PER_FLOW);
    let out = delta(&packets(&bed, Side::A, "out"), &before_a);
    let inb = delta(&packets(&bed, Side::B, "in"), &before_b);
    eprintln!("gateway A outbound per SA: {out:?}\ngateway B inbound per SA: {inb:?}");
    for (k, n) in &out {
        if k.0.is_some() {
            assert!(*n > 0, "per-resource SA {k:?} carried nothing: {out:?}");
        }
    }
    assert_eq!(out.values().sum::<u64>(), sent, "A's SAs sent {out:?}");
    assert_eq!(inb.values().sum::<u64>(), sent, "B's SAs took {inb:?}");
    // B took each of A's per-resource SAs' packets under that SA.
    let out_by_spi: BTreeMap<u64, u64> = out.iter().map(|(k, n)| (k.1, *n)).collect();
    let in_by_spi: BTreeMap<u64, u64> = inb.iter().map(|(k, n)| (k.1, *n)).collect();
    assert_eq!(out_by_spi, in_by_spi);
}

#[test]
fn a_peer_without_per_resource_sas_gets_exactly_one_child() {
    let bed = bed([None, Some(false)]);
    // Once traffic flows, the initiator has had the IKE_AUTH answer, the
    // only moment it would ask for per-resource children.
    ping_ok(&bed, Side::A, Side::B, false, 1);
    for side in Side::BOTH {
        let children = bed.installed_children(side).unwrap();
        assert_eq!(children.len(), 1, "{side}: {children:?}");
        let sas = dataplane_sas(&bed, side);
        assert_eq!(sas.len(), 2, "{side}: {sas:?}");
        assert!(
            sas.iter().all(|sa| sa["resource"].is_null()),
            "{side}: {sas:?}"
        );
    }
    let before = packets(&bed, Side::A, "out");
    let arrived = flows(&bed);
    assert_each_flow_whole_and_in_order(&bed, &arrived, PER_FLOW);
    let out = delta(&packets(&bed, Side::A, "out"), &before);
    assert_eq!(out.len(), 1);
    assert_eq!(
        out.values().sum::<u64>(),
        u64::from(FLOWS * PER_FLOW),
        "{out:?}"
    );
}

/// The (in, out) SPIs of the installed children of `side`.
fn child_spi_set(bed: &TunnelBed, side: Side) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = bed
        .installed_children(side)
        .unwrap_or_default()
        .iter()
        .map(|c| {
            (
                c["spi_in"].as_str().unwrap_or_default().to_owned(),
                c["spi_out"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn per_resource_children_rekey_from_either_side_while_every_flow_runs() {
    let bed = bed([None, None]);
    let children = 1 + WORKERS as usize;
    for side in Side::BOTH {
        bed.wait_for_children(side, SETTLE, |c| c.len() == children)
            .unwrap_or_else(|e| panic!("{e}\n{}", bed.ike_logs()));
    }
    ping_ok(&bed, Side::A, Side::B, false, 1);
    let before = packets(&bed, Side::A, "out");
    // Rekeyed by B, A answers: A must not send on its new SAs before B has
    // their inbound halves (a per-resource outbound SA waits for the
    // Delete of the old child, as a policy switch does).
    let run = Flows::start(&bed, Side::A);
    {
        for side in [Side::B, Side::A] {
            let old = child_spi_set(&bed, Side::A);
            let out = ike_command(&bed, side, &["rekey", "--child"]);
            assert!(out.contains("rekeyed"), "{out}");
            wait_until(&bed, "every child rekeyed on both sides", || {
                Side::BOTH
                    .iter()
                    .all(|s| child_spi_set(&bed, *s).len() == children)
                    && child_spi_set(&bed, Side::A)
                        .iter()
                        .all(|c| !old.contains(c))
            });
            // Let the old inbound SAs' linger (2 s) pass under traffic.
            std::thread::sleep(Duration::from_millis(2500));
        }
    }
    let (arrived, rounds) = run.finish();
    assert_each_flow_whole_and_in_order(&bed, &arrived, rounds);
    let now = packets(&bed, Side::A, "out");
    let resources: Vec<Option<u64>> = now.keys().map(|k| k.0).collect();
    assert_eq!(resources, vec![None, Some(0), Some(1)], "{now:?}");
    assert!(
        now.keys().all(|k| !before.contains_key(k)),
        "all new SAs: {before:?} -> {now:?}"
    );
}

#[test]
fn a_restarted_daemon_sets_its_per_resource_children_up_again_while_every_flow_runs() {
    let mut bed = bed([None, None]);
    let children = 1 + WORKERS as usize;
    for side in Side::BOTH {
        bed.wait_for_children(side, SETTLE, |c| c.len() == children)
            .unwrap_or_else(|e| panic!("{e}\n{}", bed.ike_logs()));
    }
    ping_ok(&bed, Side::B, Side::A, false, 1);
    let old = child_spi_set(&bed, Side::B);
    // B's flows to A while A's daemon restarts and sets the connection up
    // again: B answers A's new per-resource children, and must not send on
    // them before A has their inbound halves.
    let run = Flows::start(&bed, Side::B);
    std::thread::sleep(Duration::from_millis(300));
    bed.ike_kill(Side::A).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    bed.ike_start(Side::A).unwrap();
    bed.wait_for_ike_socket(Side::A).unwrap();
    wait_until(&bed, "the connection and its children up again", || {
        let now = child_spi_set(&bed, Side::B);
        now.len() == children && now.iter().all(|c| !old.contains(c))
    });
    // Beyond the takeover timeout (2 s): every held SA is in.
    std::thread::sleep(Duration::from_millis(2500));
    let (arrived, rounds) = run.finish();
    assert_each_flow_whole_and_in_order(&bed, &arrived, rounds);
    let resources: Vec<Option<u64>> = packets(&bed, Side::B, "out").keys().map(|k| k.0).collect();
    assert_eq!(resources, vec![None, Some(0), Some(1)]);
}
