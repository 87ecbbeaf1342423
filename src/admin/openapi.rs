//! The OpenAPI document, generated from the handlers' annotations and
//! served at `/openapi.json` (no token needed: it describes, it reveals
//! nothing).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use axum::body::Bytes;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::schema::{Object, Ref, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::directory_cmd::EXPIRES_DAYS;

use super::{
    audit, bans, directory, error, fleet, phone_swap, phones, preview, resync, sources, templates,
    tenants, tokens, unclaimed, versions,
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
        bans::list, bans::lift,
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail)),
    // In this order: the last one sees every operation.
    modifiers(&DatabaseBound, &BodyBound, &PoolBound, &TokenBounds, &BearerAuth),
    tags(
        (name = "tenants"), (name = "phones"), (name = "templates"), (name = "directory"),
        (name = "tokens"), (name = "audit"), (name = "import"), (name = "resync"), (name = "unclaimed"),
        (name = "bans"),
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
    phone_swap::replace,
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

/// Adds [`DatabaseRoutes`] to the document, each operation with what the
/// share's layer and the store answer, so that no handler's annotation has
/// to repeat it.
struct DatabaseBound;

impl Modify for DatabaseBound {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let mut routes = DatabaseRoutes::openapi();
        for_each_operation(&mut routes, |operation| {
            let responses = &mut operation.responses.responses;
            add_response(responses, "429", BUSY, true);
            add_body_refusals(responses);
            add_response(responses, "503", DATABASE_DOWN, true);
        });
        openapi.merge(routes);
    }
}

/// The operations of `router()`'s `bodies` router: a tenant's body is read
/// first, then the request runs under one of its tenant's check places.
#[derive(OpenApi)]
#[openapi(paths(templates::validate, preview::preview, sources::test_source))]
struct BodyRoutes;

struct BodyBound;

impl Modify for BodyBound {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for_each_operation_of(openapi, BodyRoutes::openapi(), |operation| {
            let responses = &mut operation.responses.responses;
            add_response(responses, "429", CHECKS_BUSY, true);
            add_body_refusals(responses);
        });
    }
}

/// Every handler that waits on the render pool (a render, a diff) or the
/// walk lane (a walk over a tenant's data), which refuse work past their
/// queues: `busy`, 503.
#[derive(OpenApi)]
#[openapi(paths(
    phones::list,
    preview::phone_files,
    preview::preview,
    preview::template_phones,
    templates::list,
    templates::validate,
    templates::create,
    templates::update,
    versions::diff,
    versions::rollback,
    directory::list_entries,
    directory::show_entry,
    directory::create_entry,
    directory::update_entry,
    directory::remove_entry,
    fleet::fleet,
    resync::resync_tenant,
))]
struct PoolRoutes;

struct PoolBound;

impl Modify for PoolBound {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for_each_operation_of(openapi, PoolRoutes::openapi(), |operation| {
            add_response(&mut operation.responses.responses, "503", POOL_BUSY, true);
        });
    }
}

/// A new token's `expires_days` bounds, from the constant the API and the
/// CLI check: utoipa's `minimum`/`maximum` take literals, which would be
/// copies free to drift from it.
struct TokenBounds;

