//! The model registry (`model_providers`, `models`, `model_routing_rules`, `model_registry`):
//! the providers, the models with their prices, capabilities and tiers, the routing rules, and
//! the rest of an orchestration [`RegistryConfig`] (routing defaults, resilience, budgets, memo,
//! analysis), stored so that every process of a deployment routes alike.
//!
//! The registry is saved as a whole ([`ModelRegistryStore::save_registry`]) in one transaction,
//! after the same validation as a config file ([`RegistryConfig::validate`]): a model of an
//! unknown provider, a negative price or a rule pointing nowhere is refused and nothing is
//! written. Each save increments the registry's version, which an editor may pass back to detect
//! a concurrent change. The single-record edits (`put_*`, `delete_*`) read the registry, change
//! one entry, and save it at the version they read.
//!
//! An API key is never stored: a provider keeps only the *name* of the environment variable
//! that holds it (`api_key_env`), and the store refuses a value that is not a variable name
//! (such as a pasted `sk-...` key).
//!
//! A config file goes into the store with
//! `store.save_registry(&RegistryConfig::load("models.yaml")?, None)`, and a process builds its
//! orchestrator from `store.load_registry().await?`.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{StoreErrorKind, StoreResult};
use crate::Error;
use crate::orchestration::{ModelSpec, ProviderConfig, RegistryConfig, RoutingRule};

/// The registry as stored.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StoredRegistry {
    /// Providers, models and rules in their saved order, with the saved settings. Read as
    /// stored: [`ModelRegistryStore::load_registry`] also validates it.
    pub config: RegistryConfig,
    /// 0 when no registry was ever saved; incremented by every save.
    pub version: i64,
    /// When it was last saved (ms); `None` when never.
    pub updated_at: Option<i64>,
}

/// The settings of `config` kept outside the tables: the whole config as JSON without
/// `providers`, `models` and `routing.rules`.
pub fn registry_settings(config: &RegistryConfig) -> Value {
    let mut value = serde_json::to_value(config).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut value {
        map.remove("providers");
        map.remove("models");
        if let Some(Value::Object(routing)) = map.get_mut("routing") {
            routing.remove("rules");
        }
    }
    value
}

/// Rebuilds a config from its stored settings ([`registry_settings`]) and rows.
///
/// # Errors
///
/// [`StoreErrorKind::Backend`] when the stored settings do not read as a config.
pub fn registry_from_parts(
    settings: Value,
    providers: Vec<ProviderConfig>,
    models: Vec<ModelSpec>,
    rules: Vec<RoutingRule>,
) -> StoreResult<RegistryConfig> {
    let mut config: RegistryConfig = serde_json::from_value(settings).map_err(|e| {
        Error::store(
            StoreErrorKind::Backend,
            format!("the stored model registry settings do not read: {e}"),
        )
    })?;
    config.providers = providers;
    config.models = models;
    config.routing.rules = rules;
    Ok(config)
}

/// Validates a config before it is saved; returns its settings ([`registry_settings`]).
///
/// # Errors
///
/// [`StoreErrorKind::InvalidInput`] listing every problem [`RegistryConfig::validate`] finds.
pub fn check_registry(config: &RegistryConfig) -> StoreResult<Value> {
    config.validate().map_err(|e| match e {
        Error::Config { message } => Error::store(StoreErrorKind::InvalidInput, message),
        other => other,
    })?;
    Ok(registry_settings(config))
}

/// Refuses a save from a stale read: the stored registry is at `current`, the editor read
/// `expected` (`None`: no check).
///
/// # Errors
///
/// [`StoreErrorKind::Conflict`] naming both versions.
pub fn check_registry_version(current: i64, expected: Option<i64>) -> StoreResult<()> {
    match expected {
        Some(expected) if expected != current => Err(Error::store(
            StoreErrorKind::Conflict,
            format!(
                "the model registry is at version {current}, not {expected} (changed meanwhile; read it again)"
            ),
        )),
        _ => Ok(()),
    }
}

