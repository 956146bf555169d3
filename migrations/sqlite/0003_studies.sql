-- Tuning studies and their trial ledgers. A study's spec is kept whole so that it can be
-- resumed without its file; each trial is one row (its parameters, state, metric series and
-- objective as JSON in body), written as the engine records it, so a study of any size is
-- updated trial by trial.
CREATE TABLE studies (
    id          TEXT   PRIMARY KEY,
    name        TEXT   NOT NULL,
    phase       TEXT   NOT NULL,
    spec        TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    finished_at BIGINT,
    message     TEXT
);
CREATE INDEX studies_by_name ON studies (name, created_at);

CREATE TABLE study_trials (
    study_id   TEXT    NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
    idx        BIGINT  NOT NULL,
    name       TEXT    NOT NULL,
    state      TEXT    NOT NULL,
    run_id     TEXT,
    body       TEXT    NOT NULL,
    updated_at BIGINT  NOT NULL,
    PRIMARY KEY (study_id, idx)
);
