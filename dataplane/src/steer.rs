//! Loader of the XDP steering program `steer` (crate `xdpsec-ebpf`, built
//! into this crate by build.rs through aya-build).
//!
//! [`Steer::load`] loads the embedded object into the kernel; the program can
//! then be attached to interfaces by name ([`Steer::attach`], native mode
//! unless generic mode is asked for) and its per-verdict packet counters read
//! ([`Steer::counters`]). Dropping a [`Steer`] detaches it everywhere and
//! unloads it.
//!
//! What the program steers is set through typed methods over its maps:
//! interfaces and their roles ([`Steer::set_interface`]), the AF_XDP socket
//! of each (slot, queue) ([`Steer::register_xsk`]), the gateway's tunnel
//! addresses ([`Steer::add_local_address`]) and the protected prefixes
//! ([`Steer::add_protected_prefix`]). The rules themselves are described in
//! `ebpf/steer/src/decide.rs`; in short, on an outside interface ESP and
//! ESP-in-UDP to a local address go to the socket, on an inside interface
//! packets to a protected prefix do, and everything else goes to the kernel.
//!
//! Map updates take effect for the next packet; the program needs no reload.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap as BpfHashMap, Map, MapError, PerCpuArray, XskMap};
use aya::programs::xdp::XdpLinkId;
use aya::programs::{ProgramError, Xdp, XdpMode};
use aya::{Ebpf, EbpfError, EbpfLoader};
use xdpsec_ebpf_common::{
    v4_key, xsk_index, IfaceConfig, COUNTERS_MAP, IFACES_MAP, LOCAL_V4_MAP, LOCAL_V6_MAP,
    MAX_QUEUES, MAX_SLOTS, PROTECT_LEN, PROTECT_V4_MAP, PROTECT_V6_MAP, STEER_PROGRAM,
    VERDICT_COUNT, XSKS_MAP,
};
pub use xdpsec_ebpf_common::{Role, Verdict};

/// Every map the program must have.
const MAPS: [&str; 7] = [
    COUNTERS_MAP,
    XSKS_MAP,
    IFACES_MAP,
    LOCAL_V4_MAP,
    LOCAL_V6_MAP,
    PROTECT_V4_MAP,
    PROTECT_V6_MAP,
];

/// The eBPF object (ELF) of the XDP program, embedded at build time.
pub static STEER_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdpsec-steer"));

const EPERM: i32 = 1;
const ENOENT: i32 = 2;

