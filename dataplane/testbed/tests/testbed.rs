//! The test bed itself: the standard topology comes up and forwards, names do
//! not collide, and nothing is left behind after drop, also after a panic.
//! Needs root: fails (not skips) without it.

use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::Duration;
use xdpsec_testbed::{list_netns, Error, Testbed};

fn testbed() -> Testbed {
    Testbed::new().unwrap_or_else(|e| panic!("{e}"))
}

fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    let p = format!("{prefix}-");
    list_netns()
        .expect("ip netns list")
        .into_iter()
        .filter(|n| n.starts_with(&p))
        .collect()
}

/// True while `pid` is a live process running `sleep`.
fn sleep_alive(pid: u32) -> bool {
    let cmdline = Path::new("/proc").join(pid.to_string()).join("cmdline");
    std::fs::read(cmdline)
        .map(|c| c.starts_with(b"sleep\0"))
        .unwrap_or(false)
}

/// Waits (bounded) until `ip netns exec` has exec'd `sleep` in process `pid`.
fn wait_sleep_alive(pid: u32) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if sleep_alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn standard_topology_comes_up_and_forwards() {
    let tb = testbed();
    let topo = tb.standard_topology().expect("standard topology");

    let mut expected: Vec<String> = ["hostA", "gwA", "gwB", "hostB"]
        .iter()
        .map(|r| format!("{}-{r}", tb.prefix()))
        .collect();
    expected.sort();
    let mut present = namespaces_with_prefix(tb.prefix());
    present.sort();
    assert_eq!(present, expected);

    // Interfaces are named, indexed and have distinct unicast MACs.
    let ifaces = [
        &topo.host_a.eth,
        &topo.gw_a.lan,
        &topo.gw_a.wan,
        &topo.gw_b.wan,
        &topo.gw_b.lan,
        &topo.host_b.eth,
    ];
    for (i, a) in ifaces.iter().enumerate() {
        assert!(a.ifindex > 0, "{a:?}");
        assert_eq!(a.mac[0] & 1, 0, "multicast MAC {a:?}");
        for b in &ifaces[i + 1..] {
            assert_ne!(a.mac, b.mac);
        }
    }
    assert_eq!(topo.gw_a.wan.ipv4.to_string(), "198.18.0.1");
    assert_eq!(topo.gw_b.wan.ipv4.to_string(), "198.18.0.2");
    // What the struct says is what the kernel has.
    let addrs = topo
        .gw_a
        .ns
        .ip(["-br", "addr", "show", "dev", "wan0"])
        .unwrap();
    assert!(addrs.contains("198.18.0.1/30"), "{addrs}");
    assert!(addrs.contains("fd00:18::1/64"), "{addrs}");
    let link = topo.gw_a.ns.link("wan0").unwrap();
    assert_eq!(link.mac, topo.gw_a.wan.mac);

    // hostA pings its gateway, IPv4 and IPv6 (DAD is off: no wait).
    let r = topo.host_a.ns.ping(topo.gw_a.lan.ipv4.into(), 3).unwrap();
    assert_eq!((r.sent, r.received), (3, 3));
    topo.host_a.ns.ping(topo.gw_a.lan.ipv6.into(), 2).unwrap();
    // Through the default route, to the gateway's other side.
    topo.host_a.ns.ping(topo.gw_a.wan.ipv4.into(), 1).unwrap();
    // Across the underlay.
    topo.gw_a.ns.ping(topo.gw_b.wan.ipv4.into(), 1).unwrap();
    topo.gw_a.ns.ping(topo.gw_b.wan.ipv6.into(), 1).unwrap();

    // The gateways do not route the far inner network in clear...
    let far = IpAddr::from(topo.host_b.eth.ipv4);
    assert!(topo.host_a.ns.ping(far, 1).is_err());
    // ...until asked to; then forwarding and rp_filter are right end to end.
    topo.route_inner_in_clear().unwrap();
    topo.host_a.ns.ping(far, 2).unwrap();
    topo.host_a.ns.ping(topo.host_b.eth.ipv6.into(), 2).unwrap();

    // Counters move.
    let stats = topo.host_b.ns.link_stats("eth0").unwrap();
    assert!(stats.rx_packets >= 4, "{stats:?}");
}

#[test]
fn names_are_unique_across_two_live_testbeds() {
    let a = testbed();
    let b = testbed();
    assert_ne!(a.prefix(), b.prefix());
    assert!(a.prefix().len() + "-hostB".len() < 64);
    let na = a.add_netns("gwA").unwrap();
    let nb = b.add_netns("gwA").unwrap();
    assert_ne!(na.name(), nb.name());
    // Same interface names in both: they live in different namespaces.
    let c = a.add_netns("gwB").unwrap();
    let d = b.add_netns("gwB").unwrap();
    a.add_veth(&na, "wan0", &c, "wan0").unwrap();
    b.add_veth(&nb, "wan0", &d, "wan0").unwrap();
    assert_eq!(namespaces_with_prefix(a.prefix()).len(), 2);
    assert_eq!(namespaces_with_prefix(b.prefix()).len(), 2);
    drop(a);
    assert!(namespaces_with_prefix(b.prefix()).len() == 2);
}

