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
//!   come in the tables' order, most specific first.
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

use anyhow::{Context, Result};
use std::fmt::Write as _;
use xdpsec_api::{Direction, Policy, PolicyAction, Prefix};

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
    /// The rules last installed, so an update that changes nothing (a rekey
    /// moving a policy to a new SA) costs no nft run.
    installed: Option<String>,
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
        let rules = rules(policies, self.tunnel.as_deref());
        if self.installed.as_deref() == Some(rules.as_str()) {
            return Ok(());
        }
        nft(&["-f", "-"], Some(&script(&rules))).context(
            "installing the fail-closed guard (nftables table inet xdpsec_guard; \
             is nftables installed and nf_tables available?)",
        )?;
        self.installed = Some(rules);
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

/// The whole transaction: create the table, counters and chains if they
/// are missing (an existing counter keeps its count), flush the chains,
/// add the rules.
fn script(rules: &str) -> String {
    format!(
        "table inet {TABLE} {{\n\
         \tcounter {BLOCKED_OUT} {{ }}\n\
         \tcounter {BLOCKED_IN} {{ }}\n\
         \tchain egress {{ type filter hook postrouting priority -10; policy accept; }}\n\
         \tchain ingress {{ type filter hook prerouting priority -10; policy accept; }}\n\
         }}\n\
         flush chain inet {TABLE} egress\n\
         flush chain inet {TABLE} ingress\n\
         {rules}"
    )
}

/// The `add rule` lines for `policies`.
fn rules(policies: &[Policy], tunnel: Option<&str>) -> String {
    let mut sorted: Vec<&Policy> = policies.iter().collect();
    // The order the tables match in: most specific local prefix, then
    // remote prefix, first (a stable sort keeps insertion order for ties).
    sorted.sort_by_key(|p| std::cmp::Reverse((p.local.prefix_len(), p.remote.prefix_len())));
    let mut out = String::new();
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
    for policy in sorted {
        let (chain, counter, src, dst) = match policy.direction {
            Direction::Out => ("egress", BLOCKED_OUT, &policy.local, &policy.remote),
            Direction::In => ("ingress", BLOCKED_IN, &policy.remote, &policy.local),
        };
        let matches = match_addresses(src, dst);
        match policy.action {
            PolicyAction::Bypass => add(&mut out, chain, &format!("{matches} accept")),
            PolicyAction::Protect | PolicyAction::Drop => {
                if let (PolicyAction::Protect, Direction::Out, Some(tunnel)) =
                    (policy.action, policy.direction, tunnel)
                {
                    add(
                        &mut out,
                        chain,
                        &format!("{matches} oifname \"{tunnel}\" accept"),
                    );
                }
                add(
                    &mut out,
                    chain,
                    &format!("{matches} counter name \"{counter}\" drop"),
                );
            }
        }
    }
    out
}

/// The nft match for source in `src` and destination in `dst` (both of
/// one family, which `Policy::validate` ensures); a /0 matches the family.
fn match_addresses(src: &Prefix, dst: &Prefix) -> String {
    let (family, ip) = if src.is_ipv4() {
        ("ipv4", "ip")
    } else {
        ("ipv6", "ip6")
    };
    let mut m = format!("meta nfproto {family}");
    for (field, prefix) in [("saddr", src), ("daddr", dst)] {
        if !prefix.is_default() {
            let _ = write!(m, " {ip} {field} {prefix}");
        }
    }
    m
}

fn nft(args: &[&str], stdin: Option<&str>) -> Result<String> {
    crate::host_session::run("nft", args, stdin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(local: &str, remote: &str, direction: Direction, action: PolicyAction) -> Policy {
        Policy {
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            direction,
            action,
            spi: (action == PolicyAction::Protect).then_some(0x1001),
        }
    }

    #[test]
    fn rules_follow_the_policies_most_specific_first() {
        let policies = [
            policy(
                "10.1.0.0/24",
                "10.2.0.0/16",
                Direction::Out,
                PolicyAction::Protect,
            ),
            policy(
                "10.1.0.0/24",
                "10.2.5.0/24",
                Direction::Out,
                PolicyAction::Bypass,
            ),
            policy(
                "10.1.0.0/24",
                "10.2.0.0/16",
                Direction::In,
                PolicyAction::Protect,
            ),
            policy("::/0", "fd00:2::/64", Direction::Out, PolicyAction::Drop),
        ];
        let text = rules(&policies, Some("xtun0"));
        let lines: Vec<&str> = text.lines().collect();
        let egress: Vec<&str> = lines
            .iter()
            .filter(|l| l.contains(" egress "))
            .copied()
            .collect();
        assert_eq!(
            egress,
            [
                "add rule inet xdpsec_guard egress udp sport { 500, 4500 } fib saddr type local accept",
                "add rule inet xdpsec_guard egress meta nfproto ipv4 ip saddr 10.1.0.0/24 ip daddr 10.2.5.0/24 accept",
                "add rule inet xdpsec_guard egress meta nfproto ipv4 ip saddr 10.1.0.0/24 ip daddr 10.2.0.0/16 oifname \"xtun0\" accept",
                "add rule inet xdpsec_guard egress meta nfproto ipv4 ip saddr 10.1.0.0/24 ip daddr 10.2.0.0/16 counter name \"blocked_out\" drop",
                "add rule inet xdpsec_guard egress meta nfproto ipv6 ip6 daddr fd00:2::/64 counter name \"blocked_out\" drop",
            ]
        );
        assert!(text.contains(
            "ingress meta nfproto ipv4 ip saddr 10.2.0.0/16 ip daddr 10.1.0.0/24 counter name \"blocked_in\" drop"
        ));
        assert!(text.contains("ingress iifname \"xtun0\" accept"));
    }

    #[test]
    fn without_a_tunnel_protected_traffic_has_no_way_out() {
        let policies = [policy(
            "0.0.0.0/0",
            "0.0.0.0/0",
            Direction::Out,
            PolicyAction::Protect,
        )];
        let text = rules(&policies, None);
        assert!(!text.contains("oifname"));
        assert!(
            text.contains("egress meta nfproto ipv4 counter name \"blocked_out\" drop"),
            "{text}"
        );
    }
}
