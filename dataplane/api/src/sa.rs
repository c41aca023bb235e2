//! The description of one Security Association as the data plane installs
//! it: what the IKE daemon sends in `AddSa` and what a `[[sa]]` entry of the
//! static config holds.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::hex;
use crate::prefix::Prefix;

/// Smallest accepted anti-replay window, in packets.
pub const MIN_REPLAY_WINDOW: u32 = 32;
/// Largest accepted anti-replay window, in packets.
pub const MAX_REPLAY_WINDOW: u32 = 8192;
/// The window used when none is given.
pub const DEFAULT_REPLAY_WINDOW: u32 = 1024;
/// The default UDP encapsulation port (RFC 3948).
pub const NAT_T_PORT: u16 = 4500;

/// Which way an SA (or a policy) carries traffic, seen from this gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Received from the peer and decrypted here.
    In,
    /// Encrypted here and sent to the peer.
    Out,
}

impl Direction {
    /// `"in"` or `"out"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A field that failed validation, with its path relative to the value
/// validated (`replay_window`, `selectors[0].local_ports`) and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// Path of the offending field.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.field, self.reason)
        }
    }
}

impl std::error::Error for ValidationError {}

impl ValidationError {
    /// An error for `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ValidationError {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The same error with `prefix.` put before the field path.
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = if self.field.is_empty() {
            prefix.to_owned()
        } else {
            format!("{prefix}.{}", self.field)
        };
        self
    }
}

/// Why key material was rejected. Never contains key bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A character that is not a hex digit.
    #[error("invalid hex digit at position {position} (expected the AES-GCM key and 4-byte salt as hex)")]
    BadHex {
        /// 0-based position after an optional `0x`.
        position: usize,
    },
    /// Not 40 or 72 hex digits.
    #[error("expected 40 or 72 hex characters (AES-GCM-128/256 key + 4-byte salt), got {digits}")]
    BadLength {
        /// Number of hex digits given.
        digits: usize,
    },
    /// A raw key that is not 16 or 32 bytes.
    #[error("expected a 16- or 32-byte AES-GCM key, got {bytes} bytes")]
    BadKeyBytes {
        /// Length given.
        bytes: usize,
    },
}

/// AES-GCM key material per RFC 4106: a 16- or 32-byte key and a 4-byte
/// salt. Serialized as one hex string, key then salt (40 or 72 digits), as
/// `ip xfrm` takes `rfc4106(gcm(aes))` keys. Debug never shows the bytes;
/// the memory is zeroed on drop.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct GcmKey {
    key: Vec<u8>,
    salt: [u8; 4],
}

impl GcmKey {
    /// Key material from a 16- or 32-byte key and the salt.
    pub fn new(key: &[u8], salt: [u8; 4]) -> Result<Self, KeyError> {
        if key.len() != 16 && key.len() != 32 {
            return Err(KeyError::BadKeyBytes { bytes: key.len() });
        }
        Ok(GcmKey {
            key: key.to_vec(),
            salt,
        })
    }

    /// Parses `key || salt` as hex, with an optional `0x` prefix.
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        let digits = hex::strip_prefix(s.trim());
        let bytes = hex::decode(digits).map_err(|e| match e {
            hex::HexError::BadChar { position } => KeyError::BadHex { position },
            hex::HexError::OddLength { digits } => KeyError::BadLength { digits },
        })?;
        let key_len = match bytes.len() {
            20 => 16,
            36 => 32,
            _ => {
                return Err(KeyError::BadLength {
                    digits: digits.len(),
                })
            }
        };
        let mut salt = [0u8; 4];
        salt.copy_from_slice(&bytes[key_len..]);
        let key = GcmKey::new(&bytes[..key_len], salt);
        salt.zeroize();
        key
    }

    /// The AES key (16 or 32 bytes).
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The 4-byte salt, the first part of every nonce.
    pub fn salt(&self) -> &[u8; 4] {
        &self.salt
    }

    /// 128 or 256.
    pub fn bits(&self) -> u16 {
        if self.key.len() == 32 {
            256
        } else {
            128
        }
    }

    /// The cipher name, `aes-gcm-128` or `aes-gcm-256`.
    pub fn cipher_name(&self) -> &'static str {
        if self.key.len() == 32 {
            "aes-gcm-256"
        } else {
            "aes-gcm-128"
        }
    }

    /// `key || salt` as lowercase hex, in memory that is zeroed on drop.
    pub fn to_hex(&self) -> Zeroizing<String> {
        hex::encode(&[&self.key, &self.salt])
    }
}

