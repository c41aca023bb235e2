//! One AF_XDP socket per (interface, queue), sharing its worker's UMEM.

use super::{errno, FrameBatch, Umem, XskError};
use std::ffi::{CStr, CString};
use std::io;
use std::num::NonZeroU32;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

/// `SOL_XDP` (not in every libc version).
const SOL_XDP: libc::c_int = 283;
/// `XDP_OPTIONS` getsockopt.
const XDP_OPTIONS: libc::c_int = 8;
/// `XDP_OPTIONS_ZEROCOPY` flag of `struct xdp_options`.
const XDP_OPTIONS_ZEROCOPY: u32 = 1;
/// Busy-polling socket options (asm-generic/socket.h; the same on every
/// architecture Linux has AF_XDP on, and not in every libc version).
const SO_BUSY_POLL: libc::c_int = 46;
const SO_PREFER_BUSY_POLL: libc::c_int = 69;
const SO_BUSY_POLL_BUDGET: libc::c_int = 70;

/// How to bind: zero-copy or copy mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BindMode {
    /// Zero-copy when the driver takes it, else copy mode: the first socket
    /// of a UMEM asks for zero-copy and, refused, binds again in copy mode,
    /// keeping the kernel's answer ([`XskSocket::zero_copy_refused`]). The
    /// default; veth gets copy mode.
    #[default]
    Auto,
    /// Copy mode, always.
    Copy,
    /// Zero-copy or fail with [`XskError::ZeroCopyUnsupported`].
    ZeroCopy,
}

/// Per-socket settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketConfig {
    /// RX ring entries (power of two).
    pub rx_size: u32,
    /// TX ring entries (power of two).
    pub tx_size: u32,
    /// Frames kept in this socket's fill ring (at most the UMEM's
    /// `fill_size`); the rest of the UMEM is for other sockets and for TX.
    pub fill_target: u32,
    /// Zero-copy or copy mode. Only the first socket of a UMEM chooses; the
    /// others share its mode, and binding one fails if it asks otherwise.
    pub mode: BindMode,
    /// Bind with `XDP_USE_NEED_WAKEUP`: the kernel says when it needs a
    /// wake-up syscall. Like the mode, the first socket of a UMEM decides.
    pub need_wakeup: bool,
    /// The kernel's preferred busy polling on this socket; `None`: off.
    pub busy_poll: Option<BusyPoll>,
}

/// Preferred busy polling (`SO_PREFER_BUSY_POLL`): the application's
/// `recvfrom`/`sendto` run the driver's NAPI instead of its interrupts, as
/// the kernel's xdpsock `-B` does. Pays off with `napi_defer_hard_irqs` and
/// `gro_flush_timeout` set on the NIC (see docs/DEPLOYMENT.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusyPoll {
    /// `SO_BUSY_POLL`: how long one call may spin in the driver, in µs.
    pub usecs: u32,
    /// `SO_BUSY_POLL_BUDGET`: packets the driver handles per call.
    pub budget: u16,
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            rx_size: 2048,
            tx_size: 2048,
            fill_target: 1024,
            mode: BindMode::Auto,
            need_wakeup: true,
            busy_poll: None,
        }
    }
}

/// Counters kept by the socket itself (plain integers: one worker owns it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketStats {
    /// Frames taken from the RX ring.
    pub rx_frames: u64,
    /// Frames put on the TX ring.
    pub tx_frames: u64,
    /// Frames back from the completion ring.
    pub tx_completed: u64,
    /// Wake-ups of the fill ring (`poll`), made because the kernel asked.
    pub rx_wakeups: u64,
    /// Wake-ups of the TX ring (`sendto`), made because the kernel asked.
    pub tx_wakeups: u64,
    /// TX wake-ups the kernel answered with "busy, try again".
    pub tx_wakeups_busy: u64,
    /// RX descriptors outside the UMEM (never expected), dropped.
    pub invalid_rx_descs: u64,
    /// Empty frames handed to `send`, freed instead of sent.
    pub empty_tx_frames: u64,
    /// `recvfrom` calls made to busy-poll the driver (busy polling only).
    pub busy_polls: u64,
}

