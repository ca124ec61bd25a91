-- Chatter schema, part 1: definitions, templates, executions, conversations, documents,
-- preferences. Timestamps are milliseconds since the Unix epoch (UTC), as BIGINT.

CREATE TABLE workflow_definitions (
    id          TEXT PRIMARY KEY CHECK (id <> ''),
    owner_id    TEXT NOT NULL CHECK (owner_id <> ''),
    name        TEXT NOT NULL CHECK (name <> ''),
    description TEXT,
    definition  JSONB NOT NULL,
    version     BIGINT NOT NULL DEFAULT 1 CHECK (version >= 1),
    is_public   BOOLEAN NOT NULL DEFAULT FALSE,
    tags        JSONB NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(tags) = 'array'),
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX idx_workflow_definitions_owner_created ON workflow_definitions (owner_id, created_at);
CREATE INDEX idx_workflow_definitions_public_created ON workflow_definitions (is_public, created_at);

CREATE TABLE workflow_templates (
    id          TEXT PRIMARY KEY CHECK (id <> ''),
    owner_id    TEXT,
    name        TEXT NOT NULL CHECK (name <> ''),
    description TEXT,
    category    TEXT NOT NULL DEFAULT 'general',
    spec        JSONB NOT NULL,
    tags        JSONB NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(tags) = 'array'),
    version     BIGINT NOT NULL DEFAULT 1 CHECK (version >= 1),
    is_builtin  BOOLEAN NOT NULL DEFAULT FALSE,
    is_public   BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE UNIQUE INDEX idx_workflow_templates_owner_name ON workflow_templates (COALESCE(owner_id, ''), name);
CREATE INDEX idx_workflow_templates_category ON workflow_templates (category, name);

CREATE TABLE template_analytics (
    template_id       TEXT PRIMARY KEY REFERENCES workflow_templates (id) ON DELETE CASCADE,
    usage_count       BIGINT NOT NULL DEFAULT 0 CHECK (usage_count >= 0),
    success_count     BIGINT NOT NULL DEFAULT 0 CHECK (success_count >= 0),
    failure_count     BIGINT NOT NULL DEFAULT 0 CHECK (failure_count >= 0),
    total_tokens      BIGINT NOT NULL DEFAULT 0,
    total_cost        DOUBLE PRECISION NOT NULL DEFAULT 0,
    total_duration_ms BIGINT NOT NULL DEFAULT 0,
    last_used_at      BIGINT
);

CREATE TABLE conversations (
    id            TEXT PRIMARY KEY CHECK (id <> ''),
    user_id       TEXT NOT NULL CHECK (user_id <> ''),
    title         TEXT,
    status        TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'archived', 'deleted')),
    metadata      JSONB NOT NULL DEFAULT '{}',
    message_count BIGINT NOT NULL DEFAULT 0 CHECK (message_count >= 0),
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE INDEX idx_conversations_user_created ON conversations (user_id, created_at);
CREATE INDEX idx_conversations_status_created ON conversations (status, created_at);

CREATE TABLE messages (
    id              TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq             BIGINT NOT NULL CHECK (seq >= 1),
    role            TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    content         TEXT NOT NULL,
    metadata        JSONB NOT NULL DEFAULT '{}',
    token_count     BIGINT CHECK (token_count IS NULL OR token_count >= 0),
    execution_id    TEXT,
    created_at      BIGINT NOT NULL,
    UNIQUE (conversation_id, seq)
);
CREATE INDEX idx_messages_conversation_created ON messages (conversation_id, created_at);

