CREATE TABLE runs (
    id          TEXT    NOT NULL PRIMARY KEY,
    pipeline    TEXT    NOT NULL,
    phase       TEXT    NOT NULL,
    params      TEXT    NOT NULL,
    spec        TEXT    NOT NULL,
    created_at  BIGINT  NOT NULL,
    finished_at BIGINT,
    message     TEXT
);

CREATE INDEX runs_newest_first ON runs (created_at DESC, id DESC);

CREATE TABLE steps (
    run_id           TEXT    NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    name             TEXT    NOT NULL,
    phase            TEXT    NOT NULL,
    cache_key        TEXT,
    cache_components TEXT,
    cached           BOOLEAN NOT NULL,
    attempts         INTEGER NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT,
    outputs          TEXT    NOT NULL,
    message          TEXT,
    PRIMARY KEY (run_id, name)
);

CREATE INDEX steps_by_cache_key ON steps (cache_key) WHERE cache_key IS NOT NULL;

CREATE TABLE attempts (
    run_id      TEXT    NOT NULL,
    step        TEXT    NOT NULL,
    attempt     INTEGER NOT NULL,
    phase       TEXT    NOT NULL,
    exit_code   INTEGER,
    started_at  BIGINT  NOT NULL,
    finished_at BIGINT,
    log_ref     TEXT,
    message     TEXT,
    PRIMARY KEY (run_id, step, attempt),
    FOREIGN KEY (run_id, step) REFERENCES steps (run_id, name) ON DELETE CASCADE
);

CREATE TABLE artifacts (
    run_id     TEXT    NOT NULL,
    step       TEXT    NOT NULL,
    output     TEXT    NOT NULL,
    digest     TEXT    NOT NULL,
    size       BIGINT  NOT NULL,
    kind       TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    PRIMARY KEY (run_id, step, output),
    FOREIGN KEY (run_id, step) REFERENCES steps (run_id, name) ON DELETE CASCADE
);

CREATE INDEX artifacts_by_digest ON artifacts (digest);

CREATE TABLE cache_entries (
    key        TEXT   NOT NULL PRIMARY KEY,
    outputs    TEXT   NOT NULL,
    run_id     TEXT   NOT NULL,
    step       TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE INDEX cache_entries_by_age ON cache_entries (created_at);

CREATE TABLE cache_claims (
    key        TEXT   NOT NULL PRIMARY KEY,
    owner      TEXT   NOT NULL,
    claimed_at BIGINT NOT NULL
);
