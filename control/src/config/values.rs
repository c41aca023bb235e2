//! The small value types of the IKE config: strongSwan durations
//! (`4h`, `30m`, `20s`, `1d`, plain seconds), addresses (`%any`, an IP, a
//! prefix), traffic selectors (`10.1.0.0/16[tcp/80]`, `dynamic`) and
//! pre-shared keys (`0x...` hex, `0s...` base64, or the text itself).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use serde::{de, Deserialize, Deserializer};
use xdpsec_api::sa::{IpProtocol, PortRange};
use xdpsec_api::Prefix;
use zeroize::Zeroizing;

use crate::wire::{AddressRange, TrafficSelector};

/// Parses a strongSwan time value: a number of seconds with an optional
/// unit `s`, `m`, `h` or `d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let scale = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        other => {
            return Err(format!(
                "invalid duration {s:?}: unknown unit {other:?} (write e.g. \"20s\", \"30m\", \"4h\", \"1d\" or seconds)"
            ))
        }
    };
    if digits.is_empty() {
        return Err(format!(
            "invalid duration {s:?}: expected a number with an optional unit s, m, h or d"
        ));
    }
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .map(Duration::from_secs)
        .ok_or_else(|| format!("invalid duration {s:?}: too large"))
}

struct DurationVisitor;

impl de::Visitor<'_> for DurationVisitor {
    type Value = Duration;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as \"20s\", \"30m\", \"4h\", \"1d\" or a number of seconds")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse_duration(v).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        u64::try_from(v)
            .map(Duration::from_secs)
            .map_err(|_| E::custom(format!("duration {v} is negative")))
    }
}

/// `serde(deserialize_with)` for a [`Duration`] field.
pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor)
}

/// `serde(deserialize_with)` for an optional [`Duration`] field.
pub(crate) fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    d.deserialize_any(DurationVisitor).map(Some)
}

/// Deserializes a string through `T::from_str`, failing inside the
/// deserializer so that TOML errors point at the element itself
/// (`proposals[1]`), not the array around it.
pub(crate) fn from_str<'de, D, T>(d: D, expecting: &'static str) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    struct Visitor<T>(&'static str, std::marker::PhantomData<T>);
    impl<T: FromStr> de::Visitor<'_> for Visitor<T>
    where
        T::Err: fmt::Display,
    {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            v.parse().map_err(E::custom)
        }
    }
    d.deserialize_str(Visitor(expecting, std::marker::PhantomData))
}

/// A `local_addrs` / `remote_addrs` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrSpec {
    /// `%any`: any address.
    Any,
    /// `%any4`: any IPv4 address.
    Any4,
    /// `%any6`: any IPv6 address.
    Any6,
    /// One address.
    Addr(IpAddr),
    /// A subnet (`198.18.0.0/24`): the peer may come from any address in
    /// it (responder only).
    Subnet(Prefix),
}

impl AddrSpec {
    /// Whether `addr` satisfies this entry.
    pub fn matches(&self, addr: IpAddr) -> bool {
        match self {
            AddrSpec::Any => true,
            AddrSpec::Any4 => addr.is_ipv4(),
            AddrSpec::Any6 => addr.is_ipv6(),
            AddrSpec::Addr(a) => *a == addr,
            AddrSpec::Subnet(p) => p.contains(addr),
        }
    }

    /// The single address, if this entry is one (what an initiator sends to).
    pub fn addr(&self) -> Option<IpAddr> {
        match self {
            AddrSpec::Addr(a) => Some(*a),
            _ => None,
        }
    }
}

impl FromStr for AddrSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        match t {
            "%any" | "0.0.0.0/0" | "::/0" => return Ok(AddrSpec::Any),
            "%any4" => return Ok(AddrSpec::Any4),
            "%any6" => return Ok(AddrSpec::Any6),
            _ => {}
        }
        if let Ok(a) = t.parse::<IpAddr>() {
            return Ok(AddrSpec::Addr(a));
        }
        if t.contains('/') {
            return t.parse().map(AddrSpec::Subnet).map_err(|e| format!("{e}"));
        }
        Err(format!(
            "invalid address {s:?}: write an IPv4/IPv6 address, a subnet, %any, %any4 or %any6 \
             (host names are not resolved)"
        ))
    }
}

