-- Back to one row per blob: a blob shared by campaigns keeps the oldest campaign's row.
CREATE TABLE model_versions_single (
    sha256      TEXT PRIMARY KEY,
    campaign_id INTEGER NOT NULL REFERENCES campaigns(id),
    round       INTEGER NOT NULL,
    size        BIGINT NOT NULL,
    created_at  DATETIME NOT NULL
);
INSERT INTO model_versions_single (sha256, campaign_id, round, size, created_at)
    SELECT sha256, campaign_id, round, size, created_at FROM model_versions m
    WHERE campaign_id = (SELECT MIN(campaign_id) FROM model_versions o WHERE o.sha256 = m.sha256);
DROP TABLE model_versions;
ALTER TABLE model_versions_single RENAME TO model_versions;
