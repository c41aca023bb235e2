//! Remote access over IKEv2 on a virtual clock: clients whose connection
//! has `vips` ask for virtual IPs in IKE_AUTH (CFG_REQUEST), the gateway
//! whose connection has `pools` leases one per client identity and
//! narrows each client's selectors to it; the SAs each side installs carry
//! exactly the client's virtual IPs; a full pool answers
//! INTERNAL_ADDRESS_FAILURE and installs nothing; a client that leaves
//! frees its address for the next one.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::*;
use xdpsec_api::Direction;
use xdpsec_control::ike::{Event, Reason, Target};
use xdpsec_control::wire::consts::notify;

const GW: &str = B;

fn gateway_config(pool4: &str) -> String {
    format!(
        r#"
[pools.rw4]
addrs = "{pool4}"
dns = ["10.2.0.53", "fd00:2::53"]

[pools.rw6]
addrs = "fd00:3::/120"

[connections.rw]
local_addrs = ["{GW}"]
pools = ["rw4", "rw6"]
[connections.rw.local]
auth = "psk"
id = "gw.example"
[connections.rw.remote]
auth = "psk"
[connections.rw.children.all]
local_ts = ["0.0.0.0/0", "::/0"]

[secrets.ike-rw]
secret = "remote access test secret"
"#
    )
}

fn client_config(n: usize) -> String {
    format!(
        r#"
[connections.home]
local_addrs = ["{me}"]
remote_addrs = ["{GW}"]
vips = ["0.0.0.0", "::"]
[connections.home.local]
auth = "psk"
id = "client{n}.example"
[connections.home.remote]
auth = "psk"
id = "gw.example"
[connections.home.children.all]
remote_ts = ["0.0.0.0/0", "::/0"]

[secrets.ike-rw]
secret = "remote access test secret"
"#,
        me = client_ip(n)
    )
}

fn client_ip(n: usize) -> String {
    format!("198.18.0.{}", 10 + n)
}

/// Gateway is node 0, clients 1..=n.
fn bed(clients: usize, pool4: &str) -> Sim {
    let mut nodes = vec![node(&gateway_config(pool4), GW, 1, fast_settings())];
    for n in 1..=clients {
        nodes.push(node(
            &client_config(n),
            &client_ip(n),
            100 + n as u64,
            fast_settings(),
        ));
    }
    Sim::new(nodes, 7)
}

