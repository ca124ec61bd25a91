-- Chatter schema, part 4: the model registry (providers, models with prices and capabilities,
-- routing rules) and its other settings. The registry is saved as a whole, in one transaction,
-- and versioned by the single `model_registry` row. An API key is never stored: a provider keeps
-- the NAME of the environment variable holding it (`api_key_env`), which must look like one.

CREATE TABLE model_registry (
    id         SMALLINT PRIMARY KEY CHECK (id = 1),
    version    BIGINT NOT NULL CHECK (version >= 1),
    -- Routing defaults, resilience, budgets, memo and analysis settings.
    settings   JSONB NOT NULL CHECK (jsonb_typeof(settings) = 'object'),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE model_providers (
    name           TEXT PRIMARY KEY CHECK (name <> ''),
    position       BIGINT NOT NULL UNIQUE CHECK (position >= 0),
    kind           TEXT NOT NULL CHECK (kind <> ''),
    base_url       TEXT CHECK (base_url IS NULL OR base_url LIKE 'http://%' OR base_url LIKE 'https://%'),
    api_key_env    TEXT CHECK (api_key_env IS NULL OR api_key_env ~ '^[A-Za-z_][A-Za-z0-9_]*$'),
    default_config JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(default_config) = 'object'),
    default_model  TEXT,
    is_active      BOOLEAN NOT NULL DEFAULT TRUE,
    is_default     BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE UNIQUE INDEX idx_model_providers_one_default ON model_providers (is_default) WHERE is_default;

CREATE TABLE models (
    name                TEXT PRIMARY KEY CHECK (name <> ''),
    position            BIGINT NOT NULL UNIQUE CHECK (position >= 0),
    provider            TEXT NOT NULL REFERENCES model_providers (name),
    api_model           TEXT,
    context_length      BIGINT CHECK (context_length IS NULL OR context_length >= 1),
    max_output_tokens   BIGINT CHECK (max_output_tokens IS NULL OR max_output_tokens >= 1),
    supports_tools      BOOLEAN NOT NULL DEFAULT FALSE,
    supports_json       BOOLEAN NOT NULL DEFAULT FALSE,
    supports_streaming  BOOLEAN NOT NULL DEFAULT FALSE,
    supports_vision     BOOLEAN NOT NULL DEFAULT FALSE,
    tier                TEXT NOT NULL DEFAULT 'standard' CHECK (tier IN ('economy', 'standard', 'premium')),
    -- US dollars per 1 000 tokens; both or neither.
    input_price_per_1k  DOUBLE PRECISION CHECK (input_price_per_1k IS NULL OR input_price_per_1k >= 0),
    output_price_per_1k DOUBLE PRECISION CHECK (output_price_per_1k IS NULL OR output_price_per_1k >= 0),
    fallbacks           JSONB NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(fallbacks) = 'array'),
    is_active           BOOLEAN NOT NULL DEFAULT TRUE,
    CHECK ((input_price_per_1k IS NULL) = (output_price_per_1k IS NULL))
);
CREATE INDEX idx_models_provider ON models (provider);

CREATE TABLE model_routing_rules (
    name                 TEXT PRIMARY KEY CHECK (name <> ''),
    position             BIGINT NOT NULL UNIQUE CHECK (position >= 0),
    priority             BIGINT NOT NULL DEFAULT 0,
    is_enabled           BOOLEAN NOT NULL DEFAULT TRUE,
    conditions           JSONB NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(conditions) = 'object'),
    target               TEXT NOT NULL REFERENCES models (name),
    fallbacks            JSONB NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(fallbacks) = 'array'),
    max_cost_per_request DOUBLE PRECISION CHECK (max_cost_per_request IS NULL OR max_cost_per_request >= 0)
);
CREATE INDEX idx_model_routing_rules_target ON model_routing_rules (target);
