//! The static (manual-key) configuration that `xdpsec dataplane --config
//! FILE` reads, in the spirit of `ip xfrm state/policy add`:
//! `[dataplane]`, `[[interface]]`, `[[sa]]` and `[[policy]]` tables.
//!
//! Errors name the file, the field (`sa[1].key`) and what is wrong, with
//! the line and column where the field is.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::policy::{Policy, PolicyAction};
use crate::prefix::Prefix;
use crate::sa::{Direction, SaSpec, ValidationError};

/// Where the SA API socket goes unless the config says otherwise.
pub const DEFAULT_API_SOCKET: &str = "/run/xdpsec/api.sock";

/// Largest config file read: a static config of 100,000 tunnels (two SAs
/// and two policies each) takes about 70 MiB.
const MAX_CONFIG_BYTES: u64 = 256 << 20;

/// The example in `examples/static-tunnel.toml`: gateway A of a
/// site-to-site tunnel.
pub fn sample_config() -> &'static str {
    include_str!("../examples/static-tunnel.toml")
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    /// `[dataplane]`.
    #[serde(default)]
    pub dataplane: DataplaneConfig,
    /// `[[interface]]` entries.
    #[serde(default, rename = "interface")]
    pub interfaces: Vec<InterfaceConfig>,
    /// `[[sa]]` entries.
    #[serde(default, rename = "sa")]
    pub sas: Vec<SaSpec>,
    /// `[[policy]]` entries.
    #[serde(default, rename = "policy")]
    pub policies: Vec<Policy>,
}

/// How XDP is attached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// In the driver (fast; veth supports it).
    #[default]
    Native,
    /// In the generic network stack hook (any driver, slower).
    Generic,
}

/// `[dataplane]`: process-wide knobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataplaneConfig {
    /// The SA API socket (created with mode 0600).
    #[serde(default = "default_api_socket")]
    pub api_socket: PathBuf,
    /// Worker threads; absent: one per entry of `cpus`, or one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<u32>,
    /// CPUs to pin workers to, one each; empty: not pinned.
    #[serde(default)]
    pub cpus: Vec<u32>,
    /// Spin instead of sleeping in poll() when idle.
    #[serde(default)]
    pub busy_poll: bool,
    /// With `busy_poll`: the kernel's busy polling on every AF_XDP socket
    /// (`SO_PREFER_BUSY_POLL`, `SO_BUSY_POLL` of this many microseconds),
    /// the worker's spin driving the driver's NAPI through `recvfrom` and
    /// `sendto` instead of interrupts. 0: off (the spin only reads rings).
    #[serde(default, skip_serializing_if = "is_default")]
    pub busy_poll_usecs: u32,
    /// Packets the driver handles per busy-poll call (`SO_BUSY_POLL_BUDGET`).
    #[serde(default = "default_busy_poll_budget")]
    pub busy_poll_budget: u32,
    /// Entries of each AF_XDP socket's RX ring (a power of two).
    #[serde(default = "default_ring_size")]
    pub rx_ring_size: u32,
    /// Entries of each AF_XDP socket's TX ring (a power of two).
    #[serde(default = "default_ring_size")]
    pub tx_ring_size: u32,
    /// Entries of each fill ring (a power of two); half of it is kept stocked.
    #[serde(default = "default_ring_size")]
    pub fill_ring_size: u32,
    /// Entries of each completion ring (a power of two).
    #[serde(default = "default_ring_size")]
    pub completion_ring_size: u32,
    /// Bytes per UMEM frame: 2048 or 4096.
    #[serde(default = "default_frame_size")]
    pub frame_size: u32,
    /// Frames of each UMEM (a worker has one per zero-copy interface and
    /// one for its copy-mode interfaces); absent: enough
    /// for the rings of the queues it serves, at least 4096.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub umem_frames: Option<u32>,
    /// Native or generic XDP.
    #[serde(default)]
    pub xdp_mode: XdpMode,
    /// Lower the MSS option of TCP SYNs going into the tunnel so that
    /// full-size segments fit the path after ESP is added.
    #[serde(default = "default_mss_clamp")]
    pub mss_clamp: bool,
    /// An inner IPv4 packet without DF that does not fit the tunnel is
    /// encrypted and the outer packet fragmented (RFC 4303 section 3.3.4);
    /// off: it is dropped and the sender gets "fragmentation needed".
    #[serde(default = "default_true")]
    pub outer_fragmentation: bool,
    /// How long a path MTU learned from an ICMP "too big" holds, in seconds.
    #[serde(default = "default_pmtu_timeout_secs")]
    pub pmtu_timeout_secs: u64,
    /// ICMP errors ("too big") each worker may send per second (token
    /// bucket; the burst is as large).
    #[serde(default = "default_icmp_rate")]
    pub icmp_rate: u32,
    /// Datagrams each worker reassembles at once from outer fragments.
    #[serde(default = "default_reassembly_slots")]
    pub reassembly_slots: u32,
    /// How long an incomplete datagram may wait for its fragments, in ms.
    #[serde(default = "default_reassembly_timeout_ms")]
    pub reassembly_timeout_ms: u32,
    /// How many remote prefixes of each family the XDP program can steer
    /// (the size of its protected-prefix maps): one per distinct remote
    /// prefix of the outbound `protect` and `drop` policies, the static
    /// ones and those the SA API adds. The kernel allocates an entry only
    /// when it is used.
    #[serde(default = "default_max_protected_prefixes")]
    pub max_protected_prefixes: u32,
    /// Where the data plane keeps what must outlive it: the sequence
    /// number reservations of static SAs (so no AES-GCM nonce repeats
    /// across restarts), the replay floors of static inbound SAs, and the
    /// policies the SA API installed (restored as blocking until their SAs
    /// come back). Created with mode 0700; must be on persistent storage.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// What a clean stop (SIGTERM) does with the fail-closed guard (the
    /// nftables table `inet xdpsec_guard`): `keep` it, so protected
    /// traffic stays blocked while the data plane is down, or `remove` it.
    #[serde(default)]
    pub guard_on_stop: GuardOnStop,
    /// The group (a name or a gid) that may connect to the SA API socket
    /// (mode 0660 then): the group an unprivileged `xdpsec ike` runs in.
    /// Absent: root only (mode 0600).
    #[serde(default)]
    pub api_socket_group: Option<String>,
}

