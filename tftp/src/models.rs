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
use std::sync::{Arc, Weak};

use arc_swap::ArcSwapOption;
use dialtone_sync::{Family, MirrorState, TemplateScope};

use crate::identify::model_in_file;

/// The models of one mirror state, spelled as [`canonical`] spells them.
struct Models {
    state: Weak<MirrorState>,
    known: HashSet<(Family, String)>,
}

/// Rebuilt when the mirror state changes; only renders about to start
/// read it, never cache hits.
#[derive(Default)]
pub(crate) struct ModelIndex(ArcSwapOption<Models>);

/// One spelling for a model, whichever way it came: a phone's record, a
/// template's scope key, a User-Agent (`SPA504G`, `CP-8851-3PCC`) or a
/// file name (`504g`, `8851`); case does not matter.
fn canonical(family: Family, model: &str) -> String {
    model_in_file(family, &model.to_ascii_uppercase()).to_ascii_lowercase()
}

impl ModelIndex {
    pub(crate) fn knows(&self, state: &Arc<MirrorState>, family: Family, model: &str) -> bool {
        self.models_of(state)
            .known
            .contains(&(family, canonical(family, model)))
    }

    fn models_of(&self, state: &Arc<MirrorState>) -> Arc<Models> {
        if let Some(current) = self.0.load_full() {
            if std::ptr::eq(current.state.as_ptr(), Arc::as_ptr(state)) {
                return current;
            }
        }
        let phones = state
            .phones()
            .filter_map(|p| Some((p.family, canonical(p.family, p.model.as_deref()?))));
        let templates = state
            .templates()
            .filter(|t| t.scope == TemplateScope::Model)
            .map(|t| (t.family, canonical(t.family, &t.scope_key)));
        let built = Arc::new(Models {
            state: Arc::downgrade(state),
            known: phones.chain(templates).collect(),
        });
        self.0.store(Some(built.clone()));
        built
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
