DROP TABLE results;
DROP TABLE work_units;
DROP TABLE rounds;
DROP TABLE model_versions;
DROP TABLE campaigns;
DROP TABLE hosts;
DROP TABLE researchers;
DROP TABLE accounts;
