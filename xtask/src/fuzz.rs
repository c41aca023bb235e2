//! `cargo xtask fuzz [--seconds N] [--merge] [TARGET...]`: runs each
//! cargo-fuzz target (fuzz/fuzz_targets, bodies in fuzz/harness) for N
//! seconds with libFuzzer on the nightly toolchain, prints executions per
//! second and coverage per target, and records them with the machine in
//! perf-results/fuzz.json.
//!
//! The committed corpus (`fuzz/corpus/<target>`) is read, never written
//! by a run: new inputs go to `fuzz/corpus-new/<target>` (ignored by git)
//! unless `--merge` folds the ones that add coverage into the committed
//! corpus afterwards. Crash reproducers land in `fuzz/artifacts/<target>`,
//! where the replay test (`cargo test`, fuzz/harness/tests/replay.rs)
//! picks them up once committed. `cargo xtask test` does not fuzz; it runs
//! that replay.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::machine::Machine;
use crate::shell::{output, step, workspace_root};

const DEFAULT_SECONDS: u64 = 30;

/// What one target's run gave.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct TargetResult {
    target: String,
    /// Wall time libFuzzer was given (`-max_total_time`).
    seconds: u64,
    /// Inputs executed (`stat::number_of_executed_units`).
    runs: u64,
    /// `stat::average_exec_per_sec`.
    execs_per_sec: u64,
    /// Coverage at the end: `cov` is the number of covered code edges
    /// (inline 8-bit counters that were hit), `ft` the number of features
    /// (edges with hit-count buckets and comparison operands), as libFuzzer
    /// counts them.
    cov: u64,
    ft: u64,
    /// Edges instrumented in the whole binary (target, xdpsec crates and
    /// all their dependencies), the bound `cov` is out of.
    edges_instrumented: u64,
    /// Inputs in the corpus at the end (committed plus new).
    corpus_units: u64,
    /// Inputs the run added.
    new_units: u64,
    peak_rss_mb: u64,
    /// A crash, timeout or out-of-memory reproducer, if one was written.
    artifact: Option<String>,
    unix_time: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct FuzzReport {
    benchmark: String,
    command: String,
    /// libFuzzer's sanitizer setting: `none` (every target is safe Rust;
    /// panics, overflows and bounds are caught without one, and the C in
    /// aws-lc is not instrumented either way).
    sanitizer: String,
    machine: serde_json::Value,
    targets: Vec<TargetResult>,
}

struct Options {
    seconds: u64,
    merge: bool,
    targets: Vec<String>,
}

fn parse_args(args: &[&str]) -> Result<Options> {
    let mut o = Options {
        seconds: DEFAULT_SECONDS,
        merge: false,
        targets: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--seconds" => {
                let v = it.next().context("--seconds needs a number")?;
                o.seconds = v.parse().with_context(|| format!("--seconds {v}"))?;
            }
            "--merge" => o.merge = true,
            "-h" | "--help" => {
                println!(
                    "usage: cargo xtask fuzz [--seconds N] [--merge] [TARGET...]\n\n\
                     Runs each fuzz target (all without TARGET) for N seconds (default \
                     {DEFAULT_SECONDS}), prints exec/s and coverage, writes perf-results/fuzz.json.\n\
                     --merge: add the new inputs that reach new edges to fuzz/corpus/<target>."
                );
                std::process::exit(0);
            }
            t if t.starts_with('-') => bail!("unknown option {t}"),
            t => o.targets.push(t.to_owned()),
        }
    }
    Ok(o)
}

/// cargo-fuzz from the registry if it is missing, and a nightly toolchain.
fn ensure_tools() -> Result<()> {
    if output(&["cargo", "+nightly", "--version"]).is_none() {
        bail!(
            "the nightly toolchain is missing; libFuzzer needs it: \
             `rustup toolchain install nightly` (or `cargo xtask setup`)"
        );
    }
    if output(&["cargo", "fuzz", "--version"]).is_none() {
        step(
            "install cargo-fuzz",
            &["cargo", "install", "cargo-fuzz", "--locked"],
        )?;
    }
    Ok(())
}

