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

pub fn workspace_root() -> std::path::PathBuf {
    // xtask lives one level below the workspace root.
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}
