-- Compact steps (issue 5, item 10): what one step writes is stored once, not two or three
-- times. Old rows (these columns NULL) read as before.
--
-- A step's node run output is usually the `output` of its own `node_completed` event, which
-- is stored anyway (event rows are never updated, and deleted only with their execution).
-- Such a node run keeps that event's sequence number in `output_seq` and leaves `output`
-- NULL; the store reads the output back from the event.
ALTER TABLE workflow_node_runs ADD COLUMN output_seq INTEGER CHECK (output_seq IS NULL OR output_seq >= 1);

-- A node run's `node_started` event, when it is committed with the run and holds nothing but
-- what the row holds (node, kind, iteration, attempt; its time is `started_at`), is not
-- stored as an event row: the run keeps its sequence number and the node's kind, and the
-- store rebuilds the event when events are read.
ALTER TABLE workflow_node_runs ADD COLUMN started_seq INTEGER CHECK (started_seq IS NULL OR started_seq >= 1);
ALTER TABLE workflow_node_runs ADD COLUMN kind TEXT;

-- A node run is written again under the same key when an approval that waited is decided:
-- the earlier `node_started` event it held becomes an event row first, so none is lost.
CREATE TRIGGER workflow_node_runs_keep_started
BEFORE UPDATE OF started_seq ON workflow_node_runs
WHEN old.started_seq IS NOT NULL AND new.started_seq IS NOT old.started_seq
BEGIN
    INSERT INTO workflow_events (execution_id, seq, ts, event_type, payload)
    VALUES (old.execution_id, old.started_seq, old.started_at, 'node_started',
            json_object('attempt', old.attempt, 'node_id', old.node_id, 'kind', old.kind,
                        'iteration', old.iteration));
END;

-- A delta whose appended messages repeat the node's reply (`output.content` of event
-- `ref_seq`) stores those message contents as JSON null (a message's content is otherwise
-- always a string); the store puts the reply back when it reads the delta.
ALTER TABLE workflow_checkpoints ADD COLUMN ref_seq INTEGER CHECK (ref_seq IS NULL OR ref_seq >= 1);
