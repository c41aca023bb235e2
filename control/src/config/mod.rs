//! The configuration `xdpsec ike --config FILE` reads: TOML in strongSwan's
//! swanctl vocabulary, so a swanctl.conf translates line by line:
//!
//! ```toml
//! [daemon]                       # charon's knobs (strongswan.conf)
//! [connections.gw]               # swanctl.conf connections { gw { ... } }
//! [connections.gw.local]         #   local { auth, id, certs }
//! [connections.gw.remote]        #   remote { auth, id, cacerts }
//! [connections.gw.children.net]  #   children { net { local_ts, ... } }
//! [secrets.ike-gw]               # secrets { ike-gw { id, secret } }
//! ```
//!
//! [`sample_config`] is a documented example. Errors name the file, the
//! field (`connections.gw.children.net.esp_proposals[0]`), what is wrong
//! and where ([`xdpsec_api::ConfigError`], shared with the data plane's
//! config). Relative certificate and key paths are relative to the config
//! file's directory.

mod identity;
mod pool;
mod proposal;
mod values;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use xdpsec_api::config::{parse_toml, read_config_file, validation_error, DEFAULT_API_SOCKET};
use xdpsec_api::sa::ValidationError;
pub use xdpsec_api::ConfigError;

pub use identity::{DistinguishedName, DnAttribute, DnError, Identity, IdentityError};
pub use pool::{PoolAddrs, PoolConfig};
pub use proposal::{
    DhGroup, Encryption, Esn, EspProposal, IkeProposal, Integrity, Prf, ProposalError,
};
pub use values::{parse_duration, AddrSpec, Psk, TsAddrs, TsSpec};

use crate::cert::{LocalCredential, TrustStore};
use crate::wire::Identification;

/// Where the IKE daemon's control socket (for `xdpsec initiate|terminate|
/// rekey|sa list`) goes unless the config says otherwise.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/xdpsec/ike.sock";
/// The IKE port.
pub const IKE_PORT: u16 = 500;
/// The NAT-T port (IKE with the non-ESP marker, and UDP-encapsulated ESP).
pub const NAT_T_PORT: u16 = 4500;

/// The example in `control/examples/ike.toml`: gateway moon of a
/// site-to-site tunnel to sun, one PSK and one certificate connection.
pub fn sample_config() -> &'static str {
    include_str!("../../examples/ike.toml")
}

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IkeConfig {
    /// `[daemon]`.
    #[serde(default)]
    pub daemon: DaemonConfig,
    /// `[connections.NAME]`, by name.
    #[serde(default)]
    pub connections: BTreeMap<String, Connection>,
    /// `[secrets.ike-NAME]`, by name.
    #[serde(default)]
    pub secrets: BTreeMap<String, IkeSecret>,
    /// `[pools.NAME]`: virtual IP pools for remote-access clients, by name.
    #[serde(default)]
    pub pools: BTreeMap<String, PoolConfig>,
}

