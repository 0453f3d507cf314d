-- Records name their rows: (interception_id, seq) for usage, prompts, tool calls and thoughts,
-- chosen by the gateway, so inserts are idempotent and a retried batch counts nothing twice.
-- Rows written before this migration keep a NULL seq (NULLs never collide). The unique index
-- replaces the one on interception_id alone (it serves the same look-ups), so a write updates
-- no more indexes than before.
ALTER TABLE token_usages ADD COLUMN seq INTEGER;
ALTER TABLE prompts ADD COLUMN seq INTEGER;
ALTER TABLE tool_calls ADD COLUMN seq INTEGER;
ALTER TABLE thoughts ADD COLUMN seq INTEGER;
CREATE UNIQUE INDEX IF NOT EXISTS token_usages_seq ON token_usages (interception_id, seq);
CREATE UNIQUE INDEX IF NOT EXISTS prompts_seq ON prompts (interception_id, seq);
CREATE UNIQUE INDEX IF NOT EXISTS tool_calls_seq ON tool_calls (interception_id, seq);
CREATE UNIQUE INDEX IF NOT EXISTS thoughts_seq ON thoughts (interception_id, seq);
DROP INDEX IF EXISTS token_usages_interception;
DROP INDEX IF EXISTS prompts_interception;
DROP INDEX IF EXISTS tool_calls_interception;
DROP INDEX IF EXISTS thoughts_interception;
