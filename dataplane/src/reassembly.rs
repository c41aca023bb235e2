//! Reassembly of outer IPv4 and IPv6 fragments of ESP (a peer that
//! fragments after encryption, as the Linux kernel and strongSwan do).
//!
//! One table per worker, so nothing is shared: the fragments of one
//! datagram must reach one worker, that is one receive queue. That holds
//! when the NIC hashes fragments by addresses only (what RSS does for
//! packets without ports, and for every fragment but the first of a UDP
//! datagram on most NICs), and trivially on a single-queue veth. A
//! datagram whose fragments are split across queues times out, counted.
//!
//! Everything is bounded and allocated once: a fixed number of slots, each
//! with a buffer for the largest datagram a frame can carry and room for
//! [`MAX_FRAGMENTS`] pieces. Every refusal has a reason ([`FragDrop`]):
//! overlapping pieces (also exact duplicates, as RFC 5722 asks for IPv6)
//! drop the whole datagram, as do too many pieces or a datagram larger than
//! a slot; datagrams not complete within the timeout are dropped when their
//! slot is looked at.
//!
//! A flood of fragments that never complete must not stop the peer's real
//! ones, which arrive back to back and need a slot only for microseconds.
//! So one source address holds at most a quarter of the slots (its oldest
//! datagram goes when it starts another), and a new datagram that finds
//! the table full takes the slot of the oldest one: junk ages out of the
//! table as fast as it comes in, whatever addresses it spoofs. Both
//! evictions are counted (`reassembly_evicted`).

use crate::wire::{ip_proto, ipv4, ipv6};
use std::time::{Duration, Instant};

/// Pieces one datagram may come in. A peer fragments an ESP packet to the
/// path MTU, which gives two or three; more is a flood.
pub const MAX_FRAGMENTS: usize = 16;

/// Room in front of the payload for the largest header kept (IPv4 with
/// options).
const HEADER_ROOM: usize = ipv4::MAX_HEADER_LEN;

/// Why a fragment, or the datagram it belongs to, was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FragDrop {
    /// The datagram was not complete in time (counted per datagram).
    Timeout,
    /// A piece overlaps (or repeats) one already received.
    Overlap,
    /// More than [`MAX_FRAGMENTS`] pieces.
    TooMany,
    /// It would be larger than a slot (the largest frame).
    TooLarge,
    /// Its slot went to a newer datagram (its source held its quota, or the
    /// table was full); counted per datagram.
    Evicted,
    /// Not a well-formed fragment (bad lengths, a non-last piece that is
    /// not a multiple of 8 bytes, IPv6 extension headers before the
    /// Fragment header).
    Malformed,
}

impl FragDrop {
    pub const ALL: [FragDrop; 6] = [
        FragDrop::Timeout,
        FragDrop::Overlap,
        FragDrop::TooMany,
        FragDrop::TooLarge,
        FragDrop::Evicted,
        FragDrop::Malformed,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FragDrop::Timeout => "reassembly_timeout",
            FragDrop::Overlap => "reassembly_overlap",
            FragDrop::TooMany => "reassembly_too_many_fragments",
            FragDrop::TooLarge => "reassembly_too_large",
            FragDrop::Evicted => "reassembly_evicted",
            FragDrop::Malformed => "reassembly_malformed_fragment",
        }
    }
}

/// The table's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyLimits {
    /// Datagrams in progress at once.
    pub slots: usize,
    /// The largest reassembled datagram, header included.
    pub max_datagram: usize,
    /// How long a datagram may take from its first piece to its last.
    pub timeout: Duration,
}

/// What identifies a datagram (RFC 791 / RFC 8200): addresses, protocol
/// (IPv4) and identification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    src: [u8; 16],
    dst: [u8; 16],
    ident: u32,
    protocol: u8,
    v6: bool,
}

/// One fragment, parsed.
struct Piece<'a> {
    key: Key,
    /// The header to keep (the first piece's): IPv4 with options, or the
    /// fixed IPv6 header.
    header: &'a [u8],
    /// Byte offset in the datagram's payload.
    offset: usize,
    more: bool,
    data: &'a [u8],
    /// IPv6: the protocol after the Fragment header.
    next_header: u8,
}

#[derive(Debug)]
struct Slot {
    key: Option<Key>,
    deadline: Instant,
    /// Header right-aligned before `HEADER_ROOM`, payload after it.
    buf: Box<[u8]>,
    header_len: usize,
    next_header: u8,
    ranges: [(u16, u16); MAX_FRAGMENTS],
    pieces: usize,
    received: usize,
    /// The payload length, once the last piece is in.
    total: Option<usize>,
}

