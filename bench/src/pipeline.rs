//! `xdpsec-bench pipeline`: the worker's whole per-packet path on frames in
//! memory, no kernel I/O (DPDK's testpmd on a null driver, in spirit).
//!
//! Outbound runs [`pipeline::outbound`] (parse, policy and SA lookup, MTU
//! and MSS, ESP seal, next hop, Ethernet header) on a LAN frame copied from
//! a template into the work buffer each time; inbound runs
//! [`pipeline::inbound`] (SPI lookup, replay check, open, replay update,
//! selectors, next hop) on the ESP frames the outbound produced, made off
//! the clock in chunks of [`CHUNK`] (each needs a sequence number the replay
//! window has not seen) and copied into the work buffer each time. The
//! copy is timed on its own over the same frames and subtracted. As in the
//! worker, the table snapshot is loaded and the clock read once per batch
//! of [`BATCH`] frames. Everything is in-memory tables built as
//! `pipeline_mtu_tests.rs` builds them: LAN on interface 2, WAN on 3, MTU
//! 1500, every neighbour resolved.
//!
//! Each stretch of packets is timed twice: on the wall clock (`Instant`)
//! and on this thread's CPU clock (`CLOCK_THREAD_CPUTIME_ID`), which does
//! not count the time the thread waits for a CPU that other work on the
//! machine holds. The report is in nanoseconds; `cargo xtask bench
//! pipeline` turns them into cycles at the nominal clock.

use crate::packet::{self, Flow, SizeSpec};
use anyhow::{bail, Context as _, Result};
use serde::Serialize;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Barrier;
use std::time::{Duration, Instant};
use xdpsec_api::{Direction, GcmKey, Policy, PolicyAction, SaSpec, TrafficSelector};
use xdpsec_dataplane::crypto::{new_aead, Backend, NONCE_LEN};
use xdpsec_dataplane::icmp::{RateLimit, SourceAddrs};
use xdpsec_dataplane::nexthop::{
    Hop, Interface, NeighbourKey, NeighbourState, NextHopTable, Resolver, Route, RouteTarget,
    TableBuilder,
};
use xdpsec_dataplane::pipeline::{self, Context, Local};
use xdpsec_dataplane::reassembly::{Reassembly, ReassemblyLimits};
use xdpsec_dataplane::stats::WorkerStatsCell;
use xdpsec_dataplane::tables::Tables;

const LAN: u32 = 2;
const WAN: u32 = 3;
const LINK_MTU: u32 = 1500;
/// The largest inner IPv4 packet the SA carries whole: the link MTU less
/// ESP's worst-case overhead (20 + 8 + 8 + 3 + 2 + 16). IMIX's 1500 is
/// capped to it.
pub const INNER_MTU: usize = LINK_MTU as usize - 57;
/// Frames per batch, as the worker's.
pub const BATCH: usize = 64;
/// Inbound ESP frames made (off the clock) per chunk.
pub const CHUNK: usize = 256;
const BUF: usize = 2048;
/// Where a LAN frame starts in its buffer: headroom for the outer headers.
const FRAME_AT: usize = 256;
const FIRST_SPI: u32 = 0x1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cipher {
    Aes128,
    Aes256,
    /// The data plane's benchmark-only null cipher (`--null-cipher-benchmark`).
    Null,
}

impl Cipher {
    pub fn name(self) -> &'static str {
        match self {
            Cipher::Aes128 => "aes128",
            Cipher::Aes256 => "aes256",
            Cipher::Null => "null",
        }
    }

    fn backend(self) -> Backend {
        match self {
            Cipher::Null => Backend::NullBenchmarkOnly,
            _ => *Backend::available().first().expect("a crypto backend"),
        }
    }

    fn key_len(self) -> usize {
        match self {
            Cipher::Aes256 => 32,
            _ => 16,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dir {
    Out,
    In,
}

/// One SA for every worker, or one each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Sharing {
    Shared,
    PerWorker,
}

/// What a bed holds: `sas` outbound SAs on gateway A (and their inbound
/// twins on gateway B), `policies` outbound policies; the packets of flow
/// `f` hit the last policies and SAs (a linear policy scan's worst case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Shape {
    pub cipher: Cipher,
    pub sas: usize,
    pub policies: usize,
    /// Distinct flows (one per worker with per-worker SAs, else 1).
    pub flows: usize,
}

/// The tables and next hops of both gateways (one `NextHopTable` serves
/// both: it has the WAN peer and the LAN hosts).
#[derive(Debug)]
pub struct Bed {
    shape: Shape,
    out_tables: Tables,
    in_tables: Tables,
    next_hops: NextHopTable,
    resolver: Resolver,
    sources: SourceAddrs,
    flows: Vec<Flow>,
}

fn prefix_of(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 100 + (i / 256) as u8, (i % 256) as u8, 0)
}

fn selector(local: &str, remote: &str) -> TrafficSelector {
    TrafficSelector {
        local: local.parse().expect("prefix"),
        remote: remote.parse().expect("prefix"),
        protocol: None,
        local_ports: None,
        remote_ports: None,
    }
}

