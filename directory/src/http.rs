//! Lookup routes on the API listener, shaped for the PBXes that call them
//! (see `docs/pbx-formats.md`):
//!
//! - `GET /v1/lookup?number=N&key=K`: the name as the whole plain-text body,
//!   empty on a miss (mod_cidlookup and Asterisk `CURL()` take the body as
//!   the name and ignore the status), or JSON with `Accept: application/json`
//!   or `format=json`.
//! - `GET /v3/phone/{number}`: OpenCNAM-style, JSON by default, plain text
//!   with `format=pbx` or `Accept: text/pbx`.
//!
//! The key comes from the query (`key`, or OpenCNAM's `auth_token`), since
//! mod_cidlookup cannot add headers, or from `Authorization: Bearer`. Only a
//! lookup key may be given in the URL; admin tokens go in the header.
//! In plain-text mode every error is an empty body: anything else would
//! end up on phone screens as the caller's name.
//!
//! Each tenant's keys spend its budget (`rate`) before anything else is
//! done for them; past it, 429 with `Retry-After: 1`, which a PBX treats
//! like any failure: no name, and the call goes on.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use dialtone_sync::{now_millis, token_hash, Id, MirrorState, TokenScope};
use serde_json::json;

use crate::clock::Clock;
use crate::error::DirectoryError;
use crate::rate::TenantRates;
use crate::service::{Answer, LookupService};

#[derive(Debug, Default)]
pub struct LookupQuery {
    number: Option<String>,
    key: Option<String>,
    auth_token: Option<String>,
    /// Only for global-admin keys, which belong to no tenant.
    tenant: Option<String>,
    format: Option<String>,
    /// A field given twice, refused once the mode is known.
    repeated: Option<&'static str>,
}

impl LookupQuery {
    /// Reads the query without failing: the PBX writes the caller's number
    /// into it as the caller sent it, so a number holding `&tenant=` or
    /// bytes that are not UTF-8 must get this route's refusal (an empty
    /// body in plain-text mode), not the framework's error text, which the
    /// PBX would show as the caller's name. A field given twice is
    /// refused rather than one copy picked: the first could be the
    /// caller's, written in ahead of the PBX's own `tenant` or `key`.
    /// Unknown fields are ignored, as PBXes add their own.
    ///
    /// Percent escapes are decoded, but a `+` stays a plus: a PBX that
    /// writes `number=${CALLERID(num)}` sends `+4532123456` as it is, and
    /// HTML forms' "`+` is a space" would read it as a local number
    /// (`+14532123456` for a US tenant: someone else's name). A `+` past
    /// a number's first character is read as a space by `normalize`.
    fn parse(raw: Option<&str>) -> LookupQuery {
        let mut query = LookupQuery::default();
        let decode = |text| percent_encoding::percent_decode_str(text).decode_utf8_lossy();
        let pairs = raw.unwrap_or("").split('&').filter(|pair| !pair.is_empty());
        for (name, value) in pairs.map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(name), decode(value))
        }) {
            let (field, slot) = match &*name {
                "number" => ("number", &mut query.number),
                "key" => ("key", &mut query.key),
                "auth_token" => ("auth_token", &mut query.auth_token),
                "tenant" => ("tenant", &mut query.tenant),
                "format" => ("format", &mut query.format),
                _ => continue,
            };
            if slot.is_some() {
                query.repeated.get_or_insert(field);
            }
            *slot = Some(value.into_owned());
        }
        // One key under two names is a key given twice: the caller could
        // have written one of them in ahead of the PBX's own.
        if query.key.is_some() && query.auth_token.is_some() {
            query.repeated.get_or_insert("key");
        }
        query
    }

    fn refused(&self, mode: Mode) -> Option<Response> {
        self.repeated.map(|field| {
            refusal(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("{field} is given more than once"),
            )
            .into_response(mode)
        })
    }
}

#[derive(Clone)]
struct Routes {
    service: LookupService,
    rates: Arc<TenantRates>,
}

