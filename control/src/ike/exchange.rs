//! The datagram dispatcher and the responder's IKE_SA_INIT: cookies,
//! proposal choice and INVALID_KE_PAYLOAD are answered without keeping
//! state; only an acceptable request creates a (half-open) IKE SA.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, info};

use super::common::{notify_of, random_ike_spi, random_vec, NONCE_LEN};
use super::connection::Connection;
use super::endpoint::{Endpoint, Transmit};
use super::init::{detect_nat, nat_hash};
use super::proposal::{select_ike, select_ike_with_ke, IkeProposal};
use super::sa::{Channel, IkeSa, Phase};
use crate::crypto::{DhPrivate, IkeKeys};
use crate::wire::consts::{exchange, notify};
use crate::wire::{
    Error as WireError, Flags, IkeHeader, KeyExchange, Message, Notify, Payload,
    SecurityAssociation,
};

impl Endpoint {
    pub(super) fn dispatch(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        header: IkeHeader,
        datagram: &[u8],
    ) {
        let new_init = header.exchange == exchange::IKE_SA_INIT
            && !header.flags.response
            && header.flags.initiator
            && header.spi_r == 0;
        if new_init {
            if header.message_id != 0 || header.spi_i == 0 {
                self.drops.malformed += 1;
                return;
            }
            if let Some(id) = self.by_init.get(&(header.spi_i, remote)).copied() {
                // A retransmitted request: the same answer again.
                self.with_sa(id, |sa, ep| {
                    if !sa.init_response.is_empty() && sa.is_half_open() {
                        let r = sa.init_response.clone();
                        ep.transmits.push_back(Transmit {
                            local,
                            remote,
                            non_esp_marker: local.port() == ep.settings.natt_port,
                            payload: r,
                        });
                    }
                });
                return;
            }
            self.respond_init(now, local, remote, header, datagram);
            return;
        }
        // The I flag marks the original initiator's messages: then our SPI
        // is the responder's.
        let ours = if header.flags.initiator {
            header.spi_r
        } else {
            header.spi_i
        };
        match self.by_spi.get(&ours).copied() {
            Some(id) => {
                self.with_sa(id, |sa, ep| {
                    sa.handle_message(now, local, remote, header, datagram, ep)
                });
            }
            None => {
                self.drops.unknown_spi += 1;
                debug!(%remote, spi = format_args!("{ours:016x}"), "message for an unknown IKE SA");
            }
        }
    }

    /// An unencrypted IKE_SA_INIT answer holding one notify, with no state kept.
    fn stateless_reply(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
        header: &IkeHeader,
        n: Notify,
    ) {
        let m = Message {
            header: IkeHeader {
                spi_i: header.spi_i,
                spi_r: 0,
                next_payload: 0,
                minor_version: 0,
                exchange: exchange::IKE_SA_INIT,
                flags: Flags {
                    initiator: false,
                    version: false,
                    response: true,
                },
                message_id: 0,
                length: 0,
            },
            payloads: vec![Payload::Notify(n)],
        };
        if let Ok(payload) = m.emit() {
            self.transmits.push_back(Transmit {
                local,
                remote,
                non_esp_marker: local.port() == self.settings.natt_port,
                payload,
            });
        }
    }

