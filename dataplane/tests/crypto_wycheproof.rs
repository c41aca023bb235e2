//! The AES-GCM backends against the Wycheproof vectors and against each other.
//!
//! Run with both backends compiled in:
//! `cargo test -p xdpsec-dataplane --features xdpsec-dataplane/rustcrypto`
//! (aws-lc is the default feature). A test that compares the two fails, with a
//! message saying so, when only one is there.

use wycheproof::aead::{TestName, TestSet};
use wycheproof::TestResult;
use xdpsec_dataplane::crypto::{new_aead, Aead, Backend, CryptoError, NONCE_LEN, TAG_LEN};

/// Both backends, or a loud failure that says how to get them.
fn both_backends() -> [Backend; 2] {
    let available = Backend::available();
    assert!(
        available.contains(&Backend::AwsLc) && available.contains(&Backend::RustCrypto),
        "this test needs both AES-GCM backends but only {available:?} is compiled in: \
         run it with `--features xdpsec-dataplane/rustcrypto` (aws-lc is the default feature)"
    );
    [Backend::AwsLc, Backend::RustCrypto]
}

/// splitmix64: a fixed-seed generator, so every run sees the same inputs.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.fill(&mut v);
        v
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0; N];
        self.fill(&mut a);
        a
    }
}

#[test]
fn both_backends_are_compiled_in() {
    both_backends();
}

#[derive(Debug, Default)]
struct Counts {
    valid: usize,
    invalid: usize,
    acceptable: usize,
}

#[test]
fn wycheproof_aes_gcm() {
    let set = TestSet::load(TestName::AesGcm).expect("Wycheproof AES-GCM vectors load");
    assert!(
        !Backend::available().is_empty(),
        "no AES-GCM backend compiled in"
    );

    for &backend in Backend::available() {
        let mut counts = Counts::default();
        for group in &set.test_groups {
            // ESP uses exactly this shape (RFC 4106): 96-bit nonce, 128-bit
            // ICV, AES-128 or AES-256. The other groups (other nonce lengths,
            // AES-192) are not something either backend is asked to do here.
            if group.nonce_size != 96
                || group.tag_size != 128
                || !(group.key_size == 128 || group.key_size == 256)
            {
                continue;
            }
            for test in &group.tests {
                let ctx = format!("{backend} tcId {} ({})", test.tc_id, test.comment);
                let nonce: [u8; NONCE_LEN] = test.nonce[..].try_into().expect("96-bit group");
                let tag: [u8; TAG_LEN] = test.tag[..].try_into().expect("128-bit group");
                let aead = new_aead(backend, &test.key).expect(&ctx);
                assert_eq!(aead.backend(), backend, "{ctx}");
                assert_eq!(aead.key_len() * 8, group.key_size, "{ctx}");

                let mut sealed = test.pt.to_vec();
                let sealed_tag = aead
                    .seal_in_place(&nonce, &test.aad, &mut sealed)
                    .expect(&ctx);
                let seal_matches = sealed[..] == test.ct[..] && sealed_tag == tag;

                let mut opened = test.ct.to_vec();
                let open = aead.open_in_place(&nonce, &test.aad, &mut opened, &tag);

                match test.result {
                    TestResult::Valid => {
                        counts.valid += 1;
                        assert!(seal_matches, "{ctx}: seal differs from the vector");
                        assert_eq!(open, Ok(()), "{ctx}: valid vector refused");
                        assert_eq!(opened[..], test.pt[..], "{ctx}: wrong plaintext");
                    }
                    TestResult::Invalid => {
                        counts.invalid += 1;
                        assert_eq!(
                            open,
                            Err(CryptoError::AuthenticationFailed),
                            "{ctx}: invalid vector opened"
                        );
                        // GCM is deterministic: had sealing produced this
                        // ciphertext and tag, opening would have to succeed.
                        assert!(!seal_matches, "{ctx}: seal produced an invalid vector");
                    }
                    TestResult::Acceptable => {
                        counts.acceptable += 1;
                        if open.is_ok() {
                            assert_eq!(opened[..], test.pt[..], "{ctx}: wrong plaintext");
                        }
                        assert_eq!(seal_matches, open.is_ok(), "{ctx}: seal and open disagree");
                    }
                }
            }
        }
        eprintln!("{backend}: Wycheproof AES-GCM {counts:?}");
        // The vectors of wycheproof 0.7 in scope: 79 valid and 54 invalid.
        // The floors keep this from passing on an empty or mis-filtered set.
        assert!(
            counts.valid >= 70,
            "{backend}: only {} valid vectors",
            counts.valid
        );
        assert!(
            counts.invalid >= 50,
            "{backend}: only {} invalid vectors",
            counts.invalid
        );
    }
}

/// Payload sizes: every size up to 64 (partial blocks, empty), then a stride
/// up to 2048, and the usual MTU-ish sizes.
fn sizes() -> impl Iterator<Item = usize> {
    (0..=64)
        .chain((65..=2048).step_by(37))
        .chain([1400, 1438, 1500, 2047, 2048])
}

