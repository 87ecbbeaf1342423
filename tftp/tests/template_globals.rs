//! The check a template passes before it is stored refuses MiniJinja's
//! `debug()`, as any unknown function: it printed the render context in
//! MiniJinja's internal format, which changes between its versions. The
//! other built-in globals still work.

mod common;

use common::*;
use dialtone_sync::Family;
use dialtone_tftp::ProvisionError;

#[tokio::test]
async fn the_check_refuses_debug_and_keeps_namespace_and_dict() {
    let f = Fixture::new().await;
    let state = f.mirror.load();
    let sample = state
        .phone_by_mac(&"001565000001".parse().unwrap())
        .unwrap();
    let check = |body: &str| {
        f.provisioner
            .check_template(Family::Yealink, "{mac}.cfg", body, Some(sample))
    };
    match check("#!version:1.0.0.1\n{{ debug() }}\n") {
        Err(ProvisionError::Render { line, message, .. }) => {
            assert_eq!(line, Some(2), "{message}");
            assert!(message.contains("unknown function"), "{message}");
        }
        other => panic!("expected a template error, got {other:?}"),
    }
    let kept = check("{{ namespace(n=lines | length).n }} {{ dict(a='b').a }}\n").unwrap();
    assert_eq!(String::from_utf8(kept).unwrap(), "2 b\n");
}
