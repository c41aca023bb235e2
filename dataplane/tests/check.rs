//! `xdpsec check` (issue 14, item 3): the real binary on the shipped
//! example configs, in a network namespace this test creates with the
//! interfaces they name (`lan0`, `wan0`), and on configs broken in one
//! way each: a bad field, a missing interface, queues and workers that do
//! not fit, a tunnel interface whose name is taken, a group or user that
//! does not exist, an SA API socket the two configs disagree on.
//!
//! Exit statuses: 0 for good configs, 3 (config error) for the rest, 2
//! for a command line without a file.
//!
//! The namespace tests need root, iproute2, veth and util-linux's
//! `setpriv` (`cargo xtask setup`);
//! the namespaces are removed on drop, also when a test panics.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use xdpsec_testbed::{ChildOutput, Netns, Testbed};

const DATAPLANE_EXAMPLES: &[&str] = &[
    "dataplane/api/examples/static-tunnel.toml",
    "dataplane/api/examples/static-tunnel-b.toml",
    "dataplane/api/examples/ike-gateway.toml",
];
const IKE_GATEWAY: &str = "dataplane/api/examples/ike-gateway.toml";
const IKE_EXAMPLES: &[&str] = &["control/examples/ike.toml", "control/examples/ike-sun.toml"];

/// Generous: `check` reads a few files and /sys.
const TIMEOUT: Duration = Duration::from_secs(60);

/// What `xdpsec check` exits with on a config error.
const CONFIG_ERROR: i32 = 3;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("dataplane/ sits in the repository")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap()
}

/// A private directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "xdpsec-check-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// Writes `text` to `name` in the directory; its path.
    fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// `text` with `from` replaced, which must be there.
fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "{from:?} is not in the example");
    text.replacen(from, to, 1)
}

/// A gateway namespace with the examples' interfaces: `lan0` and, unless
/// `without_wan`, `wan0`, veths whose other ends are in a second
/// namespace; `queues` RX queues each.
struct Gateway {
    ns: Netns,
    _bed: Testbed,
}

impl Gateway {
    fn new(queues: u32, without_wan: bool) -> Gateway {
        let bed = Testbed::new().unwrap_or_else(|e| panic!("{e}"));
        let ns = bed.add_netns("gw").unwrap();
        let peer = bed.add_netns("peer").unwrap();
        bed.add_veth_with_queues(&ns, "lan0", &peer, "lan0p", queues)
            .unwrap();
        if !without_wan {
            bed.add_veth_with_queues(&ns, "wan0", &peer, "wan0p", queues)
                .unwrap();
        }
        Gateway { ns, _bed: bed }
    }

