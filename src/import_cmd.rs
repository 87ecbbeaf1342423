//! `dialtone import`: parse every file, then write everything in one
//! transaction (or nothing). Errors name file, line and column.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use dialtone_sync::import::{plan_files, ImportPlan};
use dialtone_sync::store::{unknown_tenant, Ending};
use dialtone_sync::{Audit, Mutation, SyncError};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Config;
use crate::ImportArgs;

const MAX_ERRORS_SHOWN: usize = 50;

fn print_errors(plan: &ImportPlan) {
    for e in plan.errors.iter().take(MAX_ERRORS_SHOWN) {
        eprintln!("{e}");
    }
    if plan.errors.len() > MAX_ERRORS_SHOWN {
        eprintln!(
            "... and {} more errors",
            plan.errors.len() - MAX_ERRORS_SHOWN
        );
    }
}

/// Tenants that do not exist named in one run without `--skip-invalid`:
/// each costs a rehearsal of the whole import.
const MAX_REHEARSALS: usize = 10;

pub async fn run(config: &Config, args: &ImportArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let mut plan = plan_files(&args.files);
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        rows = plan.changes(),
        errors = plan.errors.len(),
        "import: files parsed"
    );
    dialtone_directory::settings::check_import(&mut plan);
    if !plan.errors.is_empty() {
        print_errors(&plan);
        if plan.whole_file_errors > 0 {
            bail!(
                "{} invalid rows, {} of them spoiling a whole file (unreadable, not parsed, or a wrong header); \
                 nothing was written (--skip-invalid skips rows, not files)",
                plan.errors.len(),
                plan.whole_file_errors
            );
        }
        if !args.skip_invalid {
            bail!(
                "{} invalid rows; nothing was written (use --skip-invalid to import the rest)",
                plan.errors.len()
            );
        }
        eprintln!("skipping {} invalid rows", plan.errors.len());
    }
    let changes = plan.changes();
    if changes == 0 {
        bail!("nothing to import");
    }
    let (store, _) = crate::serve::open_reached_store(config).await?;
    // A dry run writes nothing, the schema included.
    if args.dry_run {
        crate::check_schema(&*store).await?;
    } else {
        crate::prepare_schema(config, &*store).await?;
    }
    if plan.keeps_stored_tenants() {
        // Only the tenants are wanted, but the store reads no table alone:
        // a cost only a run whose tenants file leaves a column out pays.
        let (stored, _, _) = store.load_all().await?;
        let by_slug: std::collections::HashMap<&str, &dialtone_sync::Tenant> =
            (stored.tenants.iter()).map(|t| (&*t.slug, t)).collect();
        plan.keep_stored_tenants(|slug| by_slug.get(slug).copied());
    }
    let files: Vec<String> = args.files.iter().map(|f| f.display().to_string()).collect();
    let audit = Audit {
        tenant: None,
        actor: format!(
            "cli:{}",
            std::env::var("USER").unwrap_or_else(|_| "unknown".into())
        ),
        action: "import".into(),
        entity: "import".into(),
        entity_key: files.join(","),
        detail: serde_json::json!({ "files": files, "changes": changes }),
    };
    // A dry run is the import itself, rolled back: the database's own
    // refusals (an unknown tenant, say) and the counts are the real ones.
    let ending = if args.dry_run {
        Ending::RollBack
    } else {
        Ending::Commit
    };
    let bar = progress_bar(changes as u64);
    // Mutations and their positions apart, so the mutations are not copied
    // for the store; the phones' positions stay in `plan.phones`.
    let (mut mutations, mut locations): (Vec<_>, Vec<_>) =
        std::mem::take(&mut plan.items).into_iter().unzip();
    // A rejection by the database names the mutation; map it back to its
    // file position. With --skip-invalid, drop it and try again.
    // Without --skip-invalid, a refused tenant's phones are set aside and
    // the run rehearsed again (rolled back), so one run names every
    // tenant that does not exist, up to `MAX_REHEARSALS` of them.
    let (mut refused, mut rehearsals) = (0usize, 0usize);
    let report = loop {
        let progress_bar = bar.clone();
        let progress: Option<dialtone_sync::store::Progress> = progress_bar
            .map(|b| Arc::new(move |n| b.set_position(n)) as dialtone_sync::store::Progress);
        let this_time = if refused > 0 {
            Ending::RollBack
        } else {
            ending
        };
        match store
            .apply_with_progress(&mutations, &audit, progress, this_time)
            .await
        {
            Ok(_) if refused > 0 => {
                if let Some(b) = &bar {
                    b.abandon();
                }
                bail!("{refused} phones refused by the database; nothing was written");
            }
            Ok(report) => break report,
            Err(SyncError::Rejected {
                index,
                item,
                reason,
            }) => {
                let location = match item {
                    Some(phone) if phone < plan.phones.len() => {
                        plan.phones.location(phone).to_string()
                    }
                    _ => locations
                        .get(index)
                        .map(|l: &dialtone_sync::import::Location| l.to_string())
                        .unwrap_or_default(),
                };
                // Every phone of a tenant that does not exist is refused at
                // once: all reported, and with --skip-invalid all skipped in
                // one retry instead of one whole retry each.
                let same_tenant = match (item, mutations.get(index)) {
                    (Some(phone), Some(Mutation::UpsertPhones(batch))) if phone < batch.len() => {
                        let tenant = batch.tenant_index(phone);
                        let unknown = unknown_tenant(&batch.tenants()[tenant]);
                        (reason == unknown).then(|| {
                            (0..batch.len())
                                .filter(|&i| batch.tenant_index(i) == tenant)
                                .collect::<Vec<usize>>()
                        })
                    }
                    _ => None,
                };
                let verdict = if args.skip_invalid { " (skipped)" } else { "" };
                match &same_tenant {
                    Some(phones) if phones.len() > 1 => {
                        for &phone in phones {
                            eprintln!("{}: {reason}{verdict}", plan.phones.location(phone));
                        }
                    }
                    _ => eprintln!("{location}: {reason}{verdict}"),
                }
                if !args.skip_invalid {
                    refused += same_tenant.as_ref().map_or(1, Vec::len);
                    rehearsals += 1;
                    if same_tenant.is_none() || rehearsals >= MAX_REHEARSALS {
                        if let Some(b) = &bar {
                            b.abandon();
                        }
                        bail!("{refused} phones refused by the database (the last: {reason}); nothing was written");
                    }
                }
                match (item, mutations.get_mut(index)) {
                    (Some(_), Some(Mutation::UpsertPhones(batch)))
                        if same_tenant.as_ref().is_some_and(|p| p.len() < batch.len()) =>
                    {
                        let phones = same_tenant.as_deref().unwrap_or_default();
                        batch.remove_all(phones);
                        plan.phones.remove_all(phones);
                    }
                    (Some(phone), Some(Mutation::UpsertPhones(batch)))
                        if same_tenant.is_none() && batch.len() > 1 =>
                    {
                        batch.remove(phone);
                        plan.phones.remove(phone);
                    }
                    _ => {
                        mutations.remove(index);
                        locations.remove(index);
                    }
                }
                if mutations.is_empty() {
                    bail!("nothing left to import");
                }
            }
            Err(e @ SyncError::CommitUnknown(_)) => {
                return Err(e).context(
                    "import's outcome is unknown: check what the database holds (dialtone import --dry-run says what it would still change) before running it again",
                )
            }
            Err(e) => return Err(e).context("import failed; nothing was written"),
        }
    };
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let (verb, tail) = match ending {
        Ending::RollBack => ("would import", "; nothing written (dry run)"),
        Ending::Commit => ("imported", ""),
    };
    println!(
        "{verb}: tenants {}, phones {}, lines {}, directory entries {}, directory sources {}{tail}",
        summary(report.tenants),
        summary(report.phones),
        summary(report.lines),
        summary(report.directory_entries),
        summary(report.directory_sources),
    );
    store.close().await;
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "import: done");
    // The plan's allocations are given back by the exit at once.
    std::mem::forget((mutations, locations, plan));
    Ok(())
}

fn summary(c: dialtone_sync::store::Counts) -> String {
    format!(
        "+{} ~{} ={} -{}",
        c.inserted, c.updated, c.unchanged, c.deleted
    )
}

/// Only on a terminal; scripts and CI get the summary line alone. A row is
/// one tenant, phone (with its lines) or directory entry of the files.
fn progress_bar(len: u64) -> Option<ProgressBar> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40} {pos}/{len} rows, {per_sec}, {elapsed}")
    {
        bar.set_style(style);
    }
    Some(bar)
}
