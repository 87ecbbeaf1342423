//! `dialtone lookup` and `dialtone token`: the operator's view of caller-name
//! lookups and of the keys that PBXes and admins use.

use std::io::Write;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use dialtone_directory::explain::Explanation;
use dialtone_directory::LookupService;
use dialtone_sync::{
    generate_token, now_millis, token_hash, ApiTokenInput, Audit, Dataset, Mutation, Store,
    SyncError, TokenScope,
};

use crate::config::Config;

#[derive(Args)]
pub struct LookupArgs {
    /// The number, in any format a PBX or directory uses.
    pub number: String,
    /// The tenant's slug.
    #[arg(long)]
    pub tenant: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// How many days a token may be made to last, on the command line and
/// through the API alike: none would make it expired at birth, and a
/// hundred years is as good as never while still a time to compute with.
pub(crate) const EXPIRES_DAYS: std::ops::RangeInclusive<u32> = 1..=36_500;

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it once; only its hash is stored.
    Create {
        /// What the token may do.
        #[arg(long, value_enum, ignore_case = true)]
        scope: Scope,
        /// Required for every scope but global-admin.
        #[arg(long)]
        tenant: Option<String>,
        /// What the token is for ("pbx1 cidlookup"), shown in lists and the audit log.
        #[arg(long)]
        name: String,
        /// Expire after this many days (1 to 36500).
        #[arg(long, value_parser = clap::value_parser!(u32)
            .range(i64::from(*EXPIRES_DAYS.start())..=i64::from(*EXPIRES_DAYS.end())))]
        expires_days: Option<u32>,
    },
    /// Revoke a token by id. Each node refuses it once the revocation reaches
    /// it: at once while the node can reach the database; a node serving from
    /// its last known data may accept it until then (SECURITY.md, Known limits).
    Revoke {
        /// The token's id, as `dialtone token list` shows it.
        id: i64,
    },
    /// List tokens (never the tokens themselves).
    List,
}

/// `--scope`: the admin API's token scopes, spelled as stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scope {
    /// Every tenant and the platform: tenants, tokens, quotas.
    GlobalAdmin,
    /// One tenant (--tenant): read and change its phones, templates, directory and sources.
    TenantAdmin,
    /// One tenant (--tenant): read only.
    TenantRead,
    /// One tenant's caller-name lookups (the key a PBX sends).
    Lookup,
}

impl From<Scope> for TokenScope {
    fn from(scope: Scope) -> TokenScope {
        match scope {
            Scope::GlobalAdmin => TokenScope::GlobalAdmin,
            Scope::TenantAdmin => TokenScope::TenantAdmin,
            Scope::TenantRead => TokenScope::TenantRead,
            Scope::Lookup => TokenScope::Lookup,
        }
    }
}

fn actor() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}

pub async fn lookup(config: &Config, args: &LookupArgs) -> Result<()> {
    let (_store, mirror, key) = crate::loaded_mirror(config).await?;
    let tenant = mirror
        .load()
        .tenant_by_slug(&args.tenant)
        .map(|t| t.id)
        .with_context(|| format!("no tenant {:?}", args.tenant))?;
    // The same options as `serve`: this node's own listeners are refused
    // to the tenant's sources here too.
    let service = LookupService::new(mirror, Some(key), config.lookup_options()?);
    let report = service
        .explain(tenant, &args.number)
        .await
        .with_context(|| format!("looking up {:?}", args.number))?;
    if let Some(note) = relative_mirror_note(&report, &config.mirror_dir()) {
        eprintln!("dialtone: {note}");
    }
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        serde_json::to_writer_pretty(&mut out, &report)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        print_explained(&report, &mut out)
    };
    ended_by_reader(written.and_then(|()| out.flush()))
}

