CREATE TABLE deleted_organizations (
    id          TEXT PRIMARY KEY,
    deleted_at  INTEGER NOT NULL
);