/// `[daemon]`: process-wide settings (charon's strongswan.conf options).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// The data plane's SA API socket.
    #[serde(default = "default_api_socket")]
    pub api_socket: PathBuf,
    /// The socket the `xdpsec` CLI talks to this daemon on.
    #[serde(default = "default_control_socket")]
    pub control_socket: PathBuf,
    /// Addresses to bind the IKE sockets to; empty: all (0.0.0.0 and ::).
    #[serde(default)]
    pub listen: Vec<IpAddr>,
    /// The IKE port (charon.port).
    #[serde(default = "ike_port")]
    pub port: u16,
    /// The NAT-T port (charon.port_nat_t).
    #[serde(default = "nat_t_port")]
    pub port_nat_t: u16,
    /// Half-open IKE SAs from which on IKE_SA_INIT requests must carry a
    /// COOKIE (charon.cookie_threshold).
    #[serde(default = "default_cookie_threshold")]
    pub cookie_threshold: u32,
    /// Half-open IKE SAs beyond which new IKE_SA_INIT requests are dropped
    /// (charon.init_limit_half_open); bounds memory under a flood.
    #[serde(default = "default_half_open_limit", alias = "init_limit_half_open")]
    pub half_open_limit: u32,
    /// Half-open IKE SAs one source address may hold
    /// (charon.block_threshold): one host cannot take the table.
    #[serde(default = "default_half_open_per_source", alias = "block_threshold")]
    pub half_open_per_source: u32,
    /// Bytes of IKE fragments all IKE SAs together may hold while their
    /// messages are reassembled (each at most 64 KiB).
    #[serde(default = "default_fragment_memory")]
    pub fragment_memory: u64,
    /// First retransmission timeout (charon.retransmit_timeout).
    #[serde(
        default = "default_retransmit_timeout",
        deserialize_with = "values::duration"
    )]
    pub retransmit_timeout: Duration,
    /// Back-off base (charon.retransmit_base).
    #[serde(default = "default_retransmit_base")]
    pub retransmit_base: f64,
    /// Retransmissions before giving up (charon.retransmit_tries).
    #[serde(default = "default_retransmit_tries")]
    pub retransmit_tries: u32,
    /// NAT keepalive interval (charon.keep_alive); 0 disables them.
    #[serde(default = "default_keep_alive", deserialize_with = "values::duration")]
    pub keep_alive: Duration,
    /// TEST ONLY: log the derived keys (SK_*, ESP keys) at debug level so a
    /// capture can be decrypted. Never set in production.
    #[serde(default)]
    pub log_keys: bool,
    /// Once the ports are bound and the sockets open, run as this user
    /// (a name or a numeric uid) with no capabilities left; absent: keep
    /// the user it was started as.
    #[serde(default)]
    pub user: Option<String>,
    /// ... and this group (a name or a numeric gid); absent: the user's
    /// primary group.
    #[serde(default)]
    pub group: Option<String>,
}

fn default_api_socket() -> PathBuf {
    PathBuf::from(DEFAULT_API_SOCKET)
}
fn default_control_socket() -> PathBuf {
    PathBuf::from(DEFAULT_CONTROL_SOCKET)
}
fn ike_port() -> u16 {
    IKE_PORT
}
fn nat_t_port() -> u16 {
    NAT_T_PORT
}
fn default_cookie_threshold() -> u32 {
    30
}
fn default_fragment_memory() -> u64 {
    64 << 20
}
fn default_half_open_per_source() -> u32 {
    5
}
fn default_half_open_limit() -> u32 {
    1000
}
fn default_retransmit_timeout() -> Duration {
    Duration::from_secs(4)
}
fn default_retransmit_base() -> f64 {
    1.8
}
fn default_retransmit_tries() -> u32 {
    5
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(20)
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            api_socket: default_api_socket(),
            control_socket: default_control_socket(),
            listen: Vec::new(),
            port: IKE_PORT,
            port_nat_t: NAT_T_PORT,
            cookie_threshold: default_cookie_threshold(),
            half_open_limit: default_half_open_limit(),
            half_open_per_source: default_half_open_per_source(),
            fragment_memory: default_fragment_memory(),
            retransmit_timeout: default_retransmit_timeout(),
            retransmit_base: default_retransmit_base(),
            retransmit_tries: default_retransmit_tries(),
            keep_alive: default_keep_alive(),
            log_keys: false,
            user: None,
            group: None,
        }
    }
}

/// IKE fragmentation (RFC 7383), as strongSwan's `fragmentation`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fragmentation {
    /// Announce support and fragment when the peer supports it.
    #[default]
    Yes,
    /// Announce support, never fragment ourselves.
    Accept,
    /// Do not announce or use fragmentation.
    No,
}

/// What to do when DPD finds the peer dead (`dpd_action`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DpdAction {
    /// Delete the IKE SA and its Child SAs.
    #[default]
    Clear,
    /// Delete them and initiate the connection again.
    Restart,
}

/// What to do with a child when the daemon loads the config
/// (`start_action`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartAction {
    /// Wait for the peer or for `xdpsec initiate`.
    #[default]
    None,
    /// Initiate right away.
    Start,
    /// Install a trap policy: initiate on the first matching packet.
    Trap,
}

/// What to do with a child when the peer closes it (`close_action`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CloseAction {
    /// Nothing.
    #[default]
    None,
    /// Initiate it again.
    Start,
    /// Install a trap policy.
    Trap,
}

/// The only mode: tunnel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// ESP tunnel mode.
    #[default]
    Tunnel,
}

