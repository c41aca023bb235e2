//! [`TunnelBed`]: the standard topology with an xdpsec data plane running on
//! both gateways, joined by a fresh pair of static SAs.
//!
//! ```text
//!  hostA            gwA (xdpsec)                  wire                  gwB (xdpsec)           hostB
//!  eth0 ------- lan0      wan0 ------- to_gwA [br0] to_gwB ------- wan0      lan0 ------- eth0
//!  10.1.0.2     10.1.0.1  198.18.0.1      (capture point)      198.18.0.2  10.2.0.1     10.2.0.2
//!  fd00:1::2    fd00:1::1                                                  fd00:2::1    fd00:2::2
//! ```
//!
//! What it sets up, so that a test only has to send traffic:
//!
//! - the topology with one veth queue per data-plane worker, and the underlay
//!   through a bridge in a `wire` namespace: AF_XDP copy-mode TX and frames
//!   XDP redirects never reach a packet socket on the gateways' own
//!   interfaces, so the underlay can only be captured from in between;
//! - hosts as a user has them: default offloads (TX checksum offload on,
//!   so their TCP and UDP checksums arrive partial and the data plane
//!   finishes them), 1500-byte LAN links (the data plane clamps MSS and
//!   answers larger packets with ICMP "too big"), IP forwarding on the
//!   gateways, and cold neighbour tables (the data plane's first packets
//!   wait for the kernel to resolve their next hop, see
//!   `dataplane/src/neighbour_queue.rs`). A test that needs another setting
//!   says so in its options ([`TunnelOptions::inner_mtu`]);
//! - on the gateways, a route to the far inner prefix via the other
//!   gateway's underlay address (XDP takes that traffic before the kernel
//!   routes it);
//! - a random SA per direction (SPIs and AES-GCM keys from /dev/urandom),
//!   or with [`TunnelOptions::split_families`] one per direction and inner
//!   family (IPv4 and IPv6 each with their own SA pair), the two TOML configs and API sockets in a private temp directory, and both
//!   `xdpsec dataplane` processes, each logging to a file there; it waits
//!   (bounded) until both API sockets exist.
//!
//! With [`TunnelOptions::narrow_underlay_mtu`] the `wire` namespace routes
//! instead of bridging (proxy ARP keeps the gateways' addresses on one /30;
//! the router is [`ROUTER_ADDR_A`] / [`ROUTER_ADDR_B`]), and its port towards
//! gateway B has the narrower MTU, so only ICMP tells gateway A about it.
//!
//! [`TunnelOptions::gateways`] puts strongSwan (charon with kernel-libipsec,
//! [`crate::strongswan::Charon`]) on either gateway instead: each charon gets
//! a config generated from the options (PSK shared by both, the inner
//! prefixes as traffic selectors, `aes128gcm16` or `aes256gcm16`), and
//! libipsec routes the far prefix into its TUN device itself, so that
//! gateway gets no plain route to it. With strongSwan on both sides, A
//! initiates and `new` returns once both hold the CHILD_SA; on one side
//! only, nothing is initiated and the xdpsec side starts without SAs: an
//! IKE daemon must negotiate them. strongSwan always carries ESP in UDP
//! 4500, whatever [`TunnelOptions::encap`] says.
//!
//! Drop stops both data planes with SIGTERM (by PID, bounded; SIGKILL
//! after), then the test bed deletes the namespaces and the temp directory
//! is removed, also when a test panics.

#[path = "tunnel_ike.rs"]
mod ike;
pub use ike::{
    cert_identity, IkeAuth, IkeOptions, Pki, CHILD as IKE_CHILD, CONNECTION as IKE_CONNECTION,
};

use crate::strongswan::{Charon, StrongswanConfig};
use crate::{Error, Gateway, Host, Netns, NsChild, Result, StandardTopology, Testbed};
use crate::{TopologyOptions, UnderlayTap};
use serde_json::Value;
use std::fmt;
use std::fmt::Write as _;
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// MTU of the LAN links by default: what a user's Ethernet LAN has.
pub const LAN_MTU: u32 = 1500;

/// The LAN MTU the benchmarks choose: ESP adds up to ~80 bytes, so with it
/// their largest packets fit the 1500-byte underlay whole, on xdpsec and
/// on strongSwan alike.
pub const BENCH_LAN_MTU: u32 = 1400;

/// TCP port of the iperf3 server on host B.
pub const IPERF_PORT: u16 = 5201;

/// One of the two gateways (and the host behind it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// Gateway A, host A, 10.1.0.0/24 and fd00:1::/64.
    A,
    /// Gateway B, host B, 10.2.0.0/24 and fd00:2::/64.
    B,
}

impl Side {
    /// Both sides, A first.
    pub const BOTH: [Side; 2] = [Side::A, Side::B];

    /// `gwA` or `gwB`.
    pub fn gateway_name(self) -> &'static str {
        match self {
            Side::A => "gwA",
            Side::B => "gwB",
        }
    }

    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    fn index(self) -> usize {
        match self {
            Side::A => 0,
            Side::B => 1,
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.gateway_name())
    }
}

/// How ESP travels on the underlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encapsulation {
    /// Plain ESP, IP protocol 50.
    Esp,
    /// ESP in UDP, port 4500 on both ends (RFC 3948, NAT traversal).
    Udp,
}

/// AES-GCM key size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySize {
    /// AES-GCM-128 (16-byte key + 4-byte salt).
    Aes128,
    /// AES-GCM-256 (32-byte key + 4-byte salt).
    Aes256,
}

impl KeySize {
    fn key_bytes(self) -> usize {
        match self {
            KeySize::Aes128 => 16,
            KeySize::Aes256 => 32,
        }
    }
}

/// What runs on a gateway of a [`TunnelBed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatewayKind {
    /// `xdpsec dataplane`.
    Xdpsec,
    /// strongSwan's charon with ESP in user space (kernel-libipsec).
    Strongswan,
}

