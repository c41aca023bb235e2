//! `cargo xtask bench pipeline`: the worker's per-packet path on frames in
//! memory, no kernel I/O (`xdpsec-bench pipeline`, `bench/src/pipeline.rs`),
//! in cycles per packet at the nominal clock; summary lines,
//! perf-results/pipeline.json, perf-results/pipeline.svg and a section of
//! perf-results/README.md.

use crate::bench_peer::plot::lines_chart;
use crate::machine::Machine;
use crate::procfs::{nominal_mhz, wait_for_quiet_machine_up_to};
use crate::shell::workspace_root;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Markers around the generated part of perf-results/README.md.
const README_BEGIN: &str = "<!-- bench pipeline: generated, begin -->";
const README_END: &str = "<!-- bench pipeline: generated, end -->";
const SIZES: [&str; 4] = ["64", "512", "1400", "imix"];
const CIPHERS: [&str; 3] = ["aes128", "aes256", "null"];

/// What `xdpsec-bench pipeline` reports (nanoseconds).
#[derive(Debug, Deserialize)]
struct BenchReport {
    backend: String,
    batch: usize,
    chunk: usize,
    inner_mtu: usize,
    cells: Vec<Cell>,
    scaling: Vec<ScalingRow>,
    capacity: Vec<CapacityRow>,
}

/// Installing many SAs of one direction: time and memory per SA.
#[derive(Debug, Deserialize, Serialize, Clone)]
struct CapacityRow {
    sas: usize,
    dir: String,
    install_s: f64,
    rust_heap_per_sa: f64,
    key_context_per_sa: f64,
    bytes_per_sa: f64,
}

#[derive(Debug, Deserialize)]
struct Cell {
    dir: String,
    size: String,
    cipher: String,
    sas: usize,
    policies: usize,
    packets_per_round: usize,
    rounds: usize,
    ns_per_packet_with_copy: f64,
    copy_ns_per_packet: f64,
    ns_per_packet: f64,
    wall_ns_per_packet: f64,
    raw_aead_ns: f64,
}

#[derive(Debug, Deserialize, Serialize, Clone)]
struct ScalingRow {
    dir: String,
    size: String,
    cipher: String,
    sharing: String,
    packets_per_worker: usize,
    rounds: usize,
    one_worker_pps: f64,
    two_worker_pps: f64,
    scaling: f64,
    one_worker_cpu_pps: f64,
    two_worker_cpu_pps: f64,
    scaling_cpu: f64,
    parallelism: f64,
}

#[derive(Debug, Serialize)]
struct Row {
    dir: String,
    size: String,
    cipher: String,
    workers: u32,
    sas: usize,
    policies: usize,
    packets_per_round: usize,
    rounds: usize,
    /// Thread CPU time at the nominal clock, median over rounds, the
    /// frame copy subtracted.
    cycles_per_packet: f64,
    /// The same on the wall clock (includes time the thread waited for a
    /// CPU while other work held it).
    wall_cycles_per_packet: f64,
    /// The frame copy (template into the work buffer), subtracted above.
    copy_cycles: f64,
    /// The same cipher's raw seal of the same inner sizes, same run.
    raw_aead_cycles: f64,
    ns_per_packet: f64,
    ns_per_packet_with_copy: f64,
}

#[derive(Debug, Serialize)]
struct Clock {
    mhz: f64,
    source: String,
    method: &'static str,
}

#[derive(Debug, Serialize)]
struct PipelineReport {
    benchmark: &'static str,
    command: &'static str,
    unix_time: u64,
    machine: Machine,
    load_average_before: String,
    /// Busy CPUs of the whole machine just before the run (1 s sample,
    /// after waiting up to 20 s for it to be quiet).
    busy_cpus_before: f64,
    load_average_after: String,
    clock: Clock,
    backend: String,
    batch: usize,
    inbound_chunk: usize,
    inner_mtu: usize,
    results: Vec<Row>,
    scaling: Vec<ScalingRow>,
    capacity: Vec<CapacityRow>,
}

