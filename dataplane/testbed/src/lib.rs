//! Network-namespace test bed for xdpsec, in the style of aya's `NetNsGuard`
//! and Linux's `tools/testing/selftests/wireguard/netns.sh`.
//!
//! A [`Testbed`] picks a per-run name prefix (`xs{pid}n{counter}`), so test
//! runs and tests within a run can overlap. Everything it creates — network
//! namespaces and the veth pairs, addresses, routes and sysctls inside them —
//! is made with the `ip` command of iproute2 (and `sysctl` run through
//! `ip netns exec`), so every step can be replayed by hand. Interfaces are
//! created directly inside their namespaces: none ever appears in the host's
//! namespace, and their names only need to be unique within a namespace.
//!
//! Everything is removed when the `Testbed` is dropped, also while a test
//! panics (drop runs during unwinding): processes started through the test
//! bed are killed by PID first, then each namespace is deleted, which deletes
//! its veth ends with it.
//!
//! Creating namespaces needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN):
//! [`Testbed::new`] fails with [`Error::NotRoot`] otherwise, it never skips.
//!
//! ```no_run
//! let tb = xdpsec_testbed::Testbed::new()?;
//! let topo = tb.standard_topology()?;
//! topo.host_a.ns.ping(topo.gw_a.lan.ipv4.into(), 3)?;
//! # Ok::<(), xdpsec_testbed::Error>(())
//! ```

mod capture;
mod ns;
mod ping;
pub mod strongswan;
mod topology;
pub mod tunnel;

pub use capture::{read_pcap, send_raw_ipv4, tshark, write_pcap, Capture};
pub use ns::{format_mac, ChildOutput, LinkInfo, LinkStats, Netns, NsChild, NsGuard};
pub use ping::PingReport;
pub use topology::{Gateway, Host, Iface, StandardTopology, TopologyOptions, UnderlayTap};

