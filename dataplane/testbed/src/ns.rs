//! One network namespace of a test bed, the processes started in it, and a
//! guard that moves the current thread into it.

use crate::{command_line, run_cmd, Error, Result, Shared};
use serde_json::Value;
use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::marker::PhantomData;
use std::net::IpAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A handle on one namespace of a [`crate::Testbed`]. Cheap to clone; the
/// namespace itself lives until the test bed is dropped.
#[derive(Debug, Clone)]
pub struct Netns {
    name: String,
    shared: Arc<Shared>,
}

/// An interface as `ip link` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface name.
    pub name: String,
    /// Interface index within its namespace.
    pub ifindex: u32,
    /// MAC address.
    pub mac: [u8; 6],
    /// MTU in bytes.
    pub mtu: u32,
}

/// Interface counters (`ip -s link`, i.e. /sys/class/net/X/statistics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Packets received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Received packets dropped.
    pub rx_dropped: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets dropped on send.
    pub tx_dropped: u64,
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl Netns {
    pub(crate) fn new(name: String, shared: Arc<Shared>) -> Self {
        Netns { name, shared }
    }

    /// The namespace's name, as `ip netns list` shows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME ARGS...`; its stdout.
    pub fn ip<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut argv: Vec<std::ffi::OsString> = vec!["-n".into(), self.name.clone().into()];
        argv.extend(args.into_iter().map(|a| a.as_ref().to_os_string()));
        run_cmd("ip", argv)
    }

    /// Runs `argv` inside the namespace (`ip netns exec`) to completion: its
    /// stdout, or an error that carries its stderr.
    pub fn run<I, S>(&self, argv: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_cmd("ip", self.exec_argv(argv))
    }

    fn exec_argv<I, S>(&self, argv: I) -> Vec<std::ffi::OsString>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut v: Vec<std::ffi::OsString> =
            vec!["netns".into(), "exec".into(), self.name.clone().into()];
        v.extend(argv.into_iter().map(|a| a.as_ref().to_os_string()));
        v
    }

    /// Starts `argv` inside the namespace (`ip netns exec`, which execs the
    /// program, so the child's PID is the program's). The returned guard
    /// kills it by PID when dropped; the test bed kills whatever is left
    /// when it is dropped.
    pub fn spawn<I, S>(&self, argv: I) -> Result<NsChild>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let argv = self.exec_argv(argv);
        let cmd = command_line("ip", argv.iter());
        let mut child = Command::new("ip")
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| Error::Spawn {
                cmd: cmd.clone(),
                source,
            })?;
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(drain(out, stdout.clone()));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(drain(err, stderr.clone()));
        }
        let pid = child.id();
        let id = self.shared.register_child(child);
        Ok(NsChild {
            id,
            pid,
            cmd,
            shared: self.shared.clone(),
            stdout,
            stderr,
            readers,
        })
    }

    /// Like [`Netns::spawn`], but the process writes its stdout and stderr
    /// to the file at `log` (created, or appended to) instead of to memory,
    /// so the log outlives the process and can be read while it runs.
    pub fn spawn_logged<I, S>(&self, argv: I, log: &std::path::Path) -> Result<NsChild>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let argv = self.exec_argv(argv);
        let cmd = command_line("ip", argv.iter());
        let sys = |source| Error::Sys {
            op: format!("open log file {}", log.display()),
            source,
        };
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(sys)?;
        let err = out.try_clone().map_err(sys)?;
        let child = Command::new("ip")
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|source| Error::Spawn {
                cmd: cmd.clone(),
                source,
            })?;
        let pid = child.id();
        let id = self.shared.register_child(child);
        Ok(NsChild {
            id,
            pid,
            cmd,
            shared: self.shared.clone(),
            stdout: Arc::new(Mutex::new(Vec::new())),
            stderr: Arc::new(Mutex::new(Vec::new())),
            readers: Vec::new(),
        })
    }

    /// Sets sysctls inside the namespace (`sysctl -q -w key=value ...`).
    pub fn sysctl(&self, settings: &[(&str, &str)]) -> Result<()> {
        let mut argv = vec!["sysctl".to_string(), "-q".into(), "-w".into()];
        argv.extend(settings.iter().map(|(k, v)| format!("{k}={v}")));
        self.run(argv).map(drop)
    }

    /// Adds an address (`ip addr add CIDR dev IF`; IPv6 addresses with
    /// `nodad`, usable at once).
    pub fn add_addr(&self, ifname: &str, addr: IpAddr, prefix_len: u8) -> Result<()> {
        let cidr = format!("{addr}/{prefix_len}");
        if addr.is_ipv6() {
            self.ip(["addr", "add", cidr.as_str(), "dev", ifname, "nodad"])?;
        } else {
            self.ip(["addr", "add", cidr.as_str(), "dev", ifname])?;
        }
        Ok(())
    }

    /// Adds a route (`ip route add DST via GW`); `dst` is a CIDR or `default`.
    pub fn add_route(&self, dst: &str, via: IpAddr) -> Result<()> {
        let via = via.to_string();
        if via.contains(':') {
            self.ip(["-6", "route", "add", dst, "via", via.as_str()])?;
        } else {
            self.ip(["-4", "route", "add", dst, "via", via.as_str()])?;
        }
        Ok(())
    }

    /// Index, MAC and MTU of an interface (`ip -j link show dev IF`).
    pub fn link(&self, ifname: &str) -> Result<LinkInfo> {
        let (cmd, v) = self.link_json(ifname, false)?;
        let bad = |what: &str| Error::Parse {
            cmd: cmd.clone(),
            what: what.to_string(),
        };
        let ifindex = v["ifindex"].as_u64().ok_or_else(|| bad("no ifindex"))?;
        let mtu = v["mtu"].as_u64().ok_or_else(|| bad("no mtu"))?;
        let mac = v["address"]
            .as_str()
            .and_then(parse_mac)
            .ok_or_else(|| bad("no MAC address"))?;
        Ok(LinkInfo {
            name: ifname.to_string(),
            ifindex: u32::try_from(ifindex).map_err(|_| bad("ifindex out of range"))?,
            mac,
            mtu: u32::try_from(mtu).map_err(|_| bad("mtu out of range"))?,
        })
    }

    /// Counters of an interface (`ip -j -s link show dev IF`).
    pub fn link_stats(&self, ifname: &str) -> Result<LinkStats> {
        let (cmd, v) = self.link_json(ifname, true)?;
        let s = &v["stats64"];
        let get = |dir: &str, field: &str| {
            s[dir][field].as_u64().ok_or_else(|| Error::Parse {
                cmd: cmd.clone(),
                what: format!("no stats64.{dir}.{field}"),
            })
        };
        Ok(LinkStats {
            rx_packets: get("rx", "packets")?,
            rx_bytes: get("rx", "bytes")?,
            rx_dropped: get("rx", "dropped")?,
            tx_packets: get("tx", "packets")?,
            tx_bytes: get("tx", "bytes")?,
            tx_dropped: get("tx", "dropped")?,
        })
    }

    fn link_json(&self, ifname: &str, stats: bool) -> Result<(String, Value)> {
        let mut args = vec!["-j"];
        if stats {
            args.push("-s");
        }
        args.extend(["link", "show", "dev", ifname]);
        let cmd = command_line("ip", ["-n", self.name.as_str()].iter().chain(&args));
        let out = self.ip(&args)?;
        let v: Value = serde_json::from_str(&out).map_err(|e| Error::Parse {
            cmd: cmd.clone(),
            what: e.to_string(),
        })?;
        let first = v
            .as_array()
            .and_then(|a| a.first())
            .cloned()
            .ok_or_else(|| Error::Parse {
                cmd: cmd.clone(),
                what: "empty list".to_string(),
            })?;
        Ok((cmd, first))
    }

    /// Moves the current thread into this namespace until the guard is
    /// dropped. Sockets opened meanwhile stay in this namespace for their
    /// whole life, whichever thread uses them later. Prefer
    /// [`Netns::run_in`], which does this on a fresh thread.
    pub fn enter(&self) -> Result<NsGuard> {
        let sys = |op: String| move |source| Error::Sys { op, source };
        let original = File::open("/proc/thread-self/ns/net")
            .map_err(sys("open /proc/thread-self/ns/net".into()))?;
        let path = format!("/run/netns/{}", self.name);
        let target = File::open(&path).map_err(sys(format!("open {path}")))?;
        nix::sched::setns(&target, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| sys(format!("setns into {}", self.name))(e.into()))?;
        Ok(NsGuard {
            original,
            name: self.name.clone(),
            _not_send: PhantomData,
        })
    }

    /// Runs `f` on a new thread that has entered this namespace, and returns
    /// what it returns. A panic in `f` becomes [`Error::ThreadPanicked`].
    pub fn run_in<R, F>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        std::thread::scope(|s| {
            let handle = s.spawn(|| -> Result<R> {
                let _guard = self.enter()?;
                Ok(f())
            });
            handle
                .join()
                .map_err(|_| Error::ThreadPanicked(self.name.clone()))?
        })
    }

    /// Sends `count` ICMP echo requests (IPv4 or IPv6) to `dst` from inside
    /// the namespace, one at a time, each waiting up to one second for its
    /// reply. Fails unless every request got its reply.
    pub fn ping(&self, dst: IpAddr, count: u16) -> Result<crate::PingReport> {
        let report = self.run_in(|| crate::ping::ping(dst, count, Duration::from_secs(1)))??;
        if report.received != report.sent {
            return Err(Error::Timeout(format!(
                "ping {dst} from {}: {} of {} echo replies",
                self.name, report.received, report.sent
            )));
        }
        Ok(report)
    }
}

