//! The sandboxed, read-only tool root: read, glob, grep and git over a run's root directory.
//!
//! Everything here is reachable by untrusted guests (and by LLM sub-agents), so every file access
//! goes through one `cap_std::fs::Dir` opened once in [`ToolRoot::open`]: a path argument can never
//! name anything outside the root, whether by `..`, an absolute path or a symlink. Directory walks
//! (glob, grep, untracked files) use the `ignore` crate without following symlinks, so they never
//! yield an entry outside the root either. Git access is read-only, through `gix`, and never shells
//! out.
//!
//! Every limit a guest can hit has a name, a default and a CLI flag, and the error says which.

mod branch;
mod changes;
mod clock;
mod confine;
mod git;
mod grep;
mod view;
mod walk;

#[cfg(test)]
mod attacks;
#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;

pub use branch::commit_branch;
pub use changes::{
    Applied, ApplyError, Change, ChangeKind, StagedChange, WriteGrant, WriteSession, Written,
    apply, content_hash, diff,
};

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Limits on what one tool call may return; each one has a CLI flag of the same name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToolLimits {
    /// Largest file `read` (and `git_show` of a file) returns, in bytes (`--max-read-bytes`).
    pub max_read_bytes: u64,
    /// Most paths one `glob` returns (`--max-glob-results`).
    pub max_glob_results: usize,
    /// Most matches one `grep` returns (`--max-grep-matches`).
    pub max_grep_matches: usize,
    /// Most bytes of one grep or git answer (`--max-output-bytes`).
    pub max_output_bytes: usize,
    /// Host time all tool calls of a run may take together, scripts' and agents' alike
    /// (`--max-tool-time`).
    #[serde(rename = "max_tool_time_ms", with = "crate::limits::millis")]
    pub max_tool_time: Duration,
    /// Most entries one git call may visit: tree entries walked, index entries, entries of the
    /// root's `.git` directory (`--max-git-entries`).
    pub max_git_entries: usize,
    /// Largest file one write stages, in bytes (`--max-write-bytes`).
    pub max_write_bytes: u64,
    /// Bytes of all files a run stages together (`--max-staged-bytes`).
    pub max_staged_bytes: u64,
    /// Files a run may stage (`--max-staged-files`).
    pub max_staged_files: usize,
    /// Bytes of the copy of the root (with the changeset) that `run` commands see
    /// (`--max-view-bytes`).
    pub max_view_bytes: u64,
}

impl Default for ToolLimits {
    fn default() -> Self {
        Self {
            max_read_bytes: 1024 * 1024,
            max_glob_results: 10_000,
            max_grep_matches: 1_000,
            max_output_bytes: 4 * 1024 * 1024,
            max_tool_time: Duration::from_secs(10 * 60),
            max_git_entries: 250_000,
            max_write_bytes: 1024 * 1024,
            max_staged_bytes: 64 * 1024 * 1024,
            max_staged_files: 1_000,
            max_view_bytes: 256 * 1024 * 1024,
        }
    }
}

/// Why a tool call failed. The message is meant for the guest (often an LLM): it names the path or
/// limit and says how to fix the call.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ToolError {
    /// The call would reach outside the root.
    #[error("{0}")]
    Denied(String),
    /// The file, revision target or repository does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The arguments are malformed (empty path, NUL byte, bad pattern, bad revision, directory).
    #[error("{0}")]
    InvalidInput(String),
    /// The answer would exceed one of the [`ToolLimits`].
    #[error("{0}")]
    Limit(String),
    /// An I/O or repository error the guest cannot fix by changing its arguments.
    #[error("{0}")]
    Io(String),
}

/// Options of [`ToolRoot::grep`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrepOptions {
    /// Only search files whose root-relative path matches this glob (same syntax as `glob`,
    /// except that a pattern without `/` matches file names at any depth, like ripgrep's `-g`).
    pub glob: Option<String>,
    /// Match case-insensitively.
    pub ignore_case: bool,
    /// Stop after this many matches (clamped to `--max-grep-matches`; reaching it is not an error).
    pub max_matches: Option<u32>,
}

/// One line that matched a grep pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrepMatch {
    /// Root-relative path with `/` separators.
    pub path: String,
    /// 1-based line number.
    pub line: u32,
    /// The matching line without its line terminator (lossy UTF-8).
    pub text: String,
}

/// One commit, as listed by [`ToolRoot::git_log`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Full hex object id.
    pub id: String,
    /// Author as `Name <email>`.
    pub author: String,
    /// Author time in unix seconds.
    pub time: i64,
    /// First line of the message.
    pub summary: String,
}

/// One path whose working-tree state differs from `HEAD`, as listed by [`ToolRoot::git_status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusEntry {
    /// Root-relative path with `/` separators.
    pub path: String,
    /// `"modified"`, `"added"` (in the index, not in `HEAD`), `"deleted"` or `"untracked"`.
    pub status: String,
}

