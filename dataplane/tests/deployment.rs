//! The steps of docs/DEPLOYMENT.md that namespaces can run: sizing an
//! interface's queues for the workers (`ethtool -L`), and what happens when
//! they are changed under a running data plane. (The shipped configs and
//! the README's commands: tests/examples.rs; multi-queue traffic:
//! tests/multi_queue.rs.)
//!
//! Root only; each test builds and removes its own namespaces.

use std::time::{Duration, Instant};
use xdpsec_testbed::tunnel::{Side, TunnelBed, TunnelOptions};

fn bed(options: TunnelOptions) -> Result<TunnelBed, String> {
    TunnelBed::new(env!("CARGO_BIN_EXE_xdpsec"), options).map_err(|e| e.to_string())
}

#[test]
fn more_workers_than_queues_is_refused_naming_the_ethtool_fix() {
    let err = bed(TunnelOptions {
        workers: 2,
        queues: Some(1),
        ..TunnelOptions::default()
    })
    .expect_err("2 workers on single-queue interfaces must not start");
    assert!(
        err.contains("ethtool -L lan0 combined 2") && err.contains("workers = 1"),
        "{err}"
    );
}

#[test]
fn a_queue_count_changed_under_the_data_plane_stops_it_and_the_guard_holds() {
    let mut bed = bed(TunnelOptions {
        workers: 1,
        queues: Some(4),
        ..TunnelOptions::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    // Gateway A starts on 2 of lan0's 4 queues.
    let gw_a = bed.gateway(Side::A).ns.clone();
    bed.stop(Side::A).unwrap();
    gw_a.run(["ethtool", "-L", "lan0", "rx", "2", "tx", "2"])
        .unwrap();
    // A veth takes XDP only with as many RX queues as its peer sends on.
    bed.host(Side::A)
        .ns
        .run(["ethtool", "-L", "eth0", "rx", "2", "tx", "2"])
        .unwrap();
    bed.start(Side::A).unwrap();
    bed.wait_for_socket(Side::A).unwrap();
    let ping = bed.ping(Side::A, Side::B, false, 2).unwrap();
    assert!(ping.all_answered_once(), "{}", ping.output);

    // Fewer queues than sockets bound: the kernel itself refuses.
    let refused = gw_a
        .run(["ethtool", "-L", "lan0", "rx", "1", "tx", "1"])
        .unwrap_err()
        .to_string();
    assert!(refused.contains("AF_XDP"), "{refused}");
    // The deployment guide's step: the operator adds queues (on a NIC
    // `combined`; a veth has separate rx and tx channels). The new ones
    // would have no socket.
    gw_a.run(["ethtool", "-L", "lan0", "rx", "4", "tx", "4"])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while bed.is_running(Side::A) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!bed.is_running(Side::A), "the data plane went on serving");
    let status = bed.stop(Side::A).err();
    let log = bed.log(Side::A);
    assert!(
        log.contains("lan0 now has 4 RX queue(s), 2 when the data plane started"),
        "{status:?}\n{log}"
    );
    // Down, the data plane's status says what protects the host, and fails.
    let socket = bed.api_socket(Side::A).to_string_lossy().to_string();
    let text = match gw_a.run([
        env!("CARGO_BIN_EXE_xdpsec"),
        "status",
        "--api-socket",
        &socket,
    ]) {
        Ok(out) => panic!("status succeeded with the data plane down: {out}"),
        Err(e) => e.to_string(),
    };
    assert!(text.contains("xdpsec_guard"), "{text}");
    // Protected traffic is dropped, not routed in cleartext.
    let lost = bed
        .host(Side::A)
        .ns
        .ping_report(bed.host_addr(Side::B, false), 2, Duration::from_millis(500))
        .unwrap();
    assert_eq!(lost.received, 0);

    // Started again, it serves the new count.
    bed.start(Side::A).unwrap();
    bed.wait_for_socket(Side::A).unwrap();
    let status = bed.cli(Side::A, &["status"]).unwrap();
    assert!(
        status.contains("queues: lan0:0,lan0:1,lan0:2,lan0:3,wan0:0"),
        "{status}"
    );
    let ping = bed.ping(Side::A, Side::B, false, 2).unwrap();
    assert!(ping.all_answered_once(), "{}", ping.output);
}

/// Gateway A's config with `from` replaced by `to` (once; it must be there).
fn edit_config(bed: &TunnelBed, from: &str, to: &str) {
    let path = bed.config_path(Side::A);
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{from:?} not in\n{text}");
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// What `xdpsec dataplane` says when it stops during start-up.
fn start_error(bed: &mut TunnelBed) -> String {
    bed.start(Side::A).unwrap();
    let err = bed
        .wait_for_socket(Side::A)
        .expect_err("the data plane must not start")
        .to_string();
    bed.stop(Side::A).ok();
    err
}

#[test]
fn veth_refuses_zero_copy_auto_falls_back_and_the_nic_knobs_show_in_status() {
    let mut bed = bed(TunnelOptions {
        workers: 1,
        ..TunnelOptions::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    // `auto` (the default): veth has no zero-copy, each socket says why.
    let status = bed.cli(Side::A, &["status"]).unwrap();
    for queue in ["lan0:0", "wan0:0"] {
        let line = status
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{queue} ")))
            .unwrap_or_else(|| panic!("no line for {queue}:\n{status}"));
        assert!(
            line.contains(&format!("{queue} copy (zero-copy refused: ")),
            "{line}"
        );
        assert!(
            // Both copy mode: one UMEM, sized for both sockets.
            line.contains("rings rx 2048 tx 2048 fill 2048 comp 2048, UMEM 0: 6144 x 2048 B"),
            "{line}"
        );
        assert!(line.ends_with("busy poll off"), "{line}");
    }
    bed.stop(Side::A).unwrap();

    // `zerocopy` on a veth: no start, and the error names the interface,
    // the key and the way out.
    let outside = "name = \"wan0\"\nrole = \"outside\"\n";
    edit_config(
        &bed,
        outside,
        "name = \"wan0\"\nrole = \"outside\"\nxdp_bind = \"zerocopy\"\n",
    );
    let err = start_error(&mut bed);
    assert!(
        err.contains("interface[1].xdp_bind = \"zerocopy\": wan0 cannot bind zero-copy")
            && err.contains("xdp_bind = \"auto\""),
        "{err}"
    );

    // A CPU the process may not run on: no start, not an unpinned worker.
    edit_config(&bed, "xdp_bind = \"zerocopy\"", "xdp_bind = \"copy\"");
    edit_config(&bed, "cpus = []", "cpus = [4095]");
    let err = start_error(&mut bed);
    assert!(
        err.contains("dataplane.cpus[0]: this process may not run on CPU 4095"),
        "{err}"
    );

    // Copy mode asked for, pinned, rings resized, the kernel's busy
    // polling on: it starts, carries traffic and shows what it got.
    edit_config(&bed, "cpus = [4095]", "cpus = [0]");
    edit_config(
        &bed,
        "name = \"lan0\"\nrole = \"inside\"\n",
        "name = \"lan0\"\nrole = \"inside\"\nrx_ring_size = 512\ntx_ring_size = 256\n",
    );
    edit_config(
        &bed,
        "busy_poll = false",
        "busy_poll = true\nbusy_poll_usecs = 20\nbusy_poll_budget = 32\n\
         rx_ring_size = 1024\ncompletion_ring_size = 512\numem_frames = 3000",
    );
    bed.start(Side::A).unwrap();
    bed.wait_for_socket(Side::A).unwrap();
    let ping = bed.ping(Side::A, Side::B, false, 2).unwrap();
    assert!(ping.all_answered_once(), "{}", ping.output);
    let log = bed.log(Side::A);
    let started = log
        .lines()
        .find(|l| l.contains("worker 0: CPU 0, NUMA node "))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        started.contains("; lan0:0 copy (zero-copy refused: ")
            && started.ends_with(", wan0:0 copy"),
        "{started}"
    );
    let status = bed.cli(Side::A, &["status"]).unwrap();
    let node = xdpsec_dataplane::afxdp::cpu_numa_node(0);
    let worker = status
        .lines()
        .find(|l| l.starts_with("worker 0 running"))
        .unwrap_or_else(|| panic!("{status}"));
    if let Some(node) = node {
        assert!(worker.ends_with(&format!(", NUMA node {node}")), "{worker}");
    }
    let wan = status
        .lines()
        .find(|l| l.trim_start().starts_with("wan0:0 "))
        .unwrap_or_else(|| panic!("{status}"));
    assert!(
        wan.contains(
            "wan0:0 copy, need-wakeup, rings rx 1024 tx 2048 fill 2048 comp 512, UMEM 0: 3000 x 2048 B"
        ) && wan.ends_with("busy poll 20 us budget 32"),
        "{wan}"
    );
    if let Some(node) = node {
        assert!(wan.contains(&format!("on node {node}")), "{wan}");
    }
    let lan = status
        .lines()
        .find(|l| l.trim_start().starts_with("lan0:0 "))
        .unwrap_or_else(|| panic!("{status}"));
    assert!(
        lan.contains("lan0:0 copy (zero-copy refused: ")
            && lan.contains("rings rx 512 tx 256 fill 2048 comp 512, UMEM 0: 3000 x 2048 B"),
        "{lan}"
    );
}

#[test]
fn frames_cross_umems_when_each_interface_has_its_own() {
    // A zero-copy NIC has a UMEM of its own; on veth the test switch gives
    // each interface one, so every packet is copied between UMEMs (LAN RX
    // to WAN TX and back, outer fragments included).
    let bed = bed(TunnelOptions {
        workers: 2,
        queues: Some(2),
        dataplane_args: vec!["--fault-umem-per-interface".into()],
        ..TunnelOptions::default()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let status = bed.cli(Side::A, &["status"]).unwrap();
    for (queue, umem) in [("lan0:0", 0), ("wan0:0", 1), ("lan0:1", 0), ("wan0:1", 1)] {
        let line = status
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{queue} ")))
            .unwrap_or_else(|| panic!("no line for {queue}:\n{status}"));
        assert!(
            line.contains(&format!("UMEM {umem}: 4096 x 2048 B")),
            "{line}"
        );
    }
    for ipv6 in [false, true] {
        let ping = bed.ping(Side::A, Side::B, ipv6, 3).unwrap();
        assert!(ping.all_answered_once(), "{}", ping.output);
    }
    // Larger than the tunnel takes whole, without DF: the outer packet is
    // fragmented, its later fragments written straight into the WAN UMEM.
    let big = bed
        .host(Side::A)
        .ns
        .run([
            "ping",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "2",
            "-M",
            "dont",
            "-s",
            "1472",
            &bed.host_addr(Side::B, false).to_string(),
        ])
        .unwrap();
    assert!(big.contains("3 received"), "{big}");
    for side in [Side::A, Side::B] {
        let fragmented = bed
            .worker_total(side, "events", "outer_packets_fragmented")
            .unwrap();
        let reassembled = bed
            .worker_total(side, "events", "datagrams_reassembled")
            .unwrap();
        assert!(
            fragmented >= 3 && reassembled >= 3,
            "{side:?}: {fragmented} {reassembled}"
        );
    }
    let report = bed.iperf3(bed.host_addr(Side::B, false), 1, 2).unwrap();
    assert!(report.received_bytes > 0, "{:?}", report.json);
}