/// Why a mirrored source may look never synced to this command while the
/// node serves it: the mirror files are read from `dir`, mirror.snapshot_path's
/// folder, and a relative one is taken from the working folder, which is
/// the node's own (the package's /var/lib/dialtone) only when run from there.
fn relative_mirror_note(report: &Explanation, dir: &std::path::Path) -> Option<String> {
    let unsynced = report
        .sources
        .iter()
        .any(|s| s.mirror.as_ref().is_some_and(|m| m.age_ms.is_none()));
    if !unsynced || dir.is_absolute() {
        return None;
    }
    let read = std::env::current_dir().map_or_else(|_| dir.to_path_buf(), |cwd| cwd.join(dir));
    Some(format!(
        "a mirrored source has no mirror file in {} (read there because mirror.snapshot_path's \
         folder, {}, is relative, so it depends on the working folder); the node keeps its \
         files in its own working folder: run this from there, or with a config whose \
         mirror.snapshot_path is absolute",
        read.display(),
        dir.display()
    ))
}

fn print_explained(report: &Explanation, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "number   {} (region {})", report.number, report.region)?;
    for s in &report.sources {
        let detail = match (&s.name, &s.error, &s.note) {
            (Some(name), _, _) => format!("found {name:?}"),
            (None, Some(error), _) => format!("error: {}", printable(error)),
            (None, None, Some(why)) => format!("not shown: {why}"),
            (None, None, None) => "not found".to_string(),
        };
        writeln!(
            out,
            "{:<8} {:<5} {detail} ({:.2} ms)",
            printable(&s.source),
            s.kind,
            s.millis
        )?;
        if let Some(m) = &s.mirror {
            let age = m.age_ms.map_or("never synced".to_string(), |ms| {
                format!("age {}s", ms / 1000)
            });
            writeln!(out, "         mirror: {} entries, {age}", m.entries)?;
        }
    }
    match (&report.name, &report.answered_by) {
        (Some(name), Some(by)) => {
            writeln!(out, "answer   {} (from {})", printable(name), printable(by))
        }
        _ => writeln!(
            out,
            "answer   none: callers from this number show their own name"
        ),
    }
}

/// A listing's write: quiet when its reader went away, and any other
/// failure named as `export -` names it.
fn ended_by_reader(written: std::io::Result<()>) -> Result<()> {
    crate::stdout_reader::quiet_if_reader_left(written.context("writing to standard output"))
}

/// Text from tenants' sources and servers (names, errors) as the terminal
/// may show it: control characters, which could make up escape sequences,
/// are written out (`\u{1b}`) instead of sent.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_debug().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// What no database can make right in a token's creation, refused before
/// one is opened.
fn check_create(scope: Scope, tenant: Option<&str>, name: &str) -> Result<()> {
    // As the API checks it: the name is what lists and audit show.
    if name.trim().is_empty() || name.len() > 100 {
        return Err(crate::usage_error("--name must be 1 to 100 characters"));
    }
    let scope = TokenScope::from(scope);
    match (scope, tenant) {
        (TokenScope::GlobalAdmin, None) => Ok(()),
        (TokenScope::GlobalAdmin, Some(_)) => Err(crate::usage_error(
            "--scope global-admin is for every tenant: leave out --tenant",
        )),
        (_, Some(_)) => Ok(()),
        (_, None) => Err(crate::usage_error(format!(
            "--scope {} needs --tenant SLUG",
            scope.as_str()
        ))),
    }
}

