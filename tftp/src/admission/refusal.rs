//! Why a known phone's file is refused, as its history says it, and the
//! family check that refuses another vendor's phone its file.

use dialtone_sync::{Family, MirrorState, Phone};

use super::Barred;
use crate::identify::Identity;

/// Why a known phone's file is answered as an unknown MAC's, said in its
/// history (the answer itself is "not found" whatever the reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The file name is not one its family uses.
    OtherFamilysName,
    /// Its own file, asked for by a User-Agent of this family, not the one
    /// its record names. A file made for one vendor's phones is no use to
    /// another's, and a Poly reading a Yealink file (a phone created under
    /// the wrong family) otherwise fetched "ok" at every boot while it ran
    /// unconfigured.
    UserAgent(Family),
    /// It has an HTTP login, and TFTP cannot carry one.
    LoginOverTftp,
    /// Asked from where its tenant's phones are not served (such a line is
    /// for global admins only: `Decision::foreign`).
    Source(Barred),
    /// Said as plain "not found": a `/{tenant}/` folder naming another
    /// tenant is not told to this one, nor is a tenant the state lacks.
    Unsaid,
}

impl Refusal {
    /// The history's words after "not-found: ", if any.
    pub(crate) fn history_text(self, phone: &Phone, id: &Identity) -> Option<String> {
        let recorded = phone.family.as_str();
        Some(match self {
            Refusal::OtherFamilysName => {
                let names: Vec<&str> = id.candidates.iter().map(|f| f.as_str()).collect();
                format!(
                    "not a {recorded} file name (it is {}'s)",
                    names.join("'s or ")
                )
            }
            // Anyone who knows the MAC can send any User-Agent, so only a
            // MAC whose vendor prefix is the User-Agent's family makes it a
            // mismatch to fix: a forger must not have the admin "correct"
            // a right record (and lock the real phone out). Otherwise it
            // is said as what it is, a User-Agent of another family.
            Refusal::UserAgent(said)
                if crate::identify::family_by_oui(&phone.mac, Family::ALL) == Some(said) =>
            {
                format!(
                    "{}: recorded as {recorded}, the User-Agent and the MAC's vendor are {}",
                    crate::outcome::FAMILY_MISMATCH,
                    said.as_str()
                )
            }
            Refusal::UserAgent(said) => format!(
                "asked with a {} User-Agent, not a {recorded} one",
                said.as_str()
            ),
            Refusal::LoginOverTftp => {
                "the phone has an HTTP login, which TFTP cannot carry".to_string()
            }
            Refusal::Source(Barred::OutsideItsNetworks) => {
                "from outside its tenant's provisioning networks".to_string()
            }
            Refusal::Source(Barred::AnotherTenantsSite) => {
                "from inside another tenant's site (its tenant sets no provisioning networks)"
                    .to_string()
            }
            Refusal::Unsaid => return None,
        })
    }
}

/// The User-Agent's family, when it is not the one `phone`'s record names
/// and the file is the phone's own (`{mac}.cfg`, `{mac}.xml`, its
/// directory: names several families share, rendered for the record's).
/// Common and static files are the same whoever asks: a User-Agent there
/// only says which phone a common file is made for, and firmware fetched
/// by a mislabelled phone must not cost its office misses. Cisco's
/// families are one another's (the SPA and MPP files are the same
/// `<flat-profile>`, an MPP's User-Agent is the operator's to set, and
/// enterprise phones send none): a User-Agent tells them apart too
/// loosely to refuse a phone for it.
pub(super) fn family_mismatch(id: &Identity, phone: &Phone) -> Option<Family> {
    id.ua_family.filter(|said| {
        *said != phone.family && id.mac_in_path() && !(is_cisco(*said) && is_cisco(phone.family))
    })
}

fn is_cisco(family: Family) -> bool {
    matches!(
        family,
        Family::CiscoSpa | Family::CiscoMpp | Family::CiscoSep
    )
}

/// Logged per tenant, at most once a second: anyone knowing a MAC can send
/// another vendor's User-Agent with it, from the phone's own network.
pub(super) fn refuse_mismatch(state: &MirrorState, phone: &Phone, said: Family) {
    metrics::counter!("dialtone_provisioning_refused_total", "reason" => "family_mismatch")
        .increment(1);
    static MISMATCH_LOG: dialtone_sync::TenantLogLimit = dialtone_sync::TenantLogLimit::new();
    if let Some(skipped) = MISMATCH_LOG.allow(phone.tenant_id) {
        let tenant = state.tenant(phone.tenant_id).map(|t| t.slug.clone());
        tracing::warn!(
            mac = %phone.mac,
            tenant = tenant.as_deref().unwrap_or("?"),
            recorded = phone.family.as_str(),
            user_agent = said.as_str(),
            skipped,
            "a phone's own file was asked for by another family's User-Agent than its record names; not served (if the phone is of that family, correct its record) (logged at most once a second per tenant)"
        );
    }
}
