//! A remote-access client's host configuration for one VPN session, as
//! `xdpsec connect` sets it up and `xdpsec disconnect` takes it down: the
//! virtual IPs on the tunnel interface, a pinned route to the gateway's
//! underlay address, routes for everything (or the chosen subnets) into
//! the tunnel, a firewall that lets nothing else leave the host except IKE
//! and ESP to the gateway, and the resolver pointed at the tunnel's DNS
//! servers.
//!
//! Every change is recorded in a state file before the next one is made, so
//! [`restore`] undoes exactly what was done, also after a crash in the
//! middle. Routes are added next to the existing ones (`0.0.0.0/1` and
//! `128.0.0.0/1` beat the default route by length), never replaced, so
//! removing them restores the table as it was. The resolver file is
//! rewritten in place, not renamed over, because it may be a bind mount
//! (`ip netns exec` mounts `/etc/netns/NAME/resolv.conf` there).

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use xdpsec_api::Prefix;

/// Where the session state goes unless told otherwise.
pub const DEFAULT_STATE_FILE: &str = "/run/xdpsec/connect.json";
/// The resolver configuration pointed at the tunnel's DNS servers.
pub const DEFAULT_RESOLV_CONF: &str = "/etc/resolv.conf";
/// The nftables table that holds the leak firewall.
pub const FIREWALL_TABLE: &str = "xdpsec_connect";

/// What a session sets up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The IKE connection.
    pub connection: String,
    /// The tunnel interface (host end) the data plane owns.
    pub tunnel: String,
    /// The gateway's underlay address: IKE and ESP go there outside the
    /// tunnel.
    pub gateway: IpAddr,
    /// Our virtual IPs.
    pub virtual_ips: Vec<IpAddr>,
    /// DNS servers for the session; none leaves the resolver alone.
    pub dns: Vec<IpAddr>,
    /// What goes into the tunnel; empty: everything of each family we have
    /// a virtual IP of.
    pub subnets: Vec<Prefix>,
    /// Block everything outside the tunnel except IKE/ESP to the gateway.
    pub firewall: bool,
    /// The resolver file to rewrite.
    pub resolv_conf: PathBuf,
}

/// What has been done so far; saved after every step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionState {
    pub plan: Plan,
    /// `ip` arguments that add each route we added (deleted with the same
    /// arguments and `del`), in order.
    pub routes: Vec<Vec<String>>,
    /// Addresses we put on the tunnel interface (`ADDR/LEN`).
    pub addresses: Vec<String>,
    /// Whether our nftables table is in place.
    pub firewall: bool,
    /// The resolver file as it was (`None`: it did not exist), once we
    /// rewrote it.
    pub resolv_conf_before: Option<Option<String>>,
}

impl SessionState {
    /// Reads the state file at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the session state {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("parsing the session state {}", path.display()))
    }

    fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = serde_json::to_string_pretty(self).context("encoding the session state")?;
        // Written aside and renamed, so a crash leaves the old or the new
        // state, never half of one.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
    }
}

/// Sets the host up as `plan` says, recording each step in `state_file`
/// first; on failure undoes what it did. Fails if a session is recorded
/// there already.
pub fn apply(plan: &Plan, state_file: &Path) -> Result<SessionState> {
    if state_file.exists() {
        bail!(
            "a session is already recorded in {}: run `xdpsec disconnect` first",
            state_file.display()
        );
    }
    if plan.virtual_ips.is_empty() {
        bail!("no virtual IP to configure");
    }
    let mut state = SessionState {
        plan: plan.clone(),
        routes: Vec::new(),
        addresses: Vec::new(),
        firewall: false,
        resolv_conf_before: None,
    };
    state.save(state_file)?;
    match apply_steps(&mut state, state_file) {
        Ok(()) => Ok(state),
        Err(e) => {
            let undo = restore(&state, state_file);
            match undo {
                Ok(()) => Err(e),
                Err(u) => Err(e.context(format!("and undoing failed too: {u:#}"))),
            }
        }
    }
}

