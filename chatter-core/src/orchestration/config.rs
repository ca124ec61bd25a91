//! The model registry configuration: providers, models with prices, routing rules, resilience,
//! budgets and memo settings, read from JSON or YAML and validated when loaded.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::definition::WorkflowDefinition;
use crate::error::{Error, Format, Result};
use crate::model::Usage;

use super::analysis::Complexity;
use super::memo::MemoMode;

/// The name under which the routing model is registered unless the config says otherwise.
pub const DEFAULT_ROUTER_NAME: &str = "auto";

/// The whole orchestration config, as read from a file.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RegistryConfig {
    /// Model providers.
    #[serde(default)]
    pub providers: Vec<ProviderConfig>,
    /// Models, each served by one provider.
    #[serde(default)]
    pub models: Vec<ModelSpec>,
    /// Routing rules and defaults.
    #[serde(default)]
    pub routing: RoutingConfig,
    /// Retries, timeouts, circuit breaker.
    #[serde(default)]
    pub resilience: ResilienceConfig,
    /// Per-execution budgets applied to every execution.
    #[serde(default)]
    pub budgets: BudgetConfig,
    /// The cache of model calls.
    #[serde(default)]
    pub memo: MemoConfig,
    /// Thresholds of the prompt analysis.
    #[serde(default)]
    pub analysis: AnalysisConfig,
}

/// One model provider (an API endpoint with its credentials).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ProviderConfig {
    /// Unique name, used by nodes' `provider` key.
    pub name: String,
    /// The kind of API (`openai` for OpenAI-compatible endpoints); picks the client.
    pub kind: String,
    /// Base URL of the API (`https://api.openai.com/v1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Name of the environment variable holding the API key (never the key itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Parameters applied to requests that do not set them.
    #[serde(default)]
    pub default_config: ModelDefaults,
    /// The model used when a node names this provider but no model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_model: Option<String>,
    /// Whether the provider may be used.
    #[serde(default = "yes")]
    pub active: bool,
    /// Whether this is the default provider (at most one).
    #[serde(default)]
    pub default: bool,
}

impl ProviderConfig {
    /// An active, non-default provider `name` of `kind`, with nothing else set.
    pub fn new(name: impl Into<String>, kind: impl Into<String>) -> ProviderConfig {
        ProviderConfig {
            name: name.into(),
            kind: kind.into(),
            base_url: None,
            api_key_env: None,
            default_config: ModelDefaults::default(),
            default_model: None,
            active: true,
            default: false,
        }
    }

    /// The API key, read from the environment variable named by `api_key_env`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `api_key_env` is set but the variable is missing or not UTF-8.
    pub fn api_key(&self) -> Result<Option<String>> {
        match &self.api_key_env {
            None => Ok(None),
            Some(var) => std::env::var(var).map(Some).map_err(|e| Error::Config {
                message: format!(
                    "provider `{}`: environment variable `{var}` ({e})",
                    self.name
                ),
            }),
        }
    }
}

fn yes() -> bool {
    true
}

/// Request parameters a provider applies when the request leaves them unset.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ModelDefaults {
    /// Sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Output token limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
}

/// What a model can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Capabilities {
    /// Tool (function) calling.
    #[serde(default)]
    pub tools: bool,
    /// A JSON-object response mode.
    #[serde(default)]
    pub json: bool,
    /// Token streaming.
    #[serde(default)]
    pub streaming: bool,
    /// Image input.
    #[serde(default)]
    pub vision: bool,
}

/// A model's price class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Tier {
    /// Cheap and fast.
    Economy,
    /// The usual choice.
    #[default]
    Standard,
    /// Strongest and most expensive.
    Premium,
}

impl Tier {
    /// Every tier, cheapest first.
    pub const ALL: [Tier; 3] = [Tier::Economy, Tier::Standard, Tier::Premium];

