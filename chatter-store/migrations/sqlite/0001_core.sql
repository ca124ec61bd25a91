-- Chatter schema, part 1: definitions, templates, executions, conversations, documents,
-- preferences. Timestamps are milliseconds since the Unix epoch (UTC). JSON columns are TEXT
-- checked with json_valid, except on the per-step hot path (node run output, event payload,
-- checkpoint state), which the store always writes from serialised JSON: re-parsing a large
-- snapshot on every commit would cost more than the rest of the commit.

CREATE TABLE workflow_definitions (
    id          TEXT PRIMARY KEY NOT NULL CHECK (id <> ''),
    owner_id    TEXT NOT NULL CHECK (owner_id <> ''),
    name        TEXT NOT NULL CHECK (name <> ''),
    description TEXT,
    definition  TEXT NOT NULL CHECK (json_valid(definition)),
    version     INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1),
    is_public   INTEGER NOT NULL DEFAULT 0 CHECK (is_public IN (0, 1)),
    tags        TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(tags) AND json_type(tags) = 'array'),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX idx_workflow_definitions_owner_created ON workflow_definitions (owner_id, created_at);
CREATE INDEX idx_workflow_definitions_public_created ON workflow_definitions (is_public, created_at);

CREATE TABLE workflow_templates (
    id          TEXT PRIMARY KEY NOT NULL CHECK (id <> ''),
    owner_id    TEXT,
    name        TEXT NOT NULL CHECK (name <> ''),
    description TEXT,
    category    TEXT NOT NULL DEFAULT 'general',
    spec        TEXT NOT NULL CHECK (json_valid(spec)),
    tags        TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(tags) AND json_type(tags) = 'array'),
    version     INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1),
    is_builtin  INTEGER NOT NULL DEFAULT 0 CHECK (is_builtin IN (0, 1)),
    is_public   INTEGER NOT NULL DEFAULT 0 CHECK (is_public IN (0, 1)),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE UNIQUE INDEX idx_workflow_templates_owner_name ON workflow_templates (COALESCE(owner_id, ''), name);
CREATE INDEX idx_workflow_templates_category ON workflow_templates (category, name);

CREATE TABLE template_analytics (
    template_id       TEXT PRIMARY KEY NOT NULL REFERENCES workflow_templates (id) ON DELETE CASCADE,
    usage_count       INTEGER NOT NULL DEFAULT 0 CHECK (usage_count >= 0),
    success_count     INTEGER NOT NULL DEFAULT 0 CHECK (success_count >= 0),
    failure_count     INTEGER NOT NULL DEFAULT 0 CHECK (failure_count >= 0),
    total_tokens      INTEGER NOT NULL DEFAULT 0,
    total_cost        REAL NOT NULL DEFAULT 0,
    total_duration_ms INTEGER NOT NULL DEFAULT 0,
    last_used_at      INTEGER
);

CREATE TABLE conversations (
    id            TEXT PRIMARY KEY NOT NULL CHECK (id <> ''),
    user_id       TEXT NOT NULL CHECK (user_id <> ''),
    title         TEXT,
    status        TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'archived', 'deleted')),
    metadata      TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    message_count INTEGER NOT NULL DEFAULT 0 CHECK (message_count >= 0),
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX idx_conversations_user_created ON conversations (user_id, created_at);
CREATE INDEX idx_conversations_status_created ON conversations (status, created_at);

CREATE TABLE messages (
    id              TEXT PRIMARY KEY NOT NULL,
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq             INTEGER NOT NULL CHECK (seq >= 1),
    role            TEXT NOT NULL CHECK (role IN ('system', 'user', 'assistant', 'tool')),
    content         TEXT NOT NULL,
    metadata        TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    token_count     INTEGER CHECK (token_count IS NULL OR token_count >= 0),
    execution_id    TEXT,
    created_at      INTEGER NOT NULL,
    UNIQUE (conversation_id, seq)
);
CREATE INDEX idx_messages_conversation_created ON messages (conversation_id, created_at);

