//! The run journal: every run, agent call, phase and log line, recorded in SQLite (WAL), so that a
//! crashed or stopped run can resume without paying again for the calls it completed.
//!
//! Writes never block the run: they go over a channel to one writer thread, which commits them in
//! batches (one transaction per batch, as soon as the queue drains), so the hot path costs a
//! channel send. Reads open their own connection; WAL lets them run beside the writer. Prompts and
//! transcripts live in their own table, so large conversations never slow the hot rows.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::agent_loop::{AgentError, AgentOutput, AgentRequest};
use crate::provider::Usage;

/// Why the journal failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
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
}

/// `$CORRAL_DATA_DIR`, else `$XDG_DATA_HOME/corral`, else `~/.local/share/corral`.
pub fn default_data_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CORRAL_DATA_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME") {
        return Some(PathBuf::from(dir).join("corral"));
    }
    std::env::var_os("HOME").map(|home| {
        PathBuf::from(home)
            .join(".local")
            .join("share")
            .join("corral")
    })
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    workflow_hash TEXT NOT NULL,
    script TEXT,
    args TEXT NOT NULL,
    limits TEXT NOT NULL,
    root TEXT,
    provider TEXT NOT NULL,
    status TEXT NOT NULL,
    result TEXT,
    error TEXT,
    started_ms INTEGER NOT NULL,
    finished_ms INTEGER,
    pid INTEGER NOT NULL,
    resumed_from TEXT,
    argv TEXT NOT NULL DEFAULT '[]',
    cwd TEXT NOT NULL DEFAULT '',
    stop_requested INTEGER NOT NULL DEFAULT 0,
    agents INTEGER NOT NULL DEFAULT 0,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    cost REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS calls (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    key TEXT NOT NULL,
    label TEXT,
    phase TEXT,
    model TEXT,
    status TEXT NOT NULL,
    error_kind TEXT,
    error TEXT,
    text TEXT,
    json TEXT,
    answered_model TEXT,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens INTEGER NOT NULL DEFAULT 0,
    cache_write_tokens INTEGER NOT NULL DEFAULT 0,
    queued_ms INTEGER NOT NULL,
    started_ms INTEGER,
    finished_ms INTEGER,
    replayed INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS transcripts (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    prompt TEXT NOT NULL,
    options TEXT NOT NULL,
    transcript TEXT,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_run ON events (run_id);
CREATE INDEX IF NOT EXISTS runs_by_start ON runs (started_ms);
";

/// What is known about a run when it starts.
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
    pub limits: Value,
    /// The root directory, if any.
    pub root: Option<String>,
    /// The provider's name.
    pub provider: String,
    /// The run this one resumes, if any.
    pub resumed_from: Option<String>,
    /// The command-line arguments that started it, so that it can be resumed alike.
    pub argv: Vec<String>,
    /// The directory it was started in (relative paths in `argv` are relative to it).
    pub cwd: String,
}

/// How a run ended (or that it has not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Still going (or killed without a chance to say so).
    Running,
    /// Returned a result.
    Succeeded,
    /// Failed, crashed or hit a limit.
    Failed,
    /// Stopped on request.
    Stopped,
}

impl RunStatus {
    fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Stopped => "stopped",
        }
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

/// One row of `corral runs list`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// Run id.
    pub id: String,
    /// Workflow name.
    pub workflow: String,
    /// Status (`running`, `succeeded`, `failed`, `stopped`).
    pub status: String,
    /// Agent calls.
    pub agents: u64,
    /// Tokens of every kind.
    pub tokens: Usage,
    /// Cost in dollars, when prices are known.
    pub cost: f64,
    /// Start, ms since the Unix epoch.
    pub started_ms: i64,
    /// End, ms since the Unix epoch.
    pub finished_ms: Option<i64>,
    /// Process that ran it.
    pub pid: i64,
}

