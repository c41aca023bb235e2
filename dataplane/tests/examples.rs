//! The shipped examples run as shipped, and the README's gateway commands
//! run as written (issue 12, item 4).
//!
//! - `every_config_file_is_an_example_that_parses_and_runs`: every TOML
//!   file in the repository that is not build tooling is listed in
//!   [`EXAMPLES`], parses (an IKE config with its certificates and keys
//!   loaded), and is named by a README command that the tests below run.
//! - `readme_static_gateway_commands_carry_pings`: the `target/release/xdpsec`
//!   lines of the README's "Running a gateway" block, on the test bed's
//!   standard topology; host A pings host B over IPv4 and IPv6 through the
//!   static tunnel, and the SAs count those packets.
//! - `readme_ike_commands_negotiate_rekey_and_terminate`: the lines of
//!   "Running the IKE daemon": both data planes and both IKE daemons from
//!   the shipped files, then initiate, rekey, list and terminate, with
//!   pings through the tunnel and checks on `sa list` in between, and the
//!   certificate connection last.
//!
//! The README runs as written: same relative paths (from the repository
//! root), same sockets (`/run/xdpsec/...`), same state directory
//! (`/var/lib/xdpsec`), with `target/release/xdpsec` replaced by the
//! binary cargo built for this test. A block's comment lines that start
//! with `# on ` say where the following lines run: `both gateways`,
//! `gateway A` or `gateway B` (`either gateway` runs them on both). `xdpsec
//! dataplane` and `xdpsec ike` run in the background (until their socket
//! appears); every other command must exit 0.
//!
//! Two gateways on one machine would share `/run/xdpsec` and
//! `/var/lib/xdpsec`, so every process of a gateway runs as `ip netns exec
//! GW sh -c 'mount --bind DIR/run /run && mount --bind DIR/var-lib
//! /var/lib && exec ...'`: `ip netns exec` gives each process a mount
//! namespace of its own whose mounts do not propagate back, so the
//! gateway's data plane, IKE daemon and CLI see the same private
//! directories (under a temp directory of the test), and the host's `/run`
//! and `/var/lib` are never touched.
//!
//! Processes are ended by PID (SIGTERM, bounded, then SIGKILL) and the
//! namespaces and directories removed, also when a test panics.
//!
//! Needs root, iproute2, util-linux's `mount`, nftables and iputils' ping
//! (`cargo xtask setup`).

use serde_json::Value;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use xdpsec_api::StaticConfig;
use xdpsec_control::config::IkeConfig;
use xdpsec_testbed::tunnel::ping_from;
use xdpsec_testbed::{Netns, NsChild, StandardTopology, Testbed, TopologyOptions};

/// What a shipped config file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `xdpsec dataplane --config`.
    Dataplane,
    /// `xdpsec ike --config`.
    Ike,
}

/// Every config file the repository ships, from its root. A new one must
/// be added here, be named in a README block these tests run, and parse.
const EXAMPLES: &[(&str, Kind)] = &[
    ("dataplane/api/examples/static-tunnel.toml", Kind::Dataplane),
    (
        "dataplane/api/examples/static-tunnel-b.toml",
        Kind::Dataplane,
    ),
    ("dataplane/api/examples/ike-gateway.toml", Kind::Dataplane),
    ("control/examples/ike.toml", Kind::Ike),
    ("control/examples/ike-sun.toml", Kind::Ike),
];

/// The package's `/etc/xdpsec` configs: templates for a real machine's
/// interfaces and peers (group `xdpsec`, which the test bed's host lacks),
/// so no README block runs them; `tests/packaging.rs` loads them, and
/// they must parse here too.
const PACKAGED: &[(&str, Kind)] = &[
    ("dataplane/packaging/etc/dataplane.toml", Kind::Dataplane),
    ("dataplane/packaging/etc/ike.toml", Kind::Ike),
];

/// TOML files that configure the build, not xdpsec.
const TOOLING: &[&str] = &[
    "Cargo.toml",
    "config.toml", // .cargo/config.toml
    "rustfmt.toml",
    ".rustfmt.toml",
    "clippy.toml",
    "rust-toolchain.toml",
    "deny.toml",
];

