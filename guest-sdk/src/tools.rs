//! Tools over the run's root directory.
//!
//! Paths are relative to the root; nothing outside it exists, and results honour `.gitignore`.
//! Writes ([`write`], [`edit`], [`remove`]) are staged in the run's changeset, which later reads
//! see; they reach the root only when the run is applied (`corral runs apply`), and only under
//! `--allow-write`. [`run`] runs an `--allow-run` command in a jail over the root plus changes.
//! The host bounds every answer by a named limit (bytes read, matches, results); exceeding one
//! fails with [`ToolError::Limit`]. These calls are synchronous: they block the workflow (but not
//! running agent calls) until the host answers.

use crate::bindings::corral::workflow::tools as wit;
use serde::Serialize;
use std::fmt;

/// Why a tool call failed; mirrors the WIT `tool-error` variant. Each case carries the host's
/// human-readable reason.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ToolError {
    /// The path leaves the root (`..`, absolute, or a symlink out) or the run has no root.
    Denied(String),
    /// The file, revision or repository does not exist.
    NotFound(String),
    /// The request is malformed (a bad pattern, a bad revision range).
    InvalidInput(String),
    /// The answer would exceed a named host limit (bytes, matches, results).
    Limit(String),
    /// Any other I/O failure.
    Io(String),
}

impl ToolError {
    /// The stable kebab-case name of the case, as in the WIT contract (`"not-found"`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Denied(_) => "denied",
            Self::NotFound(_) => "not-found",
            Self::InvalidInput(_) => "invalid-input",
            Self::Limit(_) => "limit",
            Self::Io(_) => "io",
        }
    }

    /// The host's reason.
    pub fn message(&self) -> &str {
        match self {
            Self::Denied(m)
            | Self::NotFound(m)
            | Self::InvalidInput(m)
            | Self::Limit(m)
            | Self::Io(m) => m,
        }
    }
}

impl From<wit::ToolError> for ToolError {
    fn from(error: wit::ToolError) -> Self {
        match error {
            wit::ToolError::Denied(m) => Self::Denied(m),
            wit::ToolError::NotFound(m) => Self::NotFound(m),
            wit::ToolError::InvalidInput(m) => Self::InvalidInput(m),
            wit::ToolError::Limit(m) => Self::Limit(m),
            wit::ToolError::Io(m) => Self::Io(m),
        }
    }
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind(), self.message())
    }
}

impl std::error::Error for ToolError {}

/// One grep hit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrepMatch {
    /// The file, relative to the root.
    pub path: String,
    /// 1-based line number.
    pub line: u32,
    /// The matching line.
    pub text: String,
}

/// Options of [`grep`]; all unset by default.
///
/// ```
/// let options = guest_sdk::tools::GrepOptions::new().glob("**/*.rs").ignore_case(true);
/// assert!(options.ignore_case);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrepOptions {
    /// Only search files matching this glob.
    pub glob: Option<String>,
    /// Match case-insensitively.
    pub ignore_case: bool,
    /// Stop after this many matches (never more than the host's limit).
    pub max_matches: Option<u32>,
}

impl GrepOptions {
    /// Options with nothing set: every file, case-sensitive, the host's match limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only searches files matching `glob`.
    #[must_use]
    pub fn glob(mut self, glob: impl Into<String>) -> Self {
        self.glob = Some(glob.into());
        self
    }

    /// Sets case-insensitive matching.
    #[must_use]
    pub fn ignore_case(mut self, ignore_case: bool) -> Self {
        self.ignore_case = ignore_case;
        self
    }

    /// Stops after `max` matches.
    #[must_use]
    pub fn max_matches(mut self, max: u32) -> Self {
        self.max_matches = Some(max);
        self
    }
}

/// One commit of [`git_log`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Commit {
    /// The full commit id.
    pub id: String,
    /// The author's name.
    pub author: String,
    /// Seconds since the Unix epoch.
    pub time: i64,
    /// The first line of the message.
    pub summary: String,
}

/// One changed path of [`git_status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusEntry {
    /// The path, relative to the root.
    pub path: String,
    /// `modified`, `added`, `deleted` or `untracked`.
    pub status: String,
}

