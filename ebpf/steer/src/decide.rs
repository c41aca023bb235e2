//! The steering decision: which frames go to an AF_XDP socket, and the
//! verdict each frame is counted under.
//!
//! Per interface role (from `IFACES`; an interface not there, or with
//! neither role bit, is passed):
//!
//! - outside: ESP (IP protocol 50) and ESP-in-UDP (UDP to 4500, non-zero
//!   first payload word) whose destination is a local address are
//!   redirected; so are, to a local address, fragments of ESP, fragments of
//!   a UDP datagram whose first fragment was ESP in UDP (remembered in
//!   `UDP_FRAGS` by source and identification; the later fragments have no
//!   UDP header), and ICMP "too big" messages quoting ESP or UDP. IKE (also
//!   fragmented), other fragments, ESP to other addresses and everything
//!   else are passed.
//! - inside: an IPv4/IPv6 packet whose destination is in a protected prefix
//!   is redirected, unless that destination is multicast, broadcast or
//!   link-local; everything else is passed. Protected prefixes are remote
//!   networks: the gateway's own addresses are not in them.
//! - both (one-armed): the outside rule, then the inside rule. When neither
//!   redirects, an IPsec-specific reason of the outside rule (IKE, fragment,
//!   not local, truncated) is the verdict, else the inside rule's.
//!
//! A redirect goes to `XSKS[slot * MAX_QUEUES + rx_queue]`; with no socket
//! there the frame is dropped ([`Verdict::RedirectFailed`]): the data plane
//! fails closed, since the kernel would forward a protected packet in
//! cleartext, and has no ESP to make sense of an ESP one.

use xdpsec_ebpf_common::{
    xsk_index, FragKey, IfaceConfig, Verdict, FRAG_TO_KERNEL, FRAG_TO_WORKER,
};

use crate::classify::{parse, Addr, Frame, Parsed, UdpKind, L4};

/// The program's maps, as the decision sees them.
pub(crate) trait Tables {
    /// The configuration of interface `ifindex`, if it has one.
    fn iface(&self, ifindex: u32) -> Option<IfaceConfig>;
    /// Whether `addr` is one of the gateway's tunnel addresses.
    fn is_local(&self, addr: &Addr) -> bool;
    /// Whether `addr` is in a protected prefix.
    fn is_protected(&self, addr: &Addr) -> bool;
    /// Redirects the frame to the socket at `index` of `XSKS`; `false` (and
    /// the frame is to be passed) if there is none.
    fn redirect(&self, index: u32) -> bool;
    /// Where the first fragment of the UDP datagram `key` went
    /// ([`FRAG_TO_WORKER`] or [`FRAG_TO_KERNEL`]), if it was seen.
    fn udp_fragments(&self, key: &FragKey) -> Option<u32>;
    /// Records where the fragments of the UDP datagram `key` go.
    fn set_udp_fragments(&self, key: &FragKey, to: u32);
}

/// Decides what to do with `frame`, received on queue `queue` of interface
/// `ifindex`. The frame is redirected iff the verdict
/// [`is_redirect`](Verdict::is_redirect) (then [`Tables::redirect`] has
/// been called and succeeded).
#[inline(always)]
pub(crate) fn decide<F: Frame + ?Sized, T: Tables>(
    frame: &F,
    tables: &T,
    ifindex: u32,
    queue: u32,
) -> Verdict {
    let iface = match tables.iface(ifindex) {
        Some(iface) if iface.is_inside() || iface.is_outside() => iface,
        _ => return Verdict::UnknownIfacePass,
    };
    let (dst, l4) = match parse(frame) {
        Parsed::NonIp => return Verdict::NonIpPass,
        Parsed::Truncated => return Verdict::TruncatedPass,
        Parsed::Ip { dst, l4 } => (dst, l4),
    };

    // Outside rule.
    let mut outside_pass = Verdict::OtherPass;
    if iface.is_outside() {
        outside_pass = match l4 {
            L4::Esp | L4::EspInUdp => {
                if tables.is_local(&dst) {
                    let done = if l4 == L4::Esp {
                        Verdict::EspRedirected
                    } else {
                        Verdict::EspInUdpRedirected
                    };
                    return redirect(tables, iface.slot, queue, done);
                }
                Verdict::NotLocalPass
            }
            L4::Ike => Verdict::IkePass,
            L4::EspFragment => {
                if tables.is_local(&dst) {
                    return redirect(tables, iface.slot, queue, Verdict::FragmentRedirected);
                }
                Verdict::FragmentPass
            }
            L4::UdpFirstFragment { inner, key } => {
                if tables.is_local(&dst) {
                    if inner == UdpKind::EspInUdp {
                        tables.set_udp_fragments(&key, FRAG_TO_WORKER);
                        return redirect(tables, iface.slot, queue, Verdict::FragmentRedirected);
                    }
                    tables.set_udp_fragments(&key, FRAG_TO_KERNEL);
                }
                Verdict::FragmentPass
            }
            L4::UdpLaterFragment { key } => {
                // Unseen first fragment (reordering, or an entry the LRU
                // dropped): the kernel gets it, as IKE would need.
                if tables.is_local(&dst) && tables.udp_fragments(&key) == Some(FRAG_TO_WORKER) {
                    return redirect(tables, iface.slot, queue, Verdict::FragmentRedirected);
                }
                Verdict::FragmentPass
            }
            L4::IcmpTooBig => {
                if tables.is_local(&dst) {
                    return redirect(tables, iface.slot, queue, Verdict::IcmpTooBigRedirected);
                }
                Verdict::OtherPass
            }
            L4::Fragment => Verdict::FragmentPass,
            L4::Truncated => Verdict::TruncatedPass,
            L4::Other => Verdict::OtherPass,
        };
        if !iface.is_inside() {
            return outside_pass;
        }
    }

    // Inside rule.
    let inside_pass = if dst.is_link_scope() {
        Verdict::LinkScopePass
    } else if tables.is_protected(&dst) {
        return redirect(tables, iface.slot, queue, Verdict::ProtectedRedirected);
    } else {
        Verdict::NoPolicyPass
    };
    if iface.is_outside() && outside_pass != Verdict::OtherPass {
        outside_pass
    } else {
        inside_pass
    }
}

/// Redirects to the socket of (`slot`, `queue`): `done` if that worked,
/// [`Verdict::RedirectFailed`] if there is no such socket.
#[inline(always)]
fn redirect<T: Tables>(tables: &T, slot: u32, queue: u32, done: Verdict) -> Verdict {
    match xsk_index(slot, queue) {
        Some(index) if tables.redirect(index) => done,
        _ => Verdict::RedirectFailed,
    }
}
