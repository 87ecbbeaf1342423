//! The routes outside the database share's layer answer without the
//! database: with the pool closed, each answers every request of the
//! scope matrix as it does with the database up. A handler that awaits
//! the store but was routed outside `router()`'s `database` router (so no
//! tenant share bounds it) would answer 503 here instead.

use axum::http::StatusCode;
use dialtone_sync::Backend;

use super::matrix::{class, rows, ROLES};
use super::openapi::ROUTES;
use super::Harness;

/// Whether a concrete path (placeholders and query allowed) is the route
/// template's: a `{…}` segment of the template matches any one segment.
pub(super) fn matches(template: &str, path: &str) -> bool {
    let path = path.split('?').next().unwrap_or_default();
    let (t, p): (Vec<_>, Vec<_>) = (template.split('/').collect(), path.split('/').collect());
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| t == p || (t.starts_with('{') && !p.is_empty()))
}

/// The check below sees only the matrix's requests: every documented
/// route has one, so a new route is either in the matrix or fails here.
#[test]
fn the_scope_matrix_calls_every_documented_route() {
    let rows = rows();
    let missing: Vec<String> = ROUTES
        .iter()
        .flat_map(|(path, methods)| methods.iter().map(move |m| (*path, *m)))
        .filter(|(path, method)| {
            !rows.iter().any(|row| {
                row.method.as_str().eq_ignore_ascii_case(method) && matches(path, row.path)
            })
        })
        .map(|(path, method)| format!("{method} {path}"))
        .collect();
    assert!(missing.is_empty(), "not in the matrix: {missing:?}");
    assert!(matches("/v1/phones/{mac}", "/v1/phones/001565000001?x=1"));
    assert!(!matches(
        "/v1/phones/{mac}",
        "/v1/phones/001565000001/files"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_outside_the_database_share_never_use_the_database() {
    let mut failures = Vec::new();
    let mut outside = 0;
    for row in rows() {
        let h = Harness::new(Backend::Sqlite).await;
        // Where the router put it: with every place other tenants can take
        // taken, a call of acme's is refused before its handler exactly
        // when the share's layer guards the route.
        let held: Vec<_> = (1_000_000..1_000_100)
            .map_while(|tenant| h.database_share.admit(tenant).ok())
            .collect();
        assert!(!held.is_empty() && held.len() < 100);
        let guarded = h
            .call(
                Some("acme-admin"),
                row.method.clone(),
                row.path,
                row.body,
                &[],
            )
            .await
            .status
            == StatusCode::TOO_MANY_REQUESTS;
        drop(held);
        if guarded {
            continue;
        }
        outside += 1;
        h.store.close().await;
        for (index, role) in ROLES.iter().enumerate() {
            let reply = h
                .call(*role, row.method.clone(), row.path, row.body, &[])
                .await;
            let want = row.expect.as_bytes()[index] as char;
            if class(reply.status.as_u16()) != want {
                failures.push(format!(
                    "{} {} as {role:?} with the database closed: want {want}, got {} {}",
                    row.method, row.path, reply.status, reply.text
                ));
            }
        }
    }
    assert!(outside > 15, "only {outside} requests outside the share");
    assert!(
        failures.is_empty(),
        "{} routes reach the database outside the share:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
