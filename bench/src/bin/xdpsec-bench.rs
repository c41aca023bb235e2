//! `xdpsec-bench gen|sink|pipeline`: the AF_XDP traffic generator and sink,
//! and the in-memory pipeline bench (see the `xdpsec_bench` crate). Each
//! prints its report as one JSON object on stdout; the sink says `ready` on
//! stderr once it receives.
#![deny(unsafe_code)]

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::io::Write;
use std::net::Ipv4Addr;
use std::time::Duration;
use xdpsec_bench::gen::{self, GenConfig};
use xdpsec_bench::packet::{Flow, SizeSpec};
use xdpsec_bench::pipeline;
use xdpsec_bench::sink::{self, SinkConfig};

/// Counts allocated bytes, so the pipeline bench can report the memory
/// its SAs take (`xdpsec_bench::pipeline`, `stats_alloc::Region`).
#[global_allocator]
static ALLOCATOR: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

#[derive(Parser)]
#[command(
    name = "xdpsec-bench",
    about = "AF_XDP traffic generator and sink; the in-memory pipeline bench"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Send UDP with sequence numbers and transmit times.
    Gen {
        /// Interface to send on.
        #[arg(long)]
        iface: String,
        /// TX queues (one stream each).
        #[arg(long, default_value_t = 1)]
        queues: u32,
        /// Next hop's MAC (aa:bb:cc:dd:ee:ff).
        #[arg(long, value_parser = parse_mac)]
        dst_mac: [u8; 6],
        /// Source address.
        #[arg(long)]
        src: Ipv4Addr,
        /// Destination (the sink's) address.
        #[arg(long)]
        dst: Ipv4Addr,
        /// UDP destination port.
        #[arg(long, default_value_t = 9)]
        port: u16,
        /// IP packet size in bytes, or `imix`.
        #[arg(long, default_value = "64")]
        size: SizeSpec,
        /// Largest IP packet the path carries (IMIX members above are capped).
        #[arg(long, default_value_t = 1500)]
        mtu: usize,
        /// Packets per second; omit for as fast as possible.
        #[arg(long)]
        rate: Option<f64>,
        /// Stop after this many packets.
        #[arg(long, default_value_t = 10_000_000)]
        count: u64,
        /// Stop after this many milliseconds.
        #[arg(long, default_value_t = 1000)]
        duration_ms: u64,
    },
    /// Receive, count and time what `gen` sends.
    Sink {
        /// Interface to receive on.
        #[arg(long)]
        iface: String,
        /// RX queues.
        #[arg(long, default_value_t = 1)]
        queues: u32,
        /// The sink's address.
        #[arg(long)]
        addr: Ipv4Addr,
        /// UDP destination port.
        #[arg(long, default_value_t = 9)]
        port: u16,
        /// Give up after this many milliseconds.
        #[arg(long, default_value_t = 5000)]
        duration_ms: u64,
        /// Stop this many milliseconds after the last packet...
        #[arg(long, default_value_t = 300)]
        idle_ms: u64,
        /// ...but not before this many milliseconds.
        #[arg(long, default_value_t = 0)]
        min_ms: u64,
    },
    /// The worker's per-packet path on frames in memory, no kernel I/O:
    /// the whole matrix, report (nanoseconds) as JSON on stdout.
    Pipeline {
        /// Packets per round at most (fewer when a round would take
        /// longer than `round_ms`).
        #[arg(long, default_value_t = 200_000)]
        packets: usize,
        /// Packets per round at least (a 10 000-policy outbound packet
        /// takes tens of microseconds).
        #[arg(long, default_value_t = 2_048)]
        min_packets: usize,
        /// Rounds per measurement (the median is reported).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Target length of one round in milliseconds.
        #[arg(long, default_value_t = 150)]
        round_ms: u64,
        /// Only the cells whose summary line has all these `key=value`
        /// fields (`--only dir=out --only size=64`), and no two-worker
        /// runs: to profile one path.
        #[arg(long)]
        only: Vec<String>,
    },
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(format!("MAC {s:?}: six hex bytes separated by ':'"));
    }
    for (b, p) in mac.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16).map_err(|_| format!("MAC {s:?}: bad byte {p:?}"))?;
    }
    Ok(mac)
}

fn mac_of(iface: &str) -> Result<[u8; 6]> {
    let path = format!("/sys/class/net/{iface}/address");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_mac(text.trim()).map_err(anyhow::Error::msg)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let json = match cli.command {
        Command::Gen {
            iface,
            queues,
            dst_mac,
            src,
            dst,
            port,
            size,
            mtu,
            rate,
            count,
            duration_ms,
        } => {
            let config = GenConfig {
                flow: Flow {
                    src_mac: mac_of(&iface)?,
                    dst_mac,
                    src,
                    dst,
                    src_port: 10_000,
                    dst_port: port,
                },
                ifname: iface,
                queues,
                size,
                mtu,
                rate_pps: rate,
                max_packets: count,
                duration: Duration::from_millis(duration_ms),
            };
            serde_json::to_string(&gen::run(&config)?)?
        }
        Command::Sink {
            iface,
            queues,
            addr,
            port,
            duration_ms,
            idle_ms,
            min_ms,
        } => {
            let config = SinkConfig {
                ifname: iface,
                queues,
                addr,
                port,
                duration: Duration::from_millis(duration_ms),
                idle: Duration::from_millis(idle_ms),
                min_duration: Duration::from_millis(min_ms),
            };
            let report = sink::run(&config, || {
                eprintln!("ready");
                let _ = std::io::stderr().flush();
            })?;
            serde_json::to_string(&report)?
        }
        Command::Pipeline {
            packets,
            min_packets,
            rounds,
            round_ms,
            only,
        } => serde_json::to_string(&pipeline::run(
            pipeline::Limits {
                max_packets: packets,
                min_packets: min_packets.min(packets),
                rounds: rounds.max(1),
                round: Duration::from_millis(round_ms),
            },
            &only,
        )?)?,
    };
    println!("{json}");
    Ok(())
}
