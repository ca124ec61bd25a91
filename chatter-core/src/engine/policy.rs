//! Per-node run policy read from the common config keys: `timeout_ms`, `retry`, `on_error`.

use serde_json::Value;

use crate::definition::NodeSpec;
use crate::error::{Error, ErrorClass};

/// A node's retry policy (the `retry` config object).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1: no retry).
    pub max_attempts: u32,
    /// Wait before the second attempt, in milliseconds.
    pub backoff_ms: u64,
    /// Longest wait, in milliseconds.
    pub max_backoff_ms: u64,
    /// Growth of the wait from one attempt to the next.
    pub multiplier: f64,
    /// Spread waits over 50–100 % of their value (deterministically per execution, node and
    /// attempt, so a replay waits the same).
    pub jitter: bool,
    /// Error classes retried (`any` retries every run-time error).
    pub retry_on: Vec<String>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 1,
            backoff_ms: 500,
            max_backoff_ms: 30_000,
            multiplier: 2.0,
            jitter: true,
            retry_on: ["timeout", "rate_limit", "server", "connection"]
                .map(String::from)
                .to_vec(),
        }
    }
}

impl RetryPolicy {
    /// Reads a `retry` config object; missing or ill-typed keys keep their defaults (the
    /// validator reports them).
    pub fn from_config(value: Option<&Value>) -> RetryPolicy {
        let mut p = RetryPolicy::default();
        let Some(obj) = value.and_then(Value::as_object) else {
            return p;
        };
        let u = |k: &str| obj.get(k).and_then(Value::as_u64);
        if let Some(v) = u("max_attempts").or_else(|| u("maxAttempts")) {
            p.max_attempts = u32::try_from(v.clamp(1, 20)).unwrap_or(1);
        }
        if let Some(v) = u("backoff_ms").or_else(|| u("backoffMs")) {
            p.backoff_ms = v;
        }
        if let Some(v) = u("max_backoff_ms").or_else(|| u("maxBackoffMs")) {
            p.max_backoff_ms = v;
        }
        if let Some(v) = obj.get("multiplier").and_then(Value::as_f64) {
            p.multiplier = v.clamp(1.0, 10.0);
        }
        if let Some(v) = obj.get("jitter").and_then(Value::as_bool) {
            p.jitter = v;
        }
        if let Some(list) = obj
            .get("retry_on")
            .or_else(|| obj.get("retryOn"))
            .and_then(Value::as_array)
        {
            p.retry_on = list
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect();
        }
        p
    }

    /// Whether this error is retried by the policy.
    pub fn retries(&self, error: &Error) -> bool {
        let Some(class) = error_class(error) else {
            return false;
        };
        self.retry_on
            .iter()
            .any(|c| c == "any" || c == class.as_str())
    }

    /// The wait after failed attempt `attempt` (1-based), in milliseconds. `seed` makes the
    /// jitter deterministic.
    pub fn delay_ms(&self, attempt: u32, seed: u64) -> u64 {
        let exp = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let raw = (self.backoff_ms as f64) * self.multiplier.powi(exp);
        let capped = raw.min(self.max_backoff_ms as f64).max(0.0);
        let waited = if self.jitter {
            // 50–100 % of the wait, from a hash of the seed and the attempt.
            let h = splitmix(seed ^ u64::from(attempt));
            let frac = (h >> 11) as f64 / (1u64 << 53) as f64;
            capped * (0.5 + 0.5 * frac)
        } else {
            capped
        };
        waited.round() as u64
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A stable 64-bit hash of a string (FNV-1a), for jitter seeds.
pub(crate) fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The class of an error for retry decisions and records: run-time classes, plus `internal`
/// for other errors raised by a node; `None` for cancellation and limits (never retried).
pub(crate) fn error_class(error: &Error) -> Option<ErrorClass> {
    match error {
        Error::Cancelled { .. } | Error::LimitExceeded { .. } => None,
        other => Some(other.class().unwrap_or(ErrorClass::Internal)),
    }
}

/// The class name recorded for an error (`timeout`, `tool`, `max_steps`, `cancelled`, ...).
pub(crate) fn class_name(error: &Error) -> String {
    match error {
        Error::Cancelled { .. } => "cancelled".into(),
        Error::LimitExceeded { limit, .. } => match limit.as_str() {
            "max_tokens" | "max_cost" => "budget_exceeded".into(),
            other => other.to_owned(),
        },
        other => error_class(other)
            .unwrap_or(ErrorClass::Internal)
            .as_str()
            .to_owned(),
    }
}

/// The run policy of one node.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NodePolicy {
    pub(crate) timeout_ms: Option<u64>,
    pub(crate) retry: RetryPolicy,
    pub(crate) on_error_continue: bool,
}

impl NodePolicy {
    pub(crate) fn from_spec(spec: &NodeSpec) -> NodePolicy {
        NodePolicy {
            timeout_ms: spec
                .config_value("timeout_ms")
                .and_then(Value::as_u64)
                .filter(|&t| t > 0),
            retry: RetryPolicy::from_config(spec.config_value("retry")),
            on_error_continue: spec.config_value("on_error").and_then(Value::as_str)
                == Some("continue"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn retry_config_is_read_with_defaults() {
        let p = RetryPolicy::from_config(Some(&json!({"max_attempts": 3, "retry_on": ["tool"]})));
        assert_eq!(p.max_attempts, 3);
        assert_eq!(p.backoff_ms, 500);
        assert_eq!(p.retry_on, vec!["tool".to_owned()]);
        assert_eq!(RetryPolicy::from_config(None), RetryPolicy::default());
    }

    #[test]
    fn backoff_grows_is_capped_and_jitter_stays_in_half_to_full() {
        let p = RetryPolicy {
            jitter: false,
            backoff_ms: 100,
            max_backoff_ms: 350,
            ..RetryPolicy::default()
        };
        assert_eq!([1, 2, 3, 4].map(|a| p.delay_ms(a, 7)), [100, 200, 350, 350]);
        let j = RetryPolicy {
            jitter: true,
            ..p.clone()
        };
        for attempt in 1..6 {
            let d = j.delay_ms(attempt, 42);
            let full = p.delay_ms(attempt, 42);
            assert!(d * 2 >= full && d <= full, "{d} vs {full}");
            assert_eq!(d, j.delay_ms(attempt, 42), "deterministic");
        }
    }

    #[test]
    fn retry_on_classes() {
        let p = RetryPolicy::default();
        let timeout = Error::Timeout {
            what: "node x".into(),
            after_ms: 5,
        };
        let tool = Error::Tool {
            tool: "t".into(),
            class: ErrorClass::Tool,
            message: "boom".into(),
        };
        assert!(p.retries(&timeout));
        assert!(!p.retries(&tool));
        let any = RetryPolicy {
            retry_on: vec!["any".into()],
            ..p
        };
        assert!(any.retries(&tool));
        assert!(!any.retries(&Error::Cancelled { reason: "x".into() }));
    }
}
