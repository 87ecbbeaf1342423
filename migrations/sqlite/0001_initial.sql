-- dialtone schema, SQLite dialect. Keep in step with ../postgres/0001_initial.sql.
CREATE TABLE dialtone_meta (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    epoch BIGINT NOT NULL,
    pruned_txid BIGINT NOT NULL DEFAULT 0,
    pruned_seq BIGINT NOT NULL DEFAULT 0,
    -- Identifies this database, so a node never applies a snapshot taken from another.
    database_id TEXT NOT NULL
);
INSERT INTO dialtone_meta (singleton, epoch, database_id) VALUES (1, 1, lower(hex(randomblob(16))));

CREATE TABLE tenants (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    slug TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    default_region TEXT NOT NULL DEFAULT 'US',
    settings TEXT NOT NULL DEFAULT '{}',
    updated_at BIGINT NOT NULL
);

CREATE TABLE phones (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id BIGINT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    mac TEXT NOT NULL UNIQUE CHECK (length(mac) = 12),
    family TEXT NOT NULL,
    model TEXT,
    label TEXT,
    variables TEXT NOT NULL DEFAULT '{}',
    http_user TEXT,
    http_password TEXT,
    updated_at BIGINT NOT NULL
);
CREATE INDEX phones_tenant ON phones (tenant_id);

CREATE TABLE lines (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    phone_id BIGINT NOT NULL REFERENCES phones(id) ON DELETE CASCADE,
    position INTEGER NOT NULL CHECK (position >= 1),
    extension TEXT NOT NULL,
    display_name TEXT NOT NULL,
    auth_user TEXT NOT NULL,
    password TEXT,
    registrar TEXT NOT NULL,
    proxy TEXT,
    settings TEXT NOT NULL DEFAULT '{}',
    updated_at BIGINT NOT NULL,
    UNIQUE (phone_id, position)
);

CREATE TABLE templates (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    scope TEXT NOT NULL CHECK (scope IN ('family', 'model', 'tenant', 'phone')),
    family TEXT NOT NULL,
    scope_key TEXT NOT NULL DEFAULT '',
    file_pattern TEXT NOT NULL,
    body TEXT NOT NULL,
    version BIGINT NOT NULL DEFAULT 1,
    updated_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (scope, family, scope_key, file_pattern)
);

-- History of every template body; not mirrored (read by the admin API).
CREATE TABLE template_versions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    template_id BIGINT NOT NULL,
    version BIGINT NOT NULL,
    body TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (template_id, version)
);

CREATE TABLE directory_entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id BIGINT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    external_id TEXT,
    name TEXT NOT NULL,
    company TEXT,
    numbers TEXT NOT NULL DEFAULT '[]',
    updated_at BIGINT NOT NULL,
    UNIQUE (tenant_id, external_id)
);

CREATE TABLE directory_sources (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id BIGINT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('ldap', 'http')),
    priority INTEGER NOT NULL DEFAULT 10,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    settings TEXT NOT NULL DEFAULT '{}',
    secret TEXT,
    timeout_ms INTEGER NOT NULL DEFAULT 250 CHECK (timeout_ms > 0),
    updated_at BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    scope TEXT NOT NULL CHECK (scope IN ('global-admin', 'tenant-admin', 'tenant-read', 'lookup')),
    tenant_id BIGINT REFERENCES tenants(id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    revoked BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at BIGINT NOT NULL
);

-- Who changed what; written in the same transaction as the change. Not mirrored.
CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at BIGINT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    entity TEXT NOT NULL,
    entity_key TEXT NOT NULL,
    summary TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at ON audit_log (at);

-- Boots as the front ends saw them, written in batches off the hot path.
-- Not mirrored and has no change-log trigger, so boot storms do not churn the feed.
CREATE TABLE provisioning_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    mac TEXT NOT NULL,
    at BIGINT NOT NULL,
    remote_ip TEXT NOT NULL,
    user_agent TEXT,
    protocol TEXT NOT NULL,
    file TEXT NOT NULL,
    outcome TEXT NOT NULL,
    bytes BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX provisioning_history_mac_at ON provisioning_history (mac, at);
CREATE INDEX provisioning_history_at ON provisioning_history (at);

CREATE TABLE change_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    entity TEXT NOT NULL,
    row_id BIGINT NOT NULL,
    op TEXT NOT NULL,
    at BIGINT NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))
);

CREATE TRIGGER tenants_log_insert AFTER INSERT ON tenants
BEGIN
    INSERT INTO change_log (entity, row_id, op) VALUES ('tenants', NEW.id, 'I');
END;
CREATE TRIGGER tenants_log_update AFTER UPDATE ON tenants
BEGIN
    INSERT INTO change_log (entity, row_id, op) VALUES ('tenants', NEW.id, 'U');
END;
CREATE TRIGGER tenants_log_delete AFTER DELETE ON tenants
BEGIN
    INSERT INTO change_log (entity, row_id, op) VALUES ('tenants', OLD.id, 'D');
END;
CREATE TRIGGER tenants_log_rekey AFTER UPDATE OF id ON tenants WHEN OLD.id <> NEW.id
BEGIN
    INSERT INTO change_log (entity, row_id, op) VALUES ('tenants', OLD.id, 'D');
