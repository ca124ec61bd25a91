-- Chatter schema, part 7 (job queue operations): a `cancelled` status, a per-job timeout, the
-- owner, the execution a job runs, start/finish times and batches with a concurrency cap.
-- SQLite cannot change a CHECK constraint in place: the table is rebuilt, keeping its rows.

CREATE TABLE jobs_new (
    id                TEXT PRIMARY KEY NOT NULL CHECK (id <> ''),
    queue             TEXT NOT NULL CHECK (queue <> ''),
    kind              TEXT NOT NULL CHECK (kind <> ''),
    payload           TEXT NOT NULL CHECK (json_valid(payload)),
    priority          INTEGER NOT NULL DEFAULT 0,
    status            TEXT NOT NULL DEFAULT 'queued'
                      CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
    attempts          INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts      INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    run_at            INTEGER NOT NULL,
    lease_owner       TEXT,
    lease_expires_at  INTEGER,
    last_error        TEXT,
    result            TEXT CHECK (result IS NULL OR json_valid(result)),
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    owner_id          TEXT CHECK (owner_id IS NULL OR owner_id <> ''),
    timeout_ms        INTEGER CHECK (timeout_ms IS NULL OR timeout_ms > 0),
    execution_id      TEXT,
    batch_id          TEXT,
    batch_concurrency INTEGER CHECK (batch_concurrency IS NULL OR batch_concurrency >= 1),
    started_at        INTEGER,
    finished_at       INTEGER
);

INSERT INTO jobs_new (id, queue, kind, payload, priority, status, attempts, max_attempts, run_at,
                      lease_owner, lease_expires_at, last_error, result, created_at, updated_at)
SELECT id, queue, kind, payload, priority, status, attempts, max_attempts, run_at,
       lease_owner, lease_expires_at, last_error, result, created_at, updated_at
FROM jobs;

DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;

CREATE INDEX idx_jobs_claim ON jobs (queue, status, priority DESC, run_at, id);
CREATE INDEX idx_jobs_queue_created ON jobs (queue, created_at, id);
-- A user's jobs (listing) and their counts per status and priority (stats).
CREATE INDEX idx_jobs_owner ON jobs (owner_id, queue, status, priority);
-- Running jobs of a batch (the concurrency cap checked by claims).
CREATE INDEX idx_jobs_batch ON jobs (batch_id, status) WHERE batch_id IS NOT NULL;
