//! Types and constants shared by the xdpsec XDP program (`xdpsec-ebpf`, built
//! for `bpfel-unknown-none`) and user space (`xdpsec-dataplane`).
//!
//! Everything here is `no_std` and free of allocation so that the eBPF side
//! can use it; user space turns on the `user` feature (which adds the
//! `aya::Pod` impls its typed maps need).
//!
//! # Maps of the `steer` program
//!
//! | name | type | key | value |
//! |---|---|---|---|
//! | [`XSKS_MAP`] | `XSKMAP`, [`XSKS_LEN`] entries | `u32` [`xsk_index`]`(slot, rx queue)` | AF_XDP socket fd |
//! | [`IFACES_MAP`] | hash, [`IFACES_LEN`] | `u32` ifindex | [`IfaceConfig`] |
//! | [`LOCAL_V4_MAP`] | hash, [`LOCAL_LEN`] | `u32`: [`v4_key`] of the address | `u32`, reserved (0) |
//! | [`LOCAL_V6_MAP`] | hash, [`LOCAL_LEN`] | `[u8; 16]`: the address | `u32`, reserved (0) |
//! | [`PROTECT_V4_MAP`] | LPM trie, [`PROTECT_LEN`] | `{ prefix_len: u32, [u8; 4] }` | `u32` flags, reserved (0) |
//! | [`PROTECT_V6_MAP`] | LPM trie, [`PROTECT_LEN`] | `{ prefix_len: u32, [u8; 16] }` | `u32` flags, reserved (0) |
//! | [`UDP_FRAGS_MAP`] | LRU hash, [`UDP_FRAGS_LEN`] | [`FragKey`] | `u32` [`FRAG_TO_WORKER`] or [`FRAG_TO_KERNEL`] (written by the program) |
//! | [`COUNTERS_MAP`] | per-CPU array, [`VERDICT_COUNT`] | `u32` [`Verdict::index`] | `u64` packets |
//!
//! Addresses are in network byte order everywhere (as they are on the wire).
#![no_std]
#![deny(unsafe_code)]

/// Name of the XDP program in the object file (the `#[xdp]` function).
pub const STEER_PROGRAM: &str = "steer";

/// Name of the per-CPU array of per-verdict packet counters.
pub const COUNTERS_MAP: &str = "COUNTERS";
/// Name of the `XSKMAP` the program redirects into.
pub const XSKS_MAP: &str = "XSKS";
/// Name of the hash of interfaces the program steers on (ifindex ->
/// [`IfaceConfig`]).
pub const IFACES_MAP: &str = "IFACES";
/// Name of the hash of the gateway's own IPv4 tunnel addresses.
pub const LOCAL_V4_MAP: &str = "LOCAL_V4";
/// Name of the hash of the gateway's own IPv6 tunnel addresses.
pub const LOCAL_V6_MAP: &str = "LOCAL_V6";
/// Name of the LPM trie of protected (remote) IPv4 prefixes.
pub const PROTECT_V4_MAP: &str = "PROTECT_V4";
/// Name of the LPM trie of protected (remote) IPv6 prefixes.
pub const PROTECT_V6_MAP: &str = "PROTECT_V6";
/// Name of the LRU hash of UDP datagrams arriving in fragments: where the
/// first fragment went, so the later ones (which have no UDP header) follow.
pub const UDP_FRAGS_MAP: &str = "UDP_FRAGS";
/// `max_entries` of [`UDP_FRAGS_MAP`].
pub const UDP_FRAGS_LEN: u32 = 1024;

/// The key of [`UDP_FRAGS_MAP`]: a fragmented datagram's source address
/// (IPv4 in the first 4 bytes), its identification and its family (4 or 6).
/// The destination is always one of ours, so it is left out.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub src: [u8; 16],
    pub ident: u32,
    pub family: u32,
}

/// Value of [`UDP_FRAGS_MAP`]: the datagram's fragments go to the worker.
pub const FRAG_TO_WORKER: u32 = 1;
/// Value of [`UDP_FRAGS_MAP`]: they go to the kernel (fragmented IKE).
pub const FRAG_TO_KERNEL: u32 = 0;

