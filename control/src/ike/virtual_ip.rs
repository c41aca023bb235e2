//! Virtual IPs in IKE_AUTH (RFC 7296 section 2.19): the remote-access
//! client (a connection with `vips`) sends a CFG_REQUEST and narrows its
//! own `dynamic` selectors to the addresses it gets; the gateway (a
//! connection with `pools`) answers from its pools and narrows the
//! client's `dynamic` selectors to them. The pool and payload logic is in
//! [`crate::pool`] and [`crate::vip`]; this file is the glue to the IKE SA.

use std::net::IpAddr;

use tracing::{info, warn};

use super::connection::{ChildConfig, Connection};
use super::sa::IkeSa;
use super::{Endpoint, Event, Reason};
use crate::config::TsAddrs;
use crate::pool::{Pools, DEFAULT_MAX_LEASES};
use crate::vip::{self, Assigned, CfgError};
use crate::wire::consts::{notify, payload as pt};
use crate::wire::cp::cfg_type;
use crate::wire::{AddressRange, Configuration, Identification, Notify, Payload, TrafficSelector};

/// An IKE SA's virtual IPs.
#[derive(Debug, Clone, Default)]
pub(crate) struct SaVips {
    /// Client: the addresses the gateway assigned us.
    pub assigned: Vec<IpAddr>,
    /// Gateway: the addresses leased to the peer, and the identity they
    /// are leased to.
    pub leased: Vec<IpAddr>,
    pub lease_key: Vec<u8>,
}

impl IkeSa {
    /// Our selectors of child `cfg`: `dynamic` is our virtual IPs once
    /// assigned, any address of each family asked for before, and our IKE
    /// address without virtual IPs.
    pub(crate) fn our_ts(&self, cfg: &ChildConfig) -> Vec<TrafficSelector> {
        let asking: Vec<IpAddr> = if self.vips.assigned.is_empty() {
            self.conn.vips.clone()
        } else {
            Vec::new()
        };
        expand(&cfg.local_ts, self.local.ip(), &self.vips.assigned, &asking)
    }

    /// The peer's selectors of child `cfg`: `dynamic` is the virtual IPs
    /// leased to it, else its IKE address.
    pub(crate) fn peer_ts(&self, cfg: &ChildConfig) -> Vec<TrafficSelector> {
        expand(&cfg.remote_ts, self.remote.ip(), &self.vips.leased, &[])
    }
}

fn expand(
    specs: &[crate::config::TsSpec],
    ike_addr: IpAddr,
    vips: &[IpAddr],
    asking: &[IpAddr],
) -> Vec<TrafficSelector> {
    let mut out = Vec::new();
    for t in specs {
        if t.addrs != TsAddrs::Dynamic || (vips.is_empty() && asking.is_empty()) {
            out.push(t.to_wire(ike_addr));
            continue;
        }
        for a in vips {
            out.push(t.to_wire(*a));
        }
        let (mut v4, mut v6) = (false, false);
        for a in asking {
            let any = if a.is_ipv6() {
                if std::mem::replace(&mut v6, true) {
                    continue;
                }
                AddressRange::V6(0.into(), u128::MAX.into())
            } else {
                if std::mem::replace(&mut v4, true) {
                    continue;
                }
                AddressRange::V4(0.into(), u32::MAX.into())
            };
            let mut s = t.to_wire(*a);
            s.range = any;
            out.push(s);
        }
    }
    out
}

/// Client: the CP payload of our IKE_AUTH request, if the connection
/// wants virtual IPs.
pub(crate) fn cfg_request(conn: &Connection) -> Option<Payload> {
    let request = vip::request(&conn.vips)?;
    let mut body = Vec::new();
    request.emit(&mut body).ok()?;
    Some(Payload::Other { kind: pt::CP, body })
}

