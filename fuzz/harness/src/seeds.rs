//! Seed inputs for every target, made from valid messages (the shipped
//! example configs and certificates, packets built with the wire views, a
//! real IKE exchange between two endpoints). `fuzz-seeds` writes them to
//! `fuzz/corpus/<target>/seed-<name>`; the fuzzer starts from there.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use xdpsec_api::{ClientMessage, Direction, Request, SaUpdate, StaticConfig};
use xdpsec_control::cert::{LocalCredential, TrustStore};
use xdpsec_control::vip;
use xdpsec_control::wire::consts::payload as pt;
use xdpsec_control::wire::{CfgAttribute, Configuration, PayloadIter, HEADER_LEN};
use xdpsec_dataplane::wire::{checksum, ip_proto, ipv4, ipv6, udp};

use crate::input::Builder;

/// One seed: target, name, bytes.
pub type Seed = (&'static str, String, Vec<u8>);

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Every seed of every target.
pub fn all() -> Vec<Seed> {
    let mut out = Vec::new();
    esp(&mut out);
    wire(&mut out);
    reassembly(&mut out);
    steer(&mut out);
    ike(&mut out);
    cp(&mut out);
    cert(&mut out);
    configs(&mut out);
    api(&mut out);
    out
}

/// An IPv4 UDP packet (valid header and UDP checksum).
pub fn udp4(src: [u8; 4], dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 28 + payload.len()];
    ipv4::Repr {
        src: Ipv4Addr::from(src),
        dst: Ipv4Addr::from(dst),
        protocol: ip_proto::UDP,
        payload_len: 8 + payload.len(),
        ttl: 64,
        dscp_ecn: 0,
        ident: 1,
        dont_frag: true,
    }
    .emit(&mut p)
    .expect("room");
    udp::Repr {
        src_port: 4000,
        dst_port: dport,
        payload_len: payload.len(),
    }
    .emit(&mut p[20..])
    .expect("room");
    p[28..].copy_from_slice(payload);
    udp::Packet::new_unchecked(&mut p[20..]).fill_checksum_v4(src.into(), dst.into());
    p
}

/// An IPv6 UDP packet.
pub fn udp6(src: Ipv6Addr, dst: Ipv6Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 48 + payload.len()];
    ipv6::Repr {
        src,
        dst,
        next_header: ip_proto::UDP,
        payload_len: 8 + payload.len(),
        hop_limit: 64,
        traffic_class: 0,
        flow_label: 7,
    }
    .emit(&mut p)
    .expect("room");
    udp::Repr {
        src_port: 4000,
        dst_port: dport,
        payload_len: payload.len(),
    }
    .emit(&mut p[40..])
    .expect("room");
    p[48..].copy_from_slice(payload);
    udp::Packet::new_unchecked(&mut p[40..]).fill_checksum_v6(&src, &dst);
    p
}

/// An IPv4 TCP SYN with an MSS option and a valid checksum.
fn tcp_syn4() -> Vec<u8> {
    let mut p = vec![0u8; 20 + 24];
    ipv4::Repr {
        src: Ipv4Addr::new(10, 1, 0, 1),
        dst: Ipv4Addr::new(10, 2, 0, 1),
        protocol: ip_proto::TCP,
        payload_len: 24,
        ttl: 64,
        dscp_ecn: 0,
        ident: 2,
        dont_frag: true,
    }
    .emit(&mut p)
    .expect("room");
    let tcp = &mut p[20..];
    tcp[..4].copy_from_slice(&[0x9c, 0x40, 0, 80]);
    tcp[12] = 6 << 4;
    tcp[13] = 0x02;
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    tcp[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]);
    let pseudo = checksum::pseudo_header_v4(
        Ipv4Addr::new(10, 1, 0, 1),
        Ipv4Addr::new(10, 2, 0, 1),
        ip_proto::TCP,
        24,
    );
    let sum = checksum::finish(checksum::add(pseudo, &p[20..]));
    p[36..38].copy_from_slice(&sum.to_be_bytes());
    p
}

