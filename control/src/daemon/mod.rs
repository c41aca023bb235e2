//! `xdpsec ike --config FILE`: the I/O around the sans-IO IKEv2 state
//! machine ([`crate::ike::Endpoint`]).
//!
//! - [`udp`]: the UDP sockets on 500 and 4500 (non-ESP marker, keepalives,
//!   the local address of each datagram).
//! - [`ctl_server`]: the control socket the CLI talks to ([`crate::ctl`]).
//! - [`install`]: the state machine's data-plane actions over the SA API,
//!   and the ledger of what this daemon installed.
//! - [`state`]: the state file.
//! - `driver`: the single-threaded event loop.
//!
//! Restart. The data plane is a separate process and keeps every SA while
//! this daemon is down, so established tunnels carry traffic through a
//! crash. What the daemon keeps in its state file (0600, under /run) is the
//! ledger of the Child SAs it installed: SPIs and policy selectors, never
//! keys; the IKE SAs themselves (keys, message IDs) are not persisted.
//! After a restart every child in the ledger that the data plane still
//! holds is an *orphan*: it stays installed and carries traffic; the daemon
//! sets each connection that has orphans (and each with `start_action =
//! start`) up again as initiator, and once the connection's new Child SA
//! is installed (its policies then point at the new SAs) the orphans go
//! after a grace period (5 s) that lets packets in flight under the old
//! SPIs arrive. An orphan whose connection cannot come
//! back is removed when its configured `life_time` passes or the data plane
//! reports its hard lifetime. The data plane's static SAs (from its own
//! config) are never touched. The inbound SPIs it holds are reserved, so a
//! new Child SA never collides with them.

pub mod ctl_server;
mod driver;
pub mod install;
mod privilege;
pub mod state;
mod takeover;
pub mod udp;

use std::collections::{BTreeSet, HashMap};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use xdpsec_api::notify::Notifier;
use xdpsec_api::{ApiClient, Direction};

use crate::config::IkeConfig;
use crate::crypto::SystemRandom;
use crate::ike::{Connection, Endpoint, Settings};
use ctl_server::CtlServer;
use install::{Installer, Ledger};
use state::StateFile;
use udp::IkeSockets;

/// How long to wait for the data plane's SA API at start.
const API_WAIT: Duration = Duration::from_secs(10);

/// What `xdpsec ike` was started with; `None` takes the config's value.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// The TOML config.
    pub config: PathBuf,
    /// The data plane's SA API socket (config: `daemon.api_socket`).
    pub api_socket: Option<PathBuf>,
    /// The control socket to serve (config: `daemon.control_socket`).
    pub ctl_socket: Option<PathBuf>,
    /// The state file.
    pub state_file: PathBuf,
    /// UDP port for IKE (config: `daemon.port`).
    pub ike_port: Option<u16>,
    /// UDP port for NAT-T (config: `daemon.port_nat_t`).
    pub nat_t_port: Option<u16>,
}

/// The state file's contents.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedState {
    /// Format version; another one is not read.
    pub version: u32,
    /// The Child SAs this daemon installed.
    pub ledger: Ledger,
}

impl SavedState {
    /// The format this build writes.
    pub const VERSION: u32 = 1;

    fn new(ledger: Ledger) -> Self {
        SavedState {
            version: Self::VERSION,
            ledger,
        }
    }
}

/// Reads and validates the config at `path` as the daemon starts from it:
/// the file, the certificates and keys it names, and each connection
/// built from them. `xdpsec check --ike` calls this too, so that a config
/// it passes is one the daemon starts with.
pub fn load_config(
    path: &std::path::Path,
) -> Result<(Arc<IkeConfig>, Vec<Connection>), crate::config::ConfigError> {
    let config = IkeConfig::load(path)?;
    let credentials = config.load_credentials(path)?;
    let config = Arc::new(config);
    // Its messages start with the field (`connections.gw.proposals: ...`).
    let connections = Connection::all_from_config(&config, &credentials).map_err(|reason| {
        crate::config::ConfigError {
            file: path.to_owned(),
            field: None,
            reason,
            location: None,
        }
    })?;
    Ok((config, connections))
}

