//! The fail-closed guard: an nftables table (`inet xdpsec_guard`) that keeps
//! the kernel from carrying, in cleartext, what a policy says must be
//! protected.
//!
//! The XDP program takes protected traffic away from the kernel while a
//! worker serves its queue. Whenever it cannot (the process is starting,
//! was killed, a worker died, a queue has no socket, the program is
//! detached), a protected packet reaches the kernel, and a gateway that
//! forwards IP would route it out in cleartext. The guard drops it there,
//! with XFRM's block semantics, and counts it:
//!
//! - `egress` (postrouting, so forwarded and locally generated packets
//!   alike, before any source NAT): a packet an outbound `protect` policy
//!   covers leaves only into the tunnel interface (where the data plane
//!   takes it); a `drop` policy drops; a `bypass` policy accepts. Rules
//!   come in the tables' order, most specific first, each matching the
//!   remote prefixes of its policies in an nftables set (`layout.rs`).
//! - `ingress` (prerouting): a cleartext packet an inbound `protect` or
//!   `drop` policy covers is dropped unless it comes out of the tunnel
//!   interface (the data plane decrypted it).
//! - IKE to or from the host's own addresses (UDP 500 and 4500) passes:
//!   a host-to-host policy covers the gateways' own addresses, and its
//!   SAs must still be negotiable. ESP never reaches the kernel's
//!   netfilter from here: the XDP program redirects it, and the workers
//!   send through AF_XDP.
//!
//! The data plane installs the guard before it attaches XDP and updates it
//! before an API request that changes policies is answered. It is left in
//! place when the process dies, and by default when it stops (SIGTERM):
//! what protects the host while the data plane is gone is this table.
//! `[dataplane] guard_on_stop = "remove"` or `xdpsec guard remove` lifts it.

mod layout;

use anyhow::{Context, Result};
use layout::{element_changes, layout, set_name, Chain, Layout};
use std::fmt::Write as _;
use xdpsec_api::{Policy, Prefix};

/// The nftables table of the guard (family `inet`).
pub const TABLE: &str = "xdpsec_guard";

/// Named counters of the table: packets the guard dropped on the way out
/// and on the way in. They survive rule updates.
const BLOCKED_OUT: &str = "blocked_out";
const BLOCKED_IN: &str = "blocked_in";

/// The guard of this network namespace.
#[derive(Debug)]
pub struct Guard {
    /// The host end of the tunnel interface, where protected traffic may go.
    tunnel: Option<String>,
    /// What was last installed: an update that changes nothing (a rekey
    /// moving a policy to a new SA) costs no nft run, and one that keeps
    /// the rules changes only set elements.
    installed: Option<Layout>,
}

impl Guard {
    /// A guard that lets protected traffic into `tunnel` (the host end of
    /// the tunnel interface), if there is one. Installs nothing yet.
    pub fn new(tunnel: Option<String>) -> Guard {
        Guard {
            tunnel,
            installed: None,
        }
    }

    /// Makes the guard enforce `policies`, in one nft transaction (the old
    /// rules hold until the new ones are in). Fails if nft is missing or
    /// refuses the rules; the rules in force are then unchanged.
    pub fn apply(&mut self, policies: &[Policy]) -> Result<()> {
        let wanted = layout(policies, self.tunnel.is_some());
        let script = match &self.installed {
            Some(old) if *old == wanted => return Ok(()),
            Some(old) if old.groups == wanted.groups => element_script(old, &wanted),
            Some(old) => {
                let old_sets: Vec<String> = (0..old.groups.len()).map(set_name).collect();
                full_script(&wanted, self.tunnel.as_deref(), &old_sets)
            }
            None => full_script(&wanted, self.tunnel.as_deref(), &existing_sets()?),
        };
        nft(&["-f", "-"], Some(&script)).context(
            "installing the fail-closed guard (nftables table inet xdpsec_guard; \
             is nftables installed and nf_tables available?)",
        )?;
        self.installed = Some(wanted);
        Ok(())
    }
}

/// Removes the guard from this network namespace (`xdpsec guard remove`,
/// `guard_on_stop = "remove"`). Not an error if it is not there.
pub fn remove() -> Result<()> {
    match nft(&["delete", "table", "inet", TABLE], None) {
        Ok(_) => Ok(()),
        Err(e) if format!("{e:#}").contains("No such file or directory") => Ok(()),
        Err(e) => Err(e),
    }
}

/// What the guard in this network namespace holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardStatus {
    /// Rules in its chains.
    pub rules: usize,
    /// Protected packets dropped on their way out of the host.
    pub blocked_out: u64,
    /// Cleartext packets dropped that should have arrived through an SA.
    pub blocked_in: u64,
}

/// The guard's state, or `None` if no guard is installed.
pub fn status() -> Result<Option<GuardStatus>> {
    let listing = match nft(&["-j", "list", "table", "inet", TABLE], None) {
        Ok(out) => out,
        Err(e) if format!("{e:#}").contains("No such file or directory") => return Ok(None),
        Err(e) => return Err(e),
    };
    let json: serde_json::Value =
        serde_json::from_str(&listing).context("reading nft's JSON listing")?;
    let items = json["nftables"].as_array().cloned().unwrap_or_default();
    let mut status = GuardStatus {
        rules: 0,
        blocked_out: 0,
        blocked_in: 0,
    };
    for item in &items {
        if item.get("rule").is_some() {
            status.rules += 1;
        }
        if let Some(counter) = item.get("counter") {
            let packets = counter["packets"].as_u64().unwrap_or(0);
            match counter["name"].as_str() {
                Some(BLOCKED_OUT) => status.blocked_out = packets,
                Some(BLOCKED_IN) => status.blocked_in = packets,
                _ => {}
            }
        }
    }
    Ok(Some(status))
}

