//! Child SAs into the data plane and out of it, over the SA API.
//!
//! Order matters for losing no packet: the inbound SA goes in before the
//! outbound one (the peer may use its outbound SA as soon as it has sent
//! or received the last message), and the protect policies are replaced in
//! one step each (`replace_policy`), so during a rekey traffic moves from
//! the old outbound SA to the new one without a moment with no policy. A
//! removed child takes only the policies that still point at its SAs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};
use xdpsec_api::sa::{IpProtocol, PortRange};
use xdpsec_api::{
    ApiClient, ApiError, Direction, ErrorCode, GcmKey, Lifetimes, Policy, PolicyAction, PolicyKey,
    Prefix, SaSpec, TrafficSelector, UdpEncap,
};

use crate::wire::{AddressRange, TrafficSelector as IkeTs};

/// One Child SA as the data plane needs it: both directions.
#[derive(Debug, Clone)]
pub struct ChildInstall {
    /// Our inbound SPI.
    pub spi_in: u32,
    /// The peer's inbound SPI: our outbound.
    pub spi_out: u32,
    /// Key and salt of the inbound SA.
    pub key_in: GcmKey,
    /// Key and salt of the outbound SA.
    pub key_out: GcmKey,
    /// Extended sequence numbers.
    pub esn: bool,
    /// Our tunnel address.
    pub local: IpAddr,
    /// The peer's tunnel address.
    pub remote: IpAddr,
    /// UDP encapsulation: (our port, the peer's port).
    pub udp_encap: Option<(u16, u16)>,
    /// Our traffic selectors.
    pub local_ts: Vec<IkeTs>,
    /// The peer's traffic selectors.
    pub remote_ts: Vec<IkeTs>,
    /// Volume limits (the time limits are the IKE daemon's).
    pub lifetime: Lifetimes,
    /// Anti-replay window in packets.
    pub replay_window: u32,
}

/// What the data plane holds for one installed child, enough to remove it
/// (also after a restart: it is kept in the state file, without keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledChild {
    /// Our inbound SPI.
    pub spi_in: u32,
    /// Our outbound SPI.
    pub spi_out: u32,
    /// The policy selectors (local, remote), installed in both directions.
    pub policies: Vec<(Prefix, Prefix)>,
}

/// Why installing failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The traffic selectors have no pair of the same address family.
    #[error("the traffic selectors have no local/remote pair of one address family")]
    NoSelectors,
    /// The SA API refused or failed.
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// Smallest set of prefixes that covers exactly `start..=end` (a TS range).
pub fn range_to_prefixes(range: &AddressRange) -> Vec<Prefix> {
    match *range {
        AddressRange::V4(a, b) => {
            split_range(u128::from(u32::from(a)), u128::from(u32::from(b)), 32)
                .into_iter()
                .filter_map(|(n, len)| {
                    let addr = Ipv4Addr::from(u32::try_from(n).ok()?);
                    Prefix::new(addr.into(), len).ok()
                })
                .collect()
        }
        AddressRange::V6(a, b) => split_range(u128::from(a), u128::from(b), 128)
            .into_iter()
            .filter_map(|(n, len)| Prefix::new(Ipv6Addr::from(n).into(), len).ok())
            .collect(),
    }
}

/// CIDR blocks covering `start..=end` in a `bits`-wide space.
fn split_range(mut start: u128, end: u128, bits: u8) -> Vec<(u128, u8)> {
    // The last address of the block of 2^size_log addresses at `start`.
    let block_last = |start: u128, size_log: u32| match 1u128.checked_shl(size_log) {
        Some(size) => start.checked_add(size - 1),
        None => Some(u128::MAX).filter(|_| start == 0),
    };
    let mut out = Vec::new();
    if start > end {
        return out;
    }
    loop {
        // The largest block aligned at `start` that does not pass `end`.
        let mut size_log = u32::from(bits).min(start.trailing_zeros());
        while size_log > 0 && !block_last(start, size_log).is_some_and(|last| last <= end) {
            size_log -= 1;
        }
        let last = block_last(start, size_log).unwrap_or(start);
        out.push((start, bits - u8::try_from(size_log).unwrap_or(bits)));
        if last >= end {
            return out;
        }
        start = last + 1;
    }
}