/// Storage of the model registry.
#[async_trait]
pub trait ModelRegistryStore: Send + Sync {
    /// The registry as stored (an empty config at version 0 when none was saved), not
    /// validated.
    ///
    /// # Errors
    ///
    /// Database failures; [`StoreErrorKind::Backend`] for stored settings that do not read.
    async fn registry(&self) -> StoreResult<StoredRegistry>;

    /// Replaces the stored registry by `config` in one transaction and increments its version.
    /// With `expected_version`, the save applies only if the stored version equals it (0: none
    /// saved yet).
    ///
    /// # Errors
    ///
    /// [`StoreErrorKind::InvalidInput`] listing every problem of the config (see
    /// [`RegistryConfig::validate`]), [`StoreErrorKind::Conflict`] for a stale version; nothing
    /// is written then.
    async fn save_registry(
        &self,
        config: &RegistryConfig,
        expected_version: Option<i64>,
    ) -> StoreResult<StoredRegistry>;

    /// The stored registry, validated as a config file is when it is loaded, ready for
    /// [`crate::orchestration::Orchestrator::builder`].
    ///
    /// # Errors
    ///
    /// [`StoreErrorKind::NotFound`] when no registry was saved; [`Error::Config`] listing every
    /// problem when the stored rows do not form a valid registry (edited behind the store's
    /// back); database failures.
    async fn load_registry(&self) -> crate::Result<RegistryConfig> {
        let stored = self.registry().await?;
        if stored.version == 0 {
            return Err(Error::store(
                StoreErrorKind::NotFound,
                "no model registry is stored (save one, e.g. from a config file, with save_registry)",
            ));
        }
        stored.config.validate().map_err(|e| match e {
            Error::Config { message } => Error::Config {
                message: message.replacen(
                    "model registry config",
                    &format!("the stored model registry (version {})", stored.version),
                    1,
                ),
            },
            other => other,
        })?;
        Ok(stored.config)
    }

    /// Adds a provider, or replaces the one of the same name (keeping its place). A provider
    /// marked `default` becomes the only default.
    ///
    /// # Errors
    ///
    /// As [`ModelRegistryStore::save_registry`]; `Conflict` also when the registry changed
    /// between the read and the save.
    async fn put_provider(&self, provider: ProviderConfig) -> StoreResult<StoredRegistry> {
        edit(self, Edit::Put, move |config| {
            if provider.default {
                for p in &mut config.providers {
                    p.default = false;
                }
            }
            upsert(&mut config.providers, provider, |p| &p.name);
            Ok(())
        })
        .await
    }

    /// Removes a provider.
    ///
    /// # Errors
    ///
    /// `NotFound` for an unknown provider; `Conflict` when models still belong to it or the
    /// registry changed meanwhile.
    async fn delete_provider(&self, name: &str) -> StoreResult<StoredRegistry> {
        edit(self, Edit::Delete, |config| {
            let served: Vec<String> = config
                .models
                .iter()
                .filter(|m| m.provider == name)
                .map(|m| format!("`{}`", m.name))
                .collect();
            if !served.is_empty() {
                return Err(Error::store(
                    StoreErrorKind::Conflict,
                    format!(
                        "provider `{name}` still serves models {}: delete or move them first",
                        served.join(", ")
                    ),
                ));
            }
            remove(&mut config.providers, name, "model provider", |p| &p.name)
        })
        .await
    }

    /// Adds a model, or replaces the one of the same name (keeping its place).
    ///
    /// # Errors
    ///
    /// As [`ModelRegistryStore::put_provider`] (an unknown provider or a negative price is
    /// `InvalidInput`).
    async fn put_model(&self, model: ModelSpec) -> StoreResult<StoredRegistry> {
        edit(self, Edit::Put, move |config| {
            upsert(&mut config.models, model, |m| &m.name);
            Ok(())
        })
        .await
    }

    /// Removes a model.
    ///
    /// # Errors
    ///
    /// `NotFound` for an unknown model; `Conflict` when a rule, a fallback or a default still
    /// names it, or the registry changed meanwhile.
    async fn delete_model(&self, name: &str) -> StoreResult<StoredRegistry> {
        edit(self, Edit::Delete, |config| {
            remove(&mut config.models, name, "model", |m| &m.name)
        })
        .await
    }

