-- Records kept in slots: a random token made since this migration names
-- its record's slot (its row number, encrypted with the vault's slot key),
-- so it is found by slot and needs no index on tokens. New records take
-- slots in order and are appended, where a random token's index entry had
-- landed on a random index page: about one 4 KiB page written to the WAL,
-- and again by the checkpointer, for each token.
--
-- `named` = 1: the token names no slot (a preserving token, or any token
-- from before this migration) and is found through `tokens_named`, the one
-- index on tokens left, which holds only those.
CREATE TABLE tokens_slotted (
    slot           INTEGER PRIMARY KEY,
    token          TEXT NOT NULL,
    named          INTEGER NOT NULL CHECK (named IN (0, 1)),
    classification TEXT NOT NULL,
    format_version INTEGER NOT NULL,
    ciphertext     BLOB NOT NULL,
    nonce          BLOB NOT NULL,
    data_key_id    TEXT NOT NULL,
    fingerprint    TEXT,
    brand          TEXT,
    last4          TEXT,
    first6         TEXT,
    value_len      INTEGER NOT NULL,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER,
    metadata       TEXT NOT NULL DEFAULT '{}'
) STRICT;
INSERT INTO tokens_slotted (slot, token, named, classification, format_version,
    ciphertext, nonce, data_key_id, fingerprint, brand, last4, first6,
    value_len, created_at, expires_at, metadata)
SELECT rowid, token, 1, classification, format_version, ciphertext, nonce,
    data_key_id, fingerprint, brand, last4, first6, value_len, created_at,
    expires_at, metadata
FROM tokens ORDER BY rowid;
DROP TABLE tokens;
ALTER TABLE tokens_slotted RENAME TO tokens;
CREATE UNIQUE INDEX tokens_named ON tokens (token) WHERE named = 1;
CREATE INDEX tokens_expires_at ON tokens (expires_at) WHERE expires_at IS NOT NULL;
