//! Certificate authentication: chains minted at test time (rcgen, and
//! strongSwan's own `pki` tool) verify; a wrong CA, an expired or not yet
//! valid certificate, an identity the certificate does not hold and a
//! tampered signature each fail with the error that says so.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{RsaKeyPair, RSA_PSS_SHA256};
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer,
    KeyPair, SanType, SignatureAlgorithm, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256,
};
use tempfile::TempDir;
use xdpsec_control::cert::{
    signature_hash_algorithms_notify_data, CertError, LocalCredential, SignatureScheme, TrustStore,
};
use xdpsec_control::config::Identity;
use xdpsec_control::wire::consts::auth_method;
use xdpsec_control::wire::Identification;

const OCTETS: &[u8] = b"InitiatorSignedOctets: IKE_SA_INIT request | Nr | prf(SK_pi, IDi')";

struct Ca {
    params: CertificateParams,
    key: KeyPair,
    pem: String,
}

fn dn(c: &str, o: &str, cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, c);
    dn.push(DnType::OrganizationName, o);
    dn.push(DnType::CommonName, cn);
    dn
}

fn ca(alg: &'static SignatureAlgorithm, cn: &str) -> Ca {
    let key = KeyPair::generate_for(alg).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = dn("CH", "strongSwan", cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2040, 1, 1);
    let pem = params.self_signed(&key).unwrap().pem();
    Ca { params, key, pem }
}

struct Leaf {
    cert_pem: String,
    key_pem: String,
}

fn leaf(
    issuer: &Ca,
    alg: &'static SignatureAlgorithm,
    cn: &str,
    sans: Vec<SanType>,
    valid: (i32, i32),
) -> Leaf {
    let key = KeyPair::generate_for(alg).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = dn("CH", "strongSwan", cn);
    params.subject_alt_names = sans;
    params.not_before = date_time_ymd(valid.0, 1, 1);
    params.not_after = date_time_ymd(valid.1, 1, 1);
    let issuer = Issuer::from_params(&issuer.params, &issuer.key);
    let cert = params.signed_by(&key, &issuer).unwrap();
    Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn dns(name: &str) -> SanType {
    SanType::DnsName(name.try_into().unwrap())
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn fqdn(name: &str) -> Identification {
    Identification::Fqdn(name.as_bytes().to_vec())
}

/// 2030-01-01, inside every validity period above except where a test
/// says otherwise.
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_893_456_000)
}

fn chain_refs(cred: &LocalCredential) -> Vec<&[u8]> {
    cred.chain_der().iter().map(Vec::as_slice).collect()
}

/// moon's credential and a trust store of its CA, from files.
fn moon(alg: &'static SignatureAlgorithm) -> (TempDir, LocalCredential, TrustStore) {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca(alg, "strongSwan Root CA");
    let moon = leaf(
        &ca,
        alg,
        "moon.strongswan.org",
        vec![dns("moon.strongswan.org")],
        (2020, 2035),
    );
    let cert = write(dir.path(), "moonCert.pem", &moon.cert_pem);
    let key = write(dir.path(), "moonKey.pem", &moon.key_pem);
    let ca_path = write(dir.path(), "caCert.pem", &ca.pem);
    let cred = LocalCredential::load(&[cert], &key).unwrap();
    let trust = TrustStore::load(&[ca_path]).unwrap();
    (dir, cred, trust)
}

