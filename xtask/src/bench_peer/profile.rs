//! `--profile`: where the machine's time goes during one trial, with
//! `perf record -e cpu-clock -a -g` (a software clock: this VM has no PMU,
//! so no cycle counters). Not part of the figures: perf slows what it
//! watches.

use super::trial::{self, Rig};
use crate::shell::output;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `perf record` this run started, ended by its PID.
struct Perf {
    child: Child,
    data: std::path::PathBuf,
}

impl Drop for Perf {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.data);
    }
}

/// Runs one trial of `size` at `rate` under perf and writes what it saw to
/// `out`: CPU time by thread name, then by symbol.
pub fn profile_trial(rig: &Rig<'_>, size: &str, rate: f64, title: &str, out: &Path) -> Result<()> {
    let data = std::env::temp_dir().join(format!("xdpsec-peer-perf-{}.data", std::process::id()));
    let child = Command::new("perf")
        .args(["record", "-e", "cpu-clock", "-a", "-g", "-q", "-o"])
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("--profile needs `perf` (Debian: linux-perf)")?;
    let mut perf = Perf { child, data };
    let t = trial::run(rig, size, Some(rate));
    // perf writes its data on SIGINT.
    let pid = perf.child.id().to_string();
    output(&["kill", "-INT", &pid]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while perf.child.try_wait()?.is_none() {
        if Instant::now() >= deadline {
            bail!("perf record did not finish after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = t?;
    let data = perf.data.to_string_lossy().into_owned();
    let report = |args: &[&str]| {
        let mut argv = vec![
            "perf",
            "report",
            "--stdio",
            "-q",
            "--no-children",
            "-i",
            &data,
        ];
        argv.extend(args);
        output(&argv).unwrap_or_else(|| format!("(perf report {args:?} failed)\n"))
    };
    let text = format!(
        "# {title}\n# perf record -e cpu-clock -a -g over one trial: {size}-byte packets offered at \
         {rate:.0}/s, {:.0}/s delivered, {} lost; machine busy {:.2} CPUs.\n# Not counted in the \
         results. cpu-clock samples every CPU, idle included (swapper).\n\n\
         ## CPU time by thread name\n{}\n## By thread and symbol (0.5 % and up)\n{}",
        t.delivered_pps,
        t.lost,
        t.machine_busy_cpus,
        report(&["--sort", "comm", "--percent-limit", "1"]),
        report(&["--sort", "comm,dso,sym", "-g", "none", "--percent-limit", "0.5"]),
    );
    std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))
}
