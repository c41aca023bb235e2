//! Rate-limited logging for what anyone on the network can trigger
//! (IKE_SA_INIT answers and refusals): a flood must not turn into a flood
//! of log lines, and the operator must still see that something was
//! suppressed, and how much.

use std::time::{Duration, Instant};

/// Lines let through per window.
const PER_WINDOW: u32 = 10;
const WINDOW: Duration = Duration::from_secs(1);

/// One kind of message's budget.
#[derive(Debug, Default)]
pub(crate) struct LogLimit {
    window: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl LogLimit {
    /// Whether a line may be logged at `now`; if so, how many were
    /// suppressed since the last one that was (to log with it).
    pub(crate) fn allow(&mut self, now: Instant) -> Option<u64> {
        if self
            .window
            .is_none_or(|start| now.saturating_duration_since(start) >= WINDOW)
        {
            self.window = Some(now);
            self.used = 0;
        }
        if self.used >= PER_WINDOW {
            self.suppressed += 1;
            return None;
        }
        self.used += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_cut_to_the_budget_and_the_rest_counted() {
        let mut limit = LogLimit::default();
        let t0 = Instant::now();
        let allowed = (0..1000)
            .filter(|i| limit.allow(t0 + Duration::from_micros(*i)).is_some())
            .count();
        assert_eq!(allowed, PER_WINDOW as usize);
        // The next window's first line reports what was held back.
        assert_eq!(limit.allow(t0 + WINDOW), Some(1000 - u64::from(PER_WINDOW)));
        assert_eq!(limit.allow(t0 + WINDOW), Some(0));
    }
}
