//! One IKE SA: its channel(s) (SPIs, keys, message IDs, retransmission),
//! its Child SAs and its timers. The exchanges live in `auth.rs`,
//! `create_child.rs` and `informational.rs`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::child::ChildSa;
use super::connection::Connection;
use super::endpoint::{CommandError, Endpoint, Transmit};
use super::event::{Event, IkeSaSnapshot, IkeSaState, Reason};
use super::fragment::{self, Reassembled, Reassembly};
use super::proposal::IkeAlgorithms;
use super::{ChildSaId, IkeSaId};
use crate::crypto::{IkeKeys, SkCipher};
use crate::wire::consts::{exchange, notify, payload as pt};
use crate::wire::payload::{emit_payloads, parse_payloads};
use crate::wire::{Error as WireError, Flags, IkeHeader, Notify, Payload, PayloadIter, HEADER_LEN};

/// An exchange we started and wait an answer for.
#[derive(Debug)]
pub(crate) enum Request {
    /// IKE_AUTH, with the first Child SA when the connection has children.
    Auth(Option<super::auth::PendingChild>),
    /// CREATE_CHILD_SA for a new or rekeyed Child SA.
    CreateChild(super::create_child::ChildRequest),
    /// CREATE_CHILD_SA rekeying the IKE SA.
    RekeyIke(super::create_child::IkeRekeyRequest),
    /// INFORMATIONAL deleting the IKE SA.
    DeleteIke,
    /// INFORMATIONAL deleting Child SAs (already out of the data plane).
    DeleteChildren,
    /// An empty INFORMATIONAL (liveness check).
    Dpd,
    /// An INFORMATIONAL carrying an error notify; the SA dies after it.
    Notify,
}

impl Request {
    fn name(&self) -> &'static str {
        match self {
            Request::Auth(_) => "IKE_AUTH",
            Request::CreateChild(_) => "CREATE_CHILD_SA",
            Request::RekeyIke(_) => "CREATE_CHILD_SA (IKE rekey)",
            Request::DeleteIke => "INFORMATIONAL (delete IKE SA)",
            Request::DeleteChildren => "INFORMATIONAL (delete Child SA)",
            Request::Dpd => "INFORMATIONAL (DPD)",
            Request::Notify => "INFORMATIONAL (notify)",
        }
    }
}

#[derive(Debug)]
pub(crate) struct Outstanding {
    pub mid: u32,
    pub packets: Vec<Vec<u8>>,
    pub tries: u32,
    pub next_at: Instant,
    pub request: Request,
}

/// A request waiting for the window (size 1) to free up.
#[derive(Debug)]
pub(crate) struct Queued {
    pub exchange: u8,
    pub payloads: Vec<Payload>,
    pub request: Request,
}

/// The keys and message-ID state of one set of IKE SPIs. An IKE rekey
/// makes a new channel; the old one lingers to finish its Delete.
#[derive(Debug)]
pub(crate) struct Channel {
    pub spi_i: u64,
    pub spi_r: u64,
    /// Whether we are the original initiator of these SPIs (the I flag).
    pub initiator: bool,
    pub algs: IkeAlgorithms,
    pub keys: IkeKeys,
    pub sk_out: SkCipher,
    pub sk_in: SkCipher,
    pub next_mid: u32,
    pub peer_mid: u32,
    pub outstanding: Option<Outstanding>,
    pub queue: VecDeque<Queued>,
    pub cached_response: Option<(u32, Vec<Vec<u8>>)>,
    pub reassembly: Reassembly,
}

impl Channel {
    pub(crate) fn new(
        spi_i: u64,
        spi_r: u64,
        initiator: bool,
        algs: IkeAlgorithms,
        keys: IkeKeys,
    ) -> Result<Self, Reason> {
        let internal = |e: crate::crypto::CryptoError| Reason::Internal(e.to_string());
        let (out_e, out_a, in_e, in_a) = if initiator {
            (&keys.sk_ei, &keys.sk_ai, &keys.sk_er, &keys.sk_ar)
        } else {
            (&keys.sk_er, &keys.sk_ar, &keys.sk_ei, &keys.sk_ai)
        };
        let sk_out = SkCipher::new(algs.encr, algs.integ, out_e, out_a).map_err(internal)?;
        let sk_in = SkCipher::new(algs.encr, algs.integ, in_e, in_a).map_err(internal)?;
        Ok(Channel {
            spi_i,
            spi_r,
            initiator,
            algs,
            keys,
            sk_out,
            sk_in,
            next_mid: 0,
            peer_mid: 0,
            outstanding: None,
            queue: VecDeque::new(),
            cached_response: None,
            reassembly: Reassembly::default(),
        })
    }