#[test]
fn ecdsa_chain_verifies_with_fqdn_and_dn_ids() {
    let (_dir, cred, trust) = moon(&PKCS_ECDSA_P256_SHA256);
    assert_eq!(cred.auth_method(), auth_method::DIGITAL_SIGNATURE);
    assert_eq!(cred.signature_scheme(), SignatureScheme::EcdsaSha256);
    let auth = cred.sign_auth(OCTETS).unwrap();
    // RFC 7427: length, ecdsa-with-SHA256 AlgorithmIdentifier, signature.
    assert_eq!(
        &auth[..13],
        &[12, 0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]
    );
    let chain = chain_refs(&cred);
    let method = cred.auth_method();
    let by_fqdn = fqdn("moon.strongswan.org");
    let subject = trust
        .verify_peer(&chain, now(), &by_fqdn, method, &auth, OCTETS)
        .unwrap();
    assert_eq!(subject, "C=CH, O=strongSwan, CN=moon.strongswan.org");
    // The DN as a strongSwan user writes it: encoded by us with
    // PrintableStrings, while rcgen's certificate uses UTF8Strings.
    let configured: Identity = "C=CH, O=strongSwan, CN=moon.strongswan.org"
        .parse()
        .unwrap();
    let by_dn = configured.to_wire().unwrap();
    assert!(cred.identity_matches(&by_dn));
    trust
        .verify_peer(&chain, now(), &by_dn, method, &auth, OCTETS)
        .unwrap();
    trust
        .verify_peer(&chain, now(), &cred.subject_id(), method, &auth, OCTETS)
        .unwrap();
}

#[test]
fn rsa_chain_with_intermediate_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let root = ca(&PKCS_RSA_SHA256, "strongSwan Root CA");
    let key = KeyPair::generate_for(&PKCS_RSA_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = dn("CH", "strongSwan", "strongSwan Intermediate CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2039, 1, 1);
    let inter_pem = params
        .signed_by(&key, &Issuer::from_params(&root.params, &root.key))
        .unwrap()
        .pem();
    let inter = Ca {
        params,
        key,
        pem: inter_pem,
    };
    let sun = leaf(
        &inter,
        &PKCS_RSA_SHA256,
        "sun.strongswan.org",
        vec![
            dns("sun.strongswan.org"),
            SanType::IpAddress("198.18.0.2".parse().unwrap()),
            SanType::Rfc822Name("sun@strongswan.org".try_into().unwrap()),
        ],
        (2020, 2035),
    );
    let chain_file = write(
        dir.path(),
        "sunChain.pem",
        &format!("{}{}", sun.cert_pem, inter.pem),
    );
    let key_file = write(dir.path(), "sunKey.pem", &sun.key_pem);
    let cred = LocalCredential::load(&[chain_file], &key_file).unwrap();
    assert_eq!(cred.chain_der().len(), 2);
    assert_eq!(cred.signature_scheme(), SignatureScheme::RsaPkcs1Sha256);
    let trust = TrustStore::load(&[write(dir.path(), "root.pem", &root.pem)]).unwrap();
    let auth = cred.sign_auth(OCTETS).unwrap();
    let chain = chain_refs(&cred);
    for id in [
        fqdn("SUN.strongswan.org"),
        Identification::Ipv4("198.18.0.2".parse().unwrap()),
        Identification::Rfc822(b"sun@strongswan.org".to_vec()),
    ] {
        trust
            .verify_peer(&chain, now(), &id, cred.auth_method(), &auth, OCTETS)
            .unwrap_or_else(|e| panic!("{id:?}: {e}"));
    }
    // Without the intermediate the chain does not reach the root.
    let err = trust
        .verify_peer(
            &chain[..1],
            now(),
            &fqdn("sun.strongswan.org"),
            14,
            &auth,
            OCTETS,
        )
        .unwrap_err();
    assert!(matches!(err, CertError::UntrustedIssuer { .. }), "{err}");
}

#[test]
fn rsa_pss_signature_from_peer_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let root = ca(&PKCS_RSA_SHA256, "strongSwan Root CA");
    let sun = leaf(
        &root,
        &PKCS_RSA_SHA256,
        "sun.strongswan.org",
        vec![dns("sun.strongswan.org")],
        (2020, 2035),
    );
    let trust = TrustStore::load(&[write(dir.path(), "root.pem", &root.pem)]).unwrap();
    let cred = LocalCredential::from_pem(sun.cert_pem.as_bytes(), sun.key_pem.as_bytes()).unwrap();
    // Sign with PSS directly, prefixed with the identifier RFC 7427
    // appendix A.4.3 prints for RSASSA-PSS with SHA-256.
    let pss_id = hex(
        "3041 0609 2a864886f70d01010a 3034 a00f 300d 0609 608648016503040201 0500 \
         a11c 301a 0609 2a864886f70d010108 300d 0609 608648016503040201 0500 a203 020120",
    );
    assert_eq!(SignatureScheme::RsaPssSha256.algorithm_identifier(), pss_id);
    let der = rustls_pki_types_key(&sun.key_pem);
    let pair = RsaKeyPair::from_pkcs8(&der).unwrap();
    let mut signature = vec![0; pair.public_modulus_len()];
    pair.sign(
        &RSA_PSS_SHA256,
        &SystemRandom::new(),
        OCTETS,
        &mut signature,
    )
    .unwrap();
    let mut auth = vec![pss_id.len() as u8];
    auth.extend(&pss_id);
    auth.extend(&signature);
    let chain = chain_refs(&cred);
    let id = fqdn("sun.strongswan.org");
    trust
        .verify_peer(&chain, now(), &id, 14, &auth, OCTETS)
        .unwrap();
    // The same signature under the PKCS#1 identifier does not verify.
    let pkcs1_id = SignatureScheme::RsaPkcs1Sha256.algorithm_identifier();
    let mut wrong = vec![pkcs1_id.len() as u8];
    wrong.extend(&pkcs1_id);
    wrong.extend(&signature);
    let err = trust
        .verify_peer(&chain, now(), &id, 14, &wrong, OCTETS)
        .unwrap_err();
    assert!(matches!(err, CertError::BadSignature { .. }), "{err}");
}

