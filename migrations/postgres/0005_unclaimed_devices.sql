-- Phones that asked for their own files but are nobody's yet (issue 17).
-- tenant_id 0 is the operator's "unassigned" list: ids start at 1 and are
-- never reused, so no tenant ever reads it, nor a deleted tenant's rows.
-- Not mirrored: admins read it rarely, straight from here.
CREATE TABLE unclaimed_devices (
    tenant_id BIGINT NOT NULL,
    mac TEXT NOT NULL,
    family TEXT,
    model TEXT,
    firmware TEXT,
    source TEXT NOT NULL,
    first_seen BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, mac)
);
-- The per-tenant bound drops the oldest last_seen first.
CREATE INDEX unclaimed_devices_seen ON unclaimed_devices (tenant_id, last_seen);
