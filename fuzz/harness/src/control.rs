//! Targets on the control plane's parsers: IKE messages and payloads, the
//! Configuration payload with the virtual IP logic behind it, X.509
//! certificates, and the IKE daemon's TOML configuration.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use xdpsec_control::cert::{identity_matches_certificate, SignatureScheme, TrustStore};
use xdpsec_control::config::{DistinguishedName, Identity, IkeConfig};
use xdpsec_control::ike::Connection;
use xdpsec_control::pool::Pools;
use xdpsec_control::vip;
use xdpsec_control::wire::consts::payload as pt;
use xdpsec_control::wire::{
    Auth, Configuration, Delete, Identification, IkeHeader, KeyExchange, Message, Notify, Payload,
    PayloadIter, RawPayload, SecurityAssociation, TrafficSelectors,
};

use crate::input::Input;

/// Payload types a body can be parsed as, by the input's first byte.
pub(crate) const KINDS: [u8; 12] = [
    pt::SA,
    pt::KE,
    pt::IDI,
    pt::IDR,
    pt::NOTIFY,
    pt::DELETE,
    pt::AUTH,
    pt::TSI,
    pt::TSR,
    pt::CP,
    pt::SKF,
    pt::NONCE,
];

/// IKE message and payload parsing. The first byte picks the mode: even,
/// the rest is a whole datagram (`Message::parse`, the header peek, the
/// payload chain from every first type); odd, it is the body of one
/// payload of type `KINDS[byte / 2 % 12]`. Whatever parses must emit, and
/// parse back to the same value; an identity must survive the trip to
/// the configuration's form and back.
pub fn ike_message(data: &[u8]) {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    if mode & 1 == 1 {
        let kind = KINDS[usize::from(mode / 2) % KINDS.len()];
        let raw = RawPayload {
            kind,
            critical: false,
            next_payload: pt::NONE,
            body: bytes,
        };
        if let Ok(p) = Payload::parse(&raw) {
            payload_round_trip(&p);
        }
        typed_bodies(bytes);
        return;
    }
    let _ = IkeHeader::peek(bytes);
    if let Ok(m) = Message::parse(bytes) {
        let again = m.emit().expect("a parsed message emits");
        let back = Message::parse(&again).expect("an emitted message parses");
        assert_eq!(back.payloads, m.payloads, "message round trip");
        assert_eq!(back, m.normalized().expect("normalizes"));
        for p in &m.payloads {
            payload_round_trip(p);
        }
    }
    let body = bytes.get(28..).unwrap_or_default();
    for first in [pt::SA, pt::IDI, pt::NOTIFY, pt::TSI, pt::SK, mode] {
        for raw in PayloadIter::new(first, body).flatten() {
            if let Ok(p) = Payload::parse(&raw) {
                payload_round_trip(&p);
            }
        }
    }
}

/// A payload's body emits and parses back to the same payload.
fn payload_round_trip(p: &Payload) {
    let mut body = Vec::new();
    if p.emit_body(&mut body).is_err() {
        // Only what did not come off the wire can be too long to emit.
        return;
    }
    let raw = RawPayload {
        kind: p.kind(),
        critical: false,
        next_payload: match p {
            Payload::Encrypted { first_inner, .. } => *first_inner,
            _ => pt::NONE,
        },
        body: &body,
    };
    let back = Payload::parse(&raw).expect("an emitted payload parses");
    assert_eq!(&back, p, "payload round trip");
    match p {
        Payload::IdI(id) | Payload::IdR(id) => identity(id),
        Payload::Other { kind, body } if *kind == pt::CP => {
            if let Ok(cp) = Configuration::parse(body) {
                cp_round_trip(&cp, body.len());
            }
        }
        _ => {}
    }
}