/// The kernel's counters of an AF_XDP socket (`XDP_STATISTICS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Frames dropped for reasons other than invalid descriptors.
    pub rx_dropped: u64,
    /// Invalid descriptors on the fill ring.
    pub rx_invalid_descs: u64,
    /// Invalid descriptors on the TX ring.
    pub tx_invalid_descs: u64,
    /// Frames dropped because the RX ring was full.
    pub rx_ring_full: u64,
    /// Times the fill ring was empty when a frame arrived.
    pub rx_fill_ring_empty_descs: u64,
    /// Times the TX ring was empty when the kernel looked.
    pub tx_ring_empty_descs: u64,
}

/// An AF_XDP socket bound to one (interface, queue), using a worker's
/// [`Umem`]. Every operation takes that UMEM, which owns the frames.
pub struct XskSocket {
    umem_id: u32,
    ifindex: u32,
    ifname: String,
    queue_id: u32,
    zero_copy: bool,
    /// Why zero-copy was refused when [`BindMode::Auto`] fell back to copy.
    zero_copy_refused: Option<String>,
    need_wakeup: bool,
    busy_poll: Option<BusyPoll>,
    rx_size: u32,
    tx_size: u32,
    fd: RawFd,
    fq: xdpilone::DeviceQueue,
    rx: xdpilone::RingRx,
    tx: xdpilone::RingTx,
    // Keeps the socket's configuration alive alongside the rings.
    _user: xdpilone::User,
    fill_target: u32,
    /// Frames given to the fill ring and not yet back through RX.
    in_fill: u32,
    /// Frames given to the TX ring and not yet back through completion.
    tx_in_flight: u32,
    stats: SocketStats,
}

impl std::fmt::Debug for XskSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XskSocket")
            .field("ifname", &self.ifname)
            .field("ifindex", &self.ifindex)
            .field("queue_id", &self.queue_id)
            .field("fd", &self.fd)
            .field("zero_copy", &self.zero_copy)
            .field("need_wakeup", &self.need_wakeup)
            .field("in_fill", &self.in_fill)
            .field("tx_in_flight", &self.tx_in_flight)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// The index of the interface `name` in the calling thread's network
/// namespace.
pub fn ifindex(name: &str) -> Result<u32, XskError> {
    let c = CString::new(name).map_err(|_| XskError::InterfaceNotFound(name.to_string()))?;
    // SAFETY: `c` is a valid NUL-terminated string for the whole call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(XskError::InterfaceNotFound(name.to_string()));
    }
    Ok(index)
}

