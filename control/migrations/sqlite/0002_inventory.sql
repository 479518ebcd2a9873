ALTER TABLE organizations ADD COLUMN allow_overage INTEGER NOT NULL DEFAULT 0;
CREATE TABLE devices (
    org_id      TEXT NOT NULL REFERENCES organizations(id),
    device_id   TEXT NOT NULL,
    ip          TEXT,
    mac         TEXT,
    hostname    TEXT,
    os          TEXT,
    vendor      TEXT,
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    PRIMARY KEY (org_id, device_id)
);
CREATE INDEX devices_ip ON devices(org_id, ip);
CREATE INDEX devices_mac ON devices(org_id, mac);
CREATE TABLE scans (
    org_id      TEXT NOT NULL REFERENCES organizations(id),
    scan_id     TEXT NOT NULL,
    month       TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (org_id, scan_id)
);
CREATE INDEX scans_month ON scans(org_id, month);
