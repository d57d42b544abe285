DELETE FROM results WHERE outcome = 'failed';
UPDATE work_units SET state = 'expired' WHERE state = 'failed';
ALTER TABLE rounds DROP COLUMN failed;
ALTER TABLE hosts DROP COLUMN results_failed;
