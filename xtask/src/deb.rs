//! `cargo xtask deb`: the Debian package of xdpsec, from a built binary.
//!
//! Everything here is std, anyhow and Debian's own tools (dpkg-deb, gzip,
//! strip): `dataplane/tests/packaging.rs` includes this file as it is and
//! packages the test build's binary, so what the test inspects and installs
//! is what this command makes.

use anyhow::{bail, ensure, Context, Result};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The package's name.
pub const PACKAGE: &str = "xdpsec";

/// Where the units, sysusers.d file and /etc examples live in the tree.
const PACKAGING: &str = "dataplane/packaging";

/// Configuration files the package installs; dpkg keeps an admin's edits.
pub const CONFFILES: [&str; 2] = ["/etc/xdpsec/dataplane.toml", "/etc/xdpsec/ike.toml"];

pub const UNITS: [&str; 2] = ["xdpsec-dataplane.service", "xdpsec-ike.service"];

/// Runs as `configure`. `$DPKG_ROOT` is set when dpkg installs into
/// another root without chrooting (`--force-script-chrootless`), as the
/// packaging test does. Nothing is enabled or started: the data plane's
/// config must name this machine's interfaces first.
const POSTINST: &str = r#"#!/bin/sh
set -e
if [ "$1" = configure ]; then
    root="${DPKG_ROOT:-}"
    # The IKE service's user; its group reads ike.toml (the PSKs) and uses
    # the SA API socket.
    if command -v systemd-sysusers >/dev/null 2>&1; then
        if [ -n "$root" ]; then
            systemd-sysusers --root="$root" "$root/usr/lib/sysusers.d/xdpsec.conf"
        else
            systemd-sysusers /usr/lib/sysusers.d/xdpsec.conf
        fi
    fi
    # By number from the package root's own group file: with $DPKG_ROOT the
    # host's may not know the group, or give it another gid.
    gid=$(sed -n 's/^xdpsec:[^:]*:\([0-9]*\):.*/\1/p' "$root/etc/group" 2>/dev/null)
    if [ -n "$gid" ]; then
        chgrp "$gid" "$root/etc/xdpsec" "$root/etc/xdpsec/ike.toml"
    fi
    if [ -z "$root" ] && [ -d /run/systemd/system ]; then
        systemctl daemon-reload || true
    fi
fi
exit 0
"#;

/// What a package is made of.
#[derive(Debug)]
pub struct Inputs<'a> {
    /// The `xdpsec` binary to ship.
    pub binary: &'a Path,
    /// The workspace root (units, examples, licenses, docs).
    pub workspace: &'a Path,
    /// The package's version.
    pub version: &'a str,
    /// Where the `.deb` goes (a staging tree is made next to it).
    pub out_dir: &'a Path,
    /// gzip -1 instead of xz: a test's debug binary takes xz half a minute.
    pub quick: bool,
}

/// Debian's name for this machine's architecture.
pub fn architecture() -> Result<&'static str> {
    Ok(match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => bail!("no Debian architecture known for {other}"),
    })
}

/// Builds `out_dir/xdpsec_VERSION_ARCH.deb` and returns its path.
pub fn build(inputs: &Inputs) -> Result<PathBuf> {
    let arch = architecture()?;
    let ws = inputs.workspace;
    let root = inputs.out_dir.join(format!("{PACKAGE}-staging"));
    if root.exists() {
        fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    }
    let packaging = ws.join(PACKAGING);

    // The binary, without its debug info (the release profile keeps it
    // for perf; a package does not need it).
    let bin = root.join("usr/bin/xdpsec");
    mkdir(bin.parent().unwrap())?;
    run(Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&bin)
        .arg(inputs.binary))?;
    chmod(&bin, 0o755)?;

    for unit in UNITS {
        install(
            &packaging.join("systemd").join(unit),
            &root.join("lib/systemd/system").join(unit),
            0o644,
        )?;
    }
    install(
        &packaging.join("sysusers.d/xdpsec.conf"),
        &root.join("usr/lib/sysusers.d/xdpsec.conf"),
        0o644,
    )?;
    // dataplane.toml may hold static keys, ike.toml holds PSKs: the
    // postinst gives /etc/xdpsec and ike.toml to the group xdpsec, whose
    // IKE daemon reads it.
    install(
        &packaging.join("etc/dataplane.toml"),
        &root.join("etc/xdpsec/dataplane.toml"),
        0o640,
    )?;
    install(
        &packaging.join("etc/ike.toml"),
        &root.join("etc/xdpsec/ike.toml"),
        0o640,
    )?;
    chmod(&root.join("etc/xdpsec"), 0o750)?;

    // Man pages and completions from the binary's own clap definitions.
    let generated = inputs.out_dir.join(format!("{PACKAGE}-generated"));
    if generated.exists() {
        fs::remove_dir_all(&generated)?;
    }
    for what in ["man", "completions"] {
        run(Command::new(inputs.binary)
            .arg("__generate")
            .arg(what)
            .arg(generated.join(what)))?;
    }
    let man1 = root.join("usr/share/man/man1");
    mkdir(&man1)?;
    let mut pages = 0;
    for entry in fs::read_dir(generated.join("man"))? {
        let page = entry?.path();
        let dest = man1.join(format!(
            "{}.gz",
            page.file_name().unwrap().to_string_lossy()
        ));
        gzip(&page, &dest)?;
        pages += 1;
    }
    ensure!(pages > 0, "the binary generated no man pages");
    for (file, dest) in [
        (
            "xdpsec.bash",
            "usr/share/bash-completion/completions/xdpsec",
        ),
        ("_xdpsec", "usr/share/zsh/vendor-completions/_xdpsec"),
        (
            "xdpsec.fish",
            "usr/share/fish/vendor_completions.d/xdpsec.fish",
        ),
    ] {
        install(
            &generated.join("completions").join(file),
            &root.join(dest),
            0o644,
        )?;
    }
    fs::remove_dir_all(&generated).ok();

    let doc = root.join("usr/share/doc").join(PACKAGE);
    write(&doc.join("copyright"), &copyright(ws)?, 0o644)?;
    install(&ws.join("README.md"), &doc.join("README.md"), 0o644)?;
    install(
        &ws.join("docs/DEPLOYMENT.md"),
        &doc.join("DEPLOYMENT.md"),
        0o644,
    )?;
    for (src, name) in [
        (
            "dataplane/api/examples/static-tunnel.toml",
            "static-tunnel.toml",
        ),
        (
            "dataplane/api/examples/ike-gateway.toml",
            "ike-gateway.toml",
        ),
        ("control/examples/ike.toml", "ike.toml"),
    ] {
        install(&ws.join(src), &doc.join("examples").join(name), 0o644)?;
    }

    let debian = root.join("DEBIAN");
    mkdir(&debian)?;
    let installed_kib = du_kib(&root)?;
    write(
        &debian.join("control"),
        &control(inputs.version, arch, installed_kib),
        0o644,
    )?;
    write(
        &debian.join("conffiles"),
        &(CONFFILES.join("\n") + "\n"),
        0o644,
    )?;
    write(&debian.join("postinst"), POSTINST, 0o755)?;

    let deb = inputs
        .out_dir
        .join(format!("{PACKAGE}_{}_{arch}.deb", inputs.version));
    run(Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group"])
        .args(if inputs.quick {
            ["-Zgzip", "-z1"]
        } else {
            ["-Zxz", "-z6"]
        })
        .arg(&root)
        .arg(&deb))?;
    fs::remove_dir_all(&root).ok();
    Ok(deb)
}

