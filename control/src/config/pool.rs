//! `[pools.NAME]`: the virtual IP pools of a remote-access gateway, as
//! swanctl.conf writes them (`pools { rw { addrs = 10.3.0.0/24 dns =
//! 10.2.0.53 } }`), and the connection settings that use them (`pools`
//! on the gateway, `vips` on the client; see [`super::Connection`]).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};
use xdpsec_api::Prefix;

use super::values;

/// The addresses a pool hands out, as an inclusive range of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolAddrs {
    first: IpAddr,
    last: IpAddr,
}

impl PoolAddrs {
    /// The first address handed out.
    pub fn first(&self) -> IpAddr {
        self.first
    }

    /// The last address handed out.
    pub fn last(&self) -> IpAddr {
        self.last
    }

    /// Whether the pool holds IPv6 addresses.
    pub fn is_ipv6(&self) -> bool {
        self.first.is_ipv6()
    }

    /// How many addresses it holds (saturating at `u128::MAX`).
    pub fn len(&self) -> u128 {
        (to_u128(self.last) - to_u128(self.first)).saturating_add(1)
    }

    /// Always false: a pool holds at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Whether `addr` is one of its addresses.
    pub fn contains(&self, addr: IpAddr) -> bool {
        addr.is_ipv6() == self.is_ipv6()
            && (to_u128(self.first)..=to_u128(self.last)).contains(&to_u128(addr))
    }

    /// The `n`th address (0-based), if there is one.
    pub fn nth(&self, n: u128) -> Option<IpAddr> {
        (n < self.len()).then(|| from_u128(to_u128(self.first) + n, self.is_ipv6()))
    }

    /// The position of `addr` in the pool.
    pub fn offset(&self, addr: IpAddr) -> Option<u128> {
        self.contains(addr)
            .then(|| to_u128(addr) - to_u128(self.first))
    }
}

fn to_u128(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn from_u128(v: u128, ipv6: bool) -> IpAddr {
    if ipv6 {
        IpAddr::V6(v.into())
    } else {
        // A v4 pool's offsets stay within u32: first and last are IPv4.
        IpAddr::V4(u32::try_from(v).unwrap_or(u32::MAX).into())
    }
}

impl FromStr for PoolAddrs {
    type Err = String;

    /// `10.3.0.0/24` (without its first and last address when it has more
    /// than two, as strongSwan does), `10.3.0.10-10.3.0.20`, or one address.
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let bad = |why: &str| format!("invalid pool addrs {s:?}: {why}");
        if let Some((a, b)) = t.split_once('-') {
            let parse = |x: &str| {
                x.trim()
                    .parse::<IpAddr>()
                    .map_err(|_| bad(&format!("{:?} is not an IP address", x.trim())))
            };
            let (first, last) = (parse(a)?, parse(b)?);
            if first.is_ipv6() != last.is_ipv6() {
                return Err(bad("the range mixes IPv4 and IPv6"));
            }
            if to_u128(last) < to_u128(first) {
                return Err(bad("the range ends before it starts"));
            }
            return Ok(PoolAddrs { first, last });
        }
        if t.contains('/') {
            let prefix: Prefix = t.parse().map_err(|e| bad(&format!("{e}")))?;
            let width = if prefix.addr().is_ipv6() { 128 } else { 32 };
            let host_bits = width - u32::from(prefix.prefix_len());
            let network = to_u128(prefix.addr());
            let size = 1u128.checked_shl(host_bits).unwrap_or(0);
            let last = network.wrapping_add(size.wrapping_sub(1));
            let v6 = prefix.addr().is_ipv6();
            // The network and broadcast (all-ones) addresses are not handed
            // out from a subnet of more than two addresses.
            let (first, last) = if size == 0 || size > 2 {
                (network + 1, last - 1)
            } else {
                (network, last)
            };
            return Ok(PoolAddrs {
                first: from_u128(first, v6),
                last: from_u128(last, v6),
            });
        }
        let addr: IpAddr = t
            .parse()
            .map_err(|_| bad("write a subnet (10.3.0.0/24), a range (A-B) or an address"))?;
        Ok(PoolAddrs {
            first: addr,
            last: addr,
        })
    }
}

impl fmt::Display for PoolAddrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl<'de> Deserialize<'de> for PoolAddrs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        values::from_str(d, "a subnet, an address range or an address")
    }
}

/// `[pools.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// The virtual IPs handed out.
    pub addrs: PoolAddrs,
    /// DNS servers sent with an address from this pool
    /// (INTERNAL_IP4_DNS / INTERNAL_IP6_DNS).
    #[serde(default)]
    pub dns: Vec<IpAddr>,
}
