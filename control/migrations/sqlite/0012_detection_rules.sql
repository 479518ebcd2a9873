-- Sigma detection rules, per organization. `scope` is `own` (the
-- organization's own stream) or `children` (an MSP's rule pack, applied to
-- every child organization's stream).
CREATE TABLE detection_rules (
    org_id      TEXT NOT NULL REFERENCES organizations(id),
    id          TEXT NOT NULL,
    title       TEXT NOT NULL,
    level       TEXT NOT NULL,
    yaml        TEXT NOT NULL,
    enabled     INTEGER NOT NULL DEFAULT 1,
    scope       TEXT NOT NULL DEFAULT 'own',
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (org_id, id)
);
