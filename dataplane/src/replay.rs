//! The inbound anti-replay window (RFC 4303 section 3.4.3, extended sequence
//! numbers per its Appendix A), kept as a bitmap of small blocks in a ring in
//! the manner of RFC 6479, and safe to share between workers without a lock.
//!
//! # What is guaranteed
//!
//! Let `top` be [`ReplayWindow::highest`] and `W` the configured
//! [`ReplayWindow::size`]. The window is exactly the `W` numbers
//! `top - W + 1 ..= top` (RFC 4303's definition; nothing is rounded up: the
//! ring keeps at least one spare block past `W` so that its block granularity
//! never widens or narrows the window). A number is accepted once at most; one
//! right of `top` is accepted and becomes the new `top`; one in the window is
//! accepted if not yet seen; one left of it is refused with
//! [`ReplayError::TooOld`]. Sequence number 0 is never sent by a conforming
//! peer (the counter starts at 1) and is refused with
//! [`ReplayError::ZeroSequence`].
//!
//! Without ESN the 32-bit counter never wraps: after `2^32 - 1` every small
//! number is left of the window (the SA must have been rekeyed long before).
//! With ESN the high 32 bits are inferred as in RFC 4303 Appendix A, so a
//! number that looks left of the window is taken to belong to the next 2^32
//! epoch (authentication then decides); only before the first epoch has begun
//! (high bits 0) or past the last one can such a number be `TooOld` in
//! [`ReplayWindow::check`].
//!
//! # With several workers on one SA
//!
//! `check` and `accept` can run concurrently from any number of threads. Each
//! `accept` that returns `Ok` is the only one ever to do so for its number, and
//! it was in the window of every `accept` that had returned before it started:
//! it is never behind a window that an accept which *completed* before it had
//! already established. (Two overlapping accepts may finish in either order, so
//! a number can be accepted while a concurrent, larger one is moving the window
//! past it; that is the same outcome as if the two packets had arrived in the
//! other order.) A fresh number inside the window is never refused because of
//! contention: a lost compare-and-swap is retried, and `TooOld` only comes back
//! when a larger number that puts it outside the window has been or is being
//! accepted. `check` is advisory: `Ok` from it may still end in `Replayed` or
//! `TooOld` from `accept` if another worker got there in between.
//!
//! No locks and no allocation after `new`. With one worker every atomic is
//! uncontended: `check` is two loads, `accept` two loads, one compare-and-swap
//! on the number's slot and, when the window advances, one on `top`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use thiserror::Error;

/// Smallest window accepted by [`ReplayWindow::new`] (RFC 4303's minimum).
pub const MIN_WINDOW: u32 = 32;
/// Largest window accepted by [`ReplayWindow::new`].
pub const MAX_WINDOW: u32 = 8192;
/// The window size used when the configuration names none.
pub const DEFAULT_WINDOW: u32 = 1024;

/// Why a sequence number was refused.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum ReplayError {
    /// The number was already accepted (a replay, or a duplicate on the wire).
    #[error("sequence number already received")]
    Replayed,
    /// The number is left of the window (or, with ESN, would lie past the end
    /// of the 64-bit sequence space).
    #[error("sequence number is left of the anti-replay window")]
    TooOld,
    /// Sequence number 0, which a conforming sender never uses.
    #[error("sequence number 0 is never sent")]
    ZeroSequence,
}

/// A window size outside `MIN_WINDOW..=MAX_WINDOW`.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[error("anti-replay window size {0} is outside {min}..={max}", min = MIN_WINDOW, max = MAX_WINDOW)]
pub struct WindowSizeError(pub u32);

