//! Where a JSON import's elements begin, for errors found after parsing.

/// Where each element of the document's top-level arrays (`tenants`,
/// `phones`, …) begins, as line and byte column from 1, for errors found
/// after parsing (duplicates, database rejections). Read in one pass
/// before serde parses the document (any text is read without fail; the
/// positions of one serde refuses go unused): an element's line was once
/// counted from the start of the text, so a JSON import of 40,000 phones
/// took three minutes, and only a key of the root object names a member
/// (the first `"phones"` anywhere in the text, a tenant's setting say,
/// put every phone at the wrong place).
#[derive(Default)]
pub(super) struct ElementPositions {
    members: Vec<(String, Vec<(u64, u64)>)>,
}

impl ElementPositions {
    pub(super) fn read(text: &str) -> Self {
        let bytes = text.as_bytes();
        let mut members: Vec<(String, Vec<(u64, u64)>)> = Vec::new();
        let (mut line, mut line_start) = (1u64, 0usize);
        let (mut depth, mut in_str) = (0u32, false);
        // The root object's last key, and the array its value is, if any.
        let (mut key_start, mut key, mut array): (usize, Option<&str>, Option<usize>) =
            (0, None, None);
        let mut element_next = false;
        let mut i = 0;
        while i < bytes.len() {
            if in_str {
                // Most of a document is inside strings: jump to what can
                // end one, or a line break to count (a quarter of a
                // re-import's samples went to this loop a byte at a time).
                let Some(k) = memchr::memchr3(b'"', b'\\', b'\n', &bytes[i..]) else {
                    break;
                };
                i += k;
                match bytes[i] {
                    b'\n' => (line, line_start) = (line + 1, i + 1),
                    b'\\' => {
                        // The escaped byte is skipped, but still counted
                        // if it breaks a line.
                        if bytes.get(i + 1) == Some(&b'\n') {
                            (line, line_start) = (line + 1, i + 2);
                        }
                        i += 1;
                    }
                    _ => {
                        in_str = false;
                        if depth == 1 {
                            key = Some(&text[key_start..i]);
                        }
                    }
                }
                i += 1;
                continue;
            }
            let c = bytes[i];
            i += 1;
            if c == b'\n' {
                (line, line_start) = (line + 1, i);
            }
            if c.is_ascii_whitespace() {
                continue;
            }
            if element_next && depth == 2 && c != b']' {
                if let Some(array) = array {
                    members[array]
                        .1
                        .push((line, (i - 1 - line_start) as u64 + 1));
                }
                element_next = false;
            }
            match c {
                b'"' => (in_str, key_start) = (true, i),
                b'[' | b'{' => {
                    depth += 1;
                    if depth == 2 && c == b'[' {
                        members.push((unescape(key.take().unwrap_or_default()), Vec::new()));
                        array = Some(members.len() - 1);
                        element_next = true;
                    }
                }
                b']' | b'}' => {
                    depth = depth.saturating_sub(1);
                    if depth == 1 {
                        array = None;
                    }
                }
                b',' if depth == 2 => element_next = true,
                b',' if depth == 1 => key = None,
                _ => {}
            }
        }
        ElementPositions { members }
    }

    /// The positions of `member`'s elements, taken out.
    pub(super) fn take(&mut self, member: &str) -> Vec<(u64, u64)> {
        (self.members.iter_mut())
            .find(|(name, _)| name == member)
            .map(|(_, positions)| std::mem::take(positions))
            .unwrap_or_default()
    }
}

/// A key as its raw text between quotes, escapes decoded (`"ph\u006fnes"`
/// is the member `phones` to serde too).
fn unescape(raw: &str) -> String {
    if !raw.contains('\\') {
        return raw.to_string();
    }
    serde_json::from_str(&format!("\"{raw}\"")).unwrap_or_default()
}