/// The lookup routes, with the tenants' budgets of the service's options:
/// a node builds them once, and each router built keeps its own.
pub fn router(service: LookupService) -> Router {
    let options = &service.inner.options;
    let rates = TenantRates::new(options.tenant_rate, options.tenant_burst, Clock::system());
    Router::new()
        .route("/v1/lookup", get(v1_lookup))
        .route("/v3/phone/{number}", get(v3_phone))
        .layer(axum::middleware::map_response(private_answer))
        .with_state(Routes {
            service,
            rates: Arc::new(rates),
        })
}

/// `Cache-Control: no-store` and `X-Content-Type-Options: nosniff` on an
/// answer, errors included; the admin API's answers too. A name is a
/// tenant's text (`<script>` included), answered on the origin that serves
/// the admin page: no browser may read it as anything but what its
/// `Content-Type` says. Nor may a browser or proxy keep it: the URL may
/// hold the key, and a name changes without the URL changing.
pub async fn private_answer(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers
        .entry(header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
    response
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Text,
    Json,
}

/// A refused request: status, stable code, and a message for JSON clients.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

fn refusal(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        code,
        message: message.into(),
    }
}

impl Refusal {
    fn into_response(self, mode: Mode) -> Response {
        let mut response = match mode {
            Mode::Json => (
                self.status,
                Json(json!({ "error": { "code": self.code, "message": self.message } })),
            )
                .into_response(),
            Mode::Text => (self.status, text_headers(), "").into_response(),
        };
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        // A budget refills within a second at any rate the config allows.
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

fn text_headers() -> [(header::HeaderName, HeaderValue); 2] {
    [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ]
}

fn accepts(headers: &HeaderMap, media: &str) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|m| m.trim().starts_with(media)))
}

/// The tenant a key may look up for.
struct Authorized {
    tenant: Id,
    /// Whether the lookup spends the tenant's budget: a tenant's own keys
    /// do, as tenants are untrusted. A global-admin key is the operator's,
    /// trusted like the config that sets the budget, and its lookups (an
    /// operator checking a tenant's answers while the tenant floods) must
    /// neither be refused by the flood nor use up the tenant's calls.
    budgeted: bool,
}

fn authorize(
    state: &MirrorState,
    query: &LookupQuery,
    headers: &HeaderMap,
) -> Result<Authorized, Refusal> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(dialtone_sync::bearer_token);
    let in_url = query.key.as_deref().or(query.auth_token.as_deref());
    // Picking one would let a caller ID carrying `&key=` choose the
    // tenant that answers a PBX that sends its own key as a header.
    if in_url.is_some() && bearer.is_some() {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "a key is given both in the URL and as Authorization: give one",
        ));
    }
    let key = in_url.or(bearer).filter(|k| !k.is_empty()).ok_or_else(|| {
        refusal(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a lookup key is required",
        )
    })?;
    let invalid = || {
        refusal(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "invalid or revoked key",
        )
    };
    let token = state.token_by_hash(&token_hash(key)).ok_or_else(invalid)?;
    if token.revoked || token.expires_at.is_some_and(|at| at <= now_millis()) {
        return Err(invalid());
    }
    // A URL ends up in dialplans, PBX and proxy logs: only a lookup key
    // goes there. An admin token works in the Authorization header only.
    if in_url.is_some() && token.scope != TokenScope::Lookup {
        return Err(refusal(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only a lookup key may be given in the URL; send an admin token as Authorization: Bearer",
        ));
    }
    let wanted = query.tenant.as_deref().map(|slug| {
        state.tenant_by_slug(slug).map(|t| t.id).ok_or_else(|| {
            refusal(
                StatusCode::NOT_FOUND,
                "unknown_tenant",
                format!("no tenant {slug:?}"),
            )
        })
    });
    let own = |tenant| Authorized {
        tenant,
        budgeted: true,
    };
    match (token.scope, token.tenant_id, wanted) {
        (TokenScope::GlobalAdmin, _, Some(tenant)) => tenant.map(|tenant| Authorized {
            tenant,
            budgeted: false,
        }),
        (TokenScope::GlobalAdmin, _, None) => Err(refusal(
            StatusCode::BAD_REQUEST,
            "tenant_required",
            "a global key must name the tenant (tenant=slug)",
        )),
        (_, Some(tenant), None) => Ok(own(tenant)),
        (_, Some(tenant), Some(Ok(wanted))) if wanted == tenant => Ok(own(tenant)),
        // Whether another tenant exists is none of this key's business.
        (_, Some(_), Some(_)) => Err(refusal(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this key is not valid for that tenant",
        )),
        (_, None, _) => Err(invalid()),
    }
}