impl Slot {
    fn new(max_datagram: usize, now: Instant) -> Slot {
        Slot {
            key: None,
            deadline: now,
            buf: vec![0u8; HEADER_ROOM + max_datagram].into_boxed_slice(),
            header_len: 0,
            next_header: 0,
            ranges: [(0, 0); MAX_FRAGMENTS],
            pieces: 0,
            received: 0,
            total: None,
        }
    }

    fn start(&mut self, key: Key, deadline: Instant) {
        self.key = Some(key);
        self.deadline = deadline;
        self.header_len = 0;
        self.pieces = 0;
        self.received = 0;
        self.total = None;
    }
}

/// A worker's reassembly table.
#[derive(Debug)]
pub struct Reassembly {
    slots: Vec<Slot>,
    limits: ReassemblyLimits,
    /// Slots one source address may hold.
    per_source: usize,
    in_use: usize,
    /// Datagrams timed out since [`Reassembly::take_timeouts`].
    timeouts: u64,
    /// Datagrams evicted since [`Reassembly::take_evictions`].
    evictions: u64,
}

impl Reassembly {
    /// Allocates every slot now: `slots * (max_datagram + 60)` bytes.
    pub fn new(limits: ReassemblyLimits) -> Reassembly {
        let now = Instant::now();
        let limits = ReassemblyLimits {
            slots: limits.slots.max(1),
            ..limits
        };
        Reassembly {
            slots: (0..limits.slots)
                .map(|_| Slot::new(limits.max_datagram, now))
                .collect(),
            per_source: (limits.slots / 4).max(2).min(limits.slots),
            limits,
            in_use: 0,
            timeouts: 0,
            evictions: 0,
        }
    }

    /// Datagrams evicted for newer ones since the last call.
    pub fn take_evictions(&mut self) -> u64 {
        std::mem::take(&mut self.evictions)
    }

    /// Datagrams in progress.
    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// Datagrams that timed out since the last call.
    pub fn take_timeouts(&mut self) -> u64 {
        std::mem::take(&mut self.timeouts)
    }

    /// Drops the datagrams whose time is up.
    pub fn expire(&mut self, now: Instant) {
        if self.in_use == 0 {
            return;
        }
        for slot in &mut self.slots {
            if slot.key.is_some() && now >= slot.deadline {
                slot.key = None;
                self.in_use -= 1;
                self.timeouts += 1;
            }
        }
    }

    /// Adds the fragment `packet` (a whole IPv4 or IPv6 packet that is a
    /// fragment). Returns the reassembled datagram when this piece completes
    /// it, `None` while pieces are missing.
    pub fn insert(&mut self, now: Instant, packet: &[u8]) -> Result<Option<&[u8]>, FragDrop> {
        let piece = parse(packet).ok_or(FragDrop::Malformed)?;
        let header_len = piece.header.len();
        let end = piece.offset + piece.data.len();
        if header_len + end > self.limits.max_datagram {
            self.forget(&piece.key);
            return Err(FragDrop::TooLarge);
        }
        let index = match self.find(&piece.key, now) {
            Some(i) => i,
            None => {
                let i = self.slot_for(&piece.key, now);
                self.slots[i].start(piece.key, now + self.limits.timeout);
                self.in_use += 1;
                i
            }
        };
        let slot = &mut self.slots[index];
        let result = add_piece(slot, &piece, end);
        if let Err(reason) = result {
            slot.key = None;
            self.in_use -= 1;
            return Err(reason);
        }
        let Some(total) = slot
            .total
            .filter(|&t| slot.header_len > 0 && slot.received == t)
        else {
            return Ok(None);
        };
        slot.key = None;
        self.in_use -= 1;
        let start = HEADER_ROOM - slot.header_len;
        let datagram = &mut slot.buf[start..HEADER_ROOM + total];
        finish_header(datagram, slot.header_len, total, slot.next_header);
        Ok(Some(datagram))
    }

    /// The live slot of `key`; an expired one is freed (and counted) instead.
    fn find(&mut self, key: &Key, now: Instant) -> Option<usize> {
        let i = self
            .slots
            .iter()
            .position(|s| s.key.as_ref() == Some(key))?;
        if now >= self.slots[i].deadline {
            self.slots[i].key = None;
            self.in_use -= 1;
            self.timeouts += 1;
            return None;
        }
        Some(i)
    }