/// `[dataplane] guard_on_stop`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GuardOnStop {
    /// Leave the guard in place: protected traffic is dropped, not sent in
    /// cleartext, until the data plane is back (XFRM's block).
    #[default]
    Keep,
    /// Lift it: protected traffic goes wherever the kernel routes it, in
    /// cleartext, once the data plane is gone.
    Remove,
}

/// Default `[dataplane] state_dir`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/xdpsec";

fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}

fn default_true() -> bool {
    true
}

fn default_pmtu_timeout_secs() -> u64 {
    600
}

fn default_icmp_rate() -> u32 {
    100
}

fn default_reassembly_slots() -> u32 {
    64
}

fn default_reassembly_timeout_ms() -> u32 {
    2000
}

/// Room for 100,000 tunnels' prefixes and more.
pub const DEFAULT_MAX_PROTECTED_PREFIXES: u32 = 1 << 17;

fn default_max_protected_prefixes() -> u32 {
    DEFAULT_MAX_PROTECTED_PREFIXES
}

/// Default of every AF_XDP ring size.
pub const DEFAULT_RING_SIZE: u32 = 2048;

/// Bounds of the AF_XDP ring sizes.
pub const RING_SIZES: std::ops::RangeInclusive<u32> = 64..=32_768;

/// Bounds of `umem_frames`: 4 GiB of 4096-byte frames at most per UMEM.
pub const UMEM_FRAMES: std::ops::RangeInclusive<u32> = 512..=1 << 20;

fn default_ring_size() -> u32 {
    DEFAULT_RING_SIZE
}

fn default_frame_size() -> u32 {
    2048
}

fn default_busy_poll_budget() -> u32 {
    64
}

fn default_api_socket() -> PathBuf {
    PathBuf::from(DEFAULT_API_SOCKET)
}

