//! The route-based tunnel interface (`role = "tunnel"`): gateway A's data
//! plane creates the veth pair `xtun0` / `xtun0-dp`; routes on gateway A
//! point host B's network into `xtun0`; gateway A's own processes (ping,
//! a TCP client) then reach host B through the ESP tunnel, and the replies,
//! decrypted, come back to gateway A's stack through the same interface.
//! Without the route the same traffic takes the kernel's path and the
//! tunnel's SA counters do not move. Stopping the data plane removes the
//! pair.
//!
//! Needs root and what `tests/tunnel.rs` needs.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;
use xdpsec_testbed::tunnel::{ping_from, Side, TunnelBed, TunnelOptions};

const TUNNEL: &str = "xtun0";

fn bed_with_tunnel_on_a() -> TunnelBed {
    let mut bed = TunnelBed::new(env!("CARGO_BIN_EXE_xdpsec"), TunnelOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    bed.stop(Side::A).expect("stopping gateway A's data plane");
    let path = bed.config_path(Side::A).to_path_buf();
    let mut config = std::fs::read_to_string(&path).expect("reading gateway A's config");
    config.push_str(&format!(
        "\n[[interface]]\nname = \"{TUNNEL}\"\nrole = \"tunnel\"\n"
    ));
    std::fs::write(&path, config).expect("writing gateway A's config");
    bed.start(Side::A).expect("starting gateway A's data plane");
    bed.wait_for_socket(Side::A)
        .unwrap_or_else(|e| panic!("{e}\n{}", bed.logs()));
    bed
}

/// Packets the SA from A to B carried so far, by `xdpsec sa list`.
fn carried_a_to_b(bed: &TunnelBed) -> u64 {
    let spi = bed.sa(Side::A).spi;
    let list = bed.sa_list(Side::A).expect("sa list on A");
    list.get("sas")
        .and_then(|s| s.as_array())
        .or_else(|| list.as_array())
        .into_iter()
        .flatten()
        .find(|sa| sa["spi"].as_u64() == Some(u64::from(spi)) && sa["direction"] == "out")
        .and_then(|sa| sa["counters"]["packets"].as_u64())
        .unwrap_or_else(|| panic!("no outbound SA {spi:#x} with a packet count in {list}"))
}

/// Host B echoes one TCP message; gateway A's stack sends it from `src`.
fn tcp_echo_from_gateway(bed: &TunnelBed, dst: IpAddr) -> Vec<u8> {
    let host_b = &bed.host(Side::B).ns;
    let listener = host_b
        .run_in(|| TcpListener::bind(SocketAddr::new(dst, 0)))
        .expect("entering host B")
        .expect("listening on host B");
    let addr = listener.local_addr().expect("listener address");
    let server = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut conn, _) = listener.accept()?;
        conn.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut buf = [0u8; 64];
        let n = conn.read(&mut buf)?;
        conn.write_all(&buf[..n])
    });
    let reply = bed
        .gateway(Side::A)
        .ns
        .run_in(|| -> std::io::Result<Vec<u8>> {
            let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
            conn.set_read_timeout(Some(Duration::from_secs(10)))?;
            conn.write_all(b"through the tunnel interface")?;
            let mut reply = Vec::new();
            conn.read_to_end(&mut reply)?;
            Ok(reply)
        })
        .expect("entering gateway A")
        .unwrap_or_else(|e| panic!("TCP from gateway A to {addr}: {e}\n{}", bed.logs()));
    server
        .join()
        .expect("echo thread")
        .unwrap_or_else(|e| panic!("echo server on host B: {e}"));
    reply
}

