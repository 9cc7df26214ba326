//! Corral's store: where runs, agent calls, transcripts, events, workflows, tenants and tokens are
//! kept, behind one trait ([`RunStore`]) so that the run service never names a database.
//!
//! [`Journal`] (SQLite, WAL, one batching writer thread) is the embedded implementation. Hot-path
//! writes (calls, events) are fire-and-forget channel sends; `begin_run` and `finish_run` wait for
//! the commit, so a run that was reported started or finished is on disk.

use std::path::PathBuf;
use std::sync::Arc;

use corral_host::provider::Usage;
use corral_host::record::{CallRecorder, RecordedCall};
pub use corral_host::tools::StagedChange;

mod journal;

pub use journal::{Journal, format_time};

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("journal {path}: {message}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        message: String,
    },
    /// No run has this id.
    #[error("no run with id '{0}' in the journal (see `corral runs list`)")]
    UnknownRun(String),
    /// An id prefix matches several runs.
    #[error("run id '{0}' is ambiguous: give more characters")]
    AmbiguousRun(String),
    /// The journal's writer thread is gone.
    #[error("the journal writer stopped: {0}")]
    WriterGone(String),
    /// A stored value could not be read back.
    #[error(
        "the journal holds a value this corral cannot read ({0}); was it written by a newer version?"
    )]
    Corrupt(String),
}

/// How a run stands. Stored as its [`RunStatus::as_str`] name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Accepted, waiting for capacity (a tenant quota or the server's slots).
    Queued,
    /// Going (or killed without a chance to say so: see [`RunStatus::Interrupted`]).
    Running,
    /// Returned a result.
    Succeeded,
    /// Failed, crashed or hit a limit.
    Failed,
    /// Stopped on request.
    Stopped,
    /// Paused by the provider's usage or spend limit, to be resumed.
    Paused,
    /// Marked running, but the process running it is gone (never stored: the service derives it).
    Interrupted,
}

impl RunStatus {
    /// The stored (and displayed) name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Stopped => "stopped",
            RunStatus::Paused => "paused",
            RunStatus::Interrupted => "interrupted",
        }
    }

    /// The status named `name`.
    pub fn parse(name: &str) -> Option<RunStatus> {
        [
            RunStatus::Queued,
            RunStatus::Running,
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::Stopped,
            RunStatus::Paused,
            RunStatus::Interrupted,
        ]
        .into_iter()
        .find(|status| status.as_str() == name)
    }

    /// Whether the run is over.
    pub fn is_final(self) -> bool {
        !matches!(self, RunStatus::Queued | RunStatus::Running)
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an agent call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    /// Accepted, not finished.
    Queued,
    /// Finished with an answer.
    Ok,
    /// Finished with an error.
    Failed,
}

impl CallStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::Queued => "queued",
            CallStatus::Ok => "ok",
            CallStatus::Failed => "failed",
        }
    }

    fn parse(name: &str) -> Option<CallStatus> {
        [CallStatus::Queued, CallStatus::Ok, CallStatus::Failed]
            .into_iter()
            .find(|status| status.as_str() == name)
    }
}

/// What is known about a run when it is accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRun {
    /// The workflow's name (file name).
    pub workflow: String,
    /// SHA-256 of the component.
    pub workflow_hash: String,
    /// The script source, for script workflows.
    pub script: Option<String>,
    /// The arguments (JSON text).
    pub args: String,
    /// The limits (JSON).
    pub limits: serde_json::Value,
    /// The root, as the front end named it.
    pub root: Option<String>,
    /// The provider's name.
    pub provider: String,
    /// The run this one resumes, if any.
    pub resumed_from: Option<String>,
    /// The tenant that owns it (`None`: a local run).
    pub tenant: Option<String>,
    /// The complete run spec (JSON), which resume reads.
    pub spec: String,
    /// [`RunStatus::Running`], or [`RunStatus::Queued`] when it waits for capacity.
    pub status: RunStatus,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RunFinish {
    /// Its final status.
    pub status: RunStatus,
    /// The result (JSON text).
    pub result: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Agent calls accepted.
    pub agents: u64,
    /// Tokens its calls used.
    pub usage: Usage,
    /// What they cost, in dollars.
    pub cost: f64,
}

