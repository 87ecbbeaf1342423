-- "What happened to this phone?" reads the audit log by the row's key (a
-- MAC, a slug). Without an index that walks the log backwards from the
-- newest row, which after a year of writes is millions of rows for a page.
-- The tenant second: a tenant's read finds its own rows of the key and
-- never walks another tenant's (nor its own whole trail, as it would by
-- the tenant's indexes); a global read sorts the few rows of one key.
CREATE INDEX audit_log_key ON audit_log (entity_key, tenant_id, id);
