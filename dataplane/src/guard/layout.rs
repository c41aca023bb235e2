//! What the guard's chains hold for a set of policies: a handful of rules,
//! each matching its policies' remote prefixes in an nftables set, instead
//! of a rule per policy. With 100,000 policies a rule each meant 100,000
//! rules for every packet the kernel routes, and seconds to reload them on
//! every change; a set is looked up, and changed element by element.
//!
//! The policies of one chain and family, in the order the tables match
//! them (most specific local prefix, then remote prefix, first), are cut
//! into runs of one verdict. Within a run the order does not matter, since
//! every rule of it says the same, so its policies are grouped by local
//! prefix: one rule (two for "into the tunnel, or drop") per group, its
//! remote prefixes in the group's set. Prefixes nest or are disjoint, and
//! one inside another of its group adds nothing: a set holds only the
//! outermost ones, which never overlap (nftables refuses overlapping
//! elements in an interval set).

use std::collections::HashMap;
use xdpsec_api::{Direction, Policy, PolicyAction, Prefix};

/// A chain of the guard's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Chain {
    /// Postrouting: what leaves, matched on its source (local) and
    /// destination (remote).
    Egress,
    /// Prerouting: what arrives, matched on its source (remote) and
    /// destination (local).
    Ingress,
}

impl Chain {
    pub(super) fn name(self) -> &'static str {
        match self {
            Chain::Egress => "egress",
            Chain::Ingress => "ingress",
        }
    }
}

/// What a group's rules do with a packet its prefixes match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Verdict {
    Accept,
    /// An outbound `protect` policy with a tunnel interface: into it, or
    /// dropped.
    TunnelOrDrop,
    Drop,
}

/// One local prefix of a run, and what its rules do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Group {
    pub(super) chain: Chain,
    v6: bool,
    local: Prefix,
    verdict: Verdict,
}

/// The guard's rules and sets for some policies: group `i`'s remote
/// prefixes are `prefixes[i]` (outermost only, sorted), in set `g{i}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Layout {
    pub(super) groups: Vec<Group>,
    pub(super) prefixes: Vec<Vec<Prefix>>,
}

/// The set of group `index`.
pub(super) fn set_name(index: usize) -> String {
    format!("g{index}")
}

impl Group {
    /// The set's declaration (without the table).
    pub(super) fn set_type(&self) -> &'static str {
        if self.v6 {
            "{ type ipv6_addr; flags interval; }"
        } else {
            "{ type ipv4_addr; flags interval; }"
        }
    }

    /// The rules of the group, matching set `set`, to add in order.
    pub(super) fn rules(&self, set: &str, tunnel: Option<&str>, counter: &str) -> Vec<String> {
        let (family, ip) = if self.v6 {
            ("ipv6", "ip6")
        } else {
            ("ipv4", "ip")
        };
        let local = |field: &str| {
            if self.local.is_default() {
                String::new()
            } else {
                format!(" {ip} {field} {}", self.local)
            }
        };
        let matches = match self.chain {
            Chain::Egress => format!("meta nfproto {family}{} {ip} daddr @{set}", local("saddr")),
            Chain::Ingress => format!("meta nfproto {family} {ip} saddr @{set}{}", local("daddr")),
        };
        let drop = format!("{matches} counter name \"{counter}\" drop");
        match (self.verdict, tunnel) {
            (Verdict::Accept, _) => vec![format!("{matches} accept")],
            (Verdict::TunnelOrDrop, Some(tunnel)) => {
                vec![format!("{matches} oifname \"{tunnel}\" accept"), drop]
            }
            (Verdict::TunnelOrDrop | Verdict::Drop, _) => vec![drop],
        }
    }
}

