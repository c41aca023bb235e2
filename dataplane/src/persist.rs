//! What the data plane keeps on disk, in `[dataplane] state_dir`, so that a
//! restart neither reuses an AES-GCM nonce nor lets protected traffic out.
//!
//! - Static SAs (from the config, manual keys): AES-GCM's nonce is the
//!   sequence number, and a manual key outlives the process, so a restart
//!   that counted from 1 again would send two packets under one (key,
//!   nonce), which gives away the GHASH key and lets anyone forge packets
//!   (RFC 4106 section 9 warns against manual keys with GCM for this
//!   reason; RFC 4303 section 3.3.3 says the counter must not cycle). An
//!   outbound static SA only uses numbers reserved on disk beforehand: a
//!   block of [`RESERVE_BLOCK`] is written and fsynced before the SA may
//!   use it, the next block well before it runs out, and a restart starts
//!   past everything reserved. Numbers reserved and not used are skipped,
//!   which ESP allows. An inbound static SA's highest accepted number is
//!   written every [`KEEP_INTERVAL`] and at a clean stop, and restored as
//!   its replay floor, so packets captured before a restart are refused
//!   after it (after a crash, those of the last interval could pass once).
//! - Policies installed over the SA API (by the IKE daemon): restored at
//!   start with their SAs missing, so they drop (XFRM's block) instead of
//!   letting the traffic out in cleartext until the IKE daemon installs
//!   new SAs. SAs negotiated by IKE are never restored: their keys are not
//!   kept, so a restart cannot reuse their nonces either.
//!
//! Files are written to a temporary name, fsynced, renamed, and the
//! directory fsynced.

use crate::tables::Tables;
use anyhow::{bail, Context, Result};
use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;
use xdpsec_api::{Direction, Policy, SaSpec};

/// Sequence numbers an outbound static SA reserves at a time. A restart
/// skips at most this many: 4096 restarts use up a 32-bit space.
pub const RESERVE_BLOCK: u64 = 1 << 20;

