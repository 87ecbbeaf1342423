-- A deleted template's versions go with it. No route reads them once the
-- template is gone (a version is read through its live template), and
-- left behind they let a tenant grow the database without bound: create
-- a template, save it fifty times, delete it, again. The audit trail
-- keeps who changed what, and when, with the bodies' hashes.
DELETE FROM template_versions v
    WHERE NOT EXISTS (SELECT 1 FROM templates t WHERE t.id = v.template_id);
ALTER TABLE template_versions ADD CONSTRAINT template_versions_template_id_fkey
    FOREIGN KEY (template_id) REFERENCES templates (id) ON DELETE CASCADE;
