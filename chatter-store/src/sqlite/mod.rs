//! The SQLite backend.
//!
//! One read-write connection serialises every write transaction. A dedicated writer thread
//! runs the writes sent to it over a channel, one at a time; short writes on the hot path of
//! an execution (its row, lease and status, and above all its step commits) are run on the
//! calling thread instead whenever the connection is free, which saves the two thread
//! wake-ups of a round trip to the writer (two thirds of a durable step on a small VM).
//! Step commits that find the connection busy wait in a queue, and whoever holds the
//! connection next commits the queued ones as ONE group (see `WriteSide`). A small pool of
//! reader threads, each with its own read-only connection, serves reads concurrently thanks to
//! WAL. Results come back over oneshot channels. An in-memory database is private to one
//! connection, so an in-memory store has no readers: the writer serves reads too.
//!
//! Inline writes never wait for the connection (they only `try_lock` it), and they are used
//! only when a commit does not sync to disk (`synchronous` OFF or NORMAL in WAL mode), so a
//! tokio worker runs a write of tens of microseconds at most, never an `fsync`. They can be
//! turned off (`StoreOptions::sqlite_inline_writes`).

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use chatter_core::Error;
use chatter_core::store::{
    CacheStats, DefinitionRecord, PoolStats, StepCommit, StepReceipt, Store, StoreErrorKind,
    StoreResult, TemplateRecord,
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

/// What the writer thread runs.
pub(crate) enum WriterJob {
    /// Run a closure.
    Run(Job),
    /// Run the queued short writes ([`WriteSide::pending`]).
    Drain,
}

/// Most queued writes grouped into one transaction.
const MAX_GROUP: usize = 64;

/// What a grouped write answers once its transaction's fate is known: `None` when it
/// committed, else the error that rolled the whole transaction back.
type Reply = Box<dyn FnOnce(Option<&Error>) + Send>;

/// A short write waiting for the write connection. It runs inside the group's transaction
/// (in its own savepoint when the group has several) and returns whether it succeeded, and
/// its answer, sent once the transaction committed or failed.
type PendingWrite = Box<dyn FnOnce(&Connection) -> (bool, Reply) + Send>;

/// A write run by whoever holds the connection, answered through `reply`.
fn pending_write<T, F>(f: F, reply: oneshot::Sender<StoreResult<T>>) -> PendingWrite
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
{
    Box::new(move |conn: &Connection| {
        let result = guarded(conn, f);
        let ok = result.is_ok();
        let answer: Reply = Box::new(move |failure: Option<&Error>| {
            let _ = reply.send(match failure {
                Some(error) if ok => Err(copy_error(error)),
                _ => result,
            });
        });
        (ok, answer)
    })
}

/// The write connection, and the short writes waiting for it.
///
/// Whoever holds `conn` runs the waiting writes with its own, in ONE transaction, and after
/// releasing it looks at `pending` once more: anything queued meanwhile (by a caller whose
/// `try_lock` failed) is handed to the writer thread with [`WriterJob::Drain`], which a
/// queuing caller also sends itself. So a queued write is never left behind. Grouping is what
/// keeps a busy server's commits few: concurrent executions' rows and steps share pages, and a
/// group writes each page once.
pub(crate) struct WriteSide {
    conn: Mutex<Connection>,
    pending: Mutex<VecDeque<PendingWrite>>,
    /// The writer's counters ([`executions::Heads`]): locked only by the holder of `conn`.
    heads: Mutex<executions::Heads>,
}

impl WriteSide {
    fn new(conn: Connection) -> Self {
        WriteSide {
            conn: Mutex::new(conn),
            pending: Mutex::new(VecDeque::new()),
            heads: Mutex::new(executions::Heads::default()),
        }
    }

    /// Waits for the connection (the writer thread only).
    fn lock(&self) -> MutexGuard<'_, Connection> {
        // Every use of the connection catches panics, so a poisoned lock only means a panic
        // was caught while it was held: the connection is still consistent (SQLite rolls back
        // an unfinished transaction when the next one begins).
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The writer's counters (the caller holds the connection).
    fn heads(&self) -> MutexGuard<'_, executions::Heads> {
        self.heads.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `job` (a write outside the groups of short writes) on the connection. When it
    /// changed rows, the counters kept for executions may be stale: they are all dropped.
    fn run_job(&self, conn: &mut Connection, job: Job) {
        let before = conn.total_changes();
        job(conn);
        if conn.total_changes() != before {
            self.heads().forget_all();
        }
    }

    /// The connection, when no one holds it.
    fn try_lock(&self) -> Option<MutexGuard<'_, Connection>> {
        match self.conn.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        }
    }

    fn queue(&self) -> MutexGuard<'_, VecDeque<PendingWrite>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes up to `max` queued writes, oldest first.
    fn take(&self, max: usize) -> Vec<PendingWrite> {
        let mut queue = self.queue();
        let n = queue.len().min(max);
        queue.drain(..n).collect()
    }

    fn has_pending(&self) -> bool {
        !self.queue().is_empty()
    }

    /// Runs `own` (when given; it returns whether it succeeded) and `others` in ONE
    /// transaction, each in its own savepoint when there are several (a failing write rolls
    /// back alone), then commits and answers `others`. A lone write needs no savepoint: the
    /// transaction is its all-or-nothing. `Err` when the transaction itself failed: then
    /// nothing was written, and `others` were told so.
    ///
    /// `heads` are the writer's counters, made this thread's while the group runs.
    fn run_group(
        conn: &mut Connection,
        heads: &mut executions::Heads,
        own: Option<&mut dyn FnMut(&Connection) -> bool>,
        others: Vec<PendingWrite>,
    ) -> StoreResult<()> {
        let mut replies: Vec<Reply> = Vec::with_capacity(others.len());
        let installed = heads.install();
        let outcome = Self::transact(conn, own, others, &mut replies);
        drop(installed);
        let failure = outcome.as_ref().err();
        for reply in replies {
            reply(failure);
        }
        outcome
    }

    fn transact(
        conn: &mut Connection,
        own: Option<&mut dyn FnMut(&Connection) -> bool>,
        others: Vec<PendingWrite>,
        replies: &mut Vec<Reply>,
    ) -> StoreResult<()> {
        let tx = WriteTx::begin(conn).db()?;
        if own.is_some() as usize + others.len() == 1 {
            let ok = match own {
                Some(own) => own(conn),
                None => {
                    let mut others = others;
                    let (ok, reply) = (others.remove(0))(conn);
                    replies.push(reply);
                    ok
                }
            };
            if !ok {
                // Its answer is its own error; nothing of it stays.
                return tx.rollback().db();
            }
        } else {
            if let Some(own) = own {
                in_savepoint(conn, own).db()?;
            }
            for write in others {
                in_savepoint(conn, |conn| {
                    let (ok, reply) = write(conn);
                    replies.push(reply);
                    ok
                })
                .db()?;
            }
        }
        chatter_core::failpoint::hit("sqlite.before_commit");
        tx.commit().db()?;
        chatter_core::failpoint::hit("sqlite.after_commit");
        Ok(())
    }

    /// Runs everything queued, in groups, then gives the connection up; writes queued after
    /// that are taken again as long as the connection is free (the writer thread).
    fn drain<'a>(&'a self, mut conn: MutexGuard<'a, Connection>) {
        loop {
            loop {
                let group = self.take(MAX_GROUP);
                if group.is_empty() {
                    break;
                }
                let _ = Self::run_group(&mut conn, &mut self.heads(), None, group);
            }
            drop(conn);
            if !self.has_pending() {
                return;
            }
            match self.try_lock() {
                Some(guard) => conn = guard,
                // Its holder drains (or hands over) after it.
                None => return,
            }
        }
    }
}

