//! Which models this deployment has: the ones its phones are recorded as,
//! and the ones a stored model-scope template names. A model-common or
//! boot file rendered for a model outside this set is still served, but
//! costs its source a miss.
//!
//! Why: every new model name is a new render (the cache key is the file
//! name, its inputs the model), all of them anonymous, on the share real
//! phones' common files render under. `spaX1.cfg`, `spaX2.cfg`, … or a
//! made-up `User-Agent: Yealink SIP-…` each rendered the shipped template
//! and, being answered, never counted toward a ban, so one source could
//! keep the pool's queue full and real phones' boot files busy after a
//! cache clear. Refusing such files outright would cost real phones too:
//! phones are often recorded without a model, and theirs is then in no
//! record. So the render goes ahead and counts as a miss: a phone costs
//! one per model and cache fill, far below a ban, and a scanner's endless
//! names ban it after the usual burst.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use dialtone_sync::{Family, MirrorState, TemplateScope};

use crate::identify::model_in_file;

/// The models of one mirror state, spelled as [`canonical`] spells them.
struct Models {
    state: Weak<MirrorState>,
    built: Instant,
    known: HashSet<(Family, String)>,
}

/// Only renders about to start read it, never cache hits. Rebuilt for a
/// newer mirror state on a thread of its own, at most once per
/// [`REBUILD_EVERY`]: a build walks every phone on the platform (0.22 s at
/// a million, release build), and any tenant's edit makes a newer state;
/// built where the request is decided, it held the TFTP listener that
/// long after each edit. Until a rebuild lands, a model added meanwhile is
/// unknown, which costs its phone's first fetch of a common file one miss,
/// not a refusal. Only the first build is made in place.
#[derive(Default)]
pub(crate) struct ModelIndex(Arc<Index>);

#[derive(Default)]
struct Index {
    current: ArcSwapOption<Models>,
    building: AtomicBool,
}

const REBUILD_EVERY: Duration = Duration::from_secs(5);

/// Lets the next rebuild start once this one ends, however it ends.
struct Building<'a>(&'a AtomicBool);

impl Drop for Building<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// One spelling for a model, whichever way it came: a phone's record, a
/// template's scope key, a User-Agent (`SPA504G`, `CP-8851-3PCC`) or a
/// file name (`504g`, `8851`); case does not matter.
pub(crate) fn canonical(family: Family, model: &str) -> String {
    model_in_file(family, &model.to_ascii_uppercase()).to_ascii_lowercase()
}

/// The spellings of `model` a stored model-scope key is looked up under:
/// as given, in either case, and in the other form [`canonical`] joins
/// (with and without Cisco's `SPA`, `CP-`/`-3PCC`). Resolution looks these
/// keys up instead of walking every template of the platform on each
/// render and cache check; a stored key in mixed case (`T46s`) is found
/// only by a phone recorded in that very spelling, as before.
pub(crate) fn spellings(family: Family, model: &str) -> Vec<String> {
    let in_file = canonical(family, model);
    let upper = in_file.to_ascii_uppercase();
    let mut all = vec![
        model.to_string(),
        model.to_ascii_uppercase(),
        model.to_ascii_lowercase(),
        in_file.clone(),
        upper.clone(),
    ];
    match family {
        Family::CiscoSpa => all.push(format!("SPA{upper}")),
        Family::CiscoMpp => all.push(format!("CP-{upper}-3PCC")),
        _ => {}
    }
    if matches!(family, Family::CiscoSpa | Family::CiscoMpp) {
        let prefixed = all[all.len() - 1].to_ascii_lowercase();
        all.push(prefixed);
    }
    let mut seen = HashSet::new();
    all.retain(|spelling| seen.insert(spelling.clone()) && canonical(family, spelling) == in_file);
    all
}

impl ModelIndex {
    pub(crate) fn knows(&self, state: &Arc<MirrorState>, family: Family, model: &str) -> bool {
        self.models_of(state)
            .known
            .contains(&(family, canonical(family, model)))
    }

