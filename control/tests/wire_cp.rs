//! The Configuration payload (RFC 7296 section 3.15): known bytes, round
//! trips, and malformed input that must be refused without a panic.

use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;
use xdpsec_control::wire::cp::{attr, cfg_type};
use xdpsec_control::wire::{CfgAttribute, Configuration, Error};

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// What a client that wants an IPv4 and an IPv6 address and DNS servers
/// sends, written out by hand from RFC 7296 section 3.15.
const REQUEST_BYTES: [u8; 20] = [
    0x01, 0, 0, 0, // CFG_REQUEST, reserved
    0x00, 0x01, 0x00, 0x00, // INTERNAL_IP4_ADDRESS, empty
    0x00, 0x03, 0x00, 0x00, // INTERNAL_IP4_DNS, empty
    0x00, 0x08, 0x00, 0x00, // INTERNAL_IP6_ADDRESS, empty
    0x00, 0x0a, 0x00, 0x00, // INTERNAL_IP6_DNS, empty
];

#[test]
fn a_request_parses_from_and_emits_to_the_rfc_layout() {
    let cp = Configuration::parse(&REQUEST_BYTES).unwrap();
    assert_eq!(
        cp,
        Configuration {
            cfg_type: cfg_type::REQUEST,
            attributes: vec![
                CfgAttribute::Ip4Address(None),
                CfgAttribute::Ip4Dns(None),
                CfgAttribute::Ip6Address(None),
                CfgAttribute::Ip6Dns(None),
            ],
        }
    );
    let mut out = Vec::new();
    cp.emit(&mut out).unwrap();
    assert_eq!(out, REQUEST_BYTES);
}

#[test]
fn a_reply_with_values_round_trips_byte_for_byte() {
    let reply = Configuration {
        cfg_type: cfg_type::REPLY,
        attributes: vec![
            CfgAttribute::Ip4Address(Some(Ipv4Addr::new(10, 3, 0, 7))),
            CfgAttribute::Ip4Netmask(Some(Ipv4Addr::new(255, 255, 255, 255))),
            CfgAttribute::Ip4Dns(Some(Ipv4Addr::new(10, 2, 0, 53))),
            CfgAttribute::Ip6Address(Some((v6("fd00:3::7"), 128))),
            CfgAttribute::Ip6Dns(Some(v6("fd00:2::53"))),
            CfgAttribute::Ip4Subnet(Some((
                Ipv4Addr::new(10, 2, 0, 0),
                Ipv4Addr::new(255, 255, 255, 0),
            ))),
            CfgAttribute::Ip6Subnet(Some((v6("fd00:2::"), 64))),
            CfgAttribute::Other {
                kind: 28675,
                value: b"strongSwan-ish vendor attribute".to_vec(),
            },
        ],
    };
    let mut out = Vec::new();
    reply.emit(&mut out).unwrap();
    // Type 2, then the IPv4 address attribute: type 1, length 4, 10.3.0.7.
    assert_eq!(&out[..12], &[2, 0, 0, 0, 0, 1, 0, 4, 10, 3, 0, 7]);
    let parsed = Configuration::parse(&out).unwrap();
    assert_eq!(parsed, reply);
    let mut again = Vec::new();
    parsed.emit(&mut again).unwrap();
    assert_eq!(again, out);
}

#[test]
fn the_reserved_bit_of_the_attribute_type_is_ignored() {
    let bytes = [2, 0, 0, 0, 0x80, 0x01, 0, 4, 10, 3, 0, 9];
    let cp = Configuration::parse(&bytes).unwrap();
    assert_eq!(
        cp.attributes,
        vec![CfgAttribute::Ip4Address(Some(Ipv4Addr::new(10, 3, 0, 9)))]
    );
    assert_eq!(cp.attributes[0].kind(), attr::INTERNAL_IP4_ADDRESS);
}

#[test]
fn malformed_payloads_are_refused() {
    let v6_addr = |len: u8, prefix: &[u8]| -> Vec<u8> {
        let mut b = vec![2, 0, 0, 0, 0, 8, 0, len];
        b.extend_from_slice(&[0; 16]);
        b.extend_from_slice(prefix);
        b
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty body", vec![]),
        ("no reserved bytes", vec![1, 0]),
        ("CFG type 0", vec![0, 0, 0, 0]),
        ("CFG type 5", vec![5, 0, 0, 0]),
        ("attribute header cut", vec![1, 0, 0, 0, 0, 1, 0]),
        ("value past the end", vec![2, 0, 0, 0, 0, 1, 0, 4, 10, 3]),
        (
            "IPv4 address of 3 bytes",
            vec![2, 0, 0, 0, 0, 1, 0, 3, 10, 3, 0],
        ),
        (
            "IPv4 DNS of 5 bytes",
            vec![2, 0, 0, 0, 0, 3, 0, 5, 1, 2, 3, 4, 5],
        ),
        ("IPv6 address of 16 bytes", v6_addr(16, &[])),
        ("IPv6 prefix 129", v6_addr(17, &[129])),
        (
            "IPv4 subnet of 4 bytes",
            vec![2, 0, 0, 0, 0, 13, 0, 4, 10, 2, 0, 0],
        ),
    ];
    for (what, bytes) in cases {
        let got = Configuration::parse(&bytes);
        assert!(
            matches!(got, Err(Error::Malformed(_))),
            "{what}: {bytes:?} gave {got:?}"
        );
    }
}

#[test]
fn an_ipv6_prefix_over_128_is_not_emitted() {
    let cp = Configuration {
        cfg_type: cfg_type::REPLY,
        attributes: vec![CfgAttribute::Ip6Address(Some((v6("fd00:3::1"), 129)))],
    };
    assert!(cp.emit(&mut Vec::new()).is_err());
}

#[test]
fn an_oversized_value_is_refused_instead_of_truncated() {
    let cp = Configuration {
        cfg_type: cfg_type::SET,
        attributes: vec![CfgAttribute::Other {
            kind: 20000,
            value: vec![0; 70_000],
        }],
    };
    assert_eq!(
        cp.emit(&mut Vec::new()),
        Err(Error::TooLong("CP attribute value"))
    );
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_and_what_parses_round_trips(
        bytes in proptest::collection::vec(any::<u8>(), 0..96)
    ) {
        if let Ok(cp) = Configuration::parse(&bytes) {
            let mut out = Vec::new();
            cp.emit(&mut out).unwrap();
            // Re-emitting clears the reserved bytes and bits only.
            prop_assert_eq!(Configuration::parse(&out).unwrap(), cp);
            prop_assert_eq!(out.len(), bytes.len());
        }
    }
}
