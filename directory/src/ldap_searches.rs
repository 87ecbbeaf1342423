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

use std::collections::{HashMap, HashSet, VecDeque};

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

/// Abandoned searches whose late replies are still dropped quietly.
const RECENTLY_ABANDONED: usize = 64;

/// Replies under no open search (a bind's, an extended operation's, a
/// notice of disconnection) since ldap3's last request, at most. Each
/// request has one; a server streaming them, which ldap3 reads and drops,
/// would keep the relay and ldap3 busy on shared workers for as long as
/// the connection lives (a lookup connection lives until it fails).
const MAX_UNASKED_REPLIES: usize = 16;

const SEARCH_REQUEST: u8 = 0x63;
#[cfg(test)]
const SEARCH_ENTRY: u8 = 0x64;
#[cfg(test)]
const SEARCH_DONE: u8 = 0x65;
const ABANDON_REQUEST: u8 = 0x50;

/// Operation numbers (the tag's low five bits, whatever its class: that is
/// how ldap3 tells them apart) of what may answer a search: an entry, an
/// intermediate response, a reference, and the result.
const ENTRY: u8 = 4;
const DONE: u8 = 5;
const REFERENCE: u8 = 19;
const INTERMEDIATE: u8 = 25;

/// The relay's count of the searches on one connection.
pub(crate) struct Searches {
    bounds: SearchBounds,
    /// Ids ldap3 sent a search under that have not had their result (nor
    /// an abandon): the only ids a search's replies may carry. ldap3
    /// panics on any other reply to a search, and reads a search's reply
    /// to anything else as a result, with `expect`s.
    open: HashSet<u32>,
    /// The last searches ldap3 abandoned: replies already on their way
    /// when the abandon reached the server are read and dropped (ldap3
    /// has forgotten the id), not taken as a server inventing searches.
    /// They are counted against the search's bounds once more: a server
    /// that goes on answering an abandoned search closes the connection,
    /// or it could keep the relay busy on a shared worker for good.
    abandoned: VecDeque<(u32, Seen)>,
    seen: HashMap<u32, Seen>,
    /// Replies under no open search since the last request.
    unasked: usize,
    pub dropped: u64,
}

impl Searches {
    pub fn new(bounds: SearchBounds) -> Searches {
        Searches {
            bounds,
            open: HashSet::new(),
            abandoned: VecDeque::new(),
            seen: HashMap::new(),
            unasked: 0,
            dropped: 0,
        }
    }

