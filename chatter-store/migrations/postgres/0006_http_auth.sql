-- Chatter schema, part 6 (HTTP server): login credentials and refresh sessions.

CREATE TABLE user_credentials (
    user_id       TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    username      TEXT NOT NULL CHECK (username <> ''),
    password_hash TEXT CHECK (password_hash IS NULL OR password_hash <> ''),
    updated_at    BIGINT NOT NULL
);
CREATE UNIQUE INDEX idx_user_credentials_username ON user_credentials (lower(username));

CREATE TABLE auth_sessions (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE CHECK (token_hash <> ''),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX idx_auth_sessions_user ON auth_sessions (user_id, created_at);
