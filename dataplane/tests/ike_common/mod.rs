//! Helpers shared by the IKE end-to-end tests (`ike_*.rs`): beds in IKE
//! mode, pings running while something else happens, reading `sa list`.
#![allow(dead_code)]

use serde_json::Value;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use xdpsec_testbed::tunnel::{
    Encapsulation, GatewayKind, IkeOptions, PingStats, Side, TunnelBed, TunnelOptions,
    IKE_CONNECTION,
};

/// How long a tunnel may take to come up or change.
pub const SETTLE: Duration = Duration::from_secs(15);

/// A bed in IKE mode; panics with the logs if it does not come up.
pub fn bed(
    encap: Encapsulation,
    gateways: [GatewayKind; 2],
    ike: IkeOptions,
    ipv6: bool,
) -> TunnelBed {
    TunnelBed::new(
        env!("CARGO_BIN_EXE_xdpsec"),
        TunnelOptions {
            ipv6,
            encap,
            gateways,
            ike: Some(ike),
            start_timeout: SETTLE,
            ..TunnelOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Pings `count` times from `from` to `to` and asserts every request got
/// exactly one answer.
pub fn ping_ok(bed: &TunnelBed, from: Side, to: Side, ipv6: bool, count: u16) -> PingStats {
    let stats = bed.ping(from, to, ipv6, count).unwrap();
    assert!(
        stats.all_answered_once(),
        "ping {from} -> {to} (ipv6 {ipv6}): {}\n{}",
        stats.output,
        bed.ike_logs()
    );
    stats
}

/// Runs `during` while host A pings host B (IPv4, 5 per second, `count`
/// requests); the ping's statistics.
pub fn while_pinging(bed: &TunnelBed, count: u16, during: impl FnOnce()) -> PingStats {
    let ns = bed.host(Side::A).ns.clone();
    let dst: IpAddr = bed.host_addr(Side::B, false);
    std::thread::scope(|s| {
        let pinger = s.spawn(move || xdpsec_testbed::tunnel::ping_from(&ns, dst, count));
        // Let a few answers through before the disturbance.
        std::thread::sleep(Duration::from_millis(600));
        during();
        pinger.join().expect("ping thread").unwrap()
    })
}

/// The `ike_sas` of `xdpsec sa list --json` on `side`.
pub fn ike_sas(bed: &TunnelBed, side: Side) -> Vec<Value> {
    bed.ike_sa_list(side).unwrap()["ike_sas"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The data plane's SAs on `side` (`sas` of `sa list --json`).
pub fn dataplane_sas(bed: &TunnelBed, side: Side) -> Vec<Value> {
    bed.sa_list(side).unwrap()["sas"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The data plane's policies on `side`.
pub fn dataplane_policies(bed: &TunnelBed, side: Side) -> Vec<Value> {
    let v: Value =
        serde_json::from_str(&bed.cli(side, &["policy", "list", "--json"]).unwrap()).unwrap();
    v["policies"].as_array().cloned().unwrap_or_default()
}

/// Whether `side` has exactly one installed child, and its SPIs differ
/// from `before` (for waits: no panic while there is none or two).
pub fn child_replaced(bed: &TunnelBed, side: Side, before: &(String, String)) -> bool {
    let children = bed.installed_children(side).unwrap_or_default();
    children.len() == 1
        && (
            children[0]["spi_in"].as_str().unwrap_or_default(),
            children[0]["spi_out"].as_str().unwrap_or_default(),
        ) != (before.0.as_str(), before.1.as_str())
}

/// The SPIs (in, out) of the one installed child of `side`.
pub fn child_spis(bed: &TunnelBed, side: Side) -> (String, String) {
    let children = bed.installed_children(side).unwrap();
    assert_eq!(
        children.len(),
        1,
        "{side}: {children:?}\n{}",
        bed.ike_logs()
    );
    (
        children[0]["spi_in"].as_str().unwrap().to_owned(),
        children[0]["spi_out"].as_str().unwrap().to_owned(),
    )
}

/// Waits (bounded) until `check` holds; panics with `what` and the logs.
pub fn wait_until(bed: &TunnelBed, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + SETTLE;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {SETTLE:?}\n{}",
            bed.ike_logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs an IKE CLI command on `side` (`rekey`, `initiate`, ...) for the
/// bed's connection and asserts it succeeds.
pub fn ike_command(bed: &TunnelBed, side: Side, args: &[&str]) -> String {
    let mut argv = args.to_vec();
    argv.insert(1, IKE_CONNECTION);
    bed.ike_cli(side, &argv)
        .unwrap_or_else(|e| panic!("xdpsec {argv:?} on {side}: {e}\n{}", bed.ike_logs()))
}

/// Like [`ike_command`], but while the daemon answers that the SA is
/// busy (an IKE SA keeps its old keys for a while after a rekey, to answer
/// retransmissions, and refuses another rekey meanwhile) it asks again,
/// for at most [`SETTLE`].
pub fn ike_command_when_ready(bed: &TunnelBed, side: Side, args: &[&str]) -> String {
    let mut argv = args.to_vec();
    argv.insert(1, IKE_CONNECTION);
    let deadline = Instant::now() + SETTLE;
    loop {
        match bed.ike_cli(side, &argv) {
            Ok(out) => return out,
            Err(e) if e.to_string().contains("still finishing") && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => panic!("xdpsec {argv:?} on {side}: {e}\n{}", bed.ike_logs()),
        }
    }
}

/// What the IKE options of a bed are unless a test says otherwise.
pub fn options() -> IkeOptions {
    IkeOptions::default()
}

/// Whether `frame` (Ethernet) is IPv4 ESP (protocol 50); its SPI.
pub fn esp_spi(frame: &[u8]) -> Option<u32> {
    if frame.len() < 14 + 20 + 8 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[9] != 50 {
        return None;
    }
    let esp = ip.get(ihl..ihl + 4)?;
    Some(u32::from_be_bytes([esp[0], esp[1], esp[2], esp[3]]))
}

/// The capture filter for the underlay: leave out what the kernel sends by
/// itself (ARP, IGMP, IPv6 link-local chatter).
pub const UNDERLAY_FILTER: &str =
    "not arp and not igmp and not (ip6 and (src net fe80::/10 or dst net ff00::/8))";
