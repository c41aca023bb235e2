//! The peer benchmark's results: JSON, the summary table, the final lines
//! and the section of perf-results/README.md they refresh.

use super::trial::{Search, Trial};
use crate::machine::Machine;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The baseline every `vs_strongswan` divides by.
pub const BASELINE: &str = "strongswan";

/// One packet size on one tunnel.
#[derive(Debug, Clone, Serialize)]
pub struct SizeResult {
    /// `64`, `512`, `1400`, `imix`.
    pub size: String,
    /// Earlier searches of this size whose rate then lost packets at 50 %
    /// or 90 % of it, and why (the run fails when every search is).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rejected_searches: Vec<String>,
    /// Mean inner IP packet size, bytes.
    pub mean_ip_bytes: f64,
    /// RFC 2544 throughput: the highest loss-free rate found, delivered
    /// Mpps at that rate.
    pub mpps: f64,
    /// Inner IP Gbit/s at that rate.
    pub gbps: f64,
    /// Flat out (overloaded): what the tunnel delivered, and the loss.
    pub flat_out_mpps: f64,
    pub flat_out_loss: f64,
    /// Trials at 50 % and 90 % of the loss-free rate (latency, CPU).
    pub at_50: Trial,
    pub at_90: Trial,
    /// The search for the loss-free rate.
    pub search: Search,
}

impl SizeResult {
    /// CPU of the gateways and worker cycles per packet: from the trial at
    /// the loss-free rate.
    pub fn at_rate(&self) -> &Trial {
        &self.search.at_loss_free
    }
}

/// An iperf3 TCP run through the tunnel.
#[derive(Debug, Clone, Serialize)]
pub struct TcpResult {
    pub streams: u32,
    pub gbps: f64,
    pub retransmits: u64,
}

/// One system at one worker count.
#[derive(Debug, Clone, Serialize)]
pub struct SystemRun {
    pub system: String,
    pub workers: u32,
    /// Why it was not measured, if it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Busy CPUs of the machine over the last second before the load,
    /// with the tunnel idle: other work sharing the machine.
    pub busy_cpus_before: f64,
    pub sizes: Vec<SizeResult>,
    pub tcp: Vec<TcpResult>,
}

/// Throughput against workers for one system and size.
#[derive(Debug, Clone, Serialize)]
pub struct Scaling {
    pub system: String,
    pub size: String,
    pub workers: u32,
    pub mpps: f64,
    /// mpps / (mpps at the first worker count * workers / first count).
    pub efficiency: f64,
}

/// The machine, as every result records it, plus what matters here.
#[derive(Debug, Serialize)]
pub struct PeerMachine {
    #[serde(flatten)]
    pub machine: Machine,
    /// XDP attach mode on the gateways and hosts.
    pub xdp_mode: &'static str,
    /// `copy` or `zero-copy`, as the generator's sockets were bound.
    pub af_xdp_mode: String,
    /// xdpsec (git), strongSwan, iperf3.
    pub versions: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
pub struct PeerReport {
    pub benchmark: &'static str,
    pub command: String,
    pub date: String,
    pub unix_time: u64,
    pub machine: PeerMachine,
    pub cpu_mhz: f64,
    pub method: &'static str,
    pub trial_ms: u64,
    pub search_steps: u32,
    pub iperf_seconds: u32,
    pub runs: Vec<SystemRun>,
    pub scaling: Vec<Scaling>,
    pub lines: Vec<String>,
}

fn find<'a>(runs: &'a [SystemRun], system: &str, workers: u32) -> Option<&'a SystemRun> {
    runs.iter()
        .find(|r| r.system == system && r.workers == workers && r.skipped.is_none())
}

/// The baseline's run: strongSwan at `workers`, else at any count (it
/// has no workers to sweep).
fn baseline(runs: &[SystemRun], workers: u32) -> Option<&SystemRun> {
    find(runs, BASELINE, workers).or_else(|| {
        runs.iter()
            .find(|r| r.system == BASELINE && r.skipped.is_none())
    })
}

fn ratio(a: f64, b: Option<f64>) -> String {
    match b {
        Some(b) if b > 0.0 => format!("{:.2}", a / b),
        _ => "n/a".into(),
    }
}

