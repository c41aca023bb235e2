//! Virtual IP pools of a remote-access gateway: one address per client
//! identity, leased while the client has an IKE SA, kept for it while it is
//! away, and taken back for someone else only when the pool has no free
//! address left (oldest departed client first), the way strongSwan's
//! in-memory pools behave. Sans-IO: no clock, no sockets; bounded by the
//! pool's size and a lease limit.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use crate::config::{IkeConfig, PoolAddrs, PoolConfig};

/// Leases one pool keeps at most (online and offline together), however
/// large its address range: an IPv6 /64 must not turn into unbounded
/// memory for an attacker who can authenticate with many identities.
pub const DEFAULT_MAX_LEASES: usize = 1 << 16;

/// Why an address could not be leased or released.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// Every address is leased to a client that is online.
    #[error("pool {pool} is exhausted: all {leases} leases are in use")]
    Exhausted {
        /// The pool.
        pool: String,
        /// Its leases, all online.
        leases: usize,
    },
    /// The identity holds no lease on this address.
    #[error("pool {pool} has no lease of {addr} for this identity")]
    NotLeased {
        /// The pool.
        pool: String,
        /// The address.
        addr: IpAddr,
    },
}

#[derive(Debug, Clone)]
struct Lease {
    offset: u128,
    /// IKE SAs of this identity using the address.
    online: u32,
    /// While offline: its place in the reclaim order.
    offline_since: Option<u64>,
}

/// One `[pools.NAME]` with its leases.
#[derive(Debug, Clone)]
pub struct Pool {
    name: String,
    addrs: PoolAddrs,
    dns: Vec<IpAddr>,
    max_leases: usize,
    by_identity: HashMap<Vec<u8>, Lease>,
    /// Offsets leased, online or offline.
    taken: BTreeSet<u128>,
    /// Offline leases, oldest first: (release order, identity).
    offline: BTreeMap<u64, Vec<u8>>,
    releases: u64,
    /// Where the search for a free address starts: addresses are handed
    /// out in order and not reused while fresh ones remain.
    cursor: u128,
}

