//! IKE_SA_INIT on the initiator's side (the responder's stateless part is
//! in `exchange.rs`): the request, COOKIE and INVALID_KE_PAYLOAD rounds,
//! retransmission, key derivation from the response and NAT detection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use aws_lc_rs::digest;
use tracing::{debug, info, warn};

use super::common::{error_notify, notify_of, random_ike_spi, random_vec, NONCE_LEN};
use super::connection::Connection;
use super::endpoint::{CommandError, Endpoint};
use super::event::Reason;
use super::proposal::select_ike;
use super::sa::{Channel, IkeSa, Phase};
use super::IkeSaId;
use crate::crypto::{DhGroup, DhPrivate, IkeKeys};
use crate::wire::consts::{exchange, notify};
use crate::wire::{Flags, IkeHeader, KeyExchange, Message, Notify, Payload, SecurityAssociation};

/// How often an initiator follows INVALID_KE_PAYLOAD or COOKIE before giving up.
const MAX_INIT_RETRIES: u8 = 3;

/// The initiator's state between IKE_SA_INIT request and response.
#[derive(Debug)]
pub(crate) struct InitState {
    pub dh: DhPrivate,
    pub cookie: Option<Vec<u8>>,
    pub packet: Vec<u8>,
    pub tries: u32,
    pub next_at: Instant,
    pub restarts: u8,
}

/// NAT_DETECTION_*_IP data: SHA-1(SPIi | SPIr | IP | port) (section 2.23).
pub(crate) fn nat_hash(spi_i: u64, spi_r: u64, addr: SocketAddr) -> Vec<u8> {
    let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(&spi_i.to_be_bytes());
    ctx.update(&spi_r.to_be_bytes());
    match addr.ip() {
        std::net::IpAddr::V4(a) => ctx.update(&a.octets()),
        std::net::IpAddr::V6(a) => ctx.update(&a.octets()),
    }
    ctx.update(&addr.port().to_be_bytes());
    ctx.finish().as_ref().to_vec()
}

fn sig_hash_notify() -> Payload {
    Payload::Notify(Notify::new(
        notify::SIGNATURE_HASH_ALGORITHMS,
        crate::cert::signature_hash_algorithms_notify_data(),
    ))
}

/// The unencrypted IKE_SA_INIT request.
fn build_init_request(sa: &IkeSa, st: &InitState, ep: &mut Endpoint) -> Result<Vec<u8>, Reason> {
    let mut payloads = Vec::new();
    if let Some(c) = &st.cookie {
        payloads.push(Payload::Notify(Notify::new(notify::COOKIE, c.clone())));
    }
    payloads.push(Payload::Sa(SecurityAssociation {
        proposals: sa
            .conn
            .proposals
            .iter()
            .enumerate()
            .map(|(i, p)| p.to_wire(u8::try_from(i + 1).unwrap_or(u8::MAX), Vec::new()))
            .collect(),
    }));
    payloads.push(Payload::Ke(KeyExchange {
        group: st.dh.group().id(),
        data: st.dh.public().to_vec(),
    }));
    payloads.push(Payload::Nonce(sa.nonce_i.clone()));
    let src = if sa.conn.encap {
        // strongSwan's `encap = yes`: a source hash that cannot match
        // makes both sides see a NAT and encapsulate.
        random_vec(ep, 20)?
    } else {
        nat_hash(sa.init_spi_i, 0, sa.local)
    };
    payloads.push(Payload::Notify(Notify::new(
        notify::NAT_DETECTION_SOURCE_IP,
        src,
    )));
    payloads.push(Payload::Notify(Notify::new(
        notify::NAT_DETECTION_DESTINATION_IP,
        nat_hash(sa.init_spi_i, 0, sa.remote),
    )));
    if sa.conn.fragmentation {
        payloads.push(Payload::Notify(Notify::new(
            notify::IKEV2_FRAGMENTATION_SUPPORTED,
            Vec::new(),
        )));
    }
    payloads.push(sig_hash_notify());
    let m = Message {
        header: IkeHeader {
            spi_i: sa.init_spi_i,
            spi_r: 0,
            next_payload: 0,
            minor_version: 0,
            exchange: exchange::IKE_SA_INIT,
            flags: Flags {
                initiator: true,
                version: false,
                response: false,
            },
            message_id: 0,
            length: 0,
        },
        payloads,
    };
    m.emit().map_err(|e| Reason::Internal(e.to_string()))
}

