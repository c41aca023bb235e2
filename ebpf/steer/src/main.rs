//! The xdpsec XDP program `steer`.
//!
//! It parses every frame ([`classify`]), decides from the interface's role,
//! the local addresses and the protected prefixes whether it goes to an
//! AF_XDP socket (`XDP_REDIRECT` into the `XSKS` map) or to the kernel
//! (`XDP_PASS`), and counts it under its verdict in a per-CPU array (see
//! [`decide`] and `xdpsec_ebpf_common::Verdict`). Built for
//! `bpfel-unknown-none` by the data plane's build.rs (aya-build); a host
//! build only compiles and unit-tests the parser.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![deny(unsafe_code)]

// On the host nothing but the unit tests call the parser.
#[cfg_attr(not(target_arch = "bpf"), allow(dead_code))]
mod classify;
#[cfg_attr(not(target_arch = "bpf"), allow(dead_code))]
mod decide;
#[cfg(target_arch = "bpf")]
#[allow(unsafe_code)]
mod kernel;

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!(
        "xdpsec-steer is an XDP program: it is built for bpfel-unknown-none \
         by xdpsec-dataplane's build.rs and loaded by the data plane"
    );
    std::process::exit(2);
}