/// SA `i` of a bed's gateway A (outbound) or B (inbound).
fn sa_spec(cipher: Cipher, i: usize, direction: Direction) -> Result<SaSpec> {
    let (local, remote, sel) = match direction {
        Direction::Out => (
            [198, 18, 0, 1],
            [198, 18, 0, 2],
            selector("10.1.0.0/24", "10.0.0.0/8"),
        ),
        Direction::In => (
            [198, 18, 0, 2],
            [198, 18, 0, 1],
            selector("10.0.0.0/8", "10.1.0.0/24"),
        ),
    };
    Ok(SaSpec {
        spi: FIRST_SPI + i as u32,
        direction,
        key: GcmKey::new(&vec![0x5au8; cipher.key_len()], [1, 2, 3, 4])?,
        esn: false,
        replay_window: REPLAY_WINDOW,
        tunnel_local: Ipv4Addr::from(local).into(),
        tunnel_remote: Ipv4Addr::from(remote).into(),
        encap: None,
        selectors: vec![sel],
        lifetime: Default::default(),
        initial_seq: None,
        resource: None,
    })
}

/// The inbound SAs' anti-replay window: the data plane's default.
const REPLAY_WINDOW: u32 = xdpsec_dataplane::replay::DEFAULT_WINDOW;

impl Bed {
    pub fn new(shape: Shape) -> Result<Bed> {
        let sas = shape.sas.max(shape.flows);
        let policies = shape.policies.max(shape.flows);
        if policies > 256 * 100 {
            bail!("at most 25600 policies");
        }
        let spec = |i: usize, direction: Direction| sa_spec(shape.cipher, i, direction);
        // Flow f goes to the last `flows` policies, each protecting with
        // one of the last `flows` SAs; the others share the SAs round robin.
        let flow_spi = |f: usize| FIRST_SPI + (sas - shape.flows + f) as u32;
        let policy = |i: usize| -> Result<Policy> {
            let spi = match i.checked_sub(policies - shape.flows) {
                Some(f) => flow_spi(f),
                None => FIRST_SPI + (i % sas) as u32,
            };
            Ok(Policy {
                local: "10.1.0.0/24".parse()?,
                remote: format!("{}/24", prefix_of(i)).parse()?,
                direction: Direction::Out,
                action: PolicyAction::Protect,
                spi: Some(spi),
            })
        };
        let out_tables = Tables::new(shape.cipher.backend());
        let in_tables = Tables::new(shape.cipher.backend());
        let out_specs = (0..sas)
            .map(|i| spec(i, Direction::Out))
            .collect::<Result<Vec<_>>>()?;
        let in_specs = (0..sas)
            .map(|i| spec(i, Direction::In))
            .collect::<Result<Vec<_>>>()?;
        let policy_list = (0..policies).map(policy).collect::<Result<Vec<_>>>()?;
        out_tables.add_bulk(&out_specs, &policy_list)?;
        in_tables.add_bulk(&in_specs, &[])?;

        let flows: Vec<Flow> = (0..shape.flows)
            .map(|f| {
                let p = prefix_of(policies - shape.flows + f).octets();
                Flow {
                    src_mac: [2, 0, 0, 0, 1, 2],
                    dst_mac: [2, 0, 0, 0, 0, LAN as u8],
                    src: Ipv4Addr::new(10, 1, 0, 2),
                    dst: Ipv4Addr::new(p[0], p[1], p[2], 2),
                    src_port: 10_000,
                    dst_port: 9,
                }
            })
            .collect();
        let mut b = TableBuilder::new();
        for (ifindex, name) in [(LAN, "lan0"), (WAN, "wan0")] {
            b.interface(Interface {
                ifindex,
                name: name.into(),
                mac: Some([2, 0, 0, 0, 0, ifindex as u8]),
                mtu: LINK_MTU,
                up: true,
            });
        }
        for (dst, len, ifindex) in [("10.0.0.0", 8, LAN), ("198.18.0.0", 30, WAN)] {
            b.route(Route {
                dst: dst.parse()?,
                prefix_len: len,
                metric: 0,
                mtu: None,
                target: RouteTarget::Hops(vec![Hop {
                    ifindex,
                    gateway: None,
                }]),
            });
        }
        let mut neighbours: Vec<(u32, IpAddr)> = vec![
            (WAN, Ipv4Addr::new(198, 18, 0, 1).into()),
            (WAN, Ipv4Addr::new(198, 18, 0, 2).into()),
        ];
        neighbours.extend(flows.iter().map(|f| (LAN, IpAddr::V4(f.dst))));
        for (ifindex, addr) in neighbours {
            b.neighbour(
                NeighbourKey { ifindex, addr },
                NeighbourState::Usable([2, 0, 0, 0, 9, 9]),
            );
        }
        Ok(Bed {
            shape,
            out_tables,
            in_tables,
            next_hops: b.build(1),
            resolver: Resolver::detached(),
            sources: SourceAddrs::new([(LAN, Ipv4Addr::new(10, 1, 0, 1).into())]),
            flows,
        })
    }

    fn context<'a>(
        &'a self,
        snapshot: &'a xdpsec_dataplane::tables::Snapshot,
        events: &'a WorkerStatsCell,
    ) -> Context<'a> {
        Context {
            tables: snapshot,
            next_hops: &self.next_hops,
            resolver: &self.resolver,
            now: Instant::now(),
            mss_clamp: true,
            outer_fragmentation: true,
            pmtu_hold: Duration::from_secs(600),
            sources: &self.sources,
            events,
            memo: Default::default(),
            tunnel: None,
        }
    }
}

/// This thread's CPU time.
fn thread_cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(
        Duration::ZERO,
        |ts| {
            Duration::new(
                u64::try_from(ts.tv_sec()).unwrap_or(0),
                u32::try_from(ts.tv_nsec()).unwrap_or(0),
            )
        },
    )
}