async fn answer(
    routes: &Routes,
    query: &LookupQuery,
    headers: &HeaderMap,
    number: Option<&str>,
    mode: Mode,
) -> Result<Answer, Response> {
    let service = &routes.service;
    // One mirror state for the key, the tenant and the answer.
    let state = service.mirror().load();
    let Authorized { tenant, budgeted } =
        authorize(&state, query, headers).map_err(|r| r.into_response(mode))?;
    // Before the number is read or the cache asked: a hit costs too.
    if budgeted {
        let slug = || state.tenant(tenant).map(|t| t.slug.clone());
        routes.rates.spend(tenant, slug).map_err(|_| {
            refusal(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "this tenant's lookups are past their rate; try again in a second",
            )
            .into_response(mode)
        })?;
    }
    let number = number.filter(|n| !n.trim().is_empty()).ok_or_else(|| {
        refusal(
            StatusCode::BAD_REQUEST,
            "invalid_number",
            "number is required",
        )
        .into_response(mode)
    })?;
    service.lookup_at(state, tenant, number).await.map_err(|e| {
        let refused = match &e {
            DirectoryError::Number(reason) => refusal(
                StatusCode::BAD_REQUEST,
                "invalid_number",
                number_refused(reason),
            ),
            DirectoryError::UnknownTenant => refusal(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "invalid or revoked key",
            ),
            other => {
                tracing::error!(error = &*other.to_string(), "lookup failed");
                refusal(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "lookup failed",
                )
            }
        };
        refused.into_response(mode)
    })
}

/// Why a number was refused, without the number: the PBX writes the
/// caller's number into the URL as sent, so a caller can append
/// `&format=json` to it, and the PBX shows whatever body it gets as the
/// caller's name. The refusal must not carry the caller's own text there.
fn number_refused(reason: &crate::normalize::NormalizeError) -> String {
    match reason {
        crate::normalize::NormalizeError::NotANumber(_) => "not a phone number".to_string(),
        other => other.to_string(),
    }
}

fn text_response(answer: &Answer) -> Response {
    let mut response = (
        StatusCode::OK,
        text_headers(),
        answer.name().unwrap_or_default().to_string(),
    )
        .into_response();
    tag_cache(&mut response, answer);
    response
}

fn tag_cache(response: &mut Response, answer: &Answer) {
    response.headers_mut().insert(
        "x-dialtone-cache",
        HeaderValue::from_static(answer.cache.as_str()),
    );
}

async fn v1_lookup(
    State(routes): State<Routes>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let query = LookupQuery::parse(query.as_deref());
    // A field given twice is refused in plain text, whatever `format`
    // says: the `format=json` may be the caller's, written in after the
    // number of a PBX that asked for text and shows any body as the name.
    if let Some(refused) = query.refused(Mode::Text) {
        return refused;
    }
    let mode = if query.format.as_deref() == Some("json") || accepts(&headers, "application/json") {
        Mode::Json
    } else {
        Mode::Text
    };
    let answer = match answer(&routes, &query, &headers, query.number.as_deref(), mode).await {
        Ok(answer) => answer,
        Err(response) => return response,
    };
    if mode == Mode::Text {
        return text_response(&answer);
    }
    let mut response = Json(json!({
        "number": answer.number,
        "name": answer.resolved.name,
        "found": answer.resolved.name.is_some(),
        "source": answer.resolved.source,
        "cache": answer.cache,
    }))
    .into_response();
    tag_cache(&mut response, &answer);
    response
}

