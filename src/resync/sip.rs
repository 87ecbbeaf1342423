//! The one SIP request dialtone sends (an out-of-dialog NOTIFY) and the
//! little of a response it reads (status, reason, top Via branch, CSeq
//! method). Hand-written: a full SIP stack would bring dialogs, transports
//! and parsers for a request that never changes shape.

use std::fmt::Write;
use std::net::SocketAddr;

use dialtone_sync::Family;

/// What `Event:` asks a family's phones for, or why they cannot be asked.
/// Where the firmware honours `reboot=false` it is sent, so a resync only
/// fetches; elsewhere the bare event, which those phones answer by fetching
/// and rebooting only when a change needs it (see docs/vendors.md).
pub fn event(family: Family) -> Result<&'static str, &'static str> {
    match family {
        Family::Yealink | Family::Snom => Ok("check-sync;reboot=false"),
        Family::Poly | Family::Grandstream | Family::Fanvil => Ok("check-sync"),
        Family::CiscoSpa | Family::CiscoMpp => Ok("resync"),
        Family::CiscoSep => {
            Err("cisco-sep phones are reset by their call manager, not by SIP NOTIFY")
        }
    }
}

/// Characters a SIP URI's user part may hold unescaped (RFC 3261 25.1:
/// unreserved and user-unreserved); everything else is %-escaped, so
/// tenant data can never end the URI or the header line.
fn user_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,;?/".contains(&c)
}

/// `sip:<user>@<host>` for a line, as the shipped templates register it:
/// the extension is the user part (`user_name`, `User_ID`, `reg.address`,
/// `P35`), the registrar the host. Refuses a host that is not a hostname,
/// an IPv4 address or a bracketed IPv6 address, with an optional port.
pub fn aor(user: &str, registrar: &str) -> Result<String, &'static str> {
    if user.is_empty() {
        return Err("line 1 has no extension");
    }
    let host = registrar_host(registrar);
    if !valid_host(host) {
        return Err("line 1's registrar is not a SIP host");
    }
    let mut uri = String::from("sip:");
    for &b in user.as_bytes() {
        if user_char(b) {
            uri.push(b as char);
        } else {
            let _ = write!(uri, "%{b:02X}");
        }
    }
    uri.push('@');
    uri.push_str(host);
    Ok(uri)
}

/// The host (with its port, if any) a line's registrar names.
pub fn registrar_host(registrar: &str) -> &str {
    let host = registrar.trim();
    host.strip_prefix("sip:")
        .or_else(|| host.strip_prefix("SIP:"))
        .unwrap_or(host)
}

fn valid_host(text: &str) -> bool {
    let (host_ok, port) = match text.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, port)) => (v6.parse::<std::net::Ipv6Addr>().is_ok(), port),
            None => return false,
        },
        None => {
            let host = text.split(':').next().unwrap_or("");
            (is_hostname(host), &text[host.len()..])
        }
    };
    let port_ok = port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    host_ok && port_ok
}

/// A hostname or IPv4 address as a registrar may name it: letters,
/// digits, dashes and dots, not starting with a dash or a dot.
pub fn is_hostname(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && !host.starts_with(['-', '.'])
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// A hostname for the From header, by the same rule as a registrar.
pub fn valid_domain(text: &str) -> bool {
    valid_host(text)
}

/// Everything that differs between two NOTIFYs.
#[derive(Clone, Copy)]
pub struct Notify<'a> {
    pub aor: &'a str,
    pub event: &'a str,
    /// Our address as the far end should answer it (Via sent-by).
    pub local: SocketAddr,
    /// Starts with the RFC 3261 magic cookie `z9hG4bK`.
    pub branch: &'a str,
    pub from_domain: &'a str,
    pub from_tag: &'a str,
    pub call_id: &'a str,
}

