//! `xdpsec dataplane`: the data-plane process. Loads the static config,
//! installs the fail-closed guard, attaches the XDP program, opens an
//! AF_XDP socket on every RX queue of every interface, runs and supervises
//! the pinned workers and serves the SA API until SIGTERM or SIGINT; then
//! stops the workers, removes the socket and detaches XDP before it exits.
//!
//! Fail closed, in every state: the guard (`guard.rs`) is in before XDP is
//! attached and stays when the process dies; a frame due for a worker on a
//! queue without a socket is dropped by the XDP program; a worker that
//! dies, or a queue count that changes under the data plane, stops it
//! (non-zero exit, guard in place) for its supervisor to restart.

use crate::afxdp::{self, BindMode, BusyPoll, SocketConfig, Umem, UmemConfig, XskSocket};
use crate::api_server::{self, ApiShared};
use crate::crypto::Backend;
use crate::guard::{self, Guard};
use crate::icmp::SourceAddrs;
use crate::nexthop::{self, NextHopCache};
use crate::persist::{SeqKeeper, StateDir, KEEP_INTERVAL};
use crate::stats::WorkerStatsCell;
use crate::steer::{AttachMode, Steer};
use crate::tables::Tables;
use crate::tunnel::TunnelInterface;
use crate::worker::{self, MtuSettings, Port, PortRole, WorkerShared};
use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use xdpsec_api::config::{DataplaneConfig, GuardOnStop, Role, XdpBind, XdpMode};
use xdpsec_api::messages::SocketInfo;
use xdpsec_api::notify::{Notifier, Watchdog};
use xdpsec_api::sa::ValidationError;
use xdpsec_api::{ConfigError, Direction, Policy, PolicyAction, PolicyKey, StaticConfig};
use xdpsec_ebpf_common::Role as SteerRole;

/// Command-line options of `xdpsec dataplane`.
#[derive(Debug, Clone, Default)]
pub struct DaemonOptions {
    pub config: PathBuf,
    /// Run the pipeline without the cipher (benchmark switch, never negotiated).
    pub null_cipher_benchmark: bool,
    /// Attach XDP in generic (skb) mode instead of native.
    pub xdp_generic: bool,
}

/// Soft-expiry reports waiting for the API server; more are dropped (the
/// control side also sees the SA counters).
const EXPIRY_QUEUE: usize = 1024;

/// How often the RX queue counts are compared with those served.
const QUEUE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// One interface the data plane serves.
#[derive(Debug, Clone)]
struct Served {
    slot: u32,
    ifindex: u32,
    name: String,
    role: Role,
    /// Its RX queues when the data plane started; every one has a socket.
    rx_queues: u32,
    /// `[[interface]] xdp_bind`.
    bind: XdpBind,
    /// Its RX and TX ring sizes, if it has its own.
    rings: (Option<u32>, Option<u32>),
}

