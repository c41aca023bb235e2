//! `cargo xtask bench esp`: runs the criterion benchmarks of the ESP core and
//! turns criterion's per-benchmark estimates into the ratios the project
//! tracks: the ESP transform against the raw AEAD of the same size, measured
//! in the same run on the same core.

use crate::machine::Machine;
use crate::shell::{step, target_dir, workspace_root};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// The criterion group the `esp_core` bench writes; its function ids are
/// `OP/BACKEND/KEYBITS` and its parameter the inner packet size in bytes.
const GROUP: &str = "esp-core";

#[derive(Debug, Serialize)]
struct EspCoreRow {
    size: usize,
    backend: String,
    key_bits: u32,
    encap_gbps: f64,
    decap_gbps: f64,
    seal_gbps: f64,
    open_gbps: f64,
    encap_ratio: f64,
    decap_ratio: f64,
}

#[derive(Debug, Serialize)]
struct EspCoreReport {
    benchmark: &'static str,
    command: &'static str,
    unix_time: u64,
    machine: Machine,
    results: Vec<EspCoreRow>,
}

pub fn esp() -> Result<()> {
    let criterion_dir = target_dir()?.join("criterion").join(GROUP);
    // Old estimates of benchmarks that no longer exist must not leak into the summary.
    if criterion_dir.exists() {
        std::fs::remove_dir_all(&criterion_dir)?;
    }
    step(
        "criterion: ESP core against raw AEAD",
        &[
            "cargo",
            "bench",
            "--package",
            "xdpsec-bench",
            "--features",
            "rustcrypto",
            "--bench",
            "esp_core",
            "--",
            "--noplot",
        ],
    )?;

    let nanos = read_estimates(&criterion_dir)?;
    let rows = ratios(&nanos)?;
    for row in &rows {
        println!(
            "esp-core size={} backend={} key={} encap_ratio={:.2} decap_ratio={:.2} encap_gbps={:.1} decap_gbps={:.1}",
            row.size, row.backend, row.key_bits, row.encap_ratio, row.decap_ratio, row.encap_gbps, row.decap_gbps
        );
    }
    let report = EspCoreReport {
        benchmark: GROUP,
        command: "cargo xtask bench esp",
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
        machine: Machine::describe(),
        results: rows,
    };
    let dir = workspace_root().join("perf-results");
    std::fs::create_dir_all(&dir)?;
    let out = dir.join("esp-core.json");
    std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("wrote {}", out.display());
    Ok(())
}

/// (op, backend, key_bits, size) -> mean nanoseconds per operation.
type Estimates = BTreeMap<(String, String, u32, usize), f64>;

fn read_estimates(dir: &Path) -> Result<Estimates> {
    let mut found = Estimates::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current)
            .with_context(|| format!("no criterion results in {}", current.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n == "new") {
                    let (key, mean) = read_one(&path)?;
                    found.insert(key, mean);
                } else if path
                    .file_name()
                    .is_some_and(|n| n != "base" && n != "report")
                {
                    pending.push(path);
                }
            }
        }
    }
    if found.is_empty() {
        bail!("criterion wrote no estimates under {}", dir.display());
    }
    Ok(found)
}

fn read_one(new_dir: &Path) -> Result<((String, String, u32, usize), f64)> {
    let json = |name: &str| -> Result<Value> {
        let path = new_dir.join(name);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Ok(serde_json::from_str(&text)?)
    };
    let benchmark = json("benchmark.json")?;
    let estimates = json("estimates.json")?;
    let function_id = benchmark["function_id"]
        .as_str()
        .context("benchmark.json without function_id")?;
    let size: usize = benchmark["value_str"]
        .as_str()
        .context("benchmark.json without value_str")?
        .parse()?;
    let mut parts = function_id.split('/');
    let (Some(op), Some(backend), Some(bits)) = (parts.next(), parts.next(), parts.next()) else {
        bail!("unexpected benchmark id {function_id:?} (want OP/BACKEND/KEYBITS)");
    };
    let mean = estimates["mean"]["point_estimate"]
        .as_f64()
        .context("estimates.json without mean.point_estimate")?;
    Ok((
        (op.to_owned(), backend.to_owned(), bits.parse()?, size),
        mean,
    ))
}