impl fmt::Display for AddrSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddrSpec::Any => f.write_str("%any"),
            AddrSpec::Any4 => f.write_str("%any4"),
            AddrSpec::Any6 => f.write_str("%any6"),
            AddrSpec::Addr(a) => write!(f, "{a}"),
            AddrSpec::Subnet(p) => write!(f, "{p}"),
        }
    }
}

impl<'de> Deserialize<'de> for AddrSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str(d, "an address, a subnet, %any, %any4 or %any6")
    }
}

/// The addresses of a traffic selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsAddrs {
    /// `dynamic`: the IKE address of that side (the tunnel endpoint).
    Dynamic,
    /// A prefix (`10.1.0.0/16`; a bare address is a /32 or /128).
    Prefix(Prefix),
    /// An inclusive range (`10.1.0.10-10.1.0.20`).
    Range(IpAddr, IpAddr),
}

/// A `local_ts` / `remote_ts` entry, strongSwan syntax:
/// `ADDRS[PROTO/PORT]` with `PROTO` a name, number or `%any` and `PORT` a
/// port, a range `START-END` or `%any`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TsSpec {
    /// The addresses.
    pub addrs: TsAddrs,
    /// The IP protocol; 0 for any.
    pub protocol: u8,
    /// The ports; 0-65535 for any.
    pub ports: PortRange,
}

impl TsSpec {
    /// Any protocol and port between the IKE addresses.
    pub fn dynamic() -> Self {
        TsSpec {
            addrs: TsAddrs::Dynamic,
            protocol: 0,
            ports: any_port(),
        }
    }

    /// The selector as it goes into a TS payload; `dynamic` becomes
    /// `ike_addr`.
    pub fn to_wire(&self, ike_addr: IpAddr) -> TrafficSelector {
        let (first, last) = match self.addrs {
            TsAddrs::Dynamic => (ike_addr, ike_addr),
            TsAddrs::Prefix(p) => prefix_bounds(&p),
            TsAddrs::Range(a, b) => (a, b),
        };
        let range = match (first, last) {
            (IpAddr::V4(a), IpAddr::V4(b)) => AddressRange::V4(a, b),
            (IpAddr::V6(a), IpAddr::V6(b)) => AddressRange::V6(a, b),
            // Parsing keeps both ends in one family; a dynamic selector
            // takes the family of the IKE address.
            (IpAddr::V4(a), IpAddr::V6(_)) => AddressRange::V4(a, a),
            (IpAddr::V6(a), IpAddr::V4(_)) => AddressRange::V6(a, a),
        };
        TrafficSelector {
            ip_protocol: self.protocol,
            start_port: self.ports.start(),
            end_port: self.ports.end(),
            range,
        }
    }
}

fn any_port() -> PortRange {
    PortRange::new(0, u16::MAX).unwrap_or_else(|_| PortRange::single(0))
}

fn prefix_bounds(p: &Prefix) -> (IpAddr, IpAddr) {
    match p.addr() {
        IpAddr::V4(a) => {
            let host = u32::MAX.checked_shr(u32::from(p.prefix_len())).unwrap_or(0);
            (IpAddr::V4(a), IpAddr::V4((u32::from(a) | host).into()))
        }
        IpAddr::V6(a) => {
            let host = u128::MAX
                .checked_shr(u32::from(p.prefix_len()))
                .unwrap_or(0);
            (IpAddr::V6(a), IpAddr::V6((u128::from(a) | host).into()))
        }
    }
}

