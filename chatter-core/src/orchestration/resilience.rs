//! Retry delays, error classification and the per-model circuit breaker.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::{Error, ErrorClass};

use super::config::{BreakerConfig, ResilienceConfig};

/// What to do after a failed attempt, by the error's class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Disposition {
    /// Try the same model again (after a delay), then fall back.
    Retry,
    /// Do not retry this model; try the next one of the chain.
    Fallback,
    /// Give up: the request itself is at fault, or the failure is not the model's.
    Fail,
}

/// Timeouts, rate limits, 5xx and connection failures are retried; authentication failures and
/// unusable answers move to the next model (another provider may accept the call); malformed
/// requests (4xx) and everything that is not a model failure fail the call at once.
pub(crate) fn disposition(error: &Error) -> Disposition {
    match error {
        Error::Model { class, .. } => match class {
            ErrorClass::Timeout
            | ErrorClass::RateLimit
            | ErrorClass::Server
            | ErrorClass::Connection => Disposition::Retry,
            ErrorClass::Auth | ErrorClass::Model => Disposition::Fallback,
            _ => Disposition::Fail,
        },
        Error::Timeout { .. } => Disposition::Retry,
        _ => Disposition::Fail,
    }
}

/// Whether a failure counts against the model's health (the circuit breaker): timeouts, rate
/// limits, 5xx and connection failures do; a malformed request is the caller's fault.
pub(crate) fn counts_against_breaker(error: &Error) -> bool {
    matches!(disposition(error), Disposition::Retry)
}

/// The exponential backoff before retry number `retry` (1 = the first retry), without jitter:
/// `initial_backoff_ms * multiplier^(retry-1)`, capped at `max_backoff_ms`.
pub fn backoff_ms(config: &ResilienceConfig, retry: u32) -> u64 {
    let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
    #[allow(clippy::cast_precision_loss)]
    let raw = config.initial_backoff_ms as f64 * config.multiplier.powi(exponent);
    #[allow(clippy::cast_precision_loss)]
    let cap = config.max_backoff_ms as f64;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let ms = raw.min(cap).max(0.0) as u64;
    ms
}

/// A small, seedable random source for jitter (SplitMix64); not for anything secret.
#[derive(Debug)]
pub(crate) struct Jitter {
    state: AtomicU64,
}

impl Jitter {
    pub(crate) fn new(seed: u64) -> Jitter {
        Jitter {
            state: AtomicU64::new(seed),
        }
    }

    pub(crate) fn from_time() -> Jitter {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9E37_79B9, |d| d.as_nanos() as u64);
        Jitter::new(nanos)
    }

    /// A number in `[0, 1)`.
    pub(crate) fn next_unit(&self) -> f64 {
        let mut z = self
            .state
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        #[allow(clippy::cast_precision_loss)]
        let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
        unit
    }

    /// `delay` with its `jitter` fraction drawn at random: `delay * (1 - jitter * u)`.
    pub(crate) fn apply(&self, delay_ms: u64, jitter: f64) -> u64 {
        if jitter <= 0.0 || delay_ms == 0 {
            return delay_ms;
        }
        #[allow(clippy::cast_precision_loss)]
        let d = delay_ms as f64;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let out = (d * (1.0 - jitter * self.next_unit())).round() as u64;
        out
    }
}

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BreakerState {
    /// Calls pass.
    Closed,
    /// Calls are refused until the cooldown ends.
    Open,
    /// The cooldown ended; one probe call is let through.
    HalfOpen,
}

impl BreakerState {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// Whether a call may go to a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Yes.
    Allowed,
    /// Yes, as the half-open probe (the transition to report).
    Probe,
    /// No; the circuit stays open for this long.
    Refused { retry_in_ms: u64 },
}

/// One model's circuit breaker.
#[derive(Debug)]
pub(crate) struct Breaker {
    state: BreakerState,
    consecutive_failures: u32,
    opened_at: Option<Instant>,
    probe_started: Option<Instant>,
}

/// A state change to report.
pub(crate) type Transition = Option<(BreakerState, BreakerState)>;

impl Breaker {
    pub(crate) fn new() -> Breaker {
        Breaker {
            state: BreakerState::Closed,
            consecutive_failures: 0,
            opened_at: None,
            probe_started: None,
        }
    }

    pub(crate) fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether a call may go through now; an open circuit past its cooldown turns half-open and
    /// lets one probe through (another probe only if the first has not finished within a
    /// cooldown, so a probe abandoned by its caller cannot wedge the circuit).
    pub(crate) fn admit(&mut self, config: &BreakerConfig) -> (Admission, Transition) {
        if config.failure_threshold == 0 {
            return (Admission::Allowed, None);
        }
        let cooldown = Duration::from_millis(config.cooldown_ms);
        let now = Instant::now();
        match self.state {
            BreakerState::Closed => (Admission::Allowed, None),
            BreakerState::Open => {
                let opened = self.opened_at.unwrap_or(now);
                let elapsed = now.saturating_duration_since(opened);
                if elapsed >= cooldown {
                    self.state = BreakerState::HalfOpen;
                    self.probe_started = Some(now);
                    (
                        Admission::Probe,
                        Some((BreakerState::Open, BreakerState::HalfOpen)),
                    )
                } else {
                    let left = cooldown.saturating_sub(elapsed);
                    (
                        Admission::Refused {
                            retry_in_ms: u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
                        },
                        None,
                    )
                }
            }
            BreakerState::HalfOpen => {
                let stale = self
                    .probe_started
                    .is_none_or(|t| now.saturating_duration_since(t) >= cooldown);
                if stale {
                    self.probe_started = Some(now);
                    (Admission::Probe, None)
                } else {
                    (
                        Admission::Refused {
                            retry_in_ms: config.cooldown_ms,
                        },
                        None,
                    )
                }
            }
        }
    }

    /// A call succeeded: the circuit closes.
    pub(crate) fn success(&mut self) -> Transition {
        self.consecutive_failures = 0;
        self.probe_started = None;
        let before = self.state;
        self.state = BreakerState::Closed;
        self.opened_at = None;
        (before != BreakerState::Closed).then_some((before, BreakerState::Closed))
    }

    /// A call failed for a reason that says nothing about the model's health (a malformed
    /// request): a half-open circuit lets the next call probe at once.
    pub(crate) fn release_probe(&mut self) {
        if self.state == BreakerState::HalfOpen {
            self.probe_started = None;
        }
    }

    /// A call failed: a failed probe reopens the circuit; `failure_threshold` consecutive
    /// failures open it.
    pub(crate) fn failure(&mut self, config: &BreakerConfig) -> Transition {
        if config.failure_threshold == 0 {
            return None;
        }
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let before = self.state;
        let open = match before {
            BreakerState::HalfOpen => true,
            BreakerState::Closed => self.consecutive_failures >= config.failure_threshold,
            BreakerState::Open => false,
        };
        if open {
            self.state = BreakerState::Open;
            self.opened_at = Some(Instant::now());
            self.probe_started = None;
            Some((before, BreakerState::Open))
        } else {
            None
        }
    }
}
