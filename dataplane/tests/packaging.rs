//! What a machine gets from the package, checked without a running
//! systemd (this machine has none):
//!
//! - the units under `dataplane/packaging/`: `systemd-analyze verify` has
//!   nothing to say about them (ExecStart pointed at the binary this build
//!   made, since verify insists on an executable), and they say what the
//!   design asks (notify, watchdog, the IKE daemon unprivileged);
//! - the sysusers.d file creates `xdpsec` in a scratch root
//!   (systemd-sysusers), the `/etc/xdpsec` examples load;
//! - the data plane unit's capabilities carry a tunnel (both data planes
//!   under setpriv with exactly that bounding set), and both daemons send
//!   READY=1, WATCHDOG=1 and STOPPING=1 to a `$NOTIFY_SOCKET` as systemd
//!   would receive them;
//! - the package of this build's binary (`cargo xtask deb`'s code):
//!   `dpkg-deb --info`/`--contents`, then `dpkg --root` into a scratch
//!   root, where the binary, man pages, completions and units are checked.
//!
//! systemd-analyze, systemd-sysusers and dpkg come from Debian packages
//! that `cargo xtask setup` installs; without them the tests fail rather
//! than skip. Needs root (chgrp in the scratch root, namespaces).

use std::path::{Path, PathBuf};
use std::process::Command;

const UNITS: [&str; 2] = ["xdpsec-dataplane.service", "xdpsec-ike.service"];

/// A directory of its own under the temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("xdpsec-{name}-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

fn packaging() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging")
}

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/bin", "/bin", "/usr/sbin", "/sbin"] {
        let path = Path::new(dir).join(name);
        if path.exists() {
            return path;
        }
    }
    panic!(
        "{name} is missing: `cargo xtask setup` installs it (Debian package `systemd`: \
         apt-get install systemd)"
    );
}

/// Runs `systemd-analyze verify` on `units` (files whose ExecStart names
/// `/usr/bin/xdpsec`) with `binary` in its place; panics with what it said
/// if it said anything: verify exits 0 on unknown keys and bad values, it
/// only warns.
fn verify_units(units: &[PathBuf], binary: &Path) {
    let scratch = Scratch::new("verify");
    let mut args = vec!["verify".into(), "--man=no".into()];
    for unit in units {
        let text = std::fs::read_to_string(unit).unwrap();
        assert!(
            text.contains("ExecStart=/usr/bin/xdpsec "),
            "{}: ExecStart is not /usr/bin/xdpsec",
            unit.display()
        );
        let text = text.replace("/usr/bin/xdpsec ", &format!("{} ", binary.display()));
        let copy = scratch.0.join(unit.file_name().unwrap());
        std::fs::write(&copy, text).unwrap();
        args.push(copy.into_os_string());
    }
    let out = Command::new(tool("systemd-analyze"))
        .args(&args)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify ({}):\n{said}",
        out.status
    );
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let units: Vec<PathBuf> = UNITS
        .iter()
        .map(|u| packaging().join("systemd").join(u))
        .collect();
    verify_units(&units, Path::new(env!("CARGO_BIN_EXE_xdpsec")));
}

#[test]
fn units_say_what_the_design_asks() {
    let read = |u: &str| std::fs::read_to_string(packaging().join("systemd").join(u)).unwrap();
    let dataplane = read("xdpsec-dataplane.service");
    let ike = read("xdpsec-ike.service");
    for (name, text) in [("dataplane", &dataplane), ("ike", &ike)] {
        for line in [
            "Type=notify",
            "NotifyAccess=main",
            "Restart=on-failure",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
        ] {
            assert!(text.lines().any(|l| l == line), "{name}: no {line}");
        }
        assert!(text.lines().any(|l| l.starts_with("WatchdogSec=")));
    }
    // The attacker-facing daemon never holds more than the port.
    assert!(ike.lines().any(|l| l == "User=xdpsec"));
    assert!(ike
        .lines()
        .any(|l| l == "CapabilityBoundingSet=CAP_NET_BIND_SERVICE"));
    assert!(ike
        .lines()
        .any(|l| l == "AmbientCapabilities=CAP_NET_BIND_SERVICE"));
    assert!(ike
        .lines()
        .any(|l| l == "After=xdpsec-dataplane.service network-online.target"));
    assert!(!dataplane.contains("CAP_SYS_ADMIN"));
}

