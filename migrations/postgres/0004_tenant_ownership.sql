-- What a tenant owns stays with that tenant (issue 14).
--
-- A phone-scope template belongs to its phone: the store deletes it with
-- the phone, and when the phone moves to another tenant. Templates left
-- behind by phones deleted before this migration go now.
DELETE FROM templates WHERE scope = 'phone' AND scope_key NOT IN (SELECT mac FROM phones);

-- Audit rows and provisioning history carry the owning tenant's id, not
-- only its slug or the MAC: a new tenant that reuses a slug, or the next
-- owner of a MAC, never reads the previous owner's rows. Existing rows are
-- given to today's owner; rows of tenants that no longer exist to nobody
-- (global admins still read them).
ALTER TABLE audit_log ADD COLUMN tenant_id BIGINT;
UPDATE audit_log SET tenant_id = (SELECT id FROM tenants WHERE tenants.slug = audit_log.tenant);
CREATE INDEX audit_log_tenant_id ON audit_log (tenant_id, id);

ALTER TABLE provisioning_history ADD COLUMN tenant_id BIGINT;
UPDATE provisioning_history
   SET tenant_id = (SELECT tenant_id FROM phones WHERE phones.mac = provisioning_history.mac);

-- Tenant-scope templates of tenants that no longer exist go too.
DELETE FROM templates WHERE scope = 'tenant' AND scope_key NOT IN (SELECT CAST(id AS TEXT) FROM tenants);
