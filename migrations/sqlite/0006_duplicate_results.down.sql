-- Results recorded but not merged become late ones, the older schema's nearest state.
UPDATE results SET outcome = 'late' WHERE outcome IN ('duplicate', 'over_limit');
UPDATE work_units SET state = 'late' WHERE state IN ('duplicate', 'over_limit');
ALTER TABLE results DROP COLUMN flag;
ALTER TABLE hosts DROP COLUMN results_flagged;
ALTER TABLE rounds DROP COLUMN over_limit;
ALTER TABLE rounds DROP COLUMN duplicates;
