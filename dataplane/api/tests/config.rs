//! The static config: the example parses, and each broken config yields an
//! error naming the file, the field and what is wrong.

use std::path::Path;

use xdpsec_api::config::{Role, XdpBind, XdpMode, DEFAULT_API_SOCKET};
use xdpsec_api::{sample_config, Direction, PolicyAction, StaticConfig};

const FILE: &str = "/etc/xdpsec.toml";

const BASE: &str = r#"
[dataplane]
api_socket = "/run/xdpsec/api.sock"
workers = 2
cpus = [2, 3]

[[interface]]
name = "lan0"
role = "inside"

[[interface]]
name = "wan0"
role = "outside"
queues = 4

[[sa]]
spi = 0x1001
direction = "out"
key = "000102030405060708090a0b0c0d0e0f10111213"
tunnel_local = "198.18.0.1"
tunnel_remote = "198.18.0.2"
selectors = [{ local = "10.1.0.0/24", remote = "10.2.0.0/24" }]

[[sa]]
spi = 0x2001
direction = "in"
key = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fdeadbeef"
replay_window = 1024
tunnel_local = "198.18.0.1"
tunnel_remote = "198.18.0.2"
selectors = [
    { local = "10.1.0.0/24", remote = "10.2.0.0/24", protocol = "udp", remote_ports = "1000-2000" },
]

[sa.lifetime]
soft_bytes = 1000
hard_bytes = 2000

[[policy]]
local = "10.1.0.0/24"
remote = "10.2.0.0/24"
direction = "out"
action = "protect"
spi = 0x1001
"#;

#[test]
fn base_config_parses() {
    let cfg = StaticConfig::parse(BASE, FILE).unwrap();
    assert_eq!(cfg.dataplane.worker_count(), 2);
    assert_eq!(cfg.interfaces[1].queues, Some(4));
    assert_eq!(cfg.interfaces[0].queues, None, "every queue by default");
    assert_eq!(cfg.sas.len(), 2);
    assert_eq!(cfg.sas[0].replay_window, 1024, "default window");
    assert_eq!(cfg.sas[1].key.bits(), 256);
    assert_eq!(cfg.sas[1].lifetime.hard_bytes, Some(2000));
    assert_eq!(
        cfg.sas[1].selectors[0]
            .remote_ports
            .map(|p| (p.start(), p.end())),
        Some((1000, 2000))
    );
    assert_eq!(cfg.policies[0].spi, Some(0x1001));
}

#[test]
fn sample_config_parses() {
    let on_disk = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/static-tunnel.toml"),
    )
    .unwrap();
    assert_eq!(sample_config(), on_disk);
    let cfg = StaticConfig::parse(sample_config(), "static-tunnel.toml").unwrap();
    assert_eq!(cfg.dataplane.api_socket, Path::new(DEFAULT_API_SOCKET));
    assert_eq!(cfg.dataplane.worker_count(), 1);
    assert_eq!(cfg.dataplane.state_dir, Path::new("/var/lib/xdpsec"));
    assert_eq!(
        cfg.dataplane.guard_on_stop,
        xdpsec_api::config::GuardOnStop::Keep
    );
    assert!(cfg.interfaces.iter().all(|i| i.queues.is_none()));
    assert_eq!(cfg.dataplane.xdp_mode, XdpMode::Native);
    let roles: Vec<Role> = cfg.interfaces.iter().map(|i| i.role).collect();
    assert_eq!(roles, vec![Role::Inside, Role::Outside]);
    assert_eq!(cfg.sas.len(), 2);
    let out = &cfg.sas[0];
    assert_eq!((out.spi, out.direction), (0x1001, Direction::Out));
    assert_eq!(out.key.bits(), 256);
    assert!(out.esn);
    assert_eq!(out.selectors.len(), 2);
    let inb = &cfg.sas[1];
    assert_eq!((inb.spi, inb.direction), (0x2001, Direction::In));
    assert_eq!(inb.key.bits(), 128);
    assert_eq!(inb.replay_window, 2048);
    assert_eq!(inb.lifetime.hard_packets, Some(1_000_000_000));
    // Both families both ways (dataplane/tests/examples.rs pings over them).
    assert_eq!(inb.selectors.len(), 2);
    assert!(inb.selectors.iter().all(|s| s.protocol.is_none()));
    assert_eq!(cfg.policies.len(), 5);
    assert_eq!(cfg.policies[4].action, PolicyAction::Drop);
    // And the whole file is also valid as API input.
    let json = serde_json::to_string(&cfg).unwrap();
    let back: StaticConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back, cfg);
}

