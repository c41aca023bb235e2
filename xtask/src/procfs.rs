//! CPU time and load from procfs, for the benchmarks: per thread, per
//! process, the whole machine, and the clock that turns seconds into cycles.

use anyhow::{bail, Context, Result};
use std::time::{Duration, Instant};

/// CPU time of one thread or process, from procfs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuSample {
    pub(crate) seconds: f64,
    /// Time runnable but waiting for a CPU (schedstat's second field; 0
    /// where not available).
    pub(crate) waiting_seconds: f64,
    /// utime and stime in clock ticks (0 where not read).
    pub(crate) user_ticks: f64,
    pub(crate) system_ticks: f64,
}

/// Busy CPUs (of all) above which the machine counts as busy with other work.
pub(crate) const QUIET_BUSY_CPUS: f64 = 0.25;
/// How long to wait for it to be quiet before measuring anyway.
const QUIET_WAIT: Duration = Duration::from_secs(60);

/// Samples the machine's busy CPUs over one second at a time, up to
/// [`QUIET_WAIT`], until it is below [`QUIET_BUSY_CPUS`] (the tunnel is up
/// and idle then, so what is busy is someone else's work); the last sample.
pub(crate) fn wait_for_quiet_machine() -> Result<f64> {
    let deadline = Instant::now() + QUIET_WAIT;
    let mut said = false;
    loop {
        let busy = busy_cpus_over(Duration::from_secs(1))?;
        if busy < QUIET_BUSY_CPUS {
            return Ok(busy);
        }
        if Instant::now() >= deadline {
            eprintln!("    the machine is still busy ({busy:.2} CPUs): measuring anyway, flagged");
            return Ok(busy);
        }
        if !said {
            eprintln!("    other work keeps {busy:.2} CPUs busy: waiting (up to {QUIET_WAIT:?})");
            said = true;
        }
    }
}

/// Busy CPUs of the whole machine (2.0 = both cores of two), sampled over
/// `window`.
pub(crate) fn busy_cpus_over(window: Duration) -> Result<f64> {
    let (from, started) = (machine_ticks()?, Instant::now());
    std::thread::sleep(window);
    busy_cpus_since(&from, started.elapsed())
}

/// Busy CPUs of the whole machine since `from`, taken `elapsed` ago.
pub(crate) fn busy_cpus_since(from: &CpuTicks, elapsed: Duration) -> Result<f64> {
    Ok(machine_ticks()?.busy().saturating_sub(from.busy()) as f64
        / clock_ticks_per_second() as f64
        / elapsed.as_secs_f64().max(1e-9))
}

/// The aggregate `cpu` line of /proc/stat, in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct CpuTicks {
    pub(crate) user: u64,
    pub(crate) system: u64,
    pub(crate) idle: u64,
    pub(crate) softirq: u64,
    pub(crate) steal: u64,
    pub(crate) total: u64,
}

impl CpuTicks {
    pub(crate) fn busy(&self) -> u64 {
        self.total.saturating_sub(self.idle)
    }
}

pub(crate) fn machine_ticks() -> Result<CpuTicks> {
    let stat = std::fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
    parse_cpu_ticks(&stat).context("/proc/stat has no aggregate cpu line")
}

/// `cpu user nice system idle iowait irq softirq steal guest guest_nice`;
/// idle counts iowait too, and user counts nice (guest time is already in
/// user).
pub(crate) fn parse_cpu_ticks(stat: &str) -> Option<CpuTicks> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    if v.len() < 8 {
        return None;
    }
    Some(CpuTicks {
        user: at(0) + at(1),
        system: at(2) + at(5),
        idle: at(3) + at(4),
        softirq: at(6),
        steal: at(7),
        total: (0..8).map(at).sum(),
    })
}