/// `[connections.NAME]`: one IKE SA configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connection {
    /// IKE version; only 2.
    #[serde(default = "two")]
    pub version: u8,
    /// Our addresses (first one initiates); default `%any`.
    #[serde(default = "any_addrs")]
    pub local_addrs: Vec<AddrSpec>,
    /// The peer's addresses (first single address is initiated to);
    /// default `%any` (responder only).
    #[serde(default = "any_addrs")]
    pub remote_addrs: Vec<AddrSpec>,
    /// Our IKE port.
    #[serde(default = "ike_port")]
    pub local_port: u16,
    /// The peer's IKE port.
    #[serde(default = "ike_port")]
    pub remote_port: u16,
    /// IKE proposals in preference order; `"default"` expands.
    #[serde(
        default = "IkeProposal::defaults",
        deserialize_with = "proposal::deserialize_ike"
    )]
    pub proposals: Vec<IkeProposal>,
    /// Force UDP encapsulation even without a NAT.
    #[serde(default)]
    pub encap: bool,
    /// RFC 9611 per-resource Child SAs: announce SA_RESOURCE_INFO and,
    /// when the peer answers with it and the data plane runs more than one
    /// worker, add one Child SA per worker beside each child's first (the
    /// fallback SA), so each worker sends on its own SA. A peer without
    /// support never answers, and gets one Child SA as before. On by
    /// default; `false` neither sends nor answers the notify.
    #[serde(default = "yes")]
    pub per_resource_sas: bool,
    /// IKE fragmentation.
    #[serde(default)]
    pub fragmentation: Fragmentation,
    /// Interval of liveness checks when nothing arrives; 0: off.
    #[serde(default, deserialize_with = "values::duration")]
    pub dpd_delay: Duration,
    /// What to do when the peer is found dead; children may override.
    #[serde(default)]
    pub dpd_action: DpdAction,
    /// IKE SA rekey interval; 0: never.
    #[serde(default = "default_ike_rekey", deserialize_with = "values::duration")]
    pub rekey_time: Duration,
    /// Hard lifetime beyond `rekey_time`; default 10% of it.
    #[serde(default, deserialize_with = "values::opt_duration")]
    pub over_time: Option<Duration>,
    /// Hard lifetime of the IKE SA; default `rekey_time + over_time`.
    #[serde(default, deserialize_with = "values::opt_duration")]
    pub life_time: Option<Duration>,
    /// Random amount subtracted from `rekey_time`; default `over_time`.
    #[serde(default, deserialize_with = "values::opt_duration")]
    pub rand_time: Option<Duration>,
    /// Initiation attempts; 0: forever.
    #[serde(default = "one")]
    pub keyingtries: u32,
    /// Responder: the `[pools.NAME]` a client's virtual IPs come from, in
    /// order (one IPv4 and one IPv6 pool, say).
    #[serde(default)]
    pub pools: Vec<String>,
    /// Initiator: the virtual IPs to ask for (`0.0.0.0` and `::` for any
    /// address of that family); empty: none.
    #[serde(default)]
    pub vips: Vec<IpAddr>,
    /// `[connections.NAME.local]`.
    pub local: AuthConfig,
    /// `[connections.NAME.remote]`.
    pub remote: AuthConfig,
    /// `[connections.NAME.children.CHILD]`.
    #[serde(default)]
    pub children: BTreeMap<String, Child>,
}

fn yes() -> bool {
    true
}
fn two() -> u8 {
    2
}
fn one() -> u32 {
    1
}
fn any_addrs() -> Vec<AddrSpec> {
    vec![AddrSpec::Any]
}
fn default_ike_rekey() -> Duration {
    Duration::from_secs(4 * 3600)
}
fn default_child_rekey() -> Duration {
    Duration::from_secs(3600)
}
fn dynamic_ts() -> Vec<TsSpec> {
    vec![TsSpec::dynamic()]
}

/// A tenth of `d`: strongSwan's default for `over_time` and the child's
/// hard lifetime margin.
fn tenth(d: Duration) -> Duration {
    d / 10
}

impl Connection {
    /// When the IKE SA must be gone: `life_time`, else `rekey_time +
    /// over_time` (None when `rekey_time` is 0 and no life_time is set).
    pub fn ike_life_time(&self) -> Option<Duration> {
        if let Some(l) = self.life_time {
            return Some(l);
        }
        if self.rekey_time.is_zero() {
            return None;
        }
        Some(self.rekey_time + self.over_time.unwrap_or(tenth(self.rekey_time)))
    }