impl Netns {
    /// Like [`Netns::ping`], but reports lost replies instead of failing on
    /// them: `count` echo requests, each waiting up to `timeout` for its
    /// reply.
    pub fn ping_report(
        &self,
        dst: IpAddr,
        count: u16,
        timeout: Duration,
    ) -> Result<crate::PingReport> {
        self.run_in(|| crate::ping::ping(dst, count, timeout))?
    }
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn drain<R: Read + Send + 'static>(mut r: R, into: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => into
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&buf[..n]),
            }
        }
    })
}

/// Kills a child by PID (SIGKILL) unless it has exited, then reaps it.
pub(crate) fn kill_and_reap(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// Keeps the current thread inside a namespace; moves it back to the
/// namespace it came from on drop. Not `Send`: it belongs to one thread.
#[derive(Debug)]
pub struct NsGuard {
    original: File,
    name: String,
    _not_send: PhantomData<*const ()>,
}

impl Drop for NsGuard {
    fn drop(&mut self) {
        if let Err(e) = nix::sched::setns(&self.original, nix::sched::CloneFlags::CLONE_NEWNET) {
            // Staying inside a test namespace is the safe failure: it only
            // ever holds test interfaces. Say so loudly.
            eprintln!(
                "xdpsec-testbed: could not leave namespace {}: {e}; this thread stays inside it",
                self.name
            );
        }
    }
}

/// A process started with [`Netns::spawn`]; killed by PID (SIGKILL) and
/// reaped when dropped, unless it has exited.
#[derive(Debug)]
pub struct NsChild {
    id: u64,
    pid: u32,
    cmd: String,
    shared: Arc<Shared>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    readers: Vec<JoinHandle<()>>,
}

/// How a process started with [`Netns::spawn`] ended.
#[derive(Debug, Clone)]
pub struct ChildOutput {
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// Everything it printed on stderr.
    pub stderr: String,
}

impl NsChild {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The command line it was started with.
    pub fn command(&self) -> &str {
        &self.cmd
    }

    /// Its exit status if it has exited, without waiting.
    pub fn try_wait(&self) -> Result<Option<ExitStatus>> {
        let mut children = self.shared.children();
        match children.iter_mut().find(|(id, _)| *id == self.id) {
            Some((_, child)) => child.try_wait().map_err(|source| Error::Sys {
                op: format!("wait for {}", self.cmd),
                source,
            }),
            // The test bed already ended it.
            None => Err(Error::Sys {
                op: format!("wait for {}", self.cmd),
                source: std::io::Error::other("already ended by the test bed"),
            }),
        }
    }

    /// Sends SIGTERM to the process (by PID) unless it has exited; the
    /// process is not waited for (see [`NsChild::wait_timeout`]).
    pub fn terminate(&self) -> Result<()> {
        self.signal(nix::sys::signal::Signal::SIGTERM)
    }

    /// Sends `signal` to the process (by PID) unless it has exited and been
    /// reaped.
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> Result<()> {
        // Holding the lock keeps the child from being reaped (and its PID
        // reused) while the signal is sent.
        let mut children = self.shared.children();
        let Some((_, child)) = children.iter_mut().find(|(id, _)| *id == self.id) else {
            return Ok(());
        };
        if let Ok(Some(_)) = child.try_wait() {
            return Ok(());
        }
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid).unwrap_or(i32::MAX));
        nix::sys::signal::kill(pid, signal).map_err(|e| Error::Sys {
            op: format!("send {signal} to {} (pid {})", self.cmd, self.pid),
            source: e.into(),
        })
    }

    /// What it printed on stderr so far.
    pub fn stderr_so_far(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// What it printed on stdout so far.
    pub fn stdout_so_far(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    }

    /// Waits up to `timeout` for it to exit and returns its output; kills it
    /// and fails with [`Error::Timeout`] if it does not.
    pub fn wait_timeout(mut self, timeout: Duration) -> Result<ChildOutput> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "`{}` still running after {timeout:?}; killed",
                    self.cmd
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let text = |b: &Mutex<Vec<u8>>| {
            String::from_utf8_lossy(&b.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
        };
        Ok(ChildOutput {
            status,
            stdout: text(&self.stdout),
            stderr: text(&self.stderr),
        })
    }
}

impl Drop for NsChild {
    fn drop(&mut self) {
        let child = {
            let mut children = self.shared.children();
            children
                .iter()
                .position(|(id, _)| *id == self.id)
                .map(|i| children.swap_remove(i).1)
        };
        if let Some(mut child) = child {
            kill_and_reap(&mut child);
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}