impl fmt::Debug for GcmKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GcmKey({}, <redacted>)", self.cipher_name())
    }
}

impl Serialize for GcmKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for GcmKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = GcmKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a hex string of 40 or 72 characters (AES-GCM-128/256 key + 4-byte salt)",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<GcmKey, E> {
                GcmKey::from_hex(v).map_err(E::custom)
            }
            fn visit_string<E: de::Error>(self, mut v: String) -> Result<GcmKey, E> {
                let key = GcmKey::from_hex(&v).map_err(E::custom);
                v.zeroize();
                key
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// UDP encapsulation of ESP (NAT traversal, RFC 3948).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UdpEncap {
    /// Source port of encapsulated packets (ours for outbound SAs).
    #[serde(default = "nat_t_port")]
    pub sport: u16,
    /// Destination port of encapsulated packets.
    #[serde(default = "nat_t_port")]
    pub dport: u16,
}

fn nat_t_port() -> u16 {
    NAT_T_PORT
}

impl Default for UdpEncap {
    fn default() -> Self {
        UdpEncap {
            sport: NAT_T_PORT,
            dport: NAT_T_PORT,
        }
    }
}

impl UdpEncap {
    fn validate(&self) -> Result<(), ValidationError> {
        if self.sport == 0 {
            return Err(ValidationError::new("sport", "port 0 is not allowed"));
        }
        if self.dport == 0 {
            return Err(ValidationError::new("dport", "port 0 is not allowed"));
        }
        Ok(())
    }
}

/// An inclusive port range; written `"443"` or `"1024-65535"` (a bare
/// integer is accepted too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    start: u16,
    end: u16,
}

/// Why a port range was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid port range {input:?}: {reason}")]
pub struct PortRangeError {
    input: String,
    reason: &'static str,
}

impl PortRange {
    /// `start..=end`; `start` must not exceed `end`.
    pub fn new(start: u16, end: u16) -> Result<Self, PortRangeError> {
        if start > end {
            return Err(PortRangeError {
                input: format!("{start}-{end}"),
                reason: "start is greater than end",
            });
        }
        Ok(PortRange { start, end })
    }

    /// One port.
    pub fn single(port: u16) -> Self {
        PortRange {
            start: port,
            end: port,
        }
    }

    /// First port.
    pub fn start(&self) -> u16 {
        self.start
    }

    /// Last port (inclusive).
    pub fn end(&self) -> u16 {
        self.end
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.start..=self.end).contains(&port)
    }
}

impl FromStr for PortRange {
    type Err = PortRangeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| PortRangeError {
            input: s.to_owned(),
            reason,
        };
        let port = |p: &str| {
            let p = p.trim();
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err("expected PORT or START-END with ports 0-65535"));
            }
            p.parse::<u16>().map_err(|_| err("port above 65535"))
        };
        match s.split_once('-') {
            None => Ok(PortRange::single(port(s)?)),
            Some((a, b)) => {
                let (start, end) = (port(a)?, port(b)?);
                if start > end {
                    return Err(err("start is greater than end"));
                }
                Ok(PortRange { start, end })
            }
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = PortRange;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port or port range such as \"443\" or \"1024-65535\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortRange, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortRange, E> {
                u16::try_from(v)
                    .map(PortRange::single)
                    .map_err(|_| E::custom(format!("port {v} is above 65535")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortRange, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("port {v} is negative")))
                    .and_then(|v| self.visit_u64(v))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// An IP protocol number; names `tcp`, `udp`, `sctp`, `icmp`, `icmpv6`,
/// `gre` are accepted on input, numbers are written on output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpProtocol(pub u8);

impl IpProtocol {
    /// TCP (6).
    pub const TCP: IpProtocol = IpProtocol(6);
    /// UDP (17).
    pub const UDP: IpProtocol = IpProtocol(17);
    /// SCTP (132).
    pub const SCTP: IpProtocol = IpProtocol(132);
    /// ICMP (1).
    pub const ICMP: IpProtocol = IpProtocol(1);
    /// ICMPv6 (58).
    pub const ICMPV6: IpProtocol = IpProtocol(58);
    /// GRE (47).
    pub const GRE: IpProtocol = IpProtocol(47);

    /// The protocol called `name` (tcp, udp, sctp, icmp, icmpv6, gre).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "tcp" => Self::TCP,
            "udp" => Self::UDP,
            "sctp" => Self::SCTP,
            "icmp" => Self::ICMP,
            "icmpv6" | "ipv6-icmp" => Self::ICMPV6,
            "gre" => Self::GRE,
            _ => return None,
        })
    }

    /// Whether the protocol has ports that a selector can match.
    pub fn has_ports(self) -> bool {
        matches!(self, Self::TCP | Self::UDP | Self::SCTP) || self.0 == 136
    }
}

