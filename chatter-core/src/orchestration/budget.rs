//! Per-execution token and cost budgets.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::Usage;

use super::config::{BudgetConfig, round_nano};

/// The `limit` of the [`Error::LimitExceeded`] a refused call returns; the engine maps it to the
/// `budget_exceeded` status.
pub const BUDGET_EXCEEDED: &str = "budget_exceeded";

/// Executions tracked at most; beyond it the oldest (by first call) is forgotten. Hosts should
/// call [`super::Orchestrator::end_execution`] when an execution ends.
pub const MAX_TRACKED_EXECUTIONS: usize = 10_000;

/// What one execution may spend.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Budget {
    /// Tokens (prompt plus completion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost: Option<f64>,
}

impl Budget {
    /// A budget of `max_tokens` tokens and `max_cost` dollars (`None`: unlimited).
    pub fn new(max_tokens: Option<u64>, max_cost: Option<f64>) -> Budget {
        Budget {
            max_tokens,
            max_cost,
        }
    }

    fn is_unlimited(&self) -> bool {
        self.max_tokens.is_none() && self.max_cost.is_none()
    }
}

impl From<BudgetConfig> for Budget {
    fn from(c: BudgetConfig) -> Budget {
        Budget {
            max_tokens: c.max_tokens_per_execution,
            max_cost: c.max_cost_per_execution,
        }
    }
}

/// What an execution brings to routing and budgets.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ExecutionScope {
    /// The workflow type, matched by routing rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_type: Option<String>,
    /// Tags, matched by routing rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The budget (replaces the config's per-execution budget).
    #[serde(default)]
    pub budget: Budget,
}

impl ExecutionScope {
    /// A scope with this budget.
    pub fn with_budget(budget: Budget) -> ExecutionScope {
        ExecutionScope {
            budget,
            ..ExecutionScope::default()
        }
    }

    /// Sets the workflow type.
    #[must_use]
    pub fn workflow_type(mut self, workflow_type: impl Into<String>) -> ExecutionScope {
        self.workflow_type = Some(workflow_type.into());
        self
    }

    /// Adds a tag.
    #[must_use]
    pub fn tag(mut self, tag: impl Into<String>) -> ExecutionScope {
        self.tags.push(tag.into());
        self
    }
}

#[derive(Debug)]
struct Tracked {
    scope: ExecutionScope,
    spent: Usage,
}

/// The executions an orchestrator tracks.
#[derive(Debug, Default)]
pub(crate) struct Executions {
    default: Budget,
    inner: Mutex<(HashMap<String, Tracked>, VecDeque<String>)>,
}

impl Executions {
    pub(crate) fn new(default: Budget) -> Executions {
        Executions {
            default,
            inner: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (HashMap<String, Tracked>, VecDeque<String>)> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn insert(
        map: &mut (HashMap<String, Tracked>, VecDeque<String>),
        id: &str,
        scope: ExecutionScope,
    ) {
        if map.0.len() >= MAX_TRACKED_EXECUTIONS {
            while let Some(old) = map.1.pop_front() {
                if map.0.remove(&old).is_some() {
                    break;
                }
            }
        }
        map.1.push_back(id.to_owned());
        map.0.insert(
            id.to_owned(),
            Tracked {
                scope,
                spent: Usage::default(),
            },
        );
    }

    pub(crate) fn begin(&self, id: &str, scope: ExecutionScope) {
        let mut map = self.lock();
        match map.0.get_mut(id) {
            Some(t) => t.scope = scope,
            None => Executions::insert(&mut map, id, scope),
        }
    }

    pub(crate) fn end(&self, id: &str) -> Option<Usage> {
        let mut map = self.lock();
        let t = map.0.remove(id)?;
        map.1.retain(|k| k != id);
        Some(t.spent)
    }

    pub(crate) fn spent(&self, id: &str) -> Option<Usage> {
        self.lock().0.get(id).map(|t| t.spent)
    }

    pub(crate) fn scope(&self, id: &str) -> Option<ExecutionScope> {
        self.lock().0.get(id).map(|t| t.scope.clone())
    }

    /// Refuses a call when the execution has spent its budget, or when the call's estimated
    /// prompt alone would overrun what is left.
    pub(crate) fn check(&self, id: &str, prompt_tokens: u64, prompt_cost: f64) -> Result<()> {
        let mut map = self.lock();
        if !map.0.contains_key(id) {
            if self.default.is_unlimited() {
                return Ok(());
            }
            let scope = ExecutionScope::with_budget(self.default);
            Executions::insert(&mut map, id, scope);
        }
        let Some(t) = map.0.get(id) else {
            return Ok(());
        };
        let budget = t.scope.budget;
        if let Some(max) = budget.max_tokens
            && t.spent.total_tokens.saturating_add(prompt_tokens) > max
        {
            return Err(Error::LimitExceeded {
                limit: BUDGET_EXCEEDED.to_owned(),
                message: format!(
                    "execution `{id}` has spent {} of its {max} tokens; this call needs about {prompt_tokens} more",
                    t.spent.total_tokens
                ),
            });
        }
        if let Some(max) = budget.max_cost
            && round_nano(t.spent.cost + prompt_cost) > max
        {
            return Err(Error::LimitExceeded {
                limit: BUDGET_EXCEEDED.to_owned(),
                message: format!(
                    "execution `{id}` has spent ${} of its ${max} budget; this call's prompt costs about ${}",
                    round_nano(t.spent.cost),
                    round_nano(prompt_cost)
                ),
            });
        }
        Ok(())
    }

    pub(crate) fn spend(&self, id: &str, usage: &Usage) {
        let mut map = self.lock();
        if let Some(t) = map.0.get_mut(id) {
            t.spent.add(usage);
            t.spent.cost = round_nano(t.spent.cost);
        }
    }
}
