//! A small synchronous NETLINK_ROUTE socket: dumps, acknowledged requests,
//! and multicast subscriptions.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use netlink_packet_core::{
    DecodeError, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK,
    NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::{TimeVal, TimeValLike};

use super::NextHopError;

/// rtnetlink multicast groups (`enum rtnetlink_groups`).
pub(crate) const RTNLGRP_LINK: u32 = 1;
pub(crate) const RTNLGRP_NEIGH: u32 = 3;
pub(crate) const RTNLGRP_IPV4_ROUTE: u32 = 7;
pub(crate) const RTNLGRP_IPV6_ROUTE: u32 = 11;

/// The kernel sends dump parts of at most 32 KiB; notifications are smaller.
const RECV_BUF_LEN: usize = 64 * 1024;

/// How often a dump is retried when the kernel flags it inconsistent
/// (NLM_F_DUMP_INTR: the table changed while it was being dumped).
const DUMP_ATTEMPTS: u32 = 5;

/// One parsed message of a received datagram, or the reason it could not be
/// parsed.
pub(crate) struct Received {
    pub flags: u16,
    pub sequence: u32,
    pub message: Result<NetlinkMessage<RouteNetlinkMessage>, DecodeError>,
}

/// Splits a datagram into its netlink messages. A message that does not
/// parse is yielded as an error; a truncated header ends the iteration.
pub(crate) fn messages(mut data: &[u8]) -> impl Iterator<Item = Received> + '_ {
    std::iter::from_fn(move || {
        let buf = NetlinkBuffer::new_checked(data).ok()?;
        let len = buf.length() as usize;
        let (flags, sequence) = (buf.flags(), buf.sequence_number());
        // new_checked guarantees 16 <= len <= data.len().
        let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[..len]);
        let aligned = (len + 3) & !3;
        data = data.get(aligned..).unwrap_or(&[]);
        Some(Received {
            flags,
            sequence,
            message,
        })
    })
}

/// A NETLINK_ROUTE socket bound to an automatic port.
pub(crate) struct RtSocket {
    sock: Socket,
    seq: u32,
    buf: Box<[u8]>,
    /// Receive timeout of blocking reads (dumps and acknowledgements).
    timeout: Duration,
}

impl std::fmt::Debug for RtSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtSocket")
            .field("seq", &self.seq)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl AsFd for RtSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

fn sock_err(what: &'static str) -> impl FnOnce(io::Error) -> NextHopError {
    move |source| NextHopError::Socket { what, source }
}

