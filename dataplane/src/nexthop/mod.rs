//! Next hops from the kernel's routing and neighbour tables (rtnetlink),
//! cached for the workers and refreshed on change.
//!
//! The data plane sends frames on AF_XDP sockets, below the kernel's IP
//! stack, so it writes the Ethernet header itself. [`NextHopCache::start`]
//! dumps the link, neighbour and route tables of the calling thread's
//! network namespace and publishes them as an immutable [`NextHopTable`]
//! snapshot. A monitor thread then follows the rtnetlink notifications
//! (links, IPv4 and IPv6 routes, neighbours), coalesces bursts, and swaps in
//! a new snapshot, RCU-style with `arc-swap`:
//!
//! - workers hold a [`NextHopReader`] and call [`NextHopReader::load`] (or
//!   [`NextHopReader::lookup`]) per batch: no lock, no system call, no
//!   allocation;
//! - a lookup answers [`Lookup::Resolved`] (interface, source and destination
//!   MAC, MTU) or [`Lookup::Miss`] with a [`MissReason`] to count the drop
//!   under;
//! - on a neighbour miss the worker hands the [`Miss`] to a [`Resolver`]
//!   (a non-blocking `try_send`); the resolver thread rate-limits per
//!   neighbour and asks the kernel to resolve it (RTM_NEWNEIGH with
//!   NTF_USE), and the answer arrives like any other neighbour change.
//!
//! Scope: the main routing table (254), by destination only (routes with a
//! source prefix or a TOS are ignored), unicast and reject routes, multipath
//! routes (first usable hop), gateways of either family (RTA_VIA). Routes
//! through nexthop objects (RTA_NH_ID) and policy routing rules are not
//! followed.
//!
//! Dropping the [`NextHopCache`] stops both threads and waits for them
//! (bounded: the monitor wakes at once, a request in flight gives up after
//! [`NextHopConfig::request_timeout`]). Readers and resolvers outlive it:
//! readers keep the last snapshot, resolvers answer `false`.

mod addresses;
mod monitor;
pub(crate) mod netlink;
mod resolver;
mod state;
mod table;

pub use addresses::interface_addresses;
pub use resolver::Resolver;
pub use table::{
    Hop, Interface, Lookup, Mac, Miss, MissReason, NeighbourKey, NeighbourState, NextHopTable,
    Resolved, Route, RouteTarget, TableBuilder,
};

use std::collections::HashMap;
use std::io::{self, PipeWriter};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, Guard};

use monitor::Monitor;
use netlink::{RtSocket, RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV6_ROUTE, RTNLGRP_LINK, RTNLGRP_NEIGH};
use resolver::{Request, ResolverThread};

/// What can go wrong talking to the kernel's rtnetlink.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NextHopError {
    /// A netlink socket could not be set up.
    #[error("cannot set up a NETLINK_ROUTE socket ({what}): {source}")]
    Socket {
        /// The step that failed.
        what: &'static str,
        /// Why.
        source: io::Error,
    },
    /// Sending or receiving failed.
    #[error("{what}: netlink I/O failed: {source}")]
    Io {
        /// The request.
        what: &'static str,
        /// Why.
        source: io::Error,
    },
    /// The kernel answered with an error.
    #[error("{what}: the kernel refused: {source}")]
    Kernel {
        /// The request.
        what: &'static str,
        /// The kernel's error.
        source: io::Error,
    },
    /// The kernel's answer did not parse.
    #[error("{what}: malformed netlink message from the kernel: {detail}")]
    Decode {
        /// The request.
        what: &'static str,
        /// The parser's complaint.
        detail: String,
    },
    /// The kernel did not answer in time.
    #[error("{what}: no answer from the kernel within {timeout:?}")]
    Timeout {
        /// The request.
        what: &'static str,
        /// How long it waited.
        timeout: Duration,
    },
    /// A dump kept being interrupted by concurrent changes.
    #[error("{what}: interrupted by concurrent changes {attempts} times in a row")]
    DumpInterrupted {
        /// The dump.
        what: &'static str,
        /// How many times it was tried.
        attempts: u32,
    },
    /// A background thread could not be started.
    #[error("cannot start the {name} thread: {source}")]
    Thread {
        /// Which thread.
        name: &'static str,
        /// Why.
        source: io::Error,
    },
}