/// A directory that tools may read, and nothing outside it. Cheap to clone; `Send + Sync`.
#[derive(Clone)]
pub struct ToolRoot {
    inner: Arc<Inner>,
    /// The run's tool time, and the signal that stops calls when the run ends: one per run
    /// ([`ToolRoot::for_run`]), while the directory and the repository are shared.
    clock: Arc<clock::ToolClock>,
    /// The run's staged writes, which its reads see: one per run, like the clock.
    changes: Arc<Mutex<changes::Changeset>>,
    /// What the run may write (`--allow-write`); nothing by default.
    write_grant: Arc<WriteGrant>,
    /// The copy of the root with the changeset that commands see, made on first use.
    view: Arc<Mutex<Option<view::View>>>,
    /// SHA-256 of the root's content of each path the run read, as first read (the base a
    /// later write of the path must still match).
    read_hashes: Arc<Mutex<std::collections::HashMap<String, [u8; 32]>>>,
}

struct Inner {
    /// Canonical path of the root; used only to start directory walks and to open the repository.
    path: PathBuf,
    /// The capability every file access goes through.
    dir: cap_std::fs::Dir,
    limits: ToolLimits,
    /// Checked and opened on first use, so that roots that are no repository pay nothing. The
    /// outcome of the check is kept too: a refused repository is refused the same way each time.
    repo: OnceLock<Result<gix::ThreadSafeRepository, ToolError>>,
}

impl std::fmt::Debug for ToolRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolRoot")
            .field("path", &self.inner.path)
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

impl ToolRoot {
    /// Opens `dir` as a tool root. This is the only place ambient filesystem authority is used.
    pub fn open(dir: &Path, limits: ToolLimits) -> Result<ToolRoot, ToolError> {
        let shown = dir.display();
        let path = std::fs::canonicalize(dir).map_err(|err| match err.kind() {
            std::io::ErrorKind::NotFound => {
                ToolError::NotFound(format!("root directory {shown} does not exist"))
            }
            _ => ToolError::Io(format!("cannot open root directory {shown}: {err}")),
        })?;
        if !path.is_dir() {
            return Err(ToolError::InvalidInput(format!(
                "root {shown} is not a directory: give a directory as the root"
            )));
        }
        let cap = cap_std::fs::Dir::open_ambient_dir(&path, cap_std::ambient_authority())
            .map_err(|err| ToolError::Io(format!("cannot open root directory {shown}: {err}")))?;
        Ok(ToolRoot {
            clock: Arc::new(clock::ToolClock::new(limits.max_tool_time)),
            changes: Arc::default(),
            write_grant: Arc::default(),
            view: Arc::default(),
            read_hashes: Arc::default(),
            inner: Arc::new(Inner {
                path,
                dir: cap,
                limits,
                repo: OnceLock::new(),
            }),
        })
    }

    /// The canonical path of the root directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The limits this root enforces.
    pub fn limits(&self) -> &ToolLimits {
        &self.inner.limits
    }

    /// The same directory with a tool-time account of its own, for one run: a dry run (a plan)
    /// and the run it checks never share tool time, and ending one never ends the other.
    pub fn for_run(&self) -> ToolRoot {
        ToolRoot {
            inner: Arc::clone(&self.inner),
            clock: Arc::new(clock::ToolClock::new(self.inner.limits.max_tool_time)),
            changes: Arc::default(),
            write_grant: Arc::default(),
            view: Arc::default(),
            read_hashes: Arc::default(),
        }
    }

    /// The same run's root, allowed to stage the writes `grant` allows.
    pub fn with_writes(mut self, grant: WriteGrant) -> ToolRoot {
        self.write_grant = Arc::new(grant);
        self
    }

    /// The directory a jailed command of this run sees as `/work`: a copy of the root with the
    /// changeset applied, brought up to date first. Blocking.
    pub fn command_view(&self) -> Result<PathBuf, ToolError> {
        let _call = self.clock.begin("run")?;
        self.synced_view()
    }

    /// Whether this run may stage any write (`--allow-write`).
    pub fn writes_granted(&self) -> bool {
        self.write_grant.grants_any()
    }

    /// What the changeset holds for the normalised path `rel`.
    fn overlay(&self, rel: &str) -> changes::Overlay {
        let changes = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        if changes.is_empty() {
            return changes::Overlay::Root;
        }
        changes.lookup(rel)
    }

    /// Host time the tool calls of this root have taken so far (finished calls).
    pub fn tool_time(&self) -> Duration {
        self.clock.spent()
    }

    /// Ends the run's tool use: calls in flight stop at their next check, new calls fail. Called
    /// when the run ends, so that no blocking thread outlives it by more than one check.
    pub fn end(&self) {
        self.clock.end();
    }

