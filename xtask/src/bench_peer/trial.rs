//! One trial: the sink on host B, the generator on host A, for a bounded
//! time at a set rate (or flat out), with the gateways' CPU time sampled
//! around it; and the search for the highest loss-free rate.

use crate::procfs::{busy_cpus_since, machine_ticks, process_cpu, thread_cpu};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::Value;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};
use xdpsec_testbed::tunnel::{Side, TunnelBed};
use xdpsec_testbed::{format_mac, NsChild};

/// The sink's address on host B (beside host B's own 10.2.0.2, so pings
/// and iperf3 to host B never reach the sink).
pub const SINK_ADDR: Ipv4Addr = Ipv4Addr::new(10, 2, 0, 3);
/// The tunnel's inner MTU: IMIX's 1500-byte member is capped to it.
pub const PATH_MTU: usize = xdpsec_testbed::tunnel::BENCH_LAN_MTU as usize;

/// What stays the same across the trials of one tunnel.
#[derive(Debug)]
pub struct Rig<'a> {
    pub bed: &'a TunnelBed,
    pub bench_bin: &'a Path,
    pub queues: u32,
    pub trial: Duration,
    pub cpu_mhz: f64,
}

/// CPU a gateway used during a trial.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct GatewayCpu {
    /// CPU seconds per second of the trial, whole process (1.0 = a core).
    pub cpu_share: f64,
    /// The same for the data plane's worker threads only (charon: the
    /// whole process).
    pub worker_cpu_share: f64,
    /// Worker CPU time at the nominal clock per packet delivered.
    pub cycles_per_packet: f64,
}

/// The outcome of one trial.
#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    /// Packets per second asked of the generator (`None`: flat out).
    pub offered_pps: Option<f64>,
    /// What the generator reached.
    pub sent_pps: f64,
    pub sent: u64,
    /// Unique packets the sink got.
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub reordered: u64,
    /// received / the generator's seconds.
    pub delivered_pps: f64,
    /// Inner IP bits per second delivered.
    pub delivered_gbps: f64,
    pub latency_p50_us: f64,
    pub latency_p99_us: f64,
    pub latency_p999_us: f64,
    pub latency_max_us: f64,
    /// (latency µs, fraction at or below).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub latency_cdf: Vec<(f64, f64)>,
    pub gw_a: GatewayCpu,
    pub gw_b: GatewayCpu,
    /// Busy CPUs of the whole machine during the trial.
    pub machine_busy_cpus: f64,
    /// The sockets ran in zero-copy mode.
    pub zero_copy: bool,
}

impl Trial {
    /// No packet lost or duplicated.
    pub fn loss_free(&self) -> bool {
        self.lost == 0 && self.duplicates == 0 && self.sent > 0
    }
}

/// CPU seconds of a gateway's process and of its workers.
#[derive(Debug, Clone, Copy)]
struct CpuAt {
    process: f64,
    workers: f64,
}

/// Threads of `pid` that are data-plane workers (`xdpsec-worker-N`).
fn worker_tids(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm"))
                .is_ok_and(|c| c.trim().starts_with("xdpsec-worker-"))
        })
        .filter_map(|e| e.file_name().to_str().and_then(|t| t.parse().ok()))
        .collect()
}

/// Every thread of `pid`.
fn all_tids(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|t| t.parse().ok()))
        .collect()
}

/// CPU seconds of the threads `tids` of `pid` (schedstat, nanoseconds:
/// utime+stime count 10 ms ticks, too coarse for half-second trials). A
/// thread that ended meanwhile counts nothing.
fn threads_cpu(pid: u32, tids: &[u32]) -> f64 {
    tids.iter()
        .filter_map(|&tid| thread_cpu(pid, tid).ok())
        .map(|s| s.seconds)
        .sum()
}

fn cpu_at(pid: u32) -> Result<CpuAt> {
    // Fails if the process is gone: the tunnel is down.
    process_cpu(pid)?;
    let process = threads_cpu(pid, &all_tids(pid));
    let tids = worker_tids(pid);
    let workers = if tids.is_empty() {
        process
    } else {
        threads_cpu(pid, &tids)
    };
    Ok(CpuAt { process, workers })
}

