//! The xdpsec data plane end to end: two gateways in network namespaces,
//! each running the real `xdpsec dataplane` binary, joined by a tunnel with
//! fresh random keys ([`TunnelBed`]): host A - gwA = underlay = gwB - host B.
//!
//! - pings over inner IPv4 and IPv6, both directions, plain ESP and ESP in
//!   UDP, and the SA counters that show the tunnel carried them;
//! - a bounded iperf3 TCP run;
//! - a capture in the middle of the underlay holds only ESP (or UDP 4500),
//!   and tshark, given the keys, finds the inner ICMP in it;
//! - replayed and tampered ESP is dropped and counted, and the tunnel keeps
//!   working;
//! - traffic no policy covers still reaches the gateways' kernels;
//! - deleting the inbound SA over the SA API stops the tunnel, adding it
//!   back resumes it; with an SA pair per inner family, deleting the IPv4
//!   one stops (and counts) only IPv4 while IPv6 keeps flowing;
//! - two workers per gateway: every packet processed exactly once;
//! - failure modes: bad configs, a missing interface, SIGTERM detaching XDP.
//!
//! Needs root, iperf3, tcpdump, tshark, ethtool and iputils' ping
//! (`cargo xtask setup` installs them). Tests take a lock so that one
//! tunnel runs at a time.

use serde_json::Value;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use xdpsec_api::{ApiClient, Direction, StaticConfig};
use xdpsec_testbed::tunnel::{Encapsulation, KeySize, Side, TunnelBed, TunnelOptions};
use xdpsec_testbed::{Netns, Testbed};

/// One tunnel at a time: two shared cores, and pings that wait one second
/// for each reply.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn bed(options: TunnelOptions) -> TunnelBed {
    TunnelBed::new(env!("CARGO_BIN_EXE_xdpsec"), options).unwrap_or_else(|e| panic!("{e}"))
}

fn family(ipv6: bool) -> &'static str {
    if ipv6 {
        "IPv6"
    } else {
        "IPv4"
    }
}

/// Pings host `to` from host `from`; every request must get exactly one
/// reply. Fails with the data planes' logs and counters.
fn assert_ping(bed: &TunnelBed, from: Side, to: Side, ipv6: bool, count: u16) {
    let stats = bed
        .ping(from, to, ipv6, count)
        .unwrap_or_else(|e| panic!("ping: {e}\n{}", bed.logs()));
    assert!(
        stats.all_answered_once(),
        "ping host {from} -> host {to} over {}: {} sent, {} answered, {} duplicates\n{}\n{}",
        family(ipv6),
        stats.transmitted,
        stats.received,
        stats.duplicates,
        stats.output,
        diagnostics(bed)
    );
}

fn diagnostics(bed: &TunnelBed) -> String {
    let mut s = bed.logs();
    for side in Side::BOTH {
        for args in [&["sa", "list"][..], &["status"][..]] {
            let out = bed.cli(side, args).unwrap_or_else(|e| e.to_string());
            s.push_str(&format!(
                "----- xdpsec {} on {side} -----\n{out}",
                args.join(" ")
            ));
        }
    }
    s
}

/// The SA with this SPI and direction in `xdpsec sa list --json`.
fn sa_info(list: &Value, spi: u32, direction: &str) -> Value {
    let sas = list
        .get("sas")
        .and_then(Value::as_array)
        .or_else(|| list.as_array())
        .unwrap_or_else(|| panic!("no SA list in {list}"));
    sas.iter()
        .find(|sa| sa["spi"].as_u64() == Some(u64::from(spi)) && sa["direction"] == direction)
        .cloned()
        .unwrap_or_else(|| panic!("no SA {spi:#x} ({direction}) in {list}"))
}

fn sa_packets(sa: &Value) -> u64 {
    sa["counters"]["packets"]
        .as_u64()
        .expect("counters.packets")
}

fn sa_drops(sa: &Value, reason: &str) -> u64 {
    sa["counters"]["drops"][reason].as_u64().unwrap_or(0)
}

/// (SA that `side` sends with, SA it receives with), from its own `sa list`.
fn own_sas(bed: &TunnelBed, side: Side) -> (Value, Value) {
    let list = bed.sa_list(side).unwrap();
    (
        sa_info(&list, bed.sa(side).spi, "out"),
        sa_info(&list, bed.sa(side.other()).spi, "in"),
    )
}

/// Sum of `rx_packets` over the workers in `xdpsec status --json`, and the
/// per-worker values.
fn worker_rx(bed: &TunnelBed, side: Side) -> (u64, Vec<u64>) {
    let status = bed.status(side).unwrap();
    let workers = status
        .get("workers")
        .and_then(Value::as_array)
        .or_else(|| status.as_array())
        .unwrap_or_else(|| panic!("no workers in {status}"))
        .clone();
    let rx: Vec<u64> = workers
        .iter()
        .map(|w| w["rx_packets"].as_u64().expect("rx_packets"))
        .collect();
    (rx.iter().sum(), rx)
}

