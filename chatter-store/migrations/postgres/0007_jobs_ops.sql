-- Chatter schema, part 7 (job queue operations): a `cancelled` status, a per-job timeout, the
-- owner, the execution a job runs, start/finish times and batches with a concurrency cap.

ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_status_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_status_check
    CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled'));

ALTER TABLE jobs
    ADD COLUMN owner_id          TEXT CHECK (owner_id IS NULL OR owner_id <> ''),
    ADD COLUMN timeout_ms        BIGINT CHECK (timeout_ms IS NULL OR timeout_ms > 0),
    ADD COLUMN execution_id      TEXT,
    ADD COLUMN batch_id          TEXT,
    ADD COLUMN batch_concurrency INTEGER CHECK (batch_concurrency IS NULL OR batch_concurrency >= 1),
    ADD COLUMN started_at        BIGINT,
    ADD COLUMN finished_at       BIGINT;

-- A user's jobs (listing) and their counts per status and priority (stats).
CREATE INDEX idx_jobs_owner ON jobs (owner_id, queue, status, priority);
-- Running jobs of a batch (the concurrency cap checked by claims).
CREATE INDEX idx_jobs_batch ON jobs (batch_id, status) WHERE batch_id IS NOT NULL;
