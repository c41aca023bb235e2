//! What decapsulation refuses, and why: single-byte changes anywhere in an
//! ESP packet, truncation at every length, replays, packets left of the
//! window, inner packets outside the selectors, crafted packets with bad
//! padding / next header / inner header, and property tests feeding arbitrary
//! bytes to decapsulation, encapsulation and every wire view (no panics).

mod common;

use std::collections::{BTreeSet, HashMap};

use common::{backend_pairs, Family, Frame, InnerSpec, SaParams};
use proptest::prelude::*;
use xdpsec_dataplane::esp::{self, EspError, MIN_ESP_LEN};
use xdpsec_dataplane::sa::{Cipher, InboundSa, OutboundSa};
use xdpsec_dataplane::selector::{self, FlowKey, IpRange, PortRange, TrafficSelector};
use xdpsec_dataplane::wire::{self, ethernet, ip_proto, ipv4, ipv6, udp};

/// The worker's receive path for one ESP packet: SPI lookup (by the wire
/// view), then decapsulation.
fn receive(
    table: &HashMap<u32, &InboundSa>,
    esp_bytes: &mut [u8],
) -> Result<std::ops::Range<usize>, EspError> {
    let spi = wire::esp::Packet::new_checked(&*esp_bytes)
        .map_err(|_| EspError::Truncated)?
        .spi();
    let sa = table.get(&spi).ok_or(EspError::UnknownSpi)?;
    esp::decapsulate(sa, esp_bytes).map(|d| d.range)
}

/// Encapsulates `inner` and returns just the ESP packet.
fn esp_packet(sa: &OutboundSa, inner: &[u8]) -> Vec<u8> {
    let (outer, _) = common::encap(sa, inner);
    outer[common::esp_range(&outer)].to_vec()
}

/// What a packet whose (low) sequence number was changed to `seq_low` must be
/// refused as, given the highest number accepted so far and those accepted.
/// With ESN a low number left of the window is taken for the next 2^32 epoch
/// (RFC 4303 Appendix A), so it reaches authentication.
fn expected_for_seq(
    params: &SaParams,
    seq_low: u32,
    top: u64,
    accepted: &BTreeSet<u64>,
) -> EspError {
    let window = u64::from(params.replay_window);
    let seq_low = u64::from(seq_low);
    let seq = if params.esn && top >= window - 1 && seq_low < top - window + 1 {
        (1 << 32) + seq_low
    } else {
        seq_low
    };
    if seq == 0 || seq + window <= top {
        EspError::TooOld
    } else if accepted.contains(&seq) {
        EspError::Replayed
    } else {
        EspError::AuthenticationFailed
    }
}

fn tamper_every_byte(params: &SaParams) {
    let (out_sa, in_sa) = params.pair();
    let table: HashMap<u32, &InboundSa> = [(in_sa.spi(), &in_sa)].into_iter().collect();
    let inner = common::inner_packet(Family::V4, 37);
    // Deliver 1..=40 except 20 and 30; keep packet 41 for tampering.
    let mut accepted = BTreeSet::new();
    let mut held = Vec::new();
    for seq in 1..=41u64 {
        let packet = esp_packet(&out_sa, &inner);
        if seq == 20 || seq == 30 || seq == 41 {
            held.push(packet);
            continue;
        }
        receive(&table, &mut packet.clone()).unwrap();
        accepted.insert(seq);
    }
    let original = held.pop().unwrap();
    let len = original.len();
    for i in 0..len {
        for mask in [0x01u8, 0x80, 0xff, 0x10] {
            let mut packet = original.clone();
            packet[i] ^= mask;
            let got = receive(&table, &mut packet);
            let expected = match i {
                0..=3 => EspError::UnknownSpi,
                4..=7 => expected_for_seq(
                    params,
                    u32::from_be_bytes(packet[4..8].try_into().unwrap()),
                    40,
                    &accepted,
                ),
                // IV, ciphertext, ICV.
                _ => EspError::AuthenticationFailed,
            };
            assert_eq!(
                got,
                Err(expected),
                "byte {i} ^ {mask:#04x} of {len}: {params:?}"
            );
        }
    }
    // Seq changes that land on an accepted, a held, an old number or 0.
    for seq in [25u32, 20, 40, 5, 0] {
        let mut packet = original.clone();
        packet[4..8].copy_from_slice(&seq.to_be_bytes());
        let expected = expected_for_seq(params, seq, 40, &accepted);
        assert_eq!(receive(&table, &mut packet), Err(expected), "seq {seq}");
        if seq == 25 || seq == 40 {
            assert_eq!(expected, EspError::Replayed);
        }
    }
    // None of that disturbed the window: the untouched packets still pass.
    for packet in held.iter().chain([&original]) {
        let mut packet = packet.clone();
        let range = receive(&table, &mut packet).unwrap();
        assert_eq!(&packet[range], &inner[..]);
    }
}

