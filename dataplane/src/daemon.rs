//! `xdpsec dataplane`: the data-plane process. Loads the static config,
//! attaches the XDP program, opens the AF_XDP sockets, runs the pinned
//! workers and serves the SA API until SIGTERM or SIGINT; then stops the
//! workers, removes the socket and detaches XDP before it exits.

use crate::afxdp::{self, SocketConfig, Umem, UmemConfig, XskSocket};
use crate::api_server::{self, ApiShared};
use crate::crypto::Backend;
use crate::icmp::SourceAddrs;
use crate::nexthop::{self, NextHopCache};
use crate::stats::WorkerStatsCell;
use crate::steer::{AttachMode, Steer};
use crate::tables::Tables;
use crate::tunnel::TunnelInterface;
use crate::worker::{self, MtuSettings, Port, PortRole, WorkerShared};
use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use xdpsec_api::config::{Role, XdpMode};
use xdpsec_api::{Direction, PolicyAction, StaticConfig};
use xdpsec_ebpf_common::Role as SteerRole;

/// Command-line options of `xdpsec dataplane`.
#[derive(Debug, Clone)]
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

pub fn run(options: &DaemonOptions) -> Result<()> {
    // First of all, so that a SIGTERM that comes while the data plane starts
    // (even right after the API socket appears) stops it cleanly once it is
    // up, XDP detached, instead of killing it with the default action.
    let term = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, term.clone()).context("installing a signal handler")?;
    }
    let config = StaticConfig::load(&options.config)?;
    let backend = if options.null_cipher_benchmark {
        Backend::NullBenchmarkOnly
    } else {
        *Backend::available()
            .first()
            .context("no crypto backend compiled in")?
    };
    let tables = Arc::new(Tables::new(backend));
    for (i, sa) in config.sas.iter().enumerate() {
        tables
            .add_sa(sa)
            .with_context(|| format!("config {}: sa[{i}]", options.config.display()))?;
    }
    for (i, policy) in config.policies.iter().enumerate() {
        tables
            .add_policy(policy.clone())
            .with_context(|| format!("config {}: policy[{i}]", options.config.display()))?;
    }

    let workers = config.dataplane.worker_count().max(1);
    // Created first, so its data plane end is there to attach to; dropped
    // last (after XDP is detached), which deletes it.
    let tunnel = match config.interfaces.iter().find(|i| i.role == Role::Tunnel) {
        Some(iface) => Some(TunnelInterface::create(
            &iface.name,
            workers,
            iface.deliver,
        )?),
        None => None,
    };
    let mut interfaces = Vec::new();
    for (slot, iface) in config.interfaces.iter().enumerate() {
        // The data plane serves the tunnel's own end; the host end is the
        // host's.
        let mut iface = iface.clone();
        if let (Role::Tunnel, Some(tunnel)) = (iface.role, &tunnel) {
            iface.name = tunnel.peer_name().to_string();
            iface.queues = workers;
        }
        let ifindex = afxdp::ifindex(&iface.name).with_context(|| {
            format!(
                "config {}: interface[{slot}].name: no interface {:?} in this network namespace",
                options.config.display(),
                iface.name
            )
        })?;
        if iface.queues < workers {
            bail!(
                "config {}: interface[{slot}].queues: {} workers need {workers} queues on {}, it has {} configured",
                options.config.display(),
                workers,
                iface.name,
                iface.queues
            );
        }
        interfaces.push((slot as u32, ifindex, iface));
    }

    let mut steer = Steer::load()?;
    let mode = match (options.xdp_generic, config.dataplane.xdp_mode) {
        (true, _) | (_, XdpMode::Generic) => AttachMode::Generic,
        (false, XdpMode::Native) => AttachMode::Native,
    };
    for (slot, ifindex, iface) in &interfaces {
        steer.set_interface(*ifindex, steer_role(iface.role), *slot)?;
    }
    let mut xdp_sync = XdpMapSync::default();
    xdp_sync.apply(&mut steer, &tables)?;
    for (_, _, iface) in &interfaces {
        steer
            .attach(&iface.name, mode)
            .with_context(|| format!("attaching XDP ({mode}) to {}", iface.name))?;
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

    let mut threads = Vec::new();
    for w in 0..workers {
        let mut umem = Umem::new(UmemConfig::default()).context("allocating a UMEM")?;
        let mut ports = Vec::new();
        for (slot, ifindex, iface) in &interfaces {
            let socket = XskSocket::bind(&mut umem, *ifindex, w, &SocketConfig::default())
                .with_context(|| format!("AF_XDP socket on {} queue {w}", iface.name))?;
            steer.register_xsk(*slot, w, &socket)?;
            ports.push(Port {
                socket,
                role: port_role(iface.role),
            });
        }
        let cpu = config.dataplane.cpus.get(w as usize).copied();
        let shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("xdpsec-worker-{w}"))
            .spawn(move || {
                if let Some(cpu) = cpu {
                    core_affinity::set_for_current(core_affinity::CoreId { id: cpu as usize });
                }
                worker::run(w as usize, umem, ports, shared);
            })
            .context("starting a worker thread")?;
        threads.push(thread);
    }

    let steer = Arc::new(Mutex::new(steer));
    let xdp_sync = Arc::new(Mutex::new(xdp_sync));
    let on_change = {
        let steer = steer.clone();
        Box::new(move |tables: &Tables| {
            let mut steer = steer.lock().unwrap_or_else(|p| p.into_inner());
            let mut sync = xdp_sync.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = sync.apply(&mut steer, tables) {
                eprintln!("xdpsec dataplane: updating the XDP maps: {e:#}");
            }
        })
    };
    let api = api_server::spawn(
        &config.dataplane.api_socket,
        ApiShared {
            tables: tables.clone(),
            workers: stats.clone(),
            expiries: expiry_rx,
            on_change,
        },
    )
    .with_context(|| {
        format!(
            "serving the SA API on {}",
            config.dataplane.api_socket.display()
        )
    })?;

    eprintln!(
        "xdpsec dataplane: {workers} worker(s) on {} interface(s), XDP {mode}, {} SA(s), API on {}",
        interfaces.len(),
        config.sas.len(),
        config.dataplane.api_socket.display()
    );
    while !term.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }

    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().ok();
    }
    drop(api);
    drop(next_hops);
    // Dropping the loader detaches the program from every interface.
    drop(steer);
    drop(tunnel);
    eprintln!("xdpsec dataplane: stopped, XDP detached");
    Ok(())
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
/// addresses (where ESP is steered) and the remote prefixes of protect
/// policies (where cleartext is steered).
#[derive(Debug, Default)]
struct XdpMapSync {
    local: BTreeSet<IpAddr>,
    protected: BTreeSet<(IpAddr, u8)>,
}

impl XdpMapSync {
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
            .filter(|p| p.direction == Direction::Out && p.action == PolicyAction::Protect)
            .map(|p| (p.remote.addr(), p.remote.prefix_len()))
            .collect();
        for addr in self.local.difference(&local) {
            steer.remove_local_address(*addr)?;
        }
        for addr in local.difference(&self.local) {
            steer.add_local_address(*addr)?;
        }
        for (addr, len) in self.protected.difference(&protected) {
            steer.remove_protected_prefix(*addr, *len)?;
        }
        for (addr, len) in protected.difference(&self.protected) {
            steer.add_protected_prefix(*addr, *len)?;
        }
        self.local = local;
        self.protected = protected;
        Ok(())
    }
}