#[test]
fn one_backend_seals_the_other_opens() {
    let backends = both_backends();
    let mut rng = Rng(0x7864_7073_6563_0001);
    let mut cases = 0;
    for key_len in [16, 32] {
        for _key in 0..3 {
            let key = rng.bytes(key_len);
            let keys = backends.map(|b| new_aead(b, &key).expect("key"));
            for size in sizes() {
                let nonce: [u8; NONCE_LEN] = rng.array();
                // ESP's AAD is 8 bytes (SPI || seq) or 12 with ESN; vary it.
                let aad = rng.bytes([0, 8, 12, 20][size % 4]);
                let plaintext = rng.bytes(size);

                let mut ciphertexts = Vec::new();
                for k in &keys {
                    let mut buf = plaintext.clone();
                    let tag = k.seal_in_place(&nonce, &aad, &mut buf).expect("seal");
                    ciphertexts.push((buf, tag));
                }
                assert_eq!(
                    ciphertexts[0], ciphertexts[1],
                    "backends disagree: key {key_len} bytes, size {size}"
                );
                if size > 0 {
                    assert_ne!(ciphertexts[0].0, plaintext, "size {size}: not encrypted");
                }

                for (sealer, (ct, tag)) in ciphertexts.iter().enumerate() {
                    let opener = &keys[1 - sealer];
                    let mut buf = ct.clone();
                    assert_eq!(
                        opener.open_in_place(&nonce, &aad, &mut buf, tag),
                        Ok(()),
                        "{} sealed, {} refused: key {key_len} bytes, size {size}",
                        keys[sealer].backend(),
                        opener.backend()
                    );
                    assert_eq!(buf, plaintext, "size {size}: wrong plaintext");
                    cases += 1;
                }
            }
        }
    }
    assert!(
        cases >= 2 * 2 * 3 * 100,
        "only {cases} cross-backend cases ran"
    );
}

/// Opening a copy of `ct` fails authentication.
fn refused(
    key: &dyn Aead,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    ct: &[u8],
    tag: &[u8; TAG_LEN],
) -> bool {
    let mut buf = ct.to_vec();
    key.open_in_place(nonce, aad, &mut buf, tag) == Err(CryptoError::AuthenticationFailed)
}

#[test]
fn tampering_and_wrong_keys_fail_on_every_backend() {
    let backends = both_backends();
    let mut rng = Rng(0x7864_7073_6563_0002);
    for key_len in [16, 32] {
        let key = rng.bytes(key_len);
        let mut other_key = key.clone();
        other_key[key_len - 1] ^= 1;
        for size in [0, 1, 15, 16, 17, 100, 1400] {
            let nonce: [u8; NONCE_LEN] = rng.array();
            let aad = rng.bytes(8);
            let plaintext = rng.bytes(size);
            for sealer in backends {
                let mut ct = plaintext.clone();
                let tag = new_aead(sealer, &key)
                    .unwrap()
                    .seal_in_place(&nonce, &aad, &mut ct)
                    .unwrap();
                for opener in backends {
                    let right = new_aead(opener, &key).unwrap();
                    let wrong = new_aead(opener, &other_key).unwrap();
                    let ctx = format!("{sealer} -> {opener}, key {key_len} bytes, size {size}");

                    assert!(
                        refused(&*wrong, &nonce, &aad, &ct, &tag),
                        "{ctx}: wrong key"
                    );
                    for bit in 0..TAG_LEN * 8 {
                        let mut t = tag;
                        t[bit / 8] ^= 1 << (bit % 8);
                        assert!(
                            refused(&*right, &nonce, &aad, &ct, &t),
                            "{ctx}: tag bit {bit}"
                        );
                    }
                    if size > 0 {
                        let mut c = ct.clone();
                        c[size / 2] ^= 0x40;
                        assert!(
                            refused(&*right, &nonce, &aad, &c, &tag),
                            "{ctx}: ciphertext"
                        );
                        assert!(
                            refused(&*right, &nonce, &aad, &ct[..size - 1], &tag),
                            "{ctx}: truncated"
                        );
                    }
                    let mut a = aad.clone();
                    a[3] ^= 0x01;
                    assert!(refused(&*right, &nonce, &a, &ct, &tag), "{ctx}: aad");
                    assert!(
                        refused(&*right, &nonce, &aad[..7], &ct, &tag),
                        "{ctx}: short aad"
                    );
                    let mut n = nonce;
                    n[11] ^= 0x80;
                    assert!(refused(&*right, &n, &aad, &ct, &tag), "{ctx}: nonce");

                    // And the untouched packet still opens.
                    let mut buf = ct.clone();
                    assert_eq!(
                        right.open_in_place(&nonce, &aad, &mut buf, &tag),
                        Ok(()),
                        "{ctx}"
                    );
                    assert_eq!(buf, plaintext, "{ctx}");
                }
            }
        }
    }
}

#[test]
fn key_lengths_other_than_16_and_32_are_refused() {
    for &backend in Backend::available() {
        for len in [0, 1, 15, 17, 24, 31, 33, 64] {
            assert_eq!(
                new_aead(backend, &vec![7; len]).err(),
                Some(CryptoError::BadKeyLength(len)),
                "{backend}, {len}-byte key"
            );
        }
        for len in [16, 32] {
            let aead = new_aead(backend, &vec![7; len]).unwrap();
            assert_eq!(aead.key_len(), len);
            assert_eq!(aead.backend(), backend);
        }
    }
}

#[test]
fn debug_output_does_not_show_the_key() {
    for &backend in Backend::available() {
        for len in [16, 32] {
            let key = vec![0xa5; len];
            let shown = format!(
                "{:?} {:#?}",
                new_aead(backend, &key).unwrap(),
                new_aead(backend, &key).unwrap()
            );
            for needle in ["a5", "A5", "165", "0xa5"] {
                assert!(
                    !shown.contains(needle),
                    "{backend}: Debug shows key bytes: {shown}"
                );
            }
            assert!(
                shown.contains(&format!("{}", len * 8)),
                "{backend}: {shown}"
            );
        }
    }
}
