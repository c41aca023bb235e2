//! AF_XDP sockets: the data plane's frame I/O, on top of `xdpilone`.
//!
//! A [`Umem`] is a page-aligned mmap'd area cut into frames of 2048 or 4096
//! bytes, allocated on a chosen NUMA node ([`UmemConfig::numa_node`]); one
//! [`XskSocket`] per (interface, queue) uses it. Sockets sharing a UMEM pass
//! frames between them without a copy; the data plane's workers give each
//! zero-copy interface a UMEM of its own, put the copy-mode ones in one,
//! and copy a frame that leaves through another UMEM (see `worker.rs`).
//!
//! # Frames and who owns them
//!
//! Every frame of a UMEM is, at any time, in exactly one place: the worker's
//! free list (inside [`Umem`]), the kernel (a socket's fill, RX, TX or
//! completion ring), or a [`Frame`] token in the worker's hands. A token is
//! the only way to reach a frame's bytes ([`Umem::data`], [`Umem::data_mut`]),
//! it cannot be cloned or made up, so two tokens never name the same frame,
//! and the kernel never writes a frame that a token names. Tokens come from
//! [`XskSocket::recv`] and [`Umem::alloc`] and go back through
//! [`XskSocket::send`] or [`Umem::free`]; a token that is dropped instead
//! leaks its frame (safe, but the UMEM shrinks by one).
//!
//! Frames keep headroom in front of the packet so that ESP encapsulation can
//! prepend outer headers in place ([`Umem::push_head`]), and tailroom behind
//! it for the ESP trailer ([`Umem::set_len`]).
//!
//! # The hot path
//!
//! Everything works in batches (a [`FrameBatch`] of [`BATCH_SIZE`] frames,
//! allocated once): [`XskSocket::recv`] drains up to a batch from the RX ring
//! and keeps the fill ring stocked from the free list; [`XskSocket::send`]
//! reclaims completed frames into the free list, pushes a batch to the TX
//! ring and wakes the kernel with one `sendto` — only when the ring's
//! need-wakeup flag asks for it. Nothing on this path allocates, locks or
//! makes a syscall per packet. An idle worker sleeps in `poll(2)`
//! ([`PollSet::wait`]).
//!
//! # Binding and privileges
//!
//! [`XskSocket::bind`] binds to an interface index and queue id in the
//! calling thread's network namespace; [`BindMode::Auto`] (the default) asks
//! for zero-copy and, refused, binds in copy mode and keeps the kernel's
//! answer (veth only has copy mode). The sockets of one UMEM share the
//! first one's mode (the kernel's rule), so the data plane gives each
//! zero-copy interface a UMEM of its own: a copy-only interface cannot
//! demote a zero-copy NIC. Opening an
//! AF_XDP socket needs CAP_NET_RAW; registering the UMEM needs CAP_IPC_LOCK
//! unless it fits the memlock limit. Frames reach a socket only once an XDP
//! program redirects them into an `XSKMAP` entry holding its file descriptor
//! (`AsRawFd`/`AsFd` on [`XskSocket`]); updating that map (the caller's job, e.g.
//! aya's `XskMap::set`) needs CAP_BPF.

// Every unsafe block says why it is sound, directly above it.
#![warn(clippy::undocumented_unsafe_blocks)]

mod batch;
mod ethtool;
mod poll;
mod socket;
mod umem;

pub use batch::FrameBatch;
pub use ethtool::disable_tx_checksum_offload;
pub use poll::PollSet;
pub use socket::{ifindex, BindMode, BusyPoll, KernelStats, SocketConfig, SocketStats, XskSocket};
pub use umem::{cpu_numa_node, Frame, NoRoom, Umem, UmemConfig};

use std::io;

/// Frames moved per ring operation on the hot path.
pub const BATCH_SIZE: usize = 64;

/// Bytes the kernel keeps in front of every received frame on its own
/// (`XDP_PACKET_HEADROOM`), on top of [`UmemConfig::headroom`].
pub const XDP_PACKET_HEADROOM: u32 = 256;

/// Least headroom a UMEM may be configured with: room for the outer IPv6
/// header, UDP (NAT-T), the ESP header and the IV, with margin.
pub const MIN_HEADROOM: u32 = 128;

/// What can go wrong setting up or running AF_XDP sockets.
#[derive(Debug, thiserror::Error)]
pub enum XskError {
    /// The interface does not exist in the calling thread's network namespace.
    #[error("network interface {0} does not exist in this network namespace")]
    InterfaceNotFound(String),
    /// The kernel refused for lack of a capability.
    #[error("{op}: not permitted; this needs {cap} (run as root or grant {cap})")]
    MissingPrivilege {
        /// What was being done.
        op: &'static str,
        /// The capability it needs.
        cap: &'static str,
        /// The error from the kernel.
        #[source]
        source: io::Error,
    },
    /// The UMEM area could not be allocated or registered.
    #[error("allocating a UMEM of {bytes} bytes failed: {source}")]
    UmemAlloc {
        /// Size asked for.
        bytes: usize,
        /// The error from the kernel.
        #[source]
        source: io::Error,
    },
    /// A configuration value is out of range.
    #[error("invalid AF_XDP configuration: {0}")]
    Config(String),
    /// Zero-copy was required but the driver does not offer it.
    #[error(
        "interface {ifname} queue {queue} refused a zero-copy AF_XDP bind: its \
         driver has no AF_XDP zero-copy (veth, most virtual NICs), or not in this XDP mode; \
         bind in copy mode, or let it fall back (BindMode::Auto)"
    )]
    ZeroCopyUnsupported {
        /// Interface name.
        ifname: String,
        /// Queue id.
        queue: u32,
        /// What the kernel said.
        source: io::Error,
    },
    /// Another AF_XDP socket is bound to this interface queue already.
    #[error("interface {ifname} queue {queue} already has an AF_XDP socket bound")]
    Busy {
        /// Interface name.
        ifname: String,
        /// Queue id.
        queue: u32,
    },
    /// A socket or frame was used with a UMEM it does not belong to.
    #[error("socket used with a UMEM other than the one it was bound with")]
    ForeignUmem,
    /// Any other failure of a system call.
    #[error("{op}: {source}")]
    Io {
        /// What was being done.
        op: String,
        /// The error from the kernel.
        #[source]
        source: io::Error,
    },
}

impl XskError {
    pub(crate) fn io(op: impl Into<String>, source: io::Error) -> Self {
        XskError::Io {
            op: op.into(),
            source,
        }
    }
}

/// An `io::Error` from an `xdpilone::Errno` (which is sometimes negated).
pub(crate) fn errno(e: xdpilone::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.get_raw().abs())
}
