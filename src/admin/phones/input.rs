//! A phone's body as sent, checked and turned into what the store writes.

use std::sync::Arc;

use dialtone_sync::store::{LineInput, PhoneInput};
use dialtone_sync::{checks, Family, Line, Mac, Phone, Purpose, Tenant};

use super::{unchanged, PhoneBody};
use crate::admin::error::ApiError;
use crate::admin::quotas::Quota;
use crate::admin::{object_text, parse_name, AdminState};

/// Turns a request body into the mutation's input, keeping stored secrets
/// the body leaves out.
pub(super) fn input(
    state: &AdminState,
    tenant: &Tenant,
    mac: Mac,
    body: PhoneBody,
    before: Option<(&Phone, &[Arc<Line>])>,
    stored: Option<(&Phone, &[Arc<Line>])>,
) -> Result<PhoneInput, ApiError> {
    let family: Family = parse_name(&body.family)?;
    let open = |purpose, sealed: &dialtone_sync::Sealed| {
        state
            .key
            .open(purpose, sealed)
            .map_err(|e| ApiError::internal(format!("cannot open a stored secret of {mac}: {e}")))
    };
    check_text(&body, stored, |sealed| open(Purpose::LinePassword, sealed))?;
    let kept = |given: Option<String>,
                stored: Option<&dialtone_sync::Sealed>,
                purpose|
     -> Result<Option<String>, ApiError> {
        match (given, stored) {
            (Some(given), _) if given.is_empty() => Ok(None),
            (Some(given), _) => Ok(Some(given)),
            (None, Some(sealed)) => open(purpose, sealed).map(Some),
            (None, None) => Ok(None),
        }
    };
    let http_password_given = body.http_password.is_some();
    let http_password = kept(
        body.http_password,
        before.and_then(|(p, _)| p.http_password.as_ref()),
        Purpose::DeviceHttpPassword,
    )?;
    let mut lines = Vec::with_capacity(body.lines.len());
    for (index, line) in body.lines.into_iter().enumerate() {
        let position = index as i32 + 1;
        if line.extension.trim().is_empty() || line.registrar.trim().is_empty() {
            return Err(ApiError::invalid(format!(
                "line {position}: extension and registrar are required"
            )));
        }
        let stored = before
            .and_then(|(_, lines)| lines.iter().find(|l| l.position == position))
            .and_then(|l| l.password.as_ref());
        lines.push(LineInput {
            auth_user: line.auth_user.unwrap_or_else(|| line.extension.clone()),
            // Blank too, as an import's empty cell: a phone's screen
            // showing nothing for its line helps nobody.
            display_name: line
                .display_name
                .filter(|name| !name.trim().is_empty())
                .unwrap_or_else(|| line.extension.clone()),
            extension: line.extension,
            password: kept(line.password, stored, Purpose::LinePassword)?,
            registrar: line.registrar,
            proxy: line.proxy.filter(|p| !p.is_empty()),
            settings: object_text(line.settings, &format!("line {position} settings"))?,
        });
    }
    let http_user = body.http_user.filter(|u| !u.is_empty());
    // An import trims it: a blank user would come back as none, and the
    // phone's export as a row no import takes (a password without a user).
    // One stored so by an older release may be sent back as it is.
    let stored_user = stored.and_then(|(p, _)| p.http_user.as_deref());
    if http_user
        .as_deref()
        .is_some_and(|u| u.trim() != u && Some(u) != stored_user)
    {
        return Err(ApiError::invalid(
            "http_user must not start or end with spaces",
        ));
    }
    // The password is kept when left out, the user is not: an edit that
    // left both out would have kept the password alone, and opened the
    // phone. Said so, with how to remove the credentials.
    if http_user.is_none() && http_password.is_some() && !http_password_given {
        return Err(ApiError::invalid(
            "http_user: required while the phone has an HTTP password; send it again, \
             or remove the credentials with \"http_password\": \"\"",
        ));
    }
    checks::http_login(http_user.as_deref(), http_password.as_deref())
        .map_err(|r| ApiError::invalid(r.reason))?;
    let variables = object_text(body.variables, "variables")?;
    // Per phone, not only per object: 48 lines of 64 KiB settings each made
    // a phone of 2 MiB (the request body's cap), 40 GB at the phones quota
    // on every node, and a page of them far more once parsed for a list.
    let json_bytes = variables.len() + lines.iter().map(|l| l.settings.len()).sum::<usize>();
    state
        .quotas
        .check(tenant, Quota::PhoneJsonBytes, json_bytes as u64)?;
    Ok(PhoneInput {
        tenant: body.tenant,
        mac,
        family,
        model: body.model.filter(|m| !m.is_empty()),
        label: body.label.filter(|l| !l.is_empty()),
        variables,
        http_user,
        http_password,
        lines,
    })
}

