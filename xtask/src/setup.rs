//! Installs what a fresh machine of this kind lacks, and nothing when it is all
//! there, so re-running costs seconds. What this installs and how is the
//! recipe in shared/TOOLCHAIN.md.

use crate::shell::{is_root, output, step};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Debian packages the build, tests, demo and benchmarks call, keyed by the
/// file that proves the package is present.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("/usr/sbin/ethtool", "ethtool"),
    ("/usr/bin/tshark", "tshark"),
    ("/usr/bin/tcpdump", "tcpdump"),
    ("/usr/bin/iperf3", "iperf3"),
    ("/usr/sbin/ip", "iproute2"),
    // iputils' ping reports duplicate replies (DUP!); the tunnel tests and
    // the demo use it.
    ("/usr/bin/ping", "iputils-ping"),
    // strongSwan 5.9 with ESP in user space (kernel-libipsec): the interop
    // peer and the benchmark baseline (xdpsec-testbed's strongswan.rs).
    ("/usr/lib/ipsec/charon", "strongswan-charon"),
    ("/usr/sbin/swanctl", "strongswan-swanctl"),
    (
        "/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so",
        "libcharon-extra-plugins",
    ),
    (
        "/usr/lib/ipsec/plugins/libstrongswan-openssl.so",
        "libstrongswan-standard-plugins",
    ),
    // strongSwan's certificate tool: the control crate's certificate tests
    // mint strongSwan-style CAs and certificates with it.
    ("/usr/bin/pki", "strongswan-pki"),
    // An independent implementation the certificate tests check signatures with.
    ("/usr/bin/openssl", "openssl"),
    // `xdpsec connect` blocks leaks outside the tunnel with nftables; the
    // remote-access test's ISP drops the device's direct traffic with it.
    ("/usr/sbin/nft", "nftables"),
    // The remote-access test's DNS server (without the host-wide service).
    ("/usr/sbin/dnsmasq", "dnsmasq-base"),
    // The remote-access test fetches its page with curl.
    ("/usr/bin/curl", "curl"),
    // dataplane/tests/packaging.rs checks the systemd units with
    // `systemd-analyze verify` and the sysusers.d file with systemd-sysusers;
    // `cargo xtask deb` builds the package with dpkg-deb.
    ("/usr/bin/systemd-analyze", "systemd"),
    ("/usr/bin/dpkg-deb", "dpkg"),
];

/// strongswan-charon pulls in strongswan-starter, whose service would start a
/// host-wide charon at the next boot. The tests never need it (each runs
/// its own charon in its own namespaces, with a private /run and config),
/// so a service *this setup* brought onto the machine is left disabled; one
/// that was there before belongs to the user and is never touched.
const STRONGSWAN_SERVICES: &[&str] = &["strongswan-starter.service", "strongswan.service"];

/// Debian's hook that lets package scripts start services; exit 101 = "no".
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

pub fn ensure_all() -> Result<()> {
    ensure_debian_packages()?;
    ensure_nightly_rust_src()?;
    ensure_bpf_linker()?;
    Ok(())
}

fn ensure_debian_packages() -> Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .filter(|(proof, _)| !Path::new(proof).exists())
        .map(|&(_, package)| package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "Debian packages missing: {}. Run as root (the tests need root for namespaces and XDP anyway), \
             or install them: apt-get install {}",
            missing.join(" "),
            missing.join(" ")
        );
    }
    // tshark asks whether non-root users may capture; answer before it asks.
    step(
        "preseed wireshark-common",
        &[
            "sh",
            "-c",
            "echo 'wireshark-common wireshark-common/install-setuid boolean false' | debconf-set-selections",
        ],
    )?;
    step("apt-get update", &["apt-get", "update", "-qq"])?;
    let mut argv = vec![
        "env",
        "DEBIAN_FRONTEND=noninteractive",
        "apt-get",
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
    ];
    argv.extend(&missing);
    let systemd = Path::new("/run/systemd/system").exists();
    let known_before: Vec<&str> = STRONGSWAN_SERVICES
        .iter()
        .copied()
        .filter(|unit| systemd && unit_known(unit))
        .collect();
    let _no_service_starts = ServiceStartsDenied::new()?;
    step("install Debian packages", &argv)?;
    if !systemd {
        return Ok(());
    }
    let known_after: Vec<&str> = STRONGSWAN_SERVICES
        .iter()
        .copied()
        .filter(|unit| unit_known(unit))
        .collect();
    for unit in units_we_brought(&known_before, &known_after) {
        step(
            "leave the strongSwan service this setup installed disabled",
            &["systemctl", "disable", unit],
        )?;
    }
    Ok(())
}

fn unit_known(unit: &str) -> bool {
    output(&["systemctl", "cat", unit]).is_some()
}