impl Notify<'_> {
    /// The request as sent. `rport` (RFC 3581) makes the answer come back
    /// to the port we sent from, through NAT and whatever `local` says.
    pub fn to_bytes(self) -> Vec<u8> {
        let event = format!(
            "Event: {}\r\nSubscription-State: terminated\r\n",
            self.event
        );
        self.request_bytes("NOTIFY", self.aor, 70, &event)
    }

    /// An OPTIONS to the next hop alone (Max-Forwards 0: a proxy answers it
    /// itself, RFC 3261 16.3), with this NOTIFY's addresses and `branch`:
    /// whether the proxy is there, once a NOTIFY through it went
    /// unanswered.
    pub fn probe_bytes(&self, next_hop: SocketAddr, branch: &str) -> Vec<u8> {
        let uri = format!(
            "sip:{}",
            SocketAddr::new(next_hop.ip().to_canonical(), next_hop.port())
        );
        Notify { branch, ..*self }.request_bytes("OPTIONS", &uri, 0, "")
    }

    fn request_bytes(&self, method: &str, uri: &str, max_forwards: u8, extra: &str) -> Vec<u8> {
        // A `[::]` socket reaches IPv4 targets from `::ffff:a.b.c.d`; an
        // IPv4-only stack may refuse that bracketed form in a Via.
        let sent_by = SocketAddr::new(self.local.ip().to_canonical(), self.local.port());
        format!(
            "{method} {uri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {sent_by};branch={branch};rport\r\n\
             Max-Forwards: {max_forwards}\r\n\
             From: <sip:dialtone@{from}>;tag={tag}\r\n\
             To: <{uri}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: 1 {method}\r\n\
             {extra}\
             User-Agent: dialtone\r\n\
             Content-Length: 0\r\n\r\n",
            branch = self.branch,
            from = self.from_domain,
            tag = self.from_tag,
            call_id = self.call_id,
        )
        .into_bytes()
    }
}

/// The parts of a response a client transaction is matched and ended by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub branch: String,
    pub method: String,
}

/// Longest reason phrase kept: it is shown to tenants and stored.
const MAX_REASON: usize = 96;

/// Reads a response; `None` for requests, garbage and responses whose top
/// Via has no branch or that have no CSeq (they cannot be matched to a
/// transaction). Read as bytes: one byte that is not UTF-8, in a reason
/// phrase or a header we do not read, must not lose the answer (it would
/// read as no answer at all, and count against the proxy).
pub fn parse_response(bytes: &[u8]) -> Option<Response> {
    let head = &bytes[..find(bytes, b"\r\n\r\n").unwrap_or(bytes.len())];
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let status_line = lines.next()?.strip_prefix(b"SIP/2.0 ")?;
    let (code, reason) = match status_line.iter().position(|&b| b == b' ') {
        Some(space) => (&status_line[..space], &status_line[space + 1..]),
        None => (status_line, &b""[..]),
    };
    let status: u16 = std::str::from_utf8(code)
        .ok()?
        .parse()
        .ok()
        .filter(|s| (100..700).contains(s))?;
    let reason: String = String::from_utf8_lossy(reason)
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_REASON)
        .collect();
    let (mut top_via, mut method) = (None, None);
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (line[..colon].trim_ascii(), &line[colon + 1..]);
        let is_via = name.eq_ignore_ascii_case(b"via") || name.eq_ignore_ascii_case(b"v");
        if is_via && top_via.is_none() {
            top_via = Some(value);
        } else if method.is_none() && name.eq_ignore_ascii_case(b"cseq") {
            method = value
                .split(u8::is_ascii_whitespace)
                .filter(|word| !word.is_empty())
                .nth(1)
                .map(|m| String::from_utf8_lossy(m).into_owned());
        }
    }
    Some(Response {
        status,
        reason: reason.trim().to_string(),
        branch: branch_of(top_via?)?,
        method: method?,
    })
}