#[test]
fn any_single_byte_change_is_rejected_with_its_reason() {
    for (out_backend, in_backend) in backend_pairs() {
        for cipher in [Cipher::AesGcm128, Cipher::AesGcm256] {
            for esn in [false, true] {
                tamper_every_byte(&SaParams {
                    cipher,
                    esn,
                    out_backend,
                    in_backend,
                    replay_window: 32,
                    ..SaParams::default()
                });
            }
        }
    }
}

#[test]
fn truncation_at_every_length_is_rejected() {
    let params = SaParams {
        outer: Family::V6,
        udp: common::nat_t(),
        ..SaParams::default()
    };
    let (out_sa, in_sa) = params.pair();
    let table: HashMap<u32, &InboundSa> = [(in_sa.spi(), &in_sa)].into_iter().collect();
    let packet = esp_packet(&out_sa, &common::inner_packet(Family::V6, 200));
    for n in 0..packet.len() {
        let mut cut = packet[..n].to_vec();
        let expected = if n < MIN_ESP_LEN {
            EspError::Truncated
        } else {
            EspError::AuthenticationFailed
        };
        assert_eq!(receive(&table, &mut cut), Err(expected), "length {n}");
        // Also straight into decapsulation, without the lookup.
        let mut cut = packet[..n].to_vec();
        assert_eq!(
            esp::decapsulate(&in_sa, &mut cut).unwrap_err(),
            expected,
            "length {n}"
        );
    }
    // The whole packet is still good (nothing was accepted).
    let mut whole = packet.clone();
    receive(&table, &mut whole).unwrap();
}

#[test]
fn replayed_packet_is_rejected() {
    for esn in [false, true] {
        let params = SaParams {
            esn,
            ..SaParams::default()
        };
        let (out_sa, in_sa) = params.pair();
        let packet = esp_packet(&out_sa, &common::inner_packet(Family::V4, 64));
        esp::decapsulate(&in_sa, &mut packet.clone()).unwrap();
        assert_eq!(
            esp::decapsulate(&in_sa, &mut packet.clone()),
            Err(EspError::Replayed)
        );
        assert_eq!(
            esp::decapsulate(&in_sa, &mut packet.clone()),
            Err(EspError::Replayed)
        );
    }
}

#[test]
fn packet_left_of_the_window_is_too_old() {
    for esn in [false, true] {
        let params = SaParams {
            esn,
            replay_window: 32,
            ..SaParams::default()
        };
        let (out_sa, in_sa) = params.pair();
        let inner = common::inner_packet(Family::V6, 10);
        let packets: Vec<Vec<u8>> = (0..100).map(|_| esp_packet(&out_sa, &inner)).collect();
        // seq 1 and 69 held back; 2..=100 except 69 delivered: top = 100,
        // window 69..=100.
        for (i, packet) in packets.iter().enumerate() {
            let seq = i + 1;
            if seq != 1 && seq != 69 {
                esp::decapsulate(&in_sa, &mut packet.clone()).unwrap();
            }
        }
        // Without ESN, 1 is left of the window. With ESN a low number left
        // of the window is taken for the next 2^32 epoch (RFC 4303 Appendix
        // A) and fails authentication instead.
        let left = if esn {
            EspError::AuthenticationFailed
        } else {
            EspError::TooOld
        };
        assert_eq!(esp::decapsulate(&in_sa, &mut packets[0].clone()), Err(left));
        // The oldest number still in the window is accepted, once.
        esp::decapsulate(&in_sa, &mut packets[68].clone()).unwrap();
        assert_eq!(
            esp::decapsulate(&in_sa, &mut packets[68].clone()),
            Err(EspError::Replayed)
        );
        assert_eq!(
            esp::decapsulate(&in_sa, &mut packets[67].clone()),
            Err(left)
        );
    }
}

