//! Per-device HTTP credentials: a phone with an `http_user` or an
//! `http_password` is served only to a client that proves its password,
//! Digest over HTTP, Digest or Basic over HTTPS. Decided inside
//! `provision()`, from the phone it already looked up, after admission, so
//! the password is opened only for a request that would otherwise be served.

use dialtone_sync::{Phone, Purpose};

use crate::digest::{secrets_match, Verdict};
use crate::error::ProvisionError;
use crate::provision::{Protocol, Provisioner, Request};

/// What an HTTP request brings to prove who it is.
#[derive(Clone, Copy, Debug, Default)]
pub struct HttpAuth<'a> {
    /// The `Authorization` header, if any.
    pub authorization: Option<&'a str>,
    /// The method and request target the client signed (Digest).
    pub method: &'a str,
    /// The target's path and query.
    pub target: &'a str,
    /// The target as sent, when absolute (`http://host/file.cfg`): RFC
    /// 7616 has the client sign the request-target as sent, yet some sign
    /// only its path. Either is accepted; both name the file served.
    pub absolute_target: Option<&'a str>,
}

impl Provisioner {
    /// `Ok` when `phone` needs no credentials for `request` or they check
    /// out; otherwise the 401 to answer (stale: the nonce only expired).
    pub(crate) fn check_device(
        &self,
        phone: &Phone,
        request: &Request<'_>,
    ) -> Result<(), ProvisionError> {
        // What its sources are known under (`known.rs`), before anything
        // may record one for this request.
        self.guard().known().note(phone);
        if !needs_credentials(phone) {
            return Ok(());
        }
        // Half a login would open to the other half alone (a MAC is no
        // secret): such a phone is locked instead, whichever half it has.
        // The checks refuse it; a CSV that leaves out one login column
        // keeps the stored half unchecked and could still write one.
        let user = phone.http_user.as_deref().unwrap_or_default();
        let sealed = phone.http_password.as_ref().filter(|_| !user.is_empty());
        let auth = match request.protocol {
            // The operator's own review tool.
            Protocol::Render => return Ok(()),
            // TFTP cannot carry credentials (admission already refused it).
            Protocol::Tftp => return Err(ProvisionError::NotFound),
            Protocol::Http | Protocol::Https => request.auth.unwrap_or_default(),
        };
        // Answered like a wrong password, unchecked: the guess is spent.
        // Not charged as a miss: the source cannot have been wrong, and the
        // phone of an office that moved while its credentials were closed
        // retried its right password until the new address was banned,
        // and with it the office's phones not yet known there.
        if let (Some(ip), Some(_)) = (request.remote, auth.authorization) {
            if !self.guard().may_try_credentials(ip, phone) {
                metrics::counter!("dialtone_provisioning_credential_tries_refused_total")
                    .increment(1);
                return Err(ProvisionError::Unauthorized {
                    stale: false,
                    unchecked: true,
                });
            }
        }
        let password = match sealed {
            // The server's fault, not the phone's (a node still running
            // with the key a `dialtone rekey` replaced, or a damaged
            // value): answered as a failure to provision, never opened up,
            // and charged to nobody. As a wrong password, every honest
            // login of the office would count toward banning its address.
            Some(sealed) => Some(self.key.open(Purpose::DeviceHttpPassword, sealed).map_err(
                |e| ProvisionError::Data(format!("phone {} HTTP password: {e}", phone.mac)),
            )?),
            // Half a login (above): nothing can match.
            None => None,
        };
        let verdict = match (
            password,
            auth.authorization.and_then(|a| a.strip_prefix("Basic ")),
        ) {
            (None, _) => Verdict::Denied,
            // Basic sends the password itself: only inside TLS.
            (Some(password), Some(basic)) if request.protocol == Protocol::Https => {
                basic_verdict(basic, user, &password)
            }
            (Some(_), Some(_)) => Verdict::Denied,
            (Some(password), None) => self.digest().verify(
                request.remote,
                auth.authorization,
                auth.method,
                &[auth.target, auth.absolute_target.unwrap_or(auth.target)],
                user,
                &password,
            ),
        };
        match verdict {
            Verdict::Ok => Ok(()),
            Verdict::Stale => Err(ProvisionError::Unauthorized {
                stale: true,
                unchecked: false,
            }),
            // Still refused, but answered with a fresh nonce and no miss:
            // the password was right, and phones replay honestly (a retry
            // after a 503 whose count `decide` had already taken, or after
            // a response cut off, parallel requests on one nonce arriving
            // out of order), many of them behind one address. Charged as a
            // wrong answer, those added up to a ban of the office. A
            // replayer gains nothing: it cannot answer the fresh nonce.
            Verdict::Replay => {
                metrics::counter!("dialtone_provisioning_digest_replays_total").increment(1);
                Err(ProvisionError::Unauthorized {
                    stale: true,
                    unchecked: false,
                })
            }
            verdict => {
                // A request with no credentials is the normal first step of
                // Digest; only a wrong answer counts toward a ban (in
                // `conclude`, with every other miss).
                // Per tenant, naming the phone: one tenant's stale
                // passwords (or a guesser of its MACs) must not hide
                // another's line, and support looks a phone up by its MAC.
                static FAILED_LOG: dialtone_sync::TenantLogLimit =
                    dialtone_sync::TenantLogLimit::new();
                if auth.authorization.is_some() {
                    if let Some(skipped) = FAILED_LOG.allow(phone.tenant_id) {
                        let state = self.mirror.load();
                        let tenant = state.tenant(phone.tenant_id).map(|t| t.slug.clone());
                        tracing::info!(
                            remote = ?request.remote,
                            mac = %phone.mac,
                            tenant = tenant.as_deref().unwrap_or("?"),
                            path = &*dialtone_sync::log_text(request.path),
                            ?verdict,
                            skipped,
                            "device authentication failed (logged at most once a second per tenant)"
                        );
                    }
                }
                Err(ProvisionError::Unauthorized {
                    stale: false,
                    unchecked: false,
                })
            }
        }
    }
}

/// Whether `phone` is served only to who proves its credentials: it has
/// either half of a login (both, unless written around the checks).
pub(crate) fn needs_credentials(phone: &Phone) -> bool {
    phone.http_user.is_some() || phone.http_password.is_some()
}

fn basic_verdict(encoded: &str, user: &str, password: &str) -> Verdict {
    use base64::Engine;
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return Verdict::Denied;
    };
    let expected = format!("{user}:{password}");
    if secrets_match(&decoded, expected.as_bytes()) {
        Verdict::Ok
    } else {
        Verdict::Denied
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn basic(credentials: &str) -> Verdict {
        let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
        basic_verdict(&encoded, "phone1", "s3cret")
    }

    /// The comparison's timing cannot be tested; its verdicts can: a wrong
    /// password of the right length, of another, or a prefix of the right
    /// one, is refused.
    #[test]
    fn basic_passes_only_the_exact_login() {
        assert_eq!(basic("phone1:s3cret"), Verdict::Ok);
        for wrong in [
            "phone1:s3creT",
            "phone1:s3cret2",
            "phone1:s3cre",
            "phone1:",
            "phone2:s3cret",
            "",
        ] {
            assert_eq!(basic(wrong), Verdict::Denied, "{wrong:?}");
        }
        assert_eq!(
            basic_verdict("not base64!", "phone1", "s3cret"),
            Verdict::Denied
        );
    }
}
