-- A step's state delta is stored in its node run row, not as a row of `workflow_checkpoints`:
-- a step that changes the state (a model's reply, a tool's result, a variable set) then writes
-- one table fewer, so one to two pages less to the WAL per commit (a leaf of the checkpoints
-- b-tree, and the siblings SQLite rebalances when that leaf fills). The store rebuilds the
-- checkpoint (execution, the run's `step`, kind `delta`, its node) when checkpoints are read.
-- Its time is `delta_at`, or the run's `finished_at` when `delta_at` is NULL (the usual case:
-- the step is committed within the millisecond its node ended). `delta_ref_seq` is what
-- `workflow_checkpoints.ref_seq` is (0008): the event whose reply the delta's messages repeat.
-- Snapshots stay rows of `workflow_checkpoints`; deltas written before this migration too.
ALTER TABLE workflow_node_runs ADD COLUMN delta TEXT;
ALTER TABLE workflow_node_runs ADD COLUMN delta_at INTEGER;
ALTER TABLE workflow_node_runs ADD COLUMN delta_ref_seq INTEGER
    CHECK (delta_ref_seq IS NULL OR delta_ref_seq >= 1);

-- A node run written again under the same key for a later step (a decided approval) keeps the
-- delta of its earlier step as a checkpoint row first, so none is lost (as
-- `workflow_node_runs_keep_completed` does for its `node_completed` event).
CREATE TRIGGER workflow_node_runs_keep_delta
BEFORE UPDATE OF delta ON workflow_node_runs
WHEN old.delta IS NOT NULL AND new.step IS NOT old.step
BEGIN
    INSERT INTO workflow_checkpoints (execution_id, step, kind, node_id, state, created_at, ref_seq)
    VALUES (old.execution_id, old.step, 'delta', old.node_id, old.delta,
            COALESCE(old.delta_at, old.finished_at), old.delta_ref_seq);
END;