fn v6(n: u16, h: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, n, 0, 0, 0, 0, 0, h)
}

fn esp(out: &mut Vec<Seed>) {
    let inner4 = udp4(
        [10, 1, 0, 1],
        [10, 2, 0, 1],
        1500,
        b"hello through the tunnel",
    );
    let inner6 = udp6(v6(1, 1), v6(2, 1), 1500, b"hello over IPv6");
    // Sealed plaintext: the inner packet, padding 1, 2, pad length 2, next
    // header 4 (IPv4).
    let mut plain = inner4.clone();
    plain.extend_from_slice(&[1, 2, 2, 4]);
    for (name, flags) in [
        ("gcm128", 0u8),
        ("esn-gcm256", 3),
        ("narrow-udp-v6", 4 | 8 | 16),
    ] {
        let seed = Builder::new()
            .u8(flags)
            .u8(2)
            .u8(0)
            .u8(2)
            .chunk(&inner4)
            .u8(2)
            .chunk(&inner6)
            .u8(1)
            .u64(7)
            .u8(0)
            .chunk(&plain)
            .u8(0)
            .u8(1)
            .chunk(&[0x10, 0, 0, 1, 0, 0, 0, 9, 1, 2, 3])
            .build();
        out.push(("esp_decap", name.to_owned(), seed));
    }
    // Without ESN, four packets before the sequence space ends; with ESN,
    // sealed packets either side of 2^32.
    let mut near_end = plain.clone();
    near_end.truncate(inner4.len());
    near_end.extend_from_slice(&[1, 2, 2, 4]);
    let esn_wrap = Builder::new()
        .u8(1)
        .u8(0)
        .u8(0)
        .u8(1)
        .u64(1000)
        .u8(0)
        .chunk(&near_end)
        .u8(1)
        .u64((1 << 32) - 3)
        .u8(0)
        .chunk(&near_end)
        .u8(1)
        .u64((1 << 32) + 2)
        .u8(0)
        .chunk(&near_end)
        .u8(1)
        .u64(1 << 32)
        .u8(0)
        .chunk(&near_end)
        .build();
    out.push(("esp_decap", "esn-wrap".to_owned(), esn_wrap));
    let near_wrap = Builder::new()
        .u8(0)
        .u8(0)
        .u8(2)
        .u8(2)
        .chunk(&inner4)
        .u8(2)
        .chunk(&inner4)
        .u8(2)
        .chunk(&inner4)
        .build();
    out.push(("esp_decap", "seq-end".to_owned(), near_wrap));
}

fn wire(out: &mut Vec<Seed>) {
    let inner4 = udp4(
        [10, 1, 0, 1],
        [10, 2, 0, 1],
        4500,
        &[0, 0, 0x10, 1, 0, 0, 0, 1],
    );
    let mut eth = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    eth.extend_from_slice(&inner4);
    let mut seeds = vec![
        ("eth-ipv4-udp", 0u8, eth),
        ("ipv4-udp", 1, inner4.clone()),
        ("ipv4-tcp-syn", 1, tcp_syn4()),
        ("ipv6-udp", 1, udp6(v6(1, 1), v6(2, 1), 53, b"query")),
        ("udp", 2, inner4[20..].to_vec()),
        (
            "esp-trailer",
            3,
            vec![0, 0, 0x10, 1, 0, 0, 0, 1, 9, 9, 1, 2, 2, 4],
        ),
    ];
    // ICMP "fragmentation needed" quoting an outer ESP packet.
    let mut quoted = vec![0u8; 20 + 16];
    ipv4::Repr {
        src: Ipv4Addr::new(198, 18, 0, 1),
        dst: Ipv4Addr::new(198, 18, 0, 2),
        protocol: ip_proto::ESP,
        payload_len: 1400,
        ttl: 64,
        dscp_ecn: 0,
        ident: 3,
        dont_frag: true,
    }
    .emit(&mut quoted[..20])
    .expect("room");
    quoted[20..24].copy_from_slice(&0x1001u32.to_be_bytes());
    let mut icmp = vec![3, 4, 0, 0, 0, 0, 0x05, 0x00];
    icmp.extend_from_slice(&quoted);
    let sum = checksum::finish(checksum::add(0, &icmp));
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut p = vec![0u8; 20 + icmp.len()];
    ipv4::Repr {
        src: Ipv4Addr::new(198, 18, 0, 254),
        dst: Ipv4Addr::new(198, 18, 0, 1),
        protocol: ip_proto::ICMP,
        payload_len: icmp.len(),
        ttl: 64,
        dscp_ecn: 0,
        ident: 4,
        dont_frag: false,
    }
    .emit(&mut p)
    .expect("room");
    p[20..].copy_from_slice(&icmp);
    seeds.push(("icmp-frag-needed", 1, p));
    for (name, layer, bytes) in seeds {
        let mut v = vec![layer];
        v.extend_from_slice(&bytes);
        out.push(("wire_views", name.to_owned(), v));
    }
}

