//! A data-plane worker: one thread, pinned to a CPU, owning one UMEM and one
//! AF_XDP socket per (interface, queue) it serves. It drains a batch from a
//! socket's RX ring, runs each frame through the pipeline in place, queues the
//! result on the TX batch of the interface the next hop is on, and pushes
//! every TX batch out once. An idle worker sleeps in poll().

use crate::afxdp::{FrameBatch, PollSet, Umem, XskSocket, BATCH_SIZE};
use crate::nexthop::{NextHopReader, Resolver};
use crate::pipeline::{self, Context, Dropped, SoftExpiry, Transmit};
use crate::stats::{WorkerRecorder, WorkerStatsCell};
use crate::tables::Tables;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::Instant;

/// Which way frames arriving on a port go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortRole {
    /// LAN side: cleartext the XDP program found a protect policy for.
    Inside,
    /// WAN side: ESP (or ESP in UDP) to one of our addresses.
    Outside,
    /// One-armed: ESP is inbound, anything else outbound.
    Both,
}

/// One socket of a worker and what arrives on it.
#[derive(Debug)]
pub struct Port {
    pub socket: XskSocket,
    pub role: PortRole,
}

/// Extra wake-ups `send_all` makes when the TX ring is full before it drops
/// the rest of a batch: enough for a whole batch at copy mode's 32 frames
/// per wake-up.
const TX_FULL_RETRIES: usize = BATCH_SIZE / 32 + 1;

/// How long an idle worker sleeps in poll() before it looks at the stop flag.
const IDLE_POLL_MS: i32 = 100;

/// What a worker needs besides its own sockets.
#[derive(Debug, Clone)]
pub struct WorkerShared {
    pub tables: Arc<Tables>,
    pub next_hops: NextHopReader,
    pub resolver: Resolver,
    pub expiries: SyncSender<SoftExpiry>,
    pub stop: Arc<AtomicBool>,
    pub stats: Arc<[WorkerStatsCell]>,
    pub busy_poll: bool,
    /// Clamp the MSS of outbound TCP SYNs to what fits the tunnel.
    pub mss_clamp: bool,
    /// The route-based tunnel interface, if configured.
    pub tunnel: Option<crate::tunnel::TunnelPort>,
}

/// Runs until `shared.stop` is set. `index` selects this worker's stats cell.
pub fn run(index: usize, mut umem: Umem, mut ports: Vec<Port>, shared: WorkerShared) {
    let Some(cell) = shared.stats.get(index) else {
        return;
    };
    let mut recorder = WorkerRecorder::new(cell);
    let mut poll = PollSet::new();
    for port in &ports {
        poll.add(&port.socket);
    }
    let mut rx = FrameBatch::with_capacity(BATCH_SIZE);
    // One TX batch per port; a frame goes to the port its next hop is on.
    let mut tx: Vec<FrameBatch> = ports
        .iter()
        .map(|_| FrameBatch::with_capacity(BATCH_SIZE))
        .collect();

    while !shared.stop.load(Ordering::Relaxed) {
        let mut received = 0;
        for p in 0..ports.len() {
            let n = ports[p].socket.recv(&mut umem, &mut rx).unwrap_or(0);
            if n == 0 {
                continue;
            }
            received += n;
            let started = Instant::now();
            process_batch(
                &shared,
                &mut umem,
                &ports,
                ports[p].role,
                &mut rx,
                &mut tx,
                &recorder,
                started,
            );
            recorder.batch(n, started.elapsed());
            for (port, batch) in ports.iter_mut().zip(tx.iter_mut()) {
                send_all(&mut umem, port, batch, &recorder);
            }
            recorder.maybe_publish(started);
        }
        if received > 0 {
            continue;
        }
        // Copy-mode TX goes out in slices of 32 per wake-up: finish it
        // before sleeping.
        let mut pending = false;
        for port in &mut ports {
            port.socket.flush().ok();
            pending |= port.socket.tx_pending() > 0;
        }
        if pending || shared.busy_poll {
            continue;
        }
        recorder.woke_up();
        poll.wait(IDLE_POLL_MS).ok();
        recorder.maybe_publish(Instant::now());
    }
}