/// The README sections whose code blocks the tests run.
const STATIC_SECTION: &str = "## Running a gateway";
const IKE_SECTION: &str = "## Running the IKE daemon";

/// Long enough for any one CLI command (`initiate` waits for the Child
/// SA); a daemon's socket must appear within it too.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Each test runs four data-plane workers pinned (as the examples say) to
/// CPU 0, two at a time is plenty.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("dataplane/ sits in the repository")
        .to_path_buf()
}

/// The TOML files of the repository: `git ls-files`, or (no git, or not
/// a checkout) every `*.toml` below the root outside `target/` and hidden
/// directories other than `.cargo`.
fn repository_toml_files(root: &Path) -> Vec<String> {
    let git = std::process::Command::new("git")
        .args(["ls-files", "-z", "--", "*.toml"])
        .current_dir(root)
        .output();
    if let Some(out) = git
        .ok()
        .filter(|o| o.status.success() && !o.stdout.is_empty())
    {
        return out
            .stdout
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
    }
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if name != "target" && (!name.starts_with('.') || name == ".cargo") {
                    dirs.push(path);
                }
            } else if name.ends_with(".toml") {
                let rel = path.strip_prefix(root).unwrap();
                found.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    found
}

#[test]
fn every_config_file_is_an_example_that_parses_and_runs() {
    let root = repo_root();
    let shipped: BTreeSet<String> = repository_toml_files(&root)
        .into_iter()
        .filter(|p| {
            let name = Path::new(p).file_name().unwrap().to_string_lossy();
            !TOOLING.contains(&name.as_ref())
        })
        .collect();
    let listed: BTreeSet<String> = EXAMPLES
        .iter()
        .chain(PACKAGED)
        .map(|(p, _)| p.to_string())
        .collect();
    assert_eq!(
        shipped, listed,
        "config files in the repository vs. EXAMPLES and PACKAGED in this test: add a new \
         file to EXAMPLES and to a README block the tests run"
    );
    for (path, kind) in PACKAGED {
        let file = root.join(path);
        match kind {
            Kind::Dataplane => {
                StaticConfig::load(&file).unwrap_or_else(|e| panic!("{e}"));
            }
            Kind::Ike => {
                let config = IkeConfig::load(&file).unwrap_or_else(|e| panic!("{e}"));
                config
                    .load_credentials(&file)
                    .unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }

    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut run_by_readme = Vec::new();
    for section in [STATIC_SECTION, IKE_SECTION] {
        for step in readme_steps(&readme, section) {
            if let Some(at) = step.args.iter().position(|a| a == "--config") {
                run_by_readme.push(step.args[at + 1].clone());
            }
        }
    }
    for (path, kind) in EXAMPLES {
        assert!(
            run_by_readme.iter().any(|p| p == path),
            "{path} is in no `--config` of the README blocks the tests run: {run_by_readme:?}"
        );
        let file = root.join(path);
        match kind {
            Kind::Dataplane => {
                let config = StaticConfig::load(&file).unwrap_or_else(|e| panic!("{e}"));
                assert!(!config.interfaces.is_empty(), "{path}: no [[interface]]");
            }
            Kind::Ike => {
                let config = IkeConfig::load(&file).unwrap_or_else(|e| panic!("{e}"));
                // The files they name exist, match their identities and
                // hold the keys that go with the certificates.
                let credentials = config
                    .load_credentials(&file)
                    .unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(credentials.len(), config.connections.len(), "{path}");
            }
        }
    }
    // A README line names a file that exists (a data-plane config that
    // nobody ships, say).
    for path in &run_by_readme {
        assert!(
            root.join(path).is_file(),
            "README names {path}, which does not exist"
        );
    }
}

/// One `target/release/xdpsec` line of a README block.
#[derive(Debug, Clone)]
struct Step {
    /// The gateways (0 = A, 1 = B) it runs on.
    gateways: Vec<usize>,
    /// Its arguments after the binary, comment stripped.
    args: Vec<String>,
}

impl Step {
    fn line(&self) -> String {
        format!("xdpsec {}", self.args.join(" "))
    }

    /// `dataplane` and `ike` run until stopped.
    fn is_daemon(&self) -> bool {
        matches!(
            self.args.first().map(String::as_str),
            Some("dataplane" | "ike")
        )
    }
}

/// The `target/release/xdpsec` lines of the first code block after the
/// heading `section`, with the gateways their `# on ...` comments name.
/// Panics on a line it does not know how to run, so that the README
/// cannot grow an untested command.
fn readme_steps(readme: &str, section: &str) -> Vec<Step> {
    let mut lines = readme
        .lines()
        .skip_while(|l| l.trim_end() != section)
        .skip(1)
        .skip_while(|l| !l.starts_with("```"));
    assert!(
        lines.next().is_some(),
        "README.md has no code block under {section:?}"
    );
    let mut on = vec![0];
    let mut steps = Vec::new();
    for line in lines.take_while(|l| !l.starts_with("```")) {
        let line = line.trim();
        if let Some(comment) = line.strip_prefix("# on ") {
            on = if comment.contains("both gateways") || comment.contains("either gateway") {
                vec![0, 1]
            } else if comment.contains("gateway A") {
                vec![0]
            } else if comment.contains("gateway B") {
                vec![1]
            } else {
                panic!("README {section}: which gateway is {line:?}?");
            };
        } else if let Some(command) = line.strip_prefix("target/release/xdpsec ") {
            let command = command.split(" #").next().unwrap_or_default();
            steps.push(Step {
                gateways: on.clone(),
                args: command.split_whitespace().map(str::to_string).collect(),
            });
        } else if !(line.is_empty() || line.starts_with('#') || line.starts_with("cargo build ")) {
            panic!("README {section}: the test does not know how to run {line:?}");
        }
    }
    assert!(!steps.is_empty(), "README {section}: no xdpsec command");
    steps
}

/// A process running in the background on a gateway.
#[derive(Debug)]
struct Daemon {
    line: String,
    log: PathBuf,
    child: Option<NsChild>,
}

/// One gateway: its namespace and its private `/run` and `/var/lib`.
#[derive(Debug)]
struct Gateway {
    name: &'static str,
    ns: Netns,
    run: PathBuf,
    var_lib: PathBuf,
    /// In start order.
    daemons: Vec<Daemon>,
}

impl Gateway {
    /// `ip netns exec GW` argv that runs `args` of the xdpsec binary from
    /// the repository root with this gateway's `/run` and `/var/lib`.
    fn argv(&self, args: &[String]) -> Vec<String> {
        const PRIVATE_DIRS: &str = "mount --bind \"$1\" /run && mount --bind \"$2\" /var/lib \
                                    && cd \"$3\" && shift 3 && exec \"$@\"";
        let mut argv: Vec<String> = vec![
            "sh".into(),
            "-c".into(),
            PRIVATE_DIRS.into(),
            "sh".into(),
            self.run.display().to_string(),
            self.var_lib.display().to_string(),
            repo_root().display().to_string(),
            env!("CARGO_BIN_EXE_xdpsec").into(),
        ];
        argv.extend(args.iter().cloned());
        argv
    }

    /// Where this gateway's `/run/...` path is on the host.
    fn host_path(&self, path: &Path) -> PathBuf {
        let rel = path
            .strip_prefix("/run")
            .unwrap_or_else(|_| panic!("{} is not under /run", path.display()));
        self.run.join(rel)
    }

    /// Everything the background processes logged so far.
    fn logs(&self) -> String {
        let mut out = String::new();
        for d in &self.daemons {
            let text = std::fs::read(&d.log)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_else(|e| format!("<cannot read {}: {e}>", d.log.display()));
            let _ = writeln!(out, "----- gateway {}: {} -----\n{text}", self.name, d.line);
        }
        out
    }
}

/// The standard topology with the gateways' private directories. Drop
/// stops every background process by PID (SIGTERM, last started first,
/// bounded; the test bed SIGKILLs what is left), then the test bed deletes
/// the namespaces, then the directories go.
struct Site {
    gateways: [Gateway; 2],
    topo: StandardTopology,
    testbed: Testbed,
    dir: PathBuf,
}

impl Site {
    fn new() -> Site {
        let testbed = Testbed::new().unwrap_or_else(|e| panic!("{e}"));
        // The underlay through a bridge, as in every other tunnel test.
        let topo = testbed
            .standard_topology_with(&TopologyOptions {
                queues: 1,
                underlay_tap: true,
            })
            .unwrap_or_else(|e| panic!("{e}"));
        let dir = std::env::temp_dir().join(format!("xdpsec-examples-{}", testbed.prefix()));
        std::fs::remove_dir_all(&dir).ok(); // left by a dead run with the same PID
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        }
        let gateway = |name: &'static str, ns: &Netns| {
            let run = dir.join(format!("gw{name}/run"));
            let var_lib = dir.join(format!("gw{name}/var-lib"));
            for d in [&run, &var_lib] {
                std::fs::create_dir_all(d).unwrap();
            }
            Gateway {
                name,
                ns: ns.clone(),
                run,
                var_lib,
                daemons: Vec::new(),
            }
        };
        let gateways = [gateway("A", &topo.gw_a.ns), gateway("B", &topo.gw_b.ns)];
        Site {
            gateways,
            topo,
            testbed,
            dir,
        }
    }

    fn logs(&self) -> String {
        self.gateways.iter().map(Gateway::logs).collect()
    }

    /// Runs `xdpsec ARGS` on gateway `gw` to completion; its stdout.
    /// Panics (with the logs) unless it exits 0 within the timeout.
    fn xdpsec(&self, gw: usize, args: &[String]) -> String {
        let g = &self.gateways[gw];
        let line = format!("xdpsec {}", args.join(" "));
        let out =
            g.ns.spawn(g.argv(args))
                .and_then(|child| child.wait_timeout(COMMAND_TIMEOUT))
                .unwrap_or_else(|e| panic!("gateway {}: {line}: {e}\n{}", g.name, self.logs()));
        assert!(
            out.status.success(),
            "gateway {}: {line}: {}\nstdout:\n{}\nstderr:\n{}\n{}",
            g.name,
            out.status,
            out.stdout,
            out.stderr,
            self.logs()
        );
        out.stdout
    }

    /// `xdpsec sa list --json` on gateway `gw`.
    fn sa_list(&self, gw: usize) -> Value {
        let out = self.xdpsec(gw, &["sa".into(), "list".into(), "--json".into()]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// Starts `xdpsec ARGS` (a daemon) on gateway `gw` and waits for its
    /// socket, read from the config it is given: the data plane's
    /// `api_socket`, the IKE daemon's `control_socket`.
    fn start_daemon(&mut self, gw: usize, args: &[String]) {
        let at = args.iter().position(|a| a == "--config").expect("--config");
        let config = repo_root().join(&args[at + 1]);
        let socket = match args[0].as_str() {
            "dataplane" => StaticConfig::load(&config).unwrap().dataplane.api_socket,
            _ => IkeConfig::load(&config).unwrap().daemon.control_socket,
        };
        let g = &mut self.gateways[gw];
        let socket = g.host_path(&socket);
        let n = g.daemons.len();
        let log = self.dir.join(format!("gw{}-{n}-{}.log", g.name, args[0]));
        let line = format!("xdpsec {}", args.join(" "));
        let child =
            g.ns.spawn_logged(g.argv(args), &log)
                .unwrap_or_else(|e| panic!("gateway {}: {line}: {e}", g.name));
        g.daemons.push(Daemon {
            line: line.clone(),
            log,
            child: Some(child),
        });
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            let g = &self.gateways[gw];
            let child = g.daemons[n].child.as_ref().expect("just started");
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "gateway {}: {line} exited ({status})\n{}",
                    g.name,
                    self.logs()
                );
            }
            if socket.exists() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "gateway {}: {line}: no {} after {COMMAND_TIMEOUT:?}\n{}",
                g.name,
                socket.display(),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether gateway `gw` runs a daemon whose command line starts with
    /// `xdpsec {what}`.
    fn runs(&self, gw: usize, what: &str) -> bool {
        let prefix = format!("xdpsec {what}");
        self.gateways[gw].daemons.iter().any(|d| {
            d.line.starts_with(&prefix)
                && d.child
                    .as_ref()
                    .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
        })
    }

    /// Runs the README block under `section`, calling `after` with each
    /// step and the gateway it ran on.
    fn run_readme(&mut self, section: &str, mut after: impl FnMut(&Site, &Step, usize)) {
        let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
        for step in readme_steps(&readme, section) {
            for &gw in &step.gateways {
                eprintln!("gateway {}: {}", self.gateways[gw].name, step.line());
                if step.is_daemon() {
                    self.start_daemon(gw, &step.args);
                } else {
                    let out = self.xdpsec(gw, &step.args);
                    eprintln!("{out}");
                }
                after(&*self, &step, gw);
            }
        }
    }

    /// `count` pings from host `from` (0 = A) to `dst`, each answered
    /// once.
    fn ping(&self, from: usize, dst: IpAddr, count: u16) {
        let host = if from == 0 {
            &self.topo.host_a
        } else {
            &self.topo.host_b
        };
        let stats = ping_from(&host.ns, dst, count).unwrap();
        assert!(
            stats.all_answered_once(),
            "ping {dst} from host {}: {}\n{}",
            self.gateways[from].name,
            stats.output,
            self.logs()
        );
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let mut daemons: Vec<Daemon> = self
            .gateways
            .iter_mut()
            .flat_map(|g| g.daemons.drain(..))
            .collect();
        // The IKE daemons first (SIGTERM deletes their IKE SAs, which
        // needs the data planes), then the data planes (SIGTERM detaches
        // XDP); each bounded, SIGKILL by NsChild's drop after that.
        daemons.sort_by_key(|d| !d.line.starts_with("xdpsec ike"));
        for mut d in daemons {
            if let Some(child) = d.child.take() {
                if child.terminate().is_ok() {
                    child.wait_timeout(Duration::from_secs(5)).ok();
                }
            }
        }
        self.testbed.kill_children();
        // The mounts lived in the processes' own mount namespaces, gone
        // with them.
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("could not remove {}: {e}", self.dir.display());
        }
    }
}