impl Serialize for IpProtocol {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(self.0)
    }
}

impl<'de> Deserialize<'de> for IpProtocol {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = IpProtocol;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "an IP protocol number 0-255 or one of tcp, udp, sctp, icmp, icmpv6, gre",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IpProtocol, E> {
                IpProtocol::from_name(v).ok_or_else(|| {
                    E::custom(format!(
                        "unknown IP protocol {v:?}: use a number 0-255 or one of tcp, udp, sctp, icmp, icmpv6, gre"
                    ))
                })
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IpProtocol, E> {
                u8::try_from(v)
                    .map(IpProtocol)
                    .map_err(|_| E::custom(format!("IP protocol {v} is above 255")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IpProtocol, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom(format!("IP protocol {v} is negative")))
                    .and_then(|v| self.visit_u64(v))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Which inner packets an SA may carry. `local` is this gateway's side
/// (the source of outbound packets, the destination of inbound ones).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficSelector {
    /// Our side's prefix.
    pub local: Prefix,
    /// The peer's side's prefix.
    pub remote: Prefix,
    /// Inner IP protocol; any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<IpProtocol>,
    /// Ports on our side; any when absent (needs a protocol with ports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_ports: Option<PortRange>,
    /// Ports on the peer's side; any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_ports: Option<PortRange>,
}

impl TrafficSelector {
    /// Any protocol and port between two prefixes.
    pub fn between(local: Prefix, remote: Prefix) -> Self {
        TrafficSelector {
            local,
            remote,
            protocol: None,
            local_ports: None,
            remote_ports: None,
        }
    }

    /// Checks address families and ports.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.local.is_ipv4() != self.remote.is_ipv4() {
            return Err(ValidationError::new(
                "remote",
                format!(
                    "address family of {} differs from local {}",
                    self.remote, self.local
                ),
            ));
        }
        for (field, ports) in [
            ("local_ports", &self.local_ports),
            ("remote_ports", &self.remote_ports),
        ] {
            if ports.is_some() {
                match self.protocol {
                    None => {
                        return Err(ValidationError::new(
                            field,
                            "ports need a protocol (tcp, udp or sctp)",
                        ))
                    }
                    Some(p) if !p.has_ports() => {
                        return Err(ValidationError::new(
                            field,
                            format!("IP protocol {} has no ports", p.0),
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }
}

/// Volume lifetimes of an SA; each limit is optional. Time lifetimes are the
/// IKE daemon's business (it rekeys on its own timers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lifetimes {
    /// Bytes after which a `SoftLifetimeExpired` event is raised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_bytes: Option<u64>,
    /// Bytes after which the SA stops carrying traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard_bytes: Option<u64>,
    /// Packets after which a `SoftLifetimeExpired` event is raised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_packets: Option<u64>,
    /// Packets after which the SA stops carrying traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hard_packets: Option<u64>,
}

impl Lifetimes {
    /// True when no limit is set.
    pub fn is_empty(&self) -> bool {
        *self == Lifetimes::default()
    }

    /// Checks that limits are non-zero and soft <= hard.
    pub fn validate(&self) -> Result<(), ValidationError> {
        for (field, v) in [
            ("soft_bytes", self.soft_bytes),
            ("hard_bytes", self.hard_bytes),
            ("soft_packets", self.soft_packets),
            ("hard_packets", self.hard_packets),
        ] {
            if v == Some(0) {
                return Err(ValidationError::new(
                    field,
                    "must be greater than 0 (leave it out for no limit)",
                ));
            }
        }
        for (soft_field, soft, hard_field, hard) in [
            ("soft_bytes", self.soft_bytes, "hard_bytes", self.hard_bytes),
            (
                "soft_packets",
                self.soft_packets,
                "hard_packets",
                self.hard_packets,
            ),
        ] {
            if let (Some(s), Some(h)) = (soft, hard) {
                if s > h {
                    return Err(ValidationError::new(
                        soft_field,
                        format!("soft limit {s} exceeds {hard_field} {h} (soft must be <= hard)"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Everything the data plane needs to run one SA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaSpec {
    /// Security Parameter Index; 1-255 are reserved (RFC 4303) and 0 is
    /// invalid. Unique per direction.
    pub spi: u32,
    /// Inbound or outbound.
    pub direction: Direction,
    /// AES-GCM key and salt, hex `key || salt` on the wire.
    pub key: GcmKey,
    /// Extended (64-bit) sequence numbers.
    #[serde(default)]
    pub esn: bool,
    /// Anti-replay window in packets, 32..=8192 (inbound SAs).
    #[serde(default = "default_replay_window")]
    pub replay_window: u32,
    /// Our outer (tunnel) address.
    #[serde(deserialize_with = "ip_addr")]
    pub tunnel_local: IpAddr,
    /// The peer's outer (tunnel) address.
    #[serde(deserialize_with = "ip_addr")]
    pub tunnel_remote: IpAddr,
    /// UDP encapsulation (NAT-T), absent for plain ESP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encap: Option<UdpEncap>,
    /// Inner traffic this SA carries; at least one.
    pub selectors: Vec<TrafficSelector>,
    /// Volume lifetimes.
    #[serde(default, skip_serializing_if = "Lifetimes::is_empty")]
    pub lifetime: Lifetimes,
    /// First sequence number to send (outbound) or expect (inbound);
    /// 1 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_seq: Option<u64>,
    /// RFC 9611 per-resource SA: the data-plane worker that sends on it.
    /// An outbound SA with `resource = w` is used by worker `w` for the
    /// traffic of every `protect` policy whose SA (the fallback SA) has the
    /// same tunnel addresses and selectors; other workers keep using the
    /// policy's SA. On an inbound SA it is only reported (each SA has its
    /// own replay window anyway). Absent: an ordinary SA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<u32>,
}

/// An IP address from a string, with an error that quotes the input.
fn ip_addr<'de, D: Deserializer<'de>>(deserializer: D) -> Result<IpAddr, D::Error> {
    struct Visitor;
    impl de::Visitor<'_> for Visitor {
        type Value = IpAddr;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an IPv4 or IPv6 address such as \"198.18.0.1\"")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<IpAddr, E> {
            v.parse()
                .map_err(|_| E::custom(format!("{v:?} is not an IPv4 or IPv6 address")))
        }
    }
    deserializer.deserialize_str(Visitor)
}

fn default_replay_window() -> u32 {
    DEFAULT_REPLAY_WINDOW
}

/// Checks an SPI against RFC 4303's reserved values.
pub fn validate_spi(spi: u32) -> Result<(), String> {
    match spi {
        0 => Err("SPI 0 is not allowed (RFC 4303 reserves it for local use)".to_owned()),
        1..=255 => Err(format!(
            "SPI {spi} is in the range 1-255 that RFC 4303 reserves; use 256 (0x100) or above"
        )),
        _ => Ok(()),
    }
}

/// A tunnel endpoint must be a unicast address. The data plane refuses the
/// others when it builds the SA (`SaCore::new`); refusing them here too
/// keeps a spec that validates from failing at install time (the limited
/// broadcast address did, found by the sa_api_framing fuzz target).
fn validate_tunnel_addr(field: &str, addr: IpAddr) -> Result<(), ValidationError> {
    let broadcast = matches!(addr, IpAddr::V4(a) if a.is_broadcast());
    if addr.is_unspecified() || addr.is_multicast() || broadcast {
        return Err(ValidationError::new(
            field,
            format!("{addr} cannot be a tunnel endpoint (unspecified, multicast or broadcast)"),
        ));
    }
    Ok(())
}

impl SaSpec {
    /// Checks every field and their combinations; the error names the
    /// field relative to the SA (`replay_window`, `selectors[1].remote`).
    pub fn validate(&self) -> Result<(), ValidationError> {
        validate_spi(self.spi).map_err(|r| ValidationError::new("spi", r))?;
        if !(MIN_REPLAY_WINDOW..=MAX_REPLAY_WINDOW).contains(&self.replay_window) {
            return Err(ValidationError::new(
                "replay_window",
                format!(
                    "{} is outside {MIN_REPLAY_WINDOW}..={MAX_REPLAY_WINDOW} packets",
                    self.replay_window
                ),
            ));
        }
        validate_tunnel_addr("tunnel_local", self.tunnel_local)?;
        validate_tunnel_addr("tunnel_remote", self.tunnel_remote)?;
        if self.tunnel_local.is_ipv4() != self.tunnel_remote.is_ipv4() {
            return Err(ValidationError::new(
                "tunnel_remote",
                format!(
                    "address family of {} differs from tunnel_local {}",
                    self.tunnel_remote, self.tunnel_local
                ),
            ));
        }
        if let Some(encap) = &self.encap {
            encap.validate().map_err(|e| e.within("encap"))?;
        }
        if self.selectors.is_empty() {
            return Err(ValidationError::new(
                "selectors",
                "at least one traffic selector is required",
            ));
        }
        for (i, ts) in self.selectors.iter().enumerate() {
            ts.validate()
                .map_err(|e| e.within(&format!("selectors[{i}]")))?;
        }
        self.lifetime.validate().map_err(|e| e.within("lifetime"))?;
        if let Some(seq) = self.initial_seq {
            if seq == 0 {
                return Err(ValidationError::new(
                    "initial_seq",
                    "sequence numbers start at 1",
                ));
            }
            if !self.esn && seq > u64::from(u32::MAX) {
                return Err(ValidationError::new(
                    "initial_seq",
                    format!(
                        "{seq} does not fit 32 bits; set esn = true for 64-bit sequence numbers"
                    ),
                ));
            }
        }
        if let Some(resource) = self.resource {
            if resource >= MAX_RESOURCES {
                return Err(ValidationError::new(
                    "resource",
                    format!("{resource} is not a worker index below {MAX_RESOURCES}"),
                ));
            }
        }
        Ok(())
    }
}

/// Bound on [`SaSpec::resource`]: the data plane keeps a slot per index up
/// to the highest one in use, so an index must not make that table huge.
pub const MAX_RESOURCES: u32 = 1024;

/// A change to an installed SA (`UpdateSa`). Absent fields stay as they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaUpdate {
    /// The SA to change.
    pub spi: u32,
    /// Its direction.
    pub direction: Direction,
    /// New volume lifetimes (replace the old ones as a whole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime: Option<Lifetimes>,
    /// New peer address (the NAT mapping or MOBIKE moved it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_remote: Option<IpAddr>,
    /// New UDP encapsulation ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encap: Option<UdpEncap>,
}

impl SaUpdate {
    /// An update of nothing yet, for `spi`/`direction`.
    pub fn new(spi: u32, direction: Direction) -> Self {
        SaUpdate {
            spi,
            direction,
            lifetime: None,
            tunnel_remote: None,
            encap: None,
        }
    }

    /// Checks the changed fields; an update that changes nothing is an error.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.lifetime.is_none() && self.tunnel_remote.is_none() && self.encap.is_none() {
            return Err(ValidationError::new(
                "",
                "nothing to update: give lifetime, tunnel_remote or encap",
            ));
        }
        if let Some(l) = &self.lifetime {
            l.validate().map_err(|e| e.within("lifetime"))?;
        }
        if let Some(a) = self.tunnel_remote {
            validate_tunnel_addr("tunnel_remote", a)?;
        }
        if let Some(encap) = &self.encap {
            encap.validate().map_err(|e| e.within("encap"))?;
        }
        Ok(())
    }
}
