//! IKEv2 key derivation checked against an independent computation
//! (RustCrypto's `hmac`/`sha2`, written here from RFC 7296's formulas),
//! Diffie-Hellman agreement both ways, and SK payload round trips and
//! tampering.

use hmac::{Hmac, Mac};
use sha2::{Sha256, Sha384, Sha512};
use xdpsec_control::crypto::{
    child_keymat, DhGroup, DhPrivate, EncrAlg, IkeKeys, IntegAlg, PrfAlg, Random, SeededRandom,
    SkCipher, SystemRandom,
};
use xdpsec_control::wire::{Flags, IkeHeader, HEADER_LEN};

fn hmac_ref(prf: PrfAlg, key: &[u8], data: &[u8]) -> Vec<u8> {
    match prf {
        PrfAlg::HmacSha256 => {
            let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        PrfAlg::HmacSha384 => {
            let mut m = Hmac::<Sha384>::new_from_slice(key).unwrap();
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        PrfAlg::HmacSha512 => {
            let mut m = Hmac::<Sha512>::new_from_slice(key).unwrap();
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
    }
}

/// prf+ straight from section 2.13, one block at a time.
fn prf_plus_ref(prf: PrfAlg, key: &[u8], seed: &[u8], len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut t = Vec::new();
    let mut n = 1u8;
    while out.len() < len {
        let mut input = t.clone();
        input.extend_from_slice(seed);
        input.push(n);
        t = hmac_ref(prf, key, &input);
        out.extend_from_slice(&t);
        n += 1;
    }
    out.truncate(len);
    out
}

fn bytes(rng: &mut SeededRandom, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rng.fill(&mut v).unwrap();
    v
}

const PRFS: [PrfAlg; 3] = [PrfAlg::HmacSha256, PrfAlg::HmacSha384, PrfAlg::HmacSha512];

#[test]
fn prf_plus_matches_the_reference() {
    let mut rng = SeededRandom::new(1);
    for prf in PRFS {
        for len in [1, 31, 32, 33, 64, 100, 300, 1000] {
            let key = bytes(&mut rng, 40);
            let seed = bytes(&mut rng, 77);
            let got = prf
                .prf_plus(&key, &[&seed[..10], &seed[10..]], len)
                .unwrap();
            assert_eq!(
                &got[..],
                &prf_plus_ref(prf, &key, &seed, len)[..],
                "{prf:?} {len}"
            );
        }
        // The one-octet counter allows 255 blocks and no more.
        assert!(prf
            .prf_plus(b"k", &[b"s"], 255 * prf.output_len())
            .is_some());
        assert!(prf
            .prf_plus(b"k", &[b"s"], 255 * prf.output_len() + 1)
            .is_none());
    }
}

#[test]
fn hmac_sha256_matches_rfc4231_case_2() {
    let out = PrfAlg::HmacSha256.prf(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
    let want = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
    let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(hex, want);
}

#[test]
fn ike_keys_match_the_reference() {
    let mut rng = SeededRandom::new(2);
    let cases = [
        (PrfAlg::HmacSha256, EncrAlg::AesGcm16 { bits: 128 }, None),
        (PrfAlg::HmacSha384, EncrAlg::AesGcm16 { bits: 256 }, None),
        (
            PrfAlg::HmacSha256,
            EncrAlg::AesCbc { bits: 128 },
            Some(IntegAlg::HmacSha256_128),
        ),
        (
            PrfAlg::HmacSha512,
            EncrAlg::AesCbc { bits: 256 },
            Some(IntegAlg::HmacSha512_256),
        ),
        (
            PrfAlg::HmacSha384,
            EncrAlg::AesCbc { bits: 256 },
            Some(IntegAlg::HmacSha384_192),
        ),
    ];
    for (prf, encr, integ) in cases {
        let g = bytes(&mut rng, 32);
        let ni = bytes(&mut rng, 32);
        let nr = bytes(&mut rng, 24);
        let (spi_i, spi_r) = (0x0102030405060708u64, 0x1112131415161718u64);
        let k = IkeKeys::derive(prf, encr, integ, &g, &ni, &nr, spi_i, spi_r, None).unwrap();

        let skeyseed = hmac_ref(prf, &[ni.clone(), nr.clone()].concat(), &g);
        let mut seed = [ni.clone(), nr.clone()].concat();
        seed.extend_from_slice(&spi_i.to_be_bytes());
        seed.extend_from_slice(&spi_r.to_be_bytes());
        let p = prf.output_len();
        let a = integ.map_or(0, |i| i.key_len());
        let e = encr.key_len() + if encr.is_aead() { 4 } else { 0 };
        let km = prf_plus_ref(prf, &skeyseed, &seed, 3 * p + 2 * a + 2 * e);
        let mut at = 0;
        let mut take = |n: usize| {
            let v = km[at..at + n].to_vec();
            at += n;
            v
        };
        assert_eq!(&k.sk_d[..], &take(p)[..]);
        assert_eq!(&k.sk_ai[..], &take(a)[..]);
        assert_eq!(&k.sk_ar[..], &take(a)[..]);
        assert_eq!(&k.sk_ei[..], &take(e)[..]);
        assert_eq!(&k.sk_er[..], &take(e)[..]);
        assert_eq!(&k.sk_pi[..], &take(p)[..]);
        assert_eq!(&k.sk_pr[..], &take(p)[..]);

        // Rekey (section 2.18): SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr).
        let g2 = bytes(&mut rng, 32);
        let k2 =
            IkeKeys::derive(prf, encr, integ, &g2, &ni, &nr, 7, 9, Some((prf, &k.sk_d))).unwrap();
        let skeyseed2 = hmac_ref(prf, &k.sk_d, &[g2.clone(), ni.clone(), nr.clone()].concat());
        let mut seed2 = [ni.clone(), nr.clone()].concat();
        seed2.extend_from_slice(&7u64.to_be_bytes());
        seed2.extend_from_slice(&9u64.to_be_bytes());
        let km2 = prf_plus_ref(prf, &skeyseed2, &seed2, p);
        assert_eq!(&k2.sk_d[..], &km2[..]);
    }
}

#[test]
fn child_keymat_matches_the_reference() {
    let mut rng = SeededRandom::new(3);
    for prf in PRFS {
        for encr in [
            EncrAlg::AesGcm16 { bits: 128 },
            EncrAlg::AesGcm16 { bits: 256 },
        ] {
            let sk_d = bytes(&mut rng, prf.output_len());
            let ni = bytes(&mut rng, 32);
            let nr = bytes(&mut rng, 32);
            let e = encr.key_len() + 4;
            let k = child_keymat(prf, &sk_d, None, &ni, &nr, encr, None).unwrap();
            let km = prf_plus_ref(prf, &sk_d, &[ni.clone(), nr.clone()].concat(), 2 * e);
            assert_eq!(&k.encr_i[..], &km[..e]);
            assert_eq!(&k.encr_r[..], &km[e..]);
            assert!(k.integ_i.is_empty() && k.integ_r.is_empty());
            // With PFS the new shared secret comes first.
            let g = bytes(&mut rng, 32);
            let k = child_keymat(prf, &sk_d, Some(&g), &ni, &nr, encr, None).unwrap();
            let km = prf_plus_ref(
                prf,
                &sk_d,
                &[g.clone(), ni.clone(), nr.clone()].concat(),
                2 * e,
            );
            assert_eq!(&k.encr_i[..], &km[..e]);
            assert_eq!(&k.encr_r[..], &km[e..]);
        }
    }
}

#[test]
fn dh_agrees_both_ways_in_every_group() {
    let mut rng = SeededRandom::new(4);
    for group in [
        DhGroup::Curve25519,
        DhGroup::Ecp256,
        DhGroup::Ecp384,
        DhGroup::Modp2048,
    ] {
        let a = DhPrivate::generate(group, &mut rng).unwrap();
        let b = DhPrivate::generate(group, &mut SystemRandom).unwrap();
        assert_eq!(a.public().len(), group.public_len());
        assert_eq!(b.public().len(), group.public_len());
        let s1 = a.agree(b.public()).unwrap();
        let s2 = b.agree(a.public()).unwrap();
        assert_eq!(&s1[..], &s2[..], "{group:?}");
        assert!(s1.iter().any(|&x| x != 0));
        // A third party gets another secret.
        let c = DhPrivate::generate(group, &mut rng).unwrap();
        assert_ne!(&c.agree(a.public()).unwrap()[..], &s1[..]);
        // Wrong length and (for the curves) points off the curve fail.
        assert!(a.agree(&b.public()[1..]).is_err());
        if matches!(group, DhGroup::Ecp256 | DhGroup::Ecp384) {
            let mut bad = b.public().to_vec();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            assert!(
                a.agree(&bad).is_err(),
                "{group:?} accepted a point off the curve"
            );
        }
    }
}

#[test]
fn modp_rejects_degenerate_public_values() {
    let a = DhPrivate::generate(DhGroup::Modp2048, &mut SeededRandom::new(5)).unwrap();
    let mut one = vec![0u8; 256];
    one[255] = 1;
    assert!(a.agree(&one).is_err());
    assert!(a.agree(&[0u8; 256]).is_err());
    assert!(a.agree(&[0xffu8; 256]).is_err());
}

#[test]
fn x25519_rejects_a_small_order_point() {
    let a = DhPrivate::generate(DhGroup::Curve25519, &mut SeededRandom::new(6)).unwrap();
    assert!(a.agree(&[0u8; 32]).is_err());
}

fn header(len: usize) -> Vec<u8> {
    let h = IkeHeader {
        spi_i: 1,
        spi_r: 2,
        next_payload: 46,
        minor_version: 0,
        exchange: 37,
        flags: Flags::default(),
        message_id: 5,
        length: len as u32,
    };
    let mut v = Vec::new();
    h.emit(&mut v);
    v
}

#[test]
fn sk_round_trip_and_tamper() {
    let mut rng = SeededRandom::new(7);
    let suites = [
        (EncrAlg::AesGcm16 { bits: 128 }, None),
        (EncrAlg::AesGcm16 { bits: 256 }, None),
        (
            EncrAlg::AesCbc { bits: 128 },
            Some(IntegAlg::HmacSha256_128),
        ),
        (
            EncrAlg::AesCbc { bits: 256 },
            Some(IntegAlg::HmacSha384_192),
        ),
        (
            EncrAlg::AesCbc { bits: 256 },
            Some(IntegAlg::HmacSha512_256),
        ),
    ];
    for (encr, integ) in suites {
        let ek = bytes(&mut rng, encr.keymat_len());
        let ak = bytes(&mut rng, integ.map_or(0, |i| i.key_len()));
        let mut tx = SkCipher::new(encr, integ, &ek, &ak).unwrap();
        let rx = SkCipher::new(encr, integ, &ek, &ak).unwrap();
        for len in [0usize, 1, 15, 16, 17, 100, 1000] {
            let plain = bytes(&mut rng, len);
            let total = HEADER_LEN + 4 + tx.sealed_len(len);
            let mut msg = header(total);
            msg.extend_from_slice(&[35, 0]);
            msg.extend_from_slice(&((total - HEADER_LEN) as u16).to_be_bytes());
            tx.seal(&mut msg, &plain, &mut rng).unwrap();
            assert_eq!(msg.len(), total, "{encr:?} {len}");
            assert_eq!(rx.open(&msg, HEADER_LEN + 4).unwrap(), plain);
            // Any flipped bit, in the header (AAD / MAC'd) or the body, fails.
            for at in [3, 20, HEADER_LEN + 2, HEADER_LEN + 5, total - 1] {
                let mut bad = msg.clone();
                bad[at] ^= 0x10;
                assert!(
                    rx.open(&bad, HEADER_LEN + 4).is_err(),
                    "{encr:?} flip at {at}"
                );
            }
            // Other keys fail.
            let other_ak = bytes(&mut rng, ak.len());
            let other = SkCipher::new(encr, integ, &bytes(&mut rng, ek.len()), &other_ak).unwrap();
            assert!(other.open(&msg, HEADER_LEN + 4).is_err());
        }
        // Truncated input is an error, not a panic.
        assert!(rx.open(&header(40), HEADER_LEN + 4).is_err());
        assert!(rx.open(&header(28), 60).is_err());
    }
}

#[test]
fn seeded_random_is_reproducible() {
    let (mut a, mut b) = (SeededRandom::new(9), SeededRandom::new(9));
    let (mut x, mut y) = ([0u8; 100], [0u8; 100]);
    a.fill(&mut x).unwrap();
    b.fill(&mut y).unwrap();
    assert_eq!(x, y);
    let mut c = SeededRandom::new(10);
    c.fill(&mut y).unwrap();
    assert_ne!(x, y);
}