    /// With [`super::Settings::log_keys`] only: the keys as Wireshark's
    /// IKEv2 decryption table wants them.
    pub(crate) fn log_keys(&self, ep: &Endpoint) {
        if !ep.settings.log_keys {
            return;
        }
        let hex = |k: &[u8]| k.iter().map(|b| format!("{b:02x}")).collect::<String>();
        debug!(
            spi_i = format_args!("{:016x}", self.spi_i),
            spi_r = format_args!("{:016x}", self.spi_r),
            sk_ei = %hex(&self.keys.sk_ei),
            sk_er = %hex(&self.keys.sk_er),
            sk_ai = %hex(&self.keys.sk_ai),
            sk_ar = %hex(&self.keys.sk_ar),
            algorithms = %self.algs,
            "TEST ONLY log_keys: IKE SA keys"
        );
    }

    fn our_spi(&self) -> u64 {
        if self.initiator {
            self.spi_i
        } else {
            self.spi_r
        }
    }
}

/// The phases of an IKE SA.
#[derive(Debug)]
pub(crate) enum Phase {
    /// Initiator: IKE_SA_INIT sent, no keys yet.
    InitSent(super::init::InitState),
    /// Initiator: IKE_AUTH sent. Responder: IKE_SA_INIT answered (half-open).
    Authenticating,
    /// Authenticated.
    Established,
    /// A Delete of the IKE SA is in flight, or it failed; nothing new starts.
    Deleting,
}

/// One IKE SA.
#[derive(Debug)]
pub(crate) struct IkeSa {
    pub id: IkeSaId,
    pub conn: Arc<Connection>,
    /// Original initiator of the IKE SA as first set up (for `list_sas`).
    pub we_initiated: bool,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub phase: Phase,
    pub chan: Option<Channel>,
    /// The channel an IKE rekey replaced, until its Delete is done.
    pub old_chan: Option<(Channel, Instant)>,
    /// The initiator's SPI while only IKE_SA_INIT happened (no channel yet).
    pub init_spi_i: u64,
    pub init_spi_r: u64,
    pub nonce_i: Vec<u8>,
    pub nonce_r: Vec<u8>,
    pub init_request: Vec<u8>,
    pub init_response: Vec<u8>,
    pub peer_id: Option<super::connection::Identity>,
    pub nat_local: bool,
    pub nat_remote: bool,
    pub peer_fragmentation: bool,
    pub children: Vec<ChildSa>,
    pub created: Instant,
    pub established_at: Option<Instant>,
    pub last_heard: Instant,
    pub rekey_at: Option<Instant>,
    pub keepalive_at: Option<Instant>,
    /// Half-open timeout, or the end of lingering after a failure.
    pub expire_at: Option<Instant>,
    pub dead: bool,
    /// The reason to report when the SA dies, if not the default.
    pub down_reason: Option<Reason>,
    /// The DH group the peer asked for in an IKE rekey (INVALID_KE_PAYLOAD).
    pub pending_rekey_group: Option<crate::crypto::DhGroup>,
    /// Virtual IPs assigned to us or leased to the peer.
    pub vips: super::virtual_ip::SaVips,
    /// Which initiation attempt this is (`keyingtries`); 0 for a responder.
    pub attempt: u32,
}

fn retransmit_delay(ep: &Endpoint, tries: u32) -> Duration {
    let s = &ep.settings;
    let factor = s
        .retransmit_base
        .powi(i32::try_from(tries).unwrap_or(i32::MAX));
    s.retransmit_timeout.mul_f64(factor.min(1e6))
}

impl IkeSa {
    pub(crate) fn connection_name(&self) -> &str {
        &self.conn.name
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.dead
    }

    /// A responder SA that has not seen a valid IKE_AUTH yet.
    pub(crate) fn is_half_open(&self) -> bool {
        !self.we_initiated && matches!(self.phase, Phase::Authenticating)
    }

    pub(crate) fn has_child(&self, id: ChildSaId) -> bool {
        self.children.iter().any(|c| c.id == id)
    }

    pub(crate) fn child_by_spi(&self, spi: u32) -> Option<ChildSaId> {
        self.children
            .iter()
            .find(|c| c.spi_in == spi || c.spi_out == spi)
            .map(|c| c.id)
    }

