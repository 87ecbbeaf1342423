//! `dialtone import`: parse every file, then write everything in one
//! transaction (or nothing). Errors name file, line and column.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use dialtone_sync::import::{plan_files, ImportPlan, Location, PhoneOrigins};
use dialtone_sync::store::{unknown_tenant, Ending, Progress};
use dialtone_sync::{Audit, Mutation, Store, SyncError, WriteReport};
use indicatif::ProgressBar;

use crate::config::Config;
use crate::ImportArgs;

mod progress;
mod shared_numbers;
pub(crate) mod templates;
mod vendors;

use progress::progress_bar;

const MAX_ERRORS_SHOWN: usize = 50;

/// Reports the plan's errors from `first` on (those not reported yet),
/// and stops the run unless `--skip-invalid` lets it go on without them.
fn report_errors(plan: &ImportPlan, first: usize, args: &ImportArgs) -> Result<()> {
    let errors = &plan.errors[first.min(plan.errors.len())..];
    if errors.is_empty() {
        return Ok(());
    }
    for e in errors.iter().take(MAX_ERRORS_SHOWN) {
        eprintln!("{e}");
    }
    if errors.len() > MAX_ERRORS_SHOWN {
        eprintln!("... and {} more errors", errors.len() - MAX_ERRORS_SHOWN);
    }
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
    eprintln!("skipping {} invalid rows", errors.len());
    Ok(())
}

/// How many times one run writes again after a refusal by the database,
/// with or without `--skip-invalid`: each is the whole transaction again.
/// A tenant that does not exist costs one, every row naming it set aside
/// at once.
const MAX_RETRIES: usize = 10;

/// What the files hold that is written but may not work as meant: phones
/// whose MAC is another vendor's, numbers no name can be shown for. Each
/// names its row; `dialtone import` prints them, `POST /v1/import`
/// answers them.
pub(crate) fn warnings(plan: &ImportPlan) -> Vec<String> {
    let mut warnings = vendors::other_vendors(plan);
    warnings.extend(shared_numbers::unshown_numbers(plan));
    warnings
}

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
    let actor = format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    );
    // The files' own errors first: a run they stop has not touched the
    // database, nor created one at a mistyped URL.
    report_errors(&plan, 0, args)?;
    for warning in warnings(&plan) {
        eprintln!("warning: {warning}");
    }
    // Templates are checked against the database (its phones to try them
    // on, its tenants' quotas) before anything is written: it is opened as
    // the import opens it, so a file with templates moves into a new
    // database as one without does.
    let mut opened = None;
    if templates::planned(&plan) {
        let (store, key) = open(config, args).await?;
        keep_stored_tenants(&*store, &mut plan).await?;
        let reported = plan.errors.len();
        templates::check_offline(config, &*store, key, &mut plan, &actor).await?;
        report_errors(&plan, reported, args)?;
        opened = Some(store);
    }
    let changes = plan.changes();
    if changes == 0 {
        bail!("nothing to import");
    }
    let store = match opened {
        Some(store) => store,
        None => open(config, args).await?.0,
    };
    keep_stored_tenants(&*store, &mut plan).await?;
    let replaced = match args.replace_directory {
        true => plan.replace_directories(
            args.max_deleted_percent
                .unwrap_or(dialtone_sync::store::DEFAULT_MOST_DELETED_PERCENT),
        ),
        false => Vec::new(),
    };
    if args.replace_directory && replaced.is_empty() {
        eprintln!(
            "--replace-directory: the files hold no directory entry, so no directory is replaced"
        );
    }
    let changes = plan.changes();
    let files: Vec<String> = args.files.iter().map(|f| f.display().to_string()).collect();
    let mut detail = serde_json::json!({ "files": files, "changes": changes });
    if args.replace_directory {
        detail["replaced_directories"] = serde_json::json!(replaced);
    }
    let audit = Audit {
        tenant: None,
        actor,
        action: "import".into(),
        entity: "import".into(),
        entity_key: files.join(","),
        detail,
    };
    // A dry run is the import itself, rolled back: the database's own
    // refusals (an unknown tenant, say) and the counts are the real ones.
    let ending = if args.dry_run {
        Ending::RollBack
    } else {
        Ending::Commit
    };
    let bar = progress_bar(changes as u64);
    let written = write(&*store, &mut plan, &audit, ending, args.skip_invalid, &bar).await;
    if let (Err(_), Some(b)) = (&written, &bar) {
        b.abandon();
    }
    let Written { report, attempts } = written?;
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    let (verb, tail) = match ending {
        Ending::RollBack => ("would import", "; nothing written (dry run)"),
        Ending::Commit => ("imported", ""),
    };
    println!(
        "{verb}: tenants {}, phones {}, lines {}, directory entries {}, directory sources {}, \
         templates {}{tail}",
        summary(report.tenants),
        summary(report.phones),
        summary(report.lines),
        summary(report.directory_entries),
        summary(report.directory_sources),
        summary(report.templates),
    );
    if !replaced.is_empty() {
        let said = match ending {
            Ending::RollBack => "directories it would replace",
            Ending::Commit => "directories replaced",
        };
        println!("{said}: {}", replaced.join(", "));
    }
    store.close().await;
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        attempts,
        "import: done"
    );
    // The plan's allocations are given back by the exit at once.
    std::mem::forget(plan);
    Ok(())
}

