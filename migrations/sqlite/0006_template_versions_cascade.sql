-- A deleted template's versions go with it. No route reads them once the
-- template is gone (a version is read through its live template), and
-- left behind they let a tenant grow the database without bound: create
-- a template, save it fifty times, delete it, again. The audit trail
-- keeps who changed what, and when, with the bodies' hashes. SQLite adds
-- a foreign key only by making the table again.
CREATE TABLE template_versions_cascading (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    template_id BIGINT NOT NULL REFERENCES templates (id) ON DELETE CASCADE,
    version BIGINT NOT NULL,
    body TEXT NOT NULL,
    updated_by TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (template_id, version)
);
INSERT INTO template_versions_cascading (id, template_id, version, body, updated_by, updated_at)
    SELECT v.id, v.template_id, v.version, v.body, v.updated_by, v.updated_at
    FROM template_versions v
    WHERE EXISTS (SELECT 1 FROM templates t WHERE t.id = v.template_id);
DROP TABLE template_versions;
ALTER TABLE template_versions_cascading RENAME TO template_versions;
