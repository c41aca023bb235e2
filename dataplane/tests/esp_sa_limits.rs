//! The outbound sequence number never wraps, lifetimes (soft: one event,
//! hard: refuse) in packets and bytes, SA config validation, and the
//! encapsulation errors for buffers and inner packets.

mod common;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Family, Frame, InnerSpec, SaParams};
use xdpsec_dataplane::crypto::Backend;
use xdpsec_dataplane::esp::{self, EspError, MAX_HEADROOM};
use xdpsec_dataplane::sa::{
    Cipher, Direction, InboundSa, LifetimeEvent, Lifetimes, Limit, OutboundSa, Sa, SaConfig,
    SaConfigError, UdpEncap, MAX_SEQ_32, MAX_SEQ_64,
};
use zeroize::Zeroizing;

fn send(sa: &OutboundSa, inner: &[u8]) -> Result<esp::Encapsulated, EspError> {
    Frame::new(inner).encapsulate(sa)
}

#[test]
fn non_esn_sequence_space_ends_at_2_pow_32_minus_1() {
    let params = SaParams {
        initial_seq: MAX_SEQ_32 - 2,
        ..SaParams::default()
    };
    let (out_sa, in_sa) = params.pair();
    let inner = common::inner_packet(Family::V4, 100);
    for expected in [MAX_SEQ_32 - 2, MAX_SEQ_32 - 1, MAX_SEQ_32] {
        assert_eq!(out_sa.next_seq(), Some(expected));
        let (outer, out) = common::encap(&out_sa, &inner);
        assert_eq!(out.seq, expected);
        // The receiver takes them, the last one included.
        let mut esp_bytes = outer[common::esp_range(&outer)].to_vec();
        let dec = esp::decapsulate(&in_sa, &mut esp_bytes).unwrap();
        assert_eq!(dec.seq, expected);
    }
    assert!(out_sa.is_seq_exhausted());
    assert_eq!(out_sa.next_seq(), None);
    for _ in 0..10 {
        assert_eq!(
            send(&out_sa, &inner).unwrap_err(),
            EspError::SequenceExhausted
        );
    }
    assert!(out_sa.is_seq_exhausted());
}

#[test]
fn esn_sequence_space_ends_at_2_pow_64_minus_1() {
    let params = SaParams {
        esn: true,
        initial_seq: MAX_SEQ_64 - 2,
        ..SaParams::default()
    };
    let out_sa = params.outbound();
    let inner = common::inner_packet(Family::V6, 10);
    for expected in [MAX_SEQ_64 - 2, MAX_SEQ_64 - 1, MAX_SEQ_64] {
        let (outer, out) = common::encap(&out_sa, &inner);
        assert_eq!(out.seq, expected);
        let esp_bytes = &outer[common::esp_range(&outer)];
        assert_eq!(&esp_bytes[4..8], &(expected as u32).to_be_bytes());
        assert_eq!(&esp_bytes[8..16], &expected.to_be_bytes());
    }
    // Refused from now on, however often asked: the counter does not wrap
    // back to 0.
    for _ in 0..1000 {
        assert_eq!(
            send(&out_sa, &inner).unwrap_err(),
            EspError::SequenceExhausted
        );
    }
    assert_eq!(out_sa.next_seq(), None);
}

#[test]
fn esn_crosses_the_32_bit_boundary() {
    let params = SaParams {
        esn: true,
        initial_seq: MAX_SEQ_32 - 1,
        ..SaParams::default()
    };
    let (out_sa, in_sa) = params.pair();
    let inner = common::inner_packet(Family::V4, 33);
    // Establish the receiver's window below the boundary first.
    let warm = SaParams {
        esn: true,
        initial_seq: MAX_SEQ_32 - 2000,
        ..SaParams::default()
    }
    .outbound();
    let (outer, _) = common::encap(&warm, &inner);
    esp::decapsulate(&in_sa, &mut outer[common::esp_range(&outer)].to_vec()).unwrap();
    for expected in [MAX_SEQ_32 - 1, MAX_SEQ_32, MAX_SEQ_32 + 1, MAX_SEQ_32 + 2] {
        let (outer, out) = common::encap(&out_sa, &inner);
        assert_eq!(out.seq, expected);
        let mut esp_bytes = outer[common::esp_range(&outer)].to_vec();
        let dec = esp::decapsulate(&in_sa, &mut esp_bytes).unwrap();
        assert_eq!(dec.seq, expected);
        assert_eq!(&esp_bytes[dec.range], &inner[..]);
    }
}

