//! The folder `render --all` writes. Every phone of a tenant gets the same
//! phone directory, up to `render_output_kb` a copy: one tenant of 200,000
//! phones wrote 41 GB in 20 s, on the disk that holds the database and the
//! logs. So each distinct body is written once and every later file of the
//! same bytes is a hard link to it: every name is there for a diff or for
//! `phlem --verify`, at the disk cost of the distinct documents.

use std::collections::HashMap;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};

pub struct Folder<'a> {
    dir: &'a Path,
    /// The render cache hands every phone of a tenant the very buffer of
    /// its directory: found by address, without hashing a megabyte a
    /// phone.
    by_buffer: HashMap<ByAddress, usize>,
    /// A body rendered again (the cache evicted it, or two templates
    /// agree) is found by its bytes.
    by_content: HashMap<Arc<[u8]>, usize>,
    /// For each distinct body, the file later ones are linked to.
    sources: Vec<PathBuf>,
    links_refused: bool,
    pub files: u64,
    pub links: u64,
    pub bytes_written: u64,
}

impl<'a> Folder<'a> {
    pub fn new(dir: &'a Path) -> Folder<'a> {
        Folder {
            dir,
            by_buffer: HashMap::new(),
            by_content: HashMap::new(),
            sources: Vec::new(),
            links_refused: false,
            files: 0,
            links: 0,
            bytes_written: 0,
        }
    }

    pub fn distinct(&self) -> usize {
        self.sources.len()
    }

    /// `name` in the folder with `body`: written, or linked to the file
    /// written earlier in this run with the same bytes.
    pub fn add(&mut self, name: &str, body: &Arc<[u8]>) -> Result<()> {
        let path = self.dir.join(name);
        self.files += 1;
        let Some(first) = self.known(body) else {
            self.write(&path, body)?;
            let index = self.sources.len();
            self.sources.push(path);
            self.by_content.insert(body.clone(), index);
            self.by_buffer.insert(ByAddress(body.clone()), index);
            return Ok(());
        };
        remove_old(&path)?;
        if !self.links_refused {
            match std::fs::hard_link(&self.sources[first], &path) {
                Ok(()) => {
                    self.links += 1;
                    return Ok(());
                }
                // A file takes only so many names (65,000 on ext4): a
                // fresh copy takes the next ones.
                Err(e) if e.raw_os_error() == Some(libc::EMLINK) => {
                    self.sources[first] = path.clone();
                }
                Err(e) => {
                    eprintln!(
                        "{}: hard links refused ({e}); repeated files are written as copies",
                        self.dir.display()
                    );
                    self.links_refused = true;
                }
            }
        }
        self.write(&path, body)
    }

    fn known(&mut self, body: &Arc<[u8]>) -> Option<usize> {
        let address = ByAddress(body.clone());
        if let Some(index) = self.by_buffer.get(&address) {
            return Some(*index);
        }
        let index = *self.by_content.get(body)?;
        self.by_buffer.insert(address, index);
        Some(index)
    }

    fn write(&mut self, path: &Path, body: &[u8]) -> Result<()> {
        remove_old(path)?;
        write_new(path, body)?;
        self.bytes_written += body.len() as u64;
        Ok(())
    }
}

/// A body known by its buffer's address, which the `Arc` it holds keeps
/// from being reused while it is a key.
struct ByAddress(Arc<[u8]>);

impl PartialEq for ByAddress {
    fn eq(&self, other: &ByAddress) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ByAddress {}

impl std::hash::Hash for ByAddress {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.0).hash(state)
    }
}

