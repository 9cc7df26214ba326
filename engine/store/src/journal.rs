//! The run journal: every run, agent call, phase and log line, recorded in SQLite (WAL), so that a
//! crashed or stopped run can resume without paying again for the calls it completed.
//!
//! Writes never block the run: they go over a channel to one writer thread, which commits them in
//! batches (one transaction per batch, as soon as the queue drains), so the hot path costs a
//! channel send. Reads open their own connection; WAL lets them run beside the writer. Prompts and
//! transcripts live in their own table, so large conversations never slow the hot rows.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;
use sha2::{Digest, Sha256};

use corral_host::agent_loop::{AgentError, AgentOutput, AgentRequest};
use corral_host::provider::Usage;
use corral_host::record::{CallRecorder, RecordedCall, now_ms};

use crate::{
    CallRow, CallStatus, CallTranscript, LogEntry, NewRun, RunDetail, RunFilter, RunFinish,
    RunStatus, RunStore, RunSummary, StagedChange, StoreError, StoredWorkflow, TenantRow, TokenRow,
    WorkflowBody, WorkflowListing,
};

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
    stop_requested INTEGER NOT NULL DEFAULT 0,
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
CREATE TABLE IF NOT EXISTS run_events (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    json TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS workflows (
    tenant TEXT NOT NULL,
    hash TEXT NOT NULL,
    name TEXT NOT NULL,
    component BLOB,
    script TEXT,
    runtime TEXT,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant, hash)
);
CREATE TABLE IF NOT EXISTS changes (
    run_id TEXT NOT NULL,
    path TEXT NOT NULL,
    base TEXT,
    content BLOB,
    PRIMARY KEY (run_id, path)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tenants (
    name TEXT PRIMARY KEY,
    quota TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    read_only INTEGER NOT NULL,
    expires_ms INTEGER,
    revoked INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL
);
";

/// Columns added to `runs` after the first release, added to older journals when opened.
const ADDED_RUN_COLUMNS: [(&str, &str); 3] = [
    ("spec", "TEXT"),
    ("tenant", "TEXT"),
    // The commit HEAD named when a run that may write started (what `--branch` builds on).
    ("base_commit", "TEXT"),
];
/// Columns of `calls` added since the first journal format.
const ADDED_CALL_COLUMNS: [(&str, &str); 2] = [
    ("stop_requested", "INTEGER NOT NULL DEFAULT 0"),
    // What a call wrote into its run's changeset (JSON), so that a replay stages it again.
    ("changes", "TEXT"),
];

enum Op {
    BeginRun(String, Box<NewRun>, i64),
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
        /// Every token the call was charged (a failed call's too).
        usage: Usage,
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
    RunEvent {
        run: String,
        seq: u64,
        json: String,
    },
    SetStatus {
        run: String,
        status: RunStatus,
    },
    FinishRun {
        run: String,
        finish: RunFinish,
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
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| sqlite_error(path, e))?;
        }
        let connection = Connection::open(path).map_err(|e| sqlite_error(path, e))?;
        connection
            .busy_timeout(std::time::Duration::from_secs(10))
            .map_err(|e| sqlite_error(path, e))?;
        connection
            .execute_batch(SCHEMA)
            .map_err(|e| sqlite_error(path, e))?;
        migrate(&connection).map_err(|e| sqlite_error(path, e))?;
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

    fn send(&self, op: Op) {
        // If the writer died, `flush` reports it; individual writes stay fire-and-forget.
        let _ = self
            .sender
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(op);
    }

    fn reader(&self) -> Result<Connection, StoreError> {
        let connection = Connection::open(&self.path).map_err(|e| self.error(e))?;
        // Readers may write small things (a stop request); wait for the writer instead of failing.
        connection
            .busy_timeout(std::time::Duration::from_secs(10))
            .map_err(|e| self.error(e))?;
        Ok(connection)
    }

    fn error(&self, error: impl std::fmt::Display) -> StoreError {
        sqlite_error(&self.path, error)
    }

    /// Runs one statement that changes rows, on a reader connection.
    fn execute(&self, sql: &str, values: impl rusqlite::Params) -> Result<usize, StoreError> {
        self.reader()?
            .execute(sql, values)
            .map_err(|e| self.error(e))
    }
}