fn apply_steps(state: &mut SessionState, state_file: &Path) -> Result<()> {
    let plan = state.plan.clone();
    // The gateway stays reachable the way it is now, whatever we route
    // into the tunnel next.
    let pinned = pinned_gateway_route(plan.gateway)?;
    if add_route(&pinned)? {
        state.routes.push(pinned);
        state.save(state_file)?;
    }
    for vip in &plan.virtual_ips {
        let cidr = match vip {
            IpAddr::V4(_) => format!("{vip}/32"),
            IpAddr::V6(_) => format!("{vip}/128"),
        };
        let mut args = vec!["addr", "add", &cidr, "dev", &plan.tunnel];
        if vip.is_ipv6() {
            // Nothing else can hold it: no duplicate detection delay.
            args.push("nodad");
        }
        ip(&args).with_context(|| format!("putting {cidr} on {}", plan.tunnel))?;
        state.addresses.push(cidr);
        state.save(state_file)?;
    }
    for route in tunnel_routes(&plan) {
        if add_route(&route)? {
            state.routes.push(route);
            state.save(state_file)?;
        }
    }
    if plan.firewall {
        nft_apply(&firewall_rules(&plan))?;
        state.firewall = true;
        state.save(state_file)?;
    }
    if !plan.dns.is_empty() {
        let before = match std::fs::read_to_string(&plan.resolv_conf) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(e).with_context(|| format!("reading {}", plan.resolv_conf.display()))
            }
        };
        // Recorded before the write: a crash in between restores the old
        // text, which is right either way.
        state.resolv_conf_before = Some(before);
        state.save(state_file)?;
        write_in_place(&plan.resolv_conf, &resolv_conf_text(&plan))?;
    }
    Ok(())
}

/// Undoes what `state` records, newest first, and removes the state file.
/// Steps that are already undone (a route gone with its interface, say) are
/// fine; the first real failure is reported after every step was tried.
pub fn restore(state: &SessionState, state_file: &Path) -> Result<()> {
    let mut failures: Vec<String> = Vec::new();
    let plan = &state.plan;
    if let Some(before) = &state.resolv_conf_before {
        let result = match before {
            Some(text) => write_in_place(&plan.resolv_conf, text),
            None => std::fs::remove_file(&plan.resolv_conf)
                .or_else(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => Ok(()),
                    _ => Err(e),
                })
                .with_context(|| format!("removing {}", plan.resolv_conf.display())),
        };
        if let Err(e) = result {
            failures.push(format!("{e:#}"));
        }
    }
    if state.firewall {
        if let Err(e) = nft(&["delete", "table", "inet", FIREWALL_TABLE]) {
            if !is_gone(&e) {
                failures.push(format!("{e:#}"));
            }
        }
    }
    for route in state.routes.iter().rev() {
        let mut args: Vec<&str> = route.iter().map(String::as_str).collect();
        if let Some(verb) = args.iter().position(|a| *a == "add") {
            args[verb] = "del";
        }
        if let Err(e) = ip(&args) {
            if !is_gone(&e) {
                failures.push(format!("{e:#}"));
            }
        }
    }
    for cidr in state.addresses.iter().rev() {
        if let Err(e) = ip(&["addr", "del", cidr, "dev", &plan.tunnel]) {
            if !is_gone(&e) {
                failures.push(format!("{e:#}"));
            }
        }
    }
    if let Some(first) = failures.first() {
        bail!(
            "could not undo everything ({} step(s) failed; state kept in {}): {first}",
            failures.len(),
            state_file.display()
        );
    }
    std::fs::remove_file(state_file)
        .or_else(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Ok(()),
            _ => Err(e),
        })
        .with_context(|| format!("removing {}", state_file.display()))
}

/// Whether an `ip`/`nft` failure says the thing is not there (any more).
fn is_gone(e: &anyhow::Error) -> bool {
    let text = format!("{e:#}");
    [
        "No such process",
        "No such file",
        "Cannot find device",
        "does not exist",
        "Cannot assign requested address",
    ]
    .iter()
    .any(|m| text.contains(m))
}

