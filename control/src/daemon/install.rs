//! The data-plane half of the state machine's events, over the SA API,
//! and the ledger of what this daemon installed there.
//!
//! The state machine hands out its data-plane actions in make-before-break
//! order (inbound SA, outbound SA, policies; old SAs deleted only after the
//! replacement is in); this module applies them one by one and keeps the
//! order. Two things it adds:
//!
//! - policies are replaced in one step each (`replace_policy`), so a rekey
//!   moves traffic from the old outbound SA to the new one without a moment
//!   with no policy;
//! - a policy is removed only while it still points at the SA of the child
//!   that goes: a newer child (a rekey, or an IKE SA set up again after a
//!   restart) that took over its selectors keeps them.
//!
//! The [`Ledger`] records every SA and policy this daemon installed (SPIs
//! and selectors, no keys) and is saved in the state file, so that after a
//! restart the daemon knows which of the data plane's SAs are its own.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use xdpsec_api::{ApiClient, ApiError, Direction, ErrorCode, Policy, PolicyKey, SaSpec, SaUpdate};

/// One child this daemon installed, as the state file keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedChild {
    /// The connection, once known (from the Child SA's up event).
    #[serde(default)]
    pub connection: Option<String>,
    /// The child's name in the connection.
    #[serde(default)]
    pub name: Option<String>,
    /// The peer's address (to set the connection up again after a restart).
    #[serde(default)]
    pub remote: Option<SocketAddr>,
    /// Our inbound SPI, once installed.
    pub spi_in: Option<u32>,
    /// Our outbound SPI, once installed.
    pub spi_out: Option<u32>,
    /// The policies installed for it.
    pub policies: Vec<PolicyKey>,
    /// When it was installed (seconds since the Unix epoch).
    pub installed_at: u64,
}

impl OwnedChild {
    fn new() -> Self {
        OwnedChild {
            connection: None,
            name: None,
            remote: None,
            spi_in: None,
            spi_out: None,
            policies: Vec::new(),
            installed_at: unix_now(),
        }
    }

    fn spi(&self, direction: Direction) -> Option<u32> {
        match direction {
            Direction::In => self.spi_in,
            Direction::Out => self.spi_out,
        }
    }
}

/// Seconds since the Unix epoch (wall clock: the state file outlives the
/// process, and `Instant`s do not).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Every child this daemon holds in the data plane, by the state machine's
/// child id (as a number: ids restart with the process, see
/// [`Ledger::orphan_all`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Children of the IKE SAs this process runs.
    pub live: BTreeMap<u64, OwnedChild>,
    /// Children installed by an earlier run whose IKE SA this process does
    /// not have: kept carrying traffic until the connection is up again
    /// (then removed) or they expire.
    pub orphans: Vec<OwnedChild>,
}

impl Ledger {
    /// After a restart: every recorded child belongs to an IKE SA of the
    /// previous process.
    pub fn orphan_all(&mut self) {
        let live = std::mem::take(&mut self.live);
        self.orphans.extend(live.into_values());
    }

    /// The child with this id, once the state machine named it.
    pub fn child(&self, child: u64) -> Option<&OwnedChild> {
        self.live.get(&child)
    }

    /// Notes what a Child SA up event says about a child.
    pub fn describe(&mut self, child: u64, connection: &str, name: &str, remote: SocketAddr) {
        let c = self.live.entry(child).or_insert_with(OwnedChild::new);
        c.connection = Some(connection.to_owned());
        c.name = Some(name.to_owned());
        c.remote = Some(remote);
    }

    /// Whether an SA is one of ours (live or orphaned).
    pub fn owns(&self, spi: u32, direction: Direction) -> bool {
        self.live
            .values()
            .chain(&self.orphans)
            .any(|c| c.spi(direction) == Some(spi))
    }
}

/// Applies data-plane actions through a request connection of the SA API.
#[derive(Debug)]
pub struct Installer {
    api: ApiClient,
}

impl Installer {
    /// Uses `api` (a connection not subscribed to events).
    pub fn new(api: ApiClient) -> Self {
        Installer { api }
    }

    /// The connection, for listing.
    pub fn api(&mut self) -> &mut ApiClient {
        &mut self.api
    }

    /// `AddSa`, recorded under `child`. The ledger is written first and
    /// saved by `save` before the SA goes in, so a crash at any point
    /// leaves no SA of ours the state file does not name (a recorded SA
    /// the data plane does not hold is forgotten at the next start).
    pub fn install_sa(
        &mut self,
        ledger: &mut Ledger,
        child: u64,
        spec: SaSpec,
        save: impl FnOnce(&Ledger),
    ) -> Result<(), ApiError> {
        let (spi, direction) = (spec.spi, spec.direction);
        let c = ledger.live.entry(child).or_insert_with(OwnedChild::new);
        let previous = c.spi(direction);
        match direction {
            Direction::In => c.spi_in = Some(spi),
            Direction::Out => c.spi_out = Some(spi),
        }
        save(ledger);
        let result = self.api.add_sa(spec);
        if result.is_err() {
            if let Some(c) = ledger.live.get_mut(&child) {
                match direction {
                    Direction::In => c.spi_in = previous,
                    Direction::Out => c.spi_out = previous,
                }
            }
        }
        result
    }

