//! One sync of a mirrored source: the read on its own connection, within
//! its time limit, then the merge into the mirror's data.

use std::time::Duration;

use dialtone_sync::now_millis;
use tokio_util::sync::CancellationToken;

use super::sync::{filter, read_all, root_dse, since_on_this_server, Limits, Read, RootDse};
use super::work::MirrorWork;
use super::{from_full, merge, MirrorData, Watermark};
use crate::error::DirectoryError;
use crate::ldap::LdapSource;

/// Each LDAP operation of a sync (connect, bind, one page) at most.
const OP_TIMEOUT: Duration = Duration::from_secs(60);

pub(super) struct Outcome {
    pub changed: bool,
    pub capped: bool,
    /// Read in full: asked for, or the watermark did not hold.
    pub full: bool,
}

/// One sync: the read on its own connection (closed at the end) within
/// `limit`, then the merge, which is bounded by the entries read. The
/// limit is the read's alone: cut short while the merge held the data
/// taken out of `data`, a sync lost the mirror it had (its entries,
/// watermark and timings), and a merge may wait for a place.
#[allow(clippy::too_many_arguments)]
pub(super) async fn sync_once(
    ldap: &LdapSource,
    work: &MirrorWork,
    data: &mut MirrorData,
    full: bool,
    max: usize,
    limit: Duration,
    cancel: &CancellationToken,
) -> Result<Outcome, DirectoryError> {
    let started_at = now_millis();
    let since = if full { None } else { data.watermark.clone() };
    let read = tokio::select! {
        _ = cancel.cancelled() => {
            return Err(DirectoryError::Ldap("the source changed during its sync".into()))
        }
        read = tokio::time::timeout(limit, read_source(ldap, since, max)) => read,
    };
    let (root, since, read) = read.unwrap_or_else(|_| {
        Err(DirectoryError::MirrorLimit(format!(
            "took over {} s",
            limit.as_secs()
        )))
    })?;
    // Read in full when the watermark did not hold on this server (another
    // DC's USN, `sync::usn_mismatch`): the entries are replaced.
    let full = since.is_none();
    let Read {
        entries,
        capped,
        newest,
    } = read;
    let region = data.region.clone();
    let outcome = if full {
        // Compared (and the old entries freed) on the job's thread: two
        // quotas of entries, deep. Lost on a panic, with the rest of the
        // data, as a merge's are: the next sync is a full one.
        let old = std::mem::take(&mut data.entries);
        let (entries, changed) = work
            .run(move || {
                let entries = from_full(entries, &region);
                let changed = entries != old;
                drop(old);
                (entries, changed)
            })
            .await
            .map_err(|e| {
                *data = MirrorData::default();
                DirectoryError::Ldap(format!("normalizing: {e}"))
            })?;
        data.entries = entries;
        data.last_full_sync = Some(started_at);
        data.watermark = root.watermark(newest);
        Outcome {
            changed,
            capped,
            full,
        }
    } else {
        let mut taken = std::mem::take(data);
        let (back, changed, merge_capped) = work
            .run(move || {
                let (changed, capped) = merge(&mut taken, entries, max);
                (taken, changed, capped)
            })
            .await
            .map_err(|e| DirectoryError::Ldap(format!("merging: {e}")))?;
        *data = back;
        data.last_incremental_sync = Some(started_at);
        // A read cut short at the cap has not seen every change: start the
        // next one where this one started.
        if !capped {
            data.watermark = since.map(|since| root.watermark_after(since, newest));
        }
        Outcome {
            changed,
            capped: capped || merge_capped,
            full,
        }
    };
    Ok(outcome)
}

/// The directory's root DSE (its change counter and DC, if any) and the
/// entries the source's filter finds, or those changed `since` if that
/// holds on this server; with the watermark the read started from.
async fn read_source(
    ldap: &LdapSource,
    since: Option<Watermark>,
    max: usize,
) -> Result<(RootDse, Option<Watermark>, Read), DirectoryError> {
    let settings = ldap.settings();
    let mut conn = ldap
        .open(OP_TIMEOUT, super::sync::search_bounds(max))
        .await?;
    // Read before the search: a change made during it is read again next
    // time rather than missed. A root DSE that cannot be read means full
    // syncs only.
    let root = match root_dse(&mut conn, OP_TIMEOUT).await {
        Ok(root) => root,
        // Not merely unreadable: a server that floods its root DSE would
        // flood the search too.
        Err(e @ DirectoryError::MirrorLimit(_)) => {
            let _ = conn.unbind().await;
            return Err(e);
        }
        Err(e) => {
            let label = ldap.label();
            tracing::debug!(tenant = label.tenant, source_id = label.id, source = ?label.name, error = &*e.to_string(), "no root DSE");
            RootDse::default()
        }
    };
    let since = since_on_this_server(ldap.label(), since, &root);
    let search = filter(
        settings.filter.as_deref(),
        &settings.number_attributes,
        since.as_ref(),
    );
    let limits = Limits {
        max_entries: max,
        page_size: settings.page_size,
        op_timeout: OP_TIMEOUT,
    };
    let read = read_all(ldap, &mut conn, &search, limits).await;
    let _ = conn.unbind().await;
    Ok((root, since, read?))
}
