//! What the runtime does with a script's `meta` while it runs (SCRIPT-API rule 16): the default
//! model of each phase, and a warning for a `phase()` title that `meta.phases` does not list.
//!
//! The front end has already checked meta's shape ([`crate::frontend`]); this only reads it.

use std::cell::RefCell;
use std::collections::BTreeSet;

use serde_json::Value;

/// The parts of one script's `meta` the runtime acts on; each realm has its script's.
#[derive(Debug, Default)]
pub(super) struct ScriptMeta {
    /// `meta.phases` in order, when meta declares them.
    phases: Option<Vec<PhaseMeta>>,
    /// Titles `phase()` was called with that `meta.phases` does not list, already warned about.
    warned: RefCell<BTreeSet<String>>,
}

/// One entry of `meta.phases`.
#[derive(Debug)]
struct PhaseMeta {
    title: String,
    /// `model`: the default model of agents started in this phase.
    model: Option<String>,
}

impl ScriptMeta {
    /// Reads a script's meta (as the front end parsed it; `None` when it has none).
    pub(super) fn new(meta: Option<&Value>) -> ScriptMeta {
        let phases = meta
            .and_then(|meta| meta.get("phases"))
            .and_then(Value::as_array)
            .map(|phases| {
                phases
                    .iter()
                    .filter_map(|phase| {
                        Some(PhaseMeta {
                            title: phase.get("title")?.as_str()?.to_owned(),
                            model: phase
                                .get("model")
                                .and_then(Value::as_str)
                                .map(str::to_owned),
                        })
                    })
                    .collect()
            });
        ScriptMeta {
            phases,
            warned: RefCell::new(BTreeSet::new()),
        }
    }

    /// The model `meta.phases` names for agents of the phase `title`.
    pub(super) fn model_of(&self, title: &str) -> Option<&str> {
        self.phases
            .as_deref()?
            .iter()
            .find(|phase| phase.title == title)?
            .model
            .as_deref()
    }

    /// The warning to log for `phase(title)` when meta declares phases and `title` is not one of
    /// them: once per title, so that a phase entered in a loop is not repeated.
    pub(super) fn unlisted_phase(&self, title: &str) -> Option<String> {
        let phases = self.phases.as_deref()?;
        if phases.iter().any(|phase| phase.title == title) {
            return None;
        }
        if !self.warned.borrow_mut().insert(title.to_owned()) {
            return None;
        }
        let listed: Vec<String> = phases
            .iter()
            .map(|phase| format!("{:?}", phase.title))
            .collect();
        let listed = if listed.is_empty() {
            "it lists none".to_owned()
        } else {
            format!("it lists {}", listed.join(", "))
        };
        Some(format!(
            "phase({title:?}): this title is not in meta.phases ({listed}); add {{ title: \
             {title:?} }} to meta.phases so that plans and progress know the phase, or use one \
             of its titles"
        ))
    }
}
