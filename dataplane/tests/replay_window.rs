//! The anti-replay window: tables of (sequence number, outcome) across the
//! window's edges in the manner of WireGuard's selftest/counter.c, ESN epoch
//! inference against a model of RFC 4303 Appendix A, every window size, a
//! random walk against a reference model, and several threads on one window.

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;

use xdpsec_dataplane::replay::{
    ReplayError, ReplayWindow, WindowSizeError, DEFAULT_WINDOW, MAX_WINDOW, MIN_WINDOW,
};
use ReplayError::{Replayed, TooOld, ZeroSequence};

const EPOCH: u64 = 1 << 32;

/// splitmix64: a fixed-seed generator, so every run sees the same inputs.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

/// What the data path does with one packet: `check` before decrypting,
/// `accept` after authenticating. On one thread the two must agree.
fn receive(w: &ReplayWindow, seq_low: u32) -> Result<u64, ReplayError> {
    let checked = w.check(seq_low);
    assert_eq!(
        w.check(seq_low),
        checked,
        "check must not change the window"
    );
    match checked {
        Ok(seq) => {
            assert_eq!(seq as u32, seq_low, "inferred number keeps the wire bits");
            assert_eq!(
                w.accept(seq),
                Ok(()),
                "check said {seq} is fresh, accept refused it"
            );
            Ok(seq)
        }
        Err(e) => {
            if !w.esn() {
                // Without ESN the number is the wire value: accept must refuse
                // it for the same reason (and not change anything).
                let before = w.highest();
                assert_eq!(w.accept(u64::from(seq_low)), Err(e), "seq {seq_low}");
                assert_eq!(w.highest(), before);
            }
            Err(e)
        }
    }
}

/// Runs a table of (wire sequence number, expected outcome) in order.
fn run_table(w: &ReplayWindow, table: &[(u64, Result<u64, ReplayError>)]) {
    for (i, &(seq_low, expected)) in table.iter().enumerate() {
        let seq_low = u32::try_from(seq_low).expect("table holds wire values");
        assert_eq!(
            receive(w, seq_low),
            expected,
            "row {i}: seq_low {seq_low} (window size {}, esn {}, highest {})",
            w.size(),
            w.esn(),
            w.highest()
        );
    }
}

fn ok(seq: u64) -> Result<u64, ReplayError> {
    Ok(seq)
}

#[test]
fn window_edges_without_esn() {
    for size in [32u32, 33, 64, 100, 1024, 8192] {
        let w = ReplayWindow::new(size, false).unwrap();
        let s = u64::from(size);
        #[rustfmt::skip]
        let table = [
            (0, Err(ZeroSequence)),       // 0 is never sent
            (1, ok(1)),                   // first packet
            (1, Err(Replayed)),           // its duplicate
            (9, ok(9)),                   // a gap ...
            (8, ok(8)),                   // ... filled in backwards
            (7, ok(7)),
            (7, Err(Replayed)),
            (2, ok(2)),
            (9, Err(Replayed)),           // the top itself
            (s, ok(s)),                   // window is now 1..=s
            (1, Err(Replayed)),           // exactly at the left edge, seen
            (3, ok(3)),                   // inside, fresh
            (s + 1, ok(s + 1)),           // in order: window 2..=s+1
            (1, Err(TooOld)),             // one past the left edge
            (2, Err(Replayed)),           // exactly at the left edge, seen
            (4, ok(4)),
            (s - 1, ok(s - 1)),
            (s - 1, Err(Replayed)),
            (2 * s, ok(2 * s)),           // jump by s - 1: window s+1..=2s
            (s, Err(TooOld)),             // one past the left edge, seen before
            (s - 2, Err(TooOld)),         // never seen, but gone
            (s + 1, Err(Replayed)),       // exactly at the left edge, seen
            (s + 2, ok(s + 2)),           // one inside it, fresh
            (2 * s - 1, ok(2 * s - 1)),
            (2 * s, Err(Replayed)),
            (2 * s + 1, ok(2 * s + 1)),   // window s+2..=2s+1
            (s + 1, Err(TooOld)),         // fell off the left edge
            (s + 3, ok(s + 3)),           // the new left edge+1, never seen
            (10 * s, ok(10 * s)),         // jump far past the window: 9s+1..=10s
            (9 * s + 1, ok(9 * s + 1)),   // exactly at the left edge, never seen
            (9 * s, Err(TooOld)),         // one past it
            (2 * s + 1, Err(TooOld)),     // the old top
            (2 * s + 2, Err(TooOld)),     // never seen, long gone
            (10 * s - 1, ok(10 * s - 1)),
            (10 * s, Err(Replayed)),
            (10 * s + 1, ok(10 * s + 1)), // slide by one: 9s+2..=10s+1
            (9 * s + 1, Err(TooOld)),     // the old left edge is out
            (9 * s + 2, ok(9 * s + 2)),   // the new one is in
            (11 * s + 1, ok(11 * s + 1)), // jump by exactly s: 10s+2..=11s+1
            (10 * s + 1, Err(TooOld)),    // exactly s behind the top
            (10 * s + 2, ok(10 * s + 2)), // s - 1 behind: the left edge
            (10 * s, Err(TooOld)),
            (11 * s, ok(11 * s)),
            (11 * s + 1, Err(Replayed)),
        ];
        run_table(&w, &table);
        assert_eq!(w.highest(), 11 * s + 1);
    }
}

