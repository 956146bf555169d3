-- Payload samples that model servers ship: one row per sampled request, keyed by the endpoint
-- and the request's id, so a batch shipped twice is stored once. The sample (its inputs'
-- statistics, the prediction, the version, the latency) is kept whole as JSON in body; it is
-- what continuous evaluation joins labels to, by request id.
CREATE TABLE prediction_samples (
    endpoint    TEXT   NOT NULL,
    request_id  TEXT   NOT NULL,
    version     TEXT   NOT NULL,
    body        JSONB  NOT NULL,
    stored_at   BIGINT NOT NULL,
    PRIMARY KEY (endpoint, request_id)
);
CREATE INDEX prediction_samples_by_time ON prediction_samples (endpoint, stored_at);
