-- Model versions for both modes. A result goes into the buffer of one version
-- (buffer_round): its own round in synchronous mode, the version open when it arrived
-- in asynchronous mode, where staleness is that version minus the unit's round and
-- weight the staleness discount it is folded with.
ALTER TABLE results ADD COLUMN buffer_round INTEGER;
UPDATE results SET buffer_round = round;
ALTER TABLE results ADD COLUMN staleness INTEGER NOT NULL DEFAULT 0;
ALTER TABLE results ADD COLUMN weight DOUBLE NOT NULL DEFAULT 1;
CREATE INDEX results_buffer ON results(campaign_id, buffer_round, outcome);
-- Results refused as too stale, per version; and the server optimiser's state after a
-- round's update (a blob of moments), empty for plain averaging.
ALTER TABLE rounds ADD COLUMN stale INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rounds ADD COLUMN opt_state TEXT NOT NULL DEFAULT '';