/// Time the thread spent on a CPU: the first field of its schedstat, in ns.
pub(crate) fn thread_cpu(pid: u32, tid: u32) -> Result<CpuSample> {
    let path = format!("/proc/{pid}/task/{tid}/schedstat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    let (Some(Some(on_cpu)), Some(Some(waiting))) = (fields.next(), fields.next()) else {
        bail!("unexpected {path}: {text:?}");
    };
    let stat_path = format!("/proc/{pid}/task/{tid}/stat");
    let stat =
        std::fs::read_to_string(&stat_path).with_context(|| format!("cannot read {stat_path}"))?;
    let (user_ticks, system_ticks) =
        parse_stat_times(&stat).with_context(|| format!("unexpected {stat_path}: {stat:?}"))?;
    Ok(CpuSample {
        seconds: on_cpu as f64 / 1e9,
        waiting_seconds: waiting as f64 / 1e9,
        user_ticks: user_ticks as f64,
        system_ticks: system_ticks as f64,
    })
}

/// utime + stime of the whole process (all threads), in seconds.
pub(crate) fn process_cpu(pid: u32) -> Result<CpuSample> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let ticks = parse_stat_ticks(&text).with_context(|| format!("unexpected {path}: {text:?}"))?;
    Ok(CpuSample {
        seconds: ticks as f64 / clock_ticks_per_second() as f64,
        waiting_seconds: 0.0,
        user_ticks: 0.0,
        system_ticks: 0.0,
    })
}

/// utime + stime (fields 14 and 15) of a /proc/PID/stat line; the command
/// name in parentheses may contain spaces, so fields count from its `)`.
pub(crate) fn parse_stat_ticks(stat: &str) -> Option<u64> {
    parse_stat_times(stat).map(|(utime, stime)| utime + stime)
}

/// (utime, stime) of a /proc/PID/stat line, in clock ticks.
pub(crate) fn parse_stat_times(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state is field 3, so utime (14) is index 11, stime (15) index 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime, stime))
}

pub(crate) fn clock_ticks_per_second() -> u64 {
    crate::shell::output(&["getconf", "CLK_TCK"])
        .and_then(|t| t.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// The clock that turns CPU seconds into cycles: the first `cpu MHz` of
/// /proc/cpuinfo (on a VM, the rate the hypervisor reports).
pub(crate) fn nominal_mhz() -> Result<(f64, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").context("cannot read /proc/cpuinfo")?;
    let mhz = parse_cpu_mhz(&cpuinfo).context("/proc/cpuinfo has no `cpu MHz` line")?;
    Ok((
        mhz,
        "/proc/cpuinfo `cpu MHz` of the first CPU at the start of the run".to_owned(),
    ))
}

pub(crate) fn parse_cpu_mhz(cpuinfo: &str) -> Option<f64> {
    cpuinfo
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim() == "cpu MHz")
        .and_then(|(_, v)| v.trim().parse().ok())
        .filter(|&m: &f64| m > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stat_ticks_past_odd_command_names() {
        let stat = "4242 (xdpsec (a) b) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 75 0 0 20 0 3 0 12345 1000 200 18446744073709551615";
        assert_eq!(parse_stat_ticks(stat), Some(325));
        assert_eq!(parse_stat_ticks("4242 (x) S 1"), None);
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn reads_machine_cpu_ticks() {
        let stat = "cpu  584390 10 107428 130545 9460 3 1881 849 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        let t = parse_cpu_ticks(stat).unwrap();
        assert_eq!(t.user, 584_400);
        assert_eq!(t.system, 107_431);
        assert_eq!(t.idle, 140_005);
        assert_eq!(t.softirq, 1881);
        assert_eq!(t.steal, 849);
        assert_eq!(t.busy(), 584_400 + 107_431 + 1881 + 849);
        assert_eq!(parse_cpu_ticks("intr 1 2 3\n"), None);
    }

    #[test]
    fn reads_the_first_cpu_mhz() {
        let cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC\ncpu MHz\t\t: 2596.140\n\n\
                       processor\t: 1\ncpu MHz\t\t: 1800.000\n";
        assert_eq!(parse_cpu_mhz(cpuinfo), Some(2596.14));
        assert_eq!(parse_cpu_mhz("processor\t: 0\n"), None);
    }
}
