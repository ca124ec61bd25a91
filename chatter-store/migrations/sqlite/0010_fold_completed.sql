-- A step's `node_completed` event, when it is committed with its node run and holds nothing
-- but what the row holds (node, iteration, duration, output; its time is `finished_at`), is
-- not stored as an event row either: the node run keeps its sequence number
-- (`completed_seq`) and its output in place, and the store rebuilds the event when events are
-- read. A step of a node that does little (a no-op, a tool with a short answer) so writes no
-- event row at all: one page less in the WAL per commit. (A model's long reply that the
-- step's delta repeats stays in its event row, referred to as before: see 0008.)
ALTER TABLE workflow_node_runs ADD COLUMN completed_seq INTEGER
    CHECK (completed_seq IS NULL OR completed_seq >= 1);

-- A node run written again under the same key keeps the `node_completed` event it held as an
-- event row first, so none is lost (as `workflow_node_runs_keep_started` does for
-- `node_started`).
CREATE TRIGGER workflow_node_runs_keep_completed
BEFORE UPDATE OF completed_seq ON workflow_node_runs
WHEN old.completed_seq IS NOT NULL AND new.completed_seq IS NOT old.completed_seq
BEGIN
    INSERT INTO workflow_events (execution_id, seq, ts, event_type, payload)
    VALUES (old.execution_id, old.completed_seq, old.finished_at, 'node_completed',
            json_object('node_id', old.node_id, 'iteration', old.iteration,
                        'duration_ms', old.duration_ms, 'output', json(old.output)));
END;