fn ports(ts: &IkeTs) -> Option<PortRange> {
    if ts.start_port == 0 && ts.end_port == u16::MAX {
        None
    } else {
        PortRange::new(ts.start_port, ts.end_port).ok()
    }
}

/// The data plane's selectors for a child: every local/remote pair of one
/// family, with protocol and ports where the TS narrows them.
pub fn selectors(local_ts: &[IkeTs], remote_ts: &[IkeTs]) -> Vec<TrafficSelector> {
    let mut out = Vec::new();
    for l in local_ts {
        for r in remote_ts {
            let protocol = match (l.ip_protocol, r.ip_protocol) {
                (0, 0) => None,
                (0, p) | (p, 0) => Some(p),
                (a, b) if a == b => Some(a),
                _ => continue,
            };
            for lp in range_to_prefixes(&l.range) {
                for rp in range_to_prefixes(&r.range) {
                    if lp.is_ipv4() != rp.is_ipv4() {
                        continue;
                    }
                    let proto = protocol.map(IpProtocol);
                    let with_ports = proto.is_some_and(|p| p.has_ports());
                    out.push(TrafficSelector {
                        local: lp,
                        remote: rp,
                        protocol: proto,
                        local_ports: if with_ports { ports(l) } else { None },
                        remote_ports: if with_ports { ports(r) } else { None },
                    });
                }
            }
        }
    }
    out
}

/// The SA API operations for children, on a request connection.
#[derive(Debug)]
pub struct Installer {
    api: ApiClient,
}

impl Installer {
    /// Uses `api` (a connection not subscribed to events).
    pub fn new(api: ApiClient) -> Self {
        Installer { api }
    }

    /// The connection, for listing.
    pub fn api(&mut self) -> &mut ApiClient {
        &mut self.api
    }

    /// Installs inbound, then outbound, then the policies. On failure what
    /// was installed is taken out again.
    pub fn install(&mut self, child: &ChildInstall) -> Result<InstalledChild, InstallError> {
        let selectors = selectors(&child.local_ts, &child.remote_ts);
        if selectors.is_empty() {
            return Err(InstallError::NoSelectors);
        }
        let spec = |direction, spi, key: &GcmKey| SaSpec {
            spi,
            direction,
            key: key.clone(),
            esn: child.esn,
            replay_window: child.replay_window,
            tunnel_local: child.local,
            tunnel_remote: child.remote,
            encap: child.udp_encap.map(|(ours, theirs)| match direction {
                Direction::Out => UdpEncap {
                    sport: ours,
                    dport: theirs,
                },
                Direction::In => UdpEncap {
                    sport: theirs,
                    dport: ours,
                },
            }),
            selectors: selectors.clone(),
            lifetime: child.lifetime,
            initial_seq: None,
        };
        self.api
            .add_sa(spec(Direction::In, child.spi_in, &child.key_in))?;
        if let Err(e) = self
            .api
            .add_sa(spec(Direction::Out, child.spi_out, &child.key_out))
        {
            self.api.delete_sa(child.spi_in, Direction::In).ok();
            return Err(e.into());
        }
        let mut policies: Vec<(Prefix, Prefix)> = Vec::new();
        for s in &selectors {
            if !policies.contains(&(s.local, s.remote)) {
                policies.push((s.local, s.remote));
            }
        }
        let installed = InstalledChild {
            spi_in: child.spi_in,
            spi_out: child.spi_out,
            policies,
        };
        for &(local, remote) in &installed.policies {
            for (direction, spi) in [
                (Direction::In, child.spi_in),
                (Direction::Out, child.spi_out),
            ] {
                let policy = Policy {
                    local,
                    remote,
                    direction,
                    action: PolicyAction::Protect,
                    spi: Some(spi),
                };
                if let Err(e) = self.api.replace_policy(policy) {
                    self.remove(&installed).ok();
                    return Err(e.into());
                }
            }
        }
        Ok(installed)
    }

