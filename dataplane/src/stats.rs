//! Per-worker statistics. Each worker writes only its own [`WorkerStatsCell`]
//! (one cache line apart from the others'), the API server reads them all and
//! sums. Counters are relaxed atomics with a single writer; the histograms
//! are kept by the worker and copied out a few times a second, so reading
//! them never takes a lock on the hot path.

use crate::pipeline::Dropped;
use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use xdpsec_api::messages::{HistogramBucket, LatencyPercentiles, SocketInfo};
use xdpsec_api::WorkerStats;

/// Upper bounds of the batch-size histogram's buckets.
pub const BATCH_BUCKETS: [u32; 7] = [1, 2, 4, 8, 16, 32, 64];

/// The largest per-packet time the histogram holds (10 ms).
const MAX_PACKET_NS: u64 = 10_000_000;

/// How often a worker copies its histograms out for readers.
const PUBLISH_EVERY: Duration = Duration::from_millis(250);

/// What a worker did besides forwarding and dropping, counted by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// An ICMP "fragmentation needed" / ICMPv6 "packet too big" went to a
    /// LAN host whose packet did not fit the tunnel.
    IcmpTooBigSent,
    /// An outer packet was sent in fragments.
    OuterFragmented,
    /// An outer fragment of ESP arrived.
    FragmentReceived,
    /// A datagram was reassembled from outer fragments.
    Reassembled,
    /// An ICMP "too big" from the underlay set an SA's path MTU.
    PathMtuLearned,
    /// A packet a bypass policy covers, inside a protected prefix (so the
    /// XDP program steered it here), was forwarded in cleartext.
    BypassForwarded,
    /// A LAN host's partial TCP/UDP checksum (TX checksum offload) was
    /// finished before encryption (`l4_checksum`).
    ChecksumFinishedOutbound,
    /// A decrypted packet's partial TCP/UDP checksum (a peer that does not
    /// finish them) was finished before delivery.
    ChecksumFinishedInbound,
    /// A checksum field held the partial value but the segment verified
    /// as it was (a 1-in-65536 coincidence): left alone.
    ChecksumPartialLookalike,
    /// A packet waited for its next hop's neighbour entry to be resolved
    /// (`neighbour_queue`).
    HeldForNeighbour,
}

impl Event {
    pub const ALL: [Event; 10] = [
        Event::IcmpTooBigSent,
        Event::OuterFragmented,
        Event::FragmentReceived,
        Event::Reassembled,
        Event::PathMtuLearned,
        Event::BypassForwarded,
        Event::ChecksumFinishedOutbound,
        Event::ChecksumFinishedInbound,
        Event::ChecksumPartialLookalike,
        Event::HeldForNeighbour,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Event::IcmpTooBigSent => "icmp_too_big_sent",
            Event::OuterFragmented => "outer_packets_fragmented",
            Event::FragmentReceived => "outer_fragments_received",
            Event::Reassembled => "datagrams_reassembled",
            Event::PathMtuLearned => "path_mtu_learned",
            Event::BypassForwarded => "bypass_forwarded",
            Event::ChecksumFinishedOutbound => "l4_checksums_finished_outbound",
            Event::ChecksumFinishedInbound => "l4_checksums_finished_inbound",
            Event::ChecksumPartialLookalike => "l4_checksums_partial_lookalike",
            Event::HeldForNeighbour => "held_for_neighbour",
        }
    }
}

/// What a worker shares with readers.
#[derive(Debug)]
#[repr(align(128))]
pub struct WorkerStatsCell {
    pub worker: u32,
    pub cpu: Option<u32>,
    rx_packets: AtomicU64,
    tx_packets: AtomicU64,
    batches: AtomicU64,
    wakeups: AtomicU64,
    batch_sizes: [AtomicU64; BATCH_BUCKETS.len()],
    drops: [AtomicU64; Dropped::COUNT],
    events: [AtomicU64; Event::ALL.len()],
    packet_ns: Mutex<LatencyPercentiles>,
    /// What the supervisor knows: the queues served, whether the thread
    /// runs, and why it died. Written off the hot path.
    supervision: Mutex<Supervision>,
}

/// A worker's life as its supervisor sees it.
#[derive(Debug, Clone, Default)]
struct Supervision {
    queues: Vec<String>,
    numa_node: Option<u32>,
    sockets: Vec<SocketInfo>,
    running: bool,
    last_failure: Option<String>,
}

impl WorkerStatsCell {
    pub fn new(worker: u32, cpu: Option<u32>) -> WorkerStatsCell {
        WorkerStatsCell {
            worker,
            cpu,
            rx_packets: AtomicU64::new(0),
            tx_packets: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            wakeups: AtomicU64::new(0),
            batch_sizes: std::array::from_fn(|_| AtomicU64::new(0)),
            drops: std::array::from_fn(|_| AtomicU64::new(0)),
            events: std::array::from_fn(|_| AtomicU64::new(0)),
            packet_ns: Mutex::new(LatencyPercentiles::default()),
            supervision: Mutex::new(Supervision::default()),
        }
    }

    fn supervision(&self) -> std::sync::MutexGuard<'_, Supervision> {
        self.supervision
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The worker started, serving `queues` (`interface:queue`).
    pub fn started(&self, queues: Vec<String>) {
        let mut s = self.supervision();
        s.queues = queues;
        s.running = true;
    }