/// Scaling against the first worker count, per system and size.
pub fn scaling(runs: &[SystemRun], workers: &[u32]) -> Vec<Scaling> {
    let Some(&first) = workers.first() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for run in runs
        .iter()
        .filter(|r| r.skipped.is_none() && r.system != BASELINE)
    {
        let Some(base) = find(runs, &run.system, first) else {
            continue;
        };
        for size in &run.sizes {
            let Some(b) = base.sizes.iter().find(|s| s.size == size.size) else {
                continue;
            };
            let ideal = b.mpps * f64::from(run.workers) / f64::from(first);
            out.push(Scaling {
                system: run.system.clone(),
                size: size.size.clone(),
                workers: run.workers,
                mpps: size.mpps,
                efficiency: if ideal > 0.0 { size.mpps / ideal } else { 0.0 },
            });
        }
    }
    out
}

/// The final lines: per system and size at the first worker count, then
/// TCP per system and stream count.
pub fn lines(runs: &[SystemRun], workers: u32) -> Vec<String> {
    let mut out = Vec::new();
    let base = baseline(runs, workers);
    let systems: Vec<&SystemRun> = runs
        .iter()
        .filter(|r| {
            r.workers == workers
                || (r.system == BASELINE && find(runs, BASELINE, workers).is_none())
        })
        .collect();
    for run in &systems {
        if let Some(why) = &run.skipped {
            out.push(format!("peer system={} skipped=\"{why}\"", run.system));
            continue;
        }
        for s in &run.sizes {
            let b = base
                .and_then(|b| b.sizes.iter().find(|x| x.size == s.size))
                .map(|x| x.mpps);
            out.push(format!(
                "peer system={} size={} mpps={:.3} gbps={:.2} vs_strongswan={}",
                run.system,
                s.size,
                s.mpps,
                s.gbps,
                ratio(s.mpps, b)
            ));
        }
    }
    for run in systems.iter().filter(|r| r.skipped.is_none()) {
        for t in &run.tcp {
            let b = base
                .and_then(|b| b.tcp.iter().find(|x| x.streams == t.streams))
                .map(|x| x.gbps);
            out.push(format!(
                "peer tcp system={} streams={} gbps={:.2} vs_strongswan={}",
                run.system,
                t.streams,
                t.gbps,
                ratio(t.gbps, b)
            ));
        }
    }
    out
}

/// Markdown tables of everything measured.
pub fn tables(runs: &[SystemRun], scaling: &[Scaling]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| system | workers | size | Mpps (loss-free) | Gbit/s | flat-out Mpps (loss) | \
         latency p50 / p99 / p99.9 µs at 50 % | at 90 % | CPU gwA / gwB (cores) | \
         worker cycles/pkt gwA / gwB |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for run in runs {
        if let Some(why) = &run.skipped {
            let _ = writeln!(
                s,
                "| {} | {} | all | skipped: {why} | | | | | | |",
                run.system, run.workers
            );
            continue;
        }
        for r in &run.sizes {
            let t = r.at_rate();
            let lat = |t: &Trial| {
                format!(
                    "{:.0} / {:.0} / {:.0}",
                    t.latency_p50_us, t.latency_p99_us, t.latency_p999_us
                )
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.3} | {:.2} | {:.3} ({:.1} %) | {} | {} | {:.2} / {:.2} | {:.0} / {:.0} |",
                run.system,
                run.workers,
                r.size,
                r.mpps,
                r.gbps,
                r.flat_out_mpps,
                100.0 * r.flat_out_loss,
                lat(&r.at_50),
                lat(&r.at_90),
                t.gw_a.cpu_share,
                t.gw_b.cpu_share,
                t.gw_a.cycles_per_packet,
                t.gw_b.cycles_per_packet
            );
        }
    }
    let _ = writeln!(
        s,
        "\n| system | workers | iperf3 TCP streams | Gbit/s | retransmits |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|");
    for run in runs.iter().filter(|r| r.skipped.is_none()) {
        for t in &run.tcp {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.2} | {} |",
                run.system, run.workers, t.streams, t.gbps, t.retransmits
            );
        }
    }
    if scaling.iter().any(|x| x.workers != scaling[0].workers) {
        let _ = writeln!(
            s,
            "\n| system | size | workers | Mpps | scaling efficiency |"
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|");
        for x in scaling {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {:.3} | {:.2} |",
                x.system, x.size, x.workers, x.mpps, x.efficiency
            );
        }
    }
    s
}

/// Markers around the generated part of perf-results/README.md.
pub const README_BEGIN: &str = "<!-- bench peer: generated, begin -->";
pub const README_END: &str = "<!-- bench peer: generated, end -->";

