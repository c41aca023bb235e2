//! The generator: one thread, one UMEM, one AF_XDP socket per TX queue of
//! an interface (copy mode on veth). Batches go to the queues in turn; the
//! queue is the stream, so with several queues the packets spread over the
//! receiving gateway's RX queues and workers like flows would.
//!
//! Pacing: at a set rate, packets are due at `start + n / rate`; the loop
//! sends what is due (at most a batch) and sleeps until at least
//! [`MIN_BURST`] more are due, so it does not spin a core the tunnel needs.
//! As fast as possible, it sends full batches. Either way it stops at
//! `max_packets` or `duration`, then waits (bounded) for the TX rings to
//! drain.

use crate::clock::now_ns;
use crate::packet::{self, Flow, SizeSpec};
use crate::payload::Stamp;
use crate::xsk::bind_queues;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use xdpsec_dataplane::afxdp::{
    ifindex, FrameBatch, SocketConfig, UmemConfig, XskError, XskSocket, BATCH_SIZE,
};

/// Least packets per wake-up when pacing: the sleep's granularity (tens of
/// microseconds) would make smaller bursts late anyway.
pub const MIN_BURST: u64 = 4;

/// What to send.
#[derive(Debug, Clone)]
pub struct GenConfig {
    /// Interface to send on (in the calling thread's namespace).
    pub ifname: String,
    /// TX queues (and streams) to use: 0..queues.
    pub queues: u32,
    /// Addresses and ports.
    pub flow: Flow,
    /// Packet sizes.
    pub size: SizeSpec,
    /// Largest IP packet the path carries: bigger IMIX members are capped.
    pub mtu: usize,
    /// Packets per second, or `None`: as fast as the rings take them.
    pub rate_pps: Option<f64>,
    /// Stop after this many packets.
    pub max_packets: u64,
    /// Stop after this long.
    pub duration: Duration,
}

/// What the generator did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenReport {
    /// Packets put on the TX rings, per stream.
    pub sent_per_stream: Vec<u64>,
    /// Their sum.
    pub sent: u64,
    /// IP bytes of those packets.
    pub ip_bytes: u64,
    /// From the first to the last packet put on a ring, seconds.
    pub seconds: f64,
    /// The rate asked for (packets/s), if any.
    pub rate_pps: Option<f64>,
    /// sent / seconds.
    pub achieved_pps: f64,
    /// Frames the kernel had not completed when the generator gave up
    /// waiting (lost before the wire).
    pub not_completed: u64,
    /// Whether the sockets run in zero-copy mode.
    pub zero_copy: bool,
}

/// Why the generator could not run.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    /// AF_XDP setup or I/O.
    #[error(transparent)]
    Xsk(#[from] XskError),
    /// A config value is unusable.
    #[error("invalid generator config: {0}")]
    Config(String),
}

