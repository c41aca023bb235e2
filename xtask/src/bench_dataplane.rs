//! `cargo xtask bench dataplane`: packets through the real tunnel.
//!
//! For each inner packet size (64 and 1400 bytes of inner IP packet) it runs
//! [`ROUNDS`] rounds of two ciphers back to back: the `--null-cipher-benchmark`
//! ceiling, then AES-GCM-128. Each run builds a fresh [`TunnelBed`]
//! (hostA - gwA - gwB - hostB in network namespaces, one data-plane worker
//! per gateway), checks the tunnel with a ping, waits (bounded) for the
//! machine to be quiet, and sends a bounded UDP flood from host A to host B
//! with iperf3 (`-u -b 0 -l SIZE-28 -t 5`). The tunnel's rate is what
//! leaves it: host B's eth0 RX packets per second of load (what host B's
//! iperf3 manages to read is recorded beside it). The CPU time of gwA's
//! worker thread over the run, at the CPU's nominal clock, divided by the
//! packets that worker received, is its cycles per packet. Each run also
//! records the packet count at every stage, from iperf3's send to its read.
//! Everything (namespaces, both data planes, both iperf3s) is created here
//! and removed by PID and by the test bed's drop, also on failure.
//!
//! It prints one line per size (medians) and writes
//! `perf-results/dataplane.json`; a run that saw an error (tunnel down,
//! iperf3 failed, no packets) writes nothing and fails.
//!
//! With `XDPSEC_BENCH_PERF=1` it also profiles one extra AES run per size
//! with `perf record -a -g` (not counted in the figures, since perf slows
//! what it watches) and writes `perf-results/dataplane-perf-SIZE.txt`: where
//! the machine's time goes by thread, and where gwA's worker thread spends
//! its time. The benchmark itself does not need perf.

use crate::machine::Machine;
use crate::procfs::{
    clock_ticks_per_second, machine_ticks, nominal_mhz, process_cpu, thread_cpu,
    wait_for_quiet_machine, CpuSample, CpuTicks, QUIET_BUSY_CPUS,
};
use crate::shell::{is_root, release_xdpsec, workspace_root};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use xdpsec_testbed::tunnel::{Side, TunnelBed, TunnelOptions, BENCH_LAN_MTU, IPERF_PORT};
use xdpsec_testbed::NsChild;

/// Inner IP packet sizes, in bytes (IPv4 header + UDP header + payload).
const SIZES: [usize; 2] = [64, 1400];
/// IPv4 (20) and UDP (8) headers: iperf3's `-l` is the UDP payload.
const IP_UDP_HEADERS: usize = 28;
/// Seconds of load per run.
const SECONDS: u32 = 5;
/// Rounds of (null, AES) runs per size; the figures are medians. Two shared
/// cores make single runs noisy.
const ROUNDS: usize = 3;
/// The worker thread whose CPU time counts (`xdpsec-worker-{index}`).
const WORKER_THREAD: &str = "xdpsec-worker-0";
const COMMAND: &str = "cargo xtask bench dataplane";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cipher {
    /// `--null-cipher-benchmark`: the pipeline without encryption.
    Null,
    /// AES-GCM-128 (RFC 4106).
    Aes128,
}

impl Cipher {
    fn name(self) -> &'static str {
        match self {
            Cipher::Null => "null",
            Cipher::Aes128 => "aes128-gcm",
        }
    }
}

/// What one gateway's data plane did during a run.
#[derive(Debug, Serialize)]
struct GatewayLoad {
    /// Packets its worker(s) took from their RX rings during the run.
    worker_rx_packets: u64,
    /// Packets its worker(s) put on their TX rings during the run.
    worker_tx_packets: u64,
    /// CPU seconds of the thread `xdpsec-worker-0`.
    worker_cpu_seconds: f64,
    /// Worker CPU seconds per second of load (1.0 = one core busy).
    worker_cpu_share: f64,
    /// Seconds the worker was runnable but waited for a CPU.
    worker_runqueue_wait_seconds: f64,
    /// Non-empty RX drains, and packets per drain.
    worker_batches: u64,
    mean_batch: f64,
    /// Wake-ups from poll() plus kernel kicks.
    worker_wakeups: u64,
    /// Drops the SAs counted during the run, by reason.
    sa_drops: BTreeMap<String, u64>,
    /// CPU seconds of the whole data-plane process (all threads).
    process_cpu_seconds: f64,
    /// Worker CPU cycles (at the nominal clock) per packet it received.
    cycles_per_packet: f64,
    /// The part spent in user space (utime/(utime+stime) of the thread,
    /// clock-tick resolution), and the part in the kernel: system calls,
    /// and what they run synchronously (copy-mode AF_XDP TX hands the frame
    /// to the veth, and the softirq that follows runs the bridge and the
    /// peer's XDP in this thread's time).
    user_cycles_per_packet: f64,
    kernel_cycles_per_packet: f64,
}

