//! Types and constants shared by the xdpsec XDP program (`xdpsec-ebpf`, built
//! for `bpfel-unknown-none`) and user space (`xdpsec-dataplane`).
//!
//! Everything here is `no_std` and free of allocation so that the eBPF side
//! can use it; user space turns on the `user` feature.
#![no_std]
#![deny(unsafe_code)]

/// Name of the XDP program in the object file (the `#[xdp]` function).
pub const STEER_PROGRAM: &str = "steer";

/// Name of the per-CPU array of per-class packet counters.
pub const CLASS_COUNTERS_MAP: &str = "CLASS_COUNTERS";

/// IP protocol number of ESP (RFC 4303).
pub const IPPROTO_ESP: u8 = 50;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// UDP port of IKE (RFC 7296).
pub const IKE_PORT: u16 = 500;
/// UDP port of IKE and ESP behind NAT (RFC 3948, RFC 7296 section 2.23).
pub const NAT_T_PORT: u16 = 4500;
/// Length of the non-ESP marker that prefixes IKE messages on port 4500: a
/// zero where ESP has its (never zero) SPI.
pub const NON_ESP_MARKER_LEN: usize = 4;

/// What the XDP program decided a frame is. The discriminant is the index of
/// the class's slot in the counters map.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// IPv4 or IPv6 with IP protocol / next header 50.
    Esp = 0,
    /// UDP to port 4500 whose first 4 payload bytes (the SPI) are non-zero.
    EspInUdp = 1,
    /// UDP to port 500, or to port 4500 with the zero non-ESP marker.
    Ike = 2,
    /// Everything else: non-IP, other protocols, truncated frames.
    Other = 3,
}

/// Number of classes, and so the number of entries of the counters map.
pub const CLASS_COUNT: usize = 4;

/// `max_entries` of the counters map.
pub const CLASS_COUNTERS_LEN: u32 = CLASS_COUNT as u32;

impl Class {
    /// Every class, in index order.
    pub const ALL: [Self; CLASS_COUNT] = [Self::Esp, Self::EspInUdp, Self::Ike, Self::Other];

    /// Slot of this class in the counters map.
    #[inline(always)]
    pub const fn index(self) -> u32 {
        self as u32
    }

    /// The class stored at `index` of the counters map, if any.
    pub const fn from_index(index: u32) -> Option<Self> {
        match index {
            0 => Some(Self::Esp),
            1 => Some(Self::EspInUdp),
            2 => Some(Self::Ike),
            3 => Some(Self::Other),
            _ => None,
        }
    }

    /// Short lower-case name, for logs and counters output.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Esp => "esp",
            Self::EspInUdp => "esp-in-udp",
            Self::Ike => "ike",
            Self::Other => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_round_trip_and_fit_the_map() {
        for (i, class) in Class::ALL.iter().enumerate() {
            assert_eq!(class.index() as usize, i);
            assert_eq!(Class::from_index(class.index()), Some(*class));
            assert!(class.index() < CLASS_COUNTERS_LEN);
        }
        assert_eq!(Class::from_index(CLASS_COUNTERS_LEN), None);
    }
}
