//! The `dialtone` binary: CLI, configuration and wiring. Library crates do
//! the work; this crate decides what runs and turns failures into one clear
//! line and an exit code.

mod admin;
mod assets_cmd;
mod config;
mod demo;
mod directory_cmd;
mod export_cmd;
mod http;
mod http_server;
#[cfg(test)]
mod http_server_idle_tests;
#[cfg(test)]
mod http_server_tests;
#[cfg(test)]
mod http_server_wire_tests;
mod import_cmd;
mod logging;
mod metric_help;
mod phlem;
mod prometheus;
mod rekey_cmd;
mod render_cmd;
mod resync;
mod serve;
mod stdout_reader;
mod supervise;
mod unnamed_config;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::config::Config;

// Cold start allocates tens of millions of small strings; mimalloc loads a
// million-phone snapshot in about two thirds of glibc's time (BENCHMARKS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The large heaps this binary builds (`serve`'s mirror, ~600 MB for a
/// million phones; `import`'s plan, ~110 MB) are built once and then read.
/// With transparent huge pages (mimalloc asks for them) the kernel zeroed
/// them 2 MiB at a time, on VMs from memory the host had not backed yet:
/// `serve` from the snapshot started in 0.9–1.3 s with them against
/// 0.56–0.71 s without, from PostgreSQL 1.54–2.08 s against 1.15–1.26 s
/// (30 MB less resident too), and an import's parse took 3.1 s against
/// 1.8 s. Best effort, and before anything allocates much: on a kernel
/// without the setting everything runs the same, so a refusal is not
/// worth a line on every command.
fn without_transparent_huge_pages() {
    let _ = rustix::thread::disable_transparent_huge_pages(true);
}

#[derive(Parser)]
#[command(
    name = "dialtone",
    version,
    about = "Phone provisioning and caller-name directory for hosted VoIP"
)]
struct Cli {
    /// TOML config file. Without one, dialtone runs on an embedded SQLite
    /// database at ./dialtone.db.
    #[arg(long, short, global = true, env = "DIALTONE_CONFIG")]
    config: Option<PathBuf>,

    /// Overrides database.url (sqlite://PATH or postgres://...).
    #[arg(long, global = true)]
    database_url: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: provisioning (TFTP, HTTP, HTTPS), caller-name lookups,
    /// the admin API and page, health and metrics, on one mirror.
    Serve(ServeArgs),
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Import tenants, phones with lines, directory entries and (JSON)
    /// directory sources and templates, from CSV or JSON.
    Import(ImportArgs),
    /// Write tenants, phones with lines, directory entries, sources and
    /// templates (as they are now) in the import formats (secrets in
    /// clear), to move or edit; not a backup (no template versions, tokens
    /// or history).
    Export(export_cmd::ExportArgs),
    /// Validate the configuration and the files it names (TLS pair, key
    /// file, static folder, log file), and print it, secrets masked.
    CheckConfig,
    /// Seed the demo tenant (phones of every vendor, lines, directory entries).
    Demo,
    /// Make every node reload its mirror in full (after restoring the
    /// database from a backup, say).
    ReloadAll,
    /// Change the secrets key: re-seal every stored secret (line and phone
    /// HTTP passwords, directory source secrets) with a new key, after a
    /// key file leaked, say.
    ///
    /// A node reads its key only at start: one still running with the old
    /// key cannot open the values it reloads (phones with passwords fail to
    /// render until it restarts), and what it writes is sealed with the old
    /// key. So: stop every node; run rekey once, with the configuration
    /// naming the current key; install the new key file as
    /// secrets.key_file on every node (with the embedded SQLite default,
    /// in place of <database>.key); start them. One transaction: on any
    /// refusal (a stored value the current key does not open, named) nothing
    /// is written and the current key stays. Back up the new key with the
    /// database; backups taken before need the old key.
    Rekey(rekey_cmd::RekeyArgs),
    /// Ask every directory source of a tenant who is calling from a number,
    /// with timings (past the cache).
    Lookup(directory_cmd::LookupArgs),
    /// Create, list or revoke API tokens (lookup keys included).
    #[command(subcommand)]
    Token(directory_cmd::TokenCommand),
    /// Render the files phones would get: one phone's, or every phone's into a folder.
    Render(render_cmd::RenderArgs),
    /// PHLEM, the phone emulator and load tool.
    #[command(subcommand)]
    Phlem(phlem::PhlemCommand),
    /// Write shell completions and man pages, generated from these
    /// definitions, into a folder (scripts/package ships them).
    #[command(hide = true)]
    GenerateAssets(assets_cmd::AssetsArgs),
}

