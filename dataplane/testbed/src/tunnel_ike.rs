//! IKE mode of [`TunnelBed`]: the data planes start with no SA and no
//! policy, and each gateway runs `xdpsec ike` with a generated config (one
//! connection `tunnel`, one child `net`) that puts the tunnel up, with a
//! pre-shared key or ECDSA certificates from a CA the bed makes with
//! strongSwan's `pki`.
//!
//! Each IKE daemon gets its own control socket, state file and log in the
//! bed's directory; it runs as root in its gateway's namespace and is
//! stopped (SIGTERM, by PID) before the data planes when the bed drops.

use super::{sys, Encapsulation, GatewayKind, Side, TunnelBed};
use crate::strongswan::{StartAction, StrongswanConfig, SwanAuth};
use crate::{Error, NsChild, Result};
use serde_json::Value;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The connection's name in the generated configs.
pub const CONNECTION: &str = "tunnel";
/// The child's name in the generated configs.
pub const CHILD: &str = "net";

/// How the gateways authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IkeAuth {
    /// A pre-shared key; identities are the underlay addresses.
    Psk,
    /// ECDSA P-256 certificates issued by a CA the bed creates; identities
    /// are the FQDNs `gwa.xdpsec.test` / `gwb.xdpsec.test` (subjectAltName).
    Ecdsa,
}

/// The certificates of an [`IkeAuth::Ecdsa`] bed, PEM files in its
/// directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pki {
    /// The CA certificate both sides trust.
    pub ca_cert: PathBuf,
    /// Each gateway's certificate (A, B).
    pub certs: [PathBuf; 2],
    /// Each gateway's private key (A, B).
    pub keys: [PathBuf; 2],
}

/// What [`TunnelBed`] puts into the IKE configs
/// ([`super::TunnelOptions::ike`]).
#[derive(Debug, Clone)]
pub struct IkeOptions {
    /// PSK or certificates.
    pub auth: IkeAuth,
    /// Filled in by the bed with [`IkeAuth::Ecdsa`].
    pub pki: Option<Pki>,
    /// The child's `rekey_bytes` (its `life_bytes` is 20 times that): the
    /// data plane counts and reports, the IKE daemon rekeys.
    pub child_rekey_bytes: Option<u64>,
    /// IKE proposals, strongSwan notation (`aes128gcm16-prfsha256-x25519`).
    pub proposals: Vec<String>,
    /// ESP proposals (`aes128gcm16`).
    pub esp_proposals: Vec<String>,
    /// The pre-shared key of each xdpsec side; `None`: the bed's random
    /// key, which a strongSwan side uses too.
    pub psk: [Option<String>; 2],
    /// The side that initiates once both are up (an xdpsec side with
    /// `start_action = "start"`, a strongSwan side with `swanctl
    /// --initiate`); `None`: nobody, a test does.
    pub initiator: Option<Side>,
    /// Child SA `rekey_time` (`None`: never on time).
    pub child_rekey_time: Option<Duration>,
    /// IKE SA `rekey_time` (`None`: never on time).
    pub ike_rekey_time: Option<Duration>,
    /// Override the IKE proposals of a side.
    pub proposals_override: [Option<Vec<String>>; 2],
    /// Override the traffic selectors of a side: (local_ts, remote_ts).
    pub ts_override: [Option<(Vec<String>, Vec<String>)>; 2],
    /// Wait (bounded by `start_timeout`) until both sides show an
    /// installed child, when there is an initiator.
    pub wait_for_tunnel: bool,
    /// Extra arguments of `xdpsec ike` (e.g. a log filter).
    pub extra_args: Vec<String>,
    /// Run each xdpsec IKE daemon as this (user, group) once its sockets
    /// are open (`[daemon] user`/`group`): the data planes then open their
    /// API socket to the group (`api_socket_group`), the bed's directory
    /// is enterable by others (0711, not listable), and each daemon keeps
    /// its state in a directory of its own that it creates.
    pub run_as: Option<(String, String)>,
    /// `per_resource_sas` (RFC 9611) of each xdpsec side's connection;
    /// `None`: the daemon's default.
    pub per_resource_sas: [Option<bool>; 2],
}