#[test]
fn sequence_numbers_are_unique_across_threads_and_stop_at_the_end() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 300;
    const AVAILABLE: u64 = 1000;
    let params = SaParams {
        initial_seq: MAX_SEQ_32 - AVAILABLE + 1,
        ..SaParams::default()
    };
    let out_sa = params.outbound();
    let inner = common::inner_packet(Family::V4, 20);
    let exhausted = AtomicUsize::new(0);
    let seqs: Vec<u64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    for _ in 0..PER_THREAD {
                        match send(&out_sa, &inner) {
                            Ok(out) => mine.push(out.seq),
                            Err(EspError::SequenceExhausted) => {
                                exhausted.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let unique: BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(seqs.len() as u64, AVAILABLE);
    assert_eq!(
        unique.len() as u64,
        AVAILABLE,
        "a sequence number was used twice"
    );
    assert_eq!(*unique.first().unwrap(), params.initial_seq);
    assert_eq!(*unique.last().unwrap(), MAX_SEQ_32);
    assert_eq!(
        exhausted.load(Ordering::Relaxed),
        THREADS * PER_THREAD - AVAILABLE as usize
    );
}

#[test]
fn nearly_exhausted_sequence_space_raises_an_event_once() {
    // The event fires at 15/16 of the space.
    let threshold = MAX_SEQ_32 - (MAX_SEQ_32 >> 4);
    let params = SaParams {
        initial_seq: threshold - 2,
        ..SaParams::default()
    };
    let out_sa = params.outbound();
    let inner = common::inner_packet(Family::V4, 20);
    let events: Vec<_> = (0..6)
        .map(|_| send(&out_sa, &inner).unwrap().event)
        .collect();
    let expected = Some(LifetimeEvent {
        seq_nearly_exhausted: true,
        ..LifetimeEvent::default()
    });
    assert_eq!(events, [None, None, expected, None, None, None]);

    // An SA that starts past the threshold says so on its first packet.
    let params = SaParams {
        initial_seq: MAX_SEQ_32 - 5,
        ..SaParams::default()
    };
    let out_sa = params.outbound();
    assert_eq!(send(&out_sa, &inner).unwrap().event, expected);
    assert_eq!(send(&out_sa, &inner).unwrap().event, None);
}

#[test]
fn packet_lifetimes_outbound() {
    let params = SaParams {
        out_lifetimes: Lifetimes {
            packets: Limit {
                soft: Some(3),
                hard: Some(5),
            },
            ..Lifetimes::default()
        },
        ..SaParams::default()
    };
    let out_sa = params.outbound();
    let inner = common::inner_packet(Family::V4, 50);
    let soft = Some(LifetimeEvent {
        soft_packets: true,
        ..LifetimeEvent::default()
    });
    let events: Vec<_> = (0..5)
        .map(|_| send(&out_sa, &inner).unwrap().event)
        .collect();
    assert_eq!(events, [None, None, soft, None, None]);
    assert!(!out_sa.is_hard_expired());
    for _ in 0..3 {
        assert_eq!(
            send(&out_sa, &inner).unwrap_err(),
            EspError::LifetimeExpired
        );
    }
    assert!(out_sa.is_hard_expired());
    assert_eq!(out_sa.usage().0, 6, "5 sent + the one that hit the limit");
}

#[test]
fn byte_lifetimes_outbound() {
    let inner = common::inner_packet(Family::V4, 80); // 100 bytes
    let params = SaParams {
        out_lifetimes: Lifetimes {
            bytes: Limit {
                soft: Some(250),
                hard: Some(500),
            },
            ..Lifetimes::default()
        },
        ..SaParams::default()
    };
    let out_sa = params.outbound();
    let soft = Some(LifetimeEvent {
        soft_bytes: true,
        ..LifetimeEvent::default()
    });
    let events: Vec<_> = (0..5)
        .map(|_| send(&out_sa, &inner).unwrap().event)
        .collect();
    // 300 bytes after the third packet crosses 250; 500 is exactly the hard
    // limit, still allowed.
    assert_eq!(events, [None, None, soft, None, None]);
    assert_eq!(out_sa.usage(), (5, 500));
    // A packet that would go past the hard limit is refused, and so is
    // everything after it, even a smaller packet that would have fit.
    assert_eq!(
        send(&out_sa, &inner).unwrap_err(),
        EspError::LifetimeExpired
    );
    let tiny = common::inner_packet(Family::V4, 0);
    assert_eq!(send(&out_sa, &tiny).unwrap_err(), EspError::LifetimeExpired);
}

#[test]
fn soft_event_fires_once_across_threads() {
    let params = SaParams {
        out_lifetimes: Lifetimes {
            packets: Limit {
                soft: Some(777),
                hard: None,
            },
            bytes: Limit {
                soft: Some(30_000),
                hard: None,
            },
        },
        ..SaParams::default()
    };
    let out_sa = params.outbound();
    let inner = common::inner_packet(Family::V4, 0); // 20 bytes
    let (packets, bytes) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let (mut p, mut b) = (0, 0);
                    for _ in 0..500 {
                        if let Some(e) = send(&out_sa, &inner).unwrap().event {
                            p += usize::from(e.soft_packets);
                            b += usize::from(e.soft_bytes);
                        }
                    }
                    (p, b)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
    });
    assert_eq!((packets, bytes), (1, 1));
    assert_eq!(out_sa.usage(), (2000, 40_000));
}

