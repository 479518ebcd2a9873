-- Threat-intelligence lists, per organization: the indicators as the JSON
-- array the API normalized, replaced whole on upload.
CREATE TABLE threat_lists (
    org_id      TEXT NOT NULL REFERENCES organizations(id),
    name        TEXT NOT NULL,
    level       TEXT NOT NULL,
    count       INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    indicators  TEXT NOT NULL,
    PRIMARY KEY (org_id, name)
);
