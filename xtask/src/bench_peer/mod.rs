//! `cargo xtask bench peer`: xdpsec against strongSwan on one topology, in
//! one run.
//!
//! For each system and worker count it builds a fresh [`TunnelBed`] (hostA -
//! gwA - [wire bridge] - gwB - hostB in namespaces; ESP in UDP 4500 for
//! every system, since strongSwan's libipsec always encapsulates):
//!
//! - `xdpsec-null`: xdpsec with `--null-cipher-benchmark`, the I/O ceiling;
//! - `xdpsec-aes128`, `xdpsec-aes256`: xdpsec to xdpsec, AES-GCM;
//! - `strongswan`: charon with kernel-libipsec on both gateways, AES-GCM-128
//!   (the baseline of every `vs_strongswan`);
//! - `xdpsec-strongswan`: xdpsec on gwA against charon on gwB, which needs
//!   xdpsec's IKEv2 daemon (`xdpsec ike`); skipped, with the reason, where
//!   the binary has no such command.
//!
//! Per packet size (64, 512, 1400 and IMIX by default) the AF_XDP generator
//! on host A sends to the AF_XDP sink on host B (`xdpsec-bench gen|sink`,
//! see [`trial`]): one flat-out trial, then a bisection for the highest
//! loss-free rate, then trials at 50 % and 90 % of it for latency. Loss at
//! 50 % or 90 % of the rate found loss-free (three trials in a row) rejects
//! the search, which is repeated once; a second rejection, or a tunnel
//! that goes down, fails the run: nothing is written. Then iperf3 TCP with
//! 1 and 4 streams.
//!
//! `--workers 1,2` repeats the xdpsec systems with that many workers (and
//! veth queues) per gateway; strongSwan runs once. Results:
//! perf-results/peer.json, peer-*.svg, and the table in
//! perf-results/README.md.

pub(crate) mod plot;
mod profile;
mod report;
mod trial;

use crate::machine::Machine;
use crate::procfs::{nominal_mhz, wait_for_quiet_machine_up_to};
use crate::shell::{is_root, output, step, target_dir, workspace_root};
use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use report::{PeerMachine, PeerReport, SizeResult, SystemRun, TcpResult};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use trial::{Rig, SINK_ADDR};
use xdpsec_testbed::tunnel::{
    Encapsulation, GatewayKind, IkeOptions, KeySize, Side, TunnelBed, TunnelOptions, BENCH_LAN_MTU,
};

const USAGE: &str = "\
usage: cargo xtask bench peer [options]
  --workers LIST        workers (and veth queues) per gateway to sweep, e.g. 1,2 (default 1)
  --sizes LIST          inner IP packet sizes and/or imix (default 64,512,1400,imix)
  --systems LIST        of xdpsec-null,xdpsec-aes128,xdpsec-aes256,strongswan,xdpsec-strongswan (default all)
  --trial-ms N          length of each generator trial (default 500)
  --search-steps N      bisection probes for the loss-free rate (default 5)
  --iperf-seconds N     length of each iperf3 run (default 3)
  --quiet-wait-s N      before each system, wait up to N s for other work on the machine to
                        stop (default 30; the JSON records how busy it was)
  --no-save             print the results, write nothing
  --verbose             print every trial
  --profile             one extra trial per system under `perf record` (largest fixed size,
                        90 % of its loss-free rate): perf-results/peer-perf-SYSTEM.txt
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    XdpsecNull,
    XdpsecAes128,
    XdpsecAes256,
    Strongswan,
    XdpsecToStrongswan,
}

impl System {
    const ALL: [System; 5] = [
        System::XdpsecNull,
        System::XdpsecAes128,
        System::XdpsecAes256,
        System::Strongswan,
        System::XdpsecToStrongswan,
    ];

