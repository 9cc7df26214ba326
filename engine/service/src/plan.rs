//! Plans: a dry run on the simulated provider that counts agents per phase and model and
//! estimates tokens and cost. `start` checks it against the budget before a run begins.

use std::collections::BTreeMap;
use std::sync::Mutex;

use corral_host::config::CorralConfig;
use corral_host::events::{EventSink, RunEvent};
use corral_host::provider::Usage;
use serde::Serialize;

/// What a dry run found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// Agent calls the dry run made.
    pub agents: u64,
    /// Tokens they used (input + output + cache).
    pub tokens: u64,
    /// Dollars, at the prices of `priced_as`, of the models that have a price.
    pub cost: f64,
    /// Whether every model had a price.
    pub priced: bool,
    /// The provider whose prices were used.
    pub priced_as: String,
    /// Per phase, in order of appearance.
    pub phases: Vec<PhasePlan>,
    /// Why the dry run did not finish, if it did not (the estimate covers what ran).
    pub incomplete: Option<String>,
    /// Agent calls that failed in the dry run, by error kind: their tokens are not estimated.
    pub failed: BTreeMap<String, u64>,
    /// The largest worst case (input bound plus output ceiling) one request reserves.
    pub largest_request: u64,
    /// The run's concurrency cap.
    pub max_concurrent: usize,
    /// The budget the run would have.
    pub budget: Option<u64>,
}

impl Plan {
    /// Why agents of the run would wait for each other's budget: when the concurrency cap times
    /// the largest request's worst case exceeds the budget, requests in flight hold so much that
    /// the next must wait for them to settle (see `corral_host::budget`); says what to lower.
    pub fn contention(&self) -> Option<String> {
        let budget = self.budget?;
        let largest = self.largest_request;
        // At most as many at once as the cap allows and the run starts.
        let cap = (self.max_concurrent as u64).min(self.agents);
        if largest == 0 || cap.saturating_mul(largest) <= budget {
            return None;
        }
        if largest > budget {
            return Some(format!(
                "the largest request may need {largest} tokens (its prompt's bytes plus its output \
                 ceiling), more than the whole budget of {budget}: it will be refused, or, when its \
                 call names no maxTokens, sent with a lower output ceiling; shorten that prompt \
                 or its maxTokens, or raise --budget-tokens"
            ));
        }
        let at_once = (budget / largest).max(1);
        Some(format!(
            "{cap} agents at once × {largest} tokens (the largest request's worst case) = {} is \
             more than the budget of {budget}: agents will wait for each other's requests to \
             settle, about {at_once} at a time; lower --max-concurrent to {at_once} or maxTokens, \
             or raise --budget-tokens to {} to run them all at once",
            cap * largest,
            cap * largest
        ))
    }

    /// Why the estimate cannot be trusted to check a budget: agents the simulated provider
    /// could not answer (an output schema it cannot satisfy within maxTokens, say), whose real
    /// cost is unknown.
    pub fn unsound(&self) -> Option<String> {
        let failed = self.failed.get("provider").copied().unwrap_or(0);
        (failed > 0).then(|| {
            format!(
                "{failed} agent call(s) failed on the simulated provider in the dry run, so their \
                 tokens are not in the estimate (run the workflow with --provider sim to see why)"
            )
        })
    }
}

/// One phase of a plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhasePlan {
    /// Its title (empty: agents without a phase).
    pub name: String,
    /// Agent calls.
    pub agents: u64,
    /// Tokens by kind.
    pub usage: Usage,
    /// Dollars.
    pub cost: f64,
    /// Per model as requested (alias or id).
    pub models: Vec<ModelPlan>,
}

/// The calls of one model within a phase.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelPlan {
    /// The model as requested (`default` when the call named none).
    pub model: String,
    /// Calls.
    pub agents: u64,
    /// Tokens.
    pub usage: Usage,
}

/// Collects a dry run's events.
#[derive(Default)]
pub(crate) struct PlanSink {
    state: Mutex<PlanState>,
}

#[derive(Default)]
struct PlanState {
    /// Phases in the order they appeared (a phase may have no agents).
    order: Vec<String>,
    usage: BTreeMap<String, BTreeMap<String, (u64, Usage)>>,
    failed: BTreeMap<String, u64>,
}

impl EventSink for PlanSink {
    fn event(&self, event: &RunEvent) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            RunEvent::Phase { title: phase }
            | RunEvent::AgentQueued {
                phase: Some(phase), ..
            } if !state.order.contains(phase) => state.order.push(phase.clone()),
            RunEvent::AgentFinished {
                phase,
                usage,
                model,
                error,
                ..
            } => {
                if let Some(kind) = error {
                    *state.failed.entry(kind.clone()).or_default() += 1;
                }
                let phase = phase.clone().unwrap_or_default();
                if !state.order.contains(&phase) {
                    state.order.push(phase.clone());
                }
                // The simulated provider names its models `sim-<alias>`: report what was asked.
                let model = model.strip_prefix("sim-").unwrap_or(model).to_string();
                let entry = state
                    .usage
                    .entry(phase)
                    .or_default()
                    .entry(model)
                    .or_default();
                entry.0 += 1;
                entry.1.add(usage);
            }
            _ => {}
        }
    }
}

impl PlanSink {
    /// The plan, priced by `price(model as requested, usage)`.
    pub(crate) fn plan(
        &self,
        agents: u64,
        tokens: u64,
        priced_as: String,
        price: &dyn Fn(&str, &Usage) -> Option<f64>,
        incomplete: Option<String>,
    ) -> Plan {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut phases = Vec::new();
        let (mut cost, mut priced) = (0.0, true);
        for name in &state.order {
            let Some(models) = state.usage.get(name) else {
                continue;
            };
            let mut phase = PhasePlan {
                name: name.clone(),
                agents: 0,
                usage: Usage::default(),
                cost: 0.0,
                models: Vec::new(),
            };
            for (model, (count, usage)) in models {
                phase.agents += count;
                phase.usage.add(usage);
                match price(model, usage) {
                    Some(dollars) => phase.cost += dollars,
                    None => priced = false,
                }
                phase.models.push(ModelPlan {
                    model: model.clone(),
                    agents: *count,
                    usage: *usage,
                });
            }
            cost += phase.cost;
            phases.push(phase);
        }
        Plan {
            agents,
            tokens,
            cost,
            priced,
            priced_as,
            phases,
            incomplete,
            failed: state.failed.clone(),
            largest_request: 0,
            max_concurrent: 0,
            budget: None,
        }
    }
}

/// Prices a model id at the configured (or built-in) prices.
pub(crate) fn price_of(config: &CorralConfig, model: &str, usage: &Usage) -> f64 {
    config.price(model).map_or(0.0, |price| price.cost(usage))
}