/// The body as sent: a secret it leaves out is kept as stored, not
/// checked again. A value sent back as it is stored (the phone's now, the
/// line's at the same position) passes the checks newer than the stored
/// row ([`unchanged`]).
fn check_text(
    body: &PhoneBody,
    stored: Option<(&Phone, &[Arc<Line>])>,
    open: impl Fn(&dialtone_sync::Sealed) -> Result<String, ApiError>,
) -> Result<(), ApiError> {
    use unchanged::{as_checked, host, shown, sip_user};
    fn kept<'a>(
        sent: Option<&'a str>,
        stored: Option<&str>,
        newer: fn(char) -> bool,
    ) -> Option<std::borrow::Cow<'a, str>> {
        sent.map(|sent| as_checked(sent, stored, newer))
    }
    let label = kept(
        body.label.as_deref(),
        stored.and_then(|(p, _)| p.label.as_deref()),
        shown,
    );
    let phone = checks::PhoneText {
        model: body.model.as_deref(),
        label: label.as_deref(),
        http_user: body.http_user.as_deref(),
        http_password: body.http_password.as_deref(),
    };
    phone.check().map_err(|r| ApiError::invalid(r.reason))?;
    for (index, l) in body.lines.iter().enumerate() {
        let was =
            stored.and_then(|(_, lines)| (lines.iter()).find(|s| s.position == index as i32 + 1));
        // Opened only for a password the check would refuse: most
        // edits send none, or one with nothing to waive.
        let password = match (l.password.as_deref(), was.and_then(|w| w.password.as_ref())) {
            (Some(sent), Some(sealed)) if sent.chars().any(shown) => Some(open(sealed)?),
            _ => None,
        };
        let extension = as_checked(&l.extension, was.map(|w| &*w.extension), sip_user);
        let registrar = as_checked(&l.registrar, was.map(|w| &*w.registrar), host);
        // A name or user left out takes the extension (`input`): checked as
        // that field's new value, so a stored extension cannot carry what
        // the field's own checks refuse into it.
        let display_name = (l.display_name.as_deref())
            .filter(|name| !name.trim().is_empty())
            .unwrap_or(&l.extension);
        let display_name = as_checked(display_name, was.map(|w| &*w.display_name), shown);
        let auth_user = l.auth_user.as_deref().unwrap_or(&l.extension);
        let auth_user = as_checked(auth_user, was.map(|w| &*w.auth_user), sip_user);
        let sent_password = kept(l.password.as_deref(), password.as_deref(), shown);
        let proxy = kept(
            l.proxy.as_deref(),
            was.and_then(|w| w.proxy.as_deref()),
            host,
        );
        let line = checks::LineText {
            extension: &extension,
            display_name: Some(&display_name),
            auth_user: Some(&auth_user),
            password: sent_password.as_deref(),
            registrar: &registrar,
            proxy: proxy.as_deref(),
        };
        line.check().map_err(|r| ApiError::invalid(r.reason))?;
    }
    Ok(())
}
