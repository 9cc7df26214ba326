//! `corral plan`: the run service's dry run, rendered as a table.

use std::process::ExitCode;

use super::run::{RunArgs, file_name, service, service_failure, spec};

pub fn plan(args: RunArgs) -> anyhow::Result<ExitCode> {
    // A plan records nothing.
    let service = service(&args.service, None, 4)?;
    let spec = spec(&args, &service)?;
    let tokio = super::tokio()?;
    let plan = match tokio.block_on(service.plan(&spec)) {
        Ok(plan) => plan,
        Err(error) => return service_failure(error),
    };
    out!(
        "plan for {} (a dry run on the simulated provider; cost at {} prices)",
        file_name(&args.workflow),
        plan.priced_as
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
    for phase in &plan.phases {
        let names: Vec<String> = phase
            .models
            .iter()
            .map(|model| format!("{}×{}", model.model, model.agents))
            .collect();
        let name = if phase.name.is_empty() {
            "(no phase)"
        } else {
            &phase.name
        };
        out!(
            "{name:<22} {:>7} {:>11} {:>10} {:>12} {:>10}  {}",
            phase.agents,
            phase.usage.input_tokens,
            phase.usage.output_tokens,
            phase.usage.total(),
            format!("${:.4}", phase.cost),
            names.join(", ")
        );
    }
    out!(
        "{:<22} {:>7} {:>11} {:>10} {:>12} {:>10}",
        "total",
        plan.agents,
        "",
        "",
        plan.tokens,
        format!("${:.4}", plan.cost)
    );
    if !plan.priced {
        out!("(some models have no price in corral.toml; their cost is not counted)");
    }
    if !plan.failed.is_empty() {
        let kinds: Vec<String> = plan
            .failed
            .iter()
            .map(|(kind, count)| format!("{count} {kind}"))
            .collect();
        eprintln!(
            "corral: agent calls failed in the dry run ({}); their tokens are not in the estimate",
            kinds.join(", ")
        );
    }
    if let Some(contention) = plan.contention() {
        eprintln!("corral: warning: {contention}");
    }
    if let Some(error) = &plan.incomplete {
        eprintln!("corral: the dry run did not finish ({error}); the estimate covers what ran");
    }
    if let Some(reason) = plan.unsound() {
        eprintln!("corral: this estimate cannot be checked against a budget: {reason}");
        return Ok(ExitCode::from(super::EXIT_WORKFLOW));
    }
    Ok(ExitCode::SUCCESS)
}