    pub(crate) fn our_spis(&self) -> Vec<u64> {
        let mut v = Vec::new();
        if let Some(c) = &self.chan {
            v.push(c.our_spi());
        }
        if let Some((c, _)) = &self.old_chan {
            v.push(c.our_spi());
        }
        v.push(if self.we_initiated {
            self.init_spi_i
        } else {
            self.init_spi_r
        });
        v
    }

    /// The message as the peer sent it, checked and decrypted: its inner
    /// payloads, or `None` when incomplete (more fragments) or dropped.
    /// `Err` carries an unsupported critical payload type to report.
    fn open(
        &self,
        chan: &mut Channel,
        header: &IkeHeader,
        datagram: &[u8],
        ep: &mut Endpoint,
    ) -> Option<Result<Vec<Payload>, u8>> {
        let body = datagram.get(HEADER_LEN..)?;
        let mut iter = PayloadIter::new(header.next_payload, body);
        let raw = loop {
            match iter.next() {
                Some(Ok(raw)) if raw.kind == pt::SK || raw.kind == pt::SKF => break raw,
                Some(Ok(_)) => continue,
                Some(Err(WireError::UnsupportedCriticalPayload(t))) => return Some(Err(t)),
                _ => {
                    ep.drops.malformed += 1;
                    return None;
                }
            }
        };
        // The body is a subslice of the datagram: its offset is where the IV starts.
        let body_at = raw.body.as_ptr() as usize - datagram.as_ptr() as usize;
        // RFC 7383 section 2.5: fragments only once both sides announced
        // support in IKE_SA_INIT; before that an SKF is held for nobody.
        if raw.kind == pt::SKF && !(self.peer_fragmentation && self.conn.fragmentation) {
            ep.drops.fragments_refused += 1;
            return None;
        }
        let (iv_at, frag) = if raw.kind == pt::SKF {
            let number = crate::wire::be16(raw.body, 0)?;
            let total = crate::wire::be16(raw.body, 2)?;
            (body_at + 4, Some((number, total)))
        } else {
            (body_at, None)
        };
        let plain = match chan.sk_in.open(datagram, iv_at) {
            Ok(p) => p,
            Err(e) => {
                ep.drops.integrity += 1;
                debug!(error = %e, "dropped an IKE message that failed its integrity check");
                return None;
            }
        };
        let (first, inner) = match frag {
            None => (raw.next_payload, plain),
            Some((number, total)) => {
                // Bounded per IKE SA and over all of them together: an
                // attacker completes IKE_SA_INIT on its own SAs easily.
                let others = ep.fragment_bytes_held();
                let budget = fragment::MAX_REASSEMBLED
                    .min(ep.settings.fragment_memory.saturating_sub(others));
                match chan.reassembly.add(
                    header.message_id,
                    number,
                    total,
                    raw.next_payload,
                    plain,
                    budget,
                ) {
                    Reassembled::OverBudget => {
                        ep.drops.fragments_refused += 1;
                        return None;
                    }
                    Reassembled::Incomplete => return None,
                    Reassembled::Invalid => {
                        ep.drops.malformed += 1;
                        return None;
                    }
                    Reassembled::Complete { first, inner } => (first, inner),
                }
            }
        };
        match parse_payloads(first, &inner) {
            Ok(p) => Some(Ok(p)),
            Err(WireError::UnsupportedCriticalPayload(t)) => Some(Err(t)),
            Err(e) => {
                ep.drops.malformed += 1;
                debug!(error = %e, "dropped an IKE message with malformed inner payloads");
                None
            }
        }
    }

    fn seal(
        &self,
        chan: &mut Channel,
        exchange: u8,
        response: bool,
        mid: u32,
        payloads: &[Payload],
        ep: &mut Endpoint,
    ) -> Result<Vec<Vec<u8>>, Reason> {
        let mut inner = Vec::with_capacity(256);
        let first =
            emit_payloads(payloads, &mut inner).map_err(|e| Reason::Internal(e.to_string()))?;
        let header = IkeHeader {
            spi_i: chan.spi_i,
            spi_r: chan.spi_r,
            next_payload: pt::SK,
            minor_version: 0,
            exchange,
            flags: Flags {
                initiator: chan.initiator,
                version: false,
                response,
            },
            message_id: mid,
            length: 0,
        };
        let frag = (self.peer_fragmentation && self.conn.fragmentation)
            .then_some(ep.settings.fragment_size);
        fragment::seal(header, first, &inner, &mut chan.sk_out, frag, &mut *ep.rng)
            .map_err(|e| Reason::Internal(e.to_string()))
    }

