//! Routing: which model answers a call, which ones back it up, and why.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::ChatRequest;

use super::analysis::PromptAnalysis;
use super::config::{ModelSpec, RegistryConfig, Resolution, RoutingRule, round_nano};

/// Output tokens assumed when estimating a call's cost and neither the request nor the provider
/// sets `max_tokens`.
pub const DEFAULT_EXPECTED_OUTPUT_TOKENS: u64 = 512;

/// Who is calling: the execution, node and routing attributes of one model call.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CallContext {
    /// The execution making the call (budgets are kept per execution).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
    /// The node making the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    /// The provider the call is pinned to (a node's `provider`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The workflow type, matched by rules' `workflow_types`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_type: Option<String>,
    /// Tags, matched by rules' `tags`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

impl CallContext {
    /// A context for a call of `execution_id`.
    pub fn for_execution(execution_id: impl Into<String>) -> CallContext {
        CallContext {
            execution_id: Some(execution_id.into()),
            ..CallContext::default()
        }
    }

    /// The context read from an idempotency key `execution:node:iteration:attempt`.
    pub fn from_idempotency_key(key: &str) -> CallContext {
        let mut ctx = CallContext::default();
        let Some((execution, rest)) = key.split_once(':') else {
            return ctx;
        };
        ctx.execution_id = Some(execution.to_owned());
        // The node id may itself contain colons: strip iteration and attempt from the right.
        let mut tail = rest.rsplitn(3, ':');
        let (_attempt, _iteration, node) = (tail.next(), tail.next(), tail.next());
        ctx.node_id = node.map(str::to_owned);
        ctx
    }

    /// Pins the call to a provider.
    #[must_use]
    pub fn provider(mut self, provider: impl Into<String>) -> CallContext {
        self.provider = Some(provider.into());
        self
    }

    /// Sets the workflow type.
    #[must_use]
    pub fn workflow_type(mut self, workflow_type: impl Into<String>) -> CallContext {
        self.workflow_type = Some(workflow_type.into());
        self
    }

    /// Adds a tag.
    #[must_use]
    pub fn tag(mut self, tag: impl Into<String>) -> CallContext {
        self.tags.push(tag.into());
        self
    }
}

/// A model left out of a decision, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SkippedModel {
    /// The model.
    pub model: String,
    /// Why it was left out.
    pub reason: String,
}

/// Which model answers a call, its fallbacks, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RoutingDecision {
    /// The model tried first (catalogue name).
    pub model: String,
    /// Its provider.
    pub provider: String,
    /// Its name at the provider's API.
    pub api_model: String,
    /// Models tried next, in order, when it fails.
    pub fallbacks: Vec<String>,
    /// The rule that chose it, if a rule did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Whether the node or request named the model (explicit choices always win).
    pub explicit: bool,
    /// Why, in words.
    pub reason: String,
    /// Estimated cost of the call on the chosen model, in dollars, when it has a price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_cost: Option<f64>,
    /// Candidates left out (inactive, lacking a capability, too expensive, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedModel>,
    /// What the analysis found.
    pub analysis: PromptAnalysis,
}

/// The estimated cost of `request` on `model`, in dollars: the estimated prompt tokens at the
/// input price plus `max_tokens` (else [`DEFAULT_EXPECTED_OUTPUT_TOKENS`], capped by the
/// model's output limit) at the output price. `None` when the model has no price.
pub fn estimate_cost(
    config: &RegistryConfig,
    model: &ModelSpec,
    request: &ChatRequest,
    analysis: &PromptAnalysis,
) -> Option<f64> {
    let price = model.price?;
    let provider_default = config
        .provider(&model.provider)
        .and_then(|p| p.default_config.max_tokens);
    let mut output = request
        .max_tokens
        .or(provider_default)
        .unwrap_or(DEFAULT_EXPECTED_OUTPUT_TOKENS);
    if let Some(limit) = model.max_output_tokens {
        output = output.min(limit);
    }
    Some(price.cost(analysis.estimated_tokens, output))
}

/// Why `model` cannot serve `request`, if it cannot.
fn unfit(
    config: &RegistryConfig,
    model: &ModelSpec,
    request: &ChatRequest,
    analysis: &PromptAnalysis,
) -> Option<String> {
    if !config.is_usable(model) {
        return Some("inactive".to_owned());
    }
    if !request.tools.is_empty() && !model.capabilities.tools {
        return Some("does not support tools".to_owned());
    }
    if request.json_mode && !model.capabilities.json {
        return Some("does not support JSON mode".to_owned());
    }
    if let Some(limit) = model.context_length
        && analysis.estimated_tokens > limit
    {
        return Some(format!(
            "prompt of about {} tokens exceeds its context length {limit}",
            analysis.estimated_tokens
        ));
    }
    None
}

