//! The demo tenant: one phone of each vendor family, with lines, and a small
//! directory in the messy number formats real directories hold. Seeding is
//! an upsert, so running it again changes nothing; passwords are derived
//! from the installation's secret key, so they are stable yet not guessable.
//! The demo's MACs are real vendors' (so identification by OUI is
//! exercised), so a seed refuses to take a phone another tenant holds, or
//! a tenant `demo` it did not make.

use anyhow::{bail, Context, Result};
use dialtone_sync::store::{
    DirectoryEntryInput, LineInput, PhoneInput, Target, TenantInput, WriteReport,
};
use dialtone_sync::{
    etag_of, phone_etag, Audit, DirectoryNumber, Family, Mac, Mirror, MirrorState, Mutation,
    SecretKey, Store, SyncError, Tenant,
};

pub const TENANT: &str = "demo";
/// With its phones, what tells the seed's own tenant from a customer's
/// that happens to be called `demo`.
const NAME: &str = "Demo Company";
/// Rows a refusal names before it only counts them: it stays one line.
const NAMED_AT_MOST: usize = 5;
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
        name: NAME.into(),
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

/// The seed as one write that takes nothing that is not the demo's,
/// planned from `state`: a phone nobody holds is created (a create fails
/// if the MAC was taken since `state` was read), and what the demo holds
/// is expected as read (the write fails if it changed since). Refused,
/// naming the rows, when a demo MAC is another tenant's, or when a tenant
/// `demo` exists that the seed did not make.
fn plan(state: &MirrorState, key: &SecretKey) -> Result<Vec<Mutation>> {
    let demo = state.tenant_by_slug(TENANT);
    let mut refusals: Vec<String> = demo
        .and_then(|tenant| not_made_by_seed(state, tenant))
        .into_iter()
        .collect();
    let mut taken = Vec::new();
    let mut planned = Vec::new();
    for mutation in mutations(key)? {
        match mutation {
            Mutation::UpsertTenant(_) => {
                if let Some(tenant) = demo {
                    planned.push(Mutation::Expect {
                        target: Target::Tenant {
                            slug: TENANT.into(),
                        },
                        etag: etag_of(&**tenant),
                    });
                }
                planned.push(mutation);
            }
            Mutation::UpsertPhone(phone) => match state.phone_by_mac(&phone.mac) {
                None => planned.push(Mutation::CreatePhone(phone)),
                Some(held) if demo.is_some_and(|t| t.id == held.tenant_id) => {
                    planned.push(Mutation::Expect {
                        target: Target::Phone { mac: phone.mac },
                        etag: phone_etag(held, &state.lines_of(held.id)),
                    });
                    planned.push(Mutation::UpsertPhone(phone));
                }
                Some(held) => {
                    let owner = state
                        .tenant(held.tenant_id)
                        .map_or("?", |t| &*t.slug)
                        .to_string();
                    taken.push(format!("{} (tenant {owner})", held.mac));
                }
            },
            other => planned.push(other),
        }
    }
    if !taken.is_empty() {
        refusals.push(format!(
            "demo phones held by other tenants: {}",
            taken.join(", ")
        ));
    }
    if !refusals.is_empty() {
        bail!(
            "refusing to seed the demo tenant: {}; nothing was written",
            refusals.join("; ")
        );
    }
    Ok(planned)
}

/// Why `tenant` (slug `demo`) is not the seed's own, if it is not: a
/// name other than the seed's, or a phone the demo does not have.
fn not_made_by_seed(state: &MirrorState, tenant: &Tenant) -> Option<String> {
    let foreign: Vec<String> = state
        .phones_of(tenant.id)
        .filter(|p| {
            !PHONES
                .iter()
                .any(|d| d.mac.parse::<Mac>().is_ok_and(|m| m == p.mac))
        })
        .map(|p| p.mac.to_string())
        .collect();
    if &*tenant.name == NAME && foreign.is_empty() {
        return None;
    }
    let mut why = format!(
        "tenant {TENANT} exists and is not the seed's (named {:?}",
        &*tenant.name
    );
    if !foreign.is_empty() {
        let named = foreign[..foreign.len().min(NAMED_AT_MOST)].join(", ");
        why.push_str(&format!(", with phones not of the demo: {named}"));
        if foreign.len() > NAMED_AT_MOST {
            why.push_str(&format!(" and {} more", foreign.len() - NAMED_AT_MOST));
        }
    }
    why.push(')');
    Some(why)
}