    pub(crate) fn transmit(&self, packets: &[Vec<u8>], ep: &mut Endpoint) {
        let marker = self.local.port() == ep.settings.natt_port;
        for p in packets {
            ep.transmits.push_back(Transmit {
                local: self.local,
                remote: self.remote,
                non_esp_marker: marker,
                payload: p.clone(),
            });
        }
    }

    /// Queues a request on the current channel; it goes out when the window
    /// is free.
    pub(crate) fn request(
        &mut self,
        now: Instant,
        exchange: u8,
        payloads: Vec<Payload>,
        request: Request,
        ep: &mut Endpoint,
    ) {
        if let Some(chan) = self.chan.as_mut() {
            chan.queue.push_back(Queued {
                exchange,
                payloads,
                request,
            });
        }
        self.pump(now, ep);
    }

    /// Sends the next queued request if nothing is outstanding.
    pub(crate) fn pump(&mut self, now: Instant, ep: &mut Endpoint) {
        let Some(mut chan) = self.chan.take() else {
            return;
        };
        if chan.outstanding.is_none() {
            if let Some(q) = chan.queue.pop_front() {
                let mid = chan.next_mid;
                match self.seal(&mut chan, q.exchange, false, mid, &q.payloads, ep) {
                    Ok(packets) => {
                        debug!(ike = %self.id, exchange = q.request.name(), mid, "sending request");
                        self.transmit(&packets, ep);
                        chan.next_mid = chan.next_mid.wrapping_add(1);
                        chan.outstanding = Some(Outstanding {
                            mid,
                            packets,
                            tries: 0,
                            next_at: now + retransmit_delay(ep, 0),
                            request: q.request,
                        });
                    }
                    Err(r) => {
                        warn!(ike = %self.id, reason = %r, "cannot seal a request");
                    }
                }
            }
        }
        self.chan = Some(chan);
    }

    /// Answers the peer's request `mid` on `chan` and caches the answer for
    /// retransmitted copies of the request.
    pub(crate) fn respond(
        &self,
        chan: &mut Channel,
        exchange: u8,
        mid: u32,
        payloads: &[Payload],
        ep: &mut Endpoint,
    ) {
        match self.seal(chan, exchange, true, mid, payloads, ep) {
            Ok(packets) => {
                self.transmit(&packets, ep);
                chan.cached_response = Some((mid, packets));
            }
            Err(r) => warn!(ike = %self.id, reason = %r, "cannot seal a response"),
        }
    }

    /// Handles a message for this SA (the dispatcher found it by our SPI).
    pub(crate) fn handle_message(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        header: IkeHeader,
        datagram: &[u8],
        ep: &mut Endpoint,
    ) {
        if let Phase::InitSent(_) = self.phase {
            if header.exchange == exchange::IKE_SA_INIT && header.flags.response {
                super::init::handle_init_response(self, now, local, remote, header, datagram, ep);
            }
            return;
        }
        // Messages on the SPIs an IKE rekey replaced.
        let on_old = match (&self.chan, &self.old_chan) {
            (Some(c), Some((old, _))) => {
                (c.spi_i, c.spi_r) != (header.spi_i, header.spi_r)
                    && (old.spi_i, old.spi_r) == (header.spi_i, header.spi_r)
            }
            _ => false,
        };
        let mut expires = now;
        let mut chan = if on_old {
            match self.old_chan.take() {
                Some((c, t)) => {
                    expires = t;
                    c
                }
                None => return,
            }
        } else {
            match self.chan.take() {
                Some(c) => c,
                None => return,
            }
        };
        let keep =
            self.handle_on_channel(now, local, remote, header, datagram, &mut chan, on_old, ep);
        if on_old {
            // A finished old channel still answers retransmissions of its
            // Delete for a while.
            let until = if keep {
                expires
            } else {
                expires.min(now + ep.settings.linger)
            };
            self.old_chan = Some((chan, until));
        } else if self.chan.is_none() {
            self.chan = Some(chan);
        }
        self.pump(now, ep);
    }