/// Tuning of a [`NextHopCache`].
#[derive(Debug, Clone)]
pub struct NextHopConfig {
    /// A new snapshot is published once no notification arrived for this
    /// long...
    pub settle: Duration,
    /// ...or at the latest this long after the first unpublished one.
    pub max_delay: Duration,
    /// At most one resolution request per neighbour per interval.
    pub resolve_interval: Duration,
    /// Capacity of the queue between workers and the resolver thread.
    pub resolve_queue: usize,
    /// How long a dump or request waits for the kernel's answer.
    pub request_timeout: Duration,
}

impl Default for NextHopConfig {
    fn default() -> Self {
        NextHopConfig {
            settle: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
            resolve_interval: Duration::from_secs(1),
            resolve_queue: 1024,
            request_timeout: Duration::from_secs(2),
        }
    }
}

/// Counters of the control side, read with [`NextHopCache::stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    generation: AtomicU64,
    events: AtomicU64,
    full_dumps: AtomicU64,
    route_dumps: AtomicU64,
    overflows: AtomicU64,
    decode_errors: AtomicU64,
    errors: AtomicU64,
    resolve_sent: AtomicU64,
    resolve_limited: AtomicU64,
    resolve_failed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl Counters {
    pub(crate) fn set_last_error(&self, e: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    }
}

/// A snapshot of the cache's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Generation of the snapshot published last.
    pub generation: u64,
    /// Notifications applied.
    pub events: u64,
    /// Full dumps of links, neighbours and routes (1 at start, then one per
    /// overflow or unreadable notification).
    pub full_dumps: u64,
    /// Route table dumps after route or link changes.
    pub route_dumps: u64,
    /// Times the notification socket overflowed (ENOBUFS).
    pub overflows: u64,
    /// Notifications that did not parse.
    pub decode_errors: u64,
    /// Failed dumps and socket errors of the monitor thread.
    pub errors: u64,
    /// Resolution requests sent to the kernel.
    pub resolve_sent: u64,
    /// Resolution requests suppressed by the per-neighbour rate limit.
    pub resolve_limited: u64,
    /// Resolution requests the kernel refused.
    pub resolve_failed: u64,
    /// The last error of either thread, if any.
    pub last_error: Option<String>,
}

/// The workers' handle on the published snapshot. Cheap to clone.
#[derive(Debug, Clone)]
pub struct NextHopReader {
    table: Arc<ArcSwap<NextHopTable>>,
}

impl NextHopReader {
    /// The current snapshot. Lock-free and without system calls; hold the
    /// guard for a batch, not for long (it pins that snapshot).
    pub fn load(&self) -> Guard<Arc<NextHopTable>> {
        self.table.load()
    }

    /// The current snapshot, as an `Arc` the caller may keep.
    pub fn snapshot(&self) -> Arc<NextHopTable> {
        self.table.load_full()
    }

    /// [`NextHopTable::lookup`] on the current snapshot.
    pub fn lookup(&self, oif: Option<u32>, dst: IpAddr) -> Lookup {
        self.table.load().lookup(oif, dst)
    }
}

/// The next-hop cache: the published snapshot plus the monitor and resolver
/// threads. See the module documentation.
#[derive(Debug)]
pub struct NextHopCache {
    reader: NextHopReader,
    resolver: Resolver,
    counters: Arc<Counters>,
    /// Dropping it hangs up the monitor's stop pipe.
    stop: Option<PipeWriter>,
    monitor: Option<JoinHandle<()>>,
    resolver_thread: Option<JoinHandle<()>>,
}

impl NextHopCache {
    /// [`NextHopCache::start_with`] the default configuration.
    pub fn start() -> Result<Self, NextHopError> {
        Self::start_with(NextHopConfig::default())
    }

