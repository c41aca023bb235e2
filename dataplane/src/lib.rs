//! The xdpsec data plane: the ESP transform (RFC 4303, tunnel mode, AES-GCM
//! per RFC 4106), security associations, the anti-replay window, the crypto
//! backends and the loader of the XDP steering program.
#![deny(unsafe_code)]

// AF_XDP sockets: the only module allowed unsafe code (each block has a SAFETY comment).
#[allow(unsafe_code)]
pub mod afxdp;
pub mod api_server;
pub mod batch_memo;
pub mod crypto;
pub mod daemon;
pub mod esp;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod fragment;
pub mod guard;
pub mod host_session;
pub mod icmp;
pub mod l4_checksum;
pub mod mss;
pub mod neighbour_queue;
pub mod nexthop;
pub mod per_resource;
pub mod persist;
pub mod pipeline;
pub mod pmtu;
pub mod policy_index;
pub mod reassembly;
pub mod replay;
pub mod sa;
pub mod selector;
pub mod stats;
pub mod steer;
pub mod tables;
pub mod tunnel;
pub mod wire;
pub mod worker;