/// The store, its schema ready: a dry run writes nothing, the schema
/// included.
async fn open(
    config: &Config,
    args: &ImportArgs,
) -> Result<(Arc<dyn Store>, dialtone_sync::SecretKey)> {
    let (store, key) = crate::serve::open_reached_store(config).await?;
    if args.dry_run {
        crate::check_schema(&*store).await?;
    } else {
        crate::prepare_schema(config, &*store).await?;
    }
    Ok((store, key))
}

async fn keep_stored_tenants(store: &dyn Store, plan: &mut ImportPlan) -> Result<()> {
    if plan.keeps_stored_tenants() {
        // Only the tenants are wanted, but the store reads no table alone:
        // a cost only a run whose tenants file leaves a column out pays.
        let (stored, _, _) = store.load_all().await?;
        let by_slug: std::collections::HashMap<&str, &dialtone_sync::Tenant> =
            (stored.tenants.iter()).map(|t| (&*t.slug, t)).collect();
        plan.keep_stored_tenants(|slug| by_slug.get(slug).copied());
    }
    Ok(())
}

struct Written {
    report: WriteReport,
    /// Transactions run, the one that succeeded included.
    attempts: usize,
}

/// The plan's rows in one transaction, committed or (`ending`) rolled
/// back. A rejection by the database names the mutation; it is mapped
/// back to its file position and reported, and its rows set aside: every
/// row naming a tenant that does not exist at once, else the one row.
/// With `skip_invalid` the rest is written again; without, only a refused
/// tenant is set aside, and the run rehearsed again (rolled back) to name
/// the next such tenant, so one run names them all.
async fn write(
    store: &dyn Store,
    plan: &mut ImportPlan,
    audit: &Audit,
    ending: Ending,
    skip_invalid: bool,
    bar: &Option<ProgressBar>,
) -> Result<Written> {
    // Mutations and their positions apart, so the mutations are not copied
    // for the store; the phones' positions stay in `plan.phones`.
    let (mut mutations, mut locations): (Vec<_>, Vec<_>) =
        std::mem::take(&mut plan.items).into_iter().unzip();
    let mut refused = Refused::default();
    for attempts in 1.. {
        let progress = bar
            .clone()
            .map(|b| Arc::new(move |n| b.set_position(n)) as Progress);
        let this_time = if refused.rows > 0 && !skip_invalid {
            Ending::RollBack
        } else {
            ending
        };
        let rejected = match store
            .apply_with_progress(&mutations, audit, progress, this_time)
            .await
        {
            Ok(_) if refused.rows > 0 && !skip_invalid => {
                bail!("{refused} refused by the database; nothing was written")
            }
            Ok(report) => {
                // The plan's allocations are given back by the exit at once.
                std::mem::forget((mutations, locations));
                return Ok(Written { report, attempts });
            }
            Err(SyncError::Rejected {
                index,
                item,
                reason,
            }) => (index, item, reason),
            Err(e @ SyncError::CommitUnknown(_)) => {
                return Err(e).context(
                    "import's outcome is unknown: check what the database holds (dialtone import --dry-run says what it would still change) before running it again",
                )
            }
            Err(e) => return Err(e).context("import failed; nothing was written"),
        };
        let (index, item, reason) = rejected;
        let aside = set_aside(
            &mut mutations,
            &mut locations,
            &mut plan.phones,
            index,
            item,
            &reason,
        );
        let verdict = if skip_invalid { " (skipped)" } else { "" };
        for location in &aside.locations {
            eprintln!("{location}: {reason}{verdict}");
        }
        refused.rows += aside.locations.len();
        refused.phones += aside.phones;
        if !skip_invalid && (!aside.whole_tenant || mutations.is_empty()) {
            bail!("{refused} refused by the database (the last: {reason}); nothing was written");
        }
        if attempts >= MAX_RETRIES {
            bail!(
                "{refused} refused by the database in {attempts} attempts, each the whole import \
                 again; nothing was written: correct or remove the rows named above and import again"
            );
        }
        if mutations.is_empty() {
            bail!("nothing left to import");
        }
    }
    unreachable!("the attempts run until one returns")
}

