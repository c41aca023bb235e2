//! A data-plane worker: one thread, pinned to a CPU, owning its UMEMs (on
//! the CPU's NUMA node) and one AF_XDP socket per (interface, queue). It
//! drains a batch from a socket's RX ring, runs each frame through the
//! pipeline in place, queues the result on the TX batch of the interface
//! the next hop is on (copied into that interface's UMEM when it is
//! another), and pushes every TX batch out once. An idle worker sleeps in
//! poll(), or spins when busy polling.
//!
//! Several UMEMs, not one per worker: the kernel binds every socket of a
//! UMEM in the mode of its first, so a copy-only interface (veth, the
//! tunnel interface) sharing a UMEM with a NIC would force the NIC into
//! copy mode too. Each zero-copy interface has its own; the copy-mode ones
//! share one. The copy a frame takes between UMEMs replaces the one the
//! kernel makes in copy mode.

use crate::afxdp::{Frame, FrameBatch, PollSet, Umem, XskSocket, BATCH_SIZE};
use crate::batch_memo::BatchMemo;
use crate::fragment;
use crate::icmp::{RateLimit, SourceAddrs};
use crate::neighbour_queue::{NeighbourQueue, Released};
use crate::nexthop::{NextHopReader, Resolver};
use crate::pipeline::{self, Context, Dropped, Local, SoftExpiry, Transmit};
use crate::reassembly::{FragDrop, Reassembly, ReassemblyLimits};
use crate::stats::{Event, WorkerRecorder, WorkerStatsCell};
use crate::tables::Tables;
use crate::wire::ethernet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// Index of its UMEM among the worker's.
    pub umem: usize,
}

/// Extra wake-ups `send_all` makes when the TX ring is full before it drops
/// the rest of a batch: enough for a whole batch at copy mode's 32 frames
/// per wake-up.
const TX_FULL_RETRIES: usize = BATCH_SIZE / 32 + 1;

/// Frames a TX batch holds: a whole RX batch, each frame possibly in two
/// or three outer fragments.
const TX_BATCH: usize = 3 * BATCH_SIZE;

/// How long an idle worker sleeps in poll() before it looks at the stop flag.
const IDLE_POLL_MS: i32 = 100;
/// ... and while packets wait for a neighbour: the kernel answers a
/// resolution on a LAN in well under a millisecond.
const WAITING_POLL_MS: i32 = 1;

/// A packet waiting for its next hop's neighbour entry: the port it leaves
/// on and its frame (already in that port's UMEM), narrowed to the IP packet.
type Waiting = NeighbourQueue<(usize, Frame)>;

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
    /// The MTU handling knobs of `[dataplane]`.
    pub mtu: MtuSettings,
    /// The gateway's addresses per interface, for its ICMP errors.
    pub sources: Arc<SourceAddrs>,
}

/// `[dataplane]`'s MTU knobs, as the workers use them.
#[derive(Debug, Clone)]
pub struct MtuSettings {
    pub outer_fragmentation: bool,
    pub pmtu_hold: Duration,
    /// ICMP errors per second per worker.
    pub icmp_rate: u32,
    pub reassembly_slots: usize,
    pub reassembly_timeout: Duration,
}

/// Room a reassembled datagram leaves in a frame: what the pipeline puts
/// in front of it (see `pipeline::inbound`), and a VLAN tag's worth.
const REASSEMBLY_FRAME_OVERHEAD: usize = 64 + ethernet::HEADER_LEN + 4;

