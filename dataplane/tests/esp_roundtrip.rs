//! ESP tunnel-mode round trips: every combination of outer and inner IP
//! version, with and without NAT-T (UDP encapsulation) and ESN, both AES-GCM
//! key sizes, every pair of crypto backends (what one encrypts the other
//! decrypts), and every inner size from 0 to 1500 bytes.
//!
//! "Inner size" here is the inner packet's payload after its IP header (so
//! the inner packet is 20 + size bytes for IPv4, 40 + size for IPv6). From 8
//! bytes on the payload is a UDP datagram; below that, raw bytes of protocol
//! 253.
//!
//! Each outer packet is checked field by field: IP version, lengths, IPv4
//! checksum, TTL / hop limit, protocol (50, or 17 to port 4500), addresses,
//! DF, traffic class, UDP length and checksum, SPI, sequence number, IV,
//! alignment. After decryption the trailer left in the buffer is checked for
//! the padding pattern 1, 2, 3, ..., the pad length and the next header.

mod common;

use common::{backend_pairs, endpoints, Family, Frame, InnerSpec, SaParams, ETH_LEN};
use xdpsec_dataplane::esp::{self, ESP_HEADER_LEN, ICV_LEN, IV_LEN, MAX_HEADROOM};
use xdpsec_dataplane::sa::{Cipher, DfPolicy};
use xdpsec_dataplane::wire::{checksum, esp as wire_esp, ip_proto, ipv4, ipv6, udp, IpVersion};

const MAX_INNER_PAYLOAD: usize = 1500;

fn run_matrix(outer: Family, inner: Family) {
    let mut checked = 0usize;
    for (out_backend, in_backend) in backend_pairs() {
        for cipher in [Cipher::AesGcm128, Cipher::AesGcm256] {
            for udp in [None, common::nat_t()] {
                for esn in [false, true] {
                    let params = SaParams {
                        cipher,
                        outer,
                        esn,
                        udp,
                        out_backend,
                        in_backend,
                        // With ESN, start so that the loop crosses from
                        // sequence-number high half 0 to 1 two thirds of the
                        // way (not closer than one window to 2^32: at the
                        // start a receiver takes such numbers for the
                        // previous epoch, RFC 4303 Appendix A).
                        initial_seq: if esn { (1 << 32) - 1100 } else { 1 },
                        seed: out_backend as u8 ^ (cipher as u8) << 1,
                        ..SaParams::default()
                    };
                    let (out_sa, in_sa) = params.pair();
                    for size in 0..=MAX_INNER_PAYLOAD {
                        let spec = InnerSpec::new(inner, size);
                        let expected_seq = params.initial_seq + size as u64;
                        roundtrip_one(&params, &out_sa, &in_sa, spec, expected_seq);
                        checked += 1;
                    }
                    assert_eq!(
                        out_sa.next_seq(),
                        Some(params.initial_seq + MAX_INNER_PAYLOAD as u64 + 1)
                    );
                    assert_eq!(
                        in_sa.replay_window().highest(),
                        params.initial_seq + MAX_INNER_PAYLOAD as u64
                    );
                }
            }
        }
    }
    assert!(checked >= 4 * 2 * 2 * 2 * (MAX_INNER_PAYLOAD + 1));
}

