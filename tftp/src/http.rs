//! HTTP(S) provisioning front end: `GET`/`HEAD /{file}` (and any directory
//! prefix a vendor's profile rule adds) answered by the same `provision()`
//! core as TFTP. Runs on its own listener, apart from the admin API.

mod ranges;
mod static_file;

use crate::tftp::limits::LogLimit;
use dialtone_sync::log_text;
use std::net::IpAddr;
use std::sync::Arc;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use ipnet::IpNet;

use crate::device_auth::HttpAuth;
use crate::error::ProvisionError;
use crate::host_names::HostNames;
use crate::identify::FileKind;
use crate::provision::{Protocol, Provisioner, Rendered, Request};

#[derive(Clone)]
struct Front {
    provisioner: Arc<Provisioner>,
    /// Served over TLS: Basic credentials may be accepted.
    secure: bool,
    reads: Arc<static_file::Reads>,
}

/// The plain-HTTP router.
pub fn router(provisioner: Arc<Provisioner>) -> Router {
    router_with(provisioner, false)
}

/// The router for a listener; `secure` when it is behind TLS. Loopback
/// sources' static-file reads are not capped per source, as by default.
pub fn router_with(provisioner: Arc<Provisioner>, secure: bool) -> Router {
    router_exempting(provisioner, secure, crate::tftp::default_exempt())
}

/// The router for a listener whose `per_source_exempt` networks (the
/// listener's own, `http_per_source_exempt`) take static-file reads
/// without a per-source cap, as their connections have none.
pub fn router_exempting(
    provisioner: Arc<Provisioner>,
    secure: bool,
    per_source_exempt: Vec<IpNet>,
) -> Router {
    build(
        provisioner,
        secure,
        static_file::Reads::new(per_source_exempt),
    )
}

fn build(provisioner: Arc<Provisioner>, secure: bool, reads: static_file::Reads) -> Router {
    let protocol = if secure { "https" } else { "http" };
    let options = provisioner.options();
    let names = Arc::new(HostNames::new(&options.base_url, &options.host_names));
    let router = Router::new().route("/{*path}", get(fetch));
    let router = if secure {
        router
    } else {
        router.route_layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let names = names.clone();
                async move {
                    match names.admits_request(&request) {
                        true => next.run(request).await,
                        false => misdirected(request.headers().get(header::HOST)),
                    }
                }
            },
        ))
    };
    router
        .with_state(Front {
            provisioner,
            secure,
            reads: Arc::new(reads),
        })
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| async move {
                let started = std::time::Instant::now();
                let mut response = next.run(request).await;
                contain(response.headers_mut());
                uncacheable_if_refused(&mut response);
                let outcome = match response.status().as_u16() {
                    200..=399 => "ok",
                    404 => "not_found",
                    401 | 403 | 429 => "refused",
                    400..=499 => "bad_request",
                    _ => "error",
                };
                metrics::histogram!("dialtone_transfer_duration_seconds", "protocol" => protocol, "outcome" => outcome)
                    .record(started.elapsed().as_secs_f64());
                response
            },
        ))
}

/// A plain-HTTP request naming a host this server does not answer for
/// (`host_names.rs`): 421, as RFC 9110 has it for a request sent to a
/// server that will not answer for its authority. Not a miss: a rebinding
/// page would get its visitor's office banned.
fn misdirected(host: Option<&HeaderValue>) -> Response {
    static MISDIRECTED_LOG: LogLimit = LogLimit::new();
    if let Some(skipped) = MISDIRECTED_LOG.allow() {
        let host = host.map_or_else(String::new, |h| {
            String::from_utf8_lossy(h.as_bytes()).into_owned()
        });
        tracing::info!(
            host = &*log_text(&host),
            skipped,
            "provisioning: refused a request naming a host that is neither base_url's nor in provisioning.host_names"
        );
    }
    metrics::counter!("dialtone_provisioning_misdirected_total").increment(1);
    (
        StatusCode::MISDIRECTED_REQUEST,
        "this server does not answer for that host name\n",
    )
        .into_response()
}

