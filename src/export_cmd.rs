//! `dialtone export`: the fleet written out in the import formats, from
//! one consistent read of the database, to back it up, move it to
//! another database, or edit it in bulk and import it again.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use dialtone_sync::export::{write_csv, write_json, Exported, Kind, Selection};

use crate::config::Config;

mod refused;

#[derive(Args)]
pub struct ExportArgs {
    /// Where to write: FILE.json (every kind, or those given with --kind),
    /// FILE.csv (one kind), or - for standard output. A file is written
    /// whole or not at all, readable by its owner only: it holds every
    /// secret in clear.
    pub out: PathBuf,
    /// The format, when the file's name does not say it (standard output:
    /// JSON unless told).
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// Only this tenant (by slug); repeat for more. Default: every tenant.
    #[arg(long = "tenant", value_name = "SLUG")]
    pub tenants: Vec<String>,
    /// What to write; repeat for more. JSON: default every kind. CSV: one
    /// kind, default phones (directory sources and templates have no CSV
    /// form). Templates are written as they are now, without their earlier
    /// versions; with --tenant, only that tenant's and its phones'.
    #[arg(long = "kind", value_enum)]
    pub kinds: Vec<KindArg>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    Json,
    Csv,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum KindArg {
    Tenants,
    Phones,
    Directory,
    DirectorySources,
    Templates,
}

impl From<KindArg> for Kind {
    fn from(kind: KindArg) -> Kind {
        match kind {
            KindArg::Tenants => Kind::Tenants,
            KindArg::Phones => Kind::Phones,
            KindArg::Directory => Kind::Directory,
            KindArg::DirectorySources => Kind::DirectorySources,
            KindArg::Templates => Kind::Templates,
        }
    }
}

enum Format {
    Json(Vec<Kind>),
    Csv(Kind),
}

fn format(args: &ExportArgs) -> Result<Format> {
    let mut kinds: Vec<Kind> = args.kinds.iter().map(|&k| k.into()).collect();
    kinds.sort();
    kinds.dedup();
    let extension = args.out.extension().and_then(|e| e.to_str());
    let csv = match (
        args.format,
        extension.map(str::to_ascii_lowercase).as_deref(),
    ) {
        (Some(format), _) => format == FormatArg::Csv,
        (None, Some("csv")) => true,
        (None, Some("json")) => false,
        (None, _) if args.out == Path::new("-") => false,
        // What the command line asks for cannot be done: exit 2, as for
        // clap's own refusals.
        (None, _) => {
            return Err(crate::usage_error(format!(
                "{}: name the file .json or .csv, or give --format",
                args.out.display()
            )))
        }
    };
    if !csv {
        return Ok(Format::Json(if kinds.is_empty() {
            Kind::ALL.to_vec()
        } else {
            kinds
        }));
    }
    match kinds[..] {
        [] => Ok(Format::Csv(Kind::Phones)),
        [Kind::DirectorySources] => Err(crate::usage_error(
            "directory sources have no CSV form; export them to a .json file",
        )),
        [Kind::Templates] => Err(crate::usage_error(
            "templates have no CSV form; export them to a .json file",
        )),
        [kind] => Ok(Format::Csv(kind)),
        _ => Err(crate::usage_error(
            "a CSV file holds one kind; give one --kind, or export to a .json file",
        )),
    }
}

pub async fn run(config: &Config, args: &ExportArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let format = format(args)?;
    // The mirror's load reads every table in one snapshot, so the file is
    // one moment of the database even while others write.
    let (store, mirror, key) = crate::loaded_mirror(config).await?;
    store.close().await;
    let state = mirror.load();
    let selection = Selection::new(&state, &args.tenants)?;
    let write = |out: &mut dyn Write| match &format {
        Format::Json(kinds) => write_json(&selection, &key, kinds, out),
        Format::Csv(kind) => write_csv(&selection, &key, *kind, out),
    };
    let kinds = match &format {
        Format::Json(kinds) => kinds.clone(),
        Format::Csv(kind) => vec![*kind],
    };
    let check = |stop: &_| refused::refused(&state, &args.tenants, &kinds, stop);
    // Told as soon as the file is whole, as it was before the check ran
    // alongside: its time is the export's, not the check's.
    let (_, refused) = refused::alongside(check, || {
        let exported = if args.out == Path::new("-") {
            write_to_stdout(write)?
        } else {
            write_whole(&args.out, write)?
        };
        eprintln!(
            "exported: tenants {}, phones {}, lines {}, directory entries {}, directory sources \
             {}, templates {} ({:.2} s)",
            exported.tenants,
            exported.phones,
            exported.lines,
            exported.directory_entries,
            exported.directory_sources,
            exported.templates,
            started.elapsed().as_secs_f64()
        );
        warn_drift(&exported);
        anyhow::Ok(())
    })?;
    match refused {
        Ok(refused) => warn_refused(&refused),
        Err(panic) => eprintln!(
            "warning: the exported rows were not checked against this release's import (the \
             check failed: {panic}); the file is written whole"
        ),
    }
    // The mirror's allocations are given back by the exit at once.
    std::mem::forget(state);
    Ok(())
}

/// Where an export writes before its file is whole; the only names the
/// stale-file sweep touches.
const TEMP_PREFIX: &str = ".dialtone-export-";

/// Named temporary files older than this were left by an export that was
/// killed partway: no export runs that long without touching its file.
const STALE_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// Into a temporary file in `path`'s folder (owner-only), synced, then
/// renamed over it: a failure leaves no half file and any earlier one as
/// it was.
fn write_whole(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<Exported, dialtone_sync::SyncError>,
) -> Result<Exported> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    remove_stale_temporaries(dir);
    let temp = ExportTemp::new_in(dir)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, temp.as_file());
    let exported = write(&mut out)?;
    out.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|file| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    temp.persist(dir, path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(exported)
}

