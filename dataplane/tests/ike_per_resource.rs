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
    flows_during(bed, || {}).0
}

/// Like [`flows`], but goes on sending rounds until `during` has returned
/// (at least `PER_FLOW` of them); also returns how many rounds went.
fn flows_during(bed: &TunnelBed, during: impl FnOnce()) -> (HashMap<u32, Vec<u32>>, u32) {
    let to = SocketAddr::new(bed.host_addr(Side::B, false), PORT);
    let sink = bed
        .host(Side::B)
        .ns
        .run_in(|| UdpSocket::bind(to))
        .unwrap()
        .unwrap();
    sink.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let from = bed.host_addr(Side::A, false);
    let senders: Vec<UdpSocket> = (0..FLOWS)
        .map(|_| {
            bed.host(Side::A)
                .ns
                .run_in(|| UdpSocket::bind(SocketAddr::new(from, 0)))
                .unwrap()
                .unwrap()
        })
        .collect();
    let done = AtomicBool::new(false);
    let during_done = AtomicBool::new(false);
    let rounds = AtomicU32::new(0);
    let arrived = std::thread::scope(|s| {
        let receiver = s.spawn(|| {
            let mut arrived: HashMap<u32, Vec<u32>> = HashMap::new();
            let mut count = 0;
            let mut buf = [0u8; 64];
            let mut quiet_since = None;
            let mut sent_at = None;
            // Until all arrived and a moment more (a duplicate would come
            // right behind its first copy), or 10 s after the last send
            // (the sending itself lasts as long as `during` takes).
            while sent_at.is_none_or(|at: Instant| at.elapsed() < Duration::from_secs(10)) {
                if sent_at.is_none() && done.load(Ordering::Acquire) {
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
                    _ if done.load(Ordering::Acquire)
                        && count >= (rounds.load(Ordering::Acquire) * FLOWS) as usize =>
                    {
                        let since = *quiet_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > Duration::from_millis(300) {
                            break;
                        }
                    }
                    _ => {}
                }
            }
            arrived
        });
        let sender = s.spawn(|| {
            let mut seq = 0u32;
            while seq < PER_FLOW || !during_done.load(Ordering::Acquire) {
                for (flow, socket) in senders.iter().enumerate() {
                    let mut payload = [0u8; 8];
                    payload[..4].copy_from_slice(&(flow as u32).to_be_bytes());
                    payload[4..].copy_from_slice(&seq.to_be_bytes());
                    socket.send_to(&payload, to).unwrap();
                }
                seq += 1;
                // A round at a time: this is about which SA carries what,
                // not about how much a veth ring absorbs at once.
                std::thread::sleep(Duration::from_millis(2));
            }
            rounds.store(seq, Ordering::Release);
            done.store(true, Ordering::Release);
        });
        during();
        during_done.store(true, Ordering::Release);
        sender.join().unwrap();
        receiver.join().unwrap()
    });
    (arrived, rounds.load(Ordering::Acquire))
}

/// Every datagram of every flow arrived once, in the order it was sent.
fn assert_each_flow_whole_and_in_order(arrived: &HashMap<u32, Vec<u32>>, rounds: u32) {
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
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
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
        let out = packets(&bed, side, "out");
        let resources: Vec<Option<u64>> = out.keys().map(|k| k.0).collect();
        assert_eq!(
            resources,
            vec![None, Some(0), Some(1)],
            "{side}: outbound SAs {out:?}"
        );
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
    assert_each_flow_whole_and_in_order(&arrived, PER_FLOW);

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
    assert_each_flow_whole_and_in_order(&arrived, PER_FLOW);
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
    let (arrived, rounds) = flows_during(&bed, || {
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
    });
    assert_each_flow_whole_and_in_order(&arrived, rounds);
    let now = packets(&bed, Side::A, "out");
    let resources: Vec<Option<u64>> = now.keys().map(|k| k.0).collect();
    assert_eq!(resources, vec![None, Some(0), Some(1)], "{now:?}");
    assert!(
        now.keys().all(|k| !before.contains_key(k)),
        "all new SAs: {before:?} -> {now:?}"
    );
}
