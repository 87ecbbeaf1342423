//! Static files (firmware, ringtones, CTL/ITL files) from a configured
//! folder. The folder is indexed at start and on SIGHUP; a request is only
//! ever looked up in that index, never joined onto a path, so no request can
//! name a file outside it. Symbolic links are not followed. Contents are not
//! loaded: front ends stream them, TFTP block by block from the file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::ProvisionError;

/// Deeper or bigger folders are not what this is for.
const MAX_DEPTH: usize = 4;
const MAX_FILES: usize = 100_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticFile {
    pub path: PathBuf,
    pub len: u64,
    /// Weak validator: size and modification time.
    pub etag: String,
}

/// A file's weak validator: its size and modification time.
pub fn validator(meta: &std::fs::Metadata) -> String {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    format!("W/\"{:x}-{:x}\"", meta.len(), mtime)
}

#[derive(Default)]
pub struct StaticIndex {
    by_path: HashMap<String, Arc<StaticFile>>,
    /// File name → file, for phones that ask without the folder.
    by_name: HashMap<String, Arc<StaticFile>>,
}

impl StaticIndex {
    pub fn load(root: &Path) -> Result<StaticIndex, ProvisionError> {
        let mut index = StaticIndex::default();
        let err = |p: &Path, e: std::io::Error| {
            ProvisionError::Templates(format!("static files {}: {e}", p.display()))
        };
        let mut pending = vec![(root.to_path_buf(), String::new(), 0usize)];
        while let Some((dir, prefix, depth)) = pending.pop() {
            let mut entries: Vec<_> = std::fs::read_dir(&dir)
                .map_err(|e| err(&dir, e))?
                .filter_map(Result::ok)
                .collect();
            entries.sort_by_key(|e| e.file_name());
            for entry in entries {
                let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                if name.starts_with('.') {
                    continue;
                }
                let meta =
                    std::fs::symlink_metadata(entry.path()).map_err(|e| err(&entry.path(), e))?;
                let key = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}/{name}")
                };
                if meta.is_dir() && depth + 1 < MAX_DEPTH {
                    pending.push((entry.path(), key, depth + 1));
                } else if meta.is_file() {
                    if index.by_path.len() >= MAX_FILES {
                        return Err(ProvisionError::Templates(format!(
                            "static files {}: more than {MAX_FILES} files",
                            root.display()
                        )));
                    }
                    let file = Arc::new(StaticFile {
                        path: entry.path(),
                        len: meta.len(),
                        etag: validator(&meta),
                    });
                    index.by_name.entry(name).or_insert_with(|| file.clone());
                    index.by_path.insert(key, file);
                }
                // Symbolic links and special files are skipped on purpose.
            }
        }
        Ok(index)
    }

    /// Looks up a sanitized request path: the full relative path first, then
    /// the file name alone.
    pub fn find(&self, segments: &[&str]) -> Option<&Arc<StaticFile>> {
        self.by_path
            .get(&segments.join("/"))
            .or_else(|| segments.last().and_then(|name| self.by_name.get(*name)))
    }

    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }
}
