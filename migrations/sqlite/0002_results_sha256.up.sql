-- Lets the blob collector find which results still need a delta blob.
CREATE INDEX results_sha256 ON results(sha256);
