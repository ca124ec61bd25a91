//! Visibility: events for observers, and counters readable as a snapshot.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::model::Usage;

use super::config::round_nano;
use super::memo::MemoStats;
use super::resilience::BreakerState;
use super::routing::{CallContext, RoutingDecision};

/// Something that happened while serving a model call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum OrchestrationEvent {
    /// The router chose a model.
    Routed {
        /// The decision.
        decision: RoutingDecision,
    },
    /// An attempt is about to be sent.
    AttemptStarted {
        /// The model.
        model: String,
        /// 1 for the first attempt on this model.
        attempt: u32,
    },
    /// An attempt failed.
    AttemptFailed {
        /// The model.
        model: String,
        /// Which attempt.
        attempt: u32,
        /// The error class (`rate_limit`, `server`, `timeout`, ...).
        class: String,
        /// The error.
        error: String,
        /// The wait before the next attempt on this model, when it will be retried.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_in_ms: Option<u64>,
    },
    /// An attempt succeeded.
    AttemptSucceeded {
        /// The model.
        model: String,
        /// Which attempt.
        attempt: u32,
        /// Its usage (cost filled from the price table).
        usage: Usage,
        /// How long it took.
        duration_ms: u64,
    },
    /// The call moved to the next model of the chain.
    Fallback {
        /// The model given up on.
        from: String,
        /// The model tried next.
        to: String,
        /// Why.
        reason: String,
    },
    /// A circuit breaker changed state.
    BreakerTransition {
        /// The model.
        model: String,
        /// The state before.
        from: BreakerState,
        /// The state after.
        to: BreakerState,
    },
    /// The call was answered from the memo (no tokens spent).
    MemoHit {
        /// The memo key.
        key: String,
    },
    /// The call was refused by the execution's budget.
    BudgetExceeded {
        /// Why.
        message: String,
    },
}

/// Receives orchestration events. Called synchronously on the calling task: keep it quick.
pub trait OrchestrationObserver: Send + Sync {
    /// One event of the call made in `call`.
    fn on_event(&self, call: &CallContext, event: &OrchestrationEvent);
}

impl<F> OrchestrationObserver for F
where
    F: Fn(&CallContext, &OrchestrationEvent) + Send + Sync,
{
    fn on_event(&self, call: &CallContext, event: &OrchestrationEvent) {
        self(call, event)
    }
}

/// Counters of one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ModelMetrics {
    /// Attempts sent to it.
    pub requests: u64,
    /// Attempts that failed.
    pub failures: u64,
    /// Prompt tokens it consumed.
    pub prompt_tokens: u64,
    /// Completion tokens it produced.
    pub completion_tokens: u64,
    /// Dollars spent on it.
    pub cost_usd: f64,
    /// Times a call fell back from it to another model.
    pub fallbacks_from: u64,
    /// Its circuit breaker.
    pub breaker: BreakerState,
}

impl Default for ModelMetrics {
    fn default() -> Self {
        ModelMetrics {
            requests: 0,
            failures: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
            cost_usd: 0.0,
            fallbacks_from: 0,
            breaker: BreakerState::Closed,
        }
    }
}

/// The counters, at one moment.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Attempts sent to providers (each retry counts).
    pub llm_requests_total: u64,
    /// Attempts that failed.
    pub llm_request_failures_total: u64,
    /// Tokens (prompt plus completion) of successful calls.
    pub llm_tokens_total: u64,
    /// Dollars spent.
    pub llm_cost_usd_total: f64,
    /// Fallbacks from one model to the next.
    pub llm_fallbacks_total: u64,
    /// Calls refused by a budget.
    pub llm_budget_refusals_total: u64,
    /// Per model (catalogue name).
    pub models: BTreeMap<String, ModelMetrics>,
    /// The memo.
    pub memo: MemoStats,
}

