//! RFC 9611 per-resource SAs: which outbound SA a worker sends a protected
//! packet on.
//!
//! A `protect` policy names one SA, the *fallback* SA. Outbound SAs
//! installed with `resource = w` (see `SaSpec::resource`) and the same
//! tunnel addresses and selectors as that fallback SA are worker `w`'s own:
//! its packets take their sequence numbers, counters and lifetimes from
//! that SA, so workers do not contend for one SA's cache lines and the
//! peer checks each in its own replay window. A worker without one uses the
//! fallback SA, as every worker did before.
//!
//! The choice is made when a snapshot is published, not per packet: the
//! hot path does one bounds-checked index into a slice.

use crate::tables::OutboundEntry;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// What a `protect` policy sends with.
#[derive(Debug)]
pub struct Protection {
    fallback: Arc<OutboundEntry>,
    /// Indexed by worker; `None` (or past the end): the fallback SA.
    per_worker: Box<[Option<Arc<OutboundEntry>>]>,
}

impl Protection {
    /// The SA `worker` sends on.
    #[inline]
    pub fn for_worker(&self, worker: usize) -> &Arc<OutboundEntry> {
        match self.per_worker.get(worker) {
            Some(Some(own)) => own,
            _ => &self.fallback,
        }
    }

    /// The policy's own SA.
    pub fn fallback(&self) -> &Arc<OutboundEntry> {
        &self.fallback
    }
}

/// The outbound SAs bound to a worker, grouped by tunnel addresses so that
/// publishing stays linear in the number of SAs and policies.
#[derive(Debug, Default)]
pub struct ResourceIndex<'a> {
    by_tunnel: HashMap<(IpAddr, IpAddr), Vec<&'a Arc<OutboundEntry>>>,
}

impl<'a> ResourceIndex<'a> {
    pub fn new(outbound: impl Iterator<Item = &'a Arc<OutboundEntry>>) -> Self {
        let mut by_tunnel: HashMap<_, Vec<_>> = HashMap::new();
        for entry in outbound.filter(|e| e.spec().resource.is_some()) {
            let spec = entry.spec();
            by_tunnel
                .entry((spec.tunnel_local, spec.tunnel_remote))
                .or_default()
                .push(entry);
        }
        ResourceIndex { by_tunnel }
    }

    /// The protection of a policy whose SA is `fallback`. When two SAs
    /// claim one worker (a rekey: the new one is in before the old one
    /// goes), the newer one wins, so traffic moves to it at once.
    pub fn protection(&self, fallback: &Arc<OutboundEntry>) -> Protection {
        let spec = fallback.spec();
        let mut per_worker: Vec<Option<Arc<OutboundEntry>>> = Vec::new();
        if spec.resource.is_none() {
            let siblings = self
                .by_tunnel
                .get(&(spec.tunnel_local, spec.tunnel_remote))
                .into_iter()
                .flatten()
                .filter(|e| e.spec().selectors == spec.selectors);
            for entry in siblings {
                let Some(w) = entry.spec().resource.map(|w| w as usize) else {
                    continue;
                };
                if per_worker.len() <= w {
                    per_worker.resize(w + 1, None);
                }
                let newer = per_worker[w].as_ref().is_none_or(|held| {
                    (entry.stats.installed_at(), entry.sa.spi())
                        > (held.stats.installed_at(), held.sa.spi())
                });
                if newer {
                    per_worker[w] = Some(Arc::clone(entry));
                }
            }
        }
        Protection {
            fallback: Arc::clone(fallback),
            per_worker: per_worker.into_boxed_slice(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::crypto::Backend;
    use crate::tables::{Tables, Verdict};
    use std::net::IpAddr;
    use xdpsec_api::{sample_config, Direction, SaSpec, StaticConfig};

    fn sample() -> (Vec<SaSpec>, Vec<xdpsec_api::Policy>) {
        let config = StaticConfig::parse(sample_config(), "sample.toml").expect("sample parses");
        (config.sas, config.policies)
    }

    /// The SPI worker `w` sends 10.1.0.5 -> 10.2.0.5 with.
    fn spi_of(tables: &Tables, worker: usize) -> Option<u32> {
        let src: IpAddr = "10.1.0.5".parse().unwrap();
        let dst: IpAddr = "10.2.0.5".parse().unwrap();
        match tables.load().outbound_verdict(src, dst) {
            Verdict::Protect(p) => Some(p.for_worker(worker).sa.spi()),
            _ => None,
        }
    }

    #[test]
    fn each_worker_sends_on_its_own_sa_and_the_rest_on_the_fallback() {
        let tables = Tables::new(Backend::available()[0]);
        let (sas, policies) = sample();
        tables.add_bulk(&sas, &policies).unwrap();
        let fallback = sas
            .iter()
            .find(|s| s.direction == Direction::Out)
            .unwrap()
            .clone();
        let for_worker = |spi: u32, w: u32| SaSpec {
            spi,
            resource: Some(w),
            ..fallback.clone()
        };
        assert_eq!(spi_of(&tables, 0), Some(fallback.spi));

        tables.add_sa(&for_worker(0x3000, 0)).unwrap();
        tables.add_sa(&for_worker(0x3001, 1)).unwrap();
        assert_eq!(spi_of(&tables, 0), Some(0x3000));
        assert_eq!(spi_of(&tables, 1), Some(0x3001));
        assert_eq!(spi_of(&tables, 2), Some(fallback.spi), "no SA of its own");

        // A rekey: the new SA is in before the old one goes, and takes over.
        tables.add_sa(&for_worker(0x3101, 1)).unwrap();
        assert_eq!(spi_of(&tables, 1), Some(0x3101));
        tables.delete_sa(0x3001, Direction::Out).unwrap();
        assert_eq!(spi_of(&tables, 1), Some(0x3101));
        tables.delete_sa(0x3101, Direction::Out).unwrap();
        assert_eq!(
            spi_of(&tables, 1),
            Some(fallback.spi),
            "back to the fallback"
        );

        // Other selectors or another peer: not a sibling of this policy's SA.
        let mut elsewhere = for_worker(0x3201, 1);
        elsewhere.selectors.truncate(1);
        elsewhere.selectors[0].remote = "10.9.0.0/24".parse().unwrap();
        tables.add_sa(&elsewhere).unwrap();
        let other_peer = SaSpec {
            tunnel_remote: "198.18.0.9".parse().unwrap(),
            ..for_worker(0x3202, 1)
        };
        tables.add_sa(&other_peer).unwrap();
        assert_eq!(spi_of(&tables, 1), Some(fallback.spi));

        // The fallback SA gone: the policy drops, whatever the workers hold.
        tables.delete_sa(fallback.spi, Direction::Out).unwrap();
        assert_eq!(spi_of(&tables, 0), None);
    }

    #[test]
    fn a_resource_index_beyond_the_bound_is_refused() {
        let tables = Tables::new(Backend::available()[0]);
        let (sas, _) = sample();
        let out = sas.iter().find(|s| s.direction == Direction::Out).unwrap();
        let spec = SaSpec {
            resource: Some(xdpsec_api::sa::MAX_RESOURCES),
            ..out.clone()
        };
        assert!(tables.add_sa(&spec).is_err());
    }
}
