//! Test-only fault switches (cargo feature `fault-injection`), for the
//! fail-closed tests: a worker that panics, an XDP map update that fails;
//! and a UMEM per copy-mode interface, to run the zero-copy layout on veth.
//! Not in a default build.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// Packets after which worker 0 panics, once (`u64::MAX`: never).
static WORKER_PANIC_AFTER: AtomicU64 = AtomicU64::new(u64::MAX);

/// A protected prefix whose XDP map insert fails.
static FAIL_PREFIX: Mutex<Option<(IpAddr, u8)>> = Mutex::new(None);

/// Copy-mode interfaces get a UMEM each instead of sharing one.
static UMEM_PER_INTERFACE: AtomicBool = AtomicBool::new(false);

/// Gives every copy-mode interface a UMEM of its own, as a zero-copy NIC
/// has: frames then cross UMEMs by copy, which veth (copy mode only) would
/// otherwise never do.
pub fn set_umem_per_interface() {
    UMEM_PER_INTERFACE.store(true, Ordering::Relaxed);
}

/// Whether [`set_umem_per_interface`] was called.
pub fn umem_per_interface() -> bool {
    UMEM_PER_INTERFACE.load(Ordering::Relaxed)
}

/// Makes worker 0 panic once it has received `packets` packets.
pub fn panic_worker_after(packets: u64) {
    WORKER_PANIC_AFTER.store(packets, Ordering::Relaxed);
}

/// Makes the XDP map insert of `prefix` fail.
pub fn fail_prefix(addr: IpAddr, len: u8) {
    *FAIL_PREFIX.lock().unwrap_or_else(|p| p.into_inner()) = Some((addr, len));
}

/// Called by worker `index` with the packets it received so far.
pub fn worker_received(index: usize, received: u64) {
    if index == 0 {
        let after = WORKER_PANIC_AFTER.load(Ordering::Relaxed);
        if received >= after
            && WORKER_PANIC_AFTER
                .compare_exchange(after, u64::MAX, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            panic!("fault injection: worker 0 panics after {received} packets");
        }
    }
}

/// Whether inserting `prefix` into the XDP map is to fail.
pub fn prefix_fails(addr: IpAddr, len: u8) -> bool {
    *FAIL_PREFIX.lock().unwrap_or_else(|p| p.into_inner()) == Some((addr, len))
}
