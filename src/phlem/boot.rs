//! One phone's boot: its family's sequence fetched over TFTP or HTTP, what
//! the answers name followed, what a missing file sends it to next, and
//! every outcome recorded in the report.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

use super::follow::{Origin, MAX_FOLLOW_UPS};
use super::report::Report;
use super::sequence::{Phone, Step};
use super::tftp::{self, TftpError, TftpOptions};

/// A `--verify` folder without the file: `render --all` does not write
/// it, so there is nothing to compare with (not the same as different
/// bytes, which is `mismatch`).
const NOT_RENDERED: &str = "not_rendered";

/// Where phones fetch from, and how.
pub(super) enum Target {
    Tftp(std::net::SocketAddr),
    Http(String, reqwest::Client),
}

async fn fetch(
    target: &Target,
    phone: &Phone,
    step: &Step,
    options: &TftpOptions,
    port: Option<&tokio::net::UdpSocket>,
) -> Result<(Vec<u8>, u32), String> {
    match target {
        Target::Tftp(server) => match match port {
            Some(socket) => tftp::get_on(socket, *server, &step.file, options).await,
            None => tftp::get(*server, &step.file, options).await,
        } {
            Ok(t) => Ok((t.bytes, t.retransmits)),
            Err(TftpError::Server { code: 1, .. }) => Err("not_found".into()),
            Err(TftpError::Server { code, .. }) => Err(format!("tftp_error_{code}")),
            Err(TftpError::Timeout(_)) => Err("timeout".into()),
            Err(TftpError::Protocol(_)) => Err("protocol".into()),
            Err(TftpError::Io(_)) => Err("io".into()),
        },
        Target::Http(base, client) => {
            let url = format!("{base}/{}", step.file);
            let send = |authorization: Option<String>| {
                let mut request = client.get(&url).header("User-Agent", phone.user_agent());
                if let Some(value) = authorization {
                    request = request.header("Authorization", value);
                }
                async move {
                    request.send().await.map_err(|e| {
                        if e.is_timeout() {
                            "timeout".to_string()
                        } else {
                            "connect".to_string()
                        }
                    })
                }
            };
            let mut response = send(None).await?;
            // A phone with credentials answers the Digest challenge, with
            // MD5 as most phones do.
            if let (reqwest::StatusCode::UNAUTHORIZED, Some((user, password))) =
                (response.status(), &phone.credentials)
            {
                use dialtone_tftp::digest::{client_response, parse_challenge, Algorithm};
                let (algorithm, nonce) = response
                    .headers()
                    .get_all("www-authenticate")
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .filter_map(parse_challenge)
                    .find(|(algorithm, _)| *algorithm == Algorithm::Md5)
                    .ok_or_else(|| "no_md5_challenge".to_string())?;
                let cnonce = format!("{:016x}", rand::random::<u64>());
                let path = format!("/{}", step.file);
                let authorization = client_response(
                    &nonce,
                    algorithm,
                    "GET",
                    &path,
                    (user, password),
                    1,
                    &cnonce,
                );
                response = send(Some(authorization)).await?;
            }
            let status = response.status();
            if status == reqwest::StatusCode::NOT_FOUND {
                return Err("not_found".into());
            }
            if !status.is_success() {
                return Err(format!("http_{}", status.as_u16()));
            }
            let body = response.bytes().await.map_err(|_| "body".to_string())?;
            Ok((body.to_vec(), 0))
        }
    }
}

/// What `--verify` finds wrong with `body`, if anything.
fn disagreement(verify: Option<&std::path::Path>, file: &str, body: &[u8]) -> Option<&'static str> {
    match std::fs::read(verify?.join(file)) {
        Ok(want) if want == body => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(NOT_RENDERED),
        _ => Some("mismatch"),
    }
}

/// Fetched files and their bytes, or why not, for re-fetches to report.
pub(super) type Fetched = Vec<(String, Result<Vec<u8>, String>)>;

/// Boots `phone` once. `origin` is the server as served files may name
/// it: what they name elsewhere is reported, never fetched.
pub(super) async fn boot(
    target: &Target,
    origin: &Origin,
    phone: &Phone,
    options: &TftpOptions,
    verify: Option<&std::path::Path>,
    same_port: bool,
    report: &Mutex<Report>,
) -> Fetched {
    let mut fetched = Fetched::new();
    let port = match (target, same_port) {
        (Target::Tftp(server), true) => match tftp::socket_for(*server).await {
            Ok(socket) => Some(socket),
            Err(_) => {
                report
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .record_failure("bind", "io");
                return fetched;
            }
        },
        _ => None,
    };
    let family = phone.family.as_str();
    let mut queue: VecDeque<Step> = phone.sequence().into();
    let mut followed = 0;
    while let Some(step) = queue.pop_front() {
        let name = format!("{family} {}", step.pattern);
        let started = Instant::now();
        let result = fetch(target, phone, &step, options, port.as_ref()).await;
        let elapsed = started.elapsed();
        let disagreement = match &result {
            Ok((body, _)) => disagreement(verify, &step.file, body),
            Err(_) => None,
        };
        let mut report = report.lock().unwrap_or_else(|e| e.into_inner());
        match (result, disagreement) {
            (Ok(_), Some(reason)) => {
                report.record_failure(&name, reason);
                fetched.push((step.file, Err(reason.into())));
            }
            (Ok((body, retransmits)), None) => match phone.well_formed(&step, &body) {
                Ok(()) => {
                    report.record_ok(&name, elapsed, body.len(), retransmits);
                    for follow_up in phone.follow_ups(&step, &body, origin) {
                        if followed == MAX_FOLLOW_UPS {
                            report.record_failure(&format!("{family} follow-ups"), "over_cap");
                            fetched.push(("follow-ups".into(), Err("over_cap".into())));
                            break;
                        }
                        followed += 1;
                        match follow_up {
                            Ok(next) => queue.push_back(next),
                            Err(unfollowed) => {
                                let name = format!("{family} {}", unfollowed.pattern);
                                report.record_failure(&name, unfollowed.reason);
                                fetched.push((unfollowed.reference, Err(unfollowed.reason.into())));
                            }
                        }
                    }
                    fetched.push((step.file, Ok(body)));
                }
                Err(why) => {
                    let reason = format!("malformed ({why})");
                    report.record_failure(&name, &reason);
                    fetched.push((step.file, Err(reason)));
                }
            },
            (Err(reason), _) if reason == "not_found" && step.may_be_missing => {
                report.expected_missing += 1
            }
            (Err(reason), _) => {
                if reason == "not_found" {
                    queue.extend(phone.after_missing(&step));
                }
                report.record_failure(&name, &reason);
                fetched.push((step.file, Err(reason)));
            }
        }
    }
    fetched
}
