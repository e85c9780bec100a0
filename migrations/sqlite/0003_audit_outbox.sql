-- Audit events committed in the same transaction as the records they
-- describe. The audit writer copies them into its chained file, fsyncs it,
-- and acknowledges them; the SQLite writer then deletes them. AUTOINCREMENT
-- so a sequence number is never reused, even once its row is deleted.
CREATE TABLE audit_outbox (
    seq  INTEGER PRIMARY KEY AUTOINCREMENT,
    note BLOB NOT NULL
) STRICT;

-- Names this database's outbox. Each audit line says how far the outbox of
-- which epoch is copied, so a file that followed another database (one
-- recreated, say) is never taken as proof that these rows were copied.
CREATE TABLE audit_outbox_epoch (
    epoch TEXT NOT NULL
) STRICT;
INSERT INTO audit_outbox_epoch (epoch) VALUES (lower(hex(randomblob(8))));