/// Packets at each stage from host A's iperf3 to host B's, during the run.
#[derive(Debug, Serialize)]
struct Funnel {
    /// Datagrams iperf3 sent (its own count).
    iperf3_sent: u64,
    /// Packets host A's eth0 sent (kernel counter).
    host_a_eth_tx: u64,
    /// Packets gwA's worker took from its RX rings / put on its TX rings.
    gw_a_worker_rx: u64,
    gw_a_worker_tx: u64,
    /// The same on gwB.
    gw_b_worker_rx: u64,
    gw_b_worker_tx: u64,
    /// Packets host B's eth0 received (kernel counter): what left the tunnel.
    host_b_eth_rx: u64,
    /// UDP datagrams host B's kernel dropped because the socket buffer was
    /// full (the iperf3 server did not read fast enough).
    host_b_udp_rcvbuf_errors: u64,
    /// Datagrams the iperf3 server read (sent - lost).
    iperf3_received: u64,
}

/// How busy the whole machine was during the run (all CPUs, /proc/stat).
#[derive(Debug, Serialize)]
struct MachineLoad {
    /// Busy CPU-seconds per second (2.0 = both cores of a 2-core machine).
    busy_cpus: f64,
    /// The same over one second just before the load, tunnel up and idle:
    /// what the rest of the machine (other users' work) took.
    busy_cpus_before_load: f64,
    /// Of which softirq (veth transfers, XDP, the kernel's UDP/IP).
    softirq_cpus: f64,
    /// Of which the kernel outside softirq (system calls: sends, AF_XDP TX).
    system_cpus: f64,
    /// Of which user space.
    user_cpus: f64,
    /// Stolen by the hypervisor.
    steal_cpus: f64,
}

#[derive(Debug, Serialize)]
struct RunResult {
    size: usize,
    /// Which round (0-based); null and AES runs alternate.
    round: usize,
    cipher: &'static str,
    udp_payload: usize,
    /// Sender's measuring time, seconds.
    seconds: f64,
    /// Datagrams the sender sent.
    sent_packets: u64,
    /// Packets out of the tunnel into host B (its eth0 RX).
    tunnel_packets: u64,
    /// Datagrams host B's iperf3 read.
    received_packets: u64,
    /// Fraction of sent datagrams that did not leave the tunnel.
    loss: f64,
    /// Fraction of sent datagrams the iperf3 server did not read.
    app_loss: f64,
    /// What the iperf3 server read per second (below `pps` when host B's
    /// socket overflows).
    app_pps: f64,
    /// Other work kept the machine busy just before this run (see
    /// `machine_load.busy_cpus_before_load`): its figures are not clean.
    busy_machine: bool,
    /// Inner packets per second out of the tunnel: host B's eth0 RX
    /// packets over the sender's seconds.
    pps: f64,
    mpps: f64,
    /// Inner IP bits per second: size * 8 * pps.
    gbps: f64,
    /// Worker CPU cycles per packet on gwA (encrypting side).
    cycles_per_packet: f64,
    /// Worker CPU seconds on gwA.
    cpu_seconds: f64,
    gw_a: GatewayLoad,
    gw_b: GatewayLoad,
    funnel: Funnel,
    machine_load: MachineLoad,
}

#[derive(Debug, Serialize)]
struct SizeSummary {
    size: usize,
    mpps: f64,
    gbps: f64,
    ceiling_mpps: f64,
    ceiling_gbps: f64,
    /// Median AES-GCM rate / median null-cipher rate at this size.
    ceiling_ratio: f64,
    /// AES / null of each round (the runs of a round are back to back).
    round_ratios: Vec<f64>,
    /// gwA worker cycles per packet, all of them (user space and kernel).
    cycles_per_packet: f64,
    /// Of which in user space (the data plane's own code, crypto included).
    user_cycles_per_packet: f64,
    ceiling_cycles_per_packet: f64,
    ceiling_user_cycles_per_packet: f64,
    /// ceiling_cycles_per_packet / cycles_per_packet: the ratio a worker
    /// that had a core to itself, and was the bottleneck, would reach.
    cycles_ratio: f64,
    loss: f64,
    ceiling_loss: f64,
    /// What host B's iperf3 read, AES-GCM and null cipher, Mpps.
    app_mpps: f64,
    ceiling_app_mpps: f64,
    /// Runs of this size that started on a machine busy with other work.
    runs_on_busy_machine: usize,
}

