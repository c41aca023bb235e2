//! The IKE daemon's UDP sockets: ports 500 and 4500 (RFC 7296 section 2.23,
//! RFC 3948), IPv4 and IPv6, each bound to the wildcard address with the
//! local address of every datagram learned from `IP_PKTINFO` /
//! `IPV6_PKTINFO` and set the same way on send, so a reply always leaves
//! from the address the request reached.
//!
//! On the NAT-T port every IKE message carries the 4-byte non-ESP marker
//! (four zero bytes): it is stripped on receive and added on send. What
//! arrives there without it is ESP in UDP that the data plane did not take
//! (it is dropped and counted), or a NAT keepalive (a single 0xFF byte,
//! counted and ignored).

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::sys::socket::{
    self, sockopt, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag,
    SockProtocol, SockType, SockaddrStorage,
};
use serde::{Deserialize, Serialize};

/// The IKE port (RFC 7296 section 2).
pub const IKE_PORT: u16 = 500;
/// The NAT-T port, where IKE carries the non-ESP marker (RFC 3948).
pub const NAT_T_PORT: u16 = 4500;
/// The non-ESP marker that precedes IKE messages on the NAT-T port.
pub const NON_ESP_MARKER: [u8; 4] = [0; 4];
/// A NAT keepalive (RFC 3948 section 2.3).
pub const NAT_KEEPALIVE: [u8; 1] = [0xff];
/// Largest datagram read: IKE messages over this are fragmented (RFC 7383)
/// or cannot be sent over UDP anyway.
pub const MAX_DATAGRAM: usize = 65_535;

/// Counters of what the sockets received and dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UdpStats {
    /// IKE messages handed on (marker stripped on the NAT-T port).
    pub received: u64,
    /// IKE messages sent.
    pub sent: u64,
    /// NAT keepalives received (and ignored).
    pub keepalives: u64,
    /// Datagrams on the NAT-T port without the non-ESP marker (ESP in UDP
    /// that the data plane did not take): dropped.
    pub missing_marker: u64,
    /// Datagrams too short to be IKE (fewer than 4 bytes on the NAT-T port,
    /// or empty): dropped.
    pub runts: u64,
    /// Datagrams without a usable local address (no pktinfo): dropped.
    pub no_local_address: u64,
    /// Sends that failed.
    pub send_errors: u64,
}

/// What one socket read produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// An IKE message: `payload` is its range in the caller's buffer.
    Ike {
        /// Our address and port the datagram reached.
        local: SocketAddr,
        /// The sender.
        remote: SocketAddr,
        /// The IKE message (without the non-ESP marker).
        payload: std::ops::Range<usize>,
    },
    /// Counted and dropped (keepalive, ESP, runt).
    Dropped,
    /// Nothing to read.
    WouldBlock,
}

/// How a datagram on the NAT-T port is classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatTKind {
    /// Non-ESP marker then an IKE message.
    Ike,
    /// A NAT keepalive.
    Keepalive,
    /// A non-zero first word: ESP in UDP.
    Esp,
    /// Too short to tell.
    Runt,
}

/// Classifies a datagram received on the NAT-T port (RFC 3948 section 2).
pub fn classify_nat_t(datagram: &[u8]) -> NatTKind {
    match datagram {
        [0xff] => NatTKind::Keepalive,
        d if d.len() < NON_ESP_MARKER.len() => NatTKind::Runt,
        d if d[..4] == NON_ESP_MARKER => NatTKind::Ike,
        _ => NatTKind::Esp,
    }
}

/// One bound socket.
#[derive(Debug)]
struct Bound {
    socket: UdpSocket,
    addr: IpAddr,
    port: u16,
    ipv6: bool,
}

/// The set of IKE sockets: 500 and 4500, IPv4 and (if the host has it) IPv6.
#[derive(Debug)]
pub struct IkeSockets {
    sockets: Vec<Bound>,
    stats: UdpStats,
    ike_port: u16,
    nat_t_port: u16,
}

