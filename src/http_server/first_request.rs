//! A connection's first request, answered straight from the accepted
//! socket when it has already arrived whole: no registration with tokio's
//! reactor (two `epoll_ctl` calls), no hyper connection state (two 8 KiB
//! buffers), and the answer goes out in one `writev`. Many phones open a
//! connection per file, so for them this is the whole connection.
//!
//! Only the plain case is taken here: a complete GET or HEAD with no body,
//! and nothing after it in the same read. Anything else (a request still
//! arriving, a body, pipelined requests, an upgrade, a header hyper would
//! refuse) goes to hyper with the bytes already read put back in front,
//! so hyper sees the connection exactly as the client sent it. After the
//! answer, a client that keeps the connection open is handed to hyper for
//! its next requests.

use std::cell::RefCell;
use std::io::{IoSlice, Write};
use std::net::SocketAddr;
use std::time::SystemTime;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::{
    header, HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Version,
};
use http_body_util::BodyExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::slow::Meter;
use super::stall::Stalling;
use super::{respond, Shared};

/// What a connection needs after its first request.
pub(super) enum Next {
    /// Answered and to be closed, or the client is gone.
    Close,
    /// hyper goes on, reading `prefix` (bytes already taken from the
    /// socket) before the socket; `answered`: after the first response.
    Hyper {
        stream: TcpStream,
        prefix: Bytes,
        answered: bool,
    },
}

/// One read's worth: a phone's request is a few hundred bytes, and one that
/// fills this is handed to hyper, which reads on with its own limits.
const READ_BUFFER: usize = 4096;
/// Requests with more headers than this go to hyper.
const MAX_HEADERS: usize = 32;

thread_local! {
    /// The read buffer of every connection served on this worker thread:
    /// the request is parsed and copied out before the first `.await`, so
    /// connections never share it across a suspension.
    static READ: RefCell<Box<[u8; READ_BUFFER]>> = RefCell::new(Box::new([0; READ_BUFFER]));
    /// `Date:` for the current second, formatted once per second.
    static DATE: RefCell<(u64, HeaderValue)> = const { RefCell::new((u64::MAX, HeaderValue::from_static(""))) };
}

/// A request taken from the socket, or why not.
enum Read {
    Plain {
        request: Box<Request<Body>>,
        keep_alive: bool,
    },
    /// Not for this path: hyper takes these bytes and the rest.
    Hyper(Bytes),
    Gone,
}

pub(super) async fn serve(shared: &Shared, stream: std::net::TcpStream, peer: SocketAddr) -> Next {
    let (mut request, keep_alive) = match read_request(&stream) {
        Read::Plain {
            request,
            keep_alive,
        } => (*request, keep_alive),
        Read::Hyper(prefix) => return register(stream, prefix, false),
        Read::Gone => return Next::Close,
    };
    let head_only = request.method() == Method::HEAD;
    request.extensions_mut().insert(ConnectInfo(peer));
    let response = respond(&shared.router, request, peer).await;
    let (parts, mut body) = response.into_parts();

    let bodiless = head_only
        || parts.status.is_informational()
        || parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let length = if bodiless {
        Some(0)
    } else {
        declared.or_else(|| body.size_hint().exact())
    };
    // Without a length the body ends where the connection does.
    let close = !keep_alive
        || length.is_none()
        || wants_close(&parts.headers)
        || shared.draining.load(std::sync::atomic::Ordering::Acquire);
    let head = response_head(
        parts.status,
        &parts.headers,
        close,
        (!bodiless && declared.is_none())
            .then_some(length)
            .flatten(),
    );

    let mut out = Output::Raw(stream);
    if bodiless {
        if out.write(shared, peer, &[&head]).await.is_err() {
            return Next::Close;
        }
    } else {
        // The first piece of the body goes out with the head: a whole
        // rendered file is one frame, so one system call answers it.
        let mut remaining = length;
        let mut pending: &[u8] = &head;
        loop {
            let data = match body.frame().await {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => data,
                    Err(_) => continue,
                },
                Some(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "response body failed; closing");
                    return Next::Close;
                }
                None => break,
            };
            let data = match remaining {
                Some(left) => {
                    // A body longer than it said is cut, and the connection with it.
                    let take = (data.len() as u64).min(left) as usize;
                    remaining = Some(left - take as u64);
                    data.slice(..take)
                }
                None => data,
            };
            if out.write(shared, peer, &[pending, &data]).await.is_err() {
                return Next::Close;
            }
            pending = &[];
            if remaining == Some(0) {
                break;
            }
        }
        if !pending.is_empty() && out.write(shared, peer, &[pending]).await.is_err() {
            return Next::Close;
        }
        if remaining.is_some_and(|left| left > 0) {
            tracing::debug!(%peer, "response body shorter than its length; closing");
            return Next::Close;
        }
    }
    if close {
        return Next::Close;
    }
    match out {
        Output::Raw(stream) => register(stream, Bytes::new(), true),
        Output::Registered(stream) => match stream.into_inner() {
            Some(stream) => Next::Hyper {
                stream,
                prefix: Bytes::new(),
                answered: true,
            },
            None => Next::Close,
        },
        Output::Gone => Next::Close,
    }
}