    /// Removes the policies that still protect with this child's SAs, then
    /// the outbound and the inbound SA. What is already gone is fine.
    pub fn remove(&mut self, child: &InstalledChild) -> Result<(), ApiError> {
        let current = self.api.list_policies()?;
        for p in current {
            let ours = match p.direction {
                Direction::In => p.spi == Some(child.spi_in),
                Direction::Out => p.spi == Some(child.spi_out),
            };
            if ours && child.policies.contains(&(p.local, p.remote)) {
                tolerate_missing(self.api.delete_policy(PolicyKey {
                    local: p.local,
                    remote: p.remote,
                    direction: p.direction,
                }))?;
            }
        }
        tolerate_missing(self.api.delete_sa(child.spi_out, Direction::Out))?;
        tolerate_missing(self.api.delete_sa(child.spi_in, Direction::In))?;
        Ok(())
    }
}

fn tolerate_missing(result: Result<(), ApiError>) -> Result<(), ApiError> {
    match result {
        Err(ApiError::Server {
            code: ErrorCode::NotFound,
            ..
        }) => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: &str, b: &str) -> AddressRange {
        AddressRange::V4(a.parse().unwrap(), b.parse().unwrap())
    }

    fn shown(range: AddressRange) -> Vec<String> {
        range_to_prefixes(&range)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn ranges_become_exact_prefixes() {
        assert_eq!(shown(v4("10.1.0.0", "10.1.0.255")), ["10.1.0.0/24"]);
        assert_eq!(shown(v4("0.0.0.0", "255.255.255.255")), ["0.0.0.0/0"]);
        assert_eq!(shown(v4("10.0.0.1", "10.0.0.1")), ["10.0.0.1/32"]);
        assert_eq!(
            shown(v4("10.0.0.1", "10.0.0.6")),
            ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]
        );
        assert!(shown(v4("10.0.0.9", "10.0.0.1")).is_empty());
        let all6 = AddressRange::V6(Ipv6Addr::UNSPECIFIED, Ipv6Addr::from(u128::MAX));
        assert_eq!(shown(all6), ["::/0"]);
        let net = AddressRange::V6(
            "fd00:1::".parse().unwrap(),
            "fd00:1::ffff:ffff:ffff:ffff".parse().unwrap(),
        );
        assert_eq!(shown(net), ["fd00:1::/64"]);
    }

    #[test]
    fn selectors_pair_families_and_keep_narrowed_ports() {
        let l4 = IkeTs::any(v4("10.1.0.0", "10.1.0.255"));
        let r4 = IkeTs::any(v4("10.2.0.0", "10.2.0.255"));
        let l6 = IkeTs::any(AddressRange::V6(
            "fd00:1::".parse().unwrap(),
            "fd00:1::ffff:ffff:ffff:ffff".parse().unwrap(),
        ));
        let got = selectors(&[l4, l6], &[r4]);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].local.to_string(), "10.1.0.0/24");
        assert_eq!(got[0].protocol, None);

        let tcp443 = IkeTs {
            ip_protocol: 6,
            start_port: 443,
            end_port: 443,
            range: v4("10.2.0.0", "10.2.0.255"),
        };
        let got = selectors(&[l4], &[tcp443]);
        assert_eq!(got[0].protocol, Some(IpProtocol::TCP));
        assert_eq!(got[0].remote_ports, Some(PortRange::single(443)));
        assert_eq!(got[0].local_ports, None);
        for s in &got {
            s.validate().unwrap();
        }
        let udp = IkeTs {
            ip_protocol: 17,
            ..tcp443
        };
        assert!(selectors(&[tcp443], &[udp]).is_empty(), "tcp vs udp");
    }
}
