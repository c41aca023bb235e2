//! xdpsec's benchmarks. The criterion micro-benchmarks live in `benches/`;
//! `cargo xtask bench esp` runs them and writes perf-results/esp-core.json.
#![deny(unsafe_code)]
