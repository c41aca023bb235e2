//! Everything that touches the kernel: the maps, the XDP entry point, packet
//! and context loads, the panic handler and the licence. The only module of
//! the crate allowed `unsafe` (raw packet, context and map-value pointers,
//! and the `no_mangle` / `link_section` attributes that the aya macros emit):
//! see `mod kernel` in main.rs.

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{
        lpm_trie::{Key, LpmTrie},
        HashMap, LruHashMap, PerCpuArray, XskMap,
    },
    programs::XdpContext,
};
use xdpsec_ebpf_common::{
    v4_key, FragKey, IfaceConfig, COUNTERS_LEN, IFACES_LEN, LOCAL_LEN, PROTECT_LEN, UDP_FRAGS_LEN,
    XSKS_LEN,
};

use crate::classify::{Addr, Frame};
use crate::decide::{decide, Tables};

/// Packets per verdict (index: `Verdict::index`), per CPU.
#[map(name = "COUNTERS")]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS_LEN, 0);

/// AF_XDP sockets, at `slot * MAX_QUEUES + rx_queue_index`.
#[map(name = "XSKS")]
static XSKS: XskMap = XskMap::with_max_entries(XSKS_LEN, 0);

/// Interfaces steered on: ifindex -> role and slot.
#[map(name = "IFACES")]
static IFACES: HashMap<u32, IfaceConfig> = HashMap::with_max_entries(IFACES_LEN, 0);

/// The gateway's IPv4 tunnel addresses (`v4_key`); value reserved.
#[map(name = "LOCAL_V4")]
static LOCAL_V4: HashMap<u32, u32> = HashMap::with_max_entries(LOCAL_LEN, 0);

/// The gateway's IPv6 tunnel addresses; value reserved.
#[map(name = "LOCAL_V6")]
static LOCAL_V6: HashMap<[u8; 16], u32> = HashMap::with_max_entries(LOCAL_LEN, 0);

/// Protected (remote) IPv4 prefixes; value: flags, reserved.
#[map(name = "PROTECT_V4")]
static PROTECT_V4: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(PROTECT_LEN, 0);

/// Protected (remote) IPv6 prefixes; value: flags, reserved.
#[map(name = "PROTECT_V6")]
static PROTECT_V6: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(PROTECT_LEN, 0);

/// Fragmented UDP datagrams to local addresses: where the first fragment
/// went (worker or kernel), for the later ones.
#[map(name = "UDP_FRAGS")]
static UDP_FRAGS: LruHashMap<FragKey, u32> = LruHashMap::with_max_entries(UDP_FRAGS_LEN, 0);

#[xdp]
pub fn steer(ctx: XdpContext) -> u32 {
    // SAFETY: ctx.ctx is the xdp_md the kernel passed to this program, valid for its whole run; ingress_ifindex and rx_queue_index are plain u32 fields the verifier allows XDP programs to read.
    let (ifindex, queue) = unsafe { ((*ctx.ctx).ingress_ifindex, (*ctx.ctx).rx_queue_index) };
    let packet = Packet {
        start: ctx.data(),
        end: ctx.data_end(),
    };
    let verdict = decide(&packet, &Maps, ifindex, queue);
    count(verdict.index());
    if verdict.is_redirect() {
        xdp_action::XDP_REDIRECT
    } else if verdict.is_drop() {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

/// Adds one to this CPU's counter at `index`.
#[inline(always)]
fn count(index: u32) {
    if let Some(counter) = COUNTERS.get_ptr_mut(index) {
        // SAFETY: a successful lookup points at this CPU's u64 slot of the per-CPU array, valid and 8-aligned while the program runs; a running program is not migrated, so no other CPU touches this slot.
        unsafe { *counter += 1 };
    }
}

/// The maps above, for the decision.
struct Maps;

impl Tables for Maps {
    #[inline(always)]
    fn iface(&self, ifindex: u32) -> Option<IfaceConfig> {
        let value = IFACES.get_ptr(ifindex)?;
        // SAFETY: a successful hash lookup points at the entry's IfaceConfig (8 bytes, 4-aligned) in the map's memory, valid while the program runs; IfaceConfig is plain u32s, so any bytes user space wrote are a valid value, read by copy.
        Some(unsafe { *value })
    }

    #[inline(always)]
    fn is_local(&self, addr: &Addr) -> bool {
        match addr {
            Addr::V4(a) => LOCAL_V4.get_ptr(v4_key(*a)).is_some(),
            Addr::V6(a) => LOCAL_V6.get_ptr(a).is_some(),
        }
    }

    #[inline(always)]
    fn is_protected(&self, addr: &Addr) -> bool {
        match addr {
            Addr::V4(a) => PROTECT_V4.get(Key::new(32, *a)).is_some(),
            Addr::V6(a) => PROTECT_V6.get(Key::new(128, *a)).is_some(),
        }
    }

    #[inline(always)]
    fn udp_fragments(&self, key: &FragKey) -> Option<u32> {
        let value = UDP_FRAGS.get_ptr(key)?;
        // SAFETY: a successful lookup points at the entry's u32 in the map's memory, valid while the program runs; read by copy.
        Some(unsafe { *value })
    }

    #[inline(always)]
    fn set_udp_fragments(&self, key: &FragKey, to: u32) {
        // A full LRU map evicts its oldest entry; an error only means the
        // later fragments go to the kernel.
        UDP_FRAGS.insert(key, &to, 0).ok();
    }

    #[inline(always)]
    fn redirect(&self, index: u32) -> bool {
        // The low bits of the flags are the helper's result when the slot
        // is empty: XDP_DROP, which the caller also returns (fail closed).
        XSKS.redirect(index, u64::from(xdp_action::XDP_DROP))
            .is_ok()
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

/// Not GPL: the program calls no GPL-only helper (`bpf_redirect_map` and
/// the map helpers are not GPL-only).
// SAFETY: `LICENSE` is the only item this object places in the "license"
// section and the only symbol of that name, so neither attribute can clash
// with another definition; the loader only reads the bytes.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 18] = *b"MIT OR Apache-2.0\0";