/// The typed parsers directly, for bodies that the generic header would
/// never frame (longer than 65531 bytes does not happen here; the point is
/// the per-type checks).
fn typed_bodies(bytes: &[u8]) {
    if let Ok(sa) = SecurityAssociation::parse(bytes) {
        let mut out = Vec::new();
        sa.emit(&mut out).expect("a parsed SA emits");
        assert_eq!(SecurityAssociation::parse(&out), Ok(sa));
    }
    if let Ok(ts) = TrafficSelectors::parse(bytes) {
        let mut out = Vec::new();
        ts.emit(&mut out).expect("parsed selectors emit");
        assert_eq!(TrafficSelectors::parse(&out), Ok(ts));
    }
    if let Ok(n) = Notify::parse(bytes) {
        let mut out = Vec::new();
        n.emit(&mut out).expect("a parsed notify emits");
        assert_eq!(Notify::parse(&out), Ok(n));
    }
    if let Ok(d) = Delete::parse(bytes) {
        let mut out = Vec::new();
        d.emit(&mut out).expect("a parsed delete emits");
        assert_eq!(Delete::parse(&out), Ok(d));
    }
    let _ = KeyExchange::parse(bytes);
    let _ = Auth::parse(bytes);
    if let Ok(id) = Identification::parse(bytes) {
        identity(&id);
    }
}

/// An ID payload as the configuration sees it. Identities are only ever
/// sent from the configuration (`Identity::to_wire` of `local.id` and
/// `remote.id`), so the round trip that matters is that of identities a
/// config can name: one whose text form parses back to it must survive
/// the trip to the wire and back (a DN through its DER encoding). A peer's
/// ID the text form cannot express (a DN attribute with a one-arc OID,
/// say) is compared as received and never re-encoded.
fn identity(id: &Identification) {
    let Some(identity) = Identity::from_wire(id) else {
        return;
    };
    let text = identity.to_string();
    if text.parse::<Identity>().as_ref() != Ok(&identity) {
        return;
    }
    let wire = identity
        .to_wire()
        .expect("a received identity is never %any");
    assert_eq!(
        Identity::from_wire(&wire).as_ref(),
        Some(&identity),
        "identity {text:?} round trip"
    );
    if let Identity::Dn(dn) = &identity {
        assert_eq!(DistinguishedName::from_der(&dn.to_der()).as_ref(), Some(dn));
    }
}

fn cp_round_trip(cp: &Configuration, len: usize) {
    let mut out = Vec::new();
    cp.emit(&mut out).expect("a parsed CP emits");
    assert_eq!(out.len(), len, "CP re-emits at its length");
    assert_eq!(Configuration::parse(&out).as_ref(), Ok(cp));
}

const POOLS: &str = r#"
[pools.rw4]
addrs = "10.3.0.0/30"
dns = ["10.2.0.53", "fd00:2::53"]

[pools.rw6]
addrs = "fd00:3::/126"

[pools.range4]
addrs = "10.4.0.10-10.4.0.12"
"#;

fn pool_config() -> &'static IkeConfig {
    static CFG: OnceLock<IkeConfig> = OnceLock::new();
    CFG.get_or_init(|| IkeConfig::parse(POOLS, "pools.toml").expect("harness pools"))
}

