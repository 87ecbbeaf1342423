//! A hostile LDAP server on a loopback port, for what slapd cannot be made
//! to do: answer the root DSE with messages that never end.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::error::DirectoryError;

/// One BER element: tag, definite length, body.
pub(super) fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    if body.len() < 0x80 {
        out.push(body.len() as u8);
    } else {
        let len = body.len().to_be_bytes();
        let skip = len.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (len.len() - skip) as u8);
        out.extend(&len[skip..]);
    }
    out.extend(body);
    out
}

/// An LDAPMessage: the request's id, then the protocol op.
pub(super) fn message(id: &[u8], op: &[u8]) -> Vec<u8> {
    tlv(0x30, &[tlv(0x02, id), op.to_vec()].concat())
}

#[derive(Clone, Copy)]
enum Flood {
    /// Root DSE entries, each one a valid answer.
    Entries,
    /// One entry, then search result references.
    Referrals,
}

/// Answers a bind, then the first search with messages until the client
/// goes away; counts the messages sent.
async fn serve(mut socket: TcpStream, flood: Flood, sent: Arc<AtomicUsize>) {
    let mut buf = Vec::new();
    loop {
        let (id, op) = loop {
            if let Ok((rest, tag)) = ldap3::asn1::parse_tag(&buf) {
                let used = buf.len() - rest.len();
                let mut parts = tag.expect_constructed().unwrap().into_iter();
                let id = parts.next().unwrap().expect_primitive().unwrap();
                let op = parts.next().unwrap().id;
                buf.drain(..used);
                break (id, op);
            }
            let mut chunk = [0; 4096];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend(&chunk[..n]),
            }
        };
        match op {
            0 => {
                let ok = [tlv(0x0a, &[0]), tlv(0x04, b""), tlv(0x04, b"")].concat();
                if socket
                    .write_all(&message(&id, &tlv(0x61, &ok)))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            3 => break flood_with(&mut socket, &id, flood, &sent).await,
            _ => {}
        }
    }
}

async fn flood_with(socket: &mut TcpStream, id: &[u8], flood: Flood, sent: &AtomicUsize) {
    let attrs = tlv(
        0x30,
        &tlv(
            0x30,
            &[
                tlv(0x04, b"highestCommittedUSN"),
                tlv(0x31, &tlv(0x04, b"42")),
            ]
            .concat(),
        ),
    );
    let entry = message(id, &tlv(0x64, &[tlv(0x04, b""), attrs].concat()));
    let referral = message(id, &tlv(0x73, &tlv(0x04, b"ldap://127.0.0.1/")));
    let next = match flood {
        Flood::Entries => &entry,
        Flood::Referrals => &referral,
    };
    let mut batch = entry.clone();
    loop {
        // Paced (about 4 MB/s), so a client that keeps every message until
        // the last, as root_usn once did, fails this test without
        // exhausting the machine first.
        while batch.len() < 4096 {
            batch.extend(next);
        }
        if socket.write_all(&batch).await.is_err() {
            return;
        }
        sent.fetch_add(1, Ordering::Relaxed);
        batch.clear();
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test]
async fn a_root_dse_that_never_ends_fails_the_sync_and_closes_the_connection() {
    for flood in [Flood::Entries, Flood::Referrals] {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let batches = Arc::new(AtomicUsize::new(0));
        let server = tokio::spawn({
            let batches = batches.clone();
            async move {
                let (socket, _) = listener.accept().await.unwrap();
                serve(socket, flood, batches).await;
            }
        });
        let settings = crate::settings::LdapSettings::parse(
            "t",
            &serde_json::json!({
                "url": format!("ldap://{addr}"),
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
        let ldap = crate::ldap::LdapSource::new(
            crate::source_label::SourceLabel::new(1, 1, "t"),
            settings,
            Some("secret".into()),
            networks,
        )
        .unwrap();
        let mut d = MirrorData {
            region: "US".into(),
            ..Default::default()
        };
        let synced = tokio::time::timeout(
            Duration::from_secs(5),
            one_sync::sync_once(
                &ldap,
                &super::work::MirrorWork::new(1),
                &mut d,
                true,
                1000,
                Duration::from_secs(60),
                &tokio_util::sync::CancellationToken::new(),
            ),
        )
        .await
        .expect("the sync still reads a root DSE that never ends");
        match synced {
            Err(DirectoryError::MirrorLimit(reason)) => {
                assert!(reason.starts_with("root DSE"), "{reason}")
            }
            other => panic!("{:?}", other.map(|o| o.changed)),
        }
        assert!(d.entries.is_empty());
        // The connection is closed, not left streaming into a dropped search.
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the server is still sending")
            .unwrap();
        assert!(batches.load(Ordering::Relaxed) < 1000);
    }
}
