//! The SA API server inside the data plane: a Unix socket (mode 0600) whose
//! connections each get a thread running [`serve_connection_with`], a bounded
//! number at a time. Requests edit or read the [`Tables`]; every successful
//! edit is followed by the `on_change` callback (the daemon updates the XDP
//! maps there). One more thread turns the workers' soft-expiry reports into
//! events and scans the SAs once a second for hard expiries and idle SAs.
//!
//! Nothing here is on the packet path: the workers only see the tables'
//! snapshots and push [`SoftExpiry`] reports into a channel.

use crate::pipeline::SoftExpiry;
use crate::stats::WorkerStatsCell;
use crate::tables::{TableError, Tables};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use thiserror::Error;
use xdpsec_api::framing::write_message;
use xdpsec_api::{
    bind_api_socket_for_group, serve_connection_with, Direction, ErrorCode, Event, Handler,
    LifetimeKind, Request, Response, SaInfo, ServeOptions, ServerMessage,
};

/// Brings the rest of the data plane (XDP maps, the guard, the state
/// directory) in line with the tables after an edit; an error undoes the
/// edit.
pub type OnChange = Box<dyn Fn(&Tables) -> Result<(), String> + Send + Sync>;

/// What the server shares with the rest of the data plane.
pub struct ApiShared {
    /// The SA and policy tables the requests edit.
    pub tables: Arc<Tables>,
    /// The workers' statistics, for `worker_stats`.
    pub workers: Arc<[WorkerStatsCell]>,
    /// Soft-lifetime reports from the workers, pushed to subscribers.
    pub expiries: Receiver<SoftExpiry>,
    /// Called after every successful add or delete, with the tables as they
    /// are then (edits and calls are serialised, so calls come in edit order);
    /// if it fails, the edit is undone and the request fails.
    pub on_change: OnChange,
}

impl fmt::Debug for ApiShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiShared")
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

/// Most connections served at once unless told otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 32;
/// An SA that carried nothing for this long is reported idle once.
pub const DEFAULT_IDLE_AFTER: Duration = Duration::from_secs(300);
/// How often the SAs are scanned for hard expiries and idleness.
pub const DEFAULT_SCAN_INTERVAL: Duration = Duration::from_secs(1);

/// Events queued for one subscriber (a few MB at most): 5000 SAs crossing
/// their soft limit at once fit many times over. A subscriber this far
/// behind is disconnected, so it knows it missed events.
const SUBSCRIBER_QUEUE: usize = 65_536;
/// How long the accept loop sleeps when no connection is waiting; also the
/// longest a drop of [`ApiServer`] waits for it.
const ACCEPT_POLL: Duration = Duration::from_millis(20);
/// The event thread's longest wait, so that it notices a stop quickly.
const EVENT_POLL: Duration = Duration::from_millis(50);
/// How long a refused connection may hold up the accept loop.
const REFUSE_WAIT: Duration = Duration::from_millis(100);

/// Knobs of [`spawn_with`].
#[derive(Debug, Clone)]
pub struct ApiServerOptions {
    /// Connections served at once; more are answered with an error and
    /// closed.
    pub max_connections: usize,
    /// Idle time after which an SA is reported with [`Event::IdleSa`]
    /// (time since install for an SA that never carried a packet).
    pub idle_after: Duration,
    /// How often the SAs are scanned for hard expiries and idleness.
    pub scan_interval: Duration,
    /// Per-connection protocol options.
    pub serve: ServeOptions,
    /// The group (gid) that may connect, besides root: the socket is then
    /// mode 0660 (`[dataplane] api_socket_group`).
    pub socket_group: Option<u32>,
}