#[test]
fn sysusers_creates_the_xdpsec_user() {
    let root = Scratch::new("sysusers");
    std::fs::create_dir_all(root.0.join("etc")).unwrap();
    let out = Command::new(tool("systemd-sysusers"))
        .arg(format!("--root={}", root.0.display()))
        .arg(packaging().join("sysusers.d/xdpsec.conf"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "systemd-sysusers: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passwd = std::fs::read_to_string(root.0.join("etc/passwd")).unwrap();
    let group = std::fs::read_to_string(root.0.join("etc/group")).unwrap();
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("xdpsec:") && l.ends_with(":/usr/sbin/nologin")),
        "{passwd}"
    );
    assert!(group.lines().any(|l| l.starts_with("xdpsec:")), "{group}");
}

#[test]
fn the_packaged_configs_load() {
    let etc = packaging().join("etc");
    let dataplane = xdpsec_api::StaticConfig::load(etc.join("dataplane.toml")).unwrap();
    assert_eq!(
        dataplane.dataplane.api_socket_group.as_deref(),
        Some("xdpsec")
    );
    let ike_path = etc.join("ike.toml");
    let ike = xdpsec_control::config::IkeConfig::load(&ike_path).unwrap();
    let credentials = ike.load_credentials(&ike_path).unwrap();
    let ike = std::sync::Arc::new(ike);
    xdpsec_control::ike::Connection::all_from_config(&ike, &credentials).unwrap();
    assert_eq!(ike.daemon.api_socket, dataplane.dataplane.api_socket);
    assert!(
        ike.daemon.user.is_none(),
        "systemd starts it as xdpsec already"
    );
}

// The packaging code of `cargo xtask deb`, as it is: the xtask crate is a
// binary this test cannot link, and a nested cargo would wait on the build
// lock this test run holds.
#[allow(dead_code)]
#[path = "../../xtask/src/deb.rs"]
mod deb;

