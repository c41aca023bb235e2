//! Round trips and malformed input for the IKEv2 wire format.

use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use xdpsec_control::wire::consts::{
    dh, encr, esn, exchange, integ, notify, payload as pt, prf, protocol, transform_type as tt,
};
use xdpsec_control::wire::{
    AddressRange, Delete, Error, Flags, Identification, IkeHeader, KeyExchange, Message, Notify,
    Payload, PayloadIter, Proposal, SecurityAssociation, TrafficSelector, TrafficSelectors,
    Transform, HEADER_LEN,
};

fn header(exchange: u8) -> IkeHeader {
    IkeHeader {
        spi_i: 0x0102_0304_0506_0708,
        spi_r: 0,
        next_payload: 0,
        minor_version: 0,
        exchange,
        flags: Flags {
            initiator: true,
            version: false,
            response: false,
        },
        message_id: 0,
        length: 0,
    }
}

fn sa() -> SecurityAssociation {
    SecurityAssociation {
        proposals: vec![
            Proposal {
                number: 1,
                protocol: protocol::IKE,
                spi: Vec::new(),
                transforms: vec![
                    Transform::with_key_length(tt::ENCR, encr::AES_GCM_16, 256),
                    Transform::new(tt::PRF, prf::HMAC_SHA2_256),
                    Transform::new(tt::DH, dh::CURVE25519),
                    Transform::new(tt::DH, dh::ECP_256),
                ],
            },
            Proposal {
                number: 2,
                protocol: protocol::IKE,
                spi: Vec::new(),
                transforms: vec![
                    Transform::with_key_length(tt::ENCR, encr::AES_CBC, 128),
                    Transform::new(tt::PRF, prf::HMAC_SHA2_512),
                    Transform::new(tt::INTEG, integ::HMAC_SHA2_512_256),
                    Transform::new(tt::DH, dh::MODP_2048),
                ],
            },
        ],
    }
}

fn esp_sa() -> SecurityAssociation {
    SecurityAssociation {
        proposals: vec![Proposal {
            number: 1,
            protocol: protocol::ESP,
            spi: vec![0xc0, 0xff, 0xee, 0x01],
            transforms: vec![
                Transform::with_key_length(tt::ENCR, encr::AES_GCM_16, 128),
                Transform::new(tt::ESN, esn::NO_ESN),
                Transform::new(tt::ESN, esn::ESN),
            ],
        }],
    }
}

fn sa_init() -> Message {
    Message {
        header: header(exchange::IKE_SA_INIT),
        payloads: vec![
            Payload::Sa(sa()),
            Payload::Ke(KeyExchange {
                group: dh::CURVE25519,
                data: vec![0x42; 32],
            }),
            Payload::Nonce((0u8..32).collect()),
            Payload::Notify(Notify::new(notify::NAT_DETECTION_SOURCE_IP, vec![0x11; 20])),
            Payload::Notify(Notify::new(
                notify::NAT_DETECTION_DESTINATION_IP,
                vec![0x22; 20],
            )),
        ],
    }
}

fn round_trip(m: &Message) {
    let bytes = m.emit().expect("emit");
    let back = Message::parse(&bytes).expect("parse");
    assert_eq!(back, m.normalized().expect("normalize"));
    assert_eq!(back.emit().expect("re-emit"), bytes);
}

fn one(p: Payload) {
    let m = Message {
        header: header(exchange::INFORMATIONAL),
        payloads: vec![p],
    };
    round_trip(&m);
}

#[test]
fn sa_init_round_trip() {
    let m = sa_init();
    let bytes = m.emit().unwrap();
    let h = IkeHeader::parse(&bytes).unwrap();
    assert_eq!(h.next_payload, pt::SA);
    assert_eq!(h.length as usize, bytes.len());
    assert_eq!(bytes[17], 0x20);
    assert_eq!(bytes[19], Flags::INITIATOR);
    let back = Message::parse(&bytes).unwrap();
    assert_eq!(back.payloads, m.payloads);
    round_trip(&m);
    let Payload::Sa(sa) = &back.payloads[0] else {
        panic!("first payload not SA")
    };
    assert_eq!(sa.proposals[0].transforms[0].key_length(), Some(256));
    assert_eq!(sa.proposals[0].transforms[1].key_length(), None);
}