impl Default for ApiServerOptions {
    fn default() -> Self {
        ApiServerOptions {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_after: DEFAULT_IDLE_AFTER,
            scan_interval: DEFAULT_SCAN_INTERVAL,
            serve: ServeOptions::default(),
            socket_group: None,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, Error)]
pub enum ApiServerError {
    /// The socket could not be bound (the message names the path).
    #[error("binding the SA API socket: {0}")]
    Bind(#[source] io::Error),
    /// The socket could not be set up after binding.
    #[error("setting up the SA API socket {}: {source}", path.display())]
    Socket { path: PathBuf, source: io::Error },
    /// A thread could not be started.
    #[error("starting the SA API {what} thread: {source}")]
    Thread {
        what: &'static str,
        source: io::Error,
    },
    /// A knob is out of range.
    #[error("invalid SA API server option: {0}")]
    Options(String),
}

/// The running server. Dropping it stops its threads (closing every client
/// connection) and removes the socket file, unless someone else has replaced
/// it in the meantime.
pub struct ApiServer {
    path: PathBuf,
    /// Device and inode of the socket file we bound.
    socket_id: Option<(u64, u64)>,
    stop: Arc<AtomicBool>,
    connections: Arc<Connections>,
    accept: Option<JoinHandle<()>>,
    events: Option<JoinHandle<()>>,
}

impl fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiServer")
            .field("path", &self.path)
            .field("connections", &self.connections.count())
            .finish_non_exhaustive()
    }
}

impl ApiServer {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Connections being served right now.
    pub fn connections(&self) -> usize {
        self.connections.count()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // The accept thread closes the live connections and joins their
        // threads before it returns.
        if let Some(t) = self.accept.take() {
            t.join().ok();
        }
        if let Some(t) = self.events.take() {
            t.join().ok();
        }
        let ours = std::fs::symlink_metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if ours.is_some() && ours == self.socket_id {
            std::fs::remove_file(&self.path).ok();
        }
    }
}

/// Binds `path` (mode 0600) and serves the SA API with default options.
pub fn spawn(path: &Path, shared: ApiShared) -> Result<ApiServer, ApiServerError> {
    spawn_with(path, shared, ApiServerOptions::default())
}

