//! `dialtone lookup` and `dialtone token`: the operator's view of caller-name
//! lookups and of the keys that PBXes and admins use.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use dialtone_directory::LookupService;
use dialtone_sync::{
    generate_token, now_millis, token_hash, ApiTokenInput, Audit, Mutation, SyncError, TokenScope,
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
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("number   {} (region {})", report.number, report.region);
    for s in &report.sources {
        let detail = match (&s.name, &s.error) {
            (Some(name), _) => format!("found {name:?}"),
            (None, Some(error)) => format!("error: {}", printable(error)),
            (None, None) => "not found".to_string(),
        };
        println!(
            "{:<8} {:<5} {detail} ({:.2} ms)",
            printable(&s.source),
            s.kind,
            s.millis
        );
        if let Some(m) = &s.mirror {
            let age = m.age_ms.map_or("never synced".to_string(), |ms| {
                format!("age {}s", ms / 1000)
            });
            println!("         mirror: {} entries, {age}", m.entries);
        }
    }
    match (&report.name, &report.answered_by) {
        (Some(name), Some(by)) => {
            println!("answer   {} (from {})", printable(name), printable(by))
        }
        _ => println!("answer   none: callers from this number show their own name"),
    }
    Ok(())
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

pub async fn token(config: &Config, command: &TokenCommand) -> Result<()> {
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
            // As the API checks it: the name is what lists and audit show.
            if name.trim().is_empty() || name.len() > 100 {
                bail!("--name must be 1 to 100 characters");
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
            println!("{token}");
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
                Ok(_) => println!("token {id} revoked"),
                Err(SyncError::NotFound(_)) => bail!("no active token with id {id}"),
                Err(e) => return Err(e).context("revoking the token"),
            }
        }
        TokenCommand::List => {
            let (data, _, _) = store.load_all().await.context("reading tokens")?;
            let tenants: std::collections::HashMap<_, _> = data
                .tenants
                .iter()
                .map(|t| (t.id, t.slug.clone()))
                .collect();
            println!(
                "{:<6} {:<13} {:<16} {:<8} name",
                "id", "scope", "tenant", "state"
            );
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
                    .and_then(|id| tenants.get(&id).map(|s| s.to_string()))
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{:<6} {:<13} {:<16} {:<8} {}",
                    t.id,
                    t.scope.as_str(),
                    tenant,
                    state,
                    t.name
                );
            }
        }
    }
    Ok(())
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
