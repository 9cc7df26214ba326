//! What a run reports while it goes: phases, log lines, agent calls. Sinks decide where it goes
//! (stderr for the CLI, a vector in tests).

use std::sync::Mutex;

use crate::provider::Usage;

/// One thing that happened in a run.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    /// The run began (sent by the run service, before the workflow loads).
    RunStarted {
        /// Its id in the store (`None` when it is not recorded).
        run_id: Option<String>,
        /// The workflow's name.
        workflow: String,
        /// SHA-256 of the component.
        workflow_hash: String,
        /// The run it resumes, if any.
        resumed_from: Option<String>,
    },
    /// The run ended (sent by the run service, after everything is recorded).
    RunFinished {
        /// Whether it returned a result.
        ok: bool,
        /// Why not.
        error: Option<String>,
        /// Agent calls accepted.
        agents: u64,
        /// Tokens charged to the budget.
        spent_tokens: u64,
        /// Cost in dollars at the configured prices.
        cost: f64,
    },
    /// The workflow started a phase.
    Phase {
        /// Its title.
        title: String,
    },
    /// A log line from the workflow (`log`, or a line it wrote to stdout/stderr).
    Log {
        /// The line, without its newline.
        message: String,
    },
    /// An agent call was accepted and queued.
    AgentQueued {
        /// Call id.
        id: u64,
        /// Its label, if any.
        label: Option<String>,
        /// Its phase, if any.
        phase: Option<String>,
    },
    /// An agent call got a concurrency slot.
    AgentStarted {
        /// Call id.
        id: u64,
        /// Its phase, if any (as when it was queued).
        phase: Option<String>,
    },
    /// An agent call finished.
    AgentFinished {
        /// Call id.
        id: u64,
        /// Its phase, if any (as when it was queued).
        phase: Option<String>,
        /// `None` on success, else the error kind.
        error: Option<String>,
        /// The error's message, when it failed.
        message: Option<String>,
        /// Tokens it was charged (a failed call's too).
        usage: Usage,
        /// The model that answered (for a failed call: the model it asked for).
        model: String,
        /// Answered from the journal of a resumed run.
        replayed: bool,
    },
}

impl RunEvent {
    /// The event as one JSON object, the line format of `--events` (see the README).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            RunEvent::RunStarted {
                run_id,
                workflow,
                workflow_hash,
                resumed_from,
            } => json!({
                "event": "run_started",
                "run_id": run_id,
                "workflow": workflow,
                "workflow_hash": workflow_hash,
                "resumed_from": resumed_from,
            }),
            RunEvent::RunFinished {
                ok,
                error,
                agents,
                spent_tokens,
                cost,
            } => json!({
                "event": "run_finished",
                "ok": ok,
                "error": error,
                "agents": agents,
                "spent_tokens": spent_tokens,
                "cost": cost,
            }),
            RunEvent::Phase { title } => json!({"event": "phase", "title": title}),
            RunEvent::Log { message } => json!({"event": "log", "message": message}),
            RunEvent::AgentQueued { id, label, phase } => {
                json!({"event": "agent_queued", "id": id, "label": label, "phase": phase})
            }
            RunEvent::AgentStarted { id, phase } => {
                json!({"event": "agent_started", "id": id, "phase": phase})
            }
            RunEvent::AgentFinished {
                id,
                phase,
                error,
                message,
                usage,
                model,
                replayed,
            } => json!({
                "event": "agent_finished",
                "id": id,
                "phase": phase,
                "ok": error.is_none(),
                "error": error,
                "message": message,
                "model": model,
                "replayed": replayed,
                "usage": {
                    "input_tokens": usage.input_tokens,
                    "output_tokens": usage.output_tokens,
                    "cache_read_tokens": usage.cache_read_tokens,
                    "cache_write_tokens": usage.cache_write_tokens,
                },
            }),
        }
    }
}

/// Receives a run's events. Called from many tasks; must not block.
pub trait EventSink: Send + Sync {
    /// Records one event.
    fn event(&self, event: &RunEvent);
}

/// Drops every event.
#[derive(Debug, Default)]
pub struct NoEvents;

impl EventSink for NoEvents {
    fn event(&self, _event: &RunEvent) {}
}

/// Keeps every event, for tests and reports.
#[derive(Debug, Default)]
pub struct CollectEvents(Mutex<Vec<RunEvent>>);

impl CollectEvents {
    /// Everything recorded so far.
    pub fn events(&self) -> Vec<RunEvent> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl EventSink for CollectEvents {
    fn event(&self, event: &RunEvent) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(event.clone());
    }
}