fn roundtrip_one(
    params: &SaParams,
    out_sa: &xdpsec_dataplane::sa::OutboundSa,
    in_sa: &xdpsec_dataplane::sa::InboundSa,
    spec: InnerSpec,
    expected_seq: u64,
) {
    let ctx = || format!("{params:?} inner {spec:?}");
    let inner = common::inner_packet_with(spec);
    let mut frame = Frame::new(&inner);
    let out = frame
        .encapsulate(out_sa)
        .unwrap_or_else(|e| panic!("encapsulate: {e}: {}", ctx()));
    assert_eq!(out.seq, expected_seq, "{}", ctx());

    // Where everything should be.
    let ip_len = params.outer.ip_header_len();
    let udp_len = if params.udp.is_some() {
        udp::HEADER_LEN
    } else {
        0
    };
    let headroom = ip_len + udp_len + ESP_HEADER_LEN + IV_LEN;
    assert_eq!(out_sa.headroom(), headroom);
    assert!(headroom <= MAX_HEADROOM);
    let pad = wire_esp::pad_len(inner.len());
    assert!(pad <= 3);
    assert_eq!(out_sa.tailroom(inner.len()), pad + 2 + ICV_LEN);
    let esp_len = ESP_HEADER_LEN + IV_LEN + inner.len() + pad + 2 + ICV_LEN;
    assert_eq!(esp_len % 4, 0, "ICV not 4-byte aligned: {}", ctx());
    assert_eq!(out.range.start, frame.offset - headroom, "{}", ctx());
    assert_eq!(out.range.len(), ip_len + udp_len + esp_len, "{}", ctx());
    assert_eq!(out.event, None);
    // Nothing in front of the outer packet was touched (the Ethernet room).
    assert!(frame.buf[..ETH_LEN].iter().all(|&b| b == 0xa5));

    let outer = &frame.buf[out.range.clone()];
    let (local, remote) = endpoints(params.outer);
    let protocol = if params.udp.is_some() {
        ip_proto::UDP
    } else {
        ip_proto::ESP
    };
    match params.outer {
        Family::V4 => {
            let ip = ipv4::Packet::new_checked(outer).unwrap();
            assert_eq!(ip.version(), 4);
            assert_eq!(ip.header_len(), 20);
            assert_eq!(usize::from(ip.total_len()), outer.len());
            assert!(ip.verify_checksum(), "outer IPv4 checksum: {}", ctx());
            assert_eq!(ip.ttl(), params.ttl);
            assert_eq!(ip.protocol(), protocol);
            assert_eq!(std::net::IpAddr::from(ip.src_addr()), local);
            assert_eq!(std::net::IpAddr::from(ip.dst_addr()), remote);
            assert_eq!(
                ip.dscp_ecn(),
                spec.tos,
                "DSCP/ECN copied from the inner header"
            );
            assert!(!ip.more_frags());
            assert_eq!(ip.frag_offset(), 0);
            let inner_df = match IpVersion::of_packet(&inner).unwrap() {
                IpVersion::V4 => spec.df,
                IpVersion::V6 => true,
            };
            let df = match params.df {
                DfPolicy::Copy => inner_df,
                DfPolicy::Set => true,
                DfPolicy::Clear => false,
            };
            assert_eq!(ip.dont_frag(), df, "{}", ctx());
        }
        Family::V6 => {
            let ip = ipv6::Packet::new_checked(outer).unwrap();
            assert_eq!(ip.version(), 6);
            assert_eq!(ip.total_len(), outer.len());
            assert_eq!(usize::from(ip.payload_len()), outer.len() - 40);
            assert_eq!(ip.hop_limit(), params.ttl);
            assert_eq!(ip.next_header(), protocol);
            assert_eq!(std::net::IpAddr::from(ip.src_addr()), local);
            assert_eq!(std::net::IpAddr::from(ip.dst_addr()), remote);
            assert_eq!(ip.traffic_class(), spec.tos);
            assert_eq!(ip.flow_label(), 0);
        }
    }
    if let Some(ports) = params.udp {
        let datagram = &outer[ip_len..];
        let u = udp::Packet::new_checked(datagram).unwrap();
        assert_eq!(u.src_port(), ports.local_port);
        assert_eq!(u.dst_port(), ports.remote_port);
        assert_eq!(u.dst_port(), 4500);
        assert_eq!(usize::from(u.len()), datagram.len());
        match (local, remote) {
            (std::net::IpAddr::V4(_), std::net::IpAddr::V4(_)) => {
                assert_eq!(u.checksum(), 0, "RFC 3948: UDP checksum 0 over IPv4");
            }
            (std::net::IpAddr::V6(src), std::net::IpAddr::V6(dst)) => {
                assert_ne!(u.checksum(), 0, "zero UDP checksum over IPv6");
                assert!(u.verify_checksum_v6(&src, &dst), "UDP checksum: {}", ctx());
                // And independently of the view's helper.
                let acc =
                    checksum::pseudo_header_v6(&src, &dst, ip_proto::UDP, datagram.len() as u32);
                assert_eq!(checksum::fold(checksum::add(acc, datagram)), 0xffff);
            }
            _ => unreachable!(),
        }
        assert_eq!(udp::classify_nat_t(u.payload()), udp::NatTPayload::Esp);
    }
    let esp_range = common::esp_range(outer);
    assert_eq!(esp_range.len(), esp_len);
    let esp_bytes = &outer[esp_range.clone()];
    let view = wire_esp::Packet::new_checked(esp_bytes).unwrap();
    assert_eq!(view.spi(), params.spi);
    assert_eq!(view.seq_number(), expected_seq as u32);
    assert_eq!(
        &esp_bytes[8..16],
        &expected_seq.to_be_bytes(),
        "IV = 64-bit sequence number"
    );
    // The payload is not sent in the clear (for payloads long enough that a
    // coincidence is out of the question).
    if inner.len() >= 16 {
        assert_ne!(&esp_bytes[16..16 + inner.len()], &inner[..]);
    }

    // Decapsulate on the peer, from a copy as a receiver would get it.
    let mut rx = esp_bytes.to_vec();
    let dec =
        esp::decapsulate(in_sa, &mut rx).unwrap_or_else(|e| panic!("decapsulate: {e}: {}", ctx()));
    assert_eq!(dec.seq, expected_seq);
    assert_eq!(dec.range, 16..16 + inner.len());
    assert_eq!(&rx[dec.range.clone()], &inner[..], "{}", ctx());
    assert_eq!(dec.version, IpVersion::of_packet(&inner).unwrap());
    assert_eq!(dec.event, None);
    // The trailer, decrypted in place behind the inner packet.
    let trailer = &rx[dec.range.end..rx.len() - ICV_LEN];
    assert_eq!(trailer.len(), pad + 2);
    let expected_padding: Vec<u8> = (1..=pad as u8).collect();
    assert_eq!(&trailer[..pad], &expected_padding[..], "padding pattern");
    assert_eq!(usize::from(trailer[pad]), pad, "pad length");
    let next_header = match dec.version {
        IpVersion::V4 => 4,
        IpVersion::V6 => 41,
    };
    assert_eq!(trailer[pad + 1], next_header);
}