impl MetricsSnapshot {
    /// The counters in the Prometheus text exposition format (version 0.0.4), for a `/metrics`
    /// endpoint. Per-model series carry a `model` label (the catalogue name); sum them for
    /// totals.
    ///
    /// | metric | type | labels |
    /// |---|---|---|
    /// | `llm_requests_total` | counter | `model`: attempts sent (each retry counts) |
    /// | `llm_request_failures_total` | counter | `model`: attempts that failed |
    /// | `llm_tokens_total` | counter | `model`, `type` (`prompt`, `completion`) |
    /// | `llm_cost_usd_total` | counter | `model`: US dollars spent |
    /// | `llm_fallbacks_total` | counter | `model`: fallbacks from that model to the next |
    /// | `llm_budget_refusals_total` | counter | calls refused by a budget |
    /// | `llm_circuit_breaker_state` | gauge | `model`, `state` (`closed`, `open`, `half_open`): 1 for the current state |
    /// | `llm_memo_hits_total`, `llm_memo_misses_total`, `llm_memo_evictions_total`, `llm_memo_recorded_total` | counter | |
    /// | `llm_memo_entries` | gauge | |
    pub fn render_prometheus(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, String)>| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let per_model = |value: &dyn Fn(&ModelMetrics) -> String| -> Vec<(String, String)> {
            self.models
                .iter()
                .map(|(model, m)| (labels(&[("model", model)]), value(m)))
                .collect()
        };
        family(
            "llm_requests_total",
            "counter",
            "Attempts sent to model providers (each retry counts).",
            per_model(&|m| m.requests.to_string()),
        );
        family(
            "llm_request_failures_total",
            "counter",
            "Attempts that failed.",
            per_model(&|m| m.failures.to_string()),
        );
        let mut tokens = Vec::new();
        for (model, m) in &self.models {
            for (kind, n) in [
                ("prompt", m.prompt_tokens),
                ("completion", m.completion_tokens),
            ] {
                tokens.push((labels(&[("model", model), ("type", kind)]), n.to_string()));
            }
        }
        family(
            "llm_tokens_total",
            "counter",
            "Tokens consumed by successful calls.",
            tokens,
        );
        family(
            "llm_cost_usd_total",
            "counter",
            "US dollars spent on model calls.",
            per_model(&|m| float(m.cost_usd)),
        );
        family(
            "llm_fallbacks_total",
            "counter",
            "Calls that fell back from this model to the next of the chain.",
            per_model(&|m| m.fallbacks_from.to_string()),
        );
        family(
            "llm_budget_refusals_total",
            "counter",
            "Calls refused by an execution budget.",
            vec![(String::new(), self.llm_budget_refusals_total.to_string())],
        );
        let mut states = Vec::new();
        for (model, m) in &self.models {
            for state in [
                BreakerState::Closed,
                BreakerState::Open,
                BreakerState::HalfOpen,
            ] {
                states.push((
                    labels(&[("model", model), ("state", state.as_str())]),
                    u8::from(m.breaker == state).to_string(),
                ));
            }
        }
        family(
            "llm_circuit_breaker_state",
            "gauge",
            "Circuit breaker state per model: 1 for the current state.",
            states,
        );
        let memo = &self.memo;
        for (name, kind, help, value) in [
            (
                "llm_memo_hits_total",
                "counter",
                "Calls answered by the memo.",
                memo.hits,
            ),
            (
                "llm_memo_misses_total",
                "counter",
                "Memo lookups that missed.",
                memo.misses,
            ),
            (
                "llm_memo_evictions_total",
                "counter",
                "Memo entries expired or evicted.",
                memo.evictions,
            ),
            (
                "llm_memo_recorded_total",
                "counter",
                "Calls appended to the recording.",
                memo.recorded,
            ),
            (
                "llm_memo_entries",
                "gauge",
                "Memo entries held.",
                memo.entries,
            ),
        ] {
            family(name, kind, help, vec![(String::new(), value.to_string())]);
        }
        out
    }
}

/// `{k="v",...}` with label values escaped as the exposition format requires.
fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            let escaped = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{escaped}\"")
        })
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// A float sample value: Rust's shortest round-trip form (`0.0006`, `0`).
fn float(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else if v.is_nan() {
        "NaN".to_owned()
    } else if v > 0.0 {
        "+Inf".to_owned()
    } else {
        "-Inf".to_owned()
    }
}

/// The model counters behind a [`MetricsSnapshot`]: the orchestrator keeps one, and a host
/// that serves plain providers counts their calls in one through [`super::MeteredModel`].
/// Cheap to update (one short lock per call, not per token).
#[derive(Debug, Default)]
pub struct ModelCounters {
    inner: Mutex<MetricsSnapshot>,
}

