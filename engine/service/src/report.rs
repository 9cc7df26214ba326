//! Per-phase totals of a recorded run, priced by the model that answered: what `corral runs
//! show` prints and what `GET /v1/runs/{id}` answers.

use std::collections::BTreeSet;

use corral_host::config::CorralConfig;
use corral_host::provider::Usage;
use corral_store::{CallStatus, RunDetail};

/// One phase of a recorded run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PhaseTotals {
    /// Its title (empty: calls without a phase).
    pub name: String,
    /// Calls that finished well.
    pub done: u64,
    /// Calls holding a slot.
    pub running: u64,
    /// Calls waiting for a slot.
    pub queued: u64,
    /// Calls that failed.
    pub failed: u64,
    /// Tokens, replayed answers excluded (they were not paid again).
    pub usage: Usage,
    /// Dollars, where the answering model has a price.
    pub cost: f64,
    /// Models of paid calls that have no price: their cost is not in `cost`.
    pub unpriced: BTreeSet<String>,
    /// When its first call was queued and its last one finished (ms since the epoch).
    pub span_ms: Option<(i64, i64)>,
}

/// The run's phases in order of appearance (log first, then calls), and the totals of all calls.
pub fn phase_totals(run: &RunDetail, config: &CorralConfig) -> (Vec<PhaseTotals>, PhaseTotals) {
    let mut phases: Vec<PhaseTotals> = Vec::new();
    let index = |phases: &mut Vec<PhaseTotals>, name: &str| match phases
        .iter()
        .position(|p| p.name == name)
    {
        Some(at) => at,
        None => {
            phases.push(PhaseTotals {
                name: name.to_string(),
                ..PhaseTotals::default()
            });
            phases.len() - 1
        }
    };
    for entry in run.events.iter().filter(|e| e.kind == "phase") {
        index(&mut phases, &entry.text);
    }
    let mut all = PhaseTotals::default();
    for call in &run.calls {
        let at = index(&mut phases, call.phase.as_deref().unwrap_or_default());
        for totals in [&mut phases[at], &mut all] {
            match call.status {
                CallStatus::Ok => totals.done += 1,
                CallStatus::Failed => totals.failed += 1,
                CallStatus::Queued if call.started_ms.is_some() => totals.running += 1,
                CallStatus::Queued => totals.queued += 1,
            }
            if !call.replayed {
                totals.usage.add(&call.usage);
                if let Some(model) = call.model.as_deref()
                    && call.usage.total() > 0
                {
                    match config.price(model) {
                        Some(price) => totals.cost += price.cost(&call.usage),
                        None => {
                            totals.unpriced.insert(model.to_string());
                        }
                    }
                }
            }
            let end = call.finished_ms.unwrap_or(call.queued_ms);
            totals.span_ms = Some(match totals.span_ms {
                Some((first, last)) => (first.min(call.queued_ms), last.max(end)),
                None => (call.queued_ms, end),
            });
        }
    }
    (phases, all)
}
