//! Builds the XDP program (`ebpf/steer`, package `xdpsec-ebpf`) for
//! bpfel-unknown-none with aya-build, which runs `cargo +nightly build
//! -Z build-std=core` on it and copies the object to `OUT_DIR/xdpsec-steer`,
//! where src/steer.rs embeds it. Needs the nightly toolchain with rust-src
//! and bpf-linker on PATH (`cargo xtask setup` installs both).

use std::path::PathBuf;

use anyhow::{anyhow, Context as _};
use aya_build::{Package, Toolchain};

const EBPF_PACKAGE: &str = "xdpsec-ebpf";

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(
        std::env::var_os("CARGO_MANIFEST_DIR")
            .ok_or_else(|| anyhow!("CARGO_MANIFEST_DIR not set"))?,
    );
    let ebpf = manifest_dir.join("../ebpf");
    let steer_dir = ebpf.join("steer");
    let common_dir = ebpf.join("common");
    let steer_dir = steer_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", steer_dir.display()))?;

    // aya-build reruns on changes under the eBPF crate; the shared types
    // live next door.
    println!("cargo:rerun-if-changed={}", common_dir.display());

    aya_build::build_ebpf(
        [Package {
            name: EBPF_PACKAGE,
            root_dir: steer_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )
    .with_context(|| {
        format!(
            "building the XDP program ({EBPF_PACKAGE}) failed; it needs `rustup component add \
             rust-src --toolchain nightly` and bpf-linker on PATH (see `cargo xtask setup`)"
        )
    })
}
