-- Chatter schema, part 6 (HTTP server): login credentials, refresh sessions, workspaces.

CREATE TABLE user_credentials (
    user_id       TEXT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    username      TEXT NOT NULL COLLATE NOCASE CHECK (username <> ''),
    password_hash TEXT CHECK (password_hash IS NULL OR password_hash <> ''),
    updated_at    INTEGER NOT NULL
);
CREATE UNIQUE INDEX idx_user_credentials_username ON user_credentials (username COLLATE NOCASE);

CREATE TABLE auth_sessions (
    id         TEXT PRIMARY KEY NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE CHECK (token_hash <> ''),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX idx_auth_sessions_user ON auth_sessions (user_id, created_at);

-- Team workspaces: members share the definitions and templates put into a workspace.
CREATE TABLE workspaces (
    id         TEXT PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL CHECK (name <> ''),
    owner_id   TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL
);

CREATE TABLE workspace_members (
    workspace_id TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role         TEXT NOT NULL CHECK (role IN ('viewer', 'editor', 'admin')),
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, user_id)
);
CREATE INDEX idx_workspace_members_user ON workspace_members (user_id);

CREATE TABLE workspace_resources (
    workspace_id  TEXT NOT NULL REFERENCES workspaces (id) ON DELETE CASCADE,
    resource_type TEXT NOT NULL CHECK (resource_type IN ('definition', 'template')),
    resource_id   TEXT NOT NULL CHECK (resource_id <> ''),
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (workspace_id, resource_type, resource_id)
);
CREATE INDEX idx_workspace_resources_resource ON workspace_resources (resource_type, resource_id);
