//! The service manager's readiness protocol (`sd_notify`), spoken
//! without libsystemd: one datagram per state change to the Unix socket
//! that `$NOTIFY_SOCKET` names (an abstract one when it starts with `@`).
//! Both daemons use it: `READY=1` once they serve, `STOPPING=1` when a
//! signal stops them, `WATCHDOG=1` at half the interval systemd asks for
//! (`WatchdogSec=`, passed as `$WATCHDOG_USEC`) while they are healthy.
//! Without `$NOTIFY_SOCKET` (not started by systemd) every call is a no-op.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

/// How long a notification may wait for room in the receiver's queue.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Where to send notifications; cheap to clone.
#[derive(Debug, Clone)]
pub struct Notifier {
    addr: Option<SocketAddr>,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET` asks for, or a silent one without it.
    /// A value that is no usable address is an error: a unit with
    /// `Type=notify` would otherwise wait for a readiness that never comes.
    pub fn from_env() -> io::Result<Notifier> {
        match std::env::var_os("NOTIFY_SOCKET") {
            None => Ok(Notifier { addr: None }),
            Some(value) => {
                let value = value.into_string().map_err(|v| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("NOTIFY_SOCKET is not UTF-8: {v:?}"),
                    )
                })?;
                Notifier::to(&value)
            }
        }
    }

    /// A notifier for the socket `name`, in `$NOTIFY_SOCKET`'s syntax: a
    /// path, or `@name` for an abstract socket.
    pub fn to(name: &str) -> io::Result<Notifier> {
        let addr = if let Some(abstract_name) = name.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(abstract_name.as_bytes())?
        } else if name.starts_with('/') {
            SocketAddr::from_pathname(name)?
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("NOTIFY_SOCKET {name:?} is neither an absolute path nor @abstract"),
            ));
        };
        Ok(Notifier { addr: Some(addr) })
    }

    /// Whether a service manager listens.
    pub fn enabled(&self) -> bool {
        self.addr.is_some()
    }

    /// Sends `state` (newline-separated `KEY=VALUE` lines).
    pub fn notify(&self, state: &str) -> io::Result<()> {
        let Some(addr) = &self.addr else {
            return Ok(());
        };
        // A socket per message: they are rare, and nothing then lingers
        // that a child process (`nft`) could inherit.
        let socket = UnixDatagram::unbound()?;
        // A receiver that does not read (its queue holds a few datagrams)
        // must not stall the loop that sends the watchdog: give up after a
        // while and say so.
        socket.set_write_timeout(Some(SEND_TIMEOUT))?;
        socket.send_to_addr(state.as_bytes(), addr)?;
        Ok(())
    }

    /// `READY=1`, with a `STATUS=` line for `systemctl status`.
    pub fn ready(&self, status: &str) -> io::Result<()> {
        self.notify(&format!("READY=1\nSTATUS={status}"))
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) -> io::Result<()> {
        self.notify("STOPPING=1")
    }

    /// The watchdog that `$WATCHDOG_USEC` (and `$WATCHDOG_PID`, if set,
    /// naming this process) asks for, if any.
    pub fn watchdog(&self) -> Option<Watchdog> {
        if !self.enabled() {
            return None;
        }
        let usec = std::env::var("WATCHDOG_USEC").ok()?.parse::<u64>().ok()?;
        if let Ok(pid) = std::env::var("WATCHDOG_PID") {
            if pid.parse::<u32>().ok() != Some(std::process::id()) {
                return None;
            }
        }
        Watchdog::new(self.clone(), Duration::from_micros(usec), Instant::now())
    }
}

/// Sends `WATCHDOG=1` every half of systemd's watchdog interval, when the
/// owner's loop says it is healthy and the time has come.
#[derive(Debug)]
pub struct Watchdog {
    notifier: Notifier,
    every: Duration,
    next: Instant,
}

impl Watchdog {
    /// A watchdog whose timeout is `timeout`; `None` for a zero timeout
    /// (systemd's "off").
    pub fn new(notifier: Notifier, timeout: Duration, now: Instant) -> Option<Watchdog> {
        if timeout.is_zero() {
            return None;
        }
        Some(Watchdog {
            notifier,
            every: timeout / 2,
            next: now,
        })
    }

    /// When the next `WATCHDOG=1` is due (for a poll timeout).
    pub fn deadline(&self) -> Instant {
        self.next
    }

    /// Sends `WATCHDOG=1` if it is due at `now`; call it only from a loop
    /// that has just found everything working.
    pub fn pet(&mut self, now: Instant) -> io::Result<()> {
        if now < self.next {
            return Ok(());
        }
        self.next = now + self.every;
        self.notifier.notify("WATCHDOG=1")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn sends_to_a_path() {
        let dir = std::env::temp_dir().join(format!("xdpsec-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        std::fs::remove_file(&path).ok();
        let socket = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::to(path.to_str().unwrap()).unwrap();
        assert!(notifier.enabled());
        notifier.ready("serving").unwrap();
        assert_eq!(recv(&socket), "READY=1\nSTATUS=serving");
        notifier.stopping().unwrap();
        assert_eq!(recv(&socket), "STOPPING=1");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("xdpsec-notify-test-{}", std::process::id());
        let socket =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let notifier = Notifier::to(&format!("@{name}")).unwrap();
        notifier.notify("READY=1").unwrap();
        assert_eq!(recv(&socket), "READY=1");
    }

    #[test]
    fn a_receiver_that_does_not_read_stalls_nobody_for_long() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("xdpsec-notify-full-{}", std::process::id());
        let _socket =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let notifier = Notifier::to(&format!("@{name}")).unwrap();
        let start = Instant::now();
        let mut failed = 0;
        for _ in 0..2000 {
            if notifier.notify("WATCHDOG=1").is_err() {
                failed += 1;
                break;
            }
        }
        assert_eq!(failed, 1, "the queue never filled");
        assert!(start.elapsed() < SEND_TIMEOUT * 3, "{:?}", start.elapsed());
    }

    #[test]
    fn refuses_a_relative_name_and_is_silent_without_one() {
        assert!(Notifier::to("notify").is_err());
        let silent = Notifier { addr: None };
        assert!(!silent.enabled());
        silent.ready("x").unwrap();
        assert!(silent.watchdog().is_none());
    }

    #[test]
    fn the_watchdog_pets_at_half_the_timeout() {
        let name = format!("xdpsec-notify-wd-{}", std::process::id());
        use std::os::linux::net::SocketAddrExt;
        let socket =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        socket.set_nonblocking(true).unwrap();
        let notifier = Notifier::to(&format!("@{name}")).unwrap();
        let t0 = Instant::now();
        assert!(Watchdog::new(notifier.clone(), Duration::ZERO, t0).is_none());
        let mut wd = Watchdog::new(notifier, Duration::from_secs(10), t0).unwrap();
        wd.pet(t0).unwrap();
        assert_eq!(wd.deadline(), t0 + Duration::from_secs(5));
        wd.pet(t0 + Duration::from_secs(4)).unwrap();
        wd.pet(t0 + Duration::from_secs(5)).unwrap();
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        while let Ok(n) = socket.recv(&mut buf) {
            got.push(String::from_utf8(buf[..n].to_vec()).unwrap());
        }
        assert_eq!(got, ["WATCHDOG=1", "WATCHDOG=1"]);
    }
}
