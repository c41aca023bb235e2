//! The addresses configured on the kernel's interfaces, read once with an
//! RTM_GETADDR dump: the sources of the ICMP errors the workers send.

use super::netlink::RtSocket;
use super::NextHopError;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::RouteNetlinkMessage;
use std::net::IpAddr;
use std::time::Duration;

/// (interface index, address) of every address the kernel has.
pub fn interface_addresses() -> Result<Vec<(u32, IpAddr)>, NextHopError> {
    let mut sock = RtSocket::open(Duration::from_secs(2))?;
    let messages = sock.dump(
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        "address dump (RTM_GETADDR)",
    )?;
    let mut out = Vec::new();
    for message in messages {
        let RouteNetlinkMessage::NewAddress(addr) = message else {
            continue;
        };
        // IFA_LOCAL is the interface's own address on point-to-point links,
        // where IFA_ADDRESS is the peer's; elsewhere they are equal.
        let local = addr.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(ip) => Some(*ip),
            _ => None,
        });
        let address = addr.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        });
        if let Some(ip) = local.or(address) {
            out.push((addr.header.index, ip));
        }
    }
    Ok(out)
}
