//! The event loop: one thread polls the UDP sockets, the SA API's event
//! stream, the control socket and a signal pipe, feeds the state machine
//! with datagrams, time, commands and lifetime events, and carries out what
//! it hands back (datagrams to send, data-plane actions, answers to the
//! CLI). Timers come from [`Endpoint::poll_timeout`].

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use xdpsec_api::notify::Watchdog;
use xdpsec_api::{ApiClient, ApiError, Event as ApiEvent, Lifetimes, SaInfo};

use super::ctl_server::{CtlCall, CtlFd, CtlServer};
use super::install::{unix_now, Installer, Ledger, OwnedChild};
use super::state::StateFile;
use super::takeover::{self, Takeover, TAKEOVER_POLL};
use super::udp::{IkeSockets, Received, MAX_DATAGRAM};
use super::SavedState;
use crate::ctl::{ChildSaInfo, CtlErrorCode, CtlRequest, CtlResponse, IkeSaInfo, RekeyTarget};
use crate::ike::{
    ChildSaId, ChildSaState, CommandError, Endpoint, Event, IkeSaId, IkeSaSnapshot, IkeSaState,
    LifetimeSeverity, Target,
};

/// How long a CLI command waits for its exchange before it is answered
/// with a timeout (the state machine gives up on a silent peer sooner).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a child of an earlier run stays after its connection is up
/// again: packets the peer sent under the old SPIs just before it switched
/// still arrive and are decrypted.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(5);
/// How long an inbound SA stays after the state machine deletes it. The
/// initiator of a Child SA rekey is told to delete the old SAs as soon as
/// the new ones are in, but the responder may go on sending under the old
/// SA until it has processed the initiator's DELETE (strongSwan installs
/// its new outbound SA only then): packets of that round trip must still
/// find their SA. Outbound SAs go at once (the policies have moved).
pub const INBOUND_LINGER: Duration = Duration::from_secs(2);
/// How long the responder of a Child SA rekey keeps sending under the old
/// SA when the initiator does not delete it (see `Driver::switch_later`).
pub const POLICY_SWITCH_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a daemon whose data plane went away tries to reach it again.
const RECONNECT_EVERY: Duration = Duration::from_millis(250);
/// Datagrams read from one socket per loop turn, so one busy socket does
/// not starve the others.
const RECV_BATCH: usize = 64;

/// A CLI command waiting for its exchange.
#[derive(Debug)]
struct Pending {
    conn: u64,
    id: u64,
    deadline: Instant,
    what: Awaiting,
}

#[derive(Debug)]
enum Awaiting {
    /// A child of this IKE SA comes up (or the IKE SA fails).
    Initiate { connection: String, ike: IkeSaId },
    /// Children replacing these come up.
    RekeyChild {
        connection: String,
        old: Vec<ChildSaId>,
    },
    /// These IKE SAs come up rekeyed.
    RekeyIke {
        connection: String,
        ikes: Vec<IkeSaId>,
    },
    /// These IKE SAs are gone.
    Terminate {
        connection: String,
        ikes: Vec<IkeSaId>,
    },
}

/// Policies of a new child that wait for the old child's deletion; or,
/// for an RFC 9611 per-resource child (which has no policies: the data
/// plane sends on the newest per-resource SA of a worker), its outbound SA.
#[derive(Debug)]
struct DeferredSwitch {
    at: Instant,
    old: ChildSaId,
    child: ChildSaId,
    policies: Vec<xdpsec_api::Policy>,
    outbound_sa: Option<Event>,
}

/// The child that `child` replaces (rekeys), from its up event in
/// `events`.
pub(super) fn replaced(child: ChildSaId, events: &[Event]) -> Option<ChildSaId> {
    events.iter().find_map(|e| match e {
        Event::ChildSaUp {
            child: c, replaces, ..
        } if *c == child => *replaces,
        _ => None,
    })
}

/// An orphan's removal time.
#[derive(Debug)]
struct OrphanTimer {
    at: Instant,
    spi_in: Option<u32>,
    spi_out: Option<u32>,
}

/// Everything the loop owns.
pub(super) struct Driver {
    pub(super) endpoint: Endpoint,
    pub(super) sockets: IkeSockets,
    pub(super) ctl: CtlServer,
    pub(super) installer: Installer,
    pub(super) events_api: ApiClient,
    /// The SA API's socket, to reach the data plane again after it
    /// restarted.
    pub(super) api_path: std::path::PathBuf,
    /// Since when the data plane is gone, and when to try it next.
    lost: Option<(Instant, Instant)>,
    pub(super) ledger: Ledger,
    pub(super) state: StateFile,
    pub(super) signals: UnixStream,
    /// Hard life times of the configured children, by (connection, child).
    pub(super) child_life: HashMap<(String, String), Duration>,
    /// Volume limits of the configured children (`rekey_bytes`,
    /// `life_bytes`, `rekey_packets`, `life_packets`), which only the data
    /// plane can count, by (connection, child).
    pub(super) child_volume: HashMap<(String, String), Lifetimes>,
    /// systemd's watchdog (`WatchdogSec=`), petted by the event loop.
    pub(super) watchdog: Option<Watchdog>,
    pending: Vec<Pending>,
    orphan_timers: Vec<OrphanTimer>,
    /// Inbound SAs to delete at the instant: (when, child, SPI).
    lingering: Vec<(Instant, ChildSaId, u32)>,
    /// Policy switches waiting for the old child to go.
    deferred: Vec<DeferredSwitch>,
    /// Policy moves waiting for the peer's first packet under a new child
    /// of another IKE SA (see `takeover`).
    takeovers: Vec<Takeover>,
    /// When the takeovers' inbound SAs are looked at next.
    takeover_poll: Option<Instant>,
    saved: Option<Ledger>,
    ike_remote: HashMap<IkeSaId, SocketAddr>,
    /// Virtual IPs and DNS servers assigned to our IKE SAs, for `sa list`
    /// (where `xdpsec connect` reads them).
    virtual_ips: HashMap<IkeSaId, (Vec<IpAddr>, Vec<IpAddr>)>,
    api_errors: u64,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("sockets", &self.sockets)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// How the loop ended.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Exit {
    /// SIGTERM or SIGINT.
    Signal,
}