/// What [`TunnelBed::new`] builds.
#[derive(Debug, Clone)]
pub struct TunnelOptions {
    /// Carry inner IPv4 (10.1.0.0/24 <-> 10.2.0.0/24).
    pub ipv4: bool,
    /// Carry inner IPv6 (fd00:1::/64 <-> fd00:2::/64).
    pub ipv6: bool,
    /// Plain ESP or ESP in UDP.
    pub encap: Encapsulation,
    /// AES-GCM-128 or -256.
    pub key_size: KeySize,
    /// Data-plane workers per gateway.
    pub workers: u32,
    /// More arguments for both `xdpsec dataplane` processes (test-only
    /// fault switches, say).
    pub dataplane_args: Vec<String>,
    /// RX and TX queues of every veth (as a multi-queue NIC has); `None`:
    /// one per worker. The data plane serves them all.
    pub queues: Option<u32>,
    /// Start the data planes with `--null-cipher-benchmark` (no
    /// encryption: the captured ESP cannot be decrypted).
    pub null_cipher: bool,
    /// Attach XDP in generic mode (`--xdp-generic`) instead of native.
    pub xdp_generic: bool,
    /// Give inner IPv4 and IPv6 an SA pair each (own SPIs, keys, selectors
    /// and protect policies) instead of one pair for both. Only matters
    /// when both families are carried; see [`TunnelBed::sa_for`].
    pub split_families: bool,
    /// How long to wait for each data plane's API socket to appear.
    pub start_timeout: Duration,
    /// MTU of the hosts' and gateways' LAN links ([`LAN_MTU`] by default:
    /// full-size segments are left to MSS clamping and ICMP "too big"; a
    /// smaller one lets a benchmark's largest packets fit the tunnel
    /// without PMTU in the way).
    pub inner_mtu: u32,
    /// `[dataplane] mss_clamp` of both gateways (on by default).
    pub mss_clamp: bool,
    /// `[dataplane] outer_fragmentation` of both gateways (on by default).
    pub outer_fragmentation: bool,
    /// Make the `wire` namespace a router instead of a bridge, whose port
    /// towards gateway B has this MTU: packets from A that are larger and
    /// have DF get an ICMP "fragmentation needed" from the router (source
    /// [`ROUTER_ADDR_A`]). Gateway B's `wan0` keeps 1500, so only gateway A
    /// can learn of the narrow hop, from that ICMP; B's own packets larger
    /// than this MTU are lost on the way (the router's port drops them).
    pub narrow_underlay_mtu: Option<u32>,
    /// Outer IPv6: the SAs run between the gateways' underlay IPv6
    /// addresses (fd00:18::1 and ::2) instead of their IPv4 ones.
    pub underlay_ipv6: bool,
    /// What runs on gateway A and on gateway B.
    pub gateways: [GatewayKind; 2],
    /// IKE mode: no static SAs; each xdpsec gateway runs `xdpsec ike` with
    /// a generated config (see [`IkeOptions`]) that sets the tunnel up,
    /// with the other xdpsec gateway or with strongSwan.
    pub ike: Option<IkeOptions>,
}

impl Default for TunnelOptions {
    fn default() -> Self {
        TunnelOptions {
            ipv4: true,
            ipv6: true,
            encap: Encapsulation::Esp,
            key_size: KeySize::Aes128,
            workers: 1,
            queues: None,
            dataplane_args: Vec::new(),
            null_cipher: false,
            xdp_generic: false,
            split_families: false,
            start_timeout: Duration::from_secs(10),
            inner_mtu: LAN_MTU,
            mss_clamp: true,
            outer_fragmentation: true,
            narrow_underlay_mtu: None,
            underlay_ipv6: false,
            gateways: [GatewayKind::Xdpsec; 2],
            ike: None,
        }
    }
}

/// One direction of the tunnel: the SA as both gateways hold it (outbound
/// on `from`, inbound on the other), with what a decoder such as tshark
/// needs. Debug leaves the key out.
#[derive(Clone, PartialEq, Eq)]
pub struct TunnelSa {
    /// The SPI.
    pub spi: u32,
    /// The gateway that encrypts with it.
    pub from: Side,
    /// Outer source address (the encrypting gateway's underlay address).
    pub src: IpAddr,
    /// Outer destination address.
    pub dst: IpAddr,
    /// AES-GCM key followed by the 4-byte salt, lowercase hex without `0x`
    /// (the config's `key`, Wireshark's encryption key).
    pub key_hex: String,
    /// 128 or 256.
    pub key_bits: u16,
    /// ESP in UDP 4500 rather than plain ESP.
    pub udp_encap: bool,
    /// Its selectors and policies cover inner IPv4 (10.1.0.0/24 <->
    /// 10.2.0.0/24).
    pub ipv4: bool,
    /// Its selectors and policies cover inner IPv6 (fd00:1::/64 <->
    /// fd00:2::/64).
    pub ipv6: bool,
}

impl fmt::Debug for TunnelSa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TunnelSa")
            .field("spi", &format_args!("{:#010x}", self.spi))
            .field("from", &self.from)
            .field("src", &self.src)
            .field("dst", &self.dst)
            .field("key_bits", &self.key_bits)
            .field("udp_encap", &self.udp_encap)
            .field("ipv4", &self.ipv4)
            .field("ipv6", &self.ipv6)
            .finish_non_exhaustive()
    }
}

impl TunnelSa {
    /// This SA as a line of Wireshark's `esp_sa` table, for
    /// `tshark -o esp.enable_encryption_decode:TRUE -o <this>`.
    pub fn tshark_uat(&self) -> String {
        let family = if self.src.is_ipv4() { "IPv4" } else { "IPv6" };
        format!(
            "uat:esp_sa:\"{family}\",\"{}\",\"{}\",\"{:#010x}\",\
             \"AES-GCM with 16 octet ICV [RFC4106]\",\"0x{}\",\"NULL\",\"\"",
            self.src, self.dst, self.spi, self.key_hex
        )
    }
}

/// What `ping` (iputils) reported, or the test bed's own ICMP echo when no
/// `ping` binary is installed (which cannot see duplicates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingStats {
    /// Echo requests sent.
    pub transmitted: u32,
    /// Distinct echo replies received.
    pub received: u32,
    /// Replies received more than once (`ping` prints `DUP!`).
    pub duplicates: u32,
    /// What ping printed.
    pub output: String,
}

impl PingStats {
    /// Every request got exactly one reply.
    pub fn all_answered_once(&self) -> bool {
        self.transmitted > 0 && self.received == self.transmitted && self.duplicates == 0
    }
}

/// An iperf3 TCP run from host A to host B.
#[derive(Debug, Clone)]
pub struct IperfReport {
    /// Goodput the receiver measured, in bits per second.
    pub received_bits_per_second: f64,
    /// Bytes the receiver got.
    pub received_bytes: u64,
    /// TCP retransmissions the sender counted.
    pub retransmits: u64,
    /// Goodput of each interval (one second each by default), bits/s.
    pub intervals: Vec<f64>,
    /// iperf3's whole JSON report.
    pub json: Value,
}

#[derive(Debug)]
struct Daemon {
    config: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    child: Option<NsChild>,
}

/// Two xdpsec gateways with a tunnel between them. See the module
/// documentation.
#[derive(Debug)]
pub struct TunnelBed {
    // Fields drop in order: the charons and daemons (stopped in `drop`)
    // before the test bed, which deletes the namespaces.
    charons: [Option<Charon>; 2],
    daemons: [Daemon; 2],
    /// The IKE daemons (IKE mode), stopped before the data planes.
    ike: [ike::IkeDaemon; 2],
    /// A -> B then B -> A; with split families the IPv4 pair, then the
    /// IPv6 pair.
    sas: Vec<TunnelSa>,
    options: TunnelOptions,
    binary: PathBuf,
    dir: PathBuf,
    topo: StandardTopology,
    testbed: Testbed,
}