    /// Returns false when the channel is finished (old channel deleted).
    #[allow(clippy::too_many_arguments)]
    fn handle_on_channel(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        header: IkeHeader,
        datagram: &[u8],
        chan: &mut Channel,
        on_old: bool,
        ep: &mut Endpoint,
    ) -> bool {
        if header.flags.response {
            let Some(out) = chan.outstanding.as_ref() else {
                ep.drops.message_id += 1;
                return true;
            };
            if out.mid != header.message_id {
                ep.drops.message_id += 1;
                return true;
            }
            let payloads = match self.open(chan, &header, datagram, ep) {
                None => return true,
                Some(Ok(p)) => p,
                // A critical payload we do not know in a response: the
                // exchange cannot be understood, treat it as failed.
                Some(Err(t)) => vec![Payload::Notify(Notify::new(
                    notify::UNSUPPORTED_CRITICAL_PAYLOAD,
                    vec![t],
                ))],
            };
            self.last_heard = now;
            let Some(out) = chan.outstanding.take() else {
                return true;
            };
            if on_old {
                // Only the Delete of the old IKE SA runs on an old channel.
                info!(ike = %self.id, "old IKE SA deleted after rekey");
                return false;
            }
            self.handle_response(now, out.request, payloads, chan, ep);
            true
        } else {
            if header.message_id.wrapping_add(1) == chan.peer_mid {
                // RFC 7383 section 2.6.1: only the first fragment of a
                // retransmitted request triggers the answer again.
                let later_fragment = header.next_payload == pt::SKF
                    && crate::wire::be16(datagram, HEADER_LEN + 4).is_some_and(|n| n != 1);
                if let (Some((mid, packets)), false) = (&chan.cached_response, later_fragment) {
                    if *mid == header.message_id {
                        debug!(ike = %self.id, mid, "retransmitting the cached response");
                        let packets = packets.clone();
                        self.transmit(&packets, ep);
                    }
                }
                return true;
            }
            if header.message_id != chan.peer_mid {
                ep.drops.message_id += 1;
                return true;
            }
            let payloads = match self.open(chan, &header, datagram, ep) {
                None => return true,
                Some(Ok(p)) => p,
                Some(Err(t)) => {
                    info!(ike = %self.id, payload = t, "request with an unsupported critical payload");
                    let n = [Payload::Notify(Notify::new(
                        notify::UNSUPPORTED_CRITICAL_PAYLOAD,
                        vec![t],
                    ))];
                    self.respond(chan, header.exchange, header.message_id, &n, ep);
                    chan.peer_mid = chan.peer_mid.wrapping_add(1);
                    return true;
                }
            };
            self.last_heard = now;
            // The peer's NAT mapping may move; follow authenticated requests.
            if !on_old
                && (remote != self.remote || local != self.local)
                && self.established_at.is_some()
            {
                self.peer_moved(local, remote, ep);
            } else if !on_old {
                self.local = local;
                self.remote = remote;
            }
            chan.peer_mid = chan.peer_mid.wrapping_add(1);
            if on_old {
                // Requests the peer sent before it saw the rekey.
                let deleted = super::informational::deletes_ike(&payloads);
                super::informational::handle_old_request(self, now, header, payloads, chan, ep);
                return !deleted;
            }
            match header.exchange {
                exchange::IKE_AUTH => {
                    super::auth::handle_auth_request(self, now, header, payloads, chan, ep)
                }
                exchange::CREATE_CHILD_SA => {
                    super::create_child::handle_request(self, now, header, payloads, chan, ep)
                }
                exchange::INFORMATIONAL => {
                    super::informational::handle_request(self, now, header, payloads, chan, ep)
                }
                other => {
                    debug!(ike = %self.id, exchange = other, "request of an unknown exchange type");
                    self.respond(chan, other, header.message_id, &[], ep);
                }
            }
            true
        }
    }

    fn peer_moved(&mut self, local: SocketAddr, remote: SocketAddr, ep: &mut Endpoint) {
        info!(ike = %self.id, from = %self.remote, to = %remote, "peer address changed");
        self.local = local;
        self.remote = remote;
        for c in &self.children {
            if !c.encap {
                continue;
            }
            for (direction, spi, encap) in [
                (
                    xdpsec_api::Direction::Out,
                    c.spi_out,
                    xdpsec_api::UdpEncap {
                        sport: local.port(),
                        dport: remote.port(),
                    },
                ),
                (
                    xdpsec_api::Direction::In,
                    c.spi_in,
                    xdpsec_api::UdpEncap {
                        sport: remote.port(),
                        dport: local.port(),
                    },
                ),
            ] {
                let mut update = xdpsec_api::SaUpdate::new(spi, direction);
                update.tunnel_remote = Some(remote.ip());
                update.encap = Some(encap);
                ep.events.push_back(Event::UpdateSa {
                    child: c.id,
                    update,
                });
            }
        }
    }

