-- The project server's schema: accounts, hosts, campaigns, rounds, work units,
-- results and model versions. Times are UTC; blobs live in the data directory.
CREATE TABLE accounts (
    id         BIGSERIAL PRIMARY KEY,
    name       TEXT NOT NULL,
    key_hash   TEXT NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE researchers (
    id         BIGSERIAL PRIMARY KEY,
    name       TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE hosts (
    id              BIGSERIAL PRIMARY KEY,
    account_id      BIGINT NOT NULL REFERENCES accounts(id),
    name            TEXT NOT NULL,
    os              TEXT NOT NULL DEFAULT '',
    arch            TEXT NOT NULL DEFAULT '',
    cores           INTEGER NOT NULL DEFAULT 0,
    memory_bytes    BIGINT NOT NULL DEFAULT 0,
    gflops          DOUBLE PRECISION NOT NULL DEFAULT 0,
    client_version  TEXT NOT NULL DEFAULT '',
    token_hash      TEXT UNIQUE,
    created_at      TIMESTAMPTZ NOT NULL,
    last_contact    TIMESTAMPTZ NOT NULL,
    results_valid   INTEGER NOT NULL DEFAULT 0,
    results_invalid INTEGER NOT NULL DEFAULT 0,
    credit          DOUBLE PRECISION NOT NULL DEFAULT 0,
    detached        BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX hosts_last_contact ON hosts(last_contact);

CREATE TABLE campaigns (
    id               BIGSERIAL PRIMARY KEY,
    name             TEXT NOT NULL,
    researcher_id    BIGINT NOT NULL REFERENCES researchers(id),
    spec_json        TEXT NOT NULL,
    model_spec       TEXT NOT NULL,
    classes_json     TEXT NOT NULL,
    manifest_version TEXT NOT NULL,
    num_params       BIGINT NOT NULL,
    forward_flops    BIGINT NOT NULL,
    state            TEXT NOT NULL,
    round            INTEGER NOT NULL DEFAULT 0,
    model_sha256     TEXT NOT NULL,
    message          TEXT NOT NULL DEFAULT '',
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL
);

CREATE TABLE model_versions (
    sha256      TEXT PRIMARY KEY,
    campaign_id BIGINT NOT NULL REFERENCES campaigns(id),
    round       INTEGER NOT NULL,
    size        BIGINT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE rounds (
    campaign_id     BIGINT NOT NULL REFERENCES campaigns(id),
    round           INTEGER NOT NULL,
    state           TEXT NOT NULL,
    base_model      TEXT NOT NULL,
    result_model    TEXT NOT NULL DEFAULT '',
    slots           INTEGER NOT NULL,
    needed          INTEGER NOT NULL,
    next_slot       INTEGER NOT NULL DEFAULT 0,
    issued          INTEGER NOT NULL DEFAULT 0,
    accepted        INTEGER NOT NULL DEFAULT 0,
    late            INTEGER NOT NULL DEFAULT 0,
    invalid         INTEGER NOT NULL DEFAULT 0,
    samples_trained BIGINT NOT NULL DEFAULT 0,
    opened_at       TIMESTAMPTZ NOT NULL,
    deadline        TIMESTAMPTZ NOT NULL,
    closed_at       TIMESTAMPTZ,
    metrics_json    TEXT,
    eval_error      TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (campaign_id, round)
);

CREATE TABLE work_units (
    id             BIGSERIAL PRIMARY KEY,
    campaign_id    BIGINT NOT NULL REFERENCES campaigns(id),
    round          INTEGER NOT NULL,
    slot           INTEGER NOT NULL,
    attempt        INTEGER NOT NULL,
    host_id        BIGINT NOT NULL REFERENCES hosts(id),
    seed           BIGINT NOT NULL,
    fragment_count INTEGER NOT NULL,
    flops          BIGINT NOT NULL,
    state          TEXT NOT NULL,
    issued_at      TIMESTAMPTZ NOT NULL,
    deadline       TIMESTAMPTZ NOT NULL,
    progress       DOUBLE PRECISION NOT NULL DEFAULT 0,
    finished_at    TIMESTAMPTZ,
    UNIQUE (campaign_id, round, slot, attempt)
);
CREATE INDEX work_units_round_state ON work_units(campaign_id, round, state);
CREATE INDEX work_units_host ON work_units(host_id, state);
-- A host holds at most one live work unit of a round.
CREATE UNIQUE INDEX work_units_one_live ON work_units(campaign_id, round, host_id) WHERE state = 'issued';

CREATE TABLE results (
    id          BIGSERIAL PRIMARY KEY,
    work_unit_id BIGINT NOT NULL REFERENCES work_units(id),
    host_id     BIGINT NOT NULL REFERENCES hosts(id),
    campaign_id INTEGER NOT NULL,
    round       INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    size        BIGINT NOT NULL,
    outcome     TEXT NOT NULL,
    reason      TEXT NOT NULL DEFAULT '',
    samples     BIGINT NOT NULL DEFAULT 0,
    loss        DOUBLE PRECISION NOT NULL DEFAULT 0,
    norm        DOUBLE PRECISION NOT NULL DEFAULT 0,
    credit      DOUBLE PRECISION NOT NULL DEFAULT 0,
    created_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX results_round ON results(campaign_id, round, outcome);
CREATE INDEX results_wu ON results(work_unit_id);