/// The export's file while it is written. The line passwords in it are in
/// clear, and a named file outlives a process killed partway (SIGTERM,
/// Ctrl-C), so on Linux it has no name until it is whole.
enum ExportTemp {
    Unnamed(File),
    Named(tempfile::NamedTempFile),
}

impl ExportTemp {
    fn new_in(dir: &Path) -> Result<Self> {
        #[cfg(target_os = "linux")]
        if let Some(file) = unnamed_in(dir) {
            return Ok(ExportTemp::Unnamed(file));
        }
        tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(dir)
            .map(ExportTemp::Named)
            .with_context(|| format!("cannot write in {}", dir.display()))
    }

    fn as_file(&self) -> &File {
        match self {
            ExportTemp::Unnamed(file) => file,
            ExportTemp::Named(temp) => temp.as_file(),
        }
    }

    fn persist(self, dir: &Path, path: &Path) -> std::io::Result<()> {
        match self {
            ExportTemp::Named(temp) => temp.persist(path).map(drop).map_err(|e| e.error),
            // A link cannot replace a file, so the whole file gets a
            // temporary name for the moment until the rename.
            #[cfg(target_os = "linux")]
            ExportTemp::Unnamed(file) => tempfile::Builder::new()
                .prefix(TEMP_PREFIX)
                .make_in(dir, |name| link_unnamed(&file, name))?
                .persist(path)
                .map_err(|e| e.error),
            #[cfg(not(target_os = "linux"))]
            ExportTemp::Unnamed(_) => unreachable!("unnamed files are made on Linux only"),
        }
    }
}

/// An O_TMPFILE in `dir`, or None where that cannot be made or linked
/// (a filesystem without it, no /proc): the named file is used there.
#[cfg(target_os = "linux")]
fn unnamed_in(dir: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    if !Path::new("/proc/self/fd").is_dir() {
        return None;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)
        .ok()
}

/// Gives the unnamed `file` the name `name`. Linking its /proc/self/fd
/// entry needs no privilege, which linkat's AT_EMPTY_PATH would.
#[cfg(target_os = "linux")]
fn link_unnamed(file: &File, name: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::io::AsRawFd;
    let from = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    let to = CString::new(name.as_os_str().as_bytes())?;
    // SAFETY: both are NUL-terminated strings that outlive the call.
    let linked = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if linked == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Removes the named temporary files exports killed partway left in `dir`
/// (from before unnamed ones, or from filesystems without them): each holds
/// line passwords in clear, readable by its owner for good.
fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry
            .file_name()
            .as_encoded_bytes()
            .starts_with(TEMP_PREFIX.as_bytes())
        {
            continue;
        }
        let stale = entry.metadata().is_ok_and(|metadata| {
            metadata.is_file()
                && metadata
                    .modified()
                    .ok()
                    .and_then(|modified| modified.elapsed().ok())
                    .is_some_and(|age| age >= STALE_AFTER)
        });
        if !stale {
            continue;
        }
        let path = entry.path();
        match std::fs::remove_file(&path) {
            Ok(()) => eprintln!(
                "removed {}, left by an export that was stopped partway",
                path.display()
            ),
            Err(e) => eprintln!(
                "warning: cannot remove {}, left by an export that was stopped partway: {e}",
                path.display()
            ),
        }
    }
}