CREATE TABLE workflow_executions (
    id                TEXT PRIMARY KEY CHECK (id <> ''),
    owner_id          TEXT NOT NULL CHECK (owner_id <> ''),
    definition_id     TEXT REFERENCES workflow_definitions (id) ON DELETE SET NULL,
    template_id       TEXT REFERENCES workflow_templates (id) ON DELETE SET NULL,
    kind              TEXT NOT NULL CHECK (kind IN ('definition', 'template', 'adhoc', 'chat')),
    status            TEXT NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'running', 'waiting', 'completed', 'failed', 'cancelled')),
    input             JSONB NOT NULL DEFAULT '{}',
    params            JSONB NOT NULL DEFAULT '{}',
    output            JSONB,
    response          TEXT,
    error             TEXT,
    prompt_tokens     BIGINT NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens BIGINT NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
    total_tokens      BIGINT NOT NULL DEFAULT 0 CHECK (total_tokens >= 0),
    cost              DOUBLE PRECISION NOT NULL DEFAULT 0 CHECK (cost >= 0),
    conversation_id   TEXT REFERENCES conversations (id) ON DELETE SET NULL,
    last_event_seq    BIGINT NOT NULL DEFAULT 0 CHECK (last_event_seq >= 0),
    step_count        BIGINT NOT NULL DEFAULT 0 CHECK (step_count >= 0),
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    started_at        BIGINT,
    finished_at       BIGINT,
    duration_ms       BIGINT
);
CREATE INDEX idx_workflow_executions_owner_created ON workflow_executions (owner_id, created_at);
CREATE INDEX idx_workflow_executions_definition_created ON workflow_executions (definition_id, created_at);
CREATE INDEX idx_workflow_executions_template_created ON workflow_executions (template_id, created_at);
CREATE INDEX idx_workflow_executions_status_created ON workflow_executions (status, created_at);
CREATE INDEX idx_workflow_executions_created ON workflow_executions (created_at);
CREATE INDEX idx_workflow_executions_conversation ON workflow_executions (conversation_id, created_at);

CREATE TABLE workflow_node_runs (
    execution_id      TEXT NOT NULL REFERENCES workflow_executions (id) ON DELETE CASCADE,
    node_id           TEXT NOT NULL CHECK (node_id <> ''),
    iteration         BIGINT NOT NULL CHECK (iteration >= 0),
    attempt           BIGINT NOT NULL CHECK (attempt >= 1),
    status            TEXT NOT NULL
                      CHECK (status IN ('running', 'completed', 'failed', 'skipped', 'cancelled', 'waiting')),
    started_at        BIGINT NOT NULL,
    finished_at       BIGINT,
    duration_ms       BIGINT,
    prompt_tokens     BIGINT NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens BIGINT NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
    cost              DOUBLE PRECISION NOT NULL DEFAULT 0 CHECK (cost >= 0),
    error             TEXT,
    output            JSONB,
    PRIMARY KEY (execution_id, node_id, iteration, attempt)
);
-- The primary key (execution_id, ...) serves the per-execution reads; no second index, so a
-- step commit writes fewer pages.

CREATE TABLE workflow_events (
    execution_id TEXT NOT NULL REFERENCES workflow_executions (id) ON DELETE CASCADE,
    seq          BIGINT NOT NULL CHECK (seq >= 1),
    ts           BIGINT NOT NULL,
    event_type   TEXT NOT NULL CHECK (event_type <> ''),
    payload      JSONB NOT NULL,
    PRIMARY KEY (execution_id, seq)
);

CREATE TABLE workflow_checkpoints (
    execution_id TEXT NOT NULL REFERENCES workflow_executions (id) ON DELETE CASCADE,
    step         BIGINT NOT NULL CHECK (step >= 1),
    kind         TEXT NOT NULL CHECK (kind IN ('snapshot', 'delta')),
    node_id      TEXT,
    state        JSONB NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (execution_id, step, kind)
);

CREATE TABLE documents (
    id          TEXT PRIMARY KEY CHECK (id <> ''),
    owner_id    TEXT NOT NULL CHECK (owner_id <> ''),
    title       TEXT NOT NULL CHECK (title <> ''),
    source      TEXT,
    status      TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'processing', 'ready', 'failed')),
    metadata    JSONB NOT NULL DEFAULT '{}',
    chunk_count BIGINT NOT NULL DEFAULT 0 CHECK (chunk_count >= 0),
    char_count  BIGINT NOT NULL DEFAULT 0 CHECK (char_count >= 0),
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX idx_documents_owner_status_created ON documents (owner_id, status, created_at);

CREATE TABLE document_chunks (
    id           BIGSERIAL PRIMARY KEY,
    document_id  TEXT NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    chunk_index  BIGINT NOT NULL CHECK (chunk_index >= 0),
    start_offset BIGINT NOT NULL CHECK (start_offset >= 0),
    content      TEXT NOT NULL,
    content_tsv  TSVECTOR GENERATED ALWAYS AS (to_tsvector('english', content)) STORED,
    UNIQUE (document_id, chunk_index)
);
CREATE INDEX idx_document_chunks_tsv ON document_chunks USING GIN (content_tsv);

CREATE TABLE user_preferences (
    user_id         TEXT NOT NULL CHECK (user_id <> ''),
    preference_type TEXT NOT NULL CHECK (preference_type <> ''),
    value           JSONB NOT NULL,
    version         BIGINT NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (user_id, preference_type)
);