fn rustls_pki_types_key(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

#[test]
fn wrong_ca_is_an_untrusted_issuer() {
    let (_dir, cred, _trust) = moon(&PKCS_ECDSA_P256_SHA256);
    let other = ca(&PKCS_ECDSA_P256_SHA256, "Other Root CA");
    let trust = TrustStore::from_der(vec![pem_to_der(&other.pem)]).unwrap();
    let auth = cred.sign_auth(OCTETS).unwrap();
    let err = trust
        .verify_peer(
            &chain_refs(&cred),
            now(),
            &fqdn("moon.strongswan.org"),
            14,
            &auth,
            OCTETS,
        )
        .unwrap_err();
    let CertError::UntrustedIssuer { subject, issuer } = &err else {
        panic!("expected UntrustedIssuer, got {err}");
    };
    assert_eq!(subject, "C=CH, O=strongSwan, CN=moon.strongswan.org");
    assert_eq!(issuer, "C=CH, O=strongSwan, CN=strongSwan Root CA");
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    rustls_pki_types_key(pem)
}

#[test]
fn expired_and_not_yet_valid_certificates_fail() {
    let (_dir, cred, trust) = moon(&PKCS_ECDSA_P256_SHA256);
    let auth = cred.sign_auth(OCTETS).unwrap();
    let chain = chain_refs(&cred);
    let id = fqdn("moon.strongswan.org");
    // moon's certificate ends 2035-01-01.
    let later = UNIX_EPOCH + Duration::from_secs(2_082_844_800); // 2036-01-01
    let err = trust
        .verify_peer(&chain, later, &id, 14, &auth, OCTETS)
        .unwrap_err();
    let CertError::Expired { not_after, now, .. } = err else {
        panic!("expected Expired, got {err}");
    };
    assert_eq!(not_after, 2_051_222_400); // 2035-01-01
    assert_eq!(now, 2_082_844_800);
    let earlier = UNIX_EPOCH + Duration::from_secs(1_546_300_800); // 2019-01-01
    let err = trust
        .verify_peer(&chain, earlier, &id, 14, &auth, OCTETS)
        .unwrap_err();
    assert!(matches!(err, CertError::NotYetValid { .. }), "{err}");
}

#[test]
fn identity_not_in_certificate_is_a_mismatch() {
    let (_dir, cred, trust) = moon(&PKCS_ECDSA_P256_SHA256);
    let auth = cred.sign_auth(OCTETS).unwrap();
    let chain = chain_refs(&cred);
    let wrong_ids = [
        fqdn("sun.strongswan.org"),
        Identification::Ipv4("198.18.0.1".parse().unwrap()),
        Identification::Rfc822(b"moon.strongswan.org".to_vec()),
        "C=CH, O=strongSwan, CN=sun.strongswan.org"
            .parse::<Identity>()
            .unwrap()
            .to_wire()
            .unwrap(),
        // The subject's attributes in another order are another DN.
        "CN=moon.strongswan.org, O=strongSwan, C=CH"
            .parse::<Identity>()
            .unwrap()
            .to_wire()
            .unwrap(),
    ];
    for id in wrong_ids {
        assert!(!cred.identity_matches(&id), "{id:?}");
        let err = trust
            .verify_peer(&chain, now(), &id, 14, &auth, OCTETS)
            .unwrap_err();
        assert!(
            matches!(err, CertError::IdentityMismatch { .. }),
            "{id:?}: {err}"
        );
    }
}

#[test]
fn tampered_signature_or_octets_fail() {
    for alg in [&PKCS_ECDSA_P256_SHA256, &PKCS_RSA_SHA256] {
        let (_dir, cred, trust) = moon(alg);
        let auth = cred.sign_auth(OCTETS).unwrap();
        let chain = chain_refs(&cred);
        let id = fqdn("moon.strongswan.org");
        let mut tampered = auth.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 0x01;
        let err = trust
            .verify_peer(&chain, now(), &id, 14, &tampered, OCTETS)
            .unwrap_err();
        assert!(matches!(err, CertError::BadSignature { .. }), "{err}");
        let mut other = OCTETS.to_vec();
        other[0] ^= 0x80;
        let err = trust
            .verify_peer(&chain, now(), &id, 14, &auth, &other)
            .unwrap_err();
        assert!(matches!(err, CertError::BadSignature { .. }), "{err}");
        // PSK's method number with a signature is refused before any math.
        let err = trust
            .verify_peer(
                &chain,
                now(),
                &id,
                auth_method::SHARED_KEY_MIC,
                &auth,
                OCTETS,
            )
            .unwrap_err();
        assert_eq!(err, CertError::UnsupportedAuthMethod(2));
        // Truncated AUTH data.
        let err = trust
            .verify_peer(&chain, now(), &id, 14, &auth[..5], OCTETS)
            .unwrap_err();
        assert!(matches!(err, CertError::MalformedAuth(_)), "{err}");
    }
}

#[test]
fn ecdsa_signature_under_an_rsa_identifier_is_a_mismatch() {
    let (_dir, cred, trust) = moon(&PKCS_ECDSA_P256_SHA256);
    let auth = cred.sign_auth(OCTETS).unwrap();
    let rsa_id = SignatureScheme::RsaPkcs1Sha256.algorithm_identifier();
    let mut forged = vec![rsa_id.len() as u8];
    forged.extend(&rsa_id);
    forged.extend(&auth[13..]);
    let err = trust
        .verify_peer(
            &chain_refs(&cred),
            now(),
            &fqdn("moon.strongswan.org"),
            14,
            &forged,
            OCTETS,
        )
        .unwrap_err();
    assert!(matches!(err, CertError::AlgorithmMismatch { .. }), "{err}");
}

#[test]
fn key_of_another_certificate_is_refused() {
    let ca = ca(&PKCS_ECDSA_P256_SHA256, "strongSwan Root CA");
    let a = leaf(&ca, &PKCS_ECDSA_P256_SHA256, "a", vec![], (2020, 2035));
    let b = leaf(&ca, &PKCS_ECDSA_P256_SHA256, "b", vec![], (2020, 2035));
    let err = LocalCredential::from_pem(a.cert_pem.as_bytes(), b.key_pem.as_bytes()).unwrap_err();
    assert!(matches!(err, CertError::KeyMismatch { .. }), "{err}");
    let r = leaf(&ca, &PKCS_RSA_SHA256, "r", vec![], (2020, 2035));
    let err = LocalCredential::from_pem(a.cert_pem.as_bytes(), r.key_pem.as_bytes()).unwrap_err();
    assert!(matches!(err, CertError::KeyMismatch { .. }), "{err}");
}

#[test]
fn missing_files_name_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.pem");
    let err = TrustStore::load(&[&missing]).unwrap_err();
    assert!(err.to_string().contains("nope.pem"), "{err}");
    let empty = write(dir.path(), "empty.pem", "not a certificate\n");
    let err = TrustStore::load(&[&empty]).unwrap_err();
    assert!(matches!(err, CertError::Pem { .. }), "{err}");
}