    /// How the worker's sockets were bound, and its NUMA node.
    pub fn set_sockets(&self, numa_node: Option<u32>, sockets: Vec<SocketInfo>) {
        let mut s = self.supervision();
        s.numa_node = numa_node;
        s.sockets = sockets;
    }

    /// The worker's thread ended while it should run, for `why`.
    pub fn died(&self, why: String) {
        let mut s = self.supervision();
        s.running = false;
        s.last_failure = Some(why);
    }

    /// What `worker_stats` answers for this worker.
    pub fn snapshot(&self) -> WorkerStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let supervision = self.supervision().clone();
        WorkerStats {
            worker: self.worker,
            cpu: self.cpu,
            rx_packets: load(&self.rx_packets),
            tx_packets: load(&self.tx_packets),
            batches: load(&self.batches),
            batch_sizes: BATCH_BUCKETS
                .iter()
                .zip(&self.batch_sizes)
                .map(|(&le, count)| HistogramBucket {
                    le,
                    count: load(count),
                })
                .collect(),
            packet_ns: *self
                .packet_ns
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
            wakeups: load(&self.wakeups),
            drops: self
                .drops()
                .into_iter()
                .map(|(name, n)| (name.to_owned(), n))
                .collect(),
            events: Event::ALL
                .iter()
                .map(|&e| (e.as_str(), load(&self.events[e as usize])))
                .filter(|&(_, n)| n > 0)
                .map(|(name, n)| (name.to_owned(), n))
                .collect(),
            queues: supervision.queues,
            running: supervision.running,
            last_failure: supervision.last_failure,
            numa_node: supervision.numa_node,
            sockets: supervision.sockets,
        }
    }

    /// Counts one `event`; only the worker that owns the cell calls it.
    #[inline]
    pub fn event(&self, event: Event) {
        self.events[event as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts `n` drops for `reason`.
    pub fn dropped_n(&self, reason: Dropped, n: u64) {
        if n > 0 {
            self.drops[reason.index()].fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Drops by reason name, reasons with none left out.
    pub fn drops(&self) -> Vec<(&'static str, u64)> {
        Dropped::all()
            .map(|d| (d.as_str(), self.drops[d.index()].load(Ordering::Relaxed)))
            .filter(|&(_, n)| n > 0)
            .collect()
    }
}

/// The worker's side: plain counters it adds to, flushed into the shared
/// cell once per batch.
#[derive(Debug)]
pub struct WorkerRecorder<'a> {
    cell: &'a WorkerStatsCell,
    packet_ns: Histogram<u64>,
    last_publish: Instant,
}

impl<'a> WorkerRecorder<'a> {
    pub fn new(cell: &'a WorkerStatsCell) -> WorkerRecorder<'a> {
        WorkerRecorder {
            cell,
            // 1 ns to 10 ms at 3 significant digits: a few tens of KiB, once.
            packet_ns: Histogram::new_with_bounds(1, MAX_PACKET_NS, 3)
                .unwrap_or_else(|_| Histogram::new(3).expect("3 significant digits is valid")),
            last_publish: Instant::now(),
        }
    }

    /// One RX batch of `packets` frames took `elapsed` to process.
    pub fn batch(&mut self, packets: usize, elapsed: Duration) {
        if packets == 0 {
            return;
        }
        let n = packets as u64;
        let cell = self.cell;
        cell.rx_packets.fetch_add(n, Ordering::Relaxed);
        cell.batches.fetch_add(1, Ordering::Relaxed);
        let bucket = BATCH_BUCKETS
            .iter()
            .position(|&le| packets <= le as usize)
            .unwrap_or(BATCH_BUCKETS.len() - 1);
        cell.batch_sizes[bucket].fetch_add(1, Ordering::Relaxed);
        let per_packet = (elapsed.as_nanos() as u64 / n).max(1);
        // Clamped to the histogram's top so a stall cannot fail the record.
        self.packet_ns
            .record_n(per_packet.min(MAX_PACKET_NS), n)
            .ok();
    }

    /// The shared cell this recorder writes.
    pub fn cell(&self) -> &'a WorkerStatsCell {
        self.cell
    }

    pub fn transmitted(&self, packets: usize) {
        self.cell
            .tx_packets
            .fetch_add(packets as u64, Ordering::Relaxed);
    }

    pub fn dropped(&self, reason: Dropped) {
        self.cell.drops[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn woke_up(&self) {
        self.cell.wakeups.fetch_add(1, Ordering::Relaxed);
    }

    /// Copies the latency percentiles out if it is time; never waits for a
    /// reader that holds the lock.
    pub fn maybe_publish(&mut self, now: Instant) {
        if now.duration_since(self.last_publish) < PUBLISH_EVERY {
            return;
        }
        self.last_publish = now;
        if let Ok(mut shared) = self.cell.packet_ns.try_lock() {
            let h = &self.packet_ns;
            *shared = LatencyPercentiles {
                samples: h.len(),
                p50: h.value_at_quantile(0.5),
                p99: h.value_at_quantile(0.99),
                p999: h.value_at_quantile(0.999),
            };
        }
    }
}