#[test]
fn ipv4_in_ipv4() {
    run_matrix(Family::V4, Family::V4);
}

#[test]
fn ipv6_in_ipv6() {
    run_matrix(Family::V6, Family::V6);
}

#[test]
fn ipv4_in_ipv6() {
    run_matrix(Family::V6, Family::V4);
}

#[test]
fn ipv6_in_ipv4() {
    run_matrix(Family::V4, Family::V6);
}

#[test]
fn df_policies_and_ttl() {
    for df in [DfPolicy::Copy, DfPolicy::Set, DfPolicy::Clear] {
        for inner_df in [false, true] {
            let params = SaParams {
                df,
                ttl: 17,
                ..SaParams::default()
            };
            let (out_sa, in_sa) = params.pair();
            let spec = InnerSpec {
                df: inner_df,
                ..InnerSpec::new(Family::V4, 100)
            };
            roundtrip_one(&params, &out_sa, &in_sa, spec, 1);
            let spec = InnerSpec::new(Family::V6, 100);
            roundtrip_one(&params, &out_sa, &in_sa, spec, 2);
        }
    }
}

#[test]
fn ethernet_padding_after_the_inner_packet_is_not_encrypted() {
    let params = SaParams::default();
    let (out_sa, in_sa) = params.pair();
    let inner = common::inner_packet(Family::V4, 6); // 26 bytes
    let mut padded = inner.clone();
    padded.resize(46, 0); // what a 60-byte Ethernet frame carries
    let mut frame = Frame::new(&padded);
    let out = frame.encapsulate(&out_sa).unwrap();
    let pad = wire_esp::pad_len(inner.len());
    assert_eq!(out.range.len(), 20 + 16 + inner.len() + pad + 2 + 16);
    let range = common::esp_range(&frame.buf[out.range.clone()]);
    let mut rx = frame.buf[out.range][range].to_vec();
    let dec = esp::decapsulate(&in_sa, &mut rx).unwrap();
    assert_eq!(&rx[dec.range], &inner[..]);
}