#[derive(Args)]
struct ServeArgs {
    /// Overrides http.listen (the API listener).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Overrides http.monitoring_listen (/metrics and the full /readyz, apart from the API).
    #[arg(long)]
    monitoring_listen: Option<std::net::SocketAddr>,
    /// Overrides provisioning.http_listen (where phones fetch their files).
    #[arg(long)]
    provisioning_listen: Option<std::net::SocketAddr>,
    /// Overrides provisioning.tftp_listen ("off" turns TFTP off).
    #[arg(long)]
    tftp_listen: Option<config::listen_or_off::Listen>,
    /// Seed the demo tenant first if it is absent.
    #[arg(long)]
    demo: bool,
}

#[derive(Args)]
pub struct ImportArgs {
    /// Files to import (.csv or .json), in one transaction. `-` reads
    /// standard input: JSON if it starts with `{`, else CSV. Templates
    /// are checked against the database before anything is written.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Import the valid rows and report the invalid ones, instead of writing nothing.
    #[arg(long)]
    pub skip_invalid: bool,
    /// Check the files and report what would change, without writing.
    #[arg(long)]
    pub dry_run: bool,
    /// The files hold the whole directory of each tenant they have entries
    /// for: that tenant's stored entries they leave out are deleted, in the
    /// same transaction. A tenant with no entry in the files keeps its
    /// directory. Not with --skip-invalid: a row skipped as invalid is not
    /// among the files' keys, and its stored entry would be deleted.
    #[arg(long, conflicts_with = "skip_invalid")]
    pub replace_directory: bool,
    /// With --replace-directory: the most a replacement may delete of a
    /// tenant's entries, in percent (default 50). A replacement that would
    /// delete more is refused and nothing is written: a file cut short or
    /// the wrong sheet otherwise empties a directory. 100 allows any.
    #[arg(long, requires = "replace_directory", value_name = "PERCENT",
          value_parser = clap::value_parser!(u8).range(0..=100))]
    pub max_deleted_percent: Option<u8>,
}

/// [`unnamed_config::refusal`] for this command line. A first start
/// (`serve`, `demo`) and `check-config` may make or describe the default
/// database on purpose, and phlem's own commands use none; the rest would
/// quietly work on an empty one.
fn unnamed_config_refusal(cli: &Cli) -> Option<String> {
    if !works_on_an_existing_database(&cli.command) {
        return None;
    }
    let named = cli.config.is_some()
        || cli.database_url.is_some()
        || std::env::var_os("DIALTONE_DATABASE__URL").is_some();
    unnamed_config::refusal(
        named,
        std::path::Path::new(unnamed_config::DEFAULT_DATABASE),
        std::path::Path::new(unnamed_config::INSTALLED_CONFIG),
    )
}

/// Whether `command` is meant for a database that holds data already.
fn works_on_an_existing_database(command: &Command) -> bool {
    match command {
        Command::Serve(_) | Command::Demo | Command::CheckConfig | Command::GenerateAssets(_) => {
            false
        }
        Command::Phlem(phlem::PhlemCommand::Run(args)) => args.phones == "database",
        Command::Phlem(_) => false,
        _ => true,
    }
}

fn load_config(cli: &Cli) -> Result<Config> {
    let mut config = Config::load(cli.config.as_deref())?;
    overrides(cli).apply(&mut config);
    // Validated with the command line's settings over the file's (a
    // PostgreSQL URL needs the secrets key, two listeners may not share an
    // address, `base_url`), as at each reload.
    config.validate()?;
    config.check_base_url()?;
    Ok(config)
}

/// What the command line sets over the file: `--database-url` for every
/// command, and `serve`'s listeners.
fn overrides(cli: &Cli) -> config::Overrides {
    let mut overrides = config::Overrides {
        database_url: cli.database_url.clone(),
        ..config::Overrides::default()
    };
    if let Command::Serve(args) = &cli.command {
        overrides.listen = args.listen;
        overrides.monitoring_listen = args.monitoring_listen;
        overrides.provisioning_listen = args.provisioning_listen;
        overrides.tftp_listen = args.tftp_listen.map(|listen| listen.0);
    }
    overrides
}

