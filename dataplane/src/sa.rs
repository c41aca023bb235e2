//! Security associations: everything the ESP transform needs to know about
//! one direction of one Child SA, validated once when the SA is built.
//!
//! An SA is built from a plain [`SaConfig`] (what IKE negotiated, or a static
//! configuration) by [`Sa::new`], [`OutboundSa::new`] or [`InboundSa::new`];
//! every check happens there and names what is wrong. After that the SA is
//! immutable apart from its atomic counters, so workers share it behind an
//! `Arc` with no locks:
//!
//! - outbound: the 64-bit sequence counter (one `fetch_add` per packet; it
//!   never wraps, the SA refuses to send once the space is used);
//! - both: packet and byte counters for the soft and hard lifetimes;
//! - inbound: the anti-replay window ([`crate::replay::ReplayWindow`]).
//!
//! The counters sit on their own cache lines, away from the read-mostly key
//! and header template, so workers bumping them do not evict what the other
//! workers read.

use std::fmt;
use std::net::IpAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use thiserror::Error;
use zeroize::Zeroizing;

use crate::crypto::{new_aead, Aead, Backend, CryptoError, SecretBytes};
use crate::esp::{EspError, OuterTemplate};
use crate::replay::{ReplayWindow, DEFAULT_WINDOW, MAX_WINDOW, MIN_WINDOW};
use crate::selector::{self, AddrFamily, TrafficSelector};
use crate::wire::{ipv6, IpVersion};

/// Length of the RFC 4106 salt that follows the AES key in the keying
/// material.
pub const SALT_LEN: usize = 4;

/// The last sequence number of a non-ESN SA.
pub const MAX_SEQ_32: u64 = u32::MAX as u64;
/// The last sequence number of an ESN SA.
pub const MAX_SEQ_64: u64 = u64::MAX;

/// Which way an SA carries traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Decrypts what the peer sends (looked up by SPI).
    Inbound,
    /// Encrypts what goes to the peer.
    Outbound,
}

/// The AEAD (RFC 4106 AES-GCM with a 16-byte ICV).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cipher {
    AesGcm128,
    AesGcm256,
}

impl Cipher {
    /// AES key length in bytes.
    pub const fn key_len(self) -> usize {
        match self {
            Cipher::AesGcm128 => 16,
            Cipher::AesGcm256 => 32,
        }
    }

    /// Keying material IKE hands out: key || 4-byte salt (20 or 36 bytes).
    pub const fn keying_material_len(self) -> usize {
        self.key_len() + SALT_LEN
    }

    pub const fn name(self) -> &'static str {
        match self {
            Cipher::AesGcm128 => "aes128gcm16",
            Cipher::AesGcm256 => "aes256gcm16",
        }
    }
}

impl fmt::Display for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// UDP encapsulation of ESP (RFC 3948), used behind NATs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UdpEncap {
    /// Our port (the outbound source port), normally 4500.
    pub local_port: u16,
    /// The peer's port (the outbound destination port), 4500 or what the
    /// NAT mapped it to.
    pub remote_port: u16,
}

/// How the outer IPv4 header's DF bit is set (RFC 4301 section 8.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DfPolicy {
    /// Copy DF from an IPv4 inner packet; set it for an IPv6 inner packet
    /// (IPv6 is never fragmented on the path).
    #[default]
    Copy,
    Set,
    Clear,
}

/// Soft and hard limits on one quantity. `None` is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Limit {
    /// Reaching it raises a [`LifetimeEvent`] once; the caller tells the IKE
    /// daemon, which rekeys.
    pub soft: Option<u64>,
    /// Going past it makes the SA refuse traffic.
    pub hard: Option<u64>,
}

/// Lifetimes in packets and bytes. Bytes are those of the inner packets
/// (what the cipher protects, less the ESP trailer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Lifetimes {
    pub packets: Limit,
    pub bytes: Limit,
}

/// Raised by the packet that reaches a soft limit (each limit once per SA),
/// or that reaches the point where the sequence space is nearly used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct LifetimeEvent {
    /// The soft packet limit was reached.
    pub soft_packets: bool,
    /// The soft byte limit was reached.
    pub soft_bytes: bool,
    /// Outbound only: 15/16 of the sequence space is used (for a non-ESN SA
    /// that is about 268 million packets before it stops). Rekey now.
    pub seq_nearly_exhausted: bool,
}