    /// The lowercase name (`economy`, `standard`, `premium`).
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Economy => "economy",
            Tier::Standard => "standard",
            Tier::Premium => "premium",
        }
    }

    /// The tier named `name` (lowercase).
    pub fn from_name(name: &str) -> Option<Tier> {
        Tier::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// Price of a model in US dollars per 1 000 tokens.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Price {
    /// Dollars per 1 000 input (prompt) tokens.
    pub input_per_1k: f64,
    /// Dollars per 1 000 output (completion) tokens.
    pub output_per_1k: f64,
}

impl Price {
    /// A price in dollars per 1 000 input and output tokens.
    pub fn new(input_per_1k: f64, output_per_1k: f64) -> Price {
        Price {
            input_per_1k,
            output_per_1k,
        }
    }

    /// The cost of `prompt_tokens` in and `completion_tokens` out, in dollars, rounded to the
    /// nano-dollar so that sums of exact prices compare equal to their decimal value.
    pub fn cost(&self, prompt_tokens: u64, completion_tokens: u64) -> f64 {
        // Token counts stay far below 2^53, so the conversions are exact.
        #[allow(clippy::cast_precision_loss)]
        let raw = (prompt_tokens as f64 * self.input_per_1k
            + completion_tokens as f64 * self.output_per_1k)
            / 1000.0;
        round_nano(raw)
    }

    /// The cost of a call's usage.
    pub fn cost_of(&self, usage: &Usage) -> f64 {
        self.cost(usage.prompt_tokens, usage.completion_tokens)
    }
}

/// Rounds dollars to the nano-dollar (1e-9), removing binary floating-point noise.
pub fn round_nano(dollars: f64) -> f64 {
    (dollars * 1e9).round() / 1e9
}

/// One model of the catalogue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ModelSpec {
    /// Unique name in the catalogue, used by nodes' `model` key and by routing rules.
    pub name: String,
    /// The provider serving it.
    pub provider: String,
    /// The model's name at the provider's API; defaults to `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_model: Option<String>,
    /// Context window in tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_length: Option<u64>,
    /// Output token limit; requests asking for more are clamped to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u64>,
    /// What it can do.
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Its price class.
    #[serde(default)]
    pub tier: Tier,
    /// Its price; `None` when unknown (calls then cost what the provider reports, else 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Price>,
    /// Models to fall back to when this one fails and it was named explicitly.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<String>,
    /// Whether it may be used.
    #[serde(default = "yes")]
    pub active: bool,
}

impl ModelSpec {
    /// A model served by `provider`, with default settings (all capabilities off, no price).
    pub fn new(name: impl Into<String>, provider: impl Into<String>) -> ModelSpec {
        ModelSpec {
            name: name.into(),
            provider: provider.into(),
            api_model: None,
            context_length: None,
            max_output_tokens: None,
            capabilities: Capabilities::default(),
            tier: Tier::default(),
            price: None,
            fallbacks: Vec::new(),
            active: true,
        }
    }

    /// The model's name at the provider's API.
    pub fn api_model(&self) -> &str {
        self.api_model.as_deref().unwrap_or(&self.name)
    }
}

/// Routing rules and the default route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RoutingConfig {
    /// Name the routing model is registered under in a [`crate::ModelRegistry`].
    #[serde(default = "router_name")]
    pub router_name: String,
    /// The rules, tried by descending `priority` (ties in file order).
    #[serde(default)]
    pub rules: Vec<RoutingRule>,
    /// The model used when no rule matches (else the default provider's default model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_model: Option<String>,
    /// Fallbacks of the default route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_fallbacks: Vec<String>,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            router_name: router_name(),
            rules: Vec::new(),
            default_model: None,
            default_fallbacks: Vec::new(),
        }
    }
}

fn router_name() -> String {
    DEFAULT_ROUTER_NAME.to_owned()
}

