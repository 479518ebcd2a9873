-- Tenant isolation: an email is unique within its organization only
-- (unique across all of them, one tenant could learn — and block —
-- another's users' addresses); a scan id remembers the report it
-- stored, so a different report under the same id is refused instead
-- of overwriting it.
CREATE TABLE users_v2 (
    id            TEXT PRIMARY KEY,
    org_id        TEXT NOT NULL REFERENCES organizations(id),
    email         TEXT NOT NULL COLLATE NOCASE,
    role          TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    last_login_at INTEGER,
    UNIQUE (org_id, email)
);
INSERT INTO users_v2 (id, org_id, email, role, password_hash, created_at, last_login_at)
    SELECT id, org_id, email, role, password_hash, created_at, last_login_at FROM users;
DROP TABLE users;
ALTER TABLE users_v2 RENAME TO users;
CREATE INDEX users_org ON users(org_id);
CREATE INDEX users_email ON users(email);
ALTER TABLE scans ADD COLUMN content_hash TEXT;
ALTER TABLE ml_training_sessions ADD COLUMN heartbeat_at INTEGER;
