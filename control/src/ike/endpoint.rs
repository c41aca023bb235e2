//! [`Endpoint`]: every IKE SA of the process, the datagram dispatcher, the
//! commands and the output queues.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tracing::debug;

use super::connection::Connection;
use super::cookie::CookieJar;
use super::event::{Event, IkeSaSnapshot, LifetimeSeverity};
use super::sa::IkeSa;
use super::{ChildSaId, IkeSaId, Target};
use crate::crypto::Random;
use crate::wire::IkeHeader;

/// Endpoint-wide knobs; [`Settings::default`] follows strongSwan's defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The IKE port (500): where IKE starts and where the peer is contacted.
    pub ike_port: u16,
    /// The NAT-T port (4500): where IKE moves when a NAT is detected, and
    /// whose messages carry the non-ESP marker.
    pub natt_port: u16,
    /// First retransmission timeout.
    pub retransmit_timeout: Duration,
    /// Multiplier of the timeout after each retransmission.
    pub retransmit_base: f64,
    /// Retransmissions before giving up on the peer.
    pub retransmit_tries: u32,
    /// Half-open (responder, not yet authenticated) IKE SAs at which
    /// cookies (RFC 7296 section 2.6) are demanded.
    pub cookie_threshold: usize,
    /// Half-open IKE SAs beyond which new IKE_SA_INIT requests are dropped
    /// even with a valid cookie: memory stays bounded under any flood.
    pub max_half_open: usize,
    /// Half-open IKE SAs one source address may hold (strongSwan's
    /// `block_threshold`): one host, even one that answers cookies, cannot
    /// take the table from everyone else. A source at its quota must also
    /// answer a cookie, so spoofing its address makes no state.
    pub max_half_open_per_source: usize,
    /// How long a half-open IKE SA may wait for IKE_AUTH.
    pub half_open_timeout: Duration,
    /// How often the cookie secret changes (the previous one stays valid).
    pub cookie_secret_lifetime: Duration,
    /// Interval of NAT keepalives while we are behind a NAT; `None`: off.
    pub keepalive_interval: Option<Duration>,
    /// Largest IKE datagram before fragmentation (RFC 7383), IP and UDP
    /// headers excluded.
    pub fragment_size: usize,
    /// Decrypted IKE fragments (RFC 7383) all IKE SAs together may hold
    /// while their messages are reassembled; each holds at most 64 KiB.
    pub fragment_memory: usize,
    /// Time a deleted/rekeyed SA's cached state lingers (answers
    /// retransmitted requests, absorbs late packets).
    pub linger: Duration,
    /// TEST ONLY: log each IKE SA's SK_e/SK_a keys at debug level, in
    /// Wireshark's IKEv2 decryption table order, so captures can be
    /// decrypted. Never on in production.
    pub log_keys: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            ike_port: 500,
            natt_port: 4500,
            retransmit_timeout: Duration::from_secs(4),
            retransmit_base: 1.8,
            retransmit_tries: 5,
            cookie_threshold: 10,
            max_half_open: 1000,
            max_half_open_per_source: 5,
            half_open_timeout: Duration::from_secs(30),
            cookie_secret_lifetime: Duration::from_secs(120),
            keepalive_interval: Some(Duration::from_secs(20)),
            // IPv6's minimum MTU less IPv6, UDP and the non-ESP marker.
            fragment_size: 1280 - 40 - 8 - 4,
            fragment_memory: 64 << 20,
            linger: Duration::from_secs(10),
            log_keys: false,
        }
    }
}

