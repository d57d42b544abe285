-- Back to one row per blob: a blob shared by campaigns keeps the oldest campaign's row.
DELETE FROM model_versions m USING model_versions o WHERE m.sha256 = o.sha256 AND m.campaign_id > o.campaign_id;
DROP INDEX model_versions_sha256;
ALTER TABLE model_versions DROP CONSTRAINT model_versions_pkey;
ALTER TABLE model_versions ADD PRIMARY KEY (sha256);
