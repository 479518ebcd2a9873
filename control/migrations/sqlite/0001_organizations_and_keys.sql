CREATE TABLE organizations (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL,
    owner_email         TEXT NOT NULL,
    plan                TEXT NOT NULL,
    max_devices         INTEGER NOT NULL,
    max_scans_per_month INTEGER NOT NULL,
    log_retention_days  INTEGER NOT NULL,
    parent_id           TEXT REFERENCES organizations(id),
    created_at          INTEGER NOT NULL
);
CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    org_id       TEXT NOT NULL REFERENCES organizations(id),
    name         TEXT NOT NULL,
    role         TEXT NOT NULL,
    hash         BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER
);
CREATE INDEX api_keys_org ON api_keys(org_id);
