-- Chatter schema, part 3: template lineage, version history and analytics times; the
-- template marketplace (listings, immutable versions, moderation reviews, ratings, installs,
-- tsvector search).

ALTER TABLE workflow_templates ADD COLUMN base_template_id TEXT
    REFERENCES workflow_templates (id) ON DELETE SET NULL;

-- One row per version of a template, written in the transaction that creates or updates it.
-- The latest is the one whose version equals workflow_templates.version.
CREATE TABLE workflow_template_versions (
    template_id TEXT NOT NULL REFERENCES workflow_templates (id) ON DELETE CASCADE,
    version     BIGINT NOT NULL CHECK (version >= 1),
    name        TEXT NOT NULL,
    description TEXT,
    category    TEXT NOT NULL,
    spec        JSONB NOT NULL,
    tags        JSONB NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(tags) = 'array'),
    is_public   BOOLEAN NOT NULL DEFAULT FALSE,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (template_id, version)
);
INSERT INTO workflow_template_versions
    (template_id, version, name, description, category, spec, tags, is_public, created_at)
    SELECT id, version, name, description, category, spec, tags, is_public, updated_at
    FROM workflow_templates;

-- When a template execution last succeeded / failed. Set by a trigger in the transaction of
-- `complete_execution` (the status update), before that transaction's analytics upsert: the row
-- is created with zero counts if missing, and the upsert then counts the execution.
ALTER TABLE template_analytics ADD COLUMN last_success_at BIGINT;
ALTER TABLE template_analytics ADD COLUMN last_failure_at BIGINT;

CREATE FUNCTION chatter_template_outcome() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    at BIGINT := COALESCE(NEW.finished_at, NEW.updated_at);
BEGIN
    INSERT INTO template_analytics AS a (template_id, last_success_at, last_failure_at)
    VALUES (NEW.template_id,
            CASE WHEN NEW.status = 'completed' THEN at END,
            CASE WHEN NEW.status <> 'completed' THEN at END)
    ON CONFLICT (template_id) DO UPDATE SET
        last_success_at = CASE WHEN NEW.status = 'completed'
            THEN GREATEST(a.last_success_at, at) ELSE a.last_success_at END,
        last_failure_at = CASE WHEN NEW.status <> 'completed'
            THEN GREATEST(a.last_failure_at, at) ELSE a.last_failure_at END;
    RETURN NULL;
END;
$$;
CREATE TRIGGER workflow_executions_template_outcome
AFTER UPDATE OF status ON workflow_executions
FOR EACH ROW
WHEN (NEW.template_id IS NOT NULL AND OLD.status <> NEW.status
      AND NEW.status IN ('completed', 'failed', 'cancelled'))
EXECUTE FUNCTION chatter_template_outcome();

CREATE TABLE marketplace_listings (
    id             TEXT PRIMARY KEY CHECK (id <> ''),
    slug           TEXT NOT NULL UNIQUE CHECK (slug <> ''),
    publisher_id   TEXT NOT NULL CHECK (publisher_id <> ''),
    template_id    TEXT REFERENCES workflow_templates (id) ON DELETE SET NULL,
    title          TEXT NOT NULL CHECK (title <> ''),
    summary        TEXT NOT NULL DEFAULT '',
    readme         TEXT NOT NULL DEFAULT '',
    category       TEXT NOT NULL DEFAULT 'custom',
    tags           JSONB NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(tags) = 'array'),
    license        TEXT NOT NULL DEFAULT '',
    status         TEXT NOT NULL DEFAULT 'draft'
                   CHECK (status IN ('draft', 'submitted', 'approved', 'rejected', 'unlisted', 'removed')),
    latest_version BIGINT NOT NULL DEFAULT 0 CHECK (latest_version >= 0),
    rating_avg     DOUBLE PRECISION NOT NULL DEFAULT 0,
    rating_count   BIGINT NOT NULL DEFAULT 0 CHECK (rating_count >= 0),
    install_count  BIGINT NOT NULL DEFAULT 0 CHECK (install_count >= 0),
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL,
    approved_at    BIGINT,
    search_tsv     TSVECTOR GENERATED ALWAYS AS (
        to_tsvector('english', title || ' ' || summary || ' ' || (tags #>> '{}'))
    ) STORED
);
CREATE INDEX idx_marketplace_listings_status_category ON marketplace_listings (status, category);
CREATE INDEX idx_marketplace_listings_publisher ON marketplace_listings (publisher_id, created_at);
CREATE INDEX idx_marketplace_listings_search ON marketplace_listings USING GIN (search_tsv);

CREATE TABLE marketplace_versions (
    listing_id   TEXT NOT NULL REFERENCES marketplace_listings (id) ON DELETE CASCADE,
    version      BIGINT NOT NULL CHECK (version >= 1),
    snapshot     JSONB NOT NULL,
    content_hash TEXT NOT NULL CHECK (length(content_hash) = 64),
    changelog    TEXT NOT NULL DEFAULT '',
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (listing_id, version)
);
-- Versions are immutable: once published, a version's snapshot never changes.
CREATE FUNCTION chatter_marketplace_versions_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'marketplace versions are immutable' USING ERRCODE = 'restrict_violation';
END;
$$;
CREATE TRIGGER marketplace_versions_immutable BEFORE UPDATE ON marketplace_versions
FOR EACH ROW EXECUTE FUNCTION chatter_marketplace_versions_immutable();

CREATE TABLE marketplace_reviews (
    id          TEXT PRIMARY KEY,
    listing_id  TEXT NOT NULL REFERENCES marketplace_listings (id) ON DELETE CASCADE,
    reviewer_id TEXT NOT NULL CHECK (reviewer_id <> ''),
    decision    TEXT NOT NULL CHECK (decision IN ('approved', 'rejected')),
    comment     TEXT NOT NULL DEFAULT '',
    version     BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX idx_marketplace_reviews_listing ON marketplace_reviews (listing_id, created_at);

CREATE TABLE marketplace_ratings (
    listing_id TEXT NOT NULL REFERENCES marketplace_listings (id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL CHECK (user_id <> ''),
    rating     INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5),
    comment    TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    PRIMARY KEY (listing_id, user_id)
);

CREATE TABLE marketplace_installs (
    id          TEXT PRIMARY KEY,
    listing_id  TEXT NOT NULL REFERENCES marketplace_listings (id) ON DELETE CASCADE,
    version     BIGINT NOT NULL,
    user_id     TEXT NOT NULL CHECK (user_id <> ''),
    template_id TEXT REFERENCES workflow_templates (id) ON DELETE SET NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX idx_marketplace_installs_listing ON marketplace_installs (listing_id, created_at);
CREATE INDEX idx_marketplace_installs_user ON marketplace_installs (user_id, created_at);
