//! `xdpsec ike` against `xdpsec ike`: the test bed's two gateways run the
//! data plane with no static SA and the IKE daemon with a generated config
//! (PSK, aes128gcm16-prfsha256-x25519); the tunnel comes up, carries
//! traffic both ways, is rekeyed from either side while traffic runs,
//! survives a crash of the IKE daemon without losing a packet, and is
//! deleted from either side.
//!
//! Needs root, iputils' ping, iperf3 and tcpdump (`cargo xtask setup`).

mod ike_common;

use ike_common::*;
use std::time::Duration;
use xdpsec_testbed::tunnel::{Encapsulation, GatewayKind, IkeOptions, Side, IKE_CHILD};
use xdpsec_testbed::Capture;

const XDPSEC: [GatewayKind; 2] = [GatewayKind::Xdpsec; 2];

#[test]
fn ike_raw_esp_tunnel_carries_traffic_and_the_underlay_only_esp() {
    let bed = bed(Encapsulation::Esp, XDPSEC, options(), true);

    // Both sides list one established IKE SA with one child, mirrored.
    for side in Side::BOTH {
        let sas = ike_sas(&bed, side);
        assert_eq!(sas.len(), 1, "{side}: {sas:?}");
        assert_eq!(sas[0]["state"], "established", "{side}: {sas:?}");
        let algorithms = sas[0]["algorithms"].as_str().unwrap();
        assert!(
            algorithms.contains("aes128gcm16") && algorithms.contains("25519"),
            "{side}: {algorithms}"
        );
        assert_eq!(
            sas[0]["role"],
            if side == Side::A {
                "initiator"
            } else {
                "responder"
            }
        );
        assert_eq!(sas[0]["children"][0]["name"], IKE_CHILD);
        assert_eq!(sas[0]["children"][0]["udp_encap"], false, "raw ESP");
    }
    let (a_in, a_out) = child_spis(&bed, Side::A);
    let (b_in, b_out) = child_spis(&bed, Side::B);
    assert_eq!(
        (a_in.as_str(), a_out.as_str()),
        (b_out.as_str(), b_in.as_str())
    );

    let tap = bed.underlay();
    let capture = Capture::start(
        &tap.ns,
        &tap.port_a,
        UNDERLAY_FILTER,
        &bed.dir().join("underlay.pcap"),
        1000,
    )
    .unwrap();
    const COUNT: u16 = 4;
    for ipv6 in [false, true] {
        ping_ok(&bed, Side::A, Side::B, ipv6, COUNT);
        ping_ok(&bed, Side::B, Side::A, ipv6, COUNT);
    }
    // Each ping: a request and a reply on the wire, per direction and family.
    let expected = 8 * usize::from(COUNT);
    let frames = capture.finish(expected).unwrap();
    assert!(frames.len() >= expected, "{} frames", frames.len());
    let spis: Vec<u32> = [&a_in, &a_out]
        .iter()
        .map(|s| u32::from_str_radix(s, 16).unwrap())
        .collect();
    for frame in &frames {
        let spi = esp_spi(frame).unwrap_or_else(|| panic!("not ESP: {frame:02x?}"));
        assert!(spis.contains(&spi), "SPI {spi:#x} is not the child's");
    }

    // The child's counters come from the data plane.
    let child = bed.wait_for_child(Side::A, SETTLE).unwrap();
    assert!(
        child["packets_out"].as_u64().unwrap() >= u64::from(4 * COUNT),
        "{child}"
    );
    assert!(
        child["packets_in"].as_u64().unwrap() >= u64::from(4 * COUNT),
        "{child}"
    );
    assert!(child["bytes_in"].as_u64().unwrap() > 0, "{child}");

    // Bounded TCP both ways.
    for from in Side::BOTH {
        let dst = bed.host_addr(from.other(), false);
        let report = bed
            .iperf3_from(from, dst, 2, 1)
            .unwrap_or_else(|e| panic!("iperf3 from {from}: {e}\n{}", bed.ike_logs()));
        assert!(report.received_bytes > 0, "iperf3 from {from}");
    }

    // The plain-text table shows both kinds of SA.
    let table = bed
        .ike_cli(
            Side::B,
            &[
                "sa",
                "list",
                "--api-socket",
                &bed.api_socket(Side::B).display().to_string(),
            ],
        )
        .unwrap();
    for word in ["CONNECTION", "established", "CHILD", "installed", &b_in] {
        assert!(table.contains(word), "{word} in:\n{table}");
    }
}