#[test]
fn every_payload_round_trips() {
    one(Payload::Sa(sa()));
    one(Payload::Sa(esp_sa()));
    one(Payload::Ke(KeyExchange {
        group: dh::ECP_384,
        data: vec![7; 97],
    }));
    one(Payload::Nonce(vec![9; 64]));
    one(Payload::Notify(Notify {
        protocol: protocol::ESP,
        spi: vec![1, 2, 3, 4],
        kind: notify::REKEY_SA,
        data: Vec::new(),
    }));
    one(Payload::Notify(Notify::new(
        notify::INVALID_KE_PAYLOAD,
        dh::ECP_256.to_be_bytes().to_vec(),
    )));
    one(Payload::VendorId(b"xdpsec".to_vec()));
    one(Payload::Delete(Delete {
        protocol: protocol::IKE,
        spi_size: 0,
        spis: Vec::new(),
    }));
    one(Payload::Delete(Delete {
        protocol: protocol::ESP,
        spi_size: 4,
        spis: vec![vec![1, 2, 3, 4], vec![5, 6, 7, 8]],
    }));
    for id in [
        Identification::Ipv4(Ipv4Addr::new(198, 18, 0, 1)),
        Identification::Ipv6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)),
        Identification::Fqdn(b"gw.example.net".to_vec()),
        Identification::Rfc822(b"alice@example.net".to_vec()),
        Identification::DerDn(vec![0x30, 0x03, 0x31, 0x01, 0x00]),
        Identification::Other {
            kind: 11,
            data: b"key".to_vec(),
        },
    ] {
        one(Payload::IdI(id.clone()));
        one(Payload::IdR(id));
    }
    let ts = TrafficSelectors {
        selectors: vec![
            TrafficSelector::any(AddressRange::V4(
                Ipv4Addr::new(10, 1, 0, 0),
                Ipv4Addr::new(10, 1, 255, 255),
            )),
            TrafficSelector {
                ip_protocol: 17,
                start_port: 53,
                end_port: 53,
                range: AddressRange::V6(
                    Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0),
                    Ipv6Addr::new(0xfd00, 0, 0, 0, 0xffff, 0xffff, 0xffff, 0xffff),
                ),
            },
        ],
    };
    one(Payload::TsI(ts.clone()));
    one(Payload::TsR(ts));
    one(Payload::Auth(xdpsec_control::wire::Auth {
        method: 2,
        data: vec![1, 2, 3],
    }));
    one(Payload::Other {
        kind: pt::CERTREQ,
        body: vec![4, 1, 2, 3],
    });
    one(Payload::Encrypted {
        first_inner: pt::IDI,
        body: vec![0xaa; 48],
    });
}

#[test]
fn every_truncation_errors() {
    let bytes = sa_init().emit().unwrap();
    for n in 0..bytes.len() {
        assert!(Message::parse(&bytes[..n]).is_err(), "truncated to {n}");
    }
    // Also with the header length fixed up to match: the payload chain errs.
    for n in HEADER_LEN..bytes.len() {
        let mut b = bytes[..n].to_vec();
        b[24..28].copy_from_slice(&(n as u32).to_be_bytes());
        assert!(Message::parse(&b).is_err(), "chain truncated to {n}");
    }
}

fn with_length(mut b: Vec<u8>) -> Vec<u8> {
    let n = b.len() as u32;
    b[24..28].copy_from_slice(&n.to_be_bytes());
    b
}

