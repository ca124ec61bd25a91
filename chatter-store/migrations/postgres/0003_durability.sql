-- Durable execution (DESIGN §8): replay data on node runs, leases and wake-up times on
-- executions, the graph of ad-hoc executions (so they can be resumed).

-- The step a node run was committed in (NULL for an intent: a run started, not yet ended), how
-- it routed (NULL: by its edges) and the class of its error: what a resume needs to replay it.
ALTER TABLE workflow_node_runs ADD COLUMN step BIGINT CHECK (step IS NULL OR step >= 1);
ALTER TABLE workflow_node_runs ADD COLUMN route JSONB;
ALTER TABLE workflow_node_runs ADD COLUMN error_class TEXT;
ALTER TABLE workflow_node_runs ADD COLUMN idempotency_key TEXT;

-- Who runs an execution, until when (ms); a running execution whose lease expired is resumed.
ALTER TABLE workflow_executions ADD COLUMN lease_owner TEXT;
ALTER TABLE workflow_executions ADD COLUMN lease_expires_at BIGINT;
-- When a waiting execution must be woken (an approval's timeout).
ALTER TABLE workflow_executions ADD COLUMN wake_at BIGINT;
-- The graph of an execution that has no stored source (ad-hoc, chat).
ALTER TABLE workflow_executions ADD COLUMN graph JSONB;

-- The resumer's scans: running executions by lease expiry, waiting ones by wake-up time.
CREATE INDEX idx_workflow_executions_status_lease ON workflow_executions (status, lease_expires_at);
CREATE INDEX idx_workflow_executions_status_wake ON workflow_executions (status, wake_at);