fn default_mss_clamp() -> bool {
    true
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        DataplaneConfig {
            api_socket: default_api_socket(),
            workers: None,
            cpus: Vec::new(),
            busy_poll: false,
            busy_poll_usecs: 0,
            busy_poll_budget: default_busy_poll_budget(),
            rx_ring_size: DEFAULT_RING_SIZE,
            tx_ring_size: DEFAULT_RING_SIZE,
            fill_ring_size: DEFAULT_RING_SIZE,
            completion_ring_size: DEFAULT_RING_SIZE,
            frame_size: default_frame_size(),
            umem_frames: None,
            xdp_mode: XdpMode::Native,
            mss_clamp: true,
            outer_fragmentation: true,
            pmtu_timeout_secs: default_pmtu_timeout_secs(),
            icmp_rate: default_icmp_rate(),
            reassembly_slots: default_reassembly_slots(),
            reassembly_timeout_ms: default_reassembly_timeout_ms(),
            max_protected_prefixes: default_max_protected_prefixes(),
            state_dir: default_state_dir(),
            guard_on_stop: GuardOnStop::Keep,
            api_socket_group: None,
        }
    }
}

impl DataplaneConfig {
    /// The number of workers to start.
    pub fn worker_count(&self) -> u32 {
        match self.workers {
            Some(n) => n,
            None if !self.cpus.is_empty() => u32::try_from(self.cpus.len()).unwrap_or(u32::MAX),
            None => 1,
        }
    }
}

/// What an interface is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The LAN side: cleartext.
    Inside,
    /// The WAN side: ESP.
    Outside,
    /// Both, on a one-armed gateway.
    Both,
    /// The route-based tunnel interface: the data plane creates a veth
    /// pair, `name` for the host (routes point into it, addresses the host
    /// reaches through the tunnel go on it) and [`tunnel_peer_name`] for
    /// itself; what the host sends into it is protected like LAN traffic,
    /// and decrypted traffic for the host comes back out of it.
    Tunnel,
}

/// Longest name of a tunnel interface: its peer end's name adds
/// [`TUNNEL_PEER_SUFFIX`] and must fit the kernel's 15 bytes.
pub const MAX_TUNNEL_NAME: usize = 15 - TUNNEL_PEER_SUFFIX.len();

/// What the data plane's end of a tunnel interface adds to its name.
pub const TUNNEL_PEER_SUFFIX: &str = "-dp";

/// The name of the data plane's end of the tunnel interface `name`.
pub fn tunnel_peer_name(name: &str) -> String {
    format!("{name}{TUNNEL_PEER_SUFFIX}")
}

/// `[[interface]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceConfig {
    /// Kernel interface name.
    pub name: String,
    /// Inside, outside, or both (one-armed).
    pub role: Role,
    /// The RX queues the interface has, as a check: absent, the data plane
    /// serves every RX queue it finds; present, it refuses to start if the
    /// interface has another number (every queue is served or the data
    /// plane does not start: a queue without a socket would drop protected
    /// traffic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queues: Option<u32>,
    /// Tunnel interfaces only: which decrypted packets go back into it.
    #[serde(default, skip_serializing_if = "is_default")]
    pub deliver: Deliver,
    /// How its AF_XDP sockets bind: zero-copy if the driver offers it
    /// (`auto`), zero-copy or refuse to start (`zerocopy`), or copy mode.
    #[serde(default, skip_serializing_if = "is_default")]
    pub xdp_bind: XdpBind,
    /// Its sockets' RX ring entries; absent: `[dataplane] rx_ring_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_ring_size: Option<u32>,
    /// Its sockets' TX ring entries; absent: `[dataplane] tx_ring_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_ring_size: Option<u32>,
}

/// `[[interface]] xdp_bind`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpBind {
    /// Zero-copy when the driver takes it, else copy mode (`xdpsec status`
    /// says which, and why zero-copy was refused).
    #[default]
    Auto,
    /// Zero-copy, or the data plane does not start.
    Zerocopy,
    /// Copy mode (the kernel copies each frame between its buffers and the UMEM).
    Copy,
}

