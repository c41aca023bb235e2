//! The xdpsec XDP program `steer`.
//!
//! For now it only classifies every frame (ESP, ESP-in-UDP, IKE, other; see
//! [`classify`]), counts it in a per-CPU array indexed by class and returns
//! `XDP_PASS`. Built for `bpfel-unknown-none` by the data plane's build.rs
//! (aya-build); a host build only compiles and unit-tests the classifier.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![deny(unsafe_code)]

// On the host nothing but the unit tests call the classifier.
#[cfg_attr(not(target_arch = "bpf"), allow(dead_code))]
mod classify;
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