#[test]
fn minimal_one_armed_config_uses_defaults() {
    let cfg =
        StaticConfig::parse("[[interface]]\nname = \"eth0\"\nrole = \"both\"\n", FILE).unwrap();
    assert_eq!(cfg.dataplane.api_socket, Path::new(DEFAULT_API_SOCKET));
    assert_eq!(cfg.dataplane.worker_count(), 1);
    assert!(!cfg.dataplane.busy_poll);
    assert!(cfg.dataplane.mss_clamp, "MSS clamping is on by default");
    assert!(cfg.dataplane.outer_fragmentation);
    assert_eq!(cfg.dataplane.pmtu_timeout_secs, 600, "10 minutes");
    assert_eq!(cfg.dataplane.icmp_rate, 100);
    assert_eq!(cfg.dataplane.reassembly_slots, 64);
    assert_eq!(cfg.dataplane.reassembly_timeout_ms, 2000);
    assert_eq!(
        cfg.dataplane.busy_poll_usecs, 0,
        "the kernel's busy polling is opt-in"
    );
    assert_eq!(cfg.dataplane.busy_poll_budget, 64);
    assert_eq!(
        [
            cfg.dataplane.rx_ring_size,
            cfg.dataplane.tx_ring_size,
            cfg.dataplane.fill_ring_size,
            cfg.dataplane.completion_ring_size,
        ],
        [2048; 4]
    );
    assert_eq!(cfg.dataplane.frame_size, 2048);
    assert_eq!(cfg.dataplane.umem_frames, None);
    assert_eq!(cfg.interfaces[0].xdp_bind, XdpBind::Auto);
    assert!(cfg.sas.is_empty() && cfg.policies.is_empty());
    let off = StaticConfig::parse(
        "[dataplane]\nmss_clamp = false\n\n[[interface]]\nname = \"eth0\"\nrole = \"both\"\n",
        FILE,
    )
    .unwrap();
    assert!(!off.dataplane.mss_clamp);
}

#[test]
fn nic_knobs_parse_and_round_trip() {
    let text = "[dataplane]\nbusy_poll = true\nbusy_poll_usecs = 50\nbusy_poll_budget = 256\n\
                rx_ring_size = 4096\ntx_ring_size = 1024\nfill_ring_size = 8192\n\
                completion_ring_size = 512\nframe_size = 4096\numem_frames = 16384\n\n\
                [[interface]]\nname = \"eth0\"\nrole = \"outside\"\nxdp_bind = \"zerocopy\"\n\n\
                [[interface]]\nname = \"lan0\"\nrole = \"inside\"\nxdp_bind = \"copy\"\n\
                rx_ring_size = 256\n";
    let cfg = StaticConfig::parse(text, FILE).unwrap();
    let dp = &cfg.dataplane;
    assert_eq!((dp.busy_poll_usecs, dp.busy_poll_budget), (50, 256));
    assert_eq!(
        (
            dp.rx_ring_size,
            dp.tx_ring_size,
            dp.fill_ring_size,
            dp.completion_ring_size
        ),
        (4096, 1024, 8192, 512)
    );
    assert_eq!((dp.frame_size, dp.umem_frames), (4096, Some(16384)));
    assert_eq!(cfg.interfaces[0].xdp_bind, XdpBind::Zerocopy);
    assert_eq!(cfg.interfaces[1].xdp_bind, XdpBind::Copy);
    assert_eq!(
        (
            cfg.interfaces[1].rx_ring_size,
            cfg.interfaces[1].tx_ring_size
        ),
        (Some(256), None)
    );
    assert_eq!(cfg.interfaces[0].rx_ring_size, None);
    let again = toml::to_string(&cfg).unwrap();
    assert_eq!(StaticConfig::parse(&again, FILE).unwrap(), cfg);
}

