-- Each interception carries its own totals, written with its end (summed from its usage rows
-- and failed-over attempts, so a retried batch sets the same values): usage reports read one
-- table instead of joining three, which keeps the dashboard fast with many records.
ALTER TABLE interceptions ADD COLUMN input_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE interceptions ADD COLUMN output_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE interceptions ADD COLUMN cache_read_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE interceptions ADD COLUMN cache_write_tokens BIGINT NOT NULL DEFAULT 0;
ALTER TABLE interceptions ADD COLUMN failovers BIGINT NOT NULL DEFAULT 0;
-- Records written before this migration (ended or not: an unfinished one's usage counts too).
UPDATE interceptions SET
    input_tokens = COALESCE((SELECT SUM(t.input_tokens) FROM token_usages t WHERE t.interception_id = interceptions.id), 0),
    output_tokens = COALESCE((SELECT SUM(t.output_tokens) FROM token_usages t WHERE t.interception_id = interceptions.id), 0),
    cache_read_tokens = COALESCE((SELECT SUM(t.cache_read_tokens) FROM token_usages t WHERE t.interception_id = interceptions.id), 0),
    cache_write_tokens = COALESCE((SELECT SUM(t.cache_write_tokens) FROM token_usages t WHERE t.interception_id = interceptions.id), 0),
    failovers = (SELECT COUNT(*) FROM attempts a WHERE a.interception_id = interceptions.id AND a.failover_reason IS NOT NULL);
-- Reports over a period read this index alone (every column they group or sum by), not the
-- table row by row.
CREATE INDEX IF NOT EXISTS interceptions_report ON interceptions (started_at, user_name, model,
    provider_name, credential, key_hint, outcome, failovers, input_tokens, output_tokens,
    cache_read_tokens, cache_write_tokens);