impl TunnelBed {
    /// Builds everything and starts both data planes from the `xdpsec`
    /// binary at `binary`. Fails (with the data plane's log) if one exits or
    /// its API socket does not appear within `options.start_timeout`.
    pub fn new(binary: impl AsRef<Path>, mut options: TunnelOptions) -> Result<TunnelBed> {
        let binary = binary.as_ref().to_path_buf();
        if !binary.is_file() {
            return Err(Error::Sys {
                op: format!("find the xdpsec binary at {}", binary.display()),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        if !options.ipv4 && !options.ipv6 {
            return Err(Error::InvalidName(
                "TunnelOptions".into(),
                "carry inner IPv4, IPv6 or both",
            ));
        }
        if options.workers == 0 {
            return Err(Error::InvalidName(
                "TunnelOptions::workers".into(),
                "at least one worker",
            ));
        }
        let testbed = Testbed::new()?;
        let topo = testbed.standard_topology_with(&TopologyOptions {
            queues: options.queues.unwrap_or(options.workers),
            underlay_tap: true,
        })?;
        if let Some(mtu) = options.narrow_underlay_mtu {
            route_underlay(&topo, mtu)?;
        }
        prepare_network(&topo, &options)?;

        let dir = std::env::temp_dir().join(format!("xdpsec-{}", testbed.prefix()));
        if dir.exists() {
            // Left by a dead run with the same PID.
            std::fs::remove_dir_all(&dir).map_err(sys(format!("remove {}", dir.display())))?;
        }
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .map_err(sys(format!("create {}", dir.display())))?;
        }

        if let Some(ike) = &mut options.ike {
            ike::prepare_pki(ike, &dir)?;
        }
        // Static SAs only between two xdpsec gateways without IKE;
        // strongSwan and `xdpsec ike` negotiate.
        let all_xdpsec = options.gateways == [GatewayKind::Xdpsec; 2];
        let sas = if all_xdpsec && options.ike.is_none() {
            random_sas(&topo, &options)?
        } else {
            Vec::new()
        };
        let run_as = options.ike.as_ref().and_then(|ike| ike.run_as.clone());
        if run_as.is_some() {
            // The unprivileged daemons reach their sockets through it.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))
                .map_err(sys(format!("chmod {}", dir.display())))?;
        }
        let mut daemons: Vec<Daemon> = Vec::new();
        for side in Side::BOTH {
            let name = side.gateway_name();
            let log = match options.gateways[side.index()] {
                GatewayKind::Xdpsec => dir.join(format!("{name}.log")),
                GatewayKind::Strongswan => charon_dir(&dir, side).join("charon.log"),
            };
            let daemon = Daemon {
                config: dir.join(format!("{name}.toml")),
                socket: dir.join(format!("{name}.sock")),
                log,
                child: None,
            };
            let text = gateway_config(side, &sas, &options, &daemon.socket);
            std::fs::write(&daemon.config, text)
                .map_err(sys(format!("write {}", daemon.config.display())))?;
            daemons.push(daemon);
        }
        let daemons: [Daemon; 2] = daemons.try_into().expect("one daemon per side");
        let psk = format!("0x{}", hex(&random_bytes(32)?));
        let mut bed = TunnelBed {
            charons: [None, None],
            daemons,
            ike: TunnelBed::ike_daemons(&dir, run_as.is_some()),
            sas,
            options,
            binary,
            dir,
            topo,
            testbed,
        };
        for side in Side::BOTH {
            if bed.kind(side) == GatewayKind::Strongswan {
                let config = strongswan_config(&bed.topo, &bed.options, side, &psk);
                let ns = bed.topo_gateway(side).ns.clone();
                let charon = Charon::start(&ns, charon_dir(&bed.dir, side), &config)?;
                bed.charons[side.index()] = Some(charon);
            } else {
                bed.start(side)?;
            }
        }
        for side in Side::BOTH {
            bed.wait_for_socket(side)?;
        }
        if let [Some(a), Some(b)] = &bed.charons {
            a.initiate_child(STRONGSWAN_CHILD)?;
            for charon in [a, b] {
                charon.wait_child_installed(STRONGSWAN_CHILD, Duration::from_secs(10))?;
            }
        }
        bed.start_ike(&psk)?;
        Ok(bed)
    }

    /// What runs on the gateway of `side`.
    pub fn kind(&self, side: Side) -> GatewayKind {
        self.options.gateways[side.index()]
    }

    /// The charon of `side`, if strongSwan runs there.
    pub fn charon(&self, side: Side) -> Option<&Charon> {
        self.charons[side.index()].as_ref()
    }

    /// The charon of `side`, to stop or restart it.
    pub fn charon_mut(&mut self, side: Side) -> Option<&mut Charon> {
        self.charons[side.index()].as_mut()
    }

    /// The PID of what runs on the gateway of `side` (data plane or
    /// charon), while it runs: for CPU accounting.
    pub fn gateway_pid(&self, side: Side) -> Option<u32> {
        match self.charon(side) {
            Some(charon) => charon.pid(),
            None => self.child(side).map(NsChild::pid),
        }
    }

    /// The SAs charon holds on `side`, newest CHILD_SA, as [`TunnelSa`]s
    /// (outbound first), with the keys read from its log: what tshark
    /// needs to decrypt a capture. Fails if strongSwan does not run there
    /// or holds no CHILD_SA.
    pub fn strongswan_sas(&self, side: Side) -> Result<Vec<TunnelSa>> {
        let charon = self.charon(side).ok_or_else(|| {
            Error::InvalidName(side.to_string(), "strongSwan does not run on this gateway")
        })?;
        let keys = charon.esp_keys();
        let newest = keys.last().ok_or_else(|| Error::Parse {
            cmd: format!("{}", charon.log_path().display()),
            what: "no CHILD_SA keys logged yet".into(),
        })?;
        let own: IpAddr = self.topo_gateway(side).wan.ipv4.into();
        let peer: IpAddr = self.topo_gateway(side.other()).wan.ipv4.into();
        let sa = |spi, from, src, dst, key_hex: &str| TunnelSa {
            spi,
            from,
            src,
            dst,
            key_hex: key_hex.to_string(),
            key_bits: u16::try_from((key_hex.len() / 2).saturating_sub(4) * 8).unwrap_or(0),
            udp_encap: true,
            ipv4: self.options.ipv4,
            ipv6: self.options.ipv6,
        };
        Ok(vec![
            sa(newest.spi_out, side, own, peer, &newest.key_out_hex),
            sa(newest.spi_in, side.other(), peer, own, &newest.key_in_hex),
        ])
    }

    /// Starts the data plane of `side` (again, after [`TunnelBed::stop`]);
    /// does not wait for its API socket.
    pub fn start(&mut self, side: Side) -> Result<()> {
        if let Some(charon) = self.charons[side.index()].as_mut() {
            return charon.restart();
        }
        if self.is_running(side) {
            return Ok(());
        }
        let mut argv: Vec<std::ffi::OsString> = vec![
            self.binary.clone().into(),
            "dataplane".into(),
            "--config".into(),
            self.daemons[side.index()].config.clone().into(),
        ];
        if self.options.null_cipher {
            argv.push("--null-cipher-benchmark".into());
        }
        if self.options.xdp_generic {
            argv.push("--xdp-generic".into());
        }
        argv.extend(self.options.dataplane_args.iter().map(Into::into));
        let daemon = &self.daemons[side.index()];
        // A socket left by a previous run would look like a ready one.
        std::fs::remove_file(&daemon.socket).ok();
        let child = self
            .topo_gateway(side)
            .ns
            .spawn_logged(&argv, &daemon.log)?;
        self.daemons[side.index()].child = Some(child);
        Ok(())
    }

    fn topo_gateway(&self, side: Side) -> &Gateway {
        match side {
            Side::A => &self.topo.gw_a,
            Side::B => &self.topo.gw_b,
        }
    }

    /// Waits (up to `start_timeout`) until the API socket of `side` exists;
    /// fails with the log if the process exits first.
    pub fn wait_for_socket(&mut self, side: Side) -> Result<()> {
        if self.kind(side) == GatewayKind::Strongswan {
            // Charon::start has waited for its vici socket.
            return Ok(());
        }
        let deadline = Instant::now() + self.options.start_timeout;
        loop {
            let daemon = &self.daemons[side.index()];
            if let Some(child) = &daemon.child {
                if let Some(status) = child.try_wait()? {
                    return Err(Error::Command {
                        cmd: child.command().to_string(),
                        status,
                        stderr: format!("exited during start; its log:\n{}", self.log(side)),
                    });
                }
            } else {
                return Err(Error::Timeout(format!(
                    "the data plane of {side} is not running"
                )));
            }
            if daemon.socket.exists() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "the API socket {} of {side} did not appear within {:?}; its log:\n{}",
                    daemon.socket.display(),
                    self.options.start_timeout,
                    self.log(side)
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The topology.
    pub fn topology(&self) -> &StandardTopology {
        &self.topo
    }

    /// The test bed (to add processes or namespaces).
    pub fn testbed(&self) -> &Testbed {
        &self.testbed
    }

    /// The options it was built with.
    pub fn options(&self) -> &TunnelOptions {
        &self.options
    }

    /// The gateway of `side`.
    pub fn gateway(&self, side: Side) -> &Gateway {
        self.topo_gateway(side)
    }

    /// The host behind the gateway of `side`.
    pub fn host(&self, side: Side) -> &Host {
        match side {
            Side::A => &self.topo.host_a,
            Side::B => &self.topo.host_b,
        }
    }

    /// The capture point in the middle of the underlay.
    pub fn underlay(&self) -> &UnderlayTap {
        self.topo
            .underlay
            .as_ref()
            .expect("a TunnelBed always builds the underlay tap")
    }

    /// The inner address of the host of `side` (IPv4 or IPv6).
    pub fn host_addr(&self, side: Side, ipv6: bool) -> IpAddr {
        let eth = &self.host(side).eth;
        if ipv6 {
            eth.ipv6.into()
        } else {
            eth.ipv4.into()
        }
    }

    /// The SA that `from` encrypts with (and the other gateway decrypts).
    /// With [`TunnelOptions::split_families`] and both families carried,
    /// the IPv4 one; see [`TunnelBed::sa_for`]. Panics when a gateway
    /// runs strongSwan: its SAs are negotiated, see
    /// [`TunnelBed::strongswan_sas`].
    pub fn sa(&self, from: Side) -> &TunnelSa {
        assert!(
            !self.sas.is_empty(),
            "no static SAs: strongSwan runs on a gateway (use strongswan_sas)"
        );
        &self.sas[from.index()]
    }

    /// The SA that `from` encrypts inner IPv4 (or IPv6) with, and the other
    /// gateway decrypts it with; `None` if the bed does not carry that
    /// family.
    pub fn sa_for(&self, from: Side, ipv6: bool) -> Option<&TunnelSa> {
        self.sas
            .iter()
            .find(|sa| sa.from == from && if ipv6 { sa.ipv6 } else { sa.ipv4 })
    }

    /// All SAs: A -> B, then B -> A; with split families the IPv4 pair,
    /// then the IPv6 pair.
    pub fn sas(&self) -> &[TunnelSa] {
        &self.sas
    }

    /// The private directory with the configs, sockets and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The config file of `side`.
    pub fn config_path(&self, side: Side) -> &Path {
        &self.daemons[side.index()].config
    }

    /// The SA API socket of `side`.
    pub fn api_socket(&self, side: Side) -> &Path {
        &self.daemons[side.index()].socket
    }

    /// The log file (stdout and stderr) of the data plane of `side`.
    pub fn log_path(&self, side: Side) -> &Path {
        &self.daemons[side.index()].log
    }

    /// The log of the data plane of `side` so far.
    pub fn log(&self, side: Side) -> String {
        std::fs::read(self.log_path(side))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("<cannot read {}: {e}>", self.log_path(side).display()))
    }

    /// Both logs, labelled, for a failure message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for side in Side::BOTH {
            let what = match self.kind(side) {
                GatewayKind::Xdpsec => "xdpsec dataplane",
                GatewayKind::Strongswan => "charon",
            };
            let _ = writeln!(out, "----- {what} log of {side} -----");
            out.push_str(&self.log(side));
        }
        out
    }

    /// The data-plane process of `side`, if started and not stopped.
    pub fn child(&self, side: Side) -> Option<&NsChild> {
        self.daemons[side.index()].child.as_ref()
    }

    /// Whether the data plane of `side` is running.
    pub fn is_running(&self, side: Side) -> bool {
        if let Some(charon) = self.charon(side) {
            return charon.is_running();
        }
        self.child(side)
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Runs `xdpsec ARGS... --api-socket <side's socket>` (a CLI command such
    /// as `sa list`) to completion; its stdout.
    pub fn cli(&self, side: Side, args: &[&str]) -> Result<String> {
        let mut argv: Vec<std::ffi::OsString> = vec![self.binary.clone().into()];
        argv.extend(args.iter().map(Into::into));
        argv.push("--api-socket".into());
        argv.push(self.api_socket(side).as_os_str().to_owned());
        self.topo_gateway(side).ns.run(&argv)
    }

    fn cli_json(&self, side: Side, args: &[&str]) -> Result<Value> {
        let out = self.cli(side, args)?;
        serde_json::from_str(&out).map_err(|e| Error::Parse {
            cmd: format!("xdpsec {}", args.join(" ")),
            what: format!("{e}; output: {out}"),
        })
    }

    /// `xdpsec sa list --json` of `side`.
    pub fn sa_list(&self, side: Side) -> Result<Value> {
        self.cli_json(side, &["sa", "list", "--json"])
    }

    /// `xdpsec status --json` of `side`.
    pub fn status(&self, side: Side) -> Result<Value> {
        self.cli_json(side, &["status", "--json"])
    }

    /// The sum over the workers of `side` of one named counter in `xdpsec
    /// status --json`: `group` is `"drops"` or `"events"` (0 if absent).
    pub fn worker_total(&self, side: Side, group: &str, name: &str) -> Result<u64> {
        let status = self.status(side)?;
        let workers = status
            .get("workers")
            .and_then(Value::as_array)
            .or_else(|| status.as_array())
            .ok_or_else(|| Error::Parse {
                cmd: "xdpsec status --json".into(),
                what: format!("no workers in {status}"),
            })?;
        Ok(workers.iter().filter_map(|w| w[group][name].as_u64()).sum())
    }

    /// The SA that `side` encrypts with (for inner IPv6 if `ipv6`), as its
    /// `xdpsec sa list --json` shows it.
    pub fn outbound_sa_info(&self, side: Side, ipv6: bool) -> Result<Value> {
        let spi = self
            .sa_for(side, ipv6)
            .ok_or_else(|| Error::Timeout(format!("{side} carries no such family")))?
            .spi;
        let list = self.sa_list(side)?;
        list.get("sas")
            .and_then(Value::as_array)
            .or_else(|| list.as_array())
            .and_then(|sas| {
                sas.iter().find(|sa| {
                    sa["spi"].as_u64() == Some(u64::from(spi)) && sa["direction"] == "out"
                })
            })
            .cloned()
            .ok_or_else(|| Error::Parse {
                cmd: "xdpsec sa list --json".into(),
                what: format!("no outbound SA {spi:#x} in {list}"),
            })
    }

    /// Sends SIGTERM (by PID) to the data plane of `side` and waits up to
    /// 10 s for it to exit: its exit status. It is killed if it does not
    /// exit in time (and this fails).
    pub fn stop(&mut self, side: Side) -> Result<ExitStatus> {
        if let Some(charon) = self.charons[side.index()].as_mut() {
            return charon.stop();
        }
        let child = self.daemons[side.index()]
            .child
            .take()
            .ok_or_else(|| Error::Timeout(format!("the data plane of {side} is not running")))?;
        child.terminate()?;
        Ok(child.wait_timeout(Duration::from_secs(10))?.status)
    }

    /// Replaces [`TunnelOptions::dataplane_args`] for the next starts.
    pub fn set_dataplane_args(&mut self, args: Vec<String>) {
        self.options.dataplane_args = args;
    }

    /// Kills the data plane of `side` with SIGKILL (by PID), as a crash
    /// would: nothing of its clean stop happens. Its exit status.
    pub fn kill(&mut self, side: Side) -> Result<ExitStatus> {
        let child = self.daemons[side.index()]
            .child
            .take()
            .ok_or_else(|| Error::Timeout(format!("the data plane of {side} is not running")))?;
        child.signal(nix::sys::signal::Signal::SIGKILL)?;
        Ok(child.wait_timeout(Duration::from_secs(10))?.status)
    }

    /// Pings the host of `to` (IPv4 or IPv6) from the host of `from`:
    /// `count` echo requests 0.2 s apart, with iputils' `ping` if installed
    /// (it reports duplicates), else with the test bed's own ICMP echo.
    /// Bounded: at most about count / 5 + 3 seconds.
    pub fn ping(&self, from: Side, to: Side, ipv6: bool, count: u16) -> Result<PingStats> {
        let dst = self.host_addr(to, ipv6);
        ping_from(&self.host(from).ns, dst, count)
    }

    /// A bounded iperf3 TCP run from host A to host B's address `dst` (its
    /// IPv4 or IPv6 address): a one-shot server (`iperf3 -s -1`) on host B
    /// and a client with `-t seconds -P streams` on host A, both started
    /// and, if need be, ended by PID.
    pub fn iperf3(&self, dst: IpAddr, seconds: u32, streams: u32) -> Result<IperfReport> {
        self.iperf3_from(Side::A, dst, seconds, streams)
    }

    /// Like [`TunnelBed::iperf3`], from the host of `from` to the other
    /// host's address `dst`.
    pub fn iperf3_from(
        &self,
        from: Side,
        dst: IpAddr,
        seconds: u32,
        streams: u32,
    ) -> Result<IperfReport> {
        let port = IPERF_PORT.to_string();
        let host_b = &self.host(from.other()).ns;
        let server = host_b.spawn(["iperf3", "-s", "-1", "-p", &port])?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let listening = host_b.run(["ss", "-Hltn", "sport", "=", &format!(":{port}")])?;
            if !listening.trim().is_empty() {
                break;
            }
            if let Some(status) = server.try_wait()? {
                return Err(Error::Command {
                    cmd: server.command().to_string(),
                    status,
                    stderr: "the iperf3 server exited before listening".into(),
                });
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(
                    "the iperf3 server is not listening after 5 s".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let client = self.host(from).ns.spawn([
            "iperf3".to_string(),
            "-c".into(),
            dst.to_string(),
            "-p".into(),
            port.clone(),
            "-t".into(),
            seconds.to_string(),
            "-P".into(),
            streams.to_string(),
            "--connect-timeout".into(),
            "3000".into(),
            "-J".into(),
        ])?;
        let out = client.wait_timeout(Duration::from_secs(u64::from(seconds) + 15))?;
        let json: Value = serde_json::from_str(&out.stdout).map_err(|e| Error::Parse {
            cmd: "iperf3 -c".into(),
            what: format!("{e}; stdout: {} stderr: {}", out.stdout, out.stderr),
        })?;
        if !out.status.success() || json.get("error").is_some() {
            return Err(Error::Command {
                cmd: "iperf3 -c".into(),
                status: out.status,
                stderr: json
                    .get("error")
                    .and_then(Value::as_str)
                    .unwrap_or(&out.stderr)
                    .to_string(),
            });
        }
        // The one-shot server ends after its client; killed on drop if not.
        server.wait_timeout(Duration::from_secs(5)).ok();
        let end = &json["end"];
        let intervals = json["intervals"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|i| i["sum"]["bits_per_second"].as_f64())
                    .collect()
            })
            .unwrap_or_default();
        Ok(IperfReport {
            received_bits_per_second: end["sum_received"]["bits_per_second"]
                .as_f64()
                .unwrap_or(0.0),
            received_bytes: end["sum_received"]["bytes"].as_u64().unwrap_or(0),
            retransmits: end["sum_sent"]["retransmits"].as_u64().unwrap_or(0),
            intervals,
            json,
        })
    }

    /// A picture of the topology with this bed's SAs, for people.
    pub fn describe(&self) -> String {
        let t = &self.topo;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "  hostA                gwA (xdpsec)                  wire                  gwB (xdpsec)                hostB"
        );
        let _ = writeln!(
            s,
            "  eth0 ----------- lan0      wan0 -------- to_gwA [br0] to_gwB -------- wan0      lan0 ----------- eth0"
        );
        let _ = writeln!(
            s,
            "  {:<16} {:<10}{:<14}  (capture point, no IP)  {:>14}  {:<12} {}",
            t.host_a.eth.ipv4,
            t.gw_a.lan.ipv4,
            t.gw_a.wan.ipv4,
            t.gw_b.wan.ipv4,
            t.gw_b.lan.ipv4,
            t.host_b.eth.ipv4
        );
        let _ = writeln!(
            s,
            "  {:<16} {:<10}{:<14}  {:<22}  {:>14}  {:<12} {}",
            t.host_a.eth.ipv6, t.gw_a.lan.ipv6, "", "", "", t.gw_b.lan.ipv6, t.host_b.eth.ipv6
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "  namespaces: {} (inner MTU {}, {} worker(s) and queue(s) per gateway, XDP {})",
            self.testbed.namespaces().join(" "),
            self.options.inner_mtu,
            self.options.workers,
            if self.options.xdp_generic {
                "generic"
            } else {
                "native"
            }
        );
        let families = match (self.options.ipv4, self.options.ipv6) {
            (true, true) => "10.1.0.0/24 <-> 10.2.0.0/24 and fd00:1::/64 <-> fd00:2::/64",
            (true, false) => "10.1.0.0/24 <-> 10.2.0.0/24",
            _ => "fd00:1::/64 <-> fd00:2::/64",
        };
        let _ = writeln!(s, "  protected: {families}");
        for sa in &self.sas {
            let _ = writeln!(
                s,
                "  SA {} -> {}{}: spi {:#010x}, {} {} -> {}{}",
                sa.from,
                sa.from.other(),
                match (sa.ipv4, sa.ipv6) {
                    (true, true) => "",
                    (true, false) => " (inner IPv4)",
                    _ => " (inner IPv6)",
                },
                sa.spi,
                if self.options.null_cipher {
                    "NULL cipher (benchmark switch)".to_string()
                } else {
                    format!("aes-gcm-{}", sa.key_bits)
                },
                sa.src,
                sa.dst,
                if sa.udp_encap {
                    " in UDP 4500"
                } else {
                    " (ESP, IP protocol 50)"
                }
            );
        }
        let _ = writeln!(s, "  configs and logs: {}", self.dir.display());
        s
    }
}

impl Drop for TunnelBed {
    fn drop(&mut self) {
        for charon in &mut self.charons {
            // Its drop stops it by PID (TERM, bounded wait, KILL).
            charon.take();
        }
        // SIGTERM first so the data planes detach XDP themselves; bounded,
        // and NsChild's drop kills what does not exit. The IKE daemons go
        // first: they would only log the data planes' absence.
        for daemon in &mut self.ike {
            if let Some(child) = daemon.child.take() {
                if child.terminate().is_ok() {
                    child.wait_timeout(Duration::from_secs(5)).ok();
                }
            }
        }
        for daemon in &mut self.daemons {
            if let Some(child) = daemon.child.take() {
                if child.terminate().is_ok() {
                    child.wait_timeout(Duration::from_secs(5)).ok();
                }
            }
        }
        self.testbed.kill_children();
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!(
                "xdpsec-testbed: could not remove {}: {e}",
                self.dir.display()
            );
        }
        // The test bed, dropped after this, deletes the namespaces.
    }
}

fn sys(op: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Sys { op, source }
}

/// The router's address on its link towards gateway A (and the source of
/// its ICMP errors to A), when [`TunnelOptions::narrow_underlay_mtu`] is
/// set.
pub const ROUTER_ADDR_A: std::net::Ipv4Addr = std::net::Ipv4Addr::new(198, 18, 0, 5);
/// The router's address on its link towards gateway B.
pub const ROUTER_ADDR_B: std::net::Ipv4Addr = std::net::Ipv4Addr::new(198, 18, 0, 6);

/// Turns the `wire` bridge into an IPv4 router with proxy ARP, so the
/// gateways keep their addresses on one /30 but every packet between them
/// is routed (TTL, DF and MTU enforced, ICMP errors sent). The router's
/// port towards gateway B gets MTU `mtu`.
fn route_underlay(topo: &StandardTopology, mtu: u32) -> Result<()> {
    let tap = topo
        .underlay
        .as_ref()
        .expect("the tunnel bed always builds the underlay tap");
    let wire = &tap.ns;
    wire.ip(["link", "del", "br0"])?;
    let mtu = mtu.to_string();
    wire.ip(["link", "set", "dev", &tap.port_b, "mtu", &mtu])?;
    wire.sysctl(&[
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv4.conf.all.rp_filter", "0"),
        ("net.ipv4.conf.default.rp_filter", "0"),
    ])?;
    for (port, own, gw) in [
        (&tap.port_a, ROUTER_ADDR_A, topo.gw_a.wan.ipv4),
        (&tap.port_b, ROUTER_ADDR_B, topo.gw_b.wan.ipv4),
    ] {
        // Proxy ARP answers after a random delay of up to 0.8 s by
        // default, longer than the first pings wait.
        wire.sysctl(&[
            (&format!("net.ipv4.conf.{port}.proxy_arp") as &str, "1"),
            (&format!("net.ipv4.conf.{port}.rp_filter"), "0"),
            (&format!("net.ipv4.neigh.{port}.proxy_delay"), "0"),
        ])?;
        wire.add_addr(port, own.into(), 32)?;
        wire.ip(["route", "add", &format!("{gw}/32"), "dev", port])?;
    }
    Ok(())
}

/// LAN MTUs and gateway routes; hosts keep their offloads and the
/// neighbour tables start empty, as on a user's machines.
fn prepare_network(topo: &StandardTopology, options: &TunnelOptions) -> Result<()> {
    let mtu = options.inner_mtu.to_string();
    for (host, gw) in [(&topo.host_a, &topo.gw_a), (&topo.host_b, &topo.gw_b)] {
        host.ns
            .ip(["link", "set", "dev", &host.eth.name, "mtu", &mtu])?;
        gw.ns
            .ip(["link", "set", "dev", &gw.lan.name, "mtu", &mtu])?;
    }
    let (a, b) = (&topo.gw_a, &topo.gw_b);
    for (gw, far_v4, far_v6, peer, kind) in [
        (a, "10.2.0.0/24", "fd00:2::/64", b, options.gateways[0]),
        (b, "10.1.0.0/24", "fd00:1::/64", a, options.gateways[1]),
    ] {
        // libipsec routes the far prefix into its TUN device once the
        // CHILD_SA is up; a plain route would carry cleartext before that.
        if kind == GatewayKind::Strongswan {
            continue;
        }
        if options.ipv4 {
            gw.ns.add_route(far_v4, peer.wan.ipv4.into())?;
        }
        if options.ipv6 {
            gw.ns.add_route(far_v6, peer.wan.ipv6.into())?;
        }
    }
    Ok(())
}

/// The name of the child the test bed configures on a strongSwan gateway.
pub const STRONGSWAN_CHILD: &str = "net";

fn charon_dir(dir: &Path, side: Side) -> PathBuf {
    dir.join(format!("{}-charon", side.gateway_name()))
}

/// The charon config of `side`: its underlay address to the other
/// gateway's, the inner prefixes the options carry, AES-GCM of the
/// options' key size for ESP.
pub fn strongswan_config(
    topo: &StandardTopology,
    options: &TunnelOptions,
    side: Side,
    psk: &str,
) -> StrongswanConfig {
    let (own, peer) = match side {
        Side::A => (&topo.gw_a, &topo.gw_b),
        Side::B => (&topo.gw_b, &topo.gw_a),
    };
    let probe = TunnelSa {
        spi: 0,
        from: side,
        src: own.wan.ipv4.into(),
        dst: peer.wan.ipv4.into(),
        key_hex: String::new(),
        key_bits: 0,
        udp_encap: true,
        ipv4: options.ipv4,
        ipv6: options.ipv6,
    };
    let selectors = selectors(side, &probe);
    let mut config =
        StrongswanConfig::site_to_site(own.wan.ipv4.into(), peer.wan.ipv4.into(), "", "", psk);
    let child = &mut config.children[0];
    child.name = STRONGSWAN_CHILD.to_string();
    child.local_ts = selectors.iter().map(|(l, _)| l.to_string()).collect();
    child.remote_ts = selectors.iter().map(|(_, r)| r.to_string()).collect();
    child.esp_proposals = vec![match options.key_size {
        KeySize::Aes128 => "aes128gcm16".into(),
        KeySize::Aes256 => "aes256gcm16".into(),
    }];
    if let Some(ike) = &options.ike {
        ike::adapt_strongswan(&mut config, ike, side);
    }
    config
}

fn random_bytes(n: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(sys("read /dev/urandom".into()))?;
    Ok(buf)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Which inner families each SA pair covers: one pair for all carried
/// families, or one per family with `split_families`.
fn sa_families(options: &TunnelOptions) -> Vec<(bool, bool)> {
    if options.split_families && options.ipv4 && options.ipv6 {
        vec![(true, false), (false, true)]
    } else {
        vec![(options.ipv4, options.ipv6)]
    }
}

fn random_sas(topo: &StandardTopology, options: &TunnelOptions) -> Result<Vec<TunnelSa>> {
    let spi = || -> Result<u32> {
        let b = random_bytes(4)?;
        // Never in RFC 4303's reserved 0-255.
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) | 0x0001_0000)
    };
    let key_len = options.key_size.key_bytes();
    let bits = u16::try_from(key_len * 8).unwrap_or(128);
    let (a, b): (IpAddr, IpAddr) = if options.underlay_ipv6 {
        (topo.gw_a.wan.ipv6.into(), topo.gw_b.wan.ipv6.into())
    } else {
        (topo.gw_a.wan.ipv4.into(), topo.gw_b.wan.ipv4.into())
    };
    let mut sas: Vec<TunnelSa> = Vec::new();
    for (ipv4, ipv6) in sa_families(options) {
        for (from, src, dst) in [(Side::A, a, b), (Side::B, b, a)] {
            let mut s = spi()?;
            while sas.iter().any(|sa| sa.spi == s) {
                s = spi()?;
            }
            sas.push(TunnelSa {
                spi: s,
                from,
                src,
                dst,
                key_hex: hex(&random_bytes(key_len + 4)?),
                key_bits: bits,
                udp_encap: options.encap == Encapsulation::Udp,
                ipv4,
                ipv6,
            });
        }
    }
    Ok(sas)
}

