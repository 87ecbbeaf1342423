//! Each event exactly one line, in either log format, whatever its fields
//! hold.

use std::borrow::Cow;
use std::io::{self, Write};

use dialtone_sync::checks::is_format;
use tracing_subscriber::fmt::MakeWriter;

/// Writes each event as exactly one line. Fields the text format prints
/// with `%` come out as they are, and some are tenants' text (a source's
/// name, its server's error): a newline in one would start a line of the
/// tenant's choosing, such as the `ban` lines fail2ban reads. So would
/// U+2028, U+2029 or a C1 control (NEL) to a reader that splits on
/// Unicode line breaks, and a bidi control makes a line show as other
/// text. In text, every control character but the event's final newline
/// is escaped, and every format character (Cf) and Unicode line break;
/// the JSON format escapes C0 itself and may carry the rest raw, so there
/// those are escaped the JSON way, valid inside its strings (the only
/// place non-ASCII text can be). (The fmt layer writes an event with one
/// `write_all`.)
pub(super) struct OneLine<W> {
    inner: W,
    style: Style,
}

#[derive(Clone, Copy)]
enum Style {
    /// `keep_escape`: the terminal's colour sequences (ESC), when the
    /// layer writes them.
    Text {
        keep_escape: bool,
    },
    Json,
}

impl Style {
    fn escaped_byte(self, byte: u8) -> bool {
        match self {
            Style::Text { keep_escape } => {
                (byte < 0x20 && byte != b'\t' && !(keep_escape && byte == 0x1b)) || byte == 0x7f
            }
            Style::Json => byte == 0x7f,
        }
    }

    fn escaped_char(self, c: char) -> bool {
        if c.is_ascii() {
            return self.escaped_byte(c as u8);
        }
        c.is_control() || is_format(c) || matches!(c, '\u{2028}' | '\u{2029}')
    }

    fn escape(self, c: char, line: &mut Vec<u8>) {
        match (self, c) {
            (Style::Text { .. }, '\n') => line.extend_from_slice(b"\\n"),
            (Style::Text { .. }, '\r') => line.extend_from_slice(b"\\r"),
            (Style::Text { .. }, c) if c.is_ascii() => {
                let _ = write!(line, "\\x{:02x}", c as u8);
            }
            (Style::Text { .. }, c) => {
                let _ = write!(line, "\\u{{{:04x}}}", u32::from(c));
            }
            (Style::Json, c) => {
                for unit in c.encode_utf16(&mut [0; 2]) {
                    let _ = write!(line, "\\u{unit:04x}");
                }
            }
        }
    }
}

impl<W: Write> Write for OneLine<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (body, end) = match buf.strip_suffix(b"\n") {
            Some(body) => (body, &b"\n"[..]),
            None => (buf, &b""[..]),
        };
        let style = self.style;
        if body.iter().all(|&b| b.is_ascii() && !style.escaped_byte(b)) {
            self.inner.write_all(buf)?;
            return Ok(buf.len());
        }
        // The fmt layer writes text; anything else is shown, not passed on.
        let text = match std::str::from_utf8(body) {
            Ok(text) if !text.chars().any(|c| style.escaped_char(c)) => {
                self.inner.write_all(buf)?;
                return Ok(buf.len());
            }
            Ok(text) => Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(body),
        };
        let mut line = Vec::with_capacity(buf.len() + 16);
        for c in text.chars() {
            if style.escaped_char(c) {
                style.escape(c, &mut line);
            } else {
                let mut utf8 = [0; 4];
                line.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
            }
        }
        line.extend_from_slice(end);
        self.inner.write_all(&line)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

pub(super) struct OneLineMaker<M> {
    inner: M,
    style: Style,
}

impl<M> OneLineMaker<M> {
    pub(super) fn text(inner: M, keep_escape: bool) -> OneLineMaker<M> {
        OneLineMaker {
            inner,
            style: Style::Text { keep_escape },
        }
    }