/// Nanoseconds at `mhz` in cycles.
fn cycles(ns: f64, mhz: f64) -> f64 {
    ns * mhz / 1000.0
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

pub fn run() -> Result<()> {
    let (mhz, source) = nominal_mhz()?;
    let argv_build = [
        "cargo",
        "build",
        "--release",
        "--quiet",
        "--package",
        "xdpsec-bench",
        "--bin",
        "xdpsec-bench",
    ];
    crate::shell::step("build xdpsec-bench (release)", &argv_build)?;
    let busy_before = wait_for_quiet_machine_up_to(Duration::from_secs(20), |l| eprintln!("{l}"))?;
    let load_before = load_average();
    let argv = [
        "cargo",
        "run",
        "--release",
        "--quiet",
        "--package",
        "xdpsec-bench",
        "--bin",
        "xdpsec-bench",
        "--",
        "pipeline",
    ];
    eprintln!("\n==> the pipeline in memory: {}", argv.join(" "));
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .current_dir(workspace_root())
        .stderr(Stdio::inherit())
        .output()
        .context("cannot start cargo")?;
    if !out.status.success() {
        bail!("`{}` failed ({})", argv.join(" "), out.status);
    }
    let bench: BenchReport =
        serde_json::from_slice(&out.stdout).context("reading xdpsec-bench pipeline's report")?;
    let rows: Vec<Row> = bench
        .cells
        .iter()
        .map(|c| Row {
            dir: c.dir.clone(),
            size: c.size.clone(),
            cipher: c.cipher.clone(),
            workers: 1,
            sas: c.sas,
            policies: c.policies,
            packets_per_round: c.packets_per_round,
            rounds: c.rounds,
            cycles_per_packet: cycles(c.ns_per_packet, mhz),
            wall_cycles_per_packet: cycles(c.wall_ns_per_packet, mhz),
            copy_cycles: cycles(c.copy_ns_per_packet, mhz),
            raw_aead_cycles: cycles(c.raw_aead_ns, mhz),
            ns_per_packet: c.ns_per_packet,
            ns_per_packet_with_copy: c.ns_per_packet_with_copy,
        })
        .collect();
    for r in &rows {
        println!(
            "pipeline dir={} size={} cipher={} workers=1 sas={} policies={} cycles_per_packet={:.0} raw_aead_cycles={:.0}",
            r.dir, r.size, r.cipher, r.sas, r.policies, r.cycles_per_packet, r.raw_aead_cycles
        );
    }
    for s in &bench.scaling {
        println!(
            "pipeline dir={} size={} cipher={} workers=2 sas={} scaling={:.2}",
            s.dir, s.size, s.cipher, s.sharing, s.scaling
        );
    }
    for c in &bench.capacity {
        println!(
            "pipeline capacity dir={} sas={} install_s={:.2} bytes_per_sa={:.0}",
            c.dir, c.sas, c.install_s, c.bytes_per_sa
        );
    }
    println!(
        "cycles = thread CPU nanoseconds (CLOCK_THREAD_CPUTIME_ID; Instant wall time in the JSON) x {mhz:.0} MHz \
         ({source}); the frame copy is measured alone and subtracted"
    );
    let report = PipelineReport {
        benchmark: "pipeline",
        command: "cargo xtask bench pipeline",
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
        machine: Machine::describe(),
        load_average_before: load_before,
        busy_cpus_before: busy_before,
        load_average_after: load_average(),
        clock: Clock {
            mhz,
            source,
            method: "the bench thread's CPU time (CLOCK_THREAD_CPUTIME_ID) over a round of \
                     packets, nanoseconds per packet times the nominal clock; the wall clock \
                     (std::time::Instant) beside it as wall_cycles_per_packet; no TSC read (no \
                     unsafe code outside the AF_XDP module)",
        },
        backend: bench.backend,
        batch: bench.batch,
        inbound_chunk: bench.chunk,
        inner_mtu: bench.inner_mtu,
        results: rows,
        scaling: bench.scaling,
        capacity: bench.capacity,
    };
    let dir = workspace_root().join("perf-results");
    std::fs::create_dir_all(&dir)?;
    let json = dir.join("pipeline.json");
    std::fs::write(&json, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("wrote {}", json.display());
    let svg = dir.join("pipeline.svg");
    plot(&svg, &report.results)?;
    println!("wrote {}", svg.display());
    let readme = dir.join("README.md");
    let text = std::fs::read_to_string(&readme).unwrap_or_default();
    std::fs::write(&readme, splice_readme(&text, &summary(&report)))?;
    println!("updated {}", readme.display());
    Ok(())
}

/// The base cells: one SA, one policy, one worker.
fn base<'a>(rows: &'a [Row], dir: &str, size: &str, cipher: &str) -> Option<&'a Row> {
    rows.iter().find(|r| {
        r.dir == dir && r.size == size && r.cipher == cipher && r.sas == 1 && r.policies == 1
    })
}