/// What went wrong loading, attaching or reading the XDP program.
#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    /// The kernel refused for lack of privilege.
    #[error(
        "{action}: operation not permitted; loading and attaching XDP programs \
         needs CAP_BPF and CAP_NET_ADMIN (run as root or grant both capabilities)"
    )]
    Privilege {
        /// What was being done.
        action: &'static str,
        /// The error from aya.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The embedded object could not be loaded (parse, map creation, ...).
    #[error("loading the XDP steering object failed: {0}")]
    Load(#[source] EbpfError),
    /// The object does not have the expected program.
    #[error("the XDP object has no XDP program named `{0}`")]
    MissingProgram(&'static str),
    /// The object does not have the expected map.
    #[error("the XDP object has no map named `{0}`")]
    MissingMap(&'static str),
    /// The kernel rejected the program (the message carries the verifier log).
    #[error("loading the XDP program `steer` into the kernel failed: {0}")]
    Verify(#[source] ProgramError),
    /// Reading or updating a map failed.
    #[error("{op} (map `{map}`) failed: {source}")]
    Map {
        /// Map name.
        map: &'static str,
        /// What was being done, e.g. "reading counter 3".
        op: String,
        /// The error from aya.
        #[source]
        source: MapError,
    },
    /// An interface slot beyond the XSKS map.
    #[error("interface slot {slot} is out of range (slots are 0 to {})", MAX_SLOTS - 1)]
    SlotOutOfRange {
        /// The slot asked for.
        slot: u32,
    },
    /// A receive queue beyond what the XSKS map has room for per slot.
    #[error("receive queue {queue} is out of range (queues are 0 to {})", MAX_QUEUES - 1)]
    QueueOutOfRange {
        /// The queue asked for.
        queue: u32,
    },
    /// A prefix length beyond the address family's width.
    #[error("invalid prefix {addr}/{prefix_len}: the length exceeds {max}")]
    PrefixLength {
        /// The address given.
        addr: IpAddr,
        /// The length given.
        prefix_len: u8,
        /// 32 or 128.
        max: u8,
    },
    /// A prefix with bits set beyond its length, e.g. `10.1.0.1/16`.
    #[error(
        "invalid prefix {addr}/{prefix_len}: host bits are set (did you mean \
         {network}/{prefix_len}?)"
    )]
    HostBitsSet {
        /// The address given.
        addr: IpAddr,
        /// The length given.
        prefix_len: u8,
        /// The same prefix with the host bits cleared.
        network: IpAddr,
    },
    /// Removing something that is not there.
    #[error("{0} is not configured in the XDP program")]
    NotFound(String),
    /// Attaching to an interface failed.
    #[error("attaching the XDP program to `{ifname}` in {mode} mode failed: {source}")]
    Attach {
        /// Interface name.
        ifname: String,
        /// Requested mode.
        mode: AttachMode,
        /// The error from aya.
        #[source]
        source: ProgramError,
    },
    /// The program is already attached to this interface by this loader.
    #[error("the XDP program is already attached to `{0}`")]
    AlreadyAttached(String),
    /// The program is not attached to this interface by this loader.
    #[error("the XDP program is not attached to `{0}`")]
    NotAttached(String),
    /// Detaching from an interface failed.
    #[error("detaching the XDP program from `{ifname}` failed: {source}")]
    Detach {
        /// Interface name.
        ifname: String,
        /// The error from aya.
        #[source]
        source: ProgramError,
    },
}

impl SteerError {
    /// `err` as [`SteerError::Privilege`] if its cause is EPERM, else as
    /// `other(err)`.
    fn classify<E>(action: &'static str, err: E, other: impl FnOnce(E) -> Self) -> Self
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        if has_errno(&err, EPERM) {
            Self::Privilege {
                action,
                source: Box::new(err),
            }
        } else {
            other(err)
        }
    }
}

/// Whether an error, or any error in its source chain, is the OS error
/// `errno`.
fn has_errno(err: &(dyn std::error::Error + 'static), errno: i32) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
            == Some(errno)
        {
            return true;
        }
        cur = e.source();
    }
    false
}

/// The error of `op` on `map`: [`SteerError::Privilege`] for EPERM,
/// [`SteerError::NotFound`] (naming `what`) for ENOENT when `missing` is
/// set, else [`SteerError::Map`].
fn map_error(map: &'static str, op: String, missing: Option<&str>, source: MapError) -> SteerError {
    if let Some(what) = missing {
        if has_errno(&source, ENOENT) {
            return SteerError::NotFound(what.to_owned());
        }
    }
    SteerError::classify("accessing an XDP map", source, |source| SteerError::Map {
        map,
        op,
        source,
    })
}

/// How the program is attached to an interface.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum AttachMode {
    /// Native (driver) mode. The default: veth and real NICs support it.
    #[default]
    Native,
    /// Generic (skb) mode: slower, works on any interface. Only on request.
    Generic,
}

impl AttachMode {
    fn xdp_mode(self) -> XdpMode {
        match self {
            Self::Native => XdpMode::Driver,
            Self::Generic => XdpMode::Skb,
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Native => "native",
            Self::Generic => "generic",
        })
    }
}

/// Packets counted by the program per [`Verdict`], summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerdictCounters([u64; VERDICT_COUNT]);

impl VerdictCounters {
    /// Packets counted under `verdict`.
    pub fn get(&self, verdict: Verdict) -> u64 {
        self.0[verdict.index() as usize]
    }

