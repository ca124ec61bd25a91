-- Node runs are keyed by (execution, iteration, node, attempt), not (execution, node,
-- iteration, attempt): the runs a step commit writes then sit side by side in the b-tree.
--
-- The runs of one commit usually share their iteration (a loop body and the condition that
-- follows it; a model call and the tools it asked for in the same round), and each round
-- comes after the previous one. Keyed by node first, every node of a loop kept its own key
-- range, so a commit appended to two or more places of the execution's rows: two or more
-- b-tree leaves (WAL frames) per commit instead of one. Every lookup names all four columns,
-- and the reads order rows themselves, so nothing else changes.
--
-- SQLite cannot change a primary key in place: the table is rebuilt with the same columns, in
-- the same order, and its triggers (0008, 0010, 0011) are created again. The status check is
-- the same set of values written as comparisons: SQLite evaluates a CHECK's `IN` list of more
-- than two values by building a temporary b-tree of the list, on every insert (about 4 % of
-- the CPU of a durable run of no-op nodes).
CREATE TABLE workflow_node_runs_0012 (
    execution_id      TEXT NOT NULL REFERENCES workflow_executions (id) ON DELETE CASCADE,
    node_id           TEXT NOT NULL CHECK (node_id <> ''),
    iteration         INTEGER NOT NULL CHECK (iteration >= 0),
    attempt           INTEGER NOT NULL CHECK (attempt >= 1),
    status            TEXT NOT NULL
                      CHECK (status = 'running' OR status = 'completed' OR status = 'failed'
                             OR status = 'skipped' OR status = 'cancelled' OR status = 'waiting'),
    started_at        INTEGER NOT NULL,
    finished_at       INTEGER,
    duration_ms       INTEGER,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens INTEGER NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
    cost              REAL NOT NULL DEFAULT 0 CHECK (cost >= 0),
    error             TEXT,
    output            TEXT,
    step              INTEGER CHECK (step IS NULL OR step >= 1),
    route             TEXT CHECK (route IS NULL OR json_valid(route)),
    error_class       TEXT,
    idempotency_key   TEXT,
    output_seq        INTEGER CHECK (output_seq IS NULL OR output_seq >= 1),
    started_seq       INTEGER CHECK (started_seq IS NULL OR started_seq >= 1),
    kind              TEXT,
    completed_seq     INTEGER CHECK (completed_seq IS NULL OR completed_seq >= 1),
    delta             TEXT,
    delta_at          INTEGER,
    delta_ref_seq     INTEGER CHECK (delta_ref_seq IS NULL OR delta_ref_seq >= 1),
    PRIMARY KEY (execution_id, iteration, node_id, attempt)
) WITHOUT ROWID;

INSERT INTO workflow_node_runs_0012 SELECT * FROM workflow_node_runs;
DROP TABLE workflow_node_runs;
ALTER TABLE workflow_node_runs_0012 RENAME TO workflow_node_runs;

CREATE TRIGGER workflow_node_runs_keep_started
BEFORE UPDATE OF started_seq ON workflow_node_runs
WHEN old.started_seq IS NOT NULL AND new.started_seq IS NOT old.started_seq
BEGIN
    INSERT INTO workflow_events (execution_id, seq, ts, event_type, payload)
    VALUES (old.execution_id, old.started_seq, old.started_at, 'node_started',
            json_object('attempt', old.attempt, 'node_id', old.node_id, 'kind', old.kind,
                        'iteration', old.iteration));
END;

CREATE TRIGGER workflow_node_runs_keep_completed
BEFORE UPDATE OF completed_seq ON workflow_node_runs
WHEN old.completed_seq IS NOT NULL AND new.completed_seq IS NOT old.completed_seq
BEGIN
    INSERT INTO workflow_events (execution_id, seq, ts, event_type, payload)
    VALUES (old.execution_id, old.completed_seq, old.finished_at, 'node_completed',
            json_object('node_id', old.node_id, 'iteration', old.iteration,
                        'duration_ms', old.duration_ms, 'output', json(old.output)));
END;

CREATE TRIGGER workflow_node_runs_keep_delta
BEFORE UPDATE OF delta ON workflow_node_runs
WHEN old.delta IS NOT NULL AND new.step IS NOT old.step
BEGIN
    INSERT INTO workflow_checkpoints (execution_id, step, kind, node_id, state, created_at, ref_seq)
    VALUES (old.execution_id, old.step, 'delta', old.node_id, old.delta,
            COALESCE(old.delta_at, old.finished_at), old.delta_ref_seq);
END;