/// Binds `path` (mode 0600) and serves the SA API.
pub fn spawn_with(
    path: &Path,
    shared: ApiShared,
    options: ApiServerOptions,
) -> Result<ApiServer, ApiServerError> {
    if options.max_connections == 0 {
        return Err(ApiServerError::Options(
            "max_connections must be at least 1".to_owned(),
        ));
    }
    if options.scan_interval.is_zero() {
        return Err(ApiServerError::Options(
            "scan_interval must be more than zero".to_owned(),
        ));
    }
    let listener =
        bind_api_socket_for_group(path, options.socket_group).map_err(ApiServerError::Bind)?;
    let socket_err = |source| ApiServerError::Socket {
        path: path.to_owned(),
        source,
    };
    // A bound socket is removed again on any later failure.
    let cleanup = |e: ApiServerError| {
        std::fs::remove_file(path).ok();
        e
    };
    let socket_id = std::fs::symlink_metadata(path)
        .map(|m| (m.dev(), m.ino()))
        .map_err(|e| cleanup(socket_err(e)))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| cleanup(socket_err(e)))?;

    let ApiShared {
        tables,
        workers,
        expiries,
        on_change,
    } = shared;
    let state = Arc::new(State {
        tables,
        workers,
        on_change,
        edit: Mutex::new(()),
        subscribers: Subscribers::default(),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let connections = Arc::new(Connections::default());

    let events = {
        let (state, stop, options) = (state.clone(), stop.clone(), options.clone());
        std::thread::Builder::new()
            .name("xdpsec-api-events".to_owned())
            .spawn(move || event_loop(&state, &expiries, &stop, &options))
            .map_err(|source| {
                cleanup(ApiServerError::Thread {
                    what: "event",
                    source,
                })
            })?
    };
    let accept = {
        let (stop, connections) = (stop.clone(), connections.clone());
        std::thread::Builder::new()
            .name("xdpsec-api-accept".to_owned())
            .spawn(move || accept_loop(&listener, &state, &connections, &stop, &options))
    };
    let accept = match accept {
        Ok(t) => t,
        Err(source) => {
            stop.store(true, Ordering::Relaxed);
            events.join().ok();
            return Err(cleanup(ApiServerError::Thread {
                what: "accept",
                source,
            }));
        }
    };
    Ok(ApiServer {
        path: path.to_owned(),
        socket_id: Some(socket_id),
        stop,
        connections,
        accept: Some(accept),
        events: Some(events),
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here leaves its data consistent.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What every connection thread and the event thread share.
struct State {
    tables: Arc<Tables>,
    workers: Arc<[WorkerStatsCell]>,
    on_change: OnChange,
    /// Serialises edit + `on_change`, so the callbacks come in edit order.
    edit: Mutex<()>,
    subscribers: Subscribers,
}

/// The live connections, so that a stop can close them.
#[derive(Default)]
struct Connections {
    next: Mutex<u64>,
    live: Mutex<HashMap<u64, UnixStream>>,
}

impl Connections {
    fn count(&self) -> usize {
        lock(&self.live).len()
    }

    fn register(&self, stream: UnixStream) -> u64 {
        let id = {
            let mut next = lock(&self.next);
            *next += 1;
            *next
        };
        lock(&self.live).insert(id, stream);
        id
    }

    fn close_all(&self) {
        for stream in lock(&self.live).values() {
            stream.shutdown(std::net::Shutdown::Both).ok();
        }
    }
}

/// Unregisters a connection when its thread ends, however it ends.
struct Registration {
    connections: Arc<Connections>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.connections.live).remove(&self.id);
    }
}

fn accept_loop(
    listener: &UnixListener,
    state: &Arc<State>,
    connections: &Arc<Connections>,
    stop: &AtomicBool,
    options: &ApiServerOptions,
) {
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        threads.retain(|t| !t.is_finished());
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(ACCEPT_POLL);
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // Out of file descriptors and the like: wait and retry.
                tracing::warn!("SA API: accept: {e}");
                std::thread::sleep(ACCEPT_POLL * 5);
                continue;
            }
        };
        if let Err(e) = serve_one(stream, state, connections, options, &mut threads) {
            tracing::warn!("SA API: {e}");
        }
    }
    connections.close_all();
    for t in threads {
        t.join().ok();
    }
}

fn serve_one(
    stream: UnixStream,
    state: &Arc<State>,
    connections: &Arc<Connections>,
    options: &ApiServerOptions,
    threads: &mut Vec<JoinHandle<()>>,
) -> io::Result<()> {
    // The listener is non-blocking; its connections must not be.
    stream.set_nonblocking(false)?;
    if connections.count() >= options.max_connections {
        return refuse(stream, options.max_connections);
    }
    let registration = Registration {
        connections: connections.clone(),
        id: connections.register(stream.try_clone()?),
    };
    let state = state.clone();
    let serve = options.serve.clone();
    let thread = std::thread::Builder::new()
        .name("xdpsec-api-conn".to_owned())
        .spawn(move || {
            let _registration = registration;
            let mut handler = Connection { state };
            if let Err(e) = serve_connection_with(stream, &mut handler, &serve) {
                // A client that went away or stopped reading; not our failure.
                if !matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::NotConnected
                ) {
                    tracing::warn!("SA API connection: {e}");
                }
            }
        })?;
    threads.push(thread);
    Ok(())
}

/// Tells a client over the limit why it is being closed.
fn refuse(mut stream: UnixStream, max: usize) -> io::Result<()> {
    stream.set_write_timeout(Some(REFUSE_WAIT))?;
    stream.set_read_timeout(Some(REFUSE_WAIT))?;
    write_message(
        &mut stream,
        &ServerMessage::Reply {
            id: None,
            response: Response::error(
                ErrorCode::Internal,
                format!("too many SA API connections (at most {max}); try again later"),
            ),
        },
    )?;
    // Take the client's hello before closing, so that its write does not
    // fail before it has read why (a closed peer makes writes fail).
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut hello = [0u8; 256];
    let _ = io::Read::read(&mut stream, &mut hello);
    Ok(())
}

