-- Who holds an idempotency claim: a late request whose lease lapsed must
-- not complete or release a newer request's claim.
ALTER TABLE idempotency ADD COLUMN owner TEXT;