/// A file an earlier run left goes before its name is written: written
/// in place, a file linked to others would change them all, and one
/// readable by all would stay so.
fn remove_old(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot replace {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// The files hold line passwords in clear: their owner's alone from the
/// start, and never written through a link left in the folder.
fn write_new(path: &Path, body: &[u8]) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    if let Err(e) = file.write_all(body) {
        drop(file);
        // Cut short (a full disk), it would keep its real name and read as
        // rendered to a diff or `phlem --verify`.
        let _ = std::fs::remove_file(path);
        return Err(e).with_context(|| format!("writing {} (removed)", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::sync::Arc;

    use super::Folder;

    fn body(text: &str) -> Arc<[u8]> {
        Arc::from(text.as_bytes())
    }

    #[test]
    fn repeated_bodies_are_links_to_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let shared = body("<directory/>");
        let mut folder = Folder::new(dir.path());
        folder.add("a-directory.xml", &shared).unwrap();
        folder.add("b-directory.xml", &shared).unwrap();
        // The same bytes in another buffer.
        folder
            .add("c-directory.xml", &body("<directory/>"))
            .unwrap();
        folder.add("a.cfg", &body("line a")).unwrap();
        assert_eq!((folder.files, folder.distinct(), folder.links), (4, 2, 2));
        assert_eq!(folder.bytes_written, 12 + 6);
        let meta = |name: &str| std::fs::metadata(dir.path().join(name)).unwrap();
        let first = meta("a-directory.xml");
        assert_eq!(first.nlink(), 3);
        for name in ["b-directory.xml", "c-directory.xml"] {
            assert_eq!(meta(name).ino(), first.ino(), "{name}");
        }
        assert_eq!(meta("a.cfg").nlink(), 1);
        assert_eq!(first.permissions().mode() & 0o777, 0o600);
    }

    /// ext4 gives a file at most 65,000 names, fewer than one tenant's
    /// phones: past that a fresh copy takes the next names. (Where a
    /// file takes more, they are all links to one.)
    #[test]
    fn a_file_out_of_names_is_copied_for_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let shared = body("<directory/>");
        let mut folder = Folder::new(dir.path());
        let names = 65_010;
        for n in 0..names {
            folder
                .add(&format!("{n:012x}-directory.xml"), &shared)
                .unwrap();
        }
        let copies = folder.bytes_written / 12;
        assert_eq!((folder.distinct(), folder.links + copies), (1, names));
        let path = |n: u64| dir.path().join(format!("{n:012x}-directory.xml"));
        let first = std::fs::metadata(path(0)).unwrap().nlink();
        if first < names {
            assert!(copies >= 2, "{first} names, {copies} copies");
        }
        let last = std::fs::metadata(path(names - 1)).unwrap();
        assert!(last.nlink() > 1, "the last name is a copy of its own");
        for n in [0, 64_999, 65_000, names - 1] {
            assert_eq!(std::fs::read(path(n)).unwrap(), b"<directory/>", "{n}");
        }
    }

    /// A second run into the folder of the first: a file that was linked
    /// to others is replaced, not written through, so a body that now
    /// differs does not land in its former links.
    #[test]
    fn a_second_run_does_not_write_through_old_links() {
        let dir = tempfile::tempdir().unwrap();
        let shared = body("old");
        let mut first = Folder::new(dir.path());
        first.add("a", &shared).unwrap();
        first.add("b", &shared).unwrap();

        let mut second = Folder::new(dir.path());
        second.add("a", &body("new a")).unwrap();
        second.add("b", &body("new b")).unwrap();
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert_eq!((read("a"), read("b")), ("new a".into(), "new b".into()));
    }

    /// A write the disk cuts short (here the file size limit, as a full
    /// disk would) leaves no file under its name. The limit is the whole
    /// process's, so only where each test is a process of its own.
    #[test]
    fn a_file_cut_short_is_removed() {
        if std::env::var_os("NEXTEST_EXECUTION_MODE").is_none_or(|m| m != "process-per-test") {
            eprintln!("skipped: needs a process of its own (cargo nextest)");
            return;
        }
        let limit = libc::rlimit {
            rlim_cur: 4096,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: plain calls on this test's own process: past the limit a
        // write then fails with EFBIG instead of the signal ending it.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
        }
        let dir = tempfile::tempdir().unwrap();
        let mut folder = Folder::new(dir.path());
        folder.add("small.cfg", &body("fits")).unwrap();
        let error = folder
            .add("big-directory.xml", &Arc::from(vec![b'x'; 10_000]))
            .unwrap_err();
        assert!(format!("{error:#}").contains("removed"), "{error:#}");
        assert!(!dir.path().join("big-directory.xml").exists());
        assert!(dir.path().join("small.cfg").exists());
    }
}
