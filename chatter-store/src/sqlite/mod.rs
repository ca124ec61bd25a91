//! The SQLite backend.
//!
//! One dedicated writer thread owns the read-write connection and runs boxed closures sent
//! over a channel, one at a time (so every write transaction is serialised without lock
//! contention); a small pool of reader threads, each with its own read-only connection, serves
//! reads concurrently thanks to WAL. Results come back over oneshot channels, so no tokio
//! worker ever blocks on SQLite. An in-memory database is private to one connection, so an
//! in-memory store has no readers: the writer thread serves reads too.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chatter_core::Error;
use chatter_core::store::{
    CacheStats, DefinitionRecord, PoolStats, Store, StoreErrorKind, StoreResult, TemplateRecord,
};
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension};
use tokio::sync::oneshot;

use crate::StoreOptions;
use crate::cache::{QueryCache, combine};
use crate::common::{IdGen, Limits};
use crate::migrate::{self, AppliedMigration, SQLITE_MIGRATIONS};

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

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// What the writer thread runs: any closure, or step commits, which it groups.
pub(crate) enum WriterJob {
    /// Run a closure.
    Run(Job),
    /// Commit these steps (one `commit_steps` call) and reply once they are durable.
    Steps {
        steps: Vec<chatter_core::store::StepCommit>,
        reply: oneshot::Sender<StoreResult<Vec<chatter_core::store::StepReceipt>>>,
    },
}

/// Most step-commit calls grouped into one transaction.
const MAX_GROUP: usize = 64;

