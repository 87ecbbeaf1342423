//! Static files (firmware, ringtones, CTL/ITL files) from a configured
//! folder. The folder is indexed at start and on SIGHUP; a request is only
//! ever looked up in that index, never joined onto a path, so no request can
//! name a file outside it. Symbolic links are neither indexed nor followed
//! when they take an indexed file's place later. Contents are not
//! loaded: front ends stream them, TFTP block by block from the file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::ProvisionError;

pub(crate) mod read_pool;
#[cfg(test)]
pub(crate) mod stalls;

/// Deeper or bigger folders are not what this is for.
const MAX_DEPTH: usize = 4;
const MAX_FILES: usize = 100_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticFile {
    pub path: PathBuf,
    pub len: u64,
    /// Weak validator: see [`validator`].
    pub etag: String,
}

/// A file's weak validator: its size and modification time to the
/// nanosecond. Whole seconds missed a same-size replacement within the
/// second, and a phone sending `If-None-Match` kept its old firmware. The
/// inode and change time would catch a replacement stamped with the old
/// mtime too, but they differ between nodes holding the same file, and
/// behind a balancer every firmware revalidation would download it again:
/// a deployment that replaces a file keeping its size and exact mtime
/// must touch it.
pub fn validator(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!(
        "W/\"{:x}-{:x}.{:x}\"",
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec()
    )
}

/// When a file was written last: every write moves it, so a file whose
/// time moved since it was opened may have sent bytes of two files.
pub(crate) type Stamp = (i64, i64);

pub(crate) fn stamp(meta: &std::fs::Metadata) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    (meta.mtime(), meta.mtime_nsec())
}

/// Opens an indexed file to serve it, refusing anything but a regular
/// file: what is there now may not be what was indexed. A FIFO put in
/// its place would hold a plain open until something writes to it, so the
/// open does not wait (O_NONBLOCK, cleared again for the reads) and the
/// type is checked on what was opened, leaving no window for a swap.
/// Nor does it follow a symbolic link put in an indexed file's place
/// since the index was made (O_NOFOLLOW: a deploy copying links as links
/// before the next SIGHUP would otherwise serve whatever they name, the
/// key file included); the folders above it are as the operator set them.
/// Blocking otherwise, as any open, and for as long as the disk takes:
/// call it on a reader thread (`read_pool`).
pub fn open_regular(path: &Path) -> std::io::Result<(std::fs::File, std::fs::Metadata)> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    #[cfg(test)]
    stalls::wait_while_stalled(path, stalls::Op::Open);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is a symbolic link, not a regular file", path.display()),
            ),
            _ => e,
        })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    let fd = file.as_raw_fd();
    // SAFETY: `fd` is `file`'s, open for the length of both calls.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((file, meta))
}

/// Files are indexed twice over: by their exact spelling, and by their
/// spelling lower-cased, because phones ask for the same file in whatever
/// case their firmware spells it (`CTLSEP<MAC>.tlv` for a file stored with a
/// lower-case MAC). Two stored names that differ only by case are both
/// kept: a request spelled exactly like one gets that one, any other
/// spelling gets the first in index order (names sorted byte-wise, so
/// upper case before lower).
#[derive(Default)]
pub struct StaticIndex {
    by_path: HashMap<String, Arc<StaticFile>>,
    by_folded_path: HashMap<String, Arc<StaticFile>>,
    /// File name → file, for phones that ask without the folder.
    by_name: HashMap<String, Arc<StaticFile>>,
    by_folded_name: HashMap<String, Arc<StaticFile>>,
}

