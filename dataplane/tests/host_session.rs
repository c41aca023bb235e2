//! `xdpsec connect`'s host configuration on its own, in a namespace with a
//! veth pair standing in for the tunnel: every change is recorded in
//! the state file, a "crashed" session is undone exactly from that file
//! alone, a session that fails half-way undoes what it did, and a second
//! session is refused while one is recorded.
//!
//! Needs root, iproute2 and nftables (`cargo xtask setup`).

use std::net::IpAddr;
use std::path::PathBuf;
use xdpsec_dataplane::host_session::{self, Plan, SessionState, FIREWALL_TABLE};
use xdpsec_testbed::{Netns, Testbed};

struct Host {
    _testbed: Testbed,
    ns: Netns,
    dir: PathBuf,
}

impl Drop for Host {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

fn host() -> Host {
    let testbed = Testbed::new().expect("test bed (root?)");
    let ns = testbed.add_netns("client").unwrap();
    for (a, b) in [("wan0", "wan0p"), ("xtun0", "xtun0p")] {
        ns.ip(["link", "add", a, "type", "veth", "peer", "name", b])
            .unwrap();
        ns.ip(["link", "set", a, "up"]).unwrap();
        ns.ip(["link", "set", b, "up"]).unwrap();
    }
    ns.add_addr("wan0", "198.18.5.10".parse().unwrap(), 24)
        .unwrap();
    ns.add_route("default", "198.18.5.1".parse().unwrap())
        .unwrap();
    let dir = std::env::temp_dir().join(format!("xdpsec-{}-session", testbed.prefix()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("resolv.conf"),
        "nameserver 198.18.5.1\nsearch isp.example\n",
    )
    .unwrap();
    Host {
        _testbed: testbed,
        ns,
        dir,
    }
}

fn plan(host: &Host, tunnel: &str) -> Plan {
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    Plan {
        connection: "home".into(),
        tunnel: tunnel.into(),
        gateway: ip("198.18.9.2"),
        virtual_ips: vec![ip("10.3.0.7"), ip("fd00:3::7")],
        dns: vec![ip("10.2.0.2")],
        subnets: Vec::new(),
        firewall: true,
        resolv_conf: host.dir.join("resolv.conf"),
    }
}

fn snapshot(host: &Host) -> String {
    let mut s = String::new();
    for args in [
        &["-4", "route", "show", "table", "all"][..],
        &["-6", "route", "show", "table", "all"][..],
        &["addr", "show"][..],
    ] {
        s.push_str(&host.ns.ip(args).unwrap());
    }
    s.push_str(&host.ns.run(["nft", "list", "ruleset"]).unwrap());
    s.push_str(&std::fs::read_to_string(host.dir.join("resolv.conf")).unwrap());
    s
}

fn in_ns<R: Send>(host: &Host, f: impl FnOnce() -> R + Send) -> R {
    host.ns.run_in(f).expect("entering the namespace")
}

fn state_file(host: &Host) -> PathBuf {
    host.dir.join("connect.json")
}

#[test]
fn a_crashed_session_is_undone_exactly_from_its_state_file() {
    let host = host();
    let before = snapshot(&host);
    let plan = plan(&host, "xtun0");
    let state_path = state_file(&host);
    let state = in_ns(&host, || host_session::apply(&plan, &state_path)).unwrap();

    // Everything is in place...
    let routes = host.ns.ip(["-4", "route"]).unwrap();
    assert!(
        routes.contains("0.0.0.0/1 dev xtun0") && routes.contains("128.0.0.0/1 dev xtun0"),
        "{routes}"
    );
    assert!(
        routes.contains("198.18.9.2 via 198.18.5.1 dev wan0"),
        "the gateway stays on the underlay: {routes}"
    );
    let routes6 = host.ns.ip(["-6", "route"]).unwrap();
    assert!(
        routes6.contains("::/1 dev xtun0") && routes6.contains("8000::/1 dev xtun0"),
        "{routes6}"
    );
    let addrs = host.ns.ip(["addr", "show", "dev", "xtun0"]).unwrap();
    assert!(
        addrs.contains("10.3.0.7/32") && addrs.contains("fd00:3::7/128"),
        "{addrs}"
    );
    let rules = host
        .ns
        .run(["nft", "list", "table", "inet", FIREWALL_TABLE])
        .unwrap();
    assert!(rules.contains("policy drop"), "{rules}");
    let resolv = std::fs::read_to_string(&plan.resolv_conf).unwrap();
    assert!(
        resolv.contains("nameserver 10.2.0.2") && !resolv.contains("198.18.5.1"),
        "{resolv}"
    );

    // ...and recorded. The process "crashes" here: only the file is left.
    let saved = SessionState::load(&state_path).unwrap();
    assert_eq!(saved, state);
    drop(state);
    in_ns(&host, || host_session::restore(&saved, &state_path)).unwrap();
    assert_eq!(snapshot(&host), before);
    assert!(!state_path.exists());
}

#[test]
fn a_session_that_fails_half_way_undoes_what_it_did() {
    let host = host();
    let before = snapshot(&host);
    // The pinned gateway route goes in, then the missing tunnel interface
    // stops it.
    let plan = plan(&host, "nosuchtun0");
    let state_path = state_file(&host);
    let e = in_ns(&host, || host_session::apply(&plan, &state_path)).unwrap_err();
    assert!(format!("{e:#}").contains("nosuchtun0"), "{e:#}");
    assert_eq!(snapshot(&host), before);
    assert!(!state_path.exists());
}

#[test]
fn a_second_session_is_refused_while_one_is_recorded() {
    let host = host();
    let plan = plan(&host, "xtun0");
    let state_path = state_file(&host);
    let state = in_ns(&host, || host_session::apply(&plan, &state_path)).unwrap();
    let after_first = snapshot(&host);
    let e = in_ns(&host, || host_session::apply(&plan, &state_path)).unwrap_err();
    assert!(format!("{e:#}").contains("already recorded"), "{e:#}");
    assert_eq!(
        snapshot(&host),
        after_first,
        "the refused session changed something"
    );
    in_ns(&host, || host_session::restore(&state, &state_path)).unwrap();
}