CREATE TABLE workflow_executions (
    id                TEXT PRIMARY KEY NOT NULL CHECK (id <> ''),
    owner_id          TEXT NOT NULL CHECK (owner_id <> ''),
    definition_id     TEXT REFERENCES workflow_definitions (id) ON DELETE SET NULL,
    template_id       TEXT REFERENCES workflow_templates (id) ON DELETE SET NULL,
    kind              TEXT NOT NULL CHECK (kind IN ('definition', 'template', 'adhoc', 'chat')),
    status            TEXT NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'running', 'waiting', 'completed', 'failed', 'cancelled')),
    input             TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(input)),
    params            TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(params)),
    output            TEXT CHECK (output IS NULL OR json_valid(output)),
    response          TEXT,
    error             TEXT,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens INTEGER NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
    total_tokens      INTEGER NOT NULL DEFAULT 0 CHECK (total_tokens >= 0),
    cost              REAL NOT NULL DEFAULT 0 CHECK (cost >= 0),
    conversation_id   TEXT REFERENCES conversations (id) ON DELETE SET NULL,
    last_event_seq    INTEGER NOT NULL DEFAULT 0 CHECK (last_event_seq >= 0),
    step_count        INTEGER NOT NULL DEFAULT 0 CHECK (step_count >= 0),
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    started_at        INTEGER,
    finished_at       INTEGER,
    duration_ms       INTEGER
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
    iteration         INTEGER NOT NULL CHECK (iteration >= 0),
    attempt           INTEGER NOT NULL CHECK (attempt >= 1),
    status            TEXT NOT NULL
                      CHECK (status IN ('running', 'completed', 'failed', 'skipped', 'cancelled', 'waiting')),
    started_at        INTEGER NOT NULL,
    finished_at       INTEGER,
    duration_ms       INTEGER,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens INTEGER NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
    cost              REAL NOT NULL DEFAULT 0 CHECK (cost >= 0),
    error             TEXT,
    output            TEXT,
    PRIMARY KEY (execution_id, node_id, iteration, attempt)
) WITHOUT ROWID;
-- The primary key (execution_id, ...) serves the per-execution reads; no second index, so a
-- step commit writes fewer pages.

CREATE TABLE workflow_events (
    execution_id TEXT NOT NULL REFERENCES workflow_executions (id) ON DELETE CASCADE,
    seq          INTEGER NOT NULL CHECK (seq >= 1),
    ts           INTEGER NOT NULL,
    event_type   TEXT NOT NULL CHECK (event_type <> ''),
    payload      TEXT NOT NULL,
    PRIMARY KEY (execution_id, seq)
) WITHOUT ROWID;

CREATE TABLE workflow_checkpoints (
    execution_id TEXT NOT NULL REFERENCES workflow_executions (id) ON DELETE CASCADE,
    step         INTEGER NOT NULL CHECK (step >= 1),
    kind         TEXT NOT NULL CHECK (kind IN ('snapshot', 'delta')),
    node_id      TEXT,
    state        TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (execution_id, step, kind)
) WITHOUT ROWID;

CREATE TABLE documents (
    id          TEXT PRIMARY KEY NOT NULL CHECK (id <> ''),
    owner_id    TEXT NOT NULL CHECK (owner_id <> ''),
    title       TEXT NOT NULL CHECK (title <> ''),
    source      TEXT,
    status      TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'processing', 'ready', 'failed')),
    metadata    TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata)),
    chunk_count INTEGER NOT NULL DEFAULT 0 CHECK (chunk_count >= 0),
    char_count  INTEGER NOT NULL DEFAULT 0 CHECK (char_count >= 0),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX idx_documents_owner_status_created ON documents (owner_id, status, created_at);

CREATE TABLE document_chunks (
    id           INTEGER PRIMARY KEY,
    document_id  TEXT NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    chunk_index  INTEGER NOT NULL CHECK (chunk_index >= 0),
    start_offset INTEGER NOT NULL CHECK (start_offset >= 0),
    content      TEXT NOT NULL,
    UNIQUE (document_id, chunk_index)
);

-- Full-text index over chunk contents (external content table kept in sync by triggers).
CREATE VIRTUAL TABLE document_chunks_fts USING fts5 (
    content,
    content = 'document_chunks',
    content_rowid = 'id',
    tokenize = 'porter unicode61'
);
CREATE TRIGGER document_chunks_ai AFTER INSERT ON document_chunks BEGIN
    INSERT INTO document_chunks_fts (rowid, content) VALUES (new.id, new.content);
END;
CREATE TRIGGER document_chunks_ad AFTER DELETE ON document_chunks BEGIN
    INSERT INTO document_chunks_fts (document_chunks_fts, rowid, content) VALUES ('delete', old.id, old.content);
END;
CREATE TRIGGER document_chunks_au AFTER UPDATE ON document_chunks BEGIN
    INSERT INTO document_chunks_fts (document_chunks_fts, rowid, content) VALUES ('delete', old.id, old.content);
    INSERT INTO document_chunks_fts (rowid, content) VALUES (new.id, new.content);
END;

CREATE TABLE user_preferences (
    user_id         TEXT NOT NULL CHECK (user_id <> ''),
    preference_type TEXT NOT NULL CHECK (preference_type <> ''),
    value           TEXT NOT NULL CHECK (json_valid(value)),
    version         INTEGER NOT NULL DEFAULT 1 CHECK (version >= 1),
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (user_id, preference_type)
);