// Layout of one ring slot: the low 8 bits are a bitmap of 8 consecutive
// sequence numbers (one "block"); the high 56 bits say which block they belong
// to, as the block's "generation": `seq >> (BLOCK_SHIFT + log2(slots))`, i.e.
// the sequence number's bits above the bit index and the slot index. Keeping
// the generation in the same word as its bits is the whole trick: a worker can
// see, and change, "which block this slot holds" and "which numbers of it were
// seen" in one atomic step, so reusing a slot for a newer block can never wipe
// or misattribute a bit another worker is setting at that moment.
//
// Why 8 bits and not 64 as in RFC 6479: a 64-bit word cannot carry a tag next
// to a 64-bit bitmap, and safe Rust has no 128-bit CAS. With 8 bits, and at
// least 32 slots, the generation needs at most 64 - 3 - 5 = 56 bits, so it is
// stored exactly: blocks are compared as plain integers over the whole 64-bit
// sequence space, with no wrap-around and no horizon beyond which two blocks
// could be confused.
//
// Without ESN a sequence number has 32 bits, so the generation of a block
// of 32 numbers needs at most 32 - 5 bits: such a window keeps 32 numbers
// per slot, the bitmap in the low 32 bits and the generation above it, and
// takes a quarter of the memory (512 bytes instead of 2 KiB for the default
// window; it matters with 100,000 inbound SAs).
const ESN_BLOCK_SHIFT: u32 = 3;
const NON_ESN_BLOCK_SHIFT: u32 = 5;

/// How a window lays out its slots: `1 << block_shift` numbers per slot,
/// their bitmap in the low `1 << block_shift` bits of the word.
#[derive(Debug, Clone, Copy)]
struct Layout {
    block_shift: u32,
}

impl Layout {
    fn of(esn: bool) -> Layout {
        Layout {
            block_shift: if esn {
                ESN_BLOCK_SHIFT
            } else {
                NON_ESN_BLOCK_SHIFT
            },
        }
    }

    /// Sequence numbers per slot.
    #[inline]
    fn block_bits(self) -> u64 {
        1 << self.block_shift
    }

    #[inline]
    fn bit_index_mask(self) -> u64 {
        self.block_bits() - 1
    }

    /// Where the generation starts in a slot word: above the bitmap.
    #[inline]
    fn gen_shift_in_word(self) -> u32 {
        1 << self.block_shift
    }

    /// The fewest slots with which the largest generation,
    /// `seq_bits - block_shift - log2(slots)` bits, fits above the bitmap.
    fn min_slots(self, esn: bool) -> usize {
        let seq_bits = if esn { 64 } else { 32 };
        let room = 64 - self.gen_shift_in_word();
        1 << (seq_bits - self.block_shift).saturating_sub(room)
    }
}

/// One SA's inbound anti-replay state. `Send + Sync`: share it by reference
/// (it lives in the SA) between every worker that receives for that SA.
pub struct ReplayWindow {
    /// The highest sequence number accepted so far (0 before any). Only ever
    /// grows (compare-and-swap to a larger value). It shares its cache line
    /// with the read-only fields below: every `check` and `accept` reads
    /// `top` too, so when another worker's accept moves it the line must
    /// come back in any case, and a line of its own would only add 64
    /// bytes of padding to each of 100,000 inbound SAs.
    top: AtomicU64,
    /// Ring of `slot_mask + 1` (a power of two) slots, see the layout above.
    slots: Box<[AtomicU64]>,
    slot_mask: u64,
    /// `block_shift + log2(slots)`: `seq >> gen_shift` is its generation.
    gen_shift: u32,
    layout: Layout,
    size: u32,
    esn: bool,
}

/// What a slot says about one sequence number.
enum Slot {
    /// Not seen: storing `new` in the slot marks it seen.
    Fresh { new: u64 },
    /// Its bit is already set.
    Seen,
    /// The slot has been taken over by a block at least a whole ring ahead,
    /// so the number is left of the window that block's number establishes.
    Overtaken,
}

