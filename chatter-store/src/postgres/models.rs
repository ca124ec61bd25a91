//! The model registry (`model_registry`, `model_providers`, `models`, `model_routing_rules`) on
//! Postgres.

use async_trait::async_trait;
use chatter_core::orchestration::{
    ModelSpec, Price, ProviderConfig, RegistryConfig, RoutingRule, Tier,
};
use chatter_core::store::models::{check_registry, check_registry_version, registry_from_parts};
use chatter_core::store::{ModelRegistryStore, StoreErrorKind, StoreResult, StoredRegistry};
use deadpool_postgres::Transaction;
use serde_json::Value;
use tokio_postgres::{IsolationLevel, Row};

use super::{Pg, PostgresStore, col, strings_col};
use crate::common::{from_db_count, now_ms, to_db_count};

fn json_col<T: serde::de::DeserializeOwned>(row: &Row, name: &str) -> StoreResult<T> {
    serde_json::from_value(col::<Value>(row, name)?).map_err(|e| {
        chatter_core::Error::store(
            StoreErrorKind::Backend,
            format!("column `{name}` does not read: {e}"),
        )
    })
}

fn provider_row(row: &Row) -> StoreResult<ProviderConfig> {
    let mut p = ProviderConfig::new(col::<String>(row, "name")?, col::<String>(row, "kind")?);
    p.base_url = col(row, "base_url")?;
    p.api_key_env = col(row, "api_key_env")?;
    p.default_config = json_col(row, "default_config")?;
    p.default_model = col(row, "default_model")?;
    p.active = col(row, "is_active")?;
    p.default = col(row, "is_default")?;
    Ok(p)
}

fn model_row(row: &Row) -> StoreResult<ModelSpec> {
    let mut m = ModelSpec::new(col::<String>(row, "name")?, col::<String>(row, "provider")?);
    m.api_model = col(row, "api_model")?;
    m.context_length = from_db_count(col(row, "context_length")?);
    m.max_output_tokens = from_db_count(col(row, "max_output_tokens")?);
    m.capabilities.tools = col(row, "supports_tools")?;
    m.capabilities.json = col(row, "supports_json")?;
    m.capabilities.streaming = col(row, "supports_streaming")?;
    m.capabilities.vision = col(row, "supports_vision")?;
    m.tier = Tier::from_name(col(row, "tier")?).unwrap_or_default();
    let input: Option<f64> = col(row, "input_price_per_1k")?;
    let output: Option<f64> = col(row, "output_price_per_1k")?;
    m.price = input.zip(output).map(|(i, o)| Price::new(i, o));
    m.fallbacks = strings_col(row, "fallbacks")?;
    m.active = col(row, "is_active")?;
    Ok(m)
}

fn rule_row(row: &Row) -> StoreResult<RoutingRule> {
    let mut r = RoutingRule::new(col::<String>(row, "name")?, col::<String>(row, "target")?);
    r.priority = col(row, "priority")?;
    r.enabled = col(row, "is_enabled")?;
    r.conditions = json_col(row, "conditions")?;
    r.fallbacks = strings_col(row, "fallbacks")?;
    r.max_cost_per_request = col(row, "max_cost_per_request")?;
    Ok(r)
}

/// Reads the whole registry through `client` (inside the caller's transaction, so it is one
/// snapshot).
async fn read_registry(client: &Transaction<'_>) -> StoreResult<StoredRegistry> {
    let Some(head) = client
        .query_opt(
            "SELECT version, settings, updated_at FROM model_registry WHERE id = 1",
            &[],
        )
        .await
        .pg()?
    else {
        return Ok(StoredRegistry::default());
    };
    let rows = |sql: &'static str| async move { client.query(sql, &[]).await.pg() };
    let providers = rows("SELECT * FROM model_providers ORDER BY position")
        .await?
        .iter()
        .map(provider_row)
        .collect::<StoreResult<Vec<_>>>()?;
    let models = rows("SELECT * FROM models ORDER BY position")
        .await?
        .iter()
        .map(model_row)
        .collect::<StoreResult<Vec<_>>>()?;
    let rules = rows("SELECT * FROM model_routing_rules ORDER BY position")
        .await?
        .iter()
        .map(rule_row)
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(StoredRegistry {
        config: registry_from_parts(col(&head, "settings")?, providers, models, rules)?,
        version: col(&head, "version")?,
        updated_at: Some(col(&head, "updated_at")?),
    })
}

