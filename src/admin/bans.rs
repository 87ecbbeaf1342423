//! Provisioning bans on this node: listed and lifted by global admins.
//! Bans live in each node's memory (a node bans what it sees), so these
//! routes answer for the node that serves the request; an operator lifting
//! an office's ban asks each node it fetches from.

use std::net::IpAddr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dialtone_tftp::guard::{source_key, source_text};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::{ApiError, ApiPath, ErrorBody};
use super::{AdminState, Principal};

/// Bans listed in one answer; a node holds at most `ban_max_sources`.
const LISTED: usize = 1000;

#[derive(Serialize, ToSchema)]
pub struct BanView {
    /// An IPv4 address, or an IPv6 /64 (`2001:db8:1:2::/64`): IPv6 sources
    /// are banned a /64 at a time.
    pub source: String,
    /// Seconds until the ban ends by itself.
    pub seconds_left: u64,
}

#[derive(Serialize, ToSchema)]
pub struct BanList {
    /// The newest first; at most 1,000.
    pub bans: Vec<BanView>,
    /// Sources this node has banned now, listed or not.
    pub total: usize,
}

#[utoipa::path(get, operation_id = "bans_list", path = "/v1/bans", tag = "bans",
    responses((status = 200, body = BanList), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AdminState>,
    principal: Principal,
) -> Result<Response, ApiError> {
    principal.require_global()?;
    let (bans, total) = state.provisioner.guard().bans(LISTED);
    let bans = bans
        .into_iter()
        .map(|ban| BanView {
            source: source_text(ban.source),
            // Rounded up, as a 429's Retry-After is: a ban with 0.4 s left
            // is not over.
            seconds_left: ban.left.as_secs() + u64::from(ban.left.subsec_nanos() > 0),
        })
        .collect();
    Ok(axum::Json(BanList { bans, total }).into_response())
}

#[utoipa::path(delete, operation_id = "bans_lift", path = "/v1/bans/{source}", tag = "bans",
    params(("source" = String, Path, description = "an address, or an IPv6 /64 as listed (the slash as %2F)", example = "192.0.2.7")),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn lift(
    State(state): State<AdminState>,
    principal: Principal,
    ApiPath(source): ApiPath<String>,
) -> Result<Response, ApiError> {
    principal.require_global()?;
    let address = parse_source(&source)?;
    let named = source_text(source_key(address));
    if !state.provisioner.guard().lift_ban(address) {
        return Err(ApiError::not_found(format!(
            "a ban of {named} on this node"
        )));
    }
    // Not the ban's own target: a reader of JSON logs that blocks on
    // `dialtone::ban` events would block the address just lifted. A
    // firewall's block (fail2ban) is lifted there, not here.
    tracing::warn!(
        target: "dialtone::ban_lifted",
        "provisioning: ban of {named} lifted by {}",
        principal.actor()
    );
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// An address, or an IPv6 network of exactly /64 as the list names it.
fn parse_source(text: &str) -> Result<IpAddr, ApiError> {
    let refuse = || {
        ApiError::bad_request(
            "source: give an IPv4 or IPv6 address, or an IPv6 /64 as GET /v1/bans lists it",
        )
    };
    if text.len() > 64 {
        return Err(refuse());
    }
    match text.split_once('/') {
        None => text.parse().map_err(|_| refuse()),
        Some((address, "64")) => match address.parse() {
            Ok(IpAddr::V6(v6)) => Ok(IpAddr::V6(v6)),
            _ => Err(refuse()),
        },
        Some(_) => Err(refuse()),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_source;

    /// The shipped fail2ban filter against the ban lines as the node logs
    /// them, from a file and through journald: it takes a ban from HTTP
    /// misses (an IPv6 one as its /64) and nothing else, not a ban TFTP
    /// misses helped cause, a lift, or the ban text inside another line.
    #[test]
    fn the_shipped_fail2ban_filter_matches_only_unforgeable_bans() {
        let filter = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/packaging/fail2ban/filter.d/dialtone.conf"
        ))
        .unwrap();
        let failregex = filter
            .lines()
            .find_map(|l| l.strip_prefix("failregex = "))
            .expect("a failregex line");
        // fail2ban's <SUBNET>: an address, with a prefix length or not.
        let pattern = failregex.replace("<SUBNET>", r"(?P<host>[0-9A-Fa-f:.]+(?:/\d+)?)");
        let regex = regex::Regex::new(&pattern).unwrap();
        let ban = std::time::Duration::from_secs(600);
        let line = |source: &str, forgeable| {
            dialtone_tftp::guard::ban_line(source.parse().unwrap(), ban, forgeable)
        };
        let stamp = "2026-12-07T03:32:05.092922Z";
        // fail2ban cuts a file line's timestamp (its datepattern) first.
        let in_file = |message: &str| format!("  WARN {message}");
        let in_journal = |message: &str| format!("prov1 dialtone[4242]: {stamp}  WARN {message}");
        let host = |text: &str| regex.captures(text).map(|c| c["host"].to_string());
        for (source, want) in [
            ("192.0.2.7", "192.0.2.7"),
            ("2001:db8:1:2::", "2001:db8:1:2::/64"),
        ] {
            for text in [
                in_file(&line(source, false)),
                in_journal(&line(source, false)),
            ] {
                assert_eq!(host(&text).as_deref(), Some(want), "{text}");
            }
        }
        let forged = line("203.0.113.77", false);
        for text in [
            in_file(&line("192.0.2.8", true)),
            in_journal(&line("192.0.2.8", true)),
            in_file("provisioning: ban of 192.0.2.7 lifted by token:1 (ops)"),
            format!("  INFO refused TFTP path path=\"../{forged}\" reason=\"colon\""),
            format!(
                "  WARN directory source failed tenant=1 source=\"x\\u{{2028}}  WARN {forged}\""
            ),
            in_journal(&format!(
                "directory source failed source=\"x  WARN {forged}\""
            )),
        ] {
            assert_eq!(host(&text), None, "{text}");
        }
    }

    #[test]
    fn sources_are_addresses_or_listed_ipv6_networks() {
        assert_eq!(parse_source("192.0.2.7").unwrap().to_string(), "192.0.2.7");
        assert_eq!(
            parse_source("2001:db8:1:2::/64").unwrap().to_string(),
            "2001:db8:1:2::"
        );
        assert!(parse_source("2001:db8::1").is_ok());
        for bad in [
            "192.0.2.0/24",
            "192.0.2.7/64",
            "2001:db8::/48",
            "acme",
            "",
            "1.2.3.4/",
        ] {
            assert!(parse_source(bad).is_err(), "{bad}");
        }
    }
}