/// `dialtone demo`: the seed planned from the database as it is now.
pub async fn seed(store: &dyn Store, key: &SecretKey) -> Result<WriteReport> {
    let mirror = Mirror::new();
    dialtone_sync::watcher::full_load(&mirror, store)
        .await
        .context("reading the database before seeding the demo tenant")?;
    seed_over(store, key, &mirror.load()).await
}

/// Seeds as planned from `state`, a read of the database (a node's mirror).
pub async fn seed_over(
    store: &dyn Store,
    key: &SecretKey,
    state: &MirrorState,
) -> Result<WriteReport> {
    let planned = plan(state, key)?;
    let audit = Audit {
        tenant: None,
        actor: "cli".into(),
        action: "demo.seed".into(),
        entity: "tenant".into(),
        entity_key: TENANT.into(),
        detail: serde_json::json!({ "phones": PHONES.len(), "directory_entries": DIRECTORY.len() }),
    };
    match store.apply(&planned, &audit).await {
        Ok(report) => Ok(report),
        // The plan's own checks, failing on what changed since the read.
        Err(SyncError::Taken(row) | SyncError::Conflict(row)) => bail!(
            "refusing to seed the demo tenant: {row} changed since it was read; nothing was written"
        ),
        Err(e) => Err(e).context("seeding the demo tenant"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dialtone_sync::Backend;

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

    /// The check and the write are one decision: a demo MAC another tenant
    /// took after the read (created there, or moved there from the demo)
    /// fails the seed, which then writes nothing.
    #[tokio::test]
    async fn a_phone_taken_after_the_read_stays_taken() {
        for backend in [Backend::Sqlite, Backend::Postgres] {
            taken_after_the_read(backend).await;
        }
    }

    async fn taken_after_the_read(backend: Backend) {
        use dialtone_sync::testing::{build, test_key, TestDb};
        let db = TestDb::new(backend).await;
        let store = db.store().await;
        let key = test_key();
        let read = || async {
            let mirror = Mirror::new();
            dialtone_sync::watcher::full_load(&mirror, &*store)
                .await
                .unwrap();
            mirror.load()
        };
        let mac: Mac = PHONES[0].mac.parse().unwrap();
        let to_acme = |mac: Mac| {
            let Mutation::UpsertPhone(mut phone) = build::phone("acme", 1, 0) else {
                unreachable!("build::phone is an upsert")
            };
            phone.mac = mac;
            [build::tenant("acme", "US"), Mutation::UpsertPhone(phone)]
        };
        let owner = |state: &MirrorState, mac: &Mac| {
            let phone = state.phone_by_mac(mac).unwrap();
            state.tenant(phone.tenant_id).unwrap().slug.to_string()
        };

        let before = read().await;
        store
            .apply(&to_acme(mac), &build::audit("t"))
            .await
            .unwrap();
        let refused = seed_over(&*store, &key, &before).await.unwrap_err();
        assert!(
            refused.to_string().contains("phone 0015654aa937 changed"),
            "{refused:#}"
        );
        let after = read().await;
        assert!(after.tenant_by_slug(TENANT).is_none());
        assert_eq!(owner(&after, &mac), "acme");

        // Seeded, then one of the demo's phones moved away after the read.
        let other: Mac = PHONES[1].mac.parse().unwrap();
        store
            .apply(&[Mutation::DeletePhone { mac }], &build::audit("t"))
            .await
            .unwrap();
        seed(&*store, &key).await.unwrap();
        let seeded = read().await;
        store
            .apply(&to_acme(other), &build::audit("t"))
            .await
            .unwrap();
        let refused = seed_over(&*store, &key, &seeded).await.unwrap_err();
        assert!(refused.to_string().contains("changed"), "{refused:#}");
        assert_eq!(owner(&*read().await, &other), "acme");
    }
}
