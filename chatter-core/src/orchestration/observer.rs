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

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    inner: Mutex<MetricsSnapshot>,
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut MetricsSnapshot) -> R) -> R {
        let mut guard = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    pub(crate) fn attempt(&self, model: &str, ok: bool) {
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

    pub(crate) fn usage(&self, model: &str, usage: &Usage) {
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

    pub(crate) fn snapshot(&self, memo: MemoStats) -> MetricsSnapshot {
        self.with(|m| {
            let mut out = m.clone();
            out.memo = memo;
            out
        })
    }
}
