-- Chatter schema, part 4: the model registry (providers, models with prices and capabilities,
-- routing rules) and its other settings. The registry is saved as a whole, in one transaction,
-- and versioned by the single `model_registry` row. An API key is never stored: a provider keeps
-- the NAME of the environment variable holding it (`api_key_env`), which must look like one.

CREATE TABLE model_registry (
    id         INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    version    INTEGER NOT NULL CHECK (version >= 1),
    -- Routing defaults, resilience, budgets, memo and analysis settings (JSON object).
    settings   TEXT NOT NULL CHECK (json_valid(settings) AND json_type(settings) = 'object'),
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE model_providers (
    name           TEXT PRIMARY KEY NOT NULL CHECK (name <> ''),
    position       INTEGER NOT NULL UNIQUE CHECK (position >= 0),
    kind           TEXT NOT NULL CHECK (kind <> ''),
    base_url       TEXT CHECK (base_url IS NULL OR base_url LIKE 'http://%' OR base_url LIKE 'https://%'),
    api_key_env    TEXT CHECK (api_key_env IS NULL OR (api_key_env <> ''
                       AND api_key_env NOT GLOB '*[^A-Za-z0-9_]*' AND api_key_env NOT GLOB '[0-9]*')),
    default_config TEXT NOT NULL DEFAULT '{}'
                   CHECK (json_valid(default_config) AND json_type(default_config) = 'object'),
    default_model  TEXT,
    is_active      INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    is_default     INTEGER NOT NULL DEFAULT 0 CHECK (is_default IN (0, 1))
);
CREATE UNIQUE INDEX idx_model_providers_one_default ON model_providers (is_default) WHERE is_default = 1;

CREATE TABLE models (
    name                TEXT PRIMARY KEY NOT NULL CHECK (name <> ''),
    position            INTEGER NOT NULL UNIQUE CHECK (position >= 0),
    provider            TEXT NOT NULL REFERENCES model_providers (name),
    api_model           TEXT,
    context_length      INTEGER CHECK (context_length IS NULL OR context_length >= 1),
    max_output_tokens   INTEGER CHECK (max_output_tokens IS NULL OR max_output_tokens >= 1),
    supports_tools      INTEGER NOT NULL DEFAULT 0 CHECK (supports_tools IN (0, 1)),
    supports_json       INTEGER NOT NULL DEFAULT 0 CHECK (supports_json IN (0, 1)),
    supports_streaming  INTEGER NOT NULL DEFAULT 0 CHECK (supports_streaming IN (0, 1)),
    supports_vision     INTEGER NOT NULL DEFAULT 0 CHECK (supports_vision IN (0, 1)),
    tier                TEXT NOT NULL DEFAULT 'standard' CHECK (tier IN ('economy', 'standard', 'premium')),
    -- US dollars per 1 000 tokens; both or neither.
    input_price_per_1k  REAL CHECK (input_price_per_1k IS NULL OR input_price_per_1k >= 0),
    output_price_per_1k REAL CHECK (output_price_per_1k IS NULL OR output_price_per_1k >= 0),
    fallbacks           TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(fallbacks) AND json_type(fallbacks) = 'array'),
    is_active           INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    CHECK ((input_price_per_1k IS NULL) = (output_price_per_1k IS NULL))
);
CREATE INDEX idx_models_provider ON models (provider);

CREATE TABLE model_routing_rules (
    name                 TEXT PRIMARY KEY NOT NULL CHECK (name <> ''),
    position             INTEGER NOT NULL UNIQUE CHECK (position >= 0),
    priority             INTEGER NOT NULL DEFAULT 0,
    is_enabled           INTEGER NOT NULL DEFAULT 1 CHECK (is_enabled IN (0, 1)),
    conditions           TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(conditions) AND json_type(conditions) = 'object'),
    target               TEXT NOT NULL REFERENCES models (name),
    fallbacks            TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(fallbacks) AND json_type(fallbacks) = 'array'),
    max_cost_per_request REAL CHECK (max_cost_per_request IS NULL OR max_cost_per_request >= 0)
);
CREATE INDEX idx_model_routing_rules_target ON model_routing_rules (target);