#[test]
fn counter_c_style_sweeps() {
    // WireGuard's counter.c loops: fill a window in order and backwards,
    // everything seen once, then refused.
    for size in [32u32, 64, 1024] {
        let s = u64::from(size);
        let w = ReplayWindow::new(size, false).unwrap();
        for i in 1..=s {
            assert_eq!(receive(&w, i as u32), ok(i), "size {size}");
        }
        for i in 1..=s {
            assert_eq!(receive(&w, i as u32), Err(Replayed), "size {size}");
        }
        assert_eq!(receive(&w, 0), Err(ZeroSequence));

        let w = ReplayWindow::new(size, false).unwrap();
        for i in (1..=s + 1).rev() {
            let expect = if i == 1 { Err(TooOld) } else { ok(i) };
            assert_eq!(receive(&w, i as u32), expect, "size {size}, i {i}");
        }

        let w = ReplayWindow::new(size, false).unwrap();
        let top = 3 * s + 5;
        for i in (top - s..=top).rev() {
            let expect = if i == top - s { Err(TooOld) } else { ok(i) };
            assert_eq!(receive(&w, i as u32), expect, "size {size}, i {i}");
        }
        for i in top - s + 1..=top {
            assert_eq!(receive(&w, i as u32), Err(Replayed), "size {size}, i {i}");
        }
    }
}

#[test]
fn non_esn_stops_at_the_32_bit_boundary() {
    let w = ReplayWindow::new(64, false).unwrap();
    let max = u64::from(u32::MAX);
    #[rustfmt::skip]
    let table = [
        (max - 100, ok(max - 100)), // a first packet far out is fine
        (max - 1, ok(max - 1)),
        (max, ok(max)),             // the last number there is
        (max, Err(Replayed)),
        (max - 50, ok(max - 50)),
        (max - 63, ok(max - 63)),   // the left edge
        (max - 64, Err(TooOld)),    // one past it
        (max - 100, Err(TooOld)),
        (0, Err(ZeroSequence)),     // no wrap: 0 is never valid ...
        (1, Err(TooOld)),           // ... and small numbers are old, not new
        (63, Err(TooOld)),
        (64, Err(TooOld)),
    ];
    run_table(&w, &table);
    assert_eq!(w.highest(), max);
    assert_eq!(w.check(u32::MAX - 2), ok(max - 2), "still fresh");
}

