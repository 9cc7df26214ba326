//! The seam between the scheduler and a run's record: what a call is (its key, for replay), the
//! [`CallRecorder`] a store implements to journal calls, and the [`ReplayPlan`] a resumed run
//! answers its calls from. The host knows no database; the store crate implements the trait.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::agent_loop::{AgentError, AgentOutput, AgentRequest};
use crate::provider::Usage;

/// Records one run's agent calls (a journal). Called from the run's tasks; must not block.
pub trait CallRecorder: Send + Sync {
    /// Call `seq` was accepted; `described` is its key and options from [`describe_call`].
    fn call_queued(
        &self,
        seq: u64,
        described: (String, String),
        request: &AgentRequest,
        model: &str,
    );
    /// Call `seq` ended; `usage` is every token it was charged (a failed call's too),
    /// `started_ms` when it got its slot, `transcript` the conversation when it was longer than
    /// one turn.
    fn call_finished(
        &self,
        seq: u64,
        outcome: &Result<AgentOutput, AgentError>,
        usage: &Usage,
        replayed: bool,
        started_ms: Option<i64>,
        transcript: Option<String>,
    );
    /// Call `seq` was answered from the record of the run being resumed, with `output`.
    fn call_replayed(
        &self,
        seq: u64,
        described: (String, String),
        request: &AgentRequest,
        model: &str,
        output: &AgentOutput,
    ) {
        self.call_queued(seq, described, request, model);
        self.call_finished(seq, &Ok(output.clone()), &output.usage, true, None, None);
    }
}

/// A completed call of an earlier run, as resume needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedCall {
    /// Start order within its run (1-based).
    pub seq: u64,
    /// The call's key.
    pub key: String,
    /// What it produced; `None` when it failed or never finished.
    pub output: Option<AgentOutput>,
}

/// The key of an agent call: what it asks (prompt, options) and of whom (the resolved model).
/// Two calls with the same key would be answered alike, so a recorded answer can stand in.
pub fn call_key(request: &AgentRequest, model: &str) -> String {
    describe_call(request, model).0
}

/// A call's key and its options as JSON text, computed once for the key and the record.
pub fn describe_call(request: &AgentRequest, model: &str) -> (String, String) {
    let options = request_options(request).to_string();
    let mut hasher = Sha256::new();
    hasher.update(model.as_bytes());
    hasher.update([0]);
    hasher.update(request.prompt.as_bytes());
    hasher.update([0]);
    hasher.update(options.as_bytes());
    let digest = hasher.finalize();
    let mut key = String::with_capacity(32);
    for byte in &digest[..16] {
        use std::fmt::Write;
        let _ = write!(key, "{byte:02x}");
    }
    (key, options)
}

fn request_options(request: &AgentRequest) -> Value {
    let mut options = serde_json::json!({
        "schema": request.schema.as_ref().map(|s| s.source().clone()),
        "tools": request.tools,
        "effort": request.effort.map(|e| format!("{e:?}")),
        "max_tokens": request.max_tokens,
        "max_turns": request.max_turns,
        "timeout_ms": request.timeout.map(|t| t.as_millis() as u64),
    });
    // Only when set, so that the keys of calls recorded before isolation existed stay the same.
    if request.isolated {
        options["isolation"] = Value::from("worktree");
    }
    options
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Answers for a resumed run: which recorded call stands in for each new call.
///
/// Calls are matched in start order. While the keys of the new run's calls equal the recorded
/// ones (the unchanged prefix), a recorded call that completed answers its twin; one that failed
/// or never finished runs live. From the first call whose key differs, every call runs live.
/// With [`ReusePolicy::All`], any completed call with the same key answers (each at most once),
/// wherever it sits — safe only for workflows whose calls do not depend on each other's order.
#[derive(Debug, Default)]
pub struct ReplayPlan {
    recorded: Vec<RecordedCall>,
    policy: ReusePolicy,
    diverged: bool,
    unused_by_key: HashMap<String, Vec<usize>>,
}

/// How a resumed run reuses recorded answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReusePolicy {
    /// The unchanged prefix, in start order (the default).
    #[default]
    Prefix,
    /// Any completed call with the same key.
    All,
}

impl ReplayPlan {
    /// A plan over the calls of the run being resumed.
    pub fn new(recorded: Vec<RecordedCall>, policy: ReusePolicy) -> Self {
        let mut unused_by_key: HashMap<String, Vec<usize>> = HashMap::new();
        for (index, call) in recorded.iter().enumerate().rev() {
            if call.output.is_some() {
                unused_by_key
                    .entry(call.key.clone())
                    .or_default()
                    .push(index);
            }
        }
        ReplayPlan {
            recorded,
            policy,
            diverged: false,
            unused_by_key,
        }
    }

    /// The recorded answer for the new run's call `seq` with `key`, if one may stand in.
    pub fn answer(&mut self, seq: u64, key: &str) -> Option<AgentOutput> {
        match self.policy {
            ReusePolicy::Prefix => {
                if self.diverged {
                    return None;
                }
                let recorded = self.recorded.get((seq as usize).checked_sub(1)?);
                match recorded {
                    Some(call) if call.key == key => call.output.clone(),
                    _ => {
                        self.diverged = true;
                        None
                    }
                }
            }
            ReusePolicy::All => {
                let index = self.unused_by_key.get_mut(key)?.pop()?;
                self.recorded[index].output.clone()
            }
        }
    }
}

#[cfg(test)]
mod tests;