impl Modify for TokenBounds {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let new_token = openapi
            .components
            .as_mut()
            .and_then(|c| c.schemas.get_mut("NewToken"));
        let Some(RefOr::T(Schema::Object(new_token))) = new_token else {
            return;
        };
        if let Some(RefOr::T(Schema::Object(days))) = new_token.properties.get_mut("expires_days") {
            days.minimum = Some((*EXPIRES_DAYS.start()).into());
            days.maximum = Some((*EXPIRES_DAYS.end()).into());
        }
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

fn for_each_operation(openapi: &mut utoipa::openapi::OpenApi, mut f: impl FnMut(&mut Operation)) {
    for item in openapi.paths.paths.values_mut() {
        operations(item).for_each(&mut f);
    }
}

/// Applies `f` to the operations of `openapi` that `group` has too (known
/// by their operation ids, which are unique).
fn for_each_operation_of(
    openapi: &mut utoipa::openapi::OpenApi,
    mut group: utoipa::openapi::OpenApi,
    mut f: impl FnMut(&mut Operation),
) {
    let mut ids = BTreeSet::new();
    for_each_operation(&mut group, |operation| {
        ids.extend(operation.operation_id.clone());
    });
    for_each_operation(openapi, |operation| {
        if operation
            .operation_id
            .as_ref()
            .is_some_and(|id| ids.contains(id))
        {
            f(operation)
        }
    });
}

const BUSY: &str = "`busy`: the caller's tenant already runs its share of requests that use \
    the database, or the node's tenants together run all the pool leaves them, or too many \
    request bodies are being received; nothing was done. Never for a global-admin token.";

const CHECKS_BUSY: &str = "`busy`: the caller's tenant already runs its 4 template checks, \
    previews and source tests at once, or too many request bodies are being received; \
    nothing was done. Never for a global-admin token.";

const DATABASE_DOWN: &str = "`busy`: no database connection came free within \
    `database.acquire_timeout_ms`; or `unavailable` (no `Retry-After`): the database failed \
    or did not answer a read within `database.request_timeout_s`. Nothing was changed. \
    Or `outcome_unknown` (no `Retry-After`): the database did not confirm a write (no answer \
    within `database.request_timeout_s`, or the connection lost at its commit), which may \
    have been made: read it back before writing it again.";

const POOL_BUSY: &str = "`busy`: too many renders and walks wait for this node's render \
    pool, or the caller's tenant's list took over 10 s; nothing was changed.";

const UNAUTHORIZED: &str = "`unauthorized`: no token, or one that is unknown, expired or \
    revoked (`WWW-Authenticate: Bearer`).";

const FORBIDDEN: &str = "`forbidden`: a lookup token, which is for caller-name lookups \
    only, or a token whose scope does not allow this (read-only, or global-admin only).";

/// What the share's layers answer a tenant's body that they read first,
/// and the extractors a global admin's.
fn add_body_refusals(responses: &mut BTreeMap<String, RefOr<utoipa::openapi::Response>>) {
    add_response(
        responses,
        "408",
        "`timeout`: a tenant's request body did not arrive within 10 s; nothing was done.",
        false,
    );
    add_response(
        responses,
        "413",
        "`too_large`: the request body is over 2 MiB (an import's over 256 MiB); nothing was done.",
        false,
    );
}

/// Documents `status` with the error body: beside what the handler's own
/// annotation says of it (a limit of its own, which answers the same
/// body), or on its own. `retry_after`: the answer may be `busy`, which
/// carries the header.
fn add_response(
    responses: &mut BTreeMap<String, RefOr<utoipa::openapi::Response>>,
    status: &str,
    text: &str,
    retry_after: bool,
) {
    let header = || {
        HeaderBuilder::new()
            .schema(Object::with_type(Type::Integer))
            .description(Some("Seconds to wait before retrying (with `busy`)."))
            .build()
    };
    match responses.get_mut(status) {
        Some(RefOr::T(own)) => {
            own.description = match own.description.trim() {
                "" => text.to_string(),
                said => format!("{said} Or {text}"),
            };
            if retry_after {
                own.headers.insert("Retry-After".into(), header());
            }
        }
        _ => {
            let mut response = ResponseBuilder::new().description(text).content(
                "application/json",
                Content::new(Some(Ref::from_schema_name("ErrorBody"))),
            );
            if retry_after {
                response = response.header("Retry-After", header());
            }
            responses.insert(status.into(), response.build().into());
        }
    }
}

/// The bearer scheme, and the refusals of every operation that requires
/// a token: none or a bad one (401), a lookup token or one whose scope
/// falls short (403).
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        for_each_operation(openapi, |operation| {
            if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
                let responses = &mut operation.responses.responses;
                add_response(responses, "401", UNAUTHORIZED, false);
                add_response(responses, "403", FORBIDDEN, false);
            }
        });
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