#[test]
fn esn_epoch_change_with_and_without_a_straddling_window() {
    let w = ReplayWindow::new(64, true).unwrap();
    let max = u64::from(u32::MAX);
    #[rustfmt::skip]
    let table = [
        // A first packet far out; the window then lies inside epoch 0
        // (Tl >= W - 1).
        (max - 100, ok(max - 100)),
        (max - 10, ok(max - 10)),
        (max, ok(max)),
        (max - 5, ok(max - 5)),
        (max, Err(Replayed)),
        // Below the window's bottom: Appendix A reads it as the next epoch.
        (5, ok(EPOCH + 5)),
        // Now top = 2^32 + 5, Tl < W - 1: the window straddles the boundary.
        (max, Err(Replayed)),              // epoch 0's last number, seen
        (max - 3, ok(max - 3)),            // epoch 0, in the window, fresh
        (max - 57, ok(max - 57)),          // epoch 0, exactly the left edge
        (3, ok(EPOCH + 3)),                // epoch 1, behind the top
        (0, ok(EPOCH)),                    // 2^32 itself is a valid number
        (0, Err(Replayed)),
        (6, ok(EPOCH + 6)),
        (200, ok(EPOCH + 200)),
        // Window back inside one epoch (epoch 1).
        (137, ok(EPOCH + 137)),            // exactly the left edge
    ];
    run_table(&w, &table);
    assert_eq!(w.highest(), EPOCH + 200);
    // Below the bottom edge (Tl - W + 1 = 137): the next epoch, far ahead.
    assert_eq!(w.check(136), ok(2 * EPOCH + 136));
    assert_eq!(w.check(u32::MAX - 3), ok(EPOCH + max - 3));
    assert_eq!(w.check(u32::MAX), ok(EPOCH + max));
    // A full number from before the window moved (e.g. checked by another
    // worker earlier) is refused by accept.
    assert_eq!(w.accept(max - 3), Err(TooOld));
    assert_eq!(w.accept(max - 2), Err(TooOld));
    assert_eq!(w.accept(EPOCH + 136), Err(TooOld));
    assert_eq!(w.accept(EPOCH + 137), Err(Replayed));
    assert_eq!(w.accept(EPOCH + 138), Ok(()));
}

#[test]
fn esn_first_epoch_and_last_epoch() {
    // Fresh ESN window: top = 0, the window "straddles" into negative numbers,
    // which do not exist.
    let w = ReplayWindow::new(64, true).unwrap();
    assert_eq!(w.check(u32::MAX), Err(TooOld));
    assert_eq!(w.check(u32::MAX - 62), Err(TooOld));
    // Below that edge: epoch 0 itself, a big jump forward.
    assert_eq!(w.check(u32::MAX - 63), ok(u64::from(u32::MAX) - 63));
    assert_eq!(w.check(0), Err(ZeroSequence));
    assert_eq!(w.check(1), ok(1));

    // The very end of the 64-bit space.
    let w = ReplayWindow::new(64, true).unwrap();
    assert_eq!(w.accept(u64::MAX - 5), Ok(()));
    assert_eq!(receive(&w, u32::MAX), ok(u64::MAX));
    assert_eq!(receive(&w, u32::MAX - 10), ok(u64::MAX - 10));
    assert_eq!(receive(&w, u32::MAX - 5), Err(Replayed));
    // A next epoch would be past 2^64 - 1: a wrap onto old numbers, refused.
    assert_eq!(w.check(0), Err(TooOld));
    assert_eq!(w.check(5), Err(TooOld));
    assert_eq!(w.accept(0), Err(ZeroSequence));
    assert_eq!(w.highest(), u64::MAX);
}

/// RFC 4303 Appendix A's inference, written differently: the number with the
/// given low 32 bits in `top - W + 1 ..= top - W + 2^32`. `None` if that is
/// negative or past 2^64 - 1.
fn model_infer(top: u64, size: u32, low: u32) -> Option<u64> {
    let bottom = i128::from(top) - i128::from(size) + 1;
    let v = bottom + (i128::from(low) - bottom).rem_euclid(1 << 32);
    u64::try_from(v).ok()
}