#[derive(Debug, Serialize)]
struct DataplaneReport {
    benchmark: &'static str,
    command: &'static str,
    date: String,
    unix_time: u64,
    machine: Machine,
    /// Clock used to turn CPU seconds into cycles, in MHz, and where it is from.
    cpu_mhz: f64,
    cpu_mhz_source: String,
    /// Where thread CPU time was read from.
    cpu_time_source: &'static str,
    /// bridge-nf-call-* in the wire namespace (see `quiet_wire_bridge`).
    wire_bridge_netfilter: &'static str,
    rounds: usize,
    workers_per_gateway: u32,
    seconds_per_run: u32,
    load: String,
    iperf3: String,
    method: &'static str,
    summary: Vec<SizeSummary>,
    runs: Vec<RunResult>,
}

const METHOD: &str =
    "TunnelBed: hostA - gwA - [wire bridge] - gwB - hostB in network namespaces on \
    veth (XDP native, AF_XDP copy mode), one xdpsec worker and one queue per gateway, plain ESP. \
    Load: iperf3 UDP from hostA to hostB at unlimited rate; rate = packets out of the tunnel \
    (hostB eth0 RX, a kernel counter) / the sender's seconds; app_pps = what hostB's iperf3 \
    read (sent - lost), lower when its socket buffer overflows. ceiling = the same run with --null-cipher-benchmark. \
    cycles_per_packet = CPU time of gwA's worker thread over the run (procfs) * cpu_mhz / \
    packets that worker received (xdpsec status). Sender, receiver and both gateways share \
    the machine's cores. Each size runs ROUNDS rounds of (null, AES) on fresh tunnels; the \
    summary takes medians.";