pub fn run(options: &DaemonOptions) -> Result<()> {
    // First of all, so that a SIGTERM that comes while the data plane starts
    // (even right after the API socket appears) stops it cleanly once it is
    // up, XDP detached, instead of killing it with the default action.
    let term = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, term.clone()).context("installing a signal handler")?;
    }
    let notifier = Notifier::from_env().context("reading NOTIFY_SOCKET")?;
    let path = options.config.display().to_string();
    let mut startup = Startup::begin();
    let mut config = StaticConfig::load(&options.config)?;
    startup.done("config");
    let backend = if options.null_cipher_benchmark {
        Backend::NullBenchmarkOnly
    } else {
        *Backend::available()
            .first()
            .context("no crypto backend compiled in")?
    };
    // First of what needs privileges, so that a missing one is what an
    // unprivileged start reports (loading attaches nothing).
    let mut steer = Steer::load_sized(config.dataplane.max_protected_prefixes)?;
    let state = StateDir::open(&config.dataplane.state_dir)
        .with_context(|| format!("config {path}: dataplane.state_dir"))?;
    // Reserved on disk before any SA exists, so no number is ever used
    // that a restart could hand out again.
    let mut keeper = SeqKeeper::prepare(state.clone(), &mut config.sas)
        .with_context(|| format!("config {path}: the static SAs' sequence state"))?;
    startup.done("sequence state");
    let tables = Arc::new(Tables::new(backend));
    // In one step: one by one, each edit copies the tables, which takes
    // minutes for the SAs of 100,000 tunnels.
    tables
        .add_bulk(&config.sas, &config.policies)
        .with_context(|| format!("config {path}"))?;
    keeper.install(&tables);
    startup.done("tables");
    // Policies a previous run got over the API (the IKE daemon's): back as
    // they were, their SAs missing, so their traffic is dropped until the
    // IKE daemon installs new SAs, instead of leaving in cleartext.
    // A set: with 100,000 static policies a scan per policy on every API
    // change took minutes.
    let static_policies: std::collections::HashSet<Policy> =
        config.policies.iter().cloned().collect();
    let static_keys: std::collections::HashSet<PolicyKey> =
        config.policies.iter().map(Policy::key).collect();
    for policy in state.load_policies()? {
        if !static_keys.contains(&policy.key()) {
            tables.replace_policy(policy).ok();
        }
    }

    let workers = config.dataplane.worker_count().max(1);
    // Before anything is attached: a CPU the process may not run on is a
    // start-up error, not a worker running unpinned.
    check_cpus_allowed(&config.dataplane.cpus)
        .map_err(|e| host_error(&options.config, e.field, e.reason))?;
    // Created first, so its data plane end is there to attach to; dropped
    // last (after XDP is detached), which deletes it.
    let tunnel = match config
        .interfaces
        .iter()
        .enumerate()
        .find(|(_, i)| i.role == Role::Tunnel)
    {
        Some((slot, iface)) => {
            // Also in `create`; here first so that it reads (and exits) as
            // the config error `xdpsec check` reports.
            crate::tunnel::check_name_free(&iface.name).map_err(|reason| {
                host_error(&options.config, format!("interface[{slot}].name"), reason)
            })?;
            Some(TunnelInterface::create(
                &iface.name,
                workers,
                iface.deliver,
            )?)
        }
        None => None,
    };
    // Before XDP is attached: from here on, the kernel drops what a policy
    // protects, whatever happens to this process.
    let mut guard = Guard::new(tunnel.as_ref().map(|t| t.name().to_string()));
    guard.apply(&tables.policies())?;
    startup.done("guard");

    let mut interfaces = Vec::new();
    for (slot, iface) in config.interfaces.iter().enumerate() {
        // The data plane serves the tunnel's own end; the host end is the
        // host's.
        let name = match (iface.role, &tunnel) {
            (Role::Tunnel, Some(tunnel)) => tunnel.peer_name().to_string(),
            _ => iface.name.clone(),
        };
        let (ifindex, rx_queues) =
            check_interface(&options.config, slot, &name, iface.queues, workers)?;
        interfaces.push(Served {
            slot: slot as u32,
            ifindex,
            name,
            role: iface.role,
            rx_queues,
            bind: iface.xdp_bind,
            rings: (iface.rx_ring_size, iface.tx_ring_size),
        });
    }

    let mode = match (options.xdp_generic, config.dataplane.xdp_mode) {
        (true, _) | (_, XdpMode::Generic) => AttachMode::Generic,
        (false, XdpMode::Native) => AttachMode::Native,
    };
    for iface in &interfaces {
        steer.set_interface(iface.ifindex, steer_role(iface.role), iface.slot)?;
    }
    let mut xdp_sync = XdpMapSync::default();
    xdp_sync.apply(&mut steer, &tables)?;
    startup.done("XDP maps");
    for iface in &interfaces {
        steer.attach(&iface.name, mode).map_err(|e| {
            let e = anyhow::Error::new(e);
            // veth_xdp_set refuses with ENOSPC, which says nothing of why.
            let hint = if format!("{e:#}").contains("No space left on device") {
                " (a veth needs at least as many RX queues as its peer has TX \
                 queues for XDP: compare `ethtool -l` of both ends)"
            } else {
                ""
            };
            e.context(format!("attaching XDP ({mode}) to {}{hint}", iface.name))
        })?;
    }

    let next_hops = NextHopCache::start().context("starting the next-hop cache")?;
    let stop = Arc::new(AtomicBool::new(false));
    let stats: Arc<[WorkerStatsCell]> = (0..workers)
        .map(|w| WorkerStatsCell::new(w, config.dataplane.cpus.get(w as usize).copied()))
        .collect();
    let (expiry_tx, expiry_rx) = std::sync::mpsc::sync_channel(EXPIRY_QUEUE);
    let shared = WorkerShared {
        tables: tables.clone(),
        next_hops: next_hops.reader(),
        resolver: next_hops.resolver(),
        expiries: expiry_tx,
        stop: stop.clone(),
        stats: stats.clone(),
        busy_poll: config.dataplane.busy_poll,
        mss_clamp: config.dataplane.mss_clamp,
        tunnel: tunnel.as_ref().map(TunnelInterface::port),
        mtu: MtuSettings {
            outer_fragmentation: config.dataplane.outer_fragmentation,
            pmtu_hold: Duration::from_secs(config.dataplane.pmtu_timeout_secs),
            icmp_rate: config.dataplane.icmp_rate,
            reassembly_slots: config.dataplane.reassembly_slots as usize,
            reassembly_timeout: Duration::from_millis(u64::from(
                config.dataplane.reassembly_timeout_ms,
            )),
        },
        // Read once: the ICMP errors' source addresses are those the
        // interfaces have when the data plane starts.
        sources: Arc::new(SourceAddrs::new(
            nexthop::interface_addresses().context("reading the interfaces' addresses")?,
        )),
    };

    let steer = Arc::new(Mutex::new(steer));
    let mut pool = WorkerPool {
        workers: (0..workers)
            .map(|w| WorkerSlot {
                index: w,
                cpu: config.dataplane.cpus.get(w as usize).copied(),
                thread: None,
            })
            .collect(),
        interfaces: interfaces.clone(),
        shared,
        steer: steer.clone(),
        afxdp: AfXdpSettings::new(&config.dataplane),
        config_path: path.clone(),
    };
    for w in 0..workers as usize {
        pool.start(w)?;
    }

    let xdp_sync = Arc::new(Mutex::new(xdp_sync));
    let guard = Arc::new(Mutex::new(guard));
    let on_change = {
        let (steer, guard, state) = (steer.clone(), guard.clone(), state.clone());
        Box::new(move |tables: &Tables| {
            let policies = tables.policies();
            // The guard first: while the XDP maps catch up, the kernel
            // already drops what a new policy protects.
            lock(&guard)
                .apply(&policies)
                .map_err(|e| format!("the fail-closed guard: {e:#}"))?;
            lock(&xdp_sync)
                .apply(&mut lock(&steer), tables)
                .map_err(|e| format!("the XDP maps: {e:#}"))?;
            let dynamic: Vec<Policy> = policies
                .into_iter()
                .filter(|p| !static_policies.contains(p))
                .collect();
            state
                .store_policies(&dynamic)
                .map_err(|e| format!("the state directory: {e:#}"))
        })
    };
    let socket_group = config
        .dataplane
        .api_socket_group
        .as_deref()
        .map(|g| {
            group_id(g).map_err(|e| {
                host_error(
                    &options.config,
                    "dataplane.api_socket_group".to_owned(),
                    e.to_string(),
                )
            })
        })
        .transpose()?;
    let api = api_server::spawn_with(
        &config.dataplane.api_socket,
        ApiShared {
            tables: tables.clone(),
            workers: stats.clone(),
            expiries: expiry_rx,
            on_change,
        },
        api_server::ApiServerOptions {
            socket_group,
            ..Default::default()
        },
    )
    .with_context(|| {
        format!(
            "serving the SA API on {}",
            config.dataplane.api_socket.display()
        )
    })?;

    startup.done("workers and API");
    tracing::info!(
        "{workers} worker(s) on {} interface(s) ({}), XDP {mode}, {} SA(s) and {} policies, \
         API on {}, guard: nftables table inet {}; started in {}",
        interfaces.len(),
        interfaces
            .iter()
            .map(|i| format!("{}: {} RX queue(s)", i.name, i.rx_queues))
            .collect::<Vec<_>>()
            .join(", "),
        config.sas.len(),
        config.policies.len(),
        config.dataplane.api_socket.display(),
        guard::TABLE,
        startup,
    );
    // Ready only now: the API socket serves, so a unit ordered after this
    // one (`xdpsec ike`) finds it.
    if let Err(e) = notifier.ready(&format!(
        "{workers} worker(s), {} SA(s), API on {}",
        config.sas.len(),
        config.dataplane.api_socket.display()
    )) {
        tracing::warn!("telling the service manager the data plane is ready: {e}");
    }
    let mut watchdog = notifier.watchdog();
    let outcome = supervise(
        &term,
        &mut pool,
        &mut keeper,
        &tables,
        &interfaces,
        watchdog.as_mut(),
    );
    if outcome.is_ok() {
        notifier.stopping().ok();
    }

    stop.store(true, Ordering::Relaxed);
    pool.join();
    // The last word on the inbound replay floors, now that nothing moves.
    if let Err(e) = keeper.keep(&tables) {
        tracing::error!("storing the static SAs' sequence state: {e:#}");
    }
    drop(api);
    drop(next_hops);
    // Dropping the loader detaches the program from every interface.
    drop(pool);
    drop(steer);
    drop(tunnel);
    match (&outcome, config.dataplane.guard_on_stop) {
        (Ok(()), GuardOnStop::Remove) => {
            guard::remove()?;
            tracing::info!("stopped, XDP detached, guard removed (guard_on_stop = \"remove\")");
        }
        (Ok(()), GuardOnStop::Keep) => tracing::info!(
            "stopped, XDP detached; the guard (nftables table inet {}) stays and drops \
             protected traffic until the data plane is back (`xdpsec guard remove` lifts it)",
            guard::TABLE
        ),
        (Err(_), _) => {}
    }
    outcome
}

