//! MTU handling end to end, on the two-gateway tunnel in namespaces
//! ([`TunnelBed`], both data planes running) with 1500-byte LAN links:
//!
//! - `ping -M do` with a full-size packet gets "fragmentation needed" (IPv4)
//!   or "packet too big" (IPv6) from the gateway with the SA's inner MTU,
//!   and the host caches that MTU; without DF the packet goes through in
//!   outer fragments (seen on the wire, reassembled by the other gateway,
//!   and by tshark, which decrypts the reassembled ESP);
//! - TCP with MSS clamping off gets through on PMTU discovery alone;
//! - a router in the middle with a 1280-byte link sends "fragmentation
//!   needed" about the outer packets: the gateway learns the path MTU,
//!   tells its host, and TCP recovers;
//! - a bounded flood of junk fragments fills the reassembly table, every
//!   refusal is counted by reason, the table empties on timeout, and
//!   traffic keeps flowing;
//! - the ICMP errors the gateway builds pass tshark's checksum checks.
//!
//! Needs root, iperf3, tcpdump, tshark, ethtool and iputils' ping (`cargo
//! xtask setup` installs them). One tunnel at a time.

use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use xdpsec_dataplane::icmp;
use xdpsec_dataplane::wire::{ip_proto, ipv4, ipv6};
use xdpsec_testbed::tunnel::{
    Encapsulation, GatewayKind, IkeOptions, Side, TunnelBed, TunnelOptions, STRONGSWAN_CHILD,
};
use xdpsec_testbed::{send_raw_ipv4, tshark, write_pcap, Capture, Netns};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn bed(options: TunnelOptions) -> TunnelBed {
    TunnelBed::new(env!("CARGO_BIN_EXE_xdpsec"), options).unwrap_or_else(|e| panic!("{e}"))
}