impl IkeSockets {
    /// Binds both ports on each address of `listen`, or on the wildcard
    /// addresses (IPv4 and IPv6) when it is empty. Without IPv6 on the host
    /// the IPv6 wildcard is skipped with a warning; a port in use or a
    /// missing CAP_NET_BIND_SERVICE is an error that says so.
    pub fn bind(listen: &[IpAddr], ike_port: u16, nat_t_port: u16) -> io::Result<Self> {
        let mut sockets = Vec::new();
        for port in [ike_port, nat_t_port] {
            if listen.is_empty() {
                sockets.push(bind_one(Ipv4Addr::UNSPECIFIED.into(), port)?);
                match bind_one(Ipv6Addr::UNSPECIFIED.into(), port) {
                    Ok(s) => sockets.push(s),
                    Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
                        tracing::warn!(port, "no IPv6 on this host; IKE over IPv4 only");
                    }
                    Err(e) => return Err(e),
                }
            } else {
                for &addr in listen {
                    sockets.push(bind_one(addr, port)?);
                }
            }
        }
        Ok(IkeSockets {
            sockets,
            stats: UdpStats::default(),
            ike_port,
            nat_t_port,
        })
    }

    /// The port IKE starts on (500 unless configured otherwise).
    pub fn ike_port(&self) -> u16 {
        self.ike_port
    }

    /// The NAT-T port (4500 unless configured otherwise).
    pub fn nat_t_port(&self) -> u16 {
        self.nat_t_port
    }

    /// The descriptors to poll, in the order [`IkeSockets::recv`] takes
    /// their index.
    pub fn fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.sockets.iter().map(|b| b.socket.as_fd())
    }

    /// Number of sockets.
    pub fn len(&self) -> usize {
        self.sockets.len()
    }

    /// Whether there is no socket (never, after a successful bind).
    pub fn is_empty(&self) -> bool {
        self.sockets.is_empty()
    }

    /// What was received and dropped so far.
    pub fn stats(&self) -> &UdpStats {
        &self.stats
    }

    /// Reads one datagram from socket `index` into `buf` without blocking.
    pub fn recv(&mut self, index: usize, buf: &mut [u8]) -> io::Result<Received> {
        let Some(bound) = self.sockets.get(index) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no such socket",
            ));
        };
        let fd = bound.socket.as_raw_fd();
        let (n, remote, local_ip) = {
            let mut cmsg = nix::cmsg_space!(libc::in6_pktinfo);
            let mut iov = [IoSliceMut::new(buf)];
            let msg = match socket::recvmsg::<SockaddrStorage>(
                fd,
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(msg) => msg,
                Err(nix::errno::Errno::EAGAIN) => return Ok(Received::WouldBlock),
                Err(e) => return Err(e.into()),
            };
            let remote = msg.address.as_ref().and_then(storage_to_std);
            let mut local_ip = None;
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    match c {
                        ControlMessageOwned::Ipv4PacketInfo(info) => {
                            local_ip = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                                info.ipi_addr.s_addr,
                            ))));
                        }
                        ControlMessageOwned::Ipv6PacketInfo(info) => {
                            local_ip = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                        }
                        _ => {}
                    }
                }
            }
            (msg.bytes, remote, local_ip)
        };
        let (Some(remote), Some(local_ip)) = (remote, local_ip) else {
            self.stats.no_local_address += 1;
            return Ok(Received::Dropped);
        };
        let local = SocketAddr::new(local_ip, bound.port);
        let datagram = &buf[..n];
        let payload = if bound.port == self.nat_t_port {
            match classify_nat_t(datagram) {
                NatTKind::Ike => NON_ESP_MARKER.len()..n,
                NatTKind::Keepalive => {
                    self.stats.keepalives += 1;
                    return Ok(Received::Dropped);
                }
                NatTKind::Esp => {
                    self.stats.missing_marker += 1;
                    tracing::debug!(%remote, %local, "ESP in UDP reached the IKE socket; dropped");
                    return Ok(Received::Dropped);
                }
                NatTKind::Runt => {
                    self.stats.runts += 1;
                    return Ok(Received::Dropped);
                }
            }
        } else if datagram.is_empty() {
            self.stats.runts += 1;
            return Ok(Received::Dropped);
        } else {
            0..n
        };
        self.stats.received += 1;
        Ok(Received::Ike {
            local,
            remote,
            payload,
        })
    }

    /// Sends an IKE message from `local` (its address picks the source, its
    /// port the socket) to `remote`, after the non-ESP marker if `marker`
    /// (IKE on the NAT-T port; not NAT keepalives).
    pub fn send(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
        marker: bool,
        message: &[u8],
    ) -> io::Result<()> {
        let result = self.send_inner(local, remote, marker, message);
        match &result {
            Ok(()) => self.stats.sent += 1,
            Err(_) => self.stats.send_errors += 1,
        }
        result
    }

    fn send_inner(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
        marker: bool,
        message: &[u8],
    ) -> io::Result<()> {
        // IPv4-mapped peers go out through the IPv4 socket.
        let remote = canonical(remote);
        let ipv6 = remote.is_ipv6();
        let bound = self
            .sockets
            .iter()
            .find(|b| {
                b.port == local.port()
                    && b.ipv6 == ipv6
                    && (b.addr.is_unspecified() || b.addr == canonical_ip(local.ip()))
            })
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::AddrNotAvailable,
                    format!("no IKE socket on port {} for {remote}", local.port()),
                )
            })?;
        let marker: &[u8] = if marker { &NON_ESP_MARKER } else { &[] };
        let iov = [IoSlice::new(marker), IoSlice::new(message)];
        let dst = SockaddrStorage::from(remote);
        let fd = bound.socket.as_raw_fd();
        let sent = match canonical_ip(local.ip()) {
            IpAddr::V4(src) if !ipv6 && !src.is_unspecified() => {
                let info = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(src).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                socket::sendmsg(
                    fd,
                    &iov,
                    &[ControlMessage::Ipv4PacketInfo(&info)],
                    MsgFlags::MSG_DONTWAIT,
                    Some(&dst),
                )
            }
            IpAddr::V6(src) if ipv6 && !src.is_unspecified() => {
                let info = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: src.octets(),
                    },
                    ipi6_ifindex: 0,
                };
                socket::sendmsg(
                    fd,
                    &iov,
                    &[ControlMessage::Ipv6PacketInfo(&info)],
                    MsgFlags::MSG_DONTWAIT,
                    Some(&dst),
                )
            }
            _ => socket::sendmsg(fd, &iov, &[], MsgFlags::MSG_DONTWAIT, Some(&dst)),
        };
        let sent = sent?;
        if sent != marker.len() + message.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("sent {sent} of {} bytes", marker.len() + message.len()),
            ));
        }
        Ok(())
    }
}