fn ratios(nanos: &Estimates) -> Result<Vec<EspCoreRow>> {
    let mut rows = Vec::new();
    for (op, backend, key_bits, size) in nanos.keys() {
        if op != "encap" {
            continue;
        }
        let time = |op: &str| -> Result<f64> {
            nanos
                .get(&(op.to_owned(), backend.clone(), *key_bits, *size))
                .copied()
                .with_context(|| format!("no {op} result for {backend} aes{key_bits} size {size}"))
        };
        let gbps = |ns: f64| (*size as f64) * 8.0 / ns;
        let (encap, decap, seal, open) =
            (time("encap")?, time("decap")?, time("seal")?, time("open")?);
        rows.push(EspCoreRow {
            size: *size,
            backend: backend.clone(),
            key_bits: *key_bits,
            encap_gbps: gbps(encap),
            decap_gbps: gbps(decap),
            seal_gbps: gbps(seal),
            open_gbps: gbps(open),
            encap_ratio: seal / encap,
            decap_ratio: open / decap,
        });
    }
    rows.sort_by(|a, b| (a.size, &a.backend, a.key_bits).cmp(&(b.size, &b.backend, b.key_bits)));
    Ok(rows)
}

/// The criterion group the `l4_checksum` bench writes, ids as in `esp-core`.
const CSUM_GROUP: &str = "l4-checksum";

#[derive(Debug, Serialize)]
struct CsumRow {
    size: usize,
    /// The cipher `seal` ran with.
    backend: String,
    key_bits: u32,
    seal_ns: f64,
    finish_partial_ns: f64,
    finish_full_ns: f64,
    verify_ns: f64,
    sum_ns: f64,
    /// Time of the step over the seal's time, same size, same run.
    finish_partial_over_seal: f64,
    finish_full_over_seal: f64,
    verify_over_seal: f64,
}

#[derive(Debug, Serialize)]
struct CsumReport {
    benchmark: &'static str,
    command: &'static str,
    unix_time: u64,
    machine: Machine,
    load_average: String,
    results: Vec<CsumRow>,
}

/// `cargo xtask bench csum`: what finishing a partial TCP/UDP checksum
/// (issue 12) costs next to AES-GCM, as ratios.
pub fn csum() -> Result<()> {
    let criterion_dir = target_dir()?.join("criterion").join(CSUM_GROUP);
    if criterion_dir.exists() {
        std::fs::remove_dir_all(&criterion_dir)?;
    }
    step(
        "criterion: finishing partial L4 checksums against the AES-GCM seal",
        &[
            "cargo",
            "bench",
            "--package",
            "xdpsec-bench",
            "--bench",
            "l4_checksum",
            "--",
            "--noplot",
        ],
    )?;
    let nanos = read_estimates(&criterion_dir)?;
    let mut rows = Vec::new();
    for (op, backend, key_bits, size) in nanos.keys() {
        if op != "seal" {
            continue;
        }
        let time = |op: &str| -> Result<f64> {
            nanos
                .get(&(op.to_owned(), backend.clone(), *key_bits, *size))
                .copied()
                .with_context(|| format!("no {op} result for size {size}"))
        };
        let seal = time("seal")?;
        let (partial, full, verify) = (
            time("finish-partial")?,
            time("finish-full")?,
            time("verify")?,
        );
        rows.push(CsumRow {
            size: *size,
            backend: backend.clone(),
            key_bits: *key_bits,
            seal_ns: seal,
            finish_partial_ns: partial,
            finish_full_ns: full,
            verify_ns: verify,
            sum_ns: time("sum")?,
            finish_partial_over_seal: partial / seal,
            finish_full_over_seal: full / seal,
            verify_over_seal: verify / seal,
        });
    }
    rows.sort_by_key(|r| r.size);
    for r in &rows {
        println!(
            "l4-checksum size={} seal_ns={:.1} finish_partial/seal={:.3} finish_full/seal={:.3} verify/seal={:.3}",
            r.size, r.seal_ns, r.finish_partial_over_seal, r.finish_full_over_seal, r.verify_over_seal
        );
    }
    let report = CsumReport {
        benchmark: CSUM_GROUP,
        command: "cargo xtask bench csum",
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
        machine: Machine::describe(),
        // A shared 2-core machine: say how busy it was.
        load_average: std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        results: rows,
    };
    let dir = workspace_root().join("perf-results");
    std::fs::create_dir_all(&dir)?;
    let out = dir.join("l4-checksum.json");
    std::fs::write(&out, serde_json::to_string_pretty(&report)? + "\n")?;
    println!("wrote {}", out.display());
    Ok(())
}
