//! Virtual IP pools and the CFG_REQUEST / CFG_REPLY handling built on them:
//! the config (`[pools.NAME]`, `pools`, `vips`), leases per identity in
//! both families, exhaustion and reclaiming, the lease bound, and the
//! answers a client gets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use xdpsec_control::config::{IkeConfig, PoolAddrs, PoolConfig};
use xdpsec_control::pool::{Pool, PoolError, Pools, DEFAULT_MAX_LEASES};
use xdpsec_control::vip::{self, Assigned, CfgError};
use xdpsec_control::wire::cp::cfg_type;
use xdpsec_control::wire::{AddressRange, CfgAttribute, Configuration, TrafficSelector};

const FILE: &str = "/etc/xdpsec/ike.toml";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn pool(addrs: &str, max: usize) -> Pool {
    let config = PoolConfig {
        addrs: addrs.parse().unwrap(),
        dns: Vec::new(),
    };
    Pool::new("p", &config, max)
}

const GATEWAY: &str = r#"
[pools.rw4]
addrs = "10.3.0.0/24"
dns = ["10.2.0.53", "fd00:2::53"]

[pools.rw6]
addrs = "fd00:3::/112"

[connections.rw]
pools = ["rw4", "rw6"]
[connections.rw.local]
auth = "psk"
id = "gw.example"
[connections.rw.remote]
auth = "psk"
[connections.rw.children.all]
local_ts = ["0.0.0.0/0", "::/0"]

[connections.home]
remote_addrs = ["198.18.1.1"]
vips = ["0.0.0.0", "::"]
[connections.home.local]
auth = "psk"
id = "carol@example"
[connections.home.remote]
auth = "psk"
id = "gw.example"
[connections.home.children.all]
remote_ts = ["0.0.0.0/0", "::/0"]

[secrets.ike-rw]
secret = "0sdGhpcyBpcyBhIHRlc3Qga2V5IG9mIGVub3VnaCBsZW5ndGg="
"#;

#[test]
fn pools_and_vips_parse_in_swanctl_terms() {
    let cfg = IkeConfig::parse(GATEWAY, FILE).unwrap_or_else(|e| panic!("{e}"));
    let rw4 = &cfg.pools["rw4"];
    assert_eq!(
        rw4.addrs.first(),
        ip("10.3.0.1"),
        "the network address is not handed out"
    );
    assert_eq!(
        rw4.addrs.last(),
        ip("10.3.0.254"),
        "nor the broadcast address"
    );
    assert_eq!(rw4.dns, vec![ip("10.2.0.53"), ip("fd00:2::53")]);
    assert!(cfg.pools["rw6"].addrs.is_ipv6());
    assert_eq!(cfg.connections["rw"].pools, vec!["rw4", "rw6"]);
    assert_eq!(cfg.connections["home"].vips, vec![ip("0.0.0.0"), ip("::")]);
}

