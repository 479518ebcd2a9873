-- Sign-in looks an address up as lower(email) = lower(?) (the same
-- statement runs on PostgreSQL, which has no NOCASE collation).
CREATE INDEX users_email_lower ON users(lower(email));