/// Runs a statement without parameters from the connection's statement cache. (rusqlite's
/// `Transaction` and `Savepoint` parse their `BEGIN`, `COMMIT` and `SAVEPOINT` text on every
/// use: two parses per step commit.)
fn run_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Runs `write` (it returns whether it succeeded) in a savepoint of the open transaction,
/// rolled back when it failed: a failing write of a group rolls back alone.
fn in_savepoint(
    conn: &Connection,
    write: impl FnOnce(&Connection) -> bool,
) -> rusqlite::Result<()> {
    run_cached(conn, "SAVEPOINT chatter_write")?;
    let mark = executions::Heads::with(|heads| heads.mark());
    if !write(conn) {
        run_cached(conn, "ROLLBACK TO chatter_write")?;
        if let Some(mark) = mark {
            executions::Heads::with(|heads| heads.undo_to(mark));
        }
    }
    run_cached(conn, "RELEASE chatter_write")
}

/// The write transaction of a group (`BEGIN IMMEDIATE`), rolled back when dropped uncommitted.
/// The installed [`executions::Heads`] follow it.
struct WriteTx<'c> {
    conn: &'c Connection,
    open: bool,
}

impl<'c> WriteTx<'c> {
    fn begin(conn: &'c Connection) -> rusqlite::Result<WriteTx<'c>> {
        run_cached(conn, "BEGIN IMMEDIATE")?;
        let tx = WriteTx { conn, open: true };
        let version = executions::data_version(conn)?;
        executions::Heads::with(|heads| heads.begin(version));
        Ok(tx)
    }

    fn commit(mut self) -> rusqlite::Result<()> {
        // A failed COMMIT leaves the transaction open: dropping `self` rolls it back.
        run_cached(self.conn, "COMMIT")?;
        self.open = false;
        let version = executions::data_version(self.conn).ok();
        executions::Heads::with(|heads| heads.committed(version));
        Ok(())
    }

    fn rollback(mut self) -> rusqlite::Result<()> {
        self.open = false;
        executions::Heads::with(executions::Heads::rolled_back);
        run_cached(self.conn, "ROLLBACK")
    }
}

impl Drop for WriteTx<'_> {
    fn drop(&mut self) {
        if self.open {
            executions::Heads::with(executions::Heads::rolled_back);
            let _ = run_cached(self.conn, "ROLLBACK");
        }
    }
}