/// Sends as configured; see the module documentation.
pub fn run(config: &GenConfig) -> Result<GenReport, GenError> {
    if config.queues == 0 || config.queues > 64 {
        return Err(GenError::Config(format!(
            "{} queues (1 to 64)",
            config.queues
        )));
    }
    if let Some(r) = config.rate_pps {
        if !(r.is_finite() && r > 0.0) {
            return Err(GenError::Config(format!("rate {r} packets/s")));
        }
    }
    let index = ifindex(&config.ifname)?;
    let umem_config = UmemConfig {
        frame_count: 4096 * config.queues.min(4),
        ..UmemConfig::default()
    };
    let socket_config = SocketConfig {
        // TX only: no fill ring stock.
        fill_target: 0,
        ..SocketConfig::default()
    };
    let (mut umem, mut sockets) = bind_queues(&umem_config, index, config.queues, &socket_config)?;
    let zero_copy = sockets.first().is_some_and(XskSocket::is_zero_copy);

    let cycle = config.size.cycle(config.mtu);
    let streams = u16::try_from(config.queues).unwrap_or(u16::MAX);
    // templates[stream][i]: frame for the i-th size of the cycle.
    let templates: Vec<Vec<Vec<u8>>> = (0..streams)
        .map(|s| {
            cycle
                .iter()
                .map(|&n| packet::template(&config.flow, s, n))
                .collect()
        })
        .collect();
    let mut seq = vec![0u64; usize::from(streams)];
    let mut ip_bytes = 0u64;
    let mut batch = FrameBatch::new();
    let mut sent = 0u64;
    let mut queue = 0usize;
    let mut cycle_at = 0usize;
    let start = now_ns();
    let mut last = start;
    let deadline =
        start.saturating_add(u64::try_from(config.duration.as_nanos()).unwrap_or(u64::MAX));
    let ns_per_packet = config.rate_pps.map(|r| 1e9 / r);
    loop {
        let now = now_ns();
        if sent >= config.max_packets || now >= deadline {
            break;
        }
        let due = match ns_per_packet {
            Some(ns) => (((now - start) as f64 / ns) as u64 + 1).min(config.max_packets),
            None => config.max_packets,
        };
        let want = due.saturating_sub(sent).min(BATCH_SIZE as u64);
        if want == 0 {
            if let Some(ns) = ns_per_packet {
                let wake = start as f64 + (sent + MIN_BURST - 1) as f64 * ns;
                let sleep = (wake - now as f64).max(0.0) as u64;
                std::thread::sleep(Duration::from_nanos(sleep.min(deadline - now)));
            }
            for s in &mut sockets {
                s.flush()?;
            }
            continue;
        }
        let stream = queue;
        let socket = &mut sockets[stream];
        if umem.free_frames() < want as usize {
            socket.reclaim(&mut umem);
        }
        let first_seq = seq[stream];
        let tx_ns = now_ns();
        let mut bytes = 0u64;
        for _ in 0..want {
            let Some(mut frame) = umem.alloc() else {
                break;
            };
            let t = &templates[stream][cycle_at];
            cycle_at = (cycle_at + 1) % cycle.len();
            if umem.set_len(&mut frame, t.len()).is_err() {
                umem.free(frame);
                return Err(GenError::Config(format!(
                    "a {}-byte frame does not fit a UMEM frame",
                    t.len()
                )));
            }
            let data = umem.data_mut(&mut frame);
            data.copy_from_slice(t);
            let stamp = Stamp {
                stream: u16::try_from(stream).unwrap_or(u16::MAX),
                seq: seq[stream],
                tx_ns,
            };
            // Templates are at least MIN_IP_SIZE: the header fits.
            let _ = stamp.write(packet::payload_of(data));
            seq[stream] += 1;
            bytes += (t.len() - xdpsec_dataplane::wire::ethernet::HEADER_LEN) as u64;
            // Cannot fail: at most a batch is taken.
            let _ = batch.push(frame);
        }
        let built = batch.len() as u64;
        let queued = socket.send(&mut umem, &mut batch)? as u64;
        // What the ring did not take is the tail: take its sequence numbers
        // back so the stream has no gap that was never sent.
        let refused = built - queued;
        for frame in batch.drain() {
            let len = frame.len() as u64;
            bytes = bytes.saturating_sub(len - xdpsec_dataplane::wire::ethernet::HEADER_LEN as u64);
            umem.free(frame);
        }
        if refused > 0 {
            cycle_at = (cycle_at + cycle.len() - (refused as usize % cycle.len())) % cycle.len();
        }
        seq[stream] = first_seq + queued;
        sent += queued;
        ip_bytes += bytes;
        if queued > 0 {
            last = now_ns();
        }
        queue = (queue + 1) % sockets.len();
    }
    // Let the kernel send what is on the rings (bounded).
    let drain_deadline = now_ns() + 1_000_000_000;
    loop {
        let mut in_flight = 0u64;
        for s in &mut sockets {
            s.flush()?;
            s.reclaim(&mut umem);
            in_flight += u64::from(s.tx_in_flight());
        }
        if in_flight == 0 || now_ns() >= drain_deadline {
            let seconds = (last.saturating_sub(start)) as f64 / 1e9;
            return Ok(GenReport {
                sent_per_stream: seq,
                sent,
                ip_bytes,
                seconds,
                rate_pps: config.rate_pps,
                achieved_pps: if seconds > 0.0 {
                    sent as f64 / seconds
                } else {
                    0.0
                },
                not_completed: in_flight,
                zero_copy,
            });
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}