#[test]
fn inbound_lifetimes_count_authentic_packets_only() {
    let params = SaParams {
        in_lifetimes: Lifetimes {
            packets: Limit {
                soft: Some(1),
                hard: Some(2),
            },
            ..Lifetimes::default()
        },
        ..SaParams::default()
    };
    let (out_sa, in_sa) = params.pair();
    let inner = common::inner_packet(Family::V6, 64);
    let packets: Vec<Vec<u8>> = (0..4)
        .map(|_| {
            let (outer, _) = common::encap(&out_sa, &inner);
            outer[common::esp_range(&outer)].to_vec()
        })
        .collect();
    // Forgeries do not count.
    for _ in 0..5 {
        let mut forged = packets[0].clone();
        let n = forged.len();
        forged[n - 1] ^= 1;
        assert_eq!(
            esp::decapsulate(&in_sa, &mut forged),
            Err(EspError::AuthenticationFailed)
        );
    }
    assert_eq!(in_sa.usage(), (0, 0));
    let first = esp::decapsulate(&in_sa, &mut packets[0].clone()).unwrap();
    assert_eq!(
        first.event,
        Some(LifetimeEvent {
            soft_packets: true,
            ..LifetimeEvent::default()
        })
    );
    assert_eq!(
        esp::decapsulate(&in_sa, &mut packets[1].clone())
            .unwrap()
            .event,
        None
    );
    assert_eq!(
        esp::decapsulate(&in_sa, &mut packets[2].clone()),
        Err(EspError::LifetimeExpired)
    );
    assert!(in_sa.is_hard_expired());
    assert_eq!(
        esp::decapsulate(&in_sa, &mut packets[3].clone()),
        Err(EspError::LifetimeExpired)
    );
}

