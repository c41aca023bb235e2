//! The monitor thread: applies rtnetlink notifications to the model and
//! publishes a new snapshot once a burst of changes has settled.

use std::io::{self, PipeReader};
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::neighbour::NeighbourMessage;
use netlink_packet_route::route::RouteMessage;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::netlink::{messages, RtSocket};
use super::state::{Change, Model};
use super::table::NextHopTable;
use super::{Counters, NextHopError};

/// How long to wait before retrying a dump that failed.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// At most this many datagrams are read before publishing is considered, so
/// an endless stream of notifications cannot starve the snapshot.
const MAX_DRAIN: usize = 1024;

#[derive(Debug)]
pub(crate) struct Monitor {
    pub(crate) events: RtSocket,
    pub(crate) requests: RtSocket,
    pub(crate) model: Model,
    pub(crate) table: Arc<ArcSwap<NextHopTable>>,
    pub(crate) generation: u64,
    pub(crate) settle: Duration,
    pub(crate) max_delay: Duration,
    pub(crate) counters: Arc<Counters>,
}

fn route_request(family: AddressFamily) -> RouteNetlinkMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = family;
    RouteNetlinkMessage::GetRoute(m)
}

/// Rounds up to whole milliseconds, so a wait never ends just before its
/// deadline and spins.
fn poll_timeout(d: Duration) -> PollTimeout {
    let ms = d.as_micros().div_ceil(1000);
    PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
}

impl Monitor {
    /// Dumps links, neighbours and routes into a fresh model, which replaces
    /// the current one only if every dump succeeded.
    pub(crate) fn full_dump(&mut self) -> Result<(), NextHopError> {
        let links = self.requests.dump(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            "link dump (RTM_GETLINK)",
        )?;
        let neighbours = self.requests.dump(
            RouteNetlinkMessage::GetNeighbour(NeighbourMessage::default()),
            "neighbour dump (RTM_GETNEIGH)",
        )?;
        let routes = self.dump_routes()?;
        let mut model = Model::default();
        model.set_links(&links);
        model.set_neighbours(&neighbours);
        model.set_routes(&routes);
        self.model = model;
        self.counters.full_dumps.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn dump_routes(&mut self) -> Result<Vec<RouteNetlinkMessage>, NextHopError> {
        let mut routes = self.requests.dump(
            route_request(AddressFamily::Inet),
            "IPv4 route dump (RTM_GETROUTE)",
        )?;
        routes.extend(self.requests.dump(
            route_request(AddressFamily::Inet6),
            "IPv6 route dump (RTM_GETROUTE)",
        )?);
        Ok(routes)
    }

    /// Builds a snapshot of the model and swaps it in.
    pub(crate) fn publish(&mut self) {
        self.generation += 1;
        self.table
            .store(Arc::new(self.model.snapshot(self.generation)));
        self.counters
            .generation
            .store(self.generation, Ordering::Relaxed);
    }

    /// Dumps what `pending` asks for, then publishes. On a failed dump the
    /// model (with whatever notifications brought) is published anyway and
    /// the part that failed is returned, to be retried.
    fn refresh(&mut self, pending: Change) -> Result<(), (Change, NextHopError)> {
        let result = if pending.resync {
            self.full_dump().map_err(|e| (pending, e))
        } else if pending.routes {
            match self.dump_routes() {
                Ok(routes) => {
                    self.model.set_routes(&routes);
                    self.counters.route_dumps.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
                Err(e) => Err((pending, e)),
            }
        } else {
            Ok(())
        };
        self.publish();
        result
    }

    /// Reads every queued notification (up to [`MAX_DRAIN`] datagrams) and
    /// applies it.
    fn drain(&mut self) -> Change {
        let mut change = Change::default();
        for _ in 0..MAX_DRAIN {
            match self.events.recv(true) {
                Ok(n) => {
                    for rx in messages(self.events.received(n)) {
                        match rx.message {
                            Ok(msg) => {
                                if let NetlinkPayload::InnerMessage(m) = &msg.payload {
                                    self.counters.events.fetch_add(1, Ordering::Relaxed);
                                    change.merge(self.model.apply(m));
                                }
                            }
                            Err(e) => {
                                // A change we could not read: start over.
                                self.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
                                self.counters.set_last_error(format!(
                                    "malformed rtnetlink notification: {e}"
                                ));
                                change.resync = true;
                            }
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    // The socket overflowed: notifications were lost.
                    self.counters.overflows.fetch_add(1, Ordering::Relaxed);
                    change.resync = true;
                }
                Err(e) => {
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                    self.counters
                        .set_last_error(format!("reading rtnetlink notifications: {e}"));
                    change.resync = true;
                    break;
                }
            }
        }
        change
    }

    /// Runs until `stop` becomes readable or hangs up (its writer dropped).
    pub(crate) fn run(mut self, stop: PipeReader) {
        let mut pending = Change::default();
        // First and latest notification of the unpublished burst.
        let mut burst: Option<(Instant, Instant)> = None;
        let mut retry_at: Option<Instant> = None;
        loop {
            let deadline = match (burst, retry_at) {
                (Some((first, last)), _) => Some((last + self.settle).min(first + self.max_delay)),
                (None, retry) => retry,
            };
            let timeout = match deadline {
                Some(d) => poll_timeout(d.saturating_duration_since(Instant::now())),
                None => PollTimeout::NONE,
            };
            let (readable, stopped) = {
                let mut fds = [
                    PollFd::new(self.events.as_fd(), PollFlags::POLLIN),
                    PollFd::new(stop.as_fd(), PollFlags::POLLIN),
                ];
                match poll(&mut fds, timeout) {
                    Ok(_) => {}
                    Err(Errno::EINTR) => continue,
                    Err(e) => {
                        self.counters.errors.fetch_add(1, Ordering::Relaxed);
                        self.counters.set_last_error(format!("poll: {e}"));
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                }
                let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
                (ready(&fds[0]), ready(&fds[1]))
            };
            if stopped {
                return;
            }
            if readable {
                let change = self.drain();
                if change.any() {
                    pending.merge(change);
                    let now = Instant::now();
                    burst = Some(burst.map_or((now, now), |(first, _)| (first, now)));
                }
            }
            let now = Instant::now();
            let due = burst.is_some_and(|(first, last)| {
                now >= last + self.settle || now >= first + self.max_delay
            }) || retry_at.is_some_and(|r| now >= r);
            if !due {
                continue;
            }
            burst = None;
            match self.refresh(pending) {
                Ok(()) => {
                    pending = Change::default();
                    retry_at = None;
                }
                Err((failed, e)) => {
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                    self.counters.set_last_error(e.to_string());
                    pending = Change {
                        dirty: false,
                        ..failed
                    };
                    retry_at = Some(now + RETRY_AFTER);
                }
            }
        }
    }
}
