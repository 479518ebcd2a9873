-- Devices can be retired (they stop counting against the limit), and
-- the platform operator can set an organization's own limits.
ALTER TABLE devices ADD COLUMN retired_at INTEGER;
ALTER TABLE organizations ADD COLUMN limits_override TEXT;