/// Wall and thread CPU time of a stretch of work.
#[derive(Debug, Clone, Copy, Default)]
struct Spent {
    wall: Duration,
    cpu: Duration,
}

impl std::ops::AddAssign for Spent {
    fn add_assign(&mut self, other: Spent) {
        self.wall += other.wall;
        self.cpu += other.cpu;
    }
}

#[derive(Debug, Clone, Copy)]
struct Stopwatch {
    wall: Instant,
    cpu: Duration,
}

impl Stopwatch {
    fn start() -> Stopwatch {
        Stopwatch {
            wall: Instant::now(),
            cpu: thread_cpu(),
        }
    }

    fn stop(&self) -> Spent {
        Spent {
            cpu: thread_cpu().saturating_sub(self.cpu),
            wall: self.wall.elapsed(),
        }
    }
}

fn local() -> Local {
    Local {
        worker: 0,
        icmp_limit: RateLimit::new(10, Instant::now()),
        reassembly: Reassembly::new(ReassemblyLimits {
            slots: 64,
            max_datagram: 9000,
            timeout: Duration::from_secs(1),
        }),
    }
}

/// One worker's view: its flow's templates (one per size of the cycle),
/// its own counters, reassembly table and buffers.
struct Lane<'a> {
    bed: &'a Bed,
    templates: Vec<Vec<u8>>,
    events: WorkerStatsCell,
    local: Local,
    buf: Vec<u8>,
}

