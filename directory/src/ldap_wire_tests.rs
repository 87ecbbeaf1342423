use super::*;
use crate::ldap_relay::{lock, relay};
use crate::ldap_searches::Past;
use crate::ldap_searches::Searches;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use tokio::net::TcpListener;
use tokio::time::timeout;

const BOUNDS: SearchBounds = SearchBounds {
    entries: 10,
    bytes: 1 << 20,
    past: Past::Drop,
};

fn label() -> &'static SourceLabel {
    static LABEL: std::sync::OnceLock<SourceLabel> = std::sync::OnceLock::new();
    LABEL.get_or_init(|| SourceLabel::new(1, 1, "t"))
}

/// How a relay ended, and how many results it dropped.
type Relaying = tokio::task::JoinHandle<(Result<(), &'static str>, u64)>;

/// The relay between a duplex "server" and the ldap3 end it hands out.
fn relayed(bounds: SearchBounds) -> (tokio::io::DuplexStream, tokio::net::UnixStream, Relaying) {
    let (far, theirs, relaying, _) = relayed_telling(bounds);
    (far, theirs, relaying)
}

/// [`relayed`], and how often it has told of a first drop.
fn relayed_telling(
    bounds: SearchBounds,
) -> (
    tokio::io::DuplexStream,
    tokio::net::UnixStream,
    Relaying,
    Arc<AtomicU32>,
) {
    let told = Arc::new(AtomicU32::new(0));
    let telling = told.clone();
    let (server, far) = tokio::io::duplex(64 * 1024);
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    theirs.set_nonblocking(true).unwrap();
    let ours = tokio::net::UnixStream::from_std(ours).unwrap();
    let relaying = tokio::spawn(async move {
        let searches = Mutex::new(Searches::new(bounds));
        let tell = move || {
            telling.fetch_add(1, Ordering::Relaxed);
        };
        let closed = relay(server, ours, &searches, tell).await;
        let dropped = lock(&searches).dropped;
        (closed, dropped)
    });
    (
        far,
        tokio::net::UnixStream::from_std(theirs).unwrap(),
        relaying,
        told,
    )
}

/// A message `0x30` around `content`, with the shortest length form.
fn sequence(content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = vec![0x30];
    match len {
        0..=0x7f => out.push(len as u8),
        0x80..=0xff => out.extend([0x81, len as u8]),
        _ => out.extend([0x83, (len >> 16) as u8, (len >> 8) as u8, len as u8]),
    }
    out.extend_from_slice(content);
    out
}

/// ldap3 asks for search 2 through the relay, and the server has the
/// request: from then on the relay passes that search's replies.
pub(crate) async fn search_asked(
    theirs: &mut tokio::net::UnixStream,
    far: &mut tokio::io::DuplexStream,
) {
    let request = sequence(&[0x02, 0x01, 0x02, 0x63, 0x00]);
    theirs.write_all(&request).await.unwrap();
    let mut got = vec![0; request.len()];
    timeout(Duration::from_secs(5), far.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, request);
}

/// A search-result-done with message id 2 (`30 0c 02 01 02 65 07 ...`).
pub(crate) fn search_done() -> Vec<u8> {
    sequence(&[
        0x02, 0x01, 0x02, 0x65, 0x07, 0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00,
    ])
}

#[test]
fn headers_are_read_as_ldap3_reads_them_and_odd_forms_refused() {
    assert_eq!(header(&[0x30]), Ok(None));
    assert_eq!(header(&[0x30, 0x05]), Ok(Some((2, 5))));
    assert_eq!(header(&[0x30, 0x82, 0x01]), Ok(None));
    assert_eq!(header(&[0x30, 0x82, 0x01, 0x00]), Ok(Some((4, 256))));
    assert_eq!(header(&[0x30, 0x84, 0, 0, 0, 1]), Ok(Some((6, 1))));
    assert!(header(&[0x30, 0x80]).is_err(), "indefinite length");
    assert!(
        header(&[0x30, 0x85, 0, 0, 0, 0, 1]).is_err(),
        "5-byte length"
    );
}

#[test]
fn a_message_is_known_whole_and_bounded_from_its_header() {
    assert_eq!(message_len(&[]), Ok(None));
    assert_eq!(message_len(&search_done()[..3]), Ok(Some(14)));
    assert!(message_len(&[0x02, 0x01]).is_err(), "not a SEQUENCE");
    // Exactly 1 MiB with its header passes; a byte more does not.
    let header = 5;
    let at_limit = MAX_MESSAGE - header;
    let bytes = |n: usize| [0x30, 0x83, (n >> 16) as u8, (n >> 8) as u8, n as u8];
    assert_eq!(message_len(&bytes(at_limit)), Ok(Some(MAX_MESSAGE)));
    assert!(message_len(&bytes(at_limit + 1)).is_err());
    assert!(message_len(&[0x30, 0x84, 0x40, 0, 0, 0]).is_err(), "1 GiB");
}

#[test]
fn only_well_formed_shallow_messages_with_an_id_pass() {
    assert_eq!(check(&search_done()), Ok(()));
    assert!(check(&sequence(&[])).is_err(), "no id, no operation");
    assert!(
        check(&sequence(&[0x02, 0x01, 0x02])).is_err(),
        "no operation"
    );
    assert!(
        check(&sequence(&[0x04, 0x00, 0x65, 0x00])).is_err(),
        "id not an INTEGER"
    );
    // A child claiming more than its parent holds.
    assert!(check(&sequence(&[0x02, 0x01, 0x02, 0x65, 0x09, 0x0a, 0x01, 0x00])).is_err());
    // Constructed elements nested MAX_DEPTH deep (the message itself is the
    // first) pass, one more does not.
    let nested = |depth: usize| {
        let mut inner = vec![0x04, 0x00];
        for _ in 0..depth - 2 {
            inner = sequence(&inner);
        }
        // The operation: APPLICATION 5 (a SearchResultDone), constructed.
        let mut op = sequence(&inner);
        op[0] = 0x65;
        sequence(&[&[0x02, 0x01, 0x02][..], &op].concat())
    };
    assert_eq!(check(&nested(MAX_DEPTH)), Ok(()));
    assert!(check(&nested(MAX_DEPTH + 1)).is_err());
}

/// What ldap3's decoder panics on is refused before it sees it: a message
/// whose second element is not an operation, or whose controls are not
/// the shape it reads.
#[test]
fn messages_ldap3_would_panic_on_do_not_pass() {
    let done = [0x65, 0x07, 0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00];
    let message = |tail: &[u8]| sequence(&[&[0x02, 0x01, 0x02][..], &done, tail].concat());
    assert_eq!(check(&message(&[])), Ok(()));
    // SEQUENCE { id, [0] {} }: the controls read as the operation.
    assert!(check(&sequence(&[0x02, 0x01, 0x01, 0xa0, 0x00])).is_err());
    let control = |parts: &[u8]| {
        let control = sequence(parts);
        [&[0xa0, control.len() as u8][..], &control].concat()
    };
    let oid = [0x04, 0x03, b'1', b'.', b'2'];
    assert_eq!(check(&message(&control(&oid))), Ok(()));
    let with_value = [&oid[..], &[0x01, 0x01, 0xff, 0x04, 0x01, 0x07]].concat();
    assert_eq!(check(&message(&control(&with_value))), Ok(()));
    for bad in [
        // An empty criticality (ldap3 reads its first byte).
        [&oid[..], &[0x01, 0x00]].concat(),
        // A type that is not UTF-8.
        vec![0x04, 0x02, 0xff, 0xfe],
        // A value that is not an OCTET STRING.
        [&oid[..], &[0x30, 0x00]].concat(),
        // Something after the value.
        [&oid[..], &[0x04, 0x00, 0x04, 0x00]].concat(),
    ] {
        assert!(check(&message(&control(&bad))).is_err(), "{bad:02x?}");
    }
    // Controls that are not `[0]`, or more after them.
    assert!(check(&message(&[0x30, 0x00])).is_err());
    assert!(check(&message(&[0xa0, 0x00, 0x04, 0x00])).is_err());
}

#[test]
fn a_start_tls_answer_is_read_for_its_id_and_code() {
    let answer = |id: u8, code: u8| {
        sequence(&[
            0x02, 0x01, id, 0x78, 0x07, 0x0a, 0x01, code, 0x04, 0x00, 0x04, 0x00,
        ])
    };
    assert_eq!(extended_result(&answer(1, 0)), Some((1, 0)));
    assert_eq!(extended_result(&answer(1, 2)), Some((1, 2)));
    assert_eq!(extended_result(&answer(0, 52)), Some((0, 52)));
    assert_eq!(extended_result(&search_done()), None);
}

/// Listeners on one port at 127.0.0.2 and at 127.0.0.1, the only address
/// `localhost` resolves to here.
async fn checked_and_by_name() -> (TcpListener, TcpListener) {
    for _ in 0..20 {
        let checked = TcpListener::bind("127.0.0.2:0").await.unwrap();
        let port = checked.local_addr().unwrap().port();
        if let Ok(by_name) = TcpListener::bind(("127.0.0.1", port)).await {
            return (checked, by_name);
        }
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2");
}

fn any_tls() -> Arc<rustls::ClientConfig> {
    let key = rcgen::KeyPair::generate().unwrap();
    let ca = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    crate::settings::tls_config("t", Some(&ca.pem())).unwrap()
}

/// `localhost` stands for a tenant's host whose DNS answers a second
/// lookup differently: only the checked address may be dialled.
#[tokio::test]
async fn every_scheme_connects_to_the_checked_address_not_the_name() {
    let (checked, by_name) = checked_and_by_name().await;
    let port = checked.local_addr().unwrap().port();
    let addrs = [SocketAddr::from(([127, 0, 0, 2], port))];
    for security in [Security::Tls, Security::StartTls, Security::Plain] {
        // How the handshake ends (an EOF for TLS and StartTLS, success
        // for plain LDAP) is beside the point.
        let accept = async {
            let (stream, _) = timeout(Duration::from_secs(2), checked.accept())
                .await
                .unwrap_or_else(|_| panic!("{security:?}: nothing reached the checked address"))
                .unwrap();
            drop(stream);
        };
        let tls = Some(any_tls());
        let timeout_ = Duration::from_millis(500);
        let connect = connect(
            &addrs,
            "localhost",
            security,
            tls,
            timeout_,
            label(),
            BOUNDS,
        );
        let (_, ()) = tokio::join!(connect, accept);
        assert!(
            timeout(Duration::from_millis(200), by_name.accept())
                .await
                .is_err(),
            "{security:?}: connected where the name resolves"
        );
    }
}

#[tokio::test]
async fn a_refusing_address_passes_to_the_next_and_none_left_is_an_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refusing = closed.local_addr().unwrap();
    drop(closed);
    let open = TcpListener::bind("127.0.0.2:0").await.unwrap();
    let second = [refusing, open.local_addr().unwrap()];
    let wait = Duration::from_secs(2);
    let (connected, accepted) = tokio::join!(
        connect(
            &second,
            "localhost",
            Security::Plain,
            None,
            wait,
            label(),
            BOUNDS
        ),
        timeout(wait, open.accept()),
    );
    assert!(connected.is_ok() && accepted.is_ok(), "the second address");
    let refused = connect(
        &[refusing],
        "localhost",
        Security::Plain,
        None,
        wait,
        label(),
        BOUNDS,
    )
    .await;
    assert!(matches!(refused, Err(DirectoryError::Ldap(_))));
}

/// What the server sends reaches ldap3 whole, however it is cut up on the
/// way, and a message past the bounds ends the relay with its reason.
#[tokio::test]
async fn the_relay_joins_split_messages_and_stops_at_a_bad_one() {
    let (mut far, mut theirs, relaying) = relayed(BOUNDS);
    let done = search_done();
    for byte in done.iter().chain(&done) {
        far.write_all(&[*byte]).await.unwrap();
    }
    let mut got = vec![0; done.len() * 2];
    theirs.read_exact(&mut got).await.unwrap();
    assert_eq!(got, [done.clone(), done].concat());
    far.write_all(&[0x30, 0x84, 0x40, 0, 0, 0]).await.unwrap();
    let (closed, _) = timeout(Duration::from_secs(5), relaying)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(closed, Err("a message over 1 MiB"));
    assert_eq!(
        theirs.read(&mut got).await.unwrap(),
        0,
        "ldap3 sees the end"
    );
}

/// A search entry for message 2: a DN of `dn_len` bytes, no attributes.
pub(crate) fn search_entry(dn_len: usize) -> Vec<u8> {
    let mut dn = vec![0x04, 0x82, (dn_len >> 8) as u8, dn_len as u8];
    dn.resize(4 + dn_len, b'x');
    let mut op = vec![0x64, 0x82];
    let len = dn.len() + 2;
    op.extend([(len >> 8) as u8, len as u8]);
    op.extend(dn);
    op.extend([0x30, 0x00]);
    let mut content = vec![0x02, 0x01, 0x02];
    content.extend(op);
    sequence(&content)
}

/// A server that answers a search with many times the entries it was
/// asked for: ldap3 is handed the bound and then the result, and the
/// connection stays up for the next search.
#[tokio::test]
async fn a_search_past_its_bound_hands_ldap3_only_the_bound() {
    let (mut far, mut theirs, relaying, told) = relayed_telling(BOUNDS);
    search_asked(&mut theirs, &mut far).await;
    let entry = search_entry(1000);
    let done = search_done();
    let server = tokio::spawn(async move {
        for _ in 0..500 {
            far.write_all(&entry).await.unwrap();
        }
        far.write_all(&done).await.unwrap();
        far
    });
    let want = BOUNDS.entries * search_entry(1000).len() + search_done().len();
    let mut got = vec![0; want];
    timeout(Duration::from_secs(10), theirs.read_exact(&mut got))
        .await
        .expect("the bound and the result arrive")
        .unwrap();
    assert_eq!(&got[want - search_done().len()..], &search_done()[..]);
    let _far = server.await.unwrap();
    // Nothing more: the rest of the entries were dropped.
    let mut more = [0u8; 1];
    let extra = timeout(Duration::from_millis(200), theirs.read(&mut more)).await;
    assert!(extra.is_err(), "ldap3 got more than the bound");
    // Told while the connection is still up, and once.
    assert_eq!(told.load(Ordering::Relaxed), 1);
    drop(theirs);
    let (_, dropped) = timeout(Duration::from_secs(5), relaying)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dropped, 490);
}