/// The sets the guard's table holds now, from an earlier run of the data
/// plane: they go when the rules that use them are replaced.
fn existing_sets() -> Result<Vec<String>> {
    let listing = match nft(&["-j", "list", "sets", "table", "inet", TABLE], None) {
        Ok(out) => out,
        Err(e) if format!("{e:#}").contains("No such file or directory") => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let json: serde_json::Value =
        serde_json::from_str(&listing).context("reading nft's JSON listing")?;
    Ok(json["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| item["set"]["name"].as_str().map(str::to_owned))
        .collect())
}

/// The whole transaction: create the table, counters and chains if they
/// are missing (an existing counter keeps its count), flush the chains,
/// delete `old_sets` (no rule uses them once the chains are flushed), add
/// the new sets and the rules.
/// nft applies it atomically: no packet sees a half-made guard.
fn full_script(layout: &Layout, tunnel: Option<&str>, old_sets: &[String]) -> String {
    let mut out = format!(
        "table inet {TABLE} {{\n\
         \tcounter {BLOCKED_OUT} {{ }}\n\
         \tcounter {BLOCKED_IN} {{ }}\n\
         \tchain egress {{ type filter hook postrouting priority -10; policy accept; }}\n\
         \tchain ingress {{ type filter hook prerouting priority -10; policy accept; }}\n\
         }}\n\
         flush chain inet {TABLE} egress\n\
         flush chain inet {TABLE} ingress\n"
    );
    for set in old_sets {
        let _ = writeln!(out, "delete set inet {TABLE} {set}");
    }
    let add = |out: &mut String, chain: &str, rule: &str| {
        let _ = writeln!(out, "add rule inet {TABLE} {chain} {rule}");
    };
    add(
        &mut out,
        "egress",
        "udp sport { 500, 4500 } fib saddr type local accept",
    );
    add(
        &mut out,
        "ingress",
        "udp dport { 500, 4500 } fib daddr type local accept",
    );
    if let Some(tunnel) = tunnel {
        add(&mut out, "ingress", &format!("iifname \"{tunnel}\" accept"));
    }
    for (i, (group, prefixes)) in layout.groups.iter().zip(&layout.prefixes).enumerate() {
        let set = set_name(i);
        let _ = writeln!(out, "add set inet {TABLE} {set} {}", group.set_type());
        elements(&mut out, "add", &set, prefixes.iter());
        let counter = match group.chain {
            Chain::Egress => BLOCKED_OUT,
            Chain::Ingress => BLOCKED_IN,
        };
        for rule in group.rules(&set, tunnel, counter) {
            add(&mut out, group.chain.name(), &rule);
        }
    }
    out
}

/// The transaction from `old` to `new`, which have the same rules: set
/// elements deleted, then added (an added prefix may cover a deleted one,
/// and a set's elements must not overlap).
fn element_script(old: &Layout, new: &Layout) -> String {
    let mut out = String::new();
    let changes = element_changes(old, new);
    for (group, gone, _) in &changes {
        elements(&mut out, "delete", &set_name(*group), gone.iter().copied());
    }
    for (group, _, came) in &changes {
        elements(&mut out, "add", &set_name(*group), came.iter().copied());
    }
    out
}

/// `add element` or `delete element` lines for `prefixes` in `set`, a
/// thousand to a line.
fn elements<'a>(
    out: &mut String,
    verb: &str,
    set: &str,
    prefixes: impl Iterator<Item = &'a Prefix>,
) {
    let prefixes: Vec<&Prefix> = prefixes.collect();
    for chunk in prefixes.chunks(1000) {
        let list: Vec<String> = chunk.iter().map(|p| p.to_string()).collect();
        let _ = writeln!(
            out,
            "{verb} element inet {TABLE} {set} {{ {} }}",
            list.join(", ")
        );
    }
}

fn nft(args: &[&str], stdin: Option<&str>) -> Result<String> {
    crate::host_session::run("nft", args, stdin)
}

#[cfg(test)]
mod tests {
    use super::layout::tests::out as policy;
    use super::*;
    use xdpsec_api::PolicyAction;

    #[test]
    fn a_full_script_replaces_the_old_sets_and_keeps_the_counters() {
        let l = layout(&[policy("10.2.0.0/16", PolicyAction::Protect)], true);
        let script = full_script(&l, Some("xtun0"), &["g0".into(), "g1".into()]);
        let lines: Vec<&str> = script.lines().collect();
        assert!(lines.contains(&"delete set inet xdpsec_guard g1"));
        assert!(lines.contains(&"add set inet xdpsec_guard g0 { type ipv4_addr; flags interval; }"));
        assert!(lines.contains(&"add element inet xdpsec_guard g0 { 10.2.0.0/16 }"));
        assert!(lines.contains(&"add rule inet xdpsec_guard ingress iifname \"xtun0\" accept"));
        assert!(!script.contains("delete counter"));
        // The IKE exception comes before any policy's rule.
        let ike = lines.iter().position(|l| l.contains("udp sport")).unwrap();
        let first = lines.iter().position(|l| l.contains("@g0")).unwrap();
        assert!(ike < first);
    }

    #[test]
    fn an_added_policy_of_a_known_shape_only_adds_an_element() {
        let before = layout(&[policy("10.2.0.0/24", PolicyAction::Protect)], true);
        let after = layout(
            &[
                policy("10.2.0.0/24", PolicyAction::Protect),
                policy("10.3.0.0/24", PolicyAction::Protect),
            ],
            true,
        );
        assert_eq!(
            element_script(&before, &after),
            "add element inet xdpsec_guard g0 { 10.3.0.0/24 }\n"
        );
    }
}
