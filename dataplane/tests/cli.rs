//! The `xdpsec` binary against an SA API server spawned in the test.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use xdpsec_api::{sample_config, ApiClient, StaticConfig};
use xdpsec_dataplane::api_server::{self, ApiServer, ApiShared};
use xdpsec_dataplane::crypto::Backend;
use xdpsec_dataplane::stats::WorkerStatsCell;
use xdpsec_dataplane::tables::Tables;

/// A private directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "xdpsec-cli-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// A server with the sample config's SAs and policies and three workers.
fn server(socket: &Path) -> ApiServer {
    let tables = Arc::new(Tables::new(Backend::available()[0]));
    let workers: Arc<[WorkerStatsCell]> = (0..3)
        .map(|w| WorkerStatsCell::new(w, Some(w + 4)))
        .collect();
    let (_tx, rx) = sync_channel(1);
    let server = api_server::spawn(
        socket,
        ApiShared {
            tables,
            workers,
            expiries: rx,
            on_change: Box::new(|_: &Tables| Ok(())),
        },
    )
    .unwrap();
    let cfg = StaticConfig::parse(sample_config(), "static-tunnel.toml").unwrap();
    let mut c = ApiClient::connect(socket).unwrap();
    for sa in cfg.sas {
        c.add_sa(sa).unwrap();
    }
    for p in cfg.policies {
        c.add_policy(p).unwrap();
    }
    server
}

/// The exit statuses `xdpsec --help` documents.
const USAGE: i32 = 2;
const CONFIG_ERROR: i32 = 3;
const UNREACHABLE: i32 = 4;

fn xdpsec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xdpsec"))
        .args(args)
        .output()
        .expect("run xdpsec")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr_of_failure(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "expected a failure, stdout:\n{}",
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// Lines of a table whose first cell is `first`.
fn rows<'a>(text: &'a str, first: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| l.split_whitespace().next() == Some(first))
        .collect()
}

#[test]
fn sa_list_shows_a_row_per_sa() {
    let dir = TempDir::new("sa");
    let socket = dir.path("api.sock");
    let _server = server(&socket);
    let out = stdout(&xdpsec(&[
        "sa",
        "list",
        "--api-socket",
        socket.to_str().unwrap(),
    ]));
    let header = out.lines().next().unwrap();
    for column in ["DIR", "SPI", "CIPHER", "PACKETS", "DROPS", "IDLE"] {
        assert!(header.contains(column), "{header}");
    }
    let out_rows = rows(&out, "out");
    let in_rows = rows(&out, "in");
    assert_eq!((out_rows.len(), in_rows.len()), (1, 1), "{out}");
    assert!(out_rows[0].contains("0x00001001"), "{out}");
    assert!(out_rows[0].contains("aes-gcm-256"), "{out}");
    assert!(out_rows[0].contains("198.18.0.1 -> 198.18.0.2"), "{out}");
    assert!(in_rows[0].contains("0x00002001"), "{out}");
    assert!(in_rows[0].contains("aes-gcm-128"), "{out}");
    assert!(in_rows[0].contains("never used"), "{out}");
    assert!(!out.contains("c0ffee"), "a key was printed:\n{out}");
}

