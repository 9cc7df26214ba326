//! The JSON the API answers: runs, phases, agents. Only this crate serialises wire formats.

use corral_host::config::CorralConfig;
use corral_host::provider::Usage;
use corral_store::{CallRow, CallTranscript, RunDetail, RunSummary, WorkflowListing, format_time};
use serde_json::{Value, json};

fn usage(usage: &Usage) -> Value {
    json!({
        "input": usage.input_tokens,
        "output": usage.output_tokens,
        "cache_read": usage.cache_read_tokens,
        "cache_write": usage.cache_write_tokens,
        "total": usage.total(),
    })
}

fn time(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, |ms| {
        json!(format!("{}Z", format_time(ms).replace(' ', "T")))
    })
}

/// A row of `GET /v1/runs`.
pub fn summary(run: &RunSummary) -> Value {
    json!({
        "id": run.id,
        "workflow": run.workflow,
        "status": run.status,
        "agents": run.agents,
        "outcomes": {
            "ok": run.ok,
            "failed": run.failed - run.refused,
            "refused": run.refused,
        },
        "tokens": usage(&run.tokens),
        "cost": run.cost,
        "started": time(Some(run.started_ms)),
        "finished": time(run.finished_ms),
        "duration_ms": run.finished_ms.map(|end| end - run.started_ms),
    })
}

/// `GET /v1/runs/{id}`: status, phases, counts, tokens, cost.
pub fn detail(run: &RunDetail, config: &CorralConfig) -> Value {
    let (phases, counts) = corral_service::report::phase_totals(run, config);
    let phases: Vec<Value> = phases
        .iter()
        .map(|totals| {
            json!({
                "name": totals.name,
                "done": totals.done,
                "running": totals.running,
                "queued": totals.queued,
                "failed": totals.failed,
                "tokens": usage(&totals.usage),
                "cost": totals.cost,
            })
        })
        .collect();
    let mut value = summary(&run.summary);
    let object = value.as_object_mut().expect("a summary is an object");
    object.insert("phases".into(), json!(phases));
    object.insert(
        "counts".into(),
        json!({
            "agents": run.calls.len(),
            "done": counts.done,
            "running": counts.running,
            "queued": counts.queued,
            "failed": counts.failed,
        }),
    );
    object.insert("error".into(), json!(run.error));
    object.insert("resumed_from".into(), json!(run.resumed_from));
    object.insert("root".into(), json!(run.root));
    object.insert("provider".into(), json!(run.provider));
    object.insert("workflow_hash".into(), json!(run.workflow_hash));
    object.insert("script".into(), json!(run.script));
    object.insert(
        "args".into(),
        serde_json::from_str(&run.args).unwrap_or(Value::Null),
    );
    object.insert(
        "limits".into(),
        serde_json::from_str(&run.limits).unwrap_or(Value::Null),
    );
    object.insert(
        "log".into(),
        json!(
            run.events
                .iter()
                .map(|e| json!({"kind": e.kind, "text": e.text, "at": time(Some(e.at_ms))}))
                .collect::<Vec<_>>()
        ),
    );
    value
}

/// A row of `GET /v1/workflows`.
pub fn workflow(workflow: &WorkflowListing) -> Value {
    json!({
        "hash": workflow.hash,
        "name": workflow.name,
        "kind": if workflow.script { "script" } else { "component" },
        "created": time(Some(workflow.created_ms)),
    })
}

/// One agent call, for `GET /v1/runs/{id}/agents`.
pub fn call(call: &CallRow, config: &CorralConfig) -> Value {
    let cost = if call.replayed {
        0.0
    } else {
        call.model
            .as_deref()
            .and_then(|m| config.price(m))
            .map_or(0.0, |price| price.cost(&call.usage))
    };
    json!({
        "n": call.seq,
        "label": call.label,
        "phase": call.phase,
        "model": call.model,
        "status": call.status,
        "error_kind": call.error_kind,
        "error": call.error,
        "replayed": call.replayed,
        "tokens": usage(&call.usage),
        "cost": cost,
        "queued": time(Some(call.queued_ms)),
        "started": time(call.started_ms),
        "finished": time(call.finished_ms),
        "queued_ms": call.queued_ms,
        "started_ms": call.started_ms,
        "finished_ms": call.finished_ms,
        "duration_ms": call.started_ms.zip(call.finished_ms).map(|(s, f)| f - s),
    })
}

/// One agent call in full, for `GET /v1/runs/{id}/agents/{n}`.
pub fn call_full(
    row: &CallRow,
    transcript: Option<&CallTranscript>,
    config: &CorralConfig,
) -> Value {
    let mut value = call(row, config);
    let object = value.as_object_mut().expect("a call is an object");
    object.insert("prompt".into(), json!(transcript.map(|t| &t.prompt)));
    object.insert(
        "options".into(),
        transcript
            .and_then(|t| serde_json::from_str(&t.options).ok())
            .unwrap_or(Value::Null),
    );
    object.insert(
        "result".into(),
        match (&row.json, &row.text) {
            (Some(json), _) => serde_json::from_str(json).unwrap_or(Value::Null),
            (None, Some(text)) => json!(text),
            _ => Value::Null,
        },
    );
    object.insert(
        "transcript".into(),
        transcript
            .and_then(|t| t.transcript.as_deref())
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or(Value::Null),
    );
    value
}