/// Runs until `shared.stop` is set. `index` selects this worker's stats cell;
/// each port's `umem` indexes `umems`.
pub fn run(index: usize, mut umems: Vec<Umem>, mut ports: Vec<Port>, shared: WorkerShared) {
    if ports.iter().any(|p| p.umem >= umems.len()) || umems.is_empty() {
        return;
    }
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
    // Room for every frame of a batch to leave in a few outer fragments.
    let mut tx: Vec<FrameBatch> = ports
        .iter()
        .map(|_| FrameBatch::with_capacity(TX_BATCH))
        .collect();
    let mut waiting = Waiting::default();
    let now = Instant::now();
    let mut local = Local {
        worker: index,
        icmp_limit: RateLimit::new(shared.mtu.icmp_rate, now),
        reassembly: Reassembly::new(ReassemblyLimits {
            slots: shared.mtu.reassembly_slots,
            max_datagram: (umems[0].config().frame_size as usize)
                .saturating_sub(REASSEMBLY_FRAME_OVERHEAD),
            timeout: shared.mtu.reassembly_timeout,
        }),
    };

    #[cfg(feature = "fault-injection")]
    let mut fault_received = 0u64;
    while !shared.stop.load(Ordering::Relaxed) {
        let mut received = 0;
        for p in 0..ports.len() {
            let from = ports[p].umem;
            let n = ports[p].socket.recv(&mut umems[from], &mut rx).unwrap_or(0);
            if n == 0 {
                continue;
            }
            received += n;
            #[cfg(feature = "fault-injection")]
            {
                fault_received += n as u64;
                crate::fault::worker_received(index, fault_received);
            }
            let started = Instant::now();
            process_batch(
                &shared,
                &mut umems,
                from,
                &mut local,
                &ports,
                ports[p].role,
                &mut rx,
                &mut tx,
                &mut waiting,
                &recorder,
                started,
            );
            recorder.batch(n, started.elapsed());
            for (port, batch) in ports.iter_mut().zip(tx.iter_mut()) {
                send_all(&mut umems[port.umem], port, batch, &recorder);
            }
            recorder.maybe_publish(started);
        }
        expire_fragments(&mut local, cell);
        if !waiting.is_empty() {
            release_waiting(
                &shared,
                &mut umems,
                &mut ports,
                &mut waiting,
                &mut tx,
                &recorder,
            );
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
        poll.wait(if waiting.is_empty() {
            IDLE_POLL_MS
        } else {
            WAITING_POLL_MS
        })
        .ok();
        recorder.maybe_publish(Instant::now());
    }
}

/// Puts the packet in `frame` (of `umems[from]`; the IP packet at `ip`,
/// without Ethernet header) in the waiting queue of its next hop, with its
/// later outer fragments written out now (from the frame as the pipeline
/// left it), all or none, everything in `umems[to]`, the UMEM of the port it
/// leaves on; returns how many frames wait.
#[allow(clippy::too_many_arguments)]
fn hold_for_neighbour(
    umems: &mut [Umem],
    (from, to): (usize, usize),
    waiting: &mut Waiting,
    mut frame: Frame,
    ip: &std::ops::Range<usize>,
    fragments: Option<&fragment::Plan>,
    (neighbour, mtu, port): (crate::nexthop::NeighbourKey, u32, usize),
    now: Instant,
) -> Result<usize, Dropped> {
    let room = waiting.room(neighbour);
    let mut rest = Fragments::default();
    if let Some(plan) = fragments {
        // The fragments get a copy of the bytes in front of the first as
        // their Ethernet header; the real one is written on release.
        let first = ip.start.saturating_sub(ethernet::HEADER_LEN)..ip.end;
        match write_fragments(umems, (from, to), &frame, &first, plan, room) {
            Ok(written) => rest = written,
            Err(_) => {
                umems[from].free(frame);
                return Err(Dropped::NeighbourQueueFull);
            }
        }
    }
    let extra = rest.iter().flatten().count();
    let narrowed = umems[from]
        .pull_head(&mut frame, ip.start)
        .and_then(|()| umems[from].set_len(&mut frame, ip.len()));
    let rest_narrowed = rest
        .iter_mut()
        .flatten()
        .all(|f| umems[to].pull_head(f, ethernet::HEADER_LEN).is_ok());
    let frame = match (room > extra && narrowed.is_ok() && rest_narrowed)
        .then(|| cross(umems, from, to, frame))
    {
        Some(Ok(frame)) => frame,
        failed => {
            if let Some(Err(frame)) = failed {
                umems[from].free(frame);
            }
            for f in rest.iter_mut().filter_map(Option::take) {
                umems[to].free(f);
            }
            return Err(Dropped::NeighbourQueueFull);
        }
    };
    // `room` covers them all: none of these is refused.
    for f in std::iter::once(frame).chain(rest.iter_mut().filter_map(Option::take)) {
        if let Err((_, f)) = waiting.hold(neighbour, mtu, (port, f), now) {
            umems[to].free(f);
        }
    }
    Ok(extra + 1)
}

/// `frame` (of `umems[from]`) as a frame of `umems[to]`: itself when that
/// is the same UMEM, else a copy, the original freed. Gives the frame back
/// when `to` has no free frame (its frames are all in its rings: the
/// interface cannot send as fast as it is given packets).
fn cross(umems: &mut [Umem], from: usize, to: usize, frame: Frame) -> Result<Frame, Frame> {
    if from == to {
        return Ok(frame);
    }
    let Some(mut out) = umems[to].alloc() else {
        return Err(frame);
    };
    let (src, dst) = (&umems[from], &umems[to]);
    let len = frame.len();
    // A fresh frame starts behind the full headroom; a longer packet
    // (outer headers pushed in front) starts earlier.
    let short = len.saturating_sub(dst.tailroom(&out));
    let fits = dst.push_head(&mut out, short).is_ok() && dst.set_len(&mut out, len).is_ok();
    if !fits {
        umems[to].free(out);
        return Err(frame);
    }
    dst.data_mut(&mut out).copy_from_slice(src.data(&frame));
    umems[from].free(frame);
    Ok(out)
}

/// Sends the packets whose neighbour the kernel has resolved, behind their
/// Ethernet header; drops (and counts) those it could not resolve in time.
fn release_waiting(
    shared: &WorkerShared,
    umems: &mut [Umem],
    ports: &mut [Port],
    waiting: &mut Waiting,
    tx: &mut [FrameBatch],
    recorder: &WorkerRecorder<'_>,
) {
    let table = shared.next_hops.load();
    waiting.release(&table, Instant::now(), |(port, mut frame), released| {
        let Some(umem) = ports.get(port).and_then(|p| umems.get_mut(p.umem)) else {
            // Cannot happen (a port is held with its index); not a panic,
            // and the frame is leaked rather than freed into a wrong UMEM.
            let _leaked = frame;
            return;
        };
        let hop = match released {
            Released::Send(hop) => hop,
            Released::Drop(reason) => {
                umem.free(frame);
                recorder.dropped(Dropped::NextHop(reason));
                return;
            }
        };
        let framed = umem
            .push_head(&mut frame, ethernet::HEADER_LEN)
            .ok()
            .and_then(|buf| {
                let len = buf.len();
                pipeline::with_ethernet(buf, ethernet::HEADER_LEN..len, &hop).ok()
            });
        match framed {
            Some(_) => {
                if let Err(frame) = tx[port].push(frame) {
                    umem.free(frame);
                    recorder.dropped(Dropped::TxRingFull);
                }
            }
            None => {
                umem.free(frame);
                recorder.dropped(Dropped::Esp(crate::esp::EspError::NoHeadroom));
            }
        }
    });
    for (port, batch) in ports.iter_mut().zip(tx.iter_mut()) {
        send_all(&mut umems[port.umem], port, batch, recorder);
    }
}

/// Counts the datagrams whose fragments waited too long, or lost their
/// slot to newer ones.
fn expire_fragments(local: &mut Local, cell: &WorkerStatsCell) {
    if local.reassembly.in_use() > 0 {
        local.reassembly.expire(Instant::now());
    }
    cell.dropped_n(
        Dropped::Fragment(FragDrop::Timeout),
        local.reassembly.take_timeouts(),
    );
    cell.dropped_n(
        Dropped::Fragment(FragDrop::Evicted),
        local.reassembly.take_evictions(),
    );
}

#[allow(clippy::too_many_arguments)]
fn process_batch(
    shared: &WorkerShared,
    umems: &mut [Umem],
    from: usize,
    local: &mut Local,
    ports: &[Port],
    role: PortRole,
    rx: &mut FrameBatch,
    tx: &mut [FrameBatch],
    waiting: &mut Waiting,
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
        outer_fragmentation: shared.mtu.outer_fragmentation,
        pmtu_hold: shared.mtu.pmtu_hold,
        sources: &shared.sources,
        events: recorder.cell(),
        memo: BatchMemo::default(),
    };
    for mut frame in rx.drain() {
        let umem = &mut umems[from];
        let len = frame.len();
        let head = umem.headroom(&frame);
        let tail = umem.tailroom(&frame);
        // Widen the frame to the whole buffer so the transform has room on
        // both sides, then narrow it to what goes out.
        let outcome = match umem.push_head(&mut frame, head) {
            Ok(_) => match umem.set_len(&mut frame, head + len + tail) {
                Ok(()) => {
                    let buf = umem.data_mut(&mut frame);
                    transform(&ctx, local, role, buf, head, len)
                }
                Err(_) => Err(Dropped::Esp(crate::esp::EspError::NoTailroom)),
            },
            Err(_) => Err(Dropped::Esp(crate::esp::EspError::NoHeadroom)),
        };
        let target = outcome.and_then(|sent| {
            let Some((out, expiry)) = sent else {
                return Ok(None);
            };
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
            Ok(Some((port, out)))
        });
        match target {
            Ok(Some((
                port,
                Transmit {
                    range,
                    fragments,
                    awaiting: Some((neighbour, mtu)),
                    ..
                },
            ))) => {
                let held = hold_for_neighbour(
                    umems,
                    (from, ports[port].umem),
                    waiting,
                    frame,
                    &range,
                    fragments.as_ref(),
                    (neighbour, mtu, port),
                    now,
                );
                match held {
                    Ok(n) => (0..n).for_each(|_| recorder.cell().event(Event::HeldForNeighbour)),
                    Err(reason) => recorder.dropped(reason),
                }
            }
            Ok(Some((
                port,
                Transmit {
                    range, fragments, ..
                },
            ))) => {
                // The later fragments are written from the frame before it
                // is narrowed (their payload lies behind the first's end),
                // and queued after it: a receiver steering UDP fragments by
                // what the first one showed needs it first.
                let to = ports[port].umem;
                let mut rest = Fragments::default();
                if let Some(plan) = &fragments {
                    let room = tx[port].remaining();
                    match write_fragments(umems, (from, to), &frame, &range, plan, room) {
                        Ok(written) => rest = written,
                        Err(reason) => {
                            umems[from].free(frame);
                            recorder.dropped(reason);
                            continue;
                        }
                    }
                }
                let umem = &mut umems[from];
                let narrowed = umem
                    .pull_head(&mut frame, range.start)
                    .and_then(|()| umem.set_len(&mut frame, range.len()));
                if narrowed.is_ok() {
                    match cross(umems, from, to, frame) {
                        Ok(frame) => {
                            if let Err(frame) = tx[port].push(frame) {
                                umems[to].free(frame);
                                recorder.dropped(Dropped::TxRingFull);
                            }
                        }
                        // The port's UMEM has no frame free: its TX is
                        // backed up, as when its ring is full.
                        Err(frame) => {
                            umems[from].free(frame);
                            recorder.dropped(Dropped::TxRingFull);
                        }
                    }
                    for f in rest.iter_mut().filter_map(Option::take) {
                        if let Err(f) = tx[port].push(f) {
                            umems[to].free(f);
                        }
                    }
                } else {
                    umem.free(frame);
                    for f in rest.iter_mut().filter_map(Option::take) {
                        umems[to].free(f);
                    }
                    recorder.dropped(Dropped::Esp(crate::esp::EspError::NoHeadroom));
                }
            }
            // Held for reassembly, or an ICMP message that was acted on.
            Ok(None) => umem.free(frame),
            Err(reason) => {
                umem.free(frame);
                recorder.dropped(reason);
            }
        }
    }
}

