//! Model templates by the model they apply to, whatever its spelling:
//! indexed once, so that each of an import's model templates is looked
//! up, not compared with every other (8,000 of them took 25 s so).

use std::collections::HashMap;

use dialtone_sync::{Family, Id, MirrorState, TemplateScope};

use dialtone_tftp::templates::model_spelling as spelling;

type Slot = (Family, String, String);

/// A model template's model, spelled as it was given, and its stored id.
pub(super) struct Spelled {
    pub id: Option<Id>,
    pub model: String,
}

pub(super) struct Spellings {
    stored: HashMap<Slot, Spelled>,
    imported: HashMap<Slot, Spelled>,
}

impl Spellings {
    /// Every stored model template, the oldest of a slot first.
    pub fn of(state: &MirrorState) -> Spellings {
        let mut stored: HashMap<Slot, Spelled> = HashMap::new();
        for t in state.templates() {
            if t.scope != TemplateScope::Model {
                continue;
            }
            let slot = (
                t.family,
                t.file_pattern.to_string(),
                spelling(t.family, &t.scope_key),
            );
            let older = stored.get(&slot).is_some_and(|s| s.id < Some(t.id));
            if !older {
                let model = t.scope_key.to_string();
                stored.insert(
                    slot,
                    Spelled {
                        id: Some(t.id),
                        model,
                    },
                );
            }
        }
        Spellings {
            stored,
            imported: HashMap::new(),
        }
    }

    /// The stored template for the model of `(family, file_pattern, model)`,
    /// else one earlier in the import.
    pub fn find(&self, family: Family, file_pattern: &str, model: &str) -> Option<&Spelled> {
        let slot = (family, file_pattern.to_string(), spelling(family, model));
        self.stored.get(&slot).or_else(|| self.imported.get(&slot))
    }

    /// An import's model template that passed its checks.
    pub fn add(&mut self, family: Family, file_pattern: &str, model: &str) {
        let slot = (family, file_pattern.to_string(), spelling(family, model));
        let model = model.to_string();
        self.imported
            .entry(slot)
            .or_insert(Spelled { id: None, model });
    }
}
