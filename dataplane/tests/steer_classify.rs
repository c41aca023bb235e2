//! The XDP program `steer`, loaded into the kernel and run on crafted frames
//! through BPF_PROG_TEST_RUN (aya's `TestRun`), then attached to a veth in a
//! network namespace of its own and fed real UDP datagrams.
//!
//! Needs CAP_BPF and CAP_NET_ADMIN (root): `cargo xtask test` runs it so.
//! Without them the tests fail, saying so; they never skip.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use aya::programs::ProgramError;
use aya::{TestRun, TestRunOptions};
use xdpsec_dataplane::steer::{AttachMode, ClassCounters, Steer, SteerError};
use xdpsec_ebpf_common::Class;

const XDP_PASS: u32 = 2;

fn load() -> Steer {
    Steer::load().unwrap_or_else(|err| {
        panic!(
            "cannot load the XDP program: {err}\n(these tests need root, or CAP_BPF + \
             CAP_NET_ADMIN; run them through `cargo xtask test`)"
        )
    })
}

// ---- frame builders -------------------------------------------------------

const MAC_DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const MAC_SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_8021Q: u16 = 0x8100;

/// An ESP header and a little ciphertext: SPI 0x00001001, sequence 1.
const ESP: &[u8] = &[
    0, 0, 0x10, 0x01, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0,
];

fn eth(ether_type: u16) -> Vec<u8> {
    let mut f = Vec::from(MAC_DST);
    f.extend_from_slice(&MAC_SRC);
    f.extend_from_slice(&ether_type.to_be_bytes());
    f
}

fn vlan(vid: u16, ether_type: u16) -> Vec<u8> {
    let mut f = eth(ETH_P_8021Q);
    f.extend_from_slice(&vid.to_be_bytes());
    f.extend_from_slice(&ether_type.to_be_bytes());
    f
}

/// An IPv4 header with `options` bytes of options (a multiple of 4) for a
/// payload of `payload_len` bytes. Addresses from 198.18.0.0/15.
fn ipv4(proto: u8, options: usize, payload_len: usize) -> Vec<u8> {
    assert_eq!(options % 4, 0);
    let hlen = 20 + options;
    let total = u16::try_from(hlen + payload_len).unwrap();
    let mut h = vec![0x40 | u8::try_from(hlen / 4).unwrap(), 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]); // id, DF, ttl, proto, csum
    h.extend_from_slice(&[198, 18, 0, 2, 198, 18, 0, 1]);
    // Options: NOPs then End of Option List, as a sender would pad them.
    h.extend(std::iter::repeat_n(1u8, options.saturating_sub(1)));
    if options > 0 {
        h.push(0);
    }
    h
}

fn ipv6(next_header: u8, payload_len: usize) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&u16::try_from(payload_len).unwrap().to_be_bytes());
    h.extend_from_slice(&[next_header, 64]);
    h.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    h.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    h
}