impl Settings {
    /// The settings of the config's `[daemon]` section.
    pub fn from_daemon(d: &crate::config::DaemonConfig) -> Self {
        let defaults = Settings::default();
        Settings {
            ike_port: d.port,
            natt_port: d.port_nat_t,
            retransmit_timeout: d.retransmit_timeout,
            retransmit_base: d.retransmit_base,
            retransmit_tries: d.retransmit_tries,
            cookie_threshold: usize::try_from(d.cookie_threshold).unwrap_or(usize::MAX),
            max_half_open: usize::try_from(d.half_open_limit).unwrap_or(usize::MAX),
            max_half_open_per_source: usize::try_from(d.half_open_per_source).unwrap_or(usize::MAX),
            keepalive_interval: (!d.keep_alive.is_zero()).then_some(d.keep_alive),
            log_keys: d.log_keys,
            fragment_memory: usize::try_from(d.fragment_memory).unwrap_or(usize::MAX),
            ..defaults
        }
    }
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Send from this address and port (port 500 or 4500 socket).
    pub local: SocketAddr,
    /// To this address and port.
    pub remote: SocketAddr,
    /// Prepend the 4-byte non-ESP marker (zeros): true for IKE messages on
    /// the NAT-T port, false on port 500 and for NAT keepalives.
    pub non_esp_marker: bool,
    /// The IKE message (or the one-byte 0xFF NAT keepalive).
    pub payload: Vec<u8>,
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No connection with that name is loaded.
    #[error("no connection named {0:?}")]
    UnknownConnection(String),
    /// The connection cannot be initiated (it names no remote or local address).
    #[error("connection {name:?} cannot be initiated: {reason}")]
    NotInitiable {
        /// The connection.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// No such IKE SA.
    #[error("no IKE SA {0}")]
    UnknownIkeSa(IkeSaId),
    /// No such Child SA.
    #[error("no Child SA {0}")]
    UnknownChildSa(ChildSaId),
    /// The SA is not in a state that allows it (still connecting, deleting).
    #[error("{0}")]
    InvalidState(&'static str),
    /// A local failure (random generator).
    #[error("internal error: {0}")]
    Internal(String),
}

/// Counters of what the endpoint dropped, for `xdpsec ike` status and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drops {
    /// Datagrams that did not parse as IKE.
    pub malformed: u64,
    /// Messages for an IKE SA we do not have.
    pub unknown_spi: u64,
    /// Messages that failed integrity or decryption.
    pub integrity: u64,
    /// Requests out of the window or responses to nothing outstanding.
    pub message_id: u64,
    /// IKE_SA_INIT requests answered with a cookie request.
    pub cookie_requested: u64,
    /// IKE_SA_INIT requests dropped because the half-open table was full.
    pub half_open_full: u64,
    /// IKE_SA_INIT requests (with a valid cookie) dropped because their
    /// source already holds its quota of half-open IKE SAs.
    pub half_open_source_full: u64,
    /// IKE fragments refused: fragmentation not negotiated, or holding
    /// them would pass the reassembly memory of the SA or of all SAs.
    pub fragments_refused: u64,
}

/// Every IKE SA of the process; see the [module docs](super).
#[derive(Debug)]
pub struct Endpoint {
    pub(super) settings: Settings,
    pub(super) connections: Vec<Arc<Connection>>,
    pub(super) rng: Box<dyn Random>,
    pub(super) sas: HashMap<IkeSaId, IkeSa>,
    /// Our SPI of each IKE SA (initiator SPI if we initiated it, responder
    /// SPI otherwise) to its id.
    pub(super) by_spi: HashMap<u64, IkeSaId>,
    /// Responder SAs by the initiator's SPI and address, to recognise a
    /// retransmitted IKE_SA_INIT.
    pub(super) by_init: HashMap<(u64, SocketAddr), IkeSaId>,
    pub(super) cookies: CookieJar,
    pub(super) transmits: VecDeque<Transmit>,
    pub(super) events: VecDeque<Event>,
    pub(super) next_ike_id: u64,
    pub(super) next_child_id: u64,
    pub(super) drops: Drops,
    /// Log budget of the IKE_SA_INIT lines anyone can cause.
    pub(super) init_log: super::log_limit::LogLimit,
    /// Inbound ESP SPIs in use or reserved, so a new one never collides.
    pub(super) child_spis: HashSet<u32>,
    /// Connections to initiate again (keyingtries, DPD action restart,
    /// close action start), with the number of the attempt.
    pub(super) restart: Vec<(String, u32)>,
    /// A wall-clock reading and the instant it was taken: certificate
    /// validity needs calendar time, which the machine never reads itself.
    pub(super) wall_clock: Option<(Instant, SystemTime)>,
    /// Virtual IP pools, made from the config when a client first asks.
    pub(super) pools: Option<crate::pool::Pools>,
    /// Data-plane workers, each of which can have its own RFC 9611
    /// per-resource Child SA.
    pub(super) resources: u32,
}

impl Endpoint {
    /// An endpoint with these connections. `rng` supplies every SPI, nonce,
    /// DH secret and IV: [`crate::crypto::SystemRandom`] in the daemon, a
    /// [`crate::crypto::SeededRandom`] in tests.
    pub fn new(settings: Settings, connections: Vec<Connection>, rng: Box<dyn Random>) -> Self {
        Endpoint {
            settings,
            connections: connections.into_iter().map(Arc::new).collect(),
            rng,
            sas: HashMap::new(),
            by_spi: HashMap::new(),
            by_init: HashMap::new(),
            cookies: CookieJar::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_ike_id: 1,
            next_child_id: 1,
            drops: Drops::default(),
            init_log: Default::default(),
            child_spis: HashSet::new(),
            restart: Vec::new(),
            wall_clock: None,
            pools: None,
            resources: 1,
        }
    }