/// The main loop until SIGTERM: keeps the static SAs' numbers on disk,
/// watches the workers and the RX queue counts.
fn supervise(
    term: &AtomicBool,
    pool: &mut WorkerPool,
    keeper: &mut SeqKeeper,
    tables: &Tables,
    interfaces: &[Served],
    mut watchdog: Option<&mut Watchdog>,
) -> Result<()> {
    let mut last_queue_check = Instant::now();
    while !term.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20).min(KEEP_INTERVAL));
        // Stopping the data plane when the disk refuses is failing closed:
        // outbound static SAs stop at their reservation anyway.
        keeper
            .keep(tables)
            .context("storing the static SAs' sequence state")?;
        pool.check_alive()?;
        if last_queue_check.elapsed() >= QUEUE_CHECK_INTERVAL {
            last_queue_check = Instant::now();
            for iface in interfaces {
                let now = rx_queue_count(&iface.name, iface.ifindex)?;
                if now != iface.rx_queues {
                    bail!(
                        "{} now has {now} RX queue(s), {} when the data plane started: the new \
                         ones would have no worker; stopping (the guard stays in place). \
                         Start the data plane again to serve them all",
                        iface.name,
                        iface.rx_queues
                    );
                }
            }
        }
        // Only here, past every check: a stuck or half-dead data plane
        // stops petting and systemd restarts it.
        if let Some(w) = watchdog.as_deref_mut() {
            if let Err(e) = w.pet(Instant::now()) {
                tracing::warn!("watchdog notification: {e}");
            }
        }
    }
    Ok(())
}

/// A group named by name or number.
fn group_id(group: &str) -> Result<u32> {
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        _ => group
            .parse()
            .map_err(|_| anyhow::anyhow!("no group {group:?} on this system")),
    }
}

/// A config that does not fit this host (the data plane refuses to start
/// on it), in the words of a config error: the file and the field.
fn host_error(file: &Path, field: String, reason: String) -> ConfigError {
    ConfigError {
        file: file.to_owned(),
        field: (!field.is_empty()).then_some(field),
        reason,
        location: None,
    }
}