/// The prefixes of `side`'s LAN and of the far LAN, per family `sa`
/// covers.
fn selectors(side: Side, sa: &TunnelSa) -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    let (v4, v6) = match side {
        Side::A => (
            ("10.1.0.0/24", "10.2.0.0/24"),
            ("fd00:1::/64", "fd00:2::/64"),
        ),
        Side::B => (
            ("10.2.0.0/24", "10.1.0.0/24"),
            ("fd00:2::/64", "fd00:1::/64"),
        ),
    };
    if sa.ipv4 {
        out.push(v4);
    }
    if sa.ipv6 {
        out.push(v6);
    }
    out
}

/// The `xdpsec dataplane` config of `side`.
fn gateway_config(side: Side, sas: &[TunnelSa], options: &TunnelOptions, socket: &Path) -> String {
    let n = options.workers;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# xdpsec test bed: {side}'s side of the tunnel (generated, keys are random)\n\n\
         [dataplane]\n\
         api_socket = \"{}\"\n\
         state_dir = \"{}\"\n\
         workers = {n}\n\
         cpus = []\n\
         busy_poll = false\n\
         xdp_mode = \"{}\"\n\
         mss_clamp = {}\n\
         outer_fragmentation = {}\n\
         {}\n\
         [[interface]]\nname = \"lan0\"\nrole = \"inside\"\n\n\
         [[interface]]\nname = \"wan0\"\nrole = \"outside\"\n",
        socket.display(),
        socket.with_extension("state").display(),
        if options.xdp_generic {
            "generic"
        } else {
            "native"
        },
        options.mss_clamp,
        options.outer_fragmentation,
        options
            .ike
            .as_ref()
            .and_then(|ike| ike.run_as.as_ref())
            .map_or(String::new(), |(_, group)| format!(
                "api_socket_group = {group:?}\n"
            )),
    );
    for sa in sas {
        let selector_list = selectors(side, sa)
            .iter()
            .map(|(local, remote)| format!("{{ local = \"{local}\", remote = \"{remote}\" }}"))
            .collect::<Vec<_>>()
            .join(", ");
        let direction = if sa.from == side { "out" } else { "in" };
        let (local, remote) = if sa.from == side {
            (sa.src, sa.dst)
        } else {
            (sa.dst, sa.src)
        };
        let _ = writeln!(
            s,
            "[[sa]]\n\
             spi = {:#010x}\n\
             direction = \"{direction}\"\n\
             key = \"{}\"\n\
             tunnel_local = \"{local}\"\n\
             tunnel_remote = \"{remote}\"\n\
             {}selectors = [{selector_list}]\n",
            sa.spi,
            sa.key_hex,
            if sa.udp_encap {
                "encap = { sport = 4500, dport = 4500 }\n"
            } else {
                ""
            }
        );
    }
    for (direction, from) in [("out", side), ("in", side.other())] {
        for sa in sas.iter().filter(|sa| sa.from == from) {
            let spi = sa.spi;
            for (local, remote) in selectors(side, sa) {
                let _ = writeln!(
                    s,
                    "[[policy]]\n\
                     local = \"{local}\"\n\
                     remote = \"{remote}\"\n\
                     direction = \"{direction}\"\n\
                     action = \"protect\"\n\
                     spi = {spi:#010x}\n"
                );
            }
        }
    }
    s
}

