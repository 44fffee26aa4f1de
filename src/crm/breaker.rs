//! Circuit breaker for the HTTP contact lookup, on a virtual clock.
//!
//! A screen pop must not hold a call while a sick CRM times out again and
//! again. The breaker is the usual three-state machine (Nygard, *Release
//! It!*):
//!
//! * **Closed**: lookups go out; `failure_threshold` consecutive failures or
//!   timeouts open it (a success resets the count).
//! * **Open**: lookups are refused (the caller falls back to "no contact")
//!   until `cool_down` has passed since it opened.
//! * **Half-open**: the first [`Breaker::allow`] after the cool-down lets one
//!   probe through and refuses the rest. The probe's success closes the
//!   breaker; its failure opens it for another cool-down. A probe that never
//!   reports (it should: lookups have a timeout) is written off after one
//!   more cool-down and another probe is allowed.
//!
//! Sans-IO: every call takes `now`; the breaker never reads the clock.

use std::time::{Duration, Instant};

/// Where the breaker stands, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probe_sent: Instant },
}

/// Settings of a [`Breaker`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker (at least 1).
    pub failure_threshold: u32,
    /// How long it stays open before a probe.
    pub cool_down: Duration,
}

impl Default for BreakerConfig {
    /// 5 consecutive failures, then 30 s open.
    fn default() -> BreakerConfig {
        BreakerConfig {
            failure_threshold: 5,
            cool_down: Duration::from_secs(30),
        }
    }
}

/// The breaker. Report the outcome of every allowed request with
/// [`Breaker::success`] or [`Breaker::failure`].
#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    state: State,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Breaker {
        Breaker {
            config: BreakerConfig {
                failure_threshold: config.failure_threshold.max(1),
                ..config
            },
            state: State::Closed { failures: 0 },
        }
    }

    /// Whether a request may go out now. In half-open state a `true` is the
    /// probe: the caller must send it and report its outcome.
    pub fn allow(&mut self, now: Instant) -> bool {
        match self.state {
            State::Closed { .. } => true,
            State::Open { until } if now >= until => {
                self.state = State::HalfOpen { probe_sent: now };
                true
            }
            State::Open { .. } => false,
            State::HalfOpen { probe_sent } => {
                if now.saturating_duration_since(probe_sent) >= self.config.cool_down {
                    // The probe never reported; try another.
                    self.state = State::HalfOpen { probe_sent: now };
                    true
                } else {
                    false
                }
            }
        }
    }

    /// An allowed request succeeded: the breaker closes.
    pub fn success(&mut self, _now: Instant) {
        self.state = State::Closed { failures: 0 };
    }

    /// An allowed request failed or timed out.
    pub fn failure(&mut self, now: Instant) {
        let open = State::Open {
            until: now + self.config.cool_down,
        };
        self.state = match self.state {
            State::Closed { failures } => {
                let failures = failures.saturating_add(1);
                if failures >= self.config.failure_threshold {
                    open
                } else {
                    State::Closed { failures }
                }
            }
            State::HalfOpen { .. } => open,
            // A late report from a request sent before the breaker opened:
            // keep the current cool-down rather than extend it.
            s @ State::Open { .. } => s,
        };
    }

    /// The current state (as of the last call; `Open` may already be due
    /// for a probe).
    pub fn state(&self) -> BreakerState {
        match self.state {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// When an open breaker will allow its probe, if it is open.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::Open { until } => Some(until),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOL: Duration = Duration::from_secs(30);

    fn breaker() -> (Breaker, Instant) {
        let b = Breaker::new(BreakerConfig {
            failure_threshold: 3,
            cool_down: COOL,
        });
        (b, Instant::now())
    }

    fn fail(b: &mut Breaker, now: Instant, n: u32) {
        for _ in 0..n {
            assert!(b.allow(now));
            b.failure(now);
        }
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let (mut b, t0) = breaker();
        fail(&mut b, t0, 2);
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&mut b, t0, 1);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allow(t0));
        assert_eq!(b.poll_timeout(), Some(t0 + COOL));
    }

    #[test]
    fn success_resets_the_failure_count() {
        let (mut b, t0) = breaker();
        fail(&mut b, t0, 2);
        b.success(t0);
        fail(&mut b, t0, 2);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn open_refuses_until_cool_down_then_allows_one_probe() {
        let (mut b, t0) = breaker();
        fail(&mut b, t0, 3);
        assert!(!b.allow(t0 + COOL - Duration::from_millis(1)));
        assert!(b.allow(t0 + COOL));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(!b.allow(t0 + COOL));
        assert!(!b.allow(t0 + COOL + Duration::from_secs(1)));
    }

    #[test]
    fn probe_success_closes() {
        let (mut b, t0) = breaker();
        fail(&mut b, t0, 3);
        let t1 = t0 + COOL;
        assert!(b.allow(t1));
        b.success(t1);
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow(t1));
        assert_eq!(b.poll_timeout(), None);
    }

    #[test]
    fn probe_failure_reopens_for_a_full_cool_down() {
        let (mut b, t0) = breaker();
        fail(&mut b, t0, 3);
        let t1 = t0 + COOL + Duration::from_secs(5);
        assert!(b.allow(t1));
        b.failure(t1);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allow(t1 + COOL - Duration::from_millis(1)));
        assert!(b.allow(t1 + COOL));
    }

    #[test]
    fn lost_probe_is_replaced_after_a_cool_down() {
        let (mut b, t0) = breaker();
        fail(&mut b, t0, 3);
        let t1 = t0 + COOL;
        assert!(b.allow(t1));
        assert!(!b.allow(t1 + COOL / 2));
        assert!(b.allow(t1 + COOL));
    }

    #[test]
    fn late_failure_while_open_does_not_extend_cool_down() {
        let (mut b, t0) = breaker();
        fail(&mut b, t0, 3);
        b.failure(t0 + Duration::from_secs(10));
        assert_eq!(b.poll_timeout(), Some(t0 + COOL));
    }

    #[test]
    fn zero_threshold_acts_as_one() {
        let mut b = Breaker::new(BreakerConfig {
            failure_threshold: 0,
            cool_down: COOL,
        });
        let t0 = Instant::now();
        assert!(b.allow(t0));
        b.failure(t0);
        assert_eq!(b.state(), BreakerState::Open);
    }
}
