//! The UMEM: a worker's frame area, its free list and frame access.

use super::{errno, XskError, MIN_HEADROOM, XDP_PACKET_HEADROOM};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

/// Size and ring geometry of a [`Umem`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UmemConfig {
    /// Bytes per frame: 2048 or 4096.
    pub frame_size: u32,
    /// Number of frames in the area (the area is `frame_count * frame_size`).
    pub frame_count: u32,
    /// Headroom the kernel leaves in front of each received packet, on top
    /// of its own [`XDP_PACKET_HEADROOM`]; at least [`MIN_HEADROOM`]. Frames
    /// from [`Umem::alloc`] start at the same offset as received ones.
    pub headroom: u32,
    /// Entries of each socket's fill ring (power of two).
    pub fill_size: u32,
    /// Entries of each socket's completion ring (power of two).
    pub comp_size: u32,
    /// The NUMA node to put the area's pages on (the node of the CPU the
    /// worker runs on, from [`cpu_numa_node`]); `None`: wherever the
    /// allocating thread first touches them.
    pub numa_node: Option<u32>,
}

impl Default for UmemConfig {
    fn default() -> Self {
        UmemConfig {
            frame_size: 2048,
            frame_count: 4096,
            headroom: MIN_HEADROOM,
            fill_size: 2048,
            comp_size: 2048,
            numa_node: None,
        }
    }
}

impl UmemConfig {
    fn validate(&self) -> Result<(), XskError> {
        let bad = |m: String| Err(XskError::Config(m));
        if self.frame_size != 2048 && self.frame_size != 4096 {
            return bad(format!("frame_size {} (2048 or 4096)", self.frame_size));
        }
        if self.frame_count == 0 {
            return bad("frame_count 0".into());
        }
        if self.headroom < MIN_HEADROOM {
            return bad(format!(
                "headroom {} (at least {MIN_HEADROOM})",
                self.headroom
            ));
        }
        // The kernel wants room for a full Ethernet frame after both headrooms.
        if self.headroom + XDP_PACKET_HEADROOM + 1514 > self.frame_size {
            return bad(format!(
                "headroom {} leaves less than 1514 bytes of a {}-byte frame",
                self.headroom, self.frame_size
            ));
        }
        for (name, v) in [("fill_size", self.fill_size), ("comp_size", self.comp_size)] {
            if !v.is_power_of_two() {
                return bad(format!("{name} {v} (a power of two)"));
            }
        }
        if self.numa_node.is_some_and(|n| n >= MAX_NUMA_NODES) {
            return bad(format!(
                "numa_node {:?} (below {MAX_NUMA_NODES})",
                self.numa_node
            ));
        }
        Ok(())
    }
}

/// Nodes a [`UmemConfig::numa_node`] may name: the size of the node mask
/// handed to mbind(2) (the kernel's default NODES_SHIFT allows 1024).
const MAX_NUMA_NODES: u32 = 1024;

/// `MPOL_PREFERRED`, `MPOL_F_NODE`, `MPOL_F_ADDR` from linux/mempolicy.h.
const MPOL_PREFERRED: libc::c_int = 1;
const MPOL_F_NODE: libc::c_ulong = 1;
const MPOL_F_ADDR: libc::c_ulong = 2;

/// The NUMA node of CPU `cpu` (the `nodeN` link sysfs puts in its
/// directory); `None` on a kernel without NUMA, or a CPU sysfs does not show.
pub fn cpu_numa_node(cpu: usize) -> Option<u32> {
    std::fs::read_dir(format!("/sys/devices/system/cpu/cpu{cpu}"))
        .ok()?
        .filter_map(|e| e.ok())
        .find_map(|e| e.file_name().to_str()?.strip_prefix("node")?.parse().ok())
}

/// A page-aligned anonymous mapping, unmapped on drop.
#[derive(Debug)]
struct Area {
    ptr: NonNull<u8>,
    len: usize,
    /// The node its first page is on, as the kernel says (`None` when it
    /// cannot say: a kernel without NUMA).
    node: Option<u32>,
    /// Why the pages are not bound to the node asked for, if they are not.
    numa_note: Option<String>,
}

impl Area {
    /// Maps `len` bytes. With a `node`, the pages are put on it (preferred,
    /// so a full node falls back to another instead of failing) before the
    /// first touch; then all are touched, so none faults on the hot path.
    fn new(len: usize, node: Option<u32>) -> io::Result<Self> {
        let populate = if node.is_some() {
            0
        } else {
            libc::MAP_POPULATE
        };
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing aliases no existing memory; every argument is valid.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | populate,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave NULL"))?;
        let mut area = Area {
            ptr,
            len,
            node: None,
            numa_note: None,
        };
        if let Some(node) = node {
            if let Err(e) = area.prefer_node(node) {
                // Still usable: first touch puts the pages on the node of
                // the (pinned) thread that allocates.
                area.numa_note = Some(format!("mbind to node {node} failed: {e}"));
            }
            area.touch();
        }
        area.node = area.first_page_node();
        Ok(area)
    }