fn main() -> ExitCode {
    without_transparent_huge_pages();
    let cli = Cli::parse();
    // Needs no configuration: it only describes the command line.
    if let Command::GenerateAssets(args) = &cli.command {
        return match assets_cmd::run(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dialtone: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    if let Some(refused) = unnamed_config_refusal(&cli) {
        eprintln!("dialtone: {refused}");
        return ExitCode::from(2);
    }
    // phlem runs on one thread: on a machine it shares with the server it
    // leaves the other cores to the server, and it saves the cross-thread
    // wake-ups of a work-stealing pool. `--shard` spreads it over processes.
    let mut builder = if matches!(cli.command, Command::Phlem(_)) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("dialtone: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // `serve` hears SIGHUP before it reads anything: its default action
    // is death, and a logrotate or `systemctl reload` in the milliseconds
    // spent reading the config and key killed the node (systemd counts a
    // death by SIGHUP as a clean stop and does not restart it).
    let hangup = match &cli.command {
        Command::Serve(_) => {
            let _inside = runtime.enter();
            match serve::Hangup::install() {
                Ok(hangup) => Some(hangup),
                Err(e) => {
                    eprintln!("dialtone: {e:#}");
                    return ExitCode::from(1);
                }
            }
        }
        _ => None,
    };
    // `serve` cannot run without a key: its absence is the configuration's
    // fault (exit 2, which systemd does not restart), and `check-config`
    // vouches for `serve`. `rekey` opens what the configured key sealed.
    let needs_key = matches!(
        cli.command,
        Command::Serve(_) | Command::CheckConfig | Command::Rekey(_)
    );
    let config = match load_config(&cli).and_then(|c| {
        if needs_key {
            check_key_source(&c)?;
        }
        Ok(c)
    }) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("dialtone: invalid configuration: {e:#}");
            return ExitCode::from(2);
        }
    };
    let serving = matches!(cli.command, Command::Serve(_));
    let log = match logging::init(&config.log, serving) {
        Ok(log) => log,
        Err(e) => {
            eprintln!("dialtone: {e}");
            return ExitCode::from(1);
        }
    };
    logging::panics::install();
    // Every return from here on writes out what was logged, or the lines
    // still queued for the writer thread are lost with the process.
    let log_flushed_at_exit = log.flush_at_exit();
    if matches!(cli.command, Command::Serve(_) | Command::CheckConfig) {
        for warning in config.warnings() {
            tracing::warn!("{warning}");
        }
    }
    // What `serve` would meet only at its start, where it exits 1 (and is
    // restarted by systemd): here every problem at once, as a configuration
    // error.
    if matches!(cli.command, Command::CheckConfig) {
        let problems = config.preflight();
        // The warnings above first, then the problems.
        drop(log.flush_at_exit());
        for problem in &problems {
            eprintln!("dialtone: invalid configuration: {problem}");
        }
        if !problems.is_empty() {
            return ExitCode::from(2);
        }
    }
    let on_one_thread = matches!(cli.command, Command::Phlem(_));
    let overrides = overrides(&cli);
    let command = async move {
        match cli.command {
            Command::Serve(args) => {
                let hangup = hangup.context("serve's SIGHUP handler")?;
                serve::run(
                    config,
                    cli.config.clone(),
                    overrides,
                    args.demo,
                    log,
                    hangup,
                )
                .await
            }
            Command::Migrate => migrate(&config).await,
            Command::Lookup(args) => directory_cmd::lookup(&config, &args).await,
            Command::Token(command) => directory_cmd::token(&config, &command).await,
            Command::Phlem(command) => phlem::run(&command, &config).await,
            Command::Render(args) => render_cmd::run(&config, &args).await,
            Command::Import(args) => import_cmd::run(&config, &args).await,
            Command::Export(args) => export_cmd::run(&config, &args).await,
            Command::Rekey(args) => rekey_cmd::run(&config, &args).await,
            Command::CheckConfig => {
                print!("{}", config.to_masked_toml());
                Ok(())
            }
            Command::ReloadAll => {
                let (store, _) = serve::open_reached_store(&config).await?;
                check_schema(&*store).await?;
                let epoch = store
                    .bump_epoch()
                    .await
                    .context("bumping the schema epoch")?;
                println!(
                    "schema epoch is now {epoch}; every node reloads in full at its next sync"
                );
                Ok(())
            }
            // Answered above, before the configuration is read.
            Command::GenerateAssets(args) => assets_cmd::run(&args),
            Command::Demo => {
                let (store, key) = serve::open_reached_store(&config).await?;
                prepare_schema(&config, &*store).await?;
                let report = demo::seed(&*store, &key).await?;
                println!(
                    "demo tenant ready: {} phones and {} directory entries ({} rows changed)",
                    demo::PHONES.len(),
                    demo::DIRECTORY.len(),
                    report.changed()
                );
                Ok(())
            }
        }
    };
    // The command runs as a task on a worker, not on this thread: a future
    // blocked on from outside the pool is woken across threads for every
    // socket it waits on (the workers poll the sockets), which cost a
    // re-import of a million phones ~0.13 s of system time and ~0.12 s of
    // wall time.
    // phlem's single thread polls its own sockets.
    let result = if on_one_thread {
        runtime.block_on(command)
    } else {
        runtime.block_on(async {
            tokio::spawn(command)
                .await
                .unwrap_or_else(|e| Err(anyhow::anyhow!("the command's task ended: {e}")))
        })
    };
    // Dropping the runtime waits for every blocking thread, and one may
    // be resolving a tenant's source host, or returning a connection to a
    // database that stopped answering: the command's answer is known, so
    // the exit does not wait on them.
    runtime.shutdown_timeout(RUNTIME_EXIT_WAIT);
    // The log's last lines before the error below, not after it.
    drop(log_flushed_at_exit);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dialtone: {e:#}");
            let usage = e.chain().any(|cause| cause.is::<UsageError>());
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

/// A command line asking for what cannot be done, found once clap has
/// parsed it (a value's form, flags that do not go together): exit 2, as
/// for clap's own refusals, not 1, which says the work itself failed.
#[derive(Debug)]
pub struct UsageError(String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// `message` as a [`UsageError`], with its causes if it has any.
pub fn usage_error(message: impl std::fmt::Display) -> anyhow::Error {
    UsageError(format!("{message:#}")).into()
}

/// How long the exit waits for blocking threads still running.
const RUNTIME_EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

async fn migrate(config: &Config) -> Result<()> {
    let (store, _) = serve::open_reached_store(config).await?;
    // Asked first so the answer says whether anything was done: an
    // operator upgrading wants to see the migration ran, and one who ran
    // it twice that the second did nothing.
    let current = store.check_schema().await.is_ok();
    store.migrate().await.context("migrating the database")?;
    if current {
        println!("database schema is current; nothing to migrate");
    } else {
        println!("database migrated to this version's schema");
    }
    Ok(())
}

/// For commands that read the data as a node serves it (render, lookup,
/// export): the store, checked but not migrated, and the mirror loaded
/// from it in one snapshot.
pub async fn loaded_mirror(
    config: &Config,
) -> Result<(
    std::sync::Arc<dyn dialtone_sync::Store>,
    std::sync::Arc<dialtone_sync::Mirror>,
    dialtone_sync::SecretKey,
)> {
    let (store, key) = crate::serve::open_reached_store(config).await?;
    check_schema(&*store).await?;
    let mirror = std::sync::Arc::new(dialtone_sync::Mirror::new());
    dialtone_sync::watcher::full_load(&mirror, &*store)
        .await
        .context("loading the database")?;
    Ok((store, mirror, key))
}

/// For `serve` and the commands that write (`import`, `demo`, `token
/// create` and `revoke`): migrates when allowed (and always for the
/// embedded SQLite default), else checks that the schema is the one this
/// binary expects.
pub async fn prepare_schema(config: &Config, store: &dyn dialtone_sync::Store) -> Result<()> {
    if config.database.auto_migrate || store.backend() == dialtone_sync::Backend::Sqlite {
        store.migrate().await.context("migrating the database")
    } else {
        check_schema(store).await
    }
}

/// For the commands that only read, `reload-all` and dry runs: the schema
/// checked, never migrated, whatever `auto_migrate` says. A new release
/// tried out against production with `import --dry-run` or `token list`
/// would otherwise change the schema under the nodes still running the
/// old one; and a database with no schema yet is refused, not created,
/// with the store's own advice to run `dialtone migrate`.
pub async fn check_schema(store: &dyn dialtone_sync::Store) -> Result<()> {
    store
        .check_schema()
        .await
        .context("checking the database schema")
}

/// What `serve` needs of the key, checked without creating a key file;
/// not in `validate`, which commands needing no key (phlem on an
/// in-memory database) pass too.
fn check_key_source(config: &Config) -> Result<()> {
    if let Some(key) = &config.secrets.key {
        dialtone_sync::SecretKey::parse(key).context("secrets.key")?;
    } else if config.key_file().is_none() {
        anyhow::bail!(
            "secrets.key: no key configured, and database.url names no file to keep one beside: \
             set secrets.key or secrets.key_file"
        );
    }
    Ok(())
}
