//! Active Directory's USNs are each DC's own: an incremental read by
//! `uSNChanged` holds only on the DC its watermark came from. slapd has no
//! USNs, so a hand-written server on a loopback port plays the DC here.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::hostile_tests::{message, tlv};
use super::sync::{
    filter, read_all, root_dse, search_bounds, since_on_this_server, usn_mismatch, Limits, RootDse,
};
use super::tests::{data, raw};
use super::*;
use crate::source_label::SourceLabel;

const DC1: &str =
    "CN=NTDS Settings,CN=DC1,CN=Servers,CN=Default-First-Site-Name,CN=Sites,CN=Configuration,DC=example,DC=com";
const DC2: &str =
    "CN=NTDS Settings,CN=DC2,CN=Servers,CN=Default-First-Site-Name,CN=Sites,CN=Configuration,DC=example,DC=com";
const AT: &str = "20261130145500Z";

fn root(usn: u64, dc: Option<&str>) -> RootDse {
    RootDse {
        usn: Some(usn),
        dc: dc.map(Box::from),
    }
}

fn of_dc(usn: u64, dc: &str) -> Watermark {
    Watermark::DcUsn { usn, dc: dc.into() }
}

#[test]
fn a_usn_holds_on_the_dc_it_came_from_alone() {
    let at_100 = of_dc(100, DC1);
    assert_eq!(usn_mismatch(&at_100, &root(150, Some(DC1))), None);
    assert_eq!(usn_mismatch(&at_100, &root(100, Some(DC1))), None);
    // Another DC behind the same URL, its USNs lower (changes from 51 to
    // 100 would be missed) or higher: either way not comparable.
    for now in [50, 5_000] {
        let why = usn_mismatch(&at_100, &root(now, Some(DC2)));
        assert_eq!(why, Some("another domain controller answered"), "{now}");
    }
    assert!(usn_mismatch(&at_100, &RootDse::default()).is_some());
    assert!(usn_mismatch(&at_100, &root(150, None)).is_some());
    // The DC restored from a backup counts again from the backup's USN.
    assert!(usn_mismatch(&at_100, &root(99, Some(DC1))).is_some());
    // An older release's USN names no DC: it may be another's.
    let unnamed = Watermark::Usn(100);
    assert!(usn_mismatch(&unnamed, &root(150, Some(DC1))).is_some());
    // A server that names no DC is read as before, unless its USN went back.
    assert_eq!(usn_mismatch(&unnamed, &root(150, None)), None);
    assert_eq!(usn_mismatch(&unnamed, &RootDse::default()), None);
    assert!(usn_mismatch(&unnamed, &root(99, None)).is_some());
    // A `modifyTimestamp` is the entry's own, whichever server answers.
    let at = Watermark::ModifyTimestamp(AT.into());
    assert_eq!(usn_mismatch(&at, &root(1, Some(DC2))), None);

    let since = |stored: &Watermark, root: &RootDse| {
        since_on_this_server(&SourceLabel::new(1, 1, "ad"), Some(stored.clone()), root)
    };
    assert_eq!(since(&at_100, &root(50, Some(DC2))), None);
    assert_eq!(since(&at_100, &root(150, Some(DC1))), Some(at_100.clone()));
    assert_eq!(since(&at, &root(150, Some(DC1))), Some(at));
    assert_eq!(
        since_on_this_server(&SourceLabel::new(1, 1, "ad"), None, &root(150, Some(DC1))),
        None
    );
}

#[test]
fn reads_leave_a_watermark_naming_their_dc() {
    let newest = || Some(AT.to_string());
    assert_eq!(root(7, Some(DC1)).watermark(newest()), Some(of_dc(7, DC1)));
    assert_eq!(root(7, None).watermark(newest()), Some(Watermark::Usn(7)));
    let no_usn = RootDse::default();
    let at = Watermark::ModifyTimestamp(AT.into());
    assert_eq!(no_usn.watermark(newest()), Some(at.clone()));
    assert_eq!(no_usn.watermark(None), None);

    let now = root(150, Some(DC1));
    assert_eq!(now.watermark_after(of_dc(100, DC1), None), of_dc(150, DC1));
    assert_eq!(
        root(150, None).watermark_after(Watermark::Usn(100), None),
        Watermark::Usn(150)
    );
    // A root DSE not read this time: the next read starts where this one did.
    let unread = RootDse::default();
    assert_eq!(
        unread.watermark_after(of_dc(100, DC1), None),
        of_dc(100, DC1)
    );
    let later = "20261201000000Z".to_string();
    assert_eq!(
        now.watermark_after(at.clone(), Some(later.clone())),
        Watermark::ModifyTimestamp(later.clone())
    );
    assert_eq!(
        now.watermark_after(Watermark::ModifyTimestamp(later.clone()), newest()),
        Watermark::ModifyTimestamp(later)
    );
}

