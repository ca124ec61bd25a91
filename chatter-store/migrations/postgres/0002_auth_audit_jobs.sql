-- Chatter schema, part 2: users, API keys, roles, the append-only audit log, the job queue.

CREATE TABLE users (
    id           TEXT PRIMARY KEY CHECK (id <> ''),
    email        TEXT NOT NULL CHECK (email <> ''),
    display_name TEXT,
    roles        JSONB NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(roles) = 'array'),
    is_active    BOOLEAN NOT NULL DEFAULT TRUE,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE UNIQUE INDEX idx_users_email ON users (lower(email));

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    key_hash     TEXT NOT NULL UNIQUE CHECK (key_hash <> ''),
    scopes       JSONB NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(scopes) = 'array'),
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT,
    expires_at   BIGINT,
    revoked_at   BIGINT
);
CREATE INDEX idx_api_keys_user ON api_keys (user_id, created_at);

CREATE TABLE roles (
    name        TEXT PRIMARY KEY CHECK (name <> ''),
    description TEXT,
    permissions JSONB NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(permissions) = 'array')
);

CREATE TABLE audit_logs (
    id            BIGSERIAL PRIMARY KEY,
    ts            BIGINT NOT NULL,
    actor_id      TEXT,
    action        TEXT NOT NULL CHECK (action <> ''),
    resource_type TEXT NOT NULL CHECK (resource_type <> ''),
    resource_id   TEXT,
    outcome       TEXT NOT NULL CHECK (outcome <> ''),
    ip_address    TEXT,
    details       JSONB NOT NULL DEFAULT '{}'
);
CREATE INDEX idx_audit_logs_actor ON audit_logs (actor_id, id);
CREATE INDEX idx_audit_logs_resource ON audit_logs (resource_type, resource_id, id);
CREATE INDEX idx_audit_logs_ts ON audit_logs (ts);
CREATE FUNCTION audit_logs_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_logs is append-only' USING ERRCODE = 'restrict_violation';
END;
$$;
CREATE TRIGGER audit_logs_no_update_delete BEFORE UPDATE OR DELETE ON audit_logs
    FOR EACH ROW EXECUTE FUNCTION audit_logs_append_only();
CREATE TRIGGER audit_logs_no_truncate BEFORE TRUNCATE ON audit_logs
    FOR EACH STATEMENT EXECUTE FUNCTION audit_logs_append_only();

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY CHECK (id <> ''),
    queue            TEXT NOT NULL CHECK (queue <> ''),
    kind             TEXT NOT NULL CHECK (kind <> ''),
    payload          JSONB NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 0,
    status           TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'completed', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts     INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    run_at           BIGINT NOT NULL,
    lease_owner      TEXT,
    lease_expires_at BIGINT,
    last_error       TEXT,
    result           JSONB,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX idx_jobs_claim ON jobs (queue, status, priority DESC, run_at, id);
CREATE INDEX idx_jobs_queue_created ON jobs (queue, created_at, id);