/// Reads a UTF-8 text file (lossily decoded).
pub fn read(path: &str) -> Result<String, ToolError> {
    Ok(wit::read(path)?)
}

/// Lists files matching a glob (`**/*.rs`), sorted.
pub fn glob(pattern: &str) -> Result<Vec<String>, ToolError> {
    Ok(wit::glob(pattern)?)
}

/// Searches file contents with a regular expression.
pub fn grep(pattern: &str, options: GrepOptions) -> Result<Vec<GrepMatch>, ToolError> {
    let options = wit::GrepOptions {
        glob: options.glob,
        ignore_case: options.ignore_case,
        max_matches: options.max_matches,
    };
    Ok(wit::grep(pattern, &options)?
        .into_iter()
        .map(|m| GrepMatch {
            path: m.path,
            line: m.line,
            text: m.text,
        })
        .collect())
}

/// Commits reachable from HEAD, newest first; only those touching `path` when given, at most
/// `max` when given.
pub fn git_log(path: Option<&str>, max: Option<u32>) -> Result<Vec<Commit>, ToolError> {
    Ok(wit::git_log(path, max)?
        .into_iter()
        .map(|c| Commit {
            id: c.id,
            author: c.author,
            time: c.time,
            summary: c.summary,
        })
        .collect())
}

/// A commit's summary and patch, or with `path` the file's content at `rev`.
pub fn git_show(rev: &str, path: Option<&str>) -> Result<String, ToolError> {
    Ok(wit::git_show(rev, path)?)
}

/// A unified diff: with no range, HEAD against the working tree; `a..b` between two revisions;
/// `rev` between that revision and the working tree.
pub fn git_diff(range: Option<&str>) -> Result<String, ToolError> {
    Ok(wit::git_diff(range)?)
}

/// Changed and untracked paths of the working tree against HEAD.
pub fn git_status() -> Result<Vec<StatusEntry>, ToolError> {
    Ok(wit::git_status()?
        .into_iter()
        .map(|e| StatusEntry {
            path: e.path,
            status: e.status,
        })
        .collect())
}

/// One staged path of [`changes`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The file, relative to the root.
    pub path: String,
    /// `added`, `modified` or `removed`.
    pub kind: String,
    /// Bytes of the staged content (0 for a removal).
    pub bytes: u64,
}

/// What a command run by [`run`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommandOutput {
    /// The exit status; 128 + the signal number when a signal ended it.
    pub code: i32,
    /// Its standard output (lossy UTF-8).
    pub stdout: String,
    /// Its standard error (lossy UTF-8).
    pub stderr: String,
}

/// Stages `text` as the new content of `path`.
pub fn write(path: &str, text: &str) -> Result<(), ToolError> {
    Ok(wit::write(path, text)?)
}

/// Stages `path` with its one occurrence of `old` replaced by `new`.
pub fn edit(path: &str, old: &str, new: &str) -> Result<(), ToolError> {
    Ok(wit::edit(path, old, new)?)
}

/// Stages the removal of `path`.
pub fn remove(path: &str) -> Result<(), ToolError> {
    Ok(wit::remove(path)?)
}

/// Drops what is staged for `path`.
pub fn revert(path: &str) -> Result<(), ToolError> {
    Ok(wit::revert(path)?)
}

/// The staged paths, sorted.
pub fn changes() -> Vec<Change> {
    wit::changes()
        .into_iter()
        .map(|c| Change {
            path: c.path,
            kind: c.kind,
            bytes: c.bytes,
        })
        .collect()
}

/// Runs an allow-listed command with `args` in the jail; `timeout_ms` may only lower
/// `--max-command-time`. A command that runs and fails is `Ok` with a non-zero code.
pub fn run(
    command: &str,
    args: &[String],
    timeout_ms: Option<u32>,
) -> Result<CommandOutput, ToolError> {
    let output = wit::run(command, args, timeout_ms)?;
    Ok(CommandOutput {
        code: output.code,
        stdout: output.stdout,
        stderr: output.stderr,
    })
}
