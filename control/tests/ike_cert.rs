//! IKE_AUTH with X.509 certificates (ECDSA P-256 and RSA, RFC 7427) between
//! two endpoints: the chain is checked against the configured CA and the
//! identity against the certificate; an untrusted CA fails on both sides.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer,
    KeyPair, SanType, SignatureAlgorithm, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256,
};
use xdpsec_control::config::IkeConfig;
use xdpsec_control::ike::{Connection, Event, Reason, Settings};

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

fn ca(alg: &'static SignatureAlgorithm, cn: &str) -> Ca {
    let key = KeyPair::generate_for(alg).unwrap();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2040, 1, 1);
    let pem = params.self_signed(&key).unwrap().pem();
    Ca { params, key, pem }
}

/// Writes NAME.pem (certificate) and NAME.key for `fqdn`, signed by `ca`.
fn leaf(dir: &Path, ca: &Ca, alg: &'static SignatureAlgorithm, name: &str, fqdn: &str) {
    let key = KeyPair::generate_for(alg).unwrap();
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, fqdn);
    params.distinguished_name = dn;
    params.subject_alt_names = vec![SanType::DnsName(fqdn.try_into().unwrap())];
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2039, 1, 1);
    let cert = params
        .signed_by(&key, &Issuer::from_params(&ca.params, &ca.key))
        .unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
}

fn cert_config(
    dir: &Path,
    me: &str,
    peer: &str,
    my_name: &str,
    peer_fqdn: &str,
    ca_file: &str,
) -> Vec<Connection> {
    let (lan_l, lan_r) = if me == A {
        ("10.1.0.0/16", "10.2.0.0/16")
    } else {
        ("10.2.0.0/16", "10.1.0.0/16")
    };
    let text = format!(
        r#"
[connections.gw]
local_addrs = ["{me}"]
remote_addrs = ["{peer}"]
proposals = ["aes256gcm16-prfsha384-ecp384"]
[connections.gw.local]
auth = "pubkey"
id = "{my_name}.example"
certs = ["{my_name}.pem"]
key = "{my_name}.key"
[connections.gw.remote]
auth = "pubkey"
id = "{peer_fqdn}"
cacerts = ["{ca_file}"]
[connections.gw.children.net]
local_ts = ["{lan_l}"]
remote_ts = ["{lan_r}"]
esp_proposals = ["aes256gcm16"]
"#
    );
    let file = dir.join(format!("{my_name}.toml"));
    std::fs::write(&file, text).unwrap();
    let cfg = IkeConfig::load(&file).unwrap();
    let creds = cfg.load_credentials(&file).unwrap();
    Connection::all_from_config(&Arc::new(cfg), &creds).unwrap()
}

fn run(alg: &'static SignatureAlgorithm, trusted: bool, settings: Settings) -> Sim {
    let dir = tempfile::tempdir().unwrap();
    let root = ca(alg, "xdpsec test CA");
    let other = ca(alg, "someone else's CA");
    std::fs::write(dir.path().join("ca.pem"), &root.pem).unwrap();
    std::fs::write(dir.path().join("other.pem"), &other.pem).unwrap();
    leaf(dir.path(), &root, alg, "a", "a.example");
    leaf(dir.path(), &root, alg, "b", "b.example");
    let a = cert_config(dir.path(), A, B, "a", "b.example", "ca.pem");
    let b = cert_config(
        dir.path(),
        B,
        A,
        "b",
        "a.example",
        if trusted { "ca.pem" } else { "other.pem" },
    );
    let mut sim = Sim::new(
        vec![
            node_with(a, A, 1, settings.clone()),
            node_with(b, B, 2, settings),
        ],
        3,
    );
    sim.nodes[0].ep.initiate(sim.now, "gw").unwrap();
    sim.run_for(Duration::from_secs(20));
    sim
}

#[test]
fn ecdsa_and_rsa_certificates_authenticate_both_sides() {
    for alg in [&PKCS_ECDSA_P256_SHA256, &PKCS_RSA_SHA256] {
        let sim = run(alg, true, fast_settings());
        for n in 0..2 {
            let peer = sim.events(n).iter().find_map(|e| match e {
                Event::IkeSaUp { peer_id, .. } => Some(peer_id.clone()),
                _ => None,
            });
            let want = if n == 0 { "b.example" } else { "a.example" };
            assert_eq!(
                peer.as_deref(),
                Some(want),
                "{alg:?} node {n}: {:#?}",
                sim.events(n)
            );
        }
        assert_sas_match(&installed(sim.events(0)), &installed(sim.events(1)));
    }
}

#[test]
fn rsa_certificates_through_small_fragments() {
    let sim = run(
        &PKCS_RSA_SHA256,
        true,
        Settings {
            fragment_size: 576,
            ..fast_settings()
        },
    );
    assert!(
        sim.sent[0]
            .iter()
            .filter(|t| t.payload.len() > 28 && t.payload[16] == 53)
            .count()
            >= 3
    );
    assert_sas_match(&installed(sim.events(0)), &installed(sim.events(1)));
    assert_eq!(installed(sim.events(0)).len(), 2);
}

#[test]
fn an_untrusted_certificate_fails_with_a_reason() {
    let sim = run(&PKCS_ECDSA_P256_SHA256, false, fast_settings());
    let reason = |n: usize| {
        sim.events(n).iter().find_map(|e| match e {
            Event::IkeSaDown { reason, .. } => Some(reason.clone()),
            _ => None,
        })
    };
    match reason(1) {
        Some(Reason::AuthenticationFailed(why)) => assert!(why.contains("a.example"), "{why}"),
        r => panic!("{r:?}"),
    }
    assert!(
        matches!(reason(0), Some(Reason::AuthenticationFailed(_))),
        "{:?}",
        reason(0)
    );
    for n in 0..2 {
        assert!(installed(sim.events(n)).is_empty());
    }
}
