//! A phones CSV that leaves a column out keeps what is stored for it: a
//! relabelling file does not wipe passwords or lines. A new phone or line
//! takes the defaults. JSON phones are still stated whole (the export
//! leaves defaults out). On SQLite and PostgreSQL.

#[macro_use]
mod common;

use common::*;
use dialtone_sync::crypto::Purpose;
use dialtone_sync::import::plan_text;
use dialtone_sync::model::{Dataset, Line, Phone};
use dialtone_sync::store::{Store, WriteReport};
use dialtone_sync::testing::{test_key, TestDb};
use dialtone_sync::*;

const FULL: &str = "\
tenant,mac,family,model,label,variables,http_user,http_password,line,extension,display_name,auth_user,password,registrar,proxy,line_settings
acme,001565000001,yealink,T46S,Reception,\"{\"\"a\"\":1}\",admin,web-1,1,101,Front desk,u101,pw-101,sip.example.net,proxy.example.net,\"{\"\"b\"\":2}\"
acme,001565000001,yealink,T46S,Reception,\"{\"\"a\"\":1}\",admin,web-1,2,102,Back office,u102,pw-102,sip.example.net,,
acme,001565000002,yealink,T46S,Lobby,,admin,web-2,1,201,Lobby,u201,pw-201,sip.example.net,,
acme,001565000002,yealink,T46S,Lobby,,admin,web-2,2,202,Lobby 2,u202,pw-202,sip.example.net,,
";

async fn import(store: &dyn Store, json: bool, text: &str) -> WriteReport {
    let mut plan = plan_text("test", json, text);
    assert!(plan.errors.is_empty(), "{:?}", plan.errors);
    store
        .apply(&plan.take_mutations(), &audit("import"))
        .await
        .unwrap()
}

fn phone(data: &Dataset, mac: &str) -> Phone {
    let mac: model::Mac = mac.parse().unwrap();
    data.phones.iter().find(|p| p.mac == mac).unwrap().clone()
}

fn lines(data: &Dataset, phone: &Phone) -> Vec<Line> {
    let mut lines: Vec<Line> = (data.lines.iter())
        .filter(|l| l.phone_id == phone.id)
        .cloned()
        .collect();
    lines.sort_by_key(|l| l.position);
    lines
}

fn opened(purpose: Purpose, sealed: &Option<crypto::Sealed>) -> Option<String> {
    sealed
        .as_ref()
        .map(|s| test_key().open(purpose, s).unwrap())
}

/// What a line holds, its password opened.
fn line_text(
    l: &Line,
) -> (
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    String,
) {
    (
        l.extension.to_string(),
        l.display_name.to_string(),
        l.auth_user.to_string(),
        opened(Purpose::LinePassword, &l.password),
        l.proxy.as_deref().map(str::to_string),
        l.settings.to_string(),
    )
}

fn text(s: &str) -> String {
    s.to_string()
}