/// A run with its calls, for `corral runs show`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunDetail {
    /// The summary row.
    pub summary: RunSummary,
    /// Arguments (JSON text).
    pub args: String,
    /// Root directory.
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
    /// The command-line arguments that started it.
    pub argv: Vec<String>,
    /// The directory it was started in.
    pub cwd: String,
    /// Calls in start order.
    pub calls: Vec<CallRow>,
    /// Phases and log lines in order: (kind, text, at_ms).
    pub events: Vec<(String, String, i64)>,
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
    /// Status (`queued`, `running`, `ok`, `failed`).
    pub status: String,
    /// Error kind when failed.
    pub error_kind: Option<String>,
    /// Error message when failed.
    pub error: Option<String>,
    /// Output text.
    pub text: Option<String>,
    /// Tokens.
    pub usage: Usage,
    /// Answered from the journal instead of the provider.
    pub replayed: bool,
    /// The model that answered.
    pub model: Option<String>,
    /// Queued, started, finished (ms since the epoch).
    pub times: (i64, Option<i64>, Option<i64>),
}

enum Op {
    BeginRun(String, NewRun, i64),
    Queued {
        run: String,
        seq: u64,
        key: String,
        label: Option<String>,
        phase: Option<String>,
        model: String,
        prompt: String,
        options: String,
        at: i64,
    },
    Finished {
        run: String,
        seq: u64,
        outcome: Result<AgentOutput, AgentError>,
        replayed: bool,
        started: Option<i64>,
        transcript: Option<String>,
        at: i64,
    },
    Event {
        run: String,
        kind: &'static str,
        text: String,
        at: i64,
    },
    FinishRun {
        run: String,
        status: RunStatus,
        result: Option<String>,
        error: Option<String>,
        agents: u64,
        usage: Usage,
        at: i64,
    },
    Flush(mpsc::SyncSender<Result<(), String>>),
}