/// Checks `[[interface]]` number `slot` of the config at `file` against
/// the interface `name` of this network namespace: it exists, it has the
/// `queues` the config expects, and a queue for each of the `workers` to
/// send on. Returns its index and RX queue count.
fn check_interface(
    file: &Path,
    slot: usize,
    name: &str,
    expected: Option<u32>,
    workers: u32,
) -> Result<(u32, u32), ConfigError> {
    let field = format!("interface[{slot}]");
    let ifindex = afxdp::ifindex(name).map_err(|_| {
        host_error(
            file,
            format!("{field}.name"),
            format!("no interface {name:?} in this network namespace"),
        )
    })?;
    let rx_queues = rx_queue_count(name, ifindex)
        .map_err(|e| host_error(file, field.clone(), format!("{e:#}")))?;
    if let Some(expected) = expected.filter(|q| *q != rx_queues) {
        return Err(host_error(
            file,
            format!("{field}.queues"),
            format!(
                "{name} has {rx_queues} RX queue(s), the config says {expected}; every queue is \
                 served, so leave `queues` out, or set it to {rx_queues}, or change the \
                 interface: `ethtool -L {name} combined {expected}`"
            ),
        ));
    }
    if rx_queues < workers {
        return Err(host_error(
            file,
            field,
            format!(
                "{name} has {rx_queues} queue(s) and {workers} workers each need one to send on; \
                 give it more (`ethtool -L {name} combined {workers}`) or run fewer workers \
                 (`[dataplane] workers = {rx_queues}`)"
            ),
        ));
    }
    Ok((ifindex, rx_queues))
}

/// What the data plane checks of `config` (read from `file`) against this
/// host before it changes anything, for `xdpsec check`: the CPUs to pin
/// workers to, each interface, its RX queues and a queue per worker (a
/// tunnel interface only by its name: the data plane creates it, with a
/// queue per worker), the group of the API socket. Needs no privileges and changes nothing; returns
/// every problem, not only the first.
pub fn check_host(config: &StaticConfig, file: &Path) -> Vec<ConfigError> {
    let mut problems = Vec::new();
    if let Err(e) = check_cpus_allowed(&config.dataplane.cpus) {
        problems.push(host_error(file, e.field, e.reason));
    }
    let workers = config.dataplane.worker_count().max(1);
    for (slot, iface) in config.interfaces.iter().enumerate() {
        let checked = if iface.role == Role::Tunnel {
            crate::tunnel::check_name_free(&iface.name)
                .map_err(|reason| host_error(file, format!("interface[{slot}].name"), reason))
        } else {
            check_interface(file, slot, &iface.name, iface.queues, workers).map(|_| ())
        };
        problems.extend(checked.err());
    }
    if let Some(group) = &config.dataplane.api_socket_group {
        if let Err(e) = group_id(group) {
            problems.push(host_error(
                file,
                "dataplane.api_socket_group".to_owned(),
                e.to_string(),
            ));
        }
    }
    problems
}

