//! Database URLs as they may be shown: in errors, `check-config`, logs.

/// What a password is shown as.
const MASK: &str = "********";

/// `url` with its secrets masked: the password of the user part, and the
/// value of every query parameter named like a password (`password`,
/// `sslpassword`, in any case). A URL that does not parse (or has no
/// host) keeps nothing between `://` (or the scheme's `:`) and its last
/// `@`, and has its query masked the same way. A URL with nothing to mask
/// is returned as given.
pub fn masked_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.has_host() => {
            let mut changed = false;
            if parsed.password().is_some() && parsed.set_password(Some(MASK)).is_ok() {
                changed = true;
            }
            if parsed.query_pairs().any(|(key, _)| names_a_secret(&key)) {
                let pairs: Vec<(String, String)> = parsed
                    .query_pairs()
                    .map(|(key, value)| {
                        let value = if names_a_secret(&key) {
                            MASK.to_string()
                        } else {
                            value.into_owned()
                        };
                        (key.into_owned(), value)
                    })
                    .collect();
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
                changed = true;
            }
            if changed {
                parsed.to_string()
            } else {
                url.to_string()
            }
        }
        _ => masked_text(url),
    }
}

fn names_a_secret(key: &str) -> bool {
    key.to_ascii_lowercase().contains("password")
}

/// [`masked_url`] for text that is no URL, by position alone.
fn masked_text(url: &str) -> String {
    let start = match url.find("://") {
        Some(at) => at + 3,
        None => url.find(':').map_or(0, |at| at + 1),
    };
    let (head, rest) = url.split_at(start);
    let (shown, rest) = match rest.rfind('@') {
        Some(at) => (format!("{head}{MASK}@"), &rest[at + 1..]),
        None => (head.to_string(), rest),
    };
    let Some((path, query)) = rest.split_once('?') else {
        return format!("{shown}{rest}");
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if names_a_secret(key) => format!("{key}={MASK}"),
            _ => pair.to_string(),
        })
        .collect();
    format!("{shown}{path}?{}", query.join("&"))
}

#[cfg(test)]
mod tests {
    use super::masked_url;

    #[test]
    fn passwords_are_masked_wherever_the_url_has_them() {
        for (given, shown) in [
            (
                "postgres://dialtone:hunter2@db.example.net/dialtone",
                "postgres://dialtone:********@db.example.net/dialtone",
            ),
            // In the query, as libpq and sqlx take it.
            (
                "postgres://u@db/x?password=s3cret",
                "postgres://u@db/x?password=********",
            ),
            (
                "postgresql://u@db/x?sslmode=require&PassWord=s3cret&sslpassword=s3cret",
                "postgresql://u@db/x?sslmode=require&PassWord=********&sslpassword=********",
            ),
            // An `@` in the password: none of it is left.
            ("postgres://u:p@ss@db/x", "postgres://u:********@db/x"),
            // A mistyped scheme is still a URL.
            ("postgress://u:pw@db/x", "postgress://u:********@db/x"),
            // Not a URL (the port): everything up to the last `@` goes.
            (
                "postgres://u:p@ss@db:99999/x?password=s3cret",
                "postgres://********@db:99999/x?password=********",
            ),
            ("postgres:u:pw@db", "postgres:********@db"),
            ("u:pw@db", "u:********@db"),
            // Nothing to mask: as given.
            ("sqlite://./dialtone.db", "sqlite://./dialtone.db"),
            ("sqlite::memory:", "sqlite::memory:"),
            (
                "sqlite:///var/lib/dialtone/d.db?mode=rwc",
                "sqlite:///var/lib/dialtone/d.db?mode=rwc",
            ),
            (
                "postgres://db.example.net/dialtone",
                "postgres://db.example.net/dialtone",
            ),
        ] {
            assert_eq!(masked_url(given), shown, "{given}");
        }
    }

    /// sqlx logs a parameter it ignores with its value, so one it would
    /// ignore is refused, named, with the value left out.
    #[test]
    fn a_parameter_the_driver_ignores_is_refused_without_its_value() {
        let err = crate::store::backend_of("postgres://u@db/x?sslmode=require&sslpassword=s3cret")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"sslpassword\"") && !err.contains("s3cret"),
            "{err}"
        );
        for known in [
            "postgres://u:pw@db/x?sslmode=verify-full&sslrootcert=/etc/ca.pem&application_name=a",
            "postgresql:///x?host=/run/postgresql&options[statement_timeout]=5s",
        ] {
            assert!(crate::store::backend_of(known).is_ok(), "{known}");
        }
    }

    #[test]
    fn an_unsupported_url_is_named_masked() {
        let err = crate::store::backend_of("postgress://u:pw@db/x")
            .unwrap_err()
            .to_string();
        assert!(err.contains("postgress://u:********@db/x"), "{err}");
        assert!(!err.contains("pw@"), "{err}");
    }
}