/// One connection's handler.
struct Connection {
    state: Arc<State>,
}

impl Connection {
    /// Applies an edit and, if it succeeded, tells `on_change`. If that
    /// fails (an XDP map or the guard refused the change), the edit is
    /// undone and the request fails with the reason: nothing is left half
    /// applied.
    fn edit(&self, f: impl FnOnce(&Tables) -> Result<(), TableError>) -> Response {
        let state = &self.state;
        let _serial = lock(&state.edit);
        let before = state.tables.checkpoint();
        match f(&state.tables) {
            Ok(()) => match (state.on_change)(&state.tables) {
                Ok(()) => Response::Ok,
                Err(e) => {
                    state.tables.restore(before);
                    if let Err(again) = (state.on_change)(&state.tables) {
                        tracing::error!(
                            "the XDP maps or the guard could not be put back after a failed \
                             change: {again}"
                        );
                    }
                    Response::error(ErrorCode::Internal, format!("the change was undone: {e}"))
                }
            },
            Err(e) => table_error(&e),
        }
    }
}

fn table_error(e: &TableError) -> Response {
    let code = match e {
        TableError::SaExists { .. } | TableError::PolicyExists(_) => ErrorCode::AlreadyExists,
        TableError::NoSuchSa { .. } | TableError::NoSuchPolicy(_) => ErrorCode::NotFound,
        TableError::PolicySaMissing(_) | TableError::InvalidSa(_) => ErrorCode::InvalidArgument,
        TableError::Unsupported(_) => ErrorCode::Unsupported,
    };
    Response::error(code, e.to_string())
}

impl Handler for Connection {
    fn handle(&mut self, request: Request) -> Response {
        let state = &self.state;
        match request {
            Request::AddSa { sa } => self.edit(|t| t.add_sa(&sa)),
            Request::DeleteSa { spi, direction } => self.edit(|t| t.delete_sa(spi, direction)),
            Request::AddPolicy { policy } => self.edit(|t| t.add_policy(policy)),
            Request::ReplacePolicy { policy } => self.edit(|t| t.replace_policy(policy)),
            Request::DeletePolicy { policy } => self.edit(|t| t.delete_policy(&policy)),
            Request::UpdateSa { update } => self.edit(|t| t.update_sa(&update)),
            Request::ListSas => Response::Sas {
                sas: state.tables.load().sa_infos(),
            },
            Request::ListPolicies => Response::Policies {
                policies: state.tables.policies(),
            },
            Request::WorkerStats => Response::WorkerStats {
                workers: state
                    .workers
                    .iter()
                    .map(WorkerStatsCell::snapshot)
                    .collect(),
            },
            // The framing answers these itself.
            Request::Hello { .. } | Request::SubscribeEvents => Response::error(
                ErrorCode::Internal,
                format!("{} reached the request handler", request.op()),
            ),
        }
    }

    fn subscribe(&mut self) -> Option<Receiver<Event>> {
        Some(self.state.subscribers.add())
    }
}

/// The event subscribers: one bounded channel each.
#[derive(Default)]
struct Subscribers {
    senders: Mutex<Vec<SyncSender<Event>>>,
}

impl Subscribers {
    fn add(&self) -> Receiver<Event> {
        let (tx, rx) = sync_channel(SUBSCRIBER_QUEUE);
        lock(&self.senders).push(tx);
        rx
    }