pub async fn token(config: &Config, command: &TokenCommand) -> Result<()> {
    if let TokenCommand::Create {
        scope,
        tenant,
        name,
        ..
    } = command
    {
        check_create(*scope, tenant.as_deref(), name)?;
    }
    let (store, _) = crate::serve::open_reached_store(config).await?;
    match command {
        TokenCommand::List => crate::check_schema(&*store).await?,
        TokenCommand::Create { .. } | TokenCommand::Revoke { .. } => {
            crate::prepare_schema(config, &*store).await?
        }
    }
    let audit = |action: &str, key: String, tenant: Option<String>| Audit {
        tenant,
        actor: actor(),
        action: action.into(),
        entity: "api_token".into(),
        entity_key: key,
        detail: serde_json::json!({}),
    };
    match command {
        TokenCommand::Create {
            scope,
            tenant,
            name,
            expires_days,
        } => {
            if stdout_discarded() {
                bail!(
                    "standard output is closed or /dev/null, where the token would be shown \
                     to no one; nothing was created"
                );
            }
            let scope = TokenScope::from(*scope);
            let token = generate_token();
            let expires_at = match expires_days {
                Some(days) => Some(
                    i64::from(*days)
                        .checked_mul(86_400_000)
                        .and_then(|ms| now_millis().checked_add(ms))
                        .with_context(|| format!("--expires-days {days} is too far ahead"))?,
                ),
                None => None,
            };
            store
                .apply(
                    &[Mutation::CreateApiToken(ApiTokenInput {
                        name: name.clone(),
                        token_hash: token_hash(&token),
                        scope,
                        tenant: tenant.clone(),
                        expires_at,
                    })],
                    // In the tenant's own audit view, as a token the API made.
                    &audit("create", name.clone(), tenant.clone()),
                )
                .await
                .context("creating the token")?;
            eprintln!("token created; it is shown only this once:");
            let shown = {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{token}").and_then(|()| out.flush())
            };
            if let Err(e) = shown {
                // A token nobody holds would stay active for good.
                let revoked = async {
                    let id = created_token_id(&*store, &token).await?;
                    let revoke = [Mutation::RevokeApiToken { id }];
                    store
                        .apply(&revoke, &audit("revoke", id.to_string(), None))
                        .await?;
                    anyhow::Ok(id)
                };
                let id = revoked.await.with_context(|| {
                    format!(
                        "the token {name:?} was created but its value could not be shown \
                         ({e}), and revoking it failed: revoke it with `dialtone token revoke`"
                    )
                })?;
                bail!(
                    "token {id} was revoked because its value could not be shown: \
                     writing to standard output: {e}"
                );
            }
        }
        TokenCommand::Revoke { id } => {
            // The store audits it under the token's tenant, as the API's.
            let revoked = store
                .apply(
                    &[Mutation::RevokeApiToken { id: *id }],
                    &audit("revoke", id.to_string(), None),
                )
                .await;
            match revoked {
                Ok(_) => {
                    let mut out = std::io::stdout().lock();
                    ended_by_reader(writeln!(out, "token {id} revoked").and_then(|()| out.flush()))?
                }
                Err(SyncError::NotFound(_)) => bail!("no active token with id {id}"),
                Err(e) => return Err(e).context("revoking the token"),
            }
        }
        TokenCommand::List => {
            let (data, _, _) = store.load_all().await.context("reading tokens")?;
            let mut out = std::io::stdout().lock();
            ended_by_reader(print_tokens(&data, &mut out).and_then(|()| out.flush()))?;
        }
    }
    Ok(())
}

/// One row a token, its name (a tenant admin's text, through the API)
/// with its control characters written out: a newline or an escape
/// sequence in it would split the table or drive the terminal.
fn print_tokens(data: &Dataset, out: &mut impl Write) -> std::io::Result<()> {
    let tenants: std::collections::HashMap<_, _> =
        data.tenants.iter().map(|t| (t.id, &t.slug)).collect();
    writeln!(
        out,
        "{:<6} {:<13} {:<16} {:<8} name",
        "id", "scope", "tenant", "state"
    )?;
    for t in &data.api_tokens {
        let state = if t.revoked {
            "revoked"
        } else if t.expires_at.is_some_and(|at| at <= now_millis()) {
            "expired"
        } else {
            "active"
        };
        let tenant = t
            .tenant_id
            .and_then(|id| tenants.get(&id))
            .map_or_else(|| "-".into(), |slug| printable(slug));
        writeln!(
            out,
            "{:<6} {:<13} {:<16} {:<8} {}",
            t.id,
            t.scope.as_str(),
            tenant,
            state,
            printable(&t.name)
        )?;
    }
    Ok(())
}