#[test]
fn exact_room_is_enough() {
    for outer in Family::BOTH {
        for udp in [None, common::nat_t()] {
            let params = SaParams {
                outer,
                udp,
                ..SaParams::default()
            };
            let (out_sa, in_sa) = params.pair();
            for size in [0, 1, 2, 3, 4, 100, 1400] {
                let inner = common::inner_packet(Family::V4, size);
                let mut frame =
                    Frame::with_room(&inner, out_sa.headroom(), out_sa.tailroom(inner.len()));
                let out = frame.encapsulate(&out_sa).unwrap();
                assert_eq!(out.range, 0..frame.buf.len());
                let range = common::esp_range(&frame.buf);
                let mut rx = frame.buf[range].to_vec();
                let dec = esp::decapsulate(&in_sa, &mut rx).unwrap();
                assert_eq!(&rx[dec.range], &inner[..]);
            }
        }
    }
}

/// Guards against a transform that is consistent with itself but not with
/// RFC 4106 (nonce = salt || IV, AAD = SPI || seq or SPI || seq-high ||
/// seq-low): packets are opened with nonce and AAD built by the test, and
/// packets sealed by the test are decapsulated.
#[test]
fn nonce_and_aad_follow_rfc_4106() {
    for (out_backend, in_backend) in backend_pairs() {
        for cipher in [Cipher::AesGcm128, Cipher::AesGcm256] {
            for esn in [false, true] {
                let params = SaParams {
                    cipher,
                    esn,
                    out_backend,
                    in_backend,
                    initial_seq: if esn { (3 << 32) + 5 } else { 5 },
                    ..SaParams::default()
                };
                let (out_sa, in_sa) = params.pair();
                let inner = common::inner_packet(Family::V6, 77);
                let (outer, out) = common::encap(&out_sa, &inner);
                let esp_bytes = &outer[common::esp_range(&outer)];
                let plaintext = common::open_raw(&params, out.seq, esp_bytes)
                    .unwrap_or_else(|| panic!("not RFC 4106: {params:?}"));
                assert_eq!(plaintext, common::esp_plaintext(&inner, 0, 41));
                // Without the high half in the AAD it must not open.
                if esn {
                    let wrong = SaParams {
                        esn: false,
                        ..params.clone()
                    };
                    assert!(common::open_raw(&wrong, out.seq, esp_bytes).is_none());
                }
                // The other way round: the test seals, the transform opens.
                // With ESN the second number is in the next epoch, so the
                // receiver must infer a high half of 1 for it to open.
                let seqs = if esn {
                    [(1 << 32) - 1100, (1 << 32) + 3]
                } else {
                    [6, 7]
                };
                for seq in seqs {
                    let plaintext = common::esp_plaintext(&inner, 0, 41);
                    let mut packet = common::seal_raw(&params, seq, &plaintext);
                    let dec = esp::decapsulate(&in_sa, &mut packet).unwrap();
                    assert_eq!(dec.seq, seq);
                    assert_eq!(&packet[dec.range], &inner[..]);
                }
            }
        }
    }
}