    /// Sends `event` to every subscriber, forgetting those that are gone.
    fn publish(&self, event: &Event) {
        lock(&self.senders).retain(|tx| match tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                tracing::warn!(
                    "SA API: a subscriber fell {SUBSCRIBER_QUEUE} events behind; disconnecting \
                     it rather than let it miss {event:?} unawares"
                );
                false
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
    }
}

/// The events of one soft-expiry report: one per limit reached. Running
/// out of sequence numbers is a packet limit.
pub fn soft_expiry_events(expiry: &SoftExpiry) -> Vec<Event> {
    let direction = if expiry.outbound {
        Direction::Out
    } else {
        Direction::In
    };
    let mut reasons = Vec::with_capacity(2);
    if expiry.event.soft_packets || expiry.event.seq_nearly_exhausted {
        reasons.push(LifetimeKind::Packets);
    }
    if expiry.event.soft_bytes {
        reasons.push(LifetimeKind::Bytes);
    }
    reasons
        .into_iter()
        .map(|reason| Event::SoftLifetimeExpired {
            spi: expiry.spi,
            direction,
            reason,
        })
        .collect()
}

/// What the scanner remembers of an SA.
#[derive(Debug, Default)]
struct Tracked {
    age_ms: u64,
    hard_reported: bool,
    idle_reported: bool,
    /// Soft limits reported, by [`LifetimeKind`]: packets, bytes.
    soft_reported: [bool; 2],
}

fn soft_slot(kind: LifetimeKind) -> usize {
    match kind {
        LifetimeKind::Packets => 0,
        LifetimeKind::Bytes => 1,
    }
}

/// The soft limits an SA's counters have reached. The workers report a
/// crossing the moment it happens, through a bounded queue; this is what
/// the scan finds when a report was lost (5000 SAs crossing at once), so
/// that no SA runs into its hard limit unreported.
fn soft_reached(info: &SaInfo) -> Vec<LifetimeKind> {
    let lifetime = &info.lifetime;
    let seq_max: u64 = if info.esn {
        u64::MAX
    } else {
        u64::from(u32::MAX)
    };
    let seq_nearly_exhausted =
        info.direction == Direction::Out && info.seq >= seq_max - (seq_max >> 4);
    let mut reached = Vec::new();
    if seq_nearly_exhausted
        || lifetime
            .soft_packets
            .is_some_and(|n| info.counters.packets >= n)
    {
        reached.push(LifetimeKind::Packets);
    }
    if lifetime
        .soft_bytes
        .is_some_and(|n| info.counters.bytes >= n)
    {
        reached.push(LifetimeKind::Bytes);
    }
    reached
}

/// Finds hard expiries and idle SAs, each reported once (an SA that carries
/// traffic again can be reported idle again later).
#[derive(Debug)]
struct Scanner {
    idle_after_ms: u64,
    seen: HashMap<(u32, Direction), Tracked>,
}

impl Scanner {
    fn new(idle_after: Duration) -> Scanner {
        Scanner {
            idle_after_ms: u64::try_from(idle_after.as_millis()).unwrap_or(u64::MAX),
            seen: HashMap::new(),
        }
    }

    /// Whether a worker's soft-expiry report is the first for its SA and
    /// limit (the scan may have found it first); notes it either way.
    fn first_soft_report(&mut self, event: &Event) -> bool {
        let Event::SoftLifetimeExpired {
            spi,
            direction,
            reason,
        } = event
        else {
            return true;
        };
        let t = self.seen.entry((*spi, *direction)).or_default();
        !std::mem::replace(&mut t.soft_reported[soft_slot(*reason)], true)
    }