fn udp(src: u16, dst: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::from(src.to_be_bytes());
    h.extend_from_slice(&dst.to_be_bytes());
    h.extend_from_slice(&u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(payload);
    h
}

fn v4_frame(l2: Vec<u8>, proto: u8, options: usize, l4: &[u8]) -> Vec<u8> {
    [l2, ipv4(proto, options, l4.len()), l4.to_vec()].concat()
}

/// An IKE_SA_INIT-sized header: initiator SPI, zero responder SPI, ...
fn ike_header() -> Vec<u8> {
    let mut m = vec![0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];
    m.extend_from_slice(&[0; 8]);
    m.extend_from_slice(&[33, 0x20, 34, 0x08, 0, 0, 0, 0, 0, 0, 0, 28]);
    m
}

fn cases() -> Vec<(&'static str, Vec<u8>, Class)> {
    let tcp_syn = [
        0xc0, 0x00, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
    ];
    let arp = [
        0, 1, 8, 0, 6, 4, 0, 1, 2, 0, 0, 0, 0, 2, 198, 18, 0, 2, 0, 0, 0, 0, 0, 0, 198, 18, 0, 1,
    ];
    let ike = ike_header();
    let ike_on_4500 = [&[0u8; 4][..], &ike].concat();

    let mut truncated_v4 = v4_frame(eth(ETH_P_IP), 50, 0, ESP);
    truncated_v4.truncate(14 + 12); // IP header cut before the addresses
    let mut truncated_options = v4_frame(eth(ETH_P_IP), 50, 16, ESP);
    truncated_options.truncate(14 + 28); // IHL says 36 bytes
    let mut truncated_v6 = [eth(ETH_P_IPV6), ipv6(50, ESP.len()), ESP.to_vec()].concat();
    truncated_v6.truncate(14 + 39);
    let mut truncated_udp = v4_frame(eth(ETH_P_IP), 17, 0, &udp(4500, 4500, ESP));
    truncated_udp.truncate(14 + 20 + 8 + 3); // SPI cut short

    vec![
        (
            "IPv4 proto 50",
            v4_frame(eth(ETH_P_IP), 50, 0, ESP),
            Class::Esp,
        ),
        (
            "IPv6 next header 50",
            [eth(ETH_P_IPV6), ipv6(50, ESP.len()), ESP.to_vec()].concat(),
            Class::Esp,
        ),
        (
            "IPv4 with 12 bytes of options, proto 50",
            v4_frame(eth(ETH_P_IP), 50, 12, ESP),
            Class::Esp,
        ),
        (
            "IPv4 with 40 bytes of options (IHL 15), proto 50",
            v4_frame(eth(ETH_P_IP), 50, 40, ESP),
            Class::Esp,
        ),
        (
            "802.1Q-tagged IPv4 proto 50",
            v4_frame(vlan(7, ETH_P_IP), 50, 0, ESP),
            Class::Esp,
        ),
        (
            "UDP/4500, non-zero SPI",
            v4_frame(eth(ETH_P_IP), 17, 0, &udp(4500, 4500, ESP)),
            Class::EspInUdp,
        ),
        (
            "802.1Q-tagged IPv4 with options, UDP/4500 ESP",
            v4_frame(vlan(7, ETH_P_IP), 17, 8, &udp(4500, 4500, ESP)),
            Class::EspInUdp,
        ),
        (
            "IPv6 UDP/4500 ESP",
            [
                eth(ETH_P_IPV6),
                ipv6(17, 8 + ESP.len()),
                udp(4500, 4500, ESP),
            ]
            .concat(),
            Class::EspInUdp,
        ),
        (
            "UDP/4500, zero non-ESP marker (IKE)",
            v4_frame(eth(ETH_P_IP), 17, 0, &udp(4500, 4500, &ike_on_4500)),
            Class::Ike,
        ),
        (
            "UDP/500 (IKE)",
            v4_frame(eth(ETH_P_IP), 17, 0, &udp(500, 500, &ike)),
            Class::Ike,
        ),
        (
            "IPv6 UDP/500 (IKE)",
            [
                eth(ETH_P_IPV6),
                ipv6(17, 8 + ike.len()),
                udp(500, 500, &ike),
            ]
            .concat(),
            Class::Ike,
        ),
        (
            "UDP/4500 NAT keepalive (one 0xff byte)",
            v4_frame(eth(ETH_P_IP), 17, 0, &udp(4500, 4500, &[0xff])),
            Class::Other,
        ),
        (
            "UDP from port 500 to port 53",
            v4_frame(eth(ETH_P_IP), 17, 0, &udp(500, 53, &[0; 12])),
            Class::Other,
        ),
        ("TCP", v4_frame(eth(ETH_P_IP), 6, 0, &tcp_syn), Class::Other),
        ("ARP", [eth(ETH_P_ARP), arp.to_vec()].concat(), Class::Other),
        ("truncated IPv4 header", truncated_v4, Class::Other),
        (
            "IPv4 options beyond the frame end",
            truncated_options,
            Class::Other,
        ),
        ("truncated IPv6 header", truncated_v6, Class::Other),
        ("UDP/4500 with 3 payload bytes", truncated_udp, Class::Other),
        ("Ethernet header only", eth(ETH_P_IP), Class::Other),
        (
            "IPv6 with an extension header before ESP",
            {
                let hop_by_hop = [50, 0, 1, 4, 0, 0, 0, 0];
                [
                    eth(ETH_P_IPV6),
                    ipv6(0, 8 + ESP.len()),
                    hop_by_hop.to_vec(),
                    ESP.to_vec(),
                ]
                .concat()
            },
            Class::Other,
        ),
        (
            "IPv4 non-first fragment, proto 17",
            {
                let mut f = v4_frame(eth(ETH_P_IP), 17, 0, &udp(4500, 4500, ESP));
                f[14 + 6] = 0x00;
                f[14 + 7] = 0x10; // fragment offset 16 (x 8 bytes)
                f
            },
            Class::Other,
        ),
    ]
}

// ---- tests --------------------------------------------------------------------

#[test]
fn classifies_crafted_frames_through_prog_test_run() {
    let steer = load();
    let program = steer.program();
    let id = program.info().map(|info| info.id()).unwrap_or_default();

    for (name, frame, want) in cases() {
        let before = steer.counters().expect("read counters");
        let mut out = vec![0u8; frame.len() + 256];
        let run = program
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                data_out: Some(&mut out),
                repeat: 1,
                ..Default::default()
            })
            .unwrap_or_else(|err| panic!("BPF_PROG_TEST_RUN of program id {id} on {name}: {err}"));
        assert_eq!(run.return_value, XDP_PASS, "{name}: verdict");
        assert_eq!(
            &out[..run.data_size_out as usize],
            &frame[..],
            "{name}: the program must not modify the frame"
        );

        let delta = steer.counters().expect("read counters").since(&before);
        for (class, n) in delta.iter() {
            let expected = u64::from(class == want);
            assert_eq!(
                n,
                expected,
                "{name}: counter {} advanced by {n}, expected {expected} (want class {})",
                class.name(),
                want.name()
            );
        }
    }
}

