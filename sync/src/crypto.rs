//! Secrets at rest. SIP passwords, device HTTP passwords and directory bind
//! passwords are stored sealed with AES-256-GCM-SIV. The nonce is derived from
//! an HMAC of the plaintext and its purpose, so sealing is deterministic: an
//! unchanged secret re-imported seals to the same bytes and the upsert sees no
//! change (no change-log churn). The cost is that equal secrets are visibly
//! equal in the database; GCM-SIV is designed to stay secure under exactly that
//! kind of nonce reuse.
//!
//! The mirror keeps secrets sealed too and they are opened only where used
//! (rendering a config, binding to LDAP), so neither the snapshot file nor a
//! heap dump of the mirror's tables holds them in clear.

use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac as _};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::SyncError;

const PREFIX: &str = "v1:";

/// A sealed secret as stored: `v1:` + base64(nonce || ciphertext).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Sealed(pub Box<str>);

/// Prefix of every API token, so a leaked token is recognizable in a scan.
pub const TOKEN_PREFIX: &str = "dt_";

/// A new API token: 32 random bytes. Only its hash is stored.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The stored form of a token: hex SHA-256. Tokens carry 256 bits of
/// randomness, so a plain hash is enough (no salt, no slow KDF) and lookups
/// stay a single map probe.
pub fn token_hash(token: &str) -> String {
    use sha2::Digest;
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The token of an `Authorization: Bearer …` header's value, trimmed;
/// the scheme's case is free (RFC 9110): a PBX or script sending
/// `bearer` was refused by one route and accepted by another.
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let scheme = authorization.get(..7)?;
    scheme
        .eq_ignore_ascii_case("bearer ")
        .then(|| authorization[7..].trim())
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealed(..)")
    }
}

/// What a secret is for; bound into the seal so a line password cannot be
/// swapped into an LDAP source by someone with database write access.
#[derive(Clone, Copy, Debug)]
pub enum Purpose {
    LinePassword,
    DeviceHttpPassword,
    SourceSecret,
}

impl Purpose {
    fn aad(self) -> &'static [u8] {
        match self {
            Purpose::LinePassword => b"dialtone/line-password",
            Purpose::DeviceHttpPassword => b"dialtone/device-http-password",
            Purpose::SourceSecret => b"dialtone/source-secret",
        }
    }
}

