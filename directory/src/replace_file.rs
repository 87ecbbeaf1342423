//! A file replaced whole or not at all: written beside its path under a
//! name no other writer uses, then renamed over it. A reader sees the old
//! file or the new one, never a part. What the rename cannot guard
//! against (a bit flipped on the disk, a misdirected write) a checksum
//! does: [`write_checksummed`], [`checked_payload`].

use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use dialtone_sync::{crc32c, Crc32c};

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

/// The bytes of a CRC-32C, little-endian, at the end of a checksummed file.
const CHECKSUM_LEN: usize = 4;

/// Writes `magic`, then what `write` writes, then the CRC-32C of what
/// `write` wrote. Postcard decodes most damage into another value rather
/// than failing, so a reader that does not check the sum first can serve a
/// wrong name or skip changes after a damaged watermark.
pub(crate) fn write_checksummed<W: Write>(
    writer: &mut W,
    magic: &[u8],
    write: impl FnOnce(&mut Summing<&mut W>) -> Result<(), String>,
) -> Result<(), String> {
    writer.write_all(magic).map_err(|e| e.to_string())?;
    let mut summing = Summing {
        inner: &mut *writer,
        sum: Crc32c::new(),
    };
    write(&mut summing)?;
    let sum = summing.sum.value();
    writer
        .write_all(&sum.to_le_bytes())
        .map_err(|e| e.to_string())
}

/// What [`write_checksummed`] wrote between the magic and the checksum,
/// given the bytes past the magic; an error if the checksum disagrees.
pub(crate) fn checked_payload(past_magic: &[u8]) -> Result<&[u8], &'static str> {
    let split = past_magic
        .len()
        .checked_sub(CHECKSUM_LEN)
        .ok_or("checksum mismatch: shorter than its checksum")?;
    let (payload, carried) = past_magic.split_at(split);
    if crc32c(payload).to_le_bytes() != carried {
        return Err("checksum mismatch");
    }
    Ok(payload)
}

/// A writer summing what it passes on: the writers stream, so the sum is
/// made on the way rather than over a copy of the file in memory.
pub(crate) struct Summing<W> {
    inner: W,
    sum: Crc32c,
}

impl<W: Write> Write for Summing<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(bytes)?;
        self.sum.update(&bytes[..written]);
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `value` postcard-encoded to `writer`, as `postcard::to_io`
/// would, but failing with the writer's own error: `to_io` reports every
/// one as "The serialize buffer is full", a full disk too.
pub(crate) fn encode_to<T: serde::Serialize, W: Write>(
    value: &T,
    writer: &mut W,
) -> Result<(), String> {
    let mut failed = None;
    let encoded = postcard::serialize_with_flavor(
        value,
        Writing {
            writer,
            failed: &mut failed,
        },
    );
    match (failed, encoded) {
        (Some(e), _) => Err(e.to_string()),
        (None, encoded) => encoded.map_err(|e| e.to_string()),
    }
}

/// Postcard's output going to a writer, keeping the error that stops it
/// (postcard's own errors carry none).
struct Writing<'w, W> {
    writer: &'w mut W,
    failed: &'w mut Option<std::io::Error>,
}

impl<W: Write> postcard::ser_flavors::Flavor for Writing<'_, W> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.writer.write_all(data).map_err(|e| {
            *self.failed = Some(e);
            postcard::Error::SerializeBufferFull
        })
    }

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.try_extend(&[byte])
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}
