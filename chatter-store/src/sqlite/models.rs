//! The model registry (`model_registry`, `model_providers`, `models`, `model_routing_rules`) on
//! SQLite.

use async_trait::async_trait;
use chatter_core::orchestration::{
    ModelSpec, Price, ProviderConfig, RegistryConfig, RoutingRule, Tier,
};
use chatter_core::store::models::{check_registry, check_registry_version, registry_from_parts};
use chatter_core::store::{ModelRegistryStore, StoreResult, StoredRegistry};
use rusqlite::{Connection, params};

use super::{Db, SqliteStore, json_at, query_all, query_opt, strings_at};
use crate::common::{from_db_count, now_ms, strings_json, to_db_count, to_json_text};

fn conversion(e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
}

fn provider_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ProviderConfig> {
    let mut p = ProviderConfig::new(row.get::<_, String>("name")?, row.get::<_, String>("kind")?);
    p.base_url = row.get("base_url")?;
    p.api_key_env = row.get("api_key_env")?;
    p.default_config =
        serde_json::from_value(json_at(row, "default_config")?).map_err(conversion)?;
    p.default_model = row.get("default_model")?;
    p.active = row.get("is_active")?;
    p.default = row.get("is_default")?;
    Ok(p)
}

fn model_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<ModelSpec> {
    let mut m = ModelSpec::new(
        row.get::<_, String>("name")?,
        row.get::<_, String>("provider")?,
    );
    m.api_model = row.get("api_model")?;
    m.context_length = from_db_count(row.get("context_length")?);
    m.max_output_tokens = from_db_count(row.get("max_output_tokens")?);
    m.capabilities.tools = row.get("supports_tools")?;
    m.capabilities.json = row.get("supports_json")?;
    m.capabilities.streaming = row.get("supports_streaming")?;
    m.capabilities.vision = row.get("supports_vision")?;
    let tier: String = row.get("tier")?;
    m.tier = Tier::from_name(&tier).unwrap_or_default();
    let input: Option<f64> = row.get("input_price_per_1k")?;
    let output: Option<f64> = row.get("output_price_per_1k")?;
    m.price = input.zip(output).map(|(i, o)| Price::new(i, o));
    m.fallbacks = strings_at(row, "fallbacks")?;
    m.active = row.get("is_active")?;
    Ok(m)
}

fn rule_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RoutingRule> {
    let mut r = RoutingRule::new(
        row.get::<_, String>("name")?,
        row.get::<_, String>("target")?,
    );
    r.priority = row.get("priority")?;
    r.enabled = row.get("is_enabled")?;
    r.conditions = serde_json::from_value(json_at(row, "conditions")?).map_err(conversion)?;
    r.fallbacks = strings_at(row, "fallbacks")?;
    r.max_cost_per_request = row.get("max_cost_per_request")?;
    Ok(r)
}

/// Reads the whole registry on `conn` (inside the caller's transaction, so it is one snapshot).
fn read_registry(conn: &Connection) -> StoreResult<StoredRegistry> {
    let head: Option<(i64, String, i64)> = query_opt(
        conn,
        "SELECT version, settings, updated_at FROM model_registry WHERE id = 1",
        [],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )?;
    let Some((version, settings, updated_at)) = head else {
        return Ok(StoredRegistry::default());
    };
    let providers = query_all(
        conn,
        "SELECT * FROM model_providers ORDER BY position",
        [],
        provider_row,
    )?;
    let models = query_all(
        conn,
        "SELECT * FROM models ORDER BY position",
        [],
        model_row,
    )?;
    let rules = query_all(
        conn,
        "SELECT * FROM model_routing_rules ORDER BY position",
        [],
        rule_row,
    )?;
    let settings = serde_json::from_str(&settings).unwrap_or(serde_json::Value::Null);
    Ok(StoredRegistry {
        config: registry_from_parts(settings, providers, models, rules)?,
        version,
        updated_at: Some(updated_at),
    })
}

