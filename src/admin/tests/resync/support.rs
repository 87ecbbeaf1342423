//! What resync tests here and beside this module share.

use axum::http::{Method, StatusCode};

use super::super::{Harness, Reply, ACME_MAC};

/// Asks, as `role`, for a resync of acme's phone; the answer must be 202,
/// so that a test goes on only with a resync queued.
pub(in crate::admin::tests) async fn queue_acme_phone_resync(h: &Harness, role: &str) -> Reply {
    let reply = h
        .call(
            Some(role),
            Method::POST,
            &format!("/v1/phones/{ACME_MAC}/resync"),
            None,
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    reply
}