    /// Upper bound of the random jitter subtracted from `rekey_time`.
    pub fn ike_rand_time(&self) -> Duration {
        self.rand_time
            .or(self.over_time)
            .unwrap_or(tenth(self.rekey_time))
    }

    /// The first single remote address: where an initiator sends to.
    pub fn initiate_to(&self) -> Option<IpAddr> {
        self.remote_addrs.iter().find_map(AddrSpec::addr)
    }

    /// Whether a packet from `remote` to `local` may belong to this
    /// connection.
    pub fn matches_addrs(&self, local: IpAddr, remote: IpAddr) -> bool {
        self.local_addrs.iter().any(|a| a.matches(local))
            && self.remote_addrs.iter().any(|a| a.matches(remote))
    }

    /// The DPD action of a child: its own, else the connection's.
    pub fn child_dpd_action(&self, child: &Child) -> DpdAction {
        child.dpd_action.unwrap_or(self.dpd_action)
    }
}

/// How one side authenticates (`auth`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMethod {
    /// X.509 certificate, RFC 7427 digital signature (strongSwan's default).
    #[default]
    Pubkey,
    /// Pre-shared key from `[secrets]`.
    Psk,
}

/// `[connections.NAME.local]` / `[connections.NAME.remote]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// psk or pubkey.
    #[serde(default)]
    pub auth: AuthMethod,
    /// The identity; local default: the IKE address (psk) or the
    /// certificate's subject (pubkey); remote default: `%any`.
    #[serde(default)]
    pub id: Option<Identity>,
    /// Local: our certificate chain, end entity first (PEM files).
    #[serde(default)]
    pub certs: Vec<PathBuf>,
    /// Remote: the CA certificates the peer's chain must lead to.
    #[serde(default)]
    pub cacerts: Vec<PathBuf>,
    /// Local: our private key (PEM; PKCS#8, SEC1 EC or PKCS#1 RSA).
    #[serde(default)]
    pub key: Option<PathBuf>,
}

impl AuthConfig {
    /// The identity, `%any` when none is configured.
    pub fn id_or_any(&self) -> Identity {
        self.id.clone().unwrap_or(Identity::Any)
    }
}

/// `[connections.NAME.children.CHILD]`: one Child SA configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Child {
    /// Our side's selectors; default `dynamic`.
    #[serde(default = "dynamic_ts")]
    pub local_ts: Vec<TsSpec>,
    /// The peer's side's selectors; default `dynamic`.
    #[serde(default = "dynamic_ts")]
    pub remote_ts: Vec<TsSpec>,
    /// ESP proposals in preference order; `"default"` expands.
    #[serde(
        default = "EspProposal::defaults",
        deserialize_with = "proposal::deserialize_esp"
    )]
    pub esp_proposals: Vec<EspProposal>,
    /// What to do on load.
    #[serde(default)]
    pub start_action: StartAction,
    /// What to do when the peer closes it.
    #[serde(default)]
    pub close_action: CloseAction,
    /// DPD action for this child; default: the connection's.
    #[serde(default)]
    pub dpd_action: Option<DpdAction>,
    /// Rekey interval; 0: never by time.
    #[serde(default = "default_child_rekey", deserialize_with = "values::duration")]
    pub rekey_time: Duration,
    /// Hard lifetime; default `rekey_time` + 10%.
    #[serde(default, deserialize_with = "values::opt_duration")]
    pub life_time: Option<Duration>,
    /// Random jitter subtracted from `rekey_time`; default `life_time -
    /// rekey_time`.
    #[serde(default, deserialize_with = "values::opt_duration")]
    pub rand_time: Option<Duration>,
    /// Rekey after this many bytes; 0: never.
    #[serde(default)]
    pub rekey_bytes: u64,
    /// Hard byte limit; default `rekey_bytes` + 10% (0 stays 0).
    #[serde(default)]
    pub life_bytes: Option<u64>,
    /// Rekey after this many packets; 0: never.
    #[serde(default)]
    pub rekey_packets: u64,
    /// Hard packet limit; default `rekey_packets` + 10% (0 stays 0).
    #[serde(default)]
    pub life_packets: Option<u64>,
    /// Tunnel (the only mode).
    #[serde(default)]
    pub mode: Mode,
}