#[test]
fn ike_rekeys_from_either_side_keep_the_tunnel_and_lose_no_packet() {
    let bed = bed(Encapsulation::Udp, XDPSEC, options(), false);
    let first = child_spis(&bed, Side::A);
    let ike_first = ike_sas(&bed, Side::A)[0]["spi_i"].clone();
    let mut seen = vec![first.clone()];
    let stats = while_pinging(&bed, 120, || {
        for side in [Side::A, Side::B] {
            let out = ike_command(&bed, side, &["rekey", "--child"]);
            assert!(out.contains("rekeyed"), "{out}");
            wait_until(&bed, "one installed child per side after the rekey", || {
                Side::BOTH
                    .iter()
                    .all(|s| bed.installed_children(*s).unwrap().len() == 1)
            });
            let now = child_spis(&bed, Side::A);
            assert!(
                !seen.contains(&now),
                "child rekey from {side} gave new SPIs"
            );
            seen.push(now);
            std::thread::sleep(Duration::from_millis(500));
        }
        for side in [Side::A, Side::B] {
            let out = ike_command_when_ready(&bed, side, &["rekey", "--ike"]);
            assert!(out.contains("rekeyed"), "{out}");
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    assert!(
        stats.all_answered_once(),
        "ping during the rekeys: {}\n{}",
        stats.output,
        bed.ike_logs()
    );
    let ike_now = ike_sas(&bed, Side::A);
    assert_eq!(ike_now.len(), 1, "{ike_now:?}");
    assert_ne!(ike_now[0]["spi_i"], ike_first, "the IKE SA has new SPIs");
    // Old SAs are gone from the data planes: one pair per side.
    for side in Side::BOTH {
        wait_until(&bed, "two SAs in the data plane", || {
            dataplane_sas(&bed, side).len() == 2
        });
    }
    ping_ok(&bed, Side::B, Side::A, false, 3);
}

#[test]
fn ike_terminate_from_either_side_removes_the_sas_on_both() {
    let mut ike = options();
    ike.child_rekey_time = None;
    let bed = bed(Encapsulation::Esp, XDPSEC, ike, false);
    for (up, down) in [(Side::A, Side::A), (Side::B, Side::B), (Side::A, Side::B)] {
        if ike_sas(&bed, up).is_empty() {
            let out = ike_command(&bed, up, &["initiate"]);
            assert!(out.contains("up"), "{out}");
        }
        for side in Side::BOTH {
            bed.wait_for_child(side, SETTLE).unwrap();
        }
        ping_ok(&bed, Side::A, Side::B, false, 3);
        ike_command(&bed, down, &["terminate"]);
        for side in Side::BOTH {
            wait_until(&bed, "no IKE SA and no SA left after terminate", || {
                ike_sas(&bed, side).is_empty()
                    && dataplane_sas(&bed, side).is_empty()
                    && dataplane_policies(&bed, side).is_empty()
            });
        }
    }
}

#[test]
fn ike_sigterm_deletes_the_ike_sas_and_tells_the_peer() {
    let mut bed = bed(Encapsulation::Esp, XDPSEC, options(), false);
    let status = bed.ike_stop(Side::A).unwrap();
    assert!(status.success(), "{status}\n{}", bed.ike_logs());
    assert!(dataplane_sas(&bed, Side::A).is_empty(), "A removed its SAs");
    assert!(dataplane_policies(&bed, Side::A).is_empty());
    assert!(!bed.ike_state_path(Side::A).exists(), "nothing to resume");
    wait_until(&bed, "B deleted what A deleted", || {
        ike_sas(&bed, Side::B).is_empty() && dataplane_sas(&bed, Side::B).is_empty()
    });
}

/// The data plane restarted under established IKE SAs (SIGTERM, or a crash
/// and its service manager): its SAs are gone with it. The IKE daemon keeps
/// its IKE SAs, reaches the new data plane and rekeys every child at once,
/// without waiting for the peer's DPD; the new SAs have fresh keys, so no
/// sequence number sent under the old ones is ever reused under a key.
/// Pings run throughout; the ones lost are reported.
#[test]
fn ike_daemon_rekeys_the_children_for_a_restarted_data_plane() {
    let mut bed = bed(Encapsulation::Esp, XDPSEC, options(), false);
    let before = child_spis(&bed, Side::A);
    let ns = bed.host(Side::A).ns.clone();
    let dst = bed.host_addr(Side::B, false);
    let pinger = std::thread::spawn(move || xdpsec_testbed::tunnel::ping_from(&ns, dst, 40));
    std::thread::sleep(Duration::from_millis(1000));
    let stopped = std::time::Instant::now();
    bed.stop(Side::B).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    bed.start(Side::B).unwrap();
    bed.wait_for_socket(Side::B).unwrap();
    wait_until(&bed, "new SPIs on both sides after the restart", || {
        child_replaced(&bed, Side::A, &before)
            && bed.installed_children(Side::B).is_ok_and(|c| !c.is_empty())
    });
    let recovered = stopped.elapsed();
    let stats = pinger.join().unwrap().unwrap();
    let lost = stats.transmitted.saturating_sub(stats.received);
    eprintln!(
        "data plane of B down for 0.5 s, tunnel rekeyed {recovered:?} after the stop; \
         {lost} of {} pings lost",
        stats.transmitted
    );
    assert!(bed.ike_running(Side::B), "{}", bed.ike_logs());
    let log = bed.ike_log(Side::B);
    assert!(log.contains("the data plane is back"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    // Lost: the pings of the outage and of the rekey's round trip, no more
    // (0.2 s apart; the restart itself takes about a second here).
    assert!(
        recovered < Duration::from_secs(10),
        "rekeyed only after {recovered:?}"
    );
    assert!(
        lost <= 20,
        "{lost} lost\n{}\n{}",
        stats.output,
        bed.ike_logs()
    );
    ping_ok(&bed, Side::A, Side::B, false, 3);
    ping_ok(&bed, Side::B, Side::A, false, 3);
}

#[test]
fn ike_kill_and_restart_of_the_daemon_loses_no_packet() {
    let mut bed = bed(Encapsulation::Udp, XDPSEC, options(), false);
    let before = child_spis(&bed, Side::A);
    // Crash the responder, then the initiator, while ping runs.
    let ns = bed.host(Side::A).ns.clone();
    let dst = bed.host_addr(Side::B, false);
    let pinger = std::thread::spawn(move || xdpsec_testbed::tunnel::ping_from(&ns, dst, 75));
    std::thread::sleep(Duration::from_millis(600));
    for side in [Side::B, Side::A] {
        bed.ike_kill(side).unwrap();
        let mode = std::fs::metadata(bed.ike_state_path(side))
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777);
        assert_eq!(
            mode.ok(),
            Some(0o600),
            "the state file survives the crash, private"
        );
        std::thread::sleep(Duration::from_millis(1000));
        bed.ike_start(side).unwrap();
        bed.wait_for_ike_socket(side).unwrap();
        // The restarted daemon sets the connection up again; the SAs of the
        // previous run carry traffic until then.
        wait_until(&bed, "the connection up again after the restart", || {
            Side::BOTH
                .iter()
                .all(|s| !bed.installed_children(*s).unwrap().is_empty())
        });
        std::thread::sleep(Duration::from_millis(1000));
    }
    let stats = pinger.join().unwrap().unwrap();
    assert!(
        stats.all_answered_once(),
        "ping across two daemon crashes: {}\n{}",
        stats.output,
        bed.ike_logs()
    );
    assert_ne!(
        child_spis(&bed, Side::A),
        before,
        "a new child after the restarts"
    );
    // The children of the crashed runs go after their grace period.
    for side in Side::BOTH {
        wait_until(&bed, "only the current child in the data plane", || {
            dataplane_sas(&bed, side).len() == 2
                && ike_sas(&bed, side)
                    .iter()
                    .all(|s| s["state"] != "previous-run")
        });
    }
    ping_ok(&bed, Side::B, Side::A, false, 3);
}

/// A bed whose daemons run but do not initiate; A then initiates by hand.
fn failing_bed(ike: IkeOptions) -> xdpsec_testbed::tunnel::TunnelBed {
    bed(
        Encapsulation::Esp,
        XDPSEC,
        IkeOptions {
            initiator: None,
            ..ike
        },
        false,
    )
}

/// `xdpsec initiate` on A fails; both daemons keep running and answer, no
/// SA is installed, and the logs of `side_with_reason` say `reason`.
fn assert_initiate_fails(bed: &xdpsec_testbed::tunnel::TunnelBed, reasons: [&str; 2]) {
    let err = bed
        .ike_cli(
            Side::A,
            &["initiate", xdpsec_testbed::tunnel::IKE_CONNECTION],
        )
        .expect_err("initiate must fail");
    let err = err.to_string();
    for side in Side::BOTH {
        assert!(
            bed.ike_running(side),
            "{side} keeps running:\n{}",
            bed.ike_logs()
        );
        assert!(dataplane_sas(bed, side).is_empty(), "{side}: no SA");
        // It still answers.
        bed.ike_sa_list(side).unwrap();
    }
    let log_a = bed.ike_log(Side::A);
    let log_b = bed.ike_log(Side::B);
    assert!(
        err.contains(reasons[0]) || log_a.contains(reasons[0]),
        "initiator names {:?}:\n{err}\n{log_a}",
        reasons[0]
    );
    assert!(
        log_b.contains(reasons[1]),
        "responder log names {:?}:\n{log_b}",
        reasons[1]
    );
}

#[test]
fn ike_wrong_psk_fails_with_authentication_failed() {
    let bed = failing_bed(IkeOptions {
        psk: [
            Some("the right secret".into()),
            Some("a wrong secret".into()),
        ],
        ..options()
    });
    assert_initiate_fails(&bed, ["authentication failed", "authentication failed"]);
}

#[test]
fn ike_no_common_proposal_fails_with_no_proposal_chosen() {
    // A offers x25519 only, B takes ecp384 only.
    let bed = failing_bed(IkeOptions {
        proposals_override: [None, Some(vec!["aes256gcm16-prfsha384-ecp384".into()])],
        ..options()
    });
    assert_initiate_fails(&bed, ["no proposal chosen", "no proposal chosen"]);
}

#[test]
fn ike_unfitting_traffic_selectors_fail_with_ts_unacceptable() {
    let bed = failing_bed(IkeOptions {
        ts_override: [
            Some((vec!["10.1.0.0/24".into()], vec!["10.9.0.0/24".into()])),
            None,
        ],
        ..options()
    });
    assert_initiate_fails(
        &bed,
        [
            "traffic selectors unacceptable",
            "traffic selectors unacceptable",
        ],
    );
}

#[test]
fn ike_volume_limit_counted_by_the_data_plane_rekeys_the_child() {
    // rekey_bytes is counted by the data plane on each SA; its soft
    // lifetime event makes the IKE daemon rekey. 30 pings of 84 bytes each
    // way pass 1000 bytes twice on each SA.
    let bed = bed(
        Encapsulation::Esp,
        XDPSEC,
        IkeOptions {
            child_rekey_bytes: Some(1000),
            ..options()
        },
        false,
    );
    let installed = &dataplane_sas(&bed, Side::A);
    assert!(
        installed.iter().all(
            |sa| sa["lifetime"]["soft_bytes"] == 1000 && sa["lifetime"]["hard_bytes"] == 20_000
        ),
        "the volume limits reach the data plane: {installed:?}"
    );
    let first = child_spis(&bed, Side::A);
    let stats = ping_ok(&bed, Side::A, Side::B, false, 30);
    assert!(stats.all_answered_once());
    wait_until(&bed, "a child rekeyed by volume", || {
        let now = bed.installed_children(Side::A).unwrap();
        now.len() == 1 && now[0]["spi_in"].as_str() != Some(first.0.as_str())
    });
    let log = bed.ike_log(Side::A) + &bed.ike_log(Side::B);
    assert!(log.contains("CREATE_CHILD_SA"), "{log}");
    ping_ok(&bed, Side::B, Side::A, false, 3);
}

#[test]
fn ike_ecdsa_certificates_between_xdpsec_gateways() {
    let bed = bed(
        Encapsulation::Udp,
        XDPSEC,
        IkeOptions {
            auth: xdpsec_testbed::tunnel::IkeAuth::Ecdsa,
            ..options()
        },
        true,
    );
    for side in Side::BOTH {
        let sas = ike_sas(&bed, side);
        assert_eq!(sas.len(), 1, "{sas:?}");
        let peer = sas[0]["remote_id"].as_str().unwrap_or_default();
        assert!(
            peer.contains(&xdpsec_testbed::tunnel::cert_identity(side.other())),
            "{side} authenticated its peer by certificate: {peer}"
        );
    }
    ping_ok(&bed, Side::A, Side::B, false, 3);
    ping_ok(&bed, Side::B, Side::A, true, 3);
}

/// `[daemon] user`/`group`: each IKE daemon binds its ports, opens its
/// sockets, then runs as nobody with no capability; the data planes open
/// their SA API socket to its group. The tunnel comes up, carries traffic
/// and is rekeyed (an IKE rekey too, the exchanges that use the most).
#[test]
fn ike_daemons_run_as_an_unprivileged_user_and_still_rekey() {
    let options = IkeOptions {
        run_as: Some(("nobody".into(), "nogroup".into())),
        ..options()
    };
    let bed = bed(Encapsulation::Esp, XDPSEC, options, false);
    for side in Side::BOTH {
        let pid = bed.ike_child(side).expect("the IKE daemon runs").pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
                .unwrap_or_else(|| panic!("no {name} in {status}"))
                .to_string()
        };
        let uids: Vec<String> = field("Uid:").split_whitespace().map(String::from).collect();
        assert!(uids.iter().all(|u| u == "65534"), "{side}: Uid {uids:?}");
        for caps in ["CapEff:", "CapPrm:", "CapInh:", "CapAmb:"] {
            assert_eq!(field(caps), "0000000000000000", "{side}: {caps}");
        }
        assert_eq!(field("NoNewPrivs:"), "1", "{side}");
        assert!(bed.ike_log(side).contains("running as nobody"), "{side}");
    }
    ping_ok(&bed, Side::A, Side::B, false, 2);
    let before = child_spis(&bed, Side::A);
    for args in [&["rekey", "--child"][..], &["rekey", "--ike"][..]] {
        let out = ike_command_when_ready(&bed, Side::B, args);
        assert!(out.contains("rekeyed"), "{out}\n{}", bed.ike_logs());
    }
    assert_ne!(child_spis(&bed, Side::A), before, "the child has new SPIs");
    ping_ok(&bed, Side::B, Side::A, false, 2);
    // The state file is written by the unprivileged daemon.
    wait_until(&bed, "the state file names the rekeyed child", || {
        std::fs::read_to_string(bed.ike_state_path(Side::A)).is_ok_and(|s| {
            s.contains(
                &u32::from_str_radix(&child_spis(&bed, Side::A).0, 16)
                    .unwrap()
                    .to_string(),
            )
        })
    });
}
