-- Chatter schema, part 3: template lineage, version history and analytics times; the
-- template marketplace (listings, immutable versions, moderation reviews, ratings, installs,
-- FTS5 search).

ALTER TABLE workflow_templates ADD COLUMN base_template_id TEXT
    REFERENCES workflow_templates (id) ON DELETE SET NULL;

-- One row per version of a template, written in the transaction that creates or updates it.
-- The latest is the one whose version equals workflow_templates.version.
CREATE TABLE workflow_template_versions (
    template_id TEXT NOT NULL REFERENCES workflow_templates (id) ON DELETE CASCADE,
    version     INTEGER NOT NULL CHECK (version >= 1),
    name        TEXT NOT NULL,
    description TEXT,
    category    TEXT NOT NULL,
    spec        TEXT NOT NULL CHECK (json_valid(spec)),
    tags        TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(tags) AND json_type(tags) = 'array'),
    is_public   INTEGER NOT NULL DEFAULT 0 CHECK (is_public IN (0, 1)),
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (template_id, version)
);
INSERT INTO workflow_template_versions
    (template_id, version, name, description, category, spec, tags, is_public, created_at)
    SELECT id, version, name, description, category, spec, tags, is_public, updated_at
    FROM workflow_templates;

-- When a template execution last succeeded / failed. Set by a trigger in the transaction of
-- `complete_execution` (the status update), before that transaction's analytics upsert: the row
-- is created with zero counts if missing, and the upsert then counts the execution.
ALTER TABLE template_analytics ADD COLUMN last_success_at INTEGER;
ALTER TABLE template_analytics ADD COLUMN last_failure_at INTEGER;

CREATE TRIGGER workflow_executions_template_outcome
AFTER UPDATE OF status ON workflow_executions
WHEN new.template_id IS NOT NULL AND old.status <> new.status
     AND new.status IN ('completed', 'failed', 'cancelled')
BEGIN
    INSERT OR IGNORE INTO template_analytics (template_id) VALUES (new.template_id);
    UPDATE template_analytics SET
        last_success_at = CASE WHEN new.status = 'completed'
            THEN MAX(COALESCE(last_success_at, 0), COALESCE(new.finished_at, new.updated_at))
            ELSE last_success_at END,
        last_failure_at = CASE WHEN new.status <> 'completed'
            THEN MAX(COALESCE(last_failure_at, 0), COALESCE(new.finished_at, new.updated_at))
            ELSE last_failure_at END
    WHERE template_id = new.template_id;
END;

CREATE TABLE marketplace_listings (
    id            TEXT PRIMARY KEY NOT NULL CHECK (id <> ''),
    slug          TEXT NOT NULL UNIQUE CHECK (slug <> ''),
    publisher_id  TEXT NOT NULL CHECK (publisher_id <> ''),
    template_id   TEXT REFERENCES workflow_templates (id) ON DELETE SET NULL,
    title         TEXT NOT NULL CHECK (title <> ''),
    summary       TEXT NOT NULL DEFAULT '',
    readme        TEXT NOT NULL DEFAULT '',
    category      TEXT NOT NULL DEFAULT 'custom',
    tags          TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(tags) AND json_type(tags) = 'array'),
    license       TEXT NOT NULL DEFAULT '',
    status        TEXT NOT NULL DEFAULT 'draft'
                  CHECK (status IN ('draft', 'submitted', 'approved', 'rejected', 'unlisted', 'removed')),
    latest_version INTEGER NOT NULL DEFAULT 0 CHECK (latest_version >= 0),
    rating_avg    REAL NOT NULL DEFAULT 0,
    rating_count  INTEGER NOT NULL DEFAULT 0 CHECK (rating_count >= 0),
    install_count INTEGER NOT NULL DEFAULT 0 CHECK (install_count >= 0),
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    approved_at   INTEGER
);
CREATE INDEX idx_marketplace_listings_status_category ON marketplace_listings (status, category);
CREATE INDEX idx_marketplace_listings_publisher ON marketplace_listings (publisher_id, created_at);

-- Full-text index over title, summary and tags, kept in step by triggers.
-- Porter stemming, like Postgres' `english` configuration.
CREATE VIRTUAL TABLE marketplace_listings_fts USING fts5 (
    listing_id UNINDEXED, title, summary, tags, tokenize = 'porter unicode61'
);
CREATE TRIGGER marketplace_listings_fts_insert AFTER INSERT ON marketplace_listings BEGIN
    INSERT INTO marketplace_listings_fts (listing_id, title, summary, tags)
    VALUES (new.id, new.title, new.summary,
            (SELECT group_concat(value, ' ') FROM json_each(new.tags)));
END;
CREATE TRIGGER marketplace_listings_fts_update AFTER UPDATE OF title, summary, tags ON marketplace_listings BEGIN
    DELETE FROM marketplace_listings_fts WHERE listing_id = old.id;
    INSERT INTO marketplace_listings_fts (listing_id, title, summary, tags)
    VALUES (new.id, new.title, new.summary,
            (SELECT group_concat(value, ' ') FROM json_each(new.tags)));
END;
CREATE TRIGGER marketplace_listings_fts_delete AFTER DELETE ON marketplace_listings BEGIN
    DELETE FROM marketplace_listings_fts WHERE listing_id = old.id;
END;

CREATE TABLE marketplace_versions (
    listing_id   TEXT NOT NULL REFERENCES marketplace_listings (id) ON DELETE CASCADE,
    version      INTEGER NOT NULL CHECK (version >= 1),
    snapshot     TEXT NOT NULL CHECK (json_valid(snapshot)),
    content_hash TEXT NOT NULL CHECK (length(content_hash) = 64),
    changelog    TEXT NOT NULL DEFAULT '',
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (listing_id, version)
);
-- Versions are immutable: once published, a version's snapshot never changes.
CREATE TRIGGER marketplace_versions_immutable BEFORE UPDATE ON marketplace_versions BEGIN
    SELECT RAISE(ABORT, 'marketplace versions are immutable');
END;

CREATE TABLE marketplace_reviews (
    id          TEXT PRIMARY KEY NOT NULL,
    listing_id  TEXT NOT NULL REFERENCES marketplace_listings (id) ON DELETE CASCADE,
    reviewer_id TEXT NOT NULL CHECK (reviewer_id <> ''),
    decision    TEXT NOT NULL CHECK (decision IN ('approved', 'rejected')),
    comment     TEXT NOT NULL DEFAULT '',
    version     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX idx_marketplace_reviews_listing ON marketplace_reviews (listing_id, created_at);

CREATE TABLE marketplace_ratings (
    listing_id TEXT NOT NULL REFERENCES marketplace_listings (id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL CHECK (user_id <> ''),
    rating     INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5),
    comment    TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    PRIMARY KEY (listing_id, user_id)
);

CREATE TABLE marketplace_installs (
    id          TEXT PRIMARY KEY NOT NULL,
    listing_id  TEXT NOT NULL REFERENCES marketplace_listings (id) ON DELETE CASCADE,
    version     INTEGER NOT NULL,
    user_id     TEXT NOT NULL CHECK (user_id <> ''),
    template_id TEXT REFERENCES workflow_templates (id) ON DELETE SET NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX idx_marketplace_installs_listing ON marketplace_installs (listing_id, created_at);
CREATE INDEX idx_marketplace_installs_user ON marketplace_installs (user_id, created_at);
