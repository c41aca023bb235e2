//! Loader of the XDP steering program `steer` (crate `xdpsec-ebpf`, built
//! into this crate by build.rs through aya-build).
//!
//! [`Steer::load`] loads the embedded object into the kernel; the program can
//! then be attached to interfaces by name ([`Steer::attach`], native mode
//! unless generic mode is asked for) and its per-class packet counters read
//! ([`Steer::counters`]). Dropping a [`Steer`] detaches it everywhere and
//! unloads it.

use std::collections::HashMap;
use std::fmt;
use std::io;

use aya::maps::{MapError, PerCpuArray};
use aya::programs::xdp::XdpLinkId;
use aya::programs::{ProgramError, Xdp, XdpMode};
use aya::{Ebpf, EbpfError};
use xdpsec_ebpf_common::{Class, CLASS_COUNT, CLASS_COUNTERS_MAP, STEER_PROGRAM};

/// The eBPF object (ELF) of the XDP program, embedded at build time.
pub static STEER_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdpsec-steer"));

const EPERM: i32 = 1;

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
    /// Reading a map failed.
    #[error("reading the map `{map}` failed: {source}")]
    Map {
        /// Map name.
        map: &'static str,
        /// The error from aya.
        #[source]
        source: MapError,
    },
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
        if is_eperm(&err) {
            Self::Privilege {
                action,
                source: Box::new(err),
            }
        } else {
            other(err)
        }
    }
}

/// Whether an error, or any error in its source chain, is EPERM.
fn is_eperm(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
            == Some(EPERM)
        {
            return true;
        }
        cur = e.source();
    }
    false
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

/// Packets seen by the program per class, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassCounters([u64; CLASS_COUNT]);

impl ClassCounters {
    /// Packets seen of `class`.
    pub fn get(&self, class: Class) -> u64 {
        self.0[class.index() as usize]
    }

    /// Every class with its count, in index order.
    pub fn iter(&self) -> impl Iterator<Item = (Class, u64)> + '_ {
        Class::ALL.iter().map(|&class| (class, self.get(class)))
    }

    /// Packets seen, all classes.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Per-class difference `self - earlier` (counters only grow).
    pub fn since(&self, earlier: &Self) -> Self {
        let mut out = [0; CLASS_COUNT];
        for (o, (now, then)) in out.iter_mut().zip(self.0.iter().zip(earlier.0.iter())) {
            *o = now.wrapping_sub(*then);
        }
        Self(out)
    }
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
        let mut ebpf = Ebpf::load(STEER_OBJECT)
            .map_err(|e| SteerError::classify("loading the XDP object", e, SteerError::Load))?;
        let program: &mut Xdp = ebpf
            .program_mut(STEER_PROGRAM)
            .ok_or(SteerError::MissingProgram(STEER_PROGRAM))?
            .try_into()
            .map_err(|_| SteerError::MissingProgram(STEER_PROGRAM))?;
        program
            .load()
            .map_err(|e| SteerError::classify("loading the XDP program", e, SteerError::Verify))?;
        if ebpf.map(CLASS_COUNTERS_MAP).is_none() {
            return Err(SteerError::MissingMap(CLASS_COUNTERS_MAP));
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

    /// Packets seen per class since the program was loaded, summed over CPUs.
    pub fn counters(&self) -> Result<ClassCounters, SteerError> {
        let map_err = |source| SteerError::Map {
            map: CLASS_COUNTERS_MAP,
            source,
        };
        let map = self
            .ebpf
            .map(CLASS_COUNTERS_MAP)
            .ok_or(SteerError::MissingMap(CLASS_COUNTERS_MAP))?;
        let array = PerCpuArray::<_, u64>::try_from(map).map_err(map_err)?;
        let mut out = [0u64; CLASS_COUNT];
        for class in Class::ALL {
            let per_cpu = array.get(&class.index(), 0).map_err(map_err)?;
            out[class.index() as usize] = per_cpu.iter().sum();
        }
        Ok(ClassCounters(out))
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
            name: "CLASS_COUNTERS".into(),
            io_error: io::Error::from_raw_os_error(EPERM),
        };
        let err = SteerError::classify("x", EbpfError::MapError(err), SteerError::Load);
        assert!(matches!(err, SteerError::Privilege { .. }));
        assert!(err.to_string().contains("CAP_BPF"));

        let err = MapError::CreateError {
            name: "CLASS_COUNTERS".into(),
            io_error: io::Error::from_raw_os_error(22),
        };
        let err = SteerError::classify("x", EbpfError::MapError(err), SteerError::Load);
        assert!(matches!(err, SteerError::Load(_)));
    }

    #[test]
    fn counters_arithmetic() {
        let a = ClassCounters([1, 2, 3, 4]);
        let b = ClassCounters([1, 3, 3, 6]);
        assert_eq!(b.since(&a), ClassCounters([0, 1, 0, 2]));
        assert_eq!(b.total(), 13);
        assert_eq!(b.get(Class::Other), 6);
    }
}