impl StaticIndex {
    pub fn load(root: &Path) -> Result<StaticIndex, ProvisionError> {
        let mut index = StaticIndex::default();
        let err = |p: &Path, e: std::io::Error| {
            ProvisionError::StaticFiles(format!("{}: {e}", p.display()))
        };
        let mut pending = vec![(root.to_path_buf(), String::new(), 0usize)];
        // Not served, and said once a load: the operator put them there
        // to be served, and a 404 alone never said why.
        let (mut unserved, mut first_unserved) = (0usize, None);
        while let Some((dir, prefix, depth)) = pending.pop() {
            let mut folders = Vec::new();
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
                    folders.push((entry.path(), key, depth + 1));
                } else if meta.is_file() {
                    if index.by_path.len() >= MAX_FILES {
                        return Err(ProvisionError::StaticFiles(format!(
                            "{}: more than {MAX_FILES} files",
                            root.display()
                        )));
                    }
                    let file = Arc::new(StaticFile {
                        path: entry.path(),
                        len: meta.len(),
                        etag: validator(&meta),
                    });
                    index
                        .by_folded_name
                        .entry(name.to_lowercase())
                        .or_insert_with(|| file.clone());
                    index.by_name.entry(name).or_insert_with(|| file.clone());
                    index
                        .by_folded_path
                        .entry(key.to_lowercase())
                        .or_insert_with(|| file.clone());
                    index.by_path.insert(key, file);
                } else if !meta.is_dir() {
                    // Symbolic links and special files, on purpose: a link
                    // could lead out of the folder.
                    unserved += 1;
                    first_unserved.get_or_insert(key);
                }
            }
            // Popped in byte order, each folder whole before the next: a
            // name asked alone finds the folder's own file, then the first
            // in byte order of the paths (`aa/fw.rom` before `bb/fw.rom`).
            pending.extend(folders.into_iter().rev());
        }
        if let Some(first) = first_unserved {
            tracing::warn!(
                count = unserved,
                first = %first,
                "{}: symbolic links and special files in the static folder are not served",
                root.display()
            );
        }
        Ok(index)
    }

    /// Looks up a sanitized request path: the full relative path first, then
    /// the file name alone; each in its exact spelling, then in any case.
    pub fn find(&self, segments: &[&str]) -> Option<&Arc<StaticFile>> {
        let path = segments.join("/");
        let by_path = || {
            self.by_path
                .get(&path)
                .or_else(|| self.by_folded_path.get(&path.to_lowercase()))
        };
        let by_name = |name: &str| {
            self.by_name
                .get(name)
                .or_else(|| self.by_folded_name.get(&name.to_lowercase()))
        };
        by_path().or_else(|| segments.last().and_then(|name| by_name(name)))
    }

    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(index: &StaticIndex, request: &str) -> Option<String> {
        let segments: Vec<&str> = request.split('/').collect();
        index
            .find(&segments)
            .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
    }

    #[test]
    fn a_file_is_found_whatever_the_case_it_is_asked_in() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("CTLSEP001b54aa0003.tlv"), b"ctl").unwrap();
        std::fs::create_dir(dir.path().join("Yealink")).unwrap();
        std::fs::write(dir.path().join("Yealink/T46S.rom"), b"rom").unwrap();
        let index = StaticIndex::load(dir.path()).unwrap();

        for request in [
            "CTLSEP001B54AA0003.tlv",
            "ctlsep001b54aa0003.TLV",
            "CTLSEP001b54aa0003.tlv",
        ] {
            assert_eq!(
                served(&index, request).as_deref(),
                Some("CTLSEP001b54aa0003.tlv"),
                "{request}"
            );
        }
        for request in ["yealink/t46s.rom", "YEALINK/T46S.ROM", "t46s.rom"] {
            assert_eq!(
                served(&index, request).as_deref(),
                Some("T46S.rom"),
                "{request}"
            );
        }
        assert_eq!(served(&index, "T46S.rom.bak"), None);
    }

    /// A name asked alone: the folder's own file, then the first path in
    /// byte order. Folders were walked last first, so `bb/fw.rom` won.
    #[test]
    fn a_name_alone_finds_the_first_path_in_byte_order() {
        let dir = tempfile::tempdir().unwrap();
        for folder in ["aa", "bb", "aa/zz"] {
            std::fs::create_dir_all(dir.path().join(folder)).unwrap();
            std::fs::write(dir.path().join(folder).join("fw.rom"), folder).unwrap();
            std::fs::write(dir.path().join(folder).join("sip.ld"), folder).unwrap();
        }
        std::fs::write(dir.path().join("sip.ld"), "root").unwrap();
        let index = StaticIndex::load(dir.path()).unwrap();
        let found = |request: &str| {
            let segments: Vec<&str> = request.split('/').collect();
            std::fs::read_to_string(&index.find(&segments).unwrap().path).unwrap()
        };
        assert_eq!(found("fw.rom"), "aa");
        assert_eq!(found("other/fw.rom"), "aa");
        assert_eq!(found("bb/fw.rom"), "bb");
        assert_eq!(found("sip.ld"), "root");
    }

    /// A same-size replacement within the same second gets a new
    /// validator; the same file, or a copy of it with its times kept (the
    /// same firmware on another node), keeps one.
    #[test]
    fn a_same_size_file_within_the_second_gets_a_new_validator() {
        let dir = tempfile::tempdir().unwrap();
        let stamped = |name: &str, body: &[u8], nanos: u32| {
            let path = dir.path().join(name);
            std::fs::write(&path, body).unwrap();
            let at = std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, nanos);
            let file = std::fs::File::options().write(true).open(&path).unwrap();
            file.set_times(std::fs::FileTimes::new().set_modified(at))
                .unwrap();
            file.metadata().unwrap()
        };
        let old = stamped("T46S.rom", b"firmware 1", 100);
        let new = stamped("T46S.rom.new", b"firmware 2", 200);
        assert_ne!(validator(&old), validator(&new));
        let copy = stamped("T46S.rom.copy", b"firmware 1", 100);
        assert_eq!(validator(&old), validator(&copy));
        let again = std::fs::metadata(dir.path().join("T46S.rom")).unwrap();
        assert_eq!(validator(&old), validator(&again));
    }

    /// Indexing skips links; a link put in an indexed file's place
    /// afterwards is refused at the open, not followed.
    #[test]
    fn a_link_in_an_indexed_files_place_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret.key");
        std::fs::write(&secret, b"key").unwrap();
        let served = tempfile::tempdir().unwrap();
        let path = served.path().join("fw.rom");
        std::fs::write(&path, b"firmware").unwrap();
        let index = StaticIndex::load(served.path()).unwrap();
        let indexed = index.find(&["fw.rom"]).unwrap().path.clone();
        assert!(open_regular(&indexed).is_ok());
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&secret, &path).unwrap();
        let refused = open_regular(&indexed).expect_err("a link is not followed");
        assert_eq!(
            refused.kind(),
            std::io::ErrorKind::InvalidInput,
            "{refused}"
        );
    }

    #[test]
    fn names_that_differ_only_by_case_keep_their_own_spelling() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Ring.wav"), b"upper").unwrap();
        std::fs::write(dir.path().join("ring.wav"), b"lower").unwrap();
        let index = StaticIndex::load(dir.path()).unwrap();
        assert_eq!(index.len(), 2);
        assert_eq!(served(&index, "Ring.wav").as_deref(), Some("Ring.wav"));
        assert_eq!(served(&index, "ring.wav").as_deref(), Some("ring.wav"));
        // Any other spelling gets the first name in byte order.
        assert_eq!(served(&index, "RING.WAV").as_deref(), Some("Ring.wav"));
    }
}
