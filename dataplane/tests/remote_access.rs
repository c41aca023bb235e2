//! Remote access end to end, in namespaces, with the real binaries:
//!
//! ```text
//! device1..N (xdpsec dataplane + xdpsec ike, tunnel interface xtun0)
//!     wan0 198.18.1.(10+i)/24
//!        |
//! isp (bridge br0 198.18.1.1/24; drops everything to 10.2.0.0/24)
//!     gw0 198.18.2.1/24
//!        |
//! gateway (xdpsec dataplane + xdpsec ike, pool 10.3.0.0/24, DNS 10.2.0.2)
//!     wan0 198.18.2.2/24, lan0 10.2.0.1/24
//!        |
//! web 10.2.0.2: python3 http.server on :80, dnsmasq resolving www.site.example
//! ```
//!
//! Without the VPN a device can neither resolve the site's name (its
//! resolver points at the ISP, which has none) nor fetch the page by address
//! (the ISP drops it). After `xdpsec connect home` the device has a virtual
//! IP from the pool, its resolver points at the tunnel's DNS, and `curl
//! http://www.site.example/` returns the page; a capture on the device's ISP
//! port holds only ESP and IKE; after `xdpsec disconnect` the device's
//! routes, resolver and firewall are exactly as before. Twenty devices at
//! once each get their own address and SAs and fetch the page.
//!
//! Interop: a strongSwan client (charon with kernel-libipsec, `vips =
//! 0.0.0.0`) gets its address from the xdpsec gateway and reaches the
//! site; the xdpsec client connects to a strongSwan gateway with `pools`
//! and does the same, name resolution through the tunnel DNS included.
//!
//! A variant has the gateway hand every decrypted packet to its kernel
//! through its own tunnel interface (`deliver = "all"`), which source-NATs
//! the clients to its LAN address: the web namespace then has no route to
//! the pool at all and still serves the page.
//!
//! Needs root, curl, tcpdump, nftables, dnsmasq and python3 (`cargo xtask
//! setup`). One bed at a time (many processes on two shared cores).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use xdpsec_testbed::strongswan::{
    Charon, ChildConfig, StartAction, StrongswanConfig, SwanAuth, SwanPool,
};
use xdpsec_testbed::{Capture, Netns, NsChild, Testbed};

static SERIAL: Mutex<()> = Mutex::new(());

const SITE: &str = "www.site.example";
const WEB: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 2);
const WEB6: &str = "fd00:2::2";
const GW_WAN: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 2);
const ISP_DEVICES: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
const PSK: &str = "remote access acceptance test key";
const START_TIMEOUT: Duration = Duration::from_secs(20);

fn device_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 1, 10 + i as u8)
}

/// `/etc/netns/NAME/`: `ip netns exec NAME` bind-mounts its resolv.conf
/// over /etc/resolv.conf. Removed on drop.
struct NetnsEtc(PathBuf);

impl NetnsEtc {
    fn new(ns: &Netns, resolv_conf: &str) -> NetnsEtc {
        let dir = Path::new("/etc/netns").join(ns.name());
        std::fs::create_dir_all(&dir).expect("creating /etc/netns/NAME");
        let etc = NetnsEtc(dir);
        std::fs::write(etc.resolv_conf(), resolv_conf).expect("writing its resolv.conf");
        etc
    }

    fn resolv_conf(&self) -> PathBuf {
        self.0.join("resolv.conf")
    }
}

impl Drop for NetnsEtc {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

struct Device {
    ns: Netns,
    dir: PathBuf,
    etc: NetnsEtc,
    _daemons: Vec<NsChild>,
}

impl Device {
    fn ike_socket(&self) -> PathBuf {
        self.dir.join("ike.sock")
    }

    fn state_file(&self) -> PathBuf {
        self.dir.join("connect.json")
    }

    fn xdpsec(&self, args: &[&str]) -> Result<String, String> {
        let mut argv: Vec<String> = vec![env!("CARGO_BIN_EXE_xdpsec").into()];
        argv.extend(args.iter().map(|s| s.to_string()));
        argv.extend([
            "--ike-socket".into(),
            self.ike_socket().display().to_string(),
            "--state-file".into(),
            self.state_file().display().to_string(),
        ]);
        self.ns.run(&argv).map_err(|e| e.to_string())
    }