    /// A request ldap3 sends: a new search starts its count afresh (ids
    /// are not reused while one runs, but are after), an abandoned one is
    /// forgotten, as the server sends it nothing more. An error when more
    /// searches are open than ldap3 runs at once on a connection: a server
    /// that finishes none of them (a lookup past its deadline drops its
    /// search without abandoning it) gets a new connection.
    pub fn request(&mut self, message: &[u8]) -> Result<(), &'static str> {
        let Some((id, op, content)) = id_and_op(message) else {
            return Ok(());
        };
        self.unasked = 0;
        self.seen.remove(&id);
        self.open.remove(&id);
        self.abandoned.retain(|(a, _)| *a != id);
        match op {
            SEARCH_REQUEST => {
                if self.open.len() >= MAX_COUNTED_SEARCHES {
                    return Err("more searches left unfinished than this node keeps open");
                }
                self.open.insert(id);
            }
            ABANDON_REQUEST => {
                if let Some(abandoned) = integer(content) {
                    self.seen.remove(&abandoned);
                    if self.open.remove(&abandoned) {
                        if self.abandoned.len() == RECENTLY_ABANDONED {
                            self.abandoned.pop_front();
                        }
                        self.abandoned.push_back((abandoned, Seen::default()));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether a reply (one whole, checked message) goes on to ldap3; an
    /// error when the server answers more searches at once than ldap3
    /// could have asked, or breaks what ldap3 relies on in another way.
    pub fn pass(&mut self, message: &[u8]) -> Result<bool, &'static str> {
        // ldap3 reads an id of any length and keeps its low 32 bits: a
        // reply under `00 00 00 00 02` would reach it as message 2 counted
        // against nothing here (and a bind's reply under a search's id
        // panics its task). Its own ids are one to four octets, never
        // negative, so an id in another form answers nothing it asked.
        let Some((id, op, content)) = id_and_op(message) else {
            return Err("a message id in a form ldap3 never sends");
        };
        let number = op & 0x1f;
        if let Some(at) = self.abandoned.iter().position(|(a, _)| *a == id) {
            match number {
                ENTRY | REFERENCE | INTERMEDIATE => {
                    let late = &mut self.abandoned[at].1;
                    late.entries += 1;
                    late.bytes = late.bytes.saturating_add(message.len());
                    if late.entries > self.bounds.entries || late.bytes > self.bounds.bytes {
                        return Err("replies to an abandoned search past what one search may send");
                    }
                    return Ok(false);
                }
                DONE => {
                    self.abandoned.remove(at);
                    return Ok(false);
                }
                _ => {}
            }
        }
        if !self.open.contains(&id) {
            if matches!(number, ENTRY | REFERENCE | INTERMEDIATE) {
                return Err("search results under an id no search is open for");
            }
            self.unasked += 1;
            if self.unasked > MAX_UNASKED_REPLIES {
                return Err("more replies to no search than requests were sent");
            }
            return readable_result(op, content).map(|()| true);
        }
        match number {
            ENTRY | REFERENCE | INTERMEDIATE => {
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
            DONE => {
                readable_result(op, content)?;
                self.seen.remove(&id);
                self.open.remove(&id);
                Ok(true)
            }
            _ => Err("a search answered with another operation's reply"),
        }
    }
}

/// An operation holding an LDAPResult, in the form ldap3 takes apart with
/// `expect`s (where it would panic on anything else): constructed, an
/// ENUMERATED result code of one to four octets, the matched DN and the diagnostic message as
/// primitive UTF-8, then any parts it reads by number: referrals (3) a
/// constructed list of primitive UTF-8, SASL credentials (7) and an
/// extended response's value (11) primitive, its name (10) primitive UTF-8.
fn readable_result(op: u8, content: &[u8]) -> Result<(), &'static str> {
    use crate::ldap_wire::{element, Element};
    let unreadable = Err("a result ldap3 cannot read");
    let text = |e: &Element| e.tag & 0x20 == 0 && std::str::from_utf8(e.content).is_ok();
    if op & 0x20 == 0 {
        return unreadable;
    }
    let Some((code, rest)) = element(content) else {
        return unreadable;
    };
    let Some((matched, rest)) = element(rest) else {
        return unreadable;
    };
    let Some((message, mut rest)) = element(rest) else {
        return unreadable;
    };
    // BER gives an ENUMERATED one to four octets here (result codes are
    // small); ldap3 would read none as success.
    let code_fits = (1..=4).contains(&code.content.len());
    if code.tag != 0x0a || !code_fits || !text(&matched) || !text(&message) {
        return unreadable;
    }
    while let Some((part, after)) = element(rest) {
        rest = after;
        let readable = match part.tag & 0x1f {
            3 => {
                let mut uris = part.content;
                let mut all_text = part.tag & 0x20 != 0;
                while let Some((uri, after)) = element(uris) {
                    all_text &= text(&uri);
                    uris = after;
                }
                all_text && uris.is_empty()
            }
            7 | 11 => part.tag & 0x20 == 0,
            10 => text(&part),
            _ => true,
        };
        if !readable {
            return unreadable;
        }
    }
    if rest.is_empty() {
        Ok(())
    } else {
        unreadable
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
        // A positive INTEGER: a leading zero octet from 128 up.
        let id = if id < 0x80 { vec![id] } else { vec![0, id] };
        message_under(&id, tag, content)
    }

    /// A message whose id's INTEGER holds `id` as it is.
    fn message_under(id: &[u8], tag: u8, content: &[u8]) -> Vec<u8> {
        let mut op = vec![tag, content.len() as u8];
        op.extend_from_slice(content);
        let mut m = vec![0x30, (op.len() + 2 + id.len()) as u8, 0x02, id.len() as u8];
        m.extend_from_slice(id);
        m.extend(op);
        m
    }

    fn entry(id: u8) -> Vec<u8> {
        // objectName "x", no attributes.
        message(id, SEARCH_ENTRY, &[0x04, 0x01, b'x', 0x30, 0x00])
    }

    const RESULT: [u8; 7] = [0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00];

    fn done(id: u8) -> Vec<u8> {
        message(id, SEARCH_DONE, &RESULT)
    }

    fn searching(bounds: SearchBounds, ids: &[u8]) -> Searches {
        let mut searches = Searches::new(bounds);
        for id in ids {
            searches
                .request(&message(*id, SEARCH_REQUEST, &[]))
                .unwrap();
        }
        searches
    }

    const ROOMY: SearchBounds = SearchBounds {
        entries: 1000,
        bytes: 1 << 20,
        past: Past::Drop,
    };

    #[test]
    fn a_search_passes_its_bound_of_entries_and_its_result() {
        let bounds = SearchBounds {
            entries: 3,
            ..ROOMY
        };
        let mut searches = searching(bounds, &[7, 8]);
        let passed: Vec<bool> = (0..10).map(|_| searches.pass(&entry(7)).unwrap()).collect();
        assert_eq!(passed.iter().filter(|p| **p).count(), 3);
        assert!(passed[..3].iter().all(|p| *p), "the first ones pass");
        assert_eq!(searches.dropped, 7);
        // Another search on the connection has its own count.
        assert!(searches.pass(&entry(8)).unwrap());
        assert!(searches.pass(&done(7)).unwrap());
        // The id comes back for a new search, counted afresh.
        searches.request(&message(7, SEARCH_REQUEST, &[])).unwrap();
        assert!(searches.pass(&entry(7)).unwrap());
    }

    #[test]
    fn bytes_bound_a_search_as_entries_do() {
        let one = entry(3).len();
        let bounds = SearchBounds {
            bytes: 2 * one,
            ..ROOMY
        };
        let mut searches = searching(bounds, &[3]);
        let passed = (0..5).filter(|_| searches.pass(&entry(3)).unwrap()).count();
        assert_eq!(passed, 2);
    }

    #[test]
    fn an_abandoned_search_is_forgotten() {
        let bounds = SearchBounds {
            entries: 1,
            ..ROOMY
        };
        let mut searches = searching(bounds, &[5]);
        assert!(searches.pass(&entry(5)).unwrap());
        assert!(!searches.pass(&entry(5)).unwrap());
        // Message 9 abandons search 5: [APPLICATION 16], primitive, the id.
        searches
            .request(&message(9, ABANDON_REQUEST, &[0x05]))
            .unwrap();
        assert!(searches.seen.is_empty() && searches.open.is_empty());
        // What was on its way when the abandon reached the server is
        // dropped, not taken for an invented search.
        assert!(!searches.pass(&entry(5)).unwrap());
        assert!(!searches.pass(&done(5)).unwrap());
        // Its result ends it: the id is free, and more is invented.
        assert!(searches.pass(&entry(5)).is_err());
        // Long after (many abandons later), it would be invented.
        for id in 10..10 + RECENTLY_ABANDONED as u8 {
            searches.request(&message(id, SEARCH_REQUEST, &[])).unwrap();
            searches
                .request(&message(id + 100, ABANDON_REQUEST, &[id]))
                .unwrap();
        }
        assert!(searches.pass(&entry(5)).is_err(), "no search is open");
        assert_eq!(searches.abandoned.len(), RECENTLY_ABANDONED);
    }

    /// A server that goes on answering an abandoned search, and never
    /// ends it, is cut off once it has sent as much again as one search
    /// may: the relay would otherwise read it on a shared worker for good.
    #[test]
    fn an_abandoned_search_answered_without_end_closes_the_connection() {
        let bounds = SearchBounds {
            entries: 3,
            ..ROOMY
        };
        let mut searches = searching(bounds, &[5]);
        searches
            .request(&message(9, ABANDON_REQUEST, &[0x05]))
            .unwrap();
        for _ in 0..3 {
            assert!(!searches.pass(&entry(5)).unwrap());
        }
        assert!(searches.pass(&entry(5)).is_err());
    }

    /// ldap3 panics on any other reply to a search, and reads a search's
    /// reply to anything else as a result: neither reaches it.
    #[test]
    fn replies_must_match_what_was_asked() {
        let mut searches = searching(ROOMY, &[2]);
        for op in [0x61, 0x67, 0x69, 0x6b, 0x6d, 0x6f, 0x78, 0x41, 0x66] {
            assert!(searches.pass(&message(2, op, &RESULT)).is_err(), "{op:#x}");
        }
        // An intermediate response counts as an entry; a reference too.
        assert!(searches.pass(&message(2, 0x79, &[])).unwrap());
        assert!(searches
            .pass(&message(2, 0x73, &[0x04, 0x01, b'u']))
            .unwrap());
        assert_eq!(searches.seen[&2].entries, 2);
        assert!(searches.pass(&done(2)).unwrap());
        // A bind's (message 1 was no search) or an unsolicited notice's.
        assert!(searches.pass(&message(1, 0x61, &RESULT)).unwrap());
        assert!(searches.pass(&message(0, 0x78, &RESULT)).unwrap());
        for tag in [SEARCH_ENTRY, 0x73, 0x79] {
            assert!(searches.pass(&message(1, tag, &[])).is_err(), "{tag:#x}");
        }
    }

    /// A bind's reply passes; a stream of them, asked for by nothing,
    /// closes the connection. A request starts the count afresh.
    #[test]
    fn replies_to_no_search_are_bounded_by_the_requests() {
        const BIND_RESPONSE: u8 = 0x61;
        let mut searches = Searches::new(ROOMY);
        searches.request(&message(1, 0x60, &[])).unwrap();
        for _ in 0..MAX_UNASKED_REPLIES {
            assert_eq!(searches.pass(&message(1, BIND_RESPONSE, &RESULT)), Ok(true));
        }
        assert!(searches.pass(&message(1, BIND_RESPONSE, &RESULT)).is_err());
        let mut searches = searching(ROOMY, &[2]);
        for n in 0..3 * MAX_UNASKED_REPLIES {
            if n % MAX_UNASKED_REPLIES == 0 {
                searches.request(&message(3, 0x60, &[])).unwrap();
            }
            assert_eq!(searches.pass(&message(3, BIND_RESPONSE, &RESULT)), Ok(true));
        }
        assert!(searches.pass(&done(2)).unwrap());
    }

    #[test]
    fn results_are_passed_only_in_the_form_ldap3_reads() {
        let readable: [&[u8]; 6] = [
            &RESULT,
            &[0x0a, 0x02, 0x00, 0x35, 0x04, 0x00, 0x04, 0x00],
            // Referrals, SASL credentials, an extended name and value, and
            // a part ldap3 does not read.
            &[&RESULT[..], &[0xa3, 0x03, 0x04, 0x01, b'u']].concat(),
            &[&RESULT[..], &[0x87, 0x01, 0xff]].concat(),
            &[&RESULT[..], &[0x8a, 0x01, b'1', 0x8b, 0x01, 0xff]].concat(),
            &[&RESULT[..], &[0x30, 0x00]].concat(),
        ];
        for content in readable {
            assert_eq!(readable_result(0x65, content), Ok(()), "{content:02x?}");
        }
        let unreadable: [&[u8]; 13] = [
            &[],
            &[0x0a, 0x00, 0x04, 0x00, 0x04, 0x00],
            &[0x0a, 0x05, 0, 0, 0, 0, 0x35, 0x04, 0x00, 0x04, 0x00],
            &[0x0a, 0x01, 0x00],
            &[0x0a, 0x01, 0x00, 0x04, 0x00],
            &[0x02, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00],
            &[0x0a, 0x01, 0x00, 0x30, 0x00, 0x04, 0x00],
            &[0x0a, 0x01, 0x00, 0x04, 0x00, 0x30, 0x00],
            &[0x0a, 0x01, 0x00, 0x04, 0x01, 0xff, 0x04, 0x00],
            &[&RESULT[..], &[0x83, 0x01, b'u']].concat(),
            &[&RESULT[..], &[0xa3, 0x03, 0x04, 0x01, 0xff]].concat(),
            &[&RESULT[..], &[0xa7, 0x00]].concat(),
            &[&RESULT[..], &[0x8a, 0x01, 0xff]].concat(),
        ];
        for content in unreadable {
            assert!(readable_result(0x65, content).is_err(), "{content:02x?}");
        }
        // A primitive operation cannot hold a result.
        assert!(readable_result(0x45, &RESULT).is_err());
    }

    #[test]
    fn more_unfinished_searches_than_ldap3_runs_close_the_connection() {
        let mut searches = Searches::new(ROOMY);
        let mut refused = None;
        for id in 1..=MAX_COUNTED_SEARCHES as u32 + 1 {
            let mut m = vec![0x30, 0x00, 0x02, 0x04];
            m.extend_from_slice(&id.to_be_bytes());
            m.extend_from_slice(&[SEARCH_REQUEST, 0x00]);
            m[1] = (m.len() - 2) as u8;
            if let Err(why) = searches.request(&m) {
                refused = Some((id, why));
                break;
            }
        }
        assert_eq!(
            refused.map(|(id, _)| id),
            Some(MAX_COUNTED_SEARCHES as u32 + 1)
        );
    }

    #[test]
    fn a_sync_connection_closes_instead_of_missing_entries() {
        let bounds = SearchBounds {
            entries: 2,
            past: Past::Close,
            ..ROOMY
        };
        let mut searches = searching(bounds, &[4]);
        assert!(searches.pass(&entry(4)).unwrap());
        assert!(searches.pass(&entry(4)).unwrap());
        assert!(searches.pass(&entry(4)).is_err());
    }

    /// ldap3 reads an id of any length and keeps its low 32 bits, and
    /// does not mind a sign: each of these reaches it as search 2's or
    /// 130's (or as nothing it asked), so none may reach it unchecked.
    #[test]
    fn an_id_in_a_form_ldap3_never_sends_closes_the_connection() {
        const BIND_RESPONSE: u8 = 0x61;
        let bounds = SearchBounds {
            entries: 1,
            ..ROOMY
        };
        let unread: [&[u8]; 6] = [
            &[0, 0, 0, 0, 2],
            &[1, 0, 0, 0, 2],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0x82],
            &[0x82],
            &[0xff, 0xff, 0xff, 0xff],
            &[],
        ];
        let entry_content = [0x04, 0x01, b'x', 0x30, 0x00];
        let replies: [(u8, &[u8]); 3] = [
            (SEARCH_ENTRY, &entry_content),
            (SEARCH_DONE, &RESULT),
            (BIND_RESPONSE, &RESULT),
        ];
        for id in unread {
            for (tag, content) in replies {
                let mut searches = searching(bounds, &[2, 130]);
                assert!(searches.pass(&entry(2)).unwrap());
                let reply = message_under(id, tag, content);
                assert!(searches.pass(&reply).is_err(), "{reply:02x?}");
            }
        }
        // Padded within four octets, it reads alike on both sides and is
        // counted as the search it names.
        let mut searches = searching(bounds, &[2]);
        let padded = |tag, content| message_under(&[0, 0, 0, 2], tag, content);
        assert!(searches
            .pass(&padded(SEARCH_ENTRY, &entry_content))
            .unwrap());
        assert!(!searches
            .pass(&padded(SEARCH_ENTRY, &entry_content))
            .unwrap());
        assert!(searches.pass(&padded(SEARCH_DONE, &RESULT)).unwrap());
        assert!(searches.open.is_empty());
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