/// Which runs to list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunFilter {
    /// Only this tenant's runs (`None`: every run, for the operator's CLI).
    pub tenant: Option<String>,
    /// Only runs with this stored status.
    pub status: Option<RunStatus>,
    /// At most this many (newest first).
    pub limit: usize,
    /// Only runs older than this one (paging).
    pub before: Option<String>,
}

/// One row of a run listing.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// Run id.
    pub id: String,
    /// Workflow name.
    pub workflow: String,
    /// Stored status.
    pub status: RunStatus,
    /// Agent calls.
    pub agents: u64,
    /// Of those, the ones that answered.
    pub ok: u64,
    /// Of those, the ones that failed, refused ones included.
    pub failed: u64,
    /// Of the failed ones, those the host refused (`budget-exhausted`, `agent-limit`, `denied`).
    pub refused: u64,
    /// Tokens of every kind (replayed answers excluded).
    pub tokens: Usage,
    /// Cost in dollars, when prices are known.
    pub cost: f64,
    /// Start, ms since the Unix epoch.
    pub started_ms: i64,
    /// End, ms since the Unix epoch.
    pub finished_ms: Option<i64>,
    /// Process that ran it.
    pub pid: i64,
    /// The tenant that owns it.
    pub tenant: Option<String>,
}

/// A run with its calls.
#[derive(Debug, Clone, PartialEq)]
pub struct RunDetail {
    /// The summary row.
    pub summary: RunSummary,
    /// Arguments (JSON text).
    pub args: String,
    /// Root, as named.
    pub root: Option<String>,
    /// Script source.
    pub script: Option<String>,
    /// Result (JSON text).
    pub result: Option<String>,
    /// Error message.
    pub error: Option<String>,
    /// Provider name.
    pub provider: String,
    /// Limits (JSON text).
    pub limits: String,
    /// The run it resumed.
    pub resumed_from: Option<String>,
    /// Workflow hash.
    pub workflow_hash: String,
    /// The run spec (JSON); `None` for runs recorded before specs existed.
    pub spec: Option<String>,
    /// Calls in start order.
    pub calls: Vec<CallRow>,
    /// Phases and log lines in order.
    pub events: Vec<LogEntry>,
}

/// A phase or a log line of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// `phase` or `log`.
    pub kind: String,
    /// The title or the line.
    pub text: String,
    /// When, ms since the epoch.
    pub at_ms: i64,
}

/// One agent call of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRow {
    /// Start order (1-based).
    pub seq: u64,
    /// Label.
    pub label: Option<String>,
    /// Phase.
    pub phase: Option<String>,
    /// Status.
    pub status: CallStatus,
    /// Error kind when failed.
    pub error_kind: Option<String>,
    /// Error message when failed.
    pub error: Option<String>,
    /// Output text.
    pub text: Option<String>,
    /// Validated JSON output (text), for schema'd calls.
    pub json: Option<String>,
    /// Tokens.
    pub usage: Usage,
    /// Answered from the journal instead of the provider.
    pub replayed: bool,
    /// The model that answered (for a call that failed: the one it asked for).
    pub model: Option<String>,
    /// When it was queued (ms since the epoch).
    pub queued_ms: i64,
    /// When it got its slot.
    pub started_ms: Option<i64>,
    /// When it finished.
    pub finished_ms: Option<i64>,
}

/// What one call was asked and said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallTranscript {
    /// The prompt.
    pub prompt: String,
    /// Its options (JSON text).
    pub options: String,
    /// The whole conversation (JSON text), when longer than one turn.
    pub transcript: Option<String>,
}