#[test]
fn esn_inference_matches_appendix_a() {
    let mut rng = Rng(0x7265_706c_6179_0001);
    for size in [32u32, 64, 1000, 1024, 8192] {
        let s = u64::from(size);
        let mut tops = vec![1, 2, s - 2, s - 1, s, s + 1, 3 * s];
        for epoch in [1u64, 2, 7, u64::from(u32::MAX)] {
            let base = epoch * EPOCH;
            tops.extend([
                base - s,
                base - 1,
                base,
                base + 1,
                base + s - 2,
                base + s - 1,
            ]);
            tops.extend([base + s, base + (1 << 31), base + (EPOCH - 1)]);
        }
        tops.extend([u64::MAX - s, u64::MAX - 1, u64::MAX]);
        for _ in 0..20 {
            tops.push(rng.next_u64() >> rng.below(40));
        }
        for &top in tops.iter().filter(|&&t| t > 0) {
            let w = ReplayWindow::new(size, true).unwrap();
            assert_eq!(w.accept(top), Ok(()));
            let tl = top as u32;
            let mut lows = vec![0, 1, u32::MAX, u32::MAX - 1, tl, tl.wrapping_add(1)];
            for d in [size - 1, size, size + 1, size + 15, 1 << 31] {
                lows.extend([tl.wrapping_sub(d), tl.wrapping_sub(d).wrapping_add(1)]);
                lows.push(tl.wrapping_add(d));
            }
            for _ in 0..50 {
                lows.push(rng.next_u64() as u32);
                lows.push(tl.wrapping_sub(rng.below(2 * s) as u32));
            }
            for low in lows {
                let expected = match model_infer(top, size, low) {
                    None => Err(TooOld),
                    Some(0) => Err(ZeroSequence),
                    Some(v) if v == top => Err(Replayed),
                    Some(v) => Ok(v),
                };
                assert_eq!(
                    w.check(low),
                    expected,
                    "size {size}, top {top:#x}, low {low:#x}"
                );
            }
        }
    }
}

#[test]
fn esn_random_walk_across_epochs_infers_the_true_number() {
    let mut rng = Rng(0x7265_706c_6179_0002);
    for size in [32u32, 64, 1024] {
        let s = u64::from(size);
        let w = ReplayWindow::new(size, true).unwrap();
        // Start just before the first boundary: the window will straddle it.
        let mut top = EPOCH - 5 * s;
        assert_eq!(w.accept(top), Ok(()));
        let mut seen = BTreeSet::from([top]);
        let mut crossed = 0;
        for _ in 0..30_000 {
            let r = rng.below(100);
            let seq = if r < 60 {
                top + 1 + rng.below(s / 2) // ahead, small steps
            } else if r < 62 {
                top + rng.below(1 << 26) + 1 // a big jump ahead
            } else {
                top - rng.below(s) // late, inside the window
            };
            let expected = if seen.contains(&seq) {
                Err(Replayed)
            } else {
                Ok(seq)
            };
            assert_eq!(
                receive(&w, seq as u32),
                expected,
                "size {size}, top {top:#x}"
            );
            if expected.is_ok() {
                seen.insert(seq);
                if seq >> 32 != top >> 32 {
                    crossed += 1;
                }
                top = top.max(seq);
            }
            // Keep the model small: only the window matters.
            while seen.first().is_some_and(|&f| f + s <= top) {
                seen.pop_first();
            }
        }
        assert_eq!(w.highest(), top);
        assert!(
            crossed >= 3,
            "size {size}: only {crossed} epoch changes seen"
        );
    }
}

#[test]
fn every_window_size_round_trips() {
    for bad in [0, 1, MIN_WINDOW - 1, MAX_WINDOW + 1, 10_000, u32::MAX] {
        assert_eq!(
            ReplayWindow::new(bad, false).err(),
            Some(WindowSizeError(bad))
        );
        assert_eq!(
            ReplayWindow::new(bad, true).err(),
            Some(WindowSizeError(bad))
        );
    }
    assert!((MIN_WINDOW..=MAX_WINDOW).contains(&DEFAULT_WINDOW));
    let mut sizes = 0;
    for size in MIN_WINDOW..=MAX_WINDOW {
        let s = u64::from(size);
        for esn in [false, true] {
            let w = ReplayWindow::new(size, esn).unwrap();
            assert_eq!((w.size(), w.esn(), w.highest()), (size, esn, 0));
            // Around the 2^32 boundary with ESN, plain small numbers without.
            let top = if esn { EPOCH + s / 3 } else { 5 * s + 3 };
            let ctx = format!("size {size}, esn {esn}");
            assert_eq!(w.accept(top), Ok(()), "{ctx}");
            assert_eq!(w.check((top - s + 1) as u32), Ok(top - s + 1), "{ctx}");
            if !esn {
                assert_eq!(w.check((top - s) as u32), Err(TooOld), "{ctx}");
            }
            assert_eq!(w.accept(top - s + 1), Ok(()), "{ctx}: left edge");
            assert_eq!(w.accept(top - s + 1), Err(Replayed), "{ctx}");
            assert_eq!(
                w.accept(top - s),
                Err(TooOld),
                "{ctx}: one past the left edge"
            );
            assert_eq!(w.accept(top), Err(Replayed), "{ctx}");
            // Slide by exactly the window: the old top drops out, the number
            // after it is the new left edge.
            assert_eq!(w.accept(top + s), Ok(()), "{ctx}");
            assert_eq!(w.accept(top), Err(TooOld), "{ctx}");
            assert_eq!(w.check((top + 1) as u32), Ok(top + 1), "{ctx}");
            assert_eq!(w.accept(top + 1), Ok(()), "{ctx}");
            assert_eq!(w.accept(top + 1), Err(Replayed), "{ctx}");
            assert_eq!(w.highest(), top + s, "{ctx}");
            assert!(format!("{w:?}").contains(&format!("size: {size}")), "{ctx}");
            sizes += 1;
        }
    }
    assert_eq!(sizes, 2 * (MAX_WINDOW - MIN_WINDOW + 1));
}