fn register(stream: std::net::TcpStream, prefix: Bytes, answered: bool) -> Next {
    match TcpStream::from_std(stream) {
        Ok(stream) => Next::Hyper {
            stream,
            prefix,
            answered,
        },
        Err(e) => {
            tracing::warn!(error = %e, "registering an HTTP connection failed");
            Next::Close
        }
    }
}

fn read_request(stream: &std::net::TcpStream) -> Read {
    READ.with_borrow_mut(|buffer| {
        let read = match rustix::net::recv(stream, &mut buffer[..], rustix::net::RecvFlags::empty())
        {
            Ok((_, 0)) => return Read::Gone,
            Ok((_, read)) => read,
            // Not here yet: hyper waits for it, under the header deadline.
            Err(rustix::io::Errno::AGAIN) => return Read::Hyper(Bytes::new()),
            Err(rustix::io::Errno::INTR) => return Read::Hyper(Bytes::new()),
            Err(_) => return Read::Gone,
        };
        let bytes = &buffer[..read];
        match plain_request(bytes) {
            Some((request, keep_alive)) if read < READ_BUFFER => Read::Plain {
                request: Box::new(request),
                keep_alive,
            },
            _ => Read::Hyper(Bytes::copy_from_slice(bytes)),
        }
    })
}

/// A complete GET or HEAD without a body that is all of `bytes`, and
/// whether the client keeps the connection after it.
fn plain_request(bytes: &[u8]) -> Option<(Request<Body>, bool)> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(bytes) {
        Ok(httparse::Status::Complete(length)) if length == bytes.len() => {}
        _ => return None,
    }
    let method = match parsed.method? {
        "GET" => Method::GET,
        "HEAD" => Method::HEAD,
        _ => return None,
    };
    let version = match parsed.version? {
        1 => Version::HTTP_11,
        0 => Version::HTTP_10,
        _ => return None,
    };
    let mut map = HeaderMap::with_capacity(parsed.headers.len());
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        // A body, or a protocol change, is hyper's to handle.
        let has_body = (name == header::CONTENT_LENGTH && h.value.trim_ascii() != b"0")
            || name == header::TRANSFER_ENCODING;
        if has_body || name == header::EXPECT || name == header::UPGRADE {
            return None;
        }
        map.append(name, HeaderValue::from_bytes(h.value).ok()?);
    }
    // HTTP/1.0 keep-alive needs its own answer header; such clients are
    // simply answered and closed.
    let keep_alive = version == Version::HTTP_11 && !wants_close(&map);
    let mut request = Request::builder()
        .method(method)
        .uri(parsed.path?)
        .version(version)
        .body(Body::empty())
        .ok()?;
    *request.headers_mut() = map;
    Some((request, keep_alive))
}

fn wants_close(headers: &HeaderMap) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
    })
}