/// A handle on the journal; cheap to clone, shared by every run of a process.
#[derive(Clone)]
pub struct Journal {
    path: PathBuf,
    sender: Arc<Mutex<mpsc::Sender<Op>>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// Opens (creating if needed) the journal at `path` and starts its writer thread.
    pub fn open(path: &Path) -> Result<Self, JournalError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| sqlite_error(path, e))?;
        }
        let connection = Connection::open(path).map_err(|e| sqlite_error(path, e))?;
        connection
            .execute_batch(SCHEMA)
            .map_err(|e| sqlite_error(path, e))?;
        let (sender, receiver) = mpsc::channel();
        let writer_path = path.to_path_buf();
        std::thread::Builder::new()
            .name("corral-journal".into())
            .spawn(move || writer(connection, receiver, writer_path))
            .map_err(|e| sqlite_error(path, e))?;
        Ok(Journal {
            path: path.to_path_buf(),
            sender: Arc::new(Mutex::new(sender)),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records a new run and returns its id.
    pub fn begin_run(&self, run: NewRun) -> Result<String, JournalError> {
        let id = new_run_id();
        self.send(Op::BeginRun(id.clone(), run, now_ms()));
        self.flush()?;
        Ok(id)
    }

    /// Records that call `seq` was accepted; `described` is the key and options from [`describe_call`].
    pub fn call_queued(
        &self,
        run: &str,
        seq: u64,
        described: (String, String),
        request: &AgentRequest,
        model: &str,
    ) {
        let (key, options) = described;
        self.send(Op::Queued {
            run: run.to_string(),
            seq,
            key,
            label: request.label.clone(),
            phase: request.phase.clone(),
            model: model.to_string(),
            prompt: request.prompt.clone(),
            options,
            at: now_ms(),
        });
    }

    /// Records how call `seq` ended, and when it got its concurrency slot (`started_ms`; the
    /// start is not written on its own, which saves a row update per call on the hot path).
    pub fn call_finished(
        &self,
        run: &str,
        seq: u64,
        outcome: &Result<AgentOutput, AgentError>,
        replayed: bool,
        started_ms: Option<i64>,
        transcript: Option<String>,
    ) {
        self.send(Op::Finished {
            run: run.to_string(),
            seq,
            outcome: outcome.clone(),
            replayed,
            started: started_ms,
            transcript,
            at: now_ms(),
        });
    }

    /// Records a phase.
    pub fn phase(&self, run: &str, title: &str) {
        self.send(Op::Event {
            run: run.to_string(),
            kind: "phase",
            text: title.to_string(),
            at: now_ms(),
        });
    }

    /// Records a log line.
    pub fn log(&self, run: &str, line: &str) {
        self.send(Op::Event {
            run: run.to_string(),
            kind: "log",
            text: line.to_string(),
            at: now_ms(),
        });
    }

    /// Records how a run ended, and waits until everything about it is on disk.
    #[allow(clippy::too_many_arguments)]
    pub fn finish_run(
        &self,
        run: &str,
        status: RunStatus,
        result: Option<String>,
        error: Option<String>,
        agents: u64,
        usage: Usage,
    ) -> Result<(), JournalError> {
        self.send(Op::FinishRun {
            run: run.to_string(),
            status,
            result,
            error,
            agents,
            usage,
            at: now_ms(),
        });
        self.flush()
    }

    /// Waits until every write sent so far is committed.
    pub fn flush(&self) -> Result<(), JournalError> {
        let (ack, done) = mpsc::sync_channel(1);
        self.send(Op::Flush(ack));
        done.recv()
            .map_err(|_| JournalError::WriterGone("it exited".to_string()))?
            .map_err(JournalError::WriterGone)
    }

    fn send(&self, op: Op) {
        // If the writer died, `flush` reports it; individual writes stay fire-and-forget.
        let _ = self
            .sender
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(op);
    }

    fn reader(&self) -> Result<Connection, JournalError> {
        let connection = Connection::open(&self.path).map_err(|e| sqlite_error(&self.path, e))?;
        // Readers may write small things (a stop request); wait for the writer instead of failing.
        connection
            .busy_timeout(std::time::Duration::from_secs(10))
            .map_err(|e| sqlite_error(&self.path, e))?;
        Ok(connection)
    }

    /// Asks the process running `id` to stop it (it checks a few times a second).
    pub fn request_stop(&self, id: &str) -> Result<(), JournalError> {
        self.reader()?
            .execute("UPDATE runs SET stop_requested = 1 WHERE id = ?1", [id])
            .map(|_| ())
            .map_err(|e| sqlite_error(&self.path, e))
    }

    /// Records what a run cost, in dollars.
    pub fn set_cost(&self, id: &str, cost: f64) -> Result<(), JournalError> {
        self.reader()?
            .execute("UPDATE runs SET cost = ?2 WHERE id = ?1", params![id, cost])
            .map(|_| ())
            .map_err(|e| sqlite_error(&self.path, e))
    }

    /// Whether someone asked to stop `id`.
    pub fn stop_requested(&self, id: &str) -> Result<bool, JournalError> {
        self.reader()?
            .query_row(
                "SELECT stop_requested FROM runs WHERE id = ?1",
                [id],
                |row| row.get::<_, i64>(0),
            )
            .optional()
            .map(|flag| flag == Some(1))
            .map_err(|e| sqlite_error(&self.path, e))
    }

    /// Resolves a full id or an unambiguous prefix.
    pub fn resolve_id(&self, id_or_prefix: &str) -> Result<String, JournalError> {
        let db = self.reader()?;
        let pattern = format!("{}%", id_or_prefix.replace(['%', '_'], ""));
        let mut statement = db
            .prepare("SELECT id FROM runs WHERE id LIKE ?1 LIMIT 2")
            .map_err(|e| sqlite_error(&self.path, e))?;
        let ids: Vec<String> = statement
            .query_map([pattern], |row| row.get(0))
            .and_then(Iterator::collect)
            .map_err(|e| sqlite_error(&self.path, e))?;
        match ids.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(JournalError::UnknownRun(id_or_prefix.to_string())),
            _ => Err(JournalError::AmbiguousRun(id_or_prefix.to_string())),
        }
    }

    /// The runs, newest first.
    pub fn list_runs(&self, limit: usize) -> Result<Vec<RunSummary>, JournalError> {
        let db = self.reader()?;
        let mut statement = db
            .prepare(&format!(
                "SELECT {SUMMARY_COLUMNS} FROM runs ORDER BY started_ms DESC, rowid DESC LIMIT ?1"
            ))
            .map_err(|e| sqlite_error(&self.path, e))?;
        statement
            .query_map([limit as i64], summary_row)
            .and_then(Iterator::collect)
            .map_err(|e| sqlite_error(&self.path, e))
    }

    /// One run with its calls and events.
    pub fn run_detail(&self, id: &str) -> Result<RunDetail, JournalError> {
        let db = self.reader()?;
        let err = |e: rusqlite::Error| sqlite_error(&self.path, e);
        let row = db
            .query_row(
                &format!(
                    "SELECT {SUMMARY_COLUMNS}, args, root, script, result, error, provider, limits, resumed_from, workflow_hash, argv, cwd FROM runs WHERE id = ?1"
                ),
                [id],
                |row| {
                    Ok(RunDetail {
                        summary: summary_row(row)?,
                        args: row.get(12)?,
                        root: row.get(13)?,
                        script: row.get(14)?,
                        result: row.get(15)?,
                        error: row.get(16)?,
                        provider: row.get(17)?,
                        limits: row.get(18)?,
                        resumed_from: row.get(19)?,
                        workflow_hash: row.get(20)?,
                        argv: serde_json::from_str(&row.get::<_, String>(21)?).unwrap_or_default(),
                        cwd: row.get(22)?,
                        calls: Vec::new(),
                        events: Vec::new(),
                    })
                },
            )
            .optional()
            .map_err(err)?;
        let mut detail = row.ok_or_else(|| JournalError::UnknownRun(id.to_string()))?;
        let mut calls = db
            .prepare(
                "SELECT seq, label, phase, status, error_kind, error, text, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, replayed, queued_ms, started_ms, finished_ms, answered_model FROM calls WHERE run_id = ?1 ORDER BY seq",
            )
            .map_err(err)?;
        detail.calls = calls
            .query_map([id], |row| {
                Ok(CallRow {
                    seq: row.get::<_, i64>(0)? as u64,
                    label: row.get(1)?,
                    phase: row.get(2)?,
                    status: row.get(3)?,
                    error_kind: row.get(4)?,
                    error: row.get(5)?,
                    text: row.get(6)?,
                    usage: usage_at(row, 7)?,
                    replayed: row.get::<_, i64>(11)? != 0,
                    times: (row.get(12)?, row.get(13)?, row.get(14)?),
                    model: row.get(15)?,
                })
            })
            .and_then(Iterator::collect)
            .map_err(err)?;
        let mut events = db
            .prepare("SELECT kind, text, at_ms FROM events WHERE run_id = ?1 ORDER BY rowid")
            .map_err(err)?;
        detail.events = events
            .query_map([id], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .and_then(Iterator::collect)
            .map_err(err)?;
        Ok(detail)
    }

    /// The prompt, options and transcript of one call.
    pub fn call_transcript(
        &self,
        run: &str,
        seq: u64,
    ) -> Result<Option<(String, String, Option<String>)>, JournalError> {
        let db = self.reader()?;
        db.query_row(
            "SELECT prompt, options, transcript FROM transcripts WHERE run_id = ?1 AND seq = ?2",
            params![run, seq as i64],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .optional()
        .map_err(|e| sqlite_error(&self.path, e))
    }

    /// Every call of a run in start order, with its output when it completed.
    pub fn recorded_calls(&self, run: &str) -> Result<Vec<RecordedCall>, JournalError> {
        let db = self.reader()?;
        let err = |e: rusqlite::Error| sqlite_error(&self.path, e);
        let mut statement = db
            .prepare(
                "SELECT seq, key, status, text, json, answered_model, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens FROM calls WHERE run_id = ?1 ORDER BY seq",
            )
            .map_err(err)?;
        statement
            .query_map([run], |row| {
                let status: String = row.get(2)?;
                let output = if status == "ok" {
                    let json: Option<String> = row.get(4)?;
                    Some(AgentOutput {
                        text: row.get::<_, Option<String>>(3)?.unwrap_or_default(),
                        json: json.and_then(|text| serde_json::from_str(&text).ok()),
                        usage: usage_at(row, 6)?,
                        model: row.get::<_, Option<String>>(5)?.unwrap_or_default(),
                    })
                } else {
                    None
                };
                Ok(RecordedCall {
                    seq: row.get::<_, i64>(0)? as u64,
                    key: row.get(1)?,
                    output,
                })
            })
            .and_then(Iterator::collect)
            .map_err(err)
    }

    /// The status and process of a run.
    pub fn run_status(&self, id: &str) -> Result<(String, i64), JournalError> {
        let db = self.reader()?;
        db.query_row("SELECT status, pid FROM runs WHERE id = ?1", [id], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()
        .map_err(|e| sqlite_error(&self.path, e))?
        .ok_or_else(|| JournalError::UnknownRun(id.to_string()))
    }

    /// Marks a run whose process is gone as failed, so it can be resumed.
    pub fn mark_abandoned(&self, id: &str) -> Result<(), JournalError> {
        let db = self.reader()?;
        db.execute(
            "UPDATE runs SET status = 'failed', error = COALESCE(error, 'the process running it ended without finishing it'), finished_ms = COALESCE(finished_ms, ?2) WHERE id = ?1 AND status = 'running'",
            params![id, now_ms()],
        )
        .map(|_| ())
        .map_err(|e| sqlite_error(&self.path, e))
    }
}

/// Counts and tokens come from the calls themselves, so a run killed before it could finish still
/// shows what it did; answers replayed from the journal were not paid again and do not count.
const SUMMARY_COLUMNS: &str = "id, workflow, status, \
    (SELECT COUNT(*) FROM calls c WHERE c.run_id = runs.id), \
    (SELECT COALESCE(SUM(input_tokens), 0) FROM calls c WHERE c.run_id = runs.id AND replayed = 0), \
    (SELECT COALESCE(SUM(output_tokens), 0) FROM calls c WHERE c.run_id = runs.id AND replayed = 0), \
    (SELECT COALESCE(SUM(cache_read_tokens), 0) FROM calls c WHERE c.run_id = runs.id AND replayed = 0), \
    (SELECT COALESCE(SUM(cache_write_tokens), 0) FROM calls c WHERE c.run_id = runs.id AND replayed = 0), \
    cost, started_ms, finished_ms, pid";

fn summary_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RunSummary> {
    Ok(RunSummary {
        id: row.get(0)?,
        workflow: row.get(1)?,
        status: row.get(2)?,
        agents: row.get::<_, i64>(3)? as u64,
        tokens: usage_at(row, 4)?,
        cost: row.get(8)?,
        started_ms: row.get(9)?,
        finished_ms: row.get(10)?,
        pid: row.get(11)?,
    })
}

fn usage_at(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Usage> {
    Ok(Usage {
        input_tokens: row.get::<_, i64>(first)? as u64,
        output_tokens: row.get::<_, i64>(first + 1)? as u64,
        cache_read_tokens: row.get::<_, i64>(first + 2)? as u64,
        cache_write_tokens: row.get::<_, i64>(first + 3)? as u64,
    })
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
    serde_json::json!({
        "schema": request.schema.as_ref().map(|s| s.source().clone()),
        "tools": request.tools,
        "effort": request.effort.map(|e| format!("{e:?}")),
        "max_tokens": request.max_tokens,
        "max_turns": request.max_turns,
        "timeout_ms": request.timeout.map(|t| t.as_millis() as u64),
    })
}

fn writer(mut connection: Connection, receiver: mpsc::Receiver<Op>, path: PathBuf) {
    let mut failure: Option<String> = None;
    while let Ok(first) = receiver.recv() {
        let mut batch = vec![first];
        while batch.len() < 4096 {
            match receiver.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let mut acks = Vec::new();
        if failure.is_none()
            && let Err(error) = apply(&mut connection, batch, &mut acks)
        {
            failure = Some(format!("{}: {error}", path.display()));
        }
        for ack in acks {
            let _ = ack.send(failure.clone().map_or(Ok(()), Err));
        }
    }
}

fn apply(
    connection: &mut Connection,
    batch: Vec<Op>,
    acks: &mut Vec<mpsc::SyncSender<Result<(), String>>>,
) -> rusqlite::Result<()> {
    let tx = connection.transaction()?;
    for op in batch {
        match op {
            Op::BeginRun(id, run, at) => {
                tx.prepare_cached(
                    "INSERT INTO runs (id, workflow, workflow_hash, script, args, limits, root, provider, status, started_ms, pid, resumed_from, argv, cwd) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'running', ?9, ?10, ?11, ?12, ?13)")?.execute(
                    params![id, run.workflow, run.workflow_hash, run.script, run.args, run.limits.to_string(), run.root, run.provider, at, std::process::id(), run.resumed_from, serde_json::to_string(&run.argv).unwrap_or_default(), run.cwd],
                )?;
            }
            Op::Queued {
                run,
                seq,
                key,
                label,
                phase,
                model,
                prompt,
                options,
                at,
            } => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO calls (run_id, seq, key, label, phase, model, status, queued_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', ?7)")?.execute(
                    params![run, seq as i64, key, label, phase, model, at],
                )?;
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO transcripts (run_id, seq, prompt, options) VALUES (?1, ?2, ?3, ?4)")?.execute(
                    params![run, seq as i64, prompt, options],
                )?;
            }
            Op::Finished {
                run,
                seq,
                outcome,
                replayed,
                started,
                transcript,
                at,
            } => {
                if let Some(transcript) = transcript {
                    tx.prepare_cached(
                        "UPDATE transcripts SET transcript = ?3 WHERE run_id = ?1 AND seq = ?2",
                    )?
                    .execute(params![run, seq as i64, transcript])?;
                }
                let (status, kind, error, text, json, model, usage) = match &outcome {
                    Ok(output) => (
                        "ok",
                        None,
                        None,
                        Some(output.text.clone()),
                        output.json.as_ref().map(Value::to_string),
                        Some(output.model.clone()),
                        output.usage,
                    ),
                    Err(e) => (
                        "failed",
                        Some(e.kind()),
                        Some(e.to_string()),
                        None,
                        None,
                        None,
                        Usage::default(),
                    ),
                };
                tx.prepare_cached(
                    "UPDATE calls SET status = ?3, error_kind = ?4, error = ?5, text = ?6, json = ?7, answered_model = ?8, input_tokens = ?9, output_tokens = ?10, cache_read_tokens = ?11, cache_write_tokens = ?12, finished_ms = ?13, started_ms = COALESCE(?15, started_ms, ?13), replayed = ?14 WHERE run_id = ?1 AND seq = ?2")?.execute(
                    params![run, seq as i64, status, kind, error, text, json, model, usage.input_tokens as i64, usage.output_tokens as i64, usage.cache_read_tokens as i64, usage.cache_write_tokens as i64, at, replayed as i64, started],
                )?;
            }
            Op::Event {
                run,
                kind,
                text,
                at,
            } => {
                tx.prepare_cached(
                    "INSERT INTO events (run_id, at_ms, kind, text) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![run, at, kind, text])?;
            }
            Op::FinishRun {
                run,
                status,
                result,
                error,
                agents,
                usage,
                at,
            } => {
                tx.prepare_cached(
                    "UPDATE runs SET status = ?2, result = ?3, error = ?4, agents = ?5, input_tokens = ?6, output_tokens = ?7, cache_read_tokens = ?8, cache_write_tokens = ?9, finished_ms = ?10 WHERE id = ?1")?.execute(
                    params![run, status.as_str(), result, error, agents as i64, usage.input_tokens as i64, usage.output_tokens as i64, usage.cache_read_tokens as i64, usage.cache_write_tokens as i64, at],
                )?;
            }
            Op::Flush(ack) => acks.push(ack),
        }
    }
    tx.commit()
}

fn sqlite_error(path: &Path, error: impl std::fmt::Display) -> JournalError {
    JournalError::Sqlite {
        path: path.to_path_buf(),
        message: error.to_string(),
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A short, unique, roughly time-ordered id: 12 characters of lowercase base32 — 30 bits of
/// seconds (so `list` sorts roughly by start), 10 bits of a per-process counter (unique within a
/// process), 20 bits of a hash of the process id and clock (unique across processes).
fn new_run_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = now_ms();
    let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut hasher = Sha256::new();
    hasher.update(now.to_le_bytes());
    hasher.update(std::process::id().to_le_bytes());
    let random = hasher.finalize();
    let noise = u64::from(u32::from_le_bytes([random[0], random[1], random[2], 0]) & 0xf_ffff);
    let seconds = (now / 1000) as u64 & 0x3fff_ffff;
    let mut value: u64 = (seconds << 30) | ((counter & 0x3ff) << 20) | noise;
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let mut id = [0u8; 12];
    for slot in id.iter_mut().rev() {
        *slot = ALPHABET[(value & 31) as usize];
        value >>= 5;
    }
    String::from_utf8(id.to_vec()).expect("the alphabet is ASCII")
}

/// Formats ms since the epoch as `YYYY-MM-DD HH:MM:SS` UTC.
pub fn format_time(ms: i64) -> String {
    let seconds = ms.div_euclid(1000);
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
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