impl ReplayWindow {
    /// A window of `size` sequence numbers (RFC 4303 "W"); `esn` selects
    /// 64-bit extended sequence numbers of which the wire carries the low 32.
    pub fn new(size: u32, esn: bool) -> Result<Self, WindowSizeError> {
        if !(MIN_WINDOW..=MAX_WINDOW).contains(&size) {
            return Err(WindowSizeError(size));
        }
        // Number of slots: a slot may be taken over for block `b` only once
        // every number of block `b - slots` is left of the window whose top
        // is in block `b`. The largest such number is `8 (b - slots) + 7` and
        // the smallest top is `8 b`, so `8 slots - 7 >= size` is needed. That
        // leaves at least one spare block beyond the window, as in RFC 6479.
        // Rounded up to a power of two (a mask, not a division) and to at
        // least `min_slots` (exact generations). With ESN: 2 KiB for the
        // default window, 16 KiB for the largest, 256 bytes for the
        // smallest; without, a quarter of that or less.
        let layout = Layout::of(esn);
        let bits = layout.block_bits() as usize;
        let slots = (size as usize + bits - 1)
            .div_ceil(bits)
            .next_power_of_two()
            .max(layout.min_slots(esn));
        Ok(Self {
            top: AtomicU64::new(0),
            slots: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            slot_mask: slots as u64 - 1,
            gen_shift: layout.block_shift + slots.trailing_zeros(),
            layout,
            size,
            esn,
        })
    }

    /// Before decryption: the full 64-bit sequence number for the 32 low bits
    /// on the wire (inferred per RFC 4303 Appendix A with ESN, taken as is
    /// without), or why it must be dropped unread. Does not change the window.
    pub fn check(&self, seq_low: u32) -> Result<u64, ReplayError> {
        let top = self.top.load(Ordering::Acquire);
        let seq = if self.esn {
            infer_esn(top, self.size, seq_low)?
        } else {
            u64::from(seq_low)
        };
        if seq == 0 {
            return Err(ReplayError::ZeroSequence);
        }
        if self.left_of_window(top, seq) {
            return Err(ReplayError::TooOld);
        }
        match self.classify(self.slot(seq).load(Ordering::Acquire), seq) {
            Slot::Fresh { .. } => Ok(seq),
            Slot::Seen => Err(ReplayError::Replayed),
            Slot::Overtaken => Err(ReplayError::TooOld),
        }
    }