    /// `ReplacePolicy` for each, recorded under `child`.
    pub fn install_policies(
        &mut self,
        ledger: &mut Ledger,
        child: u64,
        policies: Vec<Policy>,
    ) -> Result<(), ApiError> {
        for policy in policies {
            let key = policy.key();
            self.api.replace_policy(policy)?;
            let c = ledger.live.entry(child).or_insert_with(OwnedChild::new);
            if !c.policies.contains(&key) {
                c.policies.push(key);
            }
        }
        Ok(())
    }

    /// `DeleteSa`; one already gone is fine.
    pub fn delete_sa(
        &mut self,
        ledger: &mut Ledger,
        child: u64,
        spi: u32,
        direction: Direction,
    ) -> Result<(), ApiError> {
        tolerate_missing(self.api.delete_sa(spi, direction))?;
        if let Some(c) = ledger.live.get_mut(&child) {
            match direction {
                Direction::In if c.spi_in == Some(spi) => c.spi_in = None,
                Direction::Out if c.spi_out == Some(spi) => c.spi_out = None,
                _ => {}
            }
            if c.spi_in.is_none() && c.spi_out.is_none() {
                ledger.live.remove(&child);
            }
        }
        Ok(())
    }

    /// Removes those of `keys` that still protect with the child's SAs
    /// (`spi_in`/`spi_out`); policies a newer child took over stay.
    pub fn delete_policies(
        &mut self,
        ledger: &mut Ledger,
        child: u64,
        keys: &[PolicyKey],
    ) -> Result<(), ApiError> {
        let owned = ledger.live.get(&child).cloned();
        let (spi_in, spi_out) = owned
            .as_ref()
            .map_or((None, None), |c| (c.spi_in, c.spi_out));
        self.delete_policies_of(keys, spi_in, spi_out)?;
        if let Some(c) = ledger.live.get_mut(&child) {
            c.policies.retain(|k| !keys.contains(k));
        }
        Ok(())
    }

    fn delete_policies_of(
        &mut self,
        keys: &[PolicyKey],
        spi_in: Option<u32>,
        spi_out: Option<u32>,
    ) -> Result<(), ApiError> {
        if keys.is_empty() {
            return Ok(());
        }
        for p in self.api.list_policies()? {
            let spi = match p.direction {
                Direction::In => spi_in,
                Direction::Out => spi_out,
            };
            if keys.contains(&p.key()) && spi.is_some() && p.spi == spi {
                tolerate_missing(self.api.delete_policy(p.key()))?;
            }
        }
        Ok(())
    }

    /// `UpdateSa` (a new peer address or encapsulation after a NAT change).
    pub fn update_sa(&mut self, update: SaUpdate) -> Result<(), ApiError> {
        self.api.update_sa(update)
    }

    /// Removes an orphaned child: its policies while they still point at
    /// it, then outbound, then inbound.
    pub fn remove_orphan(&mut self, orphan: &OwnedChild) -> Result<(), ApiError> {
        self.delete_policies_of(&orphan.policies, orphan.spi_in, orphan.spi_out)?;
        if let Some(spi) = orphan.spi_out {
            tolerate_missing(self.api.delete_sa(spi, Direction::Out))?;
        }
        if let Some(spi) = orphan.spi_in {
            tolerate_missing(self.api.delete_sa(spi, Direction::In))?;
        }
        Ok(())
    }
}

/// How many workers the data plane runs: each can send on its own RFC 9611
/// per-resource Child SA. One if it cannot say (an older data plane, an
/// error), which makes none.
pub fn data_plane_workers(api: &mut ApiClient) -> u32 {
    match api.worker_stats() {
        Ok(workers) => {
            let n = u32::try_from(workers.len()).unwrap_or(u32::MAX);
            tracing::info!(workers = n, "data-plane workers (RFC 9611 resources)");
            n.max(1)
        }
        Err(e) => {
            tracing::warn!("asking the data plane for its workers: {e}; no per-resource Child SAs");
            1
        }
    }
}

fn tolerate_missing(result: Result<(), ApiError>) -> Result<(), ApiError> {
    match result {
        Err(ApiError::Server {
            code: ErrorCode::NotFound,
            ..
        }) => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_tracks_and_orphans() {
        let mut ledger = Ledger::default();
        ledger.live.insert(
            7,
            OwnedChild {
                spi_in: Some(0x1000),
                spi_out: Some(0x2000),
                ..OwnedChild::new()
            },
        );
        ledger.describe(7, "gw", "net", "198.18.0.2:500".parse().unwrap());
        assert!(ledger.owns(0x1000, Direction::In));
        assert!(!ledger.owns(0x1000, Direction::Out));
        assert!(!ledger.owns(0x3000, Direction::In));
        let json = serde_json::to_string(&ledger).unwrap();
        let mut back: Ledger = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ledger);
        back.orphan_all();
        assert!(back.live.is_empty());
        assert_eq!(back.orphans.len(), 1);
        assert_eq!(back.orphans[0].connection.as_deref(), Some("gw"));
        assert!(back.owns(0x2000, Direction::Out));
    }
}
