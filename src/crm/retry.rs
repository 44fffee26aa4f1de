//! Webhook retry policy: capped exponential backoff with "equal jitter".
//!
//! Pure: the outbox worker asks [`Backoff::delay`] how long to wait before
//! the next delivery of a record, passing its own seeded RNG, and
//! [`Backoff::gives_up`] whether to stop.
//!
//! The idea is the one in the AWS Architecture Blog post "Exponential Backoff
//! And Jitter" (Marc Brooker, 2015): plain exponential backoff makes clients
//! that failed together retry together, so spread each wait randomly. Of the
//! variants compared there we use *equal jitter*: with the exponential
//! ceiling `c = min(max, base · 2^attempt)`, wait `c/2 + uniform(0..=c/2)`.
//! Full jitter (`uniform(0..=c)`) does slightly less total work, but it may
//! retry almost at once; equal jitter keeps a floor of `c/2`, so a CRM that
//! is down is never hammered by a few unlucky records, and waits still grow
//! by design.

use std::time::Duration;

use rand::{Rng, RngExt};

/// Retry policy for one record's deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the first retry's wait (it waits between `base/2` and `base`).
    pub base: Duration,
    /// Ceiling of any wait.
    pub max: Duration,
    /// Deliveries (the first one included) after which the record is given up.
    pub max_attempts: u32,
}

impl Default for Backoff {
    /// 1 s, doubling to at most 5 min, 12 deliveries: about 25 to 50 minutes
    /// of trying before a record is given up.
    fn default() -> Backoff {
        Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(300),
            max_attempts: 12,
        }
    }
}

impl Backoff {
    /// The exponential ceiling for retry `attempt` (0 = the wait after the
    /// first failed delivery): `min(max, base · 2^attempt)`, without overflow.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let base = self.base.as_nanos();
        let max = self.max.as_nanos();
        let grown = if attempt >= 127 {
            u128::MAX
        } else {
            base.saturating_mul(1u128 << attempt)
        };
        from_nanos(grown.min(max))
    }

    /// How long to wait before retry `attempt` (0-based: 0 after the first
    /// failed delivery): uniform in `[c/2, c]` with `c` = [`Self::ceiling`].
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let c = self.ceiling(attempt).as_nanos();
        let half = c / 2;
        // u64 nanoseconds cover 584 years; a longer ceiling is clamped.
        let spread = u64::try_from(c - half).unwrap_or(u64::MAX);
        let jitter = rng.random_range(0..=spread);
        from_nanos(half + u128::from(jitter))
    }

    /// Whether a record that has been delivered `attempts` times without
    /// success should be given up.
    pub fn gives_up(&self, attempts: u32) -> bool {
        attempts >= self.max_attempts
    }
}

/// A Duration from u128 nanoseconds, saturating at `Duration::MAX`.
fn from_nanos(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    match u64::try_from(nanos / NANOS_PER_SEC) {
        // The remainder is below 10^9, so it fits u32 and never carries.
        Ok(secs) => Duration::new(secs, (nanos % NANOS_PER_SEC) as u32),
        Err(_) => Duration::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    const SEED: u64 = 0x5EED_C0DE;

    fn policy() -> Backoff {
        Backoff {
            base: Duration::from_millis(500),
            max: Duration::from_secs(60),
            max_attempts: 8,
        }
    }

    #[test]
    fn ceiling_doubles_from_base_until_max() {
        let b = policy();
        assert_eq!(b.ceiling(0), Duration::from_millis(500));
        assert_eq!(b.ceiling(1), Duration::from_secs(1));
        assert_eq!(b.ceiling(4), Duration::from_secs(8));
        assert_eq!(b.ceiling(7), Duration::from_secs(60));
        assert_eq!(b.ceiling(200), Duration::from_secs(60));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn delay_stays_within_equal_jitter_bounds() {
        let b = policy();
        let mut rng = ChaCha8Rng::seed_from_u64(SEED);
        for attempt in 0..40 {
            let c = b.ceiling(attempt);
            for _ in 0..200 {
                let d = b.delay(attempt, &mut rng);
                assert!(
                    d >= c / 2 && d <= c,
                    "seed {SEED:#x} attempt {attempt}: {d:?} not in [{:?}, {c:?}]",
                    c / 2
                );
            }
        }
    }

    #[test]
    fn delay_grows_on_average_until_the_cap() {
        let b = policy();
        let mut rng = ChaCha8Rng::seed_from_u64(SEED);
        let mean = |attempt, rng: &mut ChaCha8Rng| {
            (0..500).map(|_| b.delay(attempt, rng)).sum::<Duration>() / 500
        };
        let means: Vec<Duration> = (0..9).map(|a| mean(a, &mut rng)).collect();
        for w in means.windows(2).take(6) {
            assert!(w[1] > w[0], "seed {SEED:#x}: {means:?}");
        }
        // Capped: attempt 7 and 8 share the 60 s ceiling, mean about 45 s.
        for m in &means[7..] {
            assert!(
                *m > Duration::from_secs(40) && *m < Duration::from_secs(50),
                "{means:?}"
            );
        }
    }

    #[test]
    fn delay_is_jittered_not_constant() {
        let b = policy();
        let mut rng = ChaCha8Rng::seed_from_u64(SEED);
        let first = b.delay(5, &mut rng);
        assert!((0..20).any(|_| b.delay(5, &mut rng) != first));
    }

    #[test]
    fn same_seed_gives_same_delays() {
        let b = policy();
        let run = || {
            let mut rng = ChaCha8Rng::seed_from_u64(SEED);
            (0..10).map(|a| b.delay(a, &mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn huge_max_does_not_overflow() {
        let b = Backoff {
            base: Duration::from_secs(1),
            max: Duration::MAX,
            max_attempts: 1,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(SEED);
        let d = b.delay(300, &mut rng);
        assert!(d >= Duration::MAX / 2);
    }

    #[test]
    fn gives_up_after_max_attempts() {
        let b = policy();
        assert!(!b.gives_up(0));
        assert!(!b.gives_up(7));
        assert!(b.gives_up(8));
        assert!(b.gives_up(9));
        assert!(Backoff::default().gives_up(12));
    }
}
