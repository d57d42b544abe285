ALTER TABLE rounds DROP COLUMN opt_state;
ALTER TABLE rounds DROP COLUMN stale;
DROP INDEX results_buffer;
ALTER TABLE results DROP COLUMN weight;
ALTER TABLE results DROP COLUMN staleness;
ALTER TABLE results DROP COLUMN buffer_round;