fn bind_one(ip: IpAddr, port: u16) -> io::Result<Bound> {
    let ipv6 = ip.is_ipv6();
    let family = if ipv6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let fd = socket::socket(
        family,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        SockProtocol::Udp,
    )?;
    if ipv6 {
        socket::setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
        socket::setsockopt(&fd, sockopt::Ipv6RecvPacketInfo, &true)?;
    } else {
        socket::setsockopt(&fd, sockopt::Ipv4PacketInfo, &true)?;
    }
    let addr = SocketAddr::new(ip, port);
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr)).map_err(|e| {
        let hint = match e {
            nix::errno::Errno::EACCES => " (binding a port below 1024 needs CAP_NET_BIND_SERVICE)",
            nix::errno::Errno::EADDRINUSE => " (is another IKE daemon running?)",
            _ => "",
        };
        io::Error::new(
            io::Error::from(e).kind(),
            format!("bind UDP {addr}: {e}{hint}"),
        )
    })?;
    Ok(Bound {
        socket: UdpSocket::from(fd),
        addr: ip,
        port,
        ipv6,
    })
}

fn storage_to_std(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::new(v4.ip(), v4.port())));
    }
    addr.as_sockaddr_in6().map(|v6| {
        canonical(SocketAddr::V6(SocketAddrV6::new(
            v6.ip(),
            v6.port(),
            v6.flowinfo(),
            v6.scope_id(),
        )))
    })
}

fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical_ip(addr.ip()), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nat_t_classification() {
        assert_eq!(classify_nat_t(&[0xff]), NatTKind::Keepalive);
        assert_eq!(classify_nat_t(&[]), NatTKind::Runt);
        assert_eq!(classify_nat_t(&[0, 0, 0]), NatTKind::Runt);
        assert_eq!(classify_nat_t(&[0, 0, 0, 0]), NatTKind::Ike);
        assert_eq!(classify_nat_t(&[0, 0, 0, 0, 1, 2]), NatTKind::Ike);
        assert_eq!(classify_nat_t(&[0, 0, 1, 0, 0, 0, 0, 1]), NatTKind::Esp);
        assert_eq!(classify_nat_t(&[0xff, 0xff]), NatTKind::Runt);
    }
}