/// The packets counter of the SA `spi` (direction `direction`) in `sa
/// list --json`.
fn sa_packets(list: &Value, spi: u32, direction: &str) -> u64 {
    list.get("sas")
        .and_then(Value::as_array)
        .or_else(|| list.as_array())
        .and_then(|sas| {
            sas.iter().find(|sa| {
                sa["spi"].as_u64() == Some(u64::from(spi)) && sa["direction"] == direction
            })
        })
        .and_then(|sa| sa["counters"]["packets"].as_u64())
        .unwrap_or_else(|| panic!("no {direction} SA {spi:#x} with a packet counter in {list}"))
}

#[test]
fn readme_static_gateway_commands_carry_pings() {
    let _serial = serial();
    let mut site = Site::new();
    let (host_a, host_b) = (site.topo.host_a.eth.clone(), site.topo.host_b.eth.clone());
    const COUNT: u16 = 5;
    let mut pinged = false;
    let mut ran = BTreeSet::new();
    site.run_readme(STATIC_SECTION, |site, step, gw| {
        ran.insert((gw, step.line()));
        if !pinged && site.runs(0, "dataplane") && site.runs(1, "dataplane") {
            for (a, b) in [
                (IpAddr::from(host_a.ipv4), IpAddr::from(host_b.ipv4)),
                (host_a.ipv6.into(), host_b.ipv6.into()),
            ] {
                site.ping(0, b, COUNT);
                site.ping(1, a, COUNT);
            }
            pinged = true;
        }
    });
    assert!(
        pinged,
        "the README block never had both data planes running"
    );
    for line in ["xdpsec sa list", "xdpsec status"] {
        assert!(
            ran.iter().any(|(_, l)| l == line),
            "the README block has no `{line}`: {ran:?}"
        );
    }
    // Only the tunnel can carry them (the gateways have no route to the
    // far LAN): the example SAs counted 4 * COUNT echo requests and
    // replies each way.
    let expected = 4 * u64::from(COUNT);
    for (gw, out_spi, in_spi) in [(0, 0x1001, 0x2001), (1, 0x2001, 0x1001)] {
        let list = site.sa_list(gw);
        assert!(sa_packets(&list, out_spi, "out") >= expected, "{list}");
        assert!(sa_packets(&list, in_spi, "in") >= expected, "{list}");
    }
}

