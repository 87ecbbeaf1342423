//! How much of one search's results the relay (`ldap_wire.rs`) passes on
//! to ldap3. ldap3 queues a search's entries in an unbounded channel as
//! fast as they arrive, however slowly the search is read, so a tenant's
//! server that ignores the size limit it was sent could fill the node's
//! memory at the speed of its link until the search's deadline. The relay
//! counts each search's entries and bytes against the bounds of whoever
//! opened the connection. A lookup has stopped reading by then (past its
//! size limit), so what comes after is dropped and the final result still
//! passes: the connection keeps serving. A sync must not miss entries
//! silently, so past its (generous) bounds the relay closes the
//! connection, and the sync fails and keeps the mirror it had.

use std::collections::HashMap;

/// What one search may pass on: entries (references count as entries)
/// and their bytes, messages whole; and what happens to more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SearchBounds {
    pub entries: usize,
    pub bytes: usize,
    pub past: Past,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Past {
    /// Not passed on; the search's result and later searches still are.
    Drop,
    /// The relay closes the connection.
    Close,
}

/// A search's count so far.
#[derive(Default)]
struct Seen {
    entries: usize,
    bytes: usize,
}

/// Searches whose results are being counted at once, at most. ldap3 runs
/// a search per lookup in flight on a source's one connection, and a sync
/// one at a time on its own; a server answering more ids than this is
/// inventing them, and the relay closes the connection.
pub(crate) const MAX_COUNTED_SEARCHES: usize = 1024;

const SEARCH_REQUEST: u8 = 0x63;
const SEARCH_ENTRY: u8 = 0x64;
const SEARCH_DONE: u8 = 0x65;
const SEARCH_REFERENCE: u8 = 0x73;
const ABANDON_REQUEST: u8 = 0x50;

/// The relay's count of the searches on one connection.
pub(crate) struct Searches {
    bounds: SearchBounds,
    seen: HashMap<u32, Seen>,
    pub dropped: u64,
}

impl Searches {
    pub fn new(bounds: SearchBounds) -> Searches {
        Searches {
            bounds,
            seen: HashMap::new(),
            dropped: 0,
        }
    }

    /// A request ldap3 sends: a new search starts its count afresh (ids
    /// are not reused while one runs, but are after), an abandoned one is
    /// forgotten, as the server sends it nothing more.
    pub fn request(&mut self, message: &[u8]) {
        match id_and_op(message) {
            Some((id, SEARCH_REQUEST, _)) => {
                self.seen.remove(&id);
            }
            Some((_, ABANDON_REQUEST, content)) => {
                if let Some(abandoned) = integer(content) {
                    self.seen.remove(&abandoned);
                }
            }
            _ => {}
        }
    }

    /// Whether a reply (one whole, checked message) goes on to ldap3; an
    /// error when the server answers more searches at once than ldap3
    /// could have asked.
    pub fn pass(&mut self, message: &[u8]) -> Result<bool, &'static str> {
        let Some((id, op, _)) = id_and_op(message) else {
            return Ok(true);
        };
        match op {
            SEARCH_ENTRY | SEARCH_REFERENCE => {
                if !self.seen.contains_key(&id) && self.seen.len() >= MAX_COUNTED_SEARCHES {
                    return Err("results for more searches at once than were asked");
                }
                let seen = self.seen.entry(id).or_default();
                seen.entries += 1;
                seen.bytes = seen.bytes.saturating_add(message.len());
                let within = seen.entries <= self.bounds.entries && seen.bytes <= self.bounds.bytes;
                if !within && self.bounds.past == Past::Close {
                    return Err("a search's results past what this node may read of them");
                }
                self.dropped += u64::from(!within);
                Ok(within)
            }
            SEARCH_DONE => {
                self.seen.remove(&id);
                Ok(true)
            }
            _ => Ok(true),
        }
    }
}

/// A message's id, operation tag and the operation's content, if it has
/// that shape (replies were checked; requests are ldap3's own).
fn id_and_op(message: &[u8]) -> Option<(u32, u8, &[u8])> {
    let (whole, _) = crate::ldap_wire::element(message)?;
    let (id, rest) = crate::ldap_wire::element(whole.content)?;
    let (op, _) = crate::ldap_wire::element(rest)?;
    (id.tag == 0x02).then_some(())?;
    Some((integer(id.content)?, op.tag, op.content))
}