#[test]
fn attaches_natively_to_a_veth_and_counts_real_traffic() {
    let steer = load();
    let mut steer = steer;

    // A network namespace for this thread only, removed on drop.
    let _netns = aya::test_helpers::NetNsGuard::new()
        .unwrap_or_else(|err| panic!("cannot create a network namespace (needs root): {err}"));
    ip(&[
        "link",
        "add",
        "xs0",
        "address",
        "02:00:00:00:00:01",
        "type",
        "veth",
        "peer",
        "name",
        "xs1",
        "address",
        "02:00:00:00:00:02",
    ]);
    ip(&["link", "set", "xs0", "up"]);
    ip(&["link", "set", "xs1", "up"]);
    ip(&["addr", "add", "198.18.0.2/30", "dev", "xs1"]);
    ip(&[
        "neigh",
        "add",
        "198.18.0.1",
        "lladdr",
        "02:00:00:00:00:01",
        "dev",
        "xs1",
        "nud",
        "permanent",
    ]);

    match steer.attach("xs-missing", AttachMode::Native) {
        Err(SteerError::Attach {
            source: ProgramError::UnknownInterface { .. },
            ..
        }) => {}
        other => panic!("attach to a missing interface: {other:?}"),
    }

    steer
        .attach("xs0", AttachMode::Native)
        .unwrap_or_else(|err| panic!("{err}"));
    assert!(matches!(
        steer.attach("xs0", AttachMode::Native),
        Err(SteerError::AlreadyAttached(_))
    ));
    let link = ip(&["-d", "link", "show", "dev", "xs0"]);
    assert!(link.contains("prog/xdp"), "no XDP program on xs0:\n{link}");
    assert!(!link.contains("xdpgeneric"), "not in native mode:\n{link}");
    assert_eq!(steer.attached().collect::<Vec<_>>(), ["xs0"]);

    // Out of xs1, into xs0, through the program (and then dropped by the
    // kernel: xs0 has no address).
    let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::new(198, 18, 0, 2), 0)).unwrap();
    let peer = Ipv4Addr::new(198, 18, 0, 1);
    let before = steer.counters().unwrap();
    sock.send_to(&ike_header(), SocketAddrV4::new(peer, 500))
        .unwrap();
    sock.send_to(
        &[&[0u8; 4][..], &ike_header()].concat(),
        SocketAddrV4::new(peer, 4500),
    )
    .unwrap();
    sock.send_to(ESP, SocketAddrV4::new(peer, 4500)).unwrap();
    let delta = wait_for(&steer, &before, |d| {
        d.get(Class::Ike) >= 2 && d.get(Class::EspInUdp) >= 1
    });
    assert_eq!(delta.get(Class::Ike), 2, "{delta:?}");
    assert_eq!(delta.get(Class::EspInUdp), 1, "{delta:?}");
    assert_eq!(delta.get(Class::Esp), 0, "{delta:?}");

    steer.detach("xs0").unwrap_or_else(|err| panic!("{err}"));
    let link = ip(&["-d", "link", "show", "dev", "xs0"]);
    assert!(
        !link.contains("prog/xdp"),
        "XDP program still on xs0:\n{link}"
    );
    assert!(matches!(
        steer.detach("xs0"),
        Err(SteerError::NotAttached(_))
    ));

    // Generic mode only when asked for.
    steer
        .attach("xs0", AttachMode::Generic)
        .unwrap_or_else(|err| panic!("{err}"));
    let link = ip(&["-d", "link", "show", "dev", "xs0"]);
    assert!(link.contains("xdpgeneric"), "not in generic mode:\n{link}");

    // Dropping the loader detaches the program.
    drop(steer);
    let link = ip(&["-d", "link", "show", "dev", "xs0"]);
    assert!(
        !link.contains("prog/xdp"),
        "XDP program left on xs0:\n{link}"
    );
}

/// Runs `ip ARGS` in this thread's network namespace; its stdout.
fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|err| panic!("cannot run `ip` (iproute2): {err}"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls the counters (veth runs XDP in its NAPI poll, right after the send)
/// until `done` holds or a second has passed; the last difference.
fn wait_for(
    steer: &Steer,
    before: &ClassCounters,
    done: impl Fn(&ClassCounters) -> bool,
) -> ClassCounters {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let delta = steer.counters().unwrap().since(before);
        if done(&delta) || Instant::now() > deadline {
            return delta;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