    fn handle_response(
        &mut self,
        now: Instant,
        request: Request,
        payloads: Vec<Payload>,
        chan: &mut Channel,
        ep: &mut Endpoint,
    ) {
        match request {
            Request::Auth(child) => {
                super::auth::handle_auth_response(self, now, child, payloads, chan, ep)
            }
            Request::CreateChild(req) => {
                super::create_child::handle_child_response(self, now, req, payloads, chan, ep)
            }
            Request::RekeyIke(req) => {
                super::create_child::handle_ike_rekey_response(self, now, req, payloads, chan, ep)
            }
            Request::DeleteIke | Request::Notify => {
                info!(ike = %self.id, "IKE SA deleted");
                self.die(Reason::LocalDelete, ep);
            }
            Request::DeleteChildren => {
                debug!(ike = %self.id, "peer confirmed the Child SA delete");
            }
            Request::Dpd => {
                debug!(ike = %self.id, "peer is alive");
            }
        }
    }

    /// Tears the IKE SA down: every Child SA leaves the data plane, then the
    /// IKE SA is reported down and forgotten.
    pub(crate) fn die(&mut self, reason: Reason, ep: &mut Endpoint) {
        if self.dead {
            return;
        }
        let reason = self.down_reason.take().unwrap_or(reason);
        for c in self.children.drain(..) {
            c.remove(
                self.id,
                &self.conn.name,
                &[],
                reason.clone(),
                &mut ep.events,
            );
            ep.child_spis.remove(&c.spi_in);
        }
        super::virtual_ip::release(self, ep);
        ep.events.push_back(Event::IkeSaDown {
            ike: self.id,
            connection: self.conn.name.clone(),
            reason: reason.clone(),
        });
        info!(ike = %self.id, connection = %self.conn.name, %reason, "IKE SA down");
        self.dead = true;
    }

    /// Takes a Child SA out: its SAs leave the data plane, and its policies
    /// unless another Child SA of this IKE SA covers the same selectors.
    pub(crate) fn remove_child(
        &mut self,
        id: ChildSaId,
        reason: Reason,
        ep: &mut Endpoint,
    ) -> Option<ChildSa> {
        let at = self.children.iter().position(|c| c.id == id)?;
        let c = self.children.remove(at);
        let keep: Vec<xdpsec_api::PolicyKey> = self
            .children
            .iter()
            .flat_map(|o| o.policies())
            .map(|p| p.key())
            .collect();
        info!(ike = %self.id, child = %c.id, name = %c.name, %reason, "Child SA removed");
        c.remove(self.id, &self.conn.name, &keep, reason, &mut ep.events);
        ep.child_spis.remove(&c.spi_in);
        Some(c)
    }

    /// Sends a request on `chan` right away (its window must be free).
    pub(crate) fn send_on(
        &self,
        chan: &mut Channel,
        now: Instant,
        exchange: u8,
        payloads: &[Payload],
        request: Request,
        ep: &mut Endpoint,
    ) -> Result<(), Reason> {
        let mid = chan.next_mid;
        let packets = self.seal(chan, exchange, false, mid, payloads, ep)?;
        self.transmit(&packets, ep);
        chan.next_mid = chan.next_mid.wrapping_add(1);
        chan.outstanding = Some(Outstanding {
            mid,
            packets,
            tries: 0,
            next_at: now + retransmit_delay(ep, 0),
            request,
        });
        Ok(())
    }

    /// Whether the channel an IKE rekey replaced still waits for an answer
    /// to a request of ours (its Delete). One that only lingers to answer
    /// retransmissions may give way to the next rekey: otherwise a peer that
    /// rekeys again within the linger time gets TEMPORARY_FAILURE and backs
    /// off for many seconds (strongSwan: up to 15).
    pub(crate) fn old_chan_busy(&self) -> bool {
        self.old_chan
            .as_ref()
            .is_some_and(|(old, _)| old.outstanding.is_some())
    }

    /// Forgets the channel an IKE rekey replaced.
    pub(crate) fn drop_old_chan(&mut self, ep: &mut Endpoint) {
        if let Some((old, _)) = self.old_chan.take() {
            let spi = old.our_spi();
            if ep.by_spi.get(&spi) == Some(&self.id) {
                ep.by_spi.remove(&spi);
            }
        }
    }

    /// After a failed initiation: another attempt while `keyingtries`
    /// allows (0: forever).
    pub(crate) fn try_again(&self, ep: &mut Endpoint) {
        let tries = self.conn.keyingtries;
        if self.we_initiated && (tries == 0 || self.attempt < tries) {
            ep.restart.push((self.conn.name.clone(), self.attempt + 1));
        }
    }