#[derive(Clone)]
pub struct SecretKey {
    cipher: Aes256GcmSiv,
    /// HMAC keyed with the nonce key, its pads already hashed: each use
    /// clones it instead of keying anew (two of the four SHA-256 blocks a
    /// short secret's HMAC costs; a million per re-import).
    nonce_mac: Hmac<Sha256>,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    /// Parses 32 bytes given as 64 hex digits or base64.
    pub fn parse(text: &str) -> Result<Self, SyncError> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).unwrap_or(0))
                .collect::<Vec<u8>>()
        } else {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .or_else(|_| B64.decode(text))
                .map_err(|_| {
                    SyncError::Key("expected 32 bytes as 64 hex digits or base64".into())
                })?
        };
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| SyncError::Key("expected exactly 32 bytes (64 hex digits)".into()))?;
        Ok(Self::from_bytes(key))
    }

    pub fn from_bytes(key: [u8; 32]) -> Self {
        let mut mac = <Hmac<Sha256> as hmac::Mac>::new_from_slice(&key).expect("any key length");
        mac.update(b"dialtone nonce key");
        let nonce_key: [u8; 32] = mac.finalize().into_bytes().into();
        SecretKey {
            cipher: Aes256GcmSiv::new((&key).into()),
            nonce_mac: <Hmac<Sha256> as hmac::Mac>::new_from_slice(&nonce_key)
                .expect("any key length"),
        }
    }

    /// A stable secret derived from the key, e.g. for demo passwords that
    /// stay the same across re-seeding yet differ per installation.
    pub fn derive(&self, label: &str, len: usize) -> String {
        let mut mac = self.nonce_mac.clone();
        mac.update(b"derive\0");
        mac.update(label.as_bytes());
        let digest = mac.finalize().into_bytes();
        B64.encode(digest)
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(len)
            .collect()
    }

    /// A value that tells this key from any other without revealing it,
    /// kept in the database (`dialtone_meta.key_check`).
    pub fn check_value(&self) -> String {
        self.derive("dialtone/key-check", 43)
    }

    pub fn generate_hex() -> String {
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        hex::encode(key)
    }

    /// Reads the key file, or creates it (mode 0600) with a fresh key when it
    /// does not exist. Used only for the embedded SQLite default.
    pub fn load_or_create(path: &Path) -> Result<Self, SyncError> {
        Self::load_or_create_reporting(path).map(|(key, _)| key)
    }

    /// [`SecretKey::load_or_create`], and whether this call made the file
    /// (`true`): a caller that finds the new key refused by the database
    /// it was meant for removes it, rather than leave a key that opens
    /// nothing where the operator will look for the real one.
    pub fn load_or_create_reporting(path: &Path) -> Result<(Self, bool), SyncError> {
        if let Some(key) = Self::load(path)? {
            return Ok((key, false));
        }
        // Said here, before a temporary name beside the key is tried:
        // otherwise the error names that file, which the operator never
        // asked for, rather than the folder that is not there.
        let folder = match path.parent() {
            Some(folder) if !folder.as_os_str().is_empty() => folder,
            _ => Path::new("."),
        };
        match std::fs::metadata(folder) {
            Ok(metadata) if !metadata.is_dir() => {
                return Err(SyncError::Key(format!(
                    "{}: cannot create it: {} is not a folder",
                    path.display(),
                    folder.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SyncError::Key(format!(
                    "{}: missing, and no new key can be made there: the folder {} does not exist",
                    path.display(),
                    folder.display()
                )))
            }
            _ => {}
        }
        let (temp, hex) = write_temp_key(path)?;
        publish_temp_key(&temp, path, &hex)
    }

    /// The key in the file at `path`, read as [`SecretKey::load_or_create`]
    /// reads it; `None` where there is no such file.
    pub fn load(path: &Path) -> Result<Option<Self>, SyncError> {
        match std::fs::File::open(path) {
            Ok(file) => Self::read_key_file(path, file).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SyncError::io(path, e)),
        }
    }

    fn read_key_file(path: &Path, mut file: std::fs::File) -> Result<Self, SyncError> {
        let mut text = String::new();
        file.read_to_string(&mut text)
            .map_err(|e| SyncError::io(path, e))?;
        #[cfg(unix)]
        if let Ok(metadata) = file.metadata() {
            use std::os::unix::fs::PermissionsExt;
            warn_if_others_reach(path, metadata.permissions().mode());
        }
        // Versions before the key was written atomically left an empty file
        // when the disk was full or the power went between create and write;
        // "expected 32 bytes" would send the operator hunting for a typo.
        if text.trim().is_empty() {
            return Err(SyncError::Key(format!(
                "{}: empty (left by an interrupted first start); remove it if this \
                 database has never been used with a key, or restore the key file",
                path.display()
            )));
        }
        Self::parse(&text).map_err(|e| SyncError::Key(format!("{}: {e}", path.display())))
    }
    pub fn seal(&self, purpose: Purpose, plaintext: &str) -> Sealed {
        let mut mac = self.nonce_mac.clone();
        mac.update(purpose.aad());
        mac.update(&[0]);
        mac.update(plaintext.as_bytes());
        let digest = mac.finalize().into_bytes();
        let nonce = Nonce::from_slice(&digest[..12]);
        let ciphertext = self
            .cipher
            .encrypt(
                nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: purpose.aad(),
                },
            )
            .expect("AES-GCM-SIV encryption cannot fail for short inputs");
        let mut blob = Vec::with_capacity(12 + ciphertext.len());
        blob.extend_from_slice(&digest[..12]);
        blob.extend_from_slice(&ciphertext);
        Sealed(format!("{PREFIX}{}", B64.encode(blob)).into())
    }

    /// Whether `stored` is what [`SecretKey::seal`] makes of `plaintext`,
    /// without sealing it: the nonce is an HMAC of the plaintext, so equal
    /// nonces (and lengths) mean equal secrets. The bulk import compares a
    /// million passwords this way at a fraction of the cost of sealing them.
    pub fn seals_to(&self, purpose: Purpose, plaintext: &str, stored: &str) -> bool {
        let Some(body) = stored.strip_prefix(PREFIX) else {
            return false;
        };
        // 12 nonce bytes are exactly 16 base64 characters.
        let expected_len = (12 + plaintext.len() + 16) * 4;
        if body.len() != expected_len.div_ceil(3) || body.len() < 16 {
            return false;
        }
        // Decoded on the stack: an allocation per secret showed in the
        // profile of a million-phone re-import.
        let mut nonce = [0u8; 12];
        if B64.decode_slice(&body[..16], &mut nonce) != Ok(12) {
            return false;
        }
        let mut mac = self.nonce_mac.clone();
        mac.update(purpose.aad());
        mac.update(&[0]);
        mac.update(plaintext.as_bytes());
        mac.finalize().into_bytes()[..12] == nonce
    }

    pub fn open(&self, purpose: Purpose, sealed: &Sealed) -> Result<String, SyncError> {
        let blob = sealed
            .0
            .strip_prefix(PREFIX)
            .and_then(|b| B64.decode(b).ok())
            .ok_or(SyncError::Decrypt)?;
        if blob.len() < 12 + 16 {
            return Err(SyncError::Decrypt);
        }
        let (nonce, ciphertext) = blob.split_at(12);
        let plain = self
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: purpose.aad(),
                },
            )
            .map_err(|_| SyncError::Decrypt)?;
        String::from_utf8(plain).map_err(|_| SyncError::Decrypt)
    }
}

