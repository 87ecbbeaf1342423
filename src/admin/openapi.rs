//! The OpenAPI document, generated from the handlers' annotations and
//! served at `/openapi.json` (no token needed: it describes, it reveals
//! nothing).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::body::Bytes;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::schema::{Object, Ref, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::{
    audit, directory, error, fleet, phones, preview, resync, sources, templates, tenants, tokens,
    unclaimed, versions,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "dialtone admin API", description = "Tenants, phones, templates, directories, tokens and audit. Every write is one transaction with its audit row and reaches every node through the change log."),
    // Answered from the mirror, the render pool or memory; the routes that
    // use the database are `DatabaseRoutes`, added by `DatabaseBound`.
    paths(
        tenants::list, tenants::show,
        phones::list, phones::show,
        preview::phone_files, resync::list,
        templates::list, templates::validate, templates::show, templates::shipped,
        templates::shipped_one, preview::template_phones, preview::preview,
        directory::list_entries, directory::show_entry,
        sources::list_sources, sources::show_source, sources::test_source,
        tokens::list, tokens::whoami,
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail)),
    modifiers(&BearerAuth, &DatabaseBound),
    tags(
        (name = "tenants"), (name = "phones"), (name = "templates"), (name = "directory"),
        (name = "tokens"), (name = "audit"), (name = "import"), (name = "resync"), (name = "unclaimed"),
    )
)]
pub struct ApiDoc;

/// The operations of `router()`'s `database` router, the ones a tenant runs
/// under its share of the pool. A test holds this list to the router both
/// ways: an operation is here exactly when the share's layer guards it.
#[derive(OpenApi)]
#[openapi(paths(
    tenants::create,
    tenants::update,
    tenants::remove,
    fleet::fleet,
    phones::create,
    phones::update,
    phones::remove,
    audit::history,
    resync::resync_phone,
    resync::resync_tenant,
    templates::create,
    templates::update,
    templates::remove,
    versions::versions,
    versions::version,
    versions::diff,
    versions::rollback,
    directory::create_entry,
    directory::update_entry,
    directory::remove_entry,
    sources::create_source,
    sources::update_source,
    sources::remove_source,
    tokens::create,
    tokens::revoke,
    audit::list,
    audit::import,
    unclaimed::tenant_list,
    unclaimed::unassigned_list,
    unclaimed::counts,
    unclaimed::claim,
))]
struct DatabaseRoutes;

/// Adds [`DatabaseRoutes`] to the document, each operation with the 429 the
/// share's layer answers, so that no handler's annotation has to repeat it.
struct DatabaseBound;

impl Modify for DatabaseBound {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let mut routes = DatabaseRoutes::openapi();
        for item in routes.paths.paths.values_mut() {
            for operation in operations(item) {
                add_busy(&mut operation.responses.responses);
                add_body_refusals(&mut operation.responses.responses);
            }
        }
        openapi.merge(routes);
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
        &mut item.head,
        &mut item.options,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

const BUSY: &str = "`busy`: the caller's tenant already runs its share of requests that use \
    the database, or the node's tenants together run all the pool leaves them, or too many \
    request bodies are being received; nothing was done. Never for a global-admin token.";

/// What the share's layer answers a tenant's body that it reads first.
fn add_body_refusals(responses: &mut BTreeMap<String, RefOr<utoipa::openapi::Response>>) {
    for (status, text) in [
        (
            "408",
            "`timeout`: a tenant's request body did not arrive within 10 s; nothing was done.",
        ),
        (
            "413",
            "`too_large`: the request body is over 2 MiB; nothing was done.",
        ),
    ] {
        responses.entry(status.into()).or_insert_with(|| {
            ResponseBuilder::new()
                .description(text)
                .content(
                    "application/json",
                    Content::new(Some(Ref::from_schema_name("ErrorBody"))),
                )
                .build()
                .into()
        });
    }
}

/// The share's 429, kept beside one the handler documents for a limit of
/// its own (a resync queue's), which has the same body.
fn add_busy(responses: &mut BTreeMap<String, RefOr<utoipa::openapi::Response>>) {
    let retry_after = HeaderBuilder::new()
        .schema(Object::with_type(Type::Integer))
        .description(Some("Seconds to wait before retrying."))
        .build();
    match responses.get_mut("429") {
        Some(RefOr::T(own)) => {
            own.description = match own.description.trim() {
                "" => BUSY.to_string(),
                text => format!("{text} Or {BUSY}"),
            };
            own.headers.insert("Retry-After".into(), retry_after);
        }
        _ => {
            let busy = ResponseBuilder::new()
                .description(BUSY)
                .header("Retry-After", retry_after)
                .content(
                    "application/json",
                    Content::new(Some(Ref::from_schema_name("ErrorBody"))),
                )
                .build();
            responses.insert("429".into(), busy.into());
        }
    }
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as served. It is the same for the process's life, and
/// anyone may ask for it without a token: built and serialised on each
/// request, it was work any client could make the node do at will.
static DOCUMENT: LazyLock<Bytes> = LazyLock::new(|| {
    serde_json::to_vec(&ApiDoc::openapi())
        .expect("the OpenAPI document serialises")
        .into()
});

pub async fn document() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        DOCUMENT.clone(),
    )
        .into_response()
}