fn configuration(payloads: &[Payload]) -> Option<Result<Configuration, crate::wire::Error>> {
    payloads.iter().find_map(|p| match p {
        Payload::Other { kind, body } if *kind == pt::CP => Some(Configuration::parse(body)),
        _ => None,
    })
}

/// Client: takes the virtual IPs and DNS servers from the IKE_AUTH
/// response and reports them; fails if we asked and got no address.
pub(crate) fn take_reply(
    sa: &mut IkeSa,
    payloads: &[Payload],
    ep: &mut Endpoint,
) -> Result<(), Reason> {
    if sa.conn.vips.is_empty() {
        return Ok(());
    }
    let assigned = match configuration(payloads) {
        Some(Ok(reply)) => Assigned::from_reply(&reply),
        Some(Err(e)) => return Err(Reason::Protocol(format!("CP payload: {e}"))),
        None => Assigned::default(),
    };
    if assigned.addresses.is_empty() {
        return Err(Reason::PeerError(notify::FAILED_CP_REQUIRED));
    }
    info!(ike = %sa.id, connection = %sa.conn.name, vips = ?assigned.addresses, dns = ?assigned.dns, "virtual IPs assigned");
    sa.vips.assigned = assigned.addresses.clone();
    ep.events.push_back(Event::VirtualIp {
        ike: sa.id,
        connection: sa.conn.name.clone(),
        addresses: assigned.addresses,
        dns: assigned.dns,
    });
    Ok(())
}

/// Gateway: answers the client's CFG_REQUEST from the connection's pools.
/// `Ok(None)` when there is nothing to answer (no request, or no pools);
/// `Err` with the INTERNAL_ADDRESS_FAILURE notify to send when no address
/// could be leased.
pub(crate) fn answer_request(
    sa: &mut IkeSa,
    peer: &Identification,
    payloads: &[Payload],
    ep: &mut Endpoint,
) -> Result<Option<Payload>, Payload> {
    let failure = || Payload::Notify(Notify::new(notify::INTERNAL_ADDRESS_FAILURE, Vec::new()));
    if sa.conn.pools.is_empty() {
        return Ok(None);
    }
    let request = match configuration(payloads) {
        Some(Ok(r)) if r.cfg_type == cfg_type::REQUEST => r,
        Some(Err(e)) => {
            warn!(ike = %sa.id, error = %e, "malformed CFG_REQUEST");
            return Err(failure());
        }
        _ => return Ok(None),
    };
    let mut key = Vec::new();
    peer.emit(&mut key);
    let pools = ep
        .pools
        .get_or_insert_with(|| Pools::from_config(&sa.conn.secrets, DEFAULT_MAX_LEASES));
    match vip::answer(pools, &sa.conn.pools, &key, &request) {
        Ok(leased) => {
            info!(ike = %sa.id, connection = %sa.conn.name, vips = ?leased.addresses, "virtual IPs leased");
            let mut body = Vec::new();
            if let Err(e) = leased.reply.emit(&mut body) {
                warn!(ike = %sa.id, error = %e, "cannot encode the CFG_REPLY");
                for a in &leased.addresses {
                    pools.release(&sa.conn.pools, &key, *a);
                }
                return Err(failure());
            }
            sa.vips.leased = leased.addresses;
            sa.vips.lease_key = key;
            Ok(Some(Payload::Other { kind: pt::CP, body }))
        }
        Err(CfgError::InternalAddressFailure(why)) => {
            warn!(ike = %sa.id, connection = %sa.conn.name, reason = %why, "no virtual IP for the client");
            Err(failure())
        }
    }
}

/// Gateway: the IKE SA is gone; its leases go offline in the pools.
pub(crate) fn release(sa: &mut IkeSa, ep: &mut Endpoint) {
    let leased = std::mem::take(&mut sa.vips.leased);
    if let Some(pools) = ep.pools.as_mut() {
        for a in leased {
            pools.release(&sa.conn.pools, &sa.vips.lease_key, a);
        }
    }
}
