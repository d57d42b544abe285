DROP INDEX results_sha256;