/// The SQLite store. Build it with [`crate::connect`] or [`SqliteStore::open`].
pub struct SqliteStore {
    writer: mpsc::Sender<WriterJob>,
    readers: Option<mpsc::Sender<Job>>,
    reader_count: usize,
    /// Dropping it stops the checkpointer thread.
    _checkpointer: Option<mpsc::Sender<()>>,
    pub(crate) definitions_cache: QueryCache<DefinitionRecord>,
    pub(crate) templates_cache: QueryCache<TemplateRecord>,
    pub(crate) ids: IdGen,
    pub(crate) limits: Limits,
    options: StoreOptions,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("readers", &self.reader_count)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// Maps a rusqlite error to the store error kinds.
pub(crate) fn db_err(e: rusqlite::Error) -> Error {
    let kind = match &e {
        rusqlite::Error::SqliteFailure(failure, _) => match failure.code {
            ErrorCode::ConstraintViolation => match failure.extended_code {
                // UNIQUE, PRIMARY KEY, trigger RAISE
                2067 | 1555 | 1811 => StoreErrorKind::Conflict,
                // FOREIGN KEY: a referenced row does not exist
                787 => StoreErrorKind::NotFound,
                _ => StoreErrorKind::InvalidInput,
            },
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::CannotOpen => {
                StoreErrorKind::Unavailable
            }
            ErrorCode::TooBig => StoreErrorKind::PayloadTooLarge,
            _ => StoreErrorKind::Backend,
        },
        _ => StoreErrorKind::Backend,
    };
    let message = match &e {
        rusqlite::Error::SqliteFailure(failure, _) if failure.extended_code == 787 => {
            "a referenced record does not exist (FOREIGN KEY constraint failed)".to_owned()
        }
        _ => format!("SQLite: {e}"),
    };
    Error::store(kind, message)
}

/// `.db()?` converts rusqlite results.
pub(crate) trait Db<T> {
    fn db(self) -> StoreResult<T>;
}

impl<T> Db<T> for rusqlite::Result<T> {
    fn db(self) -> StoreResult<T> {
        self.map_err(db_err)
    }
}

fn closed() -> Error {
    Error::store(
        StoreErrorKind::Unavailable,
        "the SQLite connection thread has stopped",
    )
}

fn open_connection(
    path: &str,
    flags: OpenFlags,
    options: &StoreOptions,
) -> StoreResult<Connection> {
    let conn = Connection::open_with_flags(path, flags).map_err(|e| {
        Error::store(
            StoreErrorKind::Unavailable,
            format!("cannot open SQLite database `{path}`: {e}"),
        )
    })?;
    conn.busy_timeout(options.sqlite_busy_timeout).db()?;
    conn.pragma_update(None, "foreign_keys", "ON").db()?;
    conn.pragma_update(None, "synchronous", options.sqlite_synchronous.pragma())
        .db()?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    // An exclusive transaction is the lock: a second process migrating at the same time waits
    // (busy timeout) and then sees the migrations already recorded.
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
        .db()?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version    INTEGER PRIMARY KEY,
            name       TEXT NOT NULL,
            checksum   TEXT NOT NULL,
            applied_at INTEGER NOT NULL
        )",
    )
    .db()?;
    let applied = {
        let mut stmt = tx
            .prepare("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
            .db()?;
        let rows = stmt
            .query_map([], |row| {
                Ok(AppliedMigration {
                    version: row.get(0)?,
                    name: row.get(1)?,
                    checksum: row.get(2)?,
                })
            })
            .db()?;
        rows.collect::<rusqlite::Result<Vec<_>>>().db()?
    };
    for migration in migrate::plan(SQLITE_MIGRATIONS, &applied)? {
        tx.execute_batch(migration.sql).map_err(|e| {
            Error::store(
                StoreErrorKind::Migration,
                format!(
                    "migration {:04}_{} failed: {e}",
                    migration.version, migration.name
                ),
            )
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![migration.version, migration.name, migration.checksum(), crate::common::now_ms()],
        )
        .db()?;
    }
    tx.commit().db()
}

/// The writer loop. Step commits waiting in the queue are grouped (up to [`MAX_GROUP`] calls)
/// into ONE transaction, each call in its own savepoint: a failing call rolls back alone, the
/// others share one commit, and every caller hears back only after that commit. Jobs keep
/// their order: grouping stops at the first job that is not a step commit.
fn run_writer(mut conn: Connection, jobs: &mpsc::Receiver<WriterJob>, spin: Duration) {
    let mut next: Option<WriterJob> = None;
    loop {
        let job = match next.take() {
            Some(job) => job,
            None => match recv_spinning(jobs, spin) {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        match job {
            WriterJob::Run(f) => f(&mut conn),
            WriterJob::Steps { steps, reply } => {
                let mut group = vec![(steps, reply)];
                while group.len() < MAX_GROUP {
                    match jobs.try_recv() {
                        Ok(WriterJob::Steps { steps, reply }) => group.push((steps, reply)),
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    let calls: Vec<&[chatter_core::store::StepCommit]> =
                        group.iter().map(|(steps, _)| steps.as_slice()).collect();
                    executions::commit_group(&mut conn, &calls)
                }))
                .unwrap_or_else(|_| {
                    Err(Error::store(
                        StoreErrorKind::Backend,
                        "a SQLite step commit panicked",
                    ))
                });
                match outcome {
                    Ok(results) => {
                        for ((_, reply), result) in group.into_iter().zip(results) {
                            let _ = reply.send(result);
                        }
                    }
                    Err(e) => {
                        for (_, reply) in group {
                            let copy = match &e {
                                Error::Store { kind, message } => {
                                    Error::store(*kind, message.clone())
                                }
                                other => Error::store(StoreErrorKind::Backend, other.to_string()),
                            };
                            let _ = reply.send(Err(copy));
                        }
                    }
                }
            }
        }
    }
}

/// Receives the next job, spinning (yielding the CPU) for up to `spin` before parking: a
/// durable execution's next step usually arrives within microseconds, and a parked writer
/// costs a thread wake-up per step.
fn recv_spinning<T>(jobs: &mpsc::Receiver<T>, spin: Duration) -> Result<T, mpsc::RecvError> {
    if !spin.is_zero() {
        let deadline = Instant::now() + spin;
        loop {
            match jobs.try_recv() {
                Ok(job) => return Ok(job),
                Err(mpsc::TryRecvError::Disconnected) => return Err(mpsc::RecvError),
                Err(mpsc::TryRecvError::Empty) if Instant::now() < deadline => {
                    std::thread::yield_now();
                }
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }
    }
    jobs.recv()
}

fn run_jobs(mut conn: Connection, jobs: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        let job = match jobs.lock() {
            Ok(receiver) => receiver.recv(),
            Err(_) => return,
        };
        match job {
            Ok(job) => job(&mut conn),
            Err(_) => return,
        }
    }
}

/// Copies the WAL back into the database every 100 ms without blocking the writer or the
/// readers (`PASSIVE`), until the store is dropped.
fn run_checkpoints(conn: &Connection, stop: &mpsc::Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) =
        stop.recv_timeout(std::time::Duration::from_millis(100))
    {
        // A busy database just means the next round does the work.
        let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`, in WAL mode, and migrates it.
    ///
    /// # Errors
    ///
    /// `Unavailable` when the file cannot be opened, `Migration` when migrating fails.
    pub async fn open(path: &str, options: StoreOptions) -> StoreResult<Self> {
        Self::start(Some(path.to_owned()), options).await
    }

    /// Opens a private in-memory database and migrates it.
    ///
    /// # Errors
    ///
    /// `Migration` when migrating fails.
    pub async fn open_memory(options: StoreOptions) -> StoreResult<Self> {
        Self::start(None, options).await
    }

    async fn start(path: Option<String>, options: StoreOptions) -> StoreResult<Self> {
        let (writer_tx, writer_rx) = mpsc::channel::<WriterJob>();
        let (ready_tx, ready_rx) = oneshot::channel::<StoreResult<()>>();
        let writer_options = options.clone();
        let writer_path = path.clone();
        std::thread::Builder::new()
            .name("chatter-sqlite-writer".into())
            .spawn(move || {
                let opened = (|| {
                    let mut conn = match &writer_path {
                        Some(path) => {
                            let conn = open_connection(
                                path,
                                OpenFlags::SQLITE_OPEN_READ_WRITE
                                    | OpenFlags::SQLITE_OPEN_CREATE
                                    | OpenFlags::SQLITE_OPEN_NO_MUTEX
                                    | OpenFlags::SQLITE_OPEN_URI,
                                &writer_options,
                            )?;
                            let mode: String = conn
                                .query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))
                                .db()?;
                            // Checkpoints run on their own thread (below), so a commit never
                            // pays for copying pages back (and syncing) on the writer.
                            conn.pragma_update(None, "wal_autocheckpoint", 0).db()?;
                            if !mode.eq_ignore_ascii_case("wal") {
                                return Err(Error::store(
                                    StoreErrorKind::Unavailable,
                                    format!(
                                        "cannot enable WAL on `{path}` (journal mode is {mode})"
                                    ),
                                ));
                            }
                            conn
                        }
                        None => {
                            let conn = Connection::open_in_memory().db()?;
                            conn.pragma_update(None, "foreign_keys", "ON").db()?;
                            conn
                        }
                    };
                    migrate(&mut conn)?;
                    Ok(conn)
                })();
                match opened {
                    Ok(conn) => {
                        let _ = ready_tx.send(Ok(()));
                        run_writer(conn, &writer_rx, writer_options.sqlite_commit_spin);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| {
                Error::store(
                    StoreErrorKind::Backend,
                    format!("cannot start the SQLite thread: {e}"),
                )
            })?;
        ready_rx.await.map_err(|_| closed())??;

        let mut readers = None;
        let mut reader_count = 0;
        if let Some(path) = &path
            && options.sqlite_readers > 0
        {
            {
                let (reader_tx, reader_rx) = mpsc::channel::<Job>();
                let reader_rx = Arc::new(Mutex::new(reader_rx));
                for i in 0..options.sqlite_readers {
                    let conn = open_connection(
                        path,
                        OpenFlags::SQLITE_OPEN_READ_ONLY
                            | OpenFlags::SQLITE_OPEN_NO_MUTEX
                            | OpenFlags::SQLITE_OPEN_URI,
                        &options,
                    )?;
                    let rx = Arc::clone(&reader_rx);
                    std::thread::Builder::new()
                        .name(format!("chatter-sqlite-reader-{i}"))
                        .spawn(move || run_jobs(conn, &rx))
                        .map_err(|e| {
                            Error::store(
                                StoreErrorKind::Backend,
                                format!("cannot start a SQLite reader: {e}"),
                            )
                        })?;
                    reader_count += 1;
                }
                readers = Some(reader_tx);
            }
        }
        let mut checkpointer = None;
        if let Some(path) = &path {
            let conn = open_connection(
                path,
                OpenFlags::SQLITE_OPEN_READ_WRITE
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX
                    | OpenFlags::SQLITE_OPEN_URI,
                &options,
            )?;
            let (stop_tx, stop_rx) = mpsc::channel::<()>();
            std::thread::Builder::new()
                .name("chatter-sqlite-checkpointer".into())
                .spawn(move || run_checkpoints(&conn, &stop_rx))
                .map_err(|e| {
                    Error::store(
                        StoreErrorKind::Backend,
                        format!("cannot start the SQLite checkpointer: {e}"),
                    )
                })?;
            checkpointer = Some(stop_tx);
        }
        Ok(SqliteStore {
            writer: writer_tx,
            readers,
            reader_count,
            _checkpointer: checkpointer,
            definitions_cache: QueryCache::new(options.cache_capacity, options.cache_ttl),
            templates_cache: QueryCache::new(options.cache_capacity, options.cache_ttl),
            ids: IdGen::default(),
            limits: Limits(options.max_payload_bytes),
            options,
        })
    }

    fn job<T, F>(f: F) -> (Job, oneshot::Receiver<StoreResult<T>>)
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |conn: &mut Connection| {
            let result =
                std::panic::catch_unwind(AssertUnwindSafe(|| f(conn))).unwrap_or_else(|_| {
                    Err(Error::store(
                        StoreErrorKind::Backend,
                        "a SQLite operation panicked",
                    ))
                });
            let _ = tx.send(result);
        });
        (job, rx)
    }

    /// Sends step commits to the writer, which may group them with other callers'.
    pub(crate) async fn commit_on_writer(
        &self,
        steps: Vec<chatter_core::store::StepCommit>,
    ) -> StoreResult<Vec<chatter_core::store::StepReceipt>> {
        let (reply, mut rx) = oneshot::channel();
        self.writer
            .send(WriterJob::Steps { steps, reply })
            .map_err(|_| closed())?;
        // Spin briefly (yielding the CPU) before parking the task: the commit usually ends
        // within the spin, which saves waking this worker thread (see
        // `StoreOptions::sqlite_commit_spin`).
        let spin = self.options.sqlite_commit_spin;
        if !spin.is_zero() {
            let deadline = Instant::now() + spin;
            loop {
                match rx.try_recv() {
                    Ok(result) => return result,
                    Err(oneshot::error::TryRecvError::Closed) => return Err(closed()),
                    Err(oneshot::error::TryRecvError::Empty) if Instant::now() < deadline => {
                        std::thread::yield_now();
                    }
                    Err(oneshot::error::TryRecvError::Empty) => break,
                }
            }
        }
        rx.await.map_err(|_| closed())?
    }

    /// Runs `f` on the writer connection.
    pub(crate) async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let (job, rx) = Self::job(f);
        self.writer
            .send(WriterJob::Run(job))
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    /// Runs `f` on a reader connection (the writer for an in-memory store).
    pub(crate) async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let Some(readers) = &self.readers else {
            return self.write(f).await;
        };
        let (job, rx) = Self::job(f);
        readers.send(job).map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }
}

/// `SELECT` one row, mapped, or `None`.
pub(crate) fn query_opt<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    map: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> StoreResult<Option<T>> {
    let mut stmt = conn.prepare_cached(sql).db()?;
    stmt.query_row(params, map).optional().db()
}

/// `SELECT` every row, mapped.
pub(crate) fn query_all<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> StoreResult<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql).db()?;
    let rows = stmt.query_map(params, map).db()?;
    rows.collect::<rusqlite::Result<Vec<_>>>().db()
}

/// Reads a JSON text column.
pub(crate) fn json_at(
    row: &rusqlite::Row<'_>,
    column: &str,
) -> rusqlite::Result<serde_json::Value> {
    let text: String = row.get(column)?;
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// Reads a nullable JSON text column.
pub(crate) fn opt_json_at(
    row: &rusqlite::Row<'_>,
    column: &str,
) -> rusqlite::Result<Option<serde_json::Value>> {
    let text: Option<String> = row.get(column)?;
    text.map(|t| {
        serde_json::from_str(&t).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
        })
    })
    .transpose()
}

/// Reads a JSON array-of-strings column.
pub(crate) fn strings_at(row: &rusqlite::Row<'_>, column: &str) -> rusqlite::Result<Vec<String>> {
    Ok(crate::common::strings_from_json(json_at(row, column)?))
}

/// Parses a stored enum name.
pub(crate) fn enum_at<T>(
    row: &rusqlite::Row<'_>,
    column: &str,
    parse: fn(&str) -> StoreResult<T>,
) -> rusqlite::Result<T> {
    let text: String = row.get(column)?;
    parse(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn health_check(&self) -> StoreResult<()> {
        self.read(|conn| conn.query_row("SELECT 1", [], |_| Ok(())).db())
            .await
    }

    fn cache_stats(&self) -> CacheStats {
        combine(self.definitions_cache.stats(), self.templates_cache.stats())
    }

    fn pool_stats(&self) -> PoolStats {
        let size = 1 + self.reader_count as u64;
        PoolStats {
            max_size: size,
            size,
            available: size,
            waiting: 0,
        }
    }

    fn max_payload_bytes(&self) -> usize {
        self.limits.0
    }
}