/// An SA as configured: a plain struct that [`Sa::new`] validates.
#[derive(Clone)]
pub struct SaConfig {
    /// The SPI (the inbound SA's own; the peer's for outbound). Values
    /// 0..=255 are reserved (RFC 4303 section 2.1).
    pub spi: u32,
    pub direction: Direction,
    pub cipher: Cipher,
    /// Key || salt: 20 bytes for AES-GCM-128, 36 for AES-GCM-256.
    pub keying_material: SecretBytes,
    /// Crypto library.
    pub backend: Backend,
    /// Extended (64-bit) sequence numbers.
    pub esn: bool,
    /// Inbound only: anti-replay window, 32..=8192 packets.
    pub replay_window: u32,
    /// Our tunnel endpoint (the outbound source).
    pub local: IpAddr,
    /// The peer's tunnel endpoint (the outbound destination).
    pub remote: IpAddr,
    /// UDP encapsulation (NAT traversal).
    pub udp_encap: Option<UdpEncap>,
    /// Inner packets the SA may carry, in packet orientation (for an
    /// outbound SA sources are local, for an inbound SA they are remote).
    /// At least one.
    pub selectors: Vec<TrafficSelector>,
    pub lifetimes: Lifetimes,
    /// Outbound only: TTL (IPv4) or hop limit (IPv6) of the outer header.
    pub ttl: u8,
    /// Outbound only, IPv4 outer header only: the DF bit.
    pub df: DfPolicy,
    /// Outbound only: the first sequence number to send, normally 1. Tests
    /// use it to start near the end of the space.
    pub initial_seq: u64,
}

impl SaConfig {
    /// A config with the defaults: no ESN, a 1024-packet replay window, no
    /// UDP encapsulation, no lifetimes, TTL 64, DF copied, first sequence
    /// number 1, the default backend.
    pub fn new(
        spi: u32,
        direction: Direction,
        cipher: Cipher,
        keying_material: SecretBytes,
        local: IpAddr,
        remote: IpAddr,
        selectors: Vec<TrafficSelector>,
    ) -> SaConfig {
        SaConfig {
            spi,
            direction,
            cipher,
            keying_material,
            backend: Backend::available()
                .first()
                .copied()
                .unwrap_or(Backend::AwsLc),
            esn: false,
            replay_window: DEFAULT_WINDOW,
            local,
            remote,
            udp_encap: None,
            selectors,
            lifetimes: Lifetimes::default(),
            ttl: 64,
            df: DfPolicy::Copy,
            initial_seq: 1,
        }
    }
}

impl fmt::Debug for SaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaConfig")
            .field("spi", &format_args!("{:#010x}", self.spi))
            .field("direction", &self.direction)
            .field("cipher", &self.cipher)
            .field(
                "keying_material",
                &format_args!("<{} bytes redacted>", self.keying_material.len()),
            )
            .field("backend", &self.backend)
            .field("esn", &self.esn)
            .field("replay_window", &self.replay_window)
            .field("local", &self.local)
            .field("remote", &self.remote)
            .field("udp_encap", &self.udp_encap)
            .field("selectors", &self.selectors)
            .field("lifetimes", &self.lifetimes)
            .field("ttl", &self.ttl)
            .field("df", &self.df)
            .field("initial_seq", &self.initial_seq)
            .finish()
    }
}

