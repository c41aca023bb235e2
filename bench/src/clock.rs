//! The one clock the generator and the sink share: CLOCK_MONOTONIC in
//! nanoseconds. Both run on the same machine, so a transmit time written by
//! one process and a receive time read by another are comparable.

/// Nanoseconds of CLOCK_MONOTONIC.
pub fn now_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => {
            let secs = u64::try_from(ts.tv_sec()).unwrap_or(0);
            let nanos = u64::try_from(ts.tv_nsec()).unwrap_or(0);
            secs.saturating_mul(1_000_000_000).saturating_add(nanos)
        }
        // CLOCK_MONOTONIC cannot fail on Linux; a zero would show as a
        // nonsensical latency rather than a crash.
        Err(_) => 0,
    }
}