    /// Opens the netlink sockets in the calling thread's network namespace
    /// (they stay there, whichever thread uses them), subscribes to link,
    /// route and neighbour notifications, dumps the tables, publishes the
    /// first snapshot, and starts the monitor and resolver threads.
    pub fn start_with(config: NextHopConfig) -> Result<Self, NextHopError> {
        // Subscribe before dumping: a change racing with the dump is then
        // also queued as a notification, applied after the dump.
        let events = RtSocket::open(config.request_timeout)?;
        events.subscribe(&[
            RTNLGRP_LINK,
            RTNLGRP_NEIGH,
            RTNLGRP_IPV4_ROUTE,
            RTNLGRP_IPV6_ROUTE,
        ])?;
        let requests = RtSocket::open(config.request_timeout)?;
        let resolve_sock = RtSocket::open(config.request_timeout)?;

        let counters = Arc::new(Counters::default());
        let table = Arc::new(ArcSwap::from_pointee(NextHopTable::default()));
        let mut monitor = Monitor {
            events,
            requests,
            model: state::Model::default(),
            table: table.clone(),
            generation: 0,
            settle: config.settle,
            max_delay: config.max_delay,
            counters: counters.clone(),
        };
        monitor.full_dump()?;
        monitor.publish();

        let (stop_rx, stop_tx) = io::pipe().map_err(|source| NextHopError::Thread {
            name: "next-hop monitor",
            source,
        })?;
        let monitor = std::thread::Builder::new()
            .name("nexthop-monitor".into())
            .spawn(move || monitor.run(stop_rx))
            .map_err(|source| NextHopError::Thread {
                name: "next-hop monitor",
                source,
            })?;

        let (tx, rx) = mpsc::sync_channel(config.resolve_queue.max(1));
        let worker = ResolverThread {
            sock: resolve_sock,
            rx,
            interval: config.resolve_interval,
            counters: counters.clone(),
            recent: HashMap::new(),
            last_prune: Instant::now(),
        };
        let mut cache = NextHopCache {
            reader: NextHopReader { table },
            resolver: Resolver { tx },
            counters,
            stop: Some(stop_tx),
            monitor: Some(monitor),
            resolver_thread: None,
        };
        // On failure here, dropping `cache` stops the monitor.
        cache.resolver_thread = Some(
            std::thread::Builder::new()
                .name("nexthop-resolve".into())
                .spawn(move || worker.run())
                .map_err(|source| NextHopError::Thread {
                    name: "next-hop resolver",
                    source,
                })?,
        );
        Ok(cache)
    }

    /// A handle for workers to read snapshots.
    pub fn reader(&self) -> NextHopReader {
        self.reader.clone()
    }

    /// A handle for workers to request neighbour resolution.
    pub fn resolver(&self) -> Resolver {
        self.resolver.clone()
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<NextHopTable> {
        self.reader.snapshot()
    }

    /// [`NextHopTable::lookup`] on the current snapshot.
    pub fn lookup(&self, oif: Option<u32>, dst: IpAddr) -> Lookup {
        self.reader.lookup(oif, dst)
    }

    /// [`Resolver::request_resolution`].
    pub fn request_resolution(&self, ifindex: u32, addr: IpAddr) -> bool {
        self.resolver.request_resolution(ifindex, addr)
    }

    /// The control side's counters.
    pub fn stats(&self) -> CacheStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            generation: get(&c.generation),
            events: get(&c.events),
            full_dumps: get(&c.full_dumps),
            route_dumps: get(&c.route_dumps),
            overflows: get(&c.overflows),
            decode_errors: get(&c.decode_errors),
            errors: get(&c.errors),
            resolve_sent: get(&c.resolve_sent),
            resolve_limited: get(&c.resolve_limited),
            resolve_failed: get(&c.resolve_failed),
            last_error: c
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

impl Drop for NextHopCache {
    fn drop(&mut self) {
        // Hanging up the pipe wakes the monitor's poll().
        drop(self.stop.take());
        if let Some(t) = self.resolver_thread.take() {
            // Behind at most `resolve_queue` requests; fails only if the
            // thread is gone already.
            let _ = self.resolver.tx.send(Request::Stop);
            let _ = t.join();
        }
        if let Some(t) = self.monitor.take() {
            let _ = t.join();
        }
    }
}