/// A message id's INTEGER content: 1 to 4 bytes, not negative.
fn integer(content: &[u8]) -> Option<u32> {
    if content.is_empty() || content.len() > 4 || content[0] & 0x80 != 0 {
        return None;
    }
    Some(content.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message: id, then an operation of `tag` holding `content`.
    fn message(id: u8, tag: u8, content: &[u8]) -> Vec<u8> {
        let mut op = vec![tag, content.len() as u8];
        op.extend_from_slice(content);
        let mut m = vec![0x30, (op.len() + 3) as u8, 0x02, 0x01, id];
        m.extend(op);
        m
    }

    fn entry(id: u8) -> Vec<u8> {
        // objectName "x", no attributes.
        message(id, SEARCH_ENTRY, &[0x04, 0x01, b'x', 0x30, 0x00])
    }

    fn done(id: u8) -> Vec<u8> {
        message(id, SEARCH_DONE, &[0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00])
    }

    #[test]
    fn a_search_passes_its_bound_of_entries_and_its_result() {
        let mut searches = Searches::new(SearchBounds {
            entries: 3,
            bytes: 1 << 20,
            past: Past::Drop,
        });
        searches.request(&message(7, SEARCH_REQUEST, &[]));
        let passed: Vec<bool> = (0..10).map(|_| searches.pass(&entry(7)).unwrap()).collect();
        assert_eq!(passed.iter().filter(|p| **p).count(), 3);
        assert!(passed[..3].iter().all(|p| *p), "the first ones pass");
        assert_eq!(searches.dropped, 7);
        // Another search on the connection has its own count.
        assert!(searches.pass(&entry(8)).unwrap());
        assert!(searches.pass(&done(7)).unwrap());
        // The id comes back for a new search, counted afresh.
        searches.request(&message(7, SEARCH_REQUEST, &[]));
        assert!(searches.pass(&entry(7)).unwrap());
    }

    #[test]
    fn bytes_bound_a_search_as_entries_do() {
        let one = entry(3).len();
        let mut searches = Searches::new(SearchBounds {
            entries: 1000,
            bytes: 2 * one,
            past: Past::Drop,
        });
        let passed = (0..5).filter(|_| searches.pass(&entry(3)).unwrap()).count();
        assert_eq!(passed, 2);
    }

    #[test]
    fn an_abandoned_search_is_forgotten() {
        let mut searches = Searches::new(SearchBounds {
            entries: 1,
            bytes: 1 << 20,
            past: Past::Drop,
        });
        assert!(searches.pass(&entry(5)).unwrap());
        assert!(!searches.pass(&entry(5)).unwrap());
        // Message 9 abandons search 5: [APPLICATION 16], primitive, the id.
        searches.request(&message(9, ABANDON_REQUEST, &[0x05]));
        assert!(searches.seen.is_empty());
    }

    #[test]
    fn results_for_invented_searches_close_the_connection() {
        let mut searches = Searches::new(SearchBounds {
            entries: 10,
            bytes: 1 << 20,
            past: Past::Drop,
        });
        let mut refused = None;
        for id in 0..=MAX_COUNTED_SEARCHES as u32 {
            let mut m = vec![0x30, 0x00, 0x02, 0x04];
            m.extend_from_slice(&id.to_be_bytes());
            m.extend_from_slice(&[SEARCH_ENTRY, 0x03, 0x04, 0x01, b'x']);
            m[1] = (m.len() - 2) as u8;
            if let Err(why) = searches.pass(&m) {
                refused = Some((id, why));
                break;
            }
        }
        assert_eq!(refused.map(|(id, _)| id), Some(MAX_COUNTED_SEARCHES as u32));
    }

    #[test]
    fn a_sync_connection_closes_instead_of_missing_entries() {
        let mut searches = Searches::new(SearchBounds {
            entries: 2,
            bytes: 1 << 20,
            past: Past::Close,
        });
        assert!(searches.pass(&entry(4)).unwrap());
        assert!(searches.pass(&entry(4)).unwrap());
        assert!(searches.pass(&entry(4)).is_err());
    }

    #[test]
    fn ids_are_read_as_ldap_writes_them() {
        assert_eq!(integer(&[0x01]), Some(1));
        assert_eq!(integer(&[0x00, 0x80]), Some(128));
        assert_eq!(integer(&[0x7f, 0xff, 0xff, 0xff]), Some(i32::MAX as u32));
        assert_eq!(integer(&[0x80]), None);
        assert_eq!(integer(&[]), None);
        assert_eq!(integer(&[1, 2, 3, 4, 5]), None);
    }
}