fn reassembly(out: &mut Vec<Seed>) {
    // Two IPv4 pieces that complete (offset in 8-byte units), a clock step,
    // an IPv6 pair, and the fragmenter's own pieces in reverse.
    let frag4 = |b: &mut Builder, offset: u16, more: bool, len: u16| {
        b.u8(1)
            .u8(1)
            .u16(offset)
            .u8(u8::from(more))
            .u16(len)
            .u8(0)
            .u8(0);
    };
    let mut b = Builder::new();
    b.u8(3).u16(1000);
    frag4(&mut b, 0, true, 1480);
    frag4(&mut b, 185, false, 77);
    b.u8(3).u16(100);
    b.u8(2).u8(2).u16(0).u8(1).u16(1232).u8(0).u8(0);
    b.u8(2).u8(2).u16(154).u8(0).u16(100).u8(0).u8(0);
    b.u8(4).u8(0).u16(3000).u16(1432).u64(1 << 63);
    b.u8(4).u8(1).u16(2500).u16(1212).u64(1);
    out.push(("outer_reassembly", "complete".to_owned(), b.build()));
    let mut b = Builder::new();
    b.u8(1).u16(0);
    frag4(&mut b, 0, true, 800);
    frag4(&mut b, 99, true, 16);
    frag4(&mut b, 0, true, 800);
    b.u8(3).u16(60000);
    out.push(("outer_reassembly", "overlap-timeout".to_owned(), b.build()));
}

fn steer(out: &mut Vec<Seed>) {
    let eth = |ethertype: u16, l3: &[u8]| {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(l3);
        f
    };
    let esp_in_udp = udp4(
        [198, 18, 0, 2],
        [198, 18, 0, 1],
        4500,
        &[0, 0, 0x10, 1, 0, 0, 0, 1],
    );
    let ike = udp4([198, 18, 0, 2], [198, 18, 0, 1], 500, &[0; 28]);
    let marker = udp4(
        [198, 18, 0, 2],
        [198, 18, 0, 1],
        4500,
        &[0, 0, 0, 0, 1, 2, 3],
    );
    let to_lan = udp4([10, 1, 0, 1], [10, 2, 0, 1], 53, b"dns");
    let mut esp4 = udp4(
        [198, 18, 0, 2],
        [198, 18, 0, 1],
        1,
        &[0x10, 0, 0, 1, 0, 0, 0, 1],
    );
    esp4[9] = ip_proto::ESP;
    esp4.drain(20..28);
    let mut frag = esp_in_udp.clone();
    frag[6] = 0x20;
    let mut later = esp_in_udp.clone();
    later[7] = 0x10;
    let mut vlan = vec![
        2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x81, 0x00, 0, 7, 0x08, 0x00,
    ];
    vlan.extend_from_slice(&esp4);
    let v6 = udp6(
        Ipv6Addr::new(0xfd00, 0x18, 0, 0, 0, 0, 0, 2),
        Ipv6Addr::new(0xfd00, 0, 0, 0x18, 0, 0, 0, 1),
        4500,
        &[0, 0, 0x10, 1, 0, 0, 0, 1],
    );
    let frames = [
        eth(0x0800, &esp4),
        eth(0x0800, &esp_in_udp),
        eth(0x0800, &ike),
        eth(0x0800, &marker),
        eth(0x0800, &to_lan),
        eth(0x0800, &frag),
        eth(0x0800, &later),
        vlan,
        eth(0x86dd, &v6),
        eth(0x0806, &[0; 28]),
    ];
    for (name, role, flags) in [
        ("outside", 2u8, 0u8),
        ("inside", 1, 0),
        ("both-no-sockets", 3, 4),
    ] {
        let mut b = Builder::new();
        b.u8(role).u8(1).u8(flags);
        for (q, f) in frames.iter().enumerate() {
            b.u8(q as u8).chunk(f);
        }
        out.push(("steer_classify", name.to_owned(), b.build()));
    }
}

