//! Shared test fixtures.
#![allow(dead_code)]

use xdpsec_api::sa::{IpProtocol, PortRange};
use xdpsec_api::{Direction, GcmKey, Lifetimes, SaSpec, TrafficSelector, UdpEncap};

pub const KEY128_HEX: &str = "000102030405060708090a0b0c0d0e0f10111213";
pub const KEY256_HEX: &str =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fdeadbeef";

pub fn sa(spi: u32, direction: Direction) -> SaSpec {
    SaSpec {
        spi,
        direction,
        key: GcmKey::from_hex(KEY128_HEX).unwrap(),
        esn: false,
        replay_window: 1024,
        tunnel_local: "198.18.0.1".parse().unwrap(),
        tunnel_remote: "198.18.0.2".parse().unwrap(),
        encap: None,
        selectors: vec![TrafficSelector::between(
            "10.1.0.0/24".parse().unwrap(),
            "10.2.0.0/24".parse().unwrap(),
        )],
        lifetime: Lifetimes::default(),
        initial_seq: None,
        resource: None,
    }
}

/// An SA with every optional field set.
pub fn full_sa() -> SaSpec {
    SaSpec {
        spi: 0xdead_beef,
        direction: Direction::Out,
        key: GcmKey::from_hex(KEY256_HEX).unwrap(),
        esn: true,
        replay_window: 8192,
        tunnel_local: "fd00::1".parse().unwrap(),
        tunnel_remote: "fd00::2".parse().unwrap(),
        encap: Some(UdpEncap {
            sport: 4500,
            dport: 61000,
        }),
        selectors: vec![
            TrafficSelector::between("10.1.0.0/24".parse().unwrap(), "0.0.0.0/0".parse().unwrap()),
            TrafficSelector {
                local: "fd00:1::/64".parse().unwrap(),
                remote: "fd00:2::/48".parse().unwrap(),
                protocol: Some(IpProtocol::TCP),
                local_ports: Some(PortRange::new(1024, 65535).unwrap()),
                remote_ports: Some(PortRange::single(443)),
            },
        ],
        lifetime: Lifetimes {
            soft_bytes: Some(1 << 30),
            hard_bytes: Some(1 << 31),
            soft_packets: Some(1_000_000),
            hard_packets: Some(2_000_000),
        },
        initial_seq: Some(1 << 40),
        resource: None,
    }
}