    /// Packets counted under the verdict named `name` (see
    /// [`Verdict::name`], e.g. `"esp_redirected"`), if there is one.
    pub fn by_name(&self, name: &str) -> Option<u64> {
        Verdict::from_name(name).map(|v| self.get(v))
    }

    /// Every verdict with its count, in index order.
    pub fn iter(&self) -> impl Iterator<Item = (Verdict, u64)> + '_ {
        Verdict::ALL.iter().map(|&v| (v, self.get(v)))
    }

    /// Packets redirected to AF_XDP sockets.
    pub fn redirected(&self) -> u64 {
        self.iter()
            .filter(|(v, _)| v.is_redirect())
            .map(|(_, n)| n)
            .sum()
    }

    /// Packets seen, all verdicts.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Per-verdict difference `self - earlier` (counters only grow).
    pub fn since(&self, earlier: &Self) -> Self {
        let mut out = [0; VERDICT_COUNT];
        for (o, (now, then)) in out.iter_mut().zip(self.0.iter().zip(earlier.0.iter())) {
            *o = now.wrapping_sub(*then);
        }
        Self(out)
    }
}

impl fmt::Display for VerdictCounters {
    /// The non-zero counters, `name=count` separated by spaces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (v, n) in self.iter().filter(|(_, n)| *n > 0) {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            write!(f, "{}={n}", v.name())?;
        }
        if first {
            f.write_str("(none)")?;
        }
        Ok(())
    }
}

/// A prefix as the LPM key of its family, with its host bits checked.
enum PrefixKey {
    V4(Key<[u8; 4]>),
    V6(Key<[u8; 16]>),
}

fn prefix_key(addr: IpAddr, prefix_len: u8) -> Result<PrefixKey, SteerError> {
    let (network, max) = match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix_len.min(32)));
            let bits = u32::from(a) & mask.unwrap_or(0);
            (IpAddr::V4(Ipv4Addr::from(bits)), 32)
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix_len.min(128)));
            let bits = u128::from(a) & mask.unwrap_or(0);
            (IpAddr::V6(Ipv6Addr::from(bits)), 128)
        }
    };
    if prefix_len > max {
        return Err(SteerError::PrefixLength {
            addr,
            prefix_len,
            max,
        });
    }
    if network != addr {
        return Err(SteerError::HostBitsSet {
            addr,
            prefix_len,
            network,
        });
    }
    Ok(match addr {
        IpAddr::V4(a) => PrefixKey::V4(Key::new(u32::from(prefix_len), a.octets())),
        IpAddr::V6(a) => PrefixKey::V6(Key::new(u32::from(prefix_len), a.octets())),
    })
}

fn checked_xsk_index(slot: u32, queue: u32) -> Result<u32, SteerError> {
    if slot >= MAX_SLOTS {
        return Err(SteerError::SlotOutOfRange { slot });
    }
    xsk_index(slot, queue).ok_or(SteerError::QueueOutOfRange { queue })
}

/// The loaded XDP steering program and the interfaces it is attached to.
#[derive(Debug)]
pub struct Steer {
    ebpf: Ebpf,
    links: HashMap<String, XdpLinkId>,
}

impl Steer {
    /// Loads the embedded object and the `steer` program into the kernel.
    pub fn load() -> Result<Self, SteerError> {
        Self::load_sized(PROTECT_LEN)
    }