/// 1500-byte LAN links on both sides, everything else default.
fn full_size(encap: Encapsulation) -> TunnelOptions {
    TunnelOptions {
        inner_mtu: 1500,
        encap,
        ..TunnelOptions::default()
    }
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

/// What iputils' `ping ARGS` printed (stdout and stderr), however it
/// ended; with `-c N` bounded by N x 0.2 s + 1 s.
fn ping(ns: &Netns, args: &[&str]) -> String {
    let mut argv = vec!["ping", "-n", "-i", "0.2", "-W", "1"];
    argv.extend_from_slice(args);
    let child = ns.spawn(&argv).unwrap();
    let out = child.wait_timeout(Duration::from_secs(15)).unwrap();
    format!("{}{}", out.stdout, out.stderr)
}

/// `N received` from ping's summary line.
fn received(output: &str) -> u32 {
    output
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .and_then(|l| {
            l.split(',')
                .find(|p| p.contains("received"))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Every MTU ping reports (`mtu = 1443`, `mtu=1443`).
fn reported_mtus(output: &str) -> Vec<u32> {
    let mut mtus = Vec::new();
    for (at, _) in output.match_indices("mtu") {
        let digits: String = output[at + 3..]
            .chars()
            .skip_while(|c| *c == ' ' || *c == '=')
            .take_while(char::is_ascii_digit)
            .collect();
        if let Ok(mtu) = digits.parse() {
            mtus.push(mtu);
        }
    }
    mtus
}

/// The path MTU the kernel of `ns` caches towards `dst` (`ip route get`).
fn cached_mtu(ns: &Netns, dst: IpAddr) -> Option<u32> {
    let out = ns.ip(["route", "get", &dst.to_string()]).ok()?;
    reported_mtus(&out).first().copied()
}

/// Waits (up to `limit`) until `done` holds.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn total(bed: &TunnelBed, side: Side, group: &str, name: &str) -> u64 {
    bed.worker_total(side, group, name).unwrap()
}

fn sa_mtu(sa: &Value) -> &Value {
    &sa["mtu"]
}

/// Worst-case ESP overhead of the test bed's SAs (outer IPv4): IP 20, UDP
/// 8 if encapsulated, ESP header 8, IV 8, padding 3, trailer 2, ICV 16.
fn overhead(encap: Encapsulation) -> u32 {
    match encap {
        Encapsulation::Esp => 57,
        Encapsulation::Udp => 65,
    }
}

// ------------------------------------------------------------------------

#[test]
fn ipv4_with_df_gets_frag_needed_and_without_df_goes_out_in_fragments() {
    let _serial = serial();
    for encap in [Encapsulation::Esp, Encapsulation::Udp] {
        let bed = bed(full_size(encap));
        let inner_mtu = 1500 - overhead(encap);
        let host_a = &bed.host(Side::A).ns;
        let dst = bed.host_addr(Side::B, false);

        // Without DF first (with DF, host A would cache the smaller MTU
        // and fragment by itself): 1500-byte requests and replies leave
        // their gateway in outer fragments.
        let tap = bed.underlay();
        let pcap = bed.dir().join(format!("fragments-{encap:?}.pcap"));
        let filter = "ip[6:2] & 0x3fff != 0";
        let capture = Capture::start(&tap.ns, &tap.port_a, filter, &pcap, 100).unwrap();
        const COUNT: u32 = 3;
        let out = ping(
            host_a,
            &[
                "-c",
                &COUNT.to_string(),
                "-M",
                "dont",
                "-s",
                "1472",
                &dst.to_string(),
            ],
        );
        assert_eq!(
            received(&out),
            COUNT,
            "{encap:?}: {out}\n{}",
            diagnostics(&bed)
        );
        // Each request and each reply: two fragments.
        let frames = capture.finish(4 * COUNT as usize).unwrap();
        assert!(
            frames.len() >= 4 * COUNT as usize,
            "{encap:?}: {} outer fragments on the wire",
            frames.len()
        );
        for frame in &frames {
            assert!(frame.len() <= 1514, "a fragment of {} bytes", frame.len());
        }
        for side in Side::BOTH {
            assert!(total(&bed, side, "events", "outer_packets_fragmented") >= u64::from(COUNT));
            assert!(total(&bed, side, "events", "datagrams_reassembled") >= u64::from(COUNT));
        }
        // tshark reassembles the fragments itself, decrypts the ESP with
        // the keys and finds the 1500-byte echo requests in it.
        let mut args = vec!["-o".to_string(), "esp.enable_encryption_decode:TRUE".into()];
        for sa in bed.sas() {
            args.push("-o".into());
            args.push(sa.tshark_uat());
        }
        args.extend(["-Y", "icmp.type == 8", "-T", "fields", "-e", "ip.len"].map(String::from));
        let lengths = tshark(&pcap, &args).unwrap();
        assert!(
            lengths
                .iter()
                .filter(|l| l.split(',').any(|v| v == "1500"))
                .count()
                >= COUNT as usize,
            "{encap:?}: tshark found no 1500-byte echo request in the reassembled ESP: {lengths:?}"
        );

        // With DF: the gateway answers with the SA's inner MTU, and host A
        // caches it.
        let dropped_before = bed.outbound_sa_info(Side::A, false).unwrap()["counters"]["drops"]
            ["inner_mtu_exceeded"]
            .as_u64()
            .unwrap_or(0);
        let out = ping(
            host_a,
            &["-c", "2", "-M", "do", "-s", "1472", &dst.to_string()],
        );
        assert_eq!(received(&out), 0, "{encap:?}: {out}");
        assert!(
            reported_mtus(&out).contains(&inner_mtu),
            "{encap:?}: ping did not report mtu {inner_mtu}: {out}\n{}",
            diagnostics(&bed)
        );
        assert_eq!(cached_mtu(host_a, dst), Some(inner_mtu), "{encap:?}");
        let sa = bed.outbound_sa_info(Side::A, false).unwrap();
        assert_eq!(sa_mtu(&sa)["inner_mtu"], inner_mtu, "{sa}");
        assert_eq!(sa_mtu(&sa)["link_mtu"], 1500, "{sa}");
        assert!(
            sa["counters"]["drops"]["inner_mtu_exceeded"]
                .as_u64()
                .unwrap_or(0)
                > dropped_before,
            "{sa}"
        );
        assert!(total(&bed, Side::A, "events", "icmp_too_big_sent") >= 1);
        // The cached MTU is what fits: DF pings of that size go through.
        let fits = (inner_mtu - 28).to_string();
        let out = ping(
            host_a,
            &["-c", "2", "-M", "do", "-s", &fits, &dst.to_string()],
        );
        assert_eq!(received(&out), 2, "{encap:?}: {out}\n{}", diagnostics(&bed));
    }
}

#[test]
fn ipv6_gets_packet_too_big_and_then_fits() {
    let _serial = serial();
    let bed = bed(full_size(Encapsulation::Esp));
    let inner_mtu = 1500 - overhead(Encapsulation::Esp);
    let host_a = &bed.host(Side::A).ns;
    let dst = bed.host_addr(Side::B, true);
    let out = ping(
        host_a,
        &["-6", "-c", "2", "-M", "do", "-s", "1452", &dst.to_string()],
    );
    assert_eq!(received(&out), 0, "{out}");
    assert!(
        reported_mtus(&out).contains(&inner_mtu),
        "no packet too big with mtu {inner_mtu}: {out}\n{}",
        diagnostics(&bed)
    );
    assert_eq!(cached_mtu(host_a, dst), Some(inner_mtu));
    // Now host A fragments its 1500-byte packets itself; host B's first
    // 1500-byte reply gets it its own "packet too big" from gateway B.
    const COUNT: u32 = 5;
    let out = ping(
        host_a,
        &[
            "-6",
            "-c",
            &COUNT.to_string(),
            "-s",
            "1452",
            &dst.to_string(),
        ],
    );
    assert!(received(&out) >= COUNT - 1, "{out}\n{}", diagnostics(&bed));
    assert_eq!(
        cached_mtu(&bed.host(Side::B).ns, bed.host_addr(Side::A, true)),
        Some(inner_mtu)
    );
    for side in Side::BOTH {
        assert!(
            total(&bed, side, "events", "icmp_too_big_sent") >= 1,
            "{side}"
        );
    }
}

#[test]
fn tcp_without_mss_clamping_gets_through_on_pmtu_discovery() {
    let _serial = serial();
    let bed = bed(TunnelOptions {
        mss_clamp: false,
        ..full_size(Encapsulation::Esp)
    });
    let report = bed
        .iperf3(bed.host_addr(Side::B, false), 2, 1)
        .unwrap_or_else(|e| panic!("iperf3: {e}\n{}", diagnostics(&bed)));
    assert!(
        report.received_bytes > 1_000_000,
        "iperf3 moved {} bytes without MSS clamping\n{}",
        report.received_bytes,
        diagnostics(&bed)
    );
    // It was PMTU discovery: host A's full-size segments got the ICMP.
    assert!(total(&bed, Side::A, "events", "icmp_too_big_sent") >= 1);
    assert_eq!(
        cached_mtu(&bed.host(Side::A).ns, bed.host_addr(Side::B, false)),
        Some(1500 - overhead(Encapsulation::Esp))
    );
    eprintln!(
        "iperf3 without clamping, PMTU only: {:.1} Mbit/s, {} retransmits",
        report.received_bits_per_second / 1e6,
        report.retransmits
    );
}

#[test]
fn router_with_a_1280_byte_link_teaches_the_gateway_its_path_mtu() {
    let _serial = serial();
    let bed = bed(TunnelOptions {
        narrow_underlay_mtu: Some(1280),
        ..full_size(Encapsulation::Esp)
    });
    let path_inner = 1280 - overhead(Encapsulation::Esp);
    let report = bed
        .iperf3(bed.host_addr(Side::B, false), 3, 1)
        .unwrap_or_else(|e| panic!("iperf3: {e}\n{}", diagnostics(&bed)));
    assert!(
        report.received_bytes > 1_000_000,
        "iperf3 moved {} bytes over the 1280-byte path\n{}",
        report.received_bytes,
        diagnostics(&bed)
    );
    let sa = bed.outbound_sa_info(Side::A, false).unwrap();
    assert_eq!(sa_mtu(&sa)["path_mtu"], 1280, "{sa}\n{}", diagnostics(&bed));
    assert_eq!(sa_mtu(&sa)["inner_mtu"], path_inner, "{sa}");
    assert!(sa_mtu(&sa)["path_mtu_updates"].as_u64().unwrap_or(0) >= 1);
    assert!(total(&bed, Side::A, "events", "path_mtu_learned") >= 1);
    assert!(total(&bed, Side::A, "events", "icmp_too_big_sent") >= 1);
    // Host A learned the tunnel's MTU over that path from its gateway.
    assert_eq!(
        cached_mtu(&bed.host(Side::A).ns, bed.host_addr(Side::B, false)),
        Some(path_inner)
    );
    let text = bed.cli(Side::A, &["sa", "list"]).unwrap();
    assert!(
        text.contains(&format!("inner {path_inner}/pmtu 1280")),
        "{text}"
    );

    // MSS clamping follows the learned path MTU: with host A's cached MTU
    // flushed, its SYN announces 1460 again, and arrives at host B with
    // what fits 1280 after ESP.
    let host_a = &bed.host(Side::A).ns;
    host_a.ip(["route", "flush", "cache"]).unwrap();
    assert_eq!(cached_mtu(host_a, bed.host_addr(Side::B, false)), None);
    let host_b = bed.host(Side::B);
    let pcap = bed.dir().join("syn.pcap");
    let filter = "tcp[tcpflags] & tcp-syn != 0 and dst port 9";
    let capture = Capture::start(&host_b.ns, &host_b.eth.name, filter, &pcap, 1).unwrap();
    let dst = bed.host_addr(Side::B, false);
    // A SYN to the closed discard port: host B answers with a reset.
    let connect = format!("exec 3<>/dev/tcp/{dst}/9");
    if let Ok(child) = host_a.spawn(["timeout", "2", "bash", "-c", &connect]) {
        child.wait_timeout(Duration::from_secs(5)).ok();
    }
    capture.finish(1).unwrap();
    let args = ["-T", "fields", "-e", "tcp.options.mss_val"].map(String::from);
    let mss = tshark(&pcap, &args).unwrap();
    assert_eq!(
        mss,
        [(path_inner - 40).to_string()],
        "the SYN's MSS at host B\n{}",
        diagnostics(&bed)
    );
    eprintln!(
        "iperf3 over a 1280-byte path: {:.1} Mbit/s, {} retransmits",
        report.received_bits_per_second / 1e6,
        report.retransmits
    );
}

/// An IPv4 ESP fragment from gateway B to gateway A: `len` bytes at byte
/// `offset` of datagram `ident`.
fn esp_fragment(ident: u16, offset: usize, len: usize, more: bool) -> Vec<u8> {
    let mut p = vec![0u8; 20 + len];
    ipv4::Repr {
        src: Ipv4Addr::new(198, 18, 0, 2),
        dst: Ipv4Addr::new(198, 18, 0, 1),
        protocol: ip_proto::ESP,
        payload_len: len,
        ttl: 64,
        dscp_ecn: 0,
        ident,
        dont_frag: false,
    }
    .emit(&mut p)
    .unwrap();
    let word = (offset / 8) as u16 | if more { ipv4::FLAG_MF } else { 0 };
    p[6..8].copy_from_slice(&word.to_be_bytes());
    p[20..].fill(0xa5);
    p
}

#[test]
fn a_fragment_flood_keeps_the_reassembly_table_bounded() {
    let _serial = serial();
    let bed = bed(full_size(Encapsulation::Esp));
    let gw_b = &bed.gateway(Side::B).ns;
    let drops = |name: &str| total(&bed, Side::A, "drops", name);

    // 2000 pieces of 2000 datagrams that never complete, from gateway B's
    // kernel (the peer's own address, as a spoofer would use).
    let mut seed = 0x2545_f491u32;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    const FLOOD: usize = 2000;
    let junk: Vec<Vec<u8>> = (0..FLOOD)
        .map(|i| {
            let offset = (next() % 100) as usize * 8;
            let len = 8 * (1 + (next() % 60) as usize);
            esp_fragment(0x8000 | i as u16, offset, len, true)
        })
        .collect();
    // A tuned setting: gateway B's kernel learns gateway A's MAC first.
    // Cold, it would queue only unres_qlen_bytes of the burst while it
    // resolves and drop the rest: the test would count the kernel's ARP
    // queue, not the data plane's table.
    let (wan_a, wan_b) = (&bed.gateway(Side::A).wan, &bed.gateway(Side::B).wan);
    let mac = wan_a.mac.map(|b| format!("{b:02x}")).join(":");
    gw_b.ip([
        "neigh",
        "replace",
        &wan_a.ipv4.to_string(),
        "lladdr",
        &mac,
        "dev",
        &wan_b.name,
    ])
    .unwrap();
    // In slices: a veth with XDP takes 256 frames at a time (its ring), and
    // one burst of 2000 from a raw socket would test that ring under the
    // machine's load, not the reassembly table.
    for slice in junk.chunks(64) {
        send_raw_ipv4(gw_b, slice, 1).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        wait_until(Duration::from_secs(5), || drops("reassembly_evicted") > 0),
        "no table-full drops\n{}",
        diagnostics(&bed)
    );
    // Traffic that is not fragmented does not notice.
    let out = ping(
        &bed.host(Side::A).ns,
        &["-c", "5", &bed.host_addr(Side::B, false).to_string()],
    );
    assert_eq!(received(&out), 5, "{out}\n{}", diagnostics(&bed));

    // One source holds at most a quarter of the 64 slots: each new junk
    // datagram evicts its own oldest, and the last 16 time out (2 s).
    const PER_SOURCE: u64 = 64 / 4;
    assert!(
        wait_until(Duration::from_secs(8), || drops("reassembly_timeout")
            >= PER_SOURCE),
        "{}",
        diagnostics(&bed)
    );
    let evicted = drops("reassembly_evicted");
    let timeouts = drops("reassembly_timeout");
    assert!(
        timeouts <= PER_SOURCE,
        "more datagrams than one source's quota timed out: {timeouts}"
    );
    assert!(
        evicted >= FLOOD as u64 - PER_SOURCE,
        "{evicted} evicted datagrams"
    );
    let received_fragments = total(&bed, Side::A, "events", "outer_fragments_received");
    assert!(received_fragments >= FLOOD as u64, "{received_fragments}");

    // Every other reason, once each.
    let overlap = [
        esp_fragment(1, 0, 800, true),
        esp_fragment(1, 792, 16, true),
    ];
    let too_many: Vec<Vec<u8>> = (0..17).map(|i| esp_fragment(2, i * 8, 8, true)).collect();
    let too_large = [esp_fragment(3, 1600, 400, true)];
    for batch in [&overlap[..], &too_many[..], &too_large[..]] {
        send_raw_ipv4(gw_b, batch, 1).unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(5), || {
            drops("reassembly_overlap") >= 1
                && drops("reassembly_too_many_fragments") >= 1
                && drops("reassembly_too_large") >= 1
        }),
        "{}",
        diagnostics(&bed)
    );

    // And real fragmented traffic reassembles again.
    let out = ping(
        &bed.host(Side::B).ns,
        &[
            "-c",
            "3",
            "-M",
            "dont",
            "-s",
            "1472",
            &bed.host_addr(Side::A, false).to_string(),
        ],
    );
    assert_eq!(received(&out), 3, "{out}\n{}", diagnostics(&bed));
}

#[test]
fn icmp_errors_the_gateway_builds_pass_tshark_checksum_checks() {
    // The packets a LAN host sends that do not fit: a UDP datagram (IPv4,
    // DF) and an ICMPv6 echo request, 1500 bytes each, behind Ethernet
    // headers with room in front for the error's headers.
    let mut frames = Vec::new();
    let room = 64;
    let mut v4 = vec![0u8; room + 1500];
    ipv4::Repr {
        src: Ipv4Addr::new(10, 1, 0, 2),
        dst: Ipv4Addr::new(10, 2, 0, 2),
        protocol: ip_proto::UDP,
        payload_len: 1480,
        ttl: 64,
        dscp_ecn: 0,
        ident: 4242,
        dont_frag: true,
    }
    .emit(&mut v4[room..])
    .unwrap();
    v4[room + 20..room + 28].copy_from_slice(&[0x9c, 0x40, 0x13, 0x89, 0x05, 0xc8, 0, 0]);
    let r = icmp::frag_needed_v4(&mut v4, room, 1500, 1443, Ipv4Addr::new(10, 1, 0, 1)).unwrap();
    frames.push([&ethernet_header(0x0800)[..], &v4[r]].concat());

    let mut v6 = vec![0u8; room + 1500];
    let src: Ipv6Addr = "fd00:1::2".parse().unwrap();
    ipv6::Repr {
        src,
        dst: "fd00:2::2".parse().unwrap(),
        next_header: ip_proto::ICMPV6,
        payload_len: 1460,
        hop_limit: 64,
        traffic_class: 0,
        flow_label: 0,
    }
    .emit(&mut v6[room..])
    .unwrap();
    v6[room + 40] = 128;
    let r =
        icmp::packet_too_big_v6(&mut v6, room, 1500, 1443, "fd00:1::1".parse().unwrap()).unwrap();
    frames.push([&ethernet_header(0x86dd)[..], &v6[r]].concat());

    let dir = std::env::temp_dir().join(format!("xdpsec-mtu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("icmp.pcap");
    write_pcap(&pcap, &frames).unwrap();
    let lines = check_with_tshark(&pcap);
    std::fs::remove_dir_all(&dir).ok();
    // Fields: IPv4 header checksum status, ICMP type/code/MTU/checksum
    // status, ICMPv6 type/MTU/checksum status (Wireshark's status 1 is
    // good, 0 bad, 2 unverified).
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0], "1|3|4|1443|1|||", "{lines:?}");
    assert_eq!(lines[1], "|||||2|1443|1", "{lines:?}");
}

fn ethernet_header(ethertype: u16) -> [u8; 14] {
    let mut h = [0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0, 0];
    h[12..].copy_from_slice(&ethertype.to_be_bytes());
    h
}

fn check_with_tshark(pcap: &Path) -> Vec<String> {
    let args: Vec<String> = [
        "-o",
        "ip.check_checksum:TRUE",
        "-T",
        "fields",
        "-E",
        "separator=|",
        "-E",
        "occurrence=f",
        "-e",
        "ip.checksum.status",
        "-e",
        "icmp.type",
        "-e",
        "icmp.code",
        "-e",
        "icmp.mtu",
        "-e",
        "icmp.checksum.status",
        "-e",
        "icmpv6.type",
        "-e",
        "icmpv6.mtu",
        "-e",
        "icmpv6.checksum.status",
    ]
    .map(String::from)
    .to_vec();
    tshark(pcap, &args).unwrap_or_else(|e| panic!("{e}"))
}

/// strongSwan (charon with kernel-libipsec) on gateway B, xdpsec with its
/// own IKE daemon on A, which negotiates the CHILD_SA with charon (ESP in
/// UDP 4500, as libipsec always sends it). The underlay is routed through
/// a 1280-byte hop and both gateways' WAN links are 1280 bytes too: B's
/// kernel fragments the ESP-in-UDP datagrams libipsec sends (after
/// encryption, as a peer does), xdpsec reassembles them; xdpsec's own
/// replies go out in outer fragments that B's kernel reassembles for
/// libipsec.
#[test]
fn a_strongswan_peer_that_fragments_its_esp_talks_to_xdpsec() {
    let _serial = serial();
    let settle = Duration::from_secs(15);
    let bed = bed(TunnelOptions {
        ipv6: false,
        encap: Encapsulation::Udp,
        gateways: [GatewayKind::Xdpsec, GatewayKind::Strongswan],
        narrow_underlay_mtu: Some(1280),
        ike: Some(IkeOptions {
            initiator: Some(Side::A),
            wait_for_tunnel: true,
            ..IkeOptions::default()
        }),
        start_timeout: settle,
        ..TunnelOptions::default()
    });
    let logs = || format!("{}\n{}", diagnostics(&bed), bed.ike_logs());
    let charon_b = bed.charon(Side::B).expect("strongSwan on B");
    let child_b = charon_b
        .wait_child_installed(STRONGSWAN_CHILD, settle)
        .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    let child_a = bed
        .wait_for_child(Side::A, settle)
        .unwrap_or_else(|e| panic!("{e}"));
    // xdpsec's inbound SA is the one charon encrypts with.
    let spi_in = child_b.spi_out;
    assert_eq!(
        child_a["spi_in"]
            .as_str()
            .and_then(|hex| u32::from_str_radix(hex, 16).ok()),
        Some(spi_in),
        "{child_a}\n{child_b:?}"
    );

    // The router's port towards B is already 1280 bytes; the gateways'
    // own links are narrowed too, so each kernel (B's) and data plane
    // (A's) fragments what it sends rather than the router.
    let topo = bed.topology();
    for (ns, ifname) in [
        (&topo.gw_a.ns, topo.gw_a.wan.name.as_str()),
        (&topo.gw_b.ns, topo.gw_b.wan.name.as_str()),
    ] {
        ns.ip(["link", "set", "dev", ifname, "mtu", "1280"])
            .unwrap();
    }

    // 1400-byte pings from host B (libipsec's TUN MTU is 1400): each
    // request is one ESP packet of about 1470 bytes, fragmented by B's
    // kernel; each reply leaves xdpsec in outer fragments.
    let tap = bed.underlay();
    let pcap = bed.dir().join("strongswan-fragments.pcap");
    let filter = "ip[6:2] & 0x3fff != 0";
    let capture = Capture::start(&tap.ns, &tap.port_a, filter, &pcap, 100).unwrap();
    const COUNT: u32 = 5;
    let out = ping(
        &bed.host(Side::B).ns,
        &[
            "-c",
            &COUNT.to_string(),
            "-M",
            "dont",
            "-s",
            "1372",
            &bed.host_addr(Side::A, false).to_string(),
        ],
    );
    assert_eq!(received(&out), COUNT, "{out}\n{}", logs());
    let frames = capture.finish(4 * COUNT as usize).unwrap();
    let from_b = frames
        .iter()
        .filter(|f| f.len() > 30 && f[14 + 12..14 + 16] == [198, 18, 0, 2])
        .count();
    assert!(
        from_b >= 2 * COUNT as usize && frames.len() - from_b >= 2 * COUNT as usize,
        "{} fragments on the wire, {from_b} of them from strongSwan",
        frames.len()
    );
    assert!(total(&bed, Side::A, "events", "datagrams_reassembled") >= u64::from(COUNT));
    assert!(total(&bed, Side::A, "events", "outer_packets_fragmented") >= u64::from(COUNT));
    let list = bed.sa_list(Side::A).unwrap();
    let inbound = list["sas"]
        .as_array()
        .and_then(|sas| {
            sas.iter()
                .find(|s| s["spi"].as_u64() == Some(u64::from(spi_in)))
        })
        .cloned()
        .unwrap_or_else(|| panic!("no inbound SA in {list}"));
    assert!(
        inbound["counters"]["packets"].as_u64().unwrap_or(0) >= u64::from(COUNT),
        "{inbound}"
    );
    // charon B counted what went through its libipsec.
    let child_b = charon_b
        .wait_child_installed(STRONGSWAN_CHILD, settle)
        .unwrap();
    assert!(
        child_b.packets_out >= u64::from(COUNT) && child_b.packets_in >= u64::from(COUNT),
        "{child_b:?}"
    );
}

/// The same over an IPv6 underlay: outer IPv6 fragments (Fragment header)
/// leave one gateway, the other's XDP program steers them and its worker
/// reassembles them; the inner MTU is 40 - 20 bytes smaller.
#[test]
fn over_an_ipv6_underlay_outer_fragments_and_frag_needed_work_too() {
    let _serial = serial();
    let bed = bed(TunnelOptions {
        underlay_ipv6: true,
        ..full_size(Encapsulation::Esp)
    });
    let inner_mtu = 1500 - (overhead(Encapsulation::Esp) + 20);
    let host_a = &bed.host(Side::A).ns;
    let dst = bed.host_addr(Side::B, false);
    let tap = bed.underlay();
    let pcap = bed.dir().join("fragments-v6.pcap");
    let capture = Capture::start(&tap.ns, &tap.port_a, "ip6[6] == 44", &pcap, 100).unwrap();
    const COUNT: u32 = 3;
    let out = ping(
        host_a,
        &[
            "-c",
            &COUNT.to_string(),
            "-M",
            "dont",
            "-s",
            "1472",
            &dst.to_string(),
        ],
    );
    assert_eq!(received(&out), COUNT, "{out}\n{}", diagnostics(&bed));
    let frames = capture.finish(4 * COUNT as usize).unwrap();
    assert!(
        frames.len() >= 4 * COUNT as usize,
        "{} fragments",
        frames.len()
    );
    for side in Side::BOTH {
        assert!(total(&bed, side, "events", "datagrams_reassembled") >= u64::from(COUNT));
    }
    // tshark reassembles the IPv6 fragments and decrypts the ESP.
    let mut args = vec!["-o".to_string(), "esp.enable_encryption_decode:TRUE".into()];
    for sa in bed.sas() {
        args.push("-o".into());
        args.push(sa.tshark_uat());
    }
    args.extend(["-Y", "icmp.type == 8", "-T", "fields", "-e", "ip.len"].map(String::from));
    let lengths = tshark(&pcap, &args).unwrap();
    assert!(
        lengths
            .iter()
            .filter(|l| l.split(',').any(|v| v == "1500"))
            .count()
            >= COUNT as usize,
        "{lengths:?}"
    );

    let out = ping(
        host_a,
        &["-c", "2", "-M", "do", "-s", "1472", &dst.to_string()],
    );
    assert!(
        reported_mtus(&out).contains(&inner_mtu),
        "no frag needed with mtu {inner_mtu}: {out}\n{}",
        diagnostics(&bed)
    );
    let sa = bed.outbound_sa_info(Side::A, false).unwrap();
    assert_eq!(sa_mtu(&sa)["inner_mtu"], inner_mtu, "{sa}");
}