    fn respond_init(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        header: IkeHeader,
        datagram: &[u8],
    ) {
        let msg = match Message::parse(datagram) {
            Ok(m) => m,
            Err(WireError::UnsupportedCriticalPayload(t)) => {
                self.stateless_reply(
                    local,
                    remote,
                    &header,
                    Notify::new(notify::UNSUPPORTED_CRITICAL_PAYLOAD, vec![t]),
                );
                return;
            }
            Err(e) => {
                self.drops.malformed += 1;
                debug!(%remote, error = %e, "malformed IKE_SA_INIT request");
                return;
            }
        };
        let p = &msg.payloads;
        let nonce_i = p.iter().find_map(|x| match x {
            Payload::Nonce(n) => Some(n.clone()),
            _ => None,
        });
        let Some(nonce_i) = nonce_i.filter(|n| (16..=256).contains(&n.len())) else {
            self.drops.malformed += 1;
            self.stateless_reply(
                local,
                remote,
                &header,
                Notify::new(notify::INVALID_SYNTAX, Vec::new()),
            );
            return;
        };
        self.cookies
            .rotate(now, self.settings.cookie_secret_lifetime, &mut *self.rng);
        let half_open = self.half_open();
        // A source at its quota proves its address before anything else:
        // spoofing a victim's address then makes no state in its name.
        let at_quota = self.half_open_from(remote.ip()) >= self.settings.max_half_open_per_source;
        if half_open >= self.settings.cookie_threshold || at_quota {
            let valid = notify_of(p, notify::COOKIE).is_some_and(|c| {
                self.cookies
                    .check(&c.data, &nonce_i, remote.ip(), header.spi_i)
            });
            if !valid {
                self.drops.cookie_requested += 1;
                if let Some(c) = self.cookies.make(&nonce_i, remote.ip(), header.spi_i) {
                    self.stateless_reply(local, remote, &header, Notify::new(notify::COOKIE, c));
                }
                return;
            }
        }
        if half_open >= self.settings.max_half_open {
            self.drops.half_open_full += 1;
            if let Some(suppressed) = self.init_log.allow(now) {
                info!(%remote, suppressed, "IKE_SA_INIT dropped: the half-open table is full");
            }
            return;
        }
        if at_quota {
            self.drops.half_open_source_full += 1;
            if let Some(suppressed) = self.init_log.allow(now) {
                info!(
                    %remote,
                    suppressed,
                    quota = self.settings.max_half_open_per_source,
                    "IKE_SA_INIT dropped: this source holds its quota of half-open IKE SAs"
                );
            }
            return;
        }
        let Some(Payload::Sa(offer)) = p.iter().find(|x| matches!(x, Payload::Sa(_))) else {
            self.stateless_reply(
                local,
                remote,
                &header,
                Notify::new(notify::INVALID_SYNTAX, Vec::new()),
            );
            return;
        };
        let candidates: Vec<Arc<Connection>> = self
            .connections
            .iter()
            .filter(|c| c.matches_addrs(local.ip(), remote.ip()))
            .cloned()
            .collect();
        let ke_group = p.iter().find_map(|x| match x {
            Payload::Ke(k) => crate::crypto::DhGroup::from_id(k.group),
            _ => None,
        });
        let chosen = candidates.iter().find_map(|c| {
            select_ike_with_ke(&offer.proposals, &c.proposals, ke_group)
                .map(|(a, _)| (c.clone(), a))
        });
        let Some((conn, algs)) = chosen else {
            if let Some(suppressed) = self.init_log.allow(now) {
                info!(%remote, connections = candidates.len(), suppressed, "IKE_SA_INIT: no proposal chosen");
            }
            self.stateless_reply(
                local,
                remote,
                &header,
                Notify::new(notify::NO_PROPOSAL_CHOSEN, Vec::new()),
            );
            return;
        };
        let ke = p.iter().find_map(|x| match x {
            Payload::Ke(k) => Some(k),
            _ => None,
        });
        let Some(ke) = ke.filter(|k| k.group == algs.dh.id()) else {
            if let Some(suppressed) = self.init_log.allow(now) {
                info!(%remote, group = algs.dh.name(), suppressed, "IKE_SA_INIT: asking for another DH group");
            }
            self.stateless_reply(
                local,
                remote,
                &header,
                Notify::new(
                    notify::INVALID_KE_PAYLOAD,
                    algs.dh.id().to_be_bytes().to_vec(),
                ),
            );
            return;
        };
        if let Err(r) = self.create_responder(
            now, local, remote, header, conn, algs, ke, nonce_i, &msg, datagram,
        ) {
            if let Some(suppressed) = self.init_log.allow(now) {
                info!(%remote, reason = %r, suppressed, "IKE_SA_INIT refused");
            }
            self.stateless_reply(
                local,
                remote,
                &header,
                Notify::new(notify::NO_PROPOSAL_CHOSEN, Vec::new()),
            );
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn create_responder(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        header: IkeHeader,
        conn: Arc<Connection>,
        algs: super::proposal::IkeAlgorithms,
        ke: &KeyExchange,
        nonce_i: Vec<u8>,
        msg: &Message,
        datagram: &[u8],
    ) -> Result<(), super::Reason> {
        let internal = |e: crate::crypto::CryptoError| super::Reason::Internal(e.to_string());
        let dh = DhPrivate::generate(algs.dh, &mut *self.rng).map_err(internal)?;
        let shared = dh
            .agree(&ke.data)
            .map_err(|e| super::Reason::Protocol(e.to_string()))?;
        let spi_r = random_ike_spi(self)?;
        let nonce_r = random_vec(self, NONCE_LEN)?;
        let keys = IkeKeys::derive(
            algs.prf,
            algs.encr,
            algs.integ,
            &shared,
            &nonce_i,
            &nonce_r,
            header.spi_i,
            spi_r,
            None,
        )
        .map_err(internal)?;
        let mut chan = Channel::new(header.spi_i, spi_r, false, algs, keys)?;
        chan.log_keys(self);
        chan.next_mid = 0;
        chan.peer_mid = 1;
        let id = self.alloc_ike_id();
        let mut sa = IkeSa {
            id,
            conn: conn.clone(),
            we_initiated: false,
            local,
            remote,
            phase: Phase::Authenticating,
            chan: None,
            old_chan: None,
            init_spi_i: header.spi_i,
            init_spi_r: spi_r,
            nonce_i,
            nonce_r: nonce_r.clone(),
            init_request: datagram.to_vec(),
            init_response: Vec::new(),
            peer_id: None,
            nat_local: false,
            nat_remote: false,
            peer_fragmentation: notify_of(&msg.payloads, notify::IKEV2_FRAGMENTATION_SUPPORTED)
                .is_some(),
            children: Vec::new(),
            created: now,
            established_at: None,
            last_heard: now,
            rekey_at: None,
            keepalive_at: None,
            expire_at: Some(now + self.settings.half_open_timeout),
            dead: false,
            down_reason: None,
            pending_rekey_group: None,
            vips: Default::default(),
            attempt: 0,
        };
        detect_nat(&mut sa, &msg.payloads, header.spi_i, 0);
        let src = if conn.encap {
            random_vec(self, 20)?
        } else {
            nat_hash(header.spi_i, spi_r, local)
        };
        let mut payloads = vec![
            Payload::Sa(SecurityAssociation {
                proposals: vec![
                    IkeProposal::from_chosen(&algs).to_wire(offer_number(msg, &algs), Vec::new())
                ],
            }),
            Payload::Ke(KeyExchange {
                group: algs.dh.id(),
                data: dh.public().to_vec(),
            }),
            Payload::Nonce(nonce_r),
            Payload::Notify(Notify::new(notify::NAT_DETECTION_SOURCE_IP, src)),
            Payload::Notify(Notify::new(
                notify::NAT_DETECTION_DESTINATION_IP,
                nat_hash(header.spi_i, spi_r, remote),
            )),
        ];
        if conn.fragmentation {
            payloads.push(Payload::Notify(Notify::new(
                notify::IKEV2_FRAGMENTATION_SUPPORTED,
                Vec::new(),
            )));
        }
        // RFC 7427: answered in kind, so that the initiator may sign with
        // method 14.
        if notify_of(&msg.payloads, notify::SIGNATURE_HASH_ALGORITHMS).is_some() {
            payloads.push(Payload::Notify(Notify::new(
                notify::SIGNATURE_HASH_ALGORITHMS,
                crate::cert::signature_hash_algorithms_notify_data(),
            )));
        }
        // A responder that wants the peer's certificate asks for it here:
        // strongSwan (send_cert = ifasked) sends CERT in IKE_AUTH only
        // after a CERTREQ (RFC 7296 section 3.7).
        super::auth::certreq_payload(&conn, &mut payloads);
        let m = Message {
            header: IkeHeader {
                spi_i: header.spi_i,
                spi_r,
                next_payload: 0,
                minor_version: 0,
                exchange: exchange::IKE_SA_INIT,
                flags: Flags {
                    initiator: false,
                    version: false,
                    response: true,
                },
                message_id: 0,
                length: 0,
            },
            payloads,
        };
        let bytes = m
            .emit()
            .map_err(|e| super::Reason::Internal(e.to_string()))?;
        sa.init_response = bytes.clone();
        sa.chan = Some(chan);
        sa.transmit(&[bytes], self);
        if let Some(suppressed) = self.init_log.allow(now) {
            info!(ike = %id, %remote, algorithms = %algs, nat = sa.nat_local || sa.nat_remote, suppressed, "IKE_SA_INIT: responded");
        }
        self.by_spi.insert(spi_r, id);
        self.by_init.insert((header.spi_i, remote), id);
        self.sas.insert(id, sa);
        Ok(())
    }
}

/// The number of the initiator's proposal we took (the answer repeats it).
fn offer_number(msg: &Message, algs: &super::proposal::IkeAlgorithms) -> u8 {
    msg.payloads
        .iter()
        .find_map(|p| match p {
            Payload::Sa(s) => {
                select_ike(&s.proposals, &[IkeProposal::from_chosen(algs)]).map(|(_, n)| n)
            }
            _ => None,
        })
        .unwrap_or(1)
}