/// What the daemon checks of `config` (read from `path`) against this
/// host before it runs, for `xdpsec check`: the `[daemon]` user and group
/// it drops to exist. Changes nothing.
pub fn check_host(config: &IkeConfig, path: &std::path::Path) -> Vec<crate::config::ConfigError> {
    match &config.daemon.user {
        Some(user) => privilege::resolve(user, config.daemon.group.as_deref())
            .err()
            .map(|e| host_error(path, &e))
            .into_iter()
            .collect(),
        None => Vec::new(),
    }
}

/// A config that does not fit this host, as a config error (its message
/// starts with the field: `daemon.user: ...`).
fn host_error(path: &std::path::Path, e: &anyhow::Error) -> crate::config::ConfigError {
    crate::config::ConfigError {
        file: path.to_owned(),
        field: None,
        reason: format!("{e:#}"),
        location: None,
    }
}

/// Runs the daemon until SIGTERM or SIGINT, then deletes its IKE SAs
/// (telling the peers) and exits. Errors name what failed (the config
/// field, the socket, the missing capability).
pub fn run(options: &DaemonOptions) -> anyhow::Result<()> {
    let (config, connections) = load_config(&options.config)?;
    let mut settings = Settings::from_daemon(&config.daemon);
    if let Some(p) = options.ike_port {
        settings.ike_port = p;
    }
    if let Some(p) = options.nat_t_port {
        settings.natt_port = p;
    }
    let api_socket = options
        .api_socket
        .clone()
        .unwrap_or_else(|| config.daemon.api_socket.clone());
    let ctl_socket = options
        .ctl_socket
        .clone()
        .unwrap_or_else(|| config.daemon.control_socket.clone());

    let notifier = Notifier::from_env().context("reading NOTIFY_SOCKET")?;
    // Signals first: a SIGTERM during start-up must not kill the process
    // half-way (it would leave SAs without a ledger).
    let (signals, signal_writer) = UnixStream::pair().context("creating the signal pipe")?;
    signals.set_nonblocking(true)?;
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::low_level::pipe::register(sig, signal_writer.try_clone()?)
            .context("installing the signal handler")?;
    }

    let ports = (settings.ike_port, settings.natt_port);
    let sockets = IkeSockets::bind(&config.daemon.listen, settings.ike_port, settings.natt_port)
        .context("binding the IKE sockets")?;
    let mut installer = Installer::new(connect_api(&api_socket)?);
    let mut events_api = connect_api(&api_socket)?;
    events_api
        .subscribe_events()
        .context("subscribing to the data plane's lifetime events")?;
    events_api.set_nonblocking(true)?;

    let state = StateFile::new(&options.state_file);
    let mut ledger = match state.load::<SavedState>() {
        Ok(Some(saved)) if saved.version == SavedState::VERSION => saved.ledger,
        Ok(Some(saved)) => {
            tracing::warn!(
                version = saved.version,
                "state file {} has another format; starting without it",
                state.path().display()
            );
            Ledger::default()
        }
        Ok(None) => Ledger::default(),
        Err(e) => {
            tracing::warn!("{e}; starting without the state file");
            Ledger::default()
        }
    };
    ledger.orphan_all();
    let held = installer
        .api()
        .list_sas()
        .context("listing the data plane's SAs")?;
    let held_in: BTreeSet<u32> = held
        .iter()
        .filter(|s| s.direction == Direction::In)
        .map(|s| s.spi)
        .collect();
    let held_out: BTreeSet<u32> = held
        .iter()
        .filter(|s| s.direction == Direction::Out)
        .map(|s| s.spi)
        .collect();
    // What the data plane no longer holds (it restarted, or the SAs
    // expired) is forgotten.
    ledger.orphans.retain(|o| {
        o.spi_in.is_some_and(|s| held_in.contains(&s))
            || o.spi_out.is_some_and(|s| held_out.contains(&s))
    });
    let known: BTreeSet<&str> = connections.iter().map(|c| c.name.as_str()).collect();
    let (keep, gone): (Vec<_>, Vec<_>) = std::mem::take(&mut ledger.orphans)
        .into_iter()
        .partition(|o| o.connection.as_deref().is_none_or(|c| known.contains(c)));
    ledger.orphans = keep;
    for o in &gone {
        tracing::info!(
            connection = o.connection.as_deref().unwrap_or("?"),
            "connection no longer configured; removing its SAs of the previous run"
        );
        installer
            .remove_orphan(o)
            .context("removing SAs of a connection that is no longer configured")?;
    }
    if !ledger.orphans.is_empty() {
        tracing::info!(
            children = ledger.orphans.len(),
            "resuming after a restart: the children of the previous run stay installed until \
             their connections are up again"
        );
    }

    let mut child_life = HashMap::new();
    let mut child_volume = HashMap::new();
    let mut to_initiate: Vec<String> = Vec::new();
    for (name, conn) in &config.connections {
        for (child, c) in &conn.children {
            if let Some(life) = c.hard_life_time() {
                child_life.insert((name.clone(), child.clone()), life);
            }
            let limit = |n: u64| (n > 0).then_some(n);
            let volume = xdpsec_api::Lifetimes {
                soft_bytes: limit(c.rekey_bytes),
                hard_bytes: limit(c.hard_life_bytes()),
                soft_packets: limit(c.rekey_packets),
                hard_packets: limit(c.hard_life_packets()),
            };
            if !volume.is_empty() {
                child_volume.insert((name.clone(), child.clone()), volume);
            }
        }
    }
    for c in &connections {
        let restarted = ledger
            .orphans
            .iter()
            .any(|o| o.connection.as_deref() == Some(c.name.as_str()));
        let can_initiate = c.remote_addrs.iter().any(|a| a.addr().is_some());
        if (c.starts_on_load() || restarted) && can_initiate {
            to_initiate.push(c.name.clone());
        }
    }

    let mut endpoint = Endpoint::new(settings, connections, Box::new(SystemRandom));
    endpoint.set_resources(install::data_plane_workers(installer.api()));
    // Certificates are checked against the calendar.
    endpoint.set_wall_clock(Instant::now(), SystemTime::now());
    endpoint.reserve_spis(held_in.iter().copied());
    let ctl = CtlServer::bind(&ctl_socket)
        .with_context(|| format!("serving the control socket {}", ctl_socket.display()))?;
    // Everything that needed privilege is open: what is left parses what
    // the network sends.
    match (&config.daemon.user, &config.daemon.group) {
        (Some(user), group) => {
            let target = privilege::resolve(user, group.as_deref())
                .map_err(|e| host_error(&options.config, &e))?;
            privilege::prepare_state_dir(&options.state_file, target)?;
            privilege::drop_to(target)?;
            tracing::info!(
                uid = target.uid.as_raw(),
                gid = target.gid.as_raw(),
                "running as {user} with no capabilities"
            );
        }
        (None, Some(_)) => anyhow::bail!("daemon.group is set without daemon.user"),
        (None, None) => {}
    }
    let mut driver = driver::Driver::new(
        endpoint,
        sockets,
        ctl,
        installer,
        events_api,
        api_socket.clone(),
        ledger,
        state,
        signals,
        child_life,
        child_volume,
    );
    let now = Instant::now();
    driver.schedule_orphan_expiry(now);
    for name in to_initiate {
        match driver.endpoint.initiate(now, &name) {
            Ok(ike) => tracing::info!(connection = %name, %ike, "initiating"),
            Err(e) => tracing::warn!(connection = %name, "cannot initiate: {e}"),
        }
    }
    tracing::info!(
        config = %options.config.display(),
        control = %ctl_socket.display(),
        api = %api_socket.display(),
        "xdpsec ike running"
    );
    // Ready once the IKE and control sockets are bound and the data plane
    // answered: `xdpsec initiate` works from here on.
    if let Err(e) = notifier.ready(&format!(
        "IKE on UDP {} and {}, control {}",
        ports.0,
        ports.1,
        ctl_socket.display()
    )) {
        tracing::warn!("telling the service manager the IKE daemon is ready: {e}");
    }
    driver.watchdog = notifier.watchdog();
    let exit = driver.run()?;
    notifier.stopping().ok();
    tracing::info!(?exit, "stopping: deleting IKE SAs");
    driver.shut_down()?;
    tracing::info!("stopped");
    Ok(())
}

/// Connects to the SA API, waiting (bounded) for the data plane to start.
fn connect_api(path: &std::path::Path) -> anyhow::Result<ApiClient> {
    let deadline = Instant::now() + API_WAIT;
    loop {
        match ApiClient::connect(path) {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("waiting for the data plane: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "connecting to the data plane's SA API at {} (is `xdpsec dataplane` \
                         running, and may this user open its socket?)",
                        path.display()
                    )
                })
            }
        }
    }
}