/// What is wrong with an [`SaConfig`].
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum SaConfigError {
    #[error("SPI {0:#x} is reserved (0..=255)")]
    ReservedSpi(u32),
    #[error("{cipher} needs {expected} bytes of keying material (key + 4-byte salt), got {got}")]
    KeyingMaterialLength {
        cipher: Cipher,
        expected: usize,
        got: usize,
    },
    #[error("replay window {0} is outside {MIN_WINDOW}..={MAX_WINDOW}")]
    ReplayWindow(u32),
    #[error("tunnel endpoints {local} and {remote} are of different address families")]
    EndpointFamilyMismatch { local: IpAddr, remote: IpAddr },
    #[error("tunnel endpoint {0} is not a unicast address")]
    BadEndpoint(IpAddr),
    #[error("UDP encapsulation port 0")]
    UdpPortZero,
    #[error("an SA needs at least one traffic selector")]
    NoSelectors,
    #[error("outer TTL / hop limit 0")]
    ZeroTtl,
    #[error("soft {what} lifetime {soft} is above the hard one {hard}")]
    SoftAboveHard {
        what: &'static str,
        soft: u64,
        hard: u64,
    },
    #[error("hard {what} lifetime 0")]
    ZeroHardLimit { what: &'static str },
    #[error("initial sequence number {seq} is outside 1..={max}")]
    InitialSeq { seq: u64, max: u64 },
    #[error("SA is {got:?}, expected {expected:?}")]
    WrongDirection { expected: Direction, got: Direction },
    #[error("crypto: {0}")]
    Crypto(#[from] CryptoError),
}

/// The SA was used past its hard lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HardExpired;

/// Counters written by every worker, on a cache line of their own: a
/// write invalidates only this line in the other cores, not the key and
/// addresses they read. One line, not the pair the adjacent-line
/// prefetcher fetches: with 100,000 SAs the padding of 128-byte alignment
/// cost about 190 bytes per SA, for a prefetch effect, not a coherence one.
#[repr(align(64))]
#[derive(Debug, Default)]
struct HotCounters {
    /// Outbound: sequence numbers handed out (seq = base + this).
    seq_used: AtomicU64,
    packets: AtomicU64,
    bytes: AtomicU64,
    hard_expired: AtomicBool,
}

/// What inbound and outbound SAs have in common. Reached through `Deref`
/// from [`InboundSa`] and [`OutboundSa`].
pub struct SaCore {
    spi: u32,
    cipher: Cipher,
    aead: Box<dyn Aead>,
    salt: Zeroizing<[u8; SALT_LEN]>,
    esn: bool,
    local: IpAddr,
    remote: IpAddr,
    udp_encap: Option<UdpEncap>,
    selectors: Box<[TrafficSelector]>,
    /// Some selector matches every IPv4 packet ([`TrafficSelector::is_any`]).
    any_v4: bool,
    /// Some selector matches every IPv6 packet.
    any_v6: bool,
    soft_packets: u64,
    hard_packets: u64,
    soft_bytes: u64,
    hard_bytes: u64,
    hot: HotCounters,
}

impl SaCore {
    fn new(config: &mut SaConfig) -> Result<SaCore, SaConfigError> {
        if config.spi <= 255 {
            return Err(SaConfigError::ReservedSpi(config.spi));
        }
        let expected = config.cipher.keying_material_len();
        if config.keying_material.len() != expected {
            return Err(SaConfigError::KeyingMaterialLength {
                cipher: config.cipher,
                expected,
                got: config.keying_material.len(),
            });
        }
        match (config.local, config.remote) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {}
            (local, remote) => return Err(SaConfigError::EndpointFamilyMismatch { local, remote }),
        }
        for addr in [config.local, config.remote] {
            let bad = addr.is_unspecified()
                || addr.is_multicast()
                || matches!(addr, IpAddr::V4(a) if a.is_broadcast());
            if bad {
                return Err(SaConfigError::BadEndpoint(addr));
            }
        }
        if let Some(udp) = config.udp_encap {
            if udp.local_port == 0 || udp.remote_port == 0 {
                return Err(SaConfigError::UdpPortZero);
            }
        }
        if config.selectors.is_empty() {
            return Err(SaConfigError::NoSelectors);
        }
        let limits = |what: &'static str, limit: Limit| -> Result<(u64, u64), SaConfigError> {
            let hard = limit.hard.unwrap_or(u64::MAX);
            let soft = limit.soft.unwrap_or(u64::MAX);
            if hard == 0 {
                return Err(SaConfigError::ZeroHardLimit { what });
            }
            if let (Some(soft), Some(hard)) = (limit.soft, limit.hard) {
                if soft > hard {
                    return Err(SaConfigError::SoftAboveHard { what, soft, hard });
                }
            }
            Ok((soft, hard))
        };
        let (soft_packets, hard_packets) = limits("packet", config.lifetimes.packets)?;
        let (soft_bytes, hard_bytes) = limits("byte", config.lifetimes.bytes)?;

        let key_len = config.cipher.key_len();
        let aead = new_aead(config.backend, &config.keying_material[..key_len])?;
        let mut salt = Zeroizing::new([0u8; SALT_LEN]);
        salt.copy_from_slice(&config.keying_material[key_len..]);

        Ok(SaCore {
            spi: config.spi,
            cipher: config.cipher,
            aead,
            salt,
            esn: config.esn,
            local: config.local,
            remote: config.remote,
            udp_encap: config.udp_encap,
            any_v4: config
                .selectors
                .iter()
                .any(|ts| ts.family() == AddrFamily::V4 && ts.is_any()),
            any_v6: config
                .selectors
                .iter()
                .any(|ts| ts.family() == AddrFamily::V6 && ts.is_any()),
            selectors: std::mem::take(&mut config.selectors).into_boxed_slice(),
            soft_packets,
            hard_packets,
            soft_bytes,
            hard_bytes,
            hot: HotCounters::default(),
        })
    }

    pub fn spi(&self) -> u32 {
        self.spi
    }

    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    pub fn backend(&self) -> Backend {
        self.aead.backend()
    }

    pub fn esn(&self) -> bool {
        self.esn
    }

    /// Our tunnel endpoint.
    pub fn local(&self) -> IpAddr {
        self.local
    }

    /// The peer's tunnel endpoint.
    pub fn remote(&self) -> IpAddr {
        self.remote
    }

    pub fn udp_encap(&self) -> Option<UdpEncap> {
        self.udp_encap
    }

    pub fn selectors(&self) -> &[TrafficSelector] {
        &self.selectors
    }

    /// The lifetimes it was configured with (a limit of 2^64 - 1 reads
    /// as none: it could never be reached).
    pub fn lifetimes(&self) -> Lifetimes {
        let limit = |soft: u64, hard: u64| Limit {
            soft: (soft != u64::MAX).then_some(soft),
            hard: (hard != u64::MAX).then_some(hard),
        };
        Lifetimes {
            packets: limit(self.soft_packets, self.hard_packets),
            bytes: limit(self.soft_bytes, self.hard_bytes),
        }
    }

    /// The same answer as [`selector::matches_any`] on this SA's selectors,
    /// for an inner packet of `version` whose IP header the caller has
    /// already validated on exactly this slice (`ipv4::Packet::new_checked`
    /// or `ipv6::Packet::new_checked`). When a selector covers the whole
    /// family, the only way `matches_any` could still refuse is an IPv6
    /// extension header chain it cannot walk, so only then is it parsed.
    #[inline]
    pub(crate) fn selectors_match(&self, version: IpVersion, packet: &[u8]) -> bool {
        let covered = match version {
            IpVersion::V4 => self.any_v4,
            IpVersion::V6 => {
                self.any_v6
                    && packet
                        .get(ipv6::field::NEXT_HEADER)
                        .is_some_and(|&next| !selector::is_walked_extension_header(next))
            }
        };
        covered || selector::matches_any(&self.selectors, packet)
    }

    /// Packets and bytes charged to the lifetimes so far. Once the hard
    /// limit is hit, racing workers may add a few refused packets.
    pub fn usage(&self) -> (u64, u64) {
        (
            self.hot.packets.load(Ordering::Relaxed),
            self.hot.bytes.load(Ordering::Relaxed),
        )
    }

    /// True once a hard lifetime was reached: the SA refuses all traffic.
    #[inline]
    pub fn is_hard_expired(&self) -> bool {
        self.hot.hard_expired.load(Ordering::Relaxed)
    }

    #[inline]
    pub(crate) fn aead(&self) -> &dyn Aead {
        &*self.aead
    }

    #[inline]
    pub(crate) fn salt(&self) -> &[u8; SALT_LEN] {
        &self.salt
    }

    /// Charges one packet of `bytes` bytes to the lifetimes. Fails if that
    /// goes past a hard limit; returns the soft limits this packet reached.
    #[inline]
    pub(crate) fn charge(&self, bytes: u64) -> Result<LifetimeEvent, HardExpired> {
        if self.is_hard_expired() {
            return Err(HardExpired);
        }
        let packets = self
            .hot
            .packets
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        let before = self.hot.bytes.fetch_add(bytes, Ordering::Relaxed);
        let after = before.saturating_add(bytes);
        if packets > self.hard_packets || after > self.hard_bytes {
            self.hot.hard_expired.store(true, Ordering::Relaxed);
            return Err(HardExpired);
        }
        Ok(LifetimeEvent {
            soft_packets: packets == self.soft_packets,
            soft_bytes: before < self.soft_bytes && after >= self.soft_bytes,
            seq_nearly_exhausted: false,
        })
    }
}

