-- Expired idempotency entries are purged in bounds (`purge_expired`); the
-- index keeps finding them from a scan of the whole table, which would
-- hold up every write on the writer thread while it ran.
CREATE INDEX idempotency_expires_at ON idempotency (expires_at);
