-- Label feedback for continuous evaluation: the right answer for a sampled request, keyed like
-- the sample it labels (the endpoint and the request's id), so a label sent twice is stored
-- once and a different label for the same request replaces it (a correction). labelled_at is
-- when the answer became known, received_at when the store received it (or its correction):
-- their difference from the sample's time is the label delay the evaluation reports.
CREATE TABLE prediction_labels (
    endpoint     TEXT   NOT NULL,
    request_id   TEXT   NOT NULL,
    label        TEXT   NOT NULL,
    labelled_at  BIGINT NOT NULL,
    received_at  BIGINT NOT NULL,
    PRIMARY KEY (endpoint, request_id)
);
