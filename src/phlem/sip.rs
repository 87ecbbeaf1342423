//! The little SIP a provisioned phone speaks to its proxy: a REGISTER of its
//! first line, and answers to NOTIFYs asking it to check its configuration.
//! Text in, text out; the sockets are in `sip_phone.rs`.

use std::net::SocketAddr;

/// A parsed SIP message: the start line, the header lines in order (names as
/// sent, values trimmed) and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub start: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// RFC 3261 7.3.3 compact forms, for the headers phlem reads.
fn long_name(name: &str) -> &str {
    match name.to_ascii_lowercase().as_str() {
        "v" => "via",
        "f" => "from",
        "t" => "to",
        "i" => "call-id",
        "o" => "event",
        "l" => "content-length",
        "m" => "contact",
        _ => name,
    }
}

fn same_header(a: &str, b: &str) -> bool {
    long_name(a).eq_ignore_ascii_case(long_name(b))
}

impl Message {
    pub fn parse(bytes: &[u8]) -> Option<Message> {
        let split = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = std::str::from_utf8(&bytes[..split]).ok()?;
        let mut lines = head.split("\r\n");
        let start = lines.next()?.trim().to_string();
        if start.is_empty() {
            return None;
        }
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            // A line starting with white space continues the header before.
            if line.starts_with([' ', '\t']) {
                let (_, value) = headers.last_mut()?;
                value.push(' ');
                value.push_str(line.trim());
                continue;
            }
            let (name, value) = line.split_once(':')?;
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        let body = bytes[split + 4..].to_vec();
        Some(Message {
            start,
            headers,
            body,
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| same_header(n, name))
            .map(|(_, v)| v.as_str())
    }

    /// `Some(method)` for a request, `None` for a response.
    pub fn method(&self) -> Option<&str> {
        if self.start.starts_with("SIP/") {
            return None;
        }
        self.start.split(' ').next()
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        self.start
            .strip_prefix("SIP/2.0 ")?
            .split(' ')
            .next()?
            .parse()
            .ok()
    }

    /// The dialog-free identity of a request: retransmissions share it.
    pub fn transaction(&self) -> Option<(String, String)> {
        Some((
            self.header("call-id")?.to_string(),
            self.header("cseq")?.to_string(),
        ))
    }

    /// The Event header's package and parameters, lowercased
    /// (`check-sync;reboot=true` → `("check-sync", [("reboot", "true")])`).
    pub fn event(&self) -> Option<(String, Vec<(String, String)>)> {
        let value = self.header("event")?.to_ascii_lowercase();
        let mut parts = value.split(';').map(str::trim);
        let package = parts.next()?.to_string();
        let params = parts
            .filter(|p| !p.is_empty())
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
                None => (p.to_string(), String::new()),
            })
            .collect();
        Some((package, params))
    }
}

/// A random token for tags, branches and Call-IDs.
pub fn token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Where and as whom a phone registers: `user@host`, host being the line's
/// registrar (the domain of its address of record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aor {
    pub user: String,
    pub host: String,
}

impl std::str::FromStr for Aor {
    type Err = String;

    fn from_str(s: &str) -> Result<Aor, String> {
        let s = s.strip_prefix("sip:").unwrap_or(s);
        match s.split_once('@') {
            Some((user, host)) if !user.is_empty() && !host.is_empty() => Ok(Aor {
                user: user.to_string(),
                host: host.to_string(),
            }),
            _ => Err(format!("{s:?}: want user@host")),
        }
    }
}

impl std::fmt::Display for Aor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sip:{}@{}", self.user, self.host)
    }
}

/// One REGISTER transaction's identity, kept to match its answer.
pub struct Register {
    pub aor: Aor,
    pub local: SocketAddr,
    pub call_id: String,
    pub from_tag: String,
    pub cseq: u32,
    pub expires: u32,
    pub user_agent: String,
}

impl Register {
    /// The request text, with a fresh branch: build it once per
    /// transaction, as retransmissions must repeat it.
    pub fn request(&self) -> String {
        let Register {
            aor, local, cseq, ..
        } = self;
        format!(
            "REGISTER sip:{host} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK{branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <{aor}>;tag={tag}\r\n\
             To: <{aor}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Contact: <sip:{user}@{local}>\r\n\
             Expires: {expires}\r\n\
             User-Agent: {ua}\r\n\
             Content-Length: 0\r\n\r\n",
            host = aor.host,
            user = aor.user,
            branch = token(),
            tag = self.from_tag,
            call_id = self.call_id,
            expires = self.expires,
            ua = self.user_agent,
        )
    }

    /// Whether `answer` is a final response to this REGISTER.
    pub fn answers(&self, answer: &Message) -> bool {
        answer.status().is_some_and(|s| s >= 200)
            && answer.header("call-id") == Some(self.call_id.as_str())
            && answer.header("cseq") == Some(&format!("{} REGISTER", self.cseq))
    }
}