/// Receive queues per interface slot in [`XSKS_MAP`]. Frames due for a
/// redirect that arrive on a higher queue are dropped (counted as
/// [`Verdict::RedirectFailed`]).
pub const MAX_QUEUES: u32 = 64;
/// Interface slots in [`XSKS_MAP`] (inside, outside, tunnel veth, ... ).
pub const MAX_SLOTS: u32 = 8;
/// `max_entries` of [`XSKS_MAP`].
pub const XSKS_LEN: u32 = MAX_SLOTS * MAX_QUEUES;
/// `max_entries` of [`IFACES_MAP`].
pub const IFACES_LEN: u32 = 64;
/// `max_entries` of [`LOCAL_V4_MAP`] and [`LOCAL_V6_MAP`].
pub const LOCAL_LEN: u32 = 64;
/// `max_entries` of [`PROTECT_V4_MAP`] and [`PROTECT_V6_MAP`] in the object;
/// the data plane loads them with `[dataplane] max_protected_prefixes`.
pub const PROTECT_LEN: u32 = 4096;

/// The [`XSKS_MAP`] index of receive queue `queue` of the interface in slot
/// `slot`: `slot * MAX_QUEUES + queue`, or `None` if either is out of range.
#[inline(always)]
pub const fn xsk_index(slot: u32, queue: u32) -> Option<u32> {
    if slot < MAX_SLOTS && queue < MAX_QUEUES {
        Some(slot * MAX_QUEUES + queue)
    } else {
        None
    }
}

/// The key of an IPv4 address in [`LOCAL_V4_MAP`]: its four bytes in
/// network order, read as a native `u32` (the kernel's `__be32`).
#[inline(always)]
pub const fn v4_key(octets: [u8; 4]) -> u32 {
    u32::from_ne_bytes(octets)
}

/// IP protocol number of ESP (RFC 4303).
pub const IPPROTO_ESP: u8 = 50;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IPv6 next header of the Fragment extension header.
pub const IPPROTO_FRAGMENT: u8 = 44;
/// IP protocol number of ICMP.
pub const IPPROTO_ICMP: u8 = 1;
/// IPv6 next header of ICMPv6.
pub const IPPROTO_ICMPV6: u8 = 58;
/// UDP port of IKE (RFC 7296).
pub const IKE_PORT: u16 = 500;
/// UDP port of IKE and ESP behind NAT (RFC 3948, RFC 7296 section 2.23).
pub const NAT_T_PORT: u16 = 4500;
/// Length of the non-ESP marker that prefixes IKE messages on port 4500: a
/// zero where ESP has its (never zero) SPI.
pub const NON_ESP_MARKER_LEN: usize = 4;

/// What the program does on an interface: the value of [`IFACES_MAP`].
///
/// Plain integers, so that every bit pattern read back from the map is a
/// valid value; [`Role`] is the typed view.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IfaceConfig {
    /// [`IfaceConfig::INSIDE`], [`IfaceConfig::OUTSIDE`] or both bits.
    pub role: u32,
    /// The interface's slot in [`XSKS_MAP`] (below [`MAX_SLOTS`]).
    pub slot: u32,
}

impl IfaceConfig {
    /// Role bit: cleartext to protected prefixes arrives here (LAN).
    pub const INSIDE: u32 = 1;
    /// Role bit: ESP and ESP-in-UDP to local addresses arrive here (WAN).
    pub const OUTSIDE: u32 = 2;

    /// The map value for `role` and `slot`.
    pub const fn new(role: Role, slot: u32) -> Self {
        Self {
            role: role.bits(),
            slot,
        }
    }

    /// Whether the inside rule applies.
    #[inline(always)]
    pub const fn is_inside(&self) -> bool {
        self.role & Self::INSIDE != 0
    }

    /// Whether the outside rule applies.
    #[inline(always)]
    pub const fn is_outside(&self) -> bool {
        self.role & Self::OUTSIDE != 0
    }
}

/// Role of an interface: which of the program's rules apply on it.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// LAN side: IP packets to a protected prefix go to the XSK.
    Inside = IfaceConfig::INSIDE,
    /// WAN side: ESP and ESP-in-UDP to a local address go to the XSK.
    Outside = IfaceConfig::OUTSIDE,
    /// One-armed: both rules.
    Both = IfaceConfig::INSIDE | IfaceConfig::OUTSIDE,
}

impl Role {
    /// The role bits of [`IfaceConfig::role`].
    pub const fn bits(self) -> u32 {
        self as u32
    }

    /// The role with these bits, if any.
    pub const fn from_bits(bits: u32) -> Option<Self> {
        match bits {
            IfaceConfig::INSIDE => Some(Self::Inside),
            IfaceConfig::OUTSIDE => Some(Self::Outside),
            3 => Some(Self::Both),
            _ => None,
        }
    }