    /// Adds a routing rule, or replaces the one of the same name (keeping its place: rules of
    /// equal priority are tried in that order).
    ///
    /// # Errors
    ///
    /// As [`ModelRegistryStore::put_provider`] (a rule pointing at an unknown model is
    /// `InvalidInput`).
    async fn put_routing_rule(&self, rule: RoutingRule) -> StoreResult<StoredRegistry> {
        edit(self, Edit::Put, move |config| {
            upsert(&mut config.routing.rules, rule, |r| &r.name);
            Ok(())
        })
        .await
    }

    /// Removes a routing rule.
    ///
    /// # Errors
    ///
    /// `NotFound` for an unknown rule; `Conflict` when the registry changed meanwhile.
    async fn delete_routing_rule(&self, name: &str) -> StoreResult<StoredRegistry> {
        edit(self, Edit::Delete, |config| {
            remove(&mut config.routing.rules, name, "routing rule", |r| &r.name)
        })
        .await
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Edit {
    Put,
    Delete,
}

/// Reads the registry, applies `change`, saves it at the version read. A change that leaves the
/// registry invalid is refused: as bad input for a put, as a conflict with what depends on the
/// entry for a delete.
async fn edit<S, F>(store: &S, kind: Edit, change: F) -> StoreResult<StoredRegistry>
where
    S: ModelRegistryStore + ?Sized,
    F: FnOnce(&mut RegistryConfig) -> StoreResult<()> + Send,
{
    let stored = store.registry().await?;
    let mut config = stored.config;
    change(&mut config)?;
    if kind == Edit::Delete
        && let Err(e) = check_registry(&config)
    {
        let message = match e {
            Error::Store { message, .. } => message,
            other => other.to_string(),
        };
        return Err(Error::store(
            StoreErrorKind::Conflict,
            format!("the change would leave {message}"),
        ));
    }
    store.save_registry(&config, Some(stored.version)).await
}

fn upsert<T>(list: &mut Vec<T>, item: T, name: impl Fn(&T) -> &String) {
    match list.iter().position(|x| name(x) == name(&item)) {
        Some(i) => list[i] = item,
        None => list.push(item),
    }
}

fn remove<T>(
    list: &mut Vec<T>,
    wanted: &str,
    what: &str,
    name: impl Fn(&T) -> &String,
) -> StoreResult<()> {
    let before = list.len();
    list.retain(|x| name(x) != wanted);
    if list.len() == before {
        return Err(Error::store(
            StoreErrorKind::NotFound,
            format!("{what} `{wanted}` not found"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_leave_out_the_tables_and_round_trip() {
        let config = RegistryConfig::from_yaml(
            r#"
providers: [{name: p, kind: openai, api_key_env: P_KEY}]
models: [{name: m, provider: p, price: {input_per_1k: 0.001, output_per_1k: 0.002}}]
routing:
  default_model: m
  rules: [{name: r, target: m}]
resilience: {max_attempts: 2}
"#,
        )
        .unwrap();
        let settings = registry_settings(&config);
        assert!(settings.get("providers").is_none());
        assert!(settings.get("models").is_none());
        assert!(settings["routing"].get("rules").is_none());
        assert_eq!(settings["routing"]["default_model"], "m");
        assert_eq!(settings["resilience"]["max_attempts"], 2);
        let back = registry_from_parts(
            settings,
            config.providers.clone(),
            config.models.clone(),
            config.routing.rules.clone(),
        )
        .unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn an_invalid_config_is_invalid_input() {
        let mut config = RegistryConfig::default();
        config.models.push(ModelSpec::new("m", "nowhere"));
        let err = check_registry(&config).unwrap_err();
        assert_eq!(err.store_kind(), Some(StoreErrorKind::InvalidInput));
        assert!(
            err.to_string()
                .contains("$.models[0].provider: unknown provider `nowhere`"),
            "{err}"
        );
    }
}