fn control(version: &str, arch: &str, installed_kib: u64) -> String {
    format!(
        "Package: {PACKAGE}\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: The xdpsec authors <xdpsec@localhost>\n\
         Installed-Size: {installed_kib}\n\
         Depends: libc6, nftables\n\
         Section: net\n\
         Priority: optional\n\
         Description: IPsec VPN gateway with an XDP/AF_XDP data plane\n \
         xdpsec encrypts and decrypts ESP in user space: an XDP program steers\n \
         packets into AF_XDP sockets served by pinned worker threads, and an\n \
         IKEv2 daemon negotiates the SAs. Two systemd services: the data plane\n \
         (root with CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_NET_RAW and\n \
         CAP_IPC_LOCK) and the IKE daemon (user xdpsec, CAP_NET_BIND_SERVICE\n \
         only). Neither is enabled on install: edit /etc/xdpsec first.\n"
    )
}

/// Debian's machine-readable copyright file, with both license texts.
fn copyright(ws: &Path) -> Result<String> {
    let indent = |text: &str| -> String {
        text.lines()
            .map(|l| {
                if l.trim().is_empty() {
                    " .\n".to_owned()
                } else {
                    format!(" {l}\n")
                }
            })
            .collect()
    };
    let mit = fs::read_to_string(ws.join("LICENSE-MIT")).context("LICENSE-MIT")?;
    let apache = fs::read_to_string(ws.join("LICENSE-APACHE")).context("LICENSE-APACHE")?;
    Ok(format!(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
         Upstream-Name: xdpsec\n\
         \n\
         Files: *\n\
         Copyright: The xdpsec authors\n\
         License: MIT or Apache-2.0\n\
         \n\
         License: MIT\n{}\n\
         License: Apache-2.0\n{}",
        indent(&mit),
        indent(&apache)
    ))
}

fn mkdir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

fn chmod(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

fn install(src: &Path, dest: &Path, mode: u32) -> Result<()> {
    mkdir(dest.parent().unwrap())?;
    fs::copy(src, dest)
        .with_context(|| format!("copying {} to {}", src.display(), dest.display()))?;
    chmod(dest, mode)
}

fn write(dest: &Path, text: &str, mode: u32) -> Result<()> {
    mkdir(dest.parent().unwrap())?;
    fs::write(dest, text).with_context(|| format!("writing {}", dest.display()))?;
    chmod(dest, mode)
}

/// gzip -9n (no name or time stamp inside: the same page, the same bytes).
fn gzip(src: &Path, dest: &Path) -> Result<()> {
    let out = Command::new("gzip")
        .args(["-9n", "-c"])
        .arg(src)
        .output()
        .context("cannot run gzip")?;
    ensure!(out.status.success(), "gzip {} failed", src.display());
    mkdir(dest.parent().unwrap())?;
    fs::write(dest, out.stdout).with_context(|| format!("writing {}", dest.display()))?;
    chmod(dest, 0o644)
}

/// The staged files' size in KiB, as Installed-Size counts it.
fn du_kib(dir: &Path) -> Result<u64> {
    let mut bytes = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                bytes += meta.len();
            }
        }
    }
    Ok(bytes.div_ceil(1024))
}

fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