fn gateway_pid(bed: &TunnelBed, side: Side) -> Result<u32> {
    bed.gateway_pid(side)
        .with_context(|| format!("the gateway process of {side} is not running (tunnel down)"))
}

fn wait_ready(sink: &NsChild) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sink.stderr_so_far().contains("ready") {
        if let Some(status) = sink.try_wait()? {
            bail!("the sink exited ({status}): {}", sink.stderr_so_far());
        }
        if Instant::now() >= deadline {
            bail!("the sink is not ready after 10 s: {}", sink.stderr_so_far());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn report(who: &str, out: xdpsec_testbed::ChildOutput) -> Result<Value> {
    if !out.status.success() {
        bail!("{who} failed ({}): {}", out.status, out.stderr.trim());
    }
    serde_json::from_str(&out.stdout).with_context(|| format!("{who} printed {:?}", out.stdout))
}

/// Runs one trial of `size` (`64`, `imix`, ...) at `rate` packets/s.
pub fn run(rig: &Rig<'_>, size: &str, rate: Option<f64>) -> Result<Trial> {
    let bed = rig.bed;
    let bin = rig.bench_bin.to_string_lossy().into_owned();
    let trial_ms = rig.trial.as_millis().to_string();
    let queues = rig.queues.to_string();
    // RUST_BACKTRACE off: an error should read as one line in the report.
    let sink = bed.host(Side::B).ns.spawn([
        "env",
        "RUST_BACKTRACE=0",
        bin.as_str(),
        "sink",
        "--iface",
        &bed.host(Side::B).eth.name,
        "--queues",
        &queues,
        "--addr",
        &SINK_ADDR.to_string(),
        "--duration-ms",
        &(rig.trial.as_millis() + 5000).to_string(),
        "--idle-ms",
        "300",
        "--min-ms",
        &rig.trial.as_millis().to_string(),
    ])?;
    wait_ready(&sink)?;
    let pids = [gateway_pid(bed, Side::A)?, gateway_pid(bed, Side::B)?];
    let before = [cpu_at(pids[0])?, cpu_at(pids[1])?];
    let machine_before = machine_ticks()?;
    let started = Instant::now();
    let dst_mac = format_mac(&bed.gateway(Side::A).lan.mac);
    let src = bed.host(Side::A).eth.ipv4.to_string();
    let mut argv = vec![
        "env".to_string(),
        "RUST_BACKTRACE=0".into(),
        bin.clone(),
        "gen".into(),
        "--iface".into(),
        bed.host(Side::A).eth.name.clone(),
        "--queues".into(),
        queues.clone(),
        "--dst-mac".into(),
        dst_mac,
        "--src".into(),
        src,
        "--dst".into(),
        SINK_ADDR.to_string(),
        "--size".into(),
        size.to_string(),
        "--mtu".into(),
        PATH_MTU.to_string(),
        "--count".into(),
        "100000000".into(),
        "--duration-ms".into(),
        trial_ms,
    ];
    if let Some(r) = rate {
        argv.push("--rate".into());
        argv.push(format!("{r:.0}"));
    }
    let gen = bed.host(Side::A).ns.spawn(&argv)?;
    let gen = report(
        "the generator",
        gen.wait_timeout(rig.trial + Duration::from_secs(10))?,
    )?;
    let elapsed = started.elapsed();
    let machine_busy_cpus = busy_cpus_since(&machine_before, elapsed)?;
    let after = [cpu_at(pids[0])?, cpu_at(pids[1])?];
    let sink = report(
        "the sink",
        sink.wait_timeout(rig.trial + Duration::from_secs(10))?,
    )?;

    let u = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    let sent = u(&gen, "sent");
    let seconds = gen["seconds"].as_f64().unwrap_or(0.0);
    if sent == 0 || seconds <= 0.0 {
        bail!("the generator sent nothing: {gen}");
    }
    let totals = &sink["totals"];
    let received = u(totals, "received");
    let lat = &sink["latency"];
    let us = |k: &str| lat[k].as_f64().unwrap_or(0.0) / 1000.0;
    let wall = elapsed.as_secs_f64();
    let cpu = |i: usize| {
        let worker = (after[i].workers - before[i].workers).max(0.0);
        GatewayCpu {
            cpu_share: (after[i].process - before[i].process).max(0.0) / wall,
            worker_cpu_share: worker / wall,
            cycles_per_packet: if received > 0 {
                worker * rig.cpu_mhz * 1e6 / received as f64
            } else {
                0.0
            },
        }
    };
    Ok(Trial {
        offered_pps: rate,
        sent_pps: sent as f64 / seconds,
        sent,
        received,
        lost: sent.saturating_sub(received),
        duplicates: u(totals, "duplicates"),
        reordered: u(totals, "reordered"),
        delivered_pps: received as f64 / seconds,
        delivered_gbps: u(&sink, "ip_bytes") as f64 * 8.0 / seconds / 1e9,
        latency_p50_us: us("p50_ns"),
        latency_p99_us: us("p99_ns"),
        latency_p999_us: us("p999_ns"),
        latency_max_us: us("max_ns"),
        latency_cdf: lat["cdf"]
            .as_array()
            .map(|points| {
                points
                    .iter()
                    .filter_map(|p| Some((p[0].as_f64()? / 1000.0, p[1].as_f64()?)))
                    .collect()
            })
            .unwrap_or_default(),
        gw_a: cpu(0),
        gw_b: cpu(1),
        machine_busy_cpus,
        zero_copy: gen["zero_copy"].as_bool().unwrap_or(false),
    })
}

/// Trials after a lossless probe that must be lossless too.
pub const CONFIRMATIONS: u32 = 2;

/// The search's outcome for one size.
#[derive(Debug, Clone, Serialize)]
pub struct Search {
    /// Highest rate offered that lost nothing (packets/s).
    pub loss_free_pps: f64,
    /// The trial at that rate.
    pub at_loss_free: Trial,
    /// Flat out: what the tunnel delivered while overloaded.
    pub flat_out: Trial,
    /// Every trial, in order.
    pub trials: Vec<Trial>,
}

/// Finds the highest loss-free rate: one flat-out trial bounds it from
/// above (what the generator reached), the first probe is what the tunnel
/// delivered then, and `steps` probes bisect between the highest lossless
/// and the lowest lossy rate; a probe counts as lossless only if
/// [`CONFIRMATIONS`] more trials at its rate are too. A paced generator that falls short of its
/// rate is credited with what it reached. Fails if no probe is loss-free.
pub fn search(
    rig: &Rig<'_>,
    size: &str,
    steps: u32,
    mut progress: impl FnMut(&str),
) -> Result<Search> {
    progress("flat out");
    let flat_out = run(rig, size, None)?;
    let mut trials = vec![flat_out.clone()];
    if flat_out.received == 0 {
        bail!("size {size}: nothing came through the tunnel flat out (tunnel down?)");
    }
    if flat_out.loss_free() {
        return Ok(Search {
            loss_free_pps: flat_out.sent_pps,
            at_loss_free: flat_out.clone(),
            flat_out,
            trials,
        });
    }
    let (mut lo, mut hi) = (0.0f64, flat_out.sent_pps);
    let mut best: Option<Trial> = None;
    let mut probe = flat_out.delivered_pps.min(hi);
    for step in 0..steps {
        progress(&format!(
            "probe {}/{steps} at {:.3} Mpps",
            step + 1,
            probe / 1e6
        ));
        let mut t = run(rig, size, Some(probe))?;
        trials.push(t.clone());
        // A rate is loss-free only if further trials agree: other work on
        // the machine makes single trials noisy.
        for _ in 0..CONFIRMATIONS {
            if !t.loss_free() {
                break;
            }
            progress(&format!("confirming {:.3} Mpps", probe / 1e6));
            t = run(rig, size, Some(probe))?;
            trials.push(t.clone());
        }
        if t.loss_free() {
            lo = probe.min(t.sent_pps);
            best = Some(t);
        } else {
            hi = probe;
        }
        if hi - lo < 0.02 * hi {
            break;
        }
        probe = if lo == 0.0 && step == 0 {
            hi / 2.0
        } else {
            (lo + hi) / 2.0
        };
    }
    let Some(at_loss_free) = best else {
        bail!(
            "size {size}: every probe lost packets, down to {:.0} packets/s; no loss-free rate",
            hi
        );
    };
    Ok(Search {
        loss_free_pps: lo,
        at_loss_free,
        flat_out,
        trials,
    })
}