fn rule_matches(rule: &RoutingRule, analysis: &PromptAnalysis, ctx: &CallContext) -> bool {
    let m = &rule.conditions;
    (m.complexity.is_empty() || m.complexity.contains(&analysis.complexity))
        && m.min_tokens
            .is_none_or(|lo| analysis.estimated_tokens >= lo)
        && m.max_tokens
            .is_none_or(|hi| analysis.estimated_tokens <= hi)
        && m.tools_needed.is_none_or(|t| t == analysis.tools_needed)
        && (m.workflow_types.is_empty()
            || ctx
                .workflow_type
                .as_ref()
                .is_some_and(|w| m.workflow_types.contains(w)))
        && m.tags.iter().all(|t| ctx.tags.contains(t))
}

/// Filters a chain of model names down to the models that can serve the call.
fn viable<'c>(
    config: &'c RegistryConfig,
    names: impl IntoIterator<Item = &'c String>,
    request: &ChatRequest,
    analysis: &PromptAnalysis,
    ctx: &CallContext,
    max_cost: Option<f64>,
    skipped: &mut Vec<SkippedModel>,
) -> Vec<&'c ModelSpec> {
    let mut out: Vec<&ModelSpec> = Vec::new();
    for name in names {
        let Some(model) = config.model(name) else {
            skipped.push(SkippedModel {
                model: name.clone(),
                reason: "not in the catalogue".to_owned(),
            });
            continue;
        };
        if out.iter().any(|m| m.name == model.name) {
            continue;
        }
        let reason = if let Some(p) = ctx.provider.as_deref()
            && model.provider != p
        {
            Some(format!(
                "served by `{}`, not the pinned provider `{p}`",
                model.provider
            ))
        } else {
            unfit(config, model, request, analysis)
        };
        let reason = reason.or_else(|| {
            let limit = max_cost?;
            let cost = estimate_cost(config, model, request, analysis)?;
            (cost > limit).then(|| {
                format!("estimated cost ${cost} exceeds the rule's max_cost_per_request ${limit}")
            })
        });
        match reason {
            Some(reason) => skipped.push(SkippedModel {
                model: model.name.clone(),
                reason,
            }),
            None => out.push(model),
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn decision(
    config: &RegistryConfig,
    chain: &[&ModelSpec],
    request: &ChatRequest,
    analysis: &PromptAnalysis,
    rule: Option<String>,
    explicit: bool,
    reason: String,
    skipped: Vec<SkippedModel>,
) -> Option<RoutingDecision> {
    let (first, rest) = chain.split_first()?;
    Some(RoutingDecision {
        model: first.name.clone(),
        provider: first.provider.clone(),
        api_model: first.api_model().to_owned(),
        fallbacks: rest.iter().map(|m| m.name.clone()).collect(),
        rule,
        explicit,
        reason,
        estimated_cost: estimate_cost(config, first, request, analysis).map(round_nano),
        skipped,
        analysis: analysis.clone(),
    })
}

/// Decides which model serves `request`.
///
/// 1. A model named by the request (a node's `model`), or the default model of the provider the
///    call is pinned to, always wins; its fallbacks are the model's own `fallbacks`.
/// 2. Otherwise the enabled rules are tried by descending priority (ties in file order); the
///    first that matches and has a viable candidate decides. Candidates are its target then its
///    fallbacks, minus those that are inactive, lack a capability the call uses (tools, JSON
///    mode), cannot fit the prompt, are outside the pinned provider, or whose estimated cost
///    exceeds the rule's `max_cost_per_request`.
/// 3. Otherwise the default route: `routing.default_model` and `default_fallbacks`, or, for a
///    pinned provider, its first viable model; else the default provider's default model or its
///    first viable model.
///
/// # Errors
///
/// [`Error::NotFound`] or [`Error::Config`] when the named provider or model does not resolve;
/// [`Error::LimitExceeded`] (`max_cost_per_request`) when a matching rule's every candidate is
/// too expensive; [`Error::Config`] when no model can serve the call.
pub fn route(
    config: &RegistryConfig,
    request: &ChatRequest,
    analysis: &PromptAnalysis,
    ctx: &CallContext,
) -> Result<RoutingDecision> {
    let mut skipped = Vec::new();
    match config.resolve(ctx.provider.as_deref(), request.model.as_deref())? {
        Resolution::Model(model) => {
            let mut chain = vec![model];
            // An explicit model's own fallbacks may cross providers: they were named on purpose.
            let fallback_ctx = CallContext {
                provider: None,
                ..ctx.clone()
            };
            for m in viable(
                config,
                &model.fallbacks,
                request,
                analysis,
                &fallback_ctx,
                None,
                &mut skipped,
            ) {
                if m.name != model.name {
                    chain.push(m);
                }
            }
            let reason = match &request.model {
                Some(asked) => format!("explicit model `{asked}` requested"),
                None => format!(
                    "default model `{}` of provider `{}`",
                    model.name, model.provider
                ),
            };
            return decision(
                config, &chain, request, analysis, None, true, reason, skipped,
            )
            .ok_or_else(|| Error::Config {
                message: "empty routing chain".to_owned(),
            });
        }
        Resolution::Route { .. } => {}
    }
    let mut rules: Vec<&RoutingRule> = config.routing.rules.iter().filter(|r| r.enabled).collect();
    rules.sort_by_key(|r| std::cmp::Reverse(r.priority));
    for rule in rules {
        if !rule_matches(rule, analysis, ctx) {
            continue;
        }
        let names = std::iter::once(&rule.target).chain(rule.fallbacks.iter());
        let before = skipped.len();
        let chain = viable(
            config,
            names,
            request,
            analysis,
            ctx,
            rule.max_cost_per_request,
            &mut skipped,
        );
        if chain.is_empty() {
            let too_expensive = skipped[before..]
                .iter()
                .any(|s| s.reason.contains("max_cost_per_request"));
            if too_expensive {
                let detail: Vec<String> = skipped[before..]
                    .iter()
                    .map(|s| format!("{}: {}", s.model, s.reason))
                    .collect();
                return Err(Error::LimitExceeded {
                    limit: "max_cost_per_request".to_owned(),
                    message: format!(
                        "rule `{}` matched but no candidate fits: {}",
                        rule.name,
                        detail.join("; ")
                    ),
                });
            }
            continue;
        }
        let reason = format!(
            "rule `{}` (priority {}) matched a {} call of about {} tokens{}",
            rule.name,
            rule.priority,
            analysis.complexity.as_str(),
            analysis.estimated_tokens,
            if analysis.tools_needed {
                " needing tools"
            } else {
                ""
            }
        );
        return decision(
            config,
            &chain,
            request,
            analysis,
            Some(rule.name.clone()),
            false,
            reason,
            skipped,
        )
        .ok_or_else(|| Error::Config {
            message: "empty routing chain".to_owned(),
        });
    }
    // The default route.
    let (names, reason): (Vec<&String>, String) = if let Some(p) = ctx.provider.as_deref() {
        let names = config
            .models
            .iter()
            .filter(|m| m.provider == p)
            .map(|m| &m.name)
            .collect();
        (
            names,
            format!("no rule matched; first fit of provider `{p}`"),
        )
    } else if let Some(d) = &config.routing.default_model {
        let names = std::iter::once(d)
            .chain(config.routing.default_fallbacks.iter())
            .collect();
        (names, format!("no rule matched; default model `{d}`"))
    } else if let Some(p) = config.default_provider() {
        let names = p
            .default_model
            .iter()
            .chain(
                config
                    .models
                    .iter()
                    .filter(|m| m.provider == p.name)
                    .map(|m| &m.name),
            )
            .collect();
        (
            names,
            format!("no rule matched; default provider `{}`", p.name),
        )
    } else {
        (Vec::new(), String::new())
    };
    let mut chain = viable(config, names, request, analysis, ctx, None, &mut skipped);
    if ctx.provider.is_some() || config.routing.default_model.is_none() {
        // A first fit, not a chain: later models of a provider are not its fallbacks.
        chain.truncate(1);
    }
    decision(
        config,
        &chain,
        request,
        analysis,
        None,
        false,
        reason,
        skipped.clone(),
    )
    .ok_or_else(|| Error::Config {
        message: format!(
            "no model can serve this call{}{}",
            ctx.provider
                .as_deref()
                .map(|p| format!(" (pinned to provider `{p}`)"))
                .unwrap_or_default(),
            if skipped.is_empty() {
                String::new()
            } else {
                format!(
                    ": {}",
                    skipped
                        .iter()
                        .map(|s| format!("{}: {}", s.model, s.reason))
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            }
        ),
    })
}
