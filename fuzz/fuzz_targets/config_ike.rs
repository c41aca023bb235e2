//! cargo-fuzz target `config_ike`: the body and what it checks are
//! `xdpsec_fuzz_harness::control::config_ike` (fuzz/harness), which
//! `fuzz/harness/tests/replay.rs` also runs on this target's corpus and
//! crash reproducers in `cargo test`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| xdpsec_fuzz_harness::control::config_ike(data));