fn ike(out: &mut Vec<Seed>) {
    // Whole messages and payload bodies for the parser, from a real
    // exchange (GCM and CBC).
    for variant in [0u8, 1, 4] {
        let Some((req_first, req, resp_first, resp)) = crate::ike::real_auth_inner(variant) else {
            continue;
        };
        for (name, first, inner) in [
            ("auth-request", req_first, &req),
            ("auth-response", resp_first, &resp),
        ] {
            // The inner chain as a message of its own (header + payloads).
            let mut m = vec![0u8; HEADER_LEN];
            m[16] = first;
            m[17] = 0x20;
            m[18] = 35;
            m[19] = 0x08;
            m.extend_from_slice(inner);
            let len = (m.len() as u32).to_be_bytes();
            m[24..28].copy_from_slice(&len);
            let mut seed = vec![0u8];
            seed.extend_from_slice(&m);
            out.push(("ike_message", format!("{name}-{variant}"), seed));
            // Each payload body alone, in the odd modes.
            for raw in PayloadIter::new(first, inner).flatten() {
                let Some(k) = kind_index(raw.kind) else {
                    continue;
                };
                let mut seed = vec![(k * 2 + 1) as u8];
                seed.extend_from_slice(raw.body);
                out.push((
                    "ike_message",
                    format!("{name}-{variant}-payload-{}", raw.kind),
                    seed,
                ));
            }
            // Sealed by the harness into a half-open (stage 2) or waiting
            // (stage 3) pair: op 4, to B (request) or A (response).
            let (stage, to, response) = if name == "auth-request" {
                (2u8, 1u8, 0u8)
            } else {
                (3, 0, 1)
            };
            let seed = Builder::new()
                .u8(variant)
                .u8(stage)
                .u8(4)
                .u8(to)
                .u8(0)
                .u8(response)
                .u8(0)
                .u8(first)
                .u8(0)
                .chunk(inner)
                .u8(0)
                .u8(4)
                .build();
            out.push(("ike_endpoint", format!("{name}-{variant}"), seed));
            if name == "auth-request" {
                // The same in three SKF fragments (op 5).
                let seed = Builder::new()
                    .u8(variant)
                    .u8(2)
                    .u8(5)
                    .u8(1)
                    .u8(0)
                    .u8(0)
                    .u8(0)
                    .u8(first)
                    .u8(2)
                    .chunk(inner)
                    .u8(0)
                    .u8(4)
                    .build();
                out.push(("ike_endpoint", format!("{name}-{variant}-skf"), seed));
                // A correct split for the SKF target: slices of the real
                // request in order 2, 3, 1.
                let n = inner.len() as u16;
                let third = n / 3;
                let mut b = Builder::new();
                b.u8(variant);
                for (number, start, len) in [
                    (2u16, third, third),
                    (3, 2 * third, n - 2 * third),
                    (1, 0, third),
                ] {
                    b.u16(number).u16(3).u8(1).u8(0).u8(1).u16(start).u16(len);
                }
                out.push(("ike_skf", format!("split3-{variant}"), b.build()));
            }
        }
    }
    // Programs over an established pair: time, rekeys, deletes, mutated
    // messages in flight.
    let programs: [(&str, u8, u8, Vec<u8>); 6] = [
        ("established-dpd", 8, 4, vec![2, 0x10, 0, 0, 8]),
        (
            "rekey-child",
            0,
            4,
            vec![7, 0, 1, 0, 8, 6, 3, 0, 0, 0, 0, 0, 0, 0, 0, 8],
        ),
        ("rekey-ike", 1, 4, vec![7, 1, 2, 0, 8, 0, 8]),
        ("mutate-init", 0, 1, vec![6, 0, 0, 40, 7, 0, 0, 8]),
        ("delete-child", 2, 4, vec![7, 0, 3, 0, 8, 7, 1, 7]),
        (
            "remote-access-mutate",
            4,
            3,
            vec![6, 1, 0, 9, 0x21, 0, 0, 8],
        ),
    ];
    for (name, variant, stage, ops) in programs {
        let mut seed = vec![variant, stage];
        seed.extend_from_slice(&ops);
        out.push(("ike_endpoint", name.to_owned(), seed));
    }
    // A raw IKE_SA_INIT-looking datagram to a fresh responder.
    let mut init = vec![0u8; HEADER_LEN];
    init[..8].copy_from_slice(&7u64.to_be_bytes());
    init[16] = pt::NOTIFY;
    init[17] = 0x20;
    init[18] = 34;
    init[19] = 0x08;
    init.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0x40, 0x06]);
    let len = (init.len() as u32).to_be_bytes();
    init[24..28].copy_from_slice(&len);
    let seed = Builder::new()
        .u8(0)
        .u8(0)
        .u8(3)
        .u8(1)
        .u8(0)
        .u8(0)
        .chunk(&init)
        .build();
    out.push(("ike_endpoint", "raw-init".to_owned(), seed));
    let mut m = vec![0u8];
    m.extend_from_slice(&init);
    out.push(("ike_message", "init-notify".to_owned(), m));
}

