//! # chatter-store
//!
//! Storage backends for Chatter behind [`chatter_core::store`]'s traits: SQLite (the default,
//! embedded, via rusqlite with the bundled library and FTS5) and Postgres (tokio-postgres with a
//! deadpool connection pool). [`connect`] picks the backend from the URL's scheme, runs the
//! migrations, and returns an `Arc<dyn Store>`: one object implementing every concern trait
//! (definitions, templates, executions, conversations, documents, preferences, audit, jobs,
//! users).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> chatter_core::Result<()> {
//! use chatter_core::store::{ExecutionKind, NewExecution};
//!
//! let store = chatter_store::connect("sqlite::memory:").await?;
//! let run = store
//!     .create_execution(NewExecution::new("alice", ExecutionKind::Adhoc, serde_json::json!({})))
//!     .await?;
//! assert_eq!(store.get_execution(&run.id).await?.map(|r| r.owner_id), Some("alice".into()));
//! # Ok(())
//! # }
//! ```
//!
//! ## URLs
//!
//! - `sqlite://chatter.db` (relative path), `sqlite:///var/lib/chatter.db` (absolute path);
//! - `sqlite::memory:` or `sqlite://:memory:` (a private in-memory database);
//! - SQLite URLs take `?synchronous=off|normal|full|extra`, `?readers=N`,
//!   `?commit_spin_us=N` and `?inline_writes=true|false` (overriding [`StoreOptions`]);
//! - `postgres://user@host:5432/db` or `postgresql://...` (any libpq-style URL
//!   tokio-postgres accepts).
//!
//! ## Errors
//!
//! This crate has no error enum of its own: every failure is
//! [`chatter_core::Error::Store`] with a [`StoreErrorKind`] (one error enum per crate, and
//! the traits' callers see a single type).

use std::sync::Arc;
use std::time::Duration;

use chatter_core::Error;
use chatter_core::store::{Store, StoreErrorKind, StoreResult};

mod cache;
mod common;
mod marketplace;
pub mod migrate;
pub mod postgres;
pub mod sqlite;

pub use cache::QueryCache;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// How SQLite syncs to disk (`PRAGMA synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SqliteSynchronous {
    /// No syncs; a power loss may corrupt the database.
    Off,
    /// With WAL: durable against process crashes, may lose the last commits on power loss.
    #[default]
    Normal,
    /// Sync on every commit.
    Full,
    /// Like `Full`, also syncing the directory.
    Extra,
}

impl SqliteSynchronous {
    pub(crate) fn pragma(self) -> &'static str {
        match self {
            SqliteSynchronous::Off => "OFF",
            SqliteSynchronous::Normal => "NORMAL",
            SqliteSynchronous::Full => "FULL",
            SqliteSynchronous::Extra => "EXTRA",
        }
    }
}

/// Options of [`connect_with`]; [`StoreOptions::default`] suits most uses.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StoreOptions {
    /// Largest JSON/text payload (bytes) one field of a write may carry; larger ones are refused
    /// with `PayloadTooLarge` before the database is touched. Default 16 MiB.
    pub max_payload_bytes: usize,
    /// Entries of the definition/template cache (each); 0 disables it. Default 1024.
    pub cache_capacity: usize,
    /// How long a cached read stays valid. Default 5 s.
    pub cache_ttl: Duration,
    /// SQLite `synchronous`. Default `Normal`.
    pub sqlite_synchronous: SqliteSynchronous,
    /// Reader connections (threads) of a SQLite file store. Default 2. In-memory stores read
    /// on the writer connection.
    pub sqlite_readers: usize,
    /// SQLite busy timeout (another process holding the write lock). Default 5 s.
    pub sqlite_busy_timeout: Duration,
    /// How long a step commit's two sides wait by spinning (yielding the CPU in a loop)
    /// before they park: the caller for the writer thread's reply, the writer thread for
    /// the next job. A commit takes tens of microseconds, and waking a parked thread costs
    /// about as much on a small VM, so a short spin can save both wake-ups of a `sync` step;
    /// but it holds a tokio worker and a core meanwhile, which slowed `async` and `exit`
    /// runs on a loaded 2-core machine (docs/performance.md). Durability is the same either
    /// way. Default zero (park at once); URL parameter `commit_spin_us` (e.g. 150).
    pub sqlite_commit_spin: Duration,
    /// Whether an execution's short writes (its row, lease, status, outcome and step
    /// commits) run on the calling thread when the write connection is free, instead of a
    /// round trip to the writer thread: about twice as fast per durable step. Only when
    /// `sqlite_synchronous` is `Off` or `Normal`, where a WAL commit does not sync to disk;
    /// with `Full`/`Extra` every write goes to the writer thread. When another process
    /// writes the same database file, a write waiting for its lock (up to
    /// `sqlite_busy_timeout`) would hold a tokio worker meanwhile: turn this off there.
    /// Default `true`; URL parameter `inline_writes=false`.
    pub sqlite_inline_writes: bool,
    /// Postgres pool size. Default 16.
    pub pg_pool_size: usize,
    /// Postgres connect timeout (also the whole `connect` budget for an unreachable server).
    /// Default 5 s.
    pub pg_connect_timeout: Duration,
    /// How long a caller waits for a pooled Postgres connection. Default 10 s.
    pub pg_wait_timeout: Duration,
    /// Postgres schema to use (created if missing, set as `search_path`); the server default
    /// when `None`.
    pub pg_schema: Option<String>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_payload_bytes: 16 * 1024 * 1024,
            cache_capacity: 1024,
            cache_ttl: Duration::from_secs(5),
            sqlite_synchronous: SqliteSynchronous::Normal,
            sqlite_readers: 2,
            sqlite_busy_timeout: Duration::from_secs(5),
            sqlite_commit_spin: Duration::ZERO,
            sqlite_inline_writes: true,
            pg_pool_size: 16,
            pg_connect_timeout: Duration::from_secs(5),
            pg_wait_timeout: Duration::from_secs(10),
            pg_schema: None,
        }
    }
}