/// The service units that exist only since this setup's install: the only
/// ones it may change. A unit the machine had before is the user's.
fn units_we_brought<'a>(before: &[&str], after: &[&'a str]) -> Vec<&'a str> {
    after
        .iter()
        .copied()
        .filter(|unit| !before.contains(unit))
        .collect()
}

/// Denies service starts from package scripts while it lives, unless the
/// machine already denies them (container images ship such a policy-rc.d).
struct ServiceStartsDenied {
    created: bool,
}

impl ServiceStartsDenied {
    fn new() -> Result<Self> {
        if Path::new(POLICY_RC_D).exists() {
            return Ok(ServiceStartsDenied { created: false });
        }
        std::fs::write(
            POLICY_RC_D,
            "#!/bin/sh\n# written by cargo xtask setup for one apt-get run\nexit 101\n",
        )
        .with_context(|| format!("cannot write {POLICY_RC_D}"))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(POLICY_RC_D, std::fs::Permissions::from_mode(0o755))?;
        Ok(ServiceStartsDenied { created: true })
    }
}

impl Drop for ServiceStartsDenied {
    fn drop(&mut self) {
        if self.created {
            let _ = std::fs::remove_file(POLICY_RC_D);
        }
    }
}

fn nightly_sysroot() -> Result<PathBuf> {
    let sysroot = output(&["rustc", "+nightly", "--print", "sysroot"]).context(
        "the nightly toolchain is missing (`rustc +nightly` fails); the eBPF build needs it \
         and this machine cannot download toolchains",
    )?;
    Ok(PathBuf::from(sysroot.trim()))
}

fn ensure_nightly_rust_src() -> Result<()> {
    let core_src = nightly_sysroot()?.join("lib/rustlib/src/rust/library/core");
    if core_src.exists() {
        return Ok(());
    }
    step(
        "nightly rust-src (for -Z build-std=core)",
        &[
            "rustup",
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ],
    )
}

/// bpf-linker is built against the nightly's own libLLVM (Debian has no LLVM
/// that bpf-linker's default feature wants). The installed binary keeps an
/// rpath to `llvm_prefix()`, so that folder must stay.
fn ensure_bpf_linker() -> Result<()> {
    if output(&["bpf-linker", "--version"]).is_some() {
        return Ok(());
    }
    let sysroot = nightly_sysroot()?;
    let version = output(&["rustc", "+nightly", "-vV"]).context("rustc +nightly -vV failed")?;
    let llvm_major = version
        .lines()
        .find_map(|line| line.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("rustc +nightly -vV does not name its LLVM version")?
        .to_owned();

    let prefix = llvm_prefix()?;
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib).with_context(|| format!("cannot create {}", lib.display()))?;
    let mut real_libs: Vec<PathBuf> = std::fs::read_dir(sysroot.join("lib"))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            // libLLVM-NN-rust-*.so is a linker script; the library is libLLVM.so.NN*.
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so."))
        })
        .collect();
    real_libs.sort();
    let Some(first) = real_libs.first().cloned() else {
        bail!(
            "no libLLVM.so.* in {}/lib: cannot build bpf-linker",
            sysroot.display()
        );
    };
    for real in &real_libs {
        symlink_replacing(real, &lib.join(real.file_name().unwrap_or_default()))?;
    }
    symlink_replacing(&first, &lib.join("libLLVM.so"))?;

    let features = format!("llvm-{llvm_major}");
    let prefix_env = format!("LLVM_PREFIX={}", prefix.display());
    step(
        "build bpf-linker against the nightly's libLLVM (about 70 s, once)",
        &[
            "env",
            &prefix_env,
            "cargo",
            "+nightly",
            "install",
            "bpf-linker",
            "--no-default-features",
            "--features",
            &features,
        ],
    )
}

fn llvm_prefix() -> Result<PathBuf> {
    let cargo_home = match std::env::var_os("CARGO_HOME") {
        Some(home) => PathBuf::from(home),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?).join(".cargo"),
    };
    Ok(cargo_home.join("xdpsec-llvm"))
}

fn symlink_replacing(target: &Path, link: &Path) -> Result<()> {
    if link.symlink_metadata().is_ok() {
        std::fs::remove_file(link)?;
    }
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("cannot link {} -> {}", link.display(), target.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_services_the_install_brought_are_changed() {
        let [starter, swanctl] = [STRONGSWAN_SERVICES[0], STRONGSWAN_SERVICES[1]];
        // A machine that runs strongSwan already: nothing is touched.
        assert!(units_we_brought(&[starter], &[starter]).is_empty());
        assert!(units_we_brought(&[starter, swanctl], &[starter, swanctl]).is_empty());
        // A machine without it: what the install added is disabled.
        assert_eq!(units_we_brought(&[], &[starter]), [starter]);
        // The user's unit stays, the newcomer is disabled.
        assert_eq!(units_we_brought(&[swanctl], &[starter, swanctl]), [starter]);
    }
}