    /// [`Steer::load`] with room for `protected_prefixes` prefixes of each
    /// family (`[dataplane] max_protected_prefixes`).
    pub fn load_sized(protected_prefixes: u32) -> Result<Self, SteerError> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(PROTECT_V4_MAP, protected_prefixes)
            .map_max_entries(PROTECT_V6_MAP, protected_prefixes)
            .load(STEER_OBJECT)
            .map_err(|e| SteerError::classify("loading the XDP object", e, SteerError::Load))?;
        let program: &mut Xdp = ebpf
            .program_mut(STEER_PROGRAM)
            .ok_or(SteerError::MissingProgram(STEER_PROGRAM))?
            .try_into()
            .map_err(|_| SteerError::MissingProgram(STEER_PROGRAM))?;
        program
            .load()
            .map_err(|e| SteerError::classify("loading the XDP program", e, SteerError::Verify))?;
        if let Some(missing) = MAPS.into_iter().find(|name| ebpf.map(name).is_none()) {
            return Err(SteerError::MissingMap(missing));
        }
        Ok(Self {
            ebpf,
            links: HashMap::new(),
        })
    }

    /// The loaded `steer` program (for its id, fd, or `BPF_PROG_TEST_RUN`).
    pub fn program(&self) -> &Xdp {
        self.ebpf
            .program(STEER_PROGRAM)
            .and_then(|p| <&Xdp>::try_from(p).ok())
            .expect("checked in Steer::load")
    }

    /// Packets counted per verdict since the program was loaded, summed
    /// over CPUs.
    pub fn counters(&self) -> Result<VerdictCounters, SteerError> {
        let map = self
            .ebpf
            .map(COUNTERS_MAP)
            .ok_or(SteerError::MissingMap(COUNTERS_MAP))?;
        let array = PerCpuArray::<_, u64>::try_from(map)
            .map_err(|e| map_error(COUNTERS_MAP, "opening".into(), None, e))?;
        let mut out = [0u64; VERDICT_COUNT];
        for verdict in Verdict::ALL {
            let per_cpu = array.get(&verdict.index(), 0).map_err(|e| {
                map_error(
                    COUNTERS_MAP,
                    format!("reading counter {}", verdict.name()),
                    None,
                    e,
                )
            })?;
            out[verdict.index() as usize] = per_cpu.iter().sum();
        }
        Ok(VerdictCounters(out))
    }

    /// Steers on interface `ifindex` (of the namespace it is attached in)
    /// with `role`; its AF_XDP sockets are registered under `slot` (below
    /// [`MAX_SLOTS`]). Replaces an earlier setting of the same interface.
    /// Attaching the program ([`Steer::attach`]) is a separate step; an
    /// attached interface that is not set is passed through untouched.
    pub fn set_interface(&mut self, ifindex: u32, role: Role, slot: u32) -> Result<(), SteerError> {
        if slot >= MAX_SLOTS {
            return Err(SteerError::SlotOutOfRange { slot });
        }
        let op = || format!("setting interface {ifindex} ({}, slot {slot})", role.name());
        let mut map = self.hash_map::<u32, IfaceConfig>(IFACES_MAP)?;
        map.insert(ifindex, IfaceConfig::new(role, slot), 0)
            .map_err(|e| map_error(IFACES_MAP, op(), None, e))
    }

    /// Stops steering on interface `ifindex`: its frames are passed.
    pub fn remove_interface(&mut self, ifindex: u32) -> Result<(), SteerError> {
        let what = format!("interface {ifindex}");
        let mut map = self.hash_map::<u32, IfaceConfig>(IFACES_MAP)?;
        map.remove(&ifindex)
            .map_err(|e| map_error(IFACES_MAP, format!("removing {what}"), Some(&what), e))
    }

    /// The role and slot of interface `ifindex`, if it is set.
    pub fn interface(&self, ifindex: u32) -> Result<Option<(Role, u32)>, SteerError> {
        let map = self
            .ebpf
            .map(IFACES_MAP)
            .ok_or(SteerError::MissingMap(IFACES_MAP))?;
        let map = BpfHashMap::<_, u32, IfaceConfig>::try_from(map)
            .map_err(|e| map_error(IFACES_MAP, "opening".into(), None, e))?;
        match map.get(&ifindex, 0) {
            Ok(c) => Ok(Role::from_bits(c.role).map(|role| (role, c.slot))),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_error(
                IFACES_MAP,
                format!("reading interface {ifindex}"),
                None,
                e,
            )),
        }
    }

    /// Registers the AF_XDP socket `socket` for receive queue `queue` of the
    /// interface in slot `slot`: frames the program steers from there go to
    /// it. The socket must be bound to that interface and queue for the
    /// kernel to deliver them (else they are dropped and counted by the
    /// socket's `rx_dropped`). Replaces an earlier registration.
    pub fn register_xsk(
        &mut self,
        slot: u32,
        queue: u32,
        socket: impl AsFd,
    ) -> Result<(), SteerError> {
        let index = checked_xsk_index(slot, queue)?;
        let mut map = self.xsk_map()?;
        map.set(index, socket.as_fd(), 0).map_err(|e| {
            map_error(
                XSKS_MAP,
                format!(
                    "registering an AF_XDP socket for slot {slot} queue {queue} (index {index})"
                ),
                None,
                e,
            )
        })
    }

    /// Removes the socket of (`slot`, `queue`): frames steered there are
    /// dropped and counted as [`Verdict::RedirectFailed`].
    /// Unregistering an empty (slot, queue) is not an error: the kernel's
    /// XSKMAP delete does not tell.
    pub fn unregister_xsk(&mut self, slot: u32, queue: u32) -> Result<(), SteerError> {
        let index = checked_xsk_index(slot, queue)?;
        let op = format!("removing the AF_XDP socket of slot {slot} queue {queue}");
        let mut map = self.xsk_map()?;
        map.unset(index)
            .map_err(|e| map_error(XSKS_MAP, op, None, e))
    }

    /// Adds `addr` to the gateway's tunnel addresses: ESP and ESP-in-UDP to
    /// it arriving on an outside interface are steered.
    pub fn add_local_address(&mut self, addr: IpAddr) -> Result<(), SteerError> {
        let op = format!("adding local address {addr}");
        match addr {
            IpAddr::V4(a) => self
                .hash_map::<u32, u32>(LOCAL_V4_MAP)?
                .insert(v4_key(a.octets()), 0, 0)
                .map_err(|e| map_error(LOCAL_V4_MAP, op, None, e)),
            IpAddr::V6(a) => self
                .hash_map::<[u8; 16], u32>(LOCAL_V6_MAP)?
                .insert(a.octets(), 0, 0)
                .map_err(|e| map_error(LOCAL_V6_MAP, op, None, e)),
        }
    }

    /// Removes `addr` from the gateway's tunnel addresses.
    pub fn remove_local_address(&mut self, addr: IpAddr) -> Result<(), SteerError> {
        let what = format!("local address {addr}");
        let op = format!("removing {what}");
        match addr {
            IpAddr::V4(a) => self
                .hash_map::<u32, u32>(LOCAL_V4_MAP)?
                .remove(&v4_key(a.octets()))
                .map_err(|e| map_error(LOCAL_V4_MAP, op, Some(&what), e)),
            IpAddr::V6(a) => self
                .hash_map::<[u8; 16], u32>(LOCAL_V6_MAP)?
                .remove(&a.octets())
                .map_err(|e| map_error(LOCAL_V6_MAP, op, Some(&what), e)),
        }
    }

    /// Adds the protected prefix `addr/prefix_len` (a remote network, host
    /// bits clear): packets to it arriving on an inside interface are
    /// steered. The gateway's own addresses must not fall in it.
    pub fn add_protected_prefix(&mut self, addr: IpAddr, prefix_len: u8) -> Result<(), SteerError> {
        let op = format!("adding protected prefix {addr}/{prefix_len}");
        match prefix_key(addr, prefix_len)? {
            PrefixKey::V4(key) => self
                .lpm_trie::<[u8; 4]>(PROTECT_V4_MAP)?
                .insert(&key, 0, 0)
                .map_err(|e| map_error(PROTECT_V4_MAP, op, None, e)),
            PrefixKey::V6(key) => self
                .lpm_trie::<[u8; 16]>(PROTECT_V6_MAP)?
                .insert(&key, 0, 0)
                .map_err(|e| map_error(PROTECT_V6_MAP, op, None, e)),
        }
    }

    /// Removes the protected prefix `addr/prefix_len` (exactly as added).
    pub fn remove_protected_prefix(
        &mut self,
        addr: IpAddr,
        prefix_len: u8,
    ) -> Result<(), SteerError> {
        let what = format!("protected prefix {addr}/{prefix_len}");
        let op = format!("removing {what}");
        match prefix_key(addr, prefix_len)? {
            PrefixKey::V4(key) => self
                .lpm_trie::<[u8; 4]>(PROTECT_V4_MAP)?
                .remove(&key)
                .map_err(|e| map_error(PROTECT_V4_MAP, op, Some(&what), e)),
            PrefixKey::V6(key) => self
                .lpm_trie::<[u8; 16]>(PROTECT_V6_MAP)?
                .remove(&key)
                .map_err(|e| map_error(PROTECT_V6_MAP, op, Some(&what), e)),
        }
    }

    /// Attaches the program to the interface `ifname` (in the caller's
    /// network namespace).
    pub fn attach(&mut self, ifname: &str, mode: AttachMode) -> Result<(), SteerError> {
        if self.links.contains_key(ifname) {
            return Err(SteerError::AlreadyAttached(ifname.to_owned()));
        }
        let link = self
            .program_mut()
            .attach(ifname, mode.xdp_mode())
            .map_err(|source| {
                SteerError::classify("attaching the XDP program", source, |source| {
                    SteerError::Attach {
                        ifname: ifname.to_owned(),
                        mode,
                        source,
                    }
                })
            })?;
        self.links.insert(ifname.to_owned(), link);
        Ok(())
    }

    /// Detaches the program from `ifname`.
    pub fn detach(&mut self, ifname: &str) -> Result<(), SteerError> {
        let link = self
            .links
            .remove(ifname)
            .ok_or_else(|| SteerError::NotAttached(ifname.to_owned()))?;
        self.program_mut()
            .detach(link)
            .map_err(|source| SteerError::Detach {
                ifname: ifname.to_owned(),
                source,
            })
    }

    /// Interfaces the program is attached to.
    pub fn attached(&self) -> impl Iterator<Item = &str> + '_ {
        self.links.keys().map(String::as_str)
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut Map, SteerError> {
        self.ebpf.map_mut(name).ok_or(SteerError::MissingMap(name))
    }

    fn hash_map<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<BpfHashMap<&mut aya::maps::MapData, K, V>, SteerError> {
        BpfHashMap::try_from(self.map_mut(name)?)
            .map_err(|e| map_error(name, "opening".into(), None, e))
    }

    fn lpm_trie<K: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<LpmTrie<&mut aya::maps::MapData, K, u32>, SteerError> {
        LpmTrie::try_from(self.map_mut(name)?)
            .map_err(|e| map_error(name, "opening".into(), None, e))
    }

    fn xsk_map(&mut self) -> Result<XskMap<&mut aya::maps::MapData>, SteerError> {
        XskMap::try_from(self.map_mut(XSKS_MAP)?)
            .map_err(|e| map_error(XSKS_MAP, "opening".into(), None, e))
    }

    fn program_mut(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(STEER_PROGRAM)
            .and_then(|p| <&mut Xdp>::try_from(p).ok())
            .expect("checked in Steer::load")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_is_embedded_elf_for_bpf() {
        assert_eq!(&STEER_OBJECT[..4], b"\x7fELF");
        // e_machine (little endian) = EM_BPF (247).
        assert_eq!(
            u16::from_le_bytes([STEER_OBJECT[18], STEER_OBJECT[19]]),
            247
        );
    }

    #[test]
    fn eperm_is_found_down_the_chain() {
        let err = MapError::CreateError {
            name: "COUNTERS".into(),
            io_error: io::Error::from_raw_os_error(EPERM),
        };
        let err = SteerError::classify("x", EbpfError::MapError(err), SteerError::Load);
        assert!(matches!(err, SteerError::Privilege { .. }));
        assert!(err.to_string().contains("CAP_BPF"));

        let err = MapError::CreateError {
            name: "COUNTERS".into(),
            io_error: io::Error::from_raw_os_error(22),
        };
        let err = SteerError::classify("x", EbpfError::MapError(err), SteerError::Load);
        assert!(matches!(err, SteerError::Load(_)));
    }

    #[test]
    fn enoent_becomes_not_found_only_when_asked() {
        let enoent = || {
            MapError::from(aya::sys::SyscallError {
                call: "bpf_map_delete_elem",
                io_error: io::Error::from_raw_os_error(ENOENT),
            })
        };
        let err = map_error("XSKS", "x".into(), Some("slot 1"), enoent());
        assert!(
            matches!(err, SteerError::NotFound(ref w) if w == "slot 1"),
            "{err:?}"
        );
        let err = map_error("XSKS", "x".into(), None, enoent());
        assert!(
            matches!(err, SteerError::Map { map: "XSKS", .. }),
            "{err:?}"
        );
    }

    #[test]
    fn counters_arithmetic() {
        let mut a = [0; VERDICT_COUNT];
        a[Verdict::EspRedirected.index() as usize] = 1;
        a[Verdict::OtherPass.index() as usize] = 4;
        let mut b = a;
        b[Verdict::ProtectedRedirected.index() as usize] = 2;
        b[Verdict::OtherPass.index() as usize] = 6;
        let (a, b) = (VerdictCounters(a), VerdictCounters(b));
        let d = b.since(&a);
        assert_eq!(d.get(Verdict::ProtectedRedirected), 2);
        assert_eq!(d.get(Verdict::OtherPass), 2);
        assert_eq!(d.get(Verdict::EspRedirected), 0);
        assert_eq!(b.total(), 9);
        assert_eq!(b.redirected(), 3);
        assert_eq!(b.by_name("other_pass"), Some(6));
        assert_eq!(b.by_name("nonesuch"), None);
        assert_eq!(d.to_string(), "protected_redirected=2 other_pass=2");
        assert_eq!(VerdictCounters::default().to_string(), "(none)");
    }

    #[test]
    fn prefixes_are_checked() {
        let v4 = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(matches!(
            prefix_key(v4("10.1.0.0"), 16),
            Ok(PrefixKey::V4(k)) if k.prefix_len() == 16 && k.data() == [10, 1, 0, 0]
        ));
        assert!(matches!(prefix_key(v4("0.0.0.0"), 0), Ok(PrefixKey::V4(_))));
        assert!(matches!(
            prefix_key(v4("10.1.2.3"), 32),
            Ok(PrefixKey::V4(_))
        ));
        assert!(matches!(prefix_key(v4("::"), 0), Ok(PrefixKey::V6(_))));
        assert!(matches!(
            prefix_key(v4("fd00:1::"), 32),
            Ok(PrefixKey::V6(k)) if k.prefix_len() == 32
        ));
        let err = prefix_key(v4("10.1.2.3"), 16).err().unwrap();
        assert!(
            err.to_string().contains("did you mean 10.1.0.0/16"),
            "{err}"
        );
        let err = prefix_key(v4("fd00:1::1"), 64).err().unwrap();
        assert!(
            err.to_string().contains("did you mean fd00:1::/64"),
            "{err}"
        );
        assert!(matches!(
            prefix_key(v4("10.0.0.0"), 33),
            Err(SteerError::PrefixLength { max: 32, .. })
        ));
        assert!(matches!(
            prefix_key(v4("fd00::"), 129),
            Err(SteerError::PrefixLength { max: 128, .. })
        ));
    }

    #[test]
    fn xsk_indices_are_range_checked() {
        assert_eq!(checked_xsk_index(1, 2).unwrap(), MAX_QUEUES + 2);
        assert!(matches!(
            checked_xsk_index(MAX_SLOTS, 0),
            Err(SteerError::SlotOutOfRange { .. })
        ));
        assert!(matches!(
            checked_xsk_index(0, MAX_QUEUES),
            Err(SteerError::QueueOutOfRange { .. })
        ));
    }
}