impl fmt::Display for XdpBind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            XdpBind::Auto => "auto",
            XdpBind::Zerocopy => "zerocopy",
            XdpBind::Copy => "copy",
        })
    }
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// Which decrypted packets a tunnel interface hands to the host's stack.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Deliver {
    /// Those for the host's own addresses, or routed into the tunnel; the
    /// rest is forwarded by the data plane itself.
    #[default]
    Host,
    /// All of them: the kernel routes, filters and source-NATs them (a
    /// remote-access gateway whose clients reach the internet through its
    /// masquerade). Routes for the clients' addresses point into the
    /// tunnel so the replies come back to the data plane.
    All,
}

/// A config that cannot be used: the file, the field and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// Path of the field (`sa[1].key`), when one is to blame.
    pub field: Option<String>,
    /// What is wrong.
    pub reason: String,
    /// 1-based line and column of the field or error, when known.
    pub location: Option<(usize, usize)>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config {}: ", self.file.display())?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.reason)?;
        if let Some((line, column)) = self.location {
            write!(f, " (line {line}, column {column})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl StaticConfig {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        Self::parse(&read_config_file(path)?, path)
    }

    /// Parses and validates `text`; `file` is only used in errors.
    pub fn parse(text: &str, file: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let file = file.as_ref();
        let config: StaticConfig = parse_toml(text, file)?;
        config
            .validate()
            .map_err(|e| validation_error(file, text, e))?;
        Ok(config)
    }

    /// Checks everything the types do not: ranges, uniqueness, references
    /// between entries. Field paths are absolute (`sa[1].spi`).
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.validate_dataplane()?;
        self.validate_interfaces()?;
        let mut by_id: HashMap<(u32, Direction), usize> = HashMap::new();
        for (i, sa) in self.sas.iter().enumerate() {
            sa.validate().map_err(|e| e.within(&format!("sa[{i}]")))?;
            if let Some(j) = by_id.insert((sa.spi, sa.direction), i) {
                return Err(ValidationError::new(
                    format!("sa[{i}].spi"),
                    format!(
                        "SPI {:#x} ({}) with direction = \"{}\" is already used by sa[{j}]; \
                         SPIs must be unique per direction",
                        sa.spi, sa.spi, sa.direction
                    ),
                ));
            }
        }
        let mut policies = HashMap::new();
        for (i, policy) in self.policies.iter().enumerate() {
            let field = format!("policy[{i}]");
            policy.validate().map_err(|e| e.within(&field))?;
            if let Some(j) = policies.insert(policy.key(), i) {
                return Err(ValidationError::new(
                    field,
                    format!("same local, remote and direction as policy[{j}]"),
                ));
            }
            if let (PolicyAction::Protect, Some(spi)) = (policy.action, policy.spi) {
                let Some(&s) = by_id.get(&(spi, policy.direction)) else {
                    return Err(ValidationError::new(
                        format!("{field}.spi"),
                        format!(
                            "no [[sa]] has spi = {spi:#x} ({spi}) and direction = \"{}\"",
                            policy.direction
                        ),
                    ));
                };
                let sa = &self.sas[s];
                let covered = sa
                    .selectors
                    .iter()
                    .any(|ts| ts.local.covers(&policy.local) && ts.remote.covers(&policy.remote));
                if !covered {
                    return Err(ValidationError::new(
                        field,
                        format!(
                            "{} -> {} is not inside the traffic selectors of sa[{s}] \
                             (spi {spi:#x}); its packets would be dropped",
                            policy.local, policy.remote
                        ),
                    ));
                }
            }
        }
        self.validate_prefix_room()?;
        Ok(())
    }

    /// The static policies' steered prefixes fit the XDP maps.
    fn validate_prefix_room(&self) -> Result<(), ValidationError> {
        let steered: std::collections::HashSet<(bool, Prefix)> = self
            .policies
            .iter()
            .filter(|p| p.direction == Direction::Out && p.action != PolicyAction::Bypass)
            .map(|p| (p.remote.is_ipv4(), p.remote))
            .collect();
        let room = u64::from(self.dataplane.max_protected_prefixes);
        for v4 in [true, false] {
            let count = steered.iter().filter(|(f, _)| *f == v4).count() as u64;
            if count > room {
                return Err(ValidationError::new(
                    "dataplane.max_protected_prefixes",
                    format!(
                        "the policies steer {count} distinct {} remote prefixes, more than \
                         max_protected_prefixes = {room}: raise it to at least {count}",
                        if v4 { "IPv4" } else { "IPv6" }
                    ),
                ));
            }
        }
        Ok(())
    }

    fn validate_dataplane(&self) -> Result<(), ValidationError> {
        let dp = &self.dataplane;
        let socket = &dp.api_socket;
        if !socket.is_absolute() {
            return Err(ValidationError::new(
                "dataplane.api_socket",
                format!("{} is not an absolute path", socket.display()),
            ));
        }
        // sun_path holds 108 bytes including the terminating NUL.
        if socket.as_os_str().len() > 107 {
            return Err(ValidationError::new(
                "dataplane.api_socket",
                format!(
                    "path is {} bytes, Unix sockets allow at most 107",
                    socket.as_os_str().len()
                ),
            ));
        }
        if dp.workers == Some(0) {
            return Err(ValidationError::new(
                "dataplane.workers",
                "must be at least 1",
            ));
        }
        let ranges: [(&str, u64, u64, u64); 4] = [
            (
                "dataplane.pmtu_timeout_secs",
                dp.pmtu_timeout_secs,
                1,
                86_400,
            ),
            (
                "dataplane.reassembly_slots",
                u64::from(dp.reassembly_slots),
                1,
                4096,
            ),
            (
                "dataplane.reassembly_timeout_ms",
                u64::from(dp.reassembly_timeout_ms),
                10,
                60_000,
            ),
            (
                "dataplane.max_protected_prefixes",
                u64::from(dp.max_protected_prefixes),
                1,
                1 << 24,
            ),
        ];
        for (field, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return Err(ValidationError::new(
                    field,
                    format!("{value} is outside {min}..={max}"),
                ));
            }
        }
        self.validate_afxdp()?;
        let mut seen = BTreeMap::new();
        for (i, cpu) in dp.cpus.iter().enumerate() {
            if let Some(j) = seen.insert(cpu, i) {
                return Err(ValidationError::new(
                    format!("dataplane.cpus[{i}]"),
                    format!("CPU {cpu} is already listed at cpus[{j}]"),
                ));
            }
        }
        if let Some(n) = dp.workers {
            if !dp.cpus.is_empty() && dp.cpus.len() != n as usize {
                return Err(ValidationError::new(
                    "dataplane.workers",
                    format!(
                        "{n} workers but cpus lists {} CPUs; list one CPU per worker or leave cpus empty",
                        dp.cpus.len()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The AF_XDP knobs: ring and UMEM sizes, busy polling.
    fn validate_afxdp(&self) -> Result<(), ValidationError> {
        let dp = &self.dataplane;
        let per_interface = self.interfaces.iter().enumerate().flat_map(|(i, iface)| {
            [
                (format!("interface[{i}].rx_ring_size"), iface.rx_ring_size),
                (format!("interface[{i}].tx_ring_size"), iface.tx_ring_size),
            ]
            .into_iter()
            .filter_map(|(key, v)| Some((key, v?)))
        });
        for (key, v) in [
            ("dataplane.rx_ring_size".to_owned(), dp.rx_ring_size),
            ("dataplane.tx_ring_size".to_owned(), dp.tx_ring_size),
            ("dataplane.fill_ring_size".to_owned(), dp.fill_ring_size),
            (
                "dataplane.completion_ring_size".to_owned(),
                dp.completion_ring_size,
            ),
        ]
        .into_iter()
        .chain(per_interface)
        {
            if !v.is_power_of_two() || !RING_SIZES.contains(&v) {
                return Err(ValidationError::new(
                    key,
                    format!(
                        "{v} is not a power of two in {}..={} (the kernel's rings are \
                         powers of two)",
                        RING_SIZES.start(),
                        RING_SIZES.end()
                    ),
                ));
            }
        }
        if dp.frame_size != 2048 && dp.frame_size != 4096 {
            return Err(ValidationError::new(
                "dataplane.frame_size",
                format!(
                    "{} bytes; a UMEM frame is 2048 or 4096 bytes",
                    dp.frame_size
                ),
            ));
        }
        if let Some(frames) = dp.umem_frames {
            if !UMEM_FRAMES.contains(&frames) {
                return Err(ValidationError::new(
                    "dataplane.umem_frames",
                    format!(
                        "{frames} is outside {}..={}",
                        UMEM_FRAMES.start(),
                        UMEM_FRAMES.end()
                    ),
                ));
            }
            // Half the fill ring is kept stocked; the rest of the frames
            // carry TX and packets in flight.
            let least = dp.fill_ring_size / 2 + 2 * 64;
            if frames < least {
                return Err(ValidationError::new(
                    "dataplane.umem_frames",
                    format!(
                        "{frames} frames cannot stock half the fill ring ({}) and still \
                         hold two batches in flight; give at least {least}, or leave it \
                         out",
                        dp.fill_ring_size / 2
                    ),
                ));
            }
        }
        if dp.busy_poll_usecs > 1_000_000 {
            return Err(ValidationError::new(
                "dataplane.busy_poll_usecs",
                format!("{} is outside 0..=1000000", dp.busy_poll_usecs),
            ));
        }
        if !(1..=u32::from(u16::MAX)).contains(&dp.busy_poll_budget) {
            return Err(ValidationError::new(
                "dataplane.busy_poll_budget",
                format!("{} is outside 1..=65535", dp.busy_poll_budget),
            ));
        }
        if dp.busy_poll_usecs > 0 && !dp.busy_poll {
            return Err(ValidationError::new(
                "dataplane.busy_poll_usecs",
                "the kernel's busy polling needs a worker that spins: set busy_poll = true \
                 as well, or leave busy_poll_usecs out",
            ));
        }
        Ok(())
    }

    fn validate_interfaces(&self) -> Result<(), ValidationError> {
        if self.interfaces.is_empty() {
            return Err(ValidationError::new(
                "interface",
                "no [[interface]]: add one with role = \"inside\" and one with role = \"outside\" \
                 (or one with role = \"both\" for a one-armed gateway)",
            ));
        }
        let mut names = HashMap::new();
        for (i, iface) in self.interfaces.iter().enumerate() {
            let name = &iface.name;
            let bad_char = name
                .chars()
                .find(|c| c.is_whitespace() || c.is_control() || *c == '/' || *c == ':');
            if name.is_empty()
                || name.len() > 15
                || bad_char.is_some()
                || name == "."
                || name == ".."
            {
                return Err(ValidationError::new(
                    format!("interface[{i}].name"),
                    format!(
                        "{name:?} is not a valid interface name (1-15 bytes, no whitespace, '/' or ':')"
                    ),
                ));
            }
            if let Some(j) = names.insert(name.as_str(), i) {
                return Err(ValidationError::new(
                    format!("interface[{i}].name"),
                    format!("{name:?} is already listed at interface[{j}]"),
                ));
            }
            if iface.queues == Some(0) {
                return Err(ValidationError::new(
                    format!("interface[{i}].queues"),
                    "must be at least 1",
                ));
            }
            if iface.xdp_bind == XdpBind::Zerocopy && self.dataplane.xdp_mode == XdpMode::Generic {
                return Err(ValidationError::new(
                    format!("interface[{i}].xdp_bind"),
                    "zero-copy needs XDP in the driver: set [dataplane] xdp_mode = \"native\", \
                     or xdp_bind = \"auto\"",
                ));
            }
            if iface.role == Role::Tunnel && iface.xdp_bind == XdpBind::Zerocopy {
                return Err(ValidationError::new(
                    format!("interface[{i}].xdp_bind"),
                    "the tunnel interface is a veth pair, which has no zero-copy: leave \
                     xdp_bind out or set it to \"copy\"",
                ));
            }
            if iface.role != Role::Tunnel && iface.deliver != Deliver::Host {
                return Err(ValidationError::new(
                    format!("interface[{i}].deliver"),
                    "only a tunnel interface (role = \"tunnel\") delivers decrypted packets",
                ));
            }
            if iface.role == Role::Tunnel && name.len() > MAX_TUNNEL_NAME {
                return Err(ValidationError::new(
                    format!("interface[{i}].name"),
                    format!(
                        "{name:?} is too long for a tunnel interface: at most {MAX_TUNNEL_NAME} \
                         bytes, so that its peer end {:?} fits 15",
                        tunnel_peer_name(name)
                    ),
                ));
            }
        }
        let tunnels = self
            .interfaces
            .iter()
            .filter(|i| i.role == Role::Tunnel)
            .count();
        if tunnels > 1 {
            return Err(ValidationError::new(
                "interface",
                "more than one interface has role = \"tunnel\"; one is enough, routes choose \
                 what goes into it",
            ));
        }
        let has = |role| self.interfaces.iter().any(|i| i.role == role);
        // A remote-access client has no LAN: the tunnel interface is its inside.
        let has_inside = has(Role::Inside) || has(Role::Tunnel);
        if !has(Role::Both) {
            for (present, name) in [(has_inside, "inside"), (has(Role::Outside), "outside")] {
                if !present {
                    return Err(ValidationError::new(
                        "interface",
                        format!(
                            "no interface has role = \"{name}\"; a gateway needs an inside and an \
                             outside interface (or one with role = \"both\" for a one-armed gateway)"
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Reads a config file as UTF-8 text, refusing files over 256 MiB; errors
/// name the file.
pub fn read_config_file(path: &Path) -> Result<String, ConfigError> {
    let fail = |reason: String| ConfigError {
        file: path.to_owned(),
        field: None,
        reason,
        location: None,
    };
    let file = std::fs::File::open(path).map_err(|e| fail(format!("cannot open: {e}")))?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(fail(format!(
            "larger than {} MiB; is this the right file?",
            MAX_CONFIG_BYTES >> 20
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        fail(format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ))
    })
}

/// Deserializes TOML `text` into `T`; a syntax or type error names the
/// field (`sa[1].key`) with its line and column. `file` is only used in
/// errors.
pub fn parse_toml<T: DeserializeOwned>(text: &str, file: &Path) -> Result<T, ConfigError> {
    if let Err(e) = DeTable::parse(text) {
        return Err(toml_error(file, text, &e, "TOML syntax error: "));
    }
    toml::from_str(text).map_err(|e| toml_error(file, text, &e, ""))
}

/// Turns a [`ValidationError`] about `text` into a [`ConfigError`] that
/// points at the line and column of its field.
pub fn validation_error(file: &Path, text: &str, e: ValidationError) -> ConfigError {
    let location = locate_field(text, &e.field);
    ConfigError {
        file: file.to_owned(),
        field: (!e.field.is_empty()).then_some(e.field),
        reason: e.reason,
        location,
    }
}

fn toml_error(file: &Path, text: &str, e: &toml::de::Error, what: &str) -> ConfigError {
    let message = e
        .message()
        .trim()
        .lines()
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ");
    let (field, location) = match e.span() {
        Some(span) => (
            locate_offset(text, span.start),
            Some(line_col(text, span.start)),
        ),
        None => (None, None),
    };
    ConfigError {
        file: file.to_owned(),
        field,
        reason: format!("{what}{message}"),
        location,
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

/// A key or array element of the document with its path and span.
struct Node {
    path: String,
    span: std::ops::Range<usize>,
    /// A table opened by a `[header]` or `[[header]]` line (its span is the
    /// header; its keys follow on later lines).
    section: bool,
}

fn is_bare_key(k: &str) -> bool {
    !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn join(prefix: &str, key: &str) -> String {
    let key = if is_bare_key(key) {
        key.to_owned()
    } else {
        format!("{key:?}")
    };
    if prefix.is_empty() {
        key
    } else {
        format!("{prefix}.{key}")
    }
}

fn is_section(text: &str, value: &Spanned<DeValue<'_>>) -> bool {
    matches!(value.get_ref(), DeValue::Table(_))
        && text
            .get(value.span().start..)
            .is_some_and(|t| t.starts_with('['))
}

fn walk_table(text: &str, table: &DeTable<'_>, prefix: &str, out: &mut Vec<Node>) {
    for (key, value) in table.iter() {
        let path = join(prefix, key.get_ref());
        let (ks, vs) = (key.span(), value.span());
        let section = is_section(text, value);
        let span = if section {
            vs
        } else {
            ks.start.min(vs.start)..ks.end.max(vs.end)
        };
        out.push(Node {
            path: path.clone(),
            span,
            section,
        });
        walk_value(text, value, &path, out);
    }
}

fn walk_value(text: &str, value: &Spanned<DeValue<'_>>, path: &str, out: &mut Vec<Node>) {
    match value.get_ref() {
        DeValue::Table(t) => walk_table(text, t, path, out),
        DeValue::Array(a) => {
            for (i, e) in a.iter().enumerate() {
                let p = format!("{path}[{i}]");
                out.push(Node {
                    path: p.clone(),
                    span: e.span(),
                    section: is_section(text, e),
                });
                walk_value(text, e, &p, out);
            }
        }
        _ => {}
    }
}

/// Every key and element of the document (as far as it parses).
fn nodes(text: &str) -> Vec<Node> {
    let (root, _errors) = DeTable::parse_recoverable(text);
    let mut out = Vec::new();
    walk_table(text, root.get_ref(), "", &mut out);
    out
}

/// The path of the field at byte `offset`: the innermost key or element
/// whose span holds it, else a key earlier on the same line, else the
/// `[section]` it falls in.
fn locate_offset(text: &str, offset: usize) -> Option<String> {
    let nodes = nodes(text);
    let containing = nodes
        .iter()
        .filter(|n| n.span.start <= offset && offset < n.span.end)
        .min_by_key(|n| (n.span.len(), std::cmp::Reverse(n.path.len())));
    if let Some(n) = containing {
        return Some(n.path.clone());
    }
    let same_line = |n: &&Node| {
        !n.section
            && n.span.start <= offset
            && text
                .get(n.span.start..offset)
                .is_some_and(|s| !s.contains('\n'))
    };
    if let Some(n) = nodes.iter().filter(same_line).max_by_key(|n| n.span.start) {
        return Some(n.path.clone());
    }
    let section = nodes
        .iter()
        .filter(|n| n.section && n.span.start <= offset)
        .max_by_key(|n| n.span.start)
        .map(|n| n.path.as_str());
    // A line `key = ...` that did not make it into the tree (a duplicate
    // key, a syntax error after the key).
    match (section, key_of_line(text, offset)) {
        (Some(s), Some(k)) => Some(format!("{s}.{k}")),
        (None, Some(k)) => Some(k.to_owned()),
        (s, None) => s.map(str::to_owned),
    }
}

/// The dotted bare key that starts the line holding `offset`, if the line
/// is `key = ...` and `offset` is not before the key.
fn key_of_line(text: &str, offset: usize) -> Option<&str> {
    let offset = (0..=offset.min(text.len()))
        .rev()
        .find(|&o| text.is_char_boundary(o))?;
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = &text[start..];
    let line = &line[..line.find('\n').unwrap_or(line.len())];
    let indent = line.len() - line.trim_start().len();
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    let is_key = !key.is_empty() && key.split('.').all(|part| is_bare_key(part.trim()));
    (is_key && offset >= start + indent).then_some(key)
}

/// Line and column of the field at `path`, or of its nearest parent.
fn locate_field(text: &str, path: &str) -> Option<(usize, usize)> {
    let nodes = nodes(text);
    let mut path = path;
    loop {
        if let Some(n) = nodes.iter().find(|n| n.path == path) {
            return Some(line_col(text, n.span.start));
        }
        let cut = path.rfind(['.', '['])?;
        path = &path[..cut];
    }
}