    fn connect(&self) -> Result<String, String> {
        self.xdpsec(&["connect", "home"])
    }

    fn disconnect(&self) -> Result<String, String> {
        self.xdpsec(&["disconnect"])
    }

    /// `curl` the site by name; the page or why not.
    fn fetch(&self, url: &str, seconds: u32) -> Result<String, String> {
        self.ns
            .run(["curl", "-sS", "--max-time", &seconds.to_string(), url])
            .map_err(|e| e.to_string())
    }

    /// What `disconnect` must put back exactly.
    fn host_state(&self) -> String {
        let mut s = String::new();
        for args in [
            &["-4", "route", "show", "table", "all"][..],
            &["-6", "route", "show", "table", "all"][..],
            &["-4", "addr", "show"][..],
        ] {
            s.push_str(&self.ns.ip(args).expect("ip in the device"));
        }
        s.push_str(
            &self
                .ns
                .run(["nft", "list", "ruleset"])
                .expect("nft in the device"),
        );
        s.push_str(&std::fs::read_to_string(self.etc.resolv_conf()).expect("its resolv.conf"));
        s
    }
}

/// What runs on the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GatewayKind {
    /// xdpsec; the data plane forwards decrypted traffic itself.
    Xdpsec,
    /// xdpsec handing decrypted traffic to its kernel, which masquerades
    /// the clients.
    XdpsecSnat,
    /// strongSwan (charon, kernel-libipsec) with a pool.
    Strongswan,
}

struct Bed {
    /// Stopped before the namespaces go.
    charons: Vec<Charon>,
    testbed: Testbed,
    isp: Netns,
    dir: PathBuf,
    devices: Vec<Device>,
    _gateway: Vec<NsChild>,
    _web: Vec<NsChild>,
    _web_root: PathBuf,
}

impl Drop for Bed {
    fn drop(&mut self) {
        for c in &mut self.charons {
            c.stop().ok();
        }
        self.testbed.kill_children();
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

fn logs(dir: &Path) -> String {
    let mut out = String::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            out.push_str(&logs(&p));
        } else if p.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            out.push_str(&format!("----- {} -----\n", p.display()));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
    }
    out
}