/// `readme` with the text between the markers replaced by `generated` (the
/// markers and the section heading are appended if missing).
pub fn splice_readme(readme: &str, generated: &str) -> String {
    let block = format!("{README_BEGIN}\n{generated}{README_END}");
    match (readme.find(README_BEGIN), readme.find(README_END)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{block}{}", &readme[..b], &readme[e + README_END.len()..])
        }
        _ => format!(
            "{}\n## Against strongSwan (`cargo xtask bench peer`)\n\n{block}\n",
            readme.trim_end()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splices_between_markers_or_appends() {
        let fresh = splice_readme("# perf-results\n", "table 1\n");
        assert!(fresh.contains("## Against strongSwan"));
        assert!(fresh.contains(&format!("{README_BEGIN}\ntable 1\n{README_END}")));
        let again = splice_readme(&format!("{fresh}\nafter\n"), "table 2\n");
        assert!(again.contains("table 2") && !again.contains("table 1"));
        assert!(again.ends_with("after\n"));
        assert_eq!(again.matches(README_BEGIN).count(), 1);
    }

    fn trial(pps: f64) -> Trial {
        Trial {
            offered_pps: Some(pps),
            sent_pps: pps,
            sent: 100,
            received: 100,
            lost: 0,
            duplicates: 0,
            reordered: 0,
            delivered_pps: pps,
            delivered_gbps: pps * 1400.0 * 8.0 / 1e9,
            latency_p50_us: 10.0,
            latency_p99_us: 20.0,
            latency_p999_us: 30.0,
            latency_max_us: 40.0,
            latency_cdf: Vec::new(),
            gw_a: crate::bench_peer::trial::GatewayCpu {
                cpu_share: 0.5,
                worker_cpu_share: 0.4,
                cycles_per_packet: 1000.0,
            },
            gw_b: crate::bench_peer::trial::GatewayCpu {
                cpu_share: 0.5,
                worker_cpu_share: 0.4,
                cycles_per_packet: 1000.0,
            },
            machine_busy_cpus: 1.0,
            zero_copy: false,
        }
    }

    fn run(system: &str, workers: u32, mpps: f64, tcp_gbps: f64) -> SystemRun {
        let t = trial(mpps * 1e6);
        SystemRun {
            system: system.into(),
            workers,
            skipped: None,
            busy_cpus_before: 0.0,
            sizes: vec![SizeResult {
                size: "1400".into(),
                rejected_searches: Vec::new(),
                mean_ip_bytes: 1400.0,
                mpps,
                gbps: t.delivered_gbps,
                flat_out_mpps: mpps,
                flat_out_loss: 0.0,
                at_50: t.clone(),
                at_90: t.clone(),
                search: Search {
                    loss_free_pps: mpps * 1e6,
                    at_loss_free: t.clone(),
                    flat_out: t.clone(),
                    trials: vec![t],
                },
            }],
            tcp: vec![TcpResult {
                streams: 1,
                gbps: tcp_gbps,
                retransmits: 0,
            }],
        }
    }

    #[test]
    fn final_lines_compare_with_strongswan_and_scaling_with_one_worker() {
        let mut runs = vec![
            run("xdpsec-aes128", 1, 0.2, 4.0),
            run("strongswan", 1, 0.05, 0.5),
            run("xdpsec-aes128", 2, 0.3, 5.0),
        ];
        runs.push(SystemRun {
            skipped: Some("no ike".into()),
            sizes: Vec::new(),
            tcp: Vec::new(),
            ..run("xdpsec-strongswan", 1, 0.0, 0.0)
        });
        let l = lines(&runs, 1);
        assert_eq!(
            l,
            [
                "peer system=xdpsec-aes128 size=1400 mpps=0.200 gbps=2.24 vs_strongswan=4.00",
                "peer system=strongswan size=1400 mpps=0.050 gbps=0.56 vs_strongswan=1.00",
                "peer system=xdpsec-strongswan skipped=\"no ike\"",
                "peer tcp system=xdpsec-aes128 streams=1 gbps=4.00 vs_strongswan=8.00",
                "peer tcp system=strongswan streams=1 gbps=0.50 vs_strongswan=1.00",
            ]
        );
        let s = scaling(&runs, &[1, 2]);
        let two = s.iter().find(|x| x.workers == 2).unwrap();
        assert!((two.efficiency - 0.75).abs() < 1e-9, "{two:?}");
        assert!(s.iter().all(|x| x.system != "strongswan"));
        assert!(tables(&runs, &s).contains("| xdpsec-aes128 | 1400 | 2 | 0.300 | 0.75 |"));
    }

    #[test]
    fn ratios_need_a_baseline() {
        assert_eq!(ratio(2.0, Some(0.5)), "4.00");
        assert_eq!(ratio(2.0, Some(0.0)), "n/a");
        assert_eq!(ratio(2.0, None), "n/a");
    }
}