/// The key opens every tenant's secrets: a key file other local users can
/// read hands them all of those, and one they can write lets them swap the
/// key under the next start. Warned of rather than refused, so an upgrade
/// never stops a running installation over a mode it always had.
#[cfg(unix)]
fn warn_if_others_reach(path: &Path, mode: u32) {
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{:04o}", mode & 0o7777),
            "the secret key file can be read or written by users other than its owner; \
             run `chmod 600 {}` (under systemd, hand it over with LoadCredential= instead)",
            path.display()
        );
    }
}

/// Writes a fresh key to a temporary file beside `path` (same directory, so
/// it can be linked into place) and syncs it: the key file then appears
/// whole or not at all, never empty after a full disk or a power cut.
fn write_temp_key(path: &Path) -> Result<(PathBuf, String), SyncError> {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "key".to_string());
    let temp = path.with_file_name(format!(
        ".{name}.{}-{:08x}.tmp",
        std::process::id(),
        rand::thread_rng().next_u32()
    ));
    let hex = SecretKey::generate_hex();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&temp).map_err(|e| SyncError::io(&temp, e))?;
    let written = file
        .write_all(format!("{hex}\n").as_bytes())
        .and_then(|_| file.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(SyncError::io(&temp, e));
    }
    Ok((temp, hex))
}

/// Links the written temporary key to `path` unless a key is there already
/// (another process started at the same moment and won: its key is the one
/// the database will be sealed with), then removes the temporary name.
fn publish_temp_key(temp: &Path, path: &Path, hex: &str) -> Result<(SecretKey, bool), SyncError> {
    // A hard link, unlike a rename, never replaces a key that exists.
    let linked = std::fs::hard_link(temp, path);
    let _ = std::fs::remove_file(temp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let file = std::fs::File::open(path).map_err(|e| SyncError::io(path, e))?;
            return SecretKey::read_key_file(path, file).map(|key| (key, false));
        }
        // A filesystem without hard links (vfat, some network and FUSE
        // mounts) started before with the key written in place: it still
        // does, and an interrupted write is removed rather than left.
        Err(_) => write_in_place(path, hex)?,
    }
    // The new name must survive a power cut as well as the bytes behind it.
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| SyncError::io(dir, e))?;
    tracing::warn!(path = %path.display(), "generated a new secret key; back it up with the database");
    SecretKey::parse(hex).map(|key| (key, true))
}

/// The key written straight to `path`, never replacing one: where the
/// temporary file cannot be linked into place.
fn write_in_place(path: &Path, hex: &str) -> Result<(), SyncError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(file) => file,
        Err(e) => return Err(SyncError::io(path, e)),
    };
    let written = file
        .write_all(format!("{hex}\n").as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(path);
        return Err(SyncError::io(path, e));
    }
    Ok(())
}

/// The refusal of a key that is not the one the secrets are sealed with,
/// in the same words whether the database's check value or a snapshot's
/// sealed rows found it out: the operator's remedy is the same.
pub(crate) fn not_the_sealing_key() -> SyncError {
    SyncError::Key(
        "it is not the key this database's secrets are sealed with; use the database's own \
         (a key_file that was missing is created anew, with a new key)"
            .into(),
    )
}

