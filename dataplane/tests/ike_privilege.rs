//! `xdpsec ike` needs no CAP_BPF and no CAP_NET_ADMIN: it runs with
//! CAP_NET_BIND_SERVICE alone (for UDP 500) and access to the SA API
//! socket, and without that capability it says which one it lacks. The
//! real binary runs under setpriv (util-linux) as uid 0 with every other
//! capability removed from its bounding set, in a namespace of its own,
//! against an SA API server in this process.

use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::time::{Duration, Instant};
use xdpsec_dataplane::api_server::{self, ApiServer, ApiShared};
use xdpsec_dataplane::crypto::Backend;
use xdpsec_dataplane::stats::WorkerStatsCell;
use xdpsec_dataplane::tables::Tables;
use xdpsec_testbed::Testbed;

const CAP_NET_BIND_SERVICE: u32 = 10;
const CAP_NET_ADMIN: u32 = 12;
const CAP_BPF: u32 = 39;

struct Files {
    dir: PathBuf,
}

impl Drop for Files {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

fn api(socket: &Path) -> ApiServer {
    let tables = Arc::new(Tables::new(Backend::available()[0]));
    let workers: Arc<[WorkerStatsCell]> = (0..1).map(|w| WorkerStatsCell::new(w, None)).collect();
    let (_tx, rx) = sync_channel(1);
    api_server::spawn(
        socket,
        ApiShared {
            tables,
            workers,
            expiries: rx,
            on_change: Box::new(|_: &Tables| Ok(())),
        },
    )
    .unwrap()
}

fn setup(tag: &str) -> (Files, PathBuf, PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("xdpsec-ike-priv-{tag}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("ike.toml");
    let ctl = dir.join("ike.sock");
    std::fs::write(
        &config,
        format!(
            "[daemon]\napi_socket = \"{}/api.sock\"\ncontrol_socket = \"{}\"\n\n\
             [connections.peer]\nlocal_addrs = [\"198.18.0.1\"]\nremote_addrs = [\"198.18.0.2\"]\n\
             [connections.peer.local]\nauth = \"psk\"\n\
             [connections.peer.remote]\nauth = \"psk\"\nid = \"198.18.0.2\"\n\
             [connections.peer.children.net]\nlocal_ts = [\"10.1.0.0/24\"]\n\
             remote_ts = [\"10.2.0.0/24\"]\n\n\
             [secrets.ike-peer]\nsecret = \"not a real secret\"\n",
            dir.display(),
            ctl.display()
        ),
    )
    .unwrap();
    let state = dir.join("ike.state");
    (Files { dir }, config, ctl, state)
}

/// The capability bits of `pid` (`CapEff` of /proc/PID/status).
fn effective_caps(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("CapEff:"))
        .expect("CapEff line");
    u64::from_str_radix(line["CapEff:".len()..].trim(), 16).unwrap()
}

#[test]
fn ike_daemon_runs_with_cap_net_bind_service_alone() {
    let (files, config, ctl, state) = setup("ok");
    let _api = api(&files.dir.join("api.sock"));
    let tb = Testbed::new().unwrap();
    let ns = tb.add_netns("ike").unwrap();
    let child = ns
        .spawn([
            "setpriv".as_ref(),
            "--bounding-set=-all,+net_bind_service".as_ref(),
            "--inh-caps=-all".as_ref(),
            Path::new(env!("CARGO_BIN_EXE_xdpsec")).as_os_str(),
            "ike".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            "--state-file".as_ref(),
            state.as_os_str(),
        ])
        .expect("setpriv runs (util-linux)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ctl.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("xdpsec ike exited ({status}):\n{}", child.stderr_so_far());
        }
        assert!(
            Instant::now() < deadline,
            "no control socket:\n{}",
            child.stderr_so_far()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let caps = effective_caps(child.pid());
    assert_eq!(caps, 1 << CAP_NET_BIND_SERVICE, "CapEff {caps:#x}");
    assert_eq!(caps & (1 << CAP_BPF | 1 << CAP_NET_ADMIN), 0);

    let listening = ns.run(["ss", "-Hlun"]).unwrap();
    for port in [":500 ", ":4500 "] {
        assert!(listening.contains(port), "UDP{port}not bound:\n{listening}");
    }
    let list = ns
        .run([
            env!("CARGO_BIN_EXE_xdpsec"),
            "sa",
            "list",
            "--json",
            "--api-socket",
            files.dir.join("api.sock").to_str().unwrap(),
            "--ike-socket",
            ctl.to_str().unwrap(),
        ])
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(v["ike_sas"], serde_json::json!([]), "{list}");

    // The CLI's answers without a peer to talk to.
    let cli = |args: &[&str]| {
        let mut argv = vec![env!("CARGO_BIN_EXE_xdpsec")];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["--ike-socket", ctl.to_str().unwrap()]);
        ns.run(&argv).map_err(|e| e.to_string())
    };
    let err = cli(&["initiate", "nosuch"]).unwrap_err();
    assert!(err.contains("no connection named \"nosuch\""), "{err}");
    let err = cli(&["rekey", "peer", "--ike"]).unwrap_err();
    assert!(err.contains("no established IKE SA"), "{err}");
    let out = cli(&["terminate", "peer"]).unwrap();
    assert!(out.contains("has no IKE SA"), "{out}");

    child.terminate().unwrap();
    let out = child.wait_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        out.status.success(),
        "SIGTERM ends it cleanly:\n{}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

#[test]
fn ike_daemon_without_cap_net_bind_service_names_it() {
    let (files, config, _ctl, state) = setup("nocap");
    let _api = api(&files.dir.join("api.sock"));
    let tb = Testbed::new().unwrap();
    let ns = tb.add_netns("ike").unwrap();
    let child = ns
        .spawn([
            "setpriv".as_ref(),
            "--bounding-set=-all".as_ref(),
            "--inh-caps=-all".as_ref(),
            Path::new(env!("CARGO_BIN_EXE_xdpsec")).as_os_str(),
            "ike".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            "--state-file".as_ref(),
            state.as_os_str(),
        ])
        .expect("setpriv runs (util-linux)");
    let out = child.wait_timeout(Duration::from_secs(20)).unwrap();
    assert!(!out.status.success(), "it must fail:\n{}", out.stderr);
    assert!(
        out.stderr.contains("CAP_NET_BIND_SERVICE"),
        "the error names the capability:\n{}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}
