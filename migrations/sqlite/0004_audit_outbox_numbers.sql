-- The outbox without AUTOINCREMENT, which read and rewrote
-- sqlite_sequence at every note insert: about 9,700 instructions a
-- tokenization, and one more page written a commit. Numbers are still
-- never reused: the row holding the highest number is never deleted, so
-- max(seq) is the highest number ever issued, and a new row takes the
-- next. Where deletions had emptied the outbox, an empty row keeps the
-- highest number issued, which the audit writer skips.
-- The CHECK keeps the largest integer out: at it, SQLite would give new
-- rows free numbers at random, below how far the outbox was copied.
CREATE TABLE audit_outbox_next (
    seq  INTEGER PRIMARY KEY CHECK (seq < 9223372036854775807),
    note BLOB NOT NULL
) STRICT;
INSERT INTO audit_outbox_next (seq, note) SELECT seq, note FROM audit_outbox;
INSERT INTO audit_outbox_next (seq, note)
    SELECT seq, x'' FROM sqlite_sequence
    WHERE name = 'audit_outbox'
      AND seq > (SELECT coalesce(max(seq), 0) FROM audit_outbox);
DROP TABLE audit_outbox;
ALTER TABLE audit_outbox_next RENAME TO audit_outbox;
-- Renamed so that a tokenvault from before this migration stops at
-- start-up (it cannot find its outbox's epoch) rather than run on: it
-- deleted every acknowledged row, the highest included, and would then
-- issue numbers twice. Newer ones refuse a schema they do not know.
ALTER TABLE audit_outbox_epoch RENAME TO audit_outbox_epochs;