pub fn run() -> Result<()> {
    crate::setup::ensure_all()?;
    if !is_root() {
        bail!("the data-plane benchmark builds network namespaces and loads XDP: run it as root");
    }
    let binary = release_xdpsec()?;
    let (cpu_mhz, cpu_mhz_source) = nominal_mhz()?;
    let iperf3 = crate::shell::output(&["iperf3", "--version"])
        .and_then(|v| v.lines().next().map(str::to_owned))
        .context("iperf3 is not installed (cargo xtask setup installs it)")?;
    eprintln!(
        "\n==> data plane: {} s of UDP per run, sizes {SIZES:?}, null cipher then AES-GCM-128, \
         1 worker per gateway; cycles at {cpu_mhz:.0} MHz ({cpu_mhz_source})",
        SECONDS
    );

    let mut runs = Vec::new();
    for size in SIZES {
        for (round, cipher) in
            (0..ROUNDS).flat_map(|round| [Cipher::Null, Cipher::Aes128].map(|c| (round, c)))
        {
            eprintln!(
                "--> size={size} cipher={} round {}/{ROUNDS}",
                cipher.name(),
                round + 1
            );
            let r = measure(&binary, size, cipher, cpu_mhz, None)
                .with_context(|| format!("size {size}, cipher {}", cipher.name()))?;
            let r = RunResult { round, ..r };
            let f = &r.funnel;
            eprintln!(
                "    {:.3} Mpps, {:.2} Gbit/s out of the tunnel (loss {:.1}%); gwA worker {:.0} \
                 cycles/packet ({:.0} in user space), {:.0}% of a core, mean batch {:.1}; \
                 machine {:.2} CPUs busy ({:.2} before the load)\n    \
                 packets: iperf3 sent {} > hostA eth0 {} > gwA worker rx {} tx {} > gwB worker rx {} \
                 tx {} > hostB eth0 {} > iperf3 read {} (hostB socket overflows {})",
                r.mpps,
                r.gbps,
                r.loss * 100.0,
                r.cycles_per_packet,
                r.gw_a.user_cycles_per_packet,
                r.gw_a.worker_cpu_share * 100.0,
                r.gw_a.mean_batch,
                r.machine_load.busy_cpus,
                r.machine_load.busy_cpus_before_load,
                f.iperf3_sent,
                f.host_a_eth_tx,
                f.gw_a_worker_rx,
                f.gw_a_worker_tx,
                f.gw_b_worker_rx,
                f.gw_b_worker_tx,
                f.host_b_eth_rx,
                f.iperf3_received,
                f.host_b_udp_rcvbuf_errors,
            );
            runs.push(r);
        }
    }

    let summary = summarise(&runs)?;
    let dir = workspace_root().join("perf-results");
    std::fs::create_dir_all(&dir)?;
    if std::env::var_os("XDPSEC_BENCH_PERF").is_some() {
        for size in SIZES {
            eprintln!(
                "--> profiling size={size} cipher=aes128-gcm (perf record -a -g; not counted)"
            );
            let out = dir.join(format!("dataplane-perf-{size}.txt"));
            measure(&binary, size, Cipher::Aes128, cpu_mhz, Some(&out))
                .with_context(|| format!("profiled run, size {size}"))?;
            eprintln!("    wrote {}", out.display());
        }
    }

    let unix_time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let report = DataplaneReport {
        benchmark: "dataplane",
        command: COMMAND,
        date: crate::shell::output(&["date", "-u", "+%Y-%m-%dT%H:%M:%SZ"])
            .map(|d| d.trim().to_owned())
            .unwrap_or_default(),
        unix_time,
        machine: Machine::describe(),
        cpu_mhz,
        cpu_mhz_source,
        cpu_time_source: "/proc/PID/task/TID/schedstat (ns on CPU) of the worker thread",
        wire_bridge_netfilter: "off (sysctl net.bridge.bridge-nf-call-*=0 in the wire namespace)",
        rounds: ROUNDS,
        workers_per_gateway: 1,
        seconds_per_run: SECONDS,
        load: format!(
            "iperf3 -c HOSTB -u -b 0 -l SIZE-{IP_UDP_HEADERS} -t {SECONDS} (server: iperf3 -s -1 -J)"
        ),
        iperf3,
        method: METHOD,
        summary,
        runs,
    };
    let out = dir.join("dataplane.json");
    std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")?;
    println!();
    for s in &report.summary {
        if s.runs_on_busy_machine > 0 {
            println!(
                "warning: {} of the size-{} runs started while other work kept the machine busy",
                s.runs_on_busy_machine, s.size
            );
        }
    }
    for s in &report.summary {
        println!(
            "dataplane size={} mpps={:.2} gbps={:.1} ceiling_ratio={:.2} cycles_per_packet={:.0}",
            s.size, s.mpps, s.gbps, s.ceiling_ratio, s.cycles_per_packet
        );
    }
    println!("wrote {}", out.display());
    Ok(())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn summarise(runs: &[RunResult]) -> Result<Vec<SizeSummary>> {
    SIZES
        .iter()
        .map(|&size| {
            let of = |cipher: Cipher, f: fn(&RunResult) -> f64| -> Result<f64> {
                let values: Vec<f64> = runs
                    .iter()
                    .filter(|r| r.size == size && r.cipher == cipher.name())
                    .map(f)
                    .collect();
                if values.is_empty() {
                    bail!("no {} run at size {size}", cipher.name());
                }
                Ok(median(values))
            };
            let (aes_pps, null_pps) =
                (of(Cipher::Aes128, |r| r.pps)?, of(Cipher::Null, |r| r.pps)?);
            let round_ratios = (0..ROUNDS)
                .filter_map(|round| {
                    let pps = |c: Cipher| {
                        runs.iter()
                            .find(|r| r.size == size && r.round == round && r.cipher == c.name())
                            .map(|r| r.pps)
                    };
                    Some(pps(Cipher::Aes128)? / pps(Cipher::Null)?)
                })
                .collect();
            let cycles_per_packet = of(Cipher::Aes128, |r| r.cycles_per_packet)?;
            let ceiling_cycles_per_packet = of(Cipher::Null, |r| r.cycles_per_packet)?;
            Ok(SizeSummary {
                size,
                cycles_ratio: ceiling_cycles_per_packet / cycles_per_packet,
                mpps: aes_pps / 1e6,
                gbps: size as f64 * 8.0 * aes_pps / 1e9,
                ceiling_mpps: null_pps / 1e6,
                ceiling_gbps: size as f64 * 8.0 * null_pps / 1e9,
                ceiling_ratio: aes_pps / null_pps,
                round_ratios,
                cycles_per_packet,
                user_cycles_per_packet: of(Cipher::Aes128, |r| r.gw_a.user_cycles_per_packet)?,
                ceiling_cycles_per_packet,
                ceiling_user_cycles_per_packet: of(Cipher::Null, |r| {
                    r.gw_a.user_cycles_per_packet
                })?,
                loss: of(Cipher::Aes128, |r| r.loss)?,
                ceiling_loss: of(Cipher::Null, |r| r.loss)?,
                app_mpps: of(Cipher::Aes128, |r| r.app_pps)? / 1e6,
                ceiling_app_mpps: of(Cipher::Null, |r| r.app_pps)? / 1e6,
                runs_on_busy_machine: runs
                    .iter()
                    .filter(|r| r.size == size && r.busy_machine)
                    .count(),
            })
        })
        .collect()
}

/// One tunnel, one bounded UDP load, one result. With `profile`, `perf
/// record -a -g` watches the load and its report goes to that file.
fn measure(
    binary: &Path,
    size: usize,
    cipher: Cipher,
    cpu_mhz: f64,
    profile: Option<&Path>,
) -> Result<RunResult> {
    let payload = size - IP_UDP_HEADERS;
    let bed = TunnelBed::new(
        binary,
        TunnelOptions {
            ipv6: false,
            workers: 1,
            null_cipher: cipher == Cipher::Null,
            // A tuned setting: LAN links narrower than the underlay, so the
            // largest probes fit the tunnel whole on every system compared
            // and the run measures encryption, not ICMP "too big" and PMTU.
            inner_mtu: BENCH_LAN_MTU,
            ..TunnelOptions::default()
        },
    )
    .context("bringing up the tunnel test bed")?;
    quiet_wire_bridge(&bed)?;
    let ping = bed.ping(Side::A, Side::B, false, 3)?;
    if !ping.all_answered_once() {
        bail!(
            "the tunnel is down: ping hostA -> hostB: {}\n{}",
            ping.output.trim(),
            bed.logs()
        );
    }
    let pid = |side: Side| -> Result<u32> {
        let pid = bed
            .child(side)
            .map(NsChild::pid)
            .with_context(|| format!("the data plane of {side} is not running"))?;
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.trim() != "xdpsec" {
            bail!("pid {pid} of {side} is {:?}, not xdpsec", comm.trim());
        }
        Ok(pid)
    };
    let pids = [pid(Side::A)?, pid(Side::B)?];
    let tids = [worker_tid(pids[0])?, worker_tid(pids[1])?];

    // The server first; it serves one test and exits.
    let host_b = &bed.host(Side::B).ns;
    let port = IPERF_PORT.to_string();
    let server = host_b.spawn(["iperf3", "-s", "-1", "-J", "-p", &port])?;
    wait_listening(&bed, &server, &port)?;

    let busy_cpus_before_load = wait_for_quiet_machine()?;

    let before = snapshot(&bed, pids, tids)?;
    let started = Instant::now();
    let perf = match profile {
        Some(_) => Some(start_perf(profile_data_path()?)?),
        None => None,
    };
    let client = bed.host(Side::A).ns.spawn([
        "iperf3".to_string(),
        "-c".into(),
        bed.host_addr(Side::B, false).to_string(),
        "-p".into(),
        port.clone(),
        "-u".into(),
        "-b".into(),
        "0".into(),
        "-l".into(),
        payload.to_string(),
        "-t".into(),
        SECONDS.to_string(),
        "--connect-timeout".into(),
        "3000".into(),
        "-J".into(),
    ])?;
    let client_out = client.wait_timeout(Duration::from_secs(u64::from(SECONDS) + 20))?;
    let server_out = server.wait_timeout(Duration::from_secs(15))?;
    let after = snapshot(&bed, pids, tids)?;
    let wall = started.elapsed().as_secs_f64();
    if let (Some(perf), Some(out)) = (perf, profile) {
        stop_perf(perf, pids[0], tids[0], out)?;
    }
    for side in Side::BOTH {
        if !bed.is_running(side) {
            bail!(
                "the data plane of {side} exited during the run\n{}",
                bed.logs()
            );
        }
    }
    let client_json = iperf_json("client", &client_out)?;
    let server_json = iperf_json("server", &server_out)?;
    let sent_sum = &client_json["end"]["sum"];
    let (Some(sent), Some(seconds)) = (sent_sum["packets"].as_u64(), sent_sum["seconds"].as_f64())
    else {
        bail!("the iperf3 client's report has no end.sum packets/seconds: {sent_sum}");
    };
    let recv_sum = &server_json["end"]["sum"];
    let (Some(counted), Some(lost), Some(recv_seconds)) = (
        recv_sum["packets"].as_u64(),
        recv_sum["lost_packets"].as_u64(),
        recv_sum["seconds"].as_f64(),
    ) else {
        bail!("the iperf3 server's report has no end.sum packets/lost_packets/seconds: {recv_sum}");
    };
    let received = counted.saturating_sub(lost);
    let delta = |f: fn(&Snapshot) -> u64| f(&after).saturating_sub(f(&before));
    let tunnel = delta(|s| s.host_b_eth_rx);
    if received == 0 || tunnel == 0 || sent == 0 || seconds <= 0.0 || recv_seconds <= 0.0 {
        bail!(
            "no datagrams crossed the tunnel ({sent} sent, {tunnel} into host B, {received} read)\n{}",
            bed.logs()
        );
    }
    let load = |i: usize| -> Result<GatewayLoad> {
        let rx = after.worker_rx[i].saturating_sub(before.worker_rx[i]);
        let tx = after.worker_tx[i].saturating_sub(before.worker_tx[i]);
        if rx == 0 {
            bail!("the worker of {} saw no packets", Side::BOTH[i]);
        }
        let batches = after.worker_batches[i].saturating_sub(before.worker_batches[i]);
        let cpu = after.worker_cpu[i].seconds - before.worker_cpu[i].seconds;
        let user_ticks = after.worker_cpu[i].user_ticks - before.worker_cpu[i].user_ticks;
        let all_ticks =
            user_ticks + after.worker_cpu[i].system_ticks - before.worker_cpu[i].system_ticks;
        let user_share = if all_ticks > 0.0 {
            user_ticks / all_ticks
        } else {
            0.0
        };
        let cycles = cpu * cpu_mhz * 1e6 / rx as f64;
        let mut sa_drops = after.sa_drops[i].clone();
        for (reason, n) in &mut sa_drops {
            *n = n.saturating_sub(before.sa_drops[i].get(reason).copied().unwrap_or(0));
        }
        sa_drops.retain(|_, n| *n > 0);
        Ok(GatewayLoad {
            worker_rx_packets: rx,
            worker_tx_packets: tx,
            worker_cpu_seconds: cpu,
            worker_cpu_share: cpu / wall,
            worker_runqueue_wait_seconds: after.worker_cpu[i].waiting_seconds
                - before.worker_cpu[i].waiting_seconds,
            worker_batches: batches,
            mean_batch: rx as f64 / batches.max(1) as f64,
            worker_wakeups: after.worker_wakeups[i].saturating_sub(before.worker_wakeups[i]),
            sa_drops,
            process_cpu_seconds: after.process_cpu[i].seconds - before.process_cpu[i].seconds,
            cycles_per_packet: cycles,
            user_cycles_per_packet: cycles * user_share,
            kernel_cycles_per_packet: cycles * (1.0 - user_share),
        })
    };
    let (gw_a, gw_b) = (load(0)?, load(1)?);
    let funnel = Funnel {
        iperf3_sent: sent,
        host_a_eth_tx: delta(|s| s.host_a_eth_tx),
        gw_a_worker_rx: gw_a.worker_rx_packets,
        gw_a_worker_tx: gw_a.worker_tx_packets,
        gw_b_worker_rx: gw_b.worker_rx_packets,
        gw_b_worker_tx: gw_b.worker_tx_packets,
        host_b_eth_rx: tunnel,
        host_b_udp_rcvbuf_errors: delta(|s| s.host_b_rcvbuf_errors),
        iperf3_received: received,
    };
    let ticks = |f: fn(&CpuTicks) -> u64| {
        f(&after.machine).saturating_sub(f(&before.machine)) as f64
            / clock_ticks_per_second() as f64
            / wall
    };
    let machine_load = MachineLoad {
        busy_cpus: ticks(CpuTicks::busy),
        busy_cpus_before_load,
        softirq_cpus: ticks(|t| t.softirq),
        system_cpus: ticks(|t| t.system),
        user_cpus: ticks(|t| t.user),
        steal_cpus: ticks(|t| t.steal),
    };
    let pps = tunnel as f64 / seconds;
    Ok(RunResult {
        size,
        round: 0,
        busy_machine: machine_load.busy_cpus_before_load >= QUIET_BUSY_CPUS,
        cipher: cipher.name(),
        udp_payload: payload,
        seconds,
        sent_packets: sent,
        tunnel_packets: tunnel,
        received_packets: received,
        loss: sent.saturating_sub(tunnel) as f64 / sent as f64,
        app_loss: sent.saturating_sub(received) as f64 / sent as f64,
        app_pps: received as f64 / recv_seconds,
        pps,
        mpps: pps / 1e6,
        gbps: size as f64 * 8.0 * pps / 1e9,
        cycles_per_packet: gw_a.cycles_per_packet,
        cpu_seconds: gw_a.worker_cpu_seconds,
        gw_a,
        gw_b,
        funnel,
        machine_load,
    })
}

struct Snapshot {
    worker_rx: [u64; 2],
    worker_tx: [u64; 2],
    worker_batches: [u64; 2],
    worker_wakeups: [u64; 2],
    worker_cpu: [CpuSample; 2],
    process_cpu: [CpuSample; 2],
    sa_drops: [BTreeMap<String, u64>; 2],
    host_a_eth_tx: u64,
    host_b_eth_rx: u64,
    host_b_rcvbuf_errors: u64,
    machine: CpuTicks,
}

/// The wire namespace's bridge is only a capture point, but with the
/// br_netfilter module loaded (by anything on the machine) it hands every
/// frame to netfilter, and copy-mode AF_XDP TX runs that synchronously in the
/// sending worker's time. Real gateways have a NIC there, so turn it off for
/// this namespace (the sysctls are per namespace; absent without the module).
pub(crate) fn quiet_wire_bridge(bed: &TunnelBed) -> Result<()> {
    let wire = &bed.underlay().ns;
    for key in [
        "net.bridge.bridge-nf-call-iptables",
        "net.bridge.bridge-nf-call-ip6tables",
        "net.bridge.bridge-nf-call-arptables",
    ] {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        if wire.run(["test", "-e", &path]).is_ok() {
            wire.sysctl(&[(key, "0")])?;
        }
    }
    Ok(())
}

fn snapshot(bed: &TunnelBed, pids: [u32; 2], tids: [u32; 2]) -> Result<Snapshot> {
    let mut worker_rx = [0; 2];
    let mut worker_tx = [0; 2];
    let mut worker_batches = [0; 2];
    let mut worker_wakeups = [0; 2];
    let mut sa_drops: [BTreeMap<String, u64>; 2] = Default::default();
    for (i, side) in Side::BOTH.into_iter().enumerate() {
        let status = bed.status(side)?;
        let workers = status["workers"].as_array().with_context(|| {
            format!("`xdpsec status --json` of {side} has no workers: {status}")
        })?;
        for w in workers {
            let field = |name: &str| w[name].as_u64().unwrap_or(0);
            worker_rx[i] += field("rx_packets");
            worker_tx[i] += field("tx_packets");
            worker_batches[i] += field("batches");
            worker_wakeups[i] += field("wakeups");
        }
        let sas = bed.sa_list(side)?;
        for sa in sas["sas"].as_array().into_iter().flatten() {
            let Some(drops) = sa["counters"]["drops"].as_object() else {
                continue;
            };
            for (reason, n) in drops {
                *sa_drops[i].entry(reason.clone()).or_insert(0) += n.as_u64().unwrap_or(0);
            }
        }
    }
    let (host_a, host_b) = (bed.host(Side::A), bed.host(Side::B));
    Ok(Snapshot {
        worker_rx,
        worker_tx,
        worker_batches,
        worker_wakeups,
        worker_cpu: [thread_cpu(pids[0], tids[0])?, thread_cpu(pids[1], tids[1])?],
        process_cpu: [process_cpu(pids[0])?, process_cpu(pids[1])?],
        sa_drops,
        host_a_eth_tx: host_a.ns.link_stats(&host_a.eth.name)?.tx_packets,
        host_b_eth_rx: host_b.ns.link_stats(&host_b.eth.name)?.rx_packets,
        host_b_rcvbuf_errors: udp_rcvbuf_errors(&host_b.ns.run(["cat", "/proc/net/snmp"])?)
            .context("host B's /proc/net/snmp has no Udp RcvbufErrors")?,
        machine: machine_ticks()?,
    })
}

/// The `Udp: ... RcvbufErrors` counter of a /proc/net/snmp.
fn udp_rcvbuf_errors(snmp: &str) -> Option<u64> {
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next()?, udp.next()?);
    let column = names.split_whitespace().position(|n| n == "RcvbufErrors")?;
    values.split_whitespace().nth(column)?.parse().ok()
}

