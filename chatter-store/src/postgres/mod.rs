//! The Postgres backend: tokio-postgres with a deadpool connection pool (size, wait/create/
//! recycle timeouts, a health check when an idle connection is handed out, pool statistics).
//! JSON columns are `jsonb`; job claiming uses `FOR UPDATE SKIP LOCKED`; migrations run under
//! `pg_advisory_xact_lock`.

use std::str::FromStr;
use std::time::Duration;

use chatter_core::Error;
use chatter_core::store::{
    CacheStats, DefinitionRecord, PoolStats, Store, StoreErrorKind, StoreResult, TemplateRecord,
};
use deadpool::managed::{Metrics, RecycleError, RecycleResult};
use deadpool_postgres::{ClientWrapper, Manager, ManagerConfig, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::FromSql;
use tokio_postgres::{NoTls, Row};

use crate::StoreOptions;
use crate::cache::{QueryCache, combine};
use crate::common::{IdGen, Limits};
use crate::migrate::{self, AppliedMigration, POSTGRES_MIGRATIONS};

mod audit;
mod auth;
mod conversations;
mod definitions;
mod documents;
mod executions;
mod jobs;
mod marketplace;
mod models;
mod preferences;
mod templates;
mod users;
mod workspaces;

/// The pool's manager: deadpool-postgres's, with a health check (a round trip) when a
/// connection is handed out after being idle for [`VERIFY_AFTER`] or more, so a busy
/// connection is not pinged before every query while a stale one never reaches a caller.
pub(crate) struct CheckedManager {
    inner: Manager,
}

/// Idle time after which a pooled connection is verified before use.
const VERIFY_AFTER: Duration = Duration::from_secs(1);

impl deadpool::managed::Manager for CheckedManager {
    type Type = ClientWrapper;
    type Error = tokio_postgres::Error;

    async fn create(&self) -> Result<ClientWrapper, tokio_postgres::Error> {
        self.inner.create().await
    }

    async fn recycle(
        &self,
        client: &mut ClientWrapper,
        metrics: &Metrics,
    ) -> RecycleResult<tokio_postgres::Error> {
        if client.is_closed() {
            return Err(RecycleError::message("connection closed"));
        }
        if metrics.last_used() >= VERIFY_AFTER {
            client.simple_query("").await?;
        }
        Ok(())
    }

    fn detach(&self, client: &mut ClientWrapper) {
        self.inner.detach(client);
    }
}

type Pool = deadpool::managed::Pool<CheckedManager>;

/// The Postgres store. Build it with [`crate::connect`] or [`PostgresStore::connect`].
pub struct PostgresStore {
    pub(crate) pool: Pool,
    pub(crate) definitions_cache: QueryCache<DefinitionRecord>,
    pub(crate) templates_cache: QueryCache<TemplateRecord>,
    pub(crate) ids: IdGen,
    pub(crate) limits: Limits,
    options: StoreOptions,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("pool", &self.pool.status())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Maps a tokio-postgres error to the store error kinds.
pub(crate) fn pg_err(e: tokio_postgres::Error) -> Error {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        let kind = if *code == SqlState::UNIQUE_VIOLATION || *code == SqlState::RESTRICT_VIOLATION {
            StoreErrorKind::Conflict
        } else if *code == SqlState::FOREIGN_KEY_VIOLATION {
            return Error::store(
                StoreErrorKind::NotFound,
                "a referenced record does not exist (FOREIGN KEY constraint failed)",
            );
        } else if *code == SqlState::CHECK_VIOLATION
            || *code == SqlState::NOT_NULL_VIOLATION
            || *code == SqlState::CHARACTER_NOT_IN_REPERTOIRE
            || *code == SqlState::UNTRANSLATABLE_CHARACTER
            || *code == SqlState::INVALID_TEXT_REPRESENTATION
        {
            StoreErrorKind::InvalidInput
        } else if *code == SqlState::PROGRAM_LIMIT_EXCEEDED {
            StoreErrorKind::PayloadTooLarge
        } else if *code == SqlState::T_R_SERIALIZATION_FAILURE
            || *code == SqlState::T_R_DEADLOCK_DETECTED
            || *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW
            || *code == SqlState::TOO_MANY_CONNECTIONS
        {
            StoreErrorKind::Unavailable
        } else {
            StoreErrorKind::Backend
        };
        return Error::store(kind, format!("Postgres: {}", db.message()));
    }
    let kind = if e.is_closed() {
        StoreErrorKind::Unavailable
    } else {
        StoreErrorKind::Backend
    };
    Error::store(kind, format!("Postgres: {e}"))
}

fn pool_err(e: deadpool::managed::PoolError<tokio_postgres::Error>) -> Error {
    match e {
        deadpool::managed::PoolError::Backend(e) => pg_err(e),
        other => Error::store(
            StoreErrorKind::Unavailable,
            format!("no Postgres connection available: {other}"),
        ),
    }
}

/// `.pg()?` converts tokio-postgres results.
pub(crate) trait Pg<T> {
    fn pg(self) -> StoreResult<T>;
}

impl<T> Pg<T> for Result<T, tokio_postgres::Error> {
    fn pg(self) -> StoreResult<T> {
        self.map_err(pg_err)
    }
}

/// Reads a column.
pub(crate) fn col<'a, T: FromSql<'a>>(row: &'a Row, name: &str) -> StoreResult<T> {
    row.try_get(name).map_err(pg_err)
}

/// Reads a JSON array-of-strings column.
pub(crate) fn strings_col(row: &Row, name: &str) -> StoreResult<Vec<String>> {
    Ok(crate::common::strings_from_json(col(row, name)?))
}

/// Reads a stored enum name.
pub(crate) fn enum_col<T>(
    row: &Row,
    name: &str,
    parse: fn(&str) -> StoreResult<T>,
) -> StoreResult<T> {
    let text: String = col(row, name)?;
    parse(&text)
}

fn valid_schema(schema: &str) -> bool {
    !schema.is_empty()
        && schema.len() <= 63
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !schema.starts_with(|c: char| c.is_ascii_digit())
}

async fn migrate(client: &mut tokio_postgres::Client, schema: Option<&str>) -> StoreResult<()> {
    let tx = client.transaction().await.pg()?;
    // One migrator at a time per schema; the lock is released with the transaction.
    let lock_key = format!("chatter_migrations:{}", schema.unwrap_or(""));
    tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&lock_key])
        .await
        .pg()?;
    if let Some(schema) = schema {
        tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
            .await
            .pg()?;
    }
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version    BIGINT PRIMARY KEY,
            name       TEXT NOT NULL,
            checksum   TEXT NOT NULL,
            applied_at BIGINT NOT NULL
        )",
    )
    .await
    .pg()?;
    let applied = tx
        .query(
            "SELECT version, name, checksum FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .pg()?
        .iter()
        .map(|row| {
            Ok(AppliedMigration {
                version: col(row, "version")?,
                name: col(row, "name")?,
                checksum: col(row, "checksum")?,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    for migration in migrate::plan(POSTGRES_MIGRATIONS, &applied)? {
        tx.batch_execute(migration.sql).await.map_err(|e| {
            Error::store(
                StoreErrorKind::Migration,
                format!(
                    "migration {:04}_{} failed: {}",
                    migration.version,
                    migration.name,
                    pg_err(e)
                ),
            )
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES ($1, $2, $3, $4)",
            &[&migration.version, &migration.name, &migration.checksum(), &crate::common::now_ms()],
        )
        .await
        .pg()?;
    }
    tx.commit().await.pg()
}

impl PostgresStore {
    /// Connects to `url`, migrates the database (or `options.pg_schema`), and builds the pool.
    ///
    /// # Errors
    ///
    /// `Config` for a malformed URL or schema name, `Unavailable` when the server cannot be
    /// reached within `options.pg_connect_timeout`, `Migration` when migrating fails.
    pub async fn connect(url: &str, options: StoreOptions) -> StoreResult<Self> {
        let mut config = tokio_postgres::Config::from_str(url).map_err(|e| {
            Error::store(StoreErrorKind::Config, format!("invalid Postgres URL: {e}"))
        })?;
        config.connect_timeout(options.pg_connect_timeout);
        if let Some(schema) = &options.pg_schema {
            if !valid_schema(schema) {
                return Err(Error::store(
                    StoreErrorKind::Config,
                    format!(
                        "invalid Postgres schema name `{schema}` (lower-case letters, digits and _)"
                    ),
                ));
            }
            config.options(format!("-c search_path={schema}"));
        }
        if config.get_application_name().is_none() {
            // Visible in pg_stat_activity.
            config.application_name(match &options.pg_schema {
                Some(schema) => format!("chatter:{schema}"),
                None => "chatter".to_owned(),
            });
        }
        let unreachable = |message: String| {
            Error::store(
                StoreErrorKind::Unavailable,
                format!("cannot connect to Postgres: {message}"),
            )
        };
        let connected = tokio::time::timeout(options.pg_connect_timeout, config.connect(NoTls))
            .await
            .map_err(|_| {
                unreachable(format!("timed out after {:?}", options.pg_connect_timeout))
            })?;
        let (mut client, connection) = connected.map_err(|e| {
            // tokio-postgres keeps the cause (refused, unknown host, auth) in the source chain.
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            unreachable(message)
        })?;
        let driver = tokio::spawn(connection);
        let migrated = migrate(&mut client, options.pg_schema.as_deref()).await;
        drop(client);
        let _ = driver.await;
        migrated?;

        let manager = CheckedManager {
            inner: Manager::from_config(
                config,
                NoTls,
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            ),
        };
        let pool = Pool::builder(manager)
            .max_size(options.pg_pool_size.max(1))
            .wait_timeout(Some(options.pg_wait_timeout))
            .create_timeout(Some(options.pg_connect_timeout))
            .recycle_timeout(Some(Duration::from_secs(5)))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| {
                Error::store(
                    StoreErrorKind::Config,
                    format!("cannot build the Postgres pool: {e}"),
                )
            })?;
        Ok(PostgresStore {
            pool,
            definitions_cache: QueryCache::new(options.cache_capacity, options.cache_ttl),
            templates_cache: QueryCache::new(options.cache_capacity, options.cache_ttl),
            ids: IdGen::default(),
            limits: Limits(options.max_payload_bytes),
            options,
        })
    }

    /// A pooled connection.
    pub(crate) async fn client(&self) -> StoreResult<deadpool::managed::Object<CheckedManager>> {
        self.pool.get().await.map_err(pool_err)
    }
}

#[async_trait::async_trait]
impl Store for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn health_check(&self) -> StoreResult<()> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await.pg()?;
        Ok(())
    }

    fn cache_stats(&self) -> CacheStats {
        combine(self.definitions_cache.stats(), self.templates_cache.stats())
    }

    fn pool_stats(&self) -> PoolStats {
        let status = self.pool.status();
        PoolStats {
            max_size: status.max_size as u64,
            size: status.size as u64,
            available: status.available as u64,
            waiting: status.waiting as u64,
        }
    }

    fn max_payload_bytes(&self) -> usize {
        self.limits.0
    }
}