/// The branch of the first Via a header value lists. Only the top Via
/// names our transaction (RFC 3261 17.1.3): one without a branch is some
/// other hop's, and no Via below it may stand in.
fn branch_of(via_value: &[u8]) -> Option<String> {
    let top = via_value.split(|&b| b == b',').next()?;
    let branch = top
        .split(|&b| b == b';')
        .skip(1)
        .filter_map(|param| {
            let eq = param.iter().position(|&b| b == b'=')?;
            Some((param[..eq].trim_ascii(), param[eq + 1..].trim_ascii()))
        })
        .find(|(key, _)| key.eq_ignore_ascii_case(b"branch"))?
        .1;
    // Ours is hex after the magic cookie: anything else is no match anyway.
    std::str::from_utf8(branch).ok().map(str::to_string)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Random lowercase hex: tags, Call-IDs and branches must be unique and,
/// since a branch is all that ties a response to us, unguessable.
pub fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notify_has_every_header_in_order() {
        let n = Notify {
            aor: "sip:1001@sip.example.net",
            event: "check-sync;reboot=false",
            local: "192.0.2.10:5070".parse().unwrap(),
            branch: "z9hG4bKabc",
            from_domain: "sip.example.net",
            from_tag: "t1",
            call_id: "c1",
        };
        let text = String::from_utf8(n.to_bytes()).unwrap();
        assert_eq!(
            text,
            "NOTIFY sip:1001@sip.example.net SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.10:5070;branch=z9hG4bKabc;rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:dialtone@sip.example.net>;tag=t1\r\n\
             To: <sip:1001@sip.example.net>\r\n\
             Call-ID: c1\r\n\
             CSeq: 1 NOTIFY\r\n\
             Event: check-sync;reboot=false\r\n\
             Subscription-State: terminated\r\n\
             User-Agent: dialtone\r\n\
             Content-Length: 0\r\n\r\n"
        );
        let v6 = Notify {
            local: "[2001:db8::1]:5060".parse().unwrap(),
            ..n
        };
        let text = String::from_utf8(v6.to_bytes()).unwrap();
        assert!(text.contains("Via: SIP/2.0/UDP [2001:db8::1]:5060;branch="));
    }

    #[test]
    fn a_mapped_local_address_is_sent_as_ipv4() {
        let n = Notify {
            aor: "sip:1001@192.0.2.9",
            event: "check-sync",
            local: "[::ffff:192.0.2.2]:54588".parse().unwrap(),
            branch: "z9hG4bKabc",
            from_domain: "sip.example.net",
            from_tag: "t1",
            call_id: "c1",
        };
        let text = String::from_utf8(n.to_bytes()).unwrap();
        assert!(
            text.contains("Via: SIP/2.0/UDP 192.0.2.2:54588;branch="),
            "{text}"
        );
    }

    #[test]
    fn tenant_data_cannot_break_out_of_the_uri() {
        assert_eq!(
            aor("1001", "sip.example.net").unwrap(),
            "sip:1001@sip.example.net"
        );
        assert_eq!(
            aor("+1 555>\r\nX", "pbx:5080").unwrap(),
            "sip:+1%20555%3E%0D%0AX@pbx:5080"
        );
        assert_eq!(aor("7", "sip:10.0.0.1").unwrap(), "sip:7@10.0.0.1");
        assert_eq!(
            aor("7", "[2001:db8::2]:5060").unwrap(),
            "sip:7@[2001:db8::2]:5060"
        );
        for bad in [
            "",
            "pbx\r\nX: y",
            "pbx:0",
            "pbx:x",
            "a b",
            "[zz]",
            "-pbx",
            "pbx:5060:1",
        ] {
            assert!(aor("7", bad).is_err(), "{bad:?}");
        }
        assert!(aor("", "pbx").is_err());
    }

    #[test]
    fn every_family_has_an_event_or_a_reason() {
        for f in Family::ALL {
            let e = event(*f);
            assert!(e.is_ok() || *f == Family::CiscoSep, "{f}");
        }
        assert_eq!(event(Family::CiscoMpp), Ok("resync"));
    }

    #[test]
    fn responses_are_matched_by_top_via_branch_and_cseq() {
        let r = parse_response(
            b"SIP/2.0 404 Not Found\r\nv: SIP/2.0/UDP 10.0.0.1:5060;rport=5;branch=z9hG4bKx, SIP/2.0/UDP b;branch=z9hG4bKy\r\nVia: SIP/2.0/UDP c;branch=z9hG4bKz\r\nCSeq: 1 NOTIFY\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(
            r,
            Response {
                status: 404,
                reason: "Not Found".into(),
                branch: "z9hG4bKx".into(),
                method: "NOTIFY".into()
            }
        );
        // Header names are case-insensitive, compact forms too.
        let upper = parse_response(
            b"SIP/2.0 200 OK\r\nV: SIP/2.0/UDP a;branch=z9hG4bKu\r\nVia: SIP/2.0/UDP b;branch=z9hG4bKv\r\ncseq: 1 notify\r\n\r\n",
        )
        .unwrap();
        assert_eq!(upper.branch, "z9hG4bKu");
        for bad in [
            &b"NOTIFY sip:a@b SIP/2.0\r\nVia: x;branch=y\r\nCSeq: 1 NOTIFY\r\n\r\n"[..],
            b"SIP/2.0 99 Odd\r\nVia: x;branch=y\r\nCSeq: 1 NOTIFY\r\n\r\n",
            b"SIP/2.0 200 OK\r\nCSeq: 1 NOTIFY\r\n\r\n",
            b"SIP/2.0 200 OK\r\nVia: x;branch=y\r\n\r\n",
            b"\xff\xfe",
            b"",
        ] {
            assert!(parse_response(bad).is_none(), "{bad:?}");
        }
    }

    /// A top Via without a branch is another hop's: a branch in a Via
    /// below it, in the same header or the next, is not taken for ours.
    #[test]
    fn a_branch_below_the_top_via_is_not_ours() {
        for below in [
            &b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP proxy;rport\r\nVia: SIP/2.0/UDP us;branch=z9hG4bKours\r\nCSeq: 1 NOTIFY\r\n\r\n"[..],
            b"SIP/2.0 200 OK\r\nv: SIP/2.0/UDP proxy, SIP/2.0/UDP us;branch=z9hG4bKours\r\nCSeq: 1 NOTIFY\r\n\r\n",
            b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP proxy;received=10.0.0.1\r\nCSeq: 1 NOTIFY\r\nVia: SIP/2.0/UDP us;branch=z9hG4bKours\r\n\r\n",
        ] {
            assert!(parse_response(below).is_none(), "{:?}", String::from_utf8_lossy(below));
        }
    }

    /// A byte that is not UTF-8 costs only itself: the answer stays one.
    #[test]
    fn a_stray_latin1_byte_keeps_the_answer() {
        let r = parse_response(
            b"SIP/2.0 481 Transacci\xf3n\x07 Does Not Exist\r\nServer: T\xe9l\xe9phone\r\nVia: SIP/2.0/UDP a;branch=z9hG4bKl1\r\nCSeq: 1 NOTIFY\r\n\r\n\xff",
        )
        .unwrap();
        assert_eq!(
            r,
            Response {
                status: 481,
                reason: "Transacci\u{FFFD}n Does Not Exist".into(),
                branch: "z9hG4bKl1".into(),
                method: "NOTIFY".into()
            }
        );
        let long = [
            &b"SIP/2.0 500 "[..],
            &[0xe9; 300],
            b"\r\nVia: x;branch=b\r\nCSeq: 1 NOTIFY\r\n\r\n",
        ]
        .concat();
        let r = parse_response(&long).unwrap();
        assert_eq!(r.reason.chars().count(), MAX_REASON);
    }
}