#[test]
fn gateway_processes_reach_the_far_lan_through_the_tunnel_interface() {
    let bed = bed_with_tunnel_on_a();
    let gw_a = bed.gateway(Side::A).clone();
    let state = gw_a
        .ns
        .ip(["-br", "link", "show", "dev", TUNNEL])
        .expect("the tunnel interface exists");
    assert!(state.contains("UP"), "{TUNNEL} is not up: {state}");
    gw_a.ns
        .link(&format!("{TUNNEL}-dp"))
        .expect("the data plane's end exists");

    // Through the kernel first: no tunnel interface involved, SA untouched.
    let host_b_v4 = bed.host_addr(Side::B, false);
    let before = carried_a_to_b(&bed);
    let plain = ping_from(&gw_a.ns, host_b_v4, 2).expect("ping without the tunnel route");
    assert_eq!(carried_a_to_b(&bed), before, "{}", plain.output);

    for (ipv6, far, src) in [
        (false, "10.2.0.0/24", IpAddr::from(gw_a.lan.ipv4)),
        (true, "fd00:2::/64", IpAddr::from(gw_a.lan.ipv6)),
    ] {
        let family = if ipv6 { "-6" } else { "-4" };
        gw_a.ns
            .ip([
                family,
                "route",
                "replace",
                far,
                "dev",
                TUNNEL,
                "src",
                &src.to_string(),
            ])
            .expect("routing the far LAN into the tunnel interface");
        let dst = bed.host_addr(Side::B, ipv6);
        let before = carried_a_to_b(&bed);
        let stats = ping_from(&gw_a.ns, dst, 3).expect("ping through the tunnel interface");
        assert!(
            stats.all_answered_once(),
            "gateway A -> {dst} through {TUNNEL}: {}\n{}",
            stats.output,
            bed.logs()
        );
        assert!(
            carried_a_to_b(&bed) >= before + 3,
            "the pings did not go through the SA"
        );
        assert_eq!(
            tcp_echo_from_gateway(&bed, dst),
            b"through the tunnel interface",
            "TCP echo from gateway A to {dst}"
        );
    }

    let mut bed = bed;
    bed.stop(Side::A).expect("stopping gateway A");
    assert!(
        gw_a.ns.link(TUNNEL).is_err(),
        "the data plane left {TUNNEL} behind"
    );
}

#[test]
fn a_foreign_interface_by_the_tunnel_name_is_left_alone_and_a_stale_pair_replaced() {
    let mut bed = TunnelBed::new(env!("CARGO_BIN_EXE_xdpsec"), TunnelOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    bed.stop(Side::A).expect("stopping gateway A's data plane");
    let path = bed.config_path(Side::A).to_path_buf();
    let mut config = std::fs::read_to_string(&path).unwrap();
    config.push_str(&format!(
        "\n[[interface]]\nname = \"{TUNNEL}\"\nrole = \"tunnel\"\n"
    ));
    std::fs::write(&path, config).unwrap();
    let gw_a = bed.gateway(Side::A).clone();

    // Someone else's interface by that name: refused, not deleted.
    gw_a.ns
        .ip([
            "link", "add", TUNNEL, "type", "veth", "peer", "name", "theirs0",
        ])
        .unwrap();
    bed.start(Side::A).unwrap();
    let e = bed
        .wait_for_socket(Side::A)
        .expect_err("started over a foreign interface");
    assert!(
        e.to_string().contains("is not a tunnel pair"),
        "{e}\n{}",
        bed.log(Side::A)
    );
    gw_a.ns
        .link(TUNNEL)
        .expect("the foreign interface is still there");
    gw_a.ns.ip(["link", "del", TUNNEL]).unwrap();

    // A pair a crashed data plane left: replaced.
    let peer = format!("{TUNNEL}-dp");
    gw_a.ns
        .ip(["link", "add", TUNNEL, "type", "veth", "peer", "name", &peer])
        .unwrap();
    let stale = gw_a.ns.link(TUNNEL).unwrap().ifindex;
    bed.start(Side::A).unwrap();
    bed.wait_for_socket(Side::A)
        .unwrap_or_else(|e| panic!("{e}\n{}", bed.log(Side::A)));
    let fresh = gw_a.ns.link(TUNNEL).expect("the tunnel interface").ifindex;
    assert_ne!(fresh, stale, "the stale pair was not replaced");
}