fn vip_event(events: &[Event]) -> Option<(Vec<IpAddr>, Vec<IpAddr>)> {
    events.iter().find_map(|e| match e {
        Event::VirtualIp { addresses, dns, .. } => Some((addresses.clone(), dns.clone())),
        _ => None,
    })
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The (local, remote) prefixes of the SA a node sends with to `peer`.
fn outbound_selectors(events: &[Event], peer: &str) -> Vec<(String, String)> {
    let sas = installed(events);
    let mut v: Vec<(String, String)> = sas
        .values()
        .filter(|s| s.direction == Direction::Out && s.tunnel_remote.to_string() == peer)
        .flat_map(|s| {
            s.selectors
                .iter()
                .map(|t| (t.local.to_string(), t.remote.to_string()))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn each_client_gets_its_own_virtual_ips_and_narrowed_sas() {
    let mut sim = bed(3, "10.3.0.0/24");
    for n in 1..=3 {
        sim.nodes[n].ep.initiate(sim.now, "home").unwrap();
    }
    sim.run_for(Duration::from_secs(10));
    for n in 1..=3 {
        let (addresses, dns) = vip_event(sim.events(n))
            .unwrap_or_else(|| panic!("client {n} got no virtual IP: {:#?}", sim.events(n)));
        let (v4, v6) = (format!("10.3.0.{n}"), format!("fd00:3::{n}"));
        assert_eq!(addresses, vec![ip(&v4), ip(&v6)], "client {n}");
        assert_eq!(dns, vec![ip("10.2.0.53"), ip("fd00:2::53")]);
        // The client sends from its virtual IPs to anywhere...
        let client = outbound_selectors(sim.events(n), GW);
        assert!(
            client.contains(&(format!("{v4}/32"), "0.0.0.0/0".into()))
                && client.contains(&(format!("{v6}/128"), "::/0".into())),
            "client {n} outbound selectors: {client:?}"
        );
        assert!(client
            .iter()
            .all(|(l, _)| *l == format!("{v4}/32") || *l == format!("{v6}/128")));
        // ...and the gateway sends to exactly those addresses.
        let gateway = outbound_selectors(sim.events(0), &client_ip(n));
        assert!(
            gateway.contains(&("0.0.0.0/0".into(), format!("{v4}/32")))
                && gateway.contains(&("::/0".into(), format!("{v6}/128"))),
            "gateway towards client {n}: {gateway:?}"
        );
        assert!(gateway
            .iter()
            .all(|(_, r)| *r == format!("{v4}/32") || *r == format!("{v6}/128")));
    }
    // Each client and the gateway hold the same keys for their pair.
    let gateway = installed(sim.events(0));
    for n in 1..=3 {
        let peer = client_ip(n);
        let towards: std::collections::BTreeMap<_, _> = gateway
            .iter()
            .filter(|(_, s)| s.tunnel_remote.to_string() == peer)
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        assert_sas_match(&installed(sim.events(n)), &towards);
    }
}

#[test]
fn a_full_pool_refuses_with_internal_address_failure() {
    // One IPv4 address and no IPv6 pool in reach of the second client:
    // rw6 still has room, so make the request IPv4 only by exhausting rw4
    // and checking the family the second client gets.
    let mut sim = bed(2, "10.3.0.5");
    sim.nodes[1].ep.initiate(sim.now, "home").unwrap();
    sim.run_for(Duration::from_secs(5));
    assert_eq!(
        vip_event(sim.events(1)).map(|v| v.0),
        Some(vec![ip("10.3.0.5"), ip("fd00:3::1")])
    );
    sim.nodes[2].ep.initiate(sim.now, "home").unwrap();
    sim.run_for(Duration::from_secs(5));
    // The IPv4 pool is full, the IPv6 one is not: a partial answer.
    assert_eq!(
        vip_event(sim.events(2)).map(|v| v.0),
        Some(vec![ip("fd00:3::2")])
    );
}

#[test]
fn no_address_at_all_means_no_child_sa() {
    let only_v4 =
        |n: usize| client_config(n).replace(r#"vips = ["0.0.0.0", "::"]"#, r#"vips = ["0.0.0.0"]"#);
    let mut nodes = vec![node(&gateway_config("10.3.0.5"), GW, 1, fast_settings())];
    for n in 1..=2 {
        nodes.push(node(
            &only_v4(n),
            &client_ip(n),
            100 + n as u64,
            fast_settings(),
        ));
    }
    let mut sim = Sim::new(nodes, 9);
    sim.nodes[1].ep.initiate(sim.now, "home").unwrap();
    sim.run_for(Duration::from_secs(5));
    assert!(vip_event(sim.events(1)).is_some());
    let gateway_sas = installed(sim.events(0)).len();
    sim.nodes[2].ep.initiate(sim.now, "home").unwrap();
    sim.run_for(Duration::from_secs(5));
    assert!(vip_event(sim.events(2)).is_none());
    assert!(
        sim.events(2).iter().any(|e| matches!(
            e,
            Event::ChildSaDown {
                reason: Reason::PeerError(notify::INTERNAL_ADDRESS_FAILURE),
                ..
            }
        )),
        "{:#?}",
        sim.events(2)
    );
    assert!(installed(sim.events(2)).is_empty());
    assert_eq!(
        installed(sim.events(0)).len(),
        gateway_sas,
        "the gateway installed nothing for it"
    );

    // Client 1 leaves; its address goes to client 2 on its next try.
    sim.nodes[1]
        .ep
        .terminate(sim.now, Target::Connection("home".into()))
        .unwrap();
    sim.run_for(Duration::from_secs(5));
    sim.nodes[2]
        .ep
        .terminate(sim.now, Target::Connection("home".into()))
        .unwrap();
    sim.run_for(Duration::from_secs(5));
    sim.nodes[2].ep.initiate(sim.now, "home").unwrap();
    sim.run_for(Duration::from_secs(5));
    assert_eq!(
        vip_event(sim.events(2)).map(|v| v.0),
        Some(vec![ip("10.3.0.5")]),
        "{:#?}",
        sim.events(2)
    );
}