impl RtSocket {
    /// Opens a socket in the calling thread's network namespace. Blocking
    /// reads on it give up after `timeout`.
    pub(crate) fn open(timeout: Duration) -> Result<Self, NextHopError> {
        let mut sock = Socket::new(NETLINK_ROUTE).map_err(sock_err("socket(NETLINK_ROUTE)"))?;
        sock.bind_auto().map_err(sock_err("bind"))?;
        let ms = i64::try_from(timeout.as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        setsockopt(&sock, sockopt::ReceiveTimeout, &TimeVal::milliseconds(ms))
            .map_err(|e| sock_err("setsockopt(SO_RCVTIMEO)")(e.into()))?;
        Ok(RtSocket {
            sock,
            seq: 0,
            buf: vec![0; RECV_BUF_LEN].into_boxed_slice(),
            timeout,
        })
    }

    /// Joins rtnetlink multicast groups (RTNLGRP_*) and makes the receive
    /// buffer large, so a burst of changes is less likely to overflow it.
    pub(crate) fn subscribe(&self, groups: &[u32]) -> Result<(), NextHopError> {
        for &g in groups {
            self.sock
                .add_membership(g)
                .map_err(sock_err("setsockopt(NETLINK_ADD_MEMBERSHIP)"))?;
        }
        const BIG: usize = 4 << 20;
        // SO_RCVBUFFORCE needs CAP_NET_ADMIN; without it, SO_RCVBUF (capped
        // by net.core.rmem_max) is the best there is.
        if setsockopt(&self.sock, sockopt::RcvBufForce, &BIG).is_err() {
            let _ = self.sock.set_rx_buf_sz(BIG);
        }
        Ok(())
    }

    /// Receives one datagram into the internal buffer; its length. With
    /// `nonblocking`, `WouldBlock` when nothing is queued.
    pub(crate) fn recv(&mut self, nonblocking: bool) -> io::Result<usize> {
        let mut flags = libc::MSG_TRUNC;
        if nonblocking {
            flags |= libc::MSG_DONTWAIT;
        }
        let n = self.sock.recv(&mut &mut self.buf[..], flags)?;
        if n > self.buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "netlink datagram of {n} bytes exceeds the {} byte buffer",
                    self.buf.len()
                ),
            ));
        }
        Ok(n)
    }

    /// The datagram received last.
    pub(crate) fn received(&self, len: usize) -> &[u8] {
        &self.buf[..len]
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1).max(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut out = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut out);
        self.sock.send_to(&out, &SocketAddr::new(0, 0), 0)?;
        Ok(self.seq)
    }

    fn recv_blocking(&mut self, what: &'static str) -> Result<usize, NextHopError> {
        loop {
            match self.recv(false) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(NextHopError::Timeout {
                        what,
                        timeout: self.timeout,
                    })
                }
                Err(source) => return Err(NextHopError::Io { what, source }),
            }
        }
    }

    /// Dumps a table (`req` is a GET message); the kernel's answers. Retried
    /// when the kernel flags the dump as interrupted by a concurrent change.
    pub(crate) fn dump(
        &mut self,
        req: RouteNetlinkMessage,
        what: &'static str,
    ) -> Result<Vec<RouteNetlinkMessage>, NextHopError> {
        for _ in 0..DUMP_ATTEMPTS {
            if let Some(out) = self.dump_once(req.clone(), what)? {
                return Ok(out);
            }
        }
        Err(NextHopError::DumpInterrupted {
            what,
            attempts: DUMP_ATTEMPTS,
        })
    }

    /// `None` if the dump was interrupted.
    fn dump_once(
        &mut self,
        req: RouteNetlinkMessage,
        what: &'static str,
    ) -> Result<Option<Vec<RouteNetlinkMessage>>, NextHopError> {
        let seq = self
            .send(req, NLM_F_REQUEST | NLM_F_DUMP)
            .map_err(|source| NextHopError::Io { what, source })?;
        let mut out = Vec::new();
        let mut interrupted = false;
        loop {
            let n = self.recv_blocking(what)?;
            for rx in messages(&self.buf[..n]) {
                if rx.sequence != seq {
                    // A late answer to an earlier request that timed out.
                    continue;
                }
                if rx.flags & NLM_F_DUMP_INTR != 0 {
                    interrupted = true;
                }
                let msg = rx.message.map_err(|e| NextHopError::Decode {
                    what,
                    detail: e.to_string(),
                })?;
                match msg.payload {
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    NetlinkPayload::Done(done) => {
                        if done.code != 0 {
                            return Err(NextHopError::Kernel {
                                what,
                                source: io::Error::from_raw_os_error(done.code.saturating_abs()),
                            });
                        }
                        return Ok((!interrupted).then_some(out));
                    }
                    NetlinkPayload::Error(e) if e.code.is_some() => {
                        return Err(NextHopError::Kernel {
                            what,
                            source: e.to_io(),
                        })
                    }
                    _ => {}
                }
            }
        }
    }

    /// Sends a request with NLM_F_ACK (plus `flags`) and waits for the
    /// kernel's acknowledgement or error.
    pub(crate) fn request(
        &mut self,
        req: RouteNetlinkMessage,
        flags: u16,
        what: &'static str,
    ) -> Result<(), NextHopError> {
        let seq = self
            .send(req, NLM_F_REQUEST | NLM_F_ACK | flags)
            .map_err(|source| NextHopError::Io { what, source })?;
        loop {
            let n = self.recv_blocking(what)?;
            for rx in messages(&self.buf[..n]) {
                if rx.sequence != seq {
                    continue;
                }
                let msg = rx.message.map_err(|e| NextHopError::Decode {
                    what,
                    detail: e.to_string(),
                })?;
                if let NetlinkPayload::Error(e) = msg.payload {
                    return match e.code {
                        None => Ok(()),
                        Some(_) => Err(NextHopError::Kernel {
                            what,
                            source: e.to_io(),
                        }),
                    };
                }
            }
        }
    }
}
