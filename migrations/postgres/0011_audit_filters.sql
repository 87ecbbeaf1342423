-- A tenant reads its audit trail filtered by entity or actor. With only
-- (tenant_id, id), a filter that matched little walked the tenant's whole
-- history backwards for one page. These find a page directly.
CREATE INDEX audit_log_tenant_entity ON audit_log (tenant_id, entity, id);
CREATE INDEX audit_log_tenant_actor ON audit_log (tenant_id, actor, id);
