//! What a search may bring, counted message by message as it is read. The
//! server is the tenant's, and ldap3 bounds only the time between two
//! messages, never how many come or how large they are together.

use ldap3::asn1::{StructureTag, PL};
use ldap3::{LdapError, ResultEntry, SearchEntry, SearchStream};

use crate::error::DirectoryError;

/// Bytes one search's messages may carry, counted as they arrive.
pub(super) struct ByteBudget {
    what: &'static str,
    used: usize,
    max: usize,
}

impl ByteBudget {
    pub(super) fn new(what: &'static str, max: usize) -> ByteBudget {
        ByteBudget { what, used: 0, max }
    }

    /// Charges one message, referral or entry alike; past the budget the
    /// read stops, since what is already read cannot be trusted complete.
    fn charge(&mut self, message: &ResultEntry) -> Result<(), DirectoryError> {
        self.add(message_bytes(&message.0));
        self.add(controls_bytes(&message.1));
        self.check()
    }

    /// Charges a search's final result, which the stream keeps aside: its
    /// texts, referrals and controls. Uncharged, a server paging one entry
    /// at a time could end every page with a megabyte of result.
    pub(super) fn charge_result(&mut self, done: &ldap3::LdapResult) -> Result<(), DirectoryError> {
        let refs: usize = done.refs.iter().map(String::len).sum();
        self.add(std::mem::size_of::<StructureTag>());
        self.add(
            done.matched
                .len()
                .saturating_add(done.text.len())
                .saturating_add(refs),
        );
        self.add(controls_bytes(&done.ctrls));
        self.check()
    }

    fn add(&mut self, bytes: usize) {
        self.used = self.used.saturating_add(bytes);
    }

    fn check(&self) -> Result<(), DirectoryError> {
        if self.used <= self.max {
            return Ok(());
        }
        let (amount, unit) = if self.max >= 1 << 20 {
            (self.max >> 20, "MiB")
        } else {
            (self.max >> 10, "KiB")
        };
        Err(DirectoryError::MirrorLimit(format!(
            "{}: the server sent over {amount} {unit}",
            self.what
        )))
    }
}

/// The bytes of a message's controls: their types and values.
fn controls_bytes(controls: &[ldap3::controls::Control]) -> usize {
    (controls.iter())
        .map(|c| {
            c.1.ctype
                .len()
                .saturating_add(c.1.val.as_ref().map_or(0, Vec::len))
        })
        .fold(0, usize::saturating_add)
}

/// A message's payload bytes plus a parsed tag's size for each tag, so an
/// empty entry or referral is not free. Iterative: the nesting is the
/// server's.
fn message_bytes(message: &StructureTag) -> usize {
    let (mut total, mut pending) = (0usize, vec![message]);
    while let Some(tag) = pending.pop() {
        total = total.saturating_add(std::mem::size_of::<StructureTag>());
        match &tag.payload {
            PL::P(bytes) => total = total.saturating_add(bytes.len()),
            PL::C(inner) => pending.extend(inner),
        }
    }
    total
}

/// The next entry of `stream`, each message charged to `budget` before it
/// is decoded; referrals and intermediate responses are skipped, but paid
/// for, so a server cannot send them forever.
pub(super) async fn next_entry<'a, S, A>(
    stream: &mut SearchStream<'a, S, A>,
    budget: &mut ByteBudget,
    failed: fn(LdapError) -> DirectoryError,
) -> Result<Option<SearchEntry>, DirectoryError>
where
    S: AsRef<str> + Send + Sync + 'a,
    A: AsRef<[S]> + Send + Sync + 'a,
{
    while let Some(message) = stream.next().await.map_err(failed)? {
        budget.charge(&message)?;
        if !(message.is_ref() || message.is_intermediate()) {
            return crate::ldap_wire::search_entry(message)
                .map(Some)
                .ok_or_else(|| DirectoryError::Ldap("a malformed search result entry".into()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ldap3::asn1::TagClass;

    fn primitive(id: u64, bytes: &[u8]) -> StructureTag {
        StructureTag {
            class: TagClass::Universal,
            id,
            payload: PL::P(bytes.to_vec()),
        }
    }

    #[test]
    fn every_message_costs_at_least_a_tag() {
        let tag = std::mem::size_of::<StructureTag>();
        let referral = StructureTag {
            class: TagClass::Application,
            id: 19,
            payload: PL::C(vec![]),
        };
        assert_eq!(message_bytes(&referral), tag);
        let entry = StructureTag {
            class: TagClass::Application,
            id: 4,
            payload: PL::C(vec![primitive(4, b"cn=a"), primitive(4, &[0; 100])]),
        };
        assert_eq!(message_bytes(&entry), 3 * tag + 104);
        // Enough empty referrals exhaust a budget too.
        let mut budget = ByteBudget::new("root DSE", 64 * 1024);
        let referral = ResultEntry::new(referral);
        let refused = (0..).find_map(|_| budget.charge(&referral).err()).unwrap();
        assert_eq!(
            refused.to_string(),
            "mirror sync: root DSE: the server sent over 64 KiB"
        );
        let mut budget = ByteBudget::new("search", 2 << 20);
        let entry = ResultEntry::new(entry);
        let refused = (0..).find_map(|_| budget.charge(&entry).err()).unwrap();
        assert!(refused.to_string().ends_with("over 2 MiB"), "{refused}");
    }

    /// Pages' final results are paid for too: a server paging one entry
    /// at a time cannot end each page with a megabyte for free.
    #[test]
    fn final_results_are_charged() {
        let done = ldap3::LdapResult {
            rc: 0,
            matched: String::new(),
            text: "x".repeat(1000),
            refs: vec!["ldap://elsewhere/".into()],
            ctrls: vec![],
        };
        let mut budget = ByteBudget::new("search", 64 * 1024);
        let pages = (1..)
            .find(|_| budget.charge_result(&done).is_err())
            .unwrap();
        assert!((60..=66).contains(&pages), "{pages} pages");
    }
}