#[allow(clippy::too_many_arguments)]
fn process_batch(
    shared: &WorkerShared,
    umem: &mut Umem,
    ports: &[Port],
    role: PortRole,
    rx: &mut FrameBatch,
    tx: &mut [FrameBatch],
    recorder: &WorkerRecorder<'_>,
    now: Instant,
) {
    // One snapshot per batch: an SA update lands between batches.
    let tables = shared.tables.load();
    let next_hops = shared.next_hops.load();
    let ctx = Context {
        tables: &tables,
        next_hops: &next_hops,
        resolver: &shared.resolver,
        now,
        mss_clamp: shared.mss_clamp,
        tunnel: shared.tunnel,
    };
    for mut frame in rx.drain() {
        let len = frame.len();
        let head = umem.headroom(&frame);
        let tail = umem.tailroom(&frame);
        // Widen the frame to the whole buffer so the transform has room on
        // both sides, then narrow it to what goes out.
        let outcome = match umem.push_head(&mut frame, head) {
            Ok(_) => match umem.set_len(&mut frame, head + len + tail) {
                Ok(()) => {
                    let buf = umem.data_mut(&mut frame);
                    transform(&ctx, role, buf, head, len)
                }
                Err(_) => Err(Dropped::Esp(crate::esp::EspError::NoTailroom)),
            },
            Err(_) => Err(Dropped::Esp(crate::esp::EspError::NoHeadroom)),
        };
        let target = outcome.and_then(|(out, expiry)| {
            if let Some(expiry) = expiry {
                // A full queue loses a report, not a packet: the next packet
                // past the limit does not report again, but the control
                // side also polls the SA's counters.
                shared.expiries.try_send(expiry).ok();
            }
            let port = ports
                .iter()
                .position(|p| p.socket.ifindex() == out.ifindex)
                .ok_or(Dropped::NotOurInterface)?;
            Ok((port, out))
        });
        match target {
            Ok((port, Transmit { range, .. })) => {
                let narrowed = umem
                    .pull_head(&mut frame, range.start)
                    .and_then(|()| umem.set_len(&mut frame, range.len()));
                if narrowed.is_ok() {
                    // A TX batch holds as many frames as an RX batch, so
                    // this cannot overflow; if it ever did, it is a full ring.
                    if let Err(frame) = tx[port].push(frame) {
                        umem.free(frame);
                        recorder.dropped(Dropped::TxRingFull);
                    }
                } else {
                    umem.free(frame);
                    recorder.dropped(Dropped::Esp(crate::esp::EspError::NoHeadroom));
                }
            }
            Err(reason) => {
                umem.free(frame);
                recorder.dropped(reason);
            }
        }
    }
}

fn transform(
    ctx: &Context<'_>,
    role: PortRole,
    buf: &mut [u8],
    start: usize,
    len: usize,
) -> Result<(Transmit, Option<SoftExpiry>), Dropped> {
    let inbound = match role {
        PortRole::Inside => false,
        PortRole::Outside => true,
        PortRole::Both => pipeline::looks_like_esp(&buf[start..start + len]),
    };
    if inbound {
        pipeline::inbound(ctx, buf, start, len)
    } else {
        pipeline::outbound(ctx, buf, start, len)
    }
}

/// Pushes a TX batch out; what the ring cannot take after a few wake-ups is
/// dropped and counted, so a slow interface cannot hold frames the RX side
/// needs.
fn send_all(
    umem: &mut Umem,
    port: &mut Port,
    batch: &mut FrameBatch,
    recorder: &WorkerRecorder<'_>,
) {
    if batch.is_empty() {
        return;
    }
    let mut sent = port.socket.send(umem, batch).unwrap_or(0);
    // In copy mode one wake-up moves at most 32 frames, fewer than a batch:
    // under sustained load the ring fills. Before dropping, kick it a few
    // more times (each `send` reclaims, queues what fits and wakes).
    for _ in 0..TX_FULL_RETRIES {
        if batch.is_empty() {
            break;
        }
        sent += port.socket.send(umem, batch).unwrap_or(0);
    }
    recorder.transmitted(sent);
    for frame in batch.drain() {
        umem.free(frame);
        recorder.dropped(Dropped::TxRingFull);
    }
}
