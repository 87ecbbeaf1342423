//! Text holding U+0000 is bad input on either backend
//! ([`crate::model::NUL_TEXT`]). PostgreSQL refuses it with an error that
//! names no field; SQLite stores it. Checking every write's text here,
//! before the first statement, gives both backends the same answer, and
//! names the field.
//!
//! An import's batch ([`Mutation::UpsertPhones`]) is checked where its rows
//! are parsed, which can name the file's line and column; its packed text
//! is not scanned again.

use super::{Audit, Mutation, PhoneInput, Target};

/// A refusal's reason: the field, then why.
pub(crate) fn reason(field: &str) -> String {
    format!("{field} {}", crate::model::NUL_TEXT)
}

/// A directory entry's or source's key, as a change or a `Target` holds it.
fn keyed<'a>(tenant: &'a str, key: (&'a str, &'a str)) -> Option<String> {
    first([("tenant", Some(tenant)), (key.0, Some(key.1))])
}

/// The first named text that holds U+0000.
fn first<'a>(fields: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> Option<String> {
    fields
        .into_iter()
        .find(|(_, text)| text.is_some_and(|t| t.contains('\0')))
        .map(|(name, _)| name.to_string())
}

impl PhoneInput {
    /// The first field holding U+0000, named as an import's columns are.
    pub fn nul_field(&self) -> Option<String> {
        let phone = first([
            ("tenant", Some(self.tenant.as_str())),
            ("model", self.model.as_deref()),
            ("label", self.label.as_deref()),
            ("variables", Some(self.variables.as_str())),
            ("http_user", self.http_user.as_deref()),
            ("http_password", self.http_password.as_deref()),
        ]);
        phone.or_else(|| {
            self.lines.iter().enumerate().find_map(|(k, l)| {
                let field = first([
                    ("extension", Some(l.extension.as_str())),
                    ("display_name", Some(l.display_name.as_str())),
                    ("auth_user", Some(l.auth_user.as_str())),
                    ("password", l.password.as_deref()),
                    ("registrar", Some(l.registrar.as_str())),
                    ("proxy", l.proxy.as_deref()),
                    ("line_settings", Some(l.settings.as_str())),
                ])?;
                Some(format!("line {} {field}", k + 1))
            })
        })
    }
}

impl Target {
    fn nul_field(&self) -> Option<String> {
        match self {
            Target::Tenant { slug } => first([("slug", Some(slug.as_str()))]),
            Target::Phone { .. } | Target::Template { .. } | Target::Token { .. } => None,
            Target::DirectoryEntry {
                tenant,
                external_id,
            } => keyed(tenant, ("external_id", external_id)),
            Target::DirectorySource { tenant, name } => keyed(tenant, ("name", name)),
        }
    }
}