#[test]
fn files_keep_the_dc_and_an_older_files_usn_names_none() {
    let dir = tempfile::tempdir().unwrap();
    let path = store::path(dir.path(), 7);
    let mut d = data(vec![raw("cn=ann", Some("Ann"), &["5550101234"])]);
    d.watermark = Some(of_dc(4_242, DC1));
    store::write(&path, "fp1", &d).unwrap();
    let written = std::fs::read(&path).unwrap();
    assert!(written.starts_with(b"DTLDAPM\x04"));
    assert_eq!(store::read(&path, "fp1", 10).unwrap(), Some(d.clone()));

    // The release before wrote version 3: the same body, with a USN of
    // no DC (the magic is outside the checksum).
    d.watermark = Some(Watermark::Usn(4_242));
    store::write(&path, "fp1", &d).unwrap();
    let body = std::fs::read(&path).unwrap()[8..].to_vec();
    std::fs::write(&path, [b"DTLDAPM\x03".as_slice(), &body].concat()).unwrap();
    let old = store::read(&path, "fp1", 10).unwrap().unwrap();
    assert_eq!(old, d);
    let old_usn = old.watermark.unwrap();
    // Safe over quick: the first sync of a server naming its DC is full.
    assert!(usn_mismatch(&old_usn, &root(5_000, Some(DC1))).is_some());
    // Where the server names none, it goes on as the old release did.
    assert_eq!(usn_mismatch(&old_usn, &root(5_000, None)), None);
}

/// A DC on a loopback port: answers a bind, a root DSE search with `usn`
/// and `dc` (only the attributes asked for, as AD does) and any other
/// search with one entry, keeping what each search asked.
struct FakeDc {
    addr: std::net::SocketAddr,
    searches: Arc<Mutex<Vec<Vec<u8>>>>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeDc {
    async fn start(usn: &'static str, dc: &'static str) -> FakeDc {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let searches = Arc::new(Mutex::new(Vec::new()));
        let seen = searches.clone();
        let server = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            serve(socket, usn, dc, &seen).await;
        });
        FakeDc {
            addr,
            searches,
            server,
        }
    }

    fn asked(&self, what: &[u8]) -> bool {
        let searches = self.searches.lock().unwrap();
        searches
            .iter()
            .any(|s| s.windows(what.len()).any(|w| w == what))
    }

    fn source(&self) -> crate::ldap::LdapSource {
        let settings = crate::settings::LdapSettings::parse(
            "t",
            &serde_json::json!({
                "url": format!("ldap://{}", self.addr),
                "bind_dn": "cn=admin,dc=example,dc=com",
                "base_dn": "dc=example,dc=com",
                "mode": "mirror",
            })
            .to_string(),
        )
        .unwrap();
        let networks = crate::SourceNetworks::parse(&["127.0.0.0/8"])
            .unwrap()
            .shared();
        crate::ldap::LdapSource::new(
            SourceLabel::new(1, 1, "t"),
            settings,
            Some("secret".into()),
            networks,
        )
        .unwrap()
    }

    /// Waits for the client to close the connection.
    async fn closed(self) {
        tokio::time::timeout(Duration::from_secs(5), self.server)
            .await
            .expect("the connection is still open")
            .unwrap();
    }
}

fn attribute(name: &[u8], value: &[u8]) -> Vec<u8> {
    tlv(
        0x30,
        &[tlv(0x04, name), tlv(0x31, &tlv(0x04, value))].concat(),
    )
}

async fn serve(mut socket: TcpStream, usn: &str, dc: &str, searches: &Mutex<Vec<Vec<u8>>>) {
    let mut buf = Vec::new();
    loop {
        let (id, op, request) = loop {
            if let Ok((rest, tag)) = ldap3::asn1::parse_tag(&buf) {
                let used = buf.len() - rest.len();
                let request: Vec<u8> = buf.drain(..used).collect();
                let mut parts = tag.expect_constructed().unwrap().into_iter();
                let id = parts.next().unwrap().expect_primitive().unwrap();
                break (id, parts.next().unwrap().id, request);
            }
            let mut chunk = [0; 4096];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend(&chunk[..n]),
            }
        };
        let done = |op: u8| {
            let ok = [tlv(0x0a, &[0]), tlv(0x04, b""), tlv(0x04, b"")].concat();
            message(&id, &tlv(op, &ok))
        };
        let asked = |name: &[u8]| request.windows(name.len()).any(|w| w == name);
        let entry = |dn: &[u8], attrs: Vec<u8>| {
            let entry = tlv(0x64, &[tlv(0x04, dn), tlv(0x30, &attrs)].concat());
            [message(&id, &entry), done(0x65)].concat()
        };
        let reply = match op {
            0 => done(0x61),
            3 if asked(b"highestCommittedUSN") => {
                let mut attrs = attribute(b"highestCommittedUSN", usn.as_bytes());
                if asked(b"dsServiceName") {
                    attrs.extend(attribute(b"dsServiceName", dc.as_bytes()));
                }
                entry(b"", attrs)
            }
            3 => {
                searches.lock().unwrap().push(request);
                let attrs = [
                    attribute(b"displayName", b"Ann"),
                    attribute(b"telephoneNumber", b"5550101234"),
                ];
                entry(b"cn=ann,dc=example,dc=com", attrs.concat())
            }
            _ => return,
        };
        if socket.write_all(&reply).await.is_err() {
            return;
        }
    }
}