#[test]
fn malformed_messages() {
    let bytes = sa_init().emit().unwrap();

    // Payload length smaller than 4 (the SA's).
    let mut b = bytes.clone();
    b[HEADER_LEN + 2..HEADER_LEN + 4].copy_from_slice(&3u16.to_be_bytes());
    assert_eq!(Message::parse(&b), Err(Error::PayloadTooShort(3)));

    // Payload length past the end.
    let mut b = bytes.clone();
    b[HEADER_LEN + 2..HEADER_LEN + 4].copy_from_slice(&u16::MAX.to_be_bytes());
    assert!(matches!(
        Message::parse(&b),
        Err(Error::PayloadOverflow {
            length: u16::MAX,
            ..
        })
    ));

    // Header length mismatch, both ways.
    let mut b = bytes.clone();
    b.push(0);
    assert_eq!(
        Message::parse(&b),
        Err(Error::LengthMismatch {
            header: bytes.len() as u32,
            actual: bytes.len() + 1
        })
    );
    let mut b = bytes.clone();
    b[24..28].copy_from_slice(&(bytes.len() as u32 - 1).to_be_bytes());
    assert!(matches!(
        Message::parse(&b),
        Err(Error::LengthMismatch { .. })
    ));

    // Wrong major version.
    let mut b = bytes.clone();
    b[17] = 0x10;
    assert_eq!(Message::parse(&b), Err(Error::UnsupportedMajorVersion(1)));
    b[17] = 0x30;
    assert_eq!(IkeHeader::peek(&b), Err(Error::UnsupportedMajorVersion(3)));
    // A different minor version is accepted.
    let mut b = bytes.clone();
    b[17] = 0x21;
    assert!(Message::parse(&b).is_ok());

    // Trailing bytes after the last payload, with a consistent header length.
    let mut b = bytes.clone();
    b.extend_from_slice(&[0, 0, 0, 4]);
    assert_eq!(
        Message::parse(&with_length(b)),
        Err(Error::TrailingBytes(4))
    );

    // Too short for a header at all.
    assert_eq!(Message::parse(&[0; 27]), Err(Error::TruncatedHeader(27)));
}

/// A message whose body is `body` after a header naming `first`.
fn raw_message(first: u8, body: &[u8]) -> Vec<u8> {
    let mut h = header(exchange::INFORMATIONAL);
    h.next_payload = first;
    h.length = (HEADER_LEN + body.len()) as u32;
    let mut b = Vec::new();
    h.emit(&mut b);
    b.extend_from_slice(body);
    b
}

#[test]
fn unknown_payloads() {
    // Unknown non-critical payload 200 between two known ones is skipped.
    let mut body = Vec::new();
    body.extend_from_slice(&[200, 0, 0, 6, 1, 2]); // Vendor ID -> 200
    body.extend_from_slice(&[pt::NONCE, 0, 0, 5, 0xee]); // 200 -> Nonce
    body.extend_from_slice(&[0, 0x80, 0, 6, 3, 4]); // Nonce (critical bit ignored)
    let m = Message::parse(&raw_message(pt::VENDOR_ID, &body)).unwrap();
    assert_eq!(
        m.payloads,
        vec![Payload::VendorId(vec![1, 2]), Payload::Nonce(vec![3, 4])]
    );

    // The same one with the critical bit set is reported with its type.
    body[7] = 0x80;
    assert_eq!(
        Message::parse(&raw_message(pt::VENDOR_ID, &body)),
        Err(Error::UnsupportedCriticalPayload(200))
    );
    let items: Vec<_> = PayloadIter::new(pt::VENDOR_ID, &body).collect();
    assert_eq!(items.len(), 2);
    assert!(items[0].is_ok());
    assert_eq!(items[1], Err(Error::UnsupportedCriticalPayload(200)));
}