fn v4_range(s: &str) -> IpRange {
    s.parse().unwrap()
}

#[test]
fn inner_packet_outside_the_selectors_is_a_policy_mismatch() {
    // The peer's outbound SA is wider than our inbound SA: 10.0.0.0/8 both
    // ways versus 10.1.0.0/16 -> 10.2.0.0/16, UDP to ports 5000..=5999.
    let narrow = TrafficSelector::new(v4_range("10.1.0.0/16"), v4_range("10.2.0.0/16"))
        .unwrap()
        .with_protocol(ip_proto::UDP)
        .with_dst_ports(PortRange::new(5000, 5999).unwrap());
    let wide = TrafficSelector::new(v4_range("10.0.0.0/8"), v4_range("10.0.0.0/8")).unwrap();
    let params = SaParams {
        out_selectors: vec![wide],
        in_selectors: vec![narrow],
        ..SaParams::default()
    };
    let (out_sa, in_sa) = params.pair();
    let spec = InnerSpec::new(Family::V4, 100);
    let ok = common::inner_packet_with(spec);
    let mut packet = esp_packet(&out_sa, &ok);
    let dec = esp::decapsulate(&in_sa, &mut packet).unwrap();
    assert_eq!(&packet[dec.range], &ok[..]);

    let outside = [
        InnerSpec {
            src: "10.9.0.1".parse().unwrap(),
            ..spec
        },
        InnerSpec {
            dst: "10.1.0.7".parse().unwrap(),
            ..spec
        },
        InnerSpec {
            dst_port: 6000,
            ..spec
        },
        // Too short for UDP: protocol 253.
        InnerSpec::new(Family::V4, 4),
    ];
    for spec in outside {
        let inner = common::inner_packet_with(spec);
        let mut packet = esp_packet(&out_sa, &inner);
        assert_eq!(
            esp::decapsulate(&in_sa, &mut packet),
            Err(EspError::PolicyMismatch),
            "{spec:?}"
        );
    }
    // IPv6 inner through an IPv4-only SA.
    let params6 = SaParams {
        out_selectors: common::any_selectors(),
        in_selectors: vec![wide],
        ..SaParams::default()
    };
    let (out_sa, in_sa) = params6.pair();
    let mut packet = esp_packet(&out_sa, &common::inner_packet(Family::V6, 100));
    assert_eq!(
        esp::decapsulate(&in_sa, &mut packet),
        Err(EspError::PolicyMismatch)
    );

    // And on the way out: the outbound SA refuses what its selectors do not
    // cover, before taking a sequence number.
    let params = SaParams {
        out_selectors: vec![narrow],
        ..SaParams::default()
    };
    let out_sa = params.outbound();
    let inner = common::inner_packet_with(InnerSpec {
        dst_port: 7000,
        ..spec
    });
    let mut frame = Frame::new(&inner);
    assert_eq!(frame.encapsulate(&out_sa), Err(EspError::PolicyMismatch));
    assert_eq!(out_sa.next_seq(), Some(1));
}