pub fn run(args: &[&str]) -> Result<()> {
    let opts = parse_args(args)?;
    ensure_tools()?;
    let all: Vec<String> = output(&["cargo", "+nightly", "fuzz", "list"])
        .context("`cargo +nightly fuzz list` failed")?
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect();
    let targets = if opts.targets.is_empty() {
        all.clone()
    } else {
        for t in &opts.targets {
            if !all.contains(t) {
                bail!("no fuzz target {t}; there are: {}", all.join(", "));
            }
        }
        opts.targets.clone()
    };
    // One build for all, so that no target's time goes to compiling.
    step(
        "build the fuzz targets (nightly, libFuzzer)",
        &["cargo", "+nightly", "fuzz", "build", "-s", "none"],
    )?;
    let root = workspace_root();
    let mut results = Vec::new();
    for t in &targets {
        let fresh = root.join("fuzz/corpus-new").join(t);
        std::fs::create_dir_all(&fresh)?;
        std::fs::create_dir_all(root.join("fuzz/corpus").join(t))?;
        eprintln!("\n==> fuzz {t} for {} s", opts.seconds);
        let r = run_target(t, opts.seconds)?;
        println!(
            "fuzz {:<18} {:>8} exec/s  cov {:>6}  ft {:>7}  corpus {:>5}  runs {:>9}{}",
            r.target,
            r.execs_per_sec,
            r.cov,
            r.ft,
            r.corpus_units,
            r.runs,
            r.artifact
                .as_deref()
                .map(|a| format!("  CRASH: {a}"))
                .unwrap_or_default()
        );
        if opts.merge && r.artifact.is_none() {
            let corpus = format!("fuzz/corpus/{t}");
            let fresh = format!("fuzz/corpus-new/{t}");
            // A set cover over edges alone (not hit counts): the smallest
            // set of new inputs that reaches every edge the committed corpus
            // does not, so the committed corpus stays small.
            step(
                &format!("merge what raises coverage into {corpus}"),
                &[
                    "cargo",
                    "+nightly",
                    "fuzz",
                    "run",
                    "-s",
                    "none",
                    t,
                    &corpus,
                    &fresh,
                    "--",
                    "-set_cover_merge=1",
                    "-use_counters=0",
                ],
            )?;
        }
        results.push(r);
    }
    println!(
        "\n| target | exec/s | cov (edges) | ft (features) | corpus | runs in {} s |",
        opts.seconds
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &results {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.target, r.execs_per_sec, r.cov, r.ft, r.corpus_units, r.runs
        );
    }
    write_report(&results, opts.seconds)?;
    let crashed: Vec<&TargetResult> = results.iter().filter(|r| r.artifact.is_some()).collect();
    if !crashed.is_empty() {
        for r in &crashed {
            eprintln!(
                "xtask: {} found a bug; reproduce with `cargo +nightly fuzz run -s none {} {}`, \
                 fix it, and commit the reproducer (the replay test keeps it fixed)",
                r.target,
                r.target,
                r.artifact.as_deref().unwrap_or_default()
            );
        }
        bail!("{} target(s) crashed", crashed.len());
    }
    Ok(())
}

/// Runs one target for `seconds` and reads libFuzzer's statistics.
fn run_target(target: &str, seconds: u64) -> Result<TargetResult> {
    let root = workspace_root();
    let max_time = format!("-max_total_time={seconds}");
    let corpus = format!("fuzz/corpus-new/{target}");
    let seeds = format!("fuzz/corpus/{target}");
    let mut child = Command::new("cargo")
        .args([
            "+nightly", "fuzz", "run", "-s", "none", target, &corpus, &seeds,
        ])
        .args([
            "--",
            &max_time,
            "-print_final_stats=1",
            // A single input that takes this long is a hang: a bug.
            "-timeout=25",
        ])
        .current_dir(&root)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start cargo fuzz")?;
    let stdout = child.stdout.take().context("stdout")?;
    // cargo-fuzz names the failing input on stdout; libFuzzer reports on
    // stderr. Both are read (stdout on a thread so neither pipe fills).
    let out_thread = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    let mut r = TargetResult {
        target: target.to_owned(),
        seconds,
        ..TargetResult::default()
    };
    let stderr = child.stderr.take().context("stderr")?;
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        // Progress on the terminal without a line per new input.
        if !(line.contains("\tNEW ") || line.contains("\tREDUCE ")) {
            eprintln!("{line}");
        }
        read_stats_line(&line, &mut r);
    }
    let status = child.wait()?;
    for line in out_thread.join().unwrap_or_default() {
        println!("{line}");
        read_stats_line(&line, &mut r);
    }
    if !status.success() && r.artifact.is_none() {
        r.artifact = Some(format!("(cargo fuzz exited with {status}; see its output)"));
    }
    r.unix_time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    Ok(r)
}