/// The `ip route add` arguments of a host route to `gateway` through the
/// hop the kernel uses for it now.
fn pinned_gateway_route(gateway: IpAddr) -> Result<Vec<String>> {
    let family = if gateway.is_ipv6() { "-6" } else { "-4" };
    let out = ip_output(&[family, "-j", "route", "get", &gateway.to_string()])
        .with_context(|| format!("looking up the route to the gateway {gateway}"))?;
    let routes: serde_json::Value =
        serde_json::from_str(&out).context("parsing `ip -j route get`")?;
    let route = routes
        .get(0)
        .ok_or_else(|| anyhow!("no route to the gateway {gateway}"))?;
    let dev = route["dev"]
        .as_str()
        .ok_or_else(|| anyhow!("the route to the gateway {gateway} has no device: {route}"))?;
    let host = if gateway.is_ipv6() { 128 } else { 32 };
    let mut args: Vec<String> = vec![
        family.into(),
        "route".into(),
        "add".into(),
        format!("{gateway}/{host}"),
    ];
    if let Some(via) = route["gateway"].as_str() {
        args.extend(["via".into(), via.into()]);
    }
    args.extend(["dev".into(), dev.into()]);
    Ok(args)
}

/// The routes into the tunnel: the chosen subnets, or both halves of each
/// family we have a virtual IP of, each with that virtual IP as source.
fn tunnel_routes(plan: &Plan) -> Vec<Vec<String>> {
    let vip_of = |v6: bool| plan.virtual_ips.iter().find(|a| a.is_ipv6() == v6);
    let everything = ["0.0.0.0/1", "128.0.0.0/1", "::/1", "8000::/1"];
    let prefixes: Vec<String> = if plan.subnets.is_empty() {
        everything.iter().map(|s| s.to_string()).collect()
    } else {
        plan.subnets.iter().map(Prefix::to_string).collect()
    };
    let mut out = Vec::new();
    for p in prefixes {
        let v6 = p.contains(':');
        let Some(src) = vip_of(v6) else { continue };
        out.push(vec![
            if v6 { "-6" } else { "-4" }.to_string(),
            "route".into(),
            "add".into(),
            p,
            "dev".into(),
            plan.tunnel.clone(),
            "src".into(),
            src.to_string(),
        ]);
    }
    out
}

/// The leak firewall: on the way out, only the tunnel interface, loopback,
/// and IKE/ESP to the gateway (plus IPv6 neighbour discovery, without which
/// an IPv6 underlay would not reach the gateway at all); forwarded, only
/// into the tunnel.
pub fn firewall_rules(plan: &Plan) -> String {
    let (fam, gw) = match plan.gateway {
        IpAddr::V4(a) => ("ip", a.to_string()),
        IpAddr::V6(a) => ("ip6", a.to_string()),
    };
    let proto = if plan.gateway.is_ipv6() {
        "meta l4proto"
    } else {
        "ip protocol"
    };
    let mut s = String::new();
    let _ = writeln!(s, "table inet {FIREWALL_TABLE} {{");
    let _ = writeln!(s, "  chain output {{");
    let _ = writeln!(s, "    type filter hook output priority 0; policy drop;");
    let _ = writeln!(s, "    oifname \"lo\" accept");
    let _ = writeln!(s, "    oifname \"{}\" accept", plan.tunnel);
    let _ = writeln!(s, "    {fam} daddr {gw} udp dport {{ 500, 4500 }} accept");
    let _ = writeln!(s, "    {fam} daddr {gw} {proto} esp accept");
    let _ = writeln!(
        s,
        "    icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit }} accept"
    );
    let _ = writeln!(s, "  }}");
    // Nor may anything be forwarded around the tunnel, such as what the
    // host routes into it that no SA covers (it comes back out of the
    // data plane's end).
    let _ = writeln!(s, "  chain forward {{");
    let _ = writeln!(s, "    type filter hook forward priority 0; policy drop;");
    let _ = writeln!(s, "    oifname \"{}\" accept", plan.tunnel);
    let _ = writeln!(s, "  }}");
    let _ = writeln!(s, "}}");
    s
}