#[test]
fn encapsulation_buffer_and_inner_errors() {
    for outer in Family::BOTH {
        for udp in [None, common::nat_t()] {
            let params = SaParams {
                outer,
                udp,
                ..SaParams::default()
            };
            let out_sa = params.outbound();
            let inner = common::inner_packet(Family::V4, 100);
            let headroom = out_sa.headroom();
            let tailroom = out_sa.tailroom(inner.len());
            assert!(headroom <= MAX_HEADROOM);

            let mut f = Frame::with_room(&inner, headroom - 1, tailroom);
            assert_eq!(f.encapsulate(&out_sa), Err(EspError::NoHeadroom));
            let mut f = Frame::with_room(&inner, headroom, tailroom - 1);
            assert_eq!(f.encapsulate(&out_sa), Err(EspError::NoTailroom));
            // Inner range past the buffer.
            let mut f = Frame::new(&inner);
            f.len = f.buf.len();
            assert_eq!(f.encapsulate(&out_sa), Err(EspError::NoTailroom));
            f.offset = usize::MAX;
            assert_eq!(f.encapsulate(&out_sa), Err(EspError::NoTailroom));

            // Not IP, empty, and malformed inner packets.
            let mut f = Frame::new(&[0x00; 40]);
            assert_eq!(f.encapsulate(&out_sa), Err(EspError::InnerNotIp));
            let mut f = Frame::new(&[]);
            assert_eq!(f.encapsulate(&out_sa), Err(EspError::MalformedInner));
            let mut f = Frame::new(&inner[..19]);
            assert_eq!(f.encapsulate(&out_sa), Err(EspError::MalformedInner));
            let mut f = Frame::new(&inner[..inner.len() - 1]);
            assert_eq!(
                f.encapsulate(&out_sa),
                Err(EspError::MalformedInner),
                "total length > len"
            );
            let inner6 = common::inner_packet(Family::V6, 10);
            let mut f = Frame::new(&inner6[..inner6.len() - 1]);
            assert_eq!(
                f.encapsulate(&out_sa),
                Err(EspError::MalformedInner),
                "payload length > len"
            );

            // None of these used a sequence number.
            assert_eq!(out_sa.next_seq(), Some(1));
        }
    }
}

#[test]
fn too_big_outer_packet_is_refused() {
    let params = SaParams::default();
    let out_sa = params.outbound();
    let inner = common::inner_packet_with(InnerSpec::new(Family::V4, 65535 - 20));
    let mut f = Frame::new(&inner);
    assert_eq!(f.encapsulate(&out_sa), Err(EspError::TooBig));
    // Over IPv6 the 40-byte outer header does not count against the limit.
    let params = SaParams {
        outer: Family::V6,
        ..SaParams::default()
    };
    let (out_sa, in_sa) = params.pair();
    let inner = common::inner_packet_with(InnerSpec::new(Family::V4, 65535 - 20 - 40));
    let (outer, _) = common::encap(&out_sa, &inner);
    assert!(outer.len() <= 65535 + 40);
    let mut esp_bytes = outer[common::esp_range(&outer)].to_vec();
    let dec = esp::decapsulate(&in_sa, &mut esp_bytes).unwrap();
    assert_eq!(&esp_bytes[dec.range], &inner[..]);
}

fn base_config(direction: Direction) -> SaConfig {
    SaParams::default().config(direction)
}

