-- A tool the gateway ran itself (MCP, in its inner loop) is recorded with where it lives and
-- what it gave: the server's name and URL, the tool's own name, the result or the error, and
-- how long it took.
ALTER TABLE tool_calls ADD COLUMN server_name TEXT;
ALTER TABLE tool_calls ADD COLUMN server_url TEXT;
ALTER TABLE tool_calls ADD COLUMN tool_name TEXT;
ALTER TABLE tool_calls ADD COLUMN result TEXT;
ALTER TABLE tool_calls ADD COLUMN error TEXT;
ALTER TABLE tool_calls ADD COLUMN duration_ms BIGINT;
