//! The bodies of xdpsec's fuzz targets, as plain functions over bytes.
//!
//! Each cargo-fuzz target in `fuzz/fuzz_targets/` is one line that calls
//! a function of [`TARGETS`]; `tests/replay.rs` calls the same functions
//! on every file of `fuzz/corpus/<target>/` and `fuzz/artifacts/<target>/`
//! with the stable toolchain and no libFuzzer, so the corpora and every
//! crash ever found are regression tests of `cargo test`.
//!
//! A target panics (an assertion, an overflow, an index out of bounds)
//! when it finds a bug; anything else it returns from is a pass.
#![deny(unsafe_code)]

pub mod api;
pub mod control;
pub mod dataplane;
pub mod ike;
pub mod input;
pub mod seeds;
pub mod steer;

// The XDP program's parser and decision, compiled for the host as its own
// unit tests do: they are modules of the `xdpsec-ebpf` binary crate (its
// code must stay in the eBPF object), so they are included by path. They
// name each other through `crate::classify`, hence the crate root.
#[path = "../../../ebpf/steer/src/classify.rs"]
#[allow(dead_code)]
mod classify;
#[path = "../../../ebpf/steer/src/decide.rs"]
#[allow(dead_code)]
mod decide;

/// A target's body: panics on a bug, returns otherwise.
pub type Body = fn(&[u8]);

/// Every target: its name (the cargo-fuzz target and corpus directory) and
/// body.
pub const TARGETS: &[(&str, Body)] = &[
    ("esp_decap", dataplane::esp_decap),
    ("wire_views", dataplane::wire_views),
    ("outer_reassembly", dataplane::outer_reassembly),
    ("steer_classify", steer::steer_classify),
    ("ike_message", control::ike_message),
    ("ike_endpoint", ike::ike_endpoint),
    ("ike_skf", ike::ike_skf),
    ("ike_cp", control::ike_cp),
    ("cert_der", control::cert_der),
    ("config_ike", control::config_ike),
    ("config_dataplane", api::config_dataplane),
    ("sa_api_framing", api::sa_api_framing),
];

/// The body of target `name`.
pub fn target(name: &str) -> Option<Body> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}