impl ModelCounters {
    fn with<R>(&self, f: impl FnOnce(&mut MetricsSnapshot) -> R) -> R {
        let mut guard = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    /// Counts one attempt sent to `model`, failed when `!ok`.
    pub fn attempt(&self, model: &str, ok: bool) {
        self.with(|m| {
            m.llm_requests_total += 1;
            let entry = m.models.entry(model.to_owned()).or_default();
            entry.requests += 1;
            if !ok {
                m.llm_request_failures_total += 1;
                entry.failures += 1;
            }
        });
    }

    /// Adds the tokens and cost of a successful call to `model`.
    pub fn usage(&self, model: &str, usage: &Usage) {
        self.with(|m| {
            m.llm_tokens_total += usage.total_tokens;
            m.llm_cost_usd_total = round_nano(m.llm_cost_usd_total + usage.cost);
            let entry = m.models.entry(model.to_owned()).or_default();
            entry.prompt_tokens += usage.prompt_tokens;
            entry.completion_tokens += usage.completion_tokens;
            entry.cost_usd = round_nano(entry.cost_usd + usage.cost);
        });
    }

    pub(crate) fn fallback(&self, from: &str) {
        self.with(|m| {
            m.llm_fallbacks_total += 1;
            m.models.entry(from.to_owned()).or_default().fallbacks_from += 1;
        });
    }

    pub(crate) fn budget_refusal(&self) {
        self.with(|m| m.llm_budget_refusals_total += 1);
    }

    pub(crate) fn breaker(&self, model: &str, state: BreakerState) {
        self.with(|m| m.models.entry(model.to_owned()).or_default().breaker = state);
    }

    /// The counters now, with the memo's statistics (`MemoStats::default()` without a memo).
    pub fn snapshot(&self, memo: MemoStats) -> MetricsSnapshot {
        self.with(|m| {
            let mut out = m.clone();
            out.memo = memo;
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_is_exact() {
        let metrics = ModelCounters::default();
        metrics.attempt("gpt-4o", false);
        metrics.attempt("gpt-4o", true);
        metrics.usage(
            "gpt-4o",
            &Usage {
                prompt_tokens: 1234,
                completion_tokens: 567,
                total_tokens: 1801,
                cost: 0.008755,
            },
        );
        metrics.fallback("a\"b\\c\nd");
        metrics.breaker("a\"b\\c\nd", BreakerState::Open);
        metrics.budget_refusal();
        let memo = MemoStats {
            hits: 2,
            misses: 3,
            evictions: 1,
            entries: 4,
            recorded: 0,
            hit_rate: 0.4,
        };
        let text = metrics.snapshot(memo).render_prometheus();
        let expected = r#"# HELP llm_requests_total Attempts sent to model providers (each retry counts).
# TYPE llm_requests_total counter
llm_requests_total{model="a\"b\\c\nd"} 0
llm_requests_total{model="gpt-4o"} 2
# HELP llm_request_failures_total Attempts that failed.
# TYPE llm_request_failures_total counter
llm_request_failures_total{model="a\"b\\c\nd"} 0
llm_request_failures_total{model="gpt-4o"} 1
# HELP llm_tokens_total Tokens consumed by successful calls.
# TYPE llm_tokens_total counter
llm_tokens_total{model="a\"b\\c\nd",type="prompt"} 0
llm_tokens_total{model="a\"b\\c\nd",type="completion"} 0
llm_tokens_total{model="gpt-4o",type="prompt"} 1234
llm_tokens_total{model="gpt-4o",type="completion"} 567
# HELP llm_cost_usd_total US dollars spent on model calls.
# TYPE llm_cost_usd_total counter
llm_cost_usd_total{model="a\"b\\c\nd"} 0
llm_cost_usd_total{model="gpt-4o"} 0.008755
# HELP llm_fallbacks_total Calls that fell back from this model to the next of the chain.
# TYPE llm_fallbacks_total counter
llm_fallbacks_total{model="a\"b\\c\nd"} 1
llm_fallbacks_total{model="gpt-4o"} 0
# HELP llm_budget_refusals_total Calls refused by an execution budget.
# TYPE llm_budget_refusals_total counter
llm_budget_refusals_total 1
# HELP llm_circuit_breaker_state Circuit breaker state per model: 1 for the current state.
# TYPE llm_circuit_breaker_state gauge
llm_circuit_breaker_state{model="a\"b\\c\nd",state="closed"} 0
llm_circuit_breaker_state{model="a\"b\\c\nd",state="open"} 1
llm_circuit_breaker_state{model="a\"b\\c\nd",state="half_open"} 0
llm_circuit_breaker_state{model="gpt-4o",state="closed"} 1
llm_circuit_breaker_state{model="gpt-4o",state="open"} 0
llm_circuit_breaker_state{model="gpt-4o",state="half_open"} 0
# HELP llm_memo_hits_total Calls answered by the memo.
# TYPE llm_memo_hits_total counter
llm_memo_hits_total 2
# HELP llm_memo_misses_total Memo lookups that missed.
# TYPE llm_memo_misses_total counter
llm_memo_misses_total 3
# HELP llm_memo_evictions_total Memo entries expired or evicted.
# TYPE llm_memo_evictions_total counter
llm_memo_evictions_total 1
# HELP llm_memo_recorded_total Calls appended to the recording.
# TYPE llm_memo_recorded_total counter
llm_memo_recorded_total 0
# HELP llm_memo_entries Memo entries held.
# TYPE llm_memo_entries gauge
llm_memo_entries 4
"#;
        assert_eq!(text, expected);
    }
}
