//! cargo-fuzz target `ike_skf`: the body and what it checks are
//! `xdpsec_fuzz_harness::ike::ike_skf` (fuzz/harness), which
//! `fuzz/harness/tests/replay.rs` also runs on this target's corpus and
//! crash reproducers in `cargo test`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| xdpsec_fuzz_harness::ike::ike_skf(data));
