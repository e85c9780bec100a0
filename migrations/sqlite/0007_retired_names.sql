-- A token that names no slot (a preserving one: six to fifteen random
-- digits between a card's kept digits, about a million candidates a card;
-- or a token from before slots) is never issued again once its record goes
-- (deleted, expired and swept, or withdrawn): its name is kept here, and an
-- insert of that name is ignored, as one of a name in use is, so the vault
-- draws another. Otherwise a token still held somewhere (a log, an old
-- order) could come to resolve to another customer's card. Random tokens
-- made since slots name their slot and are never drawn twice; they are
-- not kept.
CREATE TABLE retired_names (token TEXT PRIMARY KEY) STRICT, WITHOUT ROWID;
CREATE TRIGGER tokens_retire_name AFTER DELETE ON tokens WHEN OLD.named = 1
BEGIN
    INSERT OR IGNORE INTO retired_names (token) VALUES (OLD.token);
END;
CREATE TRIGGER tokens_keep_names_retired BEFORE INSERT ON tokens
WHEN NEW.named = 1 AND EXISTS (SELECT 1 FROM retired_names WHERE token = NEW.token)
BEGIN
    SELECT RAISE(IGNORE);
END;
