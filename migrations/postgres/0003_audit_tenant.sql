-- The tenant an audited write touched (NULL: platform-wide), so a tenant's
-- admins can read their own audit trail and nobody else's.
ALTER TABLE audit_log ADD COLUMN tenant TEXT;
CREATE INDEX audit_log_tenant_at ON audit_log (tenant, at);