impl IkeSa {
    /// Starts a connection as initiator.
    pub(crate) fn initiate(
        now: Instant,
        conn: Arc<Connection>,
        attempt: u32,
        ep: &mut Endpoint,
    ) -> Result<IkeSaId, CommandError> {
        let not = |reason| CommandError::NotInitiable {
            name: conn.name.clone(),
            reason,
        };
        let local_ip = conn
            .local_addrs
            .iter()
            .find_map(crate::config::AddrSpec::addr)
            .ok_or_else(|| not("local_addrs holds no single address"))?;
        let remote_ip = conn
            .remote_addrs
            .iter()
            .find_map(crate::config::AddrSpec::addr)
            .ok_or_else(|| not("remote_addrs holds no single address"))?;
        let group = conn
            .proposals
            .first()
            .and_then(|p| p.dh.first())
            .copied()
            .ok_or_else(|| not("no IKE proposal"))?;
        let internal = |r: Reason| CommandError::Internal(r.to_string());
        let spi_i = random_ike_spi(ep).map_err(internal)?;
        let nonce_i = random_vec(ep, NONCE_LEN).map_err(internal)?;
        let dh = DhPrivate::generate(group, &mut *ep.rng)
            .map_err(|e| CommandError::Internal(e.to_string()))?;
        let id = ep.alloc_ike_id();
        let mut sa = IkeSa {
            id,
            conn: conn.clone(),
            we_initiated: true,
            local: SocketAddr::new(local_ip, ep.settings.ike_port),
            remote: SocketAddr::new(remote_ip, conn.remote_port),
            phase: Phase::Authenticating,
            chan: None,
            old_chan: None,
            init_spi_i: spi_i,
            init_spi_r: 0,
            nonce_i,
            nonce_r: Vec::new(),
            init_request: Vec::new(),
            init_response: Vec::new(),
            peer_id: None,
            nat_local: false,
            nat_remote: false,
            peer_fragmentation: false,
            children: Vec::new(),
            created: now,
            established_at: None,
            last_heard: now,
            rekey_at: None,
            keepalive_at: None,
            expire_at: None,
            dead: false,
            down_reason: None,
            pending_rekey_group: None,
            vips: Default::default(),
            attempt,
        };
        let mut st = InitState {
            dh,
            cookie: None,
            packet: Vec::new(),
            tries: 0,
            next_at: now,
            restarts: 0,
        };
        st.packet = build_init_request(&sa, &st, ep).map_err(internal)?;
        sa.init_request = st.packet.clone();
        sa.transmit(std::slice::from_ref(&st.packet), ep);
        st.next_at = now + ep.settings.retransmit_timeout;
        sa.phase = Phase::InitSent(st);
        info!(ike = %id, connection = %conn.name, remote = %sa.remote, "IKE_SA_INIT: initiating");
        ep.by_spi.insert(spi_i, id);
        ep.sas.insert(id, sa);
        Ok(id)
    }
}

pub(crate) fn init_timeout(sa: &mut IkeSa, now: Instant, ep: &mut Endpoint) {
    let Phase::InitSent(st) = &mut sa.phase else {
        return;
    };
    if now < st.next_at {
        return;
    }
    if st.tries >= ep.settings.retransmit_tries {
        let tries = st.tries;
        warn!(ike = %sa.id, "IKE_SA_INIT: no answer");
        sa.die(Reason::Timeout(tries), ep);
        sa.try_again(ep);
        return;
    }
    st.tries += 1;
    let factor = ep
        .settings
        .retransmit_base
        .powi(i32::try_from(st.tries).unwrap_or(i32::MAX))
        .min(1e6);
    st.next_at = now + ep.settings.retransmit_timeout.mul_f64(factor);
    let p = st.packet.clone();
    sa.transmit(&[p], ep);
}

