//! Changing the secrets key (`dialtone rekey`): every sealed value opened
//! with the key the database's secrets are sealed with and sealed with the
//! new one, and the database's check value moved to the new key, in one
//! transaction that writers wait for. The backends read and write
//! (`postgres/rekey.rs`, `sqlite/rekey.rs`); what they share is here.
//!
//! Nothing is written unless every value opens: a value sealed with
//! another key (a node once started with a key file created anew) would
//! otherwise be left behind, readable by no key at all once the old one is
//! thrown away. The updates go through the tables' change-log triggers
//! like any edit, so every node's mirror reloads the re-sealed rows.

use serde::{Deserialize, Serialize};

use crate::crypto::{Purpose, Sealed, SecretKey};
use crate::error::SyncError;
use crate::model::Id;
use crate::store::Audit;

/// What a re-key re-sealed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RekeyReport {
    pub line_passwords: u64,
    pub phone_http_passwords: u64,
    pub source_secrets: u64,
}

impl RekeyReport {
    pub(crate) fn add(&mut self, column: SealedColumn, resealed: usize) {
        let count = match column {
            SealedColumn::LinePasswords => &mut self.line_passwords,
            SealedColumn::PhoneHttpPasswords => &mut self.phone_http_passwords,
            SealedColumn::SourceSecrets => &mut self.source_secrets,
        };
        *count += resealed as u64;
    }
}

/// A column whose values are stored sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SealedColumn {
    LinePasswords,
    PhoneHttpPasswords,
    SourceSecrets,
}

impl SealedColumn {
    pub(crate) const ALL: [SealedColumn; 3] = [
        SealedColumn::LinePasswords,
        SealedColumn::PhoneHttpPasswords,
        SealedColumn::SourceSecrets,
    ];

    pub(crate) fn table(self) -> &'static str {
        match self {
            SealedColumn::LinePasswords => "lines",
            SealedColumn::PhoneHttpPasswords => "phones",
            SealedColumn::SourceSecrets => "directory_sources",
        }
    }

    pub(crate) fn column(self) -> &'static str {
        match self {
            SealedColumn::LinePasswords => "password",
            SealedColumn::PhoneHttpPasswords => "http_password",
            SealedColumn::SourceSecrets => "secret",
        }
    }

    fn purpose(self) -> Purpose {
        match self {
            SealedColumn::LinePasswords => Purpose::LinePassword,
            SealedColumn::PhoneHttpPasswords => Purpose::DeviceHttpPassword,
            SealedColumn::SourceSecrets => Purpose::SourceSecret,
        }
    }

    /// One text naming the row whose id is bound as `$1`, as an operator
    /// finds it (the admin page, an export): never its secret.
    pub(crate) fn naming_sql(self) -> &'static str {
        match self {
            SealedColumn::LinePasswords => {
                "SELECT 'lines: password of line ' || CAST(l.position AS TEXT) || ' of phone ' || p.mac \
                 || ' (tenant ' || t.slug || ')' FROM lines l JOIN phones p ON p.id = l.phone_id \
                 JOIN tenants t ON t.id = p.tenant_id WHERE l.id = $1"
            }
            SealedColumn::PhoneHttpPasswords => {
                "SELECT 'phones: http_password of phone ' || p.mac || ' (tenant ' || t.slug || ')' \
                 FROM phones p JOIN tenants t ON t.id = p.tenant_id WHERE p.id = $1"
            }
            SealedColumn::SourceSecrets => {
                "SELECT 'directory_sources: secret of source ' || s.name || ' of tenant ' || t.slug \
                 FROM directory_sources s JOIN tenants t ON t.id = s.tenant_id WHERE s.id = $1"
            }
        }
    }

    /// Builds the values a backend staged, then the one statement that
    /// writes them over the column, joined by id.
    pub(crate) fn update_from_staged_sql(self) -> String {
        format!(
            "UPDATE {table} SET {column} = staged.sealed FROM {STAGED} AS staged \
             WHERE {table}.id = staged.id",
            table = self.table(),
            column = self.column(),
        )
    }
}

/// The temporary table a backend stages the re-sealed values in.
pub(crate) const STAGED: &str = "rekey_sealed";

/// Refuses a "new" key that is the database's own: the run would rewrite
/// every secret to the same bytes and leave the leaked key in use.
pub(crate) fn refuse_same_key(current: &SecretKey, new: &SecretKey) -> Result<(), SyncError> {
    if current.check_value() == new.check_value() {
        return Err(SyncError::Key(
            "the new key is the one the database's secrets are sealed with already".into(),
        ));
    }
    Ok(())
}