impl fmt::Debug for SaCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (packets, bytes) = self.usage();
        f.debug_struct("SaCore")
            .field("spi", &format_args!("{:#010x}", self.spi))
            .field("cipher", &self.cipher)
            .field("backend", &self.aead.backend())
            .field("esn", &self.esn)
            .field("local", &self.local)
            .field("remote", &self.remote)
            .field("udp_encap", &self.udp_encap)
            .field("selectors", &self.selectors)
            .field("lifetimes", &self.lifetimes())
            .field("packets", &packets)
            .field("bytes", &bytes)
            .field("hard_expired", &self.is_hard_expired())
            .finish_non_exhaustive()
    }
}

/// An SA that encrypts: shared by all workers that send to the peer.
pub struct OutboundSa {
    core: SaCore,
    ttl: u8,
    df: DfPolicy,
    seq_base: u64,
    /// Sequence numbers available: `seq_base + seq_room` is the last.
    seq_room: u64,
    seq_soft: u64,
    seq_max: u64,
    /// The last sequence number this SA may use now: `u64::MAX` unless a
    /// state directory reserves its numbers ahead of use (static SAs, see
    /// `seq_store`), which raises it block by block.
    seq_reserved: AtomicU64,
    template: OuterTemplate,
}

impl OutboundSa {
    /// Validates `config` (which must be [`Direction::Outbound`]).
    pub fn new(mut config: SaConfig) -> Result<OutboundSa, SaConfigError> {
        if config.direction != Direction::Outbound {
            return Err(SaConfigError::WrongDirection {
                expected: Direction::Outbound,
                got: config.direction,
            });
        }
        if config.ttl == 0 {
            return Err(SaConfigError::ZeroTtl);
        }
        let seq_max = if config.esn { MAX_SEQ_64 } else { MAX_SEQ_32 };
        if config.initial_seq == 0 || config.initial_seq > seq_max {
            return Err(SaConfigError::InitialSeq {
                seq: config.initial_seq,
                max: seq_max,
            });
        }
        let core = SaCore::new(&mut config)?;
        let template = OuterTemplate::new(&core, config.ttl, config.df);
        Ok(OutboundSa {
            ttl: config.ttl,
            df: config.df,
            seq_base: config.initial_seq,
            seq_room: seq_max - config.initial_seq,
            seq_soft: (seq_max - (seq_max >> 4)).max(config.initial_seq),
            seq_max,
            seq_reserved: AtomicU64::new(u64::MAX),
            template,
            core,
        })
    }