/// Restarts IKE_SA_INIT with a cookie or another DH group.
fn restart_init(
    sa: &mut IkeSa,
    now: Instant,
    cookie: Option<Vec<u8>>,
    group: Option<DhGroup>,
    ep: &mut Endpoint,
) {
    let Phase::InitSent(mut st) = std::mem::replace(&mut sa.phase, Phase::Deleting) else {
        return;
    };
    st.restarts += 1;
    if st.restarts > MAX_INIT_RETRIES {
        sa.die(
            Reason::Protocol("IKE_SA_INIT: too many COOKIE/INVALID_KE_PAYLOAD rounds".into()),
            ep,
        );
        return;
    }
    if let Some(c) = cookie {
        st.cookie = Some(c);
    }
    if let Some(g) = group {
        match DhPrivate::generate(g, &mut *ep.rng) {
            Ok(dh) => st.dh = dh,
            Err(e) => {
                sa.die(Reason::Internal(e.to_string()), ep);
                return;
            }
        }
    }
    match build_init_request(sa, &st, ep) {
        Ok(p) => {
            st.packet = p;
            sa.init_request = st.packet.clone();
            st.tries = 0;
            st.next_at = now + ep.settings.retransmit_timeout;
            sa.transmit(std::slice::from_ref(&st.packet), ep);
            sa.phase = Phase::InitSent(st);
        }
        Err(r) => sa.die(r, ep),
    }
}

pub(crate) fn handle_init_response(
    sa: &mut IkeSa,
    now: Instant,
    local: SocketAddr,
    remote: SocketAddr,
    header: IkeHeader,
    datagram: &[u8],
    ep: &mut Endpoint,
) {
    if header.message_id != 0 || remote != sa.remote || local != sa.local {
        ep.drops.message_id += 1;
        return;
    }
    let msg = match Message::parse(datagram) {
        Ok(m) => m,
        Err(e) => {
            ep.drops.malformed += 1;
            debug!(ike = %sa.id, error = %e, "malformed IKE_SA_INIT response");
            return;
        }
    };
    let p = &msg.payloads;
    if let Some(c) = notify_of(p, notify::COOKIE) {
        info!(ike = %sa.id, "IKE_SA_INIT: responder asks for a cookie");
        let c = c.data.clone();
        restart_init(sa, now, Some(c), None, ep);
        return;
    }
    if let Some(n) = notify_of(p, notify::INVALID_KE_PAYLOAD) {
        let wanted = crate::wire::be16(&n.data, 0).and_then(DhGroup::from_id);
        let ours = sa
            .conn
            .proposals
            .iter()
            .any(|pr| wanted.is_some_and(|g| pr.dh.contains(&g)));
        match wanted {
            Some(g) if ours => {
                info!(ike = %sa.id, group = g.name(), "IKE_SA_INIT: responder asks for another DH group");
                restart_init(sa, now, None, Some(g), ep);
            }
            _ => sa.die(
                Reason::NoProposalChosen("responder wants a DH group we do not offer".into()),
                ep,
            ),
        }
        return;
    }
    if let Some(n) = error_notify(p) {
        let reason = if n.kind == notify::NO_PROPOSAL_CHOSEN {
            Reason::NoProposalChosen("the responder accepted none of our IKE proposals".into())
        } else {
            Reason::PeerError(n.kind)
        };
        warn!(ike = %sa.id, %reason, "IKE_SA_INIT failed");
        sa.die(reason, ep);
        return;
    }
    let Phase::InitSent(st) = std::mem::replace(&mut sa.phase, Phase::Authenticating) else {
        return;
    };
    match finish_init(sa, now, st, header, &msg, datagram, ep) {
        Ok(()) => {}
        Err(r) => {
            warn!(ike = %sa.id, reason = %r, "IKE_SA_INIT response unusable");
            sa.die(r, ep);
        }
    }
}

