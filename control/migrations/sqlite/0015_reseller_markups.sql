-- A reseller's (an MSP's) markup on a child organization's invoice, in
-- basis points (1500 = 15.00 %), set by the MSP; no row means none.
CREATE TABLE reseller_markups (
    org_id     TEXT PRIMARY KEY REFERENCES organizations(id),
    markup_bps INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
