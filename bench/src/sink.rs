//! The sink: the `steer` XDP program on an interface with role *inside* and
//! the sink's address as the only protected prefix, so exactly the UDP
//! traffic to that address (on every RX queue) lands in this process's
//! AF_XDP sockets, one per queue, on one UMEM; everything else (ARP, other
//! addresses) still reaches the kernel. Each datagram's stamp goes into the
//! [`Accounting`] and its one-way latency (receive time of its batch minus
//! its transmit time, CLOCK_MONOTONIC on one machine) into an hdrhistogram.
//!
//! It stops at its deadline, or once packets have arrived and none came for
//! `idle`; it detaches the program when done (and on drop).

use crate::accounting::{Accounting, Totals};
use crate::clock::now_ns;
use crate::packet;
use crate::payload::Stamp;
use crate::xsk::bind_queues;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;
use xdpsec_dataplane::afxdp::{
    ifindex, FrameBatch, PollSet, SocketConfig, UmemConfig, XskError, XskSocket,
};
use xdpsec_dataplane::steer::{AttachMode, Role, Steer, SteerError};

/// What to receive.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Interface (in the calling thread's namespace).
    pub ifname: String,
    /// RX queues to serve: 0..queues.
    pub queues: u32,
    /// The sink's address (an address of the interface's host).
    pub addr: Ipv4Addr,
    /// UDP destination port of the generated traffic.
    pub port: u16,
    /// Give up after this long.
    pub duration: Duration,
    /// Stop once this long passed without a packet, after the first.
    pub idle: Duration,
}

/// One-way latency, nanoseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    /// Packets measured.
    pub count: u64,
    /// Smallest.
    pub min_ns: u64,
    /// Median.
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// Largest.
    pub max_ns: u64,
    /// Mean.
    pub mean_ns: f64,
    /// The distribution: (latency ns, fraction of packets at or below).
    pub cdf: Vec<(u64, f64)>,
}

impl Latency {
    /// Percentiles and a CDF of about 60 points (denser in the tail).
    pub fn from_histogram(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let mut cdf = Vec::new();
        let mut q = 0.0;
        while q < 0.999_9 {
            cdf.push((h.value_at_quantile(q), q));
            // Steps of 2.5 % to 90 %, then ever finer towards 100 %.
            q += if q < 0.9 { 0.025 } else { (1.0 - q) / 4.0 };
        }
        cdf.push((h.max(), 1.0));
        Latency {
            count: h.len(),
            min_ns: h.min(),
            p50_ns: h.value_at_quantile(0.5),
            p90_ns: h.value_at_quantile(0.9),
            p99_ns: h.value_at_quantile(0.99),
            p999_ns: h.value_at_quantile(0.999),
            max_ns: h.max(),
            mean_ns: h.mean(),
            cdf,
        }
    }
}

/// What the sink saw.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SinkReport {
    /// Per-stream counts without the sender's numbers (loss = gaps below
    /// the highest number seen; the harness recomputes with the sender's).
    pub totals: Totals,
    /// Unique packets per stream.
    pub received_per_stream: Vec<u64>,
    /// IP bytes of the unique packets.
    pub ip_bytes: u64,
    /// From the first to the last packet, seconds.
    pub seconds: f64,
    /// Frames to the sink's address and port that were not ours (no magic
    /// or too short).
    pub foreign: u64,
    /// Frames the XDP program redirected that were not UDP to the port.
    pub other: u64,
    /// One-way latency of the unique packets.
    pub latency: Latency,
    /// Whether the sockets run in zero-copy mode.
    pub zero_copy: bool,
}