impl Child {
    /// Hard lifetime: `life_time`, else `rekey_time` + 10%; None when
    /// neither limits it.
    pub fn hard_life_time(&self) -> Option<Duration> {
        self.life_time.or_else(|| {
            (!self.rekey_time.is_zero()).then(|| self.rekey_time + tenth(self.rekey_time))
        })
    }

    /// Upper bound of the random jitter subtracted from `rekey_time`.
    pub fn rand_time(&self) -> Duration {
        self.rand_time.unwrap_or_else(|| {
            self.hard_life_time()
                .map_or(Duration::ZERO, |l| l.saturating_sub(self.rekey_time))
        })
    }

    /// Hard byte limit (0: none).
    pub fn hard_life_bytes(&self) -> u64 {
        self.life_bytes
            .unwrap_or(self.rekey_bytes.saturating_add(self.rekey_bytes / 10))
    }

    /// Hard packet limit (0: none).
    pub fn hard_life_packets(&self) -> u64 {
        self.life_packets
            .unwrap_or(self.rekey_packets.saturating_add(self.rekey_packets / 10))
    }

    /// Whether any proposal asks for PFS in CREATE_CHILD_SA.
    pub fn wants_pfs(&self) -> bool {
        self.esp_proposals.iter().any(|p| !p.dh.is_empty())
    }
}

/// The loaded certificate credentials of one connection.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// Ours, when `local.auth = "pubkey"`.
    pub local: Option<Arc<LocalCredential>>,
    /// The CAs for the peer, when `remote.auth = "pubkey"`.
    pub trust: Option<Arc<TrustStore>>,
}

/// `[secrets.ike-NAME]`: a pre-shared key and the identities it is for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IkeSecret {
    /// The identities (ours and/or the peer's) the key belongs to; none:
    /// any.
    #[serde(default, deserialize_with = "one_or_many")]
    pub id: Vec<Identity>,
    /// The key: text, `0x` + hex or `0s` + base64.
    pub secret: Psk,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Identity>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(Identity),
        Many(Vec<Identity>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(i) => vec![i],
        OneOrMany::Many(v) => v,
    })
}

impl IkeSecret {
    /// How well this secret fits a local/remote identity pair, as
    /// strongSwan ranks shared keys: 0 = not at all, 1 = a key for
    /// anyone, 2 = one side named, 3 = both sides named.
    pub fn score(&self, local: Option<&Identification>, remote: &Identification) -> u8 {
        if self.id.is_empty() {
            return 1;
        }
        let named =
            |peer: &Identification| self.id.iter().any(|id| !id.is_any() && id.matches(peer));
        let l = local.is_some_and(named);
        let r = named(remote);
        match (l, r) {
            (true, true) => 3,
            (true, false) | (false, true) => 2,
            (false, false) => 0,
        }
    }
}

