-- The audit log of mutating API calls.
CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id      TEXT NOT NULL,
    key_id      TEXT NOT NULL,
    role        TEXT NOT NULL,
    method      TEXT NOT NULL,
    route       TEXT NOT NULL,
    path        TEXT NOT NULL,
    status      INTEGER NOT NULL,
    at          INTEGER NOT NULL
);
CREATE INDEX audit_log_org ON audit_log(org_id, id);