    /// `xdpsec check ARGS` in the gateway's namespace.
    fn check(&self, args: &[&Path]) -> ChildOutput {
        let mut argv: Vec<std::ffi::OsString> = vec![env!("CARGO_BIN_EXE_xdpsec").into()];
        argv.push("check".into());
        for (i, file) in args.iter().enumerate() {
            // One data-plane file, then an IKE file, as the callers pass them.
            argv.push(if i == 0 { "--dataplane" } else { "--ike" }.into());
            argv.push(file.as_os_str().to_owned());
        }
        self.ns
            .spawn(&argv)
            .and_then(|c| c.wait_timeout(TIMEOUT))
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

fn ok(out: &ChildOutput) {
    assert!(
        out.status.success(),
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
}

fn config_error(out: &ChildOutput) -> &str {
    assert_eq!(
        out.status.code(),
        Some(CONFIG_ERROR),
        "stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    &out.stderr
}

/// `xdpsec ARGS` in this (the test's) namespace, for what needs no
/// interface.
fn xdpsec(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_xdpsec"))
        .args(args)
        .output()
        .expect("run xdpsec")
}

#[test]
fn shipped_examples_pass_on_a_gateway_with_their_interfaces() {
    let gw = Gateway::new(1, false);
    for example in DATAPLANE_EXAMPLES {
        let file = repo(example);
        let out = gw.check(&[&file]);
        ok(&out);
        assert_eq!(out.stdout, format!("ok: {}\n", file.display()));
    }
    // Unprivileged (nobody, no capabilities): it only reads.
    let file = repo(DATAPLANE_EXAMPLES[0]);
    let out = gw
        .ns
        .spawn([
            "setpriv".as_ref(),
            "--reuid=65534".as_ref(),
            "--regid=65534".as_ref(),
            "--clear-groups".as_ref(),
            env!("CARGO_BIN_EXE_xdpsec").as_ref(),
            "check".as_ref(),
            "--dataplane".as_ref(),
            file.as_os_str(),
        ])
        .and_then(|c| c.wait_timeout(TIMEOUT))
        .unwrap_or_else(|e| panic!("{e}"));
    ok(&out);
    // Each IKE example with the data plane it runs on, as the README has it.
    for ike in IKE_EXAMPLES {
        let (dp, ike) = (repo(IKE_GATEWAY), repo(ike));
        let out = gw.check(&[&dp, &ike]);
        ok(&out);
        assert_eq!(
            out.stdout,
            format!("ok: {}\nok: {}\n", dp.display(), ike.display())
        );
    }
}

#[test]
fn an_ike_config_alone_needs_no_interface() {
    for ike in IKE_EXAMPLES {
        let file = repo(ike);
        let out = xdpsec(&["check", "--ike", file.to_str().unwrap()]);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("ok: {}\n", file.display())
        );
    }
}

#[test]
fn a_bad_field_is_named_with_its_file_and_exit_status_3() {
    let dir = TempDir::new("field");
    // The inbound SA's SPI is reserved (1-255).
    let dp = dir.file(
        "bad-dp.toml",
        &edit(
            &read("dataplane/api/examples/static-tunnel.toml"),
            "spi = 0x00002001",
            "spi = 7",
        ),
    );
    let ike = dir.file(
        "bad-ike.toml",
        &edit(
            &read("control/examples/ike.toml"),
            "cookie_threshold = 30",
            "cookie_threshold = \"thirty\"",
        ),
    );
    for (file, field) in [(&dp, "sa[1].spi"), (&ike, "daemon.cookie_threshold")] {
        let flag = if file == &dp { "--dataplane" } else { "--ike" };
        let out = xdpsec(&["check", flag, file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(CONFIG_ERROR), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("config {}: {field}: ", file.display())),
            "{err}"
        );
        assert!(out.stdout.is_empty(), "{out:?}");
    }
    // The data plane itself says the same, with the same status.
    let out = xdpsec(&["dataplane", "--config", dp.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(CONFIG_ERROR), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("sa[1].spi"));
    // A good file next to a bad one is still reported good.
    let good = repo(IKE_EXAMPLES[0]);
    let out = xdpsec(&[
        "check",
        "--dataplane",
        dp.to_str().unwrap(),
        "--ike",
        good.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(CONFIG_ERROR), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("ok: {}\n", good.display())
    );
}

#[test]
fn no_file_is_a_usage_error() {
    let out = xdpsec(&["check"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--dataplane") && err.contains("--ike"),
        "{err}"
    );
}

#[test]
fn a_missing_interface_is_named() {
    let gw = Gateway::new(1, true);
    let file = repo(DATAPLANE_EXAMPLES[0]);
    let out = gw.check(&[&file]);
    let err = config_error(&out);
    assert!(
        err.contains(&format!(
            "config {}: interface[1].name: no interface \"wan0\"",
            file.display()
        )),
        "{err}"
    );
    assert!(!err.contains("lan0"), "{err}");
    assert!(out.stdout.is_empty(), "{}", out.stdout);
}

#[test]
fn queues_and_workers_must_fit_the_interfaces() {
    let gw = Gateway::new(2, false);
    let dir = TempDir::new("queues");
    let example = read(IKE_GATEWAY);
    // Two queues each: two workers fit, and so does `queues = 2`.
    let fits = dir.file(
        "fits.toml",
        &edit(
            &edit(
                &example,
                "workers = 1\ncpus = [0]",
                "workers = 2\ncpus = []",
            ),
            "name = \"lan0\"\nrole = \"inside\"",
            "name = \"lan0\"\nrole = \"inside\"\nqueues = 2",
        ),
    );
    ok(&gw.check(&[&fits]));
    let wrong_count = dir.file(
        "queues.toml",
        &edit(
            &example,
            "name = \"wan0\"\nrole = \"outside\"",
            "name = \"wan0\"\nrole = \"outside\"\nqueues = 4",
        ),
    );
    let out = gw.check(&[&wrong_count]);
    let err = config_error(&out);
    assert!(
        err.contains("interface[1].queues: wan0 has 2 RX queue(s), the config says 4"),
        "{err}"
    );
    let too_many_workers = dir.file(
        "workers.toml",
        &edit(
            &example,
            "workers = 1\ncpus = [0]",
            "workers = 3\ncpus = []",
        ),
    );
    let out = gw.check(&[&too_many_workers]);
    let err = config_error(&out);
    for (i, name) in [(0, "lan0"), (1, "wan0")] {
        assert!(
            err.contains(&format!(
                "interface[{i}]: {name} has 2 queue(s) and 3 workers each need one"
            )),
            "{err}"
        );
    }
    // A tunnel interface is the data plane's to create.
    let tunnel = dir.file(
        "tunnel.toml",
        &format!("{example}\n[[interface]]\nname = \"xtun0\"\nrole = \"tunnel\"\n"),
    );
    ok(&gw.check(&[&tunnel]));
}

#[test]
fn the_sa_api_socket_must_be_the_same_in_both_configs() {
    let gw = Gateway::new(1, false);
    let dir = TempDir::new("socket");
    let dp = dir.file(
        "dp.toml",
        &edit(
            &read(IKE_GATEWAY),
            "api_socket = \"/run/xdpsec/api.sock\"",
            "api_socket = \"/run/xdpsec/dp.sock\"",
        ),
    );
    let ike = repo(IKE_EXAMPLES[0]);
    let out = gw.check(&[&dp, &ike]);
    let err = config_error(&out);
    assert!(
        err.contains(&format!(
            "config {}: daemon.api_socket: /run/xdpsec/api.sock is not the data plane's SA API \
             socket: {} has dataplane.api_socket = /run/xdpsec/dp.sock",
            ike.display(),
            dp.display()
        )),
        "{err}"
    );
    // Each file is good on its own.
    assert_eq!(out.stdout, format!("ok: {}\n", dp.display()));
    ok(&gw.check(&[&dp]));
}

#[test]
fn names_the_daemons_look_up_on_the_host_are_checked() {
    let gw = Gateway::new(1, false);
    let dir = TempDir::new("names");
    let dp = dir.file(
        "dp.toml",
        &format!(
            "{}\n[[interface]]\nname = \"lo\"\nrole = \"tunnel\"\n",
            edit(
                &read(IKE_GATEWAY),
                "state_dir =",
                "api_socket_group = \"xdpsec-no-such-group\"\nstate_dir =",
            )
        ),
    );
    // The IKE example with its certificate paths made absolute, so that
    // the copy here finds them.
    let examples = repo("control/examples");
    let mut ike = edit(
        &read(IKE_EXAMPLES[0]),
        "# user = \"xdpsec\"",
        "user = \"xdpsec-no-such-user\"",
    );
    for dir in ["x509/", "private/", "x509ca/"] {
        ike = ike.replace(
            &format!("\"{dir}"),
            &format!("\"{}/{dir}", examples.display()),
        );
    }
    let ike = dir.file("ike.toml", &ike);
    let out = gw.check(&[&dp, &ike]);
    let err = config_error(&out);
    for wanted in [
        format!(
            "config {}: dataplane.api_socket_group: no group \"xdpsec-no-such-group\"",
            dp.display()
        ),
        // A tunnel interface's name must be free (or a pair a data plane left).
        format!(
            "config {}: interface[2].name: interface lo exists and is not a tunnel pair",
            dp.display()
        ),
        format!(
            "config {}: daemon.user: no user \"xdpsec-no-such-user\"",
            ike.display()
        ),
    ] {
        assert!(err.contains(&wanted), "{wanted}\nin:\n{err}");
    }
}
