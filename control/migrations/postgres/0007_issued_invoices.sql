-- Issued invoices: a closed month's invoice, finalised once and then
-- served as stored (late usage no longer changes it). The first writer
-- wins (INSERT .. ON CONFLICT DO NOTHING), so every API replica may run
-- the monthly job. No foreign key: issued invoices outlive a deleted
-- organization (accounting records; see KEPT_ON_DELETE).
CREATE TABLE issued_invoices (
    org_id       TEXT NOT NULL,
    month        TEXT NOT NULL,
    number       TEXT NOT NULL UNIQUE,
    total_cents  BIGINT NOT NULL,
    document     TEXT NOT NULL,
    finalized_at BIGINT NOT NULL,
    PRIMARY KEY (org_id, month)
);
