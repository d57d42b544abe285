-- A host may report a work unit it cannot finish (its training diverged): counted on
-- the host and the round, and kept as a results row with outcome 'failed'.
ALTER TABLE hosts ADD COLUMN results_failed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rounds ADD COLUMN failed INTEGER NOT NULL DEFAULT 0;