#[test]
fn config_validation_names_what_is_wrong() {
    let check = |mutate: &dyn Fn(&mut SaConfig), direction: Direction, expected: SaConfigError| {
        let mut config = base_config(direction);
        mutate(&mut config);
        let err = Sa::new(config).unwrap_err();
        assert_eq!(err, expected);
        assert!(!err.to_string().is_empty());
    };
    use Direction::{Inbound, Outbound};
    check(&|c| c.spi = 255, Outbound, SaConfigError::ReservedSpi(255));
    check(&|c| c.spi = 0, Inbound, SaConfigError::ReservedSpi(0));
    check(
        &|c| c.keying_material = Zeroizing::new(vec![1; 16]),
        Outbound,
        SaConfigError::KeyingMaterialLength {
            cipher: Cipher::AesGcm128,
            expected: 20,
            got: 16,
        },
    );
    check(
        &|c| c.cipher = Cipher::AesGcm256,
        Inbound,
        SaConfigError::KeyingMaterialLength {
            cipher: Cipher::AesGcm256,
            expected: 36,
            got: 20,
        },
    );
    check(
        &|c| c.replay_window = 16,
        Inbound,
        SaConfigError::ReplayWindow(16),
    );
    check(
        &|c| c.replay_window = 8193,
        Inbound,
        SaConfigError::ReplayWindow(8193),
    );
    let v6: IpAddr = "fd00::1".parse().unwrap();
    check(
        &|c| c.remote = v6,
        Outbound,
        SaConfigError::EndpointFamilyMismatch {
            local: common::endpoints(Family::V4).0,
            remote: v6,
        },
    );
    let unspecified: IpAddr = "0.0.0.0".parse().unwrap();
    check(
        &|c| c.local = unspecified,
        Outbound,
        SaConfigError::BadEndpoint(unspecified),
    );
    let multicast: IpAddr = "224.0.0.1".parse().unwrap();
    check(
        &|c| c.remote = multicast,
        Inbound,
        SaConfigError::BadEndpoint(multicast),
    );
    check(
        &|c| {
            c.udp_encap = Some(UdpEncap {
                local_port: 4500,
                remote_port: 0,
            })
        },
        Outbound,
        SaConfigError::UdpPortZero,
    );
    check(
        &|c| c.selectors.clear(),
        Inbound,
        SaConfigError::NoSelectors,
    );
    check(&|c| c.ttl = 0, Outbound, SaConfigError::ZeroTtl);
    check(
        &|c| {
            c.lifetimes.packets = Limit {
                soft: Some(10),
                hard: Some(9),
            }
        },
        Outbound,
        SaConfigError::SoftAboveHard {
            what: "packet",
            soft: 10,
            hard: 9,
        },
    );
    check(
        &|c| {
            c.lifetimes.bytes = Limit {
                soft: None,
                hard: Some(0),
            }
        },
        Inbound,
        SaConfigError::ZeroHardLimit { what: "byte" },
    );
    check(
        &|c| c.initial_seq = 0,
        Outbound,
        SaConfigError::InitialSeq {
            seq: 0,
            max: MAX_SEQ_32,
        },
    );
    check(
        &|c| c.initial_seq = MAX_SEQ_32 + 1,
        Outbound,
        SaConfigError::InitialSeq {
            seq: MAX_SEQ_32 + 1,
            max: MAX_SEQ_32,
        },
    );
    // With ESN the same number is fine.
    let mut config = base_config(Outbound);
    config.esn = true;
    config.initial_seq = MAX_SEQ_32 + 1;
    assert!(Sa::new(config).is_ok());
    // Built for the other direction.
    assert_eq!(
        OutboundSa::new(base_config(Inbound)).unwrap_err(),
        SaConfigError::WrongDirection {
            expected: Outbound,
            got: Inbound
        }
    );
    assert_eq!(
        InboundSa::new(base_config(Outbound)).unwrap_err(),
        SaConfigError::WrongDirection {
            expected: Inbound,
            got: Outbound
        }
    );
    // Both key sizes on every backend.
    for &backend in Backend::available() {
        for cipher in [Cipher::AesGcm128, Cipher::AesGcm256] {
            let mut config = base_config(Outbound);
            config.backend = backend;
            config.cipher = cipher;
            config.keying_material = common::keying_material(cipher, 7);
            let sa = Sa::new(config).unwrap();
            assert_eq!(sa.core().backend(), backend);
            assert_eq!(sa.core().cipher(), cipher);
            assert_eq!(sa.direction(), Outbound);
        }
    }
}

#[test]
fn debug_output_never_shows_keys() {
    let mut config = base_config(Direction::Outbound);
    config.keying_material = Zeroizing::new((0..20).map(|i| 0xd0 + i as u8).collect());
    let text = format!("{config:?} {config:#?}");
    let sa = Sa::new(config).unwrap();
    let text = format!("{text} {sa:?} {sa:#?}");
    let inbound = InboundSa::new({
        let mut c = base_config(Direction::Inbound);
        c.keying_material = Zeroizing::new((0..20).map(|i| 0xd0 + i as u8).collect());
        c
    })
    .unwrap();
    let text = format!("{text} {inbound:?}");
    // Key bytes 0xd0.. and salt bytes 0xe0.. in any common rendering.
    for needle in [
        "208, 209", "224, 225", "d0d1", "D0D1", "0xd0", "e0e1", "0xe0", "[208", "[224",
    ] {
        assert!(!text.contains(needle), "{needle:?} in {text}");
    }
    assert!(text.contains("redacted"));
}
