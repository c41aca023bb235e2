//! A new child that takes over the selectors of a child of *another* IKE
//! SA: the responder's side of a peer that restarted (its INITIAL_CONTACT
//! drops our old IKE SA in the same batch that installs the new child), or
//! of a second IKE SA with the same peer.
//!
//! The responder installs the new child before its IKE_AUTH answer leaves,
//! but the initiator installs its inbound SA only when that answer has
//! arrived and been checked: tens of milliseconds on a loaded gateway
//! (80 ms were measured on the 2-core CI machine). Moving our outbound
//! policies at once would send into an SA the peer does not have yet. So,
//! as for the responder of a Child SA rekey (`Driver::switch_later`), the
//! old child keeps sending until the peer proves it has the new one: the
//! first packet accepted on the new inbound SA (the initiator installs its
//! inbound SA before its outbound one), or [`TAKEOVER_TIMEOUT`]. The old
//! child's policy and outbound SA deletions wait with it; its inbound SA
//! lingers as any deleted inbound SA does.
//!
//! The peer's side of the old child is still there meanwhile: a restarted
//! xdpsec keeps the children of its previous run until its connection has
//! been up for `ORPHAN_GRACE`.

use std::time::{Duration, Instant};

use xdpsec_api::{Direction, Policy};

use super::driver::replaced;
use super::install::Ledger;
use crate::ike::{ChildSaId, Event};

/// How long the old child keeps sending when nothing arrives under the new
/// one (the peer may have nothing to send); shorter than `ORPHAN_GRACE`,
/// for which a restarted peer keeps the old child's inbound SA.
pub const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the new inbound SA is looked at for a first packet.
pub const TAKEOVER_POLL: Duration = Duration::from_millis(20);

/// A policy move that waits for the peer.
#[derive(Debug)]
pub struct Takeover {
    /// When the policies move even without a packet from the peer.
    pub deadline: Instant,
    /// The new child.
    pub child: ChildSaId,
    /// The child whose selectors it takes over.
    pub old: ChildSaId,
    /// The new child's policies, installed on release.
    pub policies: Vec<Policy>,
    /// The old child's `DeletePolicies` and outbound `DeleteSa`, in their
    /// order, carried out after the new policies are in.
    pub held: Vec<Event>,
}

impl Takeover {
    /// Whether `event` removes what the old child sends with, and must
    /// wait.
    pub fn holds(&self, event: &Event) -> bool {
        match event {
            Event::DeletePolicies { child, .. } => *child == self.old,
            Event::DeleteSa {
                child,
                direction: Direction::Out,
                ..
            } => *child == self.old,
            _ => false,
        }
    }
}

/// The takeovers in a batch of the state machine's events: each
/// `InstallPolicies` of a child that is not a rekey (no `replaces` in its
/// up event) and whose outbound selectors are held by another child of
/// ours with an outbound SA in the data plane.
pub fn find(ledger: &Ledger, events: &[Event], now: Instant) -> Vec<Takeover> {
    let mut found = Vec::new();
    for event in events {
        let Event::InstallPolicies { child, policies } = event else {
            continue;
        };
        if replaced(*child, events).is_some() {
            continue;
        }
        let outbound: Vec<_> = policies
            .iter()
            .filter(|p| p.direction == Direction::Out)
            .map(Policy::key)
            .collect();
        let old = ledger.live.iter().find(|(id, c)| {
            **id != child.0
                && c.spi_out.is_some()
                && c.policies.iter().any(|k| outbound.contains(k))
        });
        if let Some((old, _)) = old {
            found.push(Takeover {
                deadline: now + TAKEOVER_TIMEOUT,
                child: *child,
                old: ChildSaId(*old),
                policies: policies.clone(),
                held: Vec::new(),
            });
        }
    }
    found
}