fn plot(path: &std::path::Path, rows: &[Row]) -> Result<()> {
    let mut series = Vec::new();
    for dir in ["out", "in"] {
        for cipher in CIPHERS {
            let points = SIZES
                .iter()
                .enumerate()
                .filter_map(|(i, size)| {
                    base(rows, dir, size, cipher).map(|r| (i as f64, r.cycles_per_packet))
                })
                .collect();
            series.push((format!("{dir} {cipher}"), points));
        }
    }
    for cipher in ["aes128", "aes256"] {
        let points = SIZES
            .iter()
            .enumerate()
            .filter_map(|(i, size)| {
                base(rows, "out", size, cipher).map(|r| (i as f64, r.raw_aead_cycles))
            })
            .collect();
        series.push((format!("raw seal {cipher}"), points));
    }
    let labels: Vec<String> = SIZES.iter().map(|s| s.to_string()).collect();
    lines_chart(
        path,
        "Pipeline in memory: cycles per packet (1 worker, 1 SA, 1 policy)",
        "inner IP packet size (bytes)",
        "cycles per packet",
        &labels,
        &series,
    )
}

fn summary(r: &PipelineReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "**Machine.** {} ({} cores), Linux {}, {}; {:.2} CPUs busy just before, load \
         average {} before, {} after (the machine is shared: single figures move between \
         runs).\n\n\
         **Clock.** Cycles = the bench thread's CPU time per packet (`CLOCK_THREAD_CPUTIME_ID` \
         over a round, so time waiting for a CPU that other work holds is not counted; the \
         `Instant` wall-clock figure is `wall_cycles_per_packet` in the JSON) x {:.0} MHz \
         ({}); no TSC read. Median of {} rounds per figure; a round is up to {} packets \
         (fewer where that would take over 150 ms). The frame copy (a template into \
         the work buffer, or the ESP frame for inbound) is timed alone and subtracted: \
         `copy_cycles` in `pipeline.json`. Raw seal: the same cipher's `seal_in_place` \
         of the same inner sizes (aws-lc-rs for AES, the null cipher for null).\n",
        r.machine.cpu_model,
        r.machine.cores,
        r.machine.kernel,
        r.machine.rustc,
        r.busy_cpus_before,
        r.load_average_before,
        r.load_average_after,
        r.clock.mhz,
        r.clock.source,
        r.results.first().map_or(0, |x| x.rounds),
        r.results
            .iter()
            .map(|x| x.packets_per_round)
            .max()
            .unwrap_or(0),
    );
    let _ = writeln!(
        s,
        "Cycles per packet, 1 worker, 1 SA, 1 policy, by inner IP packet size (IMIX: \
         7:4:1 of 64/576/{} bytes):\n",
        r.inner_mtu
    );
    let _ = writeln!(
        s,
        "| size | out aes128 | out aes256 | out null | in aes128 | in aes256 | in null | raw seal aes128 | raw seal aes256 |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let fmt =
        |row: Option<&Row>, f: fn(&Row) -> f64| row.map_or("-".into(), |x| format!("{:.0}", f(x)));
    for size in SIZES {
        let mut line = format!("| {size} |");
        for dir in ["out", "in"] {
            for cipher in CIPHERS {
                let _ = write!(
                    line,
                    " {} |",
                    fmt(base(&r.results, dir, size, cipher), |x| x.cycles_per_packet)
                );
            }
        }
        for cipher in ["aes128", "aes256"] {
            let _ = write!(
                line,
                " {} |",
                fmt(base(&r.results, "out", size, cipher), |x| x.raw_aead_cycles)
            );
        }
        let _ = writeln!(s, "{line}");
    }
    let _ = writeln!(
        s,
        "\nMany SAs and policies, aes128 (the packet hits the last SA and the last policy \
         installed; outbound policies are looked up by prefix-length group, one hash probe per \
         group, and all of these are one group; outbound reaches its SA through the policy, so \
         the SA count only matters to inbound's lookup by SPI):\n"
    );
    let _ = writeln!(
        s,
        "| dir | size | SAs | policies | cycles per packet | raw seal |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
    let mut sweep: Vec<&Row> = r
        .results
        .iter()
        .filter(|x| x.cipher == "aes128" && (x.size == "64" || x.size == "1400"))
        .collect();
    sweep.sort_by_key(|x| (x.dir != "out", x.size != "1400", x.policies, x.sas));
    for x in sweep {
        if x.dir == "in" && x.policies > 1 {
            continue;
        }
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.0} | {:.0} |",
            x.dir, x.size, x.sas, x.policies, x.cycles_per_packet, x.raw_aead_cycles
        );
    }
    let _ = writeln!(
        s,
        "\nTwo workers (threads, each with its own frames, counters and reassembly table), \
         outbound aes128; scaling = 2-worker packets/s / (2 x 1-worker packets/s), a \
         2-worker round's rate being both workers' packets over the slower one's wall time. \
         On this 2-core machine shared with other work, the wall-clock scaling mostly shows \
         how much CPU the scheduler gave; the CPU-time scaling (each worker's packets over \
         its own CPU time) shows what the workers cost each other (the shared SA's atomics, \
         the shared cache) when they did run side by side: parallelism = both workers' CPU \
         time over the slower one's wall time, 2 when they did, 1 when they took turns. \
         Worker w is pinned to CPU w, as the data plane pins its workers:\n"
    );
    let _ = writeln!(
        s,
        "| size | SA | 1 worker Mpps | 2 workers Mpps | scaling | scaling on CPU time | parallelism |"
    );
    let _ = writeln!(s, "|---:|---|---:|---:|---:|---:|---:|");
    for x in &r.scaling {
        let _ = writeln!(
            s,
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            x.size,
            x.sharing,
            x.one_worker_pps / 1e6,
            x.two_worker_pps / 1e6,
            x.scaling,
            x.scaling_cpu,
            x.parallelism
        );
    }
    let _ = writeln!(
        s,
        "\nCapacity, aes128: SAs of one direction installed in fresh tables in one step \
         (`Tables::add_bulk`, as the data plane loads a static config), and the memory each \
         holds: the Rust heap as the bench's counting allocator sees it (SA state, an inbound \
         SA's anti-replay ring at the default window of 1024 without ESN, counters, table \
         entries) plus what aws-lc allocates for the key outside it (from the resident size \
         while {KEY_PROBE_NOTE}). An inbound SA with ESN keeps 8 numbers per replay slot \
         instead of 32 and holds 1536 bytes more:\n"
    );
    let _ = writeln!(
        s,
        "| dir | SAs | install (s) | bytes per SA | of which Rust heap | key context |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|");
    for c in &r.capacity {
        let _ = writeln!(
            s,
            "| {} | {} | {:.2} | {:.0} | {:.0} | {:.0} |",
            c.dir, c.sas, c.install_s, c.bytes_per_sa, c.rust_heap_per_sa, c.key_context_per_sa
        );
    }
    let _ = writeln!(
        s,
        "\nPlot: `pipeline.svg`. Results with the machine: `pipeline.json`.\n"
    );
    s
}

