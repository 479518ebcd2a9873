-- Scheduled SQL alerts: an organization's query, its schedule and the
-- condition on its first value; pipelines take due runs by a conditional
-- update of next_run_at.
CREATE TABLE sql_alerts (
    org_id        TEXT NOT NULL REFERENCES organizations(id),
    id            TEXT NOT NULL,
    name          TEXT NOT NULL,
    sql           TEXT NOT NULL,
    every_ms      BIGINT NOT NULL,
    op            TEXT NOT NULL,
    threshold     DOUBLE PRECISION NOT NULL,
    severity      TEXT NOT NULL,
    enabled       BIGINT NOT NULL DEFAULT 1,
    next_run_at   BIGINT NOT NULL,
    last_run_at   BIGINT,
    last_value    DOUBLE PRECISION,
    last_error    TEXT,
    last_fired_at BIGINT,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (org_id, id)
);
CREATE INDEX sql_alerts_due ON sql_alerts(next_run_at);