/// A refusal depends on who asked and when (the source's networks and
/// bans, the `/{tenant}/` folder, a phone not created yet): a shared cache
/// that kept a 404 by heuristic freshness would hand one office's "not
/// found" to another, or hold back a new phone's first boot.
fn uncacheable_if_refused(response: &mut Response) {
    let status = response.status();
    if (status.is_client_error() || status.is_server_error())
        && !response.headers().contains_key(header::CACHE_CONTROL)
    {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
}

/// A tenant writes whole files, and an XML family's may as well be XHTML
/// with a script: opened in a browser, it ran on the provisioning origin.
/// Every answer is a document without script or sniffing; phones ignore
/// both headers.
fn contain(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

async fn fetch(
    State(Front {
        provisioner,
        secure,
        reads,
    }): State<Front>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    method: Method,
    uri: Uri,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .filter(|ua| ua.len() <= crate::identify::MAX_USER_AGENT);
    // Only an absolute-form target has more to it than its path and query.
    let absolute_target = uri.scheme().map(|_| uri.to_string());
    let request = Request {
        path: &path,
        user_agent,
        remote: Some(remote.ip()),
        protocol: if secure {
            Protocol::Https
        } else {
            Protocol::Http
        },
        query: query.as_deref(),
        // HEAD is answered by the GET route; the client signed its own method.
        auth: Some(HttpAuth {
            authorization: headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok()),
            method: method.as_str(),
            target: uri.path_and_query().map_or(uri.path(), |pq| pq.as_str()),
            absolute_target: absolute_target.as_deref(),
        }),
    };
    match provisioner.provision_async(&request).await {
        Ok(file) => {
            // A static file's length and validator are the open file's: one
            // replaced in place since it was indexed was sent cut to the old
            // length, with a 200, or matched the old file's tag for a 304.
            let opened = match &file.file {
                Some(indexed) => match reads.open(&indexed.path, &path, remote.ip()).await {
                    Ok(opened) => Some(opened),
                    Err(refused) => return refused,
                },
                None => None,
            };
            let etag_text = opened.as_ref().map_or(&*file.etag, |o| o.etag.as_str());
            let etag = HeaderValue::from_str(etag_text).ok();
            let not_modified = headers
                .get(header::IF_NONE_MATCH)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|wanted| none_match(wanted, etag_text));
            let mut response = if not_modified {
                StatusCode::NOT_MODIFIED.into_response()
            } else if let Some(opened) = opened {
                opened.response(file.content_type, &headers, &path, remote.ip())
            } else {
                (
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static(file.content_type),
                    )],
                    axum::body::Bytes::from_owner(file.body.clone()),
                )
                    .into_response()
            };
            if let Some(etag) = etag {
                response.headers_mut().insert(header::ETAG, etag);
            }
            let (cache_control, by_user_agent) = caching(&path, &file);
            let headers = response.headers_mut();
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static(cache_control),
            );
            if by_user_agent {
                headers.insert(header::VARY, HeaderValue::from_static("User-Agent"));
            }
            response
        }
        Err(e) => error_response(&provisioner, &path, user_agent, remote.ip(), secure, e),
    }
}

/// The `Cache-Control` a served file goes with, and whether its bytes
/// depend on the User-Agent. Every answer is revalidated (`no-cache`), so
/// an edit reaches a phone's next fetch and an unchanged file costs a 304.
///
/// Rendered files and directories are `private`: they hold SIP line
/// passwords and a tenant's contacts, and a shared cache (an office's or
/// a carrier's proxy) must not keep them to hand to the next asker. A
/// common or boot file named without a MAC is chosen and filled by the
/// User-Agent (its MAC picks the phone, its model the file), so it also
/// varies by it. A static file is the same bytes for whoever may have it,
/// chosen by its path alone: firmware and ringtones stay storable, so a
/// site's proxy may keep a large image for the office's phones, but one
/// named for a phone (a Grandstream `cfg<mac>.bin` holds its config,
/// passwords included; a Poly `<mac>-license.cfg`) is `private` as well.
fn caching(path: &str, file: &Rendered) -> (&'static str, bool) {
    let per_phone = crate::identify::identify(path, None).is_ok_and(|id| id.mac_in_path());
    match file.kind {
        FileKind::Static if !per_phone => ("no-cache", false),
        FileKind::Static => ("private, no-cache", false),
        _ => ("private, no-cache", !per_phone),
    }
}

/// `If-None-Match` against our tag, compared weakly (RFC 9110 13.1.2): a
/// client may send back a strong tag of ours marked `W/`.
fn none_match(wanted: &str, etag: &str) -> bool {
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_string();
    let ours = opaque(etag);
    wanted
        .split(',')
        .any(|tag| tag.trim() == "*" || opaque(tag) == ours)
}