fn kind_index(kind: u8) -> Option<usize> {
    crate::control::KINDS.iter().position(|k| *k == kind)
}

fn cp(out: &mut Vec<Seed>) {
    let body = |c: &Configuration| {
        let mut v = Vec::new();
        c.emit(&mut v).expect("emits");
        v
    };
    let any = vip::request(&["0.0.0.0".parse().expect("v4"), "::".parse().expect("v6")])
        .expect("a request");
    let named = vip::request(&[IpAddr::V4(Ipv4Addr::new(10, 3, 0, 2))]).expect("a request");
    let reply = Configuration {
        cfg_type: 2,
        attributes: vec![
            CfgAttribute::Ip4Address(Some(Ipv4Addr::new(10, 3, 0, 1))),
            CfgAttribute::Ip4Dns(Some(Ipv4Addr::new(10, 2, 0, 53))),
            CfgAttribute::Ip6Subnet(Some((v6(2, 0), 64))),
            CfgAttribute::Other {
                kind: 0x4000,
                value: b"x".to_vec(),
            },
        ],
    };
    let mut b = Builder::new();
    for who in 0..5u8 {
        b.u8(who).u8(who).chunk(&body(&any));
    }
    b.u8(3).u8(1).chunk(&body(&any));
    b.u8(0).u8(1).chunk(&body(&named));
    b.u8(1).u8(2).chunk(&body(&reply));
    out.push(("ike_cp", "clients".to_owned(), b.build()));
}