both_backends!(csv_columns_left_out_keep_what_is_stored, csv_body);
async fn csv_body(db: TestDb) {
    let store = db.store().await;
    store
        .apply(&[tenant("acme", "US")], &audit("setup"))
        .await
        .unwrap();
    import(&*store, false, FULL).await;
    let before = db_rows(&*store).await;
    let one = phone(&before, "001565000001");
    let one_lines: Vec<_> = lines(&before, &one).iter().map(line_text).collect();

    // Relabel one phone and add another: no line columns, no passwords.
    let relabel = "tenant,mac,family,label\n\
                   acme,001565000001,yealink,Main reception\n\
                   acme,001565000003,yealink,New desk\n";
    let report = import(&*store, false, relabel).await;
    assert_eq!(
        (report.phones.updated, report.phones.inserted),
        (1, 1),
        "{report:?}"
    );
    assert_eq!(
        (report.lines.deleted, report.lines.updated),
        (0, 0),
        "{report:?}"
    );
    let after = db_rows(&*store).await;
    let kept = phone(&after, "001565000001");
    assert_eq!(kept.label.as_deref(), Some("Main reception"));
    assert_eq!(kept.model.as_deref(), Some("T46S"));
    assert_eq!(&*kept.variables, r#"{"a":1}"#);
    assert_eq!(kept.http_user.as_deref(), Some("admin"));
    assert_eq!(
        opened(Purpose::DeviceHttpPassword, &kept.http_password).as_deref(),
        Some("web-1")
    );
    let kept_lines: Vec<_> = lines(&after, &kept).iter().map(line_text).collect();
    assert_eq!(kept_lines, one_lines, "lines changed by a file without any");
    let new = phone(&after, "001565000003");
    assert_eq!(
        (
            new.model.clone(),
            new.http_password.clone(),
            &*new.variables
        ),
        (None, None, "{}")
    );
    assert!(lines(&after, &new).is_empty());
    // The same file again writes nothing.
    let again = import(&*store, false, relabel).await;
    assert_eq!(again.changed(), 0, "{again:?}");

    // Line columns without passwords: a line keeps its password, auth
    // user, proxy and settings while its extension stays; a line whose
    // extension changes is another account and takes the defaults (the
    // old account's password must not follow it); a new line takes the
    // defaults; a line list is still whole when the file gives lines, so
    // phone 2's second line goes.
    let extensions = "tenant,mac,family,line,extension,registrar,display_name\n\
                      acme,001565000001,yealink,1,101,sip.example.net,Front desk 2\n\
                      acme,001565000001,yealink,2,112,sip.example.net,Back office\n\
                      acme,001565000001,yealink,3,113,sip.example.net,\n\
                      acme,001565000002,yealink,1,201,sip.example.net,Lobby\n";
    let report = import(&*store, false, extensions).await;
    assert_eq!(
        (
            report.lines.updated,
            report.lines.inserted,
            report.lines.deleted
        ),
        (2, 1, 1),
        "{report:?}"
    );
    let after = db_rows(&*store).await;
    let kept = phone(&after, "001565000001");
    assert_eq!(kept.label.as_deref(), Some("Main reception"));
    assert_eq!(
        opened(Purpose::DeviceHttpPassword, &kept.http_password).as_deref(),
        Some("web-1")
    );
    let got: Vec<_> = lines(&after, &kept).iter().map(line_text).collect();
    let proxy = Some(text("proxy.example.net"));
    assert_eq!(
        got,
        [
            (
                text("101"),
                text("Front desk 2"),
                text("u101"),
                Some(text("pw-101")),
                proxy,
                text(r#"{"b":2}"#)
            ),
            (
                text("112"),
                text("Back office"),
                text("112"),
                None,
                None,
                text("{}")
            ),
            (
                text("113"),
                text("113"),
                text("113"),
                None,
                None,
                text("{}")
            ),
        ]
    );
    let two = phone(&after, "001565000002");
    let got: Vec<_> = lines(&after, &two).iter().map(line_text).collect();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].3.as_deref(), Some("pw-201"));
    let again = import(&*store, false, extensions).await;
    assert_eq!(again.changed(), 0, "{again:?}");

    // A column given empty still clears.
    let cleared = "tenant,mac,family,label,http_password\n\
                   acme,001565000001,yealink,Main reception,\n";
    import(&*store, false, cleared).await;
    let after = db_rows(&*store).await;
    assert_eq!(phone(&after, "001565000001").http_password, None);
    // And a whole file imports as before: its own state, every field.
    import(&*store, false, FULL).await;
    let restored = db_rows(&*store).await;
    let one = phone(&restored, "001565000001");
    assert_eq!(one.label.as_deref(), Some("Reception"));
    let got: Vec<_> = lines(&restored, &one).iter().map(line_text).collect();
    assert_eq!(got, one_lines);

    // A phone moved to another tenant keeps nothing its old tenant stored:
    // not its credentials, variables or lines (a file without line
    // columns), nor its lines' passwords (a file with lines but no
    // `password`).
    store
        .apply(&[tenant("globex", "US")], &audit("setup"))
        .await
        .unwrap();
    let moved = "tenant,mac,family,label\n\
                 globex,001565000001,yealink,Globex lobby\n";
    import(&*store, false, moved).await;
    let with_lines = "tenant,mac,family,line,extension,registrar\n\
                      globex,001565000002,yealink,1,201,sip.example.net\n";
    import(&*store, false, with_lines).await;
    let after = db_rows(&*store).await;
    let one = phone(&after, "001565000001");
    assert_eq!(one.label.as_deref(), Some("Globex lobby"));
    assert_eq!(
        (
            &one.model,
            &one.http_user,
            &one.http_password,
            &*one.variables
        ),
        (&None, &None, &None, "{}"),
        "the old tenant's fields followed the phone"
    );
    assert!(
        lines(&after, &one).is_empty(),
        "the old tenant's lines followed"
    );
    let two = phone(&after, "001565000002");
    let got: Vec<_> = lines(&after, &two).iter().map(line_text).collect();
    assert_eq!(
        got,
        [(
            text("201"),
            text("201"),
            text("201"),
            None,
            None,
            text("{}")
        )],
        "the old tenant's line fields followed"
    );
    import(&*store, false, FULL).await;

    // A JSON phone is stated whole: the export leaves defaults out, so a
    // key left out there is the default, not "as stored".
    let json = r#"{"phones": [{"tenant": "acme", "mac": "001565000001", "family": "yealink"}]}"#;
    import(&*store, true, json).await;
    let after = db_rows(&*store).await;
    let one = phone(&after, "001565000001");
    assert_eq!((&one.label, &one.http_password), (&None, &None));
    assert!(lines(&after, &one).is_empty());
}