/// A 401 with Digest challenges, strongest first, and inside TLS Basic
/// after them: `device_auth` takes Basic there, and some phones send it
/// only once challenged for it. Never on plain HTTP, where it would ask
/// for the password in clear.
fn unauthorized(provisioner: &Provisioner, stale: bool, remote: IpAddr, secure: bool) -> Response {
    let mut response = (StatusCode::UNAUTHORIZED, "authentication required\n").into_response();
    let basic = secure.then(|| format!("Basic realm=\"{}\"", crate::digest::REALM));
    for challenge in (provisioner.digest().challenges(stale, Some(remote)))
        .into_iter()
        .chain(basic)
    {
        if let Ok(value) = HeaderValue::from_str(&challenge) {
            response
                .headers_mut()
                .append(header::WWW_AUTHENTICATE, value);
        }
    }
    response
}

/// Clients get a status and generic text; the detail goes to the log.
fn error_response(
    provisioner: &Provisioner,
    path: &str,
    user_agent: Option<&str>,
    remote: IpAddr,
    secure: bool,
    error: ProvisionError,
) -> Response {
    match error {
        ProvisionError::NotFound => (StatusCode::NOT_FOUND, "not found\n").into_response(),
        ProvisionError::Banned => {
            // Rounded up, and at least 1: a ban ending as it is read is
            // still in force for this answer.
            let left = (provisioner.guard().ban_left(remote))
                .map_or(1, |left| {
                    left.as_secs() + u64::from(left.subsec_nanos() > 0)
                })
                .max(1);
            (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, HeaderValue::from(left))],
                "too many requests\n",
            )
                .into_response()
        }
        ProvisionError::BadPath(why) => {
            static REFUSED_LOG: LogLimit = LogLimit::new();
            if let Some(skipped) = REFUSED_LOG.allow() {
                tracing::info!(
                    path = &*log_text(path),
                    reason = why,
                    skipped,
                    "refused provisioning path (logged at most once a second)"
                );
            }
            (StatusCode::BAD_REQUEST, "bad request: refused path\n").into_response()
        }
        ProvisionError::Unauthorized { stale, .. } => {
            unauthorized(provisioner, stale, remote, secure)
        }
        ProvisionError::Busy => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, HeaderValue::from_static("5"))],
            "busy, try again\n",
        )
            .into_response(),
        other => {
            // A tenant's failing template fails every request for it.
            static FAILED_LOG: FailureLog = FailureLog::new();
            if let Some((tenant, skipped)) = FAILED_LOG.allow(provisioner, path, user_agent) {
                tracing::error!(
                    path = &*log_text(path),
                    user_agent = user_agent.map(log_text).as_deref(),
                    tenant = tenant.as_deref(),
                    error = &*other.to_string(),
                    skipped,
                    "provisioning failed (logged at most once a second per tenant)"
                );
            }
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
        }
    }
}

/// The log limit of failed provisioning requests: one tenant's failing
/// template, fetched in a loop, must not hide another tenant's failures.
/// A failure is the tenant's whose phone's own file (its MAC in the name)
/// was asked for: that file fails only once admitted for that phone. A
/// common file's failure is not told apart: whether the User-Agent's phone
/// was admitted, and so whose templates it was rendered from, is decided
/// in the core and not returned with the error. Those share one line a
/// second for the node.
pub(crate) struct FailureLog {
    by_tenant: dialtone_sync::TenantLogLimit,
    unattributed: LogLimit,
}

impl FailureLog {
    pub(crate) const fn new() -> FailureLog {
        FailureLog {
            by_tenant: dialtone_sync::TenantLogLimit::new(),
            unattributed: LogLimit::new(),
        }
    }

    /// `Some((the tenant's slug when known, lines left out))` when a line
    /// may be written.
    pub(crate) fn allow(
        &self,
        provisioner: &Provisioner,
        path: &str,
        user_agent: Option<&str>,
    ) -> Option<(Option<Box<str>>, u64)> {
        let state = provisioner.mirror.load();
        let tenant = crate::identify::identify(path, user_agent)
            .ok()
            .filter(crate::identify::Identity::mac_in_path)
            .and_then(|id| id.mac)
            .and_then(|mac| state.phone_by_mac(&mac))
            .and_then(|phone| state.tenant(phone.tenant_id));
        match tenant {
            Some(tenant) => self
                .by_tenant
                .allow(tenant.id)
                .map(|skipped| (Some(tenant.slug.clone()), skipped)),
            None => self.unattributed.allow().map(|skipped| (None, skipped)),
        }
    }
}