/// The test bed's bounded tcpdump, failing the test on errors.
struct Capture(xdpsec_testbed::Capture);

impl Capture {
    fn start(ns: &Netns, iface: &str, filter: &str, path: &Path, max_packets: u32) -> Capture {
        Capture(xdpsec_testbed::Capture::start(ns, iface, filter, path, max_packets).unwrap())
    }

    /// See [`xdpsec_testbed::Capture::finish`]; the pcap file.
    fn finish(self, frames: usize) -> PathBuf {
        let path = self.0.path().to_path_buf();
        self.0.finish(frames).unwrap();
        path
    }
}

fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    xdpsec_testbed::read_pcap(path).unwrap()
}

/// Runs tshark on a capture with `args`; its stdout lines.
fn tshark(pcap: &Path, args: &[String]) -> Vec<String> {
    xdpsec_testbed::tshark(pcap, args).unwrap_or_else(|e| panic!("{e}"))
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Capture filter for the underlay: everything but link-level control
/// traffic (ARP, IGMP, IPv6 neighbour discovery and MLD).
const UNDERLAY_FILTER: &str =
    "not arp and not igmp and not (ip6 and (src net fe80::/10 or dst net ff00::/8))";

// ---------------------------------------------------------------- (a) ----

#[test]
fn ping_both_families_both_directions_raw_esp_and_udp() {
    let _serial = serial();
    for (encap, key_size) in [
        (Encapsulation::Esp, KeySize::Aes128),
        (Encapsulation::Udp, KeySize::Aes256),
    ] {
        let bed = bed(TunnelOptions {
            encap,
            key_size,
            ..TunnelOptions::default()
        });
        const COUNT: u16 = 5;
        for (from, to) in [(Side::A, Side::B), (Side::B, Side::A)] {
            for ipv6 in [false, true] {
                assert_ping(&bed, from, to, ipv6, COUNT);
            }
        }
        // The tunnel carried them (the gateways also have kernel routes for
        // the far prefixes: without the data plane, pings would pass in
        // clear). Each gateway sent 2 families x (COUNT requests + COUNT
        // replies) and received as many.
        let want = u64::from(4 * COUNT);
        for side in Side::BOTH {
            let (out, inb) = own_sas(&bed, side);
            assert_eq!(sa_packets(&out), want, "{encap:?} {side} out SA: {out}");
            assert_eq!(sa_packets(&inb), want, "{encap:?} {side} in SA: {inb}");
            let cipher = match key_size {
                KeySize::Aes128 => "aes-gcm-128",
                KeySize::Aes256 => "aes-gcm-256",
            };
            assert_eq!(out["cipher"], cipher, "{out}");
            assert_eq!(
                out.get("encap").is_some_and(|e| !e.is_null()),
                encap == Encapsulation::Udp,
                "{out}"
            );
        }
    }
}

// ---------------------------------------------------------------- (b) ----

/// LAN links at 1500: hosts announce MSS 1460, and their full-size segments
/// only fit the 1500-byte underlay after ESP because the gateways clamp the
/// MSS of the SYN and SYN-ACK (`[dataplane] mss_clamp`, on by default).
#[test]
fn iperf3_tcp_with_full_size_lan_mtu_relies_on_mss_clamping() {
    let _serial = serial();
    let bed = bed(TunnelOptions {
        inner_mtu: 1500,
        ..TunnelOptions::default()
    });
    let report = bed
        .iperf3(bed.host_addr(Side::B, false), 2, 1)
        .unwrap_or_else(|e| panic!("iperf3: {e}\n{}", diagnostics(&bed)));
    assert!(
        report.received_bits_per_second > 0.0 && report.received_bytes > 100_000,
        "iperf3 moved (almost) nothing with a 1500-byte LAN MTU: {}",
        report.json
    );
    eprintln!(
        "iperf3 with a 1500-byte LAN MTU: {:.1} Mbit/s, {} retransmits",
        report.received_bits_per_second / 1e6,
        report.retransmits
    );
}

#[test]
fn iperf3_tcp_through_the_tunnel() {
    let _serial = serial();
    let bed = bed(TunnelOptions::default());
    let before = sa_packets(&own_sas(&bed, Side::A).0);
    let report = bed
        .iperf3(bed.host_addr(Side::B, false), 3, 1)
        .unwrap_or_else(|e| panic!("iperf3: {e}\n{}", diagnostics(&bed)));
    assert!(
        report.received_bits_per_second > 0.0 && report.received_bytes > 0,
        "iperf3 moved nothing: {}",
        report.json
    );
    eprintln!(
        "iperf3 through the tunnel: {:.1} Mbit/s, {} retransmits",
        report.received_bits_per_second / 1e6,
        report.retransmits
    );
    // At least one ESP packet per full-size segment went through gwA's SA.
    let after = sa_packets(&own_sas(&bed, Side::A).0);
    let segments = report.received_bytes / 1400;
    assert!(
        after - before >= segments,
        "gwA's out SA carried {} packets for {} bytes of TCP",
        after - before,
        report.received_bytes
    );
    let (_, inb) = own_sas(&bed, Side::B);
    assert_eq!(sa_drops(&inb, "authentication_failed"), 0, "{inb}");
    // Every frame a worker took in went out again: nothing was dropped
    // inside the data plane (a full TX ring used to drop ~1% here).
    for side in Side::BOTH {
        let status = bed.status(side).unwrap();
        let workers = status["workers"].as_array().expect("workers").clone();
        let sum = |field: &str| -> u64 { workers.iter().filter_map(|w| w[field].as_u64()).sum() };
        assert_eq!(
            sum("rx_packets"),
            sum("tx_packets"),
            "{side}: frames received but not sent by the workers
{}",
            diagnostics(&bed)
        );
    }
}

// ---------------------------------------------------------------- (c) ----

#[test]
fn underlay_holds_only_esp_and_tshark_decrypts_it() {
    let _serial = serial();
    for encap in [Encapsulation::Esp, Encapsulation::Udp] {
        let bed = bed(TunnelOptions {
            encap,
            ..TunnelOptions::default()
        });
        let tap = bed.underlay();
        let pcap = bed.dir().join("underlay.pcap");
        const COUNT: u16 = 4;
        let capture = Capture::start(&tap.ns, &tap.port_a, UNDERLAY_FILTER, &pcap, 1000);
        for ipv6 in [false, true] {
            assert_ping(&bed, Side::A, Side::B, ipv6, COUNT);
        }
        let expected = usize::from(4 * COUNT);
        let pcap = capture.finish(expected);

        // Every frame is ESP (or ESP in UDP 4500) between the gateways.
        let frames = read_pcap(&pcap);
        assert_eq!(
            frames.len(),
            expected,
            "{encap:?}: {} frames on the underlay for {COUNT} pings per family: {:?}",
            frames.len(),
            tshark(&pcap, &[])
        );
        let lines = tshark(
            &pcap,
            &strings(&[
                "-T",
                "fields",
                "-E",
                "separator=|",
                "-E",
                "occurrence=f",
                "-e",
                "ip.src",
                "-e",
                "ip.dst",
                "-e",
                "ip.proto",
                "-e",
                "udp.srcport",
                "-e",
                "udp.dstport",
            ]),
        );
        for line in &lines {
            let f: Vec<&str> = line.split('|').collect();
            let outer = (f[0], f[1]);
            assert!(
                outer == ("198.18.0.1", "198.18.0.2") || outer == ("198.18.0.2", "198.18.0.1"),
                "{encap:?}: frame not between the gateways: {line}"
            );
            match encap {
                Encapsulation::Esp => assert_eq!(f[2], "50", "not ESP: {line}"),
                Encapsulation::Udp => {
                    assert_eq!(
                        (f[2], f[3], f[4]),
                        ("17", "4500", "4500"),
                        "not ESP in UDP: {line}"
                    )
                }
            }
        }
        // Without the keys nothing inside is readable.
        let clear = tshark(&pcap, &strings(&["-Y", "icmp || icmpv6 || tcp"]));
        assert!(
            clear.is_empty(),
            "{encap:?}: cleartext on the underlay: {clear:?}"
        );

        // With them tshark (an ESP decoder no one here wrote) finds the
        // inner ICMP echo requests and replies with the hosts' addresses.
        let mut args = strings(&["-o", "esp.enable_encryption_decode:TRUE"]);
        for sa in bed.sas() {
            args.push("-o".into());
            args.push(sa.tshark_uat());
        }
        args.extend(strings(&[
            "-Y",
            "icmp || icmpv6",
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-E",
            "occurrence=a",
            "-e",
            "esp.spi",
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-e",
            "ipv6.src",
            "-e",
            "ipv6.dst",
            "-e",
            "icmp.type",
            "-e",
            "icmpv6.type",
        ]));
        let decrypted = tshark(&pcap, &args);
        assert_eq!(
            decrypted.len(),
            expected,
            "{encap:?}: tshark decrypted {} of {expected} frames: {decrypted:?}",
            decrypted.len()
        );
        let (a, b) = (bed.sa(Side::A).spi, bed.sa(Side::B).spi);
        let want = [
            (
                a,
                "198.18.0.1,10.1.0.2",
                "198.18.0.2,10.2.0.2",
                "",
                "",
                "8",
                "",
            ),
            (
                b,
                "198.18.0.2,10.2.0.2",
                "198.18.0.1,10.1.0.2",
                "",
                "",
                "0",
                "",
            ),
            (
                a,
                "198.18.0.1",
                "198.18.0.2",
                "fd00:1::2",
                "fd00:2::2",
                "",
                "128",
            ),
            (
                b,
                "198.18.0.2",
                "198.18.0.1",
                "fd00:2::2",
                "fd00:1::2",
                "",
                "129",
            ),
        ];
        for (spi, ip_src, ip_dst, ip6_src, ip6_dst, icmp, icmp6) in want {
            let line = format!("{spi:#010x}|{ip_src}|{ip_dst}|{ip6_src}|{ip6_dst}|{icmp}|{icmp6}");
            let n = decrypted.iter().filter(|l| **l == line).count();
            assert_eq!(
                n,
                usize::from(COUNT),
                "{encap:?}: {n} decrypted frames like {line:?} in {decrypted:#?}"
            );
        }
    }
}

// ---------------------------------------------------------------- (d) ----

/// Sends a whole IPv4 packet `copies` times from inside `ns`.
fn send_raw_ipv4(ns: &Netns, packet: &[u8], copies: usize) {
    xdpsec_testbed::send_raw_ipv4(ns, &[packet.to_vec()], copies).unwrap();
}

/// The IPv4 packet in an Ethernet frame, and the offset of its ESP header.
fn esp_of(frame: &[u8], encap: Encapsulation) -> (Vec<u8>, usize) {
    assert_eq!(&frame[12..14], &[0x08, 0x00], "not IPv4: {frame:02x?}");
    let ip = frame[14..].to_vec();
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let esp = match encap {
        Encapsulation::Esp => {
            assert_eq!(ip[9], 50, "not ESP");
            ihl
        }
        Encapsulation::Udp => {
            assert_eq!(ip[9], 17, "not UDP");
            ihl + 8
        }
    };
    (ip, esp)
}

#[test]
fn replayed_and_tampered_esp_is_dropped_and_counted() {
    let _serial = serial();
    for encap in [Encapsulation::Esp, Encapsulation::Udp] {
        let bed = bed(TunnelOptions {
            encap,
            ..TunnelOptions::default()
        });
        let tap = bed.underlay();
        // One ESP frame from gwA, taken off the wire.
        let filter = "src host 198.18.0.1 and (ip proto 50 or udp dst port 4500)";
        let capture = Capture::start(&tap.ns, &tap.port_a, filter, &bed.dir().join("one.pcap"), 1);
        assert_ping(&bed, Side::A, Side::B, false, 2);
        let frames = read_pcap(&capture.finish(1));
        let frame = frames.first().expect("one ESP frame captured");
        let (packet, esp) = esp_of(frame, encap);
        let seq = u32::from_be_bytes(packet[esp + 4..esp + 8].try_into().unwrap());

        let sa_b_in = || own_sas(&bed, Side::B).1;
        let before = sa_b_in();
        let gw_a = &bed.gateway(Side::A).ns;

        // The same packet again, as an attacker on the path would resend it.
        const REPLAYS: usize = 3;
        send_raw_ipv4(gw_a, &packet, REPLAYS);

        // A sequence number the receiver has not seen (so the replay check
        // lets it through to the ICV check) and a flipped ICV bit.
        const TAMPERED: usize = 2;
        let mut tampered = packet.clone();
        let forged_seq = seq + 500;
        tampered[esp + 4..esp + 8].copy_from_slice(&forged_seq.to_be_bytes());
        let last = tampered.len() - 1;
        tampered[last] ^= 0x01;
        if encap == Encapsulation::Udp {
            // No UDP checksum (allowed over IPv4), so only ESP's ICV judges.
            tampered[esp - 2..esp].copy_from_slice(&[0, 0]);
        }
        send_raw_ipv4(gw_a, &tampered, TAMPERED);

        // The tunnel still works, and the drops are counted on gwB's SA.
        let deadline = Instant::now() + Duration::from_secs(5);
        let after = loop {
            let after = sa_b_in();
            let counted = sa_drops(&after, "replayed") - sa_drops(&before, "replayed")
                + sa_drops(&after, "authentication_failed")
                - sa_drops(&before, "authentication_failed");
            if counted as usize >= REPLAYS + TAMPERED || Instant::now() >= deadline {
                break after;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert_ping(&bed, Side::A, Side::B, false, 3);
        assert_ping(&bed, Side::A, Side::B, true, 3);
        assert_eq!(
            sa_drops(&after, "replayed") - sa_drops(&before, "replayed"),
            REPLAYS as u64,
            "{encap:?}: replays counted on gwB's inbound SA: {after}\n{}",
            diagnostics(&bed)
        );
        assert_eq!(
            sa_drops(&after, "authentication_failed") - sa_drops(&before, "authentication_failed"),
            TAMPERED as u64,
            "{encap:?}: forgeries counted on gwB's inbound SA: {after}\n{}",
            diagnostics(&bed)
        );
        // Neither moved the replay window: the forged sequence number was
        // never accepted, and neither was the replayed packet.
        assert_eq!(
            sa_packets(&after),
            sa_packets(&before),
            "{encap:?}: a bad packet was carried: {after}"
        );
        let highest = sa_b_in()["seq"].as_u64().unwrap();
        assert!(
            highest < u64::from(forged_seq),
            "{encap:?}: the window moved to {highest} (forged {forged_seq})"
        );
    }
}

// ---------------------------------------------------------------- (e) ----

#[test]
fn traffic_no_policy_covers_reaches_the_kernel() {
    let _serial = serial();
    let bed = bed(TunnelOptions::default());
    let host_a = &bed.host(Side::A).ns;
    let rx_before = Side::BOTH.map(|s| worker_rx(&bed, s).0);
    let targets: [IpAddr; 4] = [
        bed.gateway(Side::A).lan.ipv4.into(),
        bed.gateway(Side::A).lan.ipv6.into(),
        bed.gateway(Side::B).wan.ipv4.into(),
        bed.gateway(Side::A).wan.ipv4.into(),
    ];
    for dst in targets {
        let stats = xdpsec_testbed::tunnel::ping_from(host_a, dst, 3).unwrap();
        assert!(
            stats.all_answered_once(),
            "ping {dst} from host A with the data planes running: {}\n{}",
            stats.output,
            diagnostics(&bed)
        );
    }
    // And none of it went through a worker.
    let rx_after = Side::BOTH.map(|s| worker_rx(&bed, s).0);
    assert_eq!(rx_before, rx_after, "workers saw traffic no policy covers");
    // While the tunnel still works.
    assert_ping(&bed, Side::A, Side::B, false, 2);
}

// ---------------------------------------------------------------- (f) ----

#[test]
fn deleting_the_inbound_sa_stops_the_tunnel_and_adding_it_back_resumes_it() {
    let _serial = serial();
    let bed = bed(TunnelOptions::default());
    assert_ping(&bed, Side::A, Side::B, false, 2);

    let spi = bed.sa(Side::A).spi;
    let config = StaticConfig::load(bed.config_path(Side::B)).unwrap();
    let spec = config
        .sas
        .iter()
        .find(|sa| sa.spi == spi && sa.direction == Direction::In)
        .expect("gwB's inbound SA in its config")
        .clone();
    let mut api = ApiClient::connect(bed.api_socket(Side::B)).unwrap();
    api.delete_sa(spi, Direction::In).unwrap();
    let listed = api.list_sas().unwrap();
    assert!(
        !listed
            .iter()
            .any(|sa| sa.spi == spi && sa.direction == Direction::In),
        "still listed after delete: {listed:?}"
    );

    for ipv6 in [false, true] {
        let stats = bed.ping(Side::A, Side::B, ipv6, 3).unwrap();
        assert_eq!(
            stats.received,
            0,
            "{}: ping went through without gwB's inbound SA:\n{}",
            family(ipv6),
            stats.output
        );
    }

    api.add_sa(spec).unwrap();
    for ipv6 in [false, true] {
        assert_ping(&bed, Side::A, Side::B, ipv6, 3);
    }
    let (_, inb) = own_sas(&bed, Side::B);
    assert_eq!(sa_packets(&inb), 6, "the re-added SA's counters: {inb}");
}

/// Sum over `side`'s workers of their drops for `reason` in `xdpsec status
/// --json`.
fn worker_drops(bed: &TunnelBed, side: Side, reason: &str) -> u64 {
    let status = bed.status(side).unwrap();
    status["workers"]
        .as_array()
        .unwrap_or_else(|| panic!("no workers in {status}"))
        .iter()
        .map(|w| w["drops"][reason].as_u64().unwrap_or(0))
        .sum()
}

#[test]
fn deleting_the_ipv4_sa_stops_only_ipv4_counted_and_adding_it_back_resumes_it() {
    let _serial = serial();
    let bed = bed(TunnelOptions {
        split_families: true,
        ..TunnelOptions::default()
    });
    const COUNT: u16 = 3;
    let sa_for = |from, ipv6| bed.sa_for(from, ipv6).expect("both families carried");
    // Two SA pairs: four distinct SPIs.
    let mut spis: Vec<u32> = bed.sas().iter().map(|sa| sa.spi).collect();
    spis.sort_unstable();
    spis.dedup();
    assert_eq!(spis.len(), 4, "{:?}", bed.sas());

    // Each family goes through its own SAs.
    for ipv6 in [false, true] {
        assert_ping(&bed, Side::A, Side::B, ipv6, COUNT);
    }
    // (gateway, SPI, direction) of the IPv6 SAs both gateways hold.
    let v6_sas = [
        (Side::A, sa_for(Side::A, true).spi, "out"),
        (Side::B, sa_for(Side::A, true).spi, "in"),
        (Side::B, sa_for(Side::B, true).spi, "out"),
        (Side::A, sa_for(Side::B, true).spi, "in"),
    ];
    let v6_packets = || -> Vec<u64> {
        v6_sas
            .iter()
            .map(|&(side, spi, dir)| sa_packets(&sa_info(&bed.sa_list(side).unwrap(), spi, dir)))
            .collect()
    };
    let v4_b_in = sa_for(Side::A, false).spi;
    let v4_b_out = sa_for(Side::B, false).spi;
    let list_b = bed.sa_list(Side::B).unwrap();
    assert_eq!(
        sa_packets(&sa_info(&list_b, v4_b_in, "in")),
        u64::from(COUNT)
    );
    assert_eq!(v6_packets(), vec![u64::from(COUNT); 4], "IPv6 SAs");

    // Delete gwB's inbound IPv4 SA over the SA API.
    let spec = StaticConfig::load(bed.config_path(Side::B))
        .unwrap()
        .sas
        .iter()
        .find(|sa| sa.spi == v4_b_in && sa.direction == Direction::In)
        .expect("gwB's inbound IPv4 SA in its config")
        .clone();
    let mut api = ApiClient::connect(bed.api_socket(Side::B)).unwrap();
    api.delete_sa(v4_b_in, Direction::In).unwrap();
    let listed = api.list_sas().unwrap();
    let has =
        |spi: u32, dir: Direction| listed.iter().any(|sa| sa.spi == spi && sa.direction == dir);
    assert!(!has(v4_b_in, Direction::In), "still listed: {listed:?}");
    assert!(
        has(sa_for(Side::A, true).spi, Direction::In)
            && has(v4_b_out, Direction::Out)
            && has(sa_for(Side::B, true).spi, Direction::Out),
        "the delete took other SAs with it: {listed:?}"
    );

    let unknown_before = worker_drops(&bed, Side::B, "unknown_spi");
    let v6_before = v6_packets();
    let v4_b_out_packets = || sa_packets(&sa_info(&bed.sa_list(Side::B).unwrap(), v4_b_out, "out"));
    let v4_out_before = v4_b_out_packets();

    // IPv4 stops: gwA still encrypts, gwB drops what it has no SA for.
    // (Unanswered, ping keeps sending until its deadline: it sends at least
    // COUNT requests, and says how many.)
    let v4_a_out = || sa_packets(&sa_info(&bed.sa_list(Side::A).unwrap(), v4_b_in, "out"));
    let v4_a_out_before = v4_a_out();
    let v4 = bed.ping(Side::A, Side::B, false, COUNT).unwrap();
    assert!(v4.transmitted >= u32::from(COUNT), "{}", v4.output);
    assert_eq!(
        v4.received,
        0,
        "IPv4 went through without gwB's inbound IPv4 SA:\n{}\n{}",
        v4.output,
        diagnostics(&bed)
    );
    // IPv6 is not disturbed, and its SAs carried exactly these pings.
    assert_ping(&bed, Side::A, Side::B, true, COUNT);
    let v6_after = v6_packets();
    for (i, &(side, spi, dir)) in v6_sas.iter().enumerate() {
        assert_eq!(
            v6_after[i] - v6_before[i],
            u64::from(COUNT),
            "{side}'s IPv6 SA {spi:#x} ({dir}): {} -> {}",
            v6_before[i],
            v6_after[i]
        );
    }
    // Every IPv4 request was dropped and counted as an unknown SPI by gwB's
    // workers (the ping above came after, so they have all arrived).
    let unknown_after = worker_drops(&bed, Side::B, "unknown_spi");
    assert_eq!(
        unknown_after - unknown_before,
        u64::from(v4.transmitted),
        "gwB's unknown_spi drops for {} IPv4 pings\n{}",
        v4.transmitted,
        diagnostics(&bed)
    );
    assert_eq!(
        v4_a_out() - v4_a_out_before,
        u64::from(v4.transmitted),
        "gwA's outbound IPv4 SA for {} IPv4 pings",
        v4.transmitted
    );
    assert_eq!(
        v4_b_out_packets(),
        v4_out_before,
        "gwB answered IPv4 without its inbound SA"
    );

    // Adding the same SA back resumes IPv4.
    api.add_sa(spec).unwrap();
    assert_ping(&bed, Side::A, Side::B, false, COUNT);
    let readded = sa_info(&bed.sa_list(Side::B).unwrap(), v4_b_in, "in");
    assert_eq!(sa_packets(&readded), u64::from(COUNT), "{readded}");
    assert_eq!(
        worker_drops(&bed, Side::B, "unknown_spi"),
        unknown_after,
        "drops after the SA was added back"
    );
}

// ---------------------------------------------------------------- (g) ----

#[test]
fn two_workers_per_gateway_process_every_packet_once() {
    let _serial = serial();
    let bed = bed(TunnelOptions {
        workers: 2,
        ..TunnelOptions::default()
    });
    for side in Side::BOTH {
        let (_, per_worker) = worker_rx(&bed, side);
        assert_eq!(per_worker.len(), 2, "{side}: {per_worker:?}");
    }
    let before = Side::BOTH.map(|s| worker_rx(&bed, s).0);
    let tap = bed.underlay();
    let pcap = bed.dir().join("workers.pcap");
    let capture = Capture::start(&tap.ns, &tap.port_a, UNDERLAY_FILTER, &pcap, 1000);
    const COUNT: u16 = 5;
    for ipv6 in [false, true] {
        assert_ping(&bed, Side::A, Side::B, ipv6, COUNT);
        assert_ping(&bed, Side::B, Side::A, ipv6, COUNT);
    }
    // 2 families x 2 directions x (COUNT requests + COUNT replies).
    let sent = u64::from(8 * COUNT);
    let frames = read_pcap(&capture.finish(sent as usize)).len() as u64;
    assert_eq!(frames, sent, "ESP frames on the underlay");
    for (i, side) in Side::BOTH.into_iter().enumerate() {
        let (after, per_worker) = worker_rx(&bed, side);
        // Each gateway received every packet once: from its LAN (to
        // encrypt) or from the underlay (to decrypt).
        assert_eq!(
            after - before[i],
            sent,
            "{side}: workers received {} frames for {sent} packets ({per_worker:?})\n{}",
            after - before[i],
            diagnostics(&bed)
        );
    }

    let report = bed
        .iperf3(bed.host_addr(Side::B, false), 2, 2)
        .unwrap_or_else(|e| panic!("iperf3: {e}\n{}", diagnostics(&bed)));
    assert!(report.received_bytes > 0, "{}", report.json);
    for side in Side::BOTH {
        let (out, inb) = own_sas(&bed, side);
        let (rx, per_worker) = worker_rx(&bed, side);
        // Every packet an SA carried was received by a worker first.
        assert!(
            rx >= sa_packets(&out) + sa_packets(&inb),
            "{side}: workers received {rx} ({per_worker:?}), SAs carried {} + {}",
            sa_packets(&out),
            sa_packets(&inb)
        );
        // A packet decrypted twice would be caught by the replay window.
        assert_eq!(sa_drops(&inb, "replayed"), 0, "{side}: {inb}");
        assert_eq!(sa_drops(&inb, "authentication_failed"), 0, "{side}: {inb}");
        eprintln!("{side}: rx per worker after iperf3: {per_worker:?}");
    }
    // Nothing decrypted that was not encrypted.
    for side in Side::BOTH {
        let (out, _) = own_sas(&bed, side);
        let (_, peer_in) = own_sas(&bed, side.other());
        assert!(
            sa_packets(&peer_in) <= sa_packets(&out),
            "{} decrypted {} packets of {side}'s {}",
            side.other(),
            sa_packets(&peer_in),
            sa_packets(&out)
        );
    }
}

// ---------------------------------------------------------------- (h) ----

/// Runs `xdpsec dataplane --config FILE` in `ns` (bounded); (success,
/// stderr).
fn run_dataplane(ns: &Netns, config: &Path) -> (bool, String) {
    let child = ns
        .spawn([
            env!("CARGO_BIN_EXE_xdpsec"),
            "dataplane",
            "--config",
            config.to_str().unwrap(),
        ])
        .unwrap();
    let out = child.wait_timeout(Duration::from_secs(10)).unwrap();
    (out.status.success(), out.stderr)
}

#[test]
fn bad_configs_fail_naming_the_field_or_interface() {
    let _serial = serial();
    // Its own namespaces: the data plane is pointed at veths that exist
    // (`lan0`, `wan0`) or not (`nosuch0`).
    let tb = Testbed::new().unwrap();
    let gw = tb.add_netns("gw").unwrap();
    let peer = tb.add_netns("peer").unwrap();
    tb.add_veth(&gw, "lan0", &peer, "eth0").unwrap();
    tb.add_veth(&gw, "wan0", &peer, "eth1").unwrap();
    gw.add_addr("wan0", "198.18.0.1".parse().unwrap(), 30)
        .unwrap();
    let dir = TempDir::new(std::env::temp_dir().join(format!("xdpsec-{}-configs", tb.prefix())));
    let dir = &dir.0;
    let socket = dir.join("api.sock");
    let good = format!(
        r#"[dataplane]
api_socket = "{}"
state_dir = "{}"
workers = 1

[[interface]]
name = "lan0"
role = "inside"

[[interface]]
name = "wan0"
role = "outside"

[[sa]]
spi = 0x1001
direction = "out"
key = "000102030405060708090a0b0c0d0e0f10111213"
tunnel_local = "198.18.0.1"
tunnel_remote = "198.18.0.2"
selectors = [{{ local = "10.1.0.0/24", remote = "10.2.0.0/24" }}]

[[policy]]
local = "10.1.0.0/24"
remote = "10.2.0.0/24"
direction = "out"
action = "protect"
spi = 0x1001
"#,
        socket.display(),
        dir.join("state").display()
    );
    let cases: [(&str, String, &[&str]); 4] = [
        (
            "bad key",
            good.replace("0c0d0e0f10111213\"", "0c0d0e0f1011121\""),
            &["sa[0].key"],
        ),
        (
            "zero workers",
            good.replace("workers = 1", "workers = 0"),
            &["dataplane.workers"],
        ),
        (
            "unknown field",
            good.replace("role = \"inside\"", "role = \"inside\"\nspeed = 10"),
            &["speed"],
        ),
        (
            "missing interface",
            good.replace("name = \"lan0\"", "name = \"nosuch0\""),
            &["nosuch0", "interface[0]"],
        ),
    ];
    for (what, text, needles) in &cases {
        let path = dir.join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let (ok, stderr) = run_dataplane(&gw, &path);
        assert!(!ok, "{what}: the data plane started with a bad config");
        for needle in *needles {
            assert!(
                stderr.contains(needle),
                "{what}: {needle:?} not in: {stderr}"
            );
        }
        assert!(!socket.exists(), "{what}: API socket created");
        let links = gw.ip(["-d", "link", "show"]).unwrap();
        assert!(
            !links.contains("prog/xdp"),
            "{what}: XDP left attached:\n{links}"
        );
    }

    // The same config without the fault does start (so the failures above
    // are the faults'), and SIGTERM right after the API socket appears
    // stops it with status 0 (a few times: the handler must be in place
    // before the socket is).
    let path = dir.join("good.toml");
    std::fs::write(&path, &good).unwrap();
    let log = dir.join("good.log");
    for round in 0..3 {
        let child = gw
            .spawn_logged(
                [
                    env!("CARGO_BIN_EXE_xdpsec"),
                    "dataplane",
                    "--config",
                    path.to_str().unwrap(),
                ],
                &log,
            )
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(
                matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline,
                "the good config did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        child.terminate().unwrap();
        let out = child.wait_timeout(Duration::from_secs(10)).unwrap();
        assert!(
            out.status.success(),
            "round {round}: {} on SIGTERM; log:\n{}",
            out.status,
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let links = gw.ip(["-d", "link", "show"]).unwrap();
        assert!(!links.contains("prog/xdp"), "XDP left attached:\n{links}");
        assert!(!socket.exists(), "API socket left behind");
    }
}

/// A directory removed on drop (also when the test panics).
struct TempDir(PathBuf);

impl TempDir {
    fn new(path: PathBuf) -> TempDir {
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

#[test]
fn sigterm_exits_zero_and_detaches_xdp() {
    let _serial = serial();
    let mut bed = bed(TunnelOptions::default());
    assert_ping(&bed, Side::A, Side::B, false, 2);
    for side in Side::BOTH {
        let ns = bed.gateway(side).ns.clone();
        let links = ns.ip(["-d", "link", "show"]).unwrap();
        assert!(
            links.matches("prog/xdp").count() >= 2,
            "{side}: XDP not attached to lan0 and wan0 while running:\n{links}"
        );
        let status = bed.stop(side).unwrap();
        assert!(
            status.success(),
            "{side}: exit status {status} on SIGTERM\n{}",
            bed.log(side)
        );
        let links = ns.ip(["-d", "link", "show"]).unwrap();
        assert!(
            !links.contains("prog/xdp"),
            "{side}: XDP still attached after exit:\n{links}"
        );
        assert!(
            !bed.api_socket(side).exists(),
            "{side}: API socket left behind"
        );
    }
}
