//! An independent check of the ESP encoding: packets that xdpsec
//! encapsulates are written to a pcap file and decrypted by tshark
//! (Wireshark's ESP dissector, which no one here wrote) given the keys, and
//! the fields it dissects must match what went in.
//!
//! Needs tshark; `cargo xtask test` installs it.

mod common;

use common::{encap, inner_addrs, inner_packet_with, keying_material, Family, InnerSpec, SaParams};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use xdpsec_dataplane::sa::{Cipher, OutboundSa};
use xdpsec_testbed::write_pcap;

const PACKETS_PER_CASE: usize = 3;
/// Ports no Wireshark dissector claims, so the inner payload stays raw data.
const INNER_SRC_PORT: u16 = 47001;
const INNER_DST_PORT: u16 = 47002;

/// One encapsulated packet and what tshark must find in it.
struct Expected {
    spi: u32,
    seq: u64,
    outer: (IpAddr, IpAddr),
    inner: (IpAddr, IpAddr),
    udp_encap: bool,
    payload: Vec<u8>,
}

struct Case {
    params: SaParams,
    inner: Family,
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut spi = 0x0100_0000;
    for outer in Family::BOTH {
        for inner in Family::BOTH {
            for udp in [None, common::nat_t()] {
                for cipher in [Cipher::AesGcm128, Cipher::AesGcm256] {
                    spi += 1;
                    let params = SaParams {
                        spi,
                        cipher,
                        seed: spi as u8,
                        outer,
                        udp,
                        ..SaParams::default()
                    };
                    cases.push(Case { params, inner });
                }
            }
        }
    }
    cases
}

fn ethernet_frame(outer_ip: &[u8]) -> Vec<u8> {
    let ethertype: u16 = if outer_ip[0] >> 4 == 6 {
        0x86dd
    } else {
        0x0800
    };
    let mut frame = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(outer_ip);
    frame
}

/// One line of Wireshark's `esp_sa` table, as in shared/peers/.
fn esp_sa_entry(sa: &OutboundSa, cipher: Cipher, seed: u8) -> String {
    let family = match sa.local() {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    };
    let algorithm = "AES-GCM with 16 octet ICV [RFC4106]";
    let mut key = String::new();
    for byte in keying_material(cipher, seed).iter() {
        write!(key, "{byte:02x}").unwrap();
    }
    format!(
        "uat:esp_sa:\"{family}\",\"{}\",\"{}\",\"{:#010x}\",\"{algorithm}\",\"0x{key}\",\"NULL\",\"\"",
        sa.local(),
        sa.remote(),
        sa.spi()
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn tshark_decrypts_what_xdpsec_encapsulates() {
    let tshark = Path::new("/usr/bin/tshark");
    assert!(
        tshark.exists(),
        "tshark is missing: `cargo xtask test` installs it (apt-get install tshark)"
    );

    let mut frames = Vec::new();
    let mut expected = Vec::new();
    let mut sa_entries = Vec::new();
    for case in cases() {
        let sa = case.params.outbound();
        sa_entries.push(esp_sa_entry(&sa, case.params.cipher, case.params.seed));
        let (src, dst) = inner_addrs(case.inner);
        for n in 0..PACKETS_PER_CASE {
            let spec = InnerSpec {
                src_port: INNER_SRC_PORT,
                dst_port: INNER_DST_PORT,
                ..InnerSpec::new(case.inner, 8 + 24 + n * 37)
            };
            let inner = inner_packet_with(spec);
            let udp_payload = inner[case.inner.ip_header_len() + 8..].to_vec();
            let (outer, out) = encap(&sa, &inner);
            frames.push(ethernet_frame(&outer));
            expected.push(Expected {
                spi: sa.spi(),
                seq: out.seq,
                outer: (sa.local(), sa.remote()),
                inner: (src, dst),
                udp_encap: case.params.udp.is_some(),
                payload: udp_payload,
            });
        }
    }

    let dir = std::env::temp_dir().join(format!("xdpsec-tshark-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("esp.pcap");
    write_pcap(&pcap, &frames).unwrap();

    let mut cmd = Command::new(tshark);
    cmd.arg("-n")
        .arg("-r")
        .arg(&pcap)
        .args(["-o", "esp.enable_encryption_decode:TRUE"]);
    for entry in &sa_entries {
        cmd.args(["-o", entry]);
    }
    cmd.args(["-T", "fields", "-E", "separator=|", "-E", "occurrence=a"]);
    for field in [
        "esp.spi",
        "esp.sequence",
        "ip.src",
        "ip.dst",
        "ipv6.src",
        "ipv6.dst",
        "udp.srcport",
        "udp.dstport",
        "data.data",
    ] {
        cmd.args(["-e", field]);
    }
    let output = cmd.output().expect("tshark runs");
    std::fs::remove_dir_all(&dir).ok();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), expected.len(), "tshark output:\n{stdout}");
    for (line, want) in lines.iter().zip(&expected) {
        let fields: Vec<&str> = line.split('|').collect();
        let [spi, seq, ip_src, ip_dst, ip6_src, ip6_dst, sport, dport, data] = fields[..] else {
            panic!("unexpected tshark line {line:?}");
        };
        assert_eq!(spi, format!("{:#010x}", want.spi), "SPI in {line:?}");
        assert_eq!(seq, want.seq.to_string(), "sequence number in {line:?}");

        // Outer then inner addresses, each under its own family's fields.
        let (mut v4_src, mut v4_dst, mut v6_src, mut v6_dst) = (vec![], vec![], vec![], vec![]);
        for (src, dst) in [want.outer, want.inner] {
            let (srcs, dsts) = match src {
                IpAddr::V4(_) => (&mut v4_src, &mut v4_dst),
                IpAddr::V6(_) => (&mut v6_src, &mut v6_dst),
            };
            srcs.push(src.to_string());
            dsts.push(dst.to_string());
        }
        assert_eq!(ip_src, v4_src.join(","), "IPv4 sources in {line:?}");
        assert_eq!(ip_dst, v4_dst.join(","), "IPv4 destinations in {line:?}");
        assert_eq!(ip6_src, v6_src.join(","), "IPv6 sources in {line:?}");
        assert_eq!(ip6_dst, v6_dst.join(","), "IPv6 destinations in {line:?}");

        let nat_t = if want.udp_encap { "4500," } else { "" };
        assert_eq!(
            sport,
            format!("{nat_t}{INNER_SRC_PORT}"),
            "UDP source ports in {line:?}"
        );
        assert_eq!(
            dport,
            format!("{nat_t}{INNER_DST_PORT}"),
            "UDP destination ports in {line:?}"
        );
        assert_eq!(data, hex(&want.payload), "decrypted payload in {line:?}");
    }
}