/// The number after `key` in `line` (`cov: 123`, `exec/s: 45`).
fn number_after(line: &str, key: &str) -> Option<u64> {
    let at = line.find(key)? + key.len();
    line[at..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn read_stats_line(line: &str, r: &mut TargetResult) {
    if line.starts_with("INFO: Loaded") && line.contains("inline 8-bit counters") {
        if let Some(n) = number_after(line, "(") {
            r.edges_instrumented += n;
        }
    }
    if line.starts_with('#') && line.contains(" cov: ") {
        if let Some(v) = number_after(line, " cov:") {
            r.cov = v;
        }
        if let Some(v) = number_after(line, " ft:") {
            r.ft = v;
        }
        if let Some(v) = number_after(line, " corp:") {
            r.corpus_units = v;
        }
    }
    for (key, field) in [
        ("stat::number_of_executed_units:", &mut r.runs),
        ("stat::average_exec_per_sec:", &mut r.execs_per_sec),
        ("stat::new_units_added:", &mut r.new_units),
        ("stat::peak_rss_mb:", &mut r.peak_rss_mb),
    ] {
        if let Some(v) = line.strip_prefix(key).and_then(|_| number_after(line, key)) {
            *field = v;
        }
    }
    // libFuzzer: "Test unit written to fuzz/artifacts/<target>/crash-..."
    if let Some(path) = line.split("Test unit written to ").nth(1) {
        r.artifact = Some(path.trim().to_owned());
    }
}

/// perf-results/fuzz.json: this run's targets replace their earlier
/// entries; entries of other targets stay if they were measured on the
/// same machine.
fn write_report(results: &[TargetResult], seconds: u64) -> Result<()> {
    let machine = serde_json::to_value(Machine::describe())?;
    let path = workspace_root().join("perf-results/fuzz.json");
    let mut targets: Vec<TargetResult> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_json::from_str::<FuzzReport>(&t).ok())
        .filter(|old| old.machine == machine)
        .map(|old| old.targets)
        .unwrap_or_default();
    for r in results {
        targets.retain(|t| t.target != r.target);
        targets.push(r.clone());
    }
    targets.sort_by(|a, b| a.target.cmp(&b.target));
    let report = FuzzReport {
        benchmark: "fuzz".to_owned(),
        command: format!("cargo xtask fuzz --seconds {seconds}"),
        sanitizer: "none".to_owned(),
        machine,
        targets,
    };
    std::fs::create_dir_all(path.parent().context("perf-results")?)?;
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("wrote {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_statistics() {
        let mut r = TargetResult::default();
        for line in [
            "INFO: Loaded 1 modules   (183921 inline 8-bit counters): 183921 [0x55, 0x56), ",
            "#2\tINITED cov: 1200 ft: 1300 corp: 4/1200b exec/s: 0 rss: 40Mb",
            "#7715\tDONE   cov: 2345 ft: 6789 corp: 120/10Kb lim: 4096 exec/s: 385 rss: 64Mb",
            "Done 7715 runs in 21 second(s)",
            "stat::number_of_executed_units: 7715",
            "stat::average_exec_per_sec:     367",
            "stat::new_units_added:          98",
            "stat::slowest_unit_time_sec:    0",
            "stat::peak_rss_mb:              64",
        ] {
            read_stats_line(line, &mut r);
        }
        assert_eq!(r.edges_instrumented, 183921);
        assert_eq!((r.cov, r.ft, r.corpus_units), (2345, 6789, 120));
        assert_eq!(
            (r.runs, r.execs_per_sec, r.new_units, r.peak_rss_mb),
            (7715, 367, 98, 64)
        );
        assert!(r.artifact.is_none());
        read_stats_line(
            "artifact_prefix='fuzz/artifacts/x/'; Test unit written to fuzz/artifacts/x/crash-abc",
            &mut r,
        );
        assert_eq!(r.artifact.as_deref(), Some("fuzz/artifacts/x/crash-abc"));
    }
}
