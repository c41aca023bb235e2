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
    let text = match gw_a.run([env!("CARGO_BIN_EXE_xdpsec"), "status", "--socket", &socket]) {
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