/// The name of interface `index` in the calling thread's network namespace.
fn ifname(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes if_indextoname may write.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success if_indextoname wrote a NUL-terminated name into `buf`.
    let name = unsafe { CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

fn check_ring(name: &str, v: u32) -> Result<(), XskError> {
    if v == 0 || !v.is_power_of_two() {
        return Err(XskError::Config(format!("{name} {v} (a power of two)")));
    }
    Ok(())
}

impl XskSocket {
    /// Binds a socket to queue `queue_id` of interface `ifindex` (in the
    /// calling thread's network namespace), sharing `umem`, and stocks its
    /// fill ring. Frames arrive only once an XDP program redirects them to
    /// this socket's fd through an `XSKMAP`.
    ///
    /// The first socket of a UMEM chooses its mode and need-wakeup; those
    /// sharing it get the same (the kernel's rule for a shared UMEM), so an
    /// interface that must bind otherwise needs a UMEM of its own.
    pub fn bind(
        umem: &mut Umem,
        ifindex: u32,
        queue_id: u32,
        config: &SocketConfig,
    ) -> Result<Self, XskError> {
        check_ring("rx_size", config.rx_size)?;
        check_ring("tx_size", config.tx_size)?;
        if config.fill_target > umem.config().fill_size {
            return Err(XskError::Config(format!(
                "fill_target {} exceeds the fill ring ({})",
                config.fill_target,
                umem.config().fill_size
            )));
        }
        let ifname = ifname(ifindex)
            .ok_or_else(|| XskError::InterfaceNotFound(format!("index {ifindex}")))?;
        let mut info = xdpilone::IfInfo::invalid();
        info.from_ifindex(ifindex)
            .map_err(|_| XskError::InterfaceNotFound(ifname.clone()))?;
        info.set_queue(queue_id);

        let first = umem.bound == 0;
        let mut sock = if first && config.mode == BindMode::Auto {
            // Ask for zero-copy explicitly rather than let the kernel fall
            // back in silence: the operator sees why a NIC runs in copy mode.
            let zc = SocketConfig {
                mode: BindMode::ZeroCopy,
                ..config.clone()
            };
            match Self::bind_first(umem, &info, &ifname, queue_id, &zc) {
                Ok(sock) => sock,
                Err(XskError::ZeroCopyUnsupported { source, .. }) => {
                    let copy = SocketConfig {
                        mode: BindMode::Copy,
                        ..config.clone()
                    };
                    let mut sock = Self::bind_first(umem, &info, &ifname, queue_id, &copy)?;
                    sock.zero_copy_refused = Some(source.to_string());
                    sock
                }
                Err(e) => return Err(e),
            }
        } else if first {
            Self::bind_first(umem, &info, &ifname, queue_id, config)?
        } else {
            Self::bind_inner(umem, &info, &ifname, queue_id, config, false)?
        };
        umem.bound += 1;
        sock.refill(umem);
        Ok(sock)
    }

    /// Binds the UMEM's own socket; on failure registers the UMEM again,
    /// since its fd keeps rings that cannot be set twice.
    fn bind_first(
        umem: &mut Umem,
        info: &xdpilone::IfInfo,
        ifname: &str,
        queue_id: u32,
        config: &SocketConfig,
    ) -> Result<Self, XskError> {
        let result = Self::bind_inner(umem, info, ifname, queue_id, config, true);
        if result.is_err() {
            umem.register_again()?;
        }
        result
    }

    fn bind_inner(
        umem: &mut Umem,
        info: &xdpilone::IfInfo,
        ifname: &str,
        queue_id: u32,
        config: &SocketConfig,
        first: bool,
    ) -> Result<Self, XskError> {
        let x = umem.xdpilone();
        let socket = if first {
            // The UMEM's own socket: it must be bound before others share it.
            xdpilone::Socket::with_shared(info, x)
        } else {
            xdpilone::Socket::new(info)
        }
        .map_err(|e| {
            let source = errno(e);
            match source.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => XskError::MissingPrivilege {
                    op: "opening an AF_XDP socket",
                    cap: "CAP_NET_RAW",
                    source,
                },
                _ => XskError::io("opening an AF_XDP socket", source),
            }
        })?;
        let busy = || XskError::Busy {
            ifname: ifname.to_string(),
            queue: queue_id,
        };
        let fq = x.fq_cq(&socket).map_err(|e| {
            let source = errno(e);
            match source.raw_os_error() {
                // xdpilone's own check that this queue is not registered yet.
                Some(libc::EINVAL) => busy(),
                _ => XskError::io("creating the fill and completion rings", source),
            }
        })?;
        // Sockets sharing a UMEM may not pass mode flags: they inherit the
        // first socket's (xdpilone adds XDP_SHARED_UMEM itself).
        let bind_flags = if first {
            let mode = match config.mode {
                BindMode::Auto => 0,
                BindMode::Copy => xdpilone::SocketConfig::XDP_BIND_COPY,
                BindMode::ZeroCopy => xdpilone::SocketConfig::XDP_BIND_ZEROCOPY,
            };
            let wake = if config.need_wakeup {
                xdpilone::SocketConfig::XDP_BIND_NEED_WAKEUP
            } else {
                0
            };
            mode | wake
        } else {
            0
        };
        let user = x
            .rx_tx(
                &socket,
                &xdpilone::SocketConfig {
                    rx_size: NonZeroU32::new(config.rx_size),
                    tx_size: NonZeroU32::new(config.tx_size),
                    bind_flags,
                },
            )
            .map_err(|e| XskError::io("creating the RX and TX rings", errno(e)))?;
        let rx = user
            .map_rx()
            .map_err(|e| XskError::io("mapping the RX ring", errno(e)))?;
        let tx = user
            .map_tx()
            .map_err(|e| XskError::io("mapping the TX ring", errno(e)))?;
        x.bind(&user).map_err(|e| {
            let source = errno(e);
            match source.raw_os_error() {
                Some(libc::ENODEV) | Some(libc::ENXIO) => {
                    XskError::InterfaceNotFound(ifname.to_string())
                }
                // A driver without AF_XDP zero-copy says EOPNOTSUPP (no
                // ndo_xsk_wakeup: veth) or EINVAL (an ndo_bpf that does not
                // know XDP_SETUP_XSK_POOL).
                Some(libc::EOPNOTSUPP) | Some(libc::EINVAL)
                    if first && config.mode == BindMode::ZeroCopy =>
                {
                    XskError::ZeroCopyUnsupported {
                        ifname: ifname.to_string(),
                        queue: queue_id,
                        source,
                    }
                }
                Some(libc::EOPNOTSUPP) => XskError::io(
                    format!("binding to {ifname} queue {queue_id} (not supported)"),
                    source,
                ),
                Some(libc::EBUSY) => busy(),
                Some(libc::EINVAL) => XskError::io(
                    format!(
                        "binding to {ifname} queue {queue_id} (no such queue, or a mode \
                         the UMEM's first socket does not share)"
                    ),
                    source,
                ),
                _ => XskError::io(format!("binding to {ifname} queue {queue_id}"), source),
            }
        })?;
        let fd = user.as_raw_fd();
        let zero_copy = is_zero_copy(fd).map_err(|e| XskError::io("reading XDP_OPTIONS", e))?;
        let need_wakeup = if first {
            umem.need_wakeup = config.need_wakeup;
            config.need_wakeup
        } else {
            umem.need_wakeup
        };
        if !first {
            match config.mode {
                BindMode::ZeroCopy if !zero_copy => {
                    return Err(XskError::ZeroCopyUnsupported {
                        ifname: ifname.to_string(),
                        queue: queue_id,
                        source: io::Error::other(
                            "this UMEM's first socket is in copy mode; sockets sharing it are too",
                        ),
                    })
                }
                BindMode::Copy if zero_copy => {
                    return Err(XskError::Config(
                        "this UMEM's first socket is zero-copy; sockets sharing it are too".into(),
                    ))
                }
                _ => {}
            }
        }
        if let Some(busy) = config.busy_poll {
            set_busy_poll(fd, busy).map_err(|source| match source.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => XskError::MissingPrivilege {
                    op: "turning on busy polling (SO_PREFER_BUSY_POLL)",
                    cap: "CAP_NET_ADMIN",
                    source,
                },
                _ => XskError::io(
                    format!("turning on busy polling on {ifname} queue {queue_id}"),
                    source,
                ),
            })?;
        }
        Ok(XskSocket {
            umem_id: umem.id(),
            ifindex: info.ifindex(),
            ifname: ifname.to_string(),
            queue_id,
            zero_copy,
            zero_copy_refused: None,
            need_wakeup,
            busy_poll: config.busy_poll,
            rx_size: config.rx_size,
            tx_size: config.tx_size,
            fd,
            fq,
            rx,
            tx,
            _user: user,
            fill_target: config.fill_target,
            in_fill: 0,
            tx_in_flight: 0,
            stats: SocketStats::default(),
        })
    }

    /// Interface index it is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Interface name it is bound to (at bind time).
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Queue id it is bound to.
    pub fn queue_id(&self) -> u32 {
        self.queue_id
    }

    /// Whether the kernel bound it in zero-copy mode (else copy mode).
    pub fn is_zero_copy(&self) -> bool {
        self.zero_copy
    }

    /// Whether it was bound with `XDP_USE_NEED_WAKEUP`.
    pub fn uses_need_wakeup(&self) -> bool {
        self.need_wakeup
    }

    /// Why the kernel refused zero-copy, when [`BindMode::Auto`] fell back
    /// to copy mode.
    pub fn zero_copy_refused(&self) -> Option<&str> {
        self.zero_copy_refused.as_deref()
    }

    /// Its busy-polling settings, if on.
    pub fn busy_poll(&self) -> Option<BusyPoll> {
        self.busy_poll
    }

    /// Entries of its RX and TX rings.
    pub fn ring_sizes(&self) -> (u32, u32) {
        (self.rx_size, self.tx_size)
    }

    /// `SO_BUSY_POLL` and `SO_PREFER_BUSY_POLL` as the kernel holds them
    /// (it has no getsockopt for `SO_BUSY_POLL_BUDGET`).
    pub fn busy_poll_options(&self) -> Result<(u32, bool), XskError> {
        let get = |opt| get_int(self.fd, libc::SOL_SOCKET, opt);
        let read = || -> io::Result<(u32, bool)> {
            Ok((
                u32::try_from(get(SO_BUSY_POLL)?).unwrap_or(0),
                get(SO_PREFER_BUSY_POLL)? != 0,
            ))
        };
        read().map_err(|e| XskError::io("reading the busy-polling options", e))
    }

    /// This socket's own counters.
    pub fn stats(&self) -> SocketStats {
        self.stats
    }

    /// The kernel's counters of this socket.
    pub fn kernel_stats(&self) -> Result<KernelStats, XskError> {
        let s = self
            .fq
            .statistics_v2()
            .map_err(|e| XskError::io("reading XDP_STATISTICS", errno(e)))?;
        Ok(KernelStats {
            rx_dropped: s.rx_dropped,
            rx_invalid_descs: s.rx_invalid_descs,
            tx_invalid_descs: s.tx_invalid_descs,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty_descs: s.rx_fill_ring_empty_descs,
            tx_ring_empty_descs: s.tx_ring_empty_descs,
        })
    }

    /// Frames the kernel holds for RX (fill ring and in flight to RX).
    pub fn frames_in_fill(&self) -> u32 {
        self.in_fill
    }

    /// Frames given to the TX ring and not yet reclaimed.
    pub fn tx_in_flight(&self) -> u32 {
        self.tx_in_flight
    }

    /// TX descriptors the kernel has not taken from the ring yet.
    pub fn tx_pending(&self) -> u32 {
        self.tx.pending()
    }

    fn check_umem(&self, umem: &Umem) -> Result<(), XskError> {
        if umem.id() == self.umem_id {
            Ok(())
        } else {
            Err(XskError::ForeignUmem)
        }
    }

    /// Tops the fill ring up to `fill_target` from the UMEM's free list;
    /// the number of frames added.
    pub fn refill(&mut self, umem: &mut Umem) -> u32 {
        if self.check_umem(umem).is_err() {
            return 0;
        }
        let want = self.fill_target.saturating_sub(self.in_fill);
        let want = want.min(u32::try_from(umem.free_frames()).unwrap_or(u32::MAX));
        if want == 0 {
            return 0;
        }
        let mut writer = self.fq.fill(want);
        let cap = writer.capacity();
        // Exactly `cap` items: none is popped without a slot for it.
        let n = writer.insert((0..cap).map_while(|_| umem.pop_free()));
        writer.commit();
        self.in_fill += n;
        n
    }

    /// Moves completed TX frames back to the UMEM's free list; how many.
    pub fn reclaim(&mut self, umem: &mut Umem) -> u32 {
        if self.tx_in_flight == 0 || self.check_umem(umem).is_err() {
            return 0;
        }
        let mut reader = self.fq.complete(self.tx_in_flight);
        let mut n = 0;
        while let Some(addr) = reader.read() {
            umem.push_free(addr);
            n += 1;
        }
        reader.release();
        self.tx_in_flight -= n;
        self.stats.tx_completed += u64::from(n);
        n
    }

    /// Receives up to the room left in `out`, then tops the fill ring up.
    /// Returns the number of frames appended. When nothing arrived and the
    /// kernel asks for a wake-up of the fill ring, makes one (`poll`).
    pub fn recv(&mut self, umem: &mut Umem, out: &mut FrameBatch) -> Result<usize, XskError> {
        self.check_umem(umem)?;
        let room = u32::try_from(out.remaining()).unwrap_or(u32::MAX);
        let mut n = 0;
        if room > 0 {
            let mut reader = self.rx.receive(room);
            while let Some(desc) = reader.read() {
                n += 1;
                match umem.frame_from_desc(desc.addr, desc.len) {
                    Some(frame) => {
                        // Cannot fail: at most `room` descriptors were read.
                        let _ = out.push(frame);
                    }
                    None => self.stats.invalid_rx_descs += 1,
                }
            }
            reader.release();
        }
        self.in_fill = self.in_fill.saturating_sub(n);
        self.stats.rx_frames += u64::from(n);
        self.refill(umem);
        if n == 0 && self.busy_poll.is_some() {
            // The driver's NAPI runs in this call, not in an interrupt.
            self.busy_poll_rx();
        } else if n == 0 && self.need_wakeup && self.fq.needs_wakeup() {
            self.fq.wake();
            self.stats.rx_wakeups += 1;
        }
        Ok(n as usize)
    }

    /// Reclaims completed frames, moves as many frames of `batch` (from its
    /// front) as the TX ring takes, and wakes the kernel once if it asks
    /// for it. Returns the number of frames queued; the rest stay in
    /// `batch`. Empty frames are freed, not sent.
    ///
    /// In copy mode the kernel sends at most 32 frames per wake-up: call
    /// `send` or [`XskSocket::flush`] each loop until
    /// [`XskSocket::tx_pending`] is 0 before the worker sleeps.
    pub fn send(&mut self, umem: &mut Umem, batch: &mut FrameBatch) -> Result<usize, XskError> {
        self.check_umem(umem)?;
        self.reclaim(umem);
        let want = u32::try_from(batch.len()).unwrap_or(u32::MAX);
        let mut queued = 0;
        if want > 0 {
            let mut writer = self.tx.transmit(want);
            let cap = writer.capacity() as usize;
            let mut empty = 0;
            // `drain` yields exactly `cap` frames; every one becomes a
            // descriptor in a reserved slot or goes back to the free list.
            queued = writer.insert(batch.drain_front(cap).filter_map(|frame| {
                if frame.is_empty() {
                    empty += 1;
                    umem.free(frame);
                    None
                } else {
                    Some(umem.desc_of(frame))
                }
            }));
            writer.commit();
            drop(writer);
            self.stats.empty_tx_frames += empty;
            self.tx_in_flight += queued;
            self.stats.tx_frames += u64::from(queued);
        }
        self.flush()?;
        Ok(queued as usize)
    }

    /// Wakes the kernel to transmit (one `sendto`) if TX descriptors are
    /// pending and the kernel asks for it. A busy kernel ("try again") is
    /// not an error.
    ///
    /// Busy polling: a `sendto` whenever frames are pending or not yet
    /// completed, whatever the flag says: only the syscall runs the driver.
    pub fn flush(&mut self) -> Result<(), XskError> {
        let kick = if self.busy_poll.is_some() {
            self.tx.pending() > 0 || self.tx_in_flight > 0
        } else {
            self.tx.pending() > 0 && (!self.need_wakeup || self.tx.needs_wakeup())
        };
        if !kick {
            return Ok(());
        }
        self.stats.tx_wakeups += 1;
        // SAFETY: a zero-length sendto with no buffer and no address on a socket fd this value keeps open; the kernel reads no memory.
        let r = unsafe {
            libc::sendto(
                self.fd,
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::ENOBUFS) | Some(libc::EINTR) => {
                self.stats.tx_wakeups_busy += 1;
                Ok(())
            }
            _ => Err(XskError::io(
                format!("waking TX of {} queue {}", self.ifname, self.queue_id),
                e,
            )),
        }
    }
}

