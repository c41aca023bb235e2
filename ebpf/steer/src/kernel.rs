//! Everything that touches the kernel: the map, the XDP entry point, packet
//! loads, the panic handler and the licence. The only module of the crate
//! allowed `unsafe` (raw packet and map-value pointers, and the `no_mangle` /
//! `link_section` attributes that the aya macros emit): see `mod kernel` in
//! main.rs.

use aya_ebpf::{
    bindings::xdp_action, macros::map, macros::xdp, maps::PerCpuArray, programs::XdpContext,
};
use xdpsec_ebpf_common::CLASS_COUNTERS_LEN;

use crate::classify::{classify, Frame};

/// Packets seen per class (index: `Class::index`), per CPU.
#[map(name = "CLASS_COUNTERS")]
static CLASS_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(CLASS_COUNTERS_LEN, 0);

#[xdp]
pub fn steer(ctx: XdpContext) -> u32 {
    let packet = Packet {
        start: ctx.data(),
        end: ctx.data_end(),
    };
    let class = classify(&packet);
    count(class.index());
    xdp_action::XDP_PASS
}

/// Adds one to this CPU's counter at `index`.
#[inline(always)]
fn count(index: u32) {
    if let Some(counter) = CLASS_COUNTERS.get_ptr_mut(index) {
        // SAFETY: a successful lookup points at this CPU's u64 slot of the per-CPU array, valid and 8-aligned while the program runs; a running program is not migrated, so no other CPU touches this slot.
        unsafe { *counter += 1 };
    }
}

/// The packet between `ctx.data()` and `ctx.data_end()`.
struct Packet {
    start: usize,
    end: usize,
}

impl Frame for Packet {
    #[inline(always)]
    fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        // One pointer, checked and then read: the verifier ties the check to
        // the pointer it was made on.
        let at = self.start + offset;
        if at + N > self.end {
            return None;
        }
        let ptr = at as *const [u8; N];
        // SAFETY: the N bytes at ptr lie inside [data, data_end), checked just above (the verifier checks it too); read_unaligned has no alignment requirement.
        Some(unsafe { ptr.read_unaligned() })
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

/// Not GPL: the program calls no GPL-only helper.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 18] = *b"MIT OR Apache-2.0\0";