/// How often the keeper looks at the SAs: a new block is reserved once
/// less than half of one is left, so a sender needs over 5 Mpps on one SA
/// to catch up with the reservation in one interval.
pub const KEEP_INTERVAL: Duration = Duration::from_millis(100);

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Opens (creating, mode 0700) the directory.
    pub fn open(dir: &Path) -> Result<StateDir> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating the state directory {}", dir.display()))?;
        Ok(StateDir {
            dir: dir.to_path_buf(),
        })
    }

    fn seq_path(&self, spec: &SaSpec) -> PathBuf {
        self.dir.join(format!(
            "sa-{}-{:08x}.seq",
            spec.direction.as_str(),
            spec.spi
        ))
    }

    fn policies_path(&self) -> PathBuf {
        self.dir.join("policies.json")
    }

    /// The number stored for `spec` (outbound: the last reserved; inbound:
    /// the highest accepted), if one is stored for this very key.
    pub fn load_seq(&self, spec: &SaSpec) -> Result<Option<u64>> {
        let path = self.seq_path(spec);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
                .map(str::trim)
        };
        let (Some(fp), Some(seq)) = (field("key"), field("seq")) else {
            bail!(
                "{}: not an xdpsec sequence file (remove it only if no packet was ever \
                 sent with this SA's key)",
                path.display()
            );
        };
        if fp != key_fingerprint(spec) {
            // Another key under the same SPI: its numbers start afresh.
            return Ok(None);
        }
        let seq = seq
            .parse()
            .with_context(|| format!("{}: seq {seq:?}", path.display()))?;
        Ok(Some(seq))
    }

    /// Stores `seq` for `spec`, durably, before returning.
    pub fn store_seq(&self, spec: &SaSpec, seq: u64) -> Result<()> {
        self.write_durably(&self.seq_path(spec), &seq_text(spec, seq))
    }

    /// [`StateDir::store_seq`] for many SAs at once: every file is written,
    /// the file system synced once, then each renamed into place and the
    /// directory synced once. A sync per file would take minutes for the
    /// static SAs of 100,000 tunnels.
    pub fn store_seqs(&self, items: &[(&SaSpec, u64)]) -> Result<()> {
        // A file-system sync writes back everything dirty on it, which on a
        // busy host takes longer than a few files' own syncs.
        if items.len() <= SYNC_EACH_UP_TO {
            return items
                .iter()
                .try_for_each(|(spec, seq)| self.store_seq(spec, *seq));
        }
        let mut written = Vec::with_capacity(items.len());
        for (spec, seq) in items {
            let path = self.seq_path(spec);
            let tmp = path.with_extension("tmp");
            fs::write(&tmp, seq_text(spec, *seq))
                .with_context(|| format!("writing {}", tmp.display()))?;
            written.push((tmp, path));
        }
        let dir =
            File::open(&self.dir).with_context(|| format!("opening {}", self.dir.display()))?;
        nix::unistd::syncfs(&dir).with_context(|| format!("syncing {}", self.dir.display()))?;
        for (tmp, path) in written {
            fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
        }
        dir.sync_all()
            .with_context(|| format!("syncing {}", self.dir.display()))
    }

    /// The policies stored by [`StateDir::store_policies`], if any.
    pub fn load_policies(&self) -> Result<Vec<Policy>> {
        let path = self.policies_path();
        match fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .with_context(|| format!("{}: not a JSON list of policies", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Stores the policies the SA API installed.
    pub fn store_policies(&self, policies: &[Policy]) -> Result<()> {
        let text = serde_json::to_string_pretty(policies).context("encoding the policies")?;
        self.write_durably(&self.policies_path(), &text)
    }

    fn write_durably(&self, path: &Path, text: &str) -> Result<()> {
        let tmp = path.with_extension("tmp");
        let mut file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", self.dir.display()))
    }
}

/// Up to this many files are synced one by one; more, with one sync of
/// the file system ([`StateDir::store_seqs`]).
const SYNC_EACH_UP_TO: usize = 64;

/// What a sequence-number file of `spec` holds.
fn seq_text(spec: &SaSpec, seq: u64) -> String {
    format!(
        "# xdpsec: {} SA {:#010x}: {}\nkey={}\nseq={seq}\n",
        spec.direction.as_str(),
        spec.spi,
        match spec.direction {
            Direction::Out => "the last sequence number reserved; a restart starts after it",
            Direction::In => "the highest sequence number accepted; a restart refuses up to it",
        },
        key_fingerprint(spec),
    )
}

/// A stable 64-bit FNV-1a of the key and salt: tells a new key under an
/// old SPI apart. Not secret-preserving, and need not be: the config file
/// beside it holds the key itself.
fn key_fingerprint(spec: &SaSpec) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in spec.key.key().iter().chain(spec.key.salt()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Keeps the static SAs' numbers on disk while the data plane runs.
#[derive(Debug)]
pub struct SeqKeeper {
    state: StateDir,
    /// The static SAs, with the number last stored for each.
    sas: Vec<(SaSpec, u64)>,
}

impl SeqKeeper {
    /// Prepares the static SAs `specs` before they are installed: an
    /// outbound one gets `initial_seq` past everything reserved before,
    /// and its first block is reserved on disk now.
    pub fn prepare(state: StateDir, specs: &mut [SaSpec]) -> Result<SeqKeeper> {
        let mut sas = Vec::new();
        for spec in specs.iter_mut() {
            let stored = state.load_seq(spec)?;
            let value = match spec.direction {
                Direction::Out => {
                    let first = stored.map_or(1, |last| last.saturating_add(1));
                    spec.initial_seq = Some(first);
                    first.saturating_add(RESERVE_BLOCK - 1)
                }
                Direction::In => stored.unwrap_or(0),
            };
            sas.push((spec.clone(), value));
        }
        let reserved: Vec<(&SaSpec, u64)> = sas
            .iter()
            .filter(|(spec, _)| spec.direction == Direction::Out)
            .map(|(spec, last)| (spec, *last))
            .collect();
        state.store_seqs(&reserved)?;
        Ok(SeqKeeper { state, sas })
    }

    /// Right after the SAs are installed, before any worker runs: the
    /// outbound ones may use their first block, the inbound ones refuse
    /// what they accepted before the restart.
    pub fn install(&self, tables: &Tables) {
        let snapshot = tables.load();
        for (spec, value) in &self.sas {
            match spec.direction {
                Direction::Out => {
                    if let Some(entry) = snapshot.outbound_sa(spec.spi) {
                        entry.sa.reserve_seq(*value);
                    }
                }
                Direction::In => {
                    if let (Some(entry), true) = (snapshot.inbound(spec.spi), *value > 0) {
                        entry.sa.replay_window().restore_floor(*value);
                    }
                }
            }
        }
    }

    /// Reserves the next block for outbound SAs that used half of theirs
    /// and stores inbound SAs' new highest numbers. An SA rebuilt by an
    /// update keeps its reservation (see `Tables::update_sa`).
    pub fn keep(&mut self, tables: &Tables) -> Result<()> {
        let snapshot = tables.load();
        // (index in `sas`, the number to store), all stored in one sync
        // before any reservation is raised.
        let mut updates: Vec<(usize, u64)> = Vec::new();
        for (i, (spec, stored)) in self.sas.iter().enumerate() {
            match spec.direction {
                Direction::Out => {
                    let Some(entry) = snapshot.outbound_sa(spec.spi) else {
                        continue;
                    };
                    let sa = &entry.sa;
                    let next = sa.next_seq().unwrap_or(sa.seq_max());
                    let reserved = sa.seq_reserved().min(*stored);
                    if next.saturating_add(RESERVE_BLOCK / 2) <= reserved {
                        continue;
                    }
                    let last = next
                        .max(reserved)
                        .saturating_add(RESERVE_BLOCK)
                        .min(sa.seq_max());
                    updates.push((i, last));
                }
                Direction::In => {
                    let Some(entry) = snapshot.inbound(spec.spi) else {
                        continue;
                    };
                    let highest = entry.sa.replay_window().highest();
                    if highest > *stored {
                        updates.push((i, highest));
                    }
                }
            }
        }
        let items: Vec<(&SaSpec, u64)> =
            updates.iter().map(|&(i, v)| (&self.sas[i].0, v)).collect();
        self.state.store_seqs(&items)?;
        for (i, value) in updates {
            let (spec, stored) = &mut self.sas[i];
            *stored = value;
            if spec.direction == Direction::Out {
                if let Some(entry) = snapshot.outbound_sa(spec.spi) {
                    entry.sa.reserve_seq(value);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Backend;
    use xdpsec_api::{sample_config, StaticConfig};

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("xdpsec-persist-{name}-{}", std::process::id()));
        fs::remove_dir_all(&dir).ok();
        dir
    }

    fn static_sas() -> Vec<SaSpec> {
        StaticConfig::parse(sample_config(), "sample.toml")
            .expect("sample parses")
            .sas
    }

    /// One start of a data plane with the sample's static SAs: `sent`
    /// packets go out, the highest inbound number accepted is `received`.
    fn run_once(dir: &Path, sent: u64, received: u64) -> (Vec<u64>, Tables) {
        let mut specs = static_sas();
        let mut keeper = SeqKeeper::prepare(StateDir::open(dir).unwrap(), &mut specs).unwrap();
        let tables = Tables::new(Backend::available()[0]);
        for spec in &specs {
            tables.add_sa(spec).unwrap();
        }
        keeper.install(&tables);
        let snapshot = tables.load();
        let mut seqs = Vec::new();
        for spec in specs.iter().filter(|s| s.direction == Direction::Out) {
            let sa = &snapshot.outbound_sa(spec.spi).unwrap().sa;
            for _ in 0..sent {
                seqs.push(sa.take_seq().expect("reserved").0);
                keeper.keep(&tables).unwrap();
            }
        }
        for spec in specs.iter().filter(|s| s.direction == Direction::In) {
            let window = snapshot.inbound(spec.spi).unwrap().sa.replay_window();
            if received > 0 {
                window.accept(received).ok();
            }
        }
        keeper.keep(&tables).unwrap();
        drop(snapshot);
        (seqs, tables)
    }

    #[test]
    fn restarts_never_reuse_an_outbound_number_and_keep_the_replay_floor() {
        let dir = scratch("restarts");
        let mut seen = std::collections::HashSet::new();
        for round in 0..3 {
            let (seqs, _) = run_once(&dir, 5, 100 + round);
            for seq in seqs {
                assert!(seen.insert(seq), "sequence number {seq} sent twice");
            }
        }
        let (_, tables) = run_once(&dir, 0, 0);
        let spec = static_sas()
            .into_iter()
            .find(|s| s.direction == Direction::In)
            .unwrap();
        let snapshot = tables.load();
        let window = snapshot.inbound(spec.spi).unwrap().sa.replay_window();
        assert!(
            window.check(102).is_err(),
            "a number accepted before a restart passed after it"
        );
        assert!(window.check(103).is_ok());
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_number_past_the_reservation_is_refused_until_it_is_on_disk() {
        let dir = scratch("reserve");
        let mut specs = static_sas();
        let mut keeper = SeqKeeper::prepare(StateDir::open(&dir).unwrap(), &mut specs).unwrap();
        let tables = Tables::new(Backend::available()[0]);
        for spec in &specs {
            tables.add_sa(spec).unwrap();
        }
        keeper.install(&tables);
        let out = specs
            .iter()
            .find(|s| s.direction == Direction::Out)
            .unwrap();
        let snapshot = tables.load();
        let sa = &snapshot.outbound_sa(out.spi).unwrap().sa;
        assert_eq!(sa.seq_reserved(), RESERVE_BLOCK);
        sa.reserve_seq(1);
        assert_eq!(sa.take_seq().unwrap().0, 1);
        assert_eq!(sa.take_seq(), Err(crate::esp::EspError::SeqNotReserved));
        keeper.keep(&tables).unwrap();
        assert!(sa.seq_reserved() > 3);
        assert_eq!(sa.take_seq().unwrap().0, 3, "the refused number is skipped");
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_new_key_under_an_old_spi_starts_afresh() {
        let dir = scratch("rekeyed");
        let state = StateDir::open(&dir).unwrap();
        let mut spec = static_sas()
            .into_iter()
            .find(|s| s.direction == Direction::In)
            .unwrap();
        state.store_seq(&spec, 77).unwrap();
        assert_eq!(state.load_seq(&spec).unwrap(), Some(77));
        spec.key = xdpsec_api::GcmKey::new(&[7; 16], [1, 2, 3, 4]).unwrap();
        assert_eq!(state.load_seq(&spec).unwrap(), None);
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn many_numbers_stored_in_one_sync_read_back_each() {
        let dir = scratch("many");
        let state = StateDir::open(&dir).unwrap();
        let template = static_sas()
            .into_iter()
            .find(|s| s.direction == Direction::Out)
            .unwrap();
        let specs: Vec<SaSpec> = (0..SYNC_EACH_UP_TO as u32 * 3)
            .map(|i| SaSpec {
                spi: 0x1000 + i,
                ..template.clone()
            })
            .collect();
        let items: Vec<(&SaSpec, u64)> = specs.iter().zip(1000..).collect();
        state.store_seqs(&items).unwrap();
        for (spec, seq) in &items {
            assert_eq!(state.load_seq(spec).unwrap(), Some(*seq));
        }
        let leftovers = fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "tmp"))
            })
            .count();
        assert_eq!(leftovers, 0, "temporary files left behind");
        fs::remove_dir_all(&dir).ok();
    }
}
