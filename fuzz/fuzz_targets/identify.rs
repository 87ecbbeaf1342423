//! Identification and path handling take anything a network peer sends.
//! Input: a request path, optionally a NUL and a User-Agent. Beyond "no
//! panic", the answers must keep their promises.
#![no_main]

use dialtone_tftp::{identify, parse_user_agent, sanitize_path, IdentifyError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (path, ua) = match text.split_once('\0') {
        Some((p, u)) => (p, Some(u)),
        None => (text, None),
    };
    if let Some(ua) = ua {
        if let Some(parsed) = parse_user_agent(ua) {
            if let Some(mac) = parsed.mac {
                assert_ne!(mac.0, [0; 6], "the all-zero MAC is nobody");
            }
        }
    }
    match sanitize_path(path) {
        Ok(segments) => {
            for s in &segments {
                assert!(!s.is_empty() && *s != "." && *s != "..", "{path:?} -> {segments:?}");
                assert!(!s.contains('/') && !s.contains('\\') && !s.contains('\0'));
            }
        }
        Err(_) => {}
    }
    match identify(path, ua) {
        Ok(id) => {
            // Whatever was accepted names a plain file inside the root.
            assert!(!id.file.is_empty() && !id.file.contains('/') && !id.file.contains(".."), "{path:?}");
            if let Some(mac) = id.mac {
                assert_ne!(mac.0, [0; 6]);
            }
            if let Some(family) = id.family {
                assert!(id.candidates.contains(&family));
            }
        }
        Err(IdentifyError::NotFound | IdentifyError::BadPath(_)) => {}
    }
});