impl<'a> Lane<'a> {
    fn new(bed: &'a Bed, worker: usize, sizes: &[usize]) -> Lane<'a> {
        let flow = &bed.flows[worker % bed.flows.len()];
        Lane {
            bed,
            templates: sizes
                .iter()
                .map(|&n| packet::template(flow, worker as u16, n))
                .collect(),
            events: WorkerStatsCell::new(worker as u32, None),
            local: local(),
            buf: vec![0u8; BUF],
        }
    }

    /// Time of `packets` outbound frames (copy included); fails on any drop.
    fn outbound(&mut self, packets: usize) -> Result<Spent> {
        let bed = self.bed;
        let mut next = 0;
        let started = Stopwatch::start();
        let mut done = 0;
        while done < packets {
            let snapshot = bed.out_tables.load();
            let ctx = bed.context(&snapshot, &self.events);
            for _ in 0..BATCH {
                let t = &self.templates[next];
                next = (next + 1) % self.templates.len();
                self.buf[FRAME_AT..FRAME_AT + t.len()].copy_from_slice(t);
                match pipeline::outbound(&ctx, &mut self.local, &mut self.buf, FRAME_AT, t.len()) {
                    Ok((tx, _)) if tx.ifindex == WAN && tx.fragments.is_none() => {
                        black_box(tx.range.start);
                    }
                    Ok((tx, _)) => bail!("outbound went to interface {} instead", tx.ifindex),
                    Err(e) => bail!("outbound dropped: {}", e.as_str()),
                }
            }
            done += BATCH;
        }
        Ok(started.stop())
    }

    /// Time of the template copies alone, as [`Lane::outbound`] does them.
    fn copies(&mut self, packets: usize) -> Spent {
        let mut next = 0;
        let started = Stopwatch::start();
        for _ in 0..packets {
            let t = &self.templates[next];
            next = (next + 1) % self.templates.len();
            self.buf[FRAME_AT..FRAME_AT + t.len()].copy_from_slice(t);
            black_box(&mut self.buf);
        }
        started.stop()
    }

    /// Time of inbound frames and of their copies alone, and how many:
    /// `packets` rounded up to whole chunks. The ESP frames come from
    /// gateway A's outbound path, [`CHUNK`] at a time, off the clock.
    fn inbound(&mut self, packets: usize) -> Result<(Spent, Spent, usize)> {
        let bed = self.bed;
        let mut chunk = vec![0u8; CHUNK * BUF];
        let mut frames = Vec::with_capacity(CHUNK);
        let (mut on_clock, mut copying) = (Spent::default(), Spent::default());
        let mut next = 0;
        let mut done = 0;
        while done < packets {
            frames.clear();
            let snapshot = bed.out_tables.load();
            let ctx = bed.context(&snapshot, &self.events);
            for slot in chunk.chunks_exact_mut(BUF) {
                let t = &self.templates[next];
                next = (next + 1) % self.templates.len();
                slot[FRAME_AT..FRAME_AT + t.len()].copy_from_slice(t);
                let (tx, _) = pipeline::outbound(&ctx, &mut self.local, slot, FRAME_AT, t.len())
                    .map_err(|e| anyhow::anyhow!("making ESP: {}", e.as_str()))?;
                frames.push(tx.range);
            }
            drop(ctx);
            drop(snapshot);
            let started = Stopwatch::start();
            for (b, batch) in frames.chunks(BATCH).enumerate() {
                let snapshot = bed.in_tables.load();
                let ctx = bed.context(&snapshot, &self.events);
                for (i, range) in batch.iter().enumerate() {
                    let k = b * BATCH + i;
                    let from = &chunk[k * BUF..(k + 1) * BUF];
                    self.buf[range.clone()].copy_from_slice(&from[range.clone()]);
                    match pipeline::inbound(
                        &ctx,
                        &mut self.local,
                        &mut self.buf,
                        range.start,
                        range.len(),
                    ) {
                        Ok(Some((tx, _))) if tx.ifindex == LAN => {
                            black_box(tx.range.start);
                        }
                        Ok(Some((tx, _))) => {
                            bail!("inbound went to interface {} instead", tx.ifindex)
                        }
                        Ok(None) => bail!("inbound kept a frame"),
                        Err(e) => bail!("inbound dropped: {}", e.as_str()),
                    }
                }
                done += batch.len();
            }
            on_clock += started.stop();
            let started = Stopwatch::start();
            for (k, range) in frames.iter().enumerate() {
                let from = &chunk[k * BUF..(k + 1) * BUF];
                self.buf[range.clone()].copy_from_slice(&from[range.clone()]);
                black_box(&mut self.buf);
            }
            copying += started.stop();
        }
        Ok((on_clock, copying, done))
    }
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// How well two workers scale: their packets per second over twice one
/// worker's (1.0: perfectly).
pub fn scaling(one_worker_pps: f64, two_worker_pps: f64) -> f64 {
    two_worker_pps / (2.0 * one_worker_pps)
}

/// Packets per round for a cell whose packet takes `ns_per_packet`: what
/// fits in `round`, between `min` and `max`, in whole batches.
pub fn packets_per_round(ns_per_packet: f64, round: Duration, min: usize, max: usize) -> usize {
    let fit = round.as_secs_f64() * 1e9 / ns_per_packet.max(1e-3);
    let n = (fit as usize).clamp(min, max);
    n.div_ceil(BATCH) * BATCH
}

/// The sizes a cell cycles through.
pub fn size_cycle(size: SizeSpec) -> Vec<usize> {
    size.cycle(INNER_MTU)
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_packets: usize,
    pub min_packets: usize,
    pub rounds: usize,
    pub round: Duration,
}

#[derive(Debug, Serialize)]
pub struct CellResult {
    pub dir: Dir,
    /// `64`, `1400`, `imix`.
    pub size: String,
    pub cipher: Cipher,
    pub sas: usize,
    pub policies: usize,
    pub packets_per_round: usize,
    pub rounds: usize,
    /// Thread CPU time: median over rounds, the frame copy included.
    pub ns_per_packet_with_copy: f64,
    /// Thread CPU time: median over rounds of the copy alone.
    pub copy_ns_per_packet: f64,
    /// `ns_per_packet_with_copy - copy_ns_per_packet`.
    pub ns_per_packet: f64,
    /// The same on the wall clock (copy subtracted, median).
    pub wall_ns_per_packet: f64,
    /// The cipher's raw seal of the same inner sizes (thread CPU time,
    /// median over rounds).
    pub raw_aead_ns: f64,
    /// Thread CPU time per round, copy subtracted.
    pub round_ns_per_packet: Vec<f64>,
}

#[derive(Debug, Serialize)]
pub struct ScalingResult {
    pub dir: Dir,
    pub size: String,
    pub cipher: Cipher,
    pub sharing: Sharing,
    pub packets_per_worker: usize,
    pub rounds: usize,
    /// Medians over rounds, wall clock; a round's 2-worker rate is both
    /// workers' packets over the slower one's time.
    pub one_worker_pps: f64,
    pub two_worker_pps: f64,
    pub scaling: f64,
    /// The same with each worker's packets over its own thread CPU time
    /// (summed over workers): what contention costs, without the time a
    /// worker waited for a CPU.
    pub one_worker_cpu_pps: f64,
    pub two_worker_cpu_pps: f64,
    pub scaling_cpu: f64,
    /// Both workers' CPU time over the slower one's wall time (median): 2
    /// when they ran side by side all along, 1 when they took turns on
    /// one CPU (other work held the other), when neither scaling means much.
    pub parallelism: f64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub backend: String,
    pub batch: usize,
    pub chunk: usize,
    pub inner_mtu: usize,
    pub cells: Vec<CellResult>,
    pub scaling: Vec<ScalingResult>,
    pub capacity: Vec<CapacityResult>,
}

/// What installing many SAs of one direction took: time, and memory per SA.
#[derive(Debug, Serialize)]
pub struct CapacityResult {
    pub sas: usize,
    /// `out` or `in`.
    pub dir: &'static str,
    /// Seconds to build and install them in one step (`Tables::add_bulk`).
    pub install_s: f64,
    /// Heap bytes the tables hold per SA: SA state (an inbound SA's replay
    /// ring included), counters, table entries, as the binary's allocator
    /// counts them (zero when it does not count; `xdpsec-bench` counts).
    pub rust_heap_per_sa: f64,
    /// What the crypto library allocates for a key outside Rust's
    /// allocator (aws-lc's context), from the resident size.
    pub key_context_per_sa: f64,
    /// The two together: the data plane's memory per SA.
    pub bytes_per_sa: f64,
}

/// Installs `sas` SAs of `direction` in fresh tables in one step: how long
/// it took and what they hold.
fn install_many(
    cipher: Cipher,
    sas: usize,
    direction: Direction,
    key_context: f64,
) -> Result<CapacityResult> {
    let specs = (0..sas)
        .map(|i| sa_spec(cipher, i, direction))
        .collect::<Result<Vec<_>>>()?;
    let heap = stats_alloc::Region::new(&stats_alloc::INSTRUMENTED_SYSTEM);
    let started = Instant::now();
    let tables = Tables::new(cipher.backend());
    tables.add_bulk(&specs, &[])?;
    let install_s = started.elapsed().as_secs_f64();
    let change = heap.change();
    let rust_heap_per_sa =
        (change.bytes_allocated as f64 - change.bytes_deallocated as f64) / sas as f64;
    drop(tables);
    let row = CapacityResult {
        sas,
        dir: direction.as_str(),
        install_s,
        rust_heap_per_sa,
        key_context_per_sa: key_context,
        bytes_per_sa: rust_heap_per_sa + key_context,
    };
    eprintln!(
        "  capacity dir={} sas={sas}: installed in {install_s:.2} s, {:.0} bytes per SA \
         ({rust_heap_per_sa:.0} Rust heap, {key_context:.0} the crypto library's key context)",
        row.dir, row.bytes_per_sa
    );
    Ok(row)
}

/// Keys made to measure [`aead_context_bytes`]: enough pages that the
/// resident size moves by their memory, not by chance.
const KEY_PROBE: usize = 20_000;

/// Bytes per key that the crypto library allocates outside Rust's
/// allocator: the process's resident growth while [`KEY_PROBE`] keys are
/// made, less what the Rust allocator counted of it.
fn aead_context_bytes(cipher: Cipher) -> Result<f64> {
    let resident = || -> Result<f64> {
        let statm = std::fs::read_to_string("/proc/self/statm")?;
        let pages: f64 = statm
            .split_whitespace()
            .nth(1)
            .context("/proc/self/statm")?
            .parse()?;
        Ok(pages * 4096.0)
    };
    let heap = stats_alloc::Region::new(&stats_alloc::INSTRUMENTED_SYSTEM);
    let before = resident()?;
    let keys = (0..KEY_PROBE)
        .map(|i| new_aead(cipher.backend(), &vec![i as u8; cipher.key_len()]))
        .collect::<Result<Vec<_>, _>>()?;
    let grown = resident()? - before;
    let counted = heap.change().bytes_allocated as f64 - heap.change().bytes_deallocated as f64;
    drop(keys);
    Ok(((grown - counted) / KEY_PROBE as f64).max(0.0))
}

/// The raw seal of `sizes` (cycled) with `cipher`'s backend and key size,
/// ns per seal.
fn raw_aead_ns(cipher: Cipher, sizes: &[usize], packets: usize) -> Result<f64> {
    let aead = new_aead(cipher.backend(), &vec![0x5au8; cipher.key_len()])?;
    let mut buf = vec![0xabu8; BUF];
    let aad = [0u8; 8];
    let mut nonce = [0u8; NONCE_LEN];
    let started = Stopwatch::start();
    for i in 0..packets {
        nonce[4..].copy_from_slice(&(i as u64).to_be_bytes());
        let n = sizes[i % sizes.len()];
        black_box(aead.seal_in_place(&nonce, &aad, &mut buf[..n])?);
    }
    Ok(started.stop().cpu.as_secs_f64() * 1e9 / packets as f64)
}

fn per_packet(d: Duration, packets: usize) -> f64 {
    d.as_secs_f64() * 1e9 / packets as f64
}

/// One single-worker measurement in progress: its lane, its round size
/// and what each round gave.
struct CellRun<'a> {
    dir: Dir,
    size: SizeSpec,
    sizes: Vec<usize>,
    lane: Lane<'a>,
    packets: usize,
    with_copy: Vec<f64>,
    copy: Vec<f64>,
    wall: Vec<f64>,
    raw: Vec<f64>,
}

impl<'a> CellRun<'a> {
    /// A lane on `bed`, warmed up; the round size from the warm-up.
    fn new(bed: &'a Bed, dir: Dir, size: SizeSpec, limits: Limits) -> Result<CellRun<'a>> {
        let sizes = size_cycle(size);
        let mut run = CellRun {
            dir,
            size,
            lane: Lane::new(bed, 0, &sizes),
            sizes,
            packets: CHUNK * 4,
            with_copy: Vec::new(),
            copy: Vec::new(),
            wall: Vec::new(),
            raw: Vec::new(),
        };
        let (warm, _, done) = run.run(CHUNK * 4)?;
        run.packets = packets_per_round(
            per_packet(warm.wall, done),
            limits.round,
            limits.min_packets,
            limits.max_packets,
        );
        Ok(run)
    }

    /// (pipeline, copies alone, packets)
    fn run(&mut self, n: usize) -> Result<(Spent, Spent, usize)> {
        Ok(match self.dir {
            Dir::Out => (self.lane.outbound(n)?, self.lane.copies(n), n),
            Dir::In => self.lane.inbound(n)?,
        })
    }

    /// One round, and the raw AEAD right after it.
    fn round(&mut self) -> Result<()> {
        let (t, c, done) = self.run(self.packets)?;
        self.with_copy.push(per_packet(t.cpu, done));
        self.copy.push(per_packet(c.cpu, done));
        self.wall
            .push(per_packet(t.wall, done) - per_packet(c.wall, done));
        let cipher = self.lane.bed.shape.cipher;
        self.raw
            .push(raw_aead_ns(cipher, &self.sizes, self.packets.min(100_000))?);
        Ok(())
    }

    fn result(&self) -> CellResult {
        let shape = self.lane.bed.shape;
        let (with_copy, copy) = (median(&self.with_copy), median(&self.copy));
        CellResult {
            dir: self.dir,
            size: self.size.label(),
            cipher: shape.cipher,
            sas: shape.sas,
            policies: shape.policies,
            packets_per_round: self.packets,
            rounds: self.with_copy.len(),
            ns_per_packet_with_copy: with_copy,
            copy_ns_per_packet: copy,
            ns_per_packet: with_copy - copy,
            wall_ns_per_packet: median(&self.wall),
            raw_aead_ns: median(&self.raw),
            round_ns_per_packet: self
                .with_copy
                .iter()
                .zip(&self.copy)
                .map(|(t, c)| t - c)
                .collect(),
        }
    }
}

/// Measures cells on one worker, round by round across all of them (round
/// 1 of every cell, then round 2, ...), so a stretch of time when other
/// work slows the machine spreads over the cells instead of landing on one.
pub fn cells(cells: &[(&Bed, Dir, SizeSpec)], limits: Limits) -> Result<Vec<CellResult>> {
    let mut runs = cells
        .iter()
        .map(|&(bed, dir, size)| CellRun::new(bed, dir, size, limits))
        .collect::<Result<Vec<_>>>()?;
    for round in 0..limits.rounds {
        for run in &mut runs {
            run.round()?;
        }
        eprintln!("  round {} of {} done", round + 1, limits.rounds);
    }
    Ok(runs.iter().map(CellRun::result).collect())
}

/// Measures one cell on one worker.
pub fn cell(bed: &Bed, dir: Dir, size: SizeSpec, limits: Limits) -> Result<CellResult> {
    let mut results = cells(&[(bed, dir, size)], limits)?;
    results.pop().context("one cell")
}

/// One 1-worker/2-worker comparison in progress.
struct ScalingRun<'a> {
    size: SizeSpec,
    lanes: Vec<Lane<'a>>,
    packets: usize,
    one: Vec<f64>,
    two: Vec<f64>,
    one_cpu: Vec<f64>,
    two_cpu: Vec<f64>,
    parallelism: Vec<f64>,
}

/// Pins the calling thread to CPU `cpu` (as the data plane pins its
/// workers); false if it could not.
fn pin(cpu: usize) -> bool {
    core_affinity::set_for_current(core_affinity::CoreId { id: cpu })
}

impl<'a> ScalingRun<'a> {
    fn new(bed: &'a Bed, size: SizeSpec, limits: Limits) -> Result<ScalingRun<'a>> {
        let sizes = size_cycle(size);
        let mut lanes: Vec<Lane> = (0..2).map(|w| Lane::new(bed, w, &sizes)).collect();
        let warm = per_packet(lanes[0].outbound(CHUNK * 4)?.wall, CHUNK * 4);
        lanes[1].outbound(CHUNK * 4)?;
        Ok(ScalingRun {
            size,
            lanes,
            packets: packets_per_round(warm, limits.round, limits.min_packets, limits.max_packets),
            one: Vec::new(),
            two: Vec::new(),
            one_cpu: Vec::new(),
            two_cpu: Vec::new(),
            parallelism: Vec::new(),
        })
    }

    /// Worker 0 alone, then both at once (released together by a
    /// barrier), each worker pinned to its own CPU (worker w to CPU w).
    fn round(&mut self) -> Result<()> {
        let n = self.packets;
        let lane0 = &mut self.lanes[0];
        let t = std::thread::scope(|s| {
            s.spawn(|| {
                pin(0);
                lane0.outbound(n)
            })
            .join()
            .expect("the worker thread panicked")
        })?;
        self.one.push(n as f64 / t.wall.as_secs_f64());
        self.one_cpu.push(n as f64 / t.cpu.as_secs_f64());
        let barrier = Barrier::new(self.lanes.len());
        let times = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .lanes
                .iter_mut()
                .enumerate()
                .map(|(w, lane)| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        pin(w);
                        barrier.wait();
                        lane.outbound(n)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a worker thread panicked"))
                .collect::<Result<Vec<_>>>()
        })?;
        let slowest = times.iter().map(|t| t.wall).max().context("two times")?;
        self.two
            .push(times.len() as f64 * n as f64 / slowest.as_secs_f64());
        self.two_cpu
            .push(times.iter().map(|t| n as f64 / t.cpu.as_secs_f64()).sum());
        let on_cpu: f64 = times.iter().map(|t| t.cpu.as_secs_f64()).sum();
        self.parallelism.push(on_cpu / slowest.as_secs_f64());
        Ok(())
    }

