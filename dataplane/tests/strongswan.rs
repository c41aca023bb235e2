//! strongSwan (charon with kernel-libipsec) on both gateways of the
//! standard topology, through the test bed's strongSwan fixture: the
//! tunnel comes up, hosts ping each other through it, the underlay carries
//! only ESP in UDP 4500, and swanctl's counters and the keys in charon's
//! log agree with what crossed the wire.
//!
//! Needs root, strongSwan, tcpdump and iputils' ping (`cargo xtask setup`).

use std::net::Ipv4Addr;
use xdpsec_testbed::tunnel::{GatewayKind, KeySize, Side, TunnelBed, TunnelOptions};
use xdpsec_testbed::Capture;

const UNDERLAY_FILTER: &str =
    "not arp and not igmp and not (ip6 and (src net fe80::/10 or dst net ff00::/8))";

fn strongswan_bed(key_size: KeySize) -> TunnelBed {
    TunnelBed::new(
        env!("CARGO_BIN_EXE_xdpsec"),
        TunnelOptions {
            ipv6: false,
            key_size,
            gateways: [GatewayKind::Strongswan; 2],
            ..TunnelOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Outer IPv4 source, destination, UDP ports and the first four bytes of
/// the UDP payload (the SPI of ESP, zero for IKE), or why not.
fn udp_in_ipv4(frame: &[u8]) -> Result<(Ipv4Addr, Ipv4Addr, u16, u16, u32), String> {
    let be16 = |b: &[u8], at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
    if frame.len() < 14 + 20 + 8 + 4 || be16(frame, 12) != 0x0800 {
        return Err("not IPv4".into());
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[9] != 17 {
        return Err(format!("IP protocol {}", ip[9]));
    }
    let udp = ip.get(ihl..).filter(|u| u.len() >= 12).ok_or("short UDP")?;
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let marker = u32::from_be_bytes([udp[8], udp[9], udp[10], udp[11]]);
    Ok((src, dst, be16(udp, 0), be16(udp, 2), marker))
}

#[test]
fn strongswan_to_strongswan_pings_through_esp_in_udp_only() {
    let bed = strongswan_bed(KeySize::Aes128);
    let charon_a = bed.charon(Side::A).expect("strongSwan on A");
    let charon_b = bed.charon(Side::B).expect("strongSwan on B");
    let sas = charon_a.list_sas().unwrap();
    assert_eq!(sas.len(), 1, "{sas:?}");
    assert_eq!(sas[0].state, "ESTABLISHED");
    assert!(sas[0].initiator, "A initiated: {sas:?}");
    let child_a = &sas[0].children[0];
    assert_eq!(child_a.encr_alg, "AES_GCM_16", "{child_a:?}");
    assert_eq!(child_a.encr_keysize, 128);
    assert!(child_a.encap, "libipsec always encapsulates in UDP");
    let child_b = charon_b
        .wait_child_installed("net", std::time::Duration::from_secs(1))
        .unwrap();
    assert_eq!(
        (child_b.spi_in, child_b.spi_out),
        (child_a.spi_out, child_a.spi_in)
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
    for (from, to) in [(Side::A, Side::B), (Side::B, Side::A)] {
        let stats = bed.ping(from, to, false, COUNT).unwrap();
        assert!(
            stats.all_answered_once(),
            "ping {from} -> {to}: {}\n{}",
            stats.output,
            bed.logs()
        );
    }
    let expected = 4 * usize::from(COUNT);
    let frames = capture.finish(expected).unwrap();
    assert_eq!(frames.len(), expected, "frames on the underlay");
    let (a, b) = (bed.gateway(Side::A).wan.ipv4, bed.gateway(Side::B).wan.ipv4);
    for frame in &frames {
        let (src, dst, sport, dport, spi) =
            udp_in_ipv4(frame).unwrap_or_else(|e| panic!("{e}: {frame:02x?}"));
        assert!(
            (src, dst) == (a, b) || (src, dst) == (b, a),
            "{src} -> {dst}"
        );
        assert_eq!((sport, dport), (4500, 4500));
        let want = if src == a {
            child_a.spi_out
        } else {
            child_a.spi_in
        };
        assert_eq!(spi, want, "ESP with the negotiated SPI, not IKE (0)");
    }

    // swanctl's counters saw the pings: A sent 2 x COUNT (its requests and
    // its replies) and received as many.
    let child_a = charon_a
        .wait_child_installed("net", std::time::Duration::from_secs(1))
        .unwrap();
    let n = u64::from(2 * COUNT);
    assert_eq!(
        (child_a.packets_out, child_a.packets_in),
        (n, n),
        "{child_a:?}"
    );

    // The keys in both logs mirror each other and belong to these SPIs.
    let keys_a = bed.strongswan_sas(Side::A).unwrap();
    let keys_b = bed.strongswan_sas(Side::B).unwrap();
    assert_eq!(keys_a[0].spi, child_a.spi_out);
    assert_eq!(
        keys_a[0].key_hex, keys_b[1].key_hex,
        "A's out key is B's in key"
    );
    assert_eq!(
        keys_a[1].key_hex, keys_b[0].key_hex,
        "A's in key is B's out key"
    );
    assert_eq!(keys_a[0].key_hex.len(), 2 * (16 + 4));
    assert_ne!(keys_a[0].key_hex, keys_a[1].key_hex);
}

#[test]
fn strongswan_rekeys_and_stops_by_pid() {
    let mut bed = strongswan_bed(KeySize::Aes256);
    let charon_a = bed.charon(Side::A).unwrap();
    let before = charon_a
        .wait_child_installed("net", std::time::Duration::from_secs(1))
        .unwrap();
    assert_eq!(before.encr_keysize, 256);
    charon_a.rekey_child("net").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let after = loop {
        let c = charon_a
            .wait_child_installed("net", std::time::Duration::from_secs(10))
            .unwrap();
        if c.unique_id != before.unique_id {
            break c;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no rekey\n{}",
            bed.logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_ne!(after.spi_out, before.spi_out);
    let stats = bed.ping(Side::A, Side::B, false, 3).unwrap();
    assert!(stats.all_answered_once(), "{}", stats.output);
    let keys = bed.charon(Side::A).unwrap().esp_keys();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_eq!(keys[1].spi_out, after.spi_out);
    assert_eq!(keys[1].key_out_hex.len(), 2 * (32 + 4));

    bed.charon(Side::A).unwrap().terminate_ike().unwrap();
    assert!(bed.charon(Side::A).unwrap().list_sas().unwrap().is_empty());

    let pid = bed.gateway_pid(Side::B).unwrap();
    bed.stop(Side::B).unwrap();
    assert!(!bed.is_running(Side::B));
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "charon (pid {pid}) still there after stop"
    );
}

/// The bed an IKEv2 interop test starts from: xdpsec on A without SAs
/// (an IKE daemon is to negotiate them), strongSwan on B with its config
/// loaded and nothing initiated.
#[test]
fn mixed_bed_starts_xdpsec_without_sas_beside_a_loaded_charon() {
    let bed = TunnelBed::new(
        env!("CARGO_BIN_EXE_xdpsec"),
        TunnelOptions {
            ipv6: false,
            gateways: [GatewayKind::Xdpsec, GatewayKind::Strongswan],
            ..TunnelOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(bed.sas().is_empty());
    let list = bed.sa_list(Side::A).unwrap();
    assert_eq!(list["sas"].as_array().map(Vec::len), Some(0), "{list}");
    let charon = bed.charon(Side::B).unwrap();
    assert!(charon.list_sas().unwrap().is_empty());
    let conns = charon.swanctl(&["--list-conns"]).unwrap();
    assert!(conns.contains("gw:") && conns.contains("net:"), "{conns}");
    assert!(bed.is_running(Side::A) && bed.is_running(Side::B));
}
