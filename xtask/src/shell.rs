//! Running commands with a visible banner, failing with the command's name.

use anyhow::{bail, Context, Result};
use std::process::{Command, Stdio};

/// Runs `argv` with inherited stdio from the workspace root; fails if it fails.
pub fn step(title: &str, argv: &[&str]) -> Result<()> {
    eprintln!("\n==> {title}: {}", argv.join(" "));
    let status = command(argv)
        .status()
        .with_context(|| format!("cannot start {}", argv[0]))?;
    if !status.success() {
        bail!("`{}` failed ({status})", argv.join(" "));
    }
    Ok(())
}

/// Runs `argv` quietly and returns its stdout, or None if it cannot run or fails.
pub fn output(argv: &[&str]) -> Option<String> {
    let out = command(argv).stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn command(argv: &[&str]) -> Command {
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..]).current_dir(workspace_root());
    cmd
}

/// Whether this process runs as root (the tests, demo and benches need it).
pub fn is_root() -> bool {
    output(&["id", "-u"]).is_some_and(|uid| uid.trim() == "0")
}

/// Cargo's target directory as cargo itself resolves it (CARGO_TARGET_DIR,
/// config files, or the workspace's `target`).
/// Builds the `xdpsec` binary in release mode (which compiles the XDP
/// program: run `setup::ensure_all` first) and returns its path.
pub fn release_xdpsec() -> Result<std::path::PathBuf> {
    step(
        "release build of xdpsec",
        &[
            "cargo",
            "build",
            "--release",
            "--package",
            "xdpsec-dataplane",
            "--bin",
            "xdpsec",
        ],
    )?;
    let binary = target_dir()?.join("release").join("xdpsec");
    anyhow::ensure!(binary.is_file(), "no xdpsec binary at {}", binary.display());
    Ok(binary)
}

pub fn target_dir() -> Result<std::path::PathBuf> {
    let metadata = output(&["cargo", "metadata", "--format-version", "1", "--no-deps"])
        .context("cargo metadata failed")?;
    let v: serde_json::Value = serde_json::from_str(&metadata).context("reading cargo metadata")?;
    v["target_directory"]
        .as_str()
        .map(std::path::PathBuf::from)
        .context("cargo metadata names no target_directory")
}

pub fn workspace_root() -> std::path::PathBuf {
    // xtask lives one level below the workspace root.
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}