/// The RX queues `name` has now (`real_num_rx_queues`: what AF_XDP can
/// bind to and XDP sees as `rx_queue_index`), from sysfs. Refuses a sysfs
/// that belongs to another network namespace (`nsenter` without `-m`).
fn rx_queue_count(name: &str, ifindex: u32) -> Result<u32> {
    let dir = format!("/sys/class/net/{name}");
    let sysfs_index: u32 = std::fs::read_to_string(format!("{dir}/ifindex"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if sysfs_index != ifindex {
        bail!(
            "{dir} is not this network namespace's {name}: run the data plane with \
             `ip netns exec` (which mounts the namespace's /sys), not a bare setns"
        );
    }
    let queues = std::fs::read_dir(format!("{dir}/queues"))
        .with_context(|| format!("reading {dir}/queues"))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    u32::try_from(queues).context("queue count")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Checks that every CPU of `[dataplane] cpus` is in this process's
/// affinity mask (which taskset, a cgroup cpuset and systemd narrow).
fn check_cpus_allowed(cpus: &[u32]) -> Result<(), ValidationError> {
    if cpus.is_empty() {
        return Ok(());
    }
    let Some(allowed) = core_affinity::get_core_ids() else {
        return Err(ValidationError::new(
            "dataplane.cpus",
            "cannot read this process's CPU affinity (sched_getaffinity) to check them",
        ));
    };
    let allowed: BTreeSet<usize> = allowed.into_iter().map(|c| c.id).collect();
    for (i, cpu) in cpus.iter().enumerate() {
        if !allowed.contains(&(*cpu as usize)) {
            return Err(ValidationError::new(
                format!("dataplane.cpus[{i}]"),
                format!(
                    "this process may not run on CPU {cpu} (it may run on {}): a taskset, a \
                     cgroup cpuset or systemd's CPUAffinity=/AllowedCPUs= restricts it, or the \
                     CPU does not exist. List CPUs from that set, widen the restriction, or \
                     leave `cpus` out to run the workers unpinned",
                    cpu_list(&allowed)
                ),
            ));
        }
    }
    Ok(())
}

/// `0-3,8` for {0, 1, 2, 3, 8}.
fn cpu_list(cpus: &BTreeSet<usize>) -> String {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for &c in cpus {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == c => *end = c,
            _ => ranges.push((c, c)),
        }
    }
    if ranges.is_empty() {
        return "none".to_owned();
    }
    ranges
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Pins the calling thread to `cpu`, and checks that it took.
fn pin_current_thread(cpu: u32) -> Result<()> {
    // core_affinity's CPU_SET panics past the fixed-size set (and the
    // panic cannot unwind out of it: the process aborts).
    if cpu as usize >= libc::CPU_SETSIZE as usize {
        bail!(
            "pinning to CPU {cpu} failed: CPU numbers stop at {}; list allowed CPUs in \
             `[dataplane] cpus` or leave it out",
            libc::CPU_SETSIZE - 1
        );
    }
    let pinned = core_affinity::set_for_current(core_affinity::CoreId { id: cpu as usize });
    let now: Option<Vec<usize>> =
        core_affinity::get_core_ids().map(|ids| ids.into_iter().map(|c| c.id).collect());
    if !pinned || now.as_deref() != Some(&[cpu as usize][..]) {
        bail!(
            "pinning to CPU {cpu} failed (sched_setaffinity refused, or the thread runs on \
             {now:?}): the CPU is offline, or outside the cpuset this process is allowed; \
             list allowed CPUs in `[dataplane] cpus` or leave it out"
        );
    }
    Ok(())
}

/// `[dataplane]`'s AF_XDP knobs, as each worker's sockets and UMEMs get them.
#[derive(Debug, Clone)]
struct AfXdpSettings {
    rx_ring: u32,
    tx_ring: u32,
    fill_ring: u32,
    completion_ring: u32,
    frame_size: u32,
    umem_frames: Option<u32>,
    busy_poll: Option<BusyPoll>,
}

impl AfXdpSettings {
    fn new(dp: &DataplaneConfig) -> Self {
        AfXdpSettings {
            rx_ring: dp.rx_ring_size,
            tx_ring: dp.tx_ring_size,
            fill_ring: dp.fill_ring_size,
            completion_ring: dp.completion_ring_size,
            frame_size: dp.frame_size,
            umem_frames: dp.umem_frames,
            busy_poll: (dp.busy_poll && dp.busy_poll_usecs > 0).then(|| BusyPoll {
                usecs: dp.busy_poll_usecs,
                budget: u16::try_from(dp.busy_poll_budget).unwrap_or(u16::MAX),
            }),
        }
    }

    /// Frames kept in each fill ring: half of it, the rest of the UMEM
    /// being for TX and for packets the worker holds.
    fn fill_target(&self) -> u32 {
        self.fill_ring / 2
    }

    /// Frames of a UMEM serving sockets whose TX rings are `tx_rings`: what
    /// the config says, or each socket's fill target and TX ring, at least
    /// 4096.
    fn umem_frames(&self, tx_rings: &[u32], field: &str) -> Result<u32> {
        let sockets = tx_rings.len() as u32;
        let least = sockets * self.fill_target() + 2 * afxdp::BATCH_SIZE as u32;
        match self.umem_frames {
            Some(n) if n < least => bail!(
                "{field}: {n} frames cannot stock the fill rings of the {sockets} socket(s) \
                 sharing a UMEM ({} each) and hold two batches in flight; give at least \
                 {least}, or leave it out",
                self.fill_target()
            ),
            Some(n) => Ok(n),
            None => {
                let tx: u32 = tx_rings.iter().sum();
                Ok((sockets * self.fill_target() + tx).max(4096))
            }
        }
    }

    /// The TX ring size of `iface`'s sockets.
    fn tx_ring(&self, iface: &Served) -> u32 {
        iface.rings.1.unwrap_or(self.tx_ring)
    }
}

/// The workers, each serving the RX queues `q` with `q % workers == index`
/// of every interface (and sending on the lowest of them).
struct WorkerPool {
    workers: Vec<WorkerSlot>,
    interfaces: Vec<Served>,
    shared: WorkerShared,
    steer: Arc<Mutex<Steer>>,
    afxdp: AfXdpSettings,
    config_path: String,
}

/// What a worker's thread made before it started to run.
struct WorkerSetup {
    umems: Vec<Umem>,
    ports: Vec<Port>,
    names: Vec<String>,
    sockets: Vec<SocketInfo>,
    numa_node: Option<u32>,
}

/// Pins the thread, then makes the worker's UMEMs (on its NUMA node) and
/// sockets and registers them with the XDP program.
///
/// Which sockets share a UMEM: each zero-copy interface has one of its own
/// (sharing would force its mode on the others, or theirs on it); the
/// copy-mode interfaces share one, since the kernel copies for them anyway
/// and a frame then goes from one to another without a copy in user space.
fn set_up_worker(
    cpu: Option<u32>,
    index: u32,
    interfaces: &[(Served, Vec<u32>)],
    settings: &AfXdpSettings,
    steer: &Mutex<Steer>,
    config_path: &str,
) -> Result<WorkerSetup> {
    if let Some(cpu) = cpu {
        pin_current_thread(cpu)
            .with_context(|| format!("config {config_path}: dataplane.cpus: worker {index}"))?;
    }
    let numa_node = cpu.and_then(|c| afxdp::cpu_numa_node(c as usize));
    let mut setup = WorkerSetup {
        umems: Vec::new(),
        ports: Vec::new(),
        names: Vec::new(),
        sockets: Vec::new(),
        numa_node,
    };
    let new_umem = |tx_rings: &[u32], name: &str| -> Result<Umem> {
        let frames = settings.umem_frames(
            tx_rings,
            &format!("config {config_path}: dataplane.umem_frames"),
        )?;
        Umem::new(UmemConfig {
            frame_size: settings.frame_size,
            frame_count: frames,
            fill_size: settings.fill_ring,
            comp_size: settings.completion_ring,
            numa_node,
            ..UmemConfig::default()
        })
        .with_context(|| format!("allocating a UMEM for {name} (worker {index})"))
    };
    // Copy-mode interfaces, with why zero-copy was refused when asked.
    let mut copy: Vec<CopyMember<'_>> = Vec::new();
    for (iface, queues) in interfaces {
        if iface.bind == XdpBind::Copy {
            copy.push((iface, queues, None));
            continue;
        }
        let mut umem = new_umem(&vec![settings.tx_ring(iface); queues.len()], &iface.name)?;
        let (first, _) = queues
            .split_first()
            .context("an interface without a queue")?;
        match bind_socket(&mut umem, iface, *first, BindMode::ZeroCopy, settings) {
            Ok(socket) => {
                let at = setup.umems.len();
                setup.add(iface, socket, &umem, at, None, steer)?;
                for &queue in &queues[1..] {
                    let socket = bind_socket(&mut umem, iface, queue, BindMode::ZeroCopy, settings)
                        .with_context(|| {
                            format!("AF_XDP socket on {} queue {queue}", iface.name)
                        })?;
                    setup.add(iface, socket, &umem, at, None, steer)?;
                }
                setup.umems.push(umem);
            }
            Err(afxdp::XskError::ZeroCopyUnsupported { source, .. })
                if iface.bind == XdpBind::Auto =>
            {
                copy.push((iface, queues, Some(source.to_string())));
            }
            Err(e @ afxdp::XskError::ZeroCopyUnsupported { .. }) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "config {config_path}: interface[{}].xdp_bind = \"zerocopy\": {} cannot \
                     bind zero-copy; set xdp_bind = \"auto\" (falls back to copy mode) or \
                     \"copy\", or use a NIC whose driver has AF_XDP zero-copy",
                    iface.slot, iface.name
                )))
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("AF_XDP socket on {} queue {first}", iface.name)))
            }
        }
    }
    // Tests run the zero-copy layout (a UMEM per interface, frames copied
    // between them) on veth, which has only copy mode.
    #[cfg(feature = "fault-injection")]
    let groups: Vec<Vec<CopyMember<'_>>> = if crate::fault::umem_per_interface() {
        copy.into_iter().map(|c| vec![c]).collect()
    } else {
        vec![copy]
    };
    #[cfg(not(feature = "fault-injection"))]
    let groups = vec![copy];
    for group in groups.into_iter().filter(|g| !g.is_empty()) {
        let tx_rings: Vec<u32> = group
            .iter()
            .flat_map(|(i, q, _)| q.iter().map(|_| settings.tx_ring(i)))
            .collect();
        let names: Vec<&str> = group.iter().map(|(i, _, _)| i.name.as_str()).collect();
        let mut umem = new_umem(&tx_rings, &names.join(", "))?;
        let at = setup.umems.len();
        for (iface, queues, refused) in group {
            for &queue in queues {
                let socket = bind_socket(&mut umem, iface, queue, BindMode::Copy, settings)
                    .with_context(|| format!("AF_XDP socket on {} queue {queue}", iface.name))?;
                setup.add(iface, socket, &umem, at, refused.clone(), steer)?;
            }
        }
        setup.umems.push(umem);
    }
    Ok(setup)
}