/// One routing rule: when a call matches, send it to `target`, falling back along `fallbacks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RoutingRule {
    /// Unique name, recorded in routing decisions.
    pub name: String,
    /// Higher priorities are tried first.
    #[serde(default)]
    pub priority: i64,
    /// Disabled rules are ignored.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// When the rule applies.
    #[serde(default, rename = "match")]
    pub conditions: RuleMatch,
    /// The model calls go to.
    pub target: String,
    /// Models tried, in order, when the target fails.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// Candidates whose estimated cost for the call exceeds this (dollars) are skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_per_request: Option<f64>,
}

impl RoutingRule {
    /// An enabled rule of priority 0 sending every call to `target`, with no fallback.
    pub fn new(name: impl Into<String>, target: impl Into<String>) -> RoutingRule {
        RoutingRule {
            name: name.into(),
            priority: 0,
            enabled: true,
            conditions: RuleMatch::default(),
            target: target.into(),
            fallbacks: Vec::new(),
            max_cost_per_request: None,
        }
    }
}

/// The conditions of a [`RoutingRule`]; every condition given must hold, absent ones always do.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RuleMatch {
    /// The call's complexity is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub complexity: Vec<Complexity>,
    /// Estimated prompt tokens at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tokens: Option<u64>,
    /// Estimated prompt tokens at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Whether the call offers tools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools_needed: Option<bool>,
    /// The execution's workflow type is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workflow_types: Vec<String>,
    /// The execution carries every one of these tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// Retries, timeouts and the circuit breaker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ResilienceConfig {
    /// Attempts per model (1 = no retry).
    pub max_attempts: u32,
    /// Wait before the first retry.
    pub initial_backoff_ms: u64,
    /// Longest wait between attempts; a `Retry-After` longer than this falls back instead.
    pub max_backoff_ms: u64,
    /// Growth of the wait per retry.
    pub multiplier: f64,
    /// Fraction (0..=1) of each wait drawn at random ("equal jitter" at 0.5).
    pub jitter: f64,
    /// Limit of one attempt, streaming included.
    pub timeout_ms: u64,
    /// The circuit breaker.
    pub breaker: BreakerConfig,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        ResilienceConfig {
            max_attempts: 3,
            initial_backoff_ms: 500,
            max_backoff_ms: 30_000,
            multiplier: 2.0,
            jitter: 0.5,
            timeout_ms: 60_000,
            breaker: BreakerConfig::default(),
        }
    }
}

/// Circuit breaker settings (one breaker per model).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// Consecutive failures that open the circuit (0 disables the breaker).
    pub failure_threshold: u32,
    /// How long an open circuit refuses calls before letting one probe through.
    pub cooldown_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 5,
            cooldown_ms: 30_000,
        }
    }
}

/// Budgets applied to every execution (each execution may also get its own).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct BudgetConfig {
    /// Tokens (prompt plus completion) an execution may spend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens_per_execution: Option<u64>,
    /// Dollars an execution may spend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_cost_per_execution: Option<f64>,
}

/// The memo (cache of model calls).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct MemoConfig {
    /// `off`, `read_write`, `record` or `replay`.
    pub mode: MemoMode,
    /// Lifetime of a cached call (`None`: until evicted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// Cached calls kept in memory; the oldest is evicted beyond it.
    pub max_entries: usize,
    /// The recording (JSONL) for `record` and `replay`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

impl Default for MemoConfig {
    fn default() -> Self {
        MemoConfig {
            mode: MemoMode::Off,
            ttl_ms: None,
            max_entries: 1000,
            path: None,
        }
    }
}

/// Thresholds of the prompt analysis (see [`super::analyze`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct AnalysisConfig {
    /// Prompts estimated at or below this many tokens count as short.
    pub short_max_tokens: u64,
    /// Prompts estimated at or above this many tokens are complex by size alone.
    pub long_min_tokens: u64,
    /// System and tool messages of at least this many tokens count as attached documents.
    pub documents_min_tokens: u64,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        AnalysisConfig {
            short_max_tokens: 1000,
            long_min_tokens: 8000,
            documents_min_tokens: 1000,
        }
    }
}

