-- Insights: the model registry, training sessions and notifications.
CREATE TABLE ml_models (
    org_id      TEXT NOT NULL REFERENCES organizations(id),
    id          TEXT NOT NULL,
    version     INTEGER NOT NULL,
    name        TEXT NOT NULL,
    model_type  TEXT NOT NULL,
    status      TEXT NOT NULL,
    accuracy    REAL,
    features    TEXT NOT NULL,
    threshold   REAL,
    artifact    TEXT,
    metrics     TEXT NOT NULL DEFAULT '{}',
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (org_id, id, version)
);
CREATE TABLE ml_training_sessions (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES organizations(id),
    model_id      TEXT NOT NULL,
    model_version INTEGER,
    status        TEXT NOT NULL,
    rows          INTEGER NOT NULL,
    duration_ms   INTEGER,
    metrics       TEXT NOT NULL DEFAULT '{}',
    error         TEXT,
    started_at    INTEGER NOT NULL,
    finished_at   INTEGER
);
CREATE INDEX ml_training_sessions_org ON ml_training_sessions(org_id, started_at);
CREATE TABLE notifications (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES organizations(id),
    kind        TEXT NOT NULL,
    severity    TEXT NOT NULL,
    title       TEXT NOT NULL,
    body        TEXT NOT NULL,
    ref_id      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    read_at     INTEGER,
    UNIQUE (org_id, kind, ref_id)
);
CREATE INDEX notifications_org ON notifications(org_id, created_at);