/// The new RFC 9611 per-resource children we answered for in a batch: the
/// data plane sends on a worker's per-resource SA the moment it is in, but
/// the peer installs its inbound half only when our answer arrives. Their
/// outbound SA waits as a takeover's policies do (first packet under the
/// new inbound SA, or [`TAKEOVER_TIMEOUT`]); the worker sends on the
/// fallback SA meanwhile. `old` is the child itself (nothing of another
/// child waits), so its own outbound deletion, if it goes first, waits in
/// `held` behind its installation.
pub fn find_per_resource(events: &[Event], now: Instant) -> Vec<Takeover> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::InstallSa { child, spec, .. }
                if spec.direction == Direction::Out && spec.resource.is_some() =>
            {
                let answered_new = events.iter().any(|e| {
                    matches!(e, Event::ChildSaUp { child: c, replaces: None, initiator: false, .. } if c == child)
                });
                answered_new.then(|| Takeover {
                    deadline: now + TAKEOVER_TIMEOUT,
                    child: *child,
                    old: *child,
                    policies: Vec::new(),
                    held: vec![event.clone()],
                })
            }
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::install::OwnedChild;
    use crate::ike::IkeSaId;
    use xdpsec_api::{PolicyAction, Prefix};

    fn policies(spi_in: u32, spi_out: u32) -> Vec<Policy> {
        let local: Prefix = "10.1.0.0/16".parse().unwrap();
        let remote: Prefix = "10.2.0.0/16".parse().unwrap();
        [(Direction::Out, spi_out), (Direction::In, spi_in)]
            .map(|(direction, spi)| Policy {
                local,
                remote,
                direction,
                action: PolicyAction::Protect,
                spi: Some(spi),
            })
            .to_vec()
    }

    fn owned(spi_in: u32, spi_out: Option<u32>) -> OwnedChild {
        OwnedChild {
            connection: Some("tunnel".into()),
            name: Some("net".into()),
            remote: None,
            spi_in: Some(spi_in),
            spi_out,
            policies: policies(spi_in, spi_out.unwrap_or(0))
                .iter()
                .map(Policy::key)
                .collect(),
            installed_at: 0,
        }
    }

    fn up(child: u64, replaces: Option<u64>) -> Event {
        Event::ChildSaUp {
            ike: IkeSaId(2),
            child: ChildSaId(child),
            connection: "tunnel".into(),
            name: "net".into(),
            replaces: replaces.map(ChildSaId),
            spi_in: 0x30,
            spi_out: 0x40,
            algorithms: String::new(),
            initiator: false,
        }
    }

    /// The batch a responder's INITIAL_CONTACT makes: the old IKE SA's
    /// child goes, then the new child comes in.
    fn initial_contact_batch() -> Vec<Event> {
        vec![
            Event::DeletePolicies {
                child: ChildSaId(1),
                keys: policies(0x10, 0x20).iter().map(Policy::key).collect(),
            },
            Event::DeleteSa {
                child: ChildSaId(1),
                spi: 0x20,
                direction: Direction::Out,
            },
            Event::DeleteSa {
                child: ChildSaId(1),
                spi: 0x10,
                direction: Direction::In,
            },
            Event::InstallPolicies {
                child: ChildSaId(2),
                policies: policies(0x30, 0x40),
            },
            up(2, None),
        ]
    }

    #[test]
    fn a_new_ike_sa_taking_over_a_live_child_waits_and_holds_the_old_outbound() {
        let mut ledger = Ledger::default();
        ledger.live.insert(1, owned(0x10, Some(0x20)));
        let now = Instant::now();
        let batch = initial_contact_batch();
        let found = find(&ledger, &batch, now);
        assert_eq!(found.len(), 1);
        let t = &found[0];
        assert_eq!((t.child, t.old), (ChildSaId(2), ChildSaId(1)));
        assert_eq!(t.deadline, now + TAKEOVER_TIMEOUT);
        assert_eq!(t.policies, policies(0x30, 0x40));
        let held: Vec<bool> = batch.iter().map(|e| t.holds(e)).collect();
        // The old policies and outbound SA wait; its inbound SA and the new
        // child's events do not.
        assert_eq!(held, [true, true, false, false, false]);
    }

    #[test]
    fn a_rekey_is_not_a_takeover() {
        let mut ledger = Ledger::default();
        ledger.live.insert(1, owned(0x10, Some(0x20)));
        let batch = vec![
            Event::InstallPolicies {
                child: ChildSaId(2),
                policies: policies(0x30, 0x40),
            },
            up(2, Some(1)),
        ];
        assert!(find(&ledger, &batch, Instant::now()).is_empty());
    }

    #[test]
    fn no_takeover_without_an_old_outbound_sa_or_shared_selectors() {
        let now = Instant::now();
        // A fresh start: nothing live (a restarted initiator's old children
        // are orphans, not live).
        assert!(find(&Ledger::default(), &initial_contact_batch(), now).is_empty());
        // The old child's outbound SA is already gone.
        let mut ledger = Ledger::default();
        ledger.live.insert(1, owned(0x10, None));
        assert!(find(&ledger, &initial_contact_batch(), now).is_empty());
        // Other selectors.
        let mut ledger = Ledger::default();
        let mut other = owned(0x10, Some(0x20));
        for k in &mut other.policies {
            k.remote = "10.9.0.0/16".parse().unwrap();
        }
        ledger.live.insert(1, other);
        assert!(find(&ledger, &initial_contact_batch(), now).is_empty());
    }
}