/// Where a node's `provider`/`model` pair leads.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Resolution<'a> {
    /// A model of the catalogue.
    Model(&'a ModelSpec),
    /// No model named: the router decides, among the models of `provider` when given.
    Route {
        /// The provider the node pinned, if any.
        provider: Option<String>,
    },
}

impl RegistryConfig {
    /// Reads a config from JSON text and validates it.
    ///
    /// # Errors
    ///
    /// [`Error::Parse`] for malformed JSON or a value of the wrong type (with line and column),
    /// [`Error::Config`] listing every problem found by [`RegistryConfig::validate`].
    pub fn from_json(text: &str) -> Result<RegistryConfig> {
        let config: RegistryConfig = serde_json::from_str(text).map_err(|e| Error::Parse {
            format: Format::Json,
            line: e.line(),
            column: e.column(),
            message: strip_location(&e.to_string()),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads a config from YAML text and validates it.
    ///
    /// # Errors
    ///
    /// As [`RegistryConfig::from_json`].
    pub fn from_yaml(text: &str) -> Result<RegistryConfig> {
        let config: RegistryConfig = serde_norway::from_str(text).map_err(|e| {
            let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
            Error::Parse {
                format: Format::Yaml,
                line,
                column,
                message: strip_location(&e.to_string()),
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads a config file: YAML for `.yaml`/`.yml`, JSON otherwise.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the file cannot be read; [`Error::Config`] naming the file when the
    /// text does not parse or the config is invalid.
    pub fn load(path: impl AsRef<Path>) -> Result<RegistryConfig> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        let parsed = match Format::from_path(path) {
            Format::Yaml => RegistryConfig::from_yaml(&text),
            _ => RegistryConfig::from_json(&text),
        };
        parsed.map_err(|e| match e {
            Error::Config { message } => Error::Config {
                message: message.replacen("model registry config", &format!("`{shown}`"), 1),
            },
            other => Error::Config {
                message: format!("`{shown}`: {other}"),
            },
        })
    }

    /// Checks the config as a whole: names unique, every reference resolvable, numbers in range.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] listing every problem, each with the JSON path of the value at fault.
    pub fn validate(&self) -> Result<()> {
        let issues = self.issues();
        if issues.is_empty() {
            return Ok(());
        }
        Err(Error::Config {
            message: format!("model registry config is invalid: {}", issues.join("; ")),
        })
    }

    /// Every problem of the config, as `path: message` lines.
    pub fn issues(&self) -> Vec<String> {
        let mut issues = Vec::new();
        let mut providers = BTreeMap::new();
        let mut defaults = 0;
        for (i, p) in self.providers.iter().enumerate() {
            let path = format!("$.providers[{i}]");
            if p.name.trim().is_empty() {
                issues.push(format!("{path}.name: must not be empty"));
            } else if providers.insert(p.name.as_str(), p).is_some() {
                issues.push(format!("{path}.name: duplicate provider name `{}`", p.name));
            }
            if p.name == self.routing.router_name {
                issues.push(format!(
                    "{path}.name: `{}` is the router's name (routing.router_name)",
                    p.name
                ));
            }
            if p.kind.trim().is_empty() {
                issues.push(format!("{path}.kind: must not be empty"));
            }
            if let Some(url) = &p.base_url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                issues.push(format!(
                    "{path}.base_url: `{url}` is not an http:// or https:// URL"
                ));
            }
            if let Some(var) = &p.api_key_env
                && !is_env_var_name(var)
            {
                // Never echo the value: it may be a key pasted in the wrong place.
                issues.push(format!(
                    "{path}.api_key_env: not an environment variable name (letters, digits and \
                     `_`, not starting with a digit); give the NAME of the variable holding the \
                     key, never the key"
                ));
            }
            check_defaults(
                &p.default_config,
                &format!("{path}.default_config"),
                &mut issues,
            );
            if p.default {
                defaults += 1;
                if defaults > 1 {
                    issues.push(format!("{path}.default: more than one default provider"));
                }
                if !p.active {
                    issues.push(format!("{path}.default: the default provider is inactive"));
                }
            }
        }
        let mut models = BTreeMap::new();
        for (i, m) in self.models.iter().enumerate() {
            let path = format!("$.models[{i}]");
            if m.name.trim().is_empty() {
                issues.push(format!("{path}.name: must not be empty"));
            } else if models.insert(m.name.as_str(), m).is_some() {
                issues.push(format!("{path}.name: duplicate model name `{}`", m.name));
            }
            if !providers.contains_key(m.provider.as_str()) {
                issues.push(format!(
                    "{path}.provider: unknown provider `{}` (known: {})",
                    m.provider,
                    known(providers.keys().copied())
                ));
            }
            if let Some(price) = &m.price {
                for (field, v) in [
                    ("input_per_1k", price.input_per_1k),
                    ("output_per_1k", price.output_per_1k),
                ] {
                    if !v.is_finite() || v < 0.0 {
                        issues.push(format!(
                            "{path}.price.{field}: must be a non-negative number, found {v}"
                        ));
                    }
                }
            }
            for (field, v) in [
                ("context_length", m.context_length),
                ("max_output_tokens", m.max_output_tokens),
            ] {
                if v == Some(0) {
                    issues.push(format!("{path}.{field}: must be at least 1"));
                }
            }
        }
        // Second pass: references between models, provider defaults, rules.
        let check_model =
            |path: String, name: &str, issues: &mut Vec<String>| match models.get(name) {
                None => issues.push(format!(
                    "{path}: unknown model `{name}` (known: {})",
                    known(models.keys().copied())
                )),
                Some(m) if !m.active => issues.push(format!("{path}: model `{name}` is inactive")),
                Some(m) => {
                    if providers
                        .get(m.provider.as_str())
                        .is_some_and(|p| !p.active)
                    {
                        issues.push(format!(
                            "{path}: model `{name}` belongs to inactive provider `{}`",
                            m.provider
                        ));
                    }
                }
            };
        for (i, m) in self.models.iter().enumerate() {
            for (j, f) in m.fallbacks.iter().enumerate() {
                check_model(format!("$.models[{i}].fallbacks[{j}]"), f, &mut issues);
            }
        }
        for (i, p) in self.providers.iter().enumerate() {
            if let Some(d) = &p.default_model {
                match models.get(d.as_str()) {
                    Some(m) if m.provider != p.name => issues.push(format!(
                        "$.providers[{i}].default_model: model `{d}` belongs to provider `{}`",
                        m.provider
                    )),
                    _ => check_model(format!("$.providers[{i}].default_model"), d, &mut issues),
                }
            }
        }
        let r = &self.routing;
        if r.router_name.trim().is_empty() {
            issues.push("$.routing.router_name: must not be empty".to_owned());
        }
        if let Some(d) = &r.default_model {
            check_model("$.routing.default_model".to_owned(), d, &mut issues);
        }
        for (j, f) in r.default_fallbacks.iter().enumerate() {
            check_model(format!("$.routing.default_fallbacks[{j}]"), f, &mut issues);
        }
        let mut rule_names = BTreeSet::new();
        for (i, rule) in r.rules.iter().enumerate() {
            let path = format!("$.routing.rules[{i}]");
            if rule.name.trim().is_empty() {
                issues.push(format!("{path}.name: must not be empty"));
            } else if !rule_names.insert(rule.name.as_str()) {
                issues.push(format!("{path}.name: duplicate rule name `{}`", rule.name));
            }
            // A disabled rule may point at inactive models (switched off together), never at
            // unknown ones.
            let names = std::iter::once((format!("{path}.target"), &rule.target)).chain(
                rule.fallbacks
                    .iter()
                    .enumerate()
                    .map(|(j, f)| (format!("{path}.fallbacks[{j}]"), f)),
            );
            for (at, name) in names {
                if rule.enabled {
                    check_model(at, name, &mut issues);
                } else if !models.contains_key(name.as_str()) {
                    issues.push(format!(
                        "{at}: unknown model `{name}` (known: {})",
                        known(models.keys().copied())
                    ));
                }
            }
            if let Some(c) = rule.max_cost_per_request
                && (!c.is_finite() || c < 0.0)
            {
                issues.push(format!(
                    "{path}.max_cost_per_request: must be a non-negative number, found {c}"
                ));
            }
            if let (Some(lo), Some(hi)) = (rule.conditions.min_tokens, rule.conditions.max_tokens)
                && lo > hi
            {
                issues.push(format!(
                    "{path}.match: min_tokens {lo} is greater than max_tokens {hi}"
                ));
            }
        }
        let res = &self.resilience;
        if res.max_attempts == 0 {
            issues.push("$.resilience.max_attempts: must be at least 1".to_owned());
        }
        if !res.multiplier.is_finite() || res.multiplier < 1.0 {
            issues.push(format!(
                "$.resilience.multiplier: must be at least 1, found {}",
                res.multiplier
            ));
        }
        if !(0.0..=1.0).contains(&res.jitter) {
            issues.push(format!(
                "$.resilience.jitter: must be between 0 and 1, found {}",
                res.jitter
            ));
        }
        if res.timeout_ms == 0 {
            issues.push("$.resilience.timeout_ms: must be at least 1".to_owned());
        }
        if res.initial_backoff_ms > res.max_backoff_ms {
            issues.push(format!(
                "$.resilience.initial_backoff_ms: {} is greater than max_backoff_ms {}",
                res.initial_backoff_ms, res.max_backoff_ms
            ));
        }
        if let Some(c) = self.budgets.max_cost_per_execution
            && (!c.is_finite() || c < 0.0)
        {
            issues.push(format!(
                "$.budgets.max_cost_per_execution: must be a non-negative number, found {c}"
            ));
        }
        let memo = &self.memo;
        if matches!(memo.mode, MemoMode::Record | MemoMode::Replay) && memo.path.is_none() {
            issues.push(format!(
                "$.memo.path: required in `{}` mode",
                memo.mode.as_str()
            ));
        }
        if memo.max_entries == 0 && memo.mode == MemoMode::ReadWrite {
            issues.push("$.memo.max_entries: must be at least 1".to_owned());
        }
        let a = &self.analysis;
        if a.short_max_tokens >= a.long_min_tokens {
            issues.push(format!(
                "$.analysis.short_max_tokens: {} must be less than long_min_tokens {}",
                a.short_max_tokens, a.long_min_tokens
            ));
        }
        issues
    }

    /// The provider named `name`.
    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers.iter().find(|p| p.name == name)
    }

    /// The model named `name` in the catalogue.
    pub fn model(&self, name: &str) -> Option<&ModelSpec> {
        self.models.iter().find(|m| m.name == name)
    }

    /// The default provider: the one marked `default`, else the first active one.
    pub fn default_provider(&self) -> Option<&ProviderConfig> {
        self.providers
            .iter()
            .find(|p| p.default)
            .or_else(|| self.providers.iter().find(|p| p.active))
    }

    /// Whether the model and its provider are active.
    pub fn is_usable(&self, model: &ModelSpec) -> bool {
        model.active && self.provider(&model.provider).is_some_and(|p| p.active)
    }

    /// Resolves a node's (or a request's) `provider` and `model`.
    ///
    /// A model is looked up by its catalogue name, then by its API name (which must then be
    /// unique); with a provider, only that provider's models are considered. A provider without a
    /// model resolves to its `default_model`, else to routing among its models. The router's own
    /// name (`auto`) as provider means "no provider".
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for an unknown provider or model; [`Error::Config`] for an inactive
    /// one, or an API name shared by several models.
    pub fn resolve(&self, provider: Option<&str>, model: Option<&str>) -> Result<Resolution<'_>> {
        let provider = provider.filter(|p| *p != self.routing.router_name);
        if let Some(p) = provider {
            match self.provider(p) {
                None => return Err(not_found("model provider", p)),
                Some(cfg) if !cfg.active => {
                    return Err(Error::Config {
                        message: format!("model provider `{p}` is inactive"),
                    });
                }
                Some(_) => {}
            }
        }
        let Some(name) = model else {
            let default = provider
                .and_then(|p| self.provider(p))
                .and_then(|p| p.default_model.as_deref());
            return match default.and_then(|d| self.model(d)) {
                Some(m) => Ok(Resolution::Model(m)),
                None => Ok(Resolution::Route {
                    provider: provider.map(str::to_owned),
                }),
            };
        };
        let in_scope = |m: &&ModelSpec| provider.is_none_or(|p| m.provider == p);
        let found = match self.models.iter().filter(in_scope).find(|m| m.name == name) {
            Some(m) => m,
            None => {
                let by_api: Vec<&ModelSpec> = self
                    .models
                    .iter()
                    .filter(in_scope)
                    .filter(|m| m.api_model() == name)
                    .collect();
                match by_api.as_slice() {
                    [one] => *one,
                    [] => {
                        let shown = match provider {
                            Some(p) => format!("{p}/{name}"),
                            None => name.to_owned(),
                        };
                        return Err(not_found("model", &shown));
                    }
                    several => {
                        return Err(Error::Config {
                            message: format!(
                                "model `{name}` is ambiguous: served as {} (name the provider)",
                                several
                                    .iter()
                                    .map(|m| format!("`{}` by `{}`", m.name, m.provider))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        });
                    }
                }
            }
        };
        if !self.is_usable(found) {
            return Err(Error::Config {
                message: format!(
                    "model `{}` (provider `{}`) is inactive",
                    found.name, found.provider
                ),
            });
        }
        Ok(Resolution::Model(found))
    }

    /// Resolves the `provider`/`model` keys of every `llm` node (and the `summary_provider`/
    /// `summary_model` keys of every `memory` node) of a definition, so a definition naming an
    /// unknown model is refused when it is loaded rather than at its first call.
    ///
    /// Returns `(node id, error)` for each node that does not resolve.
    pub fn check_definition(&self, definition: &WorkflowDefinition) -> Vec<(String, Error)> {
        let mut problems = Vec::new();
        for node in &definition.nodes {
            let (pkey, mkey) = match node.kind.as_str() {
                "llm" => ("provider", "model"),
                "memory" => ("summary_provider", "summary_model"),
                _ => continue,
            };
            let provider = node.config_value(pkey).and_then(|v| v.as_str());
            let model = node.config_value(mkey).and_then(|v| v.as_str());
            if let Err(e) = self.resolve(provider, model) {
                problems.push((node.id.as_str().to_owned(), e));
            }
        }
        problems
    }
}

fn check_defaults(d: &ModelDefaults, path: &str, issues: &mut Vec<String>) {
    if let Some(t) = d.temperature
        && !(0.0..=2.0).contains(&t)
    {
        issues.push(format!(
            "{path}.temperature: must be between 0 and 2, found {t}"
        ));
    }
    if let Some(t) = d.top_p
        && !(0.0..=1.0).contains(&t)
    {
        issues.push(format!("{path}.top_p: must be between 0 and 1, found {t}"));
    }
    if d.max_tokens == Some(0) {
        issues.push(format!("{path}.max_tokens: must be at least 1"));
    }
}

/// Whether `name` is a portable environment variable name: `[A-Za-z_][A-Za-z0-9_]*`. An API
/// key (`sk-...`) is not one, so a key pasted in place of the variable's name is refused.
pub fn is_env_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn known<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let list: Vec<String> = names.map(|n| format!("`{n}`")).collect();
    if list.is_empty() {
        "none".to_owned()
    } else {
        list.join(", ")
    }
}

fn not_found(what: &str, name: &str) -> Error {
    Error::NotFound {
        what: what.to_owned(),
        name: name.to_owned(),
    }
}

/// Removes the " at line L column C" suffix parsers append, since the error carries both.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}