impl IkeConfig {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        Self::parse(&read_config_file(path)?, path)
    }

    /// Parses and validates `text`; `file` names it in errors and its
    /// directory anchors relative certificate and key paths.
    pub fn parse(text: &str, file: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let file = file.as_ref();
        let mut config: IkeConfig = parse_toml(text, file)?;
        config
            .validate()
            .map_err(|e| validation_error(file, text, e))?;
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
            config.resolve_paths(dir);
        }
        Ok(config)
    }

    fn resolve_paths(&mut self, dir: &Path) {
        for conn in self.connections.values_mut() {
            for side in [&mut conn.local, &mut conn.remote] {
                for p in side
                    .certs
                    .iter_mut()
                    .chain(side.cacerts.iter_mut())
                    .chain(side.key.iter_mut())
                {
                    if p.is_relative() {
                        *p = dir.join(&*p);
                    }
                }
            }
        }
    }

    /// The best pre-shared key for our identity `local` (None when we send
    /// none yet) and the peer's `remote`, strongSwan's way: keys naming
    /// both beat keys naming one, which beat keys for anyone.
    pub fn find_psk(
        &self,
        local: Option<&Identification>,
        remote: &Identification,
    ) -> Option<&Psk> {
        self.secrets
            .values()
            .map(|s| (s.score(local, remote), s))
            .filter(|(score, _)| *score > 0)
            .max_by_key(|(score, _)| *score)
            .map(|(_, s)| &s.secret)
    }

    /// Loads the certificates and keys of every `auth = "pubkey"` side,
    /// and checks that a configured local identity is in our certificate
    /// (the peer would refuse the AUTH otherwise). Errors name the field
    /// (`connections.gw.local.key`) and say what failed; `file` is the
    /// config file, for the error.
    pub fn load_credentials(
        &self,
        file: &Path,
    ) -> Result<BTreeMap<String, Credentials>, ConfigError> {
        let fail = |field: String, reason: String| ConfigError {
            file: file.to_owned(),
            field: Some(field),
            reason,
            location: None,
        };
        let mut out = BTreeMap::new();
        for (name, conn) in &self.connections {
            let at = format!("connections.{}", key(name));
            let mut creds = Credentials::default();
            if conn.local.auth == AuthMethod::Pubkey {
                let key_path = conn.local.key.as_deref().unwrap_or(Path::new(""));
                let local = LocalCredential::load(&conn.local.certs, key_path).map_err(|e| {
                    let field = match e {
                        crate::cert::CertError::Io { ref path, .. }
                        | crate::cert::CertError::Pem { ref path, .. }
                            if path == key_path =>
                        {
                            "key"
                        }
                        crate::cert::CertError::KeyMismatch { .. } => "key",
                        _ => "certs",
                    };
                    fail(format!("{at}.local.{field}"), e.to_string())
                })?;
                if let Some(wire) = conn.local.id.as_ref().and_then(Identity::to_wire) {
                    if !local.identity_matches(&wire) {
                        return Err(fail(
                            format!("{at}.local.id"),
                            format!(
                                "{} is neither the subject nor a subjectAltName of our                                  certificate {}; the peer would refuse our AUTH",
                                conn.local.id_or_any(),
                                local.subject()
                            ),
                        ));
                    }
                }
                creds.local = Some(Arc::new(local));
            }
            if conn.remote.auth == AuthMethod::Pubkey {
                let trust = TrustStore::load(&conn.remote.cacerts)
                    .map_err(|e| fail(format!("{at}.remote.cacerts"), e.to_string()))?;
                creds.trust = Some(Arc::new(trust));
            }
            out.insert(name.clone(), creds);
        }
        Ok(out)
    }

    /// Checks what the types do not: versions, ports, references between
    /// sections, the credentials each auth method needs.
    pub fn validate(&self) -> Result<(), ValidationError> {
        self.validate_daemon()?;
        for (name, secret) in &self.secrets {
            if !name.starts_with("ike") {
                return Err(ValidationError::new(
                    format!("secrets.{name}"),
                    "only IKE pre-shared keys are supported: name the section ike-SOMETHING \
                     (as in swanctl.conf)",
                ));
            }
            if secret.id.iter().any(Identity::is_any) {
                return Err(ValidationError::new(
                    format!("secrets.{name}.id"),
                    "%any is not an identity for a secret; leave id out for a key that fits anyone",
                ));
            }
        }
        for (name, conn) in &self.connections {
            self.validate_connection(conn)
                .map_err(|e| e.within(&format!("connections.{}", key(name))))?;
        }
        Ok(())
    }

    fn validate_daemon(&self) -> Result<(), ValidationError> {
        let d = &self.daemon;
        for (field, path) in [
            ("daemon.api_socket", &d.api_socket),
            ("daemon.control_socket", &d.control_socket),
        ] {
            if !path.is_absolute() {
                return Err(ValidationError::new(
                    field,
                    format!("{} is not an absolute path", path.display()),
                ));
            }
            // sun_path holds 108 bytes including the terminating NUL.
            if path.as_os_str().len() > 107 {
                return Err(ValidationError::new(
                    field,
                    format!(
                        "path is {} bytes, Unix sockets allow at most 107",
                        path.as_os_str().len()
                    ),
                ));
            }
        }
        if d.api_socket == d.control_socket {
            return Err(ValidationError::new(
                "daemon.control_socket",
                "is the same path as daemon.api_socket",
            ));
        }
        if d.port == 0 || d.port_nat_t == 0 {
            let field = if d.port == 0 {
                "daemon.port"
            } else {
                "daemon.port_nat_t"
            };
            return Err(ValidationError::new(field, "port 0 is not allowed"));
        }
        if d.port == d.port_nat_t {
            return Err(ValidationError::new(
                "daemon.port_nat_t",
                format!("must differ from daemon.port ({})", d.port),
            ));
        }
        if d.half_open_limit == 0 {
            return Err(ValidationError::new(
                "daemon.half_open_limit",
                "must be at least 1",
            ));
        }
        if d.half_open_per_source == 0 {
            return Err(ValidationError::new(
                "daemon.half_open_per_source",
                "must be at least 1",
            ));
        }
        if d.cookie_threshold > d.half_open_limit {
            return Err(ValidationError::new(
                "daemon.cookie_threshold",
                format!(
                    "{} is above half_open_limit ({}): cookies would never be asked for",
                    d.cookie_threshold, d.half_open_limit
                ),
            ));
        }
        if d.retransmit_timeout.is_zero() {
            return Err(ValidationError::new(
                "daemon.retransmit_timeout",
                "must be above 0",
            ));
        }
        if !(d.retransmit_base >= 1.0 && d.retransmit_base <= 10.0) {
            return Err(ValidationError::new(
                "daemon.retransmit_base",
                format!("{} is outside 1.0-10.0", d.retransmit_base),
            ));
        }
        Ok(())
    }

    fn validate_connection(&self, conn: &Connection) -> Result<(), ValidationError> {
        if conn.version != 2 {
            return Err(ValidationError::new(
                "version",
                format!(
                    "IKE version {} is not supported; xdpsec speaks IKEv2 only (version = 2)",
                    conn.version
                ),
            ));
        }
        for (field, list) in [
            ("local_addrs", &conn.local_addrs),
            ("remote_addrs", &conn.remote_addrs),
        ] {
            if list.is_empty() {
                return Err(ValidationError::new(
                    field,
                    "empty; write [\"%any\"] for any address",
                ));
            }
        }
        if conn.local_port == 0 {
            return Err(ValidationError::new("local_port", "port 0 is not allowed"));
        }
        if conn.remote_port == 0 {
            return Err(ValidationError::new("remote_port", "port 0 is not allowed"));
        }
        for (i, pool) in conn.pools.iter().enumerate() {
            if !self.pools.contains_key(pool) {
                return Err(ValidationError::new(
                    format!("pools[{i}]"),
                    format!("no [pools.{}] is configured", key(pool)),
                ));
            }
        }
        for (i, vip) in conn.vips.iter().enumerate() {
            if conn.vips[..i].iter().any(|v| v == vip) {
                return Err(ValidationError::new(
                    format!("vips[{i}]"),
                    format!("{vip} is listed twice"),
                ));
            }
        }
        if conn.proposals.is_empty() {
            return Err(ValidationError::new(
                "proposals",
                "empty; list at least one proposal or \"default\"",
            ));
        }
        check_life_after_rekey(conn.life_time, conn.rekey_time, "IKE SA")?;
        if conn.children.is_empty() {
            return Err(ValidationError::new(
                "children",
                "no [connections.NAME.children.CHILD] section: a connection needs a child to carry traffic",
            ));
        }
        self.validate_auth(conn, &conn.local, true)
            .map_err(|e| e.within("local"))?;
        self.validate_auth(conn, &conn.remote, false)
            .map_err(|e| e.within("remote"))?;
        for (name, child) in &conn.children {
            validate_child(child).map_err(|e| e.within(&format!("children.{}", key(name))))?;
            if child.start_action != StartAction::None && conn.initiate_to().is_none() {
                return Err(ValidationError::new(
                    format!("children.{}.start_action", key(name)),
                    "initiating needs a peer address: remote_addrs has no single address \
                     (only %any or subnets)",
                ));
            }
        }
        Ok(())
    }

    fn validate_auth(
        &self,
        conn: &Connection,
        side: &AuthConfig,
        local: bool,
    ) -> Result<(), ValidationError> {
        if local && side.id.as_ref().is_some_and(Identity::is_any) {
            return Err(ValidationError::new(
                "id",
                "our own identity cannot be %any; leave id out to use the address or certificate",
            ));
        }
        match side.auth {
            AuthMethod::Psk => {
                for (field, set) in [
                    ("certs", !side.certs.is_empty()),
                    ("cacerts", !side.cacerts.is_empty()),
                    ("key", side.key.is_some()),
                ] {
                    if set {
                        return Err(ValidationError::new(
                            field,
                            "is for auth = \"pubkey\"; this side uses auth = \"psk\"",
                        ));
                    }
                }
                let ids: Vec<Identification> = [&conn.local.id, &conn.remote.id]
                    .into_iter()
                    .flatten()
                    .filter_map(Identity::to_wire)
                    .collect();
                // The peer's identity is only known at run time when remote
                // is %any: then any secret might fit.
                let remote_open = conn.remote.id.as_ref().is_none_or(Identity::is_any);
                let found = self.secrets.values().any(|s| {
                    s.id.is_empty()
                        || remote_open
                        || ids.iter().any(|id| s.id.iter().any(|sid| sid.matches(id)))
                });
                if !found {
                    return Err(ValidationError::new(
                        "auth",
                        format!(
                            "auth = \"psk\" but no [secrets.ike-*] section has an id matching {} \
                             or {} (or no id at all)",
                            conn.local.id_or_any(),
                            conn.remote.id_or_any()
                        ),
                    ));
                }
            }
            AuthMethod::Pubkey if local => {
                if side.certs.is_empty() {
                    return Err(ValidationError::new(
                        "certs",
                        "auth = \"pubkey\" needs our certificate: certs = [\"moonCert.pem\"]",
                    ));
                }
                if side.key.is_none() {
                    return Err(ValidationError::new(
                        "key",
                        "auth = \"pubkey\" needs our private key: key = \"moonKey.pem\"",
                    ));
                }
                if !side.cacerts.is_empty() {
                    return Err(ValidationError::new(
                        "cacerts",
                        "belongs in the remote section: it says which CA the peer's certificate must chain to",
                    ));
                }
            }
            AuthMethod::Pubkey => {
                if side.cacerts.is_empty() {
                    return Err(ValidationError::new(
                        "cacerts",
                        "auth = \"pubkey\" needs the CA the peer's certificate must chain to: \
                         cacerts = [\"caCert.pem\"]",
                    ));
                }
                let misplaced = if !side.certs.is_empty() {
                    Some("certs")
                } else if side.key.is_some() {
                    Some("key")
                } else {
                    None
                };
                if let Some(field) = misplaced {
                    return Err(ValidationError::new(
                        field,
                        "belongs in the local section; the peer sends its certificate in IKE_AUTH",
                    ));
                }
            }
        }
        Ok(())
    }
}