#[test]
fn sa_list_json_has_the_spis() {
    let dir = TempDir::new("json");
    let socket = dir.path("api.sock");
    let _server = server(&socket);
    let out = stdout(&xdpsec(&[
        "sa",
        "list",
        "--json",
        "--api-socket",
        socket.to_str().unwrap(),
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(v["status"], "sas");
    let mut spis: Vec<u64> = v["sas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|sa| sa["spi"].as_u64().unwrap())
        .collect();
    spis.sort_unstable();
    assert_eq!(spis, vec![0x1001, 0x2001]);
    assert!(!out.contains("c0ffee"), "a key was printed:\n{out}");
}

#[test]
fn status_shows_a_row_per_worker() {
    let dir = TempDir::new("status");
    let socket = dir.path("api.sock");
    let _server = server(&socket);
    let out = stdout(&xdpsec(&[
        "status",
        "--api-socket",
        socket.to_str().unwrap(),
    ]));
    for w in 0..3u32 {
        let r = rows(&out, &w.to_string());
        assert_eq!(r.len(), 1, "{out}");
        let cells: Vec<&str> = r[0].split_whitespace().collect();
        assert_eq!(cells[1], (w + 4).to_string(), "{out}");
    }
    assert_eq!(rows(&out, "total").len(), 1, "{out}");
    assert!(out.lines().next().unwrap().contains("P99.9"), "{out}");

    let json = stdout(&xdpsec(&[
        "status",
        "--json",
        "--api-socket",
        socket.to_str().unwrap(),
    ]));
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(v["workers"].as_array().unwrap().len(), 3);
}

#[test]
fn policy_list_shows_a_row_per_policy() {
    let dir = TempDir::new("policy");
    let socket = dir.path("api.sock");
    let _server = server(&socket);
    let out = stdout(&xdpsec(&[
        "policy",
        "list",
        "--api-socket",
        socket.to_str().unwrap(),
    ]));
    assert_eq!(rows(&out, "out").len(), 3, "{out}");
    assert_eq!(rows(&out, "in").len(), 2, "{out}");
    assert!(out.contains("10.2.99.0/24"), "{out}");
    assert!(out.contains("drop"), "{out}");
}

#[test]
fn missing_socket_names_the_path() {
    let dir = TempDir::new("nosock");
    let socket = dir.path("nobody-here.sock");
    for args in [
        &["sa", "list", "--api-socket"][..],
        &["status", "--api-socket"][..],
        &["policy", "list", "--json", "--api-socket"][..],
    ] {
        let mut args = args.to_vec();
        args.push(socket.to_str().unwrap());
        let o = xdpsec(&args);
        assert_eq!(o.status.code(), Some(UNREACHABLE), "{args:?}");
        let err = stderr_of_failure(&o);
        assert!(err.contains("nobody-here.sock"), "{err}");
        assert!(err.contains("not running"), "{err}");
    }
}

#[test]
fn an_unreachable_ike_daemon_exits_4() {
    let dir = TempDir::new("noike");
    let api = dir.path("api.sock");
    let _server = server(&api);
    let ike = dir.path("no-ike.sock");
    let ike = ike.to_str().unwrap();
    for args in [
        &["initiate", "gw", "--ike-socket", ike][..],
        &["rekey", "gw", "--ike", "--ike-socket", ike][..],
        &["terminate", "gw", "--ike-socket", ike][..],
        &[
            "sa",
            "list",
            "--api-socket",
            api.to_str().unwrap(),
            "--ike-socket",
            ike,
        ][..],
    ] {
        let o = xdpsec(args);
        assert_eq!(o.status.code(), Some(UNREACHABLE), "{args:?}: {o:?}");
        let err = stderr_of_failure(&o);
        assert!(err.contains("no-ike.sock"), "{err}");
    }
}

/// The flags' old spelling (`--socket`) still works, as a hidden alias.
#[test]
fn the_old_socket_flag_is_an_alias() {
    let dir = TempDir::new("alias");
    let socket = dir.path("api.sock");
    let _server = server(&socket);
    for args in [
        &["sa", "list", "--socket"][..],
        &["status", "--socket"][..],
        &["policy", "list", "--socket"][..],
    ] {
        let mut args = args.to_vec();
        args.push(socket.to_str().unwrap());
        stdout(&xdpsec(&args));
    }
    // `xdpsec ike --socket` was its control socket, now `--ike-socket`:
    // taken (no usage error), and the missing config is what fails.
    for flag in ["--socket", "--ike-socket"] {
        let o = xdpsec(&[
            "ike",
            "--config",
            "/nonexistent/ike.toml",
            flag,
            dir.path("ike.sock").to_str().unwrap(),
            "--api-socket",
            socket.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(CONFIG_ERROR), "{flag}: {o:?}");
        assert!(stderr_of_failure(&o).contains("/nonexistent/ike.toml"));
    }
    let help = stdout(&xdpsec(&["status", "--help"]));
    assert!(help.contains("--api-socket"), "{help}");
    assert!(!help.contains("--socket"), "{help}");
}

#[test]
fn help_lists_the_exit_statuses() {
    let help = stdout(&xdpsec(&["--help"]));
    for line in ["2  usage error", "3  config error", "4  daemon unreachable"] {
        assert!(help.contains(line), "{help}");
    }
}

#[test]
fn dataplane_with_missing_config_names_it() {
    let o = xdpsec(&["dataplane", "--config", "/nonexistent/xdpsec.toml"]);
    assert_eq!(o.status.code(), Some(CONFIG_ERROR));
    let err = stderr_of_failure(&o);
    assert!(err.contains("/nonexistent/xdpsec.toml"), "{err}");
}

#[test]
fn dataplane_with_bad_config_names_the_field() {
    let dir = TempDir::new("badcfg");
    let file = dir.path("bad.toml");
    // The second SA's SPI is reserved (1-255).
    let text = sample_config().replace("spi = 0x00002001", "spi = 7");
    assert_ne!(text, sample_config());
    std::fs::write(&file, text).unwrap();
    let o = xdpsec(&["dataplane", "--config", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(CONFIG_ERROR));
    let err = stderr_of_failure(&o);
    assert!(err.contains("bad.toml"), "{err}");
    assert!(err.contains("sa[1].spi"), "{err}");
}

#[test]
fn usage_errors_are_reported() {
    for (args, says) in [
        (&["sa"][..], "list"),
        (&["dataplane"][..], "--config"),
        (&["status", "--no-such-flag"][..], "--no-such-flag"),
    ] {
        let o = xdpsec(args);
        assert_eq!(o.status.code(), Some(USAGE), "{args:?}");
        let err = stderr_of_failure(&o);
        assert!(err.contains(says), "{err}");
    }
}