/// Reads `fake` as a sync does, from `stored`: its root DSE, then the
/// search. Returns the root DSE and whether it searched by `uSNChanged`.
async fn read_from(fake: FakeDc, stored: Watermark) -> (RootDse, bool) {
    let source = fake.source();
    let timeout = Duration::from_secs(5);
    let mut conn = source.open(timeout, search_bounds(10)).await.unwrap();
    let dse = root_dse(&mut conn, timeout).await.unwrap();
    let since = since_on_this_server(&SourceLabel::new(1, 1, "t"), Some(stored), &dse);
    let search = filter(None, &source.settings().number_attributes, since.as_ref());
    let limits = Limits {
        max_entries: 10,
        page_size: 5,
        op_timeout: timeout,
    };
    let read = read_all(&source, &mut conn, &search, limits).await.unwrap();
    let _ = conn.unbind().await;
    assert_eq!(read.entries.len(), 1);
    let by_usn = fake.asked(b"uSNChanged");
    fake.closed().await;
    (dse, by_usn)
}

/// Another DC behind the source's URL names itself in its root DSE, and
/// is read in full; the DC the watermark came from is read by USN.
#[tokio::test]
async fn another_dc_behind_the_url_is_read_in_full() {
    let (dse, by_usn) = read_from(FakeDc::start("50", DC2).await, of_dc(100, DC1)).await;
    assert_eq!(dse, root(50, Some(DC2)));
    assert!(!by_usn, "DC2 searched by DC1's USN");
    assert_eq!(dse.watermark(None), Some(of_dc(50, DC2)));

    let (dse, by_usn) = read_from(FakeDc::start("150", DC1).await, of_dc(100, DC1)).await;
    assert_eq!(dse, root(150, Some(DC1)));
    assert!(by_usn);
}

/// What a sync of a mirror holding `cn=gone` from DC1 at USN 100 does on
/// `dc`: the entries and watermark it leaves, whether it searched by
/// `uSNChanged`, and whether the sync says it read in full (its timing
/// and metrics go by that).
async fn sync_on(usn: &'static str, dc: &'static str) -> (MirrorData, bool, bool) {
    let fake = FakeDc::start(usn, dc).await;
    let mut d = data(vec![raw("cn=gone", Some("Gone"), &["5550109999"])]);
    d.watermark = Some(of_dc(100, DC1));
    let outcome = one_sync::sync_once(
        &fake.source(),
        &work::MirrorWork::new(1),
        &mut d,
        false,
        1000,
        Duration::from_secs(60),
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap();
    let by_usn = fake.asked(b"uSNChanged");
    fake.closed().await;
    (d, by_usn, outcome.full)
}

#[tokio::test]
async fn an_incremental_sync_reads_in_full_on_another_dc_only() {
    let (d, by_usn, full) = sync_on("50", DC2).await;
    assert!(!by_usn, "searched DC2 by DC1's USN");
    assert!(full, "a read made full is timed and counted as one");
    let dns: Vec<&str> = d.entries.keys().map(|dn| &**dn).collect();
    assert_eq!(dns, ["cn=ann,dc=example,dc=com"], "a full read replaces");
    assert!(d.last_full_sync > Some(1_000));
    assert_eq!(d.last_incremental_sync, None);
    assert_eq!(d.watermark, Some(of_dc(50, DC2)));

    let (d, by_usn, full) = sync_on("150", DC1).await;
    assert!(by_usn);
    assert!(!full);
    assert_eq!(d.entries.len(), 2, "an incremental read merges");
    assert_eq!(d.last_full_sync, Some(1_000));
    assert!(d.last_incremental_sync.is_some());
    assert_eq!(d.watermark, Some(of_dc(150, DC1)));
}