impl Default for IkeOptions {
    fn default() -> Self {
        IkeOptions {
            auth: IkeAuth::Psk,
            pki: None,
            child_rekey_bytes: None,
            proposals: vec!["aes128gcm16-prfsha256-x25519".into()],
            esp_proposals: vec!["aes128gcm16".into()],
            psk: [None, None],
            initiator: Some(Side::A),
            child_rekey_time: None,
            ike_rekey_time: None,
            proposals_override: [None, None],
            ts_override: [None, None],
            wait_for_tunnel: true,
            extra_args: Vec::new(),
            run_as: None,
            per_resource_sas: [None, None],
        }
    }
}

/// One `xdpsec ike` process and its files.
#[derive(Debug)]
pub(super) struct IkeDaemon {
    pub(super) config: PathBuf,
    pub(super) socket: PathBuf,
    pub(super) state: PathBuf,
    pub(super) log: PathBuf,
    pub(super) child: Option<NsChild>,
}

/// The traffic selectors of `side` for the carried families: (own LAN,
/// far LAN).
fn default_ts(ipv4: bool, ipv6: bool, side: Side) -> (Vec<String>, Vec<String>) {
    let (own, far) = match side {
        Side::A => (
            ("10.1.0.0/24", "fd00:1::/64"),
            ("10.2.0.0/24", "fd00:2::/64"),
        ),
        Side::B => (
            ("10.2.0.0/24", "fd00:2::/64"),
            ("10.1.0.0/24", "fd00:1::/64"),
        ),
    };
    let (mut local, mut remote) = (Vec::new(), Vec::new());
    if ipv4 {
        local.push(own.0.to_string());
        remote.push(far.0.to_string());
    }
    if ipv6 {
        local.push(own.1.to_string());
        remote.push(far.1.to_string());
    }
    (local, remote)
}

/// The identity of `side` with certificates.
pub fn cert_identity(side: Side) -> String {
    format!("{}.xdpsec.test", side.gateway_name().to_ascii_lowercase())
}

