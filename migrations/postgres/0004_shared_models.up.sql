-- A model blob may be a version of several campaigns: two campaigns with the same seed
-- and model start from the same W(0). The blob is stored once under its sha256; each
-- campaign has its own row for it.
ALTER TABLE model_versions DROP CONSTRAINT model_versions_pkey;
ALTER TABLE model_versions ADD PRIMARY KEY (campaign_id, sha256);
-- Blob downloads and the blob collector look versions up by sha256 alone.
CREATE INDEX model_versions_sha256 ON model_versions(sha256);
