-- Chatter schema, part 2: users, API keys, roles, the append-only audit log, the job queue.

CREATE TABLE users (
    id           TEXT PRIMARY KEY NOT NULL CHECK (id <> ''),
    email        TEXT NOT NULL COLLATE NOCASE CHECK (email <> ''),
    display_name TEXT,
    roles        TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(roles) AND json_type(roles) = 'array'),
    is_active    INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE UNIQUE INDEX idx_users_email ON users (email COLLATE NOCASE);

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY NOT NULL,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL,
    key_hash     TEXT NOT NULL UNIQUE CHECK (key_hash <> ''),
    scopes       TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(scopes) AND json_type(scopes) = 'array'),
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    expires_at   INTEGER,
    revoked_at   INTEGER
);
CREATE INDEX idx_api_keys_user ON api_keys (user_id, created_at);

CREATE TABLE roles (
    name        TEXT PRIMARY KEY NOT NULL CHECK (name <> ''),
    description TEXT,
    permissions TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(permissions) AND json_type(permissions) = 'array')
);

CREATE TABLE audit_logs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    ts            INTEGER NOT NULL,
    actor_id      TEXT,
    action        TEXT NOT NULL CHECK (action <> ''),
    resource_type TEXT NOT NULL CHECK (resource_type <> ''),
    resource_id   TEXT,
    outcome       TEXT NOT NULL CHECK (outcome <> ''),
    ip_address    TEXT,
    details       TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(details))
);
CREATE INDEX idx_audit_logs_actor ON audit_logs (actor_id, id);
CREATE INDEX idx_audit_logs_resource ON audit_logs (resource_type, resource_id, id);
CREATE INDEX idx_audit_logs_ts ON audit_logs (ts);
CREATE TRIGGER audit_logs_no_update BEFORE UPDATE ON audit_logs BEGIN
    SELECT RAISE(ABORT, 'audit_logs is append-only');
END;
CREATE TRIGGER audit_logs_no_delete BEFORE DELETE ON audit_logs BEGIN
    SELECT RAISE(ABORT, 'audit_logs is append-only');
END;

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY NOT NULL CHECK (id <> ''),
    queue            TEXT NOT NULL CHECK (queue <> ''),
    kind             TEXT NOT NULL CHECK (kind <> ''),
    payload          TEXT NOT NULL CHECK (json_valid(payload)),
    priority         INTEGER NOT NULL DEFAULT 0,
    status           TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'completed', 'failed')),
    attempts         INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts     INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    run_at           INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    last_error       TEXT,
    result           TEXT CHECK (result IS NULL OR json_valid(result)),
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX idx_jobs_claim ON jobs (queue, status, priority DESC, run_at, id);
CREATE INDEX idx_jobs_queue_created ON jobs (queue, created_at, id);
