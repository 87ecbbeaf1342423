//! A file replaced whole or not at all: written beside its path under a
//! name no other writer uses, then renamed over it. A reader sees the old
//! file or the new one, never a part.

use std::io::BufWriter;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `path` through `write`. `durable` syncs the file before the
/// rename and the directory after: for a file whose loss costs more than
/// its rewrite. Blocking. The error names the step and the file.
pub(crate) fn replace_file(
    path: &Path,
    durable: bool,
    write: impl FnOnce(&mut BufWriter<std::fs::File>) -> Result<(), String>,
) -> Result<(), String> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    // Two writers of one path (a sync task and its successor) never share
    // a temporary file.
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{name}.{}.tmp{}",
        std::process::id(),
        WRITES.fetch_add(1, Ordering::Relaxed)
    ));
    let at = |file: &Path, e: &dyn std::fmt::Display| format!("{}: {e}", file.display());
    let result = (|| {
        // A directory's entries: the owner's alone, whatever the umask.
        // Made anew, so the mode holds: a leftover of this very name (a
        // process of the same pid before a crash, in a container where
        // the pid is always the same) would keep its own.
        let _ = std::fs::remove_file(&tmp);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| at(&tmp, &e))?;
        let mut writer = BufWriter::with_capacity(1 << 20, file);
        write(&mut writer).map_err(|e| at(&tmp, &e))?;
        let file = writer.into_inner().map_err(|e| at(&tmp, e.error()))?;
        if durable {
            file.sync_all().map_err(|e| at(&tmp, &e))?;
        }
        drop(file);
        std::fs::rename(&tmp, path).map_err(|e| at(path, &e))?;
        if durable {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Whether `name` is a temporary file [`replace_file`] makes for a file
/// named `target_prefix…`, left by another process (one that crashed).
pub(crate) fn is_foreign_temporary(name: &str, target_prefix: &str) -> bool {
    name.strip_prefix('.')
        .is_some_and(|rest| rest.starts_with(target_prefix))
        && !name.contains(&format!(".{}.tmp", std::process::id()))
}