fn iputils_ping() -> Option<&'static str> {
    ["/usr/bin/ping", "/bin/ping"]
        .into_iter()
        .find(|p| Path::new(p).exists())
}

/// `count` echo requests from `ns` to `dst`, 0.2 s apart; see
/// [`TunnelBed::ping`].
pub fn ping_from(ns: &Netns, dst: IpAddr, count: u16) -> Result<PingStats> {
    let Some(ping) = iputils_ping() else {
        let report = ns.ping_report(dst, count, Duration::from_secs(1))?;
        return Ok(PingStats {
            transmitted: u32::from(report.sent),
            received: u32::from(report.received),
            duplicates: 0,
            output: format!(
                "{} echo requests to {dst}, {} replies (test bed ICMP; no ping binary)",
                report.sent, report.received
            ),
        });
    };
    let deadline = (u32::from(count) / 5 + 3).to_string();
    let child = ns.spawn([
        ping.to_string(),
        "-n".into(),
        "-c".into(),
        count.to_string(),
        "-i".into(),
        "0.2".into(),
        "-W".into(),
        "1".into(),
        "-w".into(),
        deadline,
        dst.to_string(),
    ])?;
    let out = child.wait_timeout(Duration::from_secs(u64::from(count) / 5 + 10))?;
    parse_ping(&out.stdout).ok_or_else(|| Error::Parse {
        cmd: format!("ping {dst}"),
        what: format!(
            "no statistics line ({}); stdout: {} stderr: {}",
            out.status, out.stdout, out.stderr
        ),
    })
}