#[test]
fn certreq_and_signature_hash_algorithms() {
    let (_dir, _cred, trust) = moon(&PKCS_ECDSA_P256_SHA256);
    let body = trust.certreq_body();
    assert_eq!(body.len(), 21);
    assert_eq!(body[0], 4);
    assert!(trust.certreq_matches(&body));
    let mut other = body.clone();
    other[5] ^= 1;
    assert!(!trust.certreq_matches(&other));
    assert_eq!(
        signature_hash_algorithms_notify_data(),
        vec![0, 2, 0, 3, 0, 4]
    );
}

/// strongSwan's `pki` tool (installed by `cargo xtask setup`).
fn pki(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("pki")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("strongSwan's pki tool is missing; run `cargo xtask setup`");
    assert!(
        out.status.success(),
        "pki {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn pki_to(dir: &Path, file: &str, args: &[&str]) -> PathBuf {
    let p = dir.join(file);
    std::fs::write(&p, pki(dir, args)).unwrap();
    p
}

/// Certificates made the way the strongSwan documentation makes them
/// (`pki --gen/--self/--issue`, subjectAltName DNS, SEC1 and PKCS#1 key
/// files): ours load and sign, the peer's verify, and the CERTREQ hash is
/// the keyid strongSwan prints.
#[test]
fn strongswan_pki_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (kind, size) in [("ecdsa", "256"), ("rsa", "2048")] {
        pki_to(
            d,
            "caKey.pem",
            &["--gen", "--type", kind, "--size", size, "--outform", "pem"],
        );
        let ca_cert = pki_to(
            d,
            "caCert.pem",
            &[
                "--self",
                "--ca",
                "--lifetime",
                "3652",
                "--in",
                "caKey.pem",
                "--type",
                kind,
                "--dn",
                "C=CH, O=strongSwan, CN=strongSwan Root CA",
                "--outform",
                "pem",
            ],
        );
        let key = pki_to(
            d,
            "moonKey.pem",
            &["--gen", "--type", kind, "--size", size, "--outform", "pem"],
        );
        let pub_key = pki_to(
            d,
            "moonPub.pem",
            &[
                "--pub",
                "--in",
                "moonKey.pem",
                "--type",
                kind,
                "--outform",
                "pem",
            ],
        );
        let cert = pki_to(
            d,
            "moonCert.pem",
            &[
                "--issue",
                "--lifetime",
                "1826",
                "--cacert",
                "caCert.pem",
                "--cakey",
                "caKey.pem",
                "--type",
                "pub",
                "--in",
                pub_key.to_str().unwrap(),
                "--dn",
                "C=CH, O=strongSwan, CN=moon.strongswan.org",
                "--san",
                "moon.strongswan.org",
                "--flag",
                "serverAuth",
                "--flag",
                "ikeIntermediate",
                "--outform",
                "pem",
            ],
        );
        let cred = LocalCredential::load(&[&cert], &key).unwrap_or_else(|e| panic!("{kind}: {e}"));
        let trust = TrustStore::load(&[&ca_cert]).unwrap();
        let auth = cred.sign_auth(OCTETS).unwrap();
        let chain = chain_refs(&cred);
        let today = SystemTime::now();
        for id in [
            fqdn("moon.strongswan.org"),
            "C=CH, O=strongSwan, CN=moon.strongswan.org"
                .parse::<Identity>()
                .unwrap()
                .to_wire()
                .unwrap(),
        ] {
            trust
                .verify_peer(&chain, today, &id, 14, &auth, OCTETS)
                .unwrap_or_else(|e| panic!("{kind} {id:?}: {e}"));
        }
        // `pki --keyid` prints the SHA-1 of the subjectPublicKeyInfo.
        let keyid = String::from_utf8(pki(d, &["--keyid", "--type", "x509", "--in", "caCert.pem"]))
            .unwrap();
        let mut lines = keyid.lines();
        lines
            .by_ref()
            .find(|l| l.starts_with("keyid (SHA-1 of subjectPublicKeyInfo)"))
            .unwrap_or_else(|| panic!("no keyid line in {keyid:?}"));
        let line = lines.next().unwrap_or_default();
        let expected = hex(line);
        assert_eq!(expected.len(), 20, "{keyid}");
        assert_eq!(
            trust.certreq_hashes()[0].to_vec(),
            expected,
            "{kind}: {line}"
        );
    }
}