async fn v3_phone(
    State(routes): State<Routes>,
    number: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let query = LookupQuery::parse(query.as_deref());
    let mode = if query.format.as_deref() == Some("pbx") || accepts(&headers, "text/pbx") {
        Mode::Text
    } else {
        Mode::Json
    };
    if let Some(refused) = query.refused(mode) {
        return refused;
    }
    // A number that does not decode (bytes that are not UTF-8) is no number.
    let Ok(Path(number)) = number else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "invalid_number",
            "the number is not text",
        )
        .into_response(mode);
    };
    let answer = match answer(&routes, &query, &headers, Some(&number), mode).await {
        Ok(answer) => answer,
        Err(response) => return response,
    };
    if mode == Mode::Text {
        return text_response(&answer);
    }
    let mut response = Json(json!({
        "name": answer.resolved.name,
        "number": answer.number,
        "uri": format!("/v3/phone/{}", answer.number),
    }))
    .into_response();
    tag_cache(&mut response, &answer);
    response
}

#[cfg(test)]
mod query_tests {
    use super::LookupQuery;

    /// A PBX writes the caller's number into the URL as it is: a `+`
    /// stays a plus, escapes are decoded, and a field given twice is
    /// noted, not picked.
    #[test]
    fn a_plus_is_a_plus_and_escapes_are_decoded() {
        let query = LookupQuery::parse(Some("number=+4532123456&key=k+1&x=y"));
        assert_eq!(query.number.as_deref(), Some("+4532123456"));
        assert_eq!(query.key.as_deref(), Some("k+1"));
        let query = LookupQuery::parse(Some("number=%2B1%20(555)%20010-1234&&format=json"));
        assert_eq!(query.number.as_deref(), Some("+1 (555) 010-1234"));
        assert_eq!(query.format.as_deref(), Some("json"));
        assert_eq!(query.repeated, None);
        let query = LookupQuery::parse(Some("number=%FF%FE&number=1"));
        assert_eq!(query.repeated, Some("number"));
        let query = LookupQuery::parse(Some("number"));
        assert_eq!(query.number.as_deref(), Some(""));
    }
}

#[cfg(test)]
mod header_tests {
    use axum::body::Body;
    use axum::http::{header, Request, StatusCode};
    use dialtone_sync::testing::build::{mirror_of, tenant_row};
    use dialtone_sync::{token_hash, ApiToken, Dataset, TokenScope};
    use tower::ServiceExt;

    use crate::service::{LookupOptions, LookupService};

    /// Every answer, a name or a refusal, in either mode, on either route,
    /// is kept by no browser and sniffed by none.
    #[tokio::test]
    async fn no_answer_is_stored_or_sniffed() {
        let token = ApiToken {
            id: 1,
            name: "pbx".into(),
            token_hash: token_hash("k1").into(),
            scope: TokenScope::Lookup,
            tenant_id: Some(1),
            created_at: 0,
            expires_at: None,
            revoked: false,
            updated_at: 0,
        };
        let mirror = mirror_of(Dataset {
            tenants: vec![tenant_row("{}")],
            api_tokens: vec![token],
            ..Dataset::default()
        });
        let router = super::router(LookupService::new(mirror, None, LookupOptions::default()));
        for (uri, status) in [
            (
                "/v1/lookup?number=5550101234&key=k1&format=json",
                StatusCode::OK,
            ),
            (
                "/v1/lookup?number=5550101234&format=json",
                StatusCode::UNAUTHORIZED,
            ),
            (
                "/v1/lookup?number=5550101234&key=k1&key=k1&format=json",
                StatusCode::BAD_REQUEST,
            ),
            ("/v1/lookup?number=5550101234&key=k1", StatusCode::OK),
            (
                "/v1/lookup?number=5550101234&key=nope",
                StatusCode::UNAUTHORIZED,
            ),
            ("/v3/phone/5550101234?key=k1", StatusCode::OK),
            ("/v3/phone/5550101234?key=k1&format=pbx", StatusCode::OK),
            ("/v3/phone/5550101234", StatusCode::UNAUTHORIZED),
        ] {
            let request = Request::get(uri).body(Body::empty()).unwrap();
            let response = router.clone().oneshot(request).await.unwrap();
            assert_eq!(response.status(), status, "{uri}");
            let value = |name| response.headers().get(name).and_then(|v| v.to_str().ok());
            assert_eq!(value(header::CACHE_CONTROL), Some("no-store"), "{uri}");
            assert_eq!(
                value(header::X_CONTENT_TYPE_OPTIONS),
                Some("nosniff"),
                "{uri}"
            );
        }
    }
}