/// Crafted plaintexts the transform would never produce, each sealed
/// correctly so that only the check under test can refuse them.
#[test]
fn crafted_payloads_are_rejected_with_their_reason() {
    let params = SaParams::default();
    let in_sa = params.inbound();
    let v4 = common::inner_packet(Family::V4, 50);
    let v6 = common::inner_packet(Family::V6, 50);
    let mut seq = 0u64;
    let mut check = |plaintext: Vec<u8>, expected: Result<usize, EspError>, what: &str| {
        seq += 1;
        let mut packet = common::seal_raw(&params, seq, &plaintext);
        let got = esp::decapsulate(&in_sa, &mut packet).map(|d| d.range.len());
        assert_eq!(got, expected, "{what}");
    };

    check(common::esp_plaintext(&v4, 0, 4), Ok(v4.len()), "valid IPv4");
    check(
        common::esp_plaintext(&v6, 0, 41),
        Ok(v6.len()),
        "valid IPv6",
    );
    check(
        common::esp_plaintext(&v4, 13, 4),
        Ok(v4.len()),
        "TFC padding is cut off",
    );

    // Padding bytes not 1, 2, 3...
    let mut p = v4.clone();
    p.extend([1, 7, 3, 3, 4]);
    check(p, Err(EspError::BadPadding), "padding 1, 7, 3");
    // Longer padding than RFC 4303's minimum is fine if it counts up.
    let mut p = v4.clone();
    p.extend(1..=10u8);
    p.extend([10, 4]);
    check(p, Ok(v4.len()), "10 bytes of padding");
    // A pad length longer than the plaintext.
    let mut p = v4[..10].to_vec();
    p.extend([200, 4]);
    check(p, Err(EspError::BadPadding), "pad length past the start");

    check(
        common::esp_plaintext(&v4, 0, 6),
        Err(EspError::BadNextHeader),
        "next header TCP",
    );
    check(
        common::esp_plaintext(&v4, 0, 41),
        Err(EspError::BadNextHeader),
        "IPv4 packet, next header 41",
    );
    check(
        common::esp_plaintext(&v6, 0, 4),
        Err(EspError::BadNextHeader),
        "IPv6 packet, next header 4",
    );
    check(
        common::esp_plaintext(&[], 0, 59),
        Err(EspError::DummyPacket),
        "dummy",
    );
    check(
        common::esp_plaintext(&[0xaa; 40], 0, 59),
        Err(EspError::DummyPacket),
        "dummy with junk",
    );
    check(
        common::esp_plaintext(&[], 0, 4),
        Err(EspError::MalformedInner),
        "empty payload",
    );

    // Inner IPv4 length past what was sent.
    let mut bad = v4.clone();
    bad[3] += 1;
    let mut ip = ipv4::Packet::new_unchecked(&mut bad[..]);
    ip.fill_checksum();
    check(
        common::esp_plaintext(&bad, 0, 4),
        Err(EspError::MalformedInner),
        "IPv4 total length too big",
    );
    // Inner IPv4 checksum wrong.
    let mut bad = v4.clone();
    bad[10] ^= 1;
    check(
        common::esp_plaintext(&bad, 0, 4),
        Err(EspError::MalformedInner),
        "IPv4 checksum",
    );
    // Inner IPv4 header cut short.
    check(
        common::esp_plaintext(&v4[..19], 0, 4),
        Err(EspError::MalformedInner),
        "IPv4 header cut",
    );
    // Inner IPv6 payload length past what was sent.
    let mut bad = v6.clone();
    bad[5] += 1;
    check(
        common::esp_plaintext(&bad, 0, 41),
        Err(EspError::MalformedInner),
        "IPv6 payload length",
    );
    check(
        common::esp_plaintext(&v6[..39], 0, 41),
        Err(EspError::MalformedInner),
        "IPv6 header cut",
    );
    // Not IP at all.
    check(
        common::esp_plaintext(&[0x00; 40], 0, 4),
        Err(EspError::BadNextHeader),
        "version 0, next header 4",
    );
}

#[test]
fn spi_not_of_this_sa_is_unknown() {
    let params = SaParams::default();
    let out_sa = params.outbound();
    let other = SaParams {
        spi: common::SPI + 1,
        ..SaParams::default()
    }
    .inbound();
    let mut packet = esp_packet(&out_sa, &common::inner_packet(Family::V4, 10));
    assert_eq!(
        esp::decapsulate(&other, &mut packet),
        Err(EspError::UnknownSpi)
    );
}

