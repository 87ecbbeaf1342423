//! A render out of time says as much about the machine (busy, stalled) as
//! about the template: it is never remembered as the answer for its
//! inputs, and never counted as a cached file gone wrong.

use std::time::Duration;

use dialtone_sync::{Row, TemplateScope};

use crate::cache_tests::{dataset, template, Fixture, FILE};
use crate::engine::Budget;
use crate::error::ProvisionError;
use crate::provision::Request;

fn request() -> Request<'static> {
    Request {
        path: FILE,
        ..Default::default()
    }
}

/// A render that gets none of its time (a stall) fails the fetch it was
/// for, and only that one: the next fetch renders.
#[test]
fn a_render_out_of_time_fails_only_its_own_fetch() {
    let mut f = Fixture::new(dataset());
    f.provisioner.options.budget.time = Duration::ZERO;
    let stalled = f.provisioner.provision(&request());
    assert!(
        stalled.as_ref().is_err_and(ProvisionError::is_out_of_time),
        "{stalled:?}"
    );
    f.provisioner.options.budget.time = Budget::default().time;
    assert!(f.get(FILE).contains("Reception"));
    // What the template decides is still remembered.
    f.apply(vec![Row::Template(template(
        40,
        TemplateScope::Tenant,
        "1",
        "{{ throw(message=\"broken\") }}",
        1,
    ))]);
    let broken = f.provisioner.provision(&request());
    assert!(matches!(broken, Err(ProvisionError::Render { .. })));
    let state = f.mirror.load();
    let generation = f.provisioner.shipped.load().generation;
    let key = crate::render_cache::RenderKey {
        family: dialtone_sync::Family::Yealink,
        file: FILE.into(),
        phone: Some(1),
        model: None,
        directory: None,
    };
    let remembered = f
        .provisioner
        .rendered
        .failed(&key, &state, generation, Some("T46S"));
    assert!(remembered.is_some(), "{broken:?}");
}

/// The self-check's render out of time neither counts the cached file
/// stale (operators alert on it) nor drops it.
#[test]
fn the_self_check_does_not_count_a_render_out_of_time_as_stale() {
    let mut f = Fixture::new(dataset());
    let served = f.get(FILE);
    f.provisioner.options.budget.time = Duration::ZERO;
    let stalled = f.provisioner.self_check(100);
    assert_eq!((stalled.compared, stalled.stale), (0, 0), "{stalled:?}");
    assert_eq!(f.provisioner.cached_files(), 1);
    f.provisioner.options.budget.time = Budget::default().time;
    let checked = f.provisioner.self_check(100);
    assert_eq!((checked.compared, checked.stale), (1, 0), "{checked:?}");
    assert_eq!(f.get(FILE), served);
}