use std::ffi::OsStr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// What can go wrong while building or using a test bed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The test bed creates network namespaces, which needs root.
    #[error(
        "the test bed needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN to create network namespaces), \
         but runs as uid {euid}: run the tests as root"
    )]
    NotRoot {
        /// The effective user id the process runs as.
        euid: u32,
    },
    /// A command could not be started at all.
    #[error("could not run `{cmd}`: {source}")]
    Spawn {
        /// The command line.
        cmd: String,
        /// Why it could not start.
        source: std::io::Error,
    },
    /// A command ran and failed.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr, trimmed.
        stderr: String,
    },
    /// The output of a command was not what the test bed expected.
    #[error("unexpected output of `{cmd}`: {what}")]
    Parse {
        /// The command line.
        cmd: String,
        /// What was wrong.
        what: String,
    },
    /// A system call failed.
    #[error("{op}: {source}")]
    Sys {
        /// What the test bed tried to do.
        op: String,
        /// The error.
        source: std::io::Error,
    },
    /// A bounded wait ran out.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A closure run inside a namespace panicked.
    #[error("a thread running inside namespace {0} panicked")]
    ThreadPanicked(String),
    /// A name was not usable (too long for an interface, or containing odd characters).
    #[error("invalid name {0:?}: {1}")]
    InvalidName(String, &'static str),
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Longest interface name Linux takes (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;

/// Per-process counter that makes prefixes unique within a run.
static NEXT_TESTBED: AtomicU32 = AtomicU32::new(0);

/// `ip netns add` mounts /run/netns on its first use; serialise our calls so
/// parallel tests of one process do not race on that.
static NETNS_ADD_LOCK: Mutex<()> = Mutex::new(());

/// State shared by a [`Testbed`] and the [`Netns`] and [`NsChild`] handles it
/// gives out.
#[derive(Debug)]
pub(crate) struct Shared {
    prefix: String,
    /// Namespaces created, in creation order.
    namespaces: Mutex<Vec<String>>,
    /// Processes started in a namespace and not yet ended, keyed by an id.
    children: Mutex<Vec<(u64, Child)>>,
    next_child: std::sync::atomic::AtomicU64,
}

impl Shared {
    pub(crate) fn children(&self) -> MutexGuard<'_, Vec<(u64, Child)>> {
        // A panic while holding this lock leaves a consistent Vec.
        self.children.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn register_child(&self, child: Child) -> u64 {
        let id = self.next_child.fetch_add(1, Ordering::Relaxed);
        self.children().push((id, child));
        id
    }
}

/// A set of network namespaces removed on drop. See the crate documentation.
#[derive(Debug)]
pub struct Testbed {
    shared: Arc<Shared>,
}

impl Testbed {
    /// Checks for root and picks a fresh prefix `xs{pid}n{counter}`; one that
    /// a dead run with the same PID left behind is skipped.
    pub fn new() -> Result<Self> {
        let euid = nix::unistd::geteuid();
        if !euid.is_root() {
            return Err(Error::NotRoot {
                euid: euid.as_raw(),
            });
        }
        let existing = list_netns()?;
        let pid = std::process::id();
        let prefix = loop {
            let n = NEXT_TESTBED.fetch_add(1, Ordering::Relaxed);
            let prefix = format!("xs{pid}n{n}");
            let taken = existing
                .iter()
                .any(|ns| ns.starts_with(&format!("{prefix}-")));
            if !taken {
                break prefix;
            }
        };
        Ok(Testbed {
            shared: Arc::new(Shared {
                prefix,
                namespaces: Mutex::new(Vec::new()),
                children: Mutex::new(Vec::new()),
                next_child: std::sync::atomic::AtomicU64::new(0),
            }),
        })
    }

    /// The prefix of every namespace this test bed creates (names are
    /// `{prefix}-{role}`).
    pub fn prefix(&self) -> &str {
        &self.shared.prefix
    }

    /// The namespaces created so far, in creation order.
    pub fn namespaces(&self) -> Vec<String> {
        self.shared
            .namespaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Creates namespace `{prefix}-{role}`, brings its loopback up and sets
    /// the sysctls every node here wants: IPv4 and IPv6 forwarding on,
    /// rp_filter off, IPv6 duplicate address detection off (so IPv6 addresses
    /// work at once). `role` is letters, digits, `_` and `-`.
    pub fn add_netns(&self, role: &str) -> Result<Netns> {
        if role.is_empty()
            || !role
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(Error::InvalidName(
                role.to_string(),
                "use letters, digits, '_' and '-'",
            ));
        }
        let name = format!("{}-{role}", self.shared.prefix);
        {
            let _serial = NETNS_ADD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            run_cmd("ip", ["netns", "add", name.as_str()])?;
        }
        // Recorded before configuring, so a failure below still removes it.
        self.shared
            .namespaces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(name.clone());
        let ns = Netns::new(name, self.shared.clone());
        ns.ip(["link", "set", "lo", "up"])?;
        ns.sysctl(&[
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
            ("net.ipv6.conf.all.forwarding", "1"),
            ("net.ipv6.conf.all.accept_dad", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
            ("net.ipv6.conf.all.accept_ra", "0"),
            ("net.ipv6.conf.default.accept_ra", "0"),
        ])?;
        Ok(ns)
    }

    /// Creates a veth pair with end `a_if` in `a` and end `b_if` in `b`, and
    /// brings both up. Returns the two ends as (a, b).
    pub fn add_veth(
        &self,
        a: &Netns,
        a_if: &str,
        b: &Netns,
        b_if: &str,
    ) -> Result<(LinkInfo, LinkInfo)> {
        self.add_veth_with_queues(a, a_if, b, b_if, 1)
    }

    /// Like [`Testbed::add_veth`], with `queues` RX and TX queues on each
    /// end (`numrxqueues`/`numtxqueues`; one AF_XDP socket can bind each).
    pub fn add_veth_with_queues(
        &self,
        a: &Netns,
        a_if: &str,
        b: &Netns,
        b_if: &str,
        queues: u32,
    ) -> Result<(LinkInfo, LinkInfo)> {
        check_ifname(a_if)?;
        check_ifname(b_if)?;
        if queues == 0 {
            return Err(Error::InvalidName(
                format!("{a_if} with 0 queues"),
                "a veth needs at least one queue",
            ));
        }
        let q = queues.to_string();
        let mut args = vec!["link", "add", a_if];
        if queues > 1 {
            args.extend(["numtxqueues", &q, "numrxqueues", &q]);
        }
        args.extend(["type", "veth", "peer", "name", b_if]);
        if queues > 1 {
            args.extend(["numtxqueues", &q, "numrxqueues", &q]);
        }
        args.extend(["netns", b.name()]);
        a.ip(&args)?;
        // Both namespaces forward and have DAD off already; the new ends
        // inherit "default" sysctls, but set rp_filter per device to be sure.
        a.sysctl(&[(&format!("net.ipv4.conf.{a_if}.rp_filter"), "0")])?;
        b.sysctl(&[(&format!("net.ipv4.conf.{b_if}.rp_filter"), "0")])?;
        a.ip(["link", "set", a_if, "up"])?;
        b.ip(["link", "set", b_if, "up"])?;
        Ok((a.link(a_if)?, b.link(b_if)?))
    }

    /// Builds the project's standard topology in this test bed:
    /// host A - gateway A - underlay - gateway B - host B. See
    /// [`StandardTopology`].
    pub fn standard_topology(&self) -> Result<StandardTopology> {
        topology::build(self, &TopologyOptions::default())
    }

    /// The standard topology with more queues per veth and/or a capture
    /// point in the underlay; see [`TopologyOptions`].
    pub fn standard_topology_with(&self, options: &TopologyOptions) -> Result<StandardTopology> {
        topology::build(self, options)
    }

    /// Ends every process still running through this test bed (SIGKILL by
    /// PID, then reaped). Called by drop as well.
    pub fn kill_children(&self) {
        let children: Vec<(u64, Child)> = std::mem::take(&mut *self.shared.children());
        for (_, mut child) in children {
            ns::kill_and_reap(&mut child);
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.kill_children();
        let namespaces = std::mem::take(
            &mut *self
                .shared
                .namespaces
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for name in namespaces.iter().rev() {
            if let Err(e) = run_cmd("ip", ["netns", "del", name.as_str()]) {
                eprintln!("xdpsec-testbed: could not delete namespace {name}: {e}");
            }
        }
    }
}

/// Names of all network namespaces `ip netns list` shows (of any test bed or
/// none).
pub fn list_netns() -> Result<Vec<String>> {
    let out = run_cmd("ip", ["netns", "list"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

fn check_ifname(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_IFNAME_LEN {
        return Err(Error::InvalidName(
            name.to_string(),
            "interface names have 1 to 15 characters",
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
    {
        return Err(Error::InvalidName(
            name.to_string(),
            "use letters, digits, '_', '-' and '.'",
        ));
    }
    Ok(())
}

pub(crate) fn command_line<I, S>(program: &str, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut s = program.to_string();
    for a in args {
        s.push(' ');
        s.push_str(&a.as_ref().to_string_lossy());
    }
    s
}

/// Runs a command to completion; its stdout on success, and its stderr in the
/// error otherwise.
pub(crate) fn run_cmd<I, S>(program: &str, args: I) -> Result<String>
where
    I: IntoIterator<Item = S> + Clone,
    S: AsRef<OsStr>,
{
    let cmd = command_line(program, args.clone());
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            cmd,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