/// The layout for `policies`; `tunnel`: there is a tunnel interface for
/// protected outbound traffic to leave through.
pub(super) fn layout(policies: &[Policy], tunnel: bool) -> Layout {
    let mut sorted: Vec<&Policy> = policies.iter().collect();
    // The order the tables match in (a stable sort keeps insertion order
    // for ties).
    sorted.sort_by_key(|p| std::cmp::Reverse((p.local.prefix_len(), p.remote.prefix_len())));
    let mut groups: Vec<Group> = Vec::new();
    let mut members: Vec<Vec<Prefix>> = Vec::new();
    for chain in [Chain::Egress, Chain::Ingress] {
        for v6 in [false, true] {
            let mut run: Option<Verdict> = None;
            // Group index by local prefix, within the current run.
            let mut in_run: HashMap<Prefix, usize> = HashMap::new();
            for policy in sorted
                .iter()
                .filter(|p| chain_of(p) == chain && p.local.is_ipv4() != v6)
            {
                let verdict = verdict_of(policy, chain, tunnel);
                if run != Some(verdict) {
                    run = Some(verdict);
                    in_run.clear();
                }
                let index = *in_run.entry(policy.local).or_insert_with(|| {
                    groups.push(Group {
                        chain,
                        v6,
                        local: policy.local,
                        verdict,
                    });
                    members.push(Vec::new());
                    groups.len() - 1
                });
                members[index].push(policy.remote);
            }
        }
    }
    Layout {
        groups,
        prefixes: members.into_iter().map(outermost).collect(),
    }
}

fn chain_of(policy: &Policy) -> Chain {
    match policy.direction {
        Direction::Out => Chain::Egress,
        Direction::In => Chain::Ingress,
    }
}

fn verdict_of(policy: &Policy, chain: Chain, tunnel: bool) -> Verdict {
    match (policy.action, chain) {
        (PolicyAction::Bypass, _) => Verdict::Accept,
        (PolicyAction::Protect, Chain::Egress) if tunnel => Verdict::TunnelOrDrop,
        _ => Verdict::Drop,
    }
}

/// The prefixes not inside another of them, sorted. Prefixes nest or are
/// disjoint: sorted by address and then length, one that covers others
/// comes right before them.
fn outermost(mut prefixes: Vec<Prefix>) -> Vec<Prefix> {
    prefixes.sort_by_key(|p| (p.addr(), p.prefix_len()));
    let mut kept: Vec<Prefix> = Vec::with_capacity(prefixes.len());
    for prefix in prefixes {
        if kept.last().is_none_or(|last| !last.covers(&prefix)) {
            kept.push(prefix);
        }
    }
    kept
}

/// The prefixes of `these` that `those` lacks (both sorted as
/// [`outermost`] sorts).
fn not_in<'a>(these: &'a [Prefix], those: &[Prefix]) -> Vec<&'a Prefix> {
    let key = |p: &Prefix| (p.addr(), p.prefix_len());
    these
        .iter()
        .filter(|p| those.binary_search_by_key(&key(p), key).is_err())
        .collect()
}

/// What to delete from and add to each group's set to go from `old` to
/// `new` (same groups): (group index, deleted, added).
pub(super) fn element_changes<'a>(
    old: &'a Layout,
    new: &'a Layout,
) -> Vec<(usize, Vec<&'a Prefix>, Vec<&'a Prefix>)> {
    old.prefixes
        .iter()
        .zip(&new.prefixes)
        .enumerate()
        .filter(|(_, (before, after))| before != after)
        .map(|(i, (before, after))| (i, not_in(before, after), not_in(after, before)))
        .collect()
}

#[cfg(test)]
pub(super) mod tests {
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

    /// An outbound policy from the bed's LAN, 10.1.0.0/24.
    pub(in crate::guard) fn out(remote: &str, action: PolicyAction) -> Policy {
        policy("10.1.0.0/24", remote, Direction::Out, action)
    }

    fn prefixes(list: &[&str]) -> Vec<Prefix> {
        list.iter().map(|p| p.parse().unwrap()).collect()
    }

    #[test]
    fn only_outermost_prefixes_are_kept() {
        let kept = outermost(prefixes(&[
            "10.2.5.0/24",
            "10.2.0.0/16",
            "10.3.0.0/24",
            "10.2.0.0/16",
            "10.3.0.0/25",
        ]));
        assert_eq!(kept, prefixes(&["10.2.0.0/16", "10.3.0.0/24"]));
    }

