//! `xdpsec ike` against strongSwan (Debian's charon with kernel-libipsec,
//! through the test bed's strongSwan fixture): gateway A runs the xdpsec
//! data plane and IKE daemon, gateway B charon. UDP-encapsulated ESP
//! (libipsec fakes a NAT), PSK. xdpsec as initiator with three IKE
//! proposals (AES-GCM with X25519, AES-GCM-256 with P-384, AES-CBC with
//! HMAC-SHA2 and MODP-2048) and as responder; ping and bounded iperf3 both
//! ways; rekeys from either side while traffic runs; delete from either
//! side.
//!
//! Needs root, strongSwan, iputils' ping and iperf3 (`cargo xtask setup`).

mod ike_common;

use ike_common::*;
use std::time::Duration;
use xdpsec_testbed::tunnel::{
    Encapsulation, GatewayKind, IkeOptions, Side, TunnelBed, STRONGSWAN_CHILD,
};

const MIXED: [GatewayKind; 2] = [GatewayKind::Xdpsec, GatewayKind::Strongswan];

fn interop_bed(proposal: &str, esp: &str, initiator: Side) -> TunnelBed {
    bed(
        Encapsulation::Udp,
        MIXED,
        IkeOptions {
            proposals: vec![proposal.into()],
            esp_proposals: vec![esp.into()],
            initiator: Some(initiator),
            ..options()
        },
        false,
    )
}

/// The tunnel is up on both ends with mirrored SPIs, carries ping both
/// ways and (with `iperf`) TCP both ways.
fn check_tunnel(bed: &TunnelBed, iperf: bool) {
    let charon = bed.charon(Side::B).expect("strongSwan on B");
    let swan = charon
        .wait_child_installed(STRONGSWAN_CHILD, SETTLE)
        .unwrap();
    let (x_in, x_out) = child_spis(bed, Side::A);
    assert_eq!(
        (
            u32::from_str_radix(&x_in, 16).unwrap(),
            u32::from_str_radix(&x_out, 16).unwrap()
        ),
        (swan.spi_out, swan.spi_in),
        "SPIs mirror each other"
    );
    assert!(swan.encap, "ESP in UDP");
    let ike = &ike_sas(bed, Side::A)[0];
    assert_eq!(ike["nat"], true, "libipsec's faked NAT was detected: {ike}");
    ping_ok(bed, Side::A, Side::B, false, 4);
    ping_ok(bed, Side::B, Side::A, false, 4);
    if iperf {
        for from in Side::BOTH {
            let dst = bed.host_addr(from.other(), false);
            let report = bed
                .iperf3_from(from, dst, 2, 1)
                .unwrap_or_else(|e| panic!("iperf3 from {from}: {e}\n{}", bed.ike_logs()));
            assert!(report.received_bytes > 0, "iperf3 from {from}");
        }
    }
    let child = bed.wait_for_child(Side::A, SETTLE).unwrap();
    assert!(child["packets_in"].as_u64().unwrap() >= 8, "{child}");
    assert!(child["packets_out"].as_u64().unwrap() >= 8, "{child}");
}

#[test]
fn ike_xdpsec_initiates_to_strongswan_aes128gcm_x25519() {
    let bed = interop_bed("aes128gcm16-prfsha256-x25519", "aes128gcm16", Side::A);
    check_tunnel(&bed, true);
    let charon = bed.charon(Side::B).unwrap();
    let sas = charon.list_sas().unwrap();
    assert_eq!(sas[0].dh_group, "CURVE_25519", "{sas:?}");
    assert!(!sas[0].initiator, "strongSwan responded");
}

#[test]
fn ike_xdpsec_initiates_to_strongswan_aes256gcm_ecp384() {
    let bed = interop_bed("aes256gcm16-prfsha384-ecp384", "aes256gcm16", Side::A);
    check_tunnel(&bed, false);
    let sas = bed.charon(Side::B).unwrap().list_sas().unwrap();
    assert_eq!(sas[0].dh_group, "ECP_384", "{sas:?}");
    assert_eq!(sas[0].encr_keysize, 256, "{sas:?}");
}

#[test]
fn ike_xdpsec_initiates_to_strongswan_aes_cbc_hmac_sha256() {
    let bed = interop_bed("aes128-sha256-modp2048", "aes128gcm16", Side::A);
    check_tunnel(&bed, false);
    let sas = bed.charon(Side::B).unwrap().list_sas().unwrap();
    assert_eq!(sas[0].encr_alg, "AES_CBC", "{sas:?}");
}

#[test]
fn ike_strongswan_initiates_to_xdpsec() {
    let bed = interop_bed("aes128gcm16-prfsha256-x25519", "aes128gcm16", Side::B);
    check_tunnel(&bed, true);
    assert_eq!(ike_sas(&bed, Side::A)[0]["role"], "responder");
}