    fn scan(&mut self, infos: &[SaInfo], out: &mut Vec<Event>) {
        let present: HashSet<(u32, Direction)> =
            infos.iter().map(|i| (i.spi, i.direction)).collect();
        self.seen.retain(|key, _| present.contains(key));
        for info in infos {
            let t = self
                .seen
                .entry((info.spi, info.direction))
                .or_insert(Tracked {
                    age_ms: info.age_ms,
                    ..Tracked::default()
                });
            if info.age_ms < t.age_ms {
                // Deleted and added again between two scans: a new SA.
                *t = Tracked::default();
            }
            t.age_ms = info.age_ms;
            for reason in soft_reached(info) {
                if !std::mem::replace(&mut t.soft_reported[soft_slot(reason)], true) {
                    out.push(Event::SoftLifetimeExpired {
                        spi: info.spi,
                        direction: info.direction,
                        reason,
                    });
                }
            }
            if !t.hard_reported {
                if let Some(reason) = hard_expiry(info) {
                    t.hard_reported = true;
                    out.push(Event::HardLifetimeExpired {
                        spi: info.spi,
                        direction: info.direction,
                        reason,
                    });
                }
            }
            let idle_ms = info.last_used_ms.unwrap_or(info.age_ms);
            if idle_ms < self.idle_after_ms {
                t.idle_reported = false;
            } else if !t.idle_reported {
                t.idle_reported = true;
                out.push(Event::IdleSa {
                    spi: info.spi,
                    direction: info.direction,
                    idle_ms,
                });
            }
        }
    }
}

/// Whether the SA has refused traffic for a hard limit, and which one.
fn hard_expiry(info: &SaInfo) -> Option<LifetimeKind> {
    let drops = |name: &str| info.counters.drops.get(name).copied().unwrap_or(0);
    if drops("sequence_exhausted") > 0 {
        return Some(LifetimeKind::Packets);
    }
    if drops("lifetime_expired") == 0 {
        return None;
    }
    let lifetime = &info.lifetime;
    let packets_hit = lifetime
        .hard_packets
        .is_some_and(|n| info.counters.packets >= n);
    let bytes_hit = lifetime
        .hard_bytes
        .is_some_and(|n| info.counters.bytes >= n);
    Some(if bytes_hit && !packets_hit {
        LifetimeKind::Bytes
    } else if packets_hit || lifetime.hard_bytes.is_none() {
        LifetimeKind::Packets
    } else {
        // A byte limit is set and the carried bytes are below it: the
        // refused packet would have crossed it.
        LifetimeKind::Bytes
    })
}

fn event_loop(
    state: &State,
    expiries: &Receiver<SoftExpiry>,
    stop: &AtomicBool,
    options: &ApiServerOptions,
) {
    let mut scanner = Scanner::new(options.idle_after);
    let mut next_scan = Instant::now() + options.scan_interval;
    let mut expiries_open = true;
    let mut events = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let wait = next_scan
            .saturating_duration_since(Instant::now())
            .min(EVENT_POLL);
        if expiries_open {
            let first = match expiries.recv_timeout(wait) {
                Ok(expiry) => Some(expiry),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    expiries_open = false;
                    None
                }
            };
            for expiry in first
                .into_iter()
                .chain(std::iter::from_fn(|| expiries.try_recv().ok()))
            {
                for event in soft_expiry_events(&expiry) {
                    if scanner.first_soft_report(&event) {
                        state.subscribers.publish(&event);
                    }
                }
            }
        } else {
            std::thread::sleep(wait);
        }
        if Instant::now() >= next_scan {
            next_scan = Instant::now() + options.scan_interval;
            scanner.scan(&state.tables.load().sa_infos(), &mut events);
            for event in events.drain(..) {
                state.subscribers.publish(&event);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sa::LifetimeEvent;
    use std::net::{IpAddr, Ipv4Addr};
    use xdpsec_api::messages::SaCounters;
    use xdpsec_api::Lifetimes;

    fn info(spi: u32, age_ms: u64, last_used_ms: Option<u64>) -> SaInfo {
        let addr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1));
        SaInfo {
            spi,
            direction: Direction::Out,
            cipher: "aes-gcm-128".to_owned(),
            esn: false,
            replay_window: 0,
            tunnel_local: addr,
            tunnel_remote: addr,
            encap: None,
            selectors: Vec::new(),
            lifetime: Lifetimes::default(),
            seq: 0,
            counters: SaCounters::default(),
            age_ms,
            last_used_ms,
            mtu: None,
            resource: None,
        }
    }

