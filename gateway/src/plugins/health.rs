//! When a failing plugin may run again: exponential back-off on pipeline time, no I/O.
//!
//! Pipeline time, not wall time, so a replay at full speed and a live router treat a broken
//! plugin alike: after each consecutive failure the plugin sits out 1 s, 2 s, 4 s ... up to
//! five minutes of capture time; a minute without failure forgives the past ones.

const FIRST_BACKOFF_MS: u64 = 1_000;
const MAX_BACKOFF_MS: u64 = 300_000;
const FORGIVE_AFTER_MS: u64 = 60_000;

#[derive(Debug, Default, Clone)]
pub struct Health {
    failures: u32,
    retry_at_ms: u64,
    last_failure_ms: Option<u64>,
}

impl Health {
    /// Whether the plugin may be (re)started at `now_ms`.
    pub fn may_run(&self, now_ms: u64) -> bool {
        now_ms >= self.retry_at_ms
    }

    /// Records a failure at `now_ms`; returns when the plugin may run again.
    pub fn failed(&mut self, now_ms: u64) -> u64 {
        self.failures = self.failures.saturating_add(1);
        let backoff = FIRST_BACKOFF_MS
            .saturating_mul(1 << (self.failures - 1).min(20))
            .min(MAX_BACKOFF_MS);
        self.last_failure_ms = Some(now_ms);
        self.retry_at_ms = now_ms.saturating_add(backoff);
        self.retry_at_ms
    }

    /// Records a successful call; true when this ends a run of failures (the plugin is
    /// healthy again and the back office should hear so).
    pub fn succeeded(&mut self, now_ms: u64) -> bool {
        match self.last_failure_ms {
            Some(at) if now_ms >= at.saturating_add(FORGIVE_AFTER_MS) => {
                self.failures = 0;
                self.last_failure_ms = None;
                true
            }
            _ => false,
        }
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_consecutive_failure_doubles_the_wait_up_to_five_minutes() {
        let mut h = Health::default();
        assert!(h.may_run(0));
        assert_eq!(h.failed(0), 1_000);
        assert!(!h.may_run(999));
        assert!(h.may_run(1_000));
        assert_eq!(h.failed(1_000), 3_000);
        assert_eq!(h.failed(3_000), 7_000);
        for _ in 0..30 {
            h.failed(10_000);
        }
        assert_eq!(h.failed(10_000), 10_000 + MAX_BACKOFF_MS);
    }

    #[test]
    fn a_quiet_minute_forgives_past_failures() {
        let mut h = Health::default();
        h.failed(0);
        h.failed(1_000);
        assert!(!h.succeeded(30_000), "too soon to forgive");
        assert!(h.succeeded(61_000));
        assert_eq!(h.failures(), 0);
        assert_eq!(h.failed(61_500), 62_500, "back to the first step");
    }

    #[test]
    fn success_without_past_failures_is_no_news() {
        assert!(!Health::default().succeeded(1_000_000));
    }
}