impl Driver {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        endpoint: Endpoint,
        sockets: IkeSockets,
        ctl: CtlServer,
        installer: Installer,
        events_api: ApiClient,
        api_path: std::path::PathBuf,
        ledger: Ledger,
        state: StateFile,
        signals: UnixStream,
        child_life: HashMap<(String, String), Duration>,
        child_volume: HashMap<(String, String), Lifetimes>,
    ) -> Self {
        Driver {
            endpoint,
            sockets,
            ctl,
            installer,
            events_api,
            api_path,
            lost: None,
            ledger,
            state,
            signals,
            child_life,
            child_volume,
            watchdog: None,
            pending: Vec::new(),
            orphan_timers: Vec::new(),
            lingering: Vec::new(),
            deferred: Vec::new(),
            takeovers: Vec::new(),
            takeover_poll: None,
            saved: None,
            ike_remote: HashMap::new(),
            virtual_ips: HashMap::new(),
            api_errors: 0,
        }
    }

    /// Schedules the expiry of the orphans that have a known life time.
    pub(super) fn schedule_orphan_expiry(&mut self, now: Instant) {
        let wall = unix_now();
        for o in &self.ledger.orphans {
            let life = match (&o.connection, &o.name) {
                (Some(c), Some(n)) => self.child_life.get(&(c.clone(), n.clone())).copied(),
                _ => None,
            };
            if let Some(life) = life {
                let left = (o.installed_at + life.as_secs()).saturating_sub(wall);
                self.orphan_timers.push(OrphanTimer {
                    at: now + Duration::from_secs(left),
                    spi_in: o.spi_in,
                    spi_out: o.spi_out,
                });
            }
        }
    }

    /// Runs until a signal asks to stop.
    pub(super) fn run(&mut self) -> anyhow::Result<Exit> {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        self.flush(Instant::now())?;
        loop {
            let now = Instant::now();
            let deadline = self.next_deadline();
            let timeout = match deadline {
                Some(d) => {
                    let ms = d.saturating_duration_since(now).as_millis();
                    // Round up: waking a millisecond early only spins.
                    PollTimeout::try_from(u32::try_from(ms + 1).unwrap_or(u32::MAX).min(60_000))
                        .unwrap_or(PollTimeout::MAX)
                }
                None => PollTimeout::from(60_000u16),
            };
            let ready = self.poll(timeout)?;
            let now = Instant::now();

            if ready.signal {
                return Ok(Exit::Signal);
            }
            for index in ready.udp {
                for _ in 0..RECV_BATCH {
                    match self.sockets.recv(index, &mut buf) {
                        Ok(Received::Ike {
                            local,
                            remote,
                            payload,
                        }) => self
                            .endpoint
                            .handle_datagram(now, local, remote, &buf[payload]),
                        Ok(Received::Dropped) => {}
                        Ok(Received::WouldBlock) => break,
                        Err(e) => {
                            tracing::warn!("IKE socket: {e}");
                            break;
                        }
                    }
                }
            }
            if ready.api_events {
                self.read_api_events(now)?;
            }
            let mut calls = Vec::new();
            for fd in ready.ctl_in {
                match fd {
                    CtlFd::Listener => self.ctl.accept(),
                    CtlFd::Conn(token) => self.ctl.read(token, &mut calls),
                }
            }
            for token in ready.ctl_out {
                self.ctl.writable(token);
            }
            for token in ready.ctl_hup {
                self.ctl.hang_up(token);
            }
            for call in calls {
                self.command(now, call);
            }
            if self.endpoint.poll_timeout().is_some_and(|t| t <= now) {
                self.endpoint.handle_timeout(now);
            }
            self.reconnect(now);
            self.flush(now)?;
            self.expire(now)?;
            self.ctl.reap();
            if let Some(w) = &mut self.watchdog {
                if let Err(e) = w.pet(now) {
                    tracing::warn!("watchdog notification: {e}");
                }
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        [
            self.endpoint.poll_timeout(),
            self.pending.iter().map(|p| p.deadline).min(),
            self.orphan_timers.iter().map(|t| t.at).min(),
            self.lingering.iter().map(|l| l.0).min(),
            self.deferred.iter().map(|d| d.at).min(),
            self.takeover_poll,
            self.lost.map(|(_, next)| next),
            self.watchdog.as_ref().map(Watchdog::deadline),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn poll(&mut self, timeout: PollTimeout) -> io::Result<Ready> {
        #[derive(Clone, Copy)]
        enum Slot {
            Signal,
            Udp(usize),
            Api,
            Ctl(CtlFd),
        }
        let mut slots: Vec<Slot> = Vec::new();
        let mut fds: Vec<PollFd<'_>> = Vec::new();
        fds.push(PollFd::new(self.signals.as_fd(), PollFlags::POLLIN));
        slots.push(Slot::Signal);
        for (i, fd) in self.sockets.fds().enumerate() {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
            slots.push(Slot::Udp(i));
        }
        if self.lost.is_none() {
            fds.push(PollFd::new(self.events_api.as_fd(), PollFlags::POLLIN));
            slots.push(Slot::Api);
        }
        let ctl_fds = self.ctl.fds();
        for (which, fd, want_out) in &ctl_fds {
            let mut flags = PollFlags::POLLIN;
            if *want_out {
                flags |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(*fd, flags));
            slots.push(Slot::Ctl(*which));
        }
        match nix::poll::poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => return Ok(Ready::default()),
            Err(e) => return Err(e.into()),
        }
        let mut ready = Ready::default();
        for (fd, slot) in fds.iter().zip(&slots) {
            let revents = fd.revents().unwrap_or(PollFlags::empty());
            if revents.is_empty() {
                continue;
            }
            let input =
                revents.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR);
            match *slot {
                Slot::Signal => ready.signal = true,
                Slot::Udp(i) if input => ready.udp.push(i),
                Slot::Udp(_) => {}
                Slot::Api => ready.api_events = true,
                Slot::Ctl(which) => {
                    if revents.intersects(PollFlags::POLLIN | PollFlags::POLLHUP) {
                        ready.ctl_in.push(which);
                    }
                    if let CtlFd::Conn(token) = which {
                        if revents.contains(PollFlags::POLLOUT) {
                            ready.ctl_out.push(token);
                        }
                        if revents.intersects(PollFlags::POLLERR | PollFlags::POLLNVAL) {
                            ready.ctl_hup.push(token);
                        }
                    }
                }
            }
        }
        Ok(ready)
    }

    fn read_api_events(&mut self, now: Instant) -> anyhow::Result<()> {
        loop {
            let event = match self.events_api.next_event(Some(Duration::ZERO)) {
                Ok(Some(e)) => e,
                Ok(None) => return Ok(()),
                Err(e) => {
                    self.data_plane_lost(now, &format!("reading its events: {e}"));
                    return Ok(());
                }
            };
            let (spi, severity) = match event {
                ApiEvent::SoftLifetimeExpired { spi, .. } => (spi, LifetimeSeverity::Soft),
                ApiEvent::HardLifetimeExpired { spi, .. } => (spi, LifetimeSeverity::Hard),
                ApiEvent::IdleSa { .. } => continue,
            };
            if let Some(i) = self
                .ledger
                .orphans
                .iter()
                .position(|o| o.spi_in == Some(spi) || o.spi_out == Some(spi))
            {
                if severity == LifetimeSeverity::Hard {
                    let orphan = self.ledger.orphans.remove(i);
                    tracing::info!(
                        spi = format_args!("{spi:#010x}"),
                        "hard lifetime of a child of the previous run; removing it"
                    );
                    self.remove_orphan(&orphan);
                }
                continue;
            }
            tracing::debug!(
                spi = format_args!("{spi:#010x}"),
                ?severity,
                "lifetime event from the data plane"
            );
            if let Err(e) = self.endpoint.handle_lifetime_event(now, spi, severity) {
                tracing::debug!(
                    spi = format_args!("{spi:#010x}"),
                    "lifetime event not applied: {e}"
                );
            }
        }
    }

    /// Carries out the state machine's events, then sends what it queued:
    /// the SAs a message lets the peer use are in before it leaves.
    fn flush(&mut self, now: Instant) -> anyhow::Result<()> {
        loop {
            let events: Vec<Event> = std::iter::from_fn(|| self.endpoint.poll_event()).collect();
            let mut progressed = !events.is_empty();
            for t in takeover::find_per_resource(&events, now) {
                tracing::debug!(child = %t.child, "the per-resource outbound SA goes in when the peer sends under the new child");
                self.takeover_poll.get_or_insert(now + TAKEOVER_POLL);
                self.takeovers.push(t);
            }
            for t in takeover::find(&self.ledger, &events, now) {
                tracing::debug!(child = %t.child, old = %t.old, "outbound policies move when the peer sends under the new child");
                self.takeover_poll.get_or_insert(now + TAKEOVER_POLL);
                self.takeovers.push(t);
            }
            for i in 0..events.len() {
                let later = &events[i + 1..];
                match &events[i] {
                    event @ Event::InstallSa { .. }
                        if self.takeovers.iter().any(|t| t.held.contains(event)) => {}
                    Event::DeleteSa {
                        child,
                        direction: xdpsec_api::Direction::Out,
                        ..
                    } if self
                        .takeovers
                        .iter()
                        .any(|t| t.child == *child && t.old == *child) =>
                    {
                        // A per-resource child whose outbound SA still
                        // waits goes (a rekey, a delete): that SA never
                        // goes in, or it would briefly take the worker
                        // back from its successor.
                        self.takeovers
                            .retain(|t| !(t.child == *child && t.old == *child));
                        self.apply(now, events[i].clone())?;
                    }
                    Event::InstallPolicies { child, .. }
                        if self.takeovers.iter().any(|t| t.child == *child) => {}
                    event if self.takeovers.iter().any(|t| t.holds(event)) => {
                        if let Some(t) = self.takeovers.iter_mut().find(|t| t.holds(event)) {
                            t.held.push(event.clone());
                        }
                    }
                    Event::DeleteSa {
                        child,
                        direction: xdpsec_api::Direction::Out,
                        ..
                    } if self.takeovers.iter().any(|t| t.child == *child) => {
                        // The new child goes before its policies moved:
                        // the old child's held deletions are still due.
                        let (gone, rest) = std::mem::take(&mut self.takeovers)
                            .into_iter()
                            .partition(|t| t.child == *child);
                        self.takeovers = rest;
                        for mut t in gone {
                            t.policies.clear();
                            self.release_takeover(now, t)?;
                        }
                        self.apply(now, events[i].clone())?;
                    }
                    Event::InstallSa { child, spec, .. }
                        if spec.direction == xdpsec_api::Direction::Out
                            && spec.resource.is_some()
                            && self.switch_later(*child, later) =>
                    {
                        let old = replaced(*child, later).unwrap_or(*child);
                        tracing::debug!(%child, replaces = %old, "the per-resource outbound SA goes in when the peer deletes the old child");
                        self.deferred.push(DeferredSwitch {
                            at: now + POLICY_SWITCH_TIMEOUT,
                            old,
                            child: *child,
                            policies: Vec::new(),
                            outbound_sa: Some(events[i].clone()),
                        });
                    }
                    Event::InstallPolicies { child, policies }
                        if self.switch_later(*child, later) =>
                    {
                        let old = replaced(*child, later).unwrap_or(*child);
                        tracing::debug!(%child, replaces = %old, "outbound policies move when the peer deletes the old child");
                        self.deferred.push(DeferredSwitch {
                            at: now + POLICY_SWITCH_TIMEOUT,
                            old,
                            child: *child,
                            policies: policies.clone(),
                            outbound_sa: None,
                        });
                    }
                    Event::InstallPolicies { policies, .. } => {
                        // Policies installed now supersede any switch
                        // still waiting for the same selectors (a
                        // simultaneous rekey: the redundant child's
                        // switch must not happen after the winner's).
                        let keys: Vec<_> = policies.iter().map(|p| p.key()).collect();
                        self.deferred
                            .retain(|d| !d.policies.iter().any(|p| keys.contains(&p.key())));
                        for t in &mut self.takeovers {
                            t.policies.retain(|p| !keys.contains(&p.key()));
                        }
                        self.apply(now, events[i].clone())?;
                    }
                    event => self.apply(now, event.clone())?,
                }
            }
            while let Some(t) = self.endpoint.poll_transmit() {
                progressed = true;
                if let Err(e) = self
                    .sockets
                    .send(t.local, t.remote, t.non_esp_marker, &t.payload)
                {
                    tracing::warn!(local = %t.local, remote = %t.remote, "sending an IKE message: {e}");
                }
            }
            if !progressed {
                break;
            }
        }
        self.save_state();
        Ok(())
    }

    /// Whether the policies of `child` should wait: it replaces a child
    /// whose outbound SA is still installed and is not deleted in this same
    /// batch. That is the responder's side of a Child SA rekey: the
    /// initiator installs its new inbound SA only when our answer arrives,
    /// so we go on sending under the old SA until its DELETE comes (as
    /// strongSwan does). The initiator deletes the old SAs right away, in
    /// the same batch, and switches at once.
    fn switch_later(&self, child: ChildSaId, later: &[Event]) -> bool {
        let Some(old) = replaced(child, later) else {
            return false;
        };
        let old_out_installed = self
            .ledger
            .child(old.0)
            .is_some_and(|c| c.spi_out.is_some());
        let old_out_deleted_now = later.iter().any(|e| {
            matches!(e, Event::DeleteSa { child: c, direction: xdpsec_api::Direction::Out, .. } if *c == old)
        });
        old_out_installed && !old_out_deleted_now
    }

    /// Applies deferred policy switches: those waiting for `old` to go
    /// (`Some`), or those whose time is up (`None`).
    fn release_switches(&mut self, now: Instant, old: Option<ChildSaId>) -> anyhow::Result<()> {
        let (due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.deferred)
            .into_iter()
            .partition(|d| old.map_or(d.at <= now, |o| d.old == o));
        self.deferred = rest;
        for d in due {
            if let Some(install) = d.outbound_sa {
                if self
                    .ledger
                    .child(d.child.0)
                    .is_some_and(|c| c.spi_in.is_some())
                {
                    tracing::debug!(child = %d.child, "installing the per-resource outbound SA");
                    self.apply(now, install)?;
                }
                continue;
            }
            if self
                .ledger
                .child(d.child.0)
                .is_none_or(|c| c.spi_out.is_none())
            {
                // The new child went before its policies did.
                continue;
            }
            tracing::debug!(child = %d.child, "moving the outbound policies to the new child");
            let r = self
                .installer
                .install_policies(&mut self.ledger, d.child.0, d.policies);
            self.api_result("installing policies", r)?;
        }
        Ok(())
    }

    /// Moves the policies of the takeovers whose new inbound SA has
    /// accepted a packet, or whose time is up; then carries out what each
    /// held back.
    fn check_takeovers(&mut self, now: Instant) -> anyhow::Result<()> {
        if self.takeover_poll.is_none_or(|at| at > now) {
            return Ok(());
        }
        let heard: Vec<u32> = match self.installer.api().list_sas() {
            Ok(sas) => sas
                .iter()
                .filter(|s| s.direction == xdpsec_api::Direction::In && s.seq > 0)
                .map(|s| s.spi)
                .collect(),
            Err(e) => {
                self.api_result("listing SAs", Err(e))?;
                Vec::new()
            }
        };
        let (due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.takeovers)
            .into_iter()
            .partition(|t| {
                t.deadline <= now
                    || self
                        .ledger
                        .child(t.child.0)
                        .and_then(|c| c.spi_in)
                        .is_some_and(|spi| heard.contains(&spi))
            });
        self.takeovers = rest;
        self.takeover_poll = (!self.takeovers.is_empty()).then(|| now + TAKEOVER_POLL);
        for t in due {
            let why = if t.deadline <= now {
                "nothing arrived under it in time"
            } else {
                "the peer sends under it"
            };
            tracing::debug!(child = %t.child, old = %t.old, "moving the outbound policies to the new child: {why}");
            self.release_takeover(now, t)?;
        }
        Ok(())
    }

    fn release_takeover(&mut self, now: Instant, t: Takeover) -> anyhow::Result<()> {
        if !t.policies.is_empty() {
            let r = self
                .installer
                .install_policies(&mut self.ledger, t.child.0, t.policies);
            self.api_result("installing policies", r)?;
        }
        for event in t.held {
            self.apply(now, event)?;
        }
        Ok(())
    }

    /// The data plane went away (stopped, crashed, restarted): its SAs are
    /// gone with it. The IKE SAs stay; the daemon tries to reach it again
    /// and then rekeys every child, so the new data plane gets fresh keys
    /// (no sequence number of the old SAs is ever reused under them).
    fn data_plane_lost(&mut self, now: Instant, what: &str) {
        if self.lost.is_none() {
            tracing::warn!(
                "the data plane went away ({what}); its SAs are gone: waiting for it to \
                 come back to rekey the children"
            );
            self.lost = Some((now, now + RECONNECT_EVERY));
        }
    }

    /// While the data plane is gone: tries to reach it; once back, rekeys
    /// every installed child.
    fn reconnect(&mut self, now: Instant) {
        let Some((since, next)) = self.lost else {
            return;
        };
        if now < next {
            return;
        }
        self.lost = Some((since, now + RECONNECT_EVERY));
        let connect = || -> Result<(ApiClient, ApiClient), ApiError> {
            let requests = ApiClient::connect(&self.api_path)?;
            let mut events = ApiClient::connect(&self.api_path)?;
            events.subscribe_events()?;
            events.set_nonblocking(true)?;
            Ok((requests, events))
        };
        let Ok((requests, events)) = connect() else {
            return;
        };
        self.installer = Installer::new(requests);
        self.endpoint
            .set_resources(super::install::data_plane_workers(self.installer.api()));
        self.events_api = events;
        self.lost = None;
        // What the old data plane held is gone: children of an earlier run
        // and SAs waiting to be deleted.
        self.ledger.orphans.clear();
        self.orphan_timers.clear();
        self.lingering.clear();
        let children: Vec<u64> = self
            .ledger
            .live
            .iter()
            .filter(|(_, c)| c.spi_out.is_some() || c.spi_in.is_some())
            .map(|(id, _)| *id)
            .collect();
        tracing::info!(
            after = ?now - since,
            children = children.len(),
            "the data plane is back; rekeying the children for it"
        );
        for child in children {
            match self.endpoint.rekey_child(now, ChildSaId(child)) {
                Ok(()) => {}
                // Replaced or deleted while the data plane was away (its
                // deletion could not reach it): nothing left to carry.
                Err(CommandError::UnknownChildSa(_)) => {
                    self.ledger.live.remove(&child);
                }
                Err(e) => tracing::warn!(child, "cannot rekey for the new data plane: {e}"),
            }
        }
    }

    fn save_state(&mut self) {
        save_ledger(&self.state, &mut self.saved, &self.ledger);
    }

    fn api_result(&mut self, what: &str, result: Result<(), ApiError>) -> anyhow::Result<bool> {
        match result {
            Ok(()) => Ok(true),
            Err(e @ (ApiError::Closed | ApiError::Io(_) | ApiError::Timeout(_))) => {
                self.data_plane_lost(Instant::now(), &format!("{what}: {e}"));
                Ok(false)
            }
            Err(e) => {
                self.api_errors += 1;
                tracing::error!("SA API refused {what}: {e}");
                Ok(false)
            }
        }
    }

    fn apply(&mut self, now: Instant, event: Event) -> anyhow::Result<()> {
        match event {
            Event::InstallSa {
                ike,
                child,
                mut spec,
            } => {
                if spec.lifetime.is_empty() {
                    spec.lifetime = self.volume_limits(now, ike, child);
                }
                let what = format!("installing {} SA {:#010x}", spec.direction, spec.spi);
                tracing::debug!(%ike, %child, spi = format_args!("{:#010x}", spec.spi), direction = %spec.direction, "installing SA");
                let (state, saved) = (&self.state, &mut self.saved);
                let r = self
                    .installer
                    .install_sa(&mut self.ledger, child.0, spec, |ledger| {
                        save_ledger(state, saved, ledger)
                    });
                // Without a data plane nothing is installed; the child is
                // rekeyed once it is back, not taken down.
                if !self.api_result(&what, r)? && self.lost.is_none() {
                    // The peer must not send into an SA we could not
                    // install: take the child down.
                    if let Err(e) = self.endpoint.terminate(now, Target::ChildSa(child)) {
                        tracing::warn!(%child, "cannot delete the child after a failed install: {e}");
                    }
                }
            }
            Event::InstallPolicies { child, policies } => {
                tracing::debug!(%child, n = policies.len(), "installing policies");
                let r = self
                    .installer
                    .install_policies(&mut self.ledger, child.0, policies);
                self.api_result("installing policies", r)?;
            }
            Event::DeleteSa {
                child,
                spi,
                direction: xdpsec_api::Direction::In,
            } => {
                tracing::debug!(%child, spi = format_args!("{spi:#010x}"), "deleting inbound SA in {INBOUND_LINGER:?}");
                self.lingering.push((now + INBOUND_LINGER, child, spi));
            }
            Event::DeleteSa {
                child,
                spi,
                direction,
            } => {
                // The old child goes: its successor's policies move first.
                self.release_switches(now, Some(child))?;
                tracing::debug!(%child, spi = format_args!("{spi:#010x}"), %direction, "deleting SA");
                let r = self
                    .installer
                    .delete_sa(&mut self.ledger, child.0, spi, direction);
                self.api_result("deleting an SA", r)?;
            }
            Event::DeletePolicies { child, keys } => {
                tracing::debug!(%child, n = keys.len(), "deleting policies");
                let r = self
                    .installer
                    .delete_policies(&mut self.ledger, child.0, &keys);
                self.api_result("deleting policies", r)?;
            }
            Event::UpdateSa { child, update } => {
                tracing::debug!(%child, spi = format_args!("{:#010x}", update.spi), "updating SA");
                let r = self.installer.update_sa(update);
                self.api_result("updating an SA", r)?;
            }
            Event::IkeSaUp {
                ike,
                connection,
                remote,
                peer_id,
                rekeyed,
                ..
            } => {
                self.ike_remote.insert(ike, remote);
                if !rekeyed {
                    self.replace_older(now, ike, &connection, &peer_id);
                }
                if rekeyed {
                    self.resolve(|w| match w {
                        Awaiting::RekeyIke {
                            connection: c,
                            ikes,
                        } if *c == connection => {
                            ikes.retain(|i| *i != ike);
                            ikes.is_empty()
                                .then(|| ok(format!("IKE SA of {connection} rekeyed")))
                        }
                        _ => None,
                    });
                }
            }
            Event::IkeSaDown {
                ike,
                connection,
                reason,
            } => {
                self.ike_remote.remove(&ike);
                self.virtual_ips.remove(&ike);
                let why = reason.to_string();
                self.resolve(|w| match w {
                    Awaiting::Initiate { ike: i, .. } if *i == ike => Some(CtlResponse::error(
                        CtlErrorCode::Failed,
                        format!("connection {connection} failed: {why}"),
                    )),
                    Awaiting::RekeyIke {
                        connection: c,
                        ikes,
                    } if ikes.contains(&ike) => Some(CtlResponse::error(
                        CtlErrorCode::Failed,
                        format!("IKE SA of {c} went down during the rekey: {why}"),
                    )),
                    Awaiting::Terminate {
                        connection: c,
                        ikes,
                    } if *c == connection => {
                        ikes.retain(|i| *i != ike);
                        ikes.is_empty()
                            .then(|| ok(format!("connection {connection} terminated")))
                    }
                    _ => None,
                });
            }
            Event::ChildSaUp {
                ike,
                child,
                connection,
                name,
                replaces,
                spi_in,
                spi_out,
                algorithms,
                ..
            } => {
                let remote = self.ike_remote.get(&ike).copied();
                if let Some(remote) = remote {
                    self.ledger.describe(child.0, &connection, &name, remote);
                }
                self.retire_orphans(now, &connection, remote);
                let msg = format!(
                    "{connection}: child {name} up, SPIs in {spi_in:#010x} out {spi_out:#010x}, {algorithms}"
                );
                self.resolve(|w| match w {
                    Awaiting::Initiate { ike: i, .. } if *i == ike => Some(ok(msg.clone())),
                    Awaiting::RekeyChild { old, .. } => {
                        let r = replaces?;
                        old.retain(|o| *o != r);
                        old.is_empty().then(|| ok(format!("{msg} (rekeyed)")))
                    }
                    _ => None,
                });
            }
            Event::VirtualIp {
                ike,
                connection,
                addresses,
                dns,
            } => {
                tracing::info!(%ike, %connection, ?addresses, ?dns, "virtual IPs assigned");
                self.virtual_ips.insert(ike, (addresses, dns));
            }
            Event::ChildSaDown {
                ike,
                child,
                connection,
                name,
                reason,
            } => {
                let why = reason.to_string();
                self.resolve(|w| match w {
                    Awaiting::Initiate { ike: i, .. } if *i == ike && child.is_none() => {
                        Some(CtlResponse::error(
                            CtlErrorCode::Failed,
                            format!("{connection}: child {name} failed: {why}"),
                        ))
                    }
                    Awaiting::RekeyChild { old, .. }
                        if child.is_some_and(|c| old.contains(&c))
                            && !matches!(reason, crate::ike::Reason::Rekeyed) =>
                    {
                        Some(CtlResponse::error(
                            CtlErrorCode::Failed,
                            format!("{connection}: child {name} went down during the rekey: {why}"),
                        ))
                    }
                    _ => None,
                });
            }
        }
        Ok(())
    }

    /// A new IKE SA with a peer replaces the older ones of the same
    /// connection and peer identity (strongSwan's `uniqueids = yes`, and
    /// what the INITIAL_CONTACT notify the initiator sends asserts, RFC
    /// 7296 section 3.10.1): after a restart the peer no longer has the old
    /// ones, and their children would otherwise linger in the data plane
    /// until a rekey or DPD failed.
    ///
    /// Only a new IKE SA the peer initiated replaces: when both ends
    /// initiate at once, each is responder of the other's IKE SA while its
    /// own is still connecting, so neither deletes anything and the tunnel
    /// never goes away (two IKE SAs stay, the newer child carries traffic).
    fn replace_older(&mut self, now: Instant, ike: IkeSaId, connection: &str, peer_id: &str) {
        let sas = self.endpoint.list_sas(now);
        if sas.iter().any(|s| s.id == ike && s.initiator) {
            return;
        }
        let older: Vec<IkeSaId> = sas
            .into_iter()
            .filter(|s| {
                s.id != ike
                    && s.connection == connection
                    && s.peer_id.as_deref() == Some(peer_id)
                    && s.state != IkeSaState::Connecting
                    && s.state != IkeSaState::Deleting
            })
            .map(|s| s.id)
            .collect();
        for old in older {
            tracing::info!(
                %ike,
                replaced = %old,
                connection,
                peer = peer_id,
                "a new IKE SA with the same peer replaces the older one"
            );
            if let Err(e) = self.endpoint.terminate(now, Target::IkeSa(old)) {
                tracing::warn!(ike = %old, "cannot delete the replaced IKE SA: {e}");
            }
        }
    }

    /// The configured volume limits of a child being installed: the data
    /// plane counts them and reports soft and hard expiry, which come back
    /// to the state machine as rekey and delete.
    fn volume_limits(&self, now: Instant, ike: IkeSaId, child: ChildSaId) -> Lifetimes {
        let Some(sa) = self
            .endpoint
            .list_sas(now)
            .into_iter()
            .find(|s| s.id == ike)
        else {
            return Lifetimes::default();
        };
        let Some(c) = sa.children.iter().find(|c| c.id == child) else {
            return Lifetimes::default();
        };
        self.child_volume
            .get(&(sa.connection.clone(), c.name.clone()))
            .copied()
            .unwrap_or_default()
    }

    /// Answers every pending command for which `check` has an answer.
    fn resolve(&mut self, mut check: impl FnMut(&mut Awaiting) -> Option<CtlResponse>) {
        let mut i = 0;
        while i < self.pending.len() {
            if let Some(response) = check(&mut self.pending[i].what) {
                let p = self.pending.swap_remove(i);
                self.ctl.reply(p.conn, p.id, response);
            } else {
                i += 1;
            }
        }
    }

    /// The connection is up again: its children from the previous run go
    /// after [`ORPHAN_GRACE`].
    fn retire_orphans(&mut self, now: Instant, connection: &str, remote: Option<SocketAddr>) {
        for o in &self.ledger.orphans {
            let same = match &o.connection {
                Some(c) => c == connection,
                None => o.remote.is_some() && o.remote == remote,
            };
            let scheduled = self.orphan_timers.iter().any(|t| {
                t.spi_in == o.spi_in && t.spi_out == o.spi_out && t.at <= now + ORPHAN_GRACE
            });
            if same && !scheduled {
                tracing::info!(
                    connection,
                    spi_in = ?o.spi_in,
                    spi_out = ?o.spi_out,
                    "connection up again; removing its child of the previous run in {ORPHAN_GRACE:?}"
                );
                self.orphan_timers.push(OrphanTimer {
                    at: now + ORPHAN_GRACE,
                    spi_in: o.spi_in,
                    spi_out: o.spi_out,
                });
            }
        }
    }

    fn remove_orphan(&mut self, orphan: &OwnedChild) {
        if let Err(e) = self.installer.remove_orphan(orphan) {
            tracing::error!("removing a child of the previous run: {e}");
        }
    }

    /// Removes lingering inbound SAs and orphans whose time has come,
    /// answers commands whose time is up.
    fn expire(&mut self, now: Instant) -> anyhow::Result<()> {
        self.release_switches(now, None)?;
        self.check_takeovers(now)?;
        let (due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.lingering)
            .into_iter()
            .partition(|l| l.0 <= now);
        self.lingering = rest;
        for (_, child, spi) in due {
            let r =
                self.installer
                    .delete_sa(&mut self.ledger, child.0, spi, xdpsec_api::Direction::In);
            self.api_result("deleting an inbound SA", r)?;
        }
        let due: Vec<OrphanTimer> = {
            let (due, rest) = std::mem::take(&mut self.orphan_timers)
                .into_iter()
                .partition(|t| t.at <= now);
            self.orphan_timers = rest;
            due
        };
        for t in due {
            if let Some(i) = self
                .ledger
                .orphans
                .iter()
                .position(|o| o.spi_in == t.spi_in && o.spi_out == t.spi_out)
            {
                let orphan = self.ledger.orphans.remove(i);
                self.remove_orphan(&orphan);
            }
        }
        let mut i = 0;
        while i < self.pending.len() {
            if self.pending[i].deadline <= now {
                let p = self.pending.swap_remove(i);
                let (op, connection) = match &p.what {
                    Awaiting::Initiate { connection, .. } => ("initiate", connection),
                    Awaiting::RekeyChild { connection, .. } => ("child rekey", connection),
                    Awaiting::RekeyIke { connection, .. } => ("IKE rekey", connection),
                    Awaiting::Terminate { connection, .. } => ("terminate", connection),
                };
                self.ctl.reply(
                    p.conn,
                    p.id,
                    CtlResponse::error(
                        CtlErrorCode::Timeout,
                        format!("{op} of {connection}: no result within {COMMAND_TIMEOUT:?}"),
                    ),
                );
            } else {
                i += 1;
            }
        }
        self.save_state();
        Ok(())
    }

    fn command(&mut self, now: Instant, call: CtlCall) {
        tracing::debug!(op = call.request.op(), "control command");
        let deadline = now + COMMAND_TIMEOUT;
        let wait = |this: &mut Self, what| {
            this.pending.push(Pending {
                conn: call.conn,
                id: call.id,
                deadline,
                what,
            })
        };
        let response = match call.request {
            CtlRequest::Hello { .. } => return,
            CtlRequest::ListSas => CtlResponse::Sas {
                ike_sas: self.list(now),
            },
            CtlRequest::Stats => CtlResponse::Stats {
                counters: self.counters(),
            },
            CtlRequest::Initiate { connection } => match self.endpoint.initiate(now, &connection) {
                Ok(ike) => {
                    wait(self, Awaiting::Initiate { connection, ike });
                    return;
                }
                Err(e) => command_error(e),
            },
            CtlRequest::Terminate { connection } => {
                let ikes = self.endpoint.ike_sas_of(&connection);
                let orphans: Vec<OwnedChild> = self
                    .ledger
                    .orphans
                    .iter()
                    .filter(|o| o.connection.as_deref() == Some(connection.as_str()))
                    .cloned()
                    .collect();
                self.ledger
                    .orphans
                    .retain(|o| o.connection.as_deref() != Some(connection.as_str()));
                for o in &orphans {
                    self.remove_orphan(o);
                }
                match self
                    .endpoint
                    .terminate(now, Target::Connection(connection.clone()))
                {
                    Ok(()) if ikes.is_empty() => ok(format!(
                        "connection {connection} has no IKE SA{}",
                        if orphans.is_empty() {
                            String::new()
                        } else {
                            format!("; removed {} child(ren) of the previous run", orphans.len())
                        }
                    )),
                    Ok(()) => {
                        wait(self, Awaiting::Terminate { connection, ikes });
                        return;
                    }
                    Err(e) => command_error(e),
                }
            }
            CtlRequest::Rekey { connection, target } => {
                let snapshots: Vec<IkeSaSnapshot> = self
                    .endpoint
                    .list_sas(now)
                    .into_iter()
                    .filter(|s| s.connection == connection && s.state == IkeSaState::Established)
                    .collect();
                if snapshots.is_empty() {
                    CtlResponse::error(
                        CtlErrorCode::NotFound,
                        format!("connection {connection} has no established IKE SA"),
                    )
                } else {
                    match target {
                        RekeyTarget::Ike => {
                            let mut ikes = Vec::new();
                            let mut error = None;
                            for s in &snapshots {
                                match self.endpoint.rekey_ike(now, s.id) {
                                    Ok(()) => ikes.push(s.id),
                                    Err(e) => error = Some(e),
                                }
                            }
                            match error {
                                Some(e) if ikes.is_empty() => command_error(e),
                                _ => {
                                    wait(self, Awaiting::RekeyIke { connection, ikes });
                                    return;
                                }
                            }
                        }
                        RekeyTarget::Child => {
                            let mut old = Vec::new();
                            let mut error = None;
                            for c in snapshots
                                .iter()
                                .flat_map(|s| &s.children)
                                .filter(|c| c.state == ChildSaState::Installed)
                            {
                                match self.endpoint.rekey_child(now, c.id) {
                                    Ok(()) => old.push(c.id),
                                    Err(e) => error = Some(e),
                                }
                            }
                            match error {
                                Some(e) if old.is_empty() => command_error(e),
                                None if old.is_empty() => CtlResponse::error(
                                    CtlErrorCode::NotFound,
                                    format!("connection {connection} has no installed Child SA"),
                                ),
                                _ => {
                                    wait(self, Awaiting::RekeyChild { connection, old });
                                    return;
                                }
                            }
                        }
                    }
                }
            }
        };
        self.ctl.reply(call.conn, call.id, response);
    }

    fn counters(&self) -> std::collections::BTreeMap<String, u64> {
        let mut c = std::collections::BTreeMap::new();
        let u = self.sockets.stats();
        c.insert("udp_received".into(), u.received);
        c.insert("udp_sent".into(), u.sent);
        c.insert("udp_keepalives".into(), u.keepalives);
        c.insert("udp_missing_marker".into(), u.missing_marker);
        c.insert("udp_runts".into(), u.runts);
        c.insert("udp_no_local_address".into(), u.no_local_address);
        c.insert("udp_send_errors".into(), u.send_errors);
        let d = self.endpoint.drops();
        c.insert("ike_malformed".into(), d.malformed);
        c.insert("ike_unknown_spi".into(), d.unknown_spi);
        c.insert("ike_integrity".into(), d.integrity);
        c.insert("ike_message_id".into(), d.message_id);
        c.insert("ike_cookie_requested".into(), d.cookie_requested);
        c.insert("ike_half_open_full".into(), d.half_open_full);
        c.insert("sa_api_errors".into(), self.api_errors);
        c.insert("orphaned_children".into(), self.ledger.orphans.len() as u64);
        c
    }

    /// `sa list`: the state machine's SAs with the data plane's counters,
    /// and the children of the previous run still installed.
    fn list(&mut self, now: Instant) -> Vec<IkeSaInfo> {
        let dataplane: Vec<SaInfo> = match self.installer.api().list_sas() {
            Ok(sas) => sas,
            Err(e) => {
                tracing::warn!("listing the data plane's SAs: {e}");
                Vec::new()
            }
        };
        let counters = |spi: u32, dir: xdpsec_api::Direction| {
            dataplane
                .iter()
                .find(|s| s.spi == spi && s.direction == dir)
                .map_or((0, 0), |s| (s.counters.bytes, s.counters.packets))
        };
        let hex32 = |v: u32| format!("{v:08x}");
        let mut out: Vec<IkeSaInfo> = self
            .endpoint
            .list_sas(now)
            .into_iter()
            .map(|s| IkeSaInfo {
                virtual_ips: self
                    .virtual_ips
                    .get(&s.id)
                    .map(|v| v.0.clone())
                    .unwrap_or_default(),
                dns: self
                    .virtual_ips
                    .get(&s.id)
                    .map(|v| v.1.clone())
                    .unwrap_or_default(),
                connection: s.connection,
                role: if s.initiator {
                    "initiator"
                } else {
                    "responder"
                }
                .into(),
                state: ike_state(s.state).into(),
                local: s.local,
                remote: s.remote,
                remote_id: s.peer_id,
                spi_i: format!("{:016x}", s.spi_i),
                spi_r: format!("{:016x}", s.spi_r),
                algorithms: s.algorithms.unwrap_or_default(),
                nat: s.nat,
                age_s: s.age.as_secs(),
                rekey_in_s: s.rekey_in.map(|d| d.as_secs()),
                children: s
                    .children
                    .into_iter()
                    .map(|c| {
                        let (bytes_in, packets_in) = counters(c.spi_in, xdpsec_api::Direction::In);
                        let (bytes_out, packets_out) =
                            counters(c.spi_out, xdpsec_api::Direction::Out);
                        ChildSaInfo {
                            name: c.name,
                            state: child_state(c.state).into(),
                            spi_in: hex32(c.spi_in),
                            spi_out: hex32(c.spi_out),
                            algorithms: c.algorithms,
                            udp_encap: c.encap,
                            local_ts: c.local_ts,
                            remote_ts: c.remote_ts,
                            age_s: c.age.as_secs(),
                            rekey_in_s: c.rekey_in.map(|d| d.as_secs()),
                            bytes_in,
                            packets_in,
                            bytes_out,
                            packets_out,
                            resource: c.resource,
                        }
                    })
                    .collect(),
            })
            .collect();
        let wall = unix_now();
        for o in &self.ledger.orphans {
            let (bytes_in, packets_in) = o
                .spi_in
                .map_or((0, 0), |s| counters(s, xdpsec_api::Direction::In));
            let (bytes_out, packets_out) = o
                .spi_out
                .map_or((0, 0), |s| counters(s, xdpsec_api::Direction::Out));
            let unspecified: SocketAddr = ([0, 0, 0, 0], 0).into();
            out.push(IkeSaInfo {
                connection: o.connection.clone().unwrap_or_else(|| "?".into()),
                role: "-".into(),
                state: "previous-run".into(),
                local: unspecified,
                remote: o.remote.unwrap_or(unspecified),
                remote_id: None,
                spi_i: "-".into(),
                spi_r: "-".into(),
                algorithms: String::new(),
                nat: false,
                age_s: wall.saturating_sub(o.installed_at),
                rekey_in_s: None,
                virtual_ips: Vec::new(),
                dns: Vec::new(),
                children: vec![ChildSaInfo {
                    name: o.name.clone().unwrap_or_else(|| "?".into()),
                    state: "orphaned".into(),
                    spi_in: o.spi_in.map_or_else(|| "-".into(), hex32),
                    spi_out: o.spi_out.map_or_else(|| "-".into(), hex32),
                    algorithms: String::new(),
                    udp_encap: false,
                    local_ts: Vec::new(),
                    remote_ts: Vec::new(),
                    age_s: wall.saturating_sub(o.installed_at),
                    rekey_in_s: None,
                    bytes_in,
                    packets_in,
                    bytes_out,
                    packets_out,
                    resource: None,
                }],
            });
        }
        out
    }

    /// Clean stop: delete every IKE SA (telling the peers), wait a little
    /// for the answers while serving the sockets, remove what is left of
    /// ours from the data plane, forget the state.
    pub(super) fn shut_down(&mut self) -> anyhow::Result<()> {
        let now = Instant::now();
        let connections: Vec<String> = self
            .endpoint
            .list_sas(now)
            .into_iter()
            .map(|s| s.connection)
            .collect();
        for c in connections {
            self.endpoint.terminate(now, Target::Connection(c)).ok();
        }
        self.flush(now)?;
        let deadline = now + Duration::from_secs(2);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        while !self.endpoint.list_sas(Instant::now()).is_empty() && Instant::now() < deadline {
            let ready = self.poll(PollTimeout::from(100u16))?;
            let now = Instant::now();
            for index in ready.udp {
                while let Ok(Received::Ike {
                    local,
                    remote,
                    payload,
                }) = self.sockets.recv(index, &mut buf)
                {
                    self.endpoint
                        .handle_datagram(now, local, remote, &buf[payload]);
                }
            }
            if self.endpoint.poll_timeout().is_some_and(|t| t <= now) {
                self.endpoint.handle_timeout(now);
            }
            self.flush(now)?;
        }
        let mut leftovers: Vec<OwnedChild> = std::mem::take(&mut self.ledger.orphans);
        leftovers.extend(std::mem::take(&mut self.ledger.live).into_values());
        for o in &leftovers {
            self.remove_orphan(o);
        }
        self.state.remove()?;
        Ok(())
    }
}

/// Writes `ledger` to the state file unless it is what was written last.
fn save_ledger(state: &StateFile, saved: &mut Option<Ledger>, ledger: &Ledger) {
    if saved.as_ref() == Some(ledger) {
        return;
    }
    match state.save(&SavedState::new(ledger.clone())) {
        Ok(()) => *saved = Some(ledger.clone()),
        Err(e) => {
            tracing::error!("writing the state file: {e}; a restart would not know these SAs")
        }
    }
}

#[derive(Debug, Default)]
struct Ready {
    signal: bool,
    udp: Vec<usize>,
    api_events: bool,
    ctl_in: Vec<CtlFd>,
    ctl_out: Vec<u64>,
    ctl_hup: Vec<u64>,
}

fn ok(message: String) -> CtlResponse {
    CtlResponse::Ok { message }
}

fn command_error(e: crate::ike::CommandError) -> CtlResponse {
    use crate::ike::CommandError as E;
    let code = match e {
        E::UnknownConnection(_) | E::UnknownIkeSa(_) | E::UnknownChildSa(_) => {
            CtlErrorCode::NotFound
        }
        E::Internal(_) => CtlErrorCode::Internal,
        _ => CtlErrorCode::Failed,
    };
    CtlResponse::error(code, e.to_string())
}

fn ike_state(s: IkeSaState) -> &'static str {
    match s {
        IkeSaState::Connecting => "connecting",
        IkeSaState::Established => "established",
        IkeSaState::Rekeying => "rekeying",
        IkeSaState::Deleting => "deleting",
    }
}

fn child_state(s: ChildSaState) -> &'static str {
    match s {
        ChildSaState::Installed => "installed",
        ChildSaState::Rekeying => "rekeying",
        ChildSaState::Rekeyed => "rekeyed",
        ChildSaState::Deleting => "deleting",
    }
}