    /// Retransmissions, give-ups, rekeys, DPD, keepalives, expiries.
    pub(crate) fn handle_timeout(&mut self, now: Instant, ep: &mut Endpoint) {
        if let Phase::InitSent(_) = self.phase {
            super::init::init_timeout(self, now, ep);
            return;
        }
        if let Some(t) = self.expire_at {
            if now >= t {
                self.expire_at = None;
                if matches!(self.phase, Phase::Established) {
                    // The hard lifetime came before a rekey succeeded.
                    info!(ike = %self.id, "IKE SA lifetime expired");
                    self.down_reason = Some(Reason::Expired);
                    super::informational::delete_ike(self, now, ep);
                } else {
                    let r = if self.is_half_open() {
                        Reason::Timeout(0)
                    } else {
                        Reason::Protocol("no answer while deleting".into())
                    };
                    self.die(r, ep);
                    return;
                }
            }
        }
        // Retransmission on the old channel (its Delete), then its end.
        if let Some((old, t)) = self.old_chan.as_mut() {
            let mut resend = None;
            if let Some(out) = old.outstanding.as_mut() {
                if now >= out.next_at {
                    if out.tries >= ep.settings.retransmit_tries {
                        old.outstanding = None;
                    } else {
                        out.tries += 1;
                        out.next_at = now + retransmit_delay(ep, out.tries);
                        resend = Some(out.packets.clone());
                    }
                }
            }
            let done = old.outstanding.is_none() && now >= *t;
            if let Some(p) = resend {
                self.transmit(&p, ep);
            }
            if done {
                self.drop_old_chan(ep);
            }
        }
        let mut give_up: Option<Request> = None;
        if let Some(chan) = self.chan.as_mut() {
            if let Some(out) = chan.outstanding.as_mut() {
                if now >= out.next_at {
                    if out.tries >= ep.settings.retransmit_tries {
                        give_up = chan.outstanding.take().map(|o| o.request);
                    } else {
                        out.tries += 1;
                        out.next_at = now + retransmit_delay(ep, out.tries);
                        let p = out.packets.clone();
                        let tries = out.tries;
                        debug!(ike = %self.id, tries, "retransmitting");
                        let marker = self.local.port() == ep.settings.natt_port;
                        for payload in p {
                            ep.transmits.push_back(Transmit {
                                local: self.local,
                                remote: self.remote,
                                non_esp_marker: marker,
                                payload,
                            });
                        }
                    }
                }
            }
        }
        if let Some(req) = give_up {
            let tries = ep.settings.retransmit_tries;
            let reason = if matches!(req, Request::Dpd) {
                Reason::DeadPeer
            } else if matches!(req, Request::DeleteIke | Request::Notify) {
                Reason::LocalDelete
            } else {
                Reason::Timeout(tries)
            };
            warn!(ike = %self.id, exchange = req.name(), %reason, "peer did not answer");
            let connecting = self.established_at.is_none();
            self.die(reason.clone(), ep);
            if connecting {
                self.try_again(ep);
            } else if reason == Reason::DeadPeer
                && self.conn.dpd_action == super::DpdAction::Restart
            {
                ep.restart.push((self.conn.name.clone(), 1));
            }
            return;
        }
        if !matches!(self.phase, Phase::Established) {
            return;
        }
        // DPD: nothing heard for dpd_delay and nothing in flight.
        if let Some(delay) = self.conn.dpd_delay {
            let idle = self
                .chan
                .as_ref()
                .is_some_and(|c| c.outstanding.is_none() && c.queue.is_empty());
            if idle && now >= self.last_heard + delay {
                debug!(ike = %self.id, "DPD");
                self.last_heard = now;
                self.request(now, exchange::INFORMATIONAL, Vec::new(), Request::Dpd, ep);
            }
        }
        if let Some(t) = self.keepalive_at {
            if now >= t {
                ep.transmits.push_back(Transmit {
                    local: self.local,
                    remote: self.remote,
                    non_esp_marker: false,
                    payload: vec![0xff],
                });
                self.keepalive_at = ep.settings.keepalive_interval.map(|i| now + i);
            }
        }
        if let Some(t) = self.rekey_at {
            if now >= t {
                self.rekey_at = None;
                if let Err(e) = super::create_child::pending_rekey(self, now, ep) {
                    warn!(ike = %self.id, error = %e, "cannot rekey the IKE SA");
                }
            }
        }
        let due: Vec<(ChildSaId, bool)> = self
            .children
            .iter()
            .filter_map(|c| {
                if c.expire_at.is_some_and(|t| now >= t) {
                    Some((c.id, true))
                } else if c.rekey_at.is_some_and(|t| now >= t) {
                    Some((c.id, false))
                } else {
                    None
                }
            })
            .collect();
        for (id, expire) in due {
            if expire {
                if let Some(c) = self.children.iter_mut().find(|c| c.id == id) {
                    c.expire_at = None;
                }
                let _ =
                    super::informational::delete_children(self, now, &[id], Reason::Expired, ep);
            } else {
                if let Some(c) = self.children.iter_mut().find(|c| c.id == id) {
                    c.rekey_at = None;
                }
                if let Err(e) = super::create_child::start_child_rekey(self, now, id, ep) {
                    warn!(ike = %self.id, child = %id, error = %e, "cannot rekey the Child SA");
                }
            }
        }
    }

    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        let mut t: Vec<Instant> = Vec::new();
        if let Phase::InitSent(s) = &self.phase {
            t.push(s.next_at);
            return t.into_iter().min();
        }
        t.extend(self.expire_at);
        if let Some((old, until)) = &self.old_chan {
            t.push(*until);
            t.extend(old.outstanding.as_ref().map(|o| o.next_at));
        }
        if let Some(c) = &self.chan {
            t.extend(c.outstanding.as_ref().map(|o| o.next_at));
        }
        if matches!(self.phase, Phase::Established) {
            // DPD waits while a request is in flight: its retransmissions
            // find a dead peer anyway.
            let idle = self
                .chan
                .as_ref()
                .is_some_and(|c| c.outstanding.is_none() && c.queue.is_empty());
            if let (Some(d), true) = (self.conn.dpd_delay, idle) {
                t.push(self.last_heard + d);
            }
            t.extend(self.keepalive_at);
            t.extend(self.rekey_at);
            for c in &self.children {
                t.extend(c.rekey_at);
                t.extend(c.expire_at);
            }
        }
        t.into_iter().min()
    }

    pub(crate) fn snapshot(&self, now: Instant) -> IkeSaSnapshot {
        let state = match (&self.phase, &self.chan) {
            (Phase::InitSent(_) | Phase::Authenticating, _) => IkeSaState::Connecting,
            (Phase::Deleting, _) => IkeSaState::Deleting,
            (Phase::Established, Some(c))
                if c.outstanding
                    .as_ref()
                    .is_some_and(|o| matches!(o.request, Request::RekeyIke(_))) =>
            {
                IkeSaState::Rekeying
            }
            (Phase::Established, _) => IkeSaState::Established,
        };
        let (spi_i, spi_r) = match &self.chan {
            Some(c) => (c.spi_i, c.spi_r),
            None => (self.init_spi_i, self.init_spi_r),
        };
        IkeSaSnapshot {
            id: self.id,
            connection: self.conn.name.clone(),
            state,
            initiator: self.we_initiated,
            local: self.local,
            remote: self.remote,
            spi_i,
            spi_r,
            peer_id: self.peer_id.as_ref().map(super::common::id_display),
            algorithms: self.chan.as_ref().map(|c| c.algs.to_string()),
            nat: self.nat_local || self.nat_remote,
            age: now.saturating_duration_since(self.established_at.unwrap_or(self.created)),
            rekey_in: self.rekey_at.map(|t| t.saturating_duration_since(now)),
            children: self.children.iter().map(|c| c.snapshot(now)).collect(),
        }
    }

    /// The `terminate` command.
    pub(crate) fn delete_ike(&mut self, now: Instant, ep: &mut Endpoint) {
        super::informational::delete_ike(self, now, ep);
    }

    pub(crate) fn delete_child(
        &mut self,
        now: Instant,
        child: ChildSaId,
        ep: &mut Endpoint,
    ) -> Result<(), CommandError> {
        super::informational::delete_children(self, now, &[child], Reason::LocalDelete, ep)
    }

    pub(crate) fn rekey_child(
        &mut self,
        now: Instant,
        child: ChildSaId,
        ep: &mut Endpoint,
    ) -> Result<(), CommandError> {
        super::create_child::start_child_rekey(self, now, child, ep)
    }

    pub(crate) fn rekey_ike(
        &mut self,
        now: Instant,
        ep: &mut Endpoint,
    ) -> Result<(), CommandError> {
        super::create_child::start_ike_rekey(self, now, ep)
    }
}
