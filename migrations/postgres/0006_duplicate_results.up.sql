-- A round merges at most one copy of a delta: results byte-identical to a merged one
-- are recorded (outcome 'duplicate') and flagged, and a campaign may bound the results
-- one account contributes to a round (outcome 'over_limit').
ALTER TABLE rounds ADD COLUMN duplicates INTEGER NOT NULL DEFAULT 0;
ALTER TABLE rounds ADD COLUMN over_limit INTEGER NOT NULL DEFAULT 0;
ALTER TABLE hosts ADD COLUMN results_flagged INTEGER NOT NULL DEFAULT 0;
ALTER TABLE results ADD COLUMN flag TEXT NOT NULL DEFAULT '';