/// The config's pubkey sections load into credentials; a local id that
/// is not in the certificate and a missing key are named by field.
#[test]
fn config_loads_credentials() {
    use xdpsec_control::config::IkeConfig;
    let dir = tempfile::tempdir().unwrap();
    let ca = ca(&PKCS_ECDSA_P256_SHA256, "strongSwan Root CA");
    let moon = leaf(
        &ca,
        &PKCS_ECDSA_P256_SHA256,
        "moon.strongswan.org",
        vec![dns("moon.strongswan.org")],
        (2020, 2035),
    );
    write(dir.path(), "moonCert.pem", &moon.cert_pem);
    write(dir.path(), "moonKey.pem", &moon.key_pem);
    write(dir.path(), "caCert.pem", &ca.pem);
    let text = r#"
[connections.gw]
remote_addrs = ["198.18.0.2"]
[connections.gw.local]
id = "moon.strongswan.org"
certs = ["moonCert.pem"]
key = "moonKey.pem"
[connections.gw.remote]
cacerts = ["caCert.pem"]
[connections.gw.children.net]
"#;
    let file = write(dir.path(), "ike.toml", text);
    let cfg = IkeConfig::load(&file).unwrap();
    let creds = cfg.load_credentials(&file).unwrap();
    let gw = &creds["gw"];
    let local = gw.local.as_ref().unwrap();
    let auth = local.sign_auth(OCTETS).unwrap();
    let chain = chain_refs(local);
    gw.trust
        .as_ref()
        .unwrap()
        .verify_peer(
            &chain,
            now(),
            &fqdn("moon.strongswan.org"),
            14,
            &auth,
            OCTETS,
        )
        .unwrap();

    let wrong_id = write(
        dir.path(),
        "ike.toml",
        &text.replace("id = \"moon", "id = \"sun"),
    );
    let e = IkeConfig::load(&wrong_id)
        .unwrap()
        .load_credentials(&wrong_id)
        .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("connections.gw.local.id"), "{e}");
    let no_key = write(
        dir.path(),
        "ike.toml",
        &text.replace("moonKey.pem", "gone.pem"),
    );
    let e = IkeConfig::load(&no_key)
        .unwrap()
        .load_credentials(&no_key)
        .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("connections.gw.local.key"), "{e}");
    assert!(e.reason.contains("gone.pem"), "{e}");
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    fn fixture() -> &'static (TempDir, LocalCredential, TrustStore) {
        static FIXTURE: OnceLock<(TempDir, LocalCredential, TrustStore)> = OnceLock::new();
        FIXTURE.get_or_init(|| moon(&PKCS_ECDSA_P256_SHA256))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn garbage_auth_data_and_chains_are_errors(
            auth in proptest::collection::vec(any::<u8>(), 0..200),
            cert in proptest::collection::vec(any::<u8>(), 0..200),
            method in prop::sample::select(vec![1u8, 2, 9, 10, 14, 14, 14]),
        ) {
            let (_dir, cred, trust) = fixture();
            let id = fqdn("moon.strongswan.org");
            // A valid chain: the garbage reaches the AUTH parser.
            let chain = chain_refs(cred);
            prop_assert!(trust.verify_peer(&chain, now(), &id, method, &auth, OCTETS).is_err());
            // A garbage chain.
            prop_assert!(trust.verify_peer(&[&cert], now(), &id, method, &auth, OCTETS).is_err());
            prop_assert!(trust.verify_peer(&[], now(), &id, method, &auth, OCTETS).is_err());
            let _ = trust.certreq_matches(&auth);
        }
    }
}