/// The Configuration payload (RFC 7296 section 2.19) and what a gateway
/// does with it: up to 32 CFG_REQUESTs from chosen client identities
/// answered from small pools (4 addresses each, at most 3 leases), some
/// leases released again, and the client's reading of each reply.
///
/// A parsed payload re-emits byte for byte in length and to the same
/// value; an answer leases no address twice to two identities at once,
/// only addresses of the pools asked from, and reads back on the client
/// as exactly the addresses leased.
pub fn ike_cp(data: &[u8]) {
    let mut input = Input::new(data);
    let mut pools = Pools::from_config(pool_config(), 3);
    let names: Vec<String> = ["rw4", "rw6", "range4"].map(String::from).to_vec();
    // Who holds what now, as the answers say.
    let mut held: Vec<(Vec<u8>, IpAddr)> = Vec::new();
    for _ in 0..32 {
        if input.is_empty() {
            break;
        }
        let op = input.u8();
        let who = vec![b'c', input.u8() % 6];
        let body = input.chunk();
        let Ok(cp) = Configuration::parse(body) else {
            continue;
        };
        cp_round_trip(&cp, body.len());
        let _ = vip::Assigned::from_reply(&cp);
        if op % 4 == 3 {
            // The client leaves: release what it holds.
            held.retain(|(id, addr)| {
                if *id == who {
                    assert!(pools.release(&names, id, *addr), "release {addr}");
                    false
                } else {
                    true
                }
            });
            continue;
        }
        let from = &names[usize::from(op % 3)..];
        let Ok(leased) = vip::answer(&mut pools, from, &who, &cp) else {
            continue;
        };
        for addr in &leased.addresses {
            assert!(
                !held.iter().any(|(id, a)| a == addr && *id != who),
                "{addr} leased to two clients"
            );
            if !held.iter().any(|(id, a)| a == addr && *id == who) {
                held.push((who.clone(), *addr));
            }
        }
        let _ = leased.client_selectors();
        let mut reply = Vec::new();
        leased.reply.emit(&mut reply).expect("a reply emits");
        let reply = Configuration::parse(&reply).expect("a reply parses");
        let seen = vip::Assigned::from_reply(&reply);
        assert_eq!(
            seen.addresses, leased.addresses,
            "the client reads the leases"
        );
    }
}

fn example_ca() -> &'static TrustStore {
    static STORE: OnceLock<TrustStore> = OnceLock::new();
    STORE.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../control/examples/x509ca/exampleCaCert.pem"
        );
        TrustStore::load(&[path]).expect("the example CA loads")
    })
}

/// X.509 certificates (DER) and RFC 7427 AUTH data as IKE_AUTH meets
/// them. The input is a mode byte, an AUTH method, an ID payload body,
/// AUTH data, then up to 4 DER certificates (each length-prefixed): the
/// chain is verified against the example CA (`control/examples/x509ca`,
/// which the seeds' certificates chain to) at a fixed time, the whole
/// peer check (chain, identity, signature over fixed octets) runs, each
/// certificate is also tried as a trust anchor and against the ID, and the
/// ID's DN is parsed.
pub fn cert_der(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.u8();
    let method = input.u8();
    let id_body = input.chunk();
    let auth = input.chunk();
    let certs: Vec<&[u8]> = (0..4)
        .map(|_| input.chunk())
        .filter(|c| !c.is_empty())
        .collect();
    let _ = SignatureScheme::parse_auth(method, auth);
    let id = Identification::parse(id_body).ok();
    if let Some(Identification::DerDn(der)) = &id {
        let _ = DistinguishedName::from_der(der);
    }
    // Within the example certificates' validity.
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
    let store = example_ca();
    if !certs.is_empty() {
        let _ = store.verify_chain(&certs, now);
        if let Some(id) = &id {
            let _ = store.verify_peer(&certs, now, id, method, auth, b"octets");
        }
    }
    for c in &certs {
        if let Some(id) = &id {
            let _ = identity_matches_certificate(c, id);
        }
        if mode & 1 == 1 {
            if let Ok(t) = TrustStore::from_der(vec![c.to_vec()]) {
                assert_eq!(t.certreq_hashes().len(), 1);
                assert!(t.certreq_matches(&t.certreq_body()));
                let _ = t.verify_chain(&certs, now);
            }
        }
    }
}

/// The IKE daemon's TOML (`xdpsec ike --config`): what parses and
/// validates also makes connections (certificate paths aside: no file is
/// read here, so connections with certificates may fail to load, cleanly),
/// pools and every connection's proposals and identities.
pub fn config_ike(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(cfg) = IkeConfig::parse(text, "fuzz.toml") else {
        return;
    };
    let cfg = Arc::new(cfg);
    let _ = Pools::from_config(&cfg, 16);
    let Ok(conns) = Connection::all_from_config(&cfg, &BTreeMap::new()) else {
        return;
    };
    for c in &conns {
        let _ = c.local_id("198.18.0.1".parse().expect("an address"));
        let _ = c.starts_on_load();
    }
    // The daemon's knobs come from the same file.
    let _ = xdpsec_control::ike::Settings::from_daemon(&cfg.daemon);
}