#[test]
fn every_number_of_a_window_is_tracked() {
    for size in [32u32, 33, 47, 48, 63, 64, 65, 100, 1000, 1024, 4097, 8192] {
        let s = u64::from(size);
        let w = ReplayWindow::new(size, false).unwrap();
        let top = 1_000_003;
        assert_eq!(w.accept(top), Ok(()));
        for seq in (top - s + 1..top).rev() {
            assert_eq!(w.accept(seq), Ok(()), "size {size}, seq {seq}");
        }
        for seq in top - s + 1..=top {
            assert_eq!(w.check(seq as u32), Err(Replayed), "size {size}, seq {seq}");
            assert_eq!(w.accept(seq), Err(Replayed), "size {size}, seq {seq}");
        }
        assert_eq!(w.accept(top - s), Err(TooOld));
        // Slide one at a time, skipping every 7th: the left edge follows.
        for next in top + 1..top + 2 * s + 40 {
            if next % 7 == 0 {
                continue;
            }
            assert_eq!(w.accept(next), Ok(()), "size {size}, next {next}");
            assert_eq!(w.accept(next - s), Err(TooOld), "size {size}, next {next}");
            let edge = next - s + 1;
            let expect = if edge % 7 == 0 && edge > top {
                Ok(edge)
            } else {
                Err(Replayed)
            };
            assert_eq!(w.check(edge as u32), expect, "size {size}, edge {edge}");
        }
    }
}

#[test]
fn jumps_leave_no_stale_state_behind() {
    // After a jump, every number in the new window that was never accepted
    // must be fresh, whatever the ring slots held before.
    for size in [32u32, 64, 100, 1024] {
        let s = u64::from(size);
        for jump in [
            1,
            15,
            16,
            17,
            s - 1,
            s,
            s + 1,
            s + 17,
            2 * s,
            16 * 128 + 1,
            1 << 20,
        ] {
            let w = ReplayWindow::new(size, false).unwrap();
            let top = 50_000;
            let mut accepted = HashSet::new();
            for seq in top - s + 1..=top {
                if seq % 3 != 0 {
                    assert_eq!(w.accept(seq), Ok(()));
                    accepted.insert(seq);
                }
            }
            assert_eq!(w.accept(top + jump), Ok(()));
            accepted.insert(top + jump);
            let new_top = top + jump;
            for seq in new_top - s - 20..=new_top + 20 {
                let expected = if seq + s <= new_top {
                    Err(TooOld)
                } else if accepted.contains(&seq) {
                    Err(Replayed)
                } else {
                    Ok(seq)
                };
                assert_eq!(
                    w.check(seq as u32),
                    expected,
                    "size {size}, jump {jump}, seq {seq}"
                );
            }
        }
    }
}

