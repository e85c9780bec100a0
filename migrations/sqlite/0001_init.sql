-- Tokens: one row per token. `ciphertext` is the only column derived from
-- the value; last4/first6 are what PCI DSS allows to be displayed.
CREATE TABLE tokens (
    token          TEXT PRIMARY KEY,
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

-- Deterministic mode's uniqueness items: one fingerprint, one token.
CREATE TABLE fingerprints (
    fingerprint TEXT PRIMARY KEY,
    token       TEXT NOT NULL
) STRICT;

-- Wrapped epoch data keys and service-held secrets.
CREATE TABLE key_items (
    id              TEXT PRIMARY KEY,
    classification  TEXT NOT NULL,
    wrapping_key_id TEXT NOT NULL,
    wrapped         BLOB NOT NULL,
    created_at      INTEGER NOT NULL
) STRICT;

-- Idempotency keys of /tokenize, kept 24 hours.
CREATE TABLE idempotency (
    key          TEXT PRIMARY KEY,
    request_hash TEXT NOT NULL,
    status       INTEGER,
    response     TEXT,
    expires_at   INTEGER NOT NULL
) STRICT;

CREATE INDEX tokens_expires_at ON tokens (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX key_items_wrapping_key ON key_items (wrapping_key_id);