/// The TID of `xdpsec-worker-0` in process `pid`.
fn worker_tid(pid: u32) -> Result<u32> {
    let dir = format!("/proc/{pid}/task");
    for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot list {dir}"))? {
        let entry = entry?;
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim() == WORKER_THREAD {
            if let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) {
                return Ok(tid);
            }
        }
    }
    bail!("process {pid} has no thread named {WORKER_THREAD}")
}

fn wait_listening(bed: &TunnelBed, server: &NsChild, port: &str) -> Result<()> {
    let host_b = &bed.host(Side::B).ns;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let listening = host_b.run(["ss", "-Hltn", "sport", "=", &format!(":{port}")])?;
        if !listening.trim().is_empty() {
            return Ok(());
        }
        if let Some(status) = server.try_wait()? {
            bail!("the iperf3 server exited ({status}) before listening");
        }
        if Instant::now() >= deadline {
            bail!("the iperf3 server is not listening after 5 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn iperf_json(who: &str, out: &xdpsec_testbed::ChildOutput) -> Result<Value> {
    let json: Value = serde_json::from_str(&out.stdout).with_context(|| {
        format!(
            "iperf3 {who} printed no JSON ({}): {} {}",
            out.status,
            out.stdout.trim(),
            out.stderr.trim()
        )
    })?;
    if let Some(error) = json.get("error").and_then(Value::as_str) {
        bail!("iperf3 {who} failed: {error}");
    }
    if !out.status.success() {
        bail!("iperf3 {who} failed ({})", out.status);
    }
    Ok(json)
}

fn profile_data_path() -> Result<PathBuf> {
    Ok(std::env::temp_dir().join(format!("xdpsec-bench-perf-{}.data", std::process::id())))
}

/// A `perf record` started by this run, ended by its PID.
struct Perf {
    child: std::process::Child,
    data: PathBuf,
}

fn start_perf(data: PathBuf) -> Result<Perf> {
    let child = std::process::Command::new("perf")
        .args(["record", "-a", "-g", "-q", "-o"])
        .arg(&data)
        .args(["--", "sleep", &(SECONDS + 2).to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("XDPSEC_BENCH_PERF needs `perf` (Debian: linux-perf)")?;
    Ok(Perf { child, data })
}

/// Waits (bounded) for `perf record` to finish its `sleep`, then writes
/// where the machine's time went by thread, and what gwA's worker thread
/// spent its time in (inclusive and self), to `out`.
fn stop_perf(mut perf: Perf, gw_a_pid: u32, gw_a_worker: u32, out: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(u64::from(SECONDS) + 30);
    loop {
        if perf.child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() >= deadline {
            perf.child.kill().ok();
            perf.child.wait().ok();
            bail!("perf record did not finish");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let data = perf.data.to_string_lossy().into_owned();
    let report = |args: &[&str]| -> String {
        let mut argv = vec!["perf", "report", "--stdio", "-q", "-i", &data];
        argv.extend_from_slice(args);
        crate::shell::output(&argv).unwrap_or_else(|| format!("(perf report {args:?} failed)\n"))
    };
    let tid = gw_a_worker.to_string();
    let mut text = format!(
        "# perf record -a -g over one AES-GCM-128 run ({SECONDS} s of UDP load, not one of the \
         measured runs).\n# gwA's data plane is pid {gw_a_pid}, its worker thread \
         (xdpsec-worker-0) tid {tid}; gwB's worker has the same name.\n\n\
         ## All CPUs: share of samples by thread (tid:comm) and object\n\n"
    );
    text += &report(&[
        "--no-children",
        "--sort",
        "pid,dso",
        "-g",
        "none",
        "--percent-limit",
        "1",
    ]);
    // `--tid` filters hist entries, so the thread must be a sort key, or
    // entries of several threads merge and the filter sees only one of them.
    text += "\n## gwA's worker thread: object (% of that thread's samples)\n\n";
    text += &report(&[
        "--no-children",
        "--tid",
        &tid,
        "--percentage",
        "relative",
        "--sort",
        "pid,dso",
        "-g",
        "none",
    ]);
    text += "\n## gwA's worker thread: inclusive time (% of that thread's samples; a \
             softirq run at the end of a system call counts in the call)\n\n";
    text += &report(&[
        "--children",
        "--tid",
        &tid,
        "--percentage",
        "relative",
        "--sort",
        "pid,sym",
        "-g",
        "none",
        "--percent-limit",
        "5",
    ]);
    text += "\n## gwA's worker thread: self time by symbol (% of that thread's samples)\n\n";
    text += &report(&[
        "--no-children",
        "--tid",
        &tid,
        "--percentage",
        "relative",
        "--sort",
        "pid,dso,sym",
        "-g",
        "none",
        "--percent-limit",
        "0.7",
    ]);
    text += "\n## gwA's worker thread: where the copies (memcpy) are called from\n\n";
    text += &report(&[
        "--no-children",
        "--tid",
        &tid,
        "--percentage",
        "relative",
        "--sort",
        "pid,sym",
        "--symbols",
        "__pi_memcpy,memcpy,__memcpy,memcpy_orig,__memcpy_avx_unaligned_erms",
        "-g",
        "fractal,5,callee,function,percent",
    ]);
    std::fs::write(out, text)?;
    std::fs::remove_file(&perf.data).ok();
    std::fs::remove_file(format!("{data}.old")).ok();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_udp_rcvbuf_errors() {
        let snmp = "Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                    Udp: 260 0 7 261 5 0\n\
                    UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                    UdpLite: 0 0 0 0 0 0\n";
        assert_eq!(udp_rcvbuf_errors(snmp), Some(5));
        assert_eq!(udp_rcvbuf_errors("Ip: Forwarding\nIp: 1\n"), None);
    }
}