/// The installed children of connection `connection` in `sa list --json`
/// (its `ike_sas`).
fn children_of(list: &Value, connection: &str) -> Vec<Value> {
    list["ike_sas"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|ike| ike["connection"] == connection && ike["state"] == "established")
        .flat_map(|ike| ike["children"].as_array().cloned().unwrap_or_default())
        .filter(|c| c["state"] == "installed")
        .collect()
}

/// Waits (bounded) until `done` holds for the installed children of
/// `connection` on gateway `gw`; them.
fn wait_children(
    site: &Site,
    gw: usize,
    connection: &str,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let list = site.sa_list(gw);
        let children = children_of(&list, connection);
        if done(&children) {
            return children;
        }
        assert!(
            Instant::now() < deadline,
            "gateway {}: {connection}: {what}; sa list: {list}\n{}",
            site.gateways[gw].name,
            site.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn readme_ike_commands_negotiate_rekey_and_terminate() {
    let _serial = serial();
    let mut site = Site::new();
    let host_b = IpAddr::from(site.topo.host_b.eth.ipv4);
    let host_a = IpAddr::from(site.topo.host_a.eth.ipv4);
    const COUNT: u16 = 4;
    // sun-psk's child as moon holds it before the rekey.
    let mut before_rekey = Vec::new();
    let mut checked = BTreeSet::new();
    site.run_readme(IKE_SECTION, |site, step, gw| {
        let line = step.line();
        match (gw, line.as_str()) {
            (0, "xdpsec initiate sun-psk") => {
                // `initiate` returned with the child up; sun holds it too,
                // mirrored.
                let mine = wait_children(site, 0, "sun-psk", "one child", |c| c.len() == 1);
                let theirs = wait_children(site, 1, "moon-psk", "one child", |c| c.len() == 1);
                assert_eq!(
                    (&mine[0]["spi_in"], &mine[0]["spi_out"]),
                    (&theirs[0]["spi_out"], &theirs[0]["spi_in"]),
                    "moon's inbound SPI is sun's outbound one and back"
                );
                // No NAT and no `encap` on this connection: plain ESP.
                assert_eq!(mine[0]["udp_encap"], false, "{}", mine[0]);
                site.ping(0, host_b, COUNT);
                site.ping(1, host_a, COUNT);
                before_rekey = mine;
            }
            (0, "xdpsec rekey sun-psk --child") => {
                let old = &before_rekey[0];
                wait_children(site, 0, "sun-psk", "a new child replacing the old", |c| {
                    c.len() == 1
                        && c[0]["spi_in"] != old["spi_in"]
                        && c[0]["spi_out"] != old["spi_out"]
                });
                site.ping(0, host_b, COUNT);
                site.ping(1, host_a, COUNT);
            }
            (0, "xdpsec terminate sun-psk") => {
                wait_children(site, 0, "sun-psk", "gone", <[_]>::is_empty);
                wait_children(site, 1, "moon-psk", "gone", <[_]>::is_empty);
            }
            (0, "xdpsec initiate sun-cert") => {
                // The example certificates authenticate both sides, and
                // `encap = true` puts ESP into UDP without a NAT.
                let mine = wait_children(site, 0, "sun-cert", "child web", |c| c.len() == 1);
                let theirs = wait_children(site, 1, "moon-cert", "child web", |c| c.len() == 1);
                for child in [&mine[0], &theirs[0]] {
                    assert_eq!(child["name"], "web", "{child}");
                    assert_eq!(child["udp_encap"], true, "{child}");
                }
            }
            _ => return,
        }
        checked.insert(line);
    });
    let expected: BTreeSet<String> = [
        "xdpsec initiate sun-psk",
        "xdpsec rekey sun-psk --child",
        "xdpsec terminate sun-psk",
        "xdpsec initiate sun-cert",
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    assert_eq!(
        checked, expected,
        "the README block should run these on gateway A (moon)"
    );
}