/// The recorder of one run's calls.
struct RunRecorder {
    journal: Journal,
    run: String,
}

impl CallRecorder for RunRecorder {
    fn call_queued(
        &self,
        seq: u64,
        described: (String, String),
        request: &AgentRequest,
        model: &str,
    ) {
        let (key, options) = described;
        self.journal.send(Op::Queued {
            run: self.run.clone(),
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

    fn call_finished(
        &self,
        seq: u64,
        outcome: &Result<AgentOutput, AgentError>,
        usage: &Usage,
        replayed: bool,
        started_ms: Option<i64>,
        transcript: Option<String>,
    ) {
        self.journal.send(Op::Finished {
            run: self.run.clone(),
            seq,
            outcome: outcome.clone(),
            usage: *usage,
            replayed,
            started: started_ms,
            transcript,
            at: now_ms(),
        });
    }
}

impl RunStore for Journal {
    fn begin_run(&self, run: NewRun) -> Result<String, StoreError> {
        let id = new_run_id();
        self.send(Op::BeginRun(id.clone(), Box::new(run), now_ms()));
        self.flush()?;
        Ok(id)
    }

    fn recorder(&self, run: &str) -> Arc<dyn CallRecorder> {
        Arc::new(RunRecorder {
            journal: self.clone(),
            run: run.to_string(),
        })
    }

    fn phase(&self, run: &str, title: &str) {
        self.send(Op::Event {
            run: run.to_string(),
            kind: "phase",
            text: title.to_string(),
            at: now_ms(),
        });
    }

    fn log(&self, run: &str, line: &str) {
        self.send(Op::Event {
            run: run.to_string(),
            kind: "log",
            text: line.to_string(),
            at: now_ms(),
        });
    }

    fn event(&self, run: &str, seq: u64, json: String) {
        self.send(Op::RunEvent {
            run: run.to_string(),
            seq,
            json,
        });
    }

    fn set_status(&self, run: &str, status: RunStatus) -> Result<(), StoreError> {
        self.send(Op::SetStatus {
            run: run.to_string(),
            status,
        });
        self.flush()
    }

    fn finish_run(&self, run: &str, finish: RunFinish) -> Result<(), StoreError> {
        self.send(Op::FinishRun {
            run: run.to_string(),
            finish,
            at: now_ms(),
        });
        self.flush()
    }

    fn flush(&self) -> Result<(), StoreError> {
        let (ack, done) = mpsc::sync_channel(1);
        self.send(Op::Flush(ack));
        done.recv()
            .map_err(|_| StoreError::WriterGone("it exited".to_string()))?
            .map_err(StoreError::WriterGone)
    }

    fn request_stop(&self, id: &str) -> Result<(), StoreError> {
        self.execute("UPDATE runs SET stop_requested = 1 WHERE id = ?1", [id])
            .map(|_| ())
    }

    fn stop_requests(&self) -> Result<Vec<String>, StoreError> {
        let db = self.reader()?;
        let mut statement = db
            .prepare(
                "SELECT id FROM runs WHERE stop_requested = 1 AND status IN ('queued', 'running')",
            )
            .map_err(|e| self.error(e))?;
        statement
            .query_map([], |row| row.get(0))
            .and_then(Iterator::collect)
            .map_err(|e| self.error(e))
    }

    fn stop_requested(&self, id: &str) -> Result<bool, StoreError> {
        self.reader()?
            .query_row(
                "SELECT stop_requested FROM runs WHERE id = ?1",
                [id],
                |row| row.get::<_, i64>(0),
            )
            .optional()
            .map(|flag| flag == Some(1))
            .map_err(|e| self.error(e))
    }

    fn request_agent_stop(&self, run: &str, seq: u64) -> Result<bool, StoreError> {
        self.execute(
            "UPDATE calls SET stop_requested = 1 WHERE run_id = ?1 AND seq = ?2 AND status = 'queued'",
            params![run, seq as i64],
        )
        .map(|changed| changed > 0)
    }

    fn agent_stop_requests(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let db = self.reader()?;
        let mut statement = db
            .prepare(
                "SELECT c.run_id, c.seq FROM calls c JOIN runs r ON r.id = c.run_id \
                 WHERE c.stop_requested = 1 AND c.status = 'queued' \
                 AND r.status IN ('queued', 'running')",
            )
            .map_err(|e| self.error(e))?;
        statement
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)? as u64))
            })
            .and_then(Iterator::collect)
            .map_err(|e| self.error(e))
    }

    fn resolve_id(&self, id_or_prefix: &str) -> Result<String, StoreError> {
        // Ids are lowercase base32: anything else (empty, `%`, `_`, spaces) names no run, and
        // is never handed to LIKE as a pattern.
        let valid = !id_or_prefix.is_empty()
            && id_or_prefix.len() <= 12
            && id_or_prefix
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
        if !valid {
            return Err(StoreError::UnknownRun(id_or_prefix.to_string()));
        }
        let db = self.reader()?;
        let pattern = format!("{id_or_prefix}%");
        let mut statement = db
            .prepare("SELECT id FROM runs WHERE id LIKE ?1 LIMIT 2")
            .map_err(|e| self.error(e))?;
        let ids: Vec<String> = statement
            .query_map([pattern], |row| row.get(0))
            .and_then(Iterator::collect)
            .map_err(|e| self.error(e))?;
        match ids.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(StoreError::UnknownRun(id_or_prefix.to_string())),
            _ => Err(StoreError::AmbiguousRun(id_or_prefix.to_string())),
        }
    }

    fn run_owner(&self, id: &str) -> Result<Option<Option<String>>, StoreError> {
        self.reader()?
            .query_row("SELECT tenant FROM runs WHERE id = ?1", [id], |row| {
                row.get(0)
            })
            .optional()
            .map_err(|e| self.error(e))
    }

    fn list_runs(&self, filter: &RunFilter) -> Result<Vec<RunSummary>, StoreError> {
        let db = self.reader()?;
        let before: Option<(i64, i64)> = match &filter.before {
            Some(id) => db
                .query_row(
                    "SELECT started_ms, rowid FROM runs WHERE id = ?1",
                    [id],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
                .map_err(|e| self.error(e))?,
            None => None,
        };
        let mut statement = db
            .prepare(&format!(
                "SELECT {SUMMARY_COLUMNS} FROM runs \
                 WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR status = ?2) \
                 AND (?3 IS NULL OR started_ms < ?3 OR (started_ms = ?3 AND rowid < ?4)) \
                 ORDER BY started_ms DESC, rowid DESC LIMIT ?5"
            ))
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map(
                params![
                    filter.tenant,
                    filter.status.map(RunStatus::as_str),
                    before.map(|b| b.0),
                    before.map(|b| b.1),
                    filter.limit as i64
                ],
                summary_row,
            )
            .and_then(Iterator::collect)
            .map_err(|e| self.error(e))?;
        Ok(rows)
    }

    fn unfinished_runs(&self) -> Result<Vec<RunSummary>, StoreError> {
        let db = self.reader()?;
        let mut statement = db
            .prepare(&format!(
                "SELECT {SUMMARY_COLUMNS} FROM runs WHERE status IN ('queued', 'running') \
                 ORDER BY started_ms, rowid"
            ))
            .map_err(|e| self.error(e))?;
        statement
            .query_map([], summary_row)
            .and_then(Iterator::collect)
            .map_err(|e| self.error(e))
    }

    fn run_summary(&self, id: &str) -> Result<Option<RunSummary>, StoreError> {
        self.reader()?
            .query_row(
                &format!("SELECT {SUMMARY_COLUMNS} FROM runs WHERE id = ?1"),
                [id],
                summary_row,
            )
            .optional()
            .map_err(|e| self.error(e))
    }

    fn run_detail(&self, id: &str) -> Result<RunDetail, StoreError> {
        let db = self.reader()?;
        let err = |e: rusqlite::Error| self.error(e);
        let row = db
            .query_row(
                &format!(
                    "SELECT {SUMMARY_COLUMNS}, args, root, script, result, error, provider, limits, resumed_from, workflow_hash, spec FROM runs WHERE id = ?1"
                ),
                [id],
                |row| {
                    Ok(RunDetail {
                        summary: summary_row(row)?,
                        args: row.get(SUMMARY_WIDTH)?,
                        root: row.get(SUMMARY_WIDTH + 1)?,
                        script: row.get(SUMMARY_WIDTH + 2)?,
                        result: row.get(SUMMARY_WIDTH + 3)?,
                        error: row.get(SUMMARY_WIDTH + 4)?,
                        provider: row.get(SUMMARY_WIDTH + 5)?,
                        limits: row.get(SUMMARY_WIDTH + 6)?,
                        resumed_from: row.get(SUMMARY_WIDTH + 7)?,
                        workflow_hash: row.get(SUMMARY_WIDTH + 8)?,
                        spec: row.get(SUMMARY_WIDTH + 9)?,
                        calls: Vec::new(),
                        events: Vec::new(),
                    })
                },
            )
            .optional()
            .map_err(err)?;
        let mut detail = row.ok_or_else(|| StoreError::UnknownRun(id.to_string()))?;
        let mut calls = db
            .prepare(
                "SELECT seq, label, phase, status, error_kind, error, text, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, replayed, queued_ms, started_ms, finished_ms, COALESCE(answered_model, model), json FROM calls WHERE run_id = ?1 ORDER BY seq",
            )
            .map_err(err)?;
        detail.calls = calls
            .query_map([id], |row| {
                let status: String = row.get(3)?;
                Ok(CallRow {
                    seq: row.get::<_, i64>(0)? as u64,
                    label: row.get(1)?,
                    phase: row.get(2)?,
                    status: CallStatus::parse(&status).unwrap_or(CallStatus::Queued),
                    error_kind: row.get(4)?,
                    error: row.get(5)?,
                    text: row.get(6)?,
                    usage: usage_at(row, 7)?,
                    replayed: row.get::<_, i64>(11)? != 0,
                    queued_ms: row.get(12)?,
                    started_ms: row.get(13)?,
                    finished_ms: row.get(14)?,
                    model: row.get(15)?,
                    json: row.get(16)?,
                })
            })
            .and_then(Iterator::collect)
            .map_err(err)?;
        let mut events = db
            .prepare("SELECT kind, text, at_ms FROM events WHERE run_id = ?1 ORDER BY rowid")
            .map_err(err)?;
        detail.events = events
            .query_map([id], |row| {
                Ok(LogEntry {
                    kind: row.get(0)?,
                    text: row.get(1)?,
                    at_ms: row.get(2)?,
                })
            })
            .and_then(Iterator::collect)
            .map_err(err)?;
        Ok(detail)
    }

    fn call_transcript(&self, run: &str, seq: u64) -> Result<Option<CallTranscript>, StoreError> {
        let db = self.reader()?;
        db.query_row(
            "SELECT prompt, options, transcript FROM transcripts WHERE run_id = ?1 AND seq = ?2",
            params![run, seq as i64],
            |row| {
                Ok(CallTranscript {
                    prompt: row.get(0)?,
                    options: row.get(1)?,
                    transcript: row.get(2)?,
                })
            },
        )
        .optional()
        .map_err(|e| self.error(e))
    }

    fn recorded_calls(&self, run: &str) -> Result<Vec<RecordedCall>, StoreError> {
        let db = self.reader()?;
        let err = |e: rusqlite::Error| self.error(e);
        let mut statement = db
            .prepare(
                "SELECT seq, key, status, text, json, answered_model, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, changes FROM calls WHERE run_id = ?1 ORDER BY seq",
            )
            .map_err(err)?;
        statement
            .query_map([run], |row| {
                let status: String = row.get(2)?;
                // Changes that do not parse make the answer unusable: the call is sent again
                // rather than replayed without what it wrote.
                let changes = match row.get::<_, Option<String>>(10)? {
                    None => Some(Vec::new()),
                    Some(text) => serde_json::from_str(&text).ok(),
                };
                let output =
                    if let (true, Some(changes)) = (status == CallStatus::Ok.as_str(), changes) {
                        let json: Option<String> = row.get(4)?;
                        Some(AgentOutput {
                            text: row.get::<_, Option<String>>(3)?.unwrap_or_default(),
                            json: json.and_then(|text| serde_json::from_str(&text).ok()),
                            usage: usage_at(row, 6)?,
                            model: row.get::<_, Option<String>>(5)?.unwrap_or_default(),
                            changes,
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

    fn events_after(
        &self,
        run: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let db = self.reader()?;
        let mut statement = db
            .prepare_cached(
                "SELECT seq, json FROM run_events WHERE run_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )
            .map_err(|e| self.error(e))?;
        statement
            .query_map(params![run, after as i64, limit as i64], |row| {
                Ok((row.get::<_, i64>(0)? as u64, row.get(1)?))
            })
            .and_then(Iterator::collect)
            .map_err(|e| self.error(e))
    }

    fn run_counts(&self) -> Result<Vec<(RunStatus, u64)>, StoreError> {
        let db = self.reader()?;
        let mut statement = db
            .prepare("SELECT status, COUNT(*) FROM runs GROUP BY status ORDER BY status")
            .map_err(|e| self.error(e))?;
        let rows: Vec<(String, i64)> = statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .and_then(Iterator::collect)
            .map_err(|e| self.error(e))?;
        Ok(rows
            .into_iter()
            .filter_map(|(status, count)| Some((RunStatus::parse(&status)?, count.max(0) as u64)))
            .collect())
    }

    fn tokens_by_tenant(&self) -> Result<Vec<(String, Usage)>, StoreError> {
        let db = self.reader()?;
        let mut statement = db
            .prepare(
                "SELECT r.tenant, COALESCE(SUM(c.input_tokens), 0), COALESCE(SUM(c.output_tokens), 0), \
                 COALESCE(SUM(c.cache_read_tokens), 0), COALESCE(SUM(c.cache_write_tokens), 0) \
                 FROM calls c JOIN runs r ON r.id = c.run_id \
                 WHERE r.tenant IS NOT NULL AND c.replayed = 0 GROUP BY r.tenant ORDER BY r.tenant",
            )
            .map_err(|e| self.error(e))?;
        statement
            .query_map([], |row| Ok((row.get(0)?, usage_at(row, 1)?)))
            .and_then(Iterator::collect)
            .map_err(|e| self.error(e))
    }

    fn last_event_seq(&self, run: &str) -> Result<u64, StoreError> {
        self.reader()?
            .query_row(
                "SELECT COALESCE(MAX(seq), 0) FROM run_events WHERE run_id = ?1",
                [run],
                |row| row.get::<_, i64>(0),
            )
            .map(|seq| seq.max(0) as u64)
            .map_err(|e| self.error(e))
    }

    fn mark_abandoned(&self, id: &str) -> Result<(), StoreError> {
        self.execute(
            "UPDATE runs SET status = 'failed', error = COALESCE(error, 'the process running it ended without finishing it'), finished_ms = COALESCE(finished_ms, ?2) WHERE id = ?1 AND status IN ('running', 'queued')",
            params![id, now_ms()],
        )
        .map(|_| ())
    }

    fn put_changes(
        &self,
        run: &str,
        base_commit: Option<&str>,
        changes: &[StagedChange],
    ) -> Result<(), StoreError> {
        let mut db = self.reader()?;
        let mut write = || -> rusqlite::Result<()> {
            let tx = db.transaction()?;
            tx.execute("DELETE FROM changes WHERE run_id = ?1", params![run])?;
            tx.execute(
                "UPDATE runs SET base_commit = ?2 WHERE id = ?1",
                params![run, base_commit],
            )?;
            {
                let mut insert = tx.prepare(
                    "INSERT INTO changes (run_id, path, base, content) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for change in changes {
                    insert.execute(params![run, change.path, change.base, change.content])?;
                }
            }
            tx.commit()
        };
        write().map_err(|e| self.error(e))
    }

    fn base_commit(&self, run: &str) -> Result<Option<String>, StoreError> {
        let db = self.reader()?;
        db.query_row(
            "SELECT base_commit FROM runs WHERE id = ?1",
            params![run],
            |row| row.get::<_, Option<String>>(0),
        )
        .optional()
        .map(Option::flatten)
        .map_err(|e| self.error(e))
    }

    fn changes(&self, run: &str) -> Result<Vec<StagedChange>, StoreError> {
        let db = self.reader()?;
        let mut statement = db
            .prepare("SELECT path, base, content FROM changes WHERE run_id = ?1 ORDER BY path")
            .map_err(|e| self.error(e))?;
        statement
            .query_map(params![run], |row| {
                Ok(StagedChange {
                    path: row.get(0)?,
                    base: row.get(1)?,
                    content: row.get(2)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.error(e))
    }

    fn put_workflow(&self, workflow: &StoredWorkflow) -> Result<(), StoreError> {
        let (component, script, runtime) = match &workflow.body {
            WorkflowBody::Component(bytes) => (Some(bytes.as_slice()), None, None),
            WorkflowBody::Script { source, runtime } => {
                (None, Some(source.as_str()), Some(runtime.as_str()))
            }
        };
        self.execute(
            "INSERT OR IGNORE INTO workflows (tenant, hash, name, component, script, runtime, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                workflow.tenant.as_deref().unwrap_or(""),
                workflow.hash,
                workflow.name,
                component,
                script,
                runtime,
                workflow.created_ms
            ],
        )
        .map(|_| ())
    }

    fn workflow(
        &self,
        tenant: Option<&str>,
        hash: &str,
    ) -> Result<Option<StoredWorkflow>, StoreError> {
        let db = self.reader()?;
        let row = db
            .query_row(
                "SELECT name, component, script, runtime, created_ms FROM workflows WHERE tenant = ?1 AND hash = ?2",
                params![tenant.unwrap_or(""), hash],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, Option<Vec<u8>>>(1)?,
                        row.get::<_, Option<String>>(2)?,
                        row.get::<_, Option<String>>(3)?,
                        row.get::<_, i64>(4)?,
                    ))
                },
            )
            .optional()
            .map_err(|e| self.error(e))?;
        let Some((name, component, script, runtime, created_ms)) = row else {
            return Ok(None);
        };
        let body = match (component, script, runtime) {
            (Some(bytes), _, _) => WorkflowBody::Component(bytes),
            (None, Some(source), Some(runtime)) => WorkflowBody::Script { source, runtime },
            _ => return Err(StoreError::Corrupt(format!("workflow {hash} has no body"))),
        };
        Ok(Some(StoredWorkflow {
            hash: hash.to_string(),
            name,
            tenant: tenant.map(str::to_string),
            body,
            created_ms,
        }))
    }

    fn workflows(
        &self,
        tenant: Option<&str>,
        limit: usize,
    ) -> Result<Vec<WorkflowListing>, StoreError> {
        let db = self.reader()?;
        let mut statement = db
            .prepare_cached(
                "SELECT hash, name, script IS NOT NULL, created_ms FROM workflows \
                 WHERE tenant = ?1 ORDER BY created_ms DESC, hash LIMIT ?2",
            )
            .map_err(|e| self.error(e))?;
        let rows = statement
            .query_map(
                params![
                    tenant.unwrap_or(""),
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                |row| {
                    Ok(WorkflowListing {
                        hash: row.get(0)?,
                        name: row.get(1)?,
                        script: row.get(2)?,
                        created_ms: row.get(3)?,
                    })
                },
            )
            .map_err(|e| self.error(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.error(e))
    }

    fn put_tenant(&self, tenant: &TenantRow) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO tenants (name, quota, created_ms) VALUES (?1, ?2, ?3) ON CONFLICT (name) DO UPDATE SET quota = excluded.quota",
            params![tenant.name, tenant.quota, tenant.created_ms],
        )
        .map(|_| ())
    }

    fn tenants(&self) -> Result<Vec<TenantRow>, StoreError> {
        let db = self.reader()?;
        let mut statement = db
            .prepare("SELECT name, quota, created_ms FROM tenants ORDER BY name")
            .map_err(|e| self.error(e))?;
        statement
            .query_map([], |row| {
                Ok(TenantRow {
                    name: row.get(0)?,
                    quota: row.get(1)?,
                    created_ms: row.get(2)?,
                })
            })
            .and_then(Iterator::collect)
            .map_err(|e| self.error(e))
    }

    fn put_token(&self, token: &TokenRow) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO tokens (id, tenant, hash, read_only, expires_ms, revoked, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                token.id,
                token.tenant,
                token.hash,
                token.read_only as i64,
                token.expires_ms,
                token.revoked as i64,
                token.created_ms
            ],
        )
        .map(|_| ())
    }

    fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>, StoreError> {
        let db = self.reader()?;
        db.query_row(
            &format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = ?1"),
            [hash],
            token_row,
        )
        .optional()
        .map_err(|e| self.error(e))
    }

    fn tokens(&self) -> Result<Vec<TokenRow>, StoreError> {
        let db = self.reader()?;
        let mut statement = db
            .prepare(&format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY tenant, created_ms"
            ))
            .map_err(|e| self.error(e))?;
        statement
            .query_map([], token_row)
            .and_then(Iterator::collect)
            .map_err(|e| self.error(e))
    }

    fn revoke_token(&self, id: &str) -> Result<bool, StoreError> {
        self.execute("UPDATE tokens SET revoked = 1 WHERE id = ?1", [id])
            .map(|changed| changed > 0)
    }

    fn tenant_tokens_since(&self, tenant: &str, since_ms: i64) -> Result<u64, StoreError> {
        let db = self.reader()?;
        db.query_row(
            "SELECT COALESCE(SUM(c.input_tokens + c.output_tokens + c.cache_read_tokens + c.cache_write_tokens), 0) \
             FROM calls c JOIN runs r ON r.id = c.run_id \
             WHERE r.tenant = ?1 AND c.replayed = 0 AND c.finished_ms >= ?2",
            params![tenant, since_ms],
            |row| row.get::<_, i64>(0),
        )
        .map(|total| total.max(0) as u64)
        .map_err(|e| self.error(e))
    }
}

const TOKEN_COLUMNS: &str = "id, tenant, hash, read_only, expires_ms, revoked, created_ms";

fn token_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRow> {
    Ok(TokenRow {
        id: row.get(0)?,
        tenant: row.get(1)?,
        hash: row.get(2)?,
        read_only: row.get::<_, i64>(3)? != 0,
        expires_ms: row.get(4)?,
        revoked: row.get::<_, i64>(5)? != 0,
        created_ms: row.get(6)?,
    })
}

/// Adds the columns a journal written by an older corral lacks.
fn migrate(connection: &Connection) -> rusqlite::Result<()> {
    for (table, added) in [
        ("runs", &ADDED_RUN_COLUMNS[..]),
        ("calls", &ADDED_CALL_COLUMNS[..]),
    ] {
        let mut statement =
            connection.prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?;
        let existing: Vec<String> = statement
            .query_map([], |row| row.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for (column, kind) in added {
            if !existing.iter().any(|name| name == column) {
                match connection
                    .execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"))
                {
                    // Another process opening the same journal added it first.
                    Err(error) if error.to_string().contains("duplicate column name") => {}
                    other => other?,
                }
            }
        }
    }
    connection
        .execute_batch("CREATE INDEX IF NOT EXISTS runs_by_tenant ON runs (tenant, started_ms)")
}

/// Counts and tokens come from the calls themselves, so a run killed before it could finish still
/// shows what it did; answers replayed from the journal were not paid again and do not count.
const SUMMARY_COLUMNS: &str = "id, workflow, status, \
    (SELECT COUNT(*) FROM calls c WHERE c.run_id = runs.id), \
    (SELECT COALESCE(SUM(input_tokens), 0) FROM calls c WHERE c.run_id = runs.id AND replayed = 0), \
    (SELECT COALESCE(SUM(output_tokens), 0) FROM calls c WHERE c.run_id = runs.id AND replayed = 0), \
    (SELECT COALESCE(SUM(cache_read_tokens), 0) FROM calls c WHERE c.run_id = runs.id AND replayed = 0), \
    (SELECT COALESCE(SUM(cache_write_tokens), 0) FROM calls c WHERE c.run_id = runs.id AND replayed = 0), \
    cost, started_ms, finished_ms, pid, tenant, \
    (SELECT COUNT(*) FROM calls c WHERE c.run_id = runs.id AND status = 'ok'), \
    (SELECT COUNT(*) FROM calls c WHERE c.run_id = runs.id AND status = 'failed'), \
    (SELECT COUNT(*) FROM calls c WHERE c.run_id = runs.id AND status = 'failed' \
        AND error_kind IN ('budget-exhausted', 'agent-limit', 'denied'))";

/// How many columns [`SUMMARY_COLUMNS`] has: a query's own columns come after them.
const SUMMARY_WIDTH: usize = 16;

fn summary_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<RunSummary> {
    let status: String = row.get(2)?;
    Ok(RunSummary {
        id: row.get(0)?,
        workflow: row.get(1)?,
        // A status this corral does not know reads as failed rather than failing the listing.
        status: RunStatus::parse(&status).unwrap_or(RunStatus::Failed),
        agents: row.get::<_, i64>(3)? as u64,
        tokens: usage_at(row, 4)?,
        cost: row.get(8)?,
        started_ms: row.get(9)?,
        finished_ms: row.get(10)?,
        pid: row.get(11)?,
        tenant: row.get(12)?,
        ok: row.get::<_, i64>(13)? as u64,
        failed: row.get::<_, i64>(14)? as u64,
        refused: row.get::<_, i64>(15)? as u64,
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
                    "INSERT INTO runs (id, workflow, workflow_hash, script, args, limits, root, provider, status, started_ms, pid, resumed_from, tenant, spec) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)")?.execute(
                    params![id, run.workflow, run.workflow_hash, run.script, run.args, run.limits.to_string(), run.root, run.provider, run.status.as_str(), at, std::process::id(), run.resumed_from, run.tenant, run.spec],
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
                usage,
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
                let (status, kind, error, text, json, model) = match &outcome {
                    Ok(output) => (
                        CallStatus::Ok.as_str(),
                        None,
                        None,
                        Some(output.text.clone()),
                        output.json.as_ref().map(Value::to_string),
                        Some(output.model.clone()),
                    ),
                    Err(e) => (
                        CallStatus::Failed.as_str(),
                        Some(e.kind()),
                        Some(e.to_string()),
                        None,
                        None,
                        None,
                    ),
                };
                tx.prepare_cached(
                    "UPDATE calls SET status = ?3, error_kind = ?4, error = ?5, text = ?6, json = ?7, answered_model = ?8, input_tokens = ?9, output_tokens = ?10, cache_read_tokens = ?11, cache_write_tokens = ?12, finished_ms = ?13, started_ms = COALESCE(?15, started_ms, ?13), replayed = ?14 WHERE run_id = ?1 AND seq = ?2")?.execute(
                    params![run, seq as i64, status, kind, error, text, json, model, usage.input_tokens as i64, usage.output_tokens as i64, usage.cache_read_tokens as i64, usage.cache_write_tokens as i64, at, replayed as i64, started],
                )?;
                if let Ok(output) = &outcome
                    && !output.changes.is_empty()
                {
                    let changes =
                        serde_json::to_string(&output.changes).expect("changes serialise as JSON");
                    tx.prepare_cached(
                        "UPDATE calls SET changes = ?3 WHERE run_id = ?1 AND seq = ?2",
                    )?
                    .execute(params![run, seq as i64, changes])?;
                }
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
            Op::RunEvent { run, seq, json } => {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO run_events (run_id, seq, json) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![run, seq as i64, json])?;
            }
            Op::SetStatus { run, status } => {
                tx.prepare_cached("UPDATE runs SET status = ?2, pid = ?3 WHERE id = ?1")?
                    .execute(params![run, status.as_str(), std::process::id()])?;
            }
            Op::FinishRun { run, finish, at } => {
                let usage = finish.usage;
                tx.prepare_cached(
                    "UPDATE runs SET status = ?2, result = ?3, error = ?4, agents = ?5, input_tokens = ?6, output_tokens = ?7, cache_read_tokens = ?8, cache_write_tokens = ?9, finished_ms = ?10, cost = ?11 WHERE id = ?1")?.execute(
                    params![run, finish.status.as_str(), finish.result, finish.error, finish.agents as i64, usage.input_tokens as i64, usage.output_tokens as i64, usage.cache_read_tokens as i64, usage.cache_write_tokens as i64, at, finish.cost],
                )?;
            }
            Op::Flush(ack) => acks.push(ack),
        }
    }
    tx.commit()
}

fn sqlite_error(path: &Path, error: impl std::fmt::Display) -> StoreError {
    StoreError::Sqlite {
        path: path.to_path_buf(),
        message: error.to_string(),
    }
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

#[cfg(test)]
mod tests;
