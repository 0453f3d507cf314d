-- aibridge recording store, SQLite. Timestamps are unix milliseconds (INTEGER); booleans 0/1.
-- Every statement is IF NOT EXISTS so that the file can be replayed safely.

CREATE TABLE IF NOT EXISTS users (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS tokens (
    id           TEXT    PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users (id),
    label        TEXT,
    admin        INTEGER NOT NULL CHECK (admin IN (0, 1)),
    secret_hash  TEXT    NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER,
    last_used_at INTEGER
) STRICT;
CREATE INDEX IF NOT EXISTS tokens_user_id ON tokens (user_id);

CREATE TABLE IF NOT EXISTS interceptions (
    id            TEXT    PRIMARY KEY,
    user_name     TEXT    NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('bridged', 'passthrough')),
    provider_type TEXT    NOT NULL,
    provider_name TEXT    NOT NULL,
    method        TEXT    NOT NULL,
    route         TEXT    NOT NULL,
    model         TEXT,
    streaming     INTEGER NOT NULL CHECK (streaming IN (0, 1)),
    client        TEXT,
    session_id    TEXT,
    user_agent    TEXT,
    credential    TEXT    NOT NULL CHECK (credential IN ('pool', 'byok')),
    started_at    INTEGER NOT NULL,
    -- set by the Ended record
    ended_at      INTEGER,
    duration_ms   INTEGER,
    status        INTEGER,
    outcome       TEXT,
    key_hint      TEXT,
    attempt_count INTEGER,
    error         TEXT
) STRICT;
-- listing newest first and time windows of reports
CREATE INDEX IF NOT EXISTS interceptions_started ON interceptions (started_at, id);
-- per-user listing and reports
CREATE INDEX IF NOT EXISTS interceptions_user_started ON interceptions (user_name, started_at, id);
-- requests served per key of a provider
CREATE INDEX IF NOT EXISTS interceptions_provider_key ON interceptions (provider_name, key_hint);

CREATE TABLE IF NOT EXISTS attempts (
    interception_id TEXT    NOT NULL REFERENCES interceptions (id) ON DELETE CASCADE,
    number          INTEGER NOT NULL,
    key_hint        TEXT,
    status          INTEGER,
    transport_error TEXT,
    failover_reason TEXT,
    cooldown_ms     INTEGER,
    duration_ms     INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (interception_id, number)
) STRICT;

CREATE TABLE IF NOT EXISTS token_usages (
    id                   INTEGER PRIMARY KEY,
    interception_id      TEXT    NOT NULL REFERENCES interceptions (id) ON DELETE CASCADE,
    provider_response_id TEXT,
    input_tokens         INTEGER NOT NULL,
    output_tokens        INTEGER NOT NULL,
    cache_read_tokens    INTEGER NOT NULL,
    cache_write_tokens   INTEGER NOT NULL,
    extra                TEXT    NOT NULL DEFAULT '{}',
    created_at           INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS token_usages_interception ON token_usages (interception_id);

CREATE TABLE IF NOT EXISTS prompts (
    id                   INTEGER PRIMARY KEY,
    interception_id      TEXT    NOT NULL REFERENCES interceptions (id) ON DELETE CASCADE,
    provider_response_id TEXT,
    prompt               TEXT    NOT NULL,
    created_at           INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS prompts_interception ON prompts (interception_id);

CREATE TABLE IF NOT EXISTS tool_calls (
    id                   INTEGER PRIMARY KEY,
    interception_id      TEXT    NOT NULL REFERENCES interceptions (id) ON DELETE CASCADE,
    provider_response_id TEXT,
    tool_call_id         TEXT,
    name                 TEXT    NOT NULL,
    input                TEXT    NOT NULL,
    injected             INTEGER NOT NULL CHECK (injected IN (0, 1)),
    created_at           INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS tool_calls_interception ON tool_calls (interception_id);

CREATE TABLE IF NOT EXISTS thoughts (
    id              INTEGER PRIMARY KEY,
    interception_id TEXT    NOT NULL REFERENCES interceptions (id) ON DELETE CASCADE,
    content         TEXT    NOT NULL,
    source          TEXT    NOT NULL,
    created_at      INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS thoughts_interception ON thoughts (interception_id);
