-- After a 401/403 the gateway checks the key before disabling it; the attempt says what the
-- check found (rejected, accepted, inconclusive, implied).
ALTER TABLE attempts ADD COLUMN key_check TEXT;
