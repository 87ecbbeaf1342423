//! Rendering: the template context and escaping; the engine and its budget
//! are in `engine.rs`. Output is deterministic by construction: the engine
//! has no clock or random functions, the context's maps are sorted, and
//! lines come in key order.

use std::sync::Arc;

use dialtone_sync::{Family, Line, Phone, Purpose, SecretKey, Tenant};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::engine::{Budget, Engine, Escape, Reader};
use crate::error::ProvisionError;
use crate::templates::Resolved;

/// Vendor formats that are XML get XML escaping; the `key = value` ones get
/// newlines removed, so a value can never start a key of its own.
pub fn is_xml(family: Family) -> bool {
    !matches!(family, Family::Yealink | Family::Fanvil)
}

pub fn content_type(family: Family) -> &'static str {
    if is_xml(family) {
        "application/xml"
    } else {
        "text/plain; charset=utf-8"
    }
}

/// Compiles one template with the escaping of its family's file format.
pub fn compile(template: &Resolved, budget: &Budget) -> Result<Engine, ProvisionError> {
    let escape = if is_xml(template.family) {
        Escape::Xml
    } else {
        Escape::Text
    };
    Engine::compile(
        &template.label(),
        template.name,
        &template.body,
        escape,
        budget,
    )
}

#[derive(Serialize)]
struct PhoneCtx<'a> {
    mac: String,
    mac_upper: String,
    mac_colon: String,
    family: &'a str,
    model: &'a str,
    label: &'a str,
}

#[derive(Serialize)]
struct LineCtx<'a> {
    position: i32,
    extension: &'a str,
    display_name: &'a str,
    auth_user: &'a str,
    password: String,
    registrar: &'a str,
    proxy: &'a str,
    settings: minijinja::Value,
}

#[derive(Serialize)]
struct TenantCtx<'a> {
    slug: &'a str,
    name: &'a str,
    region: &'a str,
}

#[derive(Serialize)]
struct ServerCtx {
    base_url: String,
    directory_url: String,
}

#[derive(Serialize)]
struct FileCtx<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct RenderContext<'a> {
    phone: PhoneCtx<'a>,
    lines: Vec<LineCtx<'a>>,
    tenant: TenantCtx<'a>,
    settings: minijinja::Value,
    server: ServerCtx,
    file: FileCtx<'a>,
}

fn object(text: &str) -> Map<String, Value> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// Built-in defaults < tenant settings < phone variables.
fn merged_settings(tenant: Option<&Tenant>, phone: Option<&Phone>) -> Map<String, Value> {
    let mut settings = Map::new();
    for (k, v) in [
        ("timezone", Value::from("UTC")),
        ("utc_offset", Value::from("0")),
        ("ntp_server", Value::from("pool.ntp.org")),
        ("sip_port", Value::from(5060)),
        ("sip_transport", Value::from("udp")),
        ("language", Value::from("English")),
        ("line_keys", Value::Array(Vec::new())),
    ] {
        settings.insert(k.to_string(), v);
    }
    if let Some(t) = tenant {
        settings.extend(object(&t.settings));
    }
    if let Some(p) = phone {
        settings.extend(object(&p.variables));
    }
    settings
}

/// What previews show in place of a secret.
pub const MASK: &str = "********";

/// What a render needs besides the template.
pub struct Subject<'a> {
    /// Previews for admins show `********` for line passwords: the API never
    /// returns a secret.
    pub mask_secrets: bool,
    pub family: Family,
    pub phone: Option<&'a Phone>,
    pub lines: &'a [Arc<Line>],
    pub tenant: Option<&'a Tenant>,
    /// The model when no phone is known (model-common files).
    pub model: Option<&'a str>,
    pub file: &'a str,
}

/// Renders `template` for `subject`. A render with masked secrets is the
/// author's check or preview, and its errors say all the engine says; one
/// with the phone's real secrets is a fetch (or the self-check), and its
/// errors, which reach the log, the provisioning history (tenants read it)
/// and the failed-render memo, say only what failed where: a `throw` or an
/// engine message could carry a line's password there.
pub fn render(
    engine: &Engine,
    template: &Resolved,
    subject: &Subject<'_>,
    key: &SecretKey,
    base_url: &str,
    budget: &Budget,
) -> Result<Vec<u8>, ProvisionError> {
    let context = context(subject, key, base_url)?;
    let reader = if subject.mask_secrets {
        Reader::Author
    } else {
        Reader::Operator
    };
    engine.render_for(reader, &template.label(), &template.body, context, budget)
}