/// Whether standard output goes nowhere: /dev/null, which the runtime
/// also puts in place of a closed one (`>&-`), where writes succeed.
fn stdout_discarded() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let (Ok(null), Ok(out)) = (
        std::fs::metadata("/dev/null"),
        std::io::stdout().as_fd().try_clone_to_owned(),
    ) else {
        return false;
    };
    std::fs::File::from(out)
        .metadata()
        .is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == null.rdev())
}

/// The id of the token just created: the write reports none.
async fn created_token_id(store: &dyn Store, token: &str) -> Result<i64> {
    let hash = token_hash(token);
    let (data, _, _) = store.load_all().await?;
    data.api_tokens
        .iter()
        .find(|t| t.token_hash.eq_ignore_ascii_case(&hash))
        .map(|t| t.id)
        .context("the token is not in the database")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_writes_control_characters_out() {
        assert_eq!(printable("José Núñez"), "José Núñez");
        assert_eq!(
            printable("LDAP: busy\x1b]0;pwned\x07\u{9b}2J"),
            "LDAP: busy\\u{1b}]0;pwned\\u{7}\\u{9b}2J"
        );
        assert_eq!(printable("a\r\nb"), "a\\r\\nb");
    }

    /// A mirrored source never synced, read through a relative folder, is
    /// said to depend on the working folder, with the folder read named in
    /// full; an absolute folder, or a source that synced, says nothing.
    #[test]
    fn a_relative_mirror_folder_without_files_is_named_in_full() {
        let source = |age_ms| dialtone_directory::explain::SourceReport {
            source: "ad".into(),
            kind: "ldap",
            priority: 1,
            outcome: "error",
            name: None,
            error: Some("the mirror has not synced yet".into()),
            note: None,
            millis: 0.0,
            mirror: Some(dialtone_directory::mirror::MirrorStatus {
                age_ms,
                ..Default::default()
            }),
        };
        let report = |age_ms| Explanation {
            number: "+15550100".into(),
            region: "US".into(),
            sources: vec![source(age_ms)],
            name: None,
            answered_by: None,
        };
        let relative = std::path::Path::new(".");
        let note = relative_mirror_note(&report(None), relative).expect("a note");
        let cwd = std::env::current_dir().unwrap();
        assert!(
            note.contains(&cwd.join(".").display().to_string())
                && note.contains("depends on the working folder"),
            "{note}"
        );
        assert_eq!(relative_mirror_note(&report(Some(5)), relative), None);
        let absolute = std::path::Path::new("/var/lib/dialtone");
        assert_eq!(relative_mirror_note(&report(None), absolute), None);
    }

    /// The help's bounds are written out by hand (a doc comment cannot
    /// name a constant): held to the ones checked.
    #[test]
    fn expires_days_help_states_the_bounds_checked() {
        let mut token = TokenCommand::augment_subcommands(clap::Command::new("token"));
        let help = token
            .find_subcommand_mut("create")
            .unwrap()
            .render_long_help()
            .to_string();
        let bounds = format!("({} to {})", EXPIRES_DAYS.start(), EXPIRES_DAYS.end());
        assert!(help.contains(&bounds), "{help}");
    }

    /// `--scope` takes exactly the spellings the store and the API use.
    #[test]
    fn scope_values_are_the_stored_spellings() {
        for scope in Scope::value_variants() {
            let name = scope.to_possible_value().unwrap().get_name().to_string();
            let stored = TokenScope::from(*scope);
            assert_eq!(name, stored.as_str());
            assert_eq!(name.parse::<TokenScope>().unwrap(), stored);
        }
        // And every stored scope can be given.
        for stored in TokenScope::ALL {
            assert!(Scope::from_str(stored.as_str(), false).is_ok(), "{stored}");
        }
    }
}
