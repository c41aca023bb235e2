//! The xdpsec data plane end to end: two gateways in network namespaces,
//! each running the real `xdpsec dataplane` binary, joined by a tunnel
//! ([`xdpsec_testbed::tunnel::TunnelBed`]).

use std::sync::Mutex;
use xdpsec_testbed::tunnel::{Encapsulation, KeySize, Side, TunnelBed, TunnelOptions};

/// One tunnel at a time: two shared cores, and pings that wait one second
/// for a reply.
static SERIAL: Mutex<()> = Mutex::new(());

fn bed(options: TunnelOptions) -> TunnelBed {
    TunnelBed::new(env!("CARGO_BIN_EXE_xdpsec"), options).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn ping_through_raw_esp_and_udp_encapsulation() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    for (encap, key_size) in [
        (Encapsulation::Esp, KeySize::Aes128),
        (Encapsulation::Udp, KeySize::Aes256),
    ] {
        let bed = bed(TunnelOptions {
            encap,
            key_size,
            ..TunnelOptions::default()
        });
        for (from, to) in [(Side::A, Side::B), (Side::B, Side::A)] {
            for ipv6 in [false, true] {
                let stats = bed.ping(from, to, ipv6, 5).unwrap();
                assert!(
                    stats.all_answered_once(),
                    "{encap:?}: ping {from} -> {to} ({}): {}\n{}\nsa list A: {}\nstatus A: {}",
                    if ipv6 { "IPv6" } else { "IPv4" },
                    stats.output,
                    bed.logs(),
                    bed.sa_list(Side::A)
                        .map(|v| v.to_string())
                        .unwrap_or_default(),
                    bed.status(Side::A)
                        .map(|v| v.to_string())
                        .unwrap_or_default(),
                );
            }
        }
    }
}

#[test]
fn scratch_shapes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bed = bed(TunnelOptions {
        workers: 2,
        ..TunnelOptions::default()
    });
    let s = bed.ping(Side::A, Side::B, false, 3).unwrap();
    eprintln!("{}", s.output);
    eprintln!(
        "{}",
        serde_json::to_string_pretty(&bed.sa_list(Side::A).unwrap()).unwrap()
    );
    eprintln!(
        "{}",
        serde_json::to_string_pretty(&bed.status(Side::A).unwrap()).unwrap()
    );
    eprintln!("{}", bed.cli(Side::A, &["sa", "list"]).unwrap());
    eprintln!("{}", bed.cli(Side::A, &["status"]).unwrap());
    eprintln!("{}", bed.describe());
    eprintln!("{}", bed.logs());
}