struct Case {
    name: &'static str,
    /// Replace the first `from` of BASE by `to`.
    from: &'static str,
    to: &'static str,
    field: &'static str,
    reason: &'static str,
    /// The error's line is the line where `to` starts.
    at_change: bool,
}

const CASES: &[Case] = &[
    Case {
        name: "bad hex",
        from: "1e1fdeadbeef",
        to: "1e1fdeadbeeg",
        field: "sa[1].key",
        reason: "invalid hex digit at position 71",
        at_change: true,
    },
    Case {
        name: "wrong key length",
        from: "1a1b1c1d1e1fdeadbeef\"",
        to: "\"",
        field: "sa[1].key",
        reason: "expected 40 or 72 hex characters (AES-GCM-128/256 key + 4-byte salt), got 52",
        at_change: false,
    },
    Case {
        name: "key with odd length",
        from: "0e0f10111213\"",
        to: "0e0f101112\"",
        field: "sa[0].key",
        reason: "expected 40 or 72 hex characters (AES-GCM-128/256 key + 4-byte salt), got 38",
        at_change: false,
    },
    Case {
        name: "SPI 0",
        from: "spi = 0x1001\ndirection",
        to: "spi = 0\ndirection",
        field: "sa[0].spi",
        reason: "SPI 0 is not allowed",
        at_change: true,
    },
    Case {
        name: "SPI 200",
        from: "spi = 0x2001",
        to: "spi = 200",
        field: "sa[1].spi",
        reason: "SPI 200 is in the range 1-255 that RFC 4303 reserves",
        at_change: true,
    },
    Case {
        name: "duplicate SPI",
        from: "spi = 0x2001\ndirection = \"in\"",
        to: "spi = 0x1001\ndirection = \"out\"",
        field: "sa[1].spi",
        reason: "already used by sa[0]",
        at_change: true,
    },
    Case {
        name: "window 16",
        from: "replay_window = 1024",
        to: "replay_window = 16",
        field: "sa[1].replay_window",
        reason: "16 is outside 32..=8192",
        at_change: true,
    },
    Case {
        name: "window 10000",
        from: "replay_window = 1024",
        to: "replay_window = 10000",
        field: "sa[1].replay_window",
        reason: "10000 is outside 32..=8192",
        at_change: true,
    },
    Case {
        name: "soft > hard",
        from: "soft_bytes = 1000",
        to: "soft_bytes = 3000",
        field: "sa[1].lifetime.soft_bytes",
        reason: "soft limit 3000 exceeds hard_bytes 2000",
        at_change: true,
    },
    Case {
        name: "unknown field in sa",
        from: "replay_window = 1024\n",
        to: "colour = \"blue\"\n",
        field: "sa[1].colour",
        reason: "unknown field `colour`",
        at_change: true,
    },
    Case {
        name: "unknown field in dataplane",
        from: "workers = 2",
        to: "wrokers = 2",
        field: "dataplane.wrokers",
        reason: "unknown field `wrokers`",
        at_change: true,
    },
    Case {
        name: "unknown table",
        from: "[[policy]]",
        to: "[[polcy]]",
        field: "polcy[0]",
        reason: "unknown field `polcy`",
        at_change: true,
    },
    Case {
        name: "bad prefix",
        from: "selectors = [{ local = \"10.1.0.0/24\"",
        to: "selectors = [{ local = \"10.1.0.0/33\"",
        field: "sa[0].selectors[0].local",
        reason: "prefix length 33 exceeds 32 for IPv4",
        at_change: true,
    },
    Case {
        name: "prefix with host bits",
        from: "remote = \"10.2.0.0/24\"\ndirection",
        to: "remote = \"10.2.0.9/24\"\ndirection",
        field: "policy[0].remote",
        reason: "did you mean 10.2.0.0/24",
        at_change: true,
    },
    Case {
        name: "policy naming a missing SA",
        from: "action = \"protect\"\nspi = 0x1001",
        to: "action = \"protect\"\nspi = 0x1002",
        field: "policy[0].spi",
        reason: "no [[sa]] has spi = 0x1002 (4098) and direction = \"out\"",
        at_change: true,
    },
    Case {
        name: "policy naming an SA of the other direction",
        from: "direction = \"out\"\naction",
        to: "direction = \"in\"\naction",
        field: "policy[0].spi",
        reason: "no [[sa]] has spi = 0x1001 (4097) and direction = \"in\"",
        at_change: false,
    },
    Case {
        name: "policy outside the SA's selectors",
        from: "remote = \"10.2.0.0/24\"\ndirection",
        to: "remote = \"10.3.0.0/24\"\ndirection",
        field: "policy[0]",
        reason: "not inside the traffic selectors of sa[0]",
        at_change: false,
    },
    Case {
        name: "protect without spi",
        from: "action = \"protect\"\nspi = 0x1001\n",
        to: "action = \"protect\"\n",
        field: "policy[0].spi",
        reason: "action \"protect\" needs the SPI",
        at_change: false,
    },
    Case {
        name: "no outside interface",
        from: "role = \"outside\"",
        to: "role = \"inside\"",
        field: "interface",
        reason: "no interface has role = \"outside\"",
        at_change: false,
    },
    Case {
        name: "duplicate interface",
        from: "name = \"wan0\"",
        to: "name = \"lan0\"",
        field: "interface[1].name",
        reason: "\"lan0\" is already listed at interface[0]",
        at_change: true,
    },
    Case {
        name: "interface name too long",
        from: "name = \"wan0\"",
        to: "name = \"a-very-long-interface\"",
        field: "interface[1].name",
        reason: "not a valid interface name",
        at_change: true,
    },
    Case {
        name: "bad role",
        from: "role = \"outside\"",
        to: "role = \"outdoors\"",
        field: "interface[1].role",
        reason: "unknown variant `outdoors`",
        at_change: true,
    },
    Case {
        name: "path MTU that never holds",
        from: "workers = 2",
        to: "workers = 2\npmtu_timeout_secs = 0",
        field: "dataplane.pmtu_timeout_secs",
        reason: "0 is outside 1..=86400",
        at_change: true,
    },
    Case {
        name: "reassembly table too large",
        from: "workers = 2",
        to: "workers = 2\nreassembly_slots = 100000",
        field: "dataplane.reassembly_slots",
        reason: "100000 is outside 1..=4096",
        at_change: true,
    },
    Case {
        name: "ring size not a power of two",
        from: "workers = 2",
        to: "workers = 2\nrx_ring_size = 1000",
        field: "dataplane.rx_ring_size",
        reason: "1000 is not a power of two in 64..=32768",
        at_change: true,
    },
    Case {
        name: "fill ring too large",
        from: "workers = 2",
        to: "workers = 2\nfill_ring_size = 65536",
        field: "dataplane.fill_ring_size",
        reason: "65536 is not a power of two in 64..=32768",
        at_change: true,
    },
    Case {
        name: "an interface's ring not a power of two",
        from: "role = \"outside\"",
        to: "role = \"outside\"\ntx_ring_size = 3000",
        field: "interface[1].tx_ring_size",
        reason: "3000 is not a power of two in 64..=32768",
        at_change: false,
    },
    Case {
        name: "odd frame size",
        from: "workers = 2",
        to: "workers = 2\nframe_size = 3000",
        field: "dataplane.frame_size",
        reason: "3000 bytes; a UMEM frame is 2048 or 4096 bytes",
        at_change: true,
    },
    Case {
        name: "UMEM smaller than its fill ring",
        from: "workers = 2",
        to: "workers = 2\nfill_ring_size = 4096\numem_frames = 1024",
        field: "dataplane.umem_frames",
        reason: "1024 frames cannot stock half the fill ring (2048)",
        at_change: false,
    },
    Case {
        name: "busy poll budget out of range",
        from: "workers = 2",
        to: "workers = 2\nbusy_poll = true\nbusy_poll_usecs = 50\nbusy_poll_budget = 0",
        field: "dataplane.busy_poll_budget",
        reason: "0 is outside 1..=65535",
        at_change: false,
    },
    Case {
        name: "kernel busy polling without a spinning worker",
        from: "workers = 2",
        to: "workers = 2\nbusy_poll_usecs = 50",
        field: "dataplane.busy_poll_usecs",
        reason: "set busy_poll = true",
        at_change: true,
    },
    Case {
        name: "bad bind mode",
        from: "role = \"outside\"",
        to: "role = \"outside\"\nxdp_bind = \"zero-copy\"",
        field: "interface[1].xdp_bind",
        reason: "unknown variant `zero-copy`, expected one of `auto`, `zerocopy`, `copy`",
        at_change: true,
    },
    Case {
        name: "workers and cpus disagree",
        from: "workers = 2",
        to: "workers = 3",
        field: "dataplane.workers",
        reason: "3 workers but cpus lists 2 CPUs",
        at_change: true,
    },
    Case {
        name: "relative socket path",
        from: "\"/run/xdpsec/api.sock\"",
        to: "\"api.sock\"",
        field: "dataplane.api_socket",
        reason: "not an absolute path",
        at_change: true,
    },
    Case {
        name: "bad tunnel address",
        from: "tunnel_remote = \"198.18.0.2\"",
        to: "tunnel_remote = \"198.18.0.300\"",
        field: "sa[0].tunnel_remote",
        reason: "\"198.18.0.300\" is not an IPv4 or IPv6 address",
        at_change: true,
    },
    Case {
        name: "mixed address families",
        from: "tunnel_remote = \"198.18.0.2\"",
        to: "tunnel_remote = \"fd00::2\"",
        field: "sa[0].tunnel_remote",
        reason: "address family",
        at_change: true,
    },
    Case {
        name: "bad direction",
        from: "direction = \"in\"",
        to: "direction = \"sideways\"",
        field: "sa[1].direction",
        reason: "unknown variant `sideways`, expected `in` or `out`",
        at_change: true,
    },
    Case {
        name: "SPI of the wrong type",
        from: "spi = 0x2001",
        to: "spi = \"0x2001\"",
        field: "sa[1].spi",
        reason: "invalid type: string \"0x2001\", expected u32",
        at_change: true,
    },
    Case {
        name: "negative SPI",
        from: "spi = 0x2001",
        to: "spi = -5",
        field: "sa[1].spi",
        reason: "expected u32",
        at_change: true,
    },
    Case {
        name: "missing key",
        from: "key = \"000102030405060708090a0b0c0d0e0f10111213\"\n",
        to: "",
        field: "sa[0]",
        reason: "missing field `key`",
        at_change: false,
    },
    Case {
        name: "bad port range",
        from: "remote_ports = \"1000-2000\"",
        to: "remote_ports = \"2000-1000\"",
        field: "sa[1].selectors[0].remote_ports",
        reason: "start is greater than end",
        at_change: true,
    },
    Case {
        name: "ports without protocol",
        from: "protocol = \"udp\", ",
        to: "",
        field: "sa[1].selectors[0].remote_ports",
        reason: "ports need a protocol",
        at_change: false,
    },
    Case {
        name: "TOML syntax error",
        from: "tunnel_local = \"198.18.0.1\"\ntunnel_remote = \"198.18.0.2\"\nselectors = [{",
        to: "tunnel_local = \"198.18.0.1\" 5\ntunnel_remote = \"198.18.0.2\"\nselectors = [{",
        field: "sa[0].tunnel_local",
        reason: "TOML syntax error",
        at_change: true,
    },
    Case {
        name: "duplicate key",
        from: "replay_window = 1024\n",
        to: "replay_window = 1024\nreplay_window = 64\n",
        field: "sa[1].replay_window",
        reason: "TOML syntax error: duplicate key",
        at_change: false,
    },
];