    fn name(self) -> &'static str {
        match self {
            System::XdpsecNull => "xdpsec-null",
            System::XdpsecAes128 => "xdpsec-aes128",
            System::XdpsecAes256 => "xdpsec-aes256",
            System::Strongswan => report::BASELINE,
            System::XdpsecToStrongswan => "xdpsec-strongswan",
        }
    }

    /// Whether worker counts apply (charon has no workers to sweep).
    fn has_workers(self) -> bool {
        self != System::Strongswan
    }

    fn tunnel_options(self, workers: u32) -> TunnelOptions {
        let (gateways, key_size, null_cipher) = match self {
            System::XdpsecNull => ([GatewayKind::Xdpsec; 2], KeySize::Aes128, true),
            System::XdpsecAes128 => ([GatewayKind::Xdpsec; 2], KeySize::Aes128, false),
            System::XdpsecAes256 => ([GatewayKind::Xdpsec; 2], KeySize::Aes256, false),
            System::Strongswan => ([GatewayKind::Strongswan; 2], KeySize::Aes128, false),
            System::XdpsecToStrongswan => (
                [GatewayKind::Xdpsec, GatewayKind::Strongswan],
                KeySize::Aes128,
                false,
            ),
        };
        // The mixed row negotiates its SAs: `xdpsec ike` on gwA initiates
        // to charon on gwB (PSK, aes128gcm16-prfsha256-x25519, ESP
        // aes128gcm16, as the strongSwan row uses).
        let ike = (self == System::XdpsecToStrongswan).then(IkeOptions::default);
        TunnelOptions {
            ipv4: true,
            ipv6: false,
            encap: Encapsulation::Udp,
            key_size,
            workers,
            null_cipher,
            gateways,
            ike,
            // A tuned setting: LAN links narrower than the underlay, so the
            // largest probes fit the tunnel whole on every system compared
            // and the run measures encryption, not ICMP "too big" and PMTU.
            inner_mtu: BENCH_LAN_MTU,
            ..TunnelOptions::default()
        }
    }
}

#[derive(Debug)]
struct Options {
    workers: Vec<u32>,
    sizes: Vec<String>,
    systems: Vec<System>,
    trial: Duration,
    search_steps: u32,
    iperf_seconds: u32,
    save: bool,
    verbose: bool,
    profile: bool,
    quiet_wait: Duration,
}

fn list<T>(value: Option<&&str>, flag: &str, parse: impl Fn(&str) -> Option<T>) -> Result<Vec<T>> {
    let value = value.with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
    let items: Option<Vec<T>> = value.split(',').map(|s| parse(s.trim())).collect();
    match items {
        Some(v) if !v.is_empty() => Ok(v),
        _ => bail!("{flag} {value}: not a valid list\n{USAGE}"),
    }
}

impl Options {
    fn parse(args: &[&str]) -> Result<Options> {
        let mut o = Options {
            workers: vec![1],
            sizes: ["64", "512", "1400", "imix"].map(String::from).to_vec(),
            systems: System::ALL.to_vec(),
            trial: Duration::from_millis(500),
            search_steps: 5,
            iperf_seconds: 3,
            save: true,
            verbose: false,
            profile: false,
            quiet_wait: Duration::from_secs(30),
        };
        let mut it = args.iter();
        while let Some(&arg) = it.next() {
            match arg {
                "--workers" => {
                    o.workers = list(it.next(), arg, |s| {
                        s.parse().ok().filter(|&w| (1..=64).contains(&w))
                    })?;
                }
                "--sizes" => {
                    o.sizes = list(it.next(), arg, |s| {
                        let ok = s == "imix"
                            || s.parse::<usize>()
                                .is_ok_and(|n| (52..=trial::PATH_MTU).contains(&n));
                        ok.then(|| s.to_string())
                    })?;
                }
                "--systems" => {
                    o.systems = list(it.next(), arg, |s| {
                        System::ALL.into_iter().find(|x| x.name() == s)
                    })?;
                }
                "--trial-ms" => {
                    let ms = list(it.next(), arg, |s| {
                        s.parse::<u64>().ok().filter(|&m| m >= 100)
                    })?;
                    o.trial = Duration::from_millis(ms[0]);
                }
                "--search-steps" => {
                    o.search_steps = list(it.next(), arg, |s| {
                        s.parse().ok().filter(|&n| (1..=20).contains(&n))
                    })?[0];
                }
                "--iperf-seconds" => {
                    o.iperf_seconds = list(it.next(), arg, |s| {
                        s.parse().ok().filter(|&n| (1..=60).contains(&n))
                    })?[0];
                }
                "--quiet-wait-s" => {
                    let s = list(it.next(), arg, |s| {
                        s.parse::<u64>().ok().filter(|&s| s <= 3600)
                    })?;
                    o.quiet_wait = Duration::from_secs(s[0]);
                }
                "--no-save" => o.save = false,
                "--verbose" => o.verbose = true,
                "--profile" => o.profile = true,
                "-h" | "--help" => {
                    print!("{USAGE}");
                    std::process::exit(0);
                }
                other => bail!("unknown option {other}\n{USAGE}"),
            }
        }
        o.workers.dedup();
        Ok(o)
    }
}