    /// Reads a file (following symlinks only while they stay inside the root) as lossy UTF-8.
    pub fn read(&self, path: &str) -> Result<String, ToolError> {
        let _call = self.clock.begin("read")?;
        let rel = confine::normalize(path)?;
        match self.overlay(&rel) {
            changes::Overlay::Staged(content) => return Ok(confine::lossy(content.to_vec())),
            changes::Overlay::Removed => return Err(changes::removed(path)),
            changes::Overlay::Root => {}
        }
        let bytes = self.read_bytes(path, confine::as_dir_path(&rel))?;
        self.served(&rel, &bytes);
        Ok(confine::lossy(bytes))
    }

    /// Reads a regular file under the root, enforcing `max_read_bytes`. `shown` is the path as the
    /// guest wrote it, for messages; `rel` is its normalised form.
    fn read_bytes(&self, shown: &str, rel: &str) -> Result<Vec<u8>, ToolError> {
        let max = self.inner.limits.max_read_bytes;
        // The open never blocks on a FIFO or device, and the type is checked on the handle.
        let (file, meta) = confine::open_regular(&self.inner.dir, shown, rel)?;
        if shown.ends_with('/') {
            // `a.txt/` names a directory; the OS would refuse it, and so does the tool.
            return Err(ToolError::NotFound(format!(
                "{shown:?} ends with '/', so it names a directory, but {:?} is a file: drop the \
                 trailing '/'",
                shown.trim_end_matches('/')
            )));
        }
        if meta.len() > max {
            return Err(read_limit(shown, meta.len(), max));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        // `take` guards against a file that grows while it is read.
        file.take(max + 1)
            .read_to_end(&mut bytes)
            .map_err(|err| confine::io_error(shown, err))?;
        if bytes.len() as u64 > max {
            return Err(read_limit(shown, bytes.len() as u64, max));
        }
        Ok(bytes)
    }

    /// Lists the files whose root-relative path matches `pattern`, sorted, with `/` separators.
    ///
    /// `*` and `?` do not cross `/`; `**` does. Ignored (`.gitignore`, `.ignore`) and hidden files
    /// are skipped, and symlinks are not followed, like ripgrep; a hidden directory the pattern
    /// names literally (`.corral/workflows/*.js`) is walked, `.git` never.
    pub fn glob(&self, pattern: &str) -> Result<Vec<String>, ToolError> {
        let call = self.clock.begin("glob")?;
        walk::glob(self, &call, pattern)
    }

    /// Searches the files under the root (optionally only those matching `options.glob`) for lines
    /// matching the regular expression `pattern`. Matches are sorted by path, then line.
    pub fn grep(&self, pattern: &str, options: &GrepOptions) -> Result<Vec<GrepMatch>, ToolError> {
        let call = self.clock.begin("grep")?;
        grep::grep(self, &call, pattern, options)
    }

    /// Lists commits reachable from `HEAD`, newest first; with `path`, only commits that changed
    /// it compared to their first parent. At most `max` commits when given.
    pub fn git_log(&self, path: Option<&str>, max: Option<u32>) -> Result<Vec<Commit>, ToolError> {
        let call = self.clock.begin("git log")?;
        git::log(self, &call, path, max)
    }

    /// Without `path`: the commit header, message and unified patch against its first parent.
    /// With `path`: the content of that file at `rev` (lossy UTF-8).
    pub fn git_show(&self, rev: &str, path: Option<&str>) -> Result<String, ToolError> {
        let call = self.clock.begin("git show")?;
        git::show(self, &call, rev, path)
    }

    /// A unified diff. `None`: `HEAD` against the working tree; `"a..b"`: tree `a` against tree
    /// `b` (an empty side means `HEAD`); `"rev"`: `rev` against the working tree. Only tracked
    /// files (in the revision or the index) take part in working-tree diffs.
    pub fn git_diff(&self, range: Option<&str>) -> Result<String, ToolError> {
        let call = self.clock.begin("git diff")?;
        git::diff(self, &call, range)
    }

    /// The paths whose working-tree state differs from `HEAD`, plus untracked files that
    /// `.gitignore` does not exclude, sorted by path.
    pub fn git_status(&self) -> Result<Vec<StatusEntry>, ToolError> {
        let call = self.clock.begin("git status")?;
        git::status(self, &call)
    }
}

fn read_limit(shown: &str, size: u64, max: u64) -> ToolError {
    ToolError::Limit(format!(
        "{shown:?} is {size} bytes, over the read limit of {max} bytes: \
         raise --max-read-bytes or read a smaller file"
    ))
}

fn output_limit(what: &str, max: usize, fix: &str) -> ToolError {
    ToolError::Limit(format!(
        "the {what} is larger than the output limit of {max} bytes: {fix}, or raise --max-output-bytes"
    ))
}
