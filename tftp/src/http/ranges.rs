//! What part of a static file a request asks for (`Range`, RFC 9110
//! 14.2, under `If-Range`, 13.1.5), the answer with it, and the file's
//! `Last-Modified` date. One
//! range only: a phone or a download manager resuming an image asks for
//! one, and several would be a multipart body for nobody; those get the
//! whole file, as the RFC lets a server answer any `Range` it ignores.

use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::static_file::Opened;

/// The answer a static file's request gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Wanted {
    Whole,
    /// `len` bytes from `start`, both inside the file.
    Part {
        start: u64,
        len: u64,
    },
    /// No byte of the file is in the range: 416.
    Unsatisfiable,
}

impl Opened {
    /// The answer to a GET (or HEAD) of the file: the whole of it, the
    /// one range `headers` ask for, or 416. Its tag and caching are the
    /// caller's.
    pub(super) fn response(
        self,
        content_type: &'static str,
        headers: &HeaderMap,
        asked: &str,
        remote: IpAddr,
    ) -> Response {
        let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
        let full = self.len;
        let modified = last_modified(self.modified, SystemTime::now());
        let wanted = wanted(
            text(header::RANGE),
            text(header::IF_RANGE),
            &self.etag,
            full,
        );
        let part = |opened: Opened, status, start, len| {
            let headers = [
                (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                (header::CONTENT_LENGTH, HeaderValue::from(len)),
            ];
            (status, headers, opened.body(start, len, asked, remote)).into_response()
        };
        let mut response = match wanted {
            Wanted::Whole => part(self, StatusCode::OK, 0, full),
            Wanted::Part { start, len } => {
                let mut response = part(self, StatusCode::PARTIAL_CONTENT, start, len);
                let range = format!("bytes {start}-{}/{full}", start + len - 1);
                if let Ok(range) = HeaderValue::from_str(&range) {
                    response.headers_mut().insert(header::CONTENT_RANGE, range);
                }
                response
            }
            Wanted::Unsatisfiable => (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{full}"))],
                "range not satisfiable\n",
            )
                .into_response(),
        };
        let headers = response.headers_mut();
        headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
        if let Some(Ok(date)) = modified.map(|d| HeaderValue::from_str(&d)) {
            headers.insert(header::LAST_MODIFIED, date);
        }
        response
    }
}

/// The part of a file of `len` bytes, tagged `etag`, that `range` asks
/// for. An `If-Range` that is not our tag (another file's, or a date,
/// which has only whole seconds and is weaker than the tag) gets the
/// whole file: a resumed download must not join two files' bytes.
pub(super) fn wanted(range: Option<&str>, if_range: Option<&str>, etag: &str, len: u64) -> Wanted {
    let Some(range) = range else {
        return Wanted::Whole;
    };
    // Our tag is marked weak (`statics::validator`), where RFC 9110 has
    // If-Range compare strongly; but it is the tag a 304 already trusts
    // for the same bytes, so a client sending it back whole gets its part.
    if if_range.is_some_and(|tag| tag.trim() != etag) {
        return Wanted::Whole;
    }
    let Some((unit, spec)) = range.split_once('=') else {
        return Wanted::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return Wanted::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Wanted::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // `-N`: the last N bytes.
        let Some(suffix) = number(last) else {
            return Wanted::Whole;
        };
        return match suffix.min(len) {
            0 => Wanted::Unsatisfiable,
            n => Wanted::Part {
                start: len - n,
                len: n,
            },
        };
    }
    let Some(start) = number(first) else {
        return Wanted::Whole;
    };
    // `A-` up to the end; `A-B` with B past the end up to it too.
    let end = if last.is_empty() {
        len
    } else {
        match number(last) {
            Some(last) if last >= start => last.saturating_add(1).min(len),
            _ => return Wanted::Whole,
        }
    };
    if start >= len {
        return Wanted::Unsatisfiable;
    }
    Wanted::Part {
        start,
        len: end - start,
    }
}

/// Digits only (no sign, no space inside); past `u64` is as good as
/// `u64::MAX`, which no file reaches.
fn number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.bytes().fold(0u64, |n, b| {
        n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

/// `at` as an HTTP date (IMF-fixdate, RFC 9110 5.6.7); `None` before 1970.
/// A file's time as `Last-Modified` says it: never after the answer's own
/// time (RFC 9110 8.8.2.1), as a file unpacked or copied from a host whose
/// clock ran ahead would have it.
fn last_modified(modified: Option<SystemTime>, now: SystemTime) -> Option<String> {
    http_date(modified?.min(now))
}

pub(super) fn http_date(at: SystemTime) -> Option<String> {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = at.duration_since(UNIX_EPOCH).ok()?.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    Some(format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
    ))
}

/// Year, month (1..=12) and day of the `days`th day after 1970-01-01, in
/// the proleptic Gregorian calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const TAG: &str = "W/\"64-1.2\"";

    fn of_100(range: &str) -> Wanted {
        wanted(Some(range), None, TAG, 100)
    }

    #[test]
    fn one_range_is_a_part_of_the_file() {
        let part = |start, len| Wanted::Part { start, len };
        assert_eq!(of_100("bytes=10-19"), part(10, 10));
        assert_eq!(of_100("bytes=0-0"), part(0, 1));
        assert_eq!(of_100("BYTES = 90-"), part(90, 10));
        assert_eq!(of_100("bytes=90-500"), part(90, 10));
        assert_eq!(of_100("bytes=-10"), part(90, 10));
        assert_eq!(of_100("bytes=-500"), part(0, 100));
        assert_eq!(of_100("bytes=0-99999999999999999999999"), part(0, 100));
    }

    #[test]
    fn a_range_past_the_end_is_unsatisfiable() {
        for range in [
            "bytes=100-",
            "bytes=100-200",
            "bytes=-0",
            "bytes=99999999999999999999-",
        ] {
            assert_eq!(of_100(range), Wanted::Unsatisfiable, "{range}");
        }
        assert_eq!(
            wanted(Some("bytes=-1"), None, TAG, 0),
            Wanted::Unsatisfiable
        );
    }

    /// Several ranges, other units and anything malformed: the whole file.
    #[test]
    fn what_is_not_one_byte_range_is_the_whole_file() {
        for range in [
            "bytes=0-1,5-6",
            "bytes=0-1, 5-6",
            "items=0-1",
            "bytes=5-1",
            "bytes=a-b",
            "bytes=1-x",
            "bytes=+1-2",
            "bytes=-",
            "bytes 0-1",
            "bytes=",
        ] {
            assert_eq!(of_100(range), Wanted::Whole, "{range}");
        }
        assert_eq!(wanted(None, None, TAG, 100), Wanted::Whole);
    }

    #[test]
    fn if_range_other_than_our_tag_is_the_whole_file() {
        let part = Wanted::Part { start: 0, len: 10 };
        assert_eq!(wanted(Some("bytes=0-9"), Some(TAG), TAG, 100), part);
        for other in [
            "W/\"64-1.3\"",
            "\"64-1.2\"",
            "Thu, 01 Jan 1970 00:00:01 GMT",
        ] {
            assert_eq!(
                wanted(Some("bytes=0-9"), Some(other), TAG, 100),
                Wanted::Whole,
                "{other}"
            );
        }
    }

    #[test]
    fn dates_are_imf_fixdates() {
        let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(http_date(at(0)).unwrap(), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            http_date(at(784_111_777)).unwrap(),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(
            http_date(at(951_782_400)).unwrap(),
            "Tue, 29 Feb 2000 00:00:00 GMT"
        );
        assert_eq!(
            http_date(at(1_700_000_000)).unwrap(),
            "Tue, 14 Nov 2023 22:13:20 GMT"
        );
        assert_eq!(http_date(UNIX_EPOCH - Duration::from_secs(1)), None);
    }

    #[test]
    fn a_file_time_ahead_is_said_as_now() {
        let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
        let now = at(1_700_000_000);
        assert_eq!(
            last_modified(Some(at(2_000_000_000)), now).unwrap(),
            "Tue, 14 Nov 2023 22:13:20 GMT"
        );
        assert_eq!(
            last_modified(Some(at(951_782_400)), now).unwrap(),
            "Tue, 29 Feb 2000 00:00:00 GMT"
        );
        assert_eq!(last_modified(None, now), None);
    }
}
