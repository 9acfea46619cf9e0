//! Recovery budget and respawn backoff: the supervisor's policy, kept free of processes so it
//! can be tested alone.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// An optional budget of unexpected worker exits (fasthttp's `RecoverThreshold`), after which the
/// master gives up with [`Error::OverRecovery`](crate::Error::OverRecovery).
///
/// Without a threshold (the default) there is no such budget: a serving worker that crashes is
/// always respawned, and only a worker id that fails to become ready 5 times in a row ends the
/// server. Only *unexpected* exits count: a worker the master stopped itself (shutdown, reload,
/// scaling, recycling) never does. Without a window the count covers the master's whole life, as
/// in fasthttp; with a window only the exits of the last `window` count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub(crate) struct RecoverPolicy {
    /// Unexpected exits allowed; `None` (the default) means no budget.
    pub(crate) threshold: Option<usize>,
    /// Count only the exits within this sliding window; `None` counts them all.
    pub(crate) window: Option<Duration>,
}

impl RecoverPolicy {
    /// The effective threshold for `workers` workers: the one set, or fasthttp's
    /// `max(1, workers / 2)`.
    pub(crate) fn threshold_for(&self, workers: usize) -> usize {
        self.threshold.unwrap_or_else(|| (workers / 2).max(1))
    }
}

/// Counts unexpected exits against a [`RecoverPolicy`].
#[derive(Debug)]
pub(crate) struct RecoveryBudget {
    threshold: usize,
    window: Option<Duration>,
    exits: VecDeque<Instant>,
}

impl RecoveryBudget {
    pub(crate) fn new(policy: RecoverPolicy, workers: usize) -> Self {
        RecoveryBudget {
            threshold: policy.threshold_for(workers),
            window: policy.window,
            exits: VecDeque::new(),
        }
    }

    pub(crate) fn threshold(&self) -> usize {
        self.threshold
    }

    /// Records one unexpected exit at `now`. Returns `Err(count)` once the count is over the
    /// threshold.
    pub(crate) fn record(&mut self, now: Instant) -> Result<usize, usize> {
        self.exits.push_back(now);
        if let Some(window) = self.window {
            while let Some(&first) = self.exits.front() {
                if now.duration_since(first) > window {
                    self.exits.pop_front();
                } else {
                    break;
                }
            }
        }
        let n = self.exits.len();
        if n > self.threshold {
            Err(n)
        } else {
            Ok(n)
        }
    }
}

/// A worker that lived at least this long after it became ready is considered stable: its next
/// crash starts the backoff from the beginning.
pub(crate) const STABLE_AFTER: Duration = Duration::from_secs(10);

/// The delay before respawning a worker after its `crashes`-th consecutive crash (1-based):
/// 10 ms, 50 ms, 250 ms, 1.25 s, then 5 s at most. The first respawn is almost immediate so a
/// single crash costs little capacity; a worker that keeps crashing slows down.
pub(crate) fn backoff(crashes: u32) -> Duration {
    const BASE: Duration = Duration::from_millis(10);
    const MAX: Duration = Duration::from_secs(5);
    let exp = crashes.saturating_sub(1).min(8);
    BASE.saturating_mul(5u32.saturating_pow(exp)).min(MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_threshold_is_half_the_workers_but_at_least_one() {
        let p = RecoverPolicy::default();
        assert_eq!(p.threshold_for(1), 1);
        assert_eq!(p.threshold_for(2), 1);
        assert_eq!(p.threshold_for(3), 1);
        assert_eq!(p.threshold_for(8), 4);
        let p = RecoverPolicy {
            threshold: Some(0),
            window: None,
        };
        assert_eq!(p.threshold_for(8), 0);
    }

    #[test]
    fn budget_errs_only_past_the_threshold() {
        let policy = RecoverPolicy {
            threshold: Some(2),
            window: None,
        };
        let mut b = RecoveryBudget::new(policy, 4);
        let t = Instant::now();
        assert_eq!(b.record(t), Ok(1));
        assert_eq!(b.record(t), Ok(2));
        assert_eq!(b.record(t), Err(3));
    }

    #[test]
    fn zero_threshold_fails_on_the_first_exit() {
        let policy = RecoverPolicy {
            threshold: Some(0),
            window: None,
        };
        let mut b = RecoveryBudget::new(policy, 4);
        assert_eq!(b.record(Instant::now()), Err(1));
    }

    #[test]
    fn window_forgets_old_exits() {
        let policy = RecoverPolicy {
            threshold: Some(1),
            window: Some(Duration::from_secs(60)),
        };
        let mut b = RecoveryBudget::new(policy, 2);
        let t0 = Instant::now();
        assert_eq!(b.record(t0), Ok(1));
        // 61 s later the first exit has left the window.
        assert_eq!(b.record(t0 + Duration::from_secs(61)), Ok(1));
        // Two within the window are over a threshold of one.
        assert_eq!(b.record(t0 + Duration::from_secs(62)), Err(2));
    }

    #[test]
    fn without_window_exits_accumulate_forever() {
        let policy = RecoverPolicy {
            threshold: Some(1),
            window: None,
        };
        let mut b = RecoveryBudget::new(policy, 2);
        let t0 = Instant::now();
        assert_eq!(b.record(t0), Ok(1));
        assert_eq!(b.record(t0 + Duration::from_secs(3600)), Err(2));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(10));
        assert_eq!(backoff(2), Duration::from_millis(50));
        assert_eq!(backoff(3), Duration::from_millis(250));
        assert!(backoff(4) > backoff(3));
        assert_eq!(backoff(6), Duration::from_secs(5));
        assert_eq!(backoff(1000), Duration::from_secs(5));
        // Zero crashes (not expected) behaves like the first.
        assert_eq!(backoff(0), backoff(1));
    }
}
