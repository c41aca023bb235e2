//! IKE_SA_INIT (initiator side; the responder's stateless part is in
//! `exchange.rs`) and IKE_AUTH on both sides, with the first Child SA.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use aws_lc_rs::digest;
use tracing::{debug, info, warn};

use super::child::{ChildSa, Install};
use super::connection::{Connection, Identity, LocalMethod, RemoteMethod};
use super::endpoint::{CommandError, Endpoint};
use super::event::{ChildSaState, Event, Reason};
use super::proposal::{select_esp, select_ike, ChildAlgorithms, EspProposal};
use super::sa::{Channel, IkeSa, Phase, Request};
use super::ts;
use super::IkeSaId;
use crate::crypto::{child_keymat, DhGroup, DhPrivate, IkeKeys, PrfAlg};
use crate::wire::consts::{auth_method, exchange, notify};
use crate::wire::{
    Auth, Flags, Identification, IkeHeader, KeyExchange, Message, Notify, Payload,
    SecurityAssociation, TrafficSelectors,
};

/// Nonce length we send (RFC 7296 asks for at least half the PRF's key size).
pub(crate) const NONCE_LEN: usize = 32;
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

/// The Child SA an initiator proposes in IKE_AUTH.
#[derive(Debug)]
pub(crate) struct PendingChild {
    pub config: usize,
    pub spi_in: u32,
}