impl XskSocket {
    /// A non-blocking, empty `recvfrom`: with preferred busy polling the
    /// kernel runs the queue's NAPI in it (xsk_recvmsg's sk_busy_loop).
    fn busy_poll_rx(&mut self) {
        self.stats.busy_polls += 1;
        // SAFETY: a zero-length recvfrom with no buffer and no address on a socket fd this value keeps open; the kernel writes no memory.
        unsafe {
            libc::recvfrom(
                self.fd,
                std::ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            );
        }
    }
}

fn set_int(fd: RawFd, level: libc::c_int, opt: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `value` is a readable c_int and the length says so; the kernel reads only that.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn get_int(fd: RawFd, level: libc::c_int, opt: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` is a writable c_int and `len` says so; the kernel writes at most `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            fd,
            level,
            opt,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}

/// The kernel's xdpsock sets these three in this order (`apply_setsockopt`).
fn set_busy_poll(fd: RawFd, busy: BusyPoll) -> io::Result<()> {
    set_int(fd, libc::SOL_SOCKET, SO_PREFER_BUSY_POLL, 1)?;
    let usecs = libc::c_int::try_from(busy.usecs).unwrap_or(libc::c_int::MAX);
    set_int(fd, libc::SOL_SOCKET, SO_BUSY_POLL, usecs)?;
    set_int(
        fd,
        libc::SOL_SOCKET,
        SO_BUSY_POLL_BUDGET,
        libc::c_int::from(busy.budget),
    )
}

/// Whether the kernel bound the socket `fd` in zero-copy mode.
fn is_zero_copy(fd: RawFd) -> io::Result<bool> {
    let mut flags: u32 = 0;
    let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
    // SAFETY: `flags` is a writable `struct xdp_options` (one u32) and `len` says so; the kernel writes at most `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            fd,
            SOL_XDP,
            XDP_OPTIONS,
            (&mut flags as *mut u32).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(flags & XDP_OPTIONS_ZEROCOPY != 0)
}

impl AsRawFd for XskSocket {
    /// The socket's fd, e.g. for an `XSKMAP` entry. Do not close it.
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

impl AsFd for XskSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the fd is owned by the xdpilone rings this value holds (through an `Arc`), so it stays open at least as long as `self`.
        unsafe { BorrowedFd::borrow_raw(self.fd) }
    }
}