    #[test]
    fn soft_expiry_maps_flags_to_kinds() {
        let report = |soft_packets, soft_bytes, seq_nearly_exhausted| SoftExpiry {
            spi: 0x1234,
            outbound: false,
            event: LifetimeEvent {
                soft_packets,
                soft_bytes,
                seq_nearly_exhausted,
            },
        };
        let kinds = |e: &SoftExpiry| -> Vec<LifetimeKind> {
            soft_expiry_events(e)
                .into_iter()
                .map(|ev| match ev {
                    Event::SoftLifetimeExpired {
                        spi: 0x1234,
                        direction: Direction::In,
                        reason,
                    } => reason,
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        assert_eq!(kinds(&report(false, false, false)), vec![]);
        assert_eq!(
            kinds(&report(true, false, false)),
            vec![LifetimeKind::Packets]
        );
        assert_eq!(
            kinds(&report(false, true, false)),
            vec![LifetimeKind::Bytes]
        );
        assert_eq!(
            kinds(&report(false, false, true)),
            vec![LifetimeKind::Packets]
        );
        assert_eq!(
            kinds(&report(true, true, true)),
            vec![LifetimeKind::Packets, LifetimeKind::Bytes]
        );
    }

    #[test]
    fn hard_expiry_reason() {
        let mut i = info(0x100, 0, None);
        assert_eq!(hard_expiry(&i), None);
        i.counters.drops.insert("replayed".to_owned(), 3);
        assert_eq!(hard_expiry(&i), None);
        i.counters.drops.insert("lifetime_expired".to_owned(), 1);
        assert_eq!(hard_expiry(&i), Some(LifetimeKind::Packets));
        i.lifetime.hard_bytes = Some(1000);
        i.counters.bytes = 990;
        assert_eq!(hard_expiry(&i), Some(LifetimeKind::Bytes));
        i.lifetime.hard_packets = Some(10);
        i.counters.packets = 10;
        assert_eq!(hard_expiry(&i), Some(LifetimeKind::Packets));
        let mut s = info(0x100, 0, None);
        s.counters.drops.insert("sequence_exhausted".to_owned(), 1);
        assert_eq!(hard_expiry(&s), Some(LifetimeKind::Packets));
    }

    #[test]
    fn scanner_reports_each_once() {
        let mut scanner = Scanner::new(Duration::from_millis(1000));
        let mut out = Vec::new();
        let mut sa = info(0x100, 10, None);
        scanner.scan(&[sa.clone()], &mut out);
        assert!(out.is_empty(), "{out:?}");

        sa.counters.drops.insert("lifetime_expired".to_owned(), 1);
        sa.age_ms = 1500;
        scanner.scan(&[sa.clone()], &mut out);
        assert_eq!(
            out,
            vec![
                Event::HardLifetimeExpired {
                    spi: 0x100,
                    direction: Direction::Out,
                    reason: LifetimeKind::Packets
                },
                Event::IdleSa {
                    spi: 0x100,
                    direction: Direction::Out,
                    idle_ms: 1500
                }
            ]
        );
        out.clear();
        sa.age_ms = 2500;
        sa.counters.drops.insert("lifetime_expired".to_owned(), 7);
        scanner.scan(&[sa.clone()], &mut out);
        assert!(out.is_empty(), "{out:?}");

        // Traffic again, then idle again: reported again.
        sa.age_ms = 3000;
        sa.last_used_ms = Some(5);
        scanner.scan(&[sa.clone()], &mut out);
        assert!(out.is_empty(), "{out:?}");
        sa.age_ms = 5000;
        sa.last_used_ms = Some(2000);
        scanner.scan(&[sa.clone()], &mut out);
        assert_eq!(
            out,
            vec![Event::IdleSa {
                spi: 0x100,
                direction: Direction::Out,
                idle_ms: 2000
            }]
        );
        out.clear();

        // Re-added under the same SPI (younger): a new SA.
        let mut fresh = info(0x100, 20, None);
        fresh
            .counters
            .drops
            .insert("sequence_exhausted".to_owned(), 1);
        scanner.scan(&[fresh], &mut out);
        assert_eq!(
            out,
            vec![Event::HardLifetimeExpired {
                spi: 0x100,
                direction: Direction::Out,
                reason: LifetimeKind::Packets
            }]
        );
        out.clear();

        // Gone: forgotten.
        scanner.scan(&[], &mut out);
        assert!(scanner.seen.is_empty());
    }
}