#[cfg(test)]
#[path = "crypto_key_file_tests.rs"]
mod key_file_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        SecretKey::parse(&"11".repeat(32)).unwrap()
    }

    /// Stored seals must keep opening and comparing: the nonce stays the
    /// HMAC, under the key derived from the operator's, of purpose and
    /// plaintext, however the HMAC is set up.
    #[test]
    fn the_nonce_is_the_keyed_hmac_of_purpose_and_plaintext() {
        let raw = [0x11u8; 32];
        let mut derive = <Hmac<Sha256> as hmac::Mac>::new_from_slice(&raw).unwrap();
        derive.update(b"dialtone nonce key");
        let nonce_key = derive.finalize().into_bytes();
        for (purpose, plaintext) in [
            (Purpose::LinePassword, "pw-1-Qx7"),
            (Purpose::DeviceHttpPassword, ""),
            (Purpose::SourceSecret, "é secret"),
        ] {
            let mut mac = <Hmac<Sha256> as hmac::Mac>::new_from_slice(&nonce_key).unwrap();
            mac.update(purpose.aad());
            mac.update(&[0]);
            mac.update(plaintext.as_bytes());
            let expected = mac.finalize().into_bytes();
            let sealed = key().seal(purpose, plaintext);
            let blob = B64.decode(sealed.0.strip_prefix(PREFIX).unwrap()).unwrap();
            assert_eq!(blob[..12], expected[..12]);
            assert!(key().seals_to(purpose, plaintext, &sealed.0));
            assert_eq!(key().open(purpose, &sealed).unwrap(), plaintext);
        }
    }

    #[test]
    fn seal_open_round_trip_and_is_deterministic() {
        let k = key();
        let a = k.seal(Purpose::LinePassword, "s3cret!");
        assert_eq!(a, k.seal(Purpose::LinePassword, "s3cret!"));
        assert_ne!(a, k.seal(Purpose::LinePassword, "s3cret?"));
        assert!(!a.0.contains("s3cret"));
        assert_eq!(k.open(Purpose::LinePassword, &a).unwrap(), "s3cret!");
        assert!(k.seals_to(Purpose::LinePassword, "s3cret!", &a.0));
        assert!(!k.seals_to(Purpose::LinePassword, "s3cret?", &a.0));
        assert!(!k.seals_to(Purpose::DeviceHttpPassword, "s3cret!", &a.0));
        assert!(!k.seals_to(Purpose::LinePassword, "s3cret!", "v1:short"));
    }

    #[test]
    fn wrong_purpose_or_key_fails() {
        let a = key().seal(Purpose::LinePassword, "pw");
        assert!(key().open(Purpose::SourceSecret, &a).is_err());
        let other = SecretKey::parse(&"22".repeat(32)).unwrap();
        assert!(other.open(Purpose::LinePassword, &a).is_err());
        assert!(key()
            .open(Purpose::LinePassword, &Sealed("v1:AAAA".into()))
            .is_err());
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dialtone.key");
        let k1 = SecretKey::load_or_create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let k2 = SecretKey::load_or_create(&path).unwrap();
        let s = k1.seal(Purpose::DeviceHttpPassword, "x");
        assert_eq!(k2.open(Purpose::DeviceHttpPassword, &s).unwrap(), "x");
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Another process may create the key between this one's look and its
    /// link: the key already there is the one kept, and no temporary is left.
    #[test]
    fn a_key_made_meanwhile_by_another_process_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dialtone.key");
        let (temp, ours) = write_temp_key(&path).unwrap();
        let theirs = "22".repeat(32);
        std::fs::write(&path, format!("{theirs}\n")).unwrap();
        let (loaded, made) = publish_temp_key(&temp, &path, &ours).unwrap();
        assert!(!made);
        let sealed = SecretKey::parse(&theirs)
            .unwrap()
            .seal(Purpose::LinePassword, "pw");
        assert_eq!(loaded.open(Purpose::LinePassword, &sealed).unwrap(), "pw");
        assert_eq!(std::fs::read_to_string(&path).unwrap().trim(), theirs);
        assert_eq!(names_in(dir.path()), ["dialtone.key"]);
    }

    #[test]
    fn a_new_key_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        SecretKey::load_or_create(&dir.path().join("dialtone.key")).unwrap();
        assert_eq!(names_in(dir.path()), ["dialtone.key"]);
    }

    /// Older versions left an empty key on a full disk or a power cut; the
    /// operator is told that, not that a key has the wrong length.
    #[test]
    fn an_empty_key_file_says_how_it_came_about() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dialtone.key");
        std::fs::write(&path, "").unwrap();
        let error = SecretKey::load_or_create(&path).unwrap_err().to_string();
        assert!(
            error.contains(
                "empty (left by an interrupted first start); remove it if this database \
                 has never been used with a key, or restore the key file"
            ),
            "{error}"
        );
        assert!(error.contains(&path.display().to_string()), "{error}");
    }

    #[test]
    fn bad_keys_are_rejected() {
        assert!(SecretKey::parse("short").is_err());
        assert!(SecretKey::parse(&"zz".repeat(32)).is_err());
    }
}