    /// The last sequence number reserved for use (`u64::MAX`: no
    /// reservation needed).
    pub fn seq_reserved(&self) -> u64 {
        self.seq_reserved.load(Ordering::Acquire)
    }

    /// Lets the SA use sequence numbers up to `last`, once that is on disk.
    pub fn reserve_seq(&self, last: u64) {
        self.seq_reserved.store(last, Ordering::Release);
    }

    pub fn ttl(&self) -> u8 {
        self.ttl
    }

    pub fn df(&self) -> DfPolicy {
        self.df
    }

    /// The last sequence number this SA may send (2^32-1, or 2^64-1 with
    /// ESN).
    pub fn seq_max(&self) -> u64 {
        self.seq_max
    }

    /// The sequence number the next packet will get, or `None` once the
    /// space is used up.
    pub fn next_seq(&self) -> Option<u64> {
        let used = self.hot.seq_used.load(Ordering::Relaxed);
        (used <= self.seq_room).then(|| self.seq_base + used)
    }

    /// True once the sequence space is used up: the SA refuses to send.
    pub fn is_seq_exhausted(&self) -> bool {
        self.next_seq().is_none()
    }

    /// Bytes the encapsulation writes in front of the inner packet.
    #[inline]
    pub fn headroom(&self) -> usize {
        self.template.headroom()
    }

