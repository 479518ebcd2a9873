-- Billing: plan history (for prorated invoices), the Stripe
-- subscription, processed Stripe events (idempotency) and invoice
-- payments.
CREATE TABLE plan_changes (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    org_id  TEXT NOT NULL REFERENCES organizations(id),
    plan    TEXT NOT NULL,
    at      INTEGER NOT NULL,
    source  TEXT NOT NULL
);
CREATE INDEX plan_changes_org ON plan_changes(org_id, at);
CREATE TABLE subscriptions (
    org_id                 TEXT PRIMARY KEY REFERENCES organizations(id),
    stripe_customer_id     TEXT,
    stripe_subscription_id TEXT UNIQUE,
    status                 TEXT NOT NULL,
    last_event_at          INTEGER NOT NULL,
    updated_at             INTEGER NOT NULL
);
CREATE TABLE stripe_events (
    id          TEXT PRIMARY KEY,
    type        TEXT NOT NULL,
    org_id      TEXT,
    outcome     TEXT NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE TABLE invoice_payments (
    stripe_invoice_id TEXT PRIMARY KEY,
    org_id            TEXT NOT NULL REFERENCES organizations(id),
    status            TEXT NOT NULL,
    amount_cents      INTEGER NOT NULL,
    period            TEXT,
    at                INTEGER NOT NULL
);