#[test]
fn wrong_key_fails_authentication() {
    let out_sa = SaParams::default().outbound();
    let in_sa = SaParams {
        seed: 99,
        ..SaParams::default()
    }
    .inbound();
    let mut packet = esp_packet(&out_sa, &common::inner_packet(Family::V4, 10));
    assert_eq!(
        esp::decapsulate(&in_sa, &mut packet),
        Err(EspError::AuthenticationFailed)
    );
    // ESN on one side only: the AAD differs.
    let out_sa = SaParams::default().outbound();
    let in_sa = SaParams {
        esn: true,
        ..SaParams::default()
    }
    .inbound();
    let mut packet = esp_packet(&out_sa, &common::inner_packet(Family::V4, 10));
    assert_eq!(
        esp::decapsulate(&in_sa, &mut packet),
        Err(EspError::AuthenticationFailed)
    );
}

/// Calls every accessor of every view that accepts `data`.
fn poke_views(data: &[u8]) {
    if let Ok(f) = ethernet::Frame::new_checked(data) {
        let _ = (f.dst_addr(), f.src_addr(), f.ethertype(), f.payload().len());
        let _ = ethernet::Repr::parse(&f);
    }
    if let Ok(p) = ipv4::Packet::new_checked(data) {
        let _ = (
            p.version(),
            p.header_len(),
            p.dscp_ecn(),
            p.total_len(),
            p.ident(),
        );
        let _ = (
            p.dont_frag(),
            p.more_frags(),
            p.frag_offset(),
            p.is_fragment(),
            p.ttl(),
        );
        let _ = (
            p.protocol(),
            p.checksum(),
            p.src_addr(),
            p.dst_addr(),
            p.verify_checksum(),
        );
        assert!(p.header().len() >= ipv4::MIN_HEADER_LEN);
        assert_eq!(p.options().len(), p.header_len() - ipv4::MIN_HEADER_LEN);
        assert_eq!(
            p.payload().len(),
            usize::from(p.total_len()) - p.header_len()
        );
        let _ = ipv4::Repr::parse(&p);
    }
    if let Ok(p) = ipv6::Packet::new_checked(data) {
        let _ = (
            p.version(),
            p.traffic_class(),
            p.flow_label(),
            p.next_header(),
            p.hop_limit(),
        );
        let _ = (p.src_addr(), p.dst_addr());
        assert_eq!(p.payload().len(), usize::from(p.payload_len()));
        let _ = ipv6::Repr::parse(&p);
    }
    if let Ok(p) = udp::Packet::new_checked(data) {
        let _ = (p.src_port(), p.dst_port(), p.len(), p.checksum());
        assert_eq!(p.payload().len() + udp::HEADER_LEN, usize::from(p.len()));
        let _ = p.verify_checksum_v4([1, 2, 3, 4].into(), [5, 6, 7, 8].into());
        let _ = p.verify_checksum_v6(&"fd00::1".parse().unwrap(), &"fd00::2".parse().unwrap());
        let _ = udp::Repr::parse(&p);
        let _ = udp::classify_nat_t(p.payload());
    }
    if let Ok(p) = wire::esp::Packet::new_checked(data) {
        let _ = (p.spi(), p.seq_number(), p.payload().len());
        let _ = wire::esp::Repr::parse(&p);
    }
    if let Ok(t) = wire::esp::parse_trailer(data) {
        assert!(t.payload_len + usize::from(t.pad_len) + 2 == data.len());
    }
    let _ = wire::IpVersion::of_packet(data);
    let _ = FlowKey::parse(data);
    let _ = selector::matches_any(&common::any_selectors(), data);
    let _ = wire::checksum::data(data);
}

