-- Fewer index writes per execution. Every index of `workflow_executions` is written when a
-- run starts, and those holding `status` or the lease again when it ends; on a busy server
-- those page writes were most of the cost of starting a run.
--
-- * The resumer's scans (running executions by lease expiry, waiting ones by wake-up time)
--   are served by `idx_workflow_executions_status_created` (`status = ?`): only running and
--   waiting rows are read, so the two indexes of 0003 go.
-- * Only executions of a definition, a template or a conversation are looked up by it (the
--   listing filters, and the `ON DELETE SET NULL` of those keys): rows without one are left
--   out of its index.
DROP INDEX idx_workflow_executions_status_lease;
DROP INDEX idx_workflow_executions_status_wake;
DROP INDEX idx_workflow_executions_definition_created;
CREATE INDEX idx_workflow_executions_definition_created ON workflow_executions (definition_id, created_at)
    WHERE definition_id IS NOT NULL;
DROP INDEX idx_workflow_executions_template_created;
CREATE INDEX idx_workflow_executions_template_created ON workflow_executions (template_id, created_at)
    WHERE template_id IS NOT NULL;
DROP INDEX idx_workflow_executions_conversation;
CREATE INDEX idx_workflow_executions_conversation ON workflow_executions (conversation_id, created_at)
    WHERE conversation_id IS NOT NULL;
