//! The IKE config: the sample parses into the right types, proposal
//! strings map onto the right transform IDs, and every broken config
//! yields an error naming the file, the field and what is wrong.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use xdpsec_control::config::*;
use xdpsec_control::wire::consts::{dh, encr, esn, integ, prf, transform_type};
use xdpsec_control::wire::Identification;

const FILE: &str = "/etc/xdpsec/ike.toml";

#[test]
fn sample_parses() {
    let cfg = IkeConfig::parse(sample_config(), FILE).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.daemon.api_socket.to_str(), Some("/run/xdpsec/api.sock"));
    assert_eq!(
        cfg.daemon.control_socket.to_str(),
        Some(DEFAULT_CONTROL_SOCKET)
    );
    assert!(!cfg.daemon.log_keys);
    let psk = &cfg.connections["sun-psk"];
    assert_eq!(psk.proposals.len(), 3);
    assert_eq!(psk.dpd_delay, Duration::from_secs(30));
    assert_eq!(psk.dpd_action, DpdAction::Restart);
    assert_eq!(
        psk.ike_life_time(),
        Some(Duration::from_secs(4 * 3600 + 24 * 60))
    );
    assert_eq!(
        psk.initiate_to(),
        Some(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2)))
    );
    assert_eq!(psk.local.auth, AuthMethod::Psk);
    let net = &psk.children["net"];
    assert_eq!(net.start_action, StartAction::Start);
    assert_eq!(net.esp_proposals[1].esn, vec![Esn::Esn, Esn::NoEsn]);
    assert_eq!(net.esp_proposals[0].dh, vec![DhGroup::Curve25519]);
    let cert = &cfg.connections["sun-cert"];
    assert_eq!(cert.local.auth, AuthMethod::Pubkey);
    assert_eq!(
        cert.local.certs[0].to_str(),
        Some("/etc/xdpsec/x509/moonCert.pem"),
        "relative paths are anchored at the config file"
    );
    let Some(Identity::Dn(dn)) = &cert.remote.id else {
        panic!("remote id should be a DN");
    };
    assert_eq!(dn.to_string(), "C=CH, O=strongSwan, CN=sun.strongswan.org");
    let web = &cert.children["web"];
    assert_eq!(web.local_ts[0].protocol, 6);
    assert_eq!(web.local_ts[0].ports.start(), 80);
    let moon = Identification::Fqdn(b"moon.strongswan.org".to_vec());
    let sun = Identification::Fqdn(b"sun.strongswan.org".to_vec());
    assert!(cfg.find_psk(Some(&moon), &sun).is_some());
    let carol = Identification::Fqdn(b"carol.strongswan.org".to_vec());
    assert!(cfg.find_psk(None, &carol).is_none());
}
