//! The demo tenant: one phone of each vendor family, with lines, and a small
//! directory in the messy number formats real directories hold. Seeding is
//! an upsert, so running it again changes nothing; passwords are derived
//! from the installation's secret key, so they are stable yet not guessable.

use anyhow::{Context, Result};
use dialtone_sync::store::{DirectoryEntryInput, LineInput, PhoneInput, TenantInput, WriteReport};
use dialtone_sync::{Audit, DirectoryNumber, Family, Mutation, SecretKey, Store};

pub const TENANT: &str = "demo";
const REGISTRAR: &str = "sip.demo.example.net";

pub struct DemoPhone {
    /// A real vendor OUI, so identification by OUI is exercised.
    pub mac: &'static str,
    pub family: Family,
    pub model: &'static str,
    pub label: &'static str,
    pub extensions: &'static [&'static str],
}

pub struct DemoContact {
    pub id: &'static str,
    pub name: &'static str,
    pub company: &'static str,
    /// (kind, number), in the messy formats directories hold.
    pub numbers: &'static [(&'static str, &'static str)],
}

const fn phone(
    mac: &'static str,
    family: Family,
    model: &'static str,
    label: &'static str,
    extensions: &'static [&'static str],
) -> DemoPhone {
    DemoPhone {
        mac,
        family,
        model,
        label,
        extensions,
    }
}

const fn contact(
    id: &'static str,
    name: &'static str,
    company: &'static str,
    numbers: &'static [(&'static str, &'static str)],
) -> DemoContact {
    DemoContact {
        id,
        name,
        company,
        numbers,
    }
}

pub const PHONES: &[DemoPhone] = &[
    phone(
        "00:15:65:4a:a9:37",
        Family::Yealink,
        "T46S",
        "Reception",
        &["101", "102"],
    ),
    phone(
        "80:5e:c0:12:34:56",
        Family::Yealink,
        "T54W",
        "Sales desk",
        &["103"],
    ),
    phone(
        "00:04:f2:ab:cd:01",
        Family::Poly,
        "VVX 450",
        "Board room",
        &["110"],
    ),
    phone(
        "00:1b:54:aa:00:01",
        Family::CiscoSpa,
        "SPA504G",
        "Warehouse",
        &["120"],
    ),
    phone(
        "00:62:ec:aa:00:02",
        Family::CiscoMpp,
        "CP-8841-3PCC",
        "Support",
        &["121", "122"],
    ),
    phone(
        "00:1b:54:aa:00:03",
        Family::CiscoSep,
        "CP-7941G",
        "Lobby",
        &["123"],
    ),
    phone(
        "00:0b:82:8a:a8:72",
        Family::Grandstream,
        "GXP2135",
        "Accounts",
        &["130"],
    ),
    phone(
        "00:04:13:92:2d:24",
        Family::Snom,
        "D785",
        "Engineering",
        &["140"],
    ),
    phone(
        "0c:38:3e:1a:2b:3c",
        Family::Fanvil,
        "X4",
        "Kitchen",
        &["150"],
    ),
];

pub const DIRECTORY: &[DemoContact] = &[
    contact(
        "d1",
        "Alice Example",
        "Example Corp",
        &[("work", "+1 (555) 010-1234"), ("mobile", "555.010.1299")],
    ),
    contact(
        "d2",
        "Bob Sample",
        "Sample Ltd",
        &[("work", "0044 1632 960123")],
    ),
    contact(
        "d3",
        "Carol Placeholder",
        "Acme Pty",
        &[("work", "02 5550 1234")],
    ),
    contact("d4", "Dave Fictional", "", &[("home", "(555) 010-0042")]),
];

pub fn mutations(key: &SecretKey) -> Result<Vec<Mutation>> {
    let mut out = vec![Mutation::UpsertTenant(TenantInput {
        slug: TENANT.into(),
        name: "Demo Company".into(),
        default_region: "US".into(),
        settings: serde_json::json!({
            "ntp_server": "pool.ntp.org",
            "timezone": "America/New_York",
            // The zone's standard offset, as TEMPLATES.md asks of it.
            "utc_offset": "-5",
            "sip_domains": [REGISTRAR],
        })
        .to_string(),
    })];
    for DemoPhone {
        mac,
        family,
        model,
        label,
        extensions,
    } in PHONES
    {
        out.push(Mutation::UpsertPhone(PhoneInput {
            tenant: TENANT.into(),
            mac: mac.parse().with_context(|| format!("demo MAC {mac}"))?,
            family: *family,
            model: Some((*model).into()),
            label: Some((*label).into()),
            variables: "{}".into(),
            http_user: None,
            http_password: None,
            lines: extensions
                .iter()
                .map(|ext| LineInput {
                    extension: (*ext).into(),
                    display_name: format!("{label} {ext}"),
                    auth_user: format!("demo{ext}"),
                    password: Some(key.derive(&format!("demo-line-{ext}"), 16)),
                    registrar: REGISTRAR.into(),
                    proxy: None,
                    settings: "{}".into(),
                })
                .collect(),
        }));
    }
    for DemoContact {
        id,
        name,
        company,
        numbers,
    } in DIRECTORY
    {
        out.push(Mutation::UpsertDirectoryEntry(DirectoryEntryInput {
            tenant: TENANT.into(),
            external_id: (*id).into(),
            name: (*name).into(),
            company: (!company.is_empty()).then(|| (*company).into()),
            numbers: numbers
                .iter()
                .map(|(kind, number)| DirectoryNumber {
                    number: (*number).into(),
                    kind: (*kind).into(),
                })
                .collect(),
        }));
    }
    Ok(out)
}

pub async fn seed(store: &dyn Store, key: &SecretKey) -> Result<WriteReport> {
    let audit = Audit {
        tenant: None,
        actor: "cli".into(),
        action: "demo.seed".into(),
        entity: "tenant".into(),
        entity_key: TENANT.into(),
        detail: serde_json::json!({ "phones": PHONES.len(), "directory_entries": DIRECTORY.len() }),
    };
    store
        .apply(&mutations(key)?, &audit)
        .await
        .context("seeding the demo tenant")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_every_family_with_real_ouis() {
        let key = SecretKey::parse(&"ab".repeat(32)).unwrap();
        let m = mutations(&key).unwrap();
        for family in Family::ALL {
            assert!(
                m.iter()
                    .any(|x| matches!(x, Mutation::UpsertPhone(p) if p.family == *family)),
                "no demo phone for {family}"
            );
        }
        // Stable across runs, so re-seeding changes nothing.
        assert_eq!(m, mutations(&key).unwrap());
    }
}