/// The NUMA node of interface `name`'s device; `None` for a virtual one
/// (no device), or a machine without NUMA (sysfs says -1).
fn device_numa_node(name: &str) -> Option<u32> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/device/numa_node"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// An interface bound in copy mode, its queues, and why not zero-copy.
type CopyMember<'a> = (&'a Served, &'a [u32], Option<String>);

fn bind_socket(
    umem: &mut Umem,
    iface: &Served,
    queue: u32,
    mode: BindMode,
    settings: &AfXdpSettings,
) -> Result<XskSocket, afxdp::XskError> {
    let config = SocketConfig {
        rx_size: iface.rings.0.unwrap_or(settings.rx_ring),
        tx_size: iface.rings.1.unwrap_or(settings.tx_ring),
        fill_target: settings.fill_target(),
        mode,
        need_wakeup: true,
        busy_poll: settings.busy_poll,
    };
    XskSocket::bind(umem, iface.ifindex, queue, &config)
}

impl WorkerSetup {
    /// Registers a bound socket with the XDP program and keeps it as a
    /// port of the worker, on UMEM number `at`.
    fn add(
        &mut self,
        iface: &Served,
        socket: XskSocket,
        umem: &Umem,
        at: usize,
        zero_copy_refused: Option<String>,
        steer: &Mutex<Steer>,
    ) -> Result<()> {
        let queue = socket.queue_id();
        lock(steer).register_xsk(iface.slot, queue, &socket)?;
        let device_node = device_numa_node(&iface.name);
        if let (Some(dev), Some(mem)) = (device_node, umem.numa_node()) {
            if dev != mem {
                tracing::warn!(
                    "{} queue {queue} is on NUMA node {dev}, its worker and UMEM on node {mem}: \
                     every frame crosses the interconnect; serve it from a CPU of node {dev} \
                     (`[dataplane] cpus`)",
                    iface.name
                );
            }
        }
        let name = format!("{}:{queue}", iface.name);
        let (rx_ring, tx_ring) = socket.ring_sizes();
        self.sockets.push(SocketInfo {
            queue: name.clone(),
            bind: if socket.is_zero_copy() {
                "zerocopy"
            } else {
                "copy"
            }
            .to_owned(),
            zero_copy_refused,
            need_wakeup: socket.uses_need_wakeup(),
            rx_ring,
            tx_ring,
            fill_ring: umem.config().fill_size,
            completion_ring: umem.config().comp_size,
            umem: u32::try_from(at).unwrap_or(u32::MAX),
            umem_frames: umem.config().frame_count,
            frame_size: umem.config().frame_size,
            numa_node: umem.numa_node(),
            device_numa_node: device_node,
            numa_note: umem.numa_note().map(str::to_owned),
            busy_poll_usecs: socket.busy_poll().map(|b| b.usecs),
            busy_poll_budget: socket.busy_poll().map(|b| u32::from(b.budget)),
        });
        self.names.push(name);
        self.ports.push(Port {
            socket,
            role: port_role(iface.role),
            umem: at,
        });
        Ok(())
    }
}

struct WorkerSlot {
    index: u32,
    cpu: Option<u32>,
    thread: Option<JoinHandle<()>>,
}