    pub(super) fn json(inner: M) -> OneLineMaker<M> {
        OneLineMaker {
            inner,
            style: Style::Json,
        }
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for OneLineMaker<M> {
    type Writer = OneLine<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        OneLine {
            inner: self.inner.make_writer(),
            style: self.style,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OneLineMaker;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Captured {
        type Writer = Captured;
        fn make_writer(&'a self) -> Captured {
            self.clone()
        }
    }

    fn text_log(log: impl FnOnce()) -> String {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_target(false)
            .with_writer(OneLineMaker::text(captured.clone(), false))
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        captured.text()
    }

    /// Every way text is split into lines: `\n` and the rest of
    /// `str::lines`, Python's `splitlines` (what fail2ban-like readers
    /// use), and Unicode's line breaks.
    fn split_every_way(text: &str) -> Vec<&str> {
        text.split(|c: char| {
            matches!(
                c,
                '\n' | '\r' | '\u{b}' | '\u{c}' | '\u{1c}'
                    ..='\u{1e}' | '\u{85}' | '\u{2028}' | '\u{2029}'
            )
        })
        .filter(|l| !l.is_empty())
        .collect()
    }

    /// A tenant's source named with a newline and a fail2ban-shaped line
    /// stays inside its own log line.
    #[test]
    fn a_field_with_a_newline_cannot_start_a_line() {
        let name = "x\nprovisioning: ban 198.51.100.7 for 600s\r\x07";
        let text = text_log(|| {
            tracing::warn!(source = %name, "directory source failed");
            tracing::warn!("second");
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].contains(r"source=x\nprovisioning: ban 198.51.100.7 for 600s\r\x07"),
            "{text}"
        );
        assert!(!lines.iter().any(|l| l.starts_with("provisioning")));
    }

    /// A reader that splits on Unicode line breaks saw a line starting
    /// `WARN provisioning: ban ...` in a source's name; a bidi override
    /// made a line show as other text. Both are escaped, named by code.
    #[test]
    fn unicode_line_breaks_and_bidi_controls_are_escaped() {
        let forged = "\u{2028}  WARN provisioning: ban 192.0.2.5 for 600s after repeated misses";
        let names = [
            format!("x{forged}"),
            format!("x\u{2029}\u{85}{forged}"),
            "crm\u{202e}\u{2066}\u{200f}gnissim".to_string(),
        ];
        let text = text_log(|| {
            for name in &names {
                tracing::warn!(source = %name, "directory source failed");
            }
        });
        let lines = split_every_way(&text);
        assert_eq!(lines.len(), names.len(), "{text}");
        assert!(lines.iter().all(|l| l.contains("directory source failed")));
        assert!(lines[0].contains(r"source=x\u{2028}  WARN provisioning: ban"));
        assert!(lines[1].contains(r"source=x\u{2029}\u{0085}\u{2028}"));
        assert!(lines[2].contains(r"source=crm\u{202e}\u{2066}\u{200f}gnissim"));
        // Other text is written as it is.
        let plain = text_log(|| tracing::warn!(source = %"Zürich 東京 ☎", "x"));
        assert!(plain.contains("source=Zürich 東京 ☎"), "{plain}");
    }

    /// The JSON format stays valid JSON, one event a line however it is
    /// split, the text read back as it was.
    #[test]
    fn json_lines_escape_them_too_and_read_back_as_given() {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(OneLineMaker::json(captured.clone()))
            .finish();
        let name = "x\u{2028}WARN provisioning: ban 192.0.2.5\u{85}\u{202e}\u{e0001}\u{7f}";
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(source = %name, "directory source failed");
            tracing::warn!(source = %"Zürich", "second");
        });
        let text = captured.text();
        let lines = split_every_way(&text);
        assert_eq!(lines.len(), 2, "{text}");
        assert!(text.contains(r"\u2028"), "{text}");
        assert!(text.contains(r"\udb40\udc01"), "{text}");
        let event: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(event["fields"]["source"], name);
        let event: serde_json::Value = serde_json::from_str(lines[1]).unwrap();
        assert_eq!(event["fields"]["source"], "Zürich");
    }
}
