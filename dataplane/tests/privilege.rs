//! Without its capabilities the data plane must say which one it lacks and
//! exit non-zero, not crash or hang. Runs the real binary as an unprivileged
//! user (setpriv from util-linux); needs root to drop to that user.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

#[test]
fn without_capabilities_the_data_plane_names_what_it_needs() {
    let dir = std::env::temp_dir().join(format!("xdpsec-privilege-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.join("one-armed.toml");
    std::fs::write(
        &config,
        format!(
            "[dataplane]\napi_socket = \"{0}/api.sock\"\nstate_dir = \"{0}/state\"\n\
             workers = 1\n\n\
             [[interface]]\nname = \"lo\"\nrole = \"both\"\nqueues = 1\n",
            dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();

    let mut child = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_xdpsec"))
        .arg("dataplane")
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("setpriv runs (util-linux); the test needs root to drop privileges");
    // Bounded: a data plane that hangs instead of failing fails the test.
    let mut waited = Duration::ZERO;
    while child.try_wait().unwrap().is_none() {
        if waited > Duration::from_secs(20) {
            child.kill().ok();
            child.wait().ok();
            std::fs::remove_dir_all(&dir).ok();
            panic!("the unprivileged data plane did not exit within 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
        waited += Duration::from_millis(50);
    }
    let output = child.wait_with_output().unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "it must fail; stderr:\n{stderr}");
    assert!(
        stderr.contains("CAP_BPF") || stderr.contains("CAP_NET_ADMIN"),
        "the error names the missing capability:\n{stderr}"
    );
    assert!(!stderr.contains("panicked"), "no panic:\n{stderr}");
}
