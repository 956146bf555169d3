-- Documents a run keeps beside its rows, one JSON body per (run, kind, key): the operator's
-- run state ("state"), launcher reports ("report", keyed NODE/ATTEMPT) and metric series
-- pushed by steps ("metrics", keyed by step).
CREATE TABLE run_documents (
    run_id     TEXT   NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    kind       TEXT   NOT NULL,
    key        TEXT   NOT NULL,
    body       JSONB  NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (run_id, kind, key)
);
