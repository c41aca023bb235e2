//! ESP encapsulation and decapsulation against the raw AEAD of the same size,
//! on the same core in the same run, so the ratio says what the ESP transform
//! costs on top of the cipher.
//!
//! Every operation consumes its input (encapsulation encrypts the inner
//! packet, decapsulation needs a sequence number the replay window has not
//! seen), so all four are timed the same way: a chunk of fresh buffers is
//! prepared outside the clock, then the operation runs once per buffer inside
//! it. Ids are `OP/BACKEND/KEYBITS` with the inner IP packet size as the
//! parameter; `cargo xtask bench esp` reads them back by that shape.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};
use xdpsec_dataplane::crypto::{new_aead, Aead, Backend, SecretBytes, NONCE_LEN};
use xdpsec_dataplane::esp::{self, MAX_HEADROOM, MAX_TAILROOM};
use xdpsec_dataplane::sa::{Cipher, Direction, InboundSa, OutboundSa, SaConfig};
use xdpsec_dataplane::selector::{AddrFamily, TrafficSelector};
use xdpsec_dataplane::wire::{ipv4, udp};

const SIZES: [usize; 4] = [64, 512, 1400, 8192];
const CHUNK: usize = 256;
const SPI: u32 = 0x1000_0001;
const LOCAL: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

fn keying_material(cipher: Cipher) -> SecretBytes {
    SecretBytes::new(
        (0..cipher.keying_material_len())
            .map(|i| i as u8 ^ 0x5a)
            .collect(),
    )
}

fn sa_config(direction: Direction, cipher: Cipher, backend: Backend) -> SaConfig {
    let (local, remote) = match direction {
        Direction::Outbound => (LOCAL, REMOTE),
        Direction::Inbound => (REMOTE, LOCAL),
    };
    let mut config = SaConfig::new(
        SPI,
        direction,
        cipher,
        keying_material(cipher),
        IpAddr::V4(local),
        IpAddr::V4(remote),
        vec![TrafficSelector::any(AddrFamily::V4)],
    );
    config.backend = backend;
    config
}

/// An IPv4/UDP packet of `size` bytes in all (10.1.0.2 -> 10.2.0.2).
fn inner_packet(size: usize) -> Vec<u8> {
    let mut packet = vec![0xabu8; size];
    let ip = ipv4::Repr {
        src: Ipv4Addr::new(10, 1, 0, 2),
        dst: Ipv4Addr::new(10, 2, 0, 2),
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
    packet
}

/// A frame-sized buffer with the inner packet after the worst-case headroom.
fn frame_with(inner: &[u8]) -> Vec<u8> {
    let mut frame = vec![0u8; MAX_HEADROOM + inner.len() + MAX_TAILROOM];
    frame[MAX_HEADROOM..MAX_HEADROOM + inner.len()].copy_from_slice(inner);
    frame
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

fn nonce_for(seq: u64) -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    nonce[4..].copy_from_slice(&seq.to_be_bytes());
    nonce
}

fn bench_one(c: &mut Criterion, backend: Backend, cipher: Cipher) {
    let key_bits = cipher.key_len() * 8;
    let mut group = c.benchmark_group("esp-core");
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    for size in SIZES {
        let inner = inner_packet(size);
        group.throughput(Throughput::Bytes(size as u64));

        let outbound = OutboundSa::new(sa_config(Direction::Outbound, cipher, backend))
            .expect("valid outbound SA");
        group.bench_function(
            BenchmarkId::new(format!("encap/{backend}/{key_bits}"), size),
            |b| {
                b.iter_custom(|iters| {
                    timed_in_chunks(
                        iters,
                        || vec![frame_with(&inner); CHUNK],
                        |frame| {
                            black_box(
                                esp::encapsulate(&outbound, frame, MAX_HEADROOM, size)
                                    .expect("encapsulates"),
                            );
                        },
                    )
                })
            },
        );

        let sender = OutboundSa::new(sa_config(Direction::Outbound, cipher, backend))
            .expect("valid outbound SA");
        let inbound = InboundSa::new(sa_config(Direction::Inbound, cipher, backend))
            .expect("valid inbound SA");
        group.bench_function(
            BenchmarkId::new(format!("decap/{backend}/{key_bits}"), size),
            |b| {
                b.iter_custom(|iters| {
                    timed_in_chunks(
                        iters,
                        || {
                            (0..CHUNK)
                                .map(|_| {
                                    let mut frame = frame_with(&inner);
                                    let out =
                                        esp::encapsulate(&sender, &mut frame, MAX_HEADROOM, size)
                                            .expect("encapsulates");
                                    // The ESP part: past the outer IPv4 header.
                                    frame[out.range.start + 20..out.range.end].to_vec()
                                })
                                .collect()
                        },
                        |esp_packet| {
                            black_box(
                                esp::decapsulate(&inbound, esp_packet).expect("decapsulates"),
                            );
                        },
                    )
                })
            },
        );

        let key = keying_material(cipher);
        let aead: Box<dyn Aead> = new_aead(backend, &key[..cipher.key_len()]).expect("valid key");
        let aad = [0u8; 8];
        let mut seq = 0u64;
        group.bench_function(
            BenchmarkId::new(format!("seal/{backend}/{key_bits}"), size),
            |b| {
                b.iter_custom(|iters| {
                    timed_in_chunks(
                        iters,
                        || vec![inner.clone(); CHUNK],
                        |plaintext| {
                            seq += 1;
                            black_box(
                                aead.seal_in_place(&nonce_for(seq), &aad, plaintext)
                                    .expect("seals"),
                            );
                        },
                    )
                })
            },
        );

        group.bench_function(
            BenchmarkId::new(format!("open/{backend}/{key_bits}"), size),
            |b| {
                b.iter_custom(|iters| {
                    timed_in_chunks(
                        iters,
                        || {
                            (0..CHUNK)
                                .map(|_| {
                                    seq += 1;
                                    let mut sealed = inner.clone();
                                    let tag = aead
                                        .seal_in_place(&nonce_for(seq), &aad, &mut sealed)
                                        .expect("seals");
                                    (seq, sealed, tag)
                                })
                                .collect()
                        },
                        |(seq, sealed, tag)| {
                            aead.open_in_place(&nonce_for(*seq), &aad, sealed, tag)
                                .expect("opens");
                            black_box(sealed);
                        },
                    )
                })
            },
        );
    }
    group.finish();
}

fn esp_core(c: &mut Criterion) {
    for &backend in Backend::available() {
        for cipher in [Cipher::AesGcm128, Cipher::AesGcm256] {
            bench_one(c, backend, cipher);
        }
    }
}

criterion_group!(benches, esp_core);
criterion_main!(benches);