fn cert(out: &mut Vec<Seed>) {
    let dir = root().join("control/examples");
    let Ok(ca) = TrustStore::load(&[dir.join("x509ca/exampleCaCert.pem")]) else {
        return;
    };
    for who in ["sun", "moon"] {
        let Ok(cred) = LocalCredential::load(
            &[dir.join(format!("x509/{who}Cert.pem"))],
            &dir.join(format!("private/{who}Key.pem")),
        ) else {
            continue;
        };
        let Ok(sig) = cred.sign_auth(b"octets") else {
            continue;
        };
        let mut id = Vec::new();
        cred.subject_id().emit(&mut id);
        let mut b = Builder::new();
        b.u8(1).u8(cred.auth_method()).chunk(&id).chunk(&sig);
        for der in cred.chain_der() {
            b.chunk(der);
        }
        for der in ca.ca_der() {
            b.chunk(der);
        }
        out.push(("cert_der", who.to_owned(), b.build()));
    }
}

fn configs(out: &mut Vec<Seed>) {
    let read = |p: &str| std::fs::read(root().join(p)).unwrap_or_default();
    for (name, path) in [
        ("ike", "control/examples/ike.toml"),
        ("ike-sun", "control/examples/ike-sun.toml"),
    ] {
        out.push(("config_ike", name.to_owned(), read(path)));
    }
    out.push((
        "config_ike",
        "sample".to_owned(),
        xdpsec_control::config::sample_config().as_bytes().to_vec(),
    ));
    for (name, path) in [
        ("static-tunnel", "dataplane/api/examples/static-tunnel.toml"),
        (
            "static-tunnel-b",
            "dataplane/api/examples/static-tunnel-b.toml",
        ),
        ("ike-gateway", "dataplane/api/examples/ike-gateway.toml"),
    ] {
        out.push(("config_dataplane", name.to_owned(), read(path)));
    }
}

fn api(out: &mut Vec<Seed>) {
    let text = std::fs::read_to_string(root().join("dataplane/api/examples/static-tunnel.toml"))
        .unwrap_or_default();
    let Ok(cfg) = StaticConfig::parse(&text, "static-tunnel.toml") else {
        return;
    };
    let mut lines: Vec<ClientMessage> = vec![ClientMessage {
        id: 1,
        request: Request::Hello {
            version: 1,
            client: "fuzz".into(),
        },
    }];
    let mut id = 2;
    let mut push = |request| {
        lines.push(ClientMessage { id, request });
        id += 1;
    };
    for sa in &cfg.sas {
        push(Request::AddSa { sa: sa.clone() });
    }
    for policy in &cfg.policies {
        push(Request::AddPolicy {
            policy: policy.clone(),
        });
    }
    if let Some(sa) = cfg.sas.first() {
        let mut update = SaUpdate::new(sa.spi, sa.direction);
        update.tunnel_remote = Some("198.18.0.9".parse().expect("v4"));
        push(Request::UpdateSa { update });
        push(Request::DeleteSa {
            spi: sa.spi,
            direction: Direction::In,
        });
    }
    if let Some(p) = cfg.policies.first() {
        push(Request::ReplacePolicy { policy: p.clone() });
        push(Request::DeletePolicy { policy: p.key() });
    }
    push(Request::ListSas);
    push(Request::ListPolicies);
    push(Request::WorkerStats);
    push(Request::SubscribeEvents);
    let mut text = Vec::new();
    for l in &lines {
        text.extend_from_slice(&serde_json::to_vec(l).expect("serialises"));
        text.push(b'\n');
    }
    text.extend_from_slice(b"{\"id\":99,\"request\":{\"op\":\"nope\"}}\n\n  \nnot json\n");
    for (name, knobs) in [
        ("lines", 0u8),
        ("served", 0x40),
        ("short-lines", 0x21 | 0x40),
    ] {
        let mut seed = vec![knobs];
        seed.extend_from_slice(&text);
        out.push(("sa_api_framing", name.to_owned(), seed));
    }
}