/// Whether `xdpsec ike` exists, and why the mixed row cannot run if not.
fn xdpsec_ike_missing(binary: &Path) -> Option<String> {
    let bin = binary.to_string_lossy();
    output(&[&bin, "ike", "--help"]).is_none().then(|| {
        "needs xdpsec's IKEv2 daemon (`xdpsec ike`), which this build does not have".into()
    })
}

pub fn run(args: &[&str]) -> Result<()> {
    let opts = Options::parse(args)?;
    crate::setup::ensure_all()?;
    if !is_root() {
        bail!("the peer benchmark builds network namespaces, loads XDP and runs charon: run it as root");
    }
    step(
        "build xdpsec and xdpsec-bench (release)",
        &[
            "cargo",
            "build",
            "--release",
            "--package",
            "xdpsec-dataplane",
            "--bin",
            "xdpsec",
            "--package",
            "xdpsec-bench",
            "--bin",
            "xdpsec-bench",
        ],
    )?;
    let release = target_dir()?.join("release");
    let (xdpsec, bench_bin) = (release.join("xdpsec"), release.join("xdpsec-bench"));
    for b in [&xdpsec, &bench_bin] {
        if !b.is_file() {
            bail!("no binary at {}", b.display());
        }
    }
    let (cpu_mhz, _) = nominal_mhz()?;
    let ike_missing = xdpsec_ike_missing(&xdpsec);

    let mut plan: Vec<(System, u32)> = Vec::new();
    for (i, &w) in opts.workers.iter().enumerate() {
        for &s in &opts.systems {
            if s.has_workers() || i == 0 {
                plan.push((s, if s.has_workers() { w } else { opts.workers[0] }));
            }
        }
    }
    let bar = ProgressBar::new((plan.len() * (opts.sizes.len() + 1)) as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let started = Instant::now();
    let mut runs: Vec<SystemRun> = Vec::new();
    let mut zero_copy = false;
    for &(system, workers) in &plan {
        let label = format!("{} workers={workers}", system.name());
        if system == System::XdpsecToStrongswan {
            if let Some(why) = &ike_missing {
                say(&bar, format!("{label}: skipped: {why}"));
                bar.inc(opts.sizes.len() as u64 + 1);
                runs.push(SystemRun {
                    system: system.name().into(),
                    workers,
                    skipped: Some(why.clone()),
                    busy_cpus_before: 0.0,
                    sizes: Vec::new(),
                    tcp: Vec::new(),
                });
                continue;
            }
        }
        let run = run_system(system, workers, &opts, &xdpsec, &bench_bin, cpu_mhz, &bar)
            .with_context(|| format!("{label}: the run saw an error, so no result is written"))?;
        zero_copy |= run
            .sizes
            .iter()
            .any(|s| s.search.trials.iter().any(|t| t.zero_copy));
        runs.push(run);
    }
    bar.finish_with_message(format!("done in {:.0} s", started.elapsed().as_secs_f64()));

    let scaling = report::scaling(&runs, &opts.workers);
    let lines = report::lines(&runs, opts.workers[0]);
    let tables = report::tables(&runs, &scaling);
    println!("\n{tables}");
    let busiest = runs.iter().map(|r| r.busy_cpus_before).fold(0.0, f64::max);
    if busiest > crate::procfs::QUIET_BUSY_CPUS {
        println!(
            "note: other work kept up to {busiest:.2} CPUs busy before some runs (busy_cpus_before in the JSON)"
        );
    }
    for line in &lines {
        println!("{line}");
    }
    if !opts.save {
        return Ok(());
    }
    let report = PeerReport {
        benchmark: "peer",
        command: format!("cargo xtask bench peer {}", args.join(" "))
            .trim()
            .to_string(),
        date: output(&["date", "-u", "+%Y-%m-%dT%H:%M:%SZ"])
            .map(|d| d.trim().to_string())
            .unwrap_or_default(),
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        machine: PeerMachine {
            machine: Machine::describe(),
            xdp_mode: "native",
            af_xdp_mode: if zero_copy { "zero-copy" } else { "copy" }.into(),
            versions: versions(),
        },
        cpu_mhz,
        method: METHOD,
        trial_ms: u64::try_from(opts.trial.as_millis()).unwrap_or(u64::MAX),
        search_steps: opts.search_steps,
        iperf_seconds: opts.iperf_seconds,
        runs,
        scaling,
        lines,
    };
    write_results(&report, &opts, &tables)
}

const METHOD: &str = "TunnelBed: hostA - gwA - [wire bridge] - gwB - hostB in network namespaces \
    on veth (XDP native, AF_XDP copy mode), ESP in UDP 4500 for every system (libipsec always \
    encapsulates), inner MTU 1400 (IMIX's 1500-byte member is capped to it). Load: \
    xdpsec-bench gen (AF_XDP, host A) to xdpsec-bench sink (AF_XDP, host B, 10.2.0.3), one \
    stream per queue, stamped with sequence numbers and CLOCK_MONOTONIC transmit times. Per \
    size: one flat-out trial; a bisection for the highest rate with no loss (mpps = what was \
    delivered at it, RFC 2544 throughput); trials at 50 % and 90 % of it for one-way latency. \
    CPU = on-CPU time of all the gateway process's threads over the trial (schedstat); worker cycles per packet \
    = CPU time of the xdpsec-worker threads (charon: the whole process) * cpu_mhz / packets \
    delivered (no PMU in this VM, so no perf stat). Generator, sink and both gateways share \
    the machine's cores.";

#[allow(clippy::too_many_arguments)]
fn run_system(
    system: System,
    workers: u32,
    opts: &Options,
    xdpsec: &Path,
    bench_bin: &Path,
    cpu_mhz: f64,
    bar: &ProgressBar,
) -> Result<SystemRun> {
    let name = system.name();
    bar.set_message(format!("{name} workers={workers}: building the tunnel"));
    let bed = TunnelBed::new(xdpsec, system.tunnel_options(workers))?;
    prepare(&bed)?;
    bar.set_message(format!(
        "{name} workers={workers}: waiting for a quiet machine"
    ));
    let busy_cpus_before = wait_for_quiet_machine_up_to(opts.quiet_wait, |line| say(bar, line))?;
    let rig = Rig {
        bed: &bed,
        bench_bin,
        queues: workers,
        trial: opts.trial,
        cpu_mhz,
    };
    let mut sizes = Vec::new();
    for size in &opts.sizes {
        let prefix = format!("{name} workers={workers} size={size}");
        let mut rejected = Vec::new();
        let (search, mut at) = loop {
            match measure_size(&rig, size, opts, bar, &prefix)? {
                Ok(done) => break done,
                Err(why) if rejected.len() + 1 < SEARCH_ATTEMPTS as usize => {
                    say(bar, format!("{prefix}: {why}; searching again"));
                    rejected.push(why);
                }
                Err(why) => {
                    rejected.push(why);
                    bail!(
                        "size {size}: loss at a rate called loss-free, in {SEARCH_ATTEMPTS} \
                         searches: {}",
                        rejected.join("; ")
                    );
                }
            }
        };
        check_up(&bed)?;
        let flat = &search.flat_out;
        let lf = &search.at_loss_free;
        say(
            bar,
            format!(
                "{prefix}: loss-free {:.3} Mpps {:.2} Gbit/s (flat out {:.3} Mpps, {:.1} % lost); \
             p99 {:.0} µs at 90 %",
                lf.delivered_pps / 1e6,
                lf.delivered_gbps,
                flat.delivered_pps / 1e6,
                100.0 * flat.lost as f64 / flat.sent.max(1) as f64,
                at[1].latency_p99_us
            ),
        );
        let at_90 = at.pop().context("two latency trials")?;
        let at_50 = at.pop().context("two latency trials")?;
        sizes.push(SizeResult {
            size: size.clone(),
            rejected_searches: rejected,
            mean_ip_bytes: lf.delivered_gbps * 1e9 / 8.0 / lf.delivered_pps.max(1.0),
            mpps: lf.delivered_pps / 1e6,
            gbps: lf.delivered_gbps,
            flat_out_mpps: flat.delivered_pps / 1e6,
            flat_out_loss: flat.lost as f64 / flat.sent.max(1) as f64,
            at_50,
            at_90,
            search,
        });
        bar.inc(1);
    }
    if opts.profile && opts.save {
        let largest = sizes
            .iter()
            .filter(|s| s.size.parse::<usize>().is_ok())
            .max_by_key(|s| s.size.parse::<usize>().unwrap_or(0));
        if let Some(s) = largest {
            bar.set_message(format!("{name} workers={workers}: profiling"));
            let out = workspace_root()
                .join("perf-results")
                .join(format!("peer-perf-{name}-w{workers}.txt"));
            profile::profile_trial(
                &rig,
                &s.size,
                0.9 * s.search.loss_free_pps,
                &format!("{name}, {workers} worker(s) per gateway"),
                &out,
            )?;
            say(
                bar,
                format!("{name} workers={workers}: profile in {}", out.display()),
            );
        }
    }
    let mut tcp = Vec::new();
    for streams in [1, 4] {
        bar.set_message(format!(
            "{name} workers={workers}: iperf3 TCP, {streams} stream(s)"
        ));
        let r = bed
            .iperf3(bed.host_addr(Side::B, false), opts.iperf_seconds, streams)
            .with_context(|| format!("iperf3 with {streams} stream(s)"))?;
        if r.received_bytes == 0 {
            bail!("iperf3 with {streams} stream(s) moved nothing: tunnel down");
        }
        tcp.push(TcpResult {
            streams,
            gbps: r.received_bits_per_second / 1e9,
            retransmits: r.retransmits,
        });
        say(
            bar,
            format!(
                "{name} workers={workers}: iperf3 TCP {streams} stream(s): {:.2} Gbit/s",
                r.received_bits_per_second / 1e9
            ),
        );
    }
    check_up(&bed)?;
    bar.inc(1);
    Ok(SystemRun {
        system: name.into(),
        workers,
        skipped: None,
        busy_cpus_before,
        sizes,
        tcp,
    })
}

/// Trials at 50 % and 90 % of the loss-free rate: a loss in each of this
/// many in a row rejects the search.
const LATENCY_ATTEMPTS: u32 = 3;
/// Searches per size: when every one is rejected, the run fails.
const SEARCH_ATTEMPTS: u32 = 2;

/// The search for the loss-free rate of `size` and the latency trials at
/// 50 % and 90 % of it; the inner `Err` says why the search's rate proved
/// not loss-free (loss in [`LATENCY_ATTEMPTS`] trials in a row).
fn measure_size(
    rig: &Rig<'_>,
    size: &str,
    opts: &Options,
    bar: &ProgressBar,
    prefix: &str,
) -> Result<std::result::Result<(trial::Search, Vec<trial::Trial>), String>> {
    let mut search = trial::search(rig, size, opts.search_steps, |what| {
        bar.set_message(format!("{prefix}: {what}"));
    })?;
    // The JSON keeps latency distributions of the 50 % and 90 % trials
    // only.
    for t in search
        .trials
        .iter_mut()
        .chain([&mut search.flat_out, &mut search.at_loss_free])
    {
        t.latency_cdf.clear();
    }
    for t in &search.trials {
        verbose(bar, opts, prefix, t);
    }
    let mut at = Vec::new();
    for share in [0.5, 0.9] {
        let rate = search.loss_free_pps * share;
        bar.set_message(format!("{prefix}: latency at {:.0} %", share * 100.0));
        let mut t = trial::run(rig, size, Some(rate))?;
        for _ in 1..LATENCY_ATTEMPTS {
            if t.loss_free() {
                break;
            }
            verbose(bar, opts, prefix, &t);
            t = trial::run(rig, size, Some(rate))?;
        }
        verbose(bar, opts, prefix, &t);
        if !t.loss_free() {
            return Ok(Err(format!(
                "lost {} of {} packets at {rate:.0} packets/s, {:.0} % of the rate found \
                 loss-free ({:.0}), in {LATENCY_ATTEMPTS} trials in a row",
                t.lost,
                t.sent,
                share * 100.0,
                search.loss_free_pps
            )));
        }
        at.push(t);
    }
    Ok(Ok((search, at)))
}

/// A line above the progress bar (also when stderr is no terminal, where
/// indicatif's own println prints nothing).
fn say(bar: &ProgressBar, line: impl AsRef<str>) {
    bar.suspend(|| eprintln!("{}", line.as_ref()));
}

fn verbose(bar: &ProgressBar, opts: &Options, prefix: &str, t: &trial::Trial) {
    if opts.verbose {
        say(
            bar,
            format!(
            "  {prefix}: offered {} sent {:.0}/s lost {} of {} dup {} reord {} delivered {:.0}/s \
             p50 {:.0} µs p99 {:.0} µs cpu gwA {:.2} gwB {:.2} machine {:.2}",
            t.offered_pps
                .map_or("flat-out".into(), |r| format!("{r:.0}/s")),
            t.sent_pps,
            t.lost,
            t.sent,
            t.duplicates,
            t.reordered,
            t.delivered_pps,
            t.latency_p50_us,
            t.latency_p99_us,
            t.gw_a.cpu_share,
            t.gw_b.cpu_share,
            t.machine_busy_cpus
        ),
        );
    }
}

/// The sink's address on host B, neighbour entries warm, the tunnel up.
fn prepare(bed: &TunnelBed) -> Result<()> {
    crate::bench_dataplane::quiet_wire_bridge(bed)?;
    let host_b = bed.host(Side::B);
    host_b
        .ns
        .add_addr(&host_b.eth.name, IpAddr::V4(SINK_ADDR), 24)?;
    // Through gwB's kernel: the data plane takes next hops from its
    // neighbour table, and the first packets must not wait on ARP.
    bed.gateway(Side::B).ns.ping(IpAddr::V4(SINK_ADDR), 1)?;
    check_up(bed)
}

fn check_up(bed: &TunnelBed) -> Result<()> {
    for side in Side::BOTH {
        if !bed.is_running(side) {
            bail!(
                "the gateway process of {side} is not running: tunnel down\n{}",
                bed.logs()
            );
        }
    }
    let ping = bed.ping(Side::A, Side::B, false, 3)?;
    if !ping.all_answered_once() {
        bail!("tunnel down: {}\n{}", ping.output, bed.logs());
    }
    Ok(())
}

fn versions() -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    let root = workspace_root();
    let root = root.to_string_lossy();
    let git = output(&["git", "-C", &root, "describe", "--always", "--dirty"])
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    v.insert("xdpsec".into(), git);
    v.insert(
        "strongswan".into(),
        output(&["dpkg-query", "-W", "-f", "${Version}", "strongswan-charon"])
            .unwrap_or_else(|| "unknown".into()),
    );
    v.insert(
        "iperf3".into(),
        output(&["iperf3", "--version"])
            .and_then(|s| s.lines().next().map(str::to_string))
            .unwrap_or_else(|| "unknown".into()),
    );
    v
}