/// An export holds every secret in clear. A file it writes itself is
/// its owner's alone; standard output redirected to a file gets the
/// shell's umask (group- and world-readable, commonly): said so.
fn warn_if_others_read_stdout() {
    use std::os::fd::AsFd;
    use std::os::unix::fs::PermissionsExt;
    let Ok(fd) = std::io::stdout().as_fd().try_clone_to_owned() else {
        return;
    };
    let Ok(metadata) = std::fs::File::from(fd).metadata() else {
        return;
    };
    let mode = metadata.permissions().mode();
    if metadata.is_file() && mode & 0o077 != 0 {
        eprintln!(
            "warning: standard output is a file others may read (mode {:o}), and the export \
             holds every password in clear: chmod 600 it, or name the file to export to \
             (made readable by its owner only)",
            mode & 0o777
        );
    }
}

/// Whether standard output and standard error are one regular file
/// (`export - > backup.json 2>&1`, a cron idiom): the export's own lines
/// would land in the file around the data, and it would not import.
fn stdout_is_stderr_file() -> bool {
    use std::os::fd::{AsFd, BorrowedFd};
    use std::os::unix::fs::MetadataExt;
    let metadata = |fd: BorrowedFd<'_>| {
        let fd = fd.try_clone_to_owned().ok()?;
        std::fs::File::from(fd).metadata().ok()
    };
    let (Some(out), Some(err)) = (
        metadata(std::io::stdout().as_fd()),
        metadata(std::io::stderr().as_fd()),
    ) else {
        return false;
    };
    out.is_file() && out.dev() == err.dev() && out.ino() == err.ino()
}

/// Into an unnamed temporary file (owner-only, gone with the process),
/// then copied to standard output: nothing reaches it unless the whole
/// export was written. A CSV cut short by a failure partway is still a
/// valid CSV, which `export - | import -` would import as if it were all.
fn write_to_stdout(
    write: impl FnOnce(&mut dyn Write) -> Result<Exported, dialtone_sync::SyncError>,
) -> Result<Exported> {
    use std::io::Seek;
    if stdout_is_stderr_file() {
        anyhow::bail!(
            "standard output and standard error are the same file: the export's messages would \
             be written into it and it would not import; send standard error elsewhere \
             (2>export.log), or name the file to export to"
        );
    }
    warn_if_others_read_stdout();
    let temp = tempfile::tempfile().context("cannot make a temporary file for the export")?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, temp);
    let exported = write(&mut out)?;
    let mut temp = out
        .into_inner()
        .map_err(|e| e.into_error())
        .context("writing the export's temporary file")?;
    temp.rewind()
        .context("reading the export's temporary file")?;
    let mut stdout = std::io::stdout().lock();
    std::io::copy(&mut temp, &mut stdout)
        .and_then(|_| stdout.flush())
        .context("writing to standard output")?;
    Ok(exported)
}

fn warn_drift(exported: &Exported) {
    if let Some(first) = &exported.drift.first {
        eprintln!(
            "warning: {} values are stored with surrounding spaces or empty, and an import \
             would trim them or read them as absent (the first: {first}); importing this file \
             changes them",
            exported.drift.values
        );
    }
    if let Some(first) = &exported.drift.first_refused_password {
        eprintln!(
            "warning: {} line passwords hold a control character XML files cannot carry, which \
             this release's import refuses (the first: {first}); change them before importing \
             this file elsewhere",
            exported.drift.refused_passwords
        );
    }
}

fn warn_refused(refused: &refused::Refused) {
    if refused.rows == 0 {
        return;
    }
    let more = refused.rows - refused.first.len() as u64;
    let more = if more > 0 {
        format!("; and {more} more")
    } else {
        String::new()
    };
    let rows = match refused.rows {
        1 => "1 row holds".to_string(),
        n => format!("{n} rows hold"),
    };
    eprintln!(
        "warning: {rows} values this release's import refuses (control characters, line \
         separators or noncharacters in text phones show or tenant settings hold, invisible \
         characters in tenant names, numbers as a spreadsheet writes them); fix them before \
         importing this file elsewhere: {}{more}",
        refused.first.join("; ")
    );
}