impl FromStr for TsSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let (addr_part, sel) = match t.split_once('[') {
            Some((a, rest)) => {
                let inner = rest.strip_suffix(']').ok_or_else(|| {
                    format!("invalid traffic selector {s:?}: missing ']' at the end")
                })?;
                (a.trim(), Some(inner))
            }
            None => (t, None),
        };
        let addrs = if addr_part == "dynamic" {
            TsAddrs::Dynamic
        } else if let Some((a, b)) = addr_part.split_once('-') {
            let parse = |x: &str| {
                x.trim().parse::<IpAddr>().map_err(|_| {
                    format!("invalid traffic selector {s:?}: {x:?} is not an IP address")
                })
            };
            let (a, b) = (parse(a)?, parse(b)?);
            let ordered = match (a, b) {
                (IpAddr::V4(x), IpAddr::V4(y)) => x <= y,
                (IpAddr::V6(x), IpAddr::V6(y)) => x <= y,
                _ => {
                    return Err(format!(
                        "invalid traffic selector {s:?}: the range mixes IPv4 and IPv6"
                    ))
                }
            };
            if !ordered {
                return Err(format!(
                    "invalid traffic selector {s:?}: the range ends before it starts"
                ));
            }
            TsAddrs::Range(a, b)
        } else {
            TsAddrs::Prefix(
                addr_part
                    .parse()
                    .map_err(|e| format!("invalid traffic selector {s:?}: {e}"))?,
            )
        };
        let mut spec = TsSpec {
            addrs,
            protocol: 0,
            ports: any_port(),
        };
        if let Some(sel) = sel {
            let (proto, port) = match sel.split_once('/') {
                Some((p, q)) => (p.trim(), Some(q.trim())),
                None => (sel.trim(), None),
            };
            spec.protocol = match proto {
                "" | "%any" => 0,
                p => match p.parse::<u8>() {
                    Ok(n) => n,
                    Err(_) => IpProtocol::from_name(p).map(|p| p.0).ok_or_else(|| {
                        format!(
                            "invalid traffic selector {s:?}: unknown protocol {p:?} \
                             (tcp, udp, sctp, icmp, icmpv6, gre, a number or %any)"
                        )
                    })?,
                },
            };
            if let Some(port) = port.filter(|p| *p != "%any" && !p.is_empty()) {
                if spec.protocol == 0 {
                    return Err(format!(
                        "invalid traffic selector {s:?}: a port needs a protocol (e.g. [tcp/80])"
                    ));
                }
                spec.ports = port
                    .parse()
                    .map_err(|e| format!("invalid traffic selector {s:?}: {e}"))?;
            }
        }
        Ok(spec)
    }
}

impl fmt::Display for TsSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addrs {
            TsAddrs::Dynamic => f.write_str("dynamic")?,
            TsAddrs::Prefix(p) => write!(f, "{p}")?,
            TsAddrs::Range(a, b) => write!(f, "{a}-{b}")?,
        }
        let any_ports = self.ports == any_port();
        if self.protocol != 0 || !any_ports {
            write!(f, "[{}", self.protocol)?;
            if !any_ports {
                write!(f, "/{}", self.ports)?;
            }
            f.write_str("]")?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for TsSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str(
            d,
            "a traffic selector such as \"10.1.0.0/16\", \"10.1.0.0/16[tcp/80]\" or \"dynamic\"",
        )
    }
}

/// A pre-shared key; zeroed on drop, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Psk(Zeroizing<Vec<u8>>);

impl Psk {
    /// The key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Decodes strongSwan's forms: `0x` + hex, `0s` + base64, or the
    /// text's own bytes.
    pub fn decode(s: &str) -> Result<Psk, String> {
        let bytes = if let Some(hex) = s.strip_prefix("0x") {
            decode_hex(hex)?
        } else if let Some(b64) = s.strip_prefix("0s") {
            Zeroizing::new(
                base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map_err(|e| format!("secret after 0s is not valid base64: {e}"))?,
            )
        } else {
            Zeroizing::new(s.as_bytes().to_vec())
        };
        if bytes.is_empty() {
            return Err("the secret is empty".into());
        }
        Ok(Psk(bytes))
    }
}

fn decode_hex(s: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    let digits: Zeroizing<Vec<u8>> = Zeroizing::new(s.bytes().filter(|b| *b != b':').collect());
    if !digits.len().is_multiple_of(2) {
        return Err(format!(
            "secret after 0x has an odd number of hex digits ({})",
            digits.len()
        ));
    }
    let nibble = |b: u8, at: usize| match b {
        b'0'..=b'9' => Ok(b - b'0'),
        b'a'..=b'f' => Ok(b - b'a' + 10),
        b'A'..=b'F' => Ok(b - b'A' + 10),
        _ => Err(format!(
            "secret after 0x: invalid hex digit at position {at}"
        )),
    };
    let mut out = Zeroizing::new(Vec::with_capacity(digits.len() / 2));
    for (i, pair) in digits.chunks(2).enumerate() {
        out.push(nibble(pair[0], 2 * i)? << 4 | nibble(pair[1], 2 * i + 1)?);
    }
    Ok(out)
}

impl fmt::Debug for Psk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Psk(<{} bytes redacted>)", self.0.len())
    }
}

impl FromStr for Psk {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Psk::decode(s)
    }
}

impl<'de> Deserialize<'de> for Psk {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        from_str(d, "a secret: text, 0x + hex or 0s + base64")
    }
}
