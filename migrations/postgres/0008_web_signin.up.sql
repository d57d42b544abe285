-- Web sign-in: researchers get a role and an optional password (bcrypt), volunteer
-- accounts an optional password, and signed-in browsers a session row. A session's
-- cookie holds a random secret; the row stores only its sha256.
ALTER TABLE researchers ADD COLUMN role TEXT NOT NULL DEFAULT 'researcher';
ALTER TABLE researchers ADD COLUMN password_hash TEXT NOT NULL DEFAULT '';
ALTER TABLE accounts ADD COLUMN password_hash TEXT NOT NULL DEFAULT '';
CREATE UNIQUE INDEX researchers_sign_in_name ON researchers(name) WHERE password_hash <> '';
CREATE TABLE sessions (
    secret_hash   TEXT PRIMARY KEY,
    researcher_id BIGINT NOT NULL REFERENCES researchers(id) ON DELETE CASCADE,
    created_at    TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX sessions_expires_at ON sessions(expires_at);