/// Replaces every row by `config`'s (already validated).
fn write_rows(tx: &rusqlite::Transaction<'_>, config: &RegistryConfig) -> StoreResult<()> {
    // Dependents first: rules name models, models name providers.
    tx.execute_batch(
        "DELETE FROM model_routing_rules; DELETE FROM models; DELETE FROM model_providers;",
    )
    .db()?;
    for (position, p) in (0_i64..).zip(&config.providers) {
        tx.prepare_cached(
            "INSERT INTO model_providers (name, position, kind, base_url, api_key_env, default_config,
                 default_model, is_active, is_default)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .db()?
        .execute(params![
            p.name,
            position,
            p.kind,
            p.base_url,
            p.api_key_env,
            to_json_text(&serde_json::to_value(&p.default_config).unwrap_or_default()),
            p.default_model,
            p.active,
            p.default,
        ])
        .db()?;
    }
    for (position, m) in (0_i64..).zip(&config.models) {
        tx.prepare_cached(
            "INSERT INTO models (name, position, provider, api_model, context_length, max_output_tokens,
                 supports_tools, supports_json, supports_streaming, supports_vision, tier,
                 input_price_per_1k, output_price_per_1k, fallbacks, is_active)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        )
        .db()?
        .execute(params![
            m.name,
            position,
            m.provider,
            m.api_model,
            to_db_count(m.context_length),
            to_db_count(m.max_output_tokens),
            m.capabilities.tools,
            m.capabilities.json,
            m.capabilities.streaming,
            m.capabilities.vision,
            m.tier.as_str(),
            m.price.map(|p| p.input_per_1k),
            m.price.map(|p| p.output_per_1k),
            strings_json(&m.fallbacks),
            m.active,
        ])
        .db()?;
    }
    for (position, r) in (0_i64..).zip(&config.routing.rules) {
        tx.prepare_cached(
            "INSERT INTO model_routing_rules (name, position, priority, is_enabled, conditions,
                 target, fallbacks, max_cost_per_request)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .db()?
        .execute(params![
            r.name,
            position,
            r.priority,
            r.enabled,
            to_json_text(&serde_json::to_value(&r.conditions).unwrap_or_default()),
            r.target,
            strings_json(&r.fallbacks),
            r.max_cost_per_request,
        ])
        .db()?;
    }
    Ok(())
}

#[async_trait]
impl ModelRegistryStore for SqliteStore {
    async fn registry(&self) -> StoreResult<StoredRegistry> {
        self.read(|conn| {
            let tx = conn.transaction().db()?;
            let stored = read_registry(&tx)?;
            tx.finish().db()?;
            Ok(stored)
        })
        .await
    }

    async fn save_registry(
        &self,
        config: &RegistryConfig,
        expected_version: Option<i64>,
    ) -> StoreResult<StoredRegistry> {
        let settings = check_registry(config)?;
        self.limits.json("model registry settings", &settings)?;
        let config = config.clone();
        self.write(move |conn| {
            let now = now_ms();
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .db()?;
            let current: i64 = query_opt(
                &tx,
                "SELECT version FROM model_registry WHERE id = 1",
                [],
                |row| row.get(0),
            )?
            .unwrap_or(0);
            check_registry_version(current, expected_version)?;
            write_rows(&tx, &config)?;
            tx.prepare_cached(
                "INSERT INTO model_registry (id, version, settings, created_at, updated_at)
                 VALUES (1, 1, ?1, ?2, ?2)
                 ON CONFLICT (id) DO UPDATE SET version = version + 1, settings = excluded.settings,
                     updated_at = MAX(updated_at, excluded.updated_at)",
            )
            .db()?
            .execute(params![to_json_text(&settings), now])
            .db()?;
            let stored = read_registry(&tx)?;
            tx.commit().db()?;
            Ok(stored)
        })
        .await
    }
}