/// Rows the database refused in one run, phones counted apart: a run that
/// refused only phones says so.
#[derive(Default)]
struct Refused {
    rows: usize,
    phones: usize,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.rows == self.phones {
            write!(f, "{} phones", self.phones)
        } else {
            write!(f, "{} rows", self.rows)
        }
    }
}

/// The rows a refusal took out of the run.
struct SetAside {
    /// Where each came from, in the order they are written.
    locations: Vec<String>,
    phones: usize,
    /// Every row of a tenant that does not exist, not only the one named.
    whole_tenant: bool,
}

/// Takes the rows refused with `reason` out of `mutations` (and their
/// positions): when it is a tenant that does not exist, every phone,
/// directory entry and source naming it, which would each be refused in
/// turn, a whole transaction apiece; else the refused row alone.
fn set_aside(
    mutations: &mut Vec<Mutation>,
    locations: &mut Vec<Location>,
    phones: &mut PhoneOrigins,
    index: usize,
    item: Option<usize>,
    reason: &str,
) -> SetAside {
    let tenant = match (item, mutations.get(index)) {
        (Some(phone), Some(Mutation::UpsertPhones(batch))) if phone < batch.len() => {
            Some(batch.tenants()[batch.tenant_index(phone)].to_string())
        }
        (_, Some(mutation)) => tenant_named(mutation).map(str::to_string),
        (_, None) => None,
    };
    if let Some(tenant) = tenant.filter(|t| reason == unknown_tenant(t)) {
        return set_aside_tenant(mutations, locations, phones, &tenant);
    }
    let mut aside = SetAside {
        locations: Vec::new(),
        phones: 0,
        whole_tenant: false,
    };
    match (item, mutations.get_mut(index)) {
        (Some(phone), Some(Mutation::UpsertPhones(batch))) if phone < batch.len() => {
            aside.phones = 1;
            let location = if phone < phones.len() {
                let location = phones.location(phone);
                phones.remove(phone);
                Some(location)
            } else {
                locations.get(index).cloned()
            };
            aside
                .locations
                .extend(location.as_ref().map(Location::to_string));
            if batch.len() > 1 {
                batch.remove(phone);
                return aside;
            }
        }
        (_, Some(_)) => aside
            .locations
            .extend(locations.get(index).map(Location::to_string)),
        (_, None) => return aside,
    }
    mutations.remove(index);
    locations.remove(index);
    aside
}

/// [`set_aside`] for a tenant that does not exist.
fn set_aside_tenant(
    mutations: &mut Vec<Mutation>,
    locations: &mut Vec<Location>,
    phones: &mut PhoneOrigins,
    tenant: &str,
) -> SetAside {
    let mut aside = SetAside {
        locations: Vec::new(),
        phones: 0,
        whole_tenant: true,
    };
    let mut keep = Vec::with_capacity(mutations.len());
    for (mutation, location) in mutations.iter_mut().zip(locations.iter()) {
        let kept = match mutation {
            Mutation::UpsertPhones(batch) => {
                let gone: Vec<usize> = (0..batch.len())
                    .filter(|&i| &*batch.tenants()[batch.tenant_index(i)] == tenant)
                    .collect();
                aside.phones += gone.len();
                // The plan's phones are its one batch's.
                if phones.len() == batch.len() {
                    (aside.locations).extend(gone.iter().map(|&i| phones.location(i).to_string()));
                    phones.remove_all(&gone);
                }
                batch.remove_all(&gone);
                !batch.is_empty()
            }
            // Goes with the tenant's entries, already named.
            Mutation::ReplaceDirectory { tenant: of, .. } if of == tenant => false,
            other if tenant_named(other) == Some(tenant) => {
                aside.locations.push(location.to_string());
                false
            }
            _ => true,
        };
        keep.push(kept);
    }
    let mut kept = keep.iter().copied();
    mutations.retain(|_| kept.next().unwrap_or(true));
    let mut kept = keep.iter().copied();
    locations.retain(|_| kept.next().unwrap_or(true));
    aside
}

/// The tenant an imported row belongs to (a batch of phones names many).
fn tenant_named(mutation: &Mutation) -> Option<&str> {
    match mutation {
        Mutation::UpsertPhone(phone) => Some(&phone.tenant),
        Mutation::UpsertDirectoryEntry(entry) => Some(&entry.tenant),
        Mutation::UpsertDirectorySource(source) => Some(&source.tenant),
        Mutation::UpsertTenantTemplate { tenant, .. } => Some(tenant),
        Mutation::ReplaceDirectory { tenant, .. } => Some(tenant),
        _ => None,
    }
}

fn summary(c: dialtone_sync::store::Counts) -> String {
    format!(
        "+{} ~{} ={} -{}",
        c.inserted, c.updated, c.unchanged, c.deleted
    )
}