#[test]
fn broken_pool_settings_name_their_field() {
    let cases = [
        (
            GATEWAY.replace(r#"pools = ["rw4", "rw6"]"#, r#"pools = ["rw4", "nope"]"#),
            "connections.rw.pools[1]",
        ),
        (
            GATEWAY.replace(r#""10.3.0.0/24""#, r#""10.3.0.9-10.3.0.1""#),
            "pools.rw4.addrs",
        ),
        (
            GATEWAY.replace(r#""10.3.0.0/24""#, r#""10.3.0.1-fd00::1""#),
            "pools.rw4.addrs",
        ),
        (
            GATEWAY.replace(r#""10.3.0.0/24""#, r#""ten.three""#),
            "pools.rw4.addrs",
        ),
        (
            GATEWAY.replace(r#"vips = ["0.0.0.0", "::"]"#, r#"vips = ["::", "::"]"#),
            "connections.home.vips[1]",
        ),
        (
            GATEWAY.replace(r#"dns = ["10.2.0.53""#, r#"dns = ["dns.example""#),
            "pools.rw4.dns",
        ),
    ];
    for (text, field) in cases {
        let e = IkeConfig::parse(&text, FILE).expect_err(field);
        let shown = e.to_string();
        assert!(
            e.field.as_deref().is_some_and(|f| f.starts_with(field)) || shown.contains(field),
            "expected an error at {field}, got: {shown}"
        );
    }
}

#[test]
fn pool_address_syntaxes() {
    let r: PoolAddrs = "10.3.0.10-10.3.0.12".parse().unwrap();
    assert_eq!(
        (r.first(), r.last(), r.len()),
        (ip("10.3.0.10"), ip("10.3.0.12"), 3)
    );
    let one: PoolAddrs = "10.3.0.7".parse().unwrap();
    assert_eq!(one.len(), 1);
    let p2p: PoolAddrs = "10.3.0.0/31".parse().unwrap();
    assert_eq!(
        (p2p.first(), p2p.len()),
        (ip("10.3.0.0"), 2),
        "a /31 keeps both"
    );
    let v6: PoolAddrs = "fd00:3::/64".parse().unwrap();
    assert_eq!(v6.first(), ip("fd00:3::1"));
    assert_eq!(v6.len(), (1u128 << 64) - 2);
    assert!(!v6.contains(ip("10.3.0.1")));
}

#[test]
fn each_identity_gets_its_own_address_in_order() {
    let mut p = pool("10.3.0.0/29", DEFAULT_MAX_LEASES);
    let addrs: Vec<IpAddr> = (0..6)
        .map(|i| p.acquire(format!("client{i}").as_bytes(), None).unwrap())
        .collect();
    let expect: Vec<IpAddr> = (1..=6)
        .map(|h| IpAddr::V4(Ipv4Addr::new(10, 3, 0, h)))
        .collect();
    assert_eq!(addrs, expect);
    assert_eq!(
        p.acquire(b"client6", None),
        Err(PoolError::Exhausted {
            pool: "p".into(),
            leases: 6
        })
    );
    assert_eq!(p.online(), 6);
}

#[test]
fn a_second_sa_of_the_same_identity_shares_its_address() {
    let mut p = pool("10.3.0.0/24", DEFAULT_MAX_LEASES);
    let a = p.acquire(b"carol", None).unwrap();
    assert_eq!(p.acquire(b"carol", Some(ip("10.3.0.99"))).unwrap(), a);
    p.release(b"carol", a).unwrap();
    assert_eq!(
        p.lease_of(b"carol"),
        Some((a, true)),
        "one SA still uses it"
    );
    p.release(b"carol", a).unwrap();
    assert_eq!(p.lease_of(b"carol"), Some((a, false)));
    assert!(
        p.release(b"carol", a).is_err(),
        "released more often than leased"
    );
}

#[test]
fn a_requested_free_address_is_honoured_and_a_foreign_one_is_not() {
    let mut p = pool("10.3.0.0/24", DEFAULT_MAX_LEASES);
    assert_eq!(
        p.acquire(b"a", Some(ip("10.3.0.50"))).unwrap(),
        ip("10.3.0.50")
    );
    // Taken, or outside the pool: the next free one instead.
    assert_eq!(
        p.acquire(b"b", Some(ip("10.3.0.50"))).unwrap(),
        ip("10.3.0.1")
    );
    assert_eq!(
        p.acquire(b"c", Some(ip("10.9.0.1"))).unwrap(),
        ip("10.3.0.2")
    );
}

#[test]
fn a_returning_client_gets_its_old_address_back() {
    let mut p = pool("10.3.0.0/24", DEFAULT_MAX_LEASES);
    let a = p.acquire(b"dave", None).unwrap();
    p.release(b"dave", a).unwrap();
    let b = p.acquire(b"erin", None).unwrap();
    assert_ne!(
        a, b,
        "an offline lease is not handed to someone else while fresh ones remain"
    );
    assert_eq!(p.acquire(b"dave", None).unwrap(), a);
    assert_eq!(p.offline(), 0);
}

#[test]
fn a_full_pool_reclaims_the_oldest_offline_lease() {
    let mut p = pool("10.3.0.1-10.3.0.3", DEFAULT_MAX_LEASES);
    let a = p.acquire(b"a", None).unwrap();
    let b = p.acquire(b"b", None).unwrap();
    let _c = p.acquire(b"c", None).unwrap();
    p.release(b"b", b).unwrap();
    p.release(b"a", a).unwrap();
    assert_eq!(p.acquire(b"d", None).unwrap(), b, "b left first");
    assert_eq!(p.lease_of(b"b"), None);
    assert_eq!(p.acquire(b"e", None).unwrap(), a);
    assert!(matches!(
        p.acquire(b"f", None),
        Err(PoolError::Exhausted { .. })
    ));
}

#[test]
fn a_huge_ipv6_pool_is_bounded_by_its_lease_limit() {
    let mut p = pool("fd00:3::/64", 4);
    for i in 0..4u8 {
        let a = p.acquire(&[i], None).unwrap();
        assert_eq!(
            a,
            IpAddr::V6(Ipv6Addr::new(0xfd00, 3, 0, 0, 0, 0, 0, u16::from(i) + 1))
        );
    }
    assert!(matches!(
        p.acquire(&[9], None),
        Err(PoolError::Exhausted { leases: 4, .. })
    ));
    p.release(&[0], ip("fd00:3::1")).unwrap();
    assert_eq!(p.acquire(&[9], None).unwrap(), ip("fd00:3::1"));
}

#[test]
fn release_refuses_what_was_not_leased() {
    let mut p = pool("10.3.0.0/24", DEFAULT_MAX_LEASES);
    let a = p.acquire(b"a", None).unwrap();
    assert!(p.release(b"b", a).is_err(), "someone else's address");
    assert!(p.release(b"a", ip("10.3.0.77")).is_err(), "not its address");
    assert!(p.release(b"a", ip("10.9.0.1")).is_err(), "not in the pool");
    assert_eq!(p.lease_of(b"a"), Some((a, true)));
}

fn gateway_pools() -> (Pools, Vec<String>) {
    let cfg = IkeConfig::parse(GATEWAY, FILE).unwrap();
    let names = cfg.connections["rw"].pools.clone();
    (Pools::from_config(&cfg, DEFAULT_MAX_LEASES), names)
}

#[test]
fn a_cfg_request_gets_an_address_of_each_family_and_the_dns_servers() {
    let (mut pools, names) = gateway_pools();
    let request = vip::request(&[ip("0.0.0.0"), ip("::")]).unwrap();
    assert_eq!(request.cfg_type, cfg_type::REQUEST);
    let leased = vip::answer(&mut pools, &names, b"carol", &request).unwrap();
    assert_eq!(leased.addresses, vec![ip("10.3.0.1"), ip("fd00:3::1")]);
    assert_eq!(
        leased.client_selectors(),
        vec![
            TrafficSelector::any(AddressRange::V4([10, 3, 0, 1].into(), [10, 3, 0, 1].into())),
            TrafficSelector::any(AddressRange::V6(
                "fd00:3::1".parse().unwrap(),
                "fd00:3::1".parse().unwrap()
            )),
        ]
    );
    // Through the wire and back, as the client reads it.
    let mut bytes = Vec::new();
    leased.reply.emit(&mut bytes).unwrap();
    let assigned = Assigned::from_reply(&Configuration::parse(&bytes).unwrap());
    assert_eq!(assigned.addresses, leased.addresses);
    assert_eq!(assigned.dns, vec![ip("10.2.0.53"), ip("fd00:2::53")]);

    let other = vip::answer(&mut pools, &names, b"dave", &request).unwrap();
    assert_eq!(other.addresses, vec![ip("10.3.0.2"), ip("fd00:3::2")]);
    assert!(pools.release(&names, b"carol", ip("10.3.0.1")));
    assert!(!pools.release(&names, b"carol", ip("10.3.0.2")));
}

#[test]
fn dns_servers_only_of_the_families_asked_for() {
    let (mut pools, names) = gateway_pools();
    let request = vip::request(&[ip("0.0.0.0")]).unwrap();
    let leased = vip::answer(&mut pools, &names, b"carol", &request).unwrap();
    assert_eq!(
        leased.reply.attributes,
        vec![
            CfgAttribute::Ip4Address(Some([10, 3, 0, 1].into())),
            CfgAttribute::Ip4Dns(Some([10, 2, 0, 53].into())),
        ]
    );
}

#[test]
fn no_address_for_the_client_is_an_internal_address_failure() {
    let cfg =
        IkeConfig::parse(&GATEWAY.replace(r#""10.3.0.0/24""#, r#""10.3.0.1""#), FILE).unwrap();
    let names = vec!["rw4".to_string()];
    let mut pools = Pools::from_config(&cfg, DEFAULT_MAX_LEASES);
    let request = vip::request(&[ip("0.0.0.0")]).unwrap();
    vip::answer(&mut pools, &names, b"first", &request).unwrap();
    let e = vip::answer(&mut pools, &names, b"second", &request).unwrap_err();
    assert!(matches!(e, CfgError::InternalAddressFailure(_)), "{e}");
    // An IPv6-only request to a connection with only an IPv4 pool.
    let v6 = vip::request(&[ip("::")]).unwrap();
    assert!(vip::answer(&mut pools, &names, b"third", &v6).is_err());
    assert_eq!(
        pools.get("rw4").unwrap().online(),
        1,
        "failures lease nothing"
    );
}

#[test]
fn a_reply_with_junk_values_yields_no_virtual_ip() {
    let reply = Configuration {
        cfg_type: cfg_type::REPLY,
        attributes: vec![
            CfgAttribute::Ip4Address(Some(Ipv4Addr::UNSPECIFIED)),
            CfgAttribute::Ip4Address(Some(Ipv4Addr::new(224, 0, 0, 1))),
            CfgAttribute::Ip6Address(Some((Ipv6Addr::UNSPECIFIED, 128))),
            CfgAttribute::Ip4Dns(Some(Ipv4Addr::BROADCAST)),
            CfgAttribute::Ip4Subnet(Some(([10, 2, 0, 0].into(), [255, 255, 0, 0].into()))),
        ],
    };
    let assigned = Assigned::from_reply(&reply);
    assert!(assigned.addresses.is_empty() && assigned.dns.is_empty());
    assert_eq!(assigned.subnets, vec![(ip("10.2.0.0"), 16)]);
    let request = Configuration {
        cfg_type: cfg_type::REQUEST,
        ..reply
    };
    assert_eq!(Assigned::from_reply(&request), Assigned::default());
    assert_eq!(vip::request(&[]), None);
}
