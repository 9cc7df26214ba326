//! `corral plan`: a dry run on the simulated provider that counts agents per phase and model and
//! estimates tokens and cost; `corral run --budget-tokens` checks it before starting.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use engine::events::{EventSink, RunEvent};
use engine::provider::Usage;
use engine::provider::sim::SimProvider;
use engine::{RunLimits, RunOptions};

use super::run::{Prepared, RunArgs, prepare};

/// Calls and usage per model (as requested: alias or id).
pub type ModelUsage = BTreeMap<String, (u64, Usage)>;

/// What a plan found.
pub struct Estimate {
    /// Agent calls the dry run made.
    pub agents: u64,
    /// Tokens they used (input + output + cache).
    pub tokens: u64,
    /// Per phase (in order of appearance): per model (as requested: alias or id): calls and usage.
    pub phases: Vec<(String, ModelUsage)>,
    /// How the dry run ended.
    pub outcome: Result<(), String>,
}

#[derive(Default)]
struct PlanSink {
    state: Mutex<PlanState>,
}

#[derive(Default)]
struct PlanState {
    /// Phases in the order they appeared (a phase may have no agents).
    order: Vec<String>,
    usage: BTreeMap<String, ModelUsage>,
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
                ..
            } => {
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

/// Dry-runs the workflow on the simulated provider.
pub fn estimate(prepared: &Prepared) -> anyhow::Result<Estimate> {
    let sink = Arc::new(PlanSink::default());
    let limits = RunLimits {
        budget_tokens: None,
        ..prepared.limits.clone()
    };
    let tokio = super::tokio()?;
    let report = tokio.block_on(prepared.runtime.run(
        &prepared.workflow,
        RunOptions {
            args_json: prepared.args_json.clone(),
            root: prepared.root.clone(),
            limits,
            provider: Arc::new(SimProvider::default()),
            events: sink.clone(),
            script: prepared.script.clone(),
            journal: None,
            load_only: false,
        },
    ));
    let state = sink.state.lock().unwrap_or_else(|p| p.into_inner());
    let phases: Vec<(String, ModelUsage)> = state
        .order
        .iter()
        .filter_map(|phase| {
            state
                .usage
                .get(phase)
                .map(|models| (phase.clone(), models.clone()))
        })
        .collect();
    Ok(Estimate {
        agents: report.agents.started,
        tokens: report.agents.usage.total(),
        phases,
        outcome: report.outcome.map(|_| ()).map_err(|e| e.to_string()),
    })
}

pub fn plan(args: RunArgs) -> anyhow::Result<ExitCode> {
    let prepared = prepare(&args)?;
    let estimate = estimate(&prepared)?;
    // Price with the provider the run would use (the simulated one costs nothing, so price it as
    // the default real provider would).
    let name = args
        .provider
        .clone()
        .unwrap_or_else(|| prepared.config.default_provider().to_string());
    let name = if name == "sim" {
        "anthropic".to_string()
    } else {
        name
    };
    // Pricing needs model ids, not credentials: stand in for a missing key.
    let env = |variable: &str| {
        std::env::var(variable)
            .ok()
            .or_else(|| variable.ends_with("_KEY").then(|| "plan".to_string()))
    };
    let settings = prepared
        .config
        .provider_settings(&name, args.model.as_deref(), &env)
        .ok();
    let price = |model: &str, usage: &Usage| -> Option<f64> {
        let settings = settings.as_ref()?;
        let requested = if model == "default" {
            None
        } else {
            Some(model)
        };
        let id = settings.resolve_model(requested);
        prepared.config.price(&id).map(|price| price.cost(usage))
    };

    out!(
        "plan for {} (a dry run on the simulated provider; cost at {name} prices)",
        super::file_name(&args.workflow)
    );
    out!(
        "{:<22} {:>7} {:>11} {:>10} {:>12} {:>10}  models",
        "phase",
        "agents",
        "input",
        "output",
        "tokens",
        "cost"
    );
    let (mut total_cost, mut priced) = (0.0, true);
    for (phase, models) in &estimate.phases {
        let mut usage = Usage::default();
        let mut agents = 0;
        let mut cost = 0.0;
        for (model, (count, model_usage)) in models {
            agents += count;
            usage.add(model_usage);
            match price(model, model_usage) {
                Some(dollars) => cost += dollars,
                None => priced = false,
            }
        }
        total_cost += cost;
        let names: Vec<String> = models
            .iter()
            .map(|(model, (count, _))| format!("{model}×{count}"))
            .collect();
        let phase = if phase.is_empty() {
            "(no phase)"
        } else {
            phase
        };
        out!(
            "{phase:<22} {agents:>7} {:>11} {:>10} {:>12} {:>10}  {}",
            usage.input_tokens,
            usage.output_tokens,
            usage.total(),
            format!("${cost:.4}"),
            names.join(", ")
        );
    }
    out!(
        "{:<22} {:>7} {:>11} {:>10} {:>12} {:>10}",
        "total",
        estimate.agents,
        "",
        "",
        estimate.tokens,
        format!("${total_cost:.4}")
    );
    if !priced {
        out!("(some models have no price in corral.toml; their cost is not counted)");
    }
    if let Err(error) = &estimate.outcome {
        eprintln!("corral: the dry run did not finish ({error}); the estimate covers what ran");
    }
    Ok(ExitCode::SUCCESS)
}
