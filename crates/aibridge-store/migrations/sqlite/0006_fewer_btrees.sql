-- Every b-tree a recorded request touches is work on the gateway's writer thread (callgrind:
-- about 3,000 instructions per row per b-tree) and pages written to the WAL.
--
-- Two indexes of interceptions go: listing newest first and time windows read
-- interceptions_report, which also starts with started_at; the requests served per key read it
-- whole (it holds provider_name, credential and key_hint), as they read the provider's part of
-- interceptions_provider_key before (both grow with the table).
DROP INDEX IF EXISTS interceptions_started;
DROP INDEX IF EXISTS interceptions_provider_key;

-- Attempts and token usages, small rows named by (interception_id, number or seq), are stored
-- in that key's order (WITHOUT ROWID): one b-tree each instead of a table and its unique index.
-- Prompts, tool calls and thoughts keep their rowid: their rows can be long, and a clustered
-- b-tree keeps copies of its keys in its inner pages. Usage rows written before seq existed
-- (NULL) get negative ones, in their old order, that no new row can take.
CREATE TABLE attempts_clustered (
    interception_id TEXT    NOT NULL REFERENCES interceptions (id) ON DELETE CASCADE,
    number          INTEGER NOT NULL,
    key_hint        TEXT,
    status          INTEGER,
    transport_error TEXT,
    failover_reason TEXT,
    cooldown_ms     INTEGER,
    duration_ms     INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    key_check       TEXT,
    PRIMARY KEY (interception_id, number)
) STRICT, WITHOUT ROWID;
INSERT INTO attempts_clustered (interception_id, number, key_hint, status, transport_error,
    failover_reason, cooldown_ms, duration_ms, created_at, key_check)
    SELECT interception_id, number, key_hint, status, transport_error, failover_reason,
    cooldown_ms, duration_ms, created_at, key_check FROM attempts;
DROP TABLE attempts;
ALTER TABLE attempts_clustered RENAME TO attempts;

CREATE TABLE token_usages_clustered (
    interception_id      TEXT    NOT NULL REFERENCES interceptions (id) ON DELETE CASCADE,
    seq                  INTEGER NOT NULL,
    provider_response_id TEXT,
    input_tokens         INTEGER NOT NULL,
    output_tokens        INTEGER NOT NULL,
    cache_read_tokens    INTEGER NOT NULL,
    cache_write_tokens   INTEGER NOT NULL,
    extra                TEXT    NOT NULL DEFAULT '{}',
    created_at           INTEGER NOT NULL,
    PRIMARY KEY (interception_id, seq)
) STRICT, WITHOUT ROWID;
INSERT INTO token_usages_clustered (interception_id, seq, provider_response_id, input_tokens,
    output_tokens, cache_read_tokens, cache_write_tokens, extra, created_at)
    SELECT interception_id,
    COALESCE(seq, id - (SELECT COALESCE(MAX(id), 0) FROM token_usages) - 1),
    provider_response_id, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,
    extra, created_at FROM token_usages;
DROP TABLE token_usages;
ALTER TABLE token_usages_clustered RENAME TO token_usages;