/// Runs `f` on the connection; a panic becomes a `Backend` error.
fn guarded<T>(conn: &Connection, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
    std::panic::catch_unwind(AssertUnwindSafe(|| f(conn))).unwrap_or_else(|_| Err(panicked()))
}

fn panicked() -> Error {
    Error::store(StoreErrorKind::Backend, "a SQLite operation panicked")
}

/// A store error copied for every caller of a failed group.
fn copy_error(e: &Error) -> Error {
    match e {
        Error::Store { kind, message } => Error::store(*kind, message.clone()),
        other => Error::store(StoreErrorKind::Backend, other.to_string()),
    }
}

/// The SQLite store. Build it with [`crate::connect`] or [`SqliteStore::open`].
pub struct SqliteStore {
    writer: mpsc::Sender<WriterJob>,
    write_side: Arc<WriteSide>,
    /// Whether short writes run on the calling thread when the connection is free.
    inline: bool,
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

/// The writer thread: runs the closures sent to it, and commits the queued step commits
/// after each (and on [`WriterJob::Drain`]), grouped.
fn run_writer(side: &WriteSide, jobs: &mpsc::Receiver<WriterJob>, spin: Duration) {
    while let Ok(job) = recv_spinning(jobs, spin) {
        let mut conn = side.lock();
        if let WriterJob::Run(f) = job {
            side.run_job(&mut conn, f);
        }
        side.drain(conn);
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

/// WAL size (bytes) past which the checkpointer has SQLite start the WAL over (and empties the
/// file once writes pause); see `run_checkpoints`.
pub(crate) const WAL_TRUNCATE_BYTES: i64 = 16 * 1024 * 1024;

/// Copies the WAL back into the database every 100 ms without blocking the writer or the
/// readers (`PASSIVE`), until the store is dropped, and keeps the WAL file from growing
/// without bound.
///
/// Under a steady stream of commits a passive checkpoint never catches up with the last frame,
/// and SQLite starts the WAL over (writes it again from its beginning) only when a write
/// transaction begins with every frame copied back. So once the WAL holds more than
/// [`WAL_TRUNCATE_BYTES`], a second passive round copies what was appended during the first,
/// and a third one runs while this thread holds the write connection's lock: no write of this
/// process can append meanwhile, so it copies the last frames (a few milliseconds), and the
/// next write starts the file over. Writes that come during those milliseconds queue and are
/// then committed together. (A `TRUNCATE` checkpoint here cost 8-14 ms more, emptying a file
/// of 20-40 MiB, and before it held the lock, the writes that ran into it slept in SQLite's
/// busy handler for 10-50 ms.)
///
/// Started over, the file keeps its size (what the WAL reached under load, about twice the
/// limit). It is emptied (`TRUNCATE`, holding the lock) when it is over the limit and nothing
/// was written since the previous round, or when the WAL passed four times the limit (readers
/// of old snapshots kept SQLite from starting it over).
fn run_checkpoints(conn: &Connection, stop: &mpsc::Receiver<()>, write_side: &WriteSide) {
    let page_size: i64 = conn
        .query_row("PRAGMA page_size", [], |row| row.get(0))
        .unwrap_or(4096);
    let limit_frames = WAL_TRUNCATE_BYTES / (page_size + 24);
    let wal = conn.path().map(|db| format!("{db}-wal"));
    // The frames in the WAL; a busy database just means the next round does the work.
    let passive = || {
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            row.get::<_, i64>(1)
        })
        .unwrap_or(0)
    };
    let mut previous = 0;
    while let Err(mpsc::RecvTimeoutError::Timeout) =
        stop.recv_timeout(std::time::Duration::from_millis(100))
    {
        let frames = passive();
        let idle = frames == previous;
        previous = frames;
        let file_over = wal.as_ref().is_some_and(|wal| {
            std::fs::metadata(wal).is_ok_and(|m| m.len() > WAL_TRUNCATE_BYTES.unsigned_abs())
        });
        if (idle && file_over) || frames > 4 * limit_frames {
            let _writes_wait = write_side.lock();
            let _ = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
            previous = 0;
        } else if frames > limit_frames {
            passive();
            let _writes_wait = write_side.lock();
            passive();
        }
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
        let (ready_tx, ready_rx) = oneshot::channel::<StoreResult<Arc<WriteSide>>>();
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
                    executions::prepare_writer(&conn)?;
                    Ok(conn)
                })();
                match opened {
                    Ok(conn) => {
                        let side = Arc::new(WriteSide::new(conn));
                        let _ = ready_tx.send(Ok(Arc::clone(&side)));
                        run_writer(&side, &writer_rx, writer_options.sqlite_commit_spin);
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
        let write_side = ready_rx.await.map_err(|_| closed())??;
        let inline = options.sqlite_inline_writes
            && matches!(
                options.sqlite_synchronous,
                crate::SqliteSynchronous::Off | crate::SqliteSynchronous::Normal
            );

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
            let write_side = Arc::clone(&write_side);
            std::thread::Builder::new()
                .name("chatter-sqlite-checkpointer".into())
                .spawn(move || run_checkpoints(&conn, &stop_rx, &write_side))
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
            write_side,
            inline,
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
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| f(conn)))
                .unwrap_or_else(|_| Err(panicked()));
            let _ = tx.send(result);
        });
        (job, rx)
    }

    /// Commits one `commit_steps` call as a short write ([`SqliteStore::write_short`]); run
    /// on this thread, it reads the steps where they are (no copy).
    pub(crate) async fn commit(&self, steps: &[StepCommit]) -> StoreResult<Vec<StepReceipt>> {
        self.commit_then(steps, |_, receipts| Ok(receipts)).await
    }

    /// [`SqliteStore::commit`], then `then` with the receipts, in the same short write: both
    /// are written or neither (`finish_execution`). With no steps, `then` alone.
    pub(crate) async fn commit_then<T, F>(&self, steps: &[StepCommit], then: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, Vec<StepReceipt>) -> StoreResult<T> + Send + 'static,
    {
        self.write_around(|_| Ok(()), steps, None, then).await
    }

    /// `first`, then [`SqliteStore::commit`], then `then` with the receipts, in the same
    /// short write: all are written or none (`start_with_steps`, `start_and_finish`). With
    /// `numbers` (each step's `(last_seq, step_no)`), the steps are written with them instead
    /// of reserving numbers: `first` inserted their execution's row with its counters past
    /// them.
    pub(crate) async fn write_around<T, B, F>(
        &self,
        first: B,
        steps: &[StepCommit],
        numbers: Option<Vec<(i64, i64)>>,
        then: F,
    ) -> StoreResult<T>
    where
        T: Send + 'static,
        B: FnOnce(&Connection) -> StoreResult<()> + Send + 'static,
        F: FnOnce(&Connection, Vec<StepReceipt>) -> StoreResult<T> + Send + 'static,
    {
        let commit = move |conn: &Connection, steps: &[StepCommit]| {
            first(conn)?;
            let now = crate::common::now_ms();
            let receipts = match &numbers {
                _ if steps.is_empty() => Vec::new(),
                Some(numbers) => executions::commit_numbered(conn, steps, numbers, now)?,
                None => executions::commit_call(conn, steps, now)?,
            };
            then(conn, receipts)
        };
        if self.inline
            && let Some(conn) = self.write_side.try_lock()
        {
            return self.run_inline(conn, |conn| commit(conn, steps));
        }
        let steps = steps.to_vec();
        self.queue_write(move |conn| commit(conn, &steps)).await
    }

    /// Runs a short write (a few statements, no transaction of its own: it runs inside one)
    /// on this thread when the write connection is free, with the writes queued meanwhile in
    /// the same transaction; else queues it for whoever holds the connection next, which
    /// groups it with the others. For the writes on an execution's hot path only: a long one
    /// would hold a tokio worker.
    pub(crate) async fn write_short<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        if self.inline
            && let Some(conn) = self.write_side.try_lock()
        {
            return self.run_inline(conn, f);
        }
        self.queue_write(f).await
    }

    /// Runs `f` and up to `MAX_GROUP - 1` queued writes in one transaction on this thread.
    fn run_inline<T>(
        &self,
        mut conn: MutexGuard<'_, Connection>,
        f: impl FnOnce(&Connection) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let others = self.write_side.take(MAX_GROUP - 1);
        let mut f = Some(f);
        let mut result: Option<StoreResult<T>> = None;
        let mut own = |conn: &Connection| {
            let outcome = match f.take() {
                Some(f) => guarded(conn, f),
                None => Err(closed()),
            };
            let ok = outcome.is_ok();
            result = Some(outcome);
            ok
        };
        let group = WriteSide::run_group(
            &mut conn,
            &mut self.write_side.heads(),
            Some(&mut own),
            others,
        );
        self.release(conn);
        match (group, result) {
            // The write's own answer, unless the transaction around it failed.
            (Ok(()), Some(result)) | (Err(_), Some(result @ Err(_))) => result,
            (Err(error), _) => Err(error),
            (Ok(()), None) => Err(closed()),
        }
    }

    /// Queues a short write for whoever holds the connection next (the writer thread is
    /// told), and waits for its answer.
    async fn queue_write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, mut rx) = oneshot::channel();
        self.write_side.queue().push_back(pending_write(f, reply));
        self.writer.send(WriterJob::Drain).map_err(|_| closed())?;
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

    /// Gives the write connection up after an inline write; writes queued meanwhile go to
    /// the writer thread.
    fn release(&self, conn: MutexGuard<'_, Connection>) {
        drop(conn);
        if self.write_side.has_pending() {
            let _ = self.writer.send(WriterJob::Drain);
        }
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
    column: impl rusqlite::RowIndex,
) -> rusqlite::Result<serde_json::Value> {
    let text: String = row.get(column)?;
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// Graph texts at most this long are kept by [`graph_at`] and [`graph_text`].
const CACHED_GRAPH_MAX_BYTES: usize = 256 * 1024;
/// Graphs kept per thread by [`graph_at`] and [`graph_text`].
const CACHED_GRAPHS: usize = 4;

thread_local! {
    /// The graphs this thread wrote or read last, each with its JSON text, newest last.
    static GRAPHS: std::cell::RefCell<Vec<(Arc<serde_json::Value>, Arc<str>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Keeps `graph` and its text in this thread's [`GRAPHS`] (when the text is short enough).
fn keep_graph(graph: &Arc<serde_json::Value>, text: &Arc<str>) {
    if text.len() <= CACHED_GRAPH_MAX_BYTES {
        GRAPHS.with_borrow_mut(|graphs| {
            if graphs.len() >= CACHED_GRAPHS {
                graphs.remove(0);
            }
            graphs.push((graph.clone(), text.clone()));
        });
    }
}

/// The JSON text of an execution's graph, as written to its `graph` column. Every run of one
/// prepared workflow shares the same graph (`NewExecution::graph`): its text is written out
/// once per thread, not once per run (writing a 52-node graph was 5 % of the CPU of a durable
/// run of it). The cache holds the graph itself, so a hit is the very same value.
pub(crate) fn graph_text(graph: &Arc<serde_json::Value>) -> Arc<str> {
    let cached = GRAPHS.with_borrow(|graphs| {
        graphs
            .iter()
            .find(|(value, _)| Arc::ptr_eq(value, graph))
            .map(|(_, text)| text.clone())
    });
    if let Some(text) = cached {
        return text;
    }
    let text: Arc<str> = crate::common::to_json_text(graph.as_ref()).into();
    keep_graph(graph, &text);
    text
}

/// Reads an execution's `graph` column (nullable JSON text). An ad-hoc run's row is read back
/// when it ends, and every run of the same workflow stores the same graph text: an identical
/// text read or written lately on this thread gives its graph, shared, instead of being parsed
/// again (parsing a 52-node graph was 7 % of the CPU of a durable run of it).
pub(crate) fn graph_at(
    row: &rusqlite::Row<'_>,
    column: usize,
) -> rusqlite::Result<Option<Arc<serde_json::Value>>> {
    use rusqlite::types::ValueRef;
    let text = match row.get_ref(column)? {
        ValueRef::Null => return Ok(None),
        ValueRef::Text(text) => text,
        other => {
            return Err(rusqlite::Error::InvalidColumnType(
                column,
                "graph".into(),
                other.data_type(),
            ));
        }
    };
    let cached = GRAPHS.with_borrow(|graphs| {
        graphs
            .iter()
            .find(|(_, key)| key.as_bytes() == text)
            .map(|(value, _)| value.clone())
    });
    if let Some(value) = cached {
        return Ok(Some(value));
    }
    let value: Arc<serde_json::Value> = Arc::new(serde_json::from_slice(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, Box::new(e))
    })?);
    // It parsed, so it is UTF-8.
    if let Ok(text) = std::str::from_utf8(text) {
        keep_graph(&value, &Arc::from(text));
    }
    Ok(Some(value))
}

/// Reads a nullable JSON text column.
pub(crate) fn opt_json_at(
    row: &rusqlite::Row<'_>,
    column: impl rusqlite::RowIndex,
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
    column: impl rusqlite::RowIndex,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// A write inserting `value` into table `t`, failing afterwards when `fail`.
    fn insert(value: &'static str, fail: bool) -> impl FnOnce(&Connection) -> StoreResult<()> {
        move |conn: &Connection| {
            conn.execute("INSERT INTO t VALUES (?1)", [value]).db()?;
            if fail {
                return Err(Error::store(StoreErrorKind::InvalidInput, value));
            }
            Ok(())
        }
    }

    fn values(conn: &Connection) -> Vec<String> {
        conn.prepare("SELECT v FROM t ORDER BY v")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    /// `graph_at` reads what was stored, whether parsed or from its cache: another text reads
    /// as itself, NULL as `None`, and a text that is not JSON is an error (never a cached
    /// value). `graph_text` writes a graph as `to_json_text` does, from its cache too, and a
    /// text it wrote reads back as that very graph.
    #[test]
    fn graphs_read_and_write_the_same_parsed_or_cached() {
        let conn = Connection::open_in_memory().unwrap();
        let read = |text: Option<&str>| conn.query_row("SELECT ?1", [text], |row| graph_at(row, 0));
        let graph = r#"{"nodes":[{"id":"a","type":"start"}],"edges":[]}"#;
        let first = read(Some(graph)).unwrap().unwrap();
        assert_eq!(
            *first,
            serde_json::from_str::<serde_json::Value>(graph).unwrap()
        );
        let second = read(Some(graph)).unwrap().unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(&*graph_text(&second), graph);

        let written = Arc::new(serde_json::json!({"nodes": [{"id": "w", "type": "start"}]}));
        let text = graph_text(&written);
        assert_eq!(&*text, crate::common::to_json_text(&written));
        assert!(Arc::ptr_eq(&text, &graph_text(&written)));
        assert!(Arc::ptr_eq(&read(Some(&text)).unwrap().unwrap(), &written));
        // An equal graph that is not the same value is written out, the same.
        let equal = Arc::new((*written).clone());
        assert_eq!(graph_text(&equal), text);
        // Past the cache's size, the first graphs are written and read again, the same.
        for i in 0..CACHED_GRAPHS {
            graph_text(&Arc::new(serde_json::json!({ "n": i })));
        }
        assert_eq!(graph_text(&written), text);
        assert_eq!(*read(Some(graph)).unwrap().unwrap(), *first);
        let other = r#"{"nodes":[{"id":"b","type":"start"}],"edges":[]}"#;
        assert_eq!(read(Some(other)).unwrap().unwrap()["nodes"][0]["id"], "b");
        assert_eq!(read(None).unwrap(), None);
        assert!(read(Some(&graph[1..])).is_err());
        assert!(read(Some(&graph[1..])).is_err());
    }

    /// A group commits the writes that succeeded; a failed one rolls back alone (its savepoint)
    /// and gets its own error. A lone failed write leaves nothing, and no transaction open.
    #[test]
    fn a_group_keeps_its_good_writes_and_rolls_back_a_failed_one() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (v TEXT PRIMARY KEY)")
            .unwrap();
        let (b_tx, mut b_rx) = oneshot::channel();
        let (c_tx, mut c_rx) = oneshot::channel();
        let others = vec![
            pending_write(insert("b", true), b_tx),
            pending_write(insert("c", false), c_tx),
        ];
        let mut own_write = Some(insert("a", false));
        let mut own = |conn: &Connection| own_write.take().unwrap()(conn).is_ok();
        WriteSide::run_group(
            &mut conn,
            &mut executions::Heads::default(),
            Some(&mut own),
            others,
        )
        .unwrap();
        assert_eq!(values(&conn), ["a", "c"]);
        let b = b_rx.try_recv().unwrap().unwrap_err();
        assert_eq!(
            b.to_string(),
            Error::store(StoreErrorKind::InvalidInput, "b").to_string()
        );
        c_rx.try_recv().unwrap().unwrap();
        assert!(conn.is_autocommit());

        let (d_tx, mut d_rx) = oneshot::channel();
        WriteSide::run_group(
            &mut conn,
            &mut executions::Heads::default(),
            None,
            vec![pending_write(insert("d", true), d_tx)],
        )
        .unwrap();
        assert!(d_rx.try_recv().unwrap().is_err());
        assert_eq!(values(&conn), ["a", "c"]);
        assert!(conn.is_autocommit());
    }
}