    /// After successful authentication: marks `seq` (a value [`check`]
    /// returned) as seen, sliding the window forward if it is the new highest.
    /// `Err(Replayed)` if another thread accepted it first, `Err(TooOld)` if
    /// the window moved past it meanwhile.
    ///
    /// [`check`]: ReplayWindow::check
    pub fn accept(&self, seq: u64) -> Result<(), ReplayError> {
        if seq == 0 {
            return Err(ReplayError::ZeroSequence);
        }
        // A 32-bit counter never goes there ([`check`] cannot return such a
        // number); its generation would not fit the slot layout.
        //
        // [`check`]: ReplayWindow::check
        if !self.esn && seq > u64::from(u32::MAX) {
            return Err(ReplayError::TooOld);
        }
        let top = self.top.load(Ordering::Acquire);
        // Every accept raises `top` before it returns, so this test keeps out
        // any number left of a window that a *completed* accept established.
        // A `top` that goes stale while we work below is harmless: whatever
        // moved it is concurrent with us, and the slot itself refuses every
        // number such a move evicted (`Overtaken`).
        if self.left_of_window(top, seq) {
            return Err(ReplayError::TooOld);
        }

        // Set the bit, taking the slot over from an older block if need be.
        // At most one CAS ever turns a given number's bit from clear to set,
        // hence one `Ok` per number: a slot's generation only moves forward
        // (`classify` replaces it only with a newer one and refuses numbers
        // of an older one), so a block holds its slot for one unbroken
        // stretch, during which its bits are only ever set, never cleared.
        // Taking the slot over discards the older block's bits; that is safe
        // because all of that block is left of the window `seq` makes (see
        // `new`), and a late duplicate from it meets the newer generation and
        // is refused, whatever `top` it read.
        let slot = self.slot(seq);
        let mut word = slot.load(Ordering::Acquire);
        loop {
            let new = match self.classify(word, seq) {
                Slot::Fresh { new } => new,
                Slot::Seen => return Err(ReplayError::Replayed),
                Slot::Overtaken => return Err(ReplayError::TooOld),
            };
            match slot.compare_exchange_weak(word, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => word = now,
            }
        }

        // Raise `top`, never lower it. Until this lands, `seq` is marked but
        // `top` does not show it: a concurrent duplicate already meets the bit
        // (`Replayed`), and a number that `seq` pushes out of the window may
        // still be accepted against the old `top` -- that accept overlaps this
        // one and counts as having come first, as if the two packets had
        // arrived in the other order. With one worker the first try succeeds.
        let mut current = top;
        while seq > current {
            match self
                .top
                .compare_exchange_weak(current, seq, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        Ok(())
    }

    /// Refuses every number up to `floor`, as if all of them had been
    /// received: an inbound SA restored after a restart must not take
    /// packets it accepted before. Marks the window's worth below `floor`
    /// through [`accept`](ReplayWindow::accept); older ones are left of it.
    pub fn restore_floor(&self, floor: u64) {
        let from = floor.saturating_sub(u64::from(self.size) - 1).max(1);
        for seq in from..=floor {
            // An error means the number is refused already.
            let _ = self.accept(seq);
        }
    }

    /// The window size in sequence numbers, as configured.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Whether this window infers 64-bit extended sequence numbers.
    pub fn esn(&self) -> bool {
        self.esn
    }

    /// The highest sequence number accepted so far (0 before any).
    pub fn highest(&self) -> u64 {
        self.top.load(Ordering::Acquire)
    }

    /// `seq` is left of the window `top - size + 1 ..= top`.
    #[inline]
    fn left_of_window(&self, top: u64, seq: u64) -> bool {
        top.checked_sub(u64::from(self.size))
            .is_some_and(|edge| seq <= edge)
    }

    #[inline]
    fn slot(&self, seq: u64) -> &AtomicU64 {
        // Masked below `slots.len()`, so the index cannot panic.
        &self.slots[((seq >> self.layout.block_shift) & self.slot_mask) as usize]
    }

    /// What the slot word `word` (the one `seq` maps to) says about `seq`.
    #[inline]
    fn classify(&self, word: u64, seq: u64) -> Slot {
        let generation = seq >> self.gen_shift;
        let bit = 1u64 << (seq & self.layout.bit_index_mask());
        let held = word >> self.layout.gen_shift_in_word();
        if held == generation {
            if word & bit != 0 {
                Slot::Seen
            } else {
                Slot::Fresh { new: word | bit }
            }
        } else if held > generation {
            Slot::Overtaken
        } else {
            // An older block, left of the window by construction: its bits
            // no longer matter, start this block afresh.
            Slot::Fresh {
                new: (generation << self.layout.gen_shift_in_word()) | bit,
            }
        }
    }
}

/// RFC 4303 Appendix A2.1: the high 32 bits of a sequence number from its low
/// 32 bits, the highest number accepted (`Th || Tl`) and the window size `W`.
fn infer_esn(top: u64, size: u32, seq_low: u32) -> Result<u64, ReplayError> {
    let tl = top as u32;
    let th = (top >> 32) as u32;
    // Tl - W + 1, modulo 2^32: the low bits of the window's bottom edge.
    let bottom = tl.wrapping_sub(size - 1);
    let seq_high = if tl >= size - 1 {
        // The window lies within one 2^32 epoch: below its bottom edge means
        // the next epoch.
        if seq_low >= bottom {
            Some(th)
        } else {
            th.checked_add(1)
        }
    } else if seq_low >= bottom {
        // The window straddles an epoch boundary and this is its older part.
        // Before the first epoch (Th = 0) there is nothing there.
        th.checked_sub(1)
    } else {
        Some(th)
    };
    // `None`: before sequence number 0 or after 2^64 - 1, i.e. never valid;
    // the first is left of the window, the second a wrap back onto old
    // numbers, refused the same way a non-ESN counter past 2^32 - 1 is.
    seq_high
        .map(|high| (u64::from(high) << 32) | u64::from(seq_low))
        .ok_or(ReplayError::TooOld)
}

impl fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayWindow")
            .field("size", &self.size)
            .field("esn", &self.esn)
            .field("highest", &self.highest())
            .field("slots", &self.slots.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_count_keeps_a_spare_block_and_exact_generations() {
        for esn in [true, false] {
            let largest_seq = if esn { u64::MAX } else { u64::from(u32::MAX) };
            for size in MIN_WINDOW..=MAX_WINDOW {
                let w = ReplayWindow::new(size, esn).unwrap();
                let (slots, bits) = (w.slots.len() as u64, w.layout.block_bits());
                assert!(slots.is_power_of_two());
                assert!(bits * slots - (bits - 1) >= u64::from(size), "size {size}");
                // The largest generation fits above the bitmap.
                let shift = w.layout.gen_shift_in_word();
                let generation = largest_seq >> w.gen_shift;
                assert_eq!(generation << shift >> shift, generation, "size {size}");
            }
        }
        let slots = |size, esn| ReplayWindow::new(size, esn).unwrap().slots.len();
        assert_eq!(slots(DEFAULT_WINDOW, true), 256);
        assert_eq!(slots(MIN_WINDOW, true), 32);
        assert_eq!(slots(MAX_WINDOW, true), 2048);
        assert_eq!(slots(DEFAULT_WINDOW, false), 64);
        assert_eq!(slots(MIN_WINDOW, false), 2);
        assert_eq!(slots(MAX_WINDOW, false), 512);
    }

    #[test]
    fn a_32_bit_window_refuses_what_a_32_bit_counter_never_sends() {
        let w = ReplayWindow::new(DEFAULT_WINDOW, false).unwrap();
        assert_eq!(w.accept(u64::from(u32::MAX)), Ok(()));
        assert_eq!(w.accept(u64::from(u32::MAX) + 1), Err(ReplayError::TooOld));
        assert_eq!(w.highest(), u64::from(u32::MAX));
    }

    /// The state between a concurrent accept's slot CAS and its raising of
    /// `top`: the slot already belongs to a block a whole ring ahead. A
    /// number of the evicted block must be refused although `top` alone
    /// would still admit it.
    #[test]
    fn overtaken_slot_refuses_the_evicted_block() {
        for esn in [true, false] {
            let w = ReplayWindow::new(64, esn).unwrap();
            let bits = w.layout.block_bits();
            assert_eq!(w.accept(100), Ok(()));
            let ring = bits * w.slots.len() as u64;
            let ahead = 100 + ring;
            let slot = w.slot(ahead);
            assert!(std::ptr::eq(slot, w.slot(97)));
            slot.store(
                ((ahead >> w.gen_shift) << w.layout.gen_shift_in_word())
                    | 1 << (ahead & w.layout.bit_index_mask()),
                Ordering::Release,
            );
            assert_eq!(w.highest(), 100);
            assert_eq!(w.check(97), Err(ReplayError::TooOld));
            assert_eq!(w.accept(97), Err(ReplayError::TooOld));
            assert_eq!(w.accept(100), Err(ReplayError::TooOld));
            assert_eq!(w.accept(ahead), Err(ReplayError::Replayed));
            // Other slots are unaffected.
            assert_eq!(w.accept(100 - bits - (100 % bits) - 1), Ok(()), "esn {esn}");
        }
    }

    #[test]
    fn the_whole_window_state_fits_one_cache_line() {
        assert!(std::mem::size_of::<ReplayWindow>() <= 64);
    }

    #[test]
    fn replay_window_is_send_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ReplayWindow>();
    }
}