impl Pool {
    /// An empty pool with at most `max_leases` leases.
    pub fn new(name: impl Into<String>, config: &PoolConfig, max_leases: usize) -> Self {
        Pool {
            name: name.into(),
            addrs: config.addrs,
            dns: config.dns.clone(),
            max_leases: max_leases.max(1),
            by_identity: HashMap::new(),
            taken: BTreeSet::new(),
            offline: BTreeMap::new(),
            releases: 0,
            cursor: 0,
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether it hands out IPv6 addresses.
    pub fn is_ipv6(&self) -> bool {
        self.addrs.is_ipv6()
    }

    /// Its DNS servers.
    pub fn dns(&self) -> &[IpAddr] {
        &self.dns
    }

    /// Leases whose client is online.
    pub fn online(&self) -> usize {
        self.by_identity.len() - self.offline.len()
    }

    /// Leases kept for clients that left.
    pub fn offline(&self) -> usize {
        self.offline.len()
    }

    /// The address leased to `identity` and whether it is online.
    pub fn lease_of(&self, identity: &[u8]) -> Option<(IpAddr, bool)> {
        let lease = self.by_identity.get(identity)?;
        Some((self.addrs.nth(lease.offset)?, lease.online > 0))
    }

    fn capacity(&self) -> u128 {
        self.addrs.len().min(self.max_leases as u128)
    }

    /// Leases an address to `identity`: the one it already has (another SA
    /// of the same client shares it), else `requested` if it is in the pool
    /// and free, else the next free one, else the address of the client
    /// that left longest ago.
    pub fn acquire(
        &mut self,
        identity: &[u8],
        requested: Option<IpAddr>,
    ) -> Result<IpAddr, PoolError> {
        if let Some(lease) = self.by_identity.get_mut(identity) {
            lease.online = lease.online.saturating_add(1);
            if let Some(since) = lease.offline_since.take() {
                self.offline.remove(&since);
            }
            let offset = lease.offset;
            return Ok(self.address(offset));
        }
        let wanted = requested
            .and_then(|a| self.addrs.offset(a))
            .filter(|o| !self.taken.contains(o));
        let offset = match wanted {
            Some(o) if (self.taken.len() as u128) < self.capacity() => Some(o),
            _ => self.next_free(),
        };
        let offset = match offset {
            Some(o) => o,
            None => self
                .reclaim_oldest_offline()
                .ok_or_else(|| PoolError::Exhausted {
                    pool: self.name.clone(),
                    leases: self.by_identity.len(),
                })?,
        };
        self.taken.insert(offset);
        self.by_identity.insert(
            identity.to_vec(),
            Lease {
                offset,
                online: 1,
                offline_since: None,
            },
        );
        Ok(self.address(offset))
    }

    /// Ends one use of `addr` by `identity`; when its last SA is gone the
    /// lease stays reserved for it until the pool needs the address back.
    pub fn release(&mut self, identity: &[u8], addr: IpAddr) -> Result<(), PoolError> {
        let not_leased = || PoolError::NotLeased {
            pool: self.name.clone(),
            addr,
        };
        let Some(offset) = self.addrs.offset(addr) else {
            return Err(not_leased());
        };
        let Some(lease) = self.by_identity.get_mut(identity) else {
            return Err(not_leased());
        };
        if lease.offset != offset || lease.online == 0 {
            return Err(not_leased());
        }
        lease.online -= 1;
        if lease.online == 0 {
            self.releases += 1;
            lease.offline_since = Some(self.releases);
            self.offline.insert(self.releases, identity.to_vec());
        }
        Ok(())
    }

    fn address(&self, offset: u128) -> IpAddr {
        // Offsets come from `addrs`, so nth() has them.
        self.addrs.nth(offset).unwrap_or(self.addrs.first())
    }

    /// A never-leased (or freed) offset after the cursor, wrapping; at most
    /// `taken.len() + 1` probes, since only that many offsets are taken.
    fn next_free(&mut self) -> Option<u128> {
        if self.taken.len() as u128 >= self.capacity() {
            return None;
        }
        let len = self.addrs.len();
        let mut o = self.cursor % len;
        for _ in 0..=self.taken.len() {
            if !self.taken.contains(&o) {
                self.cursor = (o + 1) % len;
                return Some(o);
            }
            o = (o + 1) % len;
        }
        None
    }

    fn reclaim_oldest_offline(&mut self) -> Option<u128> {
        let (_, identity) = self.offline.pop_first()?;
        let lease = self.by_identity.remove(&identity)?;
        self.taken.remove(&lease.offset);
        Some(lease.offset)
    }
}

/// Every configured pool, by name.
#[derive(Debug, Clone, Default)]
pub struct Pools {
    pools: BTreeMap<String, Pool>,
}

impl Pools {
    /// The pools of `config`, each with at most `max_leases` leases.
    pub fn from_config(config: &IkeConfig, max_leases: usize) -> Self {
        Pools {
            pools: config
                .pools
                .iter()
                .map(|(name, p)| (name.clone(), Pool::new(name.clone(), p, max_leases)))
                .collect(),
        }
    }

    /// The pool called `name`.
    pub fn get(&self, name: &str) -> Option<&Pool> {
        self.pools.get(name)
    }

    /// The pool called `name`, to lease from.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut Pool> {
        self.pools.get_mut(name)
    }

    /// Releases `addr` of `identity` in whichever of `names` holds it.
    pub fn release(&mut self, names: &[String], identity: &[u8], addr: IpAddr) -> bool {
        names.iter().any(|n| {
            self.pools
                .get_mut(n)
                .is_some_and(|p| p.release(identity, addr).is_ok())
        })
    }
}