impl StoreOptions {
    /// Sets [`StoreOptions::max_payload_bytes`].
    #[must_use]
    pub fn max_payload_bytes(mut self, bytes: usize) -> Self {
        self.max_payload_bytes = bytes;
        self
    }

    /// Sets the cache capacity and TTL (capacity 0 disables the cache).
    #[must_use]
    pub fn cache(mut self, capacity: usize, ttl: Duration) -> Self {
        self.cache_capacity = capacity;
        self.cache_ttl = ttl;
        self
    }

    /// Sets [`StoreOptions::sqlite_synchronous`].
    #[must_use]
    pub fn sqlite_synchronous(mut self, synchronous: SqliteSynchronous) -> Self {
        self.sqlite_synchronous = synchronous;
        self
    }

    /// Sets [`StoreOptions::sqlite_readers`].
    #[must_use]
    pub fn sqlite_readers(mut self, readers: usize) -> Self {
        self.sqlite_readers = readers;
        self
    }

    /// Sets [`StoreOptions::sqlite_commit_spin`].
    #[must_use]
    pub fn sqlite_commit_spin(mut self, spin: Duration) -> Self {
        self.sqlite_commit_spin = spin;
        self
    }

    /// Sets [`StoreOptions::sqlite_inline_writes`].
    #[must_use]
    pub fn sqlite_inline_writes(mut self, inline: bool) -> Self {
        self.sqlite_inline_writes = inline;
        self
    }

    /// Sets the Postgres pool size.
    #[must_use]
    pub fn pg_pool_size(mut self, size: usize) -> Self {
        self.pg_pool_size = size;
        self
    }

    /// Sets the Postgres connect and pool-wait timeouts.
    #[must_use]
    pub fn pg_timeouts(mut self, connect: Duration, wait: Duration) -> Self {
        self.pg_connect_timeout = connect;
        self.pg_wait_timeout = wait;
        self
    }

    /// Uses (and creates) this Postgres schema.
    #[must_use]
    pub fn pg_schema(mut self, schema: impl Into<String>) -> Self {
        self.pg_schema = Some(schema.into());
        self
    }
}

/// What a database URL designates.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DatabaseUrl {
    /// A SQLite file.
    SqliteFile(String),
    /// A private in-memory SQLite database.
    SqliteMemory,
    /// A Postgres URL (as given).
    Postgres(String),
}

impl DatabaseUrl {
    /// Parses a database URL.
    ///
    /// # Errors
    ///
    /// [`StoreErrorKind::Config`] for a URL without a supported scheme or without a path.
    pub fn parse(url: &str) -> StoreResult<Self> {
        let url = url.trim();
        let Some((scheme, rest)) = url.split_once(':') else {
            return Err(Error::store(
                StoreErrorKind::Config,
                format!(
                    "`{url}` is not a database URL (expected sqlite://PATH, sqlite::memory: or \
                     postgres://...)"
                ),
            ));
        };
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => {
                let rest = rest.strip_prefix("//").unwrap_or(rest);
                let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
                sqlite_params(query, &mut StoreOptions::default())?;
                if path == ":memory:" {
                    return Ok(DatabaseUrl::SqliteMemory);
                }
                if path.is_empty() {
                    return Err(Error::store(
                        StoreErrorKind::Config,
                        format!("SQLite URL `{url}` has no path (try sqlite://chatter.db)"),
                    ));
                }
                Ok(DatabaseUrl::SqliteFile(path.to_owned()))
            }
            "postgres" | "postgresql" => Ok(DatabaseUrl::Postgres(url.to_owned())),
            other => Err(Error::store(
                StoreErrorKind::Config,
                format!("unsupported database URL scheme `{other}` (expected sqlite or postgres)"),
            )),
        }
    }
}

