//! Fail closed (issue 11): whatever state the data plane is in, a packet a
//! protect policy covers never crosses the underlay in cleartext, and no
//! (SPI, sequence number) pair is ever sent twice.
//!
//! The gateways forward IP (`net.ipv4.ip_forward=1`, as gateway hosts
//! have it): a protected packet the kernel gets would be routed out to the
//! peer in cleartext. Host A sends UDP datagrams carrying a canary string
//! from many source ports (so they spread over the LAN's RX queues); the
//! underlay between the gateways is captured and searched for it.
//!
//! Needs root (namespaces, XDP, AF_XDP, nftables): `cargo xtask test`. The
//! worker-panic and map-failure cases need the `fault-injection` feature,
//! which `cargo xtask test` turns on (`--all-features`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use xdpsec_testbed::tunnel::{Side, TunnelBed, TunnelOptions};
use xdpsec_testbed::Capture;

const CANARY: &[u8] = b"XDPSEC-CLEARTEXT-CANARY";
const PORT: u16 = 7777;
/// Source ports per burst: enough for every RX queue of a 4-queue veth.
const FLOWS: u16 = 32;

fn bed(options: TunnelOptions) -> TunnelBed {
    let binary = env!("CARGO_BIN_EXE_xdpsec");
    TunnelBed::new(
        binary,
        TunnelOptions {
            ipv6: false,
            ..options
        },
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Host B's UDP socket for the canaries.
fn sink(bed: &TunnelBed) -> UdpSocket {
    let addr = SocketAddr::new(bed.host_addr(Side::B, false), PORT);
    let socket = bed
        .host(Side::B)
        .ns
        .run_in(move || UdpSocket::bind(addr))
        .unwrap()
        .unwrap();
    socket.set_nonblocking(true).unwrap();
    socket
}

/// Sends one datagram from each of `FLOWS` source ports of host A to host
/// B: `FLOWS` datagrams, each with the canary and `burst`/flow numbers.
fn send_burst(bed: &TunnelBed, burst: u32) {
    let dst = SocketAddr::new(bed.host_addr(Side::B, false), PORT);
    bed.host(Side::A)
        .ns
        .run_in(move || {
            for flow in 0..FLOWS {
                let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
                let payload = [CANARY, format!(" {burst}/{flow}").as_bytes()].concat();
                socket.send_to(&payload, dst).unwrap();
            }
        })
        .unwrap();
}

/// The distinct datagrams `sink` has received so far.
fn drain(sink: &UdpSocket, into: &mut std::collections::HashSet<Vec<u8>>) -> usize {
    let mut buf = [0u8; 2048];
    let mut duplicates = 0;
    while let Ok(n) = sink.recv(&mut buf) {
        if !into.insert(buf[..n].to_vec()) {
            duplicates += 1;
        }
    }
    duplicates
}

fn start_capture(bed: &TunnelBed, name: &str) -> Capture {
    let tap = bed.underlay();
    let path = bed.dir().join(format!("{name}.pcap"));
    Capture::start(&tap.ns, &tap.port_a, "ip or ip6", &path, 100_000).unwrap()
}

/// Frames on the underlay that carry the canary: cleartext.
fn leaks(frames: &[Vec<u8>]) -> usize {
    frames
        .iter()
        .filter(|f| f.windows(CANARY.len()).any(|w| w == CANARY))
        .count()
}

/// ESP frames (plain ESP) from gateway A on the underlay.
fn esp_from_a(frames: &[Vec<u8>]) -> Vec<(u32, u32)> {
    frames
        .iter()
        .filter(|f| f.len() > 42 && f[12..14] == [0x08, 0x00] && f[23] == 50)
        .filter(|f| f[26..30] == [198, 18, 0, 1])
        .map(|f| {
            let ihl = usize::from(f[14] & 0x0f) * 4;
            let esp = 14 + ihl;
            let spi = u32::from_be_bytes(f[esp..esp + 4].try_into().unwrap());
            let seq = u32::from_be_bytes(f[esp + 4..esp + 8].try_into().unwrap());
            (spi, seq)
        })
        .collect()
}

fn guard_status(bed: &TunnelBed, side: Side) -> String {
    bed.gateway(side)
        .ns
        .run([env!("CARGO_BIN_EXE_xdpsec"), "guard", "status"])
        .unwrap()
}

/// Sends bursts for `how_long`, then returns the underlay frames.
fn send_while_captured(bed: &TunnelBed, name: &str, bursts: u32) -> Vec<Vec<u8>> {
    let capture = start_capture(bed, name);
    for burst in 0..bursts {
        send_burst(bed, burst);
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    capture.finish(usize::MAX).unwrap()
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn more_rx_queues_than_workers_are_all_served_each_packet_once() {
    let bed = bed(TunnelOptions {
        workers: 1,
        queues: Some(4),
        ..TunnelOptions::default()
    });
    let sink = sink(&bed);
    let frames = send_while_captured(&bed, "queues", 8);
    assert_eq!(leaks(&frames), 0, "protected datagrams left in cleartext");
    let mut got = std::collections::HashSet::new();
    wait_until("host B has every datagram", Duration::from_secs(5), || {
        drain(&sink, &mut got);
        got.len() == 8 * usize::from(FLOWS)
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(drain(&sink, &mut got), 0, "a datagram arrived twice");
    let status = bed.cli(Side::A, &["status"]).unwrap();
    assert!(
        status.contains("worker 0 running, queues: lan0:0,lan0:1,lan0:2,lan0:3,wan0:0,wan0:1"),
        "{status}"
    );
    assert!(
        status.contains("guard: nftables table inet xdpsec_guard in place"),
        "{status}"
    );
}

#[test]
fn a_config_that_names_fewer_queues_than_the_interface_has_is_refused() {
    let mut bed = bed(TunnelOptions {
        workers: 1,
        queues: Some(2),
        ..TunnelOptions::default()
    });
    bed.stop(Side::A).unwrap();
    let config = bed.config_path(Side::A).to_path_buf();
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace("role = \"inside\"\n", "role = \"inside\"\nqueues = 1\n");
    std::fs::write(&config, text).unwrap();
    let out = bed
        .gateway(Side::A)
        .ns
        .run([
            env!("CARGO_BIN_EXE_xdpsec"),
            "dataplane",
            "--config",
            config.to_str().unwrap(),
        ])
        .unwrap_err()
        .to_string();
    assert!(
        out.contains("interface[0].queues") && out.contains("ethtool -L lan0"),
        "{out}"
    );
}

#[test]
fn killed_or_stopped_the_data_plane_leaves_nothing_in_cleartext() {
    let mut bed = bed(TunnelOptions::default());
    // Running: ESP only.
    let frames = send_while_captured(&bed, "running", 2);
    assert_eq!(leaks(&frames), 0);
    assert!(!esp_from_a(&frames).is_empty(), "no ESP while running");

    // kill -9: no clean stop, XDP gone with the process.
    bed.kill(Side::A).unwrap();
    let frames = send_while_captured(&bed, "killed", 4);
    assert_eq!(leaks(&frames), 0, "cleartext after kill -9");
    let guard = guard_status(&bed, Side::A);
    assert!(guard.contains("in place"), "{guard}");
    assert!(
        !guard.contains("blocked 0 out"),
        "the guard counted nothing: {guard}"
    );
    // What `xdpsec status` says with the data plane gone.
    let status = bed
        .gateway(Side::A)
        .ns
        .run([
            env!("CARGO_BIN_EXE_xdpsec"),
            "status",
            "--api-socket",
            bed.api_socket(Side::A).to_str().unwrap(),
        ])
        .unwrap_err()
        .to_string();
    assert!(
        status.contains("not reachable") && status.contains("in place"),
        "{status}"
    );

    // Restarted, then SIGTERM: the guard stays by default.
    bed.start(Side::A).unwrap();
    bed.wait_for_socket(Side::A).unwrap();
    bed.stop(Side::A).unwrap();
    let frames = send_while_captured(&bed, "stopped", 4);
    assert_eq!(leaks(&frames), 0, "cleartext after SIGTERM");

    // The control: without the guard the same traffic does leak, so the
    // capture above would have seen it.
    bed.gateway(Side::A)
        .ns
        .run([env!("CARGO_BIN_EXE_xdpsec"), "guard", "remove"])
        .unwrap();
    let frames = send_while_captured(&bed, "unguarded", 2);
    assert!(leaks(&frames) > 0, "the capture cannot see cleartext");
}

#[test]
fn a_static_sa_gateway_restarted_three_times_never_repeats_a_nonce_nor_takes_a_replay() {
    let mut bed = bed(TunnelOptions::default());
    let capture = start_capture(&bed, "restarts");
    for round in 0..4 {
        if round > 0 {
            bed.stop(Side::A).unwrap();
            bed.start(Side::A).unwrap();
            bed.wait_for_socket(Side::A).unwrap();
        }
        let stats = bed.ping(Side::A, Side::B, false, 3).unwrap();
        assert!(stats.received >= 2, "round {round}: {}", stats.output);
    }
    let frames = capture.finish(usize::MAX).unwrap();
    let sent = esp_from_a(&frames);
    assert!(sent.len() >= 8, "{} ESP frames from A", sent.len());
    let mut seen = std::collections::HashSet::new();
    for pair in &sent {
        assert!(
            seen.insert(*pair),
            "(SPI, sequence number) {pair:x?} sent twice"
        );
    }

    // An ESP packet from A captured before B restarts, sent again after.
    let one = frames
        .iter()
        .find(|f| f.len() > 42 && f[23] == 50 && f[26..30] == [198, 18, 0, 1])
        .unwrap()
        .clone();
    bed.stop(Side::B).unwrap();
    bed.start(Side::B).unwrap();
    bed.wait_for_socket(Side::B).unwrap();
    let drops = |bed: &TunnelBed| {
        bed.sa_list(Side::B).unwrap()["sas"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|sa| sa["direction"] == "in")
            .map(|sa| {
                let d = &sa["counters"]["drops"];
                d["replayed"].as_u64().unwrap_or(0) + d["too_old"].as_u64().unwrap_or(0)
            })
            .sum::<u64>()
    };
    let before = drops(&bed);
    xdpsec_testbed::send_raw_ipv4(&bed.gateway(Side::A).ns, &[one[14..].to_vec()], 1).unwrap();
    wait_until(
        "B refuses the replayed packet",
        Duration::from_secs(5),
        || drops(&bed) > before,
    );
}

#[test]
fn a_drop_policy_outside_every_protect_prefix_drops_what_it_matches() {
    let bed = bed(TunnelOptions::default());
    let gw = &bed.gateway(Side::A).ns;
    // The kernel would forward it to B in cleartext.
    gw.add_route("10.9.0.0/24", "198.18.0.2".parse().unwrap())
        .unwrap();
    let mut api = xdpsec_api::ApiClient::connect(bed.api_socket(Side::A)).unwrap();
    api.add_policy(xdpsec_api::Policy {
        local: "10.1.0.0/24".parse().unwrap(),
        remote: "10.9.0.0/24".parse().unwrap(),
        direction: xdpsec_api::Direction::Out,
        action: xdpsec_api::PolicyAction::Drop,
        spi: None,
    })
    .unwrap();
    let capture = start_capture(&bed, "drop");
    let dst = SocketAddr::new(IpAddr::from([10, 9, 0, 5]), PORT);
    bed.host(Side::A)
        .ns
        .run_in(move || {
            let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
            for _ in 0..10 {
                socket.send_to(CANARY, dst).unwrap();
            }
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let frames = capture.finish(usize::MAX).unwrap();
    assert_eq!(leaks(&frames), 0, "the drop policy let traffic out");
    wait_until(
        "the worker counts the drops",
        Duration::from_secs(3),
        || {
            bed.worker_total(Side::A, "drops", "policy_drop")
                .unwrap_or(0)
                >= 10
        },
    );
}

#[cfg(feature = "fault-injection")]
#[test]
fn a_worker_that_panics_stops_the_data_plane_and_nothing_leaks() {
    let mut bed = bed(TunnelOptions {
        dataplane_args: vec!["--fault-worker-panic-after".into(), "40".into()],
        ..TunnelOptions::default()
    });
    let frames = send_while_captured(&bed, "panic", 10);
    assert_eq!(leaks(&frames), 0, "cleartext around a worker's death");
    wait_until("the data plane exits", Duration::from_secs(5), || {
        !bed.is_running(Side::A)
    });
    let status = bed.stop(Side::A).err();
    let log = bed.log(Side::A);
    assert!(
        log.contains("worker 0 died (panicked: fault injection"),
        "{status:?}\n{log}"
    );
    let guard = guard_status(&bed, Side::A);
    assert!(guard.contains("in place"), "{guard}");
    // Started again without the fault (as a service manager would; gateway
    // B's worker has the switch too and dies the same way once it has seen
    // enough), they carry traffic.
    bed.set_dataplane_args(Vec::new());
    for side in Side::BOTH {
        bed.stop(side).ok();
        bed.start(side).unwrap();
        bed.wait_for_socket(side).unwrap();
    }
    let stats = bed.ping(Side::A, Side::B, false, 3).unwrap();
    assert!(
        stats.all_answered_once(),
        "{}\n{}\n{}",
        stats.output,
        bed.log(Side::A),
        bed.cli(Side::A, &["sa", "list"]).unwrap_or_default()
    );
}

#[cfg(feature = "fault-injection")]
#[test]
fn a_failed_map_update_fails_the_request_and_changes_nothing() {
    let bed = bed(TunnelOptions {
        dataplane_args: vec!["--fault-fail-prefix".into(), "10.2.77.0/24".into()],
        ..TunnelOptions::default()
    });
    let spi = bed.sa(Side::A).spi;
    let mut api = xdpsec_api::ApiClient::connect(bed.api_socket(Side::A)).unwrap();
    let before = api.list_policies().unwrap();
    let err = api
        .add_policy(xdpsec_api::Policy {
            local: "10.1.0.0/24".parse().unwrap(),
            remote: "10.2.77.0/24".parse().unwrap(),
            direction: xdpsec_api::Direction::Out,
            action: xdpsec_api::PolicyAction::Protect,
            spi: Some(spi),
        })
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("10.2.77.0/24") && err.contains("undone"),
        "{err}"
    );
    assert_eq!(api.list_policies().unwrap(), before);
    let rules = bed
        .gateway(Side::A)
        .ns
        .run(["nft", "list", "table", "inet", "xdpsec_guard"])
        .unwrap();
    assert!(!rules.contains("10.2.77.0/24"), "{rules}");
    let frames = send_while_captured(&bed, "map-failure", 2);
    assert_eq!(leaks(&frames), 0);
    assert!(!esp_from_a(&frames).is_empty());
}