    /// A slot for a new datagram of `key`: a free one, unless its source
    /// holds its quota (then that source's oldest); with none free, the
    /// oldest of all. An evicted datagram is counted.
    fn slot_for(&mut self, key: &Key, now: Instant) -> usize {
        let oldest = |slots: &[Slot], of_source: bool| {
            slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.key.is_some_and(|k| !of_source || k.src == key.src))
                .min_by_key(|(_, s)| s.deadline)
                .map(|(i, _)| i)
        };
        let from_source = self
            .slots
            .iter()
            .filter(|s| s.key.is_some_and(|k| k.src == key.src))
            .count();
        let victim = if from_source >= self.per_source {
            oldest(&self.slots, true)
        } else {
            if self.in_use == self.slots.len() {
                self.expire(now);
            }
            match self.slots.iter().position(|s| s.key.is_none()) {
                Some(free) => return free,
                None => oldest(&self.slots, false),
            }
        };
        // A full table always has an oldest datagram.
        let i = victim.unwrap_or(0);
        if self.slots[i].key.take().is_some() {
            self.in_use -= 1;
            self.evictions += 1;
        }
        i
    }

    fn forget(&mut self, key: &Key) {
        if let Some(slot) = self.slots.iter_mut().find(|s| s.key.as_ref() == Some(key)) {
            slot.key = None;
            self.in_use -= 1;
        }
    }
}

fn add_piece(slot: &mut Slot, piece: &Piece<'_>, end: usize) -> Result<(), FragDrop> {
    let start = piece.offset;
    if slot.ranges[..slot.pieces]
        .iter()
        .any(|&(s, e)| start < usize::from(e) && usize::from(s) < end)
    {
        return Err(FragDrop::Overlap);
    }
    if slot.pieces == MAX_FRAGMENTS {
        return Err(FragDrop::TooMany);
    }
    if !piece.more {
        // Two different ends, or data past the end.
        if slot.total.is_some()
            || slot.ranges[..slot.pieces]
                .iter()
                .any(|&(_, e)| usize::from(e) > end)
        {
            return Err(FragDrop::Malformed);
        }
        slot.total = Some(end);
    } else if slot.total.is_some_and(|t| end > t) {
        return Err(FragDrop::Malformed);
    }
    if start == 0 {
        let hl = piece.header.len();
        slot.buf[HEADER_ROOM - hl..HEADER_ROOM].copy_from_slice(piece.header);
        slot.header_len = hl;
        slot.next_header = piece.next_header;
    }
    slot.buf[HEADER_ROOM + start..HEADER_ROOM + end].copy_from_slice(piece.data);
    // Offsets and ends are below 64 KiB: they come from 16-bit fields.
    slot.ranges[slot.pieces] = (start as u16, end as u16);
    slot.pieces += 1;
    slot.received += piece.data.len();
    Ok(())
}

/// The reassembled datagram's header: its real length, no fragment fields.
fn finish_header(datagram: &mut [u8], header_len: usize, payload: usize, next_header: u8) {
    if datagram[0] >> 4 == 4 {
        let mut ip = ipv4::Packet::new_unchecked(&mut datagram[..header_len]);
        // Within max_datagram, which is far below 64 KiB.
        ip.set_total_len((header_len + payload) as u16);
        ip.set_flags_frag(0);
        ip.fill_checksum();
    } else {
        let mut ip = ipv6::Packet::new_unchecked(&mut datagram[..header_len]);
        ip.set_payload_len(payload as u16);
        ip.set_next_header(next_header);
    }
}

