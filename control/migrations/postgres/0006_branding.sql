-- White-label branding of an organization (enterprise and MSP plans): a
-- JSON object (name, logo_url, colours, sender), applied to its
-- notifications (and an MSP's to its children without their own).
CREATE TABLE branding (
    org_id     TEXT PRIMARY KEY REFERENCES organizations(id),
    branding   TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
