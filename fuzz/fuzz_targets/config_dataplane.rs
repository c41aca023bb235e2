//! cargo-fuzz target `config_dataplane`: the body and what it checks are
//! `xdpsec_fuzz_harness::api::config_dataplane` (fuzz/harness), which
//! `fuzz/harness/tests/replay.rs` also runs on this target's corpus and
//! crash reproducers in `cargo test`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| xdpsec_fuzz_harness::api::config_dataplane(data));
