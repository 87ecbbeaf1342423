//! The OpenAPI document, generated from the handlers' annotations and
//! served at `/openapi.json` (no token needed: it describes, it reveals
//! nothing).

use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{
    audit, directory, error, fleet, phones, preview, resync, sources, templates, tenants, tokens,
    unclaimed, versions,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "dialtone admin API", description = "Tenants, phones, templates, directories, tokens and audit. Every write is one transaction with its audit row and reaches every node through the change log."),
    paths(
        tenants::list, tenants::create, tenants::show, tenants::update, tenants::remove,
        fleet::fleet,
        phones::list, phones::create, phones::show, phones::update, phones::remove,
        audit::history, preview::phone_files,
        resync::resync_phone, resync::resync_tenant, resync::list,
        templates::list, templates::create, templates::validate, templates::show, templates::update,
        templates::remove, templates::shipped, templates::shipped_one, versions::versions, versions::version, versions::diff, preview::template_phones,
        versions::rollback, preview::preview,
        directory::list_entries, directory::create_entry, directory::show_entry,
        directory::update_entry, directory::remove_entry,
        sources::list_sources, sources::create_source, sources::show_source,
        sources::update_source, sources::remove_source, sources::test_source,
        tokens::list, tokens::create, tokens::revoke,
        audit::list, audit::import,
        unclaimed::tenant_list, unclaimed::unassigned_list, unclaimed::claim,
    ),
    components(schemas(error::ErrorBody, error::ErrorDetail)),
    modifiers(&BearerAuth),
    tags(
        (name = "tenants"), (name = "phones"), (name = "templates"), (name = "directory"),
        (name = "tokens"), (name = "audit"), (name = "import"), (name = "resync"), (name = "unclaimed"),
    )
)]
pub struct ApiDoc;

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

pub async fn document() -> Response {
    axum::Json(ApiDoc::openapi()).into_response()
}