/// Runs strongSwan's `pki` with `args`; its stdout goes to `out`.
fn pki(args: &[&str], out: &Path) -> Result<()> {
    let cmd = format!("pki {}", args.join(" "));
    let output = std::process::Command::new("pki")
        .args(args)
        .output()
        .map_err(|source| Error::Spawn {
            cmd: cmd.clone(),
            source,
        })?;
    if !output.status.success() {
        return Err(Error::Command {
            cmd,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    std::fs::write(out, &output.stdout).map_err(sys(format!("write {}", out.display())))
}

/// With [`IkeAuth::Ecdsa`]: a CA and one certificate per gateway under
/// `dir/pki` (ECDSA P-256, subjectAltName = the gateway's FQDN), recorded in
/// `ike.pki` so that both the xdpsec and the strongSwan configs use them.
pub(super) fn prepare_pki(ike: &mut IkeOptions, dir: &Path) -> Result<()> {
    if ike.auth != IkeAuth::Ecdsa {
        return Ok(());
    }
    let pki_dir = dir.join("pki");
    std::fs::create_dir_all(&pki_dir).map_err(sys(format!("create {}", pki_dir.display())))?;
    let path = |name: &str| pki_dir.join(name);
    let text = |p: &PathBuf| p.to_string_lossy().into_owned();
    let (ca_key, ca_cert) = (path("ca.key"), path("ca.crt"));
    pki(
        &[
            "--gen",
            "--type",
            "ecdsa",
            "--size",
            "256",
            "--outform",
            "pem",
        ],
        &ca_key,
    )?;
    pki(
        &[
            "--self",
            "--ca",
            "--lifetime",
            "30",
            "--in",
            &text(&ca_key),
            "--type",
            "ecdsa",
            "--dn",
            "C=CH, O=xdpsec test bed, CN=xdpsec test CA",
            "--outform",
            "pem",
        ],
        &ca_cert,
    )?;
    let mut certs = Vec::new();
    let mut keys = Vec::new();
    for side in Side::BOTH {
        let name = side.gateway_name();
        let (key, public, cert) = (
            path(&format!("{name}.key")),
            path(&format!("{name}.pub")),
            path(&format!("{name}.crt")),
        );
        pki(
            &[
                "--gen",
                "--type",
                "ecdsa",
                "--size",
                "256",
                "--outform",
                "pem",
            ],
            &key,
        )?;
        pki(
            &[
                "--pub",
                "--in",
                &text(&key),
                "--type",
                "ecdsa",
                "--outform",
                "pem",
            ],
            &public,
        )?;
        let fqdn = cert_identity(side);
        pki(
            &[
                "--issue",
                "--lifetime",
                "30",
                "--in",
                &text(&public),
                "--type",
                "pub",
                "--cacert",
                &text(&ca_cert),
                "--cakey",
                &text(&ca_key),
                "--dn",
                &format!("C=CH, O=xdpsec test bed, CN={fqdn}"),
                "--san",
                &fqdn,
                "--flag",
                "serverAuth",
                "--outform",
                "pem",
            ],
            &cert,
        )?;
        certs.push(cert);
        keys.push(key);
    }
    let pair = |v: Vec<PathBuf>| -> [PathBuf; 2] { [v[0].clone(), v[1].clone()] };
    ike.pki = Some(Pki {
        ca_cert,
        certs: pair(certs),
        keys: pair(keys),
    });
    Ok(())
}

/// Puts the IKE options into the charon config of a strongSwan side, so
/// that both ends of an interop test are configured alike.
pub(super) fn adapt_strongswan(config: &mut StrongswanConfig, ike: &IkeOptions, side: Side) {
    if let Some(pki) = &ike.pki {
        config.auth = SwanAuth::Pubkey {
            cert: pki.certs[side.index()].clone(),
            key: pki.keys[side.index()].clone(),
            cacert: pki.ca_cert.clone(),
        };
        config.local_id = cert_identity(side);
        config.remote_id = cert_identity(side.other());
    }
    config.ike_proposals = ike.proposals_override[side.index()]
        .clone()
        .unwrap_or_else(|| ike.proposals.clone());
    if ike.ike_rekey_time.is_some() {
        config.rekey_time = ike.ike_rekey_time;
    }
    for child in &mut config.children {
        child.esp_proposals = ike.esp_proposals.clone();
        child.start_action = StartAction::None;
        if ike.child_rekey_time.is_some() {
            child.rekey_time = ike.child_rekey_time;
        }
        if let Some((l, r)) = &ike.ts_override[side.index()] {
            child.local_ts = l.clone();
            child.remote_ts = r.clone();
        }
    }
}

fn quoted(items: &[String]) -> String {
    items
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn duration(d: Option<Duration>) -> String {
    // "0s" switches rekeying off, as in strongSwan.
    format!("\"{}s\"", d.map_or(0, |d| d.as_secs().max(1)))
}

impl TunnelBed {
    pub(super) fn ike_daemons(dir: &Path, own_state_dir: bool) -> [IkeDaemon; 2] {
        Side::BOTH.map(|side| {
            let name = side.gateway_name();
            IkeDaemon {
                config: dir.join(format!("{name}-ike.toml")),
                socket: dir.join(format!("{name}-ike.sock")),
                state: if own_state_dir {
                    dir.join(format!("{name}-ike")).join("ike.state")
                } else {
                    dir.join(format!("{name}-ike.state"))
                },
                log: dir.join(format!("{name}-ike.log")),
                child: None,
            }
        })
    }

    /// The generated `xdpsec ike` config of `side`. Identities are the
    /// gateways' underlay addresses, as strongSwan's default.
    pub(super) fn ike_config(&self, side: Side, ike: &IkeOptions, psk: &str) -> String {
        let gw = self.gateway(side);
        let peer = self.gateway(side.other());
        let (mut local_ts, mut remote_ts) = default_ts(self.options.ipv4, self.options.ipv6, side);
        if let Some((l, r)) = &ike.ts_override[side.index()] {
            local_ts = l.clone();
            remote_ts = r.clone();
        }
        let daemon = &self.ike[side.index()];
        let start = if ike.initiator == Some(side) {
            "start"
        } else {
            "none"
        };
        let proposals = ike.proposals_override[side.index()]
            .as_ref()
            .unwrap_or(&ike.proposals);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# xdpsec test bed: {side}'s IKE daemon (generated)\n\n\
             [daemon]\n\
             api_socket = \"{}\"\n\
             control_socket = \"{}\"\n\
             {}\n\
             [connections.{CONNECTION}]\n\
             local_addrs = [\"{}\"]\n\
             remote_addrs = [\"{}\"]\n\
             proposals = [{}]\n\
             encap = {}\n\
             rekey_time = {}\n\
             {}",
            self.api_socket(side).display(),
            daemon.socket.display(),
            ike.run_as
                .as_ref()
                .map_or(String::new(), |(user, group)| format!(
                    "user = {user:?}\ngroup = {group:?}\n"
                )),
            gw.wan.ipv4,
            peer.wan.ipv4,
            quoted(proposals),
            self.options.encap == Encapsulation::Udp,
            duration(ike.ike_rekey_time),
            ike.per_resource_sas[side.index()]
                .map_or(String::new(), |on| format!("per_resource_sas = {on}\n")),
        );
        match &ike.pki {
            Some(pki) => {
                let _ = writeln!(
                    s,
                    "[connections.{CONNECTION}.local]\n\
                     auth = \"pubkey\"\n\
                     id = \"{}\"\n\
                     certs = [\"{}\"]\n\
                     key = \"{}\"\n\n\
                     [connections.{CONNECTION}.remote]\n\
                     auth = \"pubkey\"\n\
                     id = \"{}\"\n\
                     cacerts = [\"{}\"]\n",
                    cert_identity(side),
                    pki.certs[side.index()].display(),
                    pki.keys[side.index()].display(),
                    cert_identity(side.other()),
                    pki.ca_cert.display(),
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "[connections.{CONNECTION}.local]\n\
                     auth = \"psk\"\n\
                     id = \"{}\"\n\n\
                     [connections.{CONNECTION}.remote]\n\
                     auth = \"psk\"\n\
                     id = \"{}\"\n\n\
                     [secrets.ike-{CONNECTION}]\n\
                     id = [\"{}\", \"{}\"]\n\
                     secret = {:?}\n",
                    gw.wan.ipv4,
                    peer.wan.ipv4,
                    gw.wan.ipv4,
                    peer.wan.ipv4,
                    ike.psk[side.index()].as_deref().unwrap_or(psk),
                );
            }
        }
        let _ = writeln!(
            s,
            "[connections.{CONNECTION}.children.{CHILD}]\n\
             local_ts = [{}]\n\
             remote_ts = [{}]\n\
             esp_proposals = [{}]\n\
             start_action = \"{start}\"\n\
             rekey_time = {}",
            quoted(&local_ts),
            quoted(&remote_ts),
            quoted(&ike.esp_proposals),
            duration(ike.child_rekey_time),
        );
        if let Some(bytes) = ike.child_rekey_bytes {
            let _ = writeln!(
                s,
                "rekey_bytes = {bytes}\nlife_bytes = {}",
                bytes.saturating_mul(20)
            );
        }
        s
    }

    /// Writes the IKE configs of the xdpsec sides and starts their daemons
    /// (the responder first), waits for their control sockets, has a
    /// strongSwan initiator initiate, and with an initiator waits for the
    /// tunnel.
    pub(super) fn start_ike(&mut self, psk: &str) -> Result<()> {
        let Some(ike) = self.options.ike.clone() else {
            return Ok(());
        };
        let order = match ike.initiator {
            Some(side) => [side.other(), side],
            None => Side::BOTH,
        };
        let xdpsec_sides: Vec<Side> = order
            .into_iter()
            .filter(|&s| self.kind(s) == GatewayKind::Xdpsec)
            .collect();
        for &side in &xdpsec_sides {
            let text = self.ike_config(side, &ike, psk);
            let path = &self.ike[side.index()].config;
            std::fs::write(path, text).map_err(sys(format!("write {}", path.display())))?;
        }
        for &side in &xdpsec_sides {
            self.ike_start(side)?;
            self.wait_for_ike_socket(side)?;
        }
        let Some(initiator) = ike.initiator else {
            return Ok(());
        };
        if let Some(charon) = self.charon(initiator) {
            charon.initiate_child(super::STRONGSWAN_CHILD)?;
        }
        if ike.wait_for_tunnel {
            for side in Side::BOTH {
                match self.charon(side) {
                    Some(charon) => {
                        charon.wait_child_installed(
                            super::STRONGSWAN_CHILD,
                            self.options.start_timeout,
                        )?;
                    }
                    None => {
                        self.wait_for_child(side, self.options.start_timeout)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Starts `xdpsec ike` on `side` (again, after a stop or kill); does
    /// not wait for its control socket. The state file is kept, so a
    /// restarted daemon resumes.
    pub fn ike_start(&mut self, side: Side) -> Result<()> {
        if self.ike_running(side) {
            return Ok(());
        }
        let extra = self
            .options
            .ike
            .as_ref()
            .map(|i| i.extra_args.clone())
            .unwrap_or_default();
        let daemon = &self.ike[side.index()];
        let mut argv: Vec<std::ffi::OsString> = vec![
            self.binary.clone().into(),
            "ike".into(),
            "--config".into(),
            daemon.config.clone().into(),
            "--state-file".into(),
            daemon.state.clone().into(),
        ];
        argv.extend(extra.into_iter().map(Into::into));
        // A socket left by a killed run would look like a ready one.
        std::fs::remove_file(&daemon.socket).ok();
        let child = self
            .topo_gateway(side)
            .ns
            .spawn_logged(&argv, &daemon.log)?;
        self.ike[side.index()].child = Some(child);
        Ok(())
    }

    /// Waits (bounded by `start_timeout`) for the control socket of the
    /// IKE daemon of `side`; fails with its log if it exits first.
    pub fn wait_for_ike_socket(&self, side: Side) -> Result<()> {
        let deadline = Instant::now() + self.options.start_timeout;
        let daemon = &self.ike[side.index()];
        loop {
            match &daemon.child {
                Some(child) => {
                    if let Some(status) = child.try_wait()? {
                        return Err(Error::Command {
                            cmd: child.command().to_string(),
                            status,
                            stderr: format!(
                                "exited during start; its log:\n{}",
                                self.ike_log(side)
                            ),
                        });
                    }
                }
                None => {
                    return Err(Error::Timeout(format!(
                        "the IKE daemon of {side} is not running"
                    )))
                }
            }
            if daemon.socket.exists() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "the IKE control socket of {side} did not appear; its log:\n{}",
                    self.ike_log(side)
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the IKE daemon of `side` runs.
    pub fn ike_running(&self, side: Side) -> bool {
        self.ike[side.index()]
            .child
            .as_ref()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The IKE daemon process of `side`.
    pub fn ike_child(&self, side: Side) -> Option<&NsChild> {
        self.ike[side.index()].child.as_ref()
    }

    /// Stops the IKE daemon of `side` with SIGTERM (bounded wait); its
    /// exit status.
    pub fn ike_stop(&mut self, side: Side) -> Result<std::process::ExitStatus> {
        let child = self.ike[side.index()]
            .child
            .take()
            .ok_or_else(|| Error::Timeout(format!("the IKE daemon of {side} is not running")))?;
        child.terminate()?;
        Ok(child.wait_timeout(Duration::from_secs(10))?.status)
    }

    /// Kills the IKE daemon of `side` with SIGKILL, as a crash would.
    pub fn ike_kill(&mut self, side: Side) -> Result<()> {
        let child = self.ike[side.index()]
            .child
            .take()
            .ok_or_else(|| Error::Timeout(format!("the IKE daemon of {side} is not running")))?;
        child.signal(nix::sys::signal::Signal::SIGKILL)?;
        child.wait_timeout(Duration::from_secs(10))?;
        Ok(())
    }

    /// The IKE config file of `side`.
    pub fn ike_config_path(&self, side: Side) -> &Path {
        &self.ike[side.index()].config
    }

    /// The IKE control socket of `side`.
    pub fn ike_socket(&self, side: Side) -> &Path {
        &self.ike[side.index()].socket
    }

    /// The IKE state file of `side`.
    pub fn ike_state_path(&self, side: Side) -> &Path {
        &self.ike[side.index()].state
    }

    /// The log of the IKE daemon of `side` so far.
    pub fn ike_log(&self, side: Side) -> String {
        let path = &self.ike[side.index()].log;
        std::fs::read(path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("<cannot read {}: {e}>", path.display()))
    }

    /// Both IKE logs and both data-plane logs, labelled.
    pub fn ike_logs(&self) -> String {
        let mut out = self.logs();
        for side in Side::BOTH {
            let _ = writeln!(out, "----- xdpsec ike log of {side} -----");
            out.push_str(&self.ike_log(side));
        }
        out
    }

    /// Runs `xdpsec ARGS... --ike-socket <side's socket>` (`initiate
    /// tunnel`, `rekey tunnel --ike`, ...) in the gateway's namespace; its
    /// stdout, or the error with its stderr.
    pub fn ike_cli(&self, side: Side, args: &[&str]) -> Result<String> {
        let mut argv: Vec<std::ffi::OsString> = vec![self.binary.clone().into()];
        argv.extend(args.iter().map(Into::into));
        argv.push("--ike-socket".into());
        argv.push(self.ike_socket(side).as_os_str().to_owned());
        self.topo_gateway(side).ns.run(&argv)
    }

    /// `xdpsec sa list --json` of `side` with its IKE daemon's SAs
    /// (`ike_sas`) next to the data plane's (`sas`).
    pub fn ike_sa_list(&self, side: Side) -> Result<Value> {
        let out = self.ike_cli(
            side,
            &[
                "sa",
                "list",
                "--json",
                "--api-socket",
                &self.api_socket(side).display().to_string(),
            ],
        )?;
        serde_json::from_str(&out).map_err(|e| Error::Parse {
            cmd: "xdpsec sa list --json".into(),
            what: format!("{e}; output: {out}"),
        })
    }

    /// The installed Child SAs of `side` as `sa list --json` shows them
    /// (every IKE SA's children in state `installed`).
    pub fn installed_children(&self, side: Side) -> Result<Vec<Value>> {
        let list = self.ike_sa_list(side)?;
        Ok(list["ike_sas"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|ike| ike["state"] == "established")
            .flat_map(|ike| ike["children"].as_array().cloned().unwrap_or_default())
            .filter(|c| c["state"] == "installed")
            .collect())
    }

    /// Waits (bounded) until `side` has an installed Child SA; its
    /// `sa list` entry.
    pub fn wait_for_child(&self, side: Side, timeout: Duration) -> Result<Value> {
        self.wait_for_children(side, timeout, |c| !c.is_empty())
            .map(|mut c| c.swap_remove(0))
    }

    /// Waits (bounded) until the installed children of `side` satisfy
    /// `done`; them.
    pub fn wait_for_children(
        &self,
        side: Side,
        timeout: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> Result<Vec<Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let children = self.installed_children(side)?;
            if done(&children) {
                return Ok(children);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "{side}: installed children {children:?} not as expected within {timeout:?}; \
                     logs:\n{}",
                    self.ike_logs()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