    /// How many data-plane workers send ESP (the SA API's `worker_stats`):
    /// with more than one, RFC 9611 per-resource Child SAs are made, one
    /// per worker, for peers that support them. New Child SAs use the
    /// number; those already up keep theirs.
    pub fn set_resources(&mut self, workers: u32) {
        self.resources = workers.clamp(1, xdpsec_api::sa::MAX_RESOURCES);
    }

    /// See [`Endpoint::set_resources`].
    pub fn resources(&self) -> u32 {
        self.resources
    }

    /// Tells the endpoint that `now` is `wall` in calendar time (call it
    /// once at start with `Instant::now()` and `SystemTime::now()`):
    /// certificate validity is checked against it.
    pub fn set_wall_clock(&mut self, now: Instant, wall: SystemTime) {
        self.wall_clock = Some((now, wall));
    }

    pub(super) fn wall_clock_at(&self, at: Instant) -> Option<SystemTime> {
        let (then, wall) = self.wall_clock?;
        Some(if at >= then {
            wall + (at - then)
        } else {
            wall - (then - at)
        })
    }

    /// Replaces the loaded connections (config reload). Established SAs
    /// keep the connection they were set up with.
    pub fn set_connections(&mut self, connections: Vec<Connection>) {
        self.connections = connections.into_iter().map(Arc::new).collect();
    }

    /// The loaded connections.
    pub fn connections(&self) -> impl Iterator<Item = &Connection> {
        self.connections.iter().map(|c| &**c)
    }

    /// The settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// What was dropped so far.
    pub fn drops(&self) -> Drops {
        self.drops
    }

    /// Handles one received IKE datagram (non-ESP marker already removed).
    /// `local` is the address and port it arrived on, `remote` its source.
    /// A single 0xFF byte (a NAT keepalive) is ignored.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        datagram: &[u8],
    ) {
        if datagram == [0xff] {
            return;
        }
        let header = match IkeHeader::parse(datagram) {
            Ok(h) => h,
            Err(e) => {
                self.drops.malformed += 1;
                debug!(%remote, error = %e, "dropped a datagram that is not an IKE message");
                return;
            }
        };
        self.dispatch(now, local, remote, header, datagram);
        self.run_restarts(now);
    }