/// OpenSSL (installed by `cargo xtask setup`), as an independent
/// implementation of the signatures.
fn openssl(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is missing; run `cargo xtask setup`")
}

/// Our AUTH signatures verify with OpenSSL, and OpenSSL's ECDSA-SHA384
/// and RSASSA-PSS signatures (the PSS salt as long as the digest, as
/// strongSwan signs) verify with ours.
#[test]
fn signatures_interoperate_with_openssl() {
    for alg in [&PKCS_ECDSA_P256_SHA256, &PKCS_RSA_SHA256] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let root = ca(alg, "strongSwan Root CA");
        let moon = leaf(
            &root,
            alg,
            "moon.strongswan.org",
            vec![dns("moon.strongswan.org")],
            (2020, 2035),
        );
        write(d, "cert.pem", &moon.cert_pem);
        write(d, "key.pem", &moon.key_pem);
        std::fs::write(d.join("octets.bin"), OCTETS).unwrap();
        let cred = LocalCredential::load(&[d.join("cert.pem")], &d.join("key.pem")).unwrap();
        let trust = TrustStore::from_der(vec![pem_to_der(&root.pem)]).unwrap();
        let id = fqdn("moon.strongswan.org");
        let chain = chain_refs(&cred);
        let out = openssl(
            d,
            &[
                "x509", "-pubkey", "-noout", "-in", "cert.pem", "-out", "pub.pem",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        // Ours, checked by OpenSSL.
        let auth = cred.sign_auth(OCTETS).unwrap();
        let signature = &auth[1 + usize::from(auth[0])..];
        std::fs::write(d.join("ours.sig"), signature).unwrap();
        let out = openssl(
            d,
            &[
                "dgst",
                "-sha256",
                "-verify",
                "pub.pem",
                "-signature",
                "ours.sig",
                "octets.bin",
            ],
        );
        assert!(
            out.status.success(),
            "{alg:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );

        // OpenSSL's, checked by us.
        let (scheme, extra): (SignatureScheme, &[&str]) = if alg == &PKCS_RSA_SHA256 {
            (
                SignatureScheme::RsaPssSha384,
                &[
                    "-sigopt",
                    "rsa_padding_mode:pss",
                    "-sigopt",
                    "rsa_pss_saltlen:digest",
                    "-sigopt",
                    "rsa_mgf1_md:sha384",
                ],
            )
        } else {
            (SignatureScheme::EcdsaSha384, &[])
        };
        let mut args = vec!["dgst", "-sha384", "-sign", "key.pem"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-out", "theirs.sig", "octets.bin"]);
        let out = openssl(d, &args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let theirs = std::fs::read(d.join("theirs.sig")).unwrap();
        let alg_id = scheme.algorithm_identifier();
        let mut auth = vec![alg_id.len() as u8];
        auth.extend(&alg_id);
        auth.extend(&theirs);
        trust
            .verify_peer(&chain, now(), &id, 14, &auth, OCTETS)
            .unwrap_or_else(|e| panic!("{scheme}: {e}"));
    }
}
