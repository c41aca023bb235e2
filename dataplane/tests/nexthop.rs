//! The next-hop cache against the kernel's own tables (needs root).
//!
//! Each test builds two namespaces joined by a veth pair, `nh` (a0,
//! 198.18.5.1/24, fd00:5::1/64) and `peer` (b0, 198.18.5.2/24, fd00:5::2/64),
//! and runs the cache on a thread inside `nh`. What the cache answers is
//! compared with what iproute2 shows (`ip -j link`, `ip -j neigh`). The test
//! bed removes the namespaces on drop, also when a test panics.

use std::net::IpAddr;
use std::thread::sleep;
use std::time::{Duration, Instant};

use xdpsec_dataplane::nexthop::{
    Lookup, Mac, Miss, MissReason, NeighbourKey, NextHopCache, NextHopConfig, Resolved,
};
use xdpsec_testbed::{format_mac, LinkInfo, Netns, Testbed};

/// How long a change may take to show in the cache.
const WAIT: Duration = Duration::from_secs(3);

struct Net {
    _tb: Testbed,
    a: Netns,
    b: Netns,
    a0: LinkInfo,
    b0: LinkInfo,
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net() -> Net {
    let tb = Testbed::new().expect("creating a test bed (this test needs root)");
    let a = tb.add_netns("nh").unwrap();
    let b = tb.add_netns("peer").unwrap();
    let (a0, b0) = tb.add_veth(&a, "a0", &b, "b0").unwrap();
    a.add_addr("a0", ip("198.18.5.1"), 24).unwrap();
    b.add_addr("b0", ip("198.18.5.2"), 24).unwrap();
    a.add_addr("a0", ip("fd00:5::1"), 64).unwrap();
    b.add_addr("b0", ip("fd00:5::2"), 64).unwrap();
    Net {
        _tb: tb,
        a,
        b,
        a0,
        b0,
    }
}

fn parse_mac(s: &str) -> Mac {
    let v: Vec<u8> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

/// The kernel's neighbour entry (`ip -j neigh show to ADDR dev DEV`): its
/// link-layer address, if any, and its states.
fn kernel_neighbour(ns: &Netns, dev: &str, addr: IpAddr) -> Option<(Option<Mac>, Vec<String>)> {
    let out = ns
        .ip(["-j", "neigh", "show", "to", &addr.to_string(), "dev", dev])
        .unwrap();
    if out.trim().is_empty() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let e = v.as_array()?.first()?;
    let mac = e["lladdr"].as_str().map(parse_mac);
    let states = e["state"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Some((mac, states))
}

/// The MAC the kernel has for a neighbour; panics unless it has one.
fn kernel_mac(ns: &Netns, dev: &str, addr: IpAddr) -> Mac {
    match kernel_neighbour(ns, dev, addr) {
        Some((Some(mac), _)) => mac,
        other => panic!("kernel has no address for {addr} on {dev}: {other:?}"),
    }
}

/// Polls the cache until `cond` holds, for up to [`WAIT`].
fn wait_for(
    cache: &NextHopCache,
    dst: IpAddr,
    what: &str,
    cond: impl Fn(&Lookup) -> bool,
) -> Lookup {
    let deadline = Instant::now() + WAIT;
    loop {
        let l = cache.lookup(None, dst);
        if cond(&l) {
            return l;
        }
        if Instant::now() > deadline {
            panic!(
                "{what}: lookup of {dst} is still {l:?} after {WAIT:?}; stats {:?}",
                cache.stats()
            );
        }
        sleep(Duration::from_millis(10));
    }
}

fn resolved(l: Lookup) -> Resolved {
    match l {
        Lookup::Resolved(r) => r,
        Lookup::Miss(m) => panic!("expected a resolved next hop, got {m:?}"),
    }
}

fn reason(cache: &NextHopCache, dst: IpAddr) -> MissReason {
    match cache.lookup(None, dst) {
        Lookup::Miss(m) => m.reason,
        Lookup::Resolved(r) => panic!("expected a miss for {dst}, got {r:?}"),
    }
}

fn start() -> NextHopCache {
    NextHopCache::start().expect("starting the next-hop cache")
}

#[test]
fn gateway_route_resolves_to_the_kernels_macs() {
    let n = net();
    n.a.ip(["route", "add", "10.1.0.0/16", "via", "198.18.5.2"])
        .unwrap();
    n.a.ip([
        "route",
        "add",
        "10.4.0.0/16",
        "via",
        "198.18.5.2",
        "mtu",
        "1400",
    ])
    .unwrap();
    n.a.ping(ip("198.18.5.2"), 1).unwrap();
    let gw_mac = kernel_mac(&n.a, "a0", ip("198.18.5.2"));
    assert_eq!(gw_mac, n.b0.mac, "the kernel resolved the gateway to b0");

    n.a.run_in(|| {
        let cache = start();
        let r = resolved(cache.lookup(None, ip("10.1.2.3")));
        assert_eq!(
            r,
            Resolved {
                ifindex: n.a0.ifindex,
                src_mac: n.a0.mac,
                dst_mac: gw_mac,
                mtu: n.a0.mtu,
                next_hop: ip("198.18.5.2"),
            },
            "src {} dst {}",
            format_mac(&r.src_mac),
            format_mac(&r.dst_mac)
        );
        // Restricted to the right interface: the same; to loopback: nothing.
        assert_eq!(
            cache.lookup(Some(n.a0.ifindex), ip("10.1.2.3")),
            Lookup::Resolved(r)
        );
        assert_eq!(
            cache.lookup(Some(1), ip("10.1.2.3")).miss_reason(),
            Some(MissReason::NoRoute)
        );
        // The connected route: the gateway itself is on-link.
        let on_link = resolved(cache.lookup(None, ip("198.18.5.2")));
        assert_eq!(
            (on_link.dst_mac, on_link.next_hop),
            (gw_mac, ip("198.18.5.2"))
        );
        // A route's mtu metric wins over the interface's.
        assert_eq!(resolved(cache.lookup(None, ip("10.4.0.9"))).mtu, 1400);

        let snap = cache.snapshot();
        let a0 = snap.interface_by_name("a0").expect("a0 in the link table");
        assert_eq!(
            (a0.ifindex, a0.mac, a0.mtu, a0.up),
            (n.a0.ifindex, Some(n.a0.mac), n.a0.mtu, true)
        );
        assert!(snap.route_count() >= 3, "{} routes", snap.route_count());
        assert_eq!(cache.stats().full_dumps, 1);
    })
    .unwrap();
}

#[test]
fn unknown_destination_is_no_route() {
    let n = net();
    n.a.ip(["route", "add", "blackhole", "10.201.0.0/16"])
        .unwrap();
    n.a.ip(["-6", "route", "add", "unreachable", "fd00:201::/48"])
        .unwrap();
    n.a.run_in(|| {
        let cache = start();
        // No default route in the namespace.
        for dst in ["10.200.0.1", "198.19.0.1", "fd00:dead::1"] {
            assert_eq!(
                cache.lookup(None, ip(dst)),
                Lookup::Miss(Miss {
                    reason: MissReason::NoRoute,
                    neighbour: None,
                    mtu: None,
                }),
                "{dst}"
            );
        }
        assert_eq!(reason(&cache, ip("10.201.3.4")), MissReason::Unreachable);
        assert_eq!(reason(&cache, ip("fd00:201::1")), MissReason::Unreachable);
        // Nothing to resolve for a route miss.
        let Lookup::Miss(m) = cache.lookup(None, ip("10.200.0.1")) else {
            unreachable!()
        };
        assert!(!cache.resolver().request(&m));
    })
    .unwrap();
}

#[test]
fn request_resolution_makes_the_kernel_resolve_a_missing_neighbour() {
    let n = net();
    n.a.ip(["route", "add", "10.1.0.0/16", "via", "198.18.5.2"])
        .unwrap();
    assert_eq!(
        kernel_neighbour(&n.a, "a0", ip("198.18.5.2")),
        None,
        "no traffic has gone to the peer yet"
    );
    n.a.run_in(|| {
        let cache = start();
        let gw = NeighbourKey {
            ifindex: n.a0.ifindex,
            addr: ip("198.18.5.2"),
        };
        let miss = Miss {
            reason: MissReason::NeighbourUnknown,
            neighbour: Some(gw),
            mtu: Some(1500),
        };
        assert_eq!(cache.lookup(None, ip("10.1.2.3")), Lookup::Miss(miss));
        // Nothing resolves it by itself.
        sleep(Duration::from_millis(300));
        assert_eq!(cache.lookup(None, ip("10.1.2.3")), Lookup::Miss(miss));
        assert_eq!(kernel_neighbour(&n.a, "a0", gw.addr), None);

        let resolver = cache.resolver();
        assert!(resolver.request(&miss));
        let r = resolved(wait_for(&cache, ip("10.1.2.3"), "ARP resolution", |l| {
            matches!(l, Lookup::Resolved(_))
        }));
        assert_eq!((r.dst_mac, r.src_mac), (n.b0.mac, n.a0.mac));
        assert_eq!(kernel_mac(&n.a, "a0", gw.addr), n.b0.mac);

        // A second request within the interval is rate-limited.
        assert!(cache.request_resolution(gw.ifindex, gw.addr));
        let deadline = Instant::now() + WAIT;
        while cache.stats().resolve_limited == 0 && Instant::now() < deadline {
            sleep(Duration::from_millis(5));
        }
        let s = cache.stats();
        assert_eq!(
            (s.resolve_sent, s.resolve_limited, s.resolve_failed),
            (1, 1, 0),
            "{s:?}"
        );
    })
    .unwrap();
}

#[test]
fn monitor_follows_route_neighbour_and_link_changes() {
    let n = net();
    n.a.ping(ip("198.18.5.2"), 1).unwrap();
    n.a.run_in(|| {
        let cache = NextHopCache::start_with(NextHopConfig::default()).unwrap();
        let dst = ip("10.2.0.1");
        let gen0 = cache.snapshot().generation();
        assert_eq!(reason(&cache, dst), MissReason::NoRoute);

        // A new route.
        n.a.ip(["route", "add", "10.2.0.0/16", "via", "198.18.5.2"])
            .unwrap();
        let r = resolved(wait_for(&cache, dst, "route add", |l| {
            matches!(l, Lookup::Resolved(_))
        }));
        assert_eq!(r.dst_mac, n.b0.mac);
        assert!(cache.snapshot().generation() > gen0);

        // The neighbour's address changes.
        let new_mac: Mac = [0x02, 0x00, 0x5e, 0x00, 0x00, 0x42];
        n.a.ip([
            "neigh",
            "replace",
            "198.18.5.2",
            "dev",
            "a0",
            "lladdr",
            &format_mac(&new_mac),
        ])
        .unwrap();
        wait_for(&cache, dst, "neigh replace", |l| {
            l.resolved().is_some_and(|r| r.dst_mac == new_mac)
        });
        assert_eq!(kernel_mac(&n.a, "a0", ip("198.18.5.2")), new_mac);

        // The peer goes down: a0 loses its carrier.
        n.b.ip(["link", "set", "b0", "down"]).unwrap();
        wait_for(&cache, dst, "carrier loss", |l| {
            l.miss_reason() == Some(MissReason::InterfaceDown)
        });
        n.b.ip(["link", "set", "b0", "up"]).unwrap();
        wait_for(&cache, dst, "carrier back", |l| {
            l.resolved().is_some_and(|r| r.dst_mac == new_mac)
        });

        // The neighbour entry goes away.
        n.a.ip(["neigh", "del", "198.18.5.2", "dev", "a0"]).unwrap();
        let l = wait_for(&cache, dst, "neigh del", |l| l.resolved().is_none());
        assert!(
            matches!(
                l.miss_reason(),
                Some(MissReason::NeighbourUnknown | MissReason::NeighbourFailed)
            ),
            "{l:?}"
        );

        // The route goes away.
        n.a.ip(["route", "del", "10.2.0.0/16"]).unwrap();
        wait_for(&cache, dst, "route del", |l| {
            l.miss_reason() == Some(MissReason::NoRoute)
        });
        let s = cache.stats();
        assert!(s.events > 0 && s.route_dumps > 0, "{s:?}");
        assert_eq!((s.errors, s.decode_errors), (0, 0), "{s:?}");

        // Dropping the cache stops its threads promptly.
        let t = Instant::now();
        drop(cache);
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "drop took {:?}",
            t.elapsed()
        );
    })
    .unwrap();
}

#[test]
fn ipv6_next_hops() {
    let n = net();
    // An address of the peer nothing has talked to yet.
    n.b.add_addr("b0", ip("fd00:5::3"), 64).unwrap();
    n.a.ip(["-6", "route", "add", "fd00:99::/48", "via", "fd00:5::2"])
        .unwrap();
    n.a.ping(ip("fd00:5::2"), 1).unwrap();
    let gw_mac = kernel_mac(&n.a, "a0", ip("fd00:5::2"));
    assert_eq!(gw_mac, n.b0.mac);

    n.a.run_in(|| {
        let cache = start();
        let r = resolved(cache.lookup(None, ip("fd00:99::1")));
        assert_eq!(
            r,
            Resolved {
                ifindex: n.a0.ifindex,
                src_mac: n.a0.mac,
                dst_mac: gw_mac,
                mtu: n.a0.mtu,
                next_hop: ip("fd00:5::2"),
            }
        );
        assert_eq!(reason(&cache, ip("fd00:dead::1")), MissReason::NoRoute);

        // Neighbour discovery on request.
        let fresh = ip("fd00:5::3");
        assert_eq!(kernel_neighbour(&n.a, "a0", fresh), None);
        let Lookup::Miss(miss) = cache.lookup(None, fresh) else {
            panic!("fd00:5::3 should not be resolved yet")
        };
        assert_eq!(miss.reason, MissReason::NeighbourUnknown);
        assert_eq!(
            miss.neighbour,
            Some(NeighbourKey {
                ifindex: n.a0.ifindex,
                addr: fresh
            })
        );
        assert!(cache.resolver().request(&miss));
        let r = resolved(wait_for(&cache, fresh, "neighbour discovery", |l| {
            matches!(l, Lookup::Resolved(_))
        }));
        assert_eq!((r.dst_mac, r.next_hop), (n.b0.mac, fresh));
        assert_eq!(kernel_mac(&n.a, "a0", fresh), n.b0.mac);

        // A new route and a changed neighbour.
        n.a.ip(["-6", "route", "add", "fd00:77::/48", "via", "fd00:5::2"])
            .unwrap();
        wait_for(&cache, ip("fd00:77::5"), "IPv6 route add", |l| {
            l.resolved().is_some_and(|r| r.dst_mac == gw_mac)
        });
        let new_mac: Mac = [0x02, 0x00, 0x5e, 0x00, 0x00, 0x66];
        n.a.ip([
            "-6",
            "neigh",
            "replace",
            "fd00:5::2",
            "dev",
            "a0",
            "lladdr",
            &format_mac(&new_mac),
        ])
        .unwrap();
        wait_for(&cache, ip("fd00:77::5"), "IPv6 neigh replace", |l| {
            l.resolved().is_some_and(|r| r.dst_mac == new_mac)
        });
        assert_eq!(
            resolved(cache.lookup(None, ip("fd00:99::1"))).dst_mac,
            new_mac
        );
    })
    .unwrap();
}