    /// Lower-case name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Inside => "inside",
            Self::Outside => "outside",
            Self::Both => "both",
        }
    }
}

/// What the program did with a frame, and why. The discriminant is the
/// index of the verdict's slot in [`COUNTERS_MAP`]; it is stable (new
/// verdicts get new indices at the end).
///
/// Every frame the program sees is counted under exactly one verdict. The
/// `*Redirected` verdicts are `XDP_REDIRECT` into [`XSKS_MAP`],
/// [`Verdict::RedirectFailed`] is `XDP_DROP`; all others are `XDP_PASS`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    /// Outside: IP protocol 50 to a local address, redirected.
    EspRedirected = 0,
    /// Outside: UDP to 4500 with a non-zero first payload word (the SPI) to
    /// a local address, redirected.
    EspInUdpRedirected = 1,
    /// Inside: an IPv4/IPv6 packet to a protected prefix, redirected.
    ProtectedRedirected = 2,
    /// A redirect was due but no socket is registered at the XSKS index (or
    /// the queue or slot is beyond the map): dropped. Fail closed: a
    /// protected packet passed to the kernel would be forwarded in
    /// cleartext (a queue no worker serves, a worker that died).
    RedirectFailed = 3,
    /// Outside: IKE (UDP 500, or UDP 4500 with the zero non-ESP marker).
    IkePass = 4,
    /// Outside: ESP or ESP-in-UDP to an address that is not local.
    NotLocalPass = 5,
    /// Inside: the destination is in no protected prefix.
    NoPolicyPass = 6,
    /// Inside: multicast, broadcast or link-local destination, never steered
    /// (ND, DHCP, mDNS ... stay with the kernel even under a 0/0 policy).
    LinkScopePass = 7,
    /// Outside: a fragment that is not steered: of another protocol, to an
    /// address that is not local, of a UDP datagram whose first fragment
    /// was IKE (or has not been seen), so the kernel reassembles it.
    FragmentPass = 8,
    /// The ingress interface is not in [`IFACES_MAP`].
    UnknownIfacePass = 9,
    /// Not IPv4 or IPv6 (ARP, LLDP, two VLAN tags, ...).
    NonIpPass = 10,
    /// Outside: any other IP packet (TCP, ICMP, ND, UDP to other ports, NAT
    /// keepalives, IPv6 with extension headers before ESP).
    OtherPass = 11,
    /// A header the decision needs is cut short by the end of the frame.
    TruncatedPass = 12,
    /// Outside: a fragment of ESP, or of a UDP datagram whose first
    /// fragment was ESP in UDP, to a local address, redirected (the worker
    /// reassembles it).
    FragmentRedirected = 13,
    /// Outside: an ICMP "fragmentation needed" / ICMPv6 "packet too big"
    /// quoting ESP or UDP, to a local address, redirected (the worker
    /// learns the path MTU).
    IcmpTooBigRedirected = 14,
}

/// Number of verdicts, and so the number of entries of [`COUNTERS_MAP`].
pub const VERDICT_COUNT: usize = 15;

/// `max_entries` of [`COUNTERS_MAP`].
pub const COUNTERS_LEN: u32 = VERDICT_COUNT as u32;

impl Verdict {
    /// Every verdict, in index order.
    pub const ALL: [Self; VERDICT_COUNT] = [
        Self::EspRedirected,
        Self::EspInUdpRedirected,
        Self::ProtectedRedirected,
        Self::RedirectFailed,
        Self::IkePass,
        Self::NotLocalPass,
        Self::NoPolicyPass,
        Self::LinkScopePass,
        Self::FragmentPass,
        Self::UnknownIfacePass,
        Self::NonIpPass,
        Self::OtherPass,
        Self::TruncatedPass,
        Self::FragmentRedirected,
        Self::IcmpTooBigRedirected,
    ];

    /// Slot of this verdict in [`COUNTERS_MAP`].
    #[inline(always)]
    pub const fn index(self) -> u32 {
        self as u32
    }

    /// The verdict stored at `index` of [`COUNTERS_MAP`], if any.
    pub const fn from_index(index: u32) -> Option<Self> {
        if (index as usize) < VERDICT_COUNT {
            Some(Self::ALL[index as usize])
        } else {
            None
        }
    }