/// How the key context is measured, for the summary.
const KEY_PROBE_NOTE: &str = "20,000 keys are made first thing in the run";

/// `readme` with the text between the markers replaced by `generated` (the
/// section and its markers appended if missing).
fn splice_readme(readme: &str, generated: &str) -> String {
    let block = format!("{README_BEGIN}\n{generated}{README_END}");
    match (readme.find(README_BEGIN), readme.find(README_END)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{block}{}", &readme[..b], &readme[e + README_END.len()..])
        }
        _ => format!(
            "{}\n\n## The pipeline in memory (`cargo xtask bench pipeline`)\n\n{block}\n",
            readme.trim_end()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanoseconds_to_cycles_at_the_nominal_clock() {
        assert_eq!(cycles(100.0, 2100.0), 210.0);
        assert_eq!(cycles(0.5, 3000.0), 1.5);
    }

    #[test]
    fn splices_between_markers_or_appends() {
        let fresh = splice_readme("# perf-results\n", "table 1\n");
        assert!(fresh.contains("## The pipeline in memory"));
        let again = splice_readme(&format!("{fresh}\nafter\n"), "table 2\n");
        assert!(again.contains("table 2") && !again.contains("table 1"));
        assert!(again.ends_with("after\n"));
        assert_eq!(again.matches(README_BEGIN).count(), 1);
    }
}