/// On a sync's connection the same flood ends the connection instead, so
/// that the sync fails rather than keep a read that misses entries.
#[tokio::test]
async fn a_sync_search_past_its_bound_closes_the_connection() {
    let bounds = SearchBounds {
        past: Past::Close,
        ..BOUNDS
    };
    let (mut far, mut theirs, relaying) = relayed(bounds);
    search_asked(&mut theirs, &mut far).await;
    let entry = search_entry(100);
    tokio::spawn(async move {
        for _ in 0..500 {
            if far.write_all(&entry).await.is_err() {
                return;
            }
        }
    });
    let (closed, _) = timeout(Duration::from_secs(5), relaying)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        closed,
        Err("a search's results past what this node may read of them")
    );
    let mut all = Vec::new();
    theirs.read_to_end(&mut all).await.unwrap();
    // What was read with the entry past the bound is not handed on either.
    assert!(all.len() <= bounds.entries * search_entry(100).len());
}

/// An entry ldap3 would panic building is `None`; a good one is built.
#[test]
fn search_entries_are_built_only_from_their_own_shape() {
    use ldap3::asn1::{StructureTag, TagClass, PL};
    let tag = |id: u64, payload: PL| StructureTag {
        class: TagClass::Universal,
        id,
        payload,
    };
    let bytes = |b: &[u8]| tag(4, PL::P(b.to_vec()));
    let attribute = |kind: &[u8], values: Vec<StructureTag>| {
        tag(16, PL::C(vec![bytes(kind), tag(17, PL::C(values))]))
    };
    let entry = |dn: StructureTag, attrs: Vec<StructureTag>| {
        let mut entry = tag(4, PL::C(vec![dn, tag(16, PL::C(attrs))]));
        entry.class = TagClass::Application;
        ldap3::ResultEntry::new(entry)
    };
    let good = entry(bytes(b"cn=a"), vec![attribute(b"cn", vec![bytes(b"Ann")])]);
    let built = crate::ldap_wire::search_entry(good).expect("a well-formed entry");
    assert_eq!(built.dn, "cn=a");
    assert_eq!(built.attrs["cn"], ["Ann"]);
    for bad in [
        entry(bytes(b"cn=\xff"), vec![]),
        entry(tag(16, PL::C(vec![])), vec![]),
        entry(bytes(b"cn=a"), vec![attribute(b"\xfe", vec![])]),
        entry(
            bytes(b"cn=a"),
            vec![attribute(b"cn", vec![tag(16, PL::C(vec![]))])],
        ),
        entry(bytes(b"cn=a"), vec![bytes(b"cn")]),
        ldap3::ResultEntry::new(tag(4, PL::C(vec![bytes(b"cn=a")]))),
    ] {
        assert!(crate::ldap_wire::search_entry(bad).is_none());
    }
}

