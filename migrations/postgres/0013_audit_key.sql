-- "What happened to this phone?" reads the audit log by the row's key (a
-- MAC, a slug). Without an index that walks the log backwards from the
-- newest row, which after a year of writes is millions of rows for a page.
CREATE INDEX audit_log_key ON audit_log (entity_key, id);