fn validate_child(child: &Child) -> Result<(), ValidationError> {
    for (field, list) in [
        ("local_ts", &child.local_ts),
        ("remote_ts", &child.remote_ts),
    ] {
        if list.is_empty() {
            return Err(ValidationError::new(
                field,
                "empty; write [\"dynamic\"] for the IKE address or a subnet",
            ));
        }
    }
    if child.esp_proposals.is_empty() {
        return Err(ValidationError::new(
            "esp_proposals",
            "empty; list at least one proposal or \"default\"",
        ));
    }
    check_life_after_rekey(child.life_time, child.rekey_time, "Child SA")?;
    for (field, rekey, life) in [
        ("life_bytes", child.rekey_bytes, child.life_bytes),
        ("life_packets", child.rekey_packets, child.life_packets),
    ] {
        if let Some(life) = life {
            if rekey != 0 && life <= rekey {
                return Err(ValidationError::new(
                    field,
                    format!("{life} is not above the rekey limit ({rekey})"),
                ));
            }
        }
    }
    Ok(())
}

/// A TOML key as it appears in a field path: bare if it can be.
fn key(name: &str) -> String {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        name.to_owned()
    } else {
        format!("{name:?}")
    }
}

/// A `life_time` must come after `rekey_time` (zero: no rekey on time), or
/// the SA would expire before it is rekeyed.
fn check_life_after_rekey(
    life: Option<Duration>,
    rekey: Duration,
    sa: &str,
) -> Result<(), ValidationError> {
    match life {
        Some(life) if !rekey.is_zero() && life <= rekey => Err(ValidationError::new(
            "life_time",
            format!(
                "{}s is not after rekey_time ({}s): the {sa} would expire before it is rekeyed",
                life.as_secs(),
                rekey.as_secs()
            ),
        )),
        _ => Ok(()),
    }
}