fn finish_init(
    sa: &mut IkeSa,
    now: Instant,
    st: InitState,
    header: IkeHeader,
    msg: &Message,
    datagram: &[u8],
    ep: &mut Endpoint,
) -> Result<(), Reason> {
    let p = &msg.payloads;
    let proposal = p
        .iter()
        .find_map(|x| match x {
            Payload::Sa(s) => Some(s),
            _ => None,
        })
        .ok_or_else(|| Reason::Protocol("IKE_SA_INIT response without SA".into()))?;
    if proposal.proposals.len() != 1 {
        return Err(Reason::Protocol(
            "responder chose more than one proposal".into(),
        ));
    }
    let (algs, _) = select_ike(&proposal.proposals, &sa.conn.proposals).ok_or_else(|| {
        Reason::NoProposalChosen("responder chose a proposal we did not offer".into())
    })?;
    let ke = p
        .iter()
        .find_map(|x| match x {
            Payload::Ke(k) => Some(k),
            _ => None,
        })
        .ok_or_else(|| Reason::Protocol("IKE_SA_INIT response without KE".into()))?;
    if ke.group != algs.dh.id() || st.dh.group() != algs.dh {
        return Err(Reason::Protocol(
            "responder's KE group differs from the chosen one".into(),
        ));
    }
    let nonce_r = p
        .iter()
        .find_map(|x| match x {
            Payload::Nonce(n) => Some(n.clone()),
            _ => None,
        })
        .ok_or_else(|| Reason::Protocol("IKE_SA_INIT response without nonce".into()))?;
    if !(16..=256).contains(&nonce_r.len()) {
        return Err(Reason::Protocol(
            "responder nonce length out of 16..=256".into(),
        ));
    }
    if header.spi_r == 0 {
        return Err(Reason::Protocol("responder SPI is zero".into()));
    }
    let shared = st
        .dh
        .agree(&ke.data)
        .map_err(|e| Reason::Protocol(e.to_string()))?;
    let keys = IkeKeys::derive(
        algs.prf,
        algs.encr,
        algs.integ,
        &shared,
        &sa.nonce_i,
        &nonce_r,
        header.spi_i,
        header.spi_r,
        None,
    )
    .map_err(|e| Reason::Internal(e.to_string()))?;
    sa.init_spi_r = header.spi_r;
    sa.nonce_r = nonce_r;
    sa.init_response = datagram.to_vec();
    detect_nat(sa, p, header.spi_i, header.spi_r);
    sa.peer_fragmentation = notify_of(p, notify::IKEV2_FRAGMENTATION_SUPPORTED).is_some();
    let mut chan = Channel::new(header.spi_i, header.spi_r, true, algs, keys)?;
    chan.log_keys(ep);
    chan.next_mid = 1;
    chan.peer_mid = 0;
    sa.chan = Some(chan);
    info!(ike = %sa.id, algorithms = %algs, nat = sa.nat_local || sa.nat_remote, "IKE_SA_INIT done");
    if sa.nat_local || sa.nat_remote || sa.conn.encap {
        sa.local.set_port(ep.settings.natt_port);
        sa.remote.set_port(ep.settings.natt_port);
    }
    super::auth::send_auth_request(sa, now, ep)
}

/// NAT detection from the peer's notifies (section 2.23). In the request
/// `spi_r` is zero.
pub(crate) fn detect_nat(sa: &mut IkeSa, p: &[Payload], spi_i: u64, spi_r: u64) {
    let mut src_seen = false;
    let mut src_match = false;
    let mut dst_seen = false;
    let mut dst_match = false;
    let peer_hash = nat_hash(spi_i, spi_r, sa.remote);
    let our_hash = nat_hash(spi_i, spi_r, sa.local);
    for x in p {
        if let Payload::Notify(n) = x {
            if n.kind == notify::NAT_DETECTION_SOURCE_IP {
                src_seen = true;
                src_match |= n.data == peer_hash;
            } else if n.kind == notify::NAT_DETECTION_DESTINATION_IP {
                dst_seen = true;
                dst_match |= n.data == our_hash;
            }
        }
    }
    sa.nat_remote = src_seen && !src_match;
    sa.nat_local = dst_seen && !dst_match;
}
