-- Calls SecureNet makes to Stripe (plan changes, issued invoices): one job
-- per thing to tell Stripe, unique per organization, kind and key so it is
-- queued once however many replicas see it; every HTTP attempt recorded.
CREATE TABLE stripe_jobs (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL,
    kind            TEXT NOT NULL,
    job_key         TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_until     INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    result          TEXT,
    created_at      INTEGER NOT NULL,
    completed_at    INTEGER,
    UNIQUE (org_id, kind, job_key)
);
CREATE INDEX stripe_jobs_due ON stripe_jobs(status, next_attempt_at);
CREATE TABLE stripe_requests (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id          TEXT NOT NULL,
    org_id          TEXT NOT NULL,
    method          TEXT NOT NULL,
    path            TEXT NOT NULL,
    idempotency_key TEXT,
    status          INTEGER,
    error           TEXT,
    at              INTEGER NOT NULL
);
CREATE INDEX stripe_requests_job ON stripe_requests(job_id, id);
