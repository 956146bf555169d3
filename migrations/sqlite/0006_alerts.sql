-- Alerts of endpoints: one row per episode, from the first breach to its resolution, keyed by
-- the endpoint, what the alert is about (its key: `drift/all`, `alertmanager/FINGERPRINT`)
-- and when the breach was first seen, so an episode moving on (pending, firing, resolved)
-- updates its row and a new breach of the same key starts a new one. kind and phase are
-- core's names for them (AlertKind, AlertPhase); action and run say what the endpoint did
-- about the alert, once it did something.
CREATE TABLE endpoint_alerts (
    endpoint      TEXT   NOT NULL,
    key           TEXT   NOT NULL,
    active_since  BIGINT NOT NULL,
    kind          TEXT   NOT NULL,
    phase         TEXT   NOT NULL,
    summary       TEXT   NOT NULL,
    window_start  BIGINT NOT NULL,
    window_end    BIGINT NOT NULL,
    value         REAL,
    threshold     REAL,
    firing_since  BIGINT,
    last_breach   BIGINT NOT NULL,
    ended_at      BIGINT,
    action        TEXT,
    run           TEXT,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (endpoint, key, active_since)
);
CREATE INDEX endpoint_alerts_by_update ON endpoint_alerts (endpoint, updated_at);