END;
CREATE TRIGGER phones_log_insert AFTER INSERT ON phones
BEGIN
    INSERT INTO change_log (entity, row_id, op) VALUES ('phones', NEW.id, 'I');
END;
CREATE TRIGGER phones_log_update AFTER UPDATE ON phones
BEGIN
    INSERT INTO change_log (entity, row_id, op) VALUES ('phones', NEW.id, 'U');
END;
CREATE TRIGGER phones_log_delete AFTER DELETE ON phones
BEGIN
    INSERT INTO change_log (entity, row_id, op) VALUES ('phones', OLD.id, 'D');
END;
CREATE TRIGGER phones_log_rekey AFTER UPDATE OF id ON phones WHEN OLD.id <> NEW.id
BEGIN
    INSERT INTO change_log (entity, row_id, op) VALUES ('phones', OLD.id, 'D');
END;
CREATE TRIGGER lines_log_insert AFTER INSERT ON lines
BEGIN
    INSERT INTO change_log (entity, row_id, op) VALUES ('lines', NEW.id, 'I');
END;
CREATE TRIGGER lines_log_update AFTER UPDATE ON lines
BEGIN
    INSERT INTO change_log (entity, row_id, op) VALUES ('lines', NEW.id, 'U');
END;
CREATE TRIGGER lines_log_delete AFTER DELETE ON lines
BEGIN
    INSERT INTO change_log (entity, row_id, op) VALUES ('lines', OLD.id, 'D');
END;
CREATE TRIGGER lines_log_rekey AFTER UPDATE OF id ON lines WHEN OLD.id <> NEW.id
BEGIN
    INSERT INTO change_log (entity, row_id, op) VALUES ('lines', OLD.id, 'D');
END;
CREATE TRIGGER templates_log_insert AFTER INSERT ON templates
BEGIN
    INSERT INTO change_log (entity, row_id, op) VALUES ('templates', NEW.id, 'I');
END;
CREATE TRIGGER templates_log_update AFTER UPDATE ON templates
BEGIN
    INSERT INTO change_log (entity, row_id, op) VALUES ('templates', NEW.id, 'U');
END;
CREATE TRIGGER templates_log_delete AFTER DELETE ON templates
BEGIN
    INSERT INTO change_log (entity, row_id, op) VALUES ('templates', OLD.id, 'D');
END;
CREATE TRIGGER templates_log_rekey AFTER UPDATE OF id ON templates WHEN OLD.id <> NEW.id
BEGIN
    INSERT INTO change_log (entity, row_id, op) VALUES ('templates', OLD.id, 'D');
END;
CREATE TRIGGER directory_entries_log_insert AFTER INSERT ON directory_entries
BEGIN
    INSERT INTO change_log (entity, row_id, op) VALUES ('directory_entries', NEW.id, 'I');
END;
CREATE TRIGGER directory_entries_log_update AFTER UPDATE ON directory_entries
BEGIN
    INSERT INTO change_log (entity, row_id, op) VALUES ('directory_entries', NEW.id, 'U');
END;
CREATE TRIGGER directory_entries_log_delete AFTER DELETE ON directory_entries
BEGIN
    INSERT INTO change_log (entity, row_id, op) VALUES ('directory_entries', OLD.id, 'D');
END;
CREATE TRIGGER directory_entries_log_rekey AFTER UPDATE OF id ON directory_entries WHEN OLD.id <> NEW.id
BEGIN
    INSERT INTO change_log (entity, row_id, op) VALUES ('directory_entries', OLD.id, 'D');
END;
CREATE TRIGGER directory_sources_log_insert AFTER INSERT ON directory_sources
BEGIN
    INSERT INTO change_log (entity, row_id, op) VALUES ('directory_sources', NEW.id, 'I');
END;
CREATE TRIGGER directory_sources_log_update AFTER UPDATE ON directory_sources
BEGIN
    INSERT INTO change_log (entity, row_id, op) VALUES ('directory_sources', NEW.id, 'U');
END;
CREATE TRIGGER directory_sources_log_delete AFTER DELETE ON directory_sources
BEGIN
    INSERT INTO change_log (entity, row_id, op) VALUES ('directory_sources', OLD.id, 'D');
END;
CREATE TRIGGER directory_sources_log_rekey AFTER UPDATE OF id ON directory_sources WHEN OLD.id <> NEW.id
BEGIN
    INSERT INTO change_log (entity, row_id, op) VALUES ('directory_sources', OLD.id, 'D');
END;
CREATE TRIGGER api_tokens_log_insert AFTER INSERT ON api_tokens
BEGIN
    INSERT INTO change_log (entity, row_id, op) VALUES ('api_tokens', NEW.id, 'I');
END;
CREATE TRIGGER api_tokens_log_update AFTER UPDATE ON api_tokens
BEGIN
    INSERT INTO change_log (entity, row_id, op) VALUES ('api_tokens', NEW.id, 'U');
END;
CREATE TRIGGER api_tokens_log_delete AFTER DELETE ON api_tokens
BEGIN
    INSERT INTO change_log (entity, row_id, op) VALUES ('api_tokens', OLD.id, 'D');
END;
CREATE TRIGGER api_tokens_log_rekey AFTER UPDATE OF id ON api_tokens WHEN OLD.id <> NEW.id
BEGIN
    INSERT INTO change_log (entity, row_id, op) VALUES ('api_tokens', OLD.id, 'D');
END;