fn wait_for(path: &Path, child: &NsChild, log: &Path) {
    let deadline = Instant::now() + START_TIMEOUT;
    while !path.exists() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{} exited ({status}) before {} appeared:\n{}",
                child.command(),
                path.display(),
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{} did not appear:\n{}",
            path.display(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `xdpsec dataplane` and `xdpsec ike` in `ns` with these configs
/// (the sockets are `dir/api.sock` and `dir/ike.sock`).
fn start_xdpsec(ns: &Netns, dir: &Path, dataplane: &str, ike: &str) -> Vec<NsChild> {
    std::fs::create_dir_all(dir).unwrap();
    let bin = env!("CARGO_BIN_EXE_xdpsec");
    let dp_conf = dir.join("dataplane.toml");
    std::fs::write(&dp_conf, dataplane).unwrap();
    let dp_log = dir.join("dataplane.log");
    let dp = ns
        .spawn_logged(
            [bin, "dataplane", "--config", &dp_conf.display().to_string()],
            &dp_log,
        )
        .unwrap();
    wait_for(&dir.join("api.sock"), &dp, &dp_log);
    let ike_conf = dir.join("ike.toml");
    std::fs::write(&ike_conf, ike).unwrap();
    let ike_log = dir.join("ike.log");
    let ike_state = dir.join("ike-state.json").display().to_string();
    let ikd = ns
        .spawn_logged(
            [
                bin,
                "ike",
                "--config",
                &ike_conf.display().to_string(),
                "--state-file",
                &ike_state,
            ],
            &ike_log,
        )
        .unwrap();
    wait_for(&dir.join("ike.sock"), &ikd, &ike_log);
    vec![dp, ikd]
}

fn daemon_section(dir: &Path) -> String {
    format!(
        "[daemon]\napi_socket = \"{}\"\ncontrol_socket = \"{}\"\n\n",
        dir.join("api.sock").display(),
        dir.join("ike.sock").display()
    )
}

fn gateway_configs(dir: &Path, snat: bool) -> (String, String) {
    let mut dataplane = format!(
        "[dataplane]\napi_socket = \"{}\"\nstate_dir = \"{}\"\n\n\
         [[interface]]\nname = \"lan0\"\nrole = \"inside\"\n\n\
         [[interface]]\nname = \"wan0\"\nrole = \"outside\"\n",
        dir.join("api.sock").display(),
        dir.join("state").display()
    );
    if snat {
        dataplane
            .push_str("\n[[interface]]\nname = \"xtun0\"\nrole = \"tunnel\"\ndeliver = \"all\"\n");
    }
    let ike = format!(
        "{}[pools.rw]\naddrs = \"10.3.0.0/24\"\ndns = [\"{WEB}\"]\n\n\
         [pools.rw6]\naddrs = \"fd00:3::/120\"\n\n\
         [connections.rw]\nlocal_addrs = [\"{GW_WAN}\"]\npools = [\"rw\", \"rw6\"]\n\n\
         [connections.rw.local]\nauth = \"psk\"\nid = \"gw.example\"\n\n\
         [connections.rw.remote]\nauth = \"psk\"\n\n\
         [connections.rw.children.all]\nlocal_ts = [\"0.0.0.0/0\", \"::/0\"]\n\n\
         [secrets.ike-rw]\nsecret = \"{PSK}\"\n",
        daemon_section(dir)
    );
    (dataplane, ike)
}

fn device_configs(dir: &Path, i: usize) -> (String, String) {
    let dataplane = format!(
        "[dataplane]\napi_socket = \"{}\"\nstate_dir = \"{}\"\n\n\
         [[interface]]\nname = \"wan0\"\nrole = \"outside\"\n\n\
         [[interface]]\nname = \"xtun0\"\nrole = \"tunnel\"\n",
        dir.join("api.sock").display(),
        dir.join("state").display()
    );
    let ike = format!(
        "{}[connections.home]\nlocal_addrs = [\"{}\"]\nremote_addrs = [\"{GW_WAN}\"]\n\
         vips = [\"0.0.0.0\", \"::\"]\n\n\
         proposals = [\"aes128gcm16-prfsha256-x25519\"]\n\n\
         [connections.home.local]\nauth = \"psk\"\nid = \"device{i}.example\"\n\n\
         [connections.home.remote]\nauth = \"psk\"\nid = \"gw.example\"\n\n\
         [connections.home.children.all]\nremote_ts = [\"0.0.0.0/0\", \"::/0\"]\n\
         esp_proposals = [\"aes128gcm16\"]\n\n\
         [secrets.ike-rw]\nsecret = \"{PSK}\"\n",
        daemon_section(dir),
        device_addr(i)
    );
    (dataplane, ike)
}

const PAGE: &str = "<html><body>xdpsec remote access: the page behind the gateway</body></html>\n";

fn strongswan_gateway() -> StrongswanConfig {
    StrongswanConfig {
        name: "rw".into(),
        local_addrs: vec![GW_WAN.into()],
        remote_addrs: Vec::new(),
        local_id: "gw.example".into(),
        remote_id: "%any".into(),
        auth: SwanAuth::Psk { secret: PSK.into() },
        ike_proposals: vec!["aes128gcm16-prfsha256-x25519".into()],
        rekey_time: None,
        dpd_delay: None,
        children: vec![ChildConfig {
            name: "all".into(),
            local_ts: vec!["0.0.0.0/0".into()],
            remote_ts: vec!["dynamic".into()],
            esp_proposals: vec!["aes128gcm16".into()],
            start_action: StartAction::None,
            rekey_time: None,
        }],
        vips: Vec::new(),
        pools: vec![SwanPool {
            name: "rw".into(),
            addrs: "10.3.0.0/24".into(),
            dns: vec![WEB.into()],
        }],
    }
}

/// A device namespace on the ISP's bridge, its resolver the ISP's.
fn device_netns(testbed: &Testbed, isp: &Netns, i: usize) -> (Netns, NetnsEtc) {
    let ns = testbed.add_netns(&format!("dev{i}")).unwrap();
    testbed
        .add_veth(&ns, "wan0", isp, &format!("d{i}"))
        .unwrap();
    isp.ip(["link", "set", &format!("d{i}"), "master", "br0"])
        .unwrap();
    ns.add_addr("wan0", device_addr(i).into(), 24).unwrap();
    ns.add_route("default", ISP_DEVICES.into()).unwrap();
    // No IPv6 on the underlay: the capture below is about IPv4.
    ns.sysctl(&[("net.ipv6.conf.wan0.disable_ipv6", "1")])
        .unwrap();
    ns.ping(GW_WAN.into(), 1).unwrap();
    // The device's usual resolver is the ISP's, which answers nothing.
    let etc = NetnsEtc::new(&ns, &format!("nameserver {ISP_DEVICES}\n"));
    (ns, etc)
}

/// `devices` xdpsec devices and a gateway of `kind`; with
/// [`GatewayKind::XdpsecSnat`] the web namespace has no route back to the
/// clients.
fn bed(devices: usize, kind: GatewayKind) -> Bed {
    let snat = kind == GatewayKind::XdpsecSnat;
    let testbed = Testbed::new().expect("test bed (root?)");
    let dir = std::env::temp_dir().join(format!("xdpsec-{}-ra", testbed.prefix()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();

    let isp = testbed.add_netns("isp").unwrap();
    let gw = testbed.add_netns("gw").unwrap();
    let web = testbed.add_netns("web").unwrap();

    isp.ip(["link", "add", "br0", "type", "bridge"]).unwrap();
    isp.ip(["link", "set", "br0", "up"]).unwrap();
    isp.add_addr("br0", ISP_DEVICES.into(), 24).unwrap();
    testbed.add_veth(&isp, "gw0", &gw, "wan0").unwrap();
    isp.add_addr("gw0", Ipv4Addr::new(198, 18, 2, 1).into(), 24)
        .unwrap();
    gw.add_addr("wan0", GW_WAN.into(), 24).unwrap();
    gw.add_route("198.18.1.0/24", Ipv4Addr::new(198, 18, 2, 1).into())
        .unwrap();
    // Without the ISP's filter, a device could reach the site directly.
    isp.add_route("10.2.0.0/24", GW_WAN.into()).unwrap();
    isp.run(["nft", "add", "table", "inet", "isp"]).unwrap();
    isp.run([
        "nft",
        "add chain inet isp forward { type filter hook forward priority 0; policy accept; }",
    ])
    .unwrap();
    isp.run(["nft", "add rule inet isp forward ip daddr 10.2.0.0/24 drop"])
        .unwrap();
    isp.run(["nft", "add rule inet isp forward ip saddr 10.2.0.0/24 drop"])
        .unwrap();

    testbed.add_veth(&gw, "lan0", &web, "eth0").unwrap();
    gw.add_addr("lan0", Ipv4Addr::new(10, 2, 0, 1).into(), 24)
        .unwrap();
    web.add_addr("eth0", WEB.into(), 24).unwrap();
    gw.add_addr("lan0", "fd00:2::1".parse().unwrap(), 64)
        .unwrap();
    web.add_addr("eth0", WEB6.parse().unwrap(), 64).unwrap();
    if !snat {
        web.add_route("default", Ipv4Addr::new(10, 2, 0, 1).into())
            .unwrap();
        web.add_route("fd00:3::/120", "fd00:2::1".parse().unwrap())
            .unwrap();
    }
    // What the web namespace sends out must have full checksums: the
    // gateway's data plane encrypts it as it is.
    web.run([
        "ethtool", "-K", "eth0", "tx", "off", "tso", "off", "gso", "off",
    ])
    .unwrap();

    let web_root = dir.join("www");
    std::fs::create_dir_all(&web_root).unwrap();
    std::fs::write(web_root.join("index.html"), PAGE).unwrap();
    let http = web
        .spawn_logged(
            [
                "python3",
                "-m",
                "http.server",
                "80",
                "--bind",
                &WEB.to_string(),
                "--directory",
                &web_root.display().to_string(),
            ],
            &dir.join("http.log"),
        )
        .unwrap();
    let http6 = web
        .spawn_logged(
            [
                "python3",
                "-m",
                "http.server",
                "80",
                "--bind",
                WEB6,
                "--directory",
                &web_root.display().to_string(),
            ],
            &dir.join("http6.log"),
        )
        .unwrap();
    let dns = web
        .spawn_logged(
            [
                "dnsmasq",
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                &format!("--listen-address={WEB}"),
                &format!("--host-record={SITE},{WEB}"),
                "--pid-file",
                "--user=root",
                "--log-queries",
                "--log-facility=-",
            ],
            &dir.join("dnsmasq.log"),
        )
        .unwrap();
    // Neighbours warm, listeners up.
    gw.ping(WEB.into(), 1).unwrap();
    gw.ping(WEB6.parse().unwrap(), 1).unwrap();
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let tcp = web
            .run(["ss", "-Hltn", "sport", "=", ":80"])
            .unwrap_or_default();
        // One listener per family.
        let both = tcp.lines().count() >= 2;
        let udp = web
            .run(["ss", "-Hlun", "sport", "=", ":53"])
            .unwrap_or_default();
        if both && !udp.trim().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "web or DNS server not listening\n{}",
            logs(&dir)
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let gw_dir = dir.join("gateway");
    std::fs::create_dir_all(&gw_dir).unwrap();
    let mut charons = Vec::new();
    let gateway = if kind == GatewayKind::Strongswan {
        charons.push(
            Charon::start(&gw, gw_dir.join("charon"), &strongswan_gateway())
                .unwrap_or_else(|e| panic!("strongSwan gateway: {e}")),
        );
        Vec::new()
    } else {
        let (dp, ike) = gateway_configs(&gw_dir, snat);
        start_xdpsec(&gw, &gw_dir, &dp, &ike)
    };
    if snat {
        // Replies, once the kernel has undone the NAT, go back into the
        // tunnel interface and from there into the clients' SAs.
        gw.ip(["route", "add", "10.3.0.0/24", "dev", "xtun0"])
            .unwrap();
        for rule in [
            "add table ip nat",
            "add chain ip nat post { type nat hook postrouting priority 100; }",
            "add rule ip nat post ip saddr 10.3.0.0/24 oifname lan0 masquerade",
        ] {
            gw.run(["nft", rule]).unwrap();
        }
    }

    let mut list = Vec::new();
    for i in 1..=devices {
        let (ns, etc) = device_netns(&testbed, &isp, i);
        let ddir = dir.join(format!("dev{i}"));
        let (dp, ike) = device_configs(&ddir, i);
        let daemons = start_xdpsec(&ns, &ddir, &dp, &ike);
        list.push(Device {
            ns,
            dir: ddir,
            etc,
            _daemons: daemons,
        });
    }
    Bed {
        charons,
        testbed,
        isp,
        dir,
        devices: list,
        _gateway: gateway,
        _web: vec![http, http6, dns],
        _web_root: web_root,
    }
}

/// What an IPv4 frame carries: (protocol, UDP/TCP destination port,
/// source port).
fn ipv4_summary(frame: &[u8]) -> Option<(u8, u16, u16)> {
    if frame.len() < 14 + 20 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let proto = ip[9];
    let ports = ip.get(ihl..ihl + 4).map_or((0, 0), |p| {
        (
            u16::from_be_bytes([p[2], p[3]]),
            u16::from_be_bytes([p[0], p[1]]),
        )
    });
    Some((proto, ports.0, ports.1))
}

#[test]
fn a_device_browses_through_the_gateway_and_leaks_nothing() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bed = bed(1, GatewayKind::Xdpsec);
    let device = &bed.devices[0];
    let url = format!("http://{SITE}/");

    // Without the VPN: no name, no page.
    let before = device.host_state();
    assert_eq!(
        device
            .ns
            .ping_report(ISP_DEVICES.into(), 1, Duration::from_secs(1))
            .map(|r| r.received)
            .ok(),
        Some(1),
        "the ISP's router does not answer pings"
    );
    let err = device.fetch(&url, 3).expect_err("resolved without the VPN");
    assert!(err.contains("resolve") || err.contains("(6)"), "{err}");
    device
        .fetch(&format!("http://{WEB}/"), 3)
        .expect_err("fetched by address without the VPN");

    let capture =
        Capture::start(&bed.isp, "d1", "ip", &bed.dir.join("isp-d1.pcap"), 10_000).unwrap();
    let out = device
        .connect()
        .unwrap_or_else(|e| panic!("xdpsec connect: {e}\n{}", logs(&bed.dir)));
    assert!(out.contains("virtual IP 10.3.0.1, fd00:3::1"), "{out}");
    let resolv = std::fs::read_to_string(device.etc.resolv_conf()).unwrap();
    assert!(resolv.contains(&format!("nameserver {WEB}")), "{resolv}");

    let page = device
        .fetch(&url, 10)
        .unwrap_or_else(|e| panic!("curl {url}: {e}\n{}", logs(&bed.dir)));
    assert_eq!(page, PAGE);

    // IPv6 inside the tunnel too (the underlay is IPv4 only).
    let page6 = device
        .fetch(&format!("http://[{WEB6}]/"), 10)
        .unwrap_or_else(|e| panic!("curl over IPv6: {e}\n{}", logs(&bed.dir)));
    assert_eq!(page6, PAGE);

    // Leaks: the ISP's router answered before; around the tunnel, nothing
    // gets out now.
    // (The firewall makes sending fail, or the reply never comes.)
    if let Ok(r) = device
        .ns
        .ping_report(ISP_DEVICES.into(), 1, Duration::from_secs(1))
    {
        assert_eq!(r.received, 0, "a ping around the tunnel got out");
    }

    let frames = capture.finish(0).unwrap();
    let summaries: Vec<(u8, u16, u16)> = frames.iter().filter_map(|f| ipv4_summary(f)).collect();
    let esp = summaries.iter().filter(|s| s.0 == 50).count();
    assert!(
        esp >= 6,
        "too few ESP packets for DNS and HTTP: {summaries:?}"
    );
    for (proto, dport, sport) in &summaries {
        let ike = *proto == 17 && [500, 4500].contains(dport) && [500, 4500].contains(sport);
        assert!(
            *proto == 50 || ike,
            "the device's ISP link carried protocol {proto} port {dport} in the clear"
        );
    }

    let out = device
        .disconnect()
        .unwrap_or_else(|e| panic!("xdpsec disconnect: {e}\n{}", logs(&bed.dir)));
    assert!(out.contains("restored"), "{out}");
    assert_eq!(
        device.host_state(),
        before,
        "routes, addresses, firewall or resolver differ"
    );
    device
        .fetch(&url, 3)
        .expect_err("resolved after disconnecting");
    assert!(!device.state_file().exists());
}

#[test]
fn twenty_devices_at_once_each_get_their_own_address() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const DEVICES: usize = 20;
    let bed = bed(DEVICES, GatewayKind::Xdpsec);
    let url = format!("http://{SITE}/");
    let mut vips = BTreeSet::new();
    for (i, device) in bed.devices.iter().enumerate() {
        let out = device.connect().unwrap_or_else(|e| {
            panic!("device {}: xdpsec connect: {e}\n{}", i + 1, logs(&bed.dir))
        });
        // "... virtual IP 10.3.0.7, fd00:3::7, DNS 10.2.0.2"
        let assigned: Vec<IpAddr> = out
            .split("virtual IP ")
            .nth(1)
            .map(|s| s.split(", DNS").next().unwrap_or(s))
            .into_iter()
            .flat_map(|s| s.split(", "))
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        assert_eq!(assigned.len(), 2, "an IPv4 and an IPv6 address in {out:?}");
        for vip in assigned {
            assert!(vips.insert(vip), "{vip} handed out twice");
        }
    }
    // All connected at once: every one fetches the page.
    std::thread::scope(|s| {
        let handles: Vec<_> = bed
            .devices
            .iter()
            .map(|d| s.spawn(|| d.fetch(&url, 20)))
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            let page = h.join().expect("curl thread");
            assert_eq!(
                page.as_deref(),
                Ok(PAGE),
                "device {} could not fetch the page\n{}",
                i + 1,
                logs(&bed.dir)
            );
        }
    });
    assert_eq!(vips.len(), 2 * DEVICES);
    for device in &bed.devices {
        device.disconnect().unwrap();
    }
}

#[test]
fn the_gateway_kernel_can_source_nat_the_clients() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bed = bed(2, GatewayKind::XdpsecSnat);
    let url = format!("http://{SITE}/");
    for (i, device) in bed.devices.iter().enumerate() {
        device.connect().unwrap_or_else(|e| {
            panic!("device {}: xdpsec connect: {e}\n{}", i + 1, logs(&bed.dir))
        });
        let page = device
            .fetch(&url, 10)
            .unwrap_or_else(|e| panic!("device {}: curl {url}: {e}\n{}", i + 1, logs(&bed.dir)));
        assert_eq!(page, PAGE);
    }
    // The web server saw the gateway, never a client's virtual IP.
    let http_log = std::fs::read_to_string(bed.dir.join("http.log")).unwrap();
    assert!(http_log.contains("10.2.0.1"), "{http_log}");
    assert!(!http_log.contains("10.3.0."), "{http_log}");
    for device in &bed.devices {
        device.disconnect().unwrap();
    }
}