/// A workflow uploaded to (or run by) the service, by content hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredWorkflow {
    /// SHA-256 of the component bytes, or of the script source.
    pub hash: String,
    /// A display name (file name, or the script's `meta.name`).
    pub name: String,
    /// The tenant that uploaded it (`None`: local).
    pub tenant: Option<String>,
    /// What it is.
    pub body: WorkflowBody,
    /// When it was stored, ms since the epoch.
    pub created_ms: i64,
}

/// A stored workflow as listed: what it is, not its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkflowListing {
    /// SHA-256 of the component bytes, or of the script source.
    pub hash: String,
    /// Its display name.
    pub name: String,
    /// Whether it is a script (else a component).
    pub script: bool,
    /// When it was stored, ms since the epoch.
    pub created_ms: i64,
}

/// A stored workflow's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkflowBody {
    /// A component's bytes.
    Component(Vec<u8>),
    /// A script, and the hash of the runtime component that runs it.
    Script {
        /// The source.
        source: String,
        /// SHA-256 of its runtime component.
        runtime: String,
    },
}

/// A tenant as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRow {
    /// Its name.
    pub name: String,
    /// Its quota (JSON), as the service defines it.
    pub quota: String,
    /// When it was added.
    pub created_ms: i64,
}

/// An API token as stored (only its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// Public id, to revoke it by.
    pub id: String,
    /// Its tenant.
    pub tenant: String,
    /// SHA-256 of the secret.
    pub hash: String,
    /// Whether it may only read.
    pub read_only: bool,
    /// When it expires, ms since the epoch.
    pub expires_ms: Option<i64>,
    /// Whether it was revoked.
    pub revoked: bool,
    /// When it was made.
    pub created_ms: i64,
}