/// A tenant's server presents a certificate of its own making; rustls
/// names the names it carries when they are not the host's, and those
/// reached the source's error (shown to operators) raw.
#[tokio::test]
async fn a_certificates_names_reach_an_error_cleaned() {
    let key = rcgen::KeyPair::generate().unwrap();
    let presented = format!("evil\x1b]0;pwned\x07{}.example", "x".repeat(2_000));
    let cert = rcgen::CertificateParams::new(vec![presented])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let client = crate::settings::tls_config("t", Some(&cert.pem())).unwrap();
    let server = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addrs = [listener.local_addr().unwrap()];
    let serve = async {
        let (stream, _) = listener.accept().await.unwrap();
        let _ = acceptor.accept(stream).await;
    };
    let dial = connect(
        &addrs,
        "localhost",
        Security::Tls,
        Some(client),
        Duration::from_secs(2),
        label(),
        BOUNDS,
    );
    let (dialled, ()) = tokio::join!(dial, serve);
    let Err(DirectoryError::Ldap(why)) = dialled else {
        panic!("a certificate for another name was taken")
    };
    assert!(why.contains("evil"), "{why}");
    assert!(!why.contains(|c: char| c.is_control()), "{why:?}");
    assert!(
        why.chars().count() < 600,
        "{} characters",
        why.chars().count()
    );
}
