-- Small deltas are kept in their result row instead of a blob file: the row and its
-- bytes commit together, and a tiny result costs no file operations.
ALTER TABLE results ADD COLUMN data BYTEA;