/// The status line and headers; `length` is a Content-Length the response
/// lacks but its body has.
fn response_head(
    status: StatusCode,
    headers: &HeaderMap,
    close: bool,
    length: Option<u64>,
) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    // A 304's Content-Length went in `respond`, for hyper's answers too
    // (`drop_bodiless_length`): none to leave out here.
    for (name, value) in headers {
        if name == header::CONNECTION {
            continue;
        }
        push_header(&mut head, name.as_str().as_bytes(), value.as_bytes());
    }
    if let Some(length) = length {
        push_header(&mut head, b"content-length", length.to_string().as_bytes());
    }
    if close {
        push_header(&mut head, b"connection", b"close");
    }
    if !headers.contains_key(header::DATE) {
        DATE.with_borrow_mut(|(second, value)| {
            let now = SystemTime::now();
            let this_second = now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if *second != this_second {
                *second = this_second;
                *value = HeaderValue::from_str(&httpdate::fmt_http_date(now))
                    .unwrap_or(HeaderValue::from_static(""));
            }
            push_header(&mut head, b"date", value.as_bytes());
        });
    }
    head.extend_from_slice(b"\r\n");
    head
}

fn push_header(head: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    head.extend_from_slice(name);
    head.extend_from_slice(b": ");
    head.extend_from_slice(value);
    head.extend_from_slice(b"\r\n");
}

/// The socket as written to: directly while the kernel takes everything,
/// through tokio once it would block (a large file, a slow reader). One
/// `Stalling` for the rest of the response: its measure of the client
/// spans the body's pieces.
enum Output {
    Raw(std::net::TcpStream),
    Registered(Stalling<TcpStream>),
    Gone,
}

impl Output {
    async fn write(
        &mut self,
        shared: &Shared,
        peer: SocketAddr,
        pieces: &[&[u8]],
    ) -> std::io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> = pieces
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| IoSlice::new(p))
            .collect();
        let mut slices = &mut slices[..];
        if let Output::Raw(stream) = self {
            while !slices.is_empty() {
                match stream.write_vectored(slices) {
                    Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                    Ok(written) => IoSlice::advance_slices(&mut slices, written),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            if slices.is_empty() {
                return Ok(());
            }
            let Output::Raw(stream) = std::mem::replace(self, Output::Gone) else {
                unreachable!()
            };
            *self = Output::Registered(Stalling::new(
                TcpStream::from_std(stream)?,
                shared.write_stall,
                Meter::new(shared.readers.clone(), peer),
            ));
        }
        let Output::Registered(stream) = self else {
            return Err(std::io::ErrorKind::NotConnected.into());
        };
        for slice in slices.iter() {
            stream.write_all(slice).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(text: &str) -> Option<(Request<Body>, bool)> {
        plain_request(text.as_bytes())
    }

    #[test]
    fn a_complete_get_is_plain_and_keeps_alive_by_default() {
        let (request, keep_alive) =
            plain("GET /001565000001.cfg?x=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: Yealink\r\n\r\n")
                .unwrap();
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri().path(), "/001565000001.cfg");
        assert_eq!(request.uri().query(), Some("x=1"));
        assert_eq!(request.headers()["user-agent"], "Yealink");
        assert!(keep_alive);
        let (_, keep_alive) =
            plain("HEAD / HTTP/1.1\r\nConnection: Keep-Alive, CLOSE\r\n\r\n").unwrap();
        assert!(!keep_alive);
        let (_, keep_alive) = plain("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
        assert!(!keep_alive, "HTTP/1.0 is answered and closed");
    }

    #[test]
    fn everything_else_goes_to_hyper() {
        for text in [
            "GET / HTTP/1.1\r\nHost: a\r\n",                  // not complete
            "GET / HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n",  // pipelined
            "POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\nab", // a body
            "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", // a body
            "GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n", // waits for us
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", // hyper's 400
            "BREW / HTCPCP/1.0\r\n\r\n",
        ] {
            assert!(plain(text).is_none(), "{text:?}");
        }
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("X-{i}: y\r\n"))
            .collect();
        assert!(plain(&format!("GET / HTTP/1.1\r\n{many}\r\n")).is_none());
        assert!(plain("GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").is_some());
    }

    #[test]
    fn the_head_carries_length_close_and_date() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        let head =
            String::from_utf8(response_head(StatusCode::OK, &headers, true, Some(12))).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("content-type: text/plain\r\n"));
        assert!(head.contains("content-length: 12\r\n"));
        assert!(head.contains("connection: close\r\n"));
        assert!(!head.contains("keep-alive"));
        assert!(head.contains("date: ") && head.contains(" GMT\r\n"));
        assert!(head.ends_with("\r\n\r\n"));
    }
}