fn parse(packet: &[u8]) -> Option<Piece<'_>> {
    match packet.first()? >> 4 {
        4 => {
            let ip = ipv4::Packet::new_checked(packet).ok()?;
            if !ip.is_fragment() || !ip.verify_checksum() {
                return None;
            }
            let header_len = ip.header_len();
            let data = &packet[header_len..usize::from(ip.total_len())];
            let more = ip.more_frags();
            if data.is_empty() || (more && !data.len().is_multiple_of(8)) {
                return None;
            }
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src[..4].copy_from_slice(&ip.src_addr().octets());
            dst[..4].copy_from_slice(&ip.dst_addr().octets());
            Some(Piece {
                key: Key {
                    src,
                    dst,
                    ident: u32::from(ip.ident()),
                    protocol: ip.protocol(),
                    v6: false,
                },
                header: &packet[..header_len],
                offset: usize::from(ip.frag_offset()),
                more,
                data,
                next_header: ip.protocol(),
            })
        }
        6 => {
            let ip = ipv6::Packet::new_checked(packet).ok()?;
            if ip.next_header() != ip_proto::IPV6_FRAGMENT {
                return None;
            }
            let payload = &packet[ipv6::HEADER_LEN..ip.total_len()];
            let frag = payload.get(..8)?;
            let data = &payload[8..];
            let word = u16::from_be_bytes([frag[2], frag[3]]);
            let more = word & 1 != 0;
            if data.is_empty() || (more && !data.len().is_multiple_of(8)) {
                return None;
            }
            Some(Piece {
                key: Key {
                    src: ip.src_addr().octets(),
                    dst: ip.dst_addr().octets(),
                    ident: u32::from_be_bytes([frag[4], frag[5], frag[6], frag[7]]),
                    protocol: 0,
                    v6: true,
                },
                header: &packet[..ipv6::HEADER_LEN],
                offset: usize::from(word & !7),
                more,
                data,
                next_header: frag[0],
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn limits(slots: usize) -> ReassemblyLimits {
        ReassemblyLimits {
            slots,
            max_datagram: 1920,
            timeout: Duration::from_secs(2),
        }
    }

    /// An IPv4 fragment of datagram `ident`: `len` bytes at byte `offset`.
    fn frag4(ident: u16, offset: usize, len: usize, more: bool) -> Vec<u8> {
        let mut p = vec![0u8; 20 + len];
        ipv4::Repr {
            src: Ipv4Addr::new(198, 18, 0, 2),
            dst: Ipv4Addr::new(198, 18, 0, 1),
            protocol: ip_proto::ESP,
            payload_len: len,
            ttl: 64,
            dscp_ecn: 0,
            ident,
            dont_frag: false,
        }
        .emit(&mut p)
        .unwrap();
        let word = (offset / 8) as u16 | if more { ipv4::FLAG_MF } else { 0 };
        p[6..8].copy_from_slice(&word.to_be_bytes());
        for (i, b) in p[20..].iter_mut().enumerate() {
            *b = ((offset + i) % 256) as u8;
        }
        ipv4::Packet::new_unchecked(&mut p[..]).fill_checksum();
        p
    }

    #[test]
    fn in_order_and_out_of_order_complete() {
        let mut t = Reassembly::new(limits(4));
        let now = Instant::now();
        assert_eq!(t.insert(now, &frag4(1, 0, 1480, true)), Ok(None));
        let d = t.insert(now, &frag4(1, 1480, 77, false)).unwrap().unwrap();
        let ip = ipv4::Packet::new_checked(d).unwrap();
        assert_eq!(ip.total_len(), 20 + 1557);
        assert!(ip.verify_checksum() && !ip.is_fragment());
        assert!(ip
            .payload()
            .iter()
            .enumerate()
            .all(|(i, &b)| b == (i % 256) as u8));
        assert_eq!(t.in_use(), 0);

        // Last piece first, three pieces.
        assert_eq!(t.insert(now, &frag4(2, 1000, 57, false)), Ok(None));
        assert_eq!(t.insert(now, &frag4(2, 504, 496, true)), Ok(None));
        let d = t.insert(now, &frag4(2, 0, 504, true)).unwrap().unwrap();
        assert_eq!(d.len(), 1077);
    }

    #[test]
    fn every_drop_reason() {
        let now = Instant::now();
        let mut t = Reassembly::new(limits(2));
        // Overlap and duplicate drop the datagram.
        t.insert(now, &frag4(1, 0, 800, true)).unwrap();
        assert_eq!(
            t.insert(now, &frag4(1, 792, 16, true)),
            Err(FragDrop::Overlap)
        );
        assert_eq!(t.in_use(), 0);
        t.insert(now, &frag4(2, 0, 800, true)).unwrap();
        assert_eq!(
            t.insert(now, &frag4(2, 0, 800, true)),
            Err(FragDrop::Overlap)
        );
        // Too large.
        assert_eq!(
            t.insert(now, &frag4(3, 1896, 8, true)),
            Err(FragDrop::TooLarge)
        );
        // Too many.
        for i in 0..MAX_FRAGMENTS {
            t.insert(now, &frag4(4, i * 8, 8, true)).unwrap();
        }
        assert_eq!(
            t.insert(now, &frag4(4, MAX_FRAGMENTS * 8, 8, true)),
            Err(FragDrop::TooMany)
        );
        // Table full: a third datagram takes the oldest one's slot.
        t.insert(now, &frag4(5, 0, 8, true)).unwrap();
        t.insert(now + Duration::from_millis(1), &frag4(6, 0, 8, true))
            .unwrap();
        assert_eq!(t.insert(now, &frag4(7, 0, 8, true)), Ok(None));
        assert_eq!((t.in_use(), t.take_evictions()), (2, 1));
        assert!(t.insert(now, &frag4(7, 8, 8, false)).unwrap().is_some());
        assert!(t.insert(now, &frag4(6, 8, 8, false)).unwrap().is_some());
        t.insert(now, &frag4(6, 0, 8, true)).unwrap();
        // Malformed: a middle piece not a multiple of 8, a bad checksum.
        assert_eq!(
            t.insert(now, &frag4(8, 0, 13, true)),
            Err(FragDrop::Malformed)
        );
        let mut bad = frag4(8, 0, 16, true);
        bad[10] ^= 1;
        assert_eq!(t.insert(now, &bad), Err(FragDrop::Malformed));
        // Timeout: the slot of 6 expires and is counted; it is free again.
        let later = now + Duration::from_secs(3);
        t.expire(later);
        assert_eq!(t.take_timeouts(), 1);
        assert_eq!(t.in_use(), 0);
        assert_eq!(t.take_timeouts(), 0);
        // A late piece of a timed-out datagram starts a new one, not a mix.
        t.insert(now, &frag4(9, 0, 8, true)).unwrap();
        assert_eq!(t.insert(later, &frag4(9, 8, 8, false)), Ok(None));
        assert_eq!(t.take_timeouts(), 1);
    }

    /// An IPv4 fragment like [`frag4`] from `src`.
    fn frag4_from(src: Ipv4Addr, ident: u16) -> Vec<u8> {
        let mut p = frag4(ident, 0, 8, true);
        p[12..16].copy_from_slice(&src.octets());
        p[10..12].copy_from_slice(&[0, 0]);
        ipv4::Packet::new_unchecked(&mut p[..]).fill_checksum();
        p
    }

    #[test]
    fn one_source_holds_a_quarter_of_the_table_and_a_flood_ages_out() {
        let mut t = Reassembly::new(limits(16));
        let now = Instant::now();
        let peer = Ipv4Addr::new(198, 18, 0, 2);
        let flood = Ipv4Addr::new(198, 18, 9, 9);
        // The peer's datagram in progress, then a flood from one source.
        t.insert(now, &frag4_from(peer, 1)).unwrap();
        for i in 0..1000u16 {
            let at = now + Duration::from_micros(u64::from(i) + 1);
            assert_eq!(t.insert(at, &frag4_from(flood, i)), Ok(None));
        }
        // The flood kept to its 4 slots; the peer's datagram is intact.
        assert_eq!(t.in_use(), 5);
        assert_eq!(t.take_evictions(), 1000 - 4);
        let mut last = frag4(1, 8, 8, false);
        last[12..16].copy_from_slice(&peer.octets());
        last[10..12].copy_from_slice(&[0, 0]);
        ipv4::Packet::new_unchecked(&mut last[..]).fill_checksum();
        assert!(t.insert(now, &last).unwrap().is_some());
        // Spoofed from everywhere, the table fills and the oldest go first:
        // a new datagram always finds a slot.
        for i in 0..1000u16 {
            let src = Ipv4Addr::new(10, (i >> 8) as u8, i as u8, 1);
            let at = now + Duration::from_millis(u64::from(i) + 10);
            assert_eq!(t.insert(at, &frag4_from(src, i)), Ok(None));
        }
        assert_eq!(t.in_use(), 16);
    }

    #[test]
    fn garbage_never_panics_and_stays_bounded() {
        let mut t = Reassembly::new(limits(8));
        let now = Instant::now();
        let mut seed = 0x1234_5678u32;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for _ in 0..5000 {
            let ident = (next() % 32) as u16;
            let offset = (next() % 240) as usize * 8;
            let len = 8 * (1 + (next() % 40) as usize);
            let mut p = frag4(ident, offset, len, next() % 4 != 0);
            let flip = next() as usize % p.len();
            if next() % 8 == 0 {
                p[flip] ^= 0x5a;
            }
            let _ = t.insert(now, &p);
            assert!(t.in_use() <= 8);
        }
        for len in 0..60 {
            let _ = t.insert(now, &frag4(1, 0, 40, true)[..len]);
        }
    }
}
