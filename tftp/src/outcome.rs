//! What a request leaves behind once answered: its `outcome` label and,
//! for a known phone, a line of provisioning history. Apart from
//! `provision.rs` so the core stays one decision.

use std::sync::Arc;

use dialtone_sync::history::HistorySink;
use dialtone_sync::store::BootRecord;
use dialtone_sync::Phone;

use crate::admission::Decision;
use crate::error::ProvisionError;
use crate::identify::{FileKind, Identity};
use crate::provision::{record_served, Provisioner, Rendered, Request};

/// Longest error text a boot record keeps: each failing fetch queues and
/// stores one. A render error's text is ours and short (`render.rs` keeps
/// a template's `throw` text out of it); this bounds the rest.
const MAX_OUTCOME: usize = 512;

/// How a history line names a phone refused for a User-Agent of another
/// family than its record's (`admission.rs`); the fleet view classes it.
pub const FAMILY_MISMATCH: &str = "family mismatch";

/// A phone's history line for credentials that did not check out; the
/// history counts it among the refusals anyone knowing the MAC can cause.
const LOGIN_FAILED: &str = "error: device authentication failed";

/// The `outcome` label of a provisioning request: a short, bounded set.
pub(crate) fn outcome_label(result: &Result<Rendered, ProvisionError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(ProvisionError::NotFound) => "not_found",
        Err(ProvisionError::Banned) => "banned",
        Err(ProvisionError::BadPath(_)) => "refused",
        Err(ProvisionError::Render { .. }) => "render_error",
        Err(ProvisionError::Busy) => "busy",
        Err(ProvisionError::Unauthorized { .. }) => "unauthorized",
        Err(_) => "error",
    }
}

/// Counts a request refused for its source's ban, which ends before the
/// rest are counted. No history line: a banned source may send as many as
/// it likes. The vendor is the file name's (and User-Agent's), identified
/// again rather than carried out of the refusal: the same bounded parse
/// every request gets, and nothing more.
pub(crate) fn count_if_banned(request: &Request<'_>, error: &ProvisionError) {
    if !matches!(error, ProvisionError::Banned) {
        return;
    }
    let vendor = crate::identify::identify(request.path, request.user_agent)
        .ok()
        .and_then(|id| id.family)
        .map_or("unknown", |f| f.as_str());
    count_request(request, vendor, "banned");
}

/// One request in `dialtone_provision_requests_total`.
pub(crate) fn count_request(request: &Request<'_>, vendor: &'static str, outcome: &'static str) {
    metrics::counter!(
        "dialtone_provision_requests_total",
        "protocol" => request.protocol.as_str(),
        "vendor" => vendor,
        "outcome" => outcome,
    )
    .increment(1);
}

impl Provisioner {
    /// The history line of a request, or `None` when a successful TFTP
    /// fetch's line is to wait for its transfer's end (returned with the
    /// served file's ETag; its outcome and bytes are then how the transfer
    /// ended).
    pub(crate) fn record(
        &self,
        history: &HistorySink,
        request: &Request<'_>,
        identity: &Identity,
        phone: &Phone,
        decision: &Decision,
        result: &Result<Rendered, ProvisionError>,
    ) -> Option<(BootRecord, Option<Arc<str>>)> {
        // A fetch refused from where its tenant's phones are not served
        // is kept for global admins only (`Decision::foreign`).
        let tenant_id = (!decision.foreign).then_some(phone.tenant_id);
        let (outcome, bytes) = match result {
            Ok(file) => ("ok".to_string(), file.body.len() as i64),
            // Still "not-found" first: the history reads it as a refusal.
            Err(ProvisionError::NotFound) => {
                let why = decision
                    .refusal
                    .and_then(|refusal| refusal.history_text(phone, identity));
                match why {
                    Some(why) => (format!("not-found: {why}"), 0),
                    None => ("not-found".to_string(), 0),
                }
            }
            // Only a wrong answer gets here (`conclude`), never a challenge.
            Err(ProvisionError::Unauthorized { .. }) => (LOGIN_FAILED.to_string(), 0),
            Err(e) => (
                format!(
                    "error: {}",
                    dialtone_sync::model::clip(&e.to_string(), MAX_OUTCOME)
                ),
                0,
            ),
        };
        let record = BootRecord {
            mac: phone.mac.to_string(),
            tenant_id,
            at: dialtone_sync::now_millis(),
            remote_ip: request.remote.map(|ip| ip.to_string()).unwrap_or_default(),
            user_agent: request.user_agent.map(str::to_string),
            protocol: request.protocol.as_str().to_string(),
            file: identity.file.clone(),
            outcome,
            bytes,
            model: identity.model.clone(),
            firmware: identity.firmware.clone(),
        };
        // Until its first ACK a TFTP request's source may be forged: a
        // served fetch is the phone's line only if the client answers,
        // so a forged request neither shows a phone at an address it never
        // was (its fleet view, resync's direct address) nor writes a row.
        // And only its transfer's end says whether the phone took the
        // file: a phone that refuses it after the OACK (tsize too large)
        // must not read as served.
        // With what was served: a fetch of new bytes (the refetch a resync
        // asked for, on a node that served the phone moments before) is
        // never taken for a repeat. Not a directory's: each page and search
        // is other bytes, and anyone knowing the MAC could page it into a
        // row a request.
        let content = match result {
            Ok(file) if identity.kind != FileKind::PhoneDirectory => Some(file.etag.clone()),
            _ => None,
        };
        if result.is_ok() && request.protocol == crate::provision::Protocol::Tftp {
            return Some((record, content));
        }
        record_served(history, record, content.as_deref());
        None
    }
}