impl WorkerPool {
    /// Opens worker `w`'s sockets, registers them with the XDP program and
    /// starts its thread.
    fn start(&mut self, w: usize) -> Result<()> {
        let count = self.workers.len() as u32;
        let slot = &self.workers[w];
        let index = slot.index;
        let served: Vec<(Served, Vec<u32>)> = self
            .interfaces
            .iter()
            .map(|iface| {
                let queues = (index..iface.rx_queues).step_by(count as usize).collect();
                (iface.clone(), queues)
            })
            .filter(|(_, queues): &(Served, Vec<u32>)| !queues.is_empty())
            .collect();
        let cpu = slot.cpu;
        let shared = self.shared.clone();
        let (steer, settings) = (self.steer.clone(), self.afxdp.clone());
        let path = self.config_path.clone();
        // The UMEMs are made by the worker's own thread once it is pinned,
        // so that their pages are on its NUMA node (as DPDK's and VPP's
        // per-lcore/per-thread set-up does); it reports back before it runs.
        let (report, setup_done) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name(format!("xdpsec-worker-{index}"))
            .spawn(
                move || match set_up_worker(cpu, index, &served, &settings, &steer, &path) {
                    Ok(setup) => {
                        let info = (setup.names, setup.sockets, setup.numa_node);
                        if report.send(Ok(info)).is_ok() {
                            worker::run(w, setup.umems, setup.ports, shared);
                        }
                    }
                    Err(e) => {
                        report.send(Err(e)).ok();
                    }
                },
            )
            .context("starting a worker thread")?;
        match setup_done.recv() {
            Ok(Ok((names, sockets, numa_node))) => {
                let binds: Vec<String> = sockets
                    .iter()
                    .map(|s| match &s.zero_copy_refused {
                        Some(why) => format!("{} {} (zero-copy refused: {why})", s.queue, s.bind),
                        None => format!("{} {}", s.queue, s.bind),
                    })
                    .collect();
                tracing::info!(
                    "worker {index}: {}, NUMA node {}; {}",
                    cpu.map_or_else(|| "not pinned".to_owned(), |c| format!("CPU {c}")),
                    numa_node.map_or_else(|| "unknown".to_owned(), |n| n.to_string()),
                    binds.join(", ")
                );
                self.shared.stats[w].started(names);
                self.shared.stats[w].set_sockets(numa_node, sockets);
                self.workers[w].thread = Some(thread);
                Ok(())
            }
            Ok(Err(e)) => {
                thread.join().ok();
                Err(e.context(format!("setting up worker {index}")))
            }
            Err(_) => {
                thread.join().ok();
                bail!("worker {index} ended while it was being set up")
            }
        }
    }

    /// Fails if a worker's thread ended: the data plane then stops with a
    /// non-zero exit (its supervisor restarts it) rather than run on half
    /// working. The dead worker's sockets closed with it, which took them
    /// out of the XDP program's map: its queues drop what is steered to
    /// them, and once the process is gone the guard drops it.
    fn check_alive(&mut self) -> Result<()> {
        for (w, slot) in self.workers.iter_mut().enumerate() {
            if !slot.thread.as_ref().is_some_and(JoinHandle::is_finished) {
                continue;
            }
            let why = match slot.thread.take().map(JoinHandle::join) {
                Some(Err(panic)) => panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .map_or_else(|| "panicked".to_owned(), |m| format!("panicked: {m}")),
                _ => "its thread ended".to_owned(),
            };
            self.shared.stats[w].died(why.clone());
            bail!(
                "worker {} died ({why}): stopping, so that nothing runs half working; its \
                 queues dropped what was steered to them, and the guard stays in place",
                slot.index
            );
        }
        Ok(())
    }

    fn join(&mut self) {
        for slot in &mut self.workers {
            if let Some(thread) = slot.thread.take() {
                thread.join().ok();
            }
        }
    }
}

/// How long each step of the start took, for the log: with 100,000
/// tunnels a slow step shows itself there.
struct Startup {
    began: Instant,
    last: Instant,
    steps: Vec<(&'static str, Duration)>,
}

impl Startup {
    fn begin() -> Startup {
        let now = Instant::now();
        Startup {
            began: now,
            last: now,
            steps: Vec::new(),
        }
    }

    fn done(&mut self, step: &'static str) {
        let now = Instant::now();
        self.steps.push((step, now - self.last));
        self.last = now;
    }
}

impl fmt::Display for Startup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.2} s (", (self.last - self.began).as_secs_f64())?;
        for (i, (step, took)) in self.steps.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{step} {:.2} s", took.as_secs_f64())?;
        }
        write!(f, ")")
    }
}

fn steer_role(role: Role) -> SteerRole {
    match role {
        // What the host sends into the tunnel is steered like LAN traffic.
        Role::Inside | Role::Tunnel => SteerRole::Inside,
        Role::Outside => SteerRole::Outside,
        Role::Both => SteerRole::Both,
    }
}

fn port_role(role: Role) -> PortRole {
    match role {
        Role::Inside | Role::Tunnel => PortRole::Inside,
        Role::Outside => PortRole::Outside,
        Role::Both => PortRole::Both,
    }
}

/// Keeps the XDP program's maps in step with the tables: our tunnel
/// addresses (where ESP is steered) and the remote prefixes of outbound
/// `protect` and `drop` policies (where cleartext is steered: the workers
/// match the whole policy, a bypass inside such a prefix included).
#[derive(Debug, Default)]
struct XdpMapSync {
    local: BTreeSet<IpAddr>,
    protected: BTreeSet<(IpAddr, u8)>,
}

/// One change to the maps, to undo if a later one fails.
#[derive(Debug, Clone, Copy)]
enum MapEdit {
    AddLocal(IpAddr),
    RemoveLocal(IpAddr),
    AddPrefix(IpAddr, u8),
    RemovePrefix(IpAddr, u8),
}

