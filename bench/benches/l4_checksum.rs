//! The cost of finishing a partial TCP/UDP checksum (`l4_checksum`, issue
//! 12) against the raw AES-GCM seal of the same size, on the same core in
//! the same run: the ratio says what the finish step adds to encryption.
//!
//! Ids are `OP/BACKEND/KEYBITS` with the inner IP packet size as the
//! parameter (the shape `cargo xtask bench csum` reads back):
//! - `finish-partial`: a packet as an offloading host sends it; its segment
//!   is summed and the checksum written;
//! - `finish-full`: a packet whose checksum is already complete; only the
//!   pseudo-header is summed and compared (what every packet from a host
//!   with offload off costs);
//! - `verify`: the pseudo-header and the whole segment summed, what it
//!   would cost to check every packet's checksum;
//! - `sum`: `checksum::data` over the whole packet, the summing alone;
//! - `seal`: AES-GCM seal in place of the same number of bytes.
//!
//! The backend and key size name the cipher `seal` ran with; the checksum
//! operations do not depend on them.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use xdpsec_dataplane::crypto::{new_aead, Aead, Backend, SecretBytes, NONCE_LEN};
use xdpsec_dataplane::l4_checksum::{self, Outcome};
use xdpsec_dataplane::sa::Cipher;
use xdpsec_dataplane::wire::{checksum, ipv4, udp};

const SIZES: [usize; 3] = [64, 512, 1400];
const CHUNK: usize = 256;

/// An IPv4/UDP packet of `size` bytes in all with a partial checksum (as a
/// host with TX checksum offload leaves it) or a full one.
fn packet(size: usize, partial: bool) -> Vec<u8> {
    let mut packet: Vec<u8> = (0..size).map(|i| (i * 7 + 3) as u8).collect();
    let (src, dst) = (Ipv4Addr::new(10, 1, 0, 2), Ipv4Addr::new(10, 2, 0, 2));
    let ip = ipv4::Repr {
        src,
        dst,
        protocol: 17,
        payload_len: size - 20,
        ttl: 64,
        dscp_ecn: 0,
        ident: 1,
        dont_frag: true,
    };
    ip.emit(&mut packet).expect("inner IPv4 header fits");
    let udp = udp::Repr {
        src_port: 40000,
        dst_port: 5201,
        payload_len: size - 28,
    };
    udp.emit(&mut packet[20..]).expect("inner UDP header fits");
    let pseudo = checksum::pseudo_header_v4(src, dst, 17, (size - 20) as u16);
    packet[26..28].copy_from_slice(&checksum::fold(pseudo).to_be_bytes());
    if !partial {
        assert_eq!(l4_checksum::finish(&mut packet), Outcome::Finished);
    }
    packet
}

/// Times `op` over fresh chunks from `prepare` until `iters` operations ran.
fn timed_in_chunks<T>(
    iters: u64,
    mut prepare: impl FnMut() -> Vec<T>,
    mut op: impl FnMut(&mut T),
) -> Duration {
    let mut elapsed = Duration::ZERO;
    let mut remaining = iters;
    while remaining > 0 {
        let mut chunk = prepare();
        let take = chunk.len().min(remaining as usize);
        let start = Instant::now();
        for item in &mut chunk[..take] {
            op(item);
        }
        elapsed += start.elapsed();
        remaining -= take as u64;
    }
    elapsed
}

fn l4_checksum(c: &mut Criterion) {
    let backend = Backend::AwsLc;
    let cipher = Cipher::AesGcm128;
    let tag = format!("{backend}/{}", cipher.key_len() * 8);
    let mut group = c.benchmark_group("l4-checksum");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    let key = SecretBytes::new((0..cipher.keying_material_len()).map(|i| i as u8).collect());
    let aead: Box<dyn Aead> = new_aead(backend, &key[..cipher.key_len()]).expect("valid key");
    let mut seq = 0u64;
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let partial = packet(size, true);
        let full = packet(size, false);
        group.bench_function(
            BenchmarkId::new(format!("finish-partial/{tag}"), size),
            |b| {
                b.iter_custom(|iters| {
                    timed_in_chunks(
                        iters,
                        || vec![partial.clone(); CHUNK],
                        |p| {
                            black_box(l4_checksum::finish(black_box(p)));
                        },
                    )
                })
            },
        );
        group.bench_function(BenchmarkId::new(format!("finish-full/{tag}"), size), |b| {
            b.iter_custom(|iters| {
                timed_in_chunks(
                    iters,
                    || vec![full.clone(); CHUNK],
                    |p| {
                        black_box(l4_checksum::finish(black_box(p)));
                    },
                )
            })
        });
        group.bench_function(BenchmarkId::new(format!("verify/{tag}"), size), |b| {
            b.iter(|| black_box(l4_checksum::verifies(black_box(&full))))
        });
        group.bench_function(BenchmarkId::new(format!("sum/{tag}"), size), |b| {
            b.iter(|| black_box(checksum::data(black_box(&full))))
        });
        group.bench_function(BenchmarkId::new(format!("seal/{tag}"), size), |b| {
            b.iter_custom(|iters| {
                timed_in_chunks(
                    iters,
                    || vec![full.clone(); CHUNK],
                    |plaintext| {
                        seq += 1;
                        let mut nonce = [0u8; NONCE_LEN];
                        nonce[4..].copy_from_slice(&seq.to_be_bytes());
                        black_box(
                            aead.seal_in_place(&nonce, &[0u8; 8], plaintext)
                                .expect("seals"),
                        );
                    },
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, l4_checksum);
criterion_main!(benches);
