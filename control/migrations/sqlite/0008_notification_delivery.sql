-- Notification delivery: per-organization channels (webhook, email)
-- and one delivery row per (channel, notification) — the delivery log.
CREATE TABLE notification_channels (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES organizations(id),
    kind          TEXT NOT NULL,
    target        TEXT NOT NULL,
    secret        TEXT,
    min_severity  TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE INDEX notification_channels_org ON notification_channels(org_id);
CREATE TABLE deliveries (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES organizations(id),
    channel_id      TEXT NOT NULL,
    notification_id TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    delivered_at    INTEGER,
    UNIQUE (channel_id, notification_id)
);
CREATE INDEX deliveries_due ON deliveries(status, next_attempt_at);
CREATE INDEX deliveries_org ON deliveries(org_id, created_at);