impl MapEdit {
    fn run(self, steer: &mut Steer) -> Result<()> {
        match self {
            MapEdit::AddLocal(addr) => steer.add_local_address(addr)?,
            MapEdit::RemoveLocal(addr) => steer.remove_local_address(addr)?,
            MapEdit::AddPrefix(addr, len) => {
                #[cfg(feature = "fault-injection")]
                if crate::fault::prefix_fails(addr, len) {
                    bail!("fault injection: inserting {addr}/{len} fails");
                }
                steer.add_protected_prefix(addr, len)?
            }
            MapEdit::RemovePrefix(addr, len) => steer.remove_protected_prefix(addr, len)?,
        }
        Ok(())
    }

    fn undo(self) -> MapEdit {
        match self {
            MapEdit::AddLocal(a) => MapEdit::RemoveLocal(a),
            MapEdit::RemoveLocal(a) => MapEdit::AddLocal(a),
            MapEdit::AddPrefix(a, l) => MapEdit::RemovePrefix(a, l),
            MapEdit::RemovePrefix(a, l) => MapEdit::AddPrefix(a, l),
        }
    }
}

impl XdpMapSync {
    /// Brings the maps to the tables' state: all of it, or (on an error,
    /// which it returns) none of it.
    fn apply(&mut self, steer: &mut Steer, tables: &Tables) -> Result<()> {
        let local: BTreeSet<IpAddr> = tables
            .load()
            .sa_infos()
            .iter()
            .filter(|sa| sa.direction == Direction::In)
            .map(|sa| sa.tunnel_local)
            .collect();
        let protected: BTreeSet<(IpAddr, u8)> = tables
            .policies()
            .iter()
            .filter(|p| p.direction == Direction::Out && p.action != PolicyAction::Bypass)
            .map(|p| (p.remote.addr(), p.remote.prefix_len()))
            .collect();
        // Additions first: a prefix is steered (and so protected) before
        // one that covered it goes.
        let edits: Vec<MapEdit> = local
            .difference(&self.local)
            .map(|a| MapEdit::AddLocal(*a))
            .chain(
                protected
                    .difference(&self.protected)
                    .map(|(a, l)| MapEdit::AddPrefix(*a, *l)),
            )
            .chain(
                self.local
                    .difference(&local)
                    .map(|a| MapEdit::RemoveLocal(*a)),
            )
            .chain(
                self.protected
                    .difference(&protected)
                    .map(|(a, l)| MapEdit::RemovePrefix(*a, *l)),
            )
            .collect();
        for (done, edit) in edits.iter().enumerate() {
            if let Err(e) = edit.run(steer) {
                for undo in edits[..done].iter().rev() {
                    if let Err(again) = undo.undo().run(steer) {
                        tracing::error!("undoing {undo:?} in the XDP maps: {again:#}");
                    }
                }
                return Err(e);
            }
        }
        self.local = local;
        self.protected = protected;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_read_as_ranges() {
        let set = |v: &[usize]| v.iter().copied().collect::<BTreeSet<usize>>();
        assert_eq!(cpu_list(&set(&[])), "none");
        assert_eq!(cpu_list(&set(&[3])), "3");
        assert_eq!(cpu_list(&set(&[0, 1, 2, 3, 8, 10, 11])), "0-3,8,10-11");
    }

    #[test]
    fn a_cpu_outside_the_affinity_mask_is_refused() {
        assert!(check_cpus_allowed(&[]).is_ok());
        let allowed = core_affinity::get_core_ids().expect("sched_getaffinity");
        let first = allowed[0].id as u32;
        assert!(check_cpus_allowed(&[first]).is_ok());
        let err = check_cpus_allowed(&[first, 100_000])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("dataplane.cpus[1]: this process may not run on CPU 100000")
                && err.contains("leave `cpus` out"),
            "{err}"
        );
    }

    #[test]
    fn pinning_to_a_cpu_that_does_not_exist_fails() {
        for cpu in [1000, 100_000] {
            let err = std::thread::spawn(move || pin_current_thread(cpu))
                .join()
                .unwrap()
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("pinning to CPU {cpu} failed")),
                "{err}"
            );
        }
    }

    #[test]
    fn umem_sizes_follow_the_rings_and_refuse_too_few_frames() {
        let dp = DataplaneConfig::default();
        let s = AfXdpSettings::new(&dp);
        assert_eq!(s.busy_poll, None);
        assert_eq!(s.fill_target(), 1024);
        // One socket: at least 4096; four: fill target and TX ring each.
        assert_eq!(s.umem_frames(&[2048], "f").unwrap(), 4096);
        assert_eq!(s.umem_frames(&[2048; 4], "f").unwrap(), 4 * (1024 + 2048));
        assert_eq!(
            s.umem_frames(&[4096, 4096, 512], "f").unwrap(),
            3 * 1024 + 4096 + 4096 + 512
        );
        let s = AfXdpSettings::new(&DataplaneConfig {
            umem_frames: Some(2048),
            busy_poll: true,
            busy_poll_usecs: 50,
            busy_poll_budget: 100_000,
            ..DataplaneConfig::default()
        });
        assert_eq!(
            s.busy_poll,
            Some(BusyPoll {
                usecs: 50,
                budget: u16::MAX
            })
        );
        assert_eq!(s.umem_frames(&[2048], "f").unwrap(), 2048);
        let err = s
            .umem_frames(&[2048; 2], "umem_frames")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "umem_frames: 2048 frames cannot stock the fill rings of the 2 socket(s)"
            ) && err.contains("at least 2176"),
            "{err}"
        );
        // busy_poll_usecs without a spinning worker is refused by the
        // config; here it is simply off.
        let s = AfXdpSettings::new(&DataplaneConfig {
            busy_poll_usecs: 50,
            ..DataplaneConfig::default()
        });
        assert_eq!(s.busy_poll, None);
    }
}