    fn models_of(&self, state: &Arc<MirrorState>) -> Arc<Models> {
        let index = &self.0;
        if let Some(current) = index.current.load_full() {
            let same = std::ptr::eq(current.state.as_ptr(), Arc::as_ptr(state));
            if !same
                && current.built.elapsed() >= REBUILD_EVERY
                && !index.building.swap(true, Ordering::AcqRel)
            {
                let (shared, state) = (index.clone(), state.clone());
                let spawned = std::thread::Builder::new()
                    .name("model-index".into())
                    .spawn(move || {
                        let _building = Building(&shared.building);
                        shared.current.store(Some(Self::build(&state)));
                    });
                if spawned.is_err() {
                    index.building.store(false, Ordering::Release);
                }
            }
            return current;
        }
        let built = Self::build(state);
        index.current.store(Some(built.clone()));
        built
    }

    fn build(state: &Arc<MirrorState>) -> Arc<Models> {
        // A fleet has few distinct spellings: each is made canonical once,
        // not once a phone (three strings each, most of a build's time).
        let spellings: HashSet<(Family, &str)> = state
            .phones()
            .filter_map(|p| Some((p.family, p.model.as_deref()?)))
            .collect();
        let phones = spellings
            .into_iter()
            .map(|(family, model)| (family, canonical(family, model)));
        let templates = state
            .templates()
            .filter(|t| t.scope == TemplateScope::Model)
            .map(|t| (t.family, canonical(t.family, &t.scope_key)));
        Arc::new(Models {
            state: Arc::downgrade(state),
            built: Instant::now(),
            known: phones.chain(templates).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dialtone_sync::testing::build::{mirror_of, phone_row, tenant_row};
    use dialtone_sync::{Dataset, Phone};

    fn phone(id: i64, model: &str) -> Phone {
        let mac = format!("0015650000{id:02}").parse().unwrap();
        Phone {
            model: Some(model.into()),
            ..phone_row(id, 1, mac, Family::Yealink)
        }
    }

    fn state_with(models: &[&str]) -> Arc<MirrorState> {
        let data = Dataset {
            tenants: vec![tenant_row("{}")],
            phones: models
                .iter()
                .enumerate()
                .map(|(n, m)| phone(n as i64 + 1, m))
                .collect(),
            ..Default::default()
        };
        mirror_of(data).load()
    }

    /// Any tenant's edit makes a new mirror state; the index is not walked
    /// again for each, only once its last build is old enough.
    #[test]
    fn a_new_state_rebuilds_the_index_at_most_once_a_while() {
        let index = ModelIndex::default();
        let first = state_with(&["T46S"]);
        assert!(index.knows(&first, Family::Yealink, "T46S"));
        let second = state_with(&["T46S", "T54W"]);
        assert!(
            !index.knows(&second, Family::Yealink, "T54W"),
            "not rebuilt yet"
        );
        // Once the last build is old enough, the next question rebuilds.
        let old = index.0.current.load_full().unwrap();
        index.0.current.store(Some(Arc::new(Models {
            state: old.state.clone(),
            built: Instant::now() - REBUILD_EVERY,
            known: old.known.clone(),
        })));
        // The question that finds it old is answered from it; the rebuild
        // runs elsewhere and lands.
        assert!(!index.knows(&second, Family::Yealink, "T54W"));
        for _ in 0..500 {
            if !index.0.building.load(Ordering::Acquire) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(index.knows(&second, Family::Yealink, "T54W"));
    }

    #[test]
    fn spellings_of_one_model_agree() {
        for (family, a, b) in [
            (Family::CiscoSpa, "SPA504G", "504g"),
            (Family::CiscoMpp, "CP-8851-3PCC", "8851"),
            (Family::CiscoMpp, "cp-8851-3pcc", "8851"),
            (Family::Grandstream, "GXP2135", "gxp2135"),
            (Family::Yealink, "T46S", "t46s"),
            (Family::Poly, "VVX 450", "vvx 450"),
        ] {
            assert_eq!(canonical(family, a), canonical(family, b), "{a} {b}");
        }
        assert_ne!(
            canonical(Family::CiscoSpa, "SPA504G"),
            canonical(Family::CiscoSpa, "X1")
        );
    }
}