/// Mutable views: setters on a checked view must not panic either, and
/// payload accessors stay in bounds after lengths are rewritten.
fn poke_views_mut(data: &[u8], value: u16) {
    let mut buf = data.to_vec();
    if let Ok(mut p) = ipv4::Packet::new_checked(&mut buf[..]) {
        p.set_total_len(value);
        let _ = p.payload().len();
        let _ = p.payload_mut().len();
        p.fill_checksum();
        let _ = p.verify_checksum();
    }
    let mut buf = data.to_vec();
    if let Ok(mut p) = ipv6::Packet::new_checked(&mut buf[..]) {
        p.set_payload_len(value);
        let _ = p.payload().len();
        let _ = p.payload_mut().len();
    }
    let mut buf = data.to_vec();
    if let Ok(mut p) = udp::Packet::new_checked(&mut buf[..]) {
        p.set_len(value);
        let _ = p.payload().len();
        let _ = p.payload_mut().len();
        p.fill_checksum_v4([1, 2, 3, 4].into(), [5, 6, 7, 8].into());
        p.fill_checksum_v6(&"fd00::1".parse().unwrap(), &"fd00::2".parse().unwrap());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn wire_views_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200), value in any::<u16>()) {
        poke_views(&data);
        poke_views_mut(&data, value);
    }

    #[test]
    fn ip_looking_bytes_never_panic(
        first in prop_oneof![Just(0x45u8), Just(0x46), Just(0x4f), Just(0x60), Just(0x44)],
        data in proptest::collection::vec(any::<u8>(), 0..120),
        value in any::<u16>(),
    ) {
        let mut data = data;
        data.insert(0, first);
        poke_views(&data);
        poke_views_mut(&data, value);
    }

    #[test]
    fn decapsulating_arbitrary_bytes_never_panics(
        with_spi in any::<bool>(),
        data in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let params = SaParams { esn: with_spi, ..SaParams::default() };
        let in_sa = params.inbound();
        let mut data = data;
        if with_spi && data.len() >= 4 {
            data[..4].copy_from_slice(&params.spi.to_be_bytes());
        }
        let result = esp::decapsulate(&in_sa, &mut data);
        // Without the key nothing gets through authentication.
        prop_assert!(matches!(
            result,
            Err(EspError::Truncated | EspError::UnknownSpi | EspError::TooOld | EspError::AuthenticationFailed)
        ), "{:?}", result);
    }

    #[test]
    fn decrypted_arbitrary_plaintext_never_panics(
        plaintext in proptest::collection::vec(any::<u8>(), 0..200),
        seq in 1u64..1000,
    ) {
        // Authentic packets with arbitrary content: everything after
        // authentication must cope.
        let params = SaParams::default();
        let in_sa = params.inbound();
        let mut packet = common::seal_raw(&params, seq, &plaintext);
        match esp::decapsulate(&in_sa, &mut packet) {
            Ok(d) => prop_assert!(d.range.end <= packet.len()),
            Err(e) => prop_assert!(matches!(
                e,
                EspError::BadPadding | EspError::BadNextHeader | EspError::DummyPacket
                    | EspError::MalformedInner | EspError::PolicyMismatch | EspError::Truncated
            ), "{:?}", e),
        }
    }

    #[test]
    fn encapsulating_arbitrary_frames_never_panics(
        data in proptest::collection::vec(any::<u8>(), 0..300),
        offset in 0usize..120,
        len in 0usize..300,
        outer6 in any::<bool>(),
        nat_t in any::<bool>(),
    ) {
        let params = SaParams {
            outer: if outer6 { Family::V6 } else { Family::V4 },
            udp: if nat_t { common::nat_t() } else { None },
            ..SaParams::default()
        };
        let out_sa = params.outbound();
        let mut data = data;
        match esp::encapsulate(&out_sa, &mut data, offset, len) {
            Ok(out) => prop_assert!(out.range.end <= data.len()),
            Err(e) => prop_assert!(matches!(
                e,
                EspError::NoHeadroom | EspError::NoTailroom | EspError::InnerNotIp
                    | EspError::MalformedInner | EspError::PolicyMismatch
            ), "{:?}", e),
        }
    }
}
