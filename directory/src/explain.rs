//! `dialtone lookup`: what every source of a tenant says about a number,
//! with timings. It asks each source in order, past the cache and past
//! open breakers, and does not stop at the first answer, because the
//! operator running it wants to see why a name is (or is not) shown.

use std::time::{Duration, Instant};

use dialtone_sync::{Id, MirrorState};
use serde::Serialize;

use crate::error::DirectoryError;
use crate::name::clean_name;
use crate::normalize::{check_lookup_len, normalize};
use crate::service::{LookupService, LOCAL_PRIORITY, LOCAL_SOURCE};

#[derive(Clone, Debug, Serialize)]
pub struct SourceReport {
    pub source: String,
    pub kind: &'static str,
    pub priority: i32,
    /// `found`, `not_found`, `error`, or (the local directory) `ambiguous`:
    /// entries of different names and companies list the number.
    pub outcome: &'static str,
    pub name: Option<String>,
    pub error: Option<String>,
    /// Why a source that holds the number shows no name for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub millis: f64,
    /// For a mirrored source: the mirror's state (the answer came from it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror: Option<crate::mirror::MirrorStatus>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    pub number: String,
    pub region: String,
    pub sources: Vec<SourceReport>,
    /// What a lookup would answer: the first name in priority order.
    pub name: Option<String>,
    pub answered_by: Option<String>,
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

impl LookupService {
    pub async fn explain(&self, tenant: Id, number: &str) -> Result<Explanation, DirectoryError> {
        let inner = &self.inner;
        let state = inner.mirror.load();
        let region = state
            .tenant(tenant)
            .ok_or(DirectoryError::UnknownTenant)?
            .default_region
            .to_string();
        check_lookup_len(number)?;
        let e164 = normalize(number, &region)?;
        let mut reports = Vec::new();
        let remotes = inner.sources.sources_of(&state, tenant);
        let mut local_done = false;
        for source in remotes.iter() {
            if !local_done && source.priority >= LOCAL_PRIORITY {
                reports.push(self.explain_local(&state, tenant, &e164));
                local_done = true;
            }
            self.load_mirror(source).await;
            let started = Instant::now();
            let result = source.lookup(&e164, &region, source.timeout).await;
            let elapsed = millis(started.elapsed());
            let (outcome, name, error) = match result {
                Ok(found) => match found.as_deref().and_then(clean_name) {
                    Some(name) => ("found", Some(name), None),
                    None => ("not_found", None, None),
                },
                Err(e) => ("error", None, Some(e.to_string())),
            };
            reports.push(SourceReport {
                source: source.name.to_string(),
                kind: source.kind(),
                priority: source.priority,
                outcome,
                name,
                error,
                note: None,
                millis: elapsed,
                mirror: source.mirror.as_ref().map(|m| m.status()),
            });
        }
        if !local_done {
            reports.push(self.explain_local(&state, tenant, &e164));
        }
        let first = reports.iter().find(|r| r.name.is_some());
        Ok(Explanation {
            name: first.and_then(|r| r.name.clone()),
            answered_by: first.map(|r| r.source.clone()),
            number: e164,
            region,
            sources: reports,
        })
    }

    fn explain_local(&self, state: &MirrorState, tenant: Id, e164: &str) -> SourceReport {
        let started = Instant::now();
        let local = &self.inner.local;
        let found = local.lookup(state, tenant, e164);
        // Only when nothing matched: a shared name `clean_name` refuses is
        // no disagreement.
        let listed_by = match found {
            Some(_) => 0,
            None => local.listed_by(state, tenant, e164),
        };
        let name = found.and_then(|f| clean_name(&f.name));
        let (outcome, note) = match (&name, listed_by) {
            (Some(_), _) => ("found", None),
            (None, 0 | 1) => ("not_found", None),
            (None, n) => (
                "ambiguous",
                Some(format!(
                    "{n} entries list this number and share neither a name nor a company"
                )),
            ),
        };
        SourceReport {
            source: LOCAL_SOURCE.into(),
            kind: "local",
            priority: LOCAL_PRIORITY,
            outcome,
            name,
            error: None,
            note,
            millis: millis(started.elapsed()),
            mirror: None,
        }
    }
}