#[test]
fn ike_rekeys_and_deletes_with_strongswan_from_either_side() {
    let bed = interop_bed("aes128gcm16-prfsha256-x25519", "aes128gcm16", Side::A);
    let charon = bed.charon(Side::B).unwrap();
    let first = child_spis(&bed, Side::A);
    let stats = while_pinging(&bed, 60, || {
        ike_command(&bed, Side::A, &["rekey", "--child"]);
        wait_until(&bed, "xdpsec's child rekey reached strongSwan", || {
            charon
                .wait_child_installed(STRONGSWAN_CHILD, Duration::from_secs(1))
                .is_ok_and(|c| format!("{:08x}", c.spi_out) != first.0)
        });
        std::thread::sleep(Duration::from_millis(500));
        let second = child_spis(&bed, Side::A);
        charon.rekey_child(STRONGSWAN_CHILD).unwrap();
        wait_until(&bed, "strongSwan's child rekey reached xdpsec", || {
            bed.installed_children(Side::A)
                .unwrap()
                .iter()
                .any(|c| c["spi_in"].as_str() != Some(second.0.as_str()))
        });
        std::thread::sleep(Duration::from_millis(500));
        ike_command(&bed, Side::A, &["rekey", "--ike"]);
        std::thread::sleep(Duration::from_millis(500));
        let ike_before = ike_sas(&bed, Side::A)[0]["spi_i"].clone();
        charon.rekey_ike().unwrap();
        wait_until(&bed, "strongSwan's IKE rekey reached xdpsec", || {
            let sas = ike_sas(&bed, Side::A);
            sas.len() == 1 && sas[0]["spi_i"] != ike_before && sas[0]["state"] == "established"
        });
        std::thread::sleep(Duration::from_millis(500));
    });
    assert!(
        stats.all_answered_once(),
        "ping during the rekeys: {}\nxdpsec drops: {:?}\n{:?}\n{}",
        stats.output,
        bed.status(Side::A).map(|s| s.to_string()),
        bed.sa_list(Side::A).map(|s| s.to_string()),
        bed.ike_logs()
    );
    wait_until(&bed, "one SA pair left in the data plane", || {
        dataplane_sas(&bed, Side::A).len() == 2
    });
    ping_ok(&bed, Side::B, Side::A, false, 3);

    // Delete from strongSwan: xdpsec removes its SAs.
    charon.terminate_ike().unwrap();
    wait_until(&bed, "xdpsec removed the SAs strongSwan deleted", || {
        ike_sas(&bed, Side::A).is_empty() && dataplane_sas(&bed, Side::A).is_empty()
    });
    // Up again from xdpsec, then delete from xdpsec: strongSwan has none.
    ike_command(&bed, Side::A, &["initiate"]);
    charon
        .wait_child_installed(STRONGSWAN_CHILD, SETTLE)
        .unwrap();
    ping_ok(&bed, Side::A, Side::B, false, 3);
    ike_command(&bed, Side::A, &["terminate"]);
    wait_until(&bed, "strongSwan deleted what xdpsec deleted", || {
        charon.list_sas().unwrap().is_empty() && dataplane_sas(&bed, Side::A).is_empty()
    });
}

#[test]
fn ike_ecdsa_certificates_with_strongswan_either_side_initiating() {
    for initiator in [Side::A, Side::B] {
        let bed = bed(
            Encapsulation::Udp,
            MIXED,
            IkeOptions {
                auth: xdpsec_testbed::tunnel::IkeAuth::Ecdsa,
                initiator: Some(initiator),
                ..options()
            },
            false,
        );
        check_tunnel(&bed, false);
        let peer = ike_sas(&bed, Side::A)[0]["remote_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            peer.contains(&xdpsec_testbed::tunnel::cert_identity(Side::B)),
            "xdpsec authenticated strongSwan by certificate: {peer}"
        );
    }
}

#[test]
fn ike_strongswan_with_the_wrong_psk_is_refused_and_xdpsec_keeps_serving() {
    let bed = bed(
        Encapsulation::Udp,
        MIXED,
        IkeOptions {
            psk: [Some("not the key strongSwan has".into()), None],
            initiator: None,
            ..options()
        },
        false,
    );
    let charon = bed.charon(Side::B).unwrap();
    let err = charon
        .initiate_child(STRONGSWAN_CHILD)
        .expect_err("strongSwan cannot authenticate");
    assert!(
        err.to_string().contains("AUTHENTICATION_FAILED"),
        "strongSwan got the notify: {err}"
    );
    let log = bed.ike_log(Side::A);
    assert!(
        log.contains("authentication failed"),
        "xdpsec says why:\n{log}"
    );
    assert!(bed.ike_running(Side::A));
    assert!(ike_sas(&bed, Side::A).is_empty());
    assert!(dataplane_sas(&bed, Side::A).is_empty());
}

/// The xdpsec side's data plane restarts under a tunnel to strongSwan: its
/// IKE daemon stays, rekeys the child for the new data plane, and the
/// tunnel carries traffic again without strongSwan's DPD.
#[test]
fn a_restarted_data_plane_gets_its_child_rekeyed_with_strongswan() {
    let mut bed = interop_bed("aes128gcm16-prfsha256-x25519", "aes128gcm16", Side::A);
    check_tunnel(&bed, false);
    let before = child_spis(&bed, Side::A);
    bed.stop(Side::A).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    bed.start(Side::A).unwrap();
    bed.wait_for_socket(Side::A).unwrap();
    wait_until(&bed, "a new child after the data plane's restart", || {
        child_replaced(&bed, Side::A, &before)
    });
    // strongSwan answers the rekey by registering its new outbound SA and
    // sends on the old one until the old child is deleted (make before
    // break); the restarted data plane no longer has the old inbound SA,
    // so traffic back is whole only once the old child is gone.
    wait_until(&bed, "the old child deleted", || {
        bed.ike_sa_list(Side::A).is_ok_and(|list| {
            list["ike_sas"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|ike| ike["children"].as_array().cloned().unwrap_or_default())
                .count()
                == 1
        })
    });
    ping_ok(&bed, Side::A, Side::B, false, 3);
    ping_ok(&bed, Side::B, Side::A, false, 3);
    assert!(bed.ike_log(Side::A).contains("the data plane is back"));
}
