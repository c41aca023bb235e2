//! Virtual IPs over the Configuration payload (RFC 7296 section 2.19): the
//! gateway's answer to a client's CFG_REQUEST from the connection's pools,
//! the traffic selector the client is narrowed to, and the client's request
//! and what it learns from the CFG_REPLY. Sans-IO.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::pool::Pools;
use crate::wire::cp::cfg_type;
use crate::wire::{AddressRange, CfgAttribute, Configuration, TrafficSelector};

/// The prefix length sent with an IPv6 virtual IP: the client owns exactly
/// that address.
const VIP6_PREFIX: u8 = 128;

/// Why a CFG_REQUEST cannot be answered: the responder sends the
/// INTERNAL_ADDRESS_FAILURE notify instead of CHILD SA payloads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CfgError {
    /// The client asked for addresses and none could be leased.
    #[error("no virtual IP for the client: {0}")]
    InternalAddressFailure(String),
}

/// What the gateway leased for one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leased {
    /// The CFG_REPLY to send.
    pub reply: Configuration,
    /// The addresses leased (release them with [`Pools::release`] when the
    /// IKE SA goes).
    pub addresses: Vec<IpAddr>,
}

impl Leased {
    /// The client's traffic selectors narrowed to its virtual IPs: each
    /// address alone, any protocol and port.
    pub fn client_selectors(&self) -> Vec<TrafficSelector> {
        self.addresses.iter().map(|a| single(*a)).collect()
    }
}

fn single(a: IpAddr) -> TrafficSelector {
    TrafficSelector::any(match a {
        IpAddr::V4(a) => AddressRange::V4(a, a),
        IpAddr::V6(a) => AddressRange::V6(a, a),
    })
}

/// Answers `request` (a CFG_REQUEST) for the client `identity` from the
/// pools named `pool_names`, in order: an address for each address family
/// it asks for (the one it names if that is free), and the pools' DNS
/// servers of each family it asks DNS for. Attributes it does not know are
/// ignored. Nothing is leased when it fails.
pub fn answer(
    pools: &mut Pools,
    pool_names: &[String],
    identity: &[u8],
    request: &Configuration,
) -> Result<Leased, CfgError> {
    let mut want_v4 = None;
    let mut want_v6 = None;
    let (mut dns4, mut dns6) = (false, false);
    for a in &request.attributes {
        match a {
            CfgAttribute::Ip4Address(addr) => {
                want_v4 = Some(addr.map(IpAddr::V4).filter(|a| !a.is_unspecified()))
            }
            CfgAttribute::Ip6Address(addr) => {
                want_v6 = Some(
                    addr.map(|(a, _)| IpAddr::V6(a))
                        .filter(|a| !a.is_unspecified()),
                )
            }
            CfgAttribute::Ip4Dns(_) => dns4 = true,
            CfgAttribute::Ip6Dns(_) => dns6 = true,
            _ => {}
        }
    }
    let mut addresses: Vec<IpAddr> = Vec::new();
    let mut used: Vec<String> = Vec::new();
    let mut failures = Vec::new();
    for (ipv6, want) in [(false, want_v4), (true, want_v6)] {
        let Some(requested) = want else { continue };
        for name in pool_names {
            let Some(pool) = pools.get_mut(name).filter(|p| p.is_ipv6() == ipv6) else {
                continue;
            };
            match pool.acquire(identity, requested) {
                Ok(addr) => {
                    addresses.push(addr);
                    used.push(name.clone());
                    break;
                }
                Err(e) => failures.push(e.to_string()),
            }
        }
    }
    if addresses.is_empty() && (want_v4.is_some() || want_v6.is_some()) {
        let why = if failures.is_empty() {
            "the connection has no pool of the requested family".to_string()
        } else {
            failures.join("; ")
        };
        return Err(CfgError::InternalAddressFailure(why));
    }
    let mut attributes = Vec::new();
    for a in &addresses {
        attributes.push(match a {
            IpAddr::V4(a) => CfgAttribute::Ip4Address(Some(*a)),
            IpAddr::V6(a) => CfgAttribute::Ip6Address(Some((*a, VIP6_PREFIX))),
        });
    }
    let mut dns: Vec<IpAddr> = Vec::new();
    for name in pool_names {
        for server in pools.get(name).map(|p| p.dns()).unwrap_or_default() {
            let asked = if server.is_ipv6() { dns6 } else { dns4 };
            if asked && !dns.contains(server) {
                dns.push(*server);
            }
        }
    }
    for server in dns {
        attributes.push(match server {
            IpAddr::V4(a) => CfgAttribute::Ip4Dns(Some(a)),
            IpAddr::V6(a) => CfgAttribute::Ip6Dns(Some(a)),
        });
    }
    Ok(Leased {
        reply: Configuration {
            cfg_type: cfg_type::REPLY,
            attributes,
        },
        addresses,
    })
}