/// Replaces every row by `config`'s (already validated).
async fn write_rows(tx: &Transaction<'_>, config: &RegistryConfig) -> StoreResult<()> {
    // Dependents first: rules name models, models name providers.
    tx.batch_execute(
        "DELETE FROM model_routing_rules; DELETE FROM models; DELETE FROM model_providers;",
    )
    .await
    .pg()?;
    let insert_provider = tx
        .prepare(
            "INSERT INTO model_providers (name, position, kind, base_url, api_key_env, default_config,
                 default_model, is_active, is_default)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .await
        .pg()?;
    for (position, p) in (0_i64..).zip(&config.providers) {
        let defaults = serde_json::to_value(&p.default_config).unwrap_or_default();
        tx.execute(
            &insert_provider,
            &[
                &p.name,
                &position,
                &p.kind,
                &p.base_url,
                &p.api_key_env,
                &defaults,
                &p.default_model,
                &p.active,
                &p.default,
            ],
        )
        .await
        .pg()?;
    }
    let insert_model = tx
        .prepare(
            "INSERT INTO models (name, position, provider, api_model, context_length, max_output_tokens,
                 supports_tools, supports_json, supports_streaming, supports_vision, tier,
                 input_price_per_1k, output_price_per_1k, fallbacks, is_active)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .await
        .pg()?;
    for (position, m) in (0_i64..).zip(&config.models) {
        let fallbacks = serde_json::json!(m.fallbacks);
        tx.execute(
            &insert_model,
            &[
                &m.name,
                &position,
                &m.provider,
                &m.api_model,
                &to_db_count(m.context_length),
                &to_db_count(m.max_output_tokens),
                &m.capabilities.tools,
                &m.capabilities.json,
                &m.capabilities.streaming,
                &m.capabilities.vision,
                &m.tier.as_str(),
                &m.price.map(|p| p.input_per_1k),
                &m.price.map(|p| p.output_per_1k),
                &fallbacks,
                &m.active,
            ],
        )
        .await
        .pg()?;
    }
    let insert_rule = tx
        .prepare(
            "INSERT INTO model_routing_rules (name, position, priority, is_enabled, conditions,
                 target, fallbacks, max_cost_per_request)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .await
        .pg()?;
    for (position, r) in (0_i64..).zip(&config.routing.rules) {
        let conditions = serde_json::to_value(&r.conditions).unwrap_or_default();
        let fallbacks = serde_json::json!(r.fallbacks);
        tx.execute(
            &insert_rule,
            &[
                &r.name,
                &position,
                &r.priority,
                &r.enabled,
                &conditions,
                &r.target,
                &fallbacks,
                &r.max_cost_per_request,
            ],
        )
        .await
        .pg()?;
    }
    Ok(())
}

#[async_trait]
impl ModelRegistryStore for PostgresStore {
    async fn registry(&self) -> StoreResult<StoredRegistry> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .pg()?;
        let stored = read_registry(&tx).await?;
        tx.commit().await.pg()?;
        Ok(stored)
    }

    async fn save_registry(
        &self,
        config: &RegistryConfig,
        expected_version: Option<i64>,
    ) -> StoreResult<StoredRegistry> {
        let settings = check_registry(config)?;
        self.limits.json("model registry settings", &settings)?;
        let now = now_ms();
        let mut client = self.client().await?;
        let tx = client.transaction().await.pg()?;
        // Saves are serialised by this lock, also the very first one (no row to lock yet).
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('chatter.model_registry'))",
            &[],
        )
        .await
        .pg()?;
        let current: i64 = match tx
            .query_opt("SELECT version FROM model_registry WHERE id = 1", &[])
            .await
            .pg()?
        {
            Some(row) => col(&row, "version")?,
            None => 0,
        };
        check_registry_version(current, expected_version)?;
        write_rows(&tx, config).await?;
        tx.execute(
            "INSERT INTO model_registry AS r (id, version, settings, created_at, updated_at)
             VALUES (1, 1, $1, $2, $2)
             ON CONFLICT (id) DO UPDATE SET version = r.version + 1, settings = excluded.settings,
                 updated_at = GREATEST(r.updated_at, excluded.updated_at)",
            &[&settings, &now],
        )
        .await
        .pg()?;
        let stored = read_registry(&tx).await?;
        tx.commit().await.pg()?;
        Ok(stored)
    }
}