    /// Whether frames with this verdict are redirected (`XDP_REDIRECT`)
    /// rather than passed to the kernel (`XDP_PASS`).
    #[inline(always)]
    pub const fn is_redirect(self) -> bool {
        matches!(
            self,
            Self::EspRedirected
                | Self::EspInUdpRedirected
                | Self::ProtectedRedirected
                | Self::FragmentRedirected
                | Self::IcmpTooBigRedirected
        )
    }

    /// Whether frames with this verdict are dropped (`XDP_DROP`): due for a
    /// worker that is not there. Neither redirected nor passed.
    #[inline(always)]
    pub const fn is_drop(self) -> bool {
        matches!(self, Self::RedirectFailed)
    }

    /// Counter name (snake case), for logs and counters output.
    pub const fn name(self) -> &'static str {
        match self {
            Self::EspRedirected => "esp_redirected",
            Self::EspInUdpRedirected => "esp_in_udp_redirected",
            Self::ProtectedRedirected => "protected_redirected",
            Self::RedirectFailed => "redirect_failed",
            Self::IkePass => "ike_pass",
            Self::NotLocalPass => "not_local_pass",
            Self::NoPolicyPass => "no_policy_pass",
            Self::LinkScopePass => "link_scope_pass",
            Self::FragmentPass => "fragment_pass",
            Self::UnknownIfacePass => "unknown_iface_pass",
            Self::NonIpPass => "non_ip_pass",
            Self::OtherPass => "other_pass",
            Self::TruncatedPass => "truncated_pass",
            Self::FragmentRedirected => "fragment_redirected",
            Self::IcmpTooBigRedirected => "icmp_too_big_redirected",
        }
    }

    /// The verdict with counter name `name`, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.name() == name)
    }
}

#[cfg(feature = "user")]
#[allow(unsafe_code)]
mod user {
    // SAFETY: IfaceConfig is #[repr(C)] with two u32 fields and so no padding, Copy and 'static; every bit pattern is a valid value (role is a plain u32, not an enum).
    unsafe impl aya::Pod for super::IfaceConfig {}
    // SAFETY: FragKey is #[repr(C)]: 16 bytes then two u32 at offsets 16 and 20, 24 bytes with no padding, Copy and 'static; every bit pattern is a valid value.
    unsafe impl aya::Pod for super::FragKey {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_indices_round_trip_and_fit_the_map() {
        for (i, verdict) in Verdict::ALL.iter().enumerate() {
            assert_eq!(verdict.index() as usize, i);
            assert_eq!(Verdict::from_index(verdict.index()), Some(*verdict));
            assert_eq!(Verdict::from_name(verdict.name()), Some(*verdict));
            assert!(verdict.index() < COUNTERS_LEN);
        }
        assert_eq!(Verdict::from_index(COUNTERS_LEN), None);
        assert_eq!(Verdict::from_name("esp"), None);
        let redirects: usize = Verdict::ALL.iter().filter(|v| v.is_redirect()).count();
        assert_eq!(redirects, 5);
    }

    #[test]
    fn xsk_indices_are_disjoint_per_slot_and_fit_the_map() {
        assert_eq!(xsk_index(0, 0), Some(0));
        assert_eq!(xsk_index(1, 0), Some(MAX_QUEUES));
        assert_eq!(xsk_index(2, 3), Some(2 * MAX_QUEUES + 3));
        assert_eq!(xsk_index(MAX_SLOTS - 1, MAX_QUEUES - 1), Some(XSKS_LEN - 1));
        assert_eq!(xsk_index(MAX_SLOTS, 0), None);
        assert_eq!(xsk_index(0, MAX_QUEUES), None);
        assert_eq!(xsk_index(u32::MAX, u32::MAX), None);
    }

    #[test]
    fn roles() {
        for role in [Role::Inside, Role::Outside, Role::Both] {
            assert_eq!(Role::from_bits(role.bits()), Some(role));
            let c = IfaceConfig::new(role, 1);
            assert_eq!(c.is_inside(), role != Role::Outside);
            assert_eq!(c.is_outside(), role != Role::Inside);
        }
        assert_eq!(Role::from_bits(0), None);
        assert_eq!(Role::from_bits(4), None);
        assert_eq!(core::mem::size_of::<IfaceConfig>(), 8);
    }

    #[test]
    fn v4_keys_keep_network_order_bytes() {
        assert_eq!(v4_key([198, 18, 0, 1]).to_ne_bytes(), [198, 18, 0, 1]);
    }
}