/// Reads iputils' summary: `5 packets transmitted, 5 received, +1
/// duplicates, 0% packet loss, ...`.
fn parse_ping(output: &str) -> Option<PingStats> {
    let line = output.lines().find(|l| l.contains("packets transmitted"))?;
    let mut stats = PingStats {
        transmitted: 0,
        received: 0,
        duplicates: 0,
        output: output.to_string(),
    };
    for part in line.split(',') {
        let mut words = part.split_whitespace();
        let (Some(n), Some(what)) = (words.next(), words.next()) else {
            continue;
        };
        let n = n.trim_start_matches('+');
        match what {
            "packets" => stats.transmitted = n.parse().ok()?,
            "received" => stats.received = n.parse().ok()?,
            "duplicates" => stats.duplicates = n.parse().ok()?,
            _ => {}
        }
    }
    let dup_lines = output.lines().filter(|l| l.contains("DUP!")).count();
    stats.duplicates = stats
        .duplicates
        .max(u32::try_from(dup_lines).unwrap_or(u32::MAX));
    Some(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ping_summaries() {
        let ok = "PING 10.2.0.2 (10.2.0.2) 56(84) bytes of data.\n\
                  64 bytes from 10.2.0.2: icmp_seq=1 ttl=62 time=0.3 ms\n\n\
                  --- 10.2.0.2 ping statistics ---\n\
                  5 packets transmitted, 5 received, 0% packet loss, time 803ms\n";
        let s = parse_ping(ok).unwrap();
        assert_eq!((s.transmitted, s.received, s.duplicates), (5, 5, 0));
        assert!(s.all_answered_once());

        let dup = "64 bytes from 10.2.0.2: icmp_seq=1 ttl=62 time=0.3 ms\n\
                   64 bytes from 10.2.0.2: icmp_seq=1 ttl=62 time=0.4 ms (DUP!)\n\
                   3 packets transmitted, 3 received, +1 duplicates, 0% packet loss, time 1ms\n";
        let s = parse_ping(dup).unwrap();
        assert_eq!((s.transmitted, s.received, s.duplicates), (3, 3, 1));
        assert!(!s.all_answered_once());

        let lost = "4 packets transmitted, 0 received, 100% packet loss, time 3050ms\n";
        let s = parse_ping(lost).unwrap();
        assert_eq!((s.transmitted, s.received), (4, 0));
        assert!(parse_ping("ping: connect: Network is unreachable\n").is_none());
    }

    #[test]
    fn gateway_configs_mirror_each_other() {
        let options = TunnelOptions {
            encap: Encapsulation::Udp,
            workers: 2,
            ..TunnelOptions::default()
        };
        let sa = |spi, from: Side, src: &str, dst: &str| TunnelSa {
            spi,
            from,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            key_hex: "00".repeat(20),
            key_bits: 128,
            udp_encap: true,
            ipv4: true,
            ipv6: true,
        };
        let sas = [
            sa(0x1_0001, Side::A, "198.18.0.1", "198.18.0.2"),
            sa(0x1_0002, Side::B, "198.18.0.2", "198.18.0.1"),
        ];
        let a = gateway_config(Side::A, &sas, &options, Path::new("/tmp/a.sock"));
        assert!(a.contains("spi = 0x00010001\ndirection = \"out\""), "{a}");
        assert!(a.contains("spi = 0x00010002\ndirection = \"in\""), "{a}");
        assert!(a.contains("tunnel_local = \"198.18.0.1\""), "{a}");
        assert!(a.contains("encap = { sport = 4500, dport = 4500 }"), "{a}");
        assert!(a.contains("workers = 2"), "{a}");
        let b = gateway_config(Side::B, &sas, &options, Path::new("/tmp/b.sock"));
        assert!(b.contains("spi = 0x00010001\ndirection = \"in\""), "{b}");
        assert!(
            b.contains("local = \"10.2.0.0/24\", remote = \"10.1.0.0/24\""),
            "{b}"
        );
        assert!(sas[0]
            .tshark_uat()
            .starts_with("uat:esp_sa:\"IPv4\",\"198.18.0.1\",\"198.18.0.2\",\"0x00010001\""));
        assert!(!format!("{:?}", sas[0]).contains("0000000000"));
    }

    #[test]
    fn split_families_give_each_family_its_own_sas_and_policies() {
        let options = TunnelOptions {
            split_families: true,
            ..TunnelOptions::default()
        };
        assert_eq!(sa_families(&options), [(true, false), (false, true)]);
        assert_eq!(
            sa_families(&TunnelOptions::default()),
            [(true, true)],
            "one pair for both families unless split"
        );
        let only_v6 = TunnelOptions {
            ipv4: false,
            ..options.clone()
        };
        assert_eq!(sa_families(&only_v6), [(false, true)]);

        let sa = |spi, from: Side, ipv4| {
            let (src, dst) = match from {
                Side::A => ("198.18.0.1", "198.18.0.2"),
                Side::B => ("198.18.0.2", "198.18.0.1"),
            };
            TunnelSa {
                spi,
                from,
                src: src.parse().unwrap(),
                dst: dst.parse().unwrap(),
                key_hex: "00".repeat(20),
                key_bits: 128,
                udp_encap: false,
                ipv4,
                ipv6: !ipv4,
            }
        };
        let sas = [
            sa(0x1_0001, Side::A, true),
            sa(0x1_0002, Side::B, true),
            sa(0x1_0003, Side::A, false),
            sa(0x1_0004, Side::B, false),
        ];
        let b = gateway_config(Side::B, &sas, &options, Path::new("/tmp/b.sock"));
        let v4 = "selectors = [{ local = \"10.2.0.0/24\", remote = \"10.1.0.0/24\" }]";
        let v6 = "selectors = [{ local = \"fd00:2::/64\", remote = \"fd00:1::/64\" }]";
        for (spi, direction, selectors) in [
            (0x1_0001, "in", v4),
            (0x1_0002, "out", v4),
            (0x1_0003, "in", v6),
            (0x1_0004, "out", v6),
        ] {
            let head = format!("[[sa]]\nspi = {spi:#010x}\ndirection = \"{direction}\"\n");
            let at = b.find(&head).unwrap_or_else(|| panic!("{head} in {b}"));
            let block = b[at..].split("\n\n").next().unwrap();
            assert!(block.contains(selectors), "{block}");
        }
        for (local, remote, direction, spi) in [
            ("10.2.0.0/24", "10.1.0.0/24", "out", 0x1_0002),
            ("fd00:2::/64", "fd00:1::/64", "out", 0x1_0004),
            ("10.2.0.0/24", "10.1.0.0/24", "in", 0x1_0001),
            ("fd00:2::/64", "fd00:1::/64", "in", 0x1_0003),
        ] {
            let policy = format!(
                "[[policy]]\nlocal = \"{local}\"\nremote = \"{remote}\"\n\
                 direction = \"{direction}\"\naction = \"protect\"\nspi = {spi:#010x}\n"
            );
            assert!(b.contains(&policy), "{policy} in {b}");
        }
        assert_eq!(b.matches("[[sa]]").count(), 4, "{b}");
        assert_eq!(b.matches("[[policy]]").count(), 4, "{b}");
    }
}