/// The 1-based number of the line that starts after `before`.
fn line_of(before: &str) -> usize {
    before.matches('\n').count() + 1
}

#[test]
fn broken_configs_name_file_field_and_reason() {
    assert!(CASES.len() >= 12);
    let mut failures = Vec::new();
    for case in CASES {
        assert!(
            BASE.contains(case.from),
            "{}: {:?} not in BASE",
            case.name,
            case.from
        );
        let text = BASE.replacen(case.from, case.to, 1);
        let err = match StaticConfig::parse(&text, FILE) {
            Ok(_) => {
                failures.push(format!("{}: accepted", case.name));
                continue;
            }
            Err(e) => e,
        };
        let msg = err.to_string();
        let expected_start = format!("config {FILE}: {}: ", case.field);
        if !msg.starts_with(&expected_start) || !msg.contains(case.reason) {
            failures.push(format!(
                "{}:\n   got      {msg}\n   expected {expected_start}...{}...",
                case.name, case.reason
            ));
            continue;
        }
        assert_eq!(err.field.as_deref(), Some(case.field), "{}", case.name);
        if !msg.contains("(line ") {
            failures.push(format!("{}: no line in {msg}", case.name));
        }
        if case.at_change && !case.to.is_empty() {
            // The first line of `to` that differs from `from`.
            let at = BASE.find(case.from).unwrap();
            let skip = case
                .to
                .lines()
                .zip(case.from.lines())
                .take_while(|(t, f)| t == f)
                .count();
            let line = line_of(&text[..at]) + skip;
            if err.location.map(|l| l.0) != Some(line) {
                failures.push(format!("{}: expected line {line}: {msg}", case.name));
            }
        }
        assert!(
            !msg.contains("000102030405"),
            "{}: error shows key: {msg}",
            case.name
        );
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn the_brief_example_message() {
    let text = BASE.replacen("1e1fdeadbeef\"", "\"", 1).replacen(
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d\"",
        "000102030405060708090a0b0c0d0e0f101112\"",
        1,
    );
    let msg = StaticConfig::parse(&text, FILE).unwrap_err().to_string();
    assert!(
        msg.starts_with(
            "config /etc/xdpsec.toml: sa[1].key: expected 40 or 72 hex characters \
             (AES-GCM-128/256 key + 4-byte salt), got 38"
        ),
        "{msg}"
    );
}

#[test]
fn load_reads_files_and_names_them() {
    let dir = std::env::temp_dir().join(format!("xdpsec-api-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(&good, BASE).unwrap();
    assert_eq!(StaticConfig::load(&good).unwrap().sas.len(), 2);

    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        BASE.replacen("replay_window = 1024", "replay_window = 16", 1),
    )
    .unwrap();
    let msg = StaticConfig::load(&bad).unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!("config {}: sa[1].replay_window: ", bad.display())),
        "{msg}"
    );

    let binary = dir.join("binary.toml");
    std::fs::write(&binary, b"\xff\xfe\x00").unwrap();
    let msg = StaticConfig::load(&binary).unwrap_err().to_string();
    assert!(
        msg.contains("binary.toml") && msg.contains("UTF-8"),
        "{msg}"
    );

    let missing = dir.join("missing.toml");
    let msg = StaticConfig::load(&missing).unwrap_err().to_string();
    assert!(
        msg.contains("missing.toml") && msg.contains("cannot open"),
        "{msg}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn garbage_never_panics() {
    // Truncations and byte flips of a valid file: always Ok or a clean error.
    let sample = sample_config();
    for cut in (0..sample.len()).step_by(7) {
        if sample.is_char_boundary(cut) {
            let _ = StaticConfig::parse(&sample[..cut], FILE).map_err(|e| e.to_string());
        }
    }
    for (i, _) in sample.char_indices().step_by(13) {
        for junk in ["\"", "[", "]", "=", "\n", "{", "#", "é"] {
            let mut text = sample.to_owned();
            let end = text[i..].chars().next().map_or(i, |c| i + c.len_utf8());
            text.replace_range(i..end, junk);
            if let Err(e) = StaticConfig::parse(&text, FILE) {
                assert!(e.to_string().starts_with("config /etc/xdpsec.toml: "));
            }
        }
    }
}

#[test]
fn tunnel_interfaces() {
    let client = "[[interface]]\nname = \"wan0\"\nrole = \"outside\"\n\n\
                  [[interface]]\nname = \"xtun0\"\nrole = \"tunnel\"\n";
    let cfg = StaticConfig::parse(client, FILE).expect("a client needs no inside interface");
    assert_eq!(cfg.interfaces[1].role, Role::Tunnel);
    assert_eq!(cfg.interfaces[1].deliver, xdpsec_api::config::Deliver::Host);
    assert_eq!(xdpsec_api::config::tunnel_peer_name("xtun0"), "xtun0-dp");
    let all = StaticConfig::parse(&format!("{client}deliver = \"all\"\n"), FILE).unwrap();
    assert_eq!(all.interfaces[1].deliver, xdpsec_api::config::Deliver::All);

    let cases = [
        (
            client.replace("xtun0", "tunnel-too-long"),
            "interface[1].name",
            "too long for a tunnel interface",
        ),
        (
            format!("{client}\n[[interface]]\nname = \"xtun1\"\nrole = \"tunnel\"\n"),
            "interface",
            "more than one interface has role = \"tunnel\"",
        ),
        (
            client.replace(
                "role = \"outside\"",
                "role = \"outside\"\ndeliver = \"all\"",
            ),
            "interface[0].deliver",
            "only a tunnel interface",
        ),
        (
            "[[interface]]\nname = \"xtun0\"\nrole = \"tunnel\"\n".to_string(),
            "interface",
            "no interface has role = \"outside\"",
        ),
    ];
    for (text, field, reason) in cases {
        let e = StaticConfig::parse(&text, FILE).expect_err(reason);
        assert_eq!(e.field.as_deref(), Some(field), "{e}");
        assert!(e.reason.contains(reason), "{e}");
    }
}

#[test]
fn zero_copy_where_it_cannot_be_is_refused() {
    let generic = BASE
        .replacen("workers = 2", "workers = 2\nxdp_mode = \"generic\"", 1)
        .replacen(
            "role = \"outside\"",
            "role = \"outside\"\nxdp_bind = \"zerocopy\"",
            1,
        );
    let err = StaticConfig::parse(&generic, FILE).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "config {FILE}: interface[1].xdp_bind: zero-copy needs XDP in the driver"
        )),
        "{err}"
    );
    let tunnel = BASE.replacen(
        "name = \"lan0\"\nrole = \"inside\"",
        "name = \"tun0\"\nrole = \"tunnel\"\nxdp_bind = \"zerocopy\"",
        1,
    );
    assert_ne!(tunnel, BASE);
    let err = StaticConfig::parse(&tunnel, FILE).unwrap_err().to_string();
    assert!(
        err.contains("interface[0].xdp_bind: the tunnel interface is a veth pair"),
        "{err}"
    );
}
