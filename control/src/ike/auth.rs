//! IKE_AUTH on both sides: identities, PSK or certificate AUTH, the
//! first Child SA, and what establishment sets going (timers, events).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, info, warn};

use super::child::{install_child, select_child, ChildChoice, ResourceRole};
use super::common::{
    error_notify, find, id_display, jittered, notify_of, random_child_spi, sa_payload, tsi, tsr,
};
use super::connection::{Connection, Identity, LocalMethod, RemoteMethod};
use super::endpoint::Endpoint;
use super::event::{Event, Reason};
use super::per_resource;
use super::proposal::{select_esp, EspProposal};
use super::sa::{Channel, IkeSa, Phase, Request};
use super::ts;
use super::IkeSaId;
use crate::crypto::{child_keymat, ChildKeys, EncrAlg, PrfAlg};
use crate::wire::consts::{auth_method, exchange, notify};
use crate::wire::{
    Auth, Identification, IkeHeader, Notify, Payload, SecurityAssociation, TrafficSelectors,
};

/// The Child SA an initiator proposes in IKE_AUTH.
#[derive(Debug)]
pub(crate) struct PendingChild {
    pub config: usize,
    pub spi_in: u32,
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

pub(crate) fn send_auth_request(
    sa: &mut IkeSa,
    now: Instant,
    ep: &mut Endpoint,
) -> Result<(), Reason> {
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
    // Only a first contact says so: the peer drops what it holds from us.
    let first_contact = !ep
        .sas
        .values()
        .any(|o| o.conn.name == conn.name && o.established_at.is_some());
    if first_contact {
        payloads.push(Payload::Notify(Notify::new(
            notify::INITIAL_CONTACT,
            Vec::new(),
        )));
    }
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
            if conn.per_resource_sas {
                payloads.push(per_resource::notify());
            }
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

pub(crate) fn established(
    sa: &mut IkeSa,
    now: Instant,
    rekeyed: bool,
    algs: &super::proposal::IkeAlgorithms,
    ep: &mut Endpoint,
) {
    sa.phase = Phase::Established;
    sa.expire_at = sa.conn.life_time.map(|d| now + d);
    sa.established_at = Some(now);
    sa.rekey_at = sa
        .conn
        .rekey_time
        .map(|d| now + jittered(d, sa.conn.rand_time, ep));
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
        let keys = first_child_keys(sa, chan, algs.encr)?;
        let role = if conn.per_resource_sas {
            per_resource::initiator_role(ResourceRole::Fallback, &p)
        } else {
            ResourceRole::Plain
        };
        let id = install_child(
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
            role,
            ep,
        )?;
        if role == ResourceRole::Fallback {
            per_resource::queue_for_workers(sa, pc.config, id, chan, ep);
        }
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
        .filter(|c| c.matches_addrs(sa.local.ip(), sa.remote.ip()) && c.remote.id.matches(idi))
        .cloned()
        .collect();
    // Connections whose identity is the IDr the initiator asked for come
    // first; the others still get a chance, as the IDr is only a hint.
    let mut candidates = candidates;
    candidates.sort_by_key(|c| !idr_wanted.is_none_or(|r| *r == c.local_id(sa.local.ip())));
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
    if notify_of(&p, notify::INITIAL_CONTACT).is_some() {
        forget_previous_contact(sa, idi, ep);
    }
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
                    let keys = first_child_keys(sa, chan, algs.encr)?;
                    // The first child of an IKE SA cannot have a fallback
                    // beside it yet: it is one, or plain.
                    let role = if conn.per_resource_sas && per_resource::present(&p) {
                        ResourceRole::Fallback
                    } else {
                        ResourceRole::Plain
                    };
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
                        role,
                        ep,
                    )?;
                    if role.announced() {
                        out.push(per_resource::notify());
                    }
                    out.push(Payload::Sa(SecurityAssociation {
                        proposals: vec![EspProposal::from_chosen(&algs).to_wire(
                            super::proposal::esp_number(&s.proposals, &algs, false),
                            spi_in,
                            false,
                        )],
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

/// INITIAL_CONTACT (section 2.4): the peer lost its state, so every
/// established IKE SA with the same identity at the same address is gone
/// on its side; they leave without a Delete nobody would answer.
fn forget_previous_contact(sa: &IkeSa, peer: &Identity, ep: &mut Endpoint) {
    let stale: Vec<IkeSaId> = ep
        .sas
        .iter()
        .filter(|(_, o)| {
            o.established_at.is_some()
                && o.peer_id.as_ref() == Some(peer)
                && o.remote.ip() == sa.remote.ip()
        })
        .map(|(id, _)| *id)
        .collect();
    for id in stale {
        info!(ike = %id, peer = %id_display(peer), "INITIAL_CONTACT: dropping the peer's previous IKE SA");
        ep.with_sa(id, |o, ep| {
            o.die(Reason::PeerDelete, ep);
        });
    }
}

/// KEYMAT of the Child SA that IKE_AUTH creates: from SK_d and the
/// IKE_SA_INIT nonces, never with a PFS secret (section 2.17).
fn first_child_keys(sa: &IkeSa, chan: &Channel, encr: EncrAlg) -> Result<ChildKeys, Reason> {
    child_keymat(
        chan.algs.prf,
        &chan.keys.sk_d,
        None,
        &sa.nonce_i,
        &sa.nonce_r,
        encr,
        None,
    )
    .map_err(|e| Reason::Internal(e.to_string()))
}
