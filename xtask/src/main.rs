//! `cargo xtask COMMAND`: the project's entry points. Every command first makes
//! sure the machine has what it needs (see `setup`), so the README's two
//! commands work on a fresh machine.
#![deny(unsafe_code)]

mod bench;
mod bench_dataplane;
mod bench_peer;
mod bench_pipeline;
mod deb;
mod demo;
mod fuzz;
mod machine;
mod procfs;
mod setup;
mod shell;

use anyhow::{bail, Result};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  setup         install what is missing (Debian packages, nightly rust-src, bpf-linker)
  test          setup, format and lint checks, then every test (the CI command)
  demo          two xdpsec gateways in namespaces: ping, capture, tshark and iperf3 through the tunnel
  bench esp     criterion benchmarks of the ESP core, summary and perf-results/esp-core.json
  bench csum    criterion: finishing partial TCP/UDP checksums against the AES-GCM seal, perf-results/l4-checksum.json
  bench dataplane  64 and 1400-byte UDP through the tunnel (null cipher ceiling vs AES-GCM), perf-results/dataplane.json
  bench pipeline  the worker's per-packet path on frames in memory (no kernel I/O): cycles per packet
                by size, cipher, SAs, policies, workers; perf-results/pipeline.json
  bench peer    xdpsec (null, AES-GCM-128/256) against strongSwan on one topology: loss-free rate,
                latency, CPU, iperf3; --workers 1,2 sweeps; perf-results/peer.json (see --help)
  deb [--binary PATH] [--out DIR]
                the Debian package: release-builds xdpsec (or takes PATH), man pages and
                completions from its CLI, systemd units, /etc examples; DIR/xdpsec_VERSION_ARCH.deb
                (default DIR: target/debian)
  fuzz [--seconds N] [--merge] [TARGET...]
                each libFuzzer target for N s (default 30; nightly, installs cargo-fuzz):
                exec/s and coverage per target, perf-results/fuzz.json; not part of `test`,
                which replays the committed corpora and crash reproducers instead
";

fn main() {
    if let Err(err) = run() {
        eprintln!("xtask: error: {err:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["setup"] => setup::ensure_all(),
        ["test"] => test(),
        ["demo"] => demo::run(),
        ["bench", "esp"] => bench::esp(),
        ["bench", "csum"] => bench::csum(),
        ["bench", "dataplane"] => bench_dataplane::run(),
        ["bench", "pipeline"] => bench_pipeline::run(),
        ["bench", "peer", rest @ ..] => bench_peer::run(rest),
        ["fuzz", rest @ ..] => fuzz::run(rest),
        ["deb", rest @ ..] => deb(rest),
        [] | ["help"] | ["-h"] | ["--help"] => {
            print!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command {:?}\n{USAGE}", other.join(" ")),
    }
}

/// `cargo xtask deb [--binary PATH] [--out DIR]`.
fn deb(args: &[&str]) -> Result<()> {
    let mut binary = None;
    let mut out = None;
    let mut rest = args.iter();
    while let Some(&arg) = rest.next() {
        let value = |name: &str, v: Option<&&str>| -> Result<std::path::PathBuf> {
            v.map(std::path::PathBuf::from)
                .ok_or_else(|| anyhow::anyhow!("{name} needs a value"))
        };
        match arg {
            "--binary" => binary = Some(value(arg, rest.next())?),
            "--out" => out = Some(value(arg, rest.next())?),
            other => bail!("deb: unknown argument {other:?} (--binary PATH, --out DIR)"),
        }
    }
    let target = shell::target_dir()?;
    let binary = match binary {
        Some(b) => b,
        None => {
            // The release build compiles the XDP program: nightly and
            // bpf-linker, which setup brings.
            setup::ensure_all()?;
            shell::release_xdpsec()?
        }
    };
    let out = out.unwrap_or_else(|| target.join("debian"));
    std::fs::create_dir_all(&out)?;
    let deb = deb::build(&deb::Inputs {
        binary: &binary,
        workspace: &shell::workspace_root(),
        version: env!("CARGO_PKG_VERSION"),
        out_dir: &out,
        quick: false,
    })?;
    println!("{}", deb.display());
    Ok(())
}

/// The README's test command and what CI runs.
fn test() -> Result<()> {
    setup::ensure_all()?;
    shell::step(
        "cargo fmt --check",
        &["cargo", "fmt", "--all", "--", "--check"],
    )?;
    shell::step(
        "clippy (default features)",
        &["cargo", "clippy", "--all-targets", "--", "-D", "warnings"],
    )?;
    shell::step(
        "clippy (both crypto backends)",
        &[
            "cargo",
            "clippy",
            "--all-targets",
            "--all-features",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    shell::step(
        "build with only the pure-Rust crypto backend",
        &[
            "cargo",
            "check",
            "--package",
            "xdpsec-dataplane",
            "--no-default-features",
            "--features",
            "rustcrypto",
        ],
    )?;
    shell::step(
        "tests (both crypto backends)",
        // --no-fail-fast: one run reports every failing test binary, not
        // just the first.
        &[
            "cargo",
            "test",
            "--all-features",
            "--no-fail-fast",
            "--",
            "--test-threads=2",
        ],
    )
}