fn run(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{shown}: {e} (`cargo xtask setup` installs dpkg)"));
    assert!(
        out.status.success(),
        "{shown}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The package of this build's binary: what it lists, then installed with
/// `dpkg --root` into a scratch root (its own dpkg database; the postinst
/// runs chrootless with $DPKG_ROOT, the dependencies are not there), where
/// the binary runs, the pages and completions are there and the units
/// pass verify.
#[test]
fn the_package_lists_and_installs_into_a_scratch_root() {
    let scratch = Scratch::new("deb");
    let out = scratch.0.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let version = env!("CARGO_PKG_VERSION");
    let package = deb::build(&deb::Inputs {
        binary: Path::new(env!("CARGO_BIN_EXE_xdpsec")),
        workspace: Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap(),
        version,
        out_dir: &out,
        quick: true,
    })
    .unwrap();
    let arch = deb::architecture().unwrap();
    assert_eq!(
        package.file_name().unwrap().to_str().unwrap(),
        format!("xdpsec_{version}_{arch}.deb")
    );

    let info = run(Command::new(tool("dpkg-deb")).arg("--info").arg(&package));
    for line in [
        "Package: xdpsec".to_owned(),
        format!("Version: {version}"),
        format!("Architecture: {arch}"),
        "Depends: libc6, nftables".to_owned(),
    ] {
        assert!(info.lines().any(|l| l.trim() == line), "no {line}:\n{info}");
    }
    let conffiles = run(Command::new(tool("dpkg-deb"))
        .args(["--info"])
        .arg(&package)
        .arg("conffiles"));
    assert_eq!(conffiles.lines().collect::<Vec<_>>(), deb::CONFFILES);

    let contents = run(Command::new(tool("dpkg-deb"))
        .arg("--contents")
        .arg(&package));
    let listed: Vec<&str> = contents
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    let mut expected = vec![
        "./usr/bin/xdpsec",
        "./usr/lib/sysusers.d/xdpsec.conf",
        "./etc/xdpsec/dataplane.toml",
        "./etc/xdpsec/ike.toml",
        "./usr/share/man/man1/xdpsec.1.gz",
        "./usr/share/man/man1/xdpsec-dataplane.1.gz",
        "./usr/share/man/man1/xdpsec-ike.1.gz",
        "./usr/share/bash-completion/completions/xdpsec",
        "./usr/share/zsh/vendor-completions/_xdpsec",
        "./usr/share/fish/vendor_completions.d/xdpsec.fish",
        "./usr/share/doc/xdpsec/copyright",
        "./usr/share/doc/xdpsec/README.md",
    ];
    let units: Vec<String> = UNITS
        .iter()
        .map(|u| format!("./lib/systemd/system/{u}"))
        .collect();
    expected.extend(units.iter().map(String::as_str));
    for file in &expected {
        assert!(
            listed.contains(file),
            "{file} not in the package:\n{contents}"
        );
    }
    // Everything root's: the postinst gives /etc/xdpsec to the group.
    assert!(
        contents.lines().all(|l| l.contains(" root/root ")),
        "{contents}"
    );

    let root = scratch.0.join("root");
    let admin = root.join("var/lib/dpkg");
    for dir in ["info", "updates", "triggers"] {
        std::fs::create_dir_all(admin.join(dir)).unwrap();
    }
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(admin.join("status"), "").unwrap();
    run(Command::new(tool("dpkg"))
        .arg(format!("--root={}", root.display()))
        .arg(format!("--log={}", scratch.0.join("dpkg.log").display()))
        .args([
            "--force-depends",
            "--force-script-chrootless",
            "--force-not-root",
            "--install",
        ])
        .arg(&package));
    let status = std::fs::read_to_string(admin.join("status")).unwrap();
    assert!(
        status.contains("Package: xdpsec\nStatus: install ok installed\n"),
        "{status}"
    );

    let binary = root.join("usr/bin/xdpsec");
    let said = run(Command::new(&binary).arg("--version"));
    assert_eq!(said.trim(), format!("xdpsec {version}"));
    let page = run(Command::new(tool("gzip"))
        .arg("-dc")
        .arg(root.join("usr/share/man/man1/xdpsec-dataplane.1.gz")));
    assert!(page.contains(".TH xdpsec-dataplane"), "{page}");
    assert!(page.contains("config"), "{page}");
    for (file, word) in [
        ("usr/share/bash-completion/completions/xdpsec", "dataplane"),
        ("usr/share/zsh/vendor-completions/_xdpsec", "dataplane"),
        (
            "usr/share/fish/vendor_completions.d/xdpsec.fish",
            "dataplane",
        ),
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        assert!(text.contains(word), "{file}: {text}");
    }

    // The postinst made the user in the scratch root and gave it ike.toml
    // (the PSKs), and touched nothing outside.
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap();
    let gid: u32 = group
        .lines()
        .find_map(|l| l.strip_prefix("xdpsec:"))
        .and_then(|rest| rest.split(':').nth(1))
        .and_then(|g| g.parse().ok())
        .unwrap_or_else(|| panic!("no group xdpsec in the scratch root:\n{group}"));
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(root.join("etc/xdpsec/ike.toml")).unwrap();
        assert_eq!((meta.gid(), meta.mode() & 0o777), (gid, 0o640));
    }

    let installed: Vec<PathBuf> = UNITS
        .iter()
        .map(|u| root.join("lib/systemd/system").join(u))
        .collect();
    verify_units(&installed, &binary);
}

/// The data plane unit's capabilities are enough: both gateways of a
/// tunnel run `xdpsec dataplane` as uid 0 under setpriv with the unit's
/// `CapabilityBoundingSet=` as their bounding set (what systemd gives a
/// root service) and no new privileges, and pings cross the tunnel.
/// They also speak the notify protocol as systemd would see it, to a
/// socket this test binds (a path: an abstract name would stay in this
/// network namespace): READY=1 once serving, WATCHDOG=1 while running,
/// STOPPING=1 on SIGTERM.
/// Needs root and namespaces (the test bed makes and removes its own).
#[test]
fn the_dataplane_units_capabilities_carry_a_tunnel() {
    let unit =
        std::fs::read_to_string(packaging().join("systemd/xdpsec-dataplane.service")).unwrap();
    let caps: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit bounds its capabilities")
        .split_whitespace()
        .map(|c| format!("+{}", c.strip_prefix("CAP_").unwrap().to_ascii_lowercase()))
        .collect();
    let scratch = Scratch::new("caps");
    let notify_path = scratch.0.join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    // Read as systemd does, all along: the socket's queue holds only a few.
    let listener = {
        let notify = notify.try_clone().unwrap();
        std::thread::spawn(move || {
            notify
                .set_read_timeout(Some(std::time::Duration::from_secs(3)))
                .unwrap();
            let mut said = Vec::new();
            let mut buf = [0u8; 512];
            while let Ok(n) = notify.recv(&mut buf) {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                let stopping = message == "STOPPING=1";
                said.push(message);
                if stopping {
                    break;
                }
            }
            said
        })
    };
    let wrapper = scratch.0.join("xdpsec");
    // WATCHDOG_USEC of 0.4 s: a WATCHDOG=1 every 0.2 s.
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nNOTIFY_SOCKET={} WATCHDOG_USEC=400000 \
             exec setpriv --bounding-set=-all,{caps} --inh-caps=-all,{caps} \
             --ambient-caps=-all,{caps} --no-new-privs {} \"$@\"\n",
            notify_path.display(),
            env!("CARGO_BIN_EXE_xdpsec"),
            caps = caps.join(",")
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut bed = xdpsec_testbed::tunnel::TunnelBed::new(
        &wrapper,
        xdpsec_testbed::tunnel::TunnelOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    use xdpsec_testbed::tunnel::Side;
    for (from, to) in [(Side::A, Side::B), (Side::B, Side::A)] {
        let stats = bed
            .ping(from, to, false, 3)
            .unwrap_or_else(|e| panic!("ping: {e}\n{}", bed.logs()));
        assert!(
            stats.all_answered_once(),
            "{from} -> {to}: {}\n{}",
            stats.output,
            bed.logs()
        );
    }
    let status = bed
        .stop(Side::A)
        .unwrap_or_else(|e| panic!("{e}\n{}", bed.logs()));
    assert!(status.success(), "{status}\n{}", bed.logs());
    let said = listener.join().unwrap();
    let count = |f: &dyn Fn(&str) -> bool| said.iter().filter(|m| f(m)).count();
    assert_eq!(
        count(&|m| m.starts_with("READY=1\nSTATUS=1 worker(s)")),
        2,
        "{said:?}"
    );
    assert!(count(&|m| m == "WATCHDOG=1") >= 2, "{said:?}");
    assert_eq!(count(&|m| m == "STOPPING=1"), 1, "{said:?}");
}

/// `xdpsec ike` speaks the notify protocol: READY=1 once its sockets are
/// bound and the data plane (an SA API server in this process) answered,
/// WATCHDOG=1 while its loop runs, STOPPING=1 on SIGTERM. Unprivileged
/// ports in this namespace: no root needed.
#[test]
fn the_ike_daemon_notifies_ready_watchdog_and_stopping() {
    use std::sync::mpsc::sync_channel;
    use std::sync::Arc;
    use std::time::{Duration, Instant};
    use xdpsec_dataplane::api_server::{self, ApiShared};
    use xdpsec_dataplane::crypto::Backend;
    use xdpsec_dataplane::stats::WorkerStatsCell;
    use xdpsec_dataplane::tables::Tables;

    let scratch = Scratch::new("ike-notify");
    let api_socket = scratch.0.join("api.sock");
    let (_tx, rx) = sync_channel(1);
    let _api = api_server::spawn(
        &api_socket,
        ApiShared {
            tables: Arc::new(Tables::new(Backend::available()[0])),
            workers: (0..1).map(|w| WorkerStatsCell::new(w, None)).collect(),
            expiries: rx,
            on_change: Box::new(|_: &Tables| Ok(())),
        },
    )
    .unwrap();
    let config = scratch.0.join("ike.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\napi_socket = \"{}\"\ncontrol_socket = \"{}\"\nlisten = [\"127.0.0.1\"]\n\n\
             [connections.peer]\nlocal_addrs = [\"127.0.0.1\"]\nremote_addrs = [\"127.0.0.2\"]\n\
             [connections.peer.local]\nauth = \"psk\"\n\
             [connections.peer.remote]\nauth = \"psk\"\nid = \"127.0.0.2\"\n\
             [connections.peer.children.net]\nlocal_ts = [\"10.1.0.0/24\"]\n\
             remote_ts = [\"10.2.0.0/24\"]\n\n\
             [secrets.ike-peer]\nsecret = \"not a real secret\"\n",
            api_socket.display(),
            scratch.0.join("ike.sock").display()
        ),
    )
    .unwrap();
    let notify_path = scratch.0.join("notify");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // Ports of this run's own: tests of other runs may bind theirs.
    let port = 20000 + (std::process::id() % 20000) as u16;
    let child = Command::new(env!("CARGO_BIN_EXE_xdpsec"))
        .arg("ike")
        .arg("--config")
        .arg(&config)
        .arg("--state-file")
        .arg(scratch.0.join("ike.state"))
        .args(["--port", &port.to_string()])
        .args(["--port-nat-t", &(port + 1).to_string()])
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "400000")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = Vec::new();
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + Duration::from_secs(10);
    while said.iter().filter(|m| *m == "WATCHDOG=1").count() < 2 && Instant::now() < deadline {
        match notify.recv(&mut buf) {
            Ok(n) => said.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => break,
        }
    }
    run(Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string()));
    while !said.iter().any(|m| m == "STOPPING=1") {
        match notify.recv(&mut buf) {
            Ok(n) => said.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => break,
        }
    }
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{log}", out.status);
    assert!(
        said[0].starts_with("READY=1\nSTATUS=IKE on UDP "),
        "{said:?}\n{log}"
    );
    assert!(
        said.iter().filter(|m| *m == "WATCHDOG=1").count() >= 2,
        "{said:?}\n{log}"
    );
    assert_eq!(
        said.last().map(String::as_str),
        Some("STOPPING=1"),
        "{said:?}"
    );
}