impl Mutation {
    /// The first text field of this change holding U+0000, as `what field`
    /// (`tenant name`, `template body`, `phone line 2 display_name`).
    /// `None` for an import's batch: see the module's note.
    pub fn nul_field(&self) -> Option<String> {
        let (what, field) = match self {
            Mutation::UpsertTenant(t) | Mutation::CreateTenant(t) => (
                "tenant",
                first([
                    ("slug", Some(t.slug.as_str())),
                    ("name", Some(t.name.as_str())),
                    ("default_region", Some(t.default_region.as_str())),
                    ("settings", Some(t.settings.as_str())),
                ]),
            ),
            Mutation::UpsertPhone(p) | Mutation::CreatePhone(p) => ("phone", p.nul_field()),
            Mutation::UpsertPhones(_) => return None,
            Mutation::UpsertDirectoryEntry(e) | Mutation::CreateDirectoryEntry(e) => {
                let numbers = e.numbers.iter().flat_map(|n| {
                    [
                        ("number", Some(&*n.number)),
                        ("number kind", Some(&*n.kind)),
                    ]
                });
                let fields = [
                    ("tenant", Some(e.tenant.as_str())),
                    ("external_id", Some(e.external_id.as_str())),
                    ("name", Some(e.name.as_str())),
                    ("company", e.company.as_deref()),
                ];
                ("directory entry", first(fields.into_iter().chain(numbers)))
            }
            Mutation::UpsertTenantTemplate {
                tenant,
                template: t,
            } => (
                "template",
                first([
                    ("tenant", Some(tenant.as_str())),
                    ("file_pattern", Some(t.file_pattern.as_str())),
                    ("body", Some(t.body.as_str())),
                    ("updated_by", Some(t.updated_by.as_str())),
                ]),
            ),
            Mutation::UpsertTemplate(t) | Mutation::CreateTemplate(t) => (
                "template",
                first([
                    ("scope_key", Some(t.scope_key.as_str())),
                    ("file_pattern", Some(t.file_pattern.as_str())),
                    ("body", Some(t.body.as_str())),
                    ("updated_by", Some(t.updated_by.as_str())),
                ]),
            ),
            Mutation::DeleteTenant { slug } | Mutation::DeleteEmptyTenant { slug } => {
                ("tenant", first([("slug", Some(slug.as_str()))]))
            }
            Mutation::DeletePhone { .. }
            | Mutation::ReplacePhoneMac { .. }
            | Mutation::RevokeApiToken { .. }
            | Mutation::DeleteTemplate { .. } => return None,
            Mutation::DeleteDirectoryEntry {
                tenant,
                external_id,
            } => (
                "directory entry",
                keyed(tenant, ("external_id", external_id)),
            ),
            Mutation::ReplaceDirectory { tenant, keep, .. } => (
                "directory",
                first(
                    std::iter::once(("tenant", Some(tenant.as_str())))
                        .chain(keep.iter().map(|key| ("external_id", Some(key.as_str())))),
                ),
            ),
            Mutation::UpsertDirectorySource(s) | Mutation::CreateDirectorySource(s) => (
                "directory source",
                first([
                    ("tenant", Some(s.tenant.as_str())),
                    ("name", Some(s.name.as_str())),
                    ("settings", Some(s.settings.as_str())),
                    ("secret", s.secret.as_deref()),
                ]),
            ),
            Mutation::DeleteDirectorySource { tenant, name } => {
                ("directory source", keyed(tenant, ("name", name)))
            }
            Mutation::CreateApiToken(t) => (
                "token",
                first([
                    ("name", Some(t.name.as_str())),
                    ("token_hash", Some(t.token_hash.as_str())),
                    ("tenant", t.tenant.as_deref()),
                ]),
            ),
            Mutation::Expect { target, etag } => (
                "expected",
                target
                    .nul_field()
                    .or_else(|| first([("etag", Some(etag.as_str()))])),
            ),
        };
        field.map(|field| format!("{what} {field}"))
    }
}

impl Audit {
    /// The audit row is written in the same transaction as its changes, so
    /// its text is held to the same rule.
    pub fn nul_field(&self) -> Option<String> {
        let field = first([
            ("actor", Some(self.actor.as_str())),
            ("tenant", self.tenant.as_deref()),
            ("action", Some(self.action.as_str())),
            ("entity", Some(self.entity.as_str())),
            ("entity_key", Some(self.entity_key.as_str())),
        ])?;
        Some(format!("audit {field}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Family, TemplateScope};
    use crate::store::TemplateInput;
    use crate::testing::build;

    #[test]
    fn every_kind_of_text_is_named() {
        let tenant = |name: &str| match build::tenant("acme", "US") {
            Mutation::UpsertTenant(mut t) => {
                t.name = name.into();
                Mutation::UpsertTenant(t)
            }
            other => other,
        };
        assert_eq!(tenant("Acme").nul_field(), None);
        let replace = |key: &str| Mutation::ReplaceDirectory {
            tenant: "acme".into(),
            keep: vec!["1".into(), key.into()],
            most_deleted_percent: 100,
        };
        assert_eq!(replace("2").nul_field(), None);
        assert_eq!(
            replace("2\0").nul_field().as_deref(),
            Some("directory external_id")
        );
        assert_eq!(tenant("Ac\0me").nul_field().as_deref(), Some("tenant name"));
        let template = |body: &str| {
            Mutation::UpsertTemplate(TemplateInput {
                scope: TemplateScope::Tenant,
                family: Family::Yealink,
                scope_key: "1".into(),
                file_pattern: "{mac}.cfg".into(),
                body: body.into(),
                updated_by: "ops".into(),
                keep_versions: None,
            })
        };
        assert_eq!(template("#!version:1.0.0.1\n").nul_field(), None);
        assert_eq!(
            template("a\0b").nul_field().as_deref(),
            Some("template body")
        );
        let Mutation::UpsertPhone(mut phone) = build::phone("acme", 1, 2) else {
            unreachable!("the builder makes an upsert")
        };
        phone.lines[1].display_name = "Back\0Office".into();
        assert_eq!(
            Mutation::CreatePhone(phone).nul_field().as_deref(),
            Some("phone line 2 display_name")
        );
        let expect = Mutation::Expect {
            target: Target::DirectorySource {
                tenant: "acme".into(),
                name: "l\0dap".into(),
            },
            etag: "x".into(),
        };
        assert_eq!(expect.nul_field().as_deref(), Some("expected name"));
        assert_eq!(
            Mutation::DeleteTenant {
                slug: "acme\0".into()
            }
            .nul_field()
            .as_deref(),
            Some("tenant slug")
        );
    }
}