    #[test]
    fn a_run_of_one_verdict_is_one_group_per_local_prefix() {
        let mut policies: Vec<Policy> = (0..1000)
            .map(|i| {
                out(
                    &format!("10.{}.{}.0/24", 64 + i / 256, i % 256),
                    PolicyAction::Protect,
                )
            })
            .collect();
        policies.push(policy(
            "10.1.0.0/24",
            "10.64.0.0/24",
            Direction::In,
            PolicyAction::Protect,
        ));
        let l = layout(&policies, true);
        assert_eq!(l.groups.len(), 2);
        assert_eq!(l.prefixes[0].len(), 1000);
        assert_eq!(l.groups[1].chain, Chain::Ingress);
    }

    #[test]
    fn a_more_specific_bypass_splits_the_runs_around_it() {
        let policies = [
            out("10.2.0.0/16", PolicyAction::Protect),
            out("10.2.5.0/24", PolicyAction::Bypass),
            out("10.3.0.0/16", PolicyAction::Protect),
            out("10.2.5.7/32", PolicyAction::Drop),
        ];
        let l = layout(&policies, true);
        let verdicts: Vec<Verdict> = l.groups.iter().map(|g| g.verdict).collect();
        // In match order: the /32 drop, the /24 bypass, then both /16s.
        assert_eq!(
            verdicts,
            [Verdict::Drop, Verdict::Accept, Verdict::TunnelOrDrop]
        );
        assert_eq!(l.prefixes[2], prefixes(&["10.2.0.0/16", "10.3.0.0/16"]));
    }

    #[test]
    fn rules_match_the_set_on_the_remote_side() {
        let l = layout(
            &[
                out("10.2.0.0/16", PolicyAction::Protect),
                policy(
                    "10.1.0.0/24",
                    "10.2.0.0/16",
                    Direction::In,
                    PolicyAction::Protect,
                ),
                policy("::/0", "fd00:2::/64", Direction::Out, PolicyAction::Drop),
            ],
            true,
        );
        let rules: Vec<Vec<String>> = l
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| g.rules(&set_name(i), Some("xtun0"), "blocked"))
            .collect();
        assert_eq!(
            rules,
            [
                vec![
                    "meta nfproto ipv4 ip saddr 10.1.0.0/24 ip daddr @g0 oifname \"xtun0\" accept",
                    "meta nfproto ipv4 ip saddr 10.1.0.0/24 ip daddr @g0 counter name \"blocked\" drop",
                ],
                vec!["meta nfproto ipv6 ip6 daddr @g1 counter name \"blocked\" drop"],
                vec!["meta nfproto ipv4 ip saddr @g2 ip daddr 10.1.0.0/24 counter name \"blocked\" drop"],
            ]
        );
        // Without a tunnel interface, protected traffic has no way out.
        assert_eq!(
            l.groups[0].rules("g0", None, "blocked"),
            ["meta nfproto ipv4 ip saddr 10.1.0.0/24 ip daddr @g0 counter name \"blocked\" drop"]
        );
    }

    #[test]
    fn changes_are_element_by_element() {
        let base: Vec<Policy> = ["10.2.0.0/24", "10.3.0.0/24"]
            .iter()
            .map(|r| policy("10.1.0.0/24", r, Direction::Out, PolicyAction::Protect))
            .collect();
        let mut more = base.clone();
        more.push(out("10.4.0.0/24", PolicyAction::Protect));
        more.push(out("10.3.0.0/16", PolicyAction::Protect));
        let (old, new) = (layout(&base, true), layout(&more, true));
        assert_eq!(old.groups, new.groups);
        let changes = element_changes(&old, &new);
        assert_eq!(changes.len(), 1);
        let (group, gone, came) = &changes[0];
        assert_eq!(*group, 0);
        assert_eq!(gone, &[&"10.3.0.0/24".parse::<Prefix>().unwrap()]);
        assert_eq!(
            came,
            &[
                &"10.3.0.0/16".parse::<Prefix>().unwrap(),
                &"10.4.0.0/24".parse().unwrap()
            ]
        );
    }
}
