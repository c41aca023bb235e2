//! ICMP echo over a raw socket, so the test bed does not depend on a `ping`
//! binary. Runs on a thread that has entered the namespace.

use crate::{Error, Result};
use nix::sys::socket::{
    recvfrom, sendto, setsockopt, socket, sockopt, AddressFamily, MsgFlags, SockFlag, SockProtocol,
    SockType, SockaddrIn, SockaddrIn6, SockaddrStorage,
};
use nix::sys::time::TimeVal;
use std::net::{IpAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// The outcome of [`crate::Netns::ping`].
#[derive(Debug, Clone, PartialEq)]
pub struct PingReport {
    /// Echo requests sent.
    pub sent: u16,
    /// Matching echo replies received.
    pub received: u16,
    /// Round-trip time of each reply received.
    pub rtts: Vec<Duration>,
}

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;
const PAYLOAD: &[u8; 16] = b"xdpsec-testbed!!";

/// Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn sys(op: &str) -> impl FnOnce(nix::Error) -> Error + '_ {
    move |e| Error::Sys {
        op: op.to_string(),
        source: e.into(),
    }
}

pub(crate) fn ping(dst: IpAddr, count: u16, timeout: Duration) -> Result<PingReport> {
    let (family, proto) = match dst {
        IpAddr::V4(_) => (AddressFamily::Inet, SockProtocol::Icmp),
        IpAddr::V6(_) => (AddressFamily::Inet6, SockProtocol::IcmpV6),
    };
    let fd = socket(family, SockType::Raw, SockFlag::SOCK_CLOEXEC, proto)
        .map_err(sys("open a raw ICMP socket"))?;
    let ident = (std::process::id() as u16) ^ 0x5853;
    let mut report = PingReport {
        sent: 0,
        received: 0,
        rtts: Vec::new(),
    };
    for seq in 1..=count {
        // Header: type, code, checksum, identifier, sequence; then payload.
        let mut msg = [0u8; 8 + PAYLOAD.len()];
        msg[0] = if dst.is_ipv4() {
            ECHO_REQUEST_V4
        } else {
            ECHO_REQUEST_V6
        };
        msg[4..6].copy_from_slice(&ident.to_be_bytes());
        msg[6..8].copy_from_slice(&seq.to_be_bytes());
        msg[8..].copy_from_slice(PAYLOAD);
        if dst.is_ipv4() {
            // The kernel fills in the ICMPv6 checksum itself, not ICMPv4's.
            let c = checksum(&msg);
            msg[2..4].copy_from_slice(&c.to_be_bytes());
        }
        let start = Instant::now();
        match dst {
            IpAddr::V4(a) => sendto(
                fd.as_raw_fd(),
                &msg,
                &SockaddrIn::from(SocketAddrV4::new(a, 0)),
                MsgFlags::empty(),
            ),
            IpAddr::V6(a) => sendto(
                fd.as_raw_fd(),
                &msg,
                &SockaddrIn6::from(SocketAddrV6::new(a, 0, 0, 0)),
                MsgFlags::empty(),
            ),
        }
        .map_err(sys("send an ICMP echo request"))?;
        report.sent += 1;

        let deadline = start + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let tv = TimeVal::new(left.as_secs() as _, (left.subsec_micros().max(1)) as _);
            setsockopt(&fd, sockopt::ReceiveTimeout, &tv).map_err(sys("set SO_RCVTIMEO"))?;
            let mut buf = [0u8; 2048];
            let (n, from) = match recvfrom::<SockaddrStorage>(fd.as_raw_fd(), &mut buf) {
                Ok(r) => r,
                Err(nix::Error::EAGAIN) | Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(sys("receive ICMP")(e)),
            };
            let from_ip: Option<IpAddr> = from.and_then(|s| {
                s.as_sockaddr_in()
                    .map(|a| IpAddr::V4(a.ip()))
                    .or_else(|| s.as_sockaddr_in6().map(|a| IpAddr::V6(a.ip())))
            });
            if from_ip != Some(dst) {
                continue;
            }
            // Raw IPv4 sockets hand over the IP header; raw IPv6 ones do not.
            let icmp = if dst.is_ipv4() {
                let ihl = usize::from(buf[0] & 0x0f) * 4;
                if n < ihl {
                    continue;
                }
                &buf[ihl..n]
            } else {
                &buf[..n]
            };
            let want_type = if dst.is_ipv4() {
                ECHO_REPLY_V4
            } else {
                ECHO_REPLY_V6
            };
            if icmp.len() >= 8 + PAYLOAD.len()
                && icmp[0] == want_type
                && icmp[4..6] == ident.to_be_bytes()
                && icmp[6..8] == seq.to_be_bytes()
                && &icmp[8..8 + PAYLOAD.len()] == PAYLOAD
            {
                report.received += 1;
                report.rtts.push(start.elapsed());
                break;
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::checksum;

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 section 3: the sum of these words is ddf2, so the checksum is 220d.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&data), 0x220d);
        // A message that carries its own checksum sums to zero.
        let mut msg = [8u8, 0, 0, 0, 0x12, 0x34, 0, 1, b'x', b'y', b'z'];
        let c = checksum(&msg);
        msg[2..4].copy_from_slice(&c.to_be_bytes());
        assert_eq!(checksum(&msg), 0);
    }
}