#[test]
fn malformed_bodies() {
    let bad: &[(u8, &[u8])] = &[
        (pt::KE, &[0, 14, 0]),
        (pt::NOTIFY, &[3, 4, 0x40, 0, 1, 2]),
        (pt::DELETE, &[3, 4, 0, 2, 1, 2, 3, 4]),
        (pt::DELETE, &[1, 0, 0, 1]),
        (pt::IDI, &[1, 0, 0, 0, 10, 0, 0]),
        (pt::IDR, &[5, 0, 0, 0, 10, 0, 0, 1]),
        (
            pt::TSI,
            &[
                2, 0, 0, 0, 7, 0, 0, 16, 0, 0, 255, 255, 10, 0, 0, 0, 10, 0, 0, 255,
            ],
        ),
        (
            pt::TSR,
            &[
                1, 0, 0, 0, 7, 0, 0, 40, 0, 0, 255, 255, 10, 0, 0, 0, 10, 0, 0, 255,
            ],
        ),
        (pt::TSR, &[1, 0, 0, 0, 9, 0, 0, 8, 0, 0, 255, 255]),
        // Proposal claims 2 transforms, has 1.
        (pt::SA, &[0, 0, 0, 16, 1, 1, 0, 2, 0, 0, 0, 8, 1, 0, 0, 20]),
        // Transform "more" marker but nothing follows.
        (pt::SA, &[0, 0, 0, 16, 1, 1, 0, 1, 3, 0, 0, 8, 1, 0, 0, 20]),
        // Attribute truncated.
        (
            pt::SA,
            &[0, 0, 0, 18, 1, 1, 0, 1, 0, 0, 0, 10, 1, 0, 0, 20, 0x80, 14],
        ),
        // Bad proposal marker.
        (pt::SA, &[1, 0, 0, 16, 1, 1, 0, 1, 0, 0, 0, 8, 1, 0, 0, 20]),
    ];
    for (kind, b) in bad {
        let mut body = vec![0, 0];
        body.extend_from_slice(&((b.len() + 4) as u16).to_be_bytes());
        body.extend_from_slice(b);
        let r = Message::parse(&raw_message(*kind, &body));
        assert!(matches!(r, Err(Error::Malformed(_))), "{kind} {b:?}: {r:?}");
    }
}

#[test]
fn emit_rejects_oversized_fields() {
    let m = Message {
        header: header(exchange::INFORMATIONAL),
        payloads: vec![Payload::Nonce(vec![0; 70_000])],
    };
    assert!(matches!(m.emit(), Err(Error::TooLong(_))));
    let m = Message {
        header: header(exchange::INFORMATIONAL),
        payloads: vec![Payload::Delete(Delete {
            protocol: protocol::ESP,
            spi_size: 4,
            spis: vec![vec![1, 2, 3]],
        })],
    };
    assert!(m.emit().is_err());
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = Message::parse(&bytes);
        let _ = IkeHeader::peek(&bytes);
        for first in [pt::SA, pt::NOTIFY, pt::TSI, 200] {
            // The iterator stops after its first error, so flatten ends.
            for raw in PayloadIter::new(first, &bytes).flatten() {
                let _ = Payload::parse(&raw);
            }
        }
    }

    #[test]
    fn arbitrary_bodies_behind_a_valid_header_never_panic(
        first in any::<u8>(),
        body in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        if let Ok(m) = Message::parse(&raw_message(first, &body)) {
            // Whatever parses emits and parses back to itself.
            let again = m.emit().expect("re-emit");
            prop_assert_eq!(Message::parse(&again).expect("re-parse").payloads, m.payloads);
        }
    }

    #[test]
    fn mutated_sa_init_never_panics(at in 0usize..400, value in any::<u8>()) {
        let mut b = sa_init().emit().unwrap();
        let i = at % b.len();
        b[i] = value;
        let _ = Message::parse(&b);
    }
}

#[test]
fn sk_ends_the_chain() {
    // SK names its first inner payload (IDi) and must be last.
    let m = Message {
        header: header(exchange::IKE_AUTH),
        payloads: vec![Payload::Encrypted {
            first_inner: pt::IDI,
            body: vec![1; 24],
        }],
    };
    let bytes = m.emit().unwrap();
    assert_eq!(bytes[HEADER_LEN], pt::IDI);
    let mut b = bytes.clone();
    b.extend_from_slice(&[0, 0, 0, 4]);
    assert_eq!(
        Message::parse(&with_length(b)),
        Err(Error::TrailingBytes(4))
    );
}

#[test]
fn flags_round_trip() {
    for byte in 0..=u8::MAX {
        let f = Flags::from_byte(byte);
        assert_eq!(f.to_byte(), byte & 0x38);
        assert_eq!(Flags::from_byte(f.to_byte()), f);
    }
    let r = Flags::from_byte(Flags::RESPONSE);
    assert!(r.response && !r.initiator && !r.version);
}