/// The second and later fragments of one outer packet, in order.
type Fragments = [Option<Frame>; MAX_EXTRA_FRAGMENTS];

/// Fragments of one outer packet beyond the first: a 1500-byte packet on a
/// 576-byte path needs two more.
const MAX_EXTRA_FRAGMENTS: usize = 8;

/// Writes the second and later outer fragments of the packet in `frame`
/// (of `umems[from]`; its first fragment at `first`, with its Ethernet
/// header) into fresh frames of `umems[to]`. All or nothing: without a
/// frame for each, or room for all in the TX batch (`room`), none is kept.
fn write_fragments(
    umems: &mut [Umem],
    (from, to): (usize, usize),
    frame: &Frame,
    first: &std::ops::Range<usize>,
    plan: &fragment::Plan,
    room: usize,
) -> Result<Fragments, Dropped> {
    let extra = plan.count().saturating_sub(1);
    if room < extra + 1 {
        return Err(Dropped::TxRingFull);
    }
    let mut fresh = Fragments::default();
    if extra > fresh.len() {
        return Err(Dropped::NoFrameForFragment);
    }
    let frame_size = umems[to].config().frame_size as usize;
    for i in 0..extra {
        let Some(mut out) = umems[to].alloc() else {
            for f in fresh.iter_mut().filter_map(Option::take) {
                umems[to].free(f);
            }
            return Err(Dropped::NoFrameForFragment);
        };
        let (src_umem, umem) = (&umems[from], &umems[to]);
        let room = frame_size - umem.headroom(&out);
        let written = umem.set_len(&mut out, room).ok().and_then(|()| {
            let src = src_umem.data(frame);
            let dst = umem.data_mut(&mut out);
            dst[..ethernet::HEADER_LEN]
                .copy_from_slice(&src[first.start..first.start + ethernet::HEADER_LEN]);
            plan.write(i + 1, src, &mut dst[ethernet::HEADER_LEN..])
        });
        match written.map(|n| umem.set_len(&mut out, ethernet::HEADER_LEN + n)) {
            Some(Ok(())) => fresh[i] = Some(out),
            _ => {
                umems[to].free(out);
                for f in fresh.iter_mut().filter_map(Option::take) {
                    umems[to].free(f);
                }
                return Err(Dropped::NoFrameForFragment);
            }
        }
    }
    Ok(fresh)
}

fn transform(
    ctx: &Context<'_>,
    local: &mut Local,
    role: PortRole,
    buf: &mut [u8],
    start: usize,
    len: usize,
) -> Result<Option<(Transmit, Option<SoftExpiry>)>, Dropped> {
    let inbound = match role {
        PortRole::Inside => false,
        PortRole::Outside => true,
        PortRole::Both => pipeline::looks_like_esp(ctx.tables, &buf[start..start + len]),
    };
    if inbound {
        pipeline::inbound(ctx, local, buf, start, len)
    } else {
        pipeline::outbound(ctx, local, buf, start, len).map(Some)
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