/// The response to `request`: its Vias (all, in order, as received), From,
/// Call-ID and CSeq, and its To with our tag added when it has none.
pub fn response(
    request: &Message,
    code: u16,
    reason: &str,
    to_tag: &str,
    extra: &[&str],
) -> String {
    let mut out = format!("SIP/2.0 {code} {reason}\r\n");
    for (name, value) in &request.headers {
        let keep = ["via", "from", "call-id", "cseq"]
            .iter()
            .any(|h| same_header(name, h));
        if keep {
            out.push_str(&format!("{name}: {value}\r\n"));
        } else if same_header(name, "to") {
            if value.to_ascii_lowercase().contains(";tag=") {
                out.push_str(&format!("{name}: {value}\r\n"));
            } else {
                out.push_str(&format!("{name}: {value};tag={to_tag}\r\n"));
            }
        }
    }
    for line in extra {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTIFY: &str = "NOTIFY sip:101@127.0.0.1:40000 SIP/2.0\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKproxy.0\r\n\
        v: SIP/2.0/UDP 127.0.0.1:7000;branch=z9hG4bKsender;rport=7000\r\n\
        f: <sip:dialtone@127.0.0.1>;tag=abc\r\n\
        To: <sip:101@sip.example.net>\r\n\
        i: n-1@dialtone\r\n\
        CSeq: 7 NOTIFY\r\n\
        o: Check-Sync; reboot=true\r\n\
        Max-Forwards: 69\r\n\
        Subject: a long\r\n  folded line\r\n\
        l: 0\r\n\r\n";

    #[test]
    fn parses_requests_with_compact_and_folded_headers() {
        let m = Message::parse(NOTIFY.as_bytes()).unwrap();
        assert_eq!(m.method(), Some("NOTIFY"));
        assert_eq!(m.status(), None);
        assert_eq!(m.header("Call-ID"), Some("n-1@dialtone"));
        assert_eq!(m.header("subject"), Some("a long folded line"));
        assert_eq!(
            m.event(),
            Some(("check-sync".into(), vec![("reboot".into(), "true".into())]))
        );
        assert_eq!(
            m.transaction(),
            Some(("n-1@dialtone".into(), "7 NOTIFY".into()))
        );
        assert!(Message::parse(b"NOTIFY sip:x SIP/2.0\r\nVia: x\r\n").is_none());
        assert!(Message::parse(b"NOTIFY sip:x SIP/2.0\r\nno colon\r\n\r\n").is_none());
    }

    #[test]
    fn responses_copy_the_transaction_and_tag_the_to() {
        let m = Message::parse(NOTIFY.as_bytes()).unwrap();
        let text = response(&m, 200, "OK", "t1", &[]);
        let r = Message::parse(text.as_bytes()).unwrap();
        assert_eq!(r.status(), Some(200));
        let vias: Vec<_> = r
            .headers
            .iter()
            .filter(|(n, _)| same_header(n, "via"))
            .collect();
        assert_eq!(vias.len(), 2);
        assert!(vias[0].1.contains("z9hG4bKproxy.0") && vias[1].1.contains("z9hG4bKsender"));
        assert_eq!(r.header("to"), Some("<sip:101@sip.example.net>;tag=t1"));
        assert_eq!(r.header("from"), Some("<sip:dialtone@127.0.0.1>;tag=abc"));
        assert_eq!(r.header("cseq"), Some("7 NOTIFY"));
        assert_eq!(r.header("content-length"), Some("0"));
        assert!(r.header("event").is_none() && r.header("max-forwards").is_none());
        // A To that already has a tag keeps it.
        let tagged = NOTIFY.replace("<sip:101@sip.example.net>", "<sip:101@x>;tag=old");
        let m = Message::parse(tagged.as_bytes()).unwrap();
        let r = response(&m, 489, "Bad Event", "t2", &["Allow-Events: check-sync"]);
        assert!(r.starts_with("SIP/2.0 489 Bad Event\r\n"));
        assert!(r.contains("To: <sip:101@x>;tag=old\r\n") && !r.contains("t2"));
        assert!(r.contains("Allow-Events: check-sync\r\n"));
    }

    #[test]
    fn registers_and_matches_the_answer() {
        let reg = Register {
            aor: "sip:demo101@sip.demo.example.net".parse().unwrap(),
            local: "127.0.0.1:40000".parse().unwrap(),
            call_id: "c1".into(),
            from_tag: "f1".into(),
            cseq: 2,
            expires: 3600,
            user_agent: "Yealink SIP-T46S".into(),
        };
        let m = Message::parse(reg.request().as_bytes()).unwrap();
        assert_eq!(m.start, "REGISTER sip:sip.demo.example.net SIP/2.0");
        assert_eq!(m.header("to"), Some("<sip:demo101@sip.demo.example.net>"));
        assert_eq!(m.header("contact"), Some("<sip:demo101@127.0.0.1:40000>"));
        assert_eq!(m.header("cseq"), Some("2 REGISTER"));
        assert!(m.header("via").unwrap().contains("branch=z9hG4bK"));
        let ok = Message::parse(response(&m, 200, "OK", "x", &[]).as_bytes()).unwrap();
        assert!(reg.answers(&ok));
        let trying = Message::parse(response(&m, 100, "Trying", "x", &[]).as_bytes()).unwrap();
        assert!(!reg.answers(&trying));
        assert!("nobody".parse::<Aor>().is_err() && "@h".parse::<Aor>().is_err());
    }
}
