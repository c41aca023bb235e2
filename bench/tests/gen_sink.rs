//! The generator and the sink end to end over one veth pair between two
//! namespaces (needs root): every packet sent at a set rate arrives once,
//! in order per stream, with a latency; IMIX sizes arrive in their mix;
//! traffic to another address is left to the kernel.

use serde_json::Value;
use std::time::Duration;
use xdpsec_testbed::{format_mac, Netns, NsChild, Testbed};

const BIN: &str = env!("CARGO_BIN_EXE_xdpsec-bench");

struct Pair {
    _tb: Testbed,
    a: Netns,
    b: Netns,
    b_mac: String,
}

fn pair(queues: u32) -> Pair {
    let tb = Testbed::new().unwrap_or_else(|e| panic!("{e}"));
    let a = tb.add_netns("gen").unwrap();
    let b = tb.add_netns("sink").unwrap();
    let (_, b0) = tb
        .add_veth_with_queues(&a, "eth0", &b, "eth0", queues)
        .unwrap();
    a.add_addr("eth0", "10.1.0.2".parse().unwrap(), 24).unwrap();
    b.add_addr("eth0", "10.1.0.3".parse().unwrap(), 24).unwrap();
    Pair {
        b_mac: format_mac(&b0.mac),
        _tb: tb,
        a,
        b,
    }
}

fn start_sink(b: &Netns, queues: u32) -> NsChild {
    let sink = b
        .spawn([
            BIN,
            "sink",
            "--iface",
            "eth0",
            "--queues",
            &queues.to_string(),
            "--addr",
            "10.1.0.3",
            "--duration-ms",
            "8000",
            "--idle-ms",
            "500",
        ])
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !sink.stderr_so_far().contains("ready") {
        assert!(
            matches!(sink.try_wait(), Ok(None)),
            "sink exited: {}",
            sink.stderr_so_far()
        );
        assert!(std::time::Instant::now() < deadline, "sink not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    sink
}

fn json(out: &xdpsec_testbed::ChildOutput) -> Value {
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

fn gen(p: &Pair, queues: u32, size: &str, count: u64, rate: u32) -> Value {
    let out =
        p.a.spawn([
            BIN,
            "gen",
            "--iface",
            "eth0",
            "--queues",
            &queues.to_string(),
            "--dst-mac",
            &p.b_mac,
            "--src",
            "10.1.0.2",
            "--dst",
            "10.1.0.3",
            "--size",
            size,
            "--rate",
            &rate.to_string(),
            "--count",
            &count.to_string(),
            "--duration-ms",
            "5000",
        ])
        .unwrap()
        .wait_timeout(Duration::from_secs(15))
        .unwrap();
    json(&out)
}

#[test]
fn every_packet_arrives_once_in_order_with_a_latency() {
    for (queues, size) in [(1, "64"), (2, "imix")] {
        let p = pair(queues);
        let sink = start_sink(&p.b, queues);
        const COUNT: u64 = 6000;
        let g = gen(&p, queues, size, COUNT, 20_000);
        assert_eq!(g["sent"], COUNT, "{g}");
        let s = json(&sink.wait_timeout(Duration::from_secs(15)).unwrap());
        let t = &s["totals"];
        assert_eq!(t["received"], COUNT, "{queues} queues {size}: {s}");
        assert_eq!(t["duplicates"], 0, "{s}");
        assert_eq!(t["reordered"], 0, "{s}");
        assert_eq!(t["lost"], 0, "{s}");
        assert_eq!(s["received_per_stream"], g["sent_per_stream"], "{s}\n{g}");
        let lat = &s["latency"];
        assert_eq!(lat["count"], COUNT);
        assert!(lat["p50_ns"].as_u64().unwrap() > 0, "{lat}");
        assert!(lat["p50_ns"].as_u64() <= lat["p999_ns"].as_u64());
        assert_eq!(s["ip_bytes"], g["ip_bytes"], "{s}\n{g}");
        if size == "imix" {
            let mean = g["ip_bytes"].as_f64().unwrap() / COUNT as f64;
            let want = (7.0 * 64.0 + 4.0 * 576.0 + 1500.0) / 12.0;
            assert!((mean - want).abs() < 1.0, "mean IMIX size {mean}");
        }
    }
}

#[test]
fn the_kernel_keeps_traffic_to_other_addresses() {
    let p = pair(1);
    p.b.add_addr("eth0", "10.1.0.4".parse().unwrap(), 24)
        .unwrap();
    // Warm the neighbour entry, so the pings below need no ARP.
    p.a.ping("10.1.0.3".parse().unwrap(), 1).unwrap();
    let sink = start_sink(&p.b, 1);
    // While the sink runs, pings to another address of its host reach the
    // kernel; pings to the sink's own address land in the sink as
    // not-UDP-to-its-port.
    p.a.ping("10.1.0.4".parse().unwrap(), 2).unwrap();
    let to_sink =
        p.a.ping_report("10.1.0.3".parse().unwrap(), 2, Duration::from_millis(300))
            .unwrap();
    assert_eq!(to_sink.received, 0, "{to_sink:?}");
    let s = json(&sink.wait_timeout(Duration::from_secs(15)).unwrap());
    assert_eq!(s["totals"]["received"], 0, "{s}");
    assert_eq!(s["other"], 2, "{s}");
}