#[test]
fn drop_removes_namespaces_and_kills_processes() {
    let tb = testbed();
    let prefix = tb.prefix().to_string();
    let topo = tb.standard_topology().unwrap();
    // One process ended by its own guard, one left for the test bed.
    let guarded = topo.gw_a.ns.spawn(["sleep", "60"]).unwrap();
    let leftover = topo.gw_b.ns.spawn(["sleep", "61"]).unwrap();
    let (pg, pl) = (guarded.pid(), leftover.pid());
    assert!(wait_sleep_alive(pg) && wait_sleep_alive(pl));
    drop(guarded);
    assert!(!sleep_alive(pg), "the child guard did not end its process");
    std::mem::forget(leftover);
    assert!(sleep_alive(pl));
    assert_eq!(namespaces_with_prefix(&prefix).len(), 4);
    drop(tb);
    assert!(!sleep_alive(pl), "the test bed did not end its process");
    assert_eq!(namespaces_with_prefix(&prefix), Vec::<String>::new());
    // Handles that outlive the test bed fail cleanly.
    assert!(topo.host_a.ns.ip(["link"]).is_err());
}

#[test]
fn drop_during_a_panic_removes_everything() {
    let mut prefix = String::new();
    let result = catch_unwind(AssertUnwindSafe(|| {
        let tb = testbed();
        prefix = tb.prefix().to_string();
        let topo = tb.standard_topology().unwrap();
        let _child = topo.host_b.ns.spawn(["sleep", "62"]).unwrap();
        assert_eq!(namespaces_with_prefix(&prefix).len(), 4);
        panic!("a test failing half way");
    }));
    assert!(result.is_err());
    assert!(!prefix.is_empty());
    assert_eq!(namespaces_with_prefix(&prefix), Vec::<String>::new());
}

#[test]
fn run_reports_stderr_and_spawn_collects_output() {
    let tb = testbed();
    let ns = tb.add_netns("solo").unwrap();
    match ns.run(["sh", "-c", "echo broken on purpose >&2; exit 3"]) {
        Err(Error::Command { stderr, status, .. }) => {
            assert_eq!(stderr, "broken on purpose");
            assert_eq!(status.code(), Some(3));
        }
        other => panic!("expected a command error, got {other:?}"),
    }
    // Commands run inside the namespace: it has only lo.
    let links = ns.run(["ip", "-o", "link"]).unwrap();
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains("lo:"), "{links}");
    // ip netns exec remounts /sys: it shows this namespace's interfaces.
    let sys = ns.run(["ls", "/sys/class/net"]).unwrap();
    assert_eq!(sys.split_whitespace().collect::<Vec<_>>(), ["lo"]);
    let child = ns
        .spawn(["sh", "-c", "echo hello; echo there >&2"])
        .unwrap();
    let out = child.wait_timeout(Duration::from_secs(10)).unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, "hello\n");
    assert_eq!(out.stderr, "there\n");
    let slow = ns.spawn(["sleep", "30"]).unwrap();
    let pid = slow.pid();
    assert!(wait_sleep_alive(pid));
    assert!(matches!(
        slow.wait_timeout(Duration::from_millis(100)),
        Err(Error::Timeout(_))
    ));
    assert!(!sleep_alive(pid));
}

#[test]
fn a_thread_enters_and_leaves_a_namespace() {
    let tb = testbed();
    let a = tb.add_netns("a").unwrap();
    let b = tb.add_netns("b").unwrap();
    tb.add_veth(&a, "va", &b, "vb").unwrap();
    a.add_addr("va", "198.18.1.1".parse().unwrap(), 30).unwrap();
    b.add_addr("vb", "198.18.1.2".parse().unwrap(), 30).unwrap();
    // A UDP datagram from a socket opened inside `a` reaches one inside `b`.
    let rx = b
        .run_in(|| std::net::UdpSocket::bind("198.18.1.2:0"))
        .unwrap()
        .unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let to = rx.local_addr().unwrap();
    a.run_in(|| {
        let tx = std::net::UdpSocket::bind("198.18.1.1:0").unwrap();
        tx.send_to(b"over the veth", to).unwrap();
    })
    .unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = rx.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"over the veth");
    assert_eq!(from.ip().to_string(), "198.18.1.1");
    // The address does not exist outside the namespace.
    assert!(std::net::UdpSocket::bind("198.18.1.2:0").is_err());
    // A panic inside becomes an error, not a poisoned test.
    assert!(matches!(
        a.run_in(|| panic!("inside")),
        Err(Error::ThreadPanicked(_))
    ));
}