    /// Does whatever is due at `now`: retransmissions, give-ups, DPD,
    /// keepalives, rekeys, expiries, half-open clean-up.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.cookies
            .rotate(now, self.settings.cookie_secret_lifetime, &mut *self.rng);
        let ids: Vec<IkeSaId> = self.sas.keys().copied().collect();
        for id in ids {
            self.with_sa(id, |sa, ep| sa.handle_timeout(now, ep));
        }
        self.run_restarts(now);
    }

    fn run_restarts(&mut self, now: Instant) {
        for (name, attempt) in std::mem::take(&mut self.restart) {
            let conn = self.connections.iter().find(|c| c.name == name).cloned();
            let Some(conn) = conn else { continue };
            tracing::info!(connection = %name, attempt, "initiating again");
            if let Err(e) = IkeSa::initiate(now, conn, attempt, self) {
                tracing::warn!(connection = %name, error = %e, "cannot initiate the connection again");
            }
        }
    }

    /// The next datagram to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Endpoint::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.sas.values().filter_map(IkeSa::next_timeout).min()
    }

    /// Starts the connection `name`: a new IKE SA with the connection's
    /// first child, initiated from its first local address to its first
    /// remote address.
    pub fn initiate(&mut self, now: Instant, name: &str) -> Result<IkeSaId, CommandError> {
        let conn = self
            .connections
            .iter()
            .find(|c| c.name == name)
            .cloned()
            .ok_or_else(|| CommandError::UnknownConnection(name.to_owned()))?;
        IkeSa::initiate(now, conn, 1, self)
    }

    /// Deletes IKE SAs (with their Child SAs) or one Child SA, telling the
    /// peer with an INFORMATIONAL Delete. The SAs leave the data plane at
    /// once (events); the IKE SA is forgotten when the peer answers or
    /// after the retransmissions.
    pub fn terminate(&mut self, now: Instant, target: Target) -> Result<(), CommandError> {
        match target {
            Target::Connection(name) => {
                let ids: Vec<IkeSaId> = self
                    .sas
                    .iter()
                    .filter(|(_, sa)| sa.connection_name() == name)
                    .map(|(id, _)| *id)
                    .collect();
                if ids.is_empty() && !self.connections.iter().any(|c| c.name == name) {
                    return Err(CommandError::UnknownConnection(name));
                }
                for id in ids {
                    self.with_sa(id, |sa, ep| sa.delete_ike(now, ep));
                }
                Ok(())
            }
            Target::IkeSa(id) => {
                if !self.sas.contains_key(&id) {
                    return Err(CommandError::UnknownIkeSa(id));
                }
                self.with_sa(id, |sa, ep| sa.delete_ike(now, ep));
                Ok(())
            }
            Target::ChildSa(child) => {
                let id = self.ike_of_child(child)?;
                self.with_sa(id, |sa, ep| sa.delete_child(now, child, ep))
                    .unwrap_or(Err(CommandError::UnknownChildSa(child)))
            }
        }
    }

    /// Rekeys a Child SA (CREATE_CHILD_SA with REKEY_SA, make-before-break).
    pub fn rekey_child(&mut self, now: Instant, child: ChildSaId) -> Result<(), CommandError> {
        let id = self.ike_of_child(child)?;
        self.with_sa(id, |sa, ep| sa.rekey_child(now, child, ep))
            .unwrap_or(Err(CommandError::UnknownChildSa(child)))
    }

    /// Rekeys an IKE SA (CREATE_CHILD_SA with a new IKE SA proposal); its
    /// Child SAs move to the new one.
    pub fn rekey_ike(&mut self, now: Instant, ike: IkeSaId) -> Result<(), CommandError> {
        self.with_sa(ike, |sa, ep| sa.rekey_ike(now, ep))
            .unwrap_or(Err(CommandError::UnknownIkeSa(ike)))
    }

    /// A lifetime event from the data plane for the SA with inbound or
    /// outbound SPI `spi`: soft rekeys the Child SA, hard deletes it.
    pub fn handle_lifetime_event(
        &mut self,
        now: Instant,
        spi: u32,
        severity: LifetimeSeverity,
    ) -> Result<(), CommandError> {
        let found = self
            .sas
            .iter()
            .find_map(|(id, sa)| sa.child_by_spi(spi).map(|c| (*id, c)));
        let Some((id, child)) = found else {
            return Err(CommandError::InvalidState("no Child SA with that SPI"));
        };
        match severity {
            LifetimeSeverity::Soft => self
                .with_sa(id, |sa, ep| sa.rekey_child(now, child, ep))
                .unwrap_or(Err(CommandError::UnknownChildSa(child))),
            LifetimeSeverity::Hard => self
                .with_sa(id, |sa, ep| sa.delete_child(now, child, ep))
                .unwrap_or(Err(CommandError::UnknownChildSa(child))),
        }
    }

    /// Snapshots of every IKE SA and its Child SAs at `now`.
    pub fn list_sas(&self, now: Instant) -> Vec<IkeSaSnapshot> {
        let mut v: Vec<IkeSaSnapshot> = self.sas.values().map(|sa| sa.snapshot(now)).collect();
        v.sort_by_key(|s| s.id);
        v
    }

    /// The IKE SAs of a connection.
    pub fn ike_sas_of(&self, connection: &str) -> Vec<IkeSaId> {
        let mut v: Vec<IkeSaId> = self
            .sas
            .iter()
            .filter(|(_, sa)| sa.connection_name() == connection)
            .map(|(id, _)| *id)
            .collect();
        v.sort();
        v
    }

    /// Reserves inbound SPIs the data plane already holds (after a daemon
    /// restart) so that new Child SAs never collide with them.
    pub fn reserve_spis(&mut self, spis: impl IntoIterator<Item = u32>) {
        self.child_spis.extend(spis);
    }

    fn ike_of_child(&self, child: ChildSaId) -> Result<IkeSaId, CommandError> {
        self.sas
            .iter()
            .find(|(_, sa)| sa.has_child(child))
            .map(|(id, _)| *id)
            .ok_or(CommandError::UnknownChildSa(child))
    }

    /// Runs `f` on the SA taken out of the table (so that it can use the
    /// endpoint's queues and RNG), then puts it back unless it finished.
    pub(super) fn with_sa<R>(
        &mut self,
        id: IkeSaId,
        f: impl FnOnce(&mut IkeSa, &mut Endpoint) -> R,
    ) -> Option<R> {
        let mut sa = self.sas.remove(&id)?;
        let r = f(&mut sa, self);
        if sa.is_dead() {
            self.forget(&sa);
        } else {
            self.sas.insert(id, sa);
        }
        Some(r)
    }

    pub(super) fn forget(&mut self, sa: &IkeSa) {
        for spi in sa.our_spis() {
            if self.by_spi.get(&spi) == Some(&sa.id) {
                self.by_spi.remove(&spi);
            }
        }
        self.by_init.retain(|_, v| *v != sa.id);
    }

    pub(super) fn alloc_ike_id(&mut self) -> IkeSaId {
        let id = IkeSaId(self.next_ike_id);
        self.next_ike_id += 1;
        id
    }

    pub(super) fn alloc_child_id(&mut self) -> ChildSaId {
        let id = ChildSaId(self.next_child_id);
        self.next_child_id += 1;
        id
    }

    pub(super) fn half_open(&self) -> usize {
        self.sas.values().filter(|sa| sa.is_half_open()).count()
    }

    /// Decrypted IKE fragment bytes held by the IKE SAs in the table (the
    /// one being worked on is out of it).
    pub(super) fn fragment_bytes_held(&self) -> usize {
        self.sas
            .values()
            .flat_map(|sa| {
                sa.chan
                    .iter()
                    .chain(sa.old_chan.iter().map(|(chan, _)| chan))
            })
            .map(|chan| chan.reassembly.held())
            .sum()
    }

    /// Half-open IKE SAs that `source` started.
    pub(super) fn half_open_from(&self, source: std::net::IpAddr) -> usize {
        self.sas
            .values()
            .filter(|sa| !sa.we_initiated && sa.is_half_open() && sa.remote.ip() == source)
            .count()
    }
}