    fn prefer_node(&self, node: u32) -> io::Result<()> {
        const WORD: u32 = libc::c_ulong::BITS;
        let mut mask = [0 as libc::c_ulong; (MAX_NUMA_NODES / WORD) as usize];
        let word = mask
            .get_mut((node / WORD) as usize)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        *word |= 1 << (node % WORD);
        // mbind's maxnode counts one more than the mask's bits (the kernel
        // subtracts one), as libnuma passes it.
        let maxnode = libc::c_ulong::from(MAX_NUMA_NODES) + 1;
        // SAFETY: the range is this mapping, which nothing has touched yet; `mask` is a readable array of `maxnode - 1` bits that outlives the call; mbind changes the placement policy of the range only.
        let r = unsafe {
            libc::syscall(
                libc::SYS_mbind,
                self.ptr.as_ptr(),
                self.len as libc::c_ulong,
                MPOL_PREFERRED,
                mask.as_ptr(),
                maxnode,
                0 as libc::c_uint,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Faults every page in (what MAP_POPULATE does at mmap time, which
    /// would be before mbind).
    fn touch(&mut self) {
        // SAFETY: sysconf has no memory preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .ok()
            .filter(|p| *p > 0)
            .unwrap_or(4096);
        for offset in (0..self.len).step_by(page) {
            // SAFETY: `offset < len`, inside this private mapping, which no one else reaches yet (the area is not registered with the kernel, no frame token exists).
            unsafe { self.ptr.as_ptr().add(offset).write_volatile(0) };
        }
    }

    fn first_page_node(&self) -> Option<u32> {
        let mut node: libc::c_int = -1;
        // SAFETY: `node` is a writable c_int; no node mask is passed (NULL, 0); the address is the first page of this mapping, already faulted in.
        let r = unsafe {
            libc::syscall(
                libc::SYS_get_mempolicy,
                &mut node as *mut libc::c_int,
                std::ptr::null_mut::<libc::c_ulong>(),
                0 as libc::c_ulong,
                self.ptr.as_ptr(),
                MPOL_F_NODE | MPOL_F_ADDR,
            )
        };
        (r == 0).then_some(()).and(u32::try_from(node).ok())
    }

    fn as_nonnull_slice(&self) -> NonNull<[u8]> {
        NonNull::slice_from_raw_parts(self.ptr, self.len)
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned, unmapped once. No reference into the area outlives `Umem`, which owns this. The kernel holds its own pin on the pages of a registered UMEM.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// A frame of a [`Umem`] held by user space: a token standing for exclusive
/// access to one UMEM frame, and the packet's position in it.
///
/// Not `Clone`: see the [module documentation](super) for why that makes
/// frame access sound. Dropping a token leaks its frame; give it back with
/// [`Umem::free`] or [`super::XskSocket::send`].
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a dropped Frame leaks its UMEM frame: send it or free it"]
pub struct Frame {
    /// Offset in the UMEM of the first packet byte.
    addr: u64,
    /// Packet length.
    len: u32,
    /// Id of the UMEM it belongs to.
    umem: u32,
}

impl Frame {
    /// Packet length in bytes.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether the packet is empty (as a frame from [`Umem::alloc`] is).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Offset in the UMEM of the first packet byte (the descriptor address
    /// the kernel sees).
    pub fn addr(&self) -> u64 {
        self.addr
    }
}

/// Not enough headroom or tailroom in a frame for what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not enough room in the frame")]
pub struct NoRoom;

static NEXT_UMEM_ID: AtomicU32 = AtomicU32::new(1);

/// A worker's UMEM: the frame area registered with the kernel, and the free
/// list of frames it owns (no lock: one worker owns it).
pub struct Umem {
    // Field order is drop order: the kernel registration goes before the
    // memory it refers to.
    inner: xdpilone::Umem,
    area: Area,
    id: u32,
    config: UmemConfig,
    /// Offset mask of a frame (`frame_size - 1`).
    mask: u64,
    /// Frames in user space and not in use, as their start offset.
    free: Vec<u64>,
    /// Sockets bound with this UMEM so far (the first one carries its fd).
    pub(super) bound: u32,
    /// Whether the first socket was bound with need-wakeup (all share it).
    pub(super) need_wakeup: bool,
}

impl std::fmt::Debug for Umem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Umem")
            .field("id", &self.id)
            .field("config", &self.config)
            .field("area", &self.area)
            .field("free_frames", &self.free.len())
            .field("bound_sockets", &self.bound)
            .finish_non_exhaustive()
    }
}

// SAFETY: `Umem` owns its area and the xdpilone `Umem` (an fd, a pointer to
// the area that it never dereferences on its own, and an `Arc` to a
// `Send + Sync` set). Moving all of it to another thread is sound; it stays
// `!Sync`, so frames are only ever reached from the one thread that owns it.
unsafe impl Send for Umem {}

impl Umem {
    /// Allocates and registers the area. Fails with
    /// [`XskError::MissingPrivilege`] (CAP_NET_RAW to open an AF_XDP socket,
    /// CAP_IPC_LOCK when the area exceeds the memlock limit) or
    /// [`XskError::UmemAlloc`].
    pub fn new(config: UmemConfig) -> Result<Self, XskError> {
        config.validate()?;
        let bytes = (config.frame_count as usize)
            .checked_mul(config.frame_size as usize)
            .ok_or_else(|| XskError::Config("frame_count * frame_size overflows".into()))?;
        let area = Area::new(bytes, config.numa_node)
            .map_err(|source| XskError::UmemAlloc { bytes, source })?;
        let inner = register(&config, &area)?;
        let free = (0..u64::from(config.frame_count))
            .rev()
            .map(|i| i * u64::from(config.frame_size))
            .collect();
        Ok(Umem {
            inner,
            area,
            id: NEXT_UMEM_ID.fetch_add(1, Ordering::Relaxed),
            mask: u64::from(config.frame_size) - 1,
            config,
            free,
            bound: 0,
            need_wakeup: false,
        })
    }

    /// Registers the area with the kernel again, on a fresh fd: after the
    /// UMEM's own socket failed to bind, its fd keeps rings that cannot be
    /// set twice. The frames and the free list stay as they are.
    pub(super) fn register_again(&mut self) -> Result<(), XskError> {
        // The old registration goes when its fd closes, once the failed
        // socket's rings are gone too.
        self.inner = register(&self.config, &self.area)?;
        self.bound = 0;
        Ok(())
    }

    /// The NUMA node its first page is on, when the kernel says.
    pub fn numa_node(&self) -> Option<u32> {
        self.area.node
    }

    /// Why its pages are not bound to [`UmemConfig::numa_node`], if not.
    pub fn numa_note(&self) -> Option<&str> {
        self.area.numa_note.as_deref()
    }

    /// The configuration it was made with.
    pub fn config(&self) -> &UmemConfig {
        &self.config
    }

    pub(super) fn id(&self) -> u32 {
        self.id
    }

    pub(super) fn xdpilone(&self) -> &xdpilone::Umem {
        &self.inner
    }

    /// Frames on the free list (not in the kernel, not held as tokens).
    pub fn free_frames(&self) -> usize {
        self.free.len()
    }

    /// Offset of the first packet byte in a fresh frame: the kernel's
    /// [`XDP_PACKET_HEADROOM`] plus [`UmemConfig::headroom`]. Received frames
    /// start there too.
    pub fn data_offset(&self) -> u32 {
        XDP_PACKET_HEADROOM + self.config.headroom
    }

    /// Takes a frame off the free list: an empty packet at
    /// [`Umem::data_offset`]. `None` when the free list is empty.
    pub fn alloc(&mut self) -> Option<Frame> {
        let base = self.free.pop()?;
        Some(Frame {
            addr: base + u64::from(self.data_offset()),
            len: 0,
            umem: self.id,
        })
    }

    /// Puts a frame back on the free list.
    pub fn free(&mut self, frame: Frame) {
        self.check(&frame);
        self.free.push(frame.addr & !self.mask);
    }

    /// Takes the start offset of a free frame, for a fill ring.
    pub(super) fn pop_free(&mut self) -> Option<u64> {
        self.free.pop()
    }

    /// Returns a frame the kernel gave back (completion ring), by any
    /// address inside it.
    pub(super) fn push_free(&mut self, addr: u64) {
        self.free.push(addr & !self.mask);
    }

    /// Makes the token for a frame the kernel handed over on an RX ring, if
    /// the descriptor lies within one frame of this UMEM.
    pub(super) fn frame_from_desc(&self, addr: u64, len: u32) -> Option<Frame> {
        let end = addr.checked_add(u64::from(len))?;
        let inside =
            end <= self.area.len as u64 && (addr & self.mask) + u64::from(len) <= self.mask + 1;
        inside.then_some(Frame {
            addr,
            len,
            umem: self.id,
        })
    }

    /// Turns a token into a TX descriptor, consuming it.
    pub(super) fn desc_of(&self, frame: Frame) -> xdpilone::xdp::XdpDesc {
        self.check(&frame);
        xdpilone::xdp::XdpDesc {
            addr: frame.addr,
            len: frame.len,
            options: 0,
        }
    }

    #[inline]
    fn check(&self, frame: &Frame) {
        assert_eq!(frame.umem, self.id, "a Frame used with another UMEM");
    }

    /// The packet bytes of a frame.
    ///
    /// # Panics
    /// If the frame belongs to another UMEM.
    #[inline]
    pub fn data<'a>(&'a self, frame: &'a Frame) -> &'a [u8] {
        self.check(frame);
        debug_assert!(frame.addr + u64::from(frame.len) <= self.area.len as u64);
        // SAFETY: the token was checked to be of this UMEM, and tokens only ever describe a range inside one frame of the area (checked where they are made and changed). The token is borrowed for 'a, so no `&mut` to the same bytes exists (only a `&mut Frame` gives one), and the kernel does not write a frame a token stands for.
        unsafe {
            std::slice::from_raw_parts(
                self.area.ptr.as_ptr().add(frame.addr as usize),
                frame.len as usize,
            )
        }
    }

    /// The packet bytes of a frame, writable.
    ///
    /// # Panics
    /// If the frame belongs to another UMEM.
    #[inline]
    pub fn data_mut<'a>(&'a self, frame: &'a mut Frame) -> &'a mut [u8] {
        self.check(frame);
        debug_assert!(frame.addr + u64::from(frame.len) <= self.area.len as u64);
        // SAFETY: as in `data`; in addition the token is borrowed mutably for 'a, and no other token names this frame, so these bytes are reachable through this slice only.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.area.ptr.as_ptr().add(frame.addr as usize),
                frame.len as usize,
            )
        }
    }

    /// Bytes free in front of the packet.
    pub fn headroom(&self, frame: &Frame) -> usize {
        self.check(frame);
        (frame.addr & self.mask) as usize
    }

    /// Bytes free behind the packet.
    pub fn tailroom(&self, frame: &Frame) -> usize {
        self.check(frame);
        self.config.frame_size as usize - (frame.addr & self.mask) as usize - frame.len as usize
    }

    /// Grows the packet by `n` bytes at the front (for outer headers) and
    /// returns the whole packet; the new bytes hold whatever was there.
    pub fn push_head<'a>(&'a self, frame: &'a mut Frame, n: usize) -> Result<&'a mut [u8], NoRoom> {
        if n > self.headroom(frame) {
            return Err(NoRoom);
        }
        frame.addr -= n as u64;
        frame.len += n as u32;
        Ok(self.data_mut(frame))
    }

    /// Drops `n` bytes from the front of the packet (after decapsulation).
    pub fn pull_head(&self, frame: &mut Frame, n: usize) -> Result<(), NoRoom> {
        self.check(frame);
        if n > frame.len as usize {
            return Err(NoRoom);
        }
        frame.addr += n as u64;
        frame.len -= n as u32;
        Ok(())
    }

    /// Sets the packet length (growing into the tailroom, or truncating).
    pub fn set_len(&self, frame: &mut Frame, len: usize) -> Result<(), NoRoom> {
        if len > frame.len as usize + self.tailroom(frame) {
            return Err(NoRoom);
        }
        frame.len = len as u32;
        Ok(())
    }
}

fn register(config: &UmemConfig, area: &Area) -> Result<xdpilone::Umem, XskError> {
    let xcfg = xdpilone::UmemConfig {
        fill_size: config.fill_size,
        complete_size: config.comp_size,
        frame_size: config.frame_size,
        headroom: config.headroom,
        flags: 0,
    };
    // SAFETY: the area is page aligned (fresh mmap), a whole number of frames long, and lives as long as the returned registration (`Umem` drops `inner` before `area`, see the field order).
    unsafe { xdpilone::Umem::new(xcfg, area.as_nonnull_slice()) }
        .map_err(|e| umem_error(area.len, errno(e)))
}

fn umem_error(bytes: usize, source: io::Error) -> XskError {
    match source.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => XskError::MissingPrivilege {
            op: "opening an AF_XDP socket",
            cap: "CAP_NET_RAW",
            source,
        },
        // xdp_umem_account_pages: over RLIMIT_MEMLOCK without CAP_IPC_LOCK.
        Some(libc::ENOBUFS) => XskError::MissingPrivilege {
            op: "registering the UMEM (over the memlock limit)",
            cap: "CAP_IPC_LOCK",
            source,
        },
        Some(libc::EAFNOSUPPORT) => XskError::io(
            "opening an AF_XDP socket (kernel built without CONFIG_XDP_SOCKETS?)",
            source,
        ),
        _ => XskError::UmemAlloc { bytes, source },
    }
}