/// Everything the run service keeps. Implementations must be cheap to share across threads;
/// write methods that return nothing are fire-and-forget (never block a run).
pub trait RunStore: Send + Sync + 'static {
    /// Records a new run and returns its id (waits for the commit).
    fn begin_run(&self, run: NewRun) -> Result<String, StoreError>;
    /// Where run `run`'s agent calls are recorded.
    fn recorder(&self, run: &str) -> Arc<dyn CallRecorder>;
    /// Records a phase.
    fn phase(&self, run: &str, title: &str);
    /// Records a log line.
    fn log(&self, run: &str, line: &str);
    /// Records event `seq` (1-based, per run) as JSON text.
    fn event(&self, run: &str, seq: u64, json: String);
    /// Changes a run's status (queued → running, waits for the commit).
    fn set_status(&self, run: &str, status: RunStatus) -> Result<(), StoreError>;
    /// Records how a run ended, and waits until everything about it is stored.
    fn finish_run(&self, run: &str, finish: RunFinish) -> Result<(), StoreError>;
    /// Waits until every write sent so far is stored.
    fn flush(&self) -> Result<(), StoreError>;
    /// Asks whoever runs `id` to stop it.
    fn request_stop(&self, id: &str) -> Result<(), StoreError>;
    /// Runs still queued or running that someone asked to stop.
    fn stop_requests(&self) -> Result<Vec<String>, StoreError>;
    /// Whether someone asked to stop `id`.
    fn stop_requested(&self, id: &str) -> Result<bool, StoreError>;
    /// Asks whoever runs `run` to stop its call `seq`; `false` when that call is not queued or
    /// running.
    fn request_agent_stop(&self, run: &str, seq: u64) -> Result<bool, StoreError>;
    /// Calls still queued or running, of runs still queued or running, that someone asked to stop.
    fn agent_stop_requests(&self) -> Result<Vec<(String, u64)>, StoreError>;
    /// A full id, or the one run an unambiguous prefix (of id characters only) names.
    fn resolve_id(&self, id_or_prefix: &str) -> Result<String, StoreError>;
    /// The owner of run `id`: `None` when there is no such run, `Some(None)` for a local run.
    fn run_owner(&self, id: &str) -> Result<Option<Option<String>>, StoreError>;
    /// Runs, newest first.
    fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunSummary>, StoreError>;
    /// Runs still queued or running, oldest first (to pick up after a restart).
    fn unfinished_runs(&self) -> Result<Vec<RunSummary>, StoreError>;
    /// One run's summary row alone (`None`: no such run), without its calls and log.
    fn run_summary(&self, id: &str) -> Result<Option<RunSummary>, StoreError>;
    /// One run with its calls and log.
    fn run_detail(&self, id: &str) -> Result<RunDetail, StoreError>;
    /// One call's prompt, options and transcript.
    fn call_transcript(&self, run: &str, seq: u64) -> Result<Option<CallTranscript>, StoreError>;
    /// Every call of a run in start order, with its output when it completed.
    fn recorded_calls(&self, run: &str) -> Result<Vec<RecordedCall>, StoreError>;
    /// A run's events after `after`, at most `limit`, as (seq, JSON text).
    fn events_after(
        &self,
        run: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError>;
    /// How many runs have each stored status.
    fn run_counts(&self) -> Result<Vec<(RunStatus, u64)>, StoreError>;
    /// Tokens used by each tenant's calls (replays excluded).
    fn tokens_by_tenant(&self) -> Result<Vec<(String, Usage)>, StoreError>;
    /// The number of run `run`'s last stored event (0: none).
    fn last_event_seq(&self, run: &str) -> Result<u64, StoreError>;
    /// Marks a run whose process is gone as failed, so it can be resumed.
    fn mark_abandoned(&self, id: &str) -> Result<(), StoreError>;
    /// Replaces the staged changes (the changeset) recorded for `run`, and the commit its root's
    /// HEAD named when it started (`None`: not a repository).
    fn put_changes(
        &self,
        run: &str,
        base_commit: Option<&str>,
        changes: &[StagedChange],
    ) -> Result<(), StoreError>;
    /// The commit `run`'s root's HEAD named when it started, if recorded.
    fn base_commit(&self, run: &str) -> Result<Option<String>, StoreError>;
    /// The staged changes of `run`, sorted by path (empty for a run that staged none).
    fn changes(&self, run: &str) -> Result<Vec<StagedChange>, StoreError>;
    /// Stores a workflow (idempotent by tenant and hash).
    fn put_workflow(&self, workflow: &StoredWorkflow) -> Result<(), StoreError>;
    /// A workflow of `tenant` (or a local one, with `None`) by hash.
    fn workflow(
        &self,
        tenant: Option<&str>,
        hash: &str,
    ) -> Result<Option<StoredWorkflow>, StoreError>;
    /// The workflows of `tenant` (or the local ones, with `None`), newest first, at most `limit`:
    /// hash, name, kind and when, without their bodies.
    fn workflows(
        &self,
        tenant: Option<&str>,
        limit: usize,
    ) -> Result<Vec<WorkflowListing>, StoreError>;
    /// Adds or replaces a tenant.
    fn put_tenant(&self, tenant: &TenantRow) -> Result<(), StoreError>;
    /// Every tenant.
    fn tenants(&self) -> Result<Vec<TenantRow>, StoreError>;
    /// Stores a new token.
    fn put_token(&self, token: &TokenRow) -> Result<(), StoreError>;
    /// The token whose secret hashes to `hash`.
    fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>, StoreError>;
    /// Every token (hashes only).
    fn tokens(&self) -> Result<Vec<TokenRow>, StoreError>;
    /// Revokes token `id`; false when there is none.
    fn revoke_token(&self, id: &str) -> Result<bool, StoreError>;
    /// Tokens used by `tenant`'s calls that finished at or after `since_ms` (replays excluded).
    fn tenant_tokens_since(&self, tenant: &str, since_ms: i64) -> Result<u64, StoreError>;
}