/// Why the sink could not run.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// AF_XDP setup or I/O.
    #[error(transparent)]
    Xsk(#[from] XskError),
    /// Loading or attaching the XDP program.
    #[error(transparent)]
    Steer(#[from] SteerError),
    /// A config value is unusable.
    #[error("invalid sink config: {0}")]
    Config(String),
}

/// Receives as configured; `ready` is called once the sockets are bound
/// and the program attached. See the module documentation.
pub fn run(config: &SinkConfig, ready: impl FnOnce()) -> Result<SinkReport, SinkError> {
    if config.queues == 0 || config.queues > 64 {
        return Err(SinkError::Config(format!(
            "{} queues (1 to 64)",
            config.queues
        )));
    }
    let index = ifindex(&config.ifname)?;
    let umem_config = UmemConfig {
        frame_count: 4096 * config.queues.min(4),
        ..UmemConfig::default()
    };
    let fill = (umem_config.frame_count / config.queues).min(umem_config.fill_size);
    let socket_config = SocketConfig {
        fill_target: fill.next_power_of_two().min(umem_config.fill_size) / 2,
        ..SocketConfig::default()
    };
    let (mut umem, mut sockets) = bind_queues(&umem_config, index, config.queues, &socket_config)?;
    let zero_copy = sockets.first().is_some_and(XskSocket::is_zero_copy);
    let mut poll = PollSet::new();
    for s in &sockets {
        poll.add(s);
    }

    let mut steer = Steer::load()?;
    steer.set_interface(index, Role::Inside, 0)?;
    steer.add_protected_prefix(IpAddr::V4(config.addr), 32)?;
    for (q, s) in sockets.iter().enumerate() {
        steer.register_xsk(0, u32::try_from(q).unwrap_or(u32::MAX), s)?;
    }
    steer.attach(&config.ifname, AttachMode::Native)?;
    ready();

    // 1 ns to 10 s at 3 significant digits.
    let mut latency = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3)
        .map_err(|e| SinkError::Config(format!("histogram: {e}")))?;
    let mut accounting = Accounting::default();
    let (mut foreign, mut other, mut ip_bytes) = (0u64, 0u64, 0u64);
    let mut first: Option<u64> = None;
    let mut last = 0u64;
    let mut batch = FrameBatch::new();
    let start = now_ns();
    let deadline =
        start.saturating_add(u64::try_from(config.duration.as_nanos()).unwrap_or(u64::MAX));
    let idle = u64::try_from(config.idle.as_nanos()).unwrap_or(u64::MAX);
    loop {
        let now = now_ns();
        if now >= deadline || first.is_some() && now.saturating_sub(last) >= idle {
            break;
        }
        let mut got = 0;
        for socket in &mut sockets {
            let n = socket.recv(&mut umem, &mut batch)?;
            if n == 0 {
                continue;
            }
            got += n;
            let rx_ns = now_ns();
            first.get_or_insert(rx_ns);
            last = rx_ns;
            for frame in batch.drain() {
                match packet::parse_udp(umem.data(&frame), config.addr, config.port) {
                    Some((ip_len, payload)) => match Stamp::read(payload) {
                        Ok(stamp) => {
                            let arrival = accounting.record(stamp.stream, stamp.seq);
                            let unique = matches!(
                                arrival,
                                Some(crate::accounting::Arrival::InOrder)
                                    | Some(crate::accounting::Arrival::Reordered)
                            );
                            if unique {
                                ip_bytes += ip_len as u64;
                                // Clamped into the histogram's range: a
                                // stamp from the future reads as 1 ns.
                                let ns = rx_ns.saturating_sub(stamp.tx_ns).clamp(1, 10_000_000_000);
                                latency.saturating_record(ns);
                            }
                        }
                        Err(_) => foreign += 1,
                    },
                    None => other += 1,
                }
                umem.free(frame);
            }
        }
        if got == 0 {
            poll.wait(10)?;
        }
    }
    // The map's reference keeps a socket bound until the map is freed,
    // which the kernel does later than the process exits; the next sink
    // on these queues must find them free.
    for q in 0..config.queues {
        steer.unregister_xsk(0, q)?;
    }
    steer.detach(&config.ifname)?;
    let seconds = first.map_or(0.0, |f| last.saturating_sub(f) as f64 / 1e9);
    Ok(SinkReport {
        totals: accounting.totals(None),
        received_per_stream: accounting.received_per_stream(),
        ip_bytes,
        seconds,
        foreign,
        other,
        latency: Latency::from_histogram(&latency),
        zero_copy,
    })
}