/// Re-sealed values by row id, or the ids of the values that did not open.
pub(crate) type Resealed = Result<Vec<(Id, Sealed)>, Vec<Id>>;

/// `stored` (id, sealed value) opened with `current` and sealed with `new`
/// for the same purpose; or the ids of the values `current` does not open.
/// Spread over the machine's cores: a million lines and as many phones are
/// two million opens and seals, and the database waits meanwhile.
pub(crate) fn reseal(
    current: &SecretKey,
    new: &SecretKey,
    column: SealedColumn,
    stored: &[(Id, Sealed)],
) -> Resealed {
    let purpose = column.purpose();
    let one_part = |part: &[(Id, Sealed)]| -> Resealed {
        let mut resealed = Vec::with_capacity(part.len());
        let mut unopened = Vec::new();
        for (id, sealed) in part {
            match current.open(purpose, sealed) {
                Ok(plain) if unopened.is_empty() => resealed.push((*id, new.seal(purpose, &plain))),
                Ok(_) => {}
                Err(_) => unopened.push(*id),
            }
        }
        if unopened.is_empty() {
            Ok(resealed)
        } else {
            Err(unopened)
        }
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Below this a thread costs more than it saves.
    const PER_THREAD_AT_LEAST: usize = 4096;
    let part_len = stored.len().div_ceil(threads).max(PER_THREAD_AT_LEAST);
    let parts: Vec<Resealed> = if stored.len() <= PER_THREAD_AT_LEAST {
        vec![one_part(stored)]
    } else {
        std::thread::scope(|scope| {
            let running: Vec<_> = stored
                .chunks(part_len)
                .map(|part| scope.spawn(move || one_part(part)))
                .collect();
            running
                .into_iter()
                .map(|thread| {
                    thread
                        .join()
                        .unwrap_or_else(|e| std::panic::resume_unwind(e))
                })
                .collect()
        })
    };
    let mut resealed = Vec::with_capacity(stored.len());
    let mut unopened = Vec::new();
    for part in parts {
        match part {
            Ok(part) => resealed.extend(part),
            Err(ids) => unopened.extend(ids),
        }
    }
    if unopened.is_empty() {
        Ok(resealed)
    } else {
        Err(unopened)
    }
}

/// Values the current key did not open, by column, for the refusal.
#[derive(Default)]
pub(crate) struct Unopened(Vec<(SealedColumn, Vec<Id>)>);

/// Rows named in a refusal; the rest are counted.
pub(crate) const NAMED_AT_MOST: usize = 10;

impl Unopened {
    pub(crate) fn add(&mut self, column: SealedColumn, ids: Vec<Id>) {
        self.0.push((column, ids));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first rows to name, at most [`NAMED_AT_MOST`].
    pub(crate) fn to_name(&self) -> Vec<(SealedColumn, Id)> {
        (self.0.iter())
            .flat_map(|(column, ids)| ids.iter().map(move |id| (*column, *id)))
            .take(NAMED_AT_MOST)
            .collect()
    }

    /// The refusal, with `named` the rows [`Unopened::to_name`] listed as
    /// the backend named them.
    pub(crate) fn refusal(&self, named: &[String]) -> SyncError {
        let total: usize = self.0.iter().map(|(_, ids)| ids.len()).sum();
        let more = match total.saturating_sub(named.len()) {
            0 => String::new(),
            n => format!("; and {n} more"),
        };
        SyncError::Key(format!(
            "{total} stored value(s) do not open with the current key (sealed with another key, \
             or damaged), so nothing was re-sealed: {}{more}. Set each again with its value \
             (edit or re-import it) or remove it, then run rekey again",
            named.join("; ")
        ))
    }
}

/// The row's name, or its table and id if it went meanwhile (it cannot,
/// under the lock, but a refusal must not fail for it).
pub(crate) fn named_or_id(column: SealedColumn, id: Id, named: Option<String>) -> String {
    named.unwrap_or_else(|| format!("{} row id {id}", column.table()))
}

/// The audit row's statement and its summary: the caller's detail and the
/// counts, never a key or a secret.
pub(crate) const AUDIT_INSERT: &str = "INSERT INTO audit_log \
     (at, actor, action, entity, entity_key, summary, tenant, tenant_id) \
     VALUES ($1, $2, $3, $4, $5, $6, NULL, NULL)";

pub(crate) fn audit_summary(audit: &Audit, report: &RekeyReport) -> String {
    serde_json::json!({ "detail": audit.detail, "result": report }).to_string()
}

/// The audit's text is written in the run's transaction, so it is held to
/// the rule every write's is.
pub(crate) fn check_audit(audit: &Audit) -> Result<(), SyncError> {
    match audit.nul_field() {
        Some(field) => Err(SyncError::Invalid(crate::store::nul::reason(&field))),
        None => Ok(()),
    }
}

pub(crate) const SET_KEY_CHECK: &str =
    "UPDATE dialtone_meta SET key_check = $1 WHERE singleton = 1";

/// The database's check value as a write about to commit reads it
/// (`confirm_key_unchanged`), on SQLite: inside BEGIN IMMEDIATE no re-key
/// can commit before this write does.
pub(crate) const KEY_CHECK_NOW: &str = "SELECT key_check FROM dialtone_meta WHERE singleton = 1";

/// The same on PostgreSQL, where the row lock makes a re-key that has not
/// yet moved the check value wait for this write's commit, and a write
/// that comes after the re-key's move wait for its commit, then read it.
pub(crate) const KEY_CHECK_NOW_HELD: &str =
    "SELECT key_check FROM dialtone_meta WHERE singleton = 1 FOR SHARE";

/// A write of a process whose key the database no longer takes: a re-key
/// committed since the process checked it. Its values would be sealed
/// with a key the operator is about to throw away.
pub(crate) fn key_moved() -> SyncError {
    SyncError::Key(
        "the database has moved to another secrets key (`dialtone rekey` ran since this \
         process checked its key), so nothing of this write was made; restart this node \
         (or run the command again) with the new key as secrets.key_file"
            .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: &str) -> SecretKey {
        SecretKey::parse(&byte.repeat(32)).unwrap()
    }

    #[test]
    fn every_value_opens_with_the_new_key_in_any_number_of_parts() {
        let (old, new) = (key("11"), key("22"));
        for n in [0usize, 1, 4096, 4097, 20_000] {
            let stored: Vec<(Id, Sealed)> = (0..n)
                .map(|i| (i as Id, old.seal(Purpose::LinePassword, &format!("pw-{i}"))))
                .collect();
            let resealed = reseal(&old, &new, SealedColumn::LinePasswords, &stored).unwrap();
            assert_eq!(resealed.len(), n);
            for (i, (id, sealed)) in resealed.iter().enumerate() {
                assert_eq!(*id, i as Id);
                let plain = new.open(Purpose::LinePassword, sealed).unwrap();
                assert_eq!(plain, format!("pw-{i}"));
            }
        }
    }

    #[test]
    fn values_of_another_key_or_purpose_are_named_by_id() {
        let (old, new, stray) = (key("11"), key("22"), key("33"));
        let mut stored: Vec<(Id, Sealed)> = (0..9000)
            .map(|i| (i, old.seal(Purpose::SourceSecret, "s")))
            .collect();
        stored[17].1 = stray.seal(Purpose::SourceSecret, "s");
        stored[8999].1 = old.seal(Purpose::LinePassword, "s");
        stored[5].1 = Sealed("v1:garbage".into());
        let unopened = reseal(&old, &new, SealedColumn::SourceSecrets, &stored).unwrap_err();
        assert_eq!(unopened, [5, 17, 8999]);
    }

    #[test]
    fn a_refusal_names_at_most_ten_rows_and_counts_the_rest() {
        let mut unopened = Unopened::default();
        unopened.add(SealedColumn::LinePasswords, (1..=12).collect());
        unopened.add(SealedColumn::SourceSecrets, vec![40]);
        let to_name = unopened.to_name();
        assert_eq!(to_name.len(), NAMED_AT_MOST);
        let named: Vec<String> = (to_name.iter())
            .map(|(column, id)| named_or_id(*column, *id, None))
            .collect();
        let said = unopened.refusal(&named).to_string();
        assert!(said.contains("13 stored value(s)"), "{said}");
        assert!(said.contains("lines row id 10; and 3 more"), "{said}");
    }

    #[test]
    fn the_same_key_is_refused() {
        assert!(refuse_same_key(&key("11"), &key("11")).is_err());
        refuse_same_key(&key("11"), &key("22")).unwrap();
    }
}
