-- A model blob may be a version of several campaigns: two campaigns with the same seed
-- and model start from the same W(0). The blob is stored once under its sha256; each
-- campaign has its own row for it.
CREATE TABLE model_versions_shared (
    sha256      TEXT NOT NULL,
    campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
    round       INTEGER NOT NULL,
    size        BIGINT NOT NULL,
    created_at  DATETIME NOT NULL,
    PRIMARY KEY (campaign_id, sha256)
);
INSERT INTO model_versions_shared (sha256, campaign_id, round, size, created_at)
    SELECT sha256, campaign_id, round, size, created_at FROM model_versions;
DROP TABLE model_versions;
ALTER TABLE model_versions_shared RENAME TO model_versions;
-- Blob downloads and the blob collector look versions up by sha256 alone.
CREATE INDEX model_versions_sha256 ON model_versions(sha256);