/// The client's CFG_REQUEST for the `vips` of its connection (`0.0.0.0`
/// or `::` for any address of that family), with DNS servers of each
/// family asked for; `None` without vips.
pub fn request(vips: &[IpAddr]) -> Option<Configuration> {
    if vips.is_empty() {
        return None;
    }
    let mut attributes = Vec::new();
    let (mut v4, mut v6) = (false, false);
    for vip in vips {
        match vip {
            IpAddr::V4(a) => {
                v4 = true;
                attributes.push(CfgAttribute::Ip4Address(
                    (!a.is_unspecified()).then_some(*a),
                ));
            }
            IpAddr::V6(a) => {
                v6 = true;
                attributes.push(CfgAttribute::Ip6Address(
                    (!a.is_unspecified()).then_some((*a, VIP6_PREFIX)),
                ));
            }
        }
    }
    if v4 {
        attributes.push(CfgAttribute::Ip4Dns(None));
    }
    if v6 {
        attributes.push(CfgAttribute::Ip6Dns(None));
    }
    Some(Configuration {
        cfg_type: cfg_type::REQUEST,
        attributes,
    })
}

/// What a client got in a CFG_REPLY.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assigned {
    /// Its virtual IPs.
    pub addresses: Vec<IpAddr>,
    /// DNS servers to use while connected.
    pub dns: Vec<IpAddr>,
    /// Networks the gateway says it protects (INTERNAL_IP4/6_SUBNET).
    pub subnets: Vec<(IpAddr, u8)>,
}

impl Assigned {
    /// Reads a CFG_REPLY; other CFG types and empty values give nothing.
    /// Unspecified, multicast and broadcast addresses are not virtual IPs.
    pub fn from_reply(reply: &Configuration) -> Self {
        let mut out = Assigned::default();
        if reply.cfg_type != cfg_type::REPLY {
            return out;
        }
        for a in &reply.attributes {
            match a {
                CfgAttribute::Ip4Address(Some(a)) if usable_v4(*a) => {
                    out.addresses.push(IpAddr::V4(*a))
                }
                CfgAttribute::Ip6Address(Some((a, _))) if usable_v6(*a) => {
                    out.addresses.push(IpAddr::V6(*a))
                }
                CfgAttribute::Ip4Dns(Some(a)) if usable_v4(*a) => out.dns.push(IpAddr::V4(*a)),
                CfgAttribute::Ip6Dns(Some(a)) if usable_v6(*a) => out.dns.push(IpAddr::V6(*a)),
                CfgAttribute::Ip4Subnet(Some((a, mask))) => {
                    let len = u32::from(*mask).leading_ones() as u8;
                    out.subnets.push((IpAddr::V4(*a), len));
                }
                CfgAttribute::Ip6Subnet(Some((a, len))) => out.subnets.push((IpAddr::V6(*a), *len)),
                _ => {}
            }
        }
        out
    }
}

fn usable_v4(a: Ipv4Addr) -> bool {
    !(a.is_unspecified() || a.is_multicast() || a.is_broadcast())
}

fn usable_v6(a: Ipv6Addr) -> bool {
    !(a.is_unspecified() || a.is_multicast())
}