/// The render context of TEMPLATES.md, as the engine's value.
pub fn context(
    subject: &Subject<'_>,
    key: &SecretKey,
    base_url: &str,
) -> Result<minijinja::Value, ProvisionError> {
    let mac = subject.phone.map(|p| p.mac);
    let mac_text = mac.map(|m| m.to_string()).unwrap_or_default();
    let mac_colon = mac
        .map(|m| {
            m.0.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        })
        .unwrap_or_default();
    let mut lines = Vec::with_capacity(subject.lines.len());
    for line in subject.lines {
        let password = match &line.password {
            Some(_) if subject.mask_secrets => MASK.to_string(),
            Some(sealed) => key.open(Purpose::LinePassword, sealed).map_err(|e| {
                ProvisionError::Data(format!("line {} password: {e}", line.position))
            })?,
            None => String::new(),
        };
        lines.push(LineCtx {
            position: line.position,
            extension: &line.extension,
            display_name: &line.display_name,
            auth_user: &line.auth_user,
            password,
            registrar: &line.registrar,
            proxy: line.proxy.as_deref().unwrap_or(""),
            settings: crate::data::map(&object(&line.settings)),
        });
    }
    let context = RenderContext {
        phone: PhoneCtx {
            mac: mac_text.clone(),
            mac_upper: mac_text.to_ascii_uppercase(),
            mac_colon,
            family: subject.family.as_str(),
            model: subject
                .phone
                .and_then(|p| p.model.as_deref())
                .or(subject.model)
                .unwrap_or(""),
            label: subject.phone.and_then(|p| p.label.as_deref()).unwrap_or(""),
        },
        lines,
        tenant: TenantCtx {
            slug: subject.tenant.map(|t| &*t.slug).unwrap_or(""),
            name: subject.tenant.map(|t| &*t.name).unwrap_or(""),
            region: subject.tenant.map(|t| &*t.default_region).unwrap_or(""),
        },
        settings: crate::data::map(&merged_settings(subject.tenant, subject.phone)),
        server: ServerCtx {
            base_url: base_url.to_string(),
            directory_url: format!("{base_url}/{mac_text}-directory.xml"),
        },
        file: FileCtx { name: subject.file },
    };
    Ok(minijinja::Value::from(minijinja::value::Serde(&context)))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use dialtone_sync::{Family, Line, Purpose};

    use super::{compile, render, Subject};
    use crate::engine::{write_text, write_xml, Budget};
    use crate::error::ProvisionError;
    use crate::templates::{Origin, Resolved};

    /// A fetch's render error reaches the log, the provisioning history
    /// (tenants read it) and the failed-render memo: what failed and where,
    /// never a value the template put in its message. The author's check
    /// renders with masked secrets and sees it all.
    #[test]
    fn a_fetchs_render_error_carries_no_value_of_the_render() {
        let key = dialtone_sync::testing::test_key();
        let line = Line {
            id: 1,
            phone_id: 1,
            position: 1,
            extension: "101".into(),
            display_name: "Reception".into(),
            auth_user: "u101".into(),
            password: Some(key.seal(Purpose::LinePassword, "hunter2-secret")),
            registrar: "sip.example.net".into(),
            proxy: None,
            settings: "{}".into(),
            updated_at: 0,
        };
        let lines = [Arc::new(line)];
        let template = Resolved {
            origin: Origin::Draft,
            family: Family::Yealink,
            name: "{mac}.cfg",
            body: "ok\n{{ throw('pw=' ~ lines[0].password) }}".into(),
        };
        let budget = Budget::default();
        let engine = compile(&template, &budget).unwrap();
        let failure = |mask_secrets| {
            let subject = Subject {
                mask_secrets,
                family: Family::Yealink,
                phone: None,
                lines: &lines,
                tenant: None,
                model: None,
                file: "001565000001.cfg",
            };
            render(&engine, &template, &subject, &key, "http://x", &budget).unwrap_err()
        };
        let fetched = failure(false);
        let ProvisionError::Render {
            line,
            column,
            message,
            ..
        } = &fetched
        else {
            panic!("{fetched:?}");
        };
        assert_eq!((*line, column.is_some()), (Some(2), true), "{fetched}");
        assert_eq!(message, "invalid operation");
        assert!(!fetched.to_string().contains("pw="), "{fetched}");
        let checked = failure(true).to_string();
        assert!(checked.contains("pw=********"), "{checked}");
    }

    #[test]
    fn escapes() {
        let mut xml = String::new();
        write_xml(&mut xml, r#"a&b<c>"d'"#).unwrap();
        assert_eq!(xml, "a&amp;b&lt;c&gt;&quot;d&apos;");
        let mut text = String::new();
        write_text(&mut text, "pw\nsip.evil = 1\r\n").unwrap();
        assert_eq!(text, "pw sip.evil = 1  ");
    }
}
