//! xdpsec's benchmarks.
//!
//! - `benches/`: criterion micro-benchmarks of the ESP core (`cargo xtask
//!   bench esp` runs them and writes perf-results/esp-core.json).
//! - A traffic generator and a sink on AF_XDP (the data plane's
//!   [`xdpsec_dataplane::afxdp`] module, no second AF_XDP layer), run as
//!   `xdpsec-bench gen` and `xdpsec-bench sink` inside the test bed's host
//!   namespaces by `cargo xtask bench peer`: UDP of fixed sizes or IMIX, at
//!   a set rate or as fast as possible, bounded in packets and time, each
//!   packet carrying a stream id, a sequence number and its CLOCK_MONOTONIC
//!   transmit time ([`payload`]); the sink counts loss, duplicates and
//!   reordering ([`accounting`]) and one-way latency (one machine, one
//!   clock) into an hdrhistogram.
//! - [`pipeline`]: the worker's per-packet path on frames in memory, no
//!   kernel I/O (`xdpsec-bench pipeline`, run by `cargo xtask bench
//!   pipeline`).
#![deny(unsafe_code)]

pub mod accounting;
pub mod clock;
pub mod gen;
pub mod packet;
pub mod payload;
pub mod pipeline;
pub mod sink;
pub mod xsk;