    /// Bytes the encapsulation writes after an inner packet of `inner_len`
    /// bytes: padding, pad length, next header, ICV.
    #[inline]
    pub fn tailroom(&self, inner_len: usize) -> usize {
        crate::wire::esp::pad_len(inner_len)
            + crate::wire::esp::TRAILER_LEN
            + crate::crypto::TAG_LEN
    }

    /// Takes the next sequence number. Never wraps: each call takes a fresh
    /// offset from a 64-bit counter that starts at 0, so even a counter that
    /// has run past the end keeps refusing (it would take 2^64 calls to
    /// wrap).
    ///
    /// A number past the reservation is refused and lost (a gap, which ESP
    /// allows): it was never on disk, so a restart could hand it out again.
    #[inline]
    pub(crate) fn take_seq(&self) -> Result<(u64, bool), EspError> {
        let used = self.hot.seq_used.fetch_add(1, Ordering::Relaxed);
        if used > self.seq_room {
            return Err(EspError::SequenceExhausted);
        }
        let seq = self.seq_base + used;
        if seq > self.seq_reserved.load(Ordering::Acquire) {
            return Err(EspError::SeqNotReserved);
        }
        Ok((seq, seq == self.seq_soft))
    }

    #[inline]
    pub(crate) fn template(&self) -> &OuterTemplate {
        &self.template
    }
}

impl Deref for OutboundSa {
    type Target = SaCore;

    fn deref(&self) -> &SaCore {
        &self.core
    }
}

impl fmt::Debug for OutboundSa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboundSa")
            .field("core", &self.core)
            .field("ttl", &self.ttl)
            .field("df", &self.df)
            .field("next_seq", &self.next_seq())
            .field("seq_max", &self.seq_max)
            .finish_non_exhaustive()
    }
}

/// An SA that decrypts: looked up by SPI, shared by the workers that
/// receive from the peer.
pub struct InboundSa {
    core: SaCore,
    replay: ReplayWindow,
}

impl InboundSa {
    /// Validates `config` (which must be [`Direction::Inbound`]).
    pub fn new(mut config: SaConfig) -> Result<InboundSa, SaConfigError> {
        if config.direction != Direction::Inbound {
            return Err(SaConfigError::WrongDirection {
                expected: Direction::Inbound,
                got: config.direction,
            });
        }
        let replay = ReplayWindow::new(config.replay_window, config.esn)
            .map_err(|_| SaConfigError::ReplayWindow(config.replay_window))?;
        let core = SaCore::new(&mut config)?;
        Ok(InboundSa { core, replay })
    }

    /// The anti-replay window.
    pub fn replay_window(&self) -> &ReplayWindow {
        &self.replay
    }
}

impl Deref for InboundSa {
    type Target = SaCore;

    fn deref(&self) -> &SaCore {
        &self.core
    }
}

impl fmt::Debug for InboundSa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InboundSa")
            .field("core", &self.core)
            .field("replay", &self.replay)
            .finish()
    }
}

/// An SA of either direction, as [`Sa::new`] builds it from a config.
#[derive(Debug)]
pub enum Sa {
    Inbound(InboundSa),
    Outbound(OutboundSa),
}

impl Sa {
    /// Validates `config` and builds the SA of its direction.
    pub fn new(config: SaConfig) -> Result<Sa, SaConfigError> {
        match config.direction {
            Direction::Inbound => InboundSa::new(config).map(Sa::Inbound),
            Direction::Outbound => OutboundSa::new(config).map(Sa::Outbound),
        }
    }

    pub fn direction(&self) -> Direction {
        match self {
            Sa::Inbound(_) => Direction::Inbound,
            Sa::Outbound(_) => Direction::Outbound,
        }
    }

    pub fn core(&self) -> &SaCore {
        match self {
            Sa::Inbound(sa) => sa,
            Sa::Outbound(sa) => sa,
        }
    }
}