/// Applies a SQLite URL's query (`synchronous=off|normal|full|extra`, `readers=N`).
fn sqlite_params(query: &str, options: &mut StoreOptions) -> StoreResult<()> {
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "synchronous" => {
                options.sqlite_synchronous = match value.to_ascii_lowercase().as_str() {
                    "off" => SqliteSynchronous::Off,
                    "normal" => SqliteSynchronous::Normal,
                    "full" => SqliteSynchronous::Full,
                    "extra" => SqliteSynchronous::Extra,
                    _ => {
                        return Err(Error::store(
                            StoreErrorKind::Config,
                            format!(
                                "SQLite `synchronous` must be off, normal, full or extra (got `{value}`)"
                            ),
                        ));
                    }
                }
            }
            "readers" => {
                options.sqlite_readers = value.parse().map_err(|_| {
                    Error::store(
                        StoreErrorKind::Config,
                        format!("SQLite `readers` must be a number (got `{value}`)"),
                    )
                })?;
            }
            "commit_spin_us" => {
                let micros: u64 = value.parse().map_err(|_| {
                    Error::store(
                        StoreErrorKind::Config,
                        format!("SQLite `commit_spin_us` must be a number (got `{value}`)"),
                    )
                })?;
                options.sqlite_commit_spin = Duration::from_micros(micros);
            }
            "inline_writes" => {
                options.sqlite_inline_writes = match value.to_ascii_lowercase().as_str() {
                    "true" | "1" | "on" => true,
                    "false" | "0" | "off" => false,
                    _ => {
                        return Err(Error::store(
                            StoreErrorKind::Config,
                            format!("SQLite `inline_writes` must be true or false (got `{value}`)"),
                        ));
                    }
                };
            }
            other => {
                return Err(Error::store(
                    StoreErrorKind::Config,
                    format!(
                        "unknown SQLite URL parameter `{other}` (expected synchronous, readers, commit_spin_us or inline_writes)"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Opens the store for `url` with default options and runs its migrations.
///
/// # Errors
///
/// `Config` for a bad URL, `Unavailable` for an unreachable server or unopenable file,
/// `Migration` for a failed or inconsistent migration.
pub async fn connect(url: &str) -> StoreResult<Arc<dyn Store>> {
    connect_with(url, StoreOptions::default()).await
}

/// Opens the store for `url` with `options` and runs its migrations.
///
/// # Errors
///
/// As [`connect`].
pub async fn connect_with(url: &str, mut options: StoreOptions) -> StoreResult<Arc<dyn Store>> {
    let parsed = DatabaseUrl::parse(url)?;
    if matches!(
        parsed,
        DatabaseUrl::SqliteFile(_) | DatabaseUrl::SqliteMemory
    ) && let Some((_, query)) = url.split_once('?')
    {
        sqlite_params(query, &mut options)?;
    }
    match parsed {
        DatabaseUrl::SqliteFile(path) => Ok(Arc::new(SqliteStore::open(&path, options).await?)),
        DatabaseUrl::SqliteMemory => Ok(Arc::new(SqliteStore::open_memory(options).await?)),
        DatabaseUrl::Postgres(url) => Ok(Arc::new(PostgresStore::connect(&url, options).await?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            DatabaseUrl::parse("sqlite::memory:").unwrap(),
            DatabaseUrl::SqliteMemory
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite://:memory:").unwrap(),
            DatabaseUrl::SqliteMemory
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite://chatter.db").unwrap(),
            DatabaseUrl::SqliteFile("chatter.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:///tmp/x.db").unwrap(),
            DatabaseUrl::SqliteFile("/tmp/x.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("postgresql://u@h/db").unwrap(),
            DatabaseUrl::Postgres("postgresql://u@h/db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("mysql://x").unwrap_err().to_string(),
            "storage error (config): unsupported database URL scheme `mysql` (expected sqlite or postgres)"
        );
        assert_eq!(
            DatabaseUrl::parse("chatter.db").unwrap_err().store_kind(),
            Some(StoreErrorKind::Config)
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:///tmp/x.db?synchronous=full&readers=4").unwrap(),
            DatabaseUrl::SqliteFile("/tmp/x.db".into())
        );
        let mut options = StoreOptions::default();
        sqlite_params(
            "synchronous=FULL&readers=4&commit_spin_us=0&inline_writes=off",
            &mut options,
        )
        .unwrap();
        assert_eq!(
            (
                options.sqlite_synchronous,
                options.sqlite_readers,
                options.sqlite_commit_spin,
                options.sqlite_inline_writes
            ),
            (SqliteSynchronous::Full, 4, Duration::ZERO, false)
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite://x.db?inline_writes=maybe")
                .unwrap_err()
                .to_string(),
            "storage error (config): SQLite `inline_writes` must be true or false (got `maybe`)"
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite://x.db?commit_spin_us=soon")
                .unwrap_err()
                .to_string(),
            "storage error (config): SQLite `commit_spin_us` must be a number (got `soon`)"
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite://x.db?synchronous=sometimes")
                .unwrap_err()
                .to_string(),
            "storage error (config): SQLite `synchronous` must be off, normal, full or extra (got `sometimes`)"
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite://x.db?journal=delete")
                .unwrap_err()
                .to_string(),
            "storage error (config): unknown SQLite URL parameter `journal` (expected synchronous, readers, commit_spin_us or inline_writes)"
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite://").unwrap_err().to_string(),
            "storage error (config): SQLite URL `sqlite://` has no path (try sqlite://chatter.db)"
        );
    }
}