fn write_results(report: &PeerReport, opts: &Options, tables: &str) -> Result<()> {
    let dir = workspace_root().join("perf-results");
    std::fs::create_dir_all(&dir)?;
    let json = dir.join("peer.json");
    std::fs::write(&json, serde_json::to_string_pretty(report)? + "\n")
        .with_context(|| format!("writing {}", json.display()))?;
    let first = opts.workers[0];
    let svg = |name: &str| -> PathBuf { dir.join(name) };
    plot::throughput(
        &svg("peer-throughput.svg"),
        &report.runs,
        first,
        &opts.sizes,
    )?;
    let cdf_size = if opts.sizes.iter().any(|s| s == "1400") {
        "1400".to_string()
    } else {
        opts.sizes[opts.sizes.len() - 1].clone()
    };
    plot::latency_cdf(&svg("peer-latency-cdf.svg"), &report.runs, first, &cdf_size)?;
    let mut plots = vec![
        ("peer-throughput.svg", "throughput against packet size"),
        ("peer-latency-cdf.svg", "latency CDF"),
    ];
    if opts.workers.len() > 1 {
        plot::workers(
            &svg("peer-workers.svg"),
            &report.scaling,
            &cdf_size,
            &opts.workers,
        )?;
        plots.push(("peer-workers.svg", "throughput against workers"));
    }
    let readme_path = dir.join("README.md");
    let readme = std::fs::read_to_string(&readme_path).unwrap_or_default();
    let mut generated = format!(
        "Latest run: {} (`{}`), {}, {} CPUs, kernel {}, XDP {}, AF_XDP {}, strongSwan {}; \
         trials of {} ms, busy CPUs before the runs up to {:.2} (other work on the machine).\n\n",
        report.date,
        report.command,
        report.machine.machine.cpu_model,
        report.machine.machine.cores,
        report.machine.machine.kernel,
        report.machine.xdp_mode,
        report.machine.af_xdp_mode,
        report
            .machine
            .versions
            .get("strongswan")
            .map_or("?", String::as_str),
        report.trial_ms,
        report
            .runs
            .iter()
            .map(|r| r.busy_cpus_before)
            .fold(0.0, f64::max),
    );
    generated.push_str("```\n");
    for line in &report.lines {
        generated.push_str(line);
        generated.push('\n');
    }
    generated.push_str("```\n\n");
    generated.push_str(tables);
    generated.push('\n');
    for (file, what) in plots {
        generated.push_str(&format!("![{what}]({file})\n\n"));
    }
    std::fs::write(&readme_path, report::splice_readme(&readme, &generated))
        .with_context(|| format!("writing {}", readme_path.display()))?;
    println!("wrote {} and the plots beside it", json.display());
    Ok(())
}