#[test]
fn random_walk_matches_a_reference_model() {
    let mut rng = Rng(0x7265_706c_6179_0003);
    for size in [32u32, 33, 64, 200, 1024] {
        let s = u64::from(size);
        let w = ReplayWindow::new(size, false).unwrap();
        let mut top = 0u64;
        let mut seen = BTreeSet::new();
        for step in 0..40_000 {
            let r = rng.below(100);
            let seq = if r < 50 {
                top + rng.below(4) // in order-ish, with duplicates of the top
            } else if r < 85 {
                top.saturating_sub(rng.below(s + s / 2)) // late, around the left edge
            } else if r < 97 {
                top + rng.below(3 * s) // ahead, past the window's width
            } else {
                top + rng.below(1 << 20) // far ahead
            };
            let seq = seq.min(u64::from(u32::MAX));
            let expected = if seq == 0 {
                Err(ZeroSequence)
            } else if seq + s <= top {
                Err(TooOld)
            } else if seen.contains(&seq) {
                Err(Replayed)
            } else {
                Ok(seq)
            };
            let got = if step % 2 == 0 {
                receive(&w, seq as u32)
            } else {
                w.accept(seq).map(|()| seq)
            };
            assert_eq!(
                got, expected,
                "size {size}, step {step}, top {top}, seq {seq}"
            );
            if expected.is_ok() {
                seen.insert(seq);
                top = top.max(seq);
            }
            while seen.first().is_some_and(|&f| f + s <= top) {
                seen.pop_first();
            }
            assert_eq!(w.highest(), top);
        }
    }
}

/// One packet as a worker sees it: check, then (authentication standing in
/// as "the check's number is the true one") accept. Reports what a correct
/// window must never do as `Err`, so a thread never panics while others wait
/// at a barrier.
fn worker_packet(
    window: &ReplayWindow,
    completed_max: &AtomicU64,
    seq: u64,
    in_window: bool,
) -> Result<Option<u64>, String> {
    let size = u64::from(window.size());
    let before = completed_max.load(Ordering::SeqCst);
    let result = match window.check(seq as u32) {
        // With ESN a number left of the window reads as the next epoch
        // (RFC 4303 Appendix A); the ICV covers the high bits, so that packet
        // fails authentication and is never offered to accept.
        Ok(full) if full != seq => {
            return if window.esn() && !in_window {
                Ok(None)
            } else {
                Err(format!("{seq} inferred as {full}"))
            };
        }
        Ok(full) => window.accept(full),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) if !in_window => Err(format!("{seq}, left of the window, accepted")),
        Ok(()) if seq + size <= before => {
            Err(format!("{seq} accepted after {before} had completed"))
        }
        Ok(()) => {
            completed_max.fetch_max(seq, Ordering::SeqCst);
            Ok(Some(seq))
        }
        Err(Replayed) => Ok(None),
        Err(e) if in_window => Err(format!("in-window {seq} refused: {e:?}")),
        Err(_) => Ok(None),
    }
}