/// Text for logs and `sa list`.
pub(crate) fn id_display(id: &Identity) -> String {
    match id {
        Identification::Ipv4(a) => a.to_string(),
        Identification::Ipv6(a) => a.to_string(),
        Identification::Fqdn(d) => String::from_utf8_lossy(d).into_owned(),
        Identification::Rfc822(d) => String::from_utf8_lossy(d).into_owned(),
        Identification::DerDn(d) => {
            let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
            format!("DN:{hex}")
        }
        Identification::Other { kind, data } => format!("ID type {kind} ({} bytes)", data.len()),
    }
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

pub(crate) fn notify_of(payloads: &[Payload], kind: u16) -> Option<&Notify> {
    payloads.iter().find_map(|p| match p {
        Payload::Notify(n) if n.kind == kind => Some(n),
        _ => None,
    })
}

/// The first error notify of a message, if any.
pub(crate) fn error_notify(payloads: &[Payload]) -> Option<&Notify> {
    payloads.iter().find_map(|p| match p {
        Payload::Notify(n) if notify::is_error(n.kind) => Some(n),
        _ => None,
    })
}

pub(crate) fn random_vec(ep: &mut Endpoint, len: usize) -> Result<Vec<u8>, Reason> {
    let mut v = vec![0u8; len];
    ep.rng
        .fill(&mut v)
        .map_err(|e| Reason::Internal(e.to_string()))?;
    Ok(v)
}

pub(crate) fn random_ike_spi(ep: &mut Endpoint) -> Result<u64, Reason> {
    loop {
        let mut b = [0u8; 8];
        ep.rng
            .fill(&mut b)
            .map_err(|e| Reason::Internal(e.to_string()))?;
        let spi = u64::from_be_bytes(b);
        if spi != 0 && !ep.by_spi.contains_key(&spi) {
            return Ok(spi);
        }
    }
}

/// A fresh inbound ESP SPI, never in use or reserved, >= 256 (RFC 4303).
pub(crate) fn random_child_spi(ep: &mut Endpoint) -> Result<u32, Reason> {
    loop {
        let mut b = [0u8; 4];
        ep.rng
            .fill(&mut b)
            .map_err(|e| Reason::Internal(e.to_string()))?;
        let spi = u32::from_be_bytes(b);
        if spi >= 256 && ep.child_spis.insert(spi) {
            return Ok(spi);
        }
    }
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
        if sa.conn.dpd_action == super::DpdAction::Restart {
            ep.restart.push(sa.conn.name.clone());
        }
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
    chan.next_mid = 1;
    chan.peer_mid = 0;
    sa.chan = Some(chan);
    info!(ike = %sa.id, algorithms = %algs, nat = sa.nat_local || sa.nat_remote, "IKE_SA_INIT done");
    if sa.nat_local || sa.nat_remote || sa.conn.encap {
        sa.local.set_port(ep.settings.natt_port);
        sa.remote.set_port(ep.settings.natt_port);
    }
    send_auth_request(sa, now, ep)
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

fn psk_auth(prf: PrfAlg, psk: &[u8], signed: &[&[u8]]) -> Vec<u8> {
    let key = prf.prf(psk, &[b"Key Pad for IKEv2"]);
    prf.prf(&key, signed).to_vec()
}

fn id_body(id: &Identity) -> Vec<u8> {
    let mut v = Vec::new();
    id.emit(&mut v);
    v
}

/// The AUTH payload data of one side: `initiator` says whose octets.
/// InitiatorSignedOctets or ResponderSignedOctets (section 2.15):
/// `initiator` says whose.
fn signed_octets(sa: &IkeSa, chan: &Channel, initiator: bool, id: &Identity) -> Vec<u8> {
    let prf = chan.algs.prf;
    let (message, nonce, sk_p) = if initiator {
        (&sa.init_request, &sa.nonce_r, &chan.keys.sk_pi)
    } else {
        (&sa.init_response, &sa.nonce_i, &chan.keys.sk_pr)
    };
    let maced_id = prf.prf(sk_p, &[&id_body(id)]);
    let mut octets = Vec::with_capacity(message.len() + nonce.len() + maced_id.len());
    octets.extend_from_slice(message);
    octets.extend_from_slice(nonce);
    octets.extend_from_slice(&maced_id);
    octets
}

/// The identity a PSK is looked up for when the peer's is not known yet:
/// the configured one, else its address (as strongSwan does).
fn expected_peer_id(conn: &Connection, remote: SocketAddr) -> Identity {
    conn.remote.id.to_wire().unwrap_or(match remote.ip() {
        std::net::IpAddr::V4(a) => Identification::Ipv4(a),
        std::net::IpAddr::V6(a) => Identification::Ipv6(a),
    })
}

/// Our AUTH payload as `initiator` (or responder), for `local_id`.
fn make_auth(
    sa: &IkeSa,
    chan: &Channel,
    initiator: bool,
    conn: &Connection,
    local_id: &Identity,
    peer_id: &Identity,
) -> Result<Auth, String> {
    let octets = signed_octets(sa, chan, initiator, local_id);
    match &conn.local.method {
        LocalMethod::Psk => {
            let psk = conn.psk(local_id, peer_id).ok_or_else(|| {
                format!(
                    "no pre-shared key for {} and {}",
                    id_display(local_id),
                    id_display(peer_id)
                )
            })?;
            Ok(Auth {
                method: auth_method::SHARED_KEY_MIC,
                data: psk_auth(chan.algs.prf, psk, &[&octets]),
            })
        }
        LocalMethod::Cert(cred) => Ok(Auth {
            method: cred.auth_method(),
            data: cred.sign_auth(&octets).map_err(|e| e.to_string())?,
        }),
    }
}

/// The DER certificates of the CERT payloads (X.509 signature encoding).
fn cert_chain(p: &[Payload]) -> Vec<&[u8]> {
    p.iter()
        .filter_map(|x| match x {
            Payload::Other { kind, body } if *kind == crate::wire::consts::payload::CERT => {
                match body.split_first() {
                    Some((&crate::wire::consts::cert_encoding::X509_SIGNATURE, der)) => Some(der),
                    _ => None,
                }
            }
            _ => None,
        })
        .collect()
}

/// Checks the peer's AUTH (`peer_initiator`: whether the peer is the
/// initiator) against `conn`'s remote auth.
#[allow(clippy::too_many_arguments)]
fn check_auth(
    sa: &IkeSa,
    chan: &Channel,
    peer_initiator: bool,
    conn: &Connection,
    local_id: &Identity,
    peer_id: &Identity,
    auth: &Auth,
    payloads: &[Payload],
    ep: &Endpoint,
) -> Result<(), String> {
    if !conn.remote.id.matches(peer_id) {
        return Err(format!(
            "peer identity {} is not the configured {}",
            id_display(peer_id),
            conn.remote.id
        ));
    }
    let octets = signed_octets(sa, chan, peer_initiator, peer_id);
    match &conn.remote.method {
        RemoteMethod::Psk => {
            if auth.method != auth_method::SHARED_KEY_MIC {
                return Err(format!(
                    "peer {} used AUTH method {}, the connection expects a PSK",
                    id_display(peer_id),
                    auth.method
                ));
            }
            let psk = conn
                .psk(local_id, peer_id)
                .ok_or_else(|| format!("no pre-shared key for peer {}", id_display(peer_id)))?;
            let want = psk_auth(chan.algs.prf, psk, &[&octets]);
            aws_lc_rs::constant_time::verify_slices_are_equal(&want, &auth.data).map_err(|_| {
                format!(
                    "pre-shared key of peer {} does not match",
                    id_display(peer_id)
                )
            })
        }
        RemoteMethod::Cert(trust) => {
            let chain = cert_chain(payloads);
            if chain.is_empty() {
                return Err(format!("peer {} sent no certificate", id_display(peer_id)));
            }
            let wall = ep
                .wall_clock_at(sa.last_heard)
                .ok_or("the wall clock is not set (Endpoint::set_wall_clock)")?;
            trust
                .verify_peer(&chain, wall, peer_id, auth.method, &auth.data, &octets)
                .map(|_| ())
                .map_err(|e| format!("peer {}: {e}", id_display(peer_id)))
        }
    }
}

/// CERT payloads of our chain and a CERTREQ for the CAs we trust.
fn cert_payloads(conn: &Connection, out: &mut Vec<Payload>) {
    if let LocalMethod::Cert(cred) = &conn.local.method {
        for body in cred.cert_payload_bodies() {
            out.push(Payload::Other {
                kind: crate::wire::consts::payload::CERT,
                body,
            });
        }
    }
}

pub(super) fn certreq_payload(conn: &Connection, out: &mut Vec<Payload>) {
    if let RemoteMethod::Cert(trust) = &conn.remote.method {
        out.push(Payload::Other {
            kind: crate::wire::consts::payload::CERTREQ,
            body: trust.certreq_body(),
        });
    }
}

fn child_proposals(cfg: &[EspProposal], spi: u32, with_dh: bool) -> Payload {
    Payload::Sa(SecurityAssociation {
        proposals: cfg
            .iter()
            .enumerate()
            .map(|(i, p)| p.to_wire(u8::try_from(i + 1).unwrap_or(u8::MAX), spi, with_dh))
            .collect(),
    })
}

pub(crate) fn child_sa_payload(cfg: &[EspProposal], spi: u32, with_dh: bool) -> Payload {
    child_proposals(cfg, spi, with_dh)
}

fn send_auth_request(sa: &mut IkeSa, now: Instant, ep: &mut Endpoint) -> Result<(), Reason> {
    let Some(chan) = sa.chan.as_ref() else {
        return Err(Reason::Internal("no keys for IKE_AUTH".into()));
    };
    let conn = sa.conn.clone();
    let local_id = conn.local_id(sa.local.ip());
    let peer_id = expected_peer_id(&conn, sa.remote);
    let auth = make_auth(sa, chan, true, &conn, &local_id, &peer_id)
        .map_err(Reason::AuthenticationFailed)?;
    let mut payloads = vec![Payload::IdI(local_id)];
    cert_payloads(&conn, &mut payloads);
    certreq_payload(&conn, &mut payloads);
    if let Some(r) = conn.remote.id.to_wire() {
        payloads.push(Payload::IdR(r));
    }
    payloads.push(Payload::Auth(auth));
    payloads.push(Payload::Notify(Notify::new(
        notify::INITIAL_CONTACT,
        Vec::new(),
    )));
    payloads.extend(super::virtual_ip::cfg_request(&conn));
    let pending = match conn.children.first() {
        Some(child) => {
            let spi_in = random_child_spi(ep)?;
            payloads.push(child_proposals(&child.esp_proposals, spi_in, false));
            payloads.push(Payload::TsI(TrafficSelectors {
                selectors: sa.our_ts(child),
            }));
            payloads.push(Payload::TsR(TrafficSelectors {
                selectors: sa.peer_ts(child),
            }));
            Some(PendingChild { config: 0, spi_in })
        }
        None => None,
    };
    sa.request(
        now,
        exchange::IKE_AUTH,
        payloads,
        Request::Auth(pending),
        ep,
    );
    Ok(())
}

fn find<T>(p: &[Payload], f: impl Fn(&Payload) -> Option<&T>) -> Option<&T> {
    p.iter().find_map(f)
}

pub(crate) fn sa_payload(p: &[Payload]) -> Option<&SecurityAssociation> {
    find(p, |x| match x {
        Payload::Sa(s) => Some(s),
        _ => None,
    })
}

pub(crate) fn tsi(p: &[Payload]) -> Option<&TrafficSelectors> {
    find(p, |x| match x {
        Payload::TsI(t) => Some(t),
        _ => None,
    })
}

pub(crate) fn tsr(p: &[Payload]) -> Option<&TrafficSelectors> {
    find(p, |x| match x {
        Payload::TsR(t) => Some(t),
        _ => None,
    })
}

pub(crate) fn established(
    sa: &mut IkeSa,
    now: Instant,
    rekeyed: bool,
    algs: &super::proposal::IkeAlgorithms,
    ep: &mut Endpoint,
) {
    sa.phase = Phase::Established;
    sa.expire_at = None;
    sa.established_at = Some(now);
    sa.rekey_at = sa.conn.rekey_time.map(|d| now + d);
    if sa.nat_local {
        sa.keepalive_at = ep.settings.keepalive_interval.map(|i| now + i);
    }
    ep.events.push_back(Event::IkeSaUp {
        ike: sa.id,
        connection: sa.conn.name.clone(),
        local: sa.local,
        remote: sa.remote,
        peer_id: sa.peer_id.as_ref().map(id_display).unwrap_or_default(),
        algorithms: algs.to_string(),
        nat: sa.nat_local || sa.nat_remote,
        rekeyed,
    });
}

/// Creates and installs a Child SA; emits its events.
#[allow(clippy::too_many_arguments)]
pub(crate) fn install_child(
    sa: &mut IkeSa,
    now: Instant,
    config: usize,
    algs: ChildAlgorithms,
    spi_in: u32,
    spi_out: u32,
    local_ts: Vec<crate::wire::TrafficSelector>,
    remote_ts: Vec<crate::wire::TrafficSelector>,
    keys: &crate::crypto::ChildKeys,
    exchange_initiator: bool,
    replaces: Option<super::ChildSaId>,
    ep: &mut Endpoint,
) -> Result<super::ChildSaId, Reason> {
    let cfg = sa
        .conn
        .children
        .get(config)
        .ok_or_else(|| Reason::Internal("child config vanished".into()))?;
    let encap = sa.nat_local || sa.nat_remote || sa.conn.encap;
    let child = ChildSa {
        id: ep.alloc_child_id(),
        name: cfg.name.clone(),
        spi_in,
        spi_out,
        algs,
        local_ts,
        remote_ts,
        state: ChildSaState::Installed,
        installed_at: now,
        rekey_at: cfg.rekey_time.map(|d| now + d),
        expire_at: cfg.life_time.map(|d| now + d),
        encap,
        collision: None,
    };
    let install = Install {
        ike: sa.id,
        connection: &sa.conn.name,
        local: sa.local,
        remote: sa.remote,
        encap,
        exchange_initiator,
        keys,
        replaces,
    };
    child.install(&install, &mut ep.events)?;
    info!(ike = %sa.id, child = %child.id, name = %child.name, spi_in = format_args!("{:08x}", spi_in), spi_out = format_args!("{:08x}", spi_out), algorithms = %algs, "Child SA installed");
    let id = child.id;
    sa.children.push(child);
    Ok(id)
}

pub(crate) fn handle_auth_response(
    sa: &mut IkeSa,
    now: Instant,
    pending: Option<PendingChild>,
    p: Vec<Payload>,
    chan: &mut Channel,
    ep: &mut Endpoint,
) {
    let conn = sa.conn.clone();
    let fail = |sa: &mut IkeSa, ep: &mut Endpoint, r: Reason| {
        warn!(ike = %sa.id, connection = %sa.conn.name, reason = %r, "IKE_AUTH failed");
        if let Some(pc) = &pending {
            ep.child_spis.remove(&pc.spi_in);
        }
        sa.die(r, ep);
    };
    if let Some(n) = notify_of(&p, notify::AUTHENTICATION_FAILED) {
        let _ = n;
        return fail(
            sa,
            ep,
            Reason::AuthenticationFailed("the responder rejected our authentication".into()),
        );
    }
    let idr = find(&p, |x| match x {
        Payload::IdR(i) => Some(i),
        _ => None,
    });
    let auth = find(&p, |x| match x {
        Payload::Auth(a) => Some(a),
        _ => None,
    });
    let (Some(idr), Some(auth)) = (idr, auth) else {
        let r = match error_notify(&p) {
            Some(n) => Reason::PeerError(n.kind),
            None => Reason::Protocol("IKE_AUTH response without IDr or AUTH".into()),
        };
        return fail(sa, ep, r);
    };
    let local_id = conn.local_id(sa.local.ip());
    if let Err(why) = check_auth(sa, chan, false, &conn, &local_id, idr, auth, &p, ep) {
        // Tell the peer, then go (section 2.21.2).
        let n = vec![Payload::Notify(Notify::new(
            notify::AUTHENTICATION_FAILED,
            Vec::new(),
        ))];
        sa.down_reason = Some(Reason::AuthenticationFailed(why.clone()));
        chan.queue.push_back(super::sa::Queued {
            exchange: exchange::INFORMATIONAL,
            payloads: n,
            request: Request::Notify,
        });
        sa.phase = Phase::Deleting;
        sa.expire_at = Some(now + ep.settings.retransmit_timeout);
        warn!(ike = %sa.id, reason = %why, "IKE_AUTH: responder authentication failed");
        return;
    }
    sa.peer_id = Some(idr.clone());
    info!(ike = %sa.id, connection = %conn.name, peer = %id_display(idr), "IKE_AUTH done: IKE SA established");
    established(sa, now, false, &chan.algs, ep);
    let vip = super::virtual_ip::take_reply(sa, &p, ep);
    let Some(pc) = pending else {
        return;
    };
    let cfg_name = conn
        .children
        .get(pc.config)
        .map(|c| c.name.clone())
        .unwrap_or_default();
    let result = (|| -> Result<(), Reason> {
        if let Some(n) = error_notify(&p) {
            return Err(match n.kind {
                notify::NO_PROPOSAL_CHOSEN => Reason::NoProposalChosen(
                    "the responder accepted none of our ESP proposals".into(),
                ),
                notify::TS_UNACCEPTABLE => Reason::TsUnacceptable(
                    "the responder accepted none of our traffic selectors".into(),
                ),
                k => Reason::PeerError(k),
            });
        }
        vip.clone()?;
        let cfg = conn
            .children
            .get(pc.config)
            .ok_or_else(|| Reason::Internal("child config vanished".into()))?;
        let s = sa_payload(&p).ok_or_else(|| Reason::Protocol("no SA for the Child SA".into()))?;
        if s.proposals.len() != 1 {
            return Err(Reason::Protocol(
                "responder chose more than one ESP proposal".into(),
            ));
        }
        let (algs, _, spi_out) =
            select_esp(&s.proposals, &cfg.esp_proposals, false).ok_or_else(|| {
                Reason::NoProposalChosen("responder chose an ESP proposal we did not offer".into())
            })?;
        let (ti, tr) = (tsi(&p), tsr(&p));
        let (Some(ti), Some(tr)) = (ti, tr) else {
            return Err(Reason::Protocol(
                "no traffic selectors for the Child SA".into(),
            ));
        };
        if !ts::within(&ti.selectors, &sa.our_ts(cfg))
            || !ts::within(&tr.selectors, &sa.peer_ts(cfg))
        {
            return Err(Reason::TsUnacceptable(
                "responder widened our traffic selectors".into(),
            ));
        }
        let keys = child_keymat(
            chan.algs.prf,
            &chan.keys.sk_d,
            None,
            &sa.nonce_i,
            &sa.nonce_r,
            algs.encr,
            None,
        )
        .map_err(|e| Reason::Internal(e.to_string()))?;
        install_child(
            sa,
            now,
            pc.config,
            algs,
            pc.spi_in,
            spi_out,
            ti.selectors.clone(),
            tr.selectors.clone(),
            &keys,
            true,
            None,
            ep,
        )?;
        Ok(())
    })();
    if let Err(r) = result {
        ep.child_spis.remove(&pc.spi_in);
        warn!(ike = %sa.id, child = %cfg_name, reason = %r, "first Child SA not created");
        ep.events.push_back(Event::ChildSaDown {
            ike: sa.id,
            child: None,
            connection: conn.name.clone(),
            name: cfg_name,
            reason: r,
        });
    }
    // Further children of the connection come with CREATE_CHILD_SA.
    for i in 1..conn.children.len() {
        if let Err(r) = super::create_child::queue_new_child(sa, i, chan, ep) {
            warn!(ike = %sa.id, reason = %r, "cannot request a further Child SA");
        }
    }
}

/// The responder's IKE_AUTH: find the connection the initiator's identity
/// belongs to, check its AUTH, answer with ours and the first Child SA.
pub(crate) fn handle_auth_request(
    sa: &mut IkeSa,
    now: Instant,
    header: IkeHeader,
    p: Vec<Payload>,
    chan: &mut Channel,
    ep: &mut Endpoint,
) {
    if !matches!(sa.phase, Phase::Authenticating) || sa.we_initiated {
        debug!(ike = %sa.id, "IKE_AUTH request in the wrong state");
        sa.respond(
            chan,
            exchange::IKE_AUTH,
            header.message_id,
            &[Payload::Notify(Notify::new(
                notify::INVALID_SYNTAX,
                Vec::new(),
            ))],
            ep,
        );
        return;
    }
    let idi = find(&p, |x| match x {
        Payload::IdI(i) => Some(i),
        _ => None,
    });
    let auth = find(&p, |x| match x {
        Payload::Auth(a) => Some(a),
        _ => None,
    });
    let (Some(idi), Some(auth)) = (idi, auth) else {
        // Section 2.21.2: anything wrong before authentication is answered
        // with AUTHENTICATION_FAILED or INVALID_SYNTAX and the SA goes.
        sa.respond(
            chan,
            exchange::IKE_AUTH,
            header.message_id,
            &[Payload::Notify(Notify::new(
                notify::INVALID_SYNTAX,
                Vec::new(),
            ))],
            ep,
        );
        sa.die(
            Reason::Protocol("IKE_AUTH request without IDi or AUTH".into()),
            ep,
        );
        return;
    };
    let idr_wanted = find(&p, |x| match x {
        Payload::IdR(i) => Some(i),
        _ => None,
    });
    // Connections that fit the addresses, then the identities.
    let candidates: Vec<Arc<Connection>> = ep
        .connections
        .iter()
        .filter(|c| {
            c.matches_addrs(sa.local.ip(), sa.remote.ip())
                && c.remote.id.matches(idi)
                && idr_wanted.is_none_or(|r| *r == c.local_id(sa.local.ip()))
        })
        .cloned()
        .collect();
    let mut verdict = Err(format!(
        "no connection accepts peer {} at {}",
        id_display(idi),
        sa.remote.ip()
    ));
    for c in &candidates {
        let local_id = c.local_id(sa.local.ip());
        match check_auth(sa, chan, true, c, &local_id, idi, auth, &p, ep) {
            Ok(()) => {
                verdict = Ok(c.clone());
                break;
            }
            Err(why) => verdict = Err(why),
        }
    }
    let conn = match verdict {
        Ok(c) => c,
        Err(why) => {
            warn!(ike = %sa.id, peer = %id_display(idi), remote = %sa.remote, reason = %why, "IKE_AUTH: authentication failed");
            sa.respond(
                chan,
                exchange::IKE_AUTH,
                header.message_id,
                &[Payload::Notify(Notify::new(
                    notify::AUTHENTICATION_FAILED,
                    Vec::new(),
                ))],
                ep,
            );
            sa.die(Reason::AuthenticationFailed(why), ep);
            return;
        }
    };
    sa.conn = conn.clone();
    sa.peer_id = Some(idi.clone());
    let local_id = conn.local_id(sa.local.ip());
    let our_auth = match make_auth(sa, chan, false, &conn, &local_id, idi) {
        Ok(a) => a,
        Err(why) => {
            warn!(ike = %sa.id, reason = %why, "IKE_AUTH: cannot authenticate ourselves");
            sa.respond(
                chan,
                exchange::IKE_AUTH,
                header.message_id,
                &[Payload::Notify(Notify::new(
                    notify::AUTHENTICATION_FAILED,
                    Vec::new(),
                ))],
                ep,
            );
            sa.die(Reason::AuthenticationFailed(why), ep);
            return;
        }
    };
    let mut out = vec![Payload::IdR(local_id)];
    cert_payloads(&conn, &mut out);
    out.push(Payload::Auth(our_auth));
    info!(ike = %sa.id, connection = %conn.name, peer = %id_display(idi), "IKE_AUTH done: IKE SA established");
    established(sa, now, false, &chan.algs, ep);
    // Without the virtual IP it asked for, the client gets no Child SA.
    let vip_ok = match super::virtual_ip::answer_request(sa, idi, &p, ep) {
        Ok(cp) => {
            out.extend(cp);
            true
        }
        Err(failure) => {
            out.push(failure);
            false
        }
    };
    if let Some(s) = sa_payload(&p).filter(|_| vip_ok) {
        let chosen = (|| -> Result<ChildChoice, (u16, Reason)> {
            let (Some(ti), Some(tr)) = (tsi(&p), tsr(&p)) else {
                return Err((
                    notify::INVALID_SYNTAX,
                    Reason::Protocol("SA without TSi/TSr".into()),
                ));
            };
            select_child(sa, &s.proposals, &ti.selectors, &tr.selectors, false)
        })();
        match chosen {
            Ok((config, algs, spi_out, local_ts, remote_ts)) => {
                let result = (|| -> Result<(), Reason> {
                    let spi_in = random_child_spi(ep)?;
                    let keys = child_keymat(
                        chan.algs.prf,
                        &chan.keys.sk_d,
                        None,
                        &sa.nonce_i,
                        &sa.nonce_r,
                        algs.encr,
                        None,
                    )
                    .map_err(|e| Reason::Internal(e.to_string()))?;
                    install_child(
                        sa,
                        now,
                        config,
                        algs,
                        spi_in,
                        spi_out,
                        local_ts.clone(),
                        remote_ts.clone(),
                        &keys,
                        false,
                        None,
                        ep,
                    )?;
                    out.push(Payload::Sa(SecurityAssociation {
                        proposals: vec![EspProposal::from_chosen(&algs).to_wire(1, spi_in, false)],
                    }));
                    out.push(Payload::TsI(TrafficSelectors {
                        selectors: remote_ts,
                    }));
                    out.push(Payload::TsR(TrafficSelectors {
                        selectors: local_ts,
                    }));
                    Ok(())
                })();
                if let Err(r) = result {
                    warn!(ike = %sa.id, reason = %r, "first Child SA not created");
                    out.push(Payload::Notify(Notify::new(
                        notify::TEMPORARY_FAILURE,
                        Vec::new(),
                    )));
                }
            }
            Err((n, r)) => {
                warn!(ike = %sa.id, connection = %conn.name, reason = %r, "first Child SA refused");
                ep.events.push_back(Event::ChildSaDown {
                    ike: sa.id,
                    child: None,
                    connection: conn.name.clone(),
                    name: conn
                        .children
                        .first()
                        .map(|c| c.name.clone())
                        .unwrap_or_default(),
                    reason: r,
                });
                out.push(Payload::Notify(Notify::new(n, Vec::new())));
            }
        }
    }
    sa.respond(chan, exchange::IKE_AUTH, header.message_id, &out, ep);
}

/// A responder's choice for a Child SA: config index, algorithms, the
/// peer's SPI, our local and remote selectors.
pub(crate) type ChildChoice = (
    usize,
    ChildAlgorithms,
    u32,
    Vec<crate::wire::TrafficSelector>,
    Vec<crate::wire::TrafficSelector>,
);

/// The responder's choice of child config, ESP proposal and narrowed
/// selectors: the first child whose proposals and selectors both fit.
/// `tsi`/`tsr` are the initiator's (its side first). Returns the config
/// index, algorithms, the peer's SPI, and our local and remote selectors.
#[allow(clippy::type_complexity)]
pub(crate) fn select_child(
    sa: &IkeSa,
    proposals: &[crate::wire::Proposal],
    tsi: &[crate::wire::TrafficSelector],
    tsr: &[crate::wire::TrafficSelector],
    with_dh: bool,
) -> Result<
    (
        usize,
        ChildAlgorithms,
        u32,
        Vec<crate::wire::TrafficSelector>,
        Vec<crate::wire::TrafficSelector>,
    ),
    (u16, Reason),
> {
    let conn = &sa.conn;
    let mut proposal_fit = false;
    for (i, cfg) in conn.children.iter().enumerate() {
        let Some((algs, _, spi_out)) = select_esp(proposals, &cfg.esp_proposals, with_dh) else {
            continue;
        };
        proposal_fit = true;
        let remote_ts = ts::narrow(tsi, &sa.peer_ts(cfg));
        let local_ts = ts::narrow(tsr, &sa.our_ts(cfg));
        if remote_ts.is_empty() || local_ts.is_empty() {
            continue;
        }
        return Ok((i, algs, spi_out, local_ts, remote_ts));
    }
    if proposal_fit || conn.children.is_empty() {
        let show = |v: &[crate::wire::TrafficSelector]| {
            v.iter().map(ts::display).collect::<Vec<_>>().join(",")
        };
        Err((
            notify::TS_UNACCEPTABLE,
            Reason::TsUnacceptable(format!(
                "peer proposed TSi {} TSr {}, no child of {:?} allows them",
                show(tsi),
                show(tsr),
                conn.name
            )),
        ))
    } else {
        Err((
            notify::NO_PROPOSAL_CHOSEN,
            Reason::NoProposalChosen(format!(
                "no ESP proposal of the peer matches connection {:?}",
                conn.name
            )),
        ))
    }
}