fn resolv_conf_text(plan: &Plan) -> String {
    let mut s = format!(
        "# written by `xdpsec connect {}` for the VPN session; `xdpsec disconnect` puts the previous file back\n",
        plan.connection
    );
    for server in &plan.dns {
        let _ = writeln!(s, "nameserver {server}");
    }
    s
}

/// Truncates and rewrites `path` (a bind mount cannot be renamed over).
fn write_in_place(path: &Path, text: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("opening {} for writing", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.flush())
        .with_context(|| format!("writing {}", path.display()))
}

/// `ip route add ...`: `true` if added, `false` if that exact route was
/// there already (then it is not ours to delete).
fn add_route(args: &[String]) -> Result<bool> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match ip(&args) {
        Ok(()) => Ok(true),
        Err(e) if format!("{e:#}").contains("File exists") => Ok(false),
        Err(e) => Err(e),
    }
}

fn ip(args: &[&str]) -> Result<()> {
    ip_output(args).map(drop)
}

fn ip_output(args: &[&str]) -> Result<String> {
    run("ip", args, None)
}

fn nft(args: &[&str]) -> Result<()> {
    run("nft", args, None).map(drop)
}

fn nft_apply(rules: &str) -> Result<()> {
    run("nft", &["-f", "-"], Some(rules))
        .map(drop)
        .context("installing the leak firewall (nftables)")
}

/// Runs `program` (stdin fed from `stdin`), its stdout on success, an error
/// with its stderr otherwise. Also the guard's way to nft.
pub(crate) fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {program} (is it installed?)"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .with_context(|| format!("feeding {program}"))?;
    }
    let out = child
        .wait_with_output()
        .with_context(|| format!("waiting for {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(subnets: &[&str], vips: &[&str]) -> Plan {
        Plan {
            connection: "home".into(),
            tunnel: "xtun0".into(),
            gateway: "198.18.2.2".parse().unwrap(),
            virtual_ips: vips.iter().map(|v| v.parse().unwrap()).collect(),
            dns: vec!["10.2.0.2".parse().unwrap()],
            subnets: subnets.iter().map(|s| s.parse().unwrap()).collect(),
            firewall: true,
            resolv_conf: "/tmp/none".into(),
        }
    }

    #[test]
    fn everything_goes_in_for_each_family_with_a_virtual_ip() {
        let routes = tunnel_routes(&plan(&[], &["10.3.0.1"]));
        let dsts: Vec<&str> = routes.iter().map(|r| r[3].as_str()).collect();
        assert_eq!(
            dsts,
            ["0.0.0.0/1", "128.0.0.0/1"],
            "no IPv6 without an IPv6 VIP"
        );
        assert!(routes
            .iter()
            .all(|r| r.ends_with(&["src".into(), "10.3.0.1".into()])));
        let both = tunnel_routes(&plan(&[], &["10.3.0.1", "fd00:3::1"]));
        assert_eq!(both.len(), 4);
        assert_eq!(both[2][0], "-6");
        assert_eq!(both[2][7], "fd00:3::1");
    }

    #[test]
    fn chosen_subnets_only() {
        let routes = tunnel_routes(&plan(&["10.2.0.0/16", "fd00:2::/64"], &["10.3.0.1"]));
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0][3], "10.2.0.0/16");
    }

    #[test]
    fn the_firewall_lets_only_the_tunnel_and_ike_esp_to_the_gateway_out() {
        let rules = firewall_rules(&plan(&[], &["10.3.0.1"]));
        assert!(rules.contains("policy drop;"));
        assert!(rules.contains("oifname \"xtun0\" accept"));
        assert!(rules.contains("ip daddr 198.18.2.2 udp dport { 500, 4500 } accept"));
        assert!(rules.contains("ip daddr 198.18.2.2 ip protocol esp accept"));
        let mut v6 = plan(&[], &["10.3.0.1"]);
        v6.gateway = "fd00:99::2".parse().unwrap();
        assert!(firewall_rules(&v6).contains("ip6 daddr fd00:99::2 meta l4proto esp accept"));
    }
}