#[test]
fn the_xdpsec_client_connects_to_a_strongswan_gateway_with_a_pool() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bed = bed(1, GatewayKind::Strongswan);
    let device = &bed.devices[0];
    let before = device.host_state();
    let out = device.connect().unwrap_or_else(|e| {
        panic!(
            "xdpsec connect: {e}\n{}\n{}",
            logs(&bed.dir),
            bed.charons[0].log()
        )
    });
    assert!(out.contains("virtual IP 10.3.0."), "{out}");
    assert!(out.contains(&format!("DNS {WEB}")), "{out}");
    let url = format!("http://{SITE}/");
    let page = device.fetch(&url, 10).unwrap_or_else(|e| {
        panic!(
            "curl {url}: {e}\n{}\n{}",
            logs(&bed.dir),
            bed.charons[0].log()
        )
    });
    assert_eq!(page, PAGE);
    device.disconnect().unwrap();
    assert_eq!(device.host_state(), before);
}

#[test]
fn a_strongswan_client_gets_its_address_from_the_xdpsec_gateway() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut bed = bed(0, GatewayKind::Xdpsec);
    let (ns, _etc) = device_netns(&bed.testbed, &bed.isp, 1);
    let client = StrongswanConfig {
        name: "home".into(),
        local_addrs: vec![device_addr(1).into()],
        remote_addrs: vec![GW_WAN.into()],
        local_id: "device1.example".into(),
        remote_id: "gw.example".into(),
        auth: SwanAuth::Psk { secret: PSK.into() },
        ike_proposals: vec!["aes128gcm16-prfsha256-x25519".into()],
        rekey_time: None,
        dpd_delay: None,
        children: vec![ChildConfig {
            name: "all".into(),
            local_ts: vec!["dynamic".into()],
            remote_ts: vec!["10.2.0.0/24".into()],
            esp_proposals: vec!["aes128gcm16".into()],
            start_action: StartAction::None,
            rekey_time: None,
        }],
        vips: vec![Ipv4Addr::UNSPECIFIED.into()],
        pools: Vec::new(),
    };
    let charon = Charon::start(&ns, bed.dir.join("dev1-charon"), &client)
        .unwrap_or_else(|e| panic!("strongSwan client: {e}"));
    let log = |charon: &Charon| format!("{}\n{}", charon.log(), logs(&bed.dir));
    charon
        .initiate_child("all")
        .unwrap_or_else(|e| panic!("initiate: {e}\n{}", log(&charon)));
    let child = charon
        .wait_child_installed("all", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}\n{}", log(&charon)));
    assert_eq!(child.local_ts, vec!["10.3.0.1/32".to_string()], "{child:?}");
    assert_eq!(
        child.remote_ts,
        vec!["10.2.0.0/24".to_string()],
        "{child:?}"
    );
    let page = ns
        .run(["curl", "-sS", "--max-time", "10", &format!("http://{WEB}/")])
        .unwrap_or_else(|e| panic!("curl from the strongSwan client: {e}\n{}", log(&charon)));
    assert_eq!(page, PAGE);
    let sa = charon
        .wait_child_installed("all", Duration::from_secs(1))
        .unwrap();
    assert!(sa.packets_out > 0 && sa.packets_in > 0, "{sa:?}");
    bed.charons.push(charon);
}
