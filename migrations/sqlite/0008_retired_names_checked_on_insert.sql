-- 0007's insert trigger made every insert into tokens, a random token's
-- too, a statement that may write more than one row, so SQLite opened a
-- statement journal (a savepoint and its in-memory sub-journal) for each:
-- about a fifth of the SQLite writer's time a card at batches. The writer
-- now looks a named token up in retired_names itself, in the insert's own
-- transaction (`insert_token` in src/store/sqlite.rs), and only for named
-- tokens. The delete trigger stays: deletes are not on a request's path.
DROP TRIGGER tokens_keep_names_retired;