/// Several workers on one SA. Numbers go out in chunks smaller than the
/// window; every thread gets every number of a chunk (so each is raced for by
/// all of them), shuffled, with extra duplicates and numbers from chunks long
/// gone; a barrier between chunks bounds how far threads drift apart, so every
/// number of the current chunk is inside the window whenever anyone tries it.
/// Then each number must be accepted exactly once overall, never refused as
/// `TooOld`, and nothing from the old chunks accepted.
fn overlapping_streams(esn: bool, first: u64) {
    const THREADS: usize = 4;
    const SIZE: u32 = 256;
    const CHUNK: u64 = 64;
    const CHUNKS: u64 = 600;
    // A chunk this far back is entirely left of the window once the chunk
    // before the current one is done: (STALE - 1) * CHUNK >= SIZE.
    const STALE: u64 = SIZE as u64 / CHUNK + 1;

    let window = ReplayWindow::new(SIZE, esn).unwrap();
    // Gaps: numbers that are never sent (all threads agree which).
    let sent = |seq: u64| seq % 11 != 3;
    let barrier = Barrier::new(THREADS);
    let completed_max = AtomicU64::new(0);

    let results: Vec<(Vec<u64>, Vec<String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (window, barrier, completed_max) = (&window, &barrier, &completed_max);
                scope.spawn(move || {
                    let mut rng = Rng(0x7468_7265_6164_0000 + t as u64);
                    let (mut mine, mut errors) = (Vec::new(), Vec::new());
                    let mut batch = Vec::new();
                    for c in 0..CHUNKS {
                        let start = first + c * CHUNK;
                        batch.clear();
                        batch.extend((start..start + CHUNK).filter(|&s| sent(s)));
                        // Duplicates within the chunk.
                        for _ in 0..CHUNK / 4 {
                            let seq = start + rng.below(CHUNK);
                            if sent(seq) {
                                batch.push(seq);
                            }
                        }
                        // Replays from long gone chunks.
                        if c >= STALE {
                            for _ in 0..4 {
                                batch.push(start - STALE * CHUNK + rng.below(CHUNK));
                            }
                        }
                        rng.shuffle(&mut batch);
                        for &seq in &batch {
                            match worker_packet(window, completed_max, seq, seq >= start) {
                                Ok(Some(seq)) => mine.push(seq),
                                Ok(None) => {}
                                Err(e) => errors.push(format!("thread {t}: {e}")),
                            }
                        }
                        barrier.wait();
                    }
                    (mine, errors)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let errors: Vec<&String> = results.iter().flat_map(|(_, e)| e).collect();
    assert!(
        errors.is_empty(),
        "{} violations, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    let mut all: Vec<u64> = results.into_iter().flat_map(|(a, _)| a).collect();
    all.sort_unstable();
    let expected: Vec<u64> = (first..first + CHUNKS * CHUNK)
        .filter(|&s| sent(s))
        .collect();
    assert_eq!(
        all.len(),
        expected.len(),
        "some number accepted twice or not at all"
    );
    assert_eq!(all, expected);
    assert_eq!(window.highest(), *expected.last().unwrap());
}

#[test]
fn concurrent_overlapping_streams_accept_each_number_once() {
    overlapping_streams(false, 1);
}

#[test]
fn concurrent_overlapping_streams_across_the_esn_boundary() {
    // 600 chunks of 64 starting 20_000 below 2^32: crosses into epoch 1.
    overlapping_streams(true, EPOCH - 20_000);
}

/// No barrier: threads race freely over a stream with big jumps, on the
/// smallest window (so ring slots are taken over all the time). Whatever the
/// interleaving: no number accepted twice, none accepted behind a window that
/// a completed accept had set up, and the largest number always accepted.
#[test]
fn concurrent_free_running_with_jumps() {
    const THREADS: usize = 4;
    const SIZE: u32 = MIN_WINDOW;
    let s = u64::from(SIZE);

    // One shared stream: mostly increasing, some late numbers, some jumps.
    let mut rng = Rng(0x6672_6565_0000_0001);
    let mut stream = Vec::new();
    let mut top = 1u64;
    for _ in 0..40_000 {
        let r = rng.below(100);
        let seq = if r < 70 {
            top + 1 + rng.below(3)
        } else if r < 90 {
            top.saturating_sub(rng.below(2 * s)).max(1)
        } else if r < 98 {
            top + s + rng.below(8 * s)
        } else {
            top + rng.below(1 << 16) + 1
        };
        top = top.max(seq);
        stream.push(seq);
    }
    let max = top;

    let window = ReplayWindow::new(SIZE, false).unwrap();
    let completed_max = AtomicU64::new(0);
    let accepted: Vec<Vec<u64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (window, completed_max, stream) = (&window, &completed_max, &stream);
                scope.spawn(move || {
                    // Each thread walks the stream with a local reordering of
                    // up to 16 positions, so they overlap but differ.
                    let mut rng = Rng(0x6672_6565_1000_0000 + t as u64);
                    let mut order: Vec<usize> = (0..stream.len()).collect();
                    for chunk in order.chunks_mut(16) {
                        rng.shuffle(chunk);
                    }
                    let mut mine = Vec::new();
                    for i in order {
                        let seq = stream[i];
                        let before = completed_max.load(Ordering::SeqCst);
                        let result = window
                            .check(seq as u32)
                            .and_then(|full| window.accept(full));
                        if result.is_ok() {
                            assert!(seq + s > before, "thread {t}: {seq} after {before}");
                            completed_max.fetch_max(seq, Ordering::SeqCst);
                            mine.push(seq);
                        }
                    }
                    mine
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let mut all: Vec<u64> = accepted.into_iter().flatten().collect();
    let total = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), total, "a number was accepted twice");
    assert_eq!(
        all.last(),
        Some(&max),
        "the largest number must be accepted"
    );
    assert_eq!(window.highest(), max);
    // Sanity: the race did not starve the window.
    let distinct: HashSet<u64> = stream.iter().copied().collect();
    assert!(
        total * 2 > distinct.len(),
        "only {total} of {} accepted",
        distinct.len()
    );
}
