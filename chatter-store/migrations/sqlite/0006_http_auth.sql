-- Chatter schema, part 6 (HTTP server): login credentials and refresh sessions.

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