    fn result(&self) -> ScalingResult {
        let shape = self.lanes[0].bed.shape;
        let (one, two) = (median(&self.one), median(&self.two));
        let (one_cpu, two_cpu) = (median(&self.one_cpu), median(&self.two_cpu));
        ScalingResult {
            dir: Dir::Out,
            size: self.size.label(),
            cipher: shape.cipher,
            sharing: if shape.flows == 1 {
                Sharing::Shared
            } else {
                Sharing::PerWorker
            },
            packets_per_worker: self.packets,
            rounds: self.one.len(),
            one_worker_pps: one,
            two_worker_pps: two,
            scaling: scaling(one, two),
            one_worker_cpu_pps: one_cpu,
            two_worker_cpu_pps: two_cpu,
            scaling_cpu: scaling(one_cpu, two_cpu),
            parallelism: median(&self.parallelism),
        }
    }
}

/// Outbound with one and with two workers (threads, each with its own
/// frames and counters) on each bed and size (a bed with one flow: a
/// shared SA; two: per-worker SAs), rounds interleaved across them.
pub fn two_workers_each(cases: &[(&Bed, SizeSpec)], limits: Limits) -> Result<Vec<ScalingResult>> {
    let mut runs = cases
        .iter()
        .map(|&(bed, size)| ScalingRun::new(bed, size, limits))
        .collect::<Result<Vec<_>>>()?;
    for _ in 0..limits.rounds {
        for run in &mut runs {
            run.round()?;
        }
    }
    Ok(runs.iter().map(ScalingRun::result).collect())
}

/// [`two_workers_each`] for one bed and size.
pub fn two_workers(bed: &Bed, size: SizeSpec, limits: Limits) -> Result<ScalingResult> {
    let mut results = two_workers_each(&[(bed, size)], limits)?;
    results.pop().context("one comparison")
}

/// The whole matrix (see `cargo xtask bench pipeline`); progress on stderr.
/// A cell's name as the summary lines print it, which `--only` matches.
fn cell_label(shape: Shape, dir: Dir, size: SizeSpec) -> String {
    let dir = match dir {
        Dir::Out => "out",
        Dir::In => "in",
    };
    format!(
        "dir={dir} size={} cipher={} sas={} policies={}",
        size.label(),
        shape.cipher.name(),
        shape.sas,
        shape.policies
    )
}

/// Whether a cell named `label` is one of those `only` asks for: every
/// `key=value` of `only` is one of the label's. An empty `only` asks for all.
fn selected(label: &str, only: &[String]) -> bool {
    only.iter()
        .all(|want| label.split(' ').any(|have| have == want))
}

/// The whole matrix, or with `only` (`dir=out`, `size=64`, ...) the cells
/// that match it and no two-worker runs: for profiling one path.
pub fn run(limits: Limits, only: &[String]) -> Result<Report> {
    let sizes = [
        SizeSpec::Fixed(64),
        SizeSpec::Fixed(512),
        SizeSpec::Fixed(1400),
        SizeSpec::Imix,
    ];
    let sweep_sizes = [SizeSpec::Fixed(1400), SizeSpec::Fixed(64)];
    let shape = |cipher, sas, policies| Shape {
        cipher,
        sas,
        policies,
        flows: 1,
    };
    let mut shapes: Vec<Shape> = [Cipher::Aes128, Cipher::Aes256, Cipher::Null]
        .into_iter()
        .map(|cipher| shape(cipher, 1, 1))
        .collect();
    shapes.extend([1000, 100_000].map(|sas| shape(Cipher::Aes128, sas, 1)));
    shapes.extend([1000, 10_000].map(|policies| shape(Cipher::Aes128, 1, policies)));
    let mut wanted: Vec<(Shape, Vec<(Dir, SizeSpec)>)> = Vec::new();
    for shape in shapes {
        let (many_sas, many_policies) = (shape.sas > 1, shape.policies > 1);
        let dirs: &[Dir] = if many_policies {
            // Inbound does not look at policies.
            &[Dir::Out]
        } else {
            &[Dir::Out, Dir::In]
        };
        let cell_sizes: &[SizeSpec] = if many_sas || many_policies {
            &sweep_sizes
        } else {
            &sizes
        };
        let cells: Vec<(Dir, SizeSpec)> = dirs
            .iter()
            .flat_map(|&dir| cell_sizes.iter().map(move |&size| (dir, size)))
            .filter(|&(dir, size)| selected(&cell_label(shape, dir, size), only))
            .collect();
        if !cells.is_empty() {
            wanted.push((shape, cells));
        }
    }
    // First, while the heap is fresh: freed memory that later keys could
    // reuse would hide their growth of the resident size.
    let mut key_contexts = std::collections::HashMap::new();
    for (shape, _) in wanted.iter().filter(|(shape, _)| shape.sas > 1) {
        if let std::collections::hash_map::Entry::Vacant(slot) =
            key_contexts.entry(shape.cipher.name())
        {
            slot.insert(aead_context_bytes(shape.cipher)?);
        }
    }
    let mut beds = Vec::new();
    let mut capacity = Vec::new();
    for (shape, _) in &wanted {
        beds.push(Bed::new(*shape)?);
        if shape.sas > 1 {
            let key_context = key_contexts[&shape.cipher.name()];
            for direction in [Direction::Out, Direction::In] {
                capacity.push(install_many(
                    shape.cipher,
                    shape.sas,
                    direction,
                    key_context,
                )?);
            }
        }
    }
    let plan: Vec<(&Bed, Dir, SizeSpec)> = beds
        .iter()
        .zip(&wanted)
        .flat_map(|(bed, (_, cells))| cells.iter().map(move |&(dir, size)| (bed, dir, size)))
        .collect();
    eprintln!(
        "  {} cells, {} rounds each, interleaved",
        plan.len(),
        limits.rounds
    );
    let cells = cells(&plan, limits)?;
    for c in &cells {
        eprintln!(
            "  dir={:?} size={} cipher={} sas={} policies={}: {:.0} ns/packet on CPU ({:.0} wall, copy {:.0}), raw AEAD {:.0} ns",
            c.dir, c.size, c.cipher.name(), c.sas, c.policies, c.ns_per_packet, c.wall_ns_per_packet, c.copy_ns_per_packet, c.raw_aead_ns
        );
    }
    drop(plan);
    drop(beds);
    if !only.is_empty() {
        return Ok(Report {
            backend: Cipher::Aes128.backend().name().to_owned(),
            batch: BATCH,
            chunk: CHUNK,
            inner_mtu: INNER_MTU,
            cells,
            scaling: Vec::new(),
            capacity,
        });
    }
    let beds = [1, 2]
        .into_iter()
        .map(|flows| {
            Bed::new(Shape {
                cipher: Cipher::Aes128,
                sas: 1,
                policies: 1,
                flows,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let cases: Vec<(&Bed, SizeSpec)> = beds
        .iter()
        .flat_map(|bed| sweep_sizes.map(|size| (bed, size)))
        .collect();
    let scalings = two_workers_each(&cases, limits)?;
    for s in &scalings {
        eprintln!(
            "  out size={} sas={:?}: 1 worker {:.0} pps, 2 workers {:.0} pps, scaling {:.2} (on CPU time {:.2}), parallelism {:.2}",
            s.size, s.sharing, s.one_worker_pps, s.two_worker_pps, s.scaling, s.scaling_cpu, s.parallelism
        );
    }
    Ok(Report {
        backend: Cipher::Aes128.backend().name().to_owned(),
        batch: BATCH,
        chunk: CHUNK,
        inner_mtu: INNER_MTU,
        cells,
        scaling: scalings,
        capacity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn scaling_is_two_workers_over_twice_one() {
        assert_eq!(scaling(1e6, 2e6), 1.0);
        assert_eq!(scaling(1e6, 1e6), 0.5);
        assert!((scaling(3e6, 4.5e6) - 0.75).abs() < 1e-12);
    }

    #[test]
    fn rounds_are_whole_batches_within_bounds() {
        let round = Duration::from_millis(100);
        // 1000 ns a packet: 100 000 fit, capped at 50 000.
        assert_eq!(packets_per_round(1000.0, round, 1000, 50_000), 50_048);
        assert_eq!(packets_per_round(1e9, round, 1000, 50_000), 1024);
        assert_eq!(packets_per_round(2000.0, round, 1000, 1_000_000) % BATCH, 0);
    }

    #[test]
    fn imix_fits_the_tunnel_whole() {
        let c = size_cycle(SizeSpec::Imix);
        assert_eq!(c.len(), 12);
        assert_eq!(c.iter().filter(|&&n| n == 64).count(), 7);
        assert_eq!(c.iter().filter(|&&n| n == 576).count(), 4);
        assert_eq!(c.iter().filter(|&&n| n == INNER_MTU).count(), 1);
    }

    /// `Tables::add_bulk`, which the big beds are installed with, is all
    /// or nothing.
    #[test]
    fn bulk_install_is_all_or_nothing() {
        let bed = Bed::new(Shape {
            cipher: Cipher::Aes128,
            sas: 3,
            policies: 2,
            flows: 1,
        })
        .unwrap();
        let snapshot = bed.out_tables.load();
        assert_eq!(snapshot.sa_infos().len(), 3);
        assert_eq!(bed.out_tables.policies().len(), 2);
        drop(snapshot);
        let tables = Tables::new(Cipher::Aes128.backend());
        assert!(bed.out_tables.load().outbound_sa(FIRST_SPI).is_some());
        // A duplicate SPI in the batch: nothing goes in.
        let policies = bed.out_tables.policies();
        let one = |spi: u32| SaSpec {
            spi,
            direction: Direction::Out,
            key: GcmKey::new(&[1; 16], [0; 4]).unwrap(),
            esn: false,
            replay_window: 64,
            tunnel_local: Ipv4Addr::new(198, 18, 0, 1).into(),
            tunnel_remote: Ipv4Addr::new(198, 18, 0, 2).into(),
            encap: None,
            selectors: vec![selector("10.1.0.0/24", "10.0.0.0/8")],
            lifetime: Default::default(),
            initial_seq: None,
            resource: None,
        };
        assert!(tables
            .add_bulk(&[one(0x101), one(0x102), one(0x101)], &[])
            .is_err());
        assert!(tables.load().sa_infos().is_empty());
        // A duplicate policy: nothing goes in either.
        let twice = [policies[0].clone(), policies[0].clone()];
        assert!(tables.add_bulk(&[one(0x101)], &twice).is_err());
        assert!(tables.load().sa_infos().is_empty() && tables.policies().is_empty());
        tables
            .add_bulk(&[one(0x101), one(0x102)], &policies[..1])
            .unwrap();
        assert!(tables.load().outbound_sa(0x102).is_some());
        assert_eq!(tables.policies().len(), 1);
    }

    /// Every kind of cell runs without a drop, on a tiny budget.
    #[test]
    fn every_path_runs_clean() {
        let limits = Limits {
            max_packets: 512,
            min_packets: 256,
            rounds: 1,
            round: Duration::from_millis(1),
        };
        for (cipher, sas, policies, flows) in [
            (Cipher::Aes128, 1, 1, 1),
            (Cipher::Null, 3, 5, 1),
            (Cipher::Aes256, 4, 2, 2),
        ] {
            let bed = Bed::new(Shape {
                cipher,
                sas,
                policies,
                flows,
            })
            .unwrap();
            for dir in [Dir::Out, Dir::In] {
                let c = cell(&bed, dir, SizeSpec::Imix, limits).unwrap();
                assert!(c.ns_per_packet_with_copy > 0.0);
            }
            let s = two_workers(&bed, SizeSpec::Fixed(64), limits).unwrap();
            assert!(s.scaling > 0.0);
        }
    }
}
