//! The run's changeset: writes staged in memory, never in the root, until someone applies them.
//!
//! `write`, `edit` and `remove` stage a file's new content (or its removal) under the same path
//! rules as reads, plus the write grant (`--allow-write`) and a refusal of `.git/`, symlinks and
//! hard links: a write never follows, creates or replaces a link. Each staged path remembers the
//! SHA-256 of the root's content when it was first staged (its *base*), so that applying later
//! can refuse a file the root changed since. Reads, globs and greps of the same run see the
//! staged content.
//!
//! [`apply`] and [`diff`] work on a [`StagedChange`] list, what the store keeps of a finished run.

use super::{ToolError, ToolRoot, confine};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::sync::Arc;

/// What the write grant of a run allows: nothing (the default), or the paths matching its globs.
#[derive(Debug, Clone, Default)]
pub struct WriteGrant {
    globs: Option<(Vec<String>, globset::GlobSet)>,
}

impl WriteGrant {
    /// The grant of `--allow-write=GLOB,…` (`**` for everything); empty grants nothing.
    pub fn parse(globs: &[String]) -> Result<WriteGrant, String> {
        if globs.is_empty() {
            return Ok(WriteGrant::default());
        }
        let mut set = globset::GlobSetBuilder::new();
        for glob in globs {
            if glob.is_empty() || confine::is_absolute(glob) || glob.split('/').any(|p| p == "..") {
                return Err(format!(
                    "--allow-write glob {glob:?} is not a pattern relative to the root: give \
                     patterns such as 'src/**' or '**/*.js' (or --allow-write alone for every path)"
                ));
            }
            let compiled = globset::GlobBuilder::new(glob)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|error| {
                    format!("--allow-write glob {glob:?} is invalid: {error}: fix the pattern")
                })?;
            set.add(compiled);
        }
        let set = set
            .build()
            .map_err(|error| format!("--allow-write globs are invalid: {error}"))?;
        Ok(WriteGrant {
            globs: Some((globs.to_vec(), set)),
        })
    }

    /// Why `rel` may not be written, if it may not.
    fn check(&self, shown: &str, rel: &str) -> Result<(), ToolError> {
        match &self.globs {
            None => Err(ToolError::Denied(format!(
                "writing {shown:?} is denied: this run grants no writes (start it with \
                 --allow-write, or --allow-write=GLOB to allow only some paths)"
            ))),
            Some((globs, set)) if !set.is_match(rel) => Err(ToolError::Denied(format!(
                "writing {shown:?} is denied: it matches none of --allow-write={}: widen the \
                 grant or write another path",
                globs.join(",")
            ))),
            Some(_) => Ok(()),
        }
    }
}

/// One staged path, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StagedChange {
    /// Root-relative path with `/` separators.
    pub path: String,
    /// SHA-256 (hex) of the root's content when the path was first staged; `None`: the root had
    /// no such file.
    pub base: Option<String>,
    /// The new content; `None`: the file is removed.
    pub content: Option<Vec<u8>>,
}

impl StagedChange {
    /// What the change does.
    pub fn kind(&self) -> ChangeKind {
        ChangeKind::of(&self.base, &self.content)
    }
}

/// What a staged change does to its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// The root has no such file.
    Added,
    /// The file gets new content.
    Modified,
    /// The file is removed.
    Removed,
}

impl ChangeKind {
    fn of<B, C>(base: &Option<B>, content: &Option<C>) -> ChangeKind {
        match (base, content) {
            (None, _) => ChangeKind::Added,
            (Some(_), Some(_)) => ChangeKind::Modified,
            (Some(_), None) => ChangeKind::Removed,
        }
    }

    /// `added`, `modified` or `removed`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Modified => "modified",
            ChangeKind::Removed => "removed",
        }
    }
}

/// One entry of [`ToolRoot::changes`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Root-relative path with `/` separators.
    pub path: String,
    /// What the change does.
    pub kind: ChangeKind,
    /// Bytes of the new content (0 for a removal).
    pub bytes: u64,
}

#[derive(Clone)]
struct Staged {
    content: Option<Arc<[u8]>>,
    base: Option<[u8; 32]>,
}

/// A run's staged writes. One per run, shared by the script and its agents.
#[derive(Default)]
pub(super) struct Changeset {
    entries: BTreeMap<String, Staged>,
    bytes: u64,
    /// Bumped on every change, so that a materialised view knows when it is stale.
    generation: u64,
}

/// What a read of a path finds in the changeset.
pub(super) enum Overlay {
    /// Not staged: read the root.
    Root,
    /// Staged with this content.
    Staged(Arc<[u8]>),
    /// Staged as removed.
    Removed,
}

impl Changeset {
    pub(super) fn lookup(&self, rel: &str) -> Overlay {
        match self.entries.get(rel) {
            None => Overlay::Root,
            Some(Staged {
                content: Some(content),
                ..
            }) => Overlay::Staged(Arc::clone(content)),
            Some(Staged { content: None, .. }) => Overlay::Removed,
        }
    }

    /// Staged paths the root does not have (new files), with their content.
    pub(super) fn added(&self) -> impl Iterator<Item = (&str, &Arc<[u8]>)> {
        self.entries
            .iter()
            .filter_map(|(path, staged)| match staged {
                Staged {
                    base: None,
                    content: Some(content),
                } => Some((path.as_str(), content)),
                _ => None,
            })
    }

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// Every staged path with its content (`None`: removed).
    pub(super) fn entries(&self) -> impl Iterator<Item = (&str, Option<&Arc<[u8]>>)> {
        self.entries
            .iter()
            .map(|(path, staged)| (path.as_str(), staged.content.as_ref()))
    }
}

impl ToolRoot {
    /// Stages `text` as the new content of `path`.
    pub fn write(&self, path: &str, text: &str) -> Result<(), ToolError> {
        let _call = self.clock.begin("write")?;
        let rel = self.writable(path)?;
        self.stage(path, &rel, Some(text.as_bytes().into()))
    }

    /// Replaces the one occurrence of `old` in `path` (as this run sees it) by `new`.
    pub fn edit(&self, path: &str, old: &str, new: &str) -> Result<(), ToolError> {
        let _call = self.clock.begin("edit")?;
        let rel = self.writable(path)?;
        if old.is_empty() {
            return Err(ToolError::InvalidInput(format!(
                "edit of {path:?}: the text to replace is empty: give the exact text to replace \
                 (use write to replace the whole file)"
            )));
        }
        let current = confine::lossy(self.current(path, &rel)?.to_vec());
        let mut found = current.match_indices(old);
        let Some((at, _)) = found.next() else {
            return Err(ToolError::InvalidInput(format!(
                "edit of {path:?}: the text to replace does not occur in the file: read the file \
                 and give its exact text, whitespace included"
            )));
        };
        let more = found.count();
        if more > 0 {
            return Err(ToolError::InvalidInput(format!(
                "edit of {path:?}: the text to replace occurs {} times: include more of the \
                 surrounding text so that it occurs once",
                more + 1
            )));
        }
        let mut edited = String::with_capacity(current.len() - old.len() + new.len());
        edited.push_str(&current[..at]);
        edited.push_str(new);
        edited.push_str(&current[at + old.len()..]);
        self.stage(path, &rel, Some(edited.as_bytes().into()))
    }

    /// Stages the removal of `path`, which must exist as this run sees it.
    pub fn remove(&self, path: &str) -> Result<(), ToolError> {
        let _call = self.clock.begin("remove")?;
        let rel = self.writable(path)?;
        self.current(path, &rel)?;
        self.stage(path, &rel, None)
    }

    /// Drops what is staged for `path`; the root's content shows again. Nothing staged is fine.
    pub fn revert(&self, path: &str) -> Result<(), ToolError> {
        let _call = self.clock.begin("revert")?;
        let rel = confine::normalize(path)?;
        let mut changes = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = changes.entries.remove(&rel) {
            changes.bytes -= old.content.map_or(0, |c| c.len() as u64);
            changes.generation += 1;
        }
        Ok(())
    }

    /// The staged paths, sorted, with what each change does.
    pub fn changes(&self) -> Vec<Change> {
        let changes = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        changes
            .entries
            .iter()
            .map(|(path, staged)| Change {
                path: path.clone(),
                kind: ChangeKind::of(&staged.base, &staged.content),
                bytes: staged.content.as_ref().map_or(0, |c| c.len() as u64),
            })
            .collect()
    }

    /// The changeset as the store keeps it.
    pub fn staged(&self) -> Vec<StagedChange> {
        let changes = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        changes
            .entries
            .iter()
            .map(|(path, staged)| StagedChange {
                path: path.clone(),
                base: staged.base.map(hex),
                content: staged.content.as_ref().map(|c| c.to_vec()),
            })
            .collect()
    }

    /// The content of `path` as this run sees it: staged, or the root's.
    fn current(&self, shown: &str, rel: &str) -> Result<Arc<[u8]>, ToolError> {
        match self.overlay(rel) {
            Overlay::Staged(content) => Ok(content),
            Overlay::Removed => Err(removed(shown)),
            Overlay::Root => Ok(self.read_bytes(shown, rel)?.into()),
        }
    }

    /// Checks that `path` may be written: the path rules of reads, the grant, no `.git`, and in
    /// the root no symlink, hard link or directory on the way. Returns the normalised path.
    fn writable(&self, path: &str) -> Result<String, ToolError> {
        let rel = confine::normalize(path)?;
        if rel.is_empty() {
            return Err(ToolError::InvalidInput(format!(
                "{path:?} names the root directory, not a file: give a file path such as \"src/a.js\""
            )));
        }
        if rel.split('/').any(|part| part.eq_ignore_ascii_case(".git")) {
            return Err(ToolError::Denied(format!(
                "writing {path:?} is denied: nothing under a .git directory may be written"
            )));
        }
        self.write_grant.check(path, &rel)?;
        // Every ancestor must be a real directory (or not exist yet), the path itself a regular
        // file with one link (or not exist): applying must write exactly this path.
        let parts: Vec<&str> = rel.split('/').collect();
        for depth in 1..=parts.len() {
            let prefix = parts[..depth].join("/");
            let meta = match self.inner.dir.symlink_metadata(&prefix) {
                Ok(meta) => meta,
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => break,
                Err(error) => return Err(confine::io_error(path, error)),
            };
            let last = depth == parts.len();
            if meta.file_type().is_symlink() {
                return Err(ToolError::Denied(format!(
                    "writing {path:?} is denied: {prefix:?} is a symlink, and writes never follow \
                     or replace symlinks: write the path it points to"
                )));
            }
            if !last && !meta.is_dir() {
                return Err(ToolError::InvalidInput(format!(
                    "cannot write {path:?}: {prefix:?} is a file, not a directory"
                )));
            }
            if last && meta.is_dir() {
                return Err(ToolError::InvalidInput(format!(
                    "cannot write {path:?}: it is a directory: give a file path"
                )));
            }
            if last && !meta.is_file() {
                return Err(confine::not_regular(path));
            }
            #[cfg(unix)]
            if last && cap_std::fs::MetadataExt::nlink(&meta) > 1 {
                return Err(ToolError::Denied(format!(
                    "writing {path:?} is denied: the file has other hard links, so changing it \
                     would change other paths too"
                )));
            }
        }
        Ok(rel)
    }

    /// Stages `content` (`None`: removal) for `rel`, under the staging limits.
    fn stage(&self, shown: &str, rel: &str, content: Option<Arc<[u8]>>) -> Result<(), ToolError> {
        let limits = &self.inner.limits;
        let size = content.as_ref().map_or(0, |c| c.len() as u64);
        if size > limits.max_write_bytes {
            return Err(ToolError::Limit(format!(
                "writing {shown:?}: {size} bytes is over the limit of {} bytes for one file: \
                 write a smaller file or raise --max-write-bytes",
                limits.max_write_bytes
            )));
        }
        // The base is read before taking the lock: hashing a large file must not block readers.
        let known = self
            .changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .get(rel)
            .map(|s| s.base);
        let base = match known {
            Some(base) => base,
            None => self.root_hash(shown, rel)?,
        };
        let mut changes = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        let old_size = changes
            .entries
            .get(rel)
            .and_then(|s| s.content.as_ref())
            .map_or(0, |c| c.len() as u64);
        let is_new = !changes.entries.contains_key(rel);
        if is_new && changes.entries.len() >= limits.max_staged_files {
            return Err(ToolError::Limit(format!(
                "writing {shown:?}: the run has already staged {} files, the limit: revert some \
                 or raise --max-staged-files",
                changes.entries.len()
            )));
        }
        let total = changes.bytes - old_size + size;
        if total > limits.max_staged_bytes {
            return Err(ToolError::Limit(format!(
                "writing {shown:?}: the run's staged files would total {total} bytes, over the \
                 limit of {} bytes: revert some or raise --max-staged-bytes",
                limits.max_staged_bytes
            )));
        }
        changes.bytes = total;
        changes.generation += 1;
        if base.is_none() && content.is_none() {
            // Removing a file this run added leaves nothing to record.
            changes.entries.remove(rel);
        } else {
            changes
                .entries
                .insert(rel.to_string(), Staged { content, base });
        }
        Ok(())
    }

    /// SHA-256 of the root's file at `rel`, or `None` when the root has none.
    fn root_hash(&self, shown: &str, rel: &str) -> Result<Option<[u8; 32]>, ToolError> {
        let (mut file, _) = match confine::open_regular(&self.inner.dir, shown, rel) {
            Ok(opened) => opened,
            Err(ToolError::NotFound(_)) => return Ok(None),
            Err(error) => return Err(error),
        };
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 64 << 10];
        loop {
            let n = file
                .read(&mut buffer)
                .map_err(|error| confine::io_error(shown, error))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
        }
        Ok(Some(hasher.finalize().into()))
    }
}

pub(super) fn removed(shown: &str) -> ToolError {
    ToolError::NotFound(format!(
        "{shown:?} was removed in this run's changeset: revert it to see the root's file again"
    ))
}

fn hex(bytes: [u8; 32]) -> String {
    let mut out = String::with_capacity(64);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// SHA-256 (hex) of `bytes`.
pub fn content_hash(bytes: &[u8]) -> String {
    hex(Sha256::digest(bytes).into())
}

/// Why a changeset cannot be applied.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ApplyError {
    /// Files of the root changed since the run staged them; nothing was written.
    #[error("{}", conflict_message(.0))]
    Conflicts(Vec<String>),
    /// A `--path` names no staged change.
    #[error("{0}")]
    NotStaged(String),
    /// Writing failed part-way; the files listed in the message were written.
    #[error("{0}")]
    Io(String),
}

fn conflict_message(paths: &[String]) -> String {
    format!(
        "the root changed since the run staged {} (nothing was applied): {}: apply only the \
         other paths with --path, or start the run again on the current root",
        if paths.len() == 1 {
            "this file"
        } else {
            "these files"
        },
        paths.join(", ")
    )
}

/// What [`apply`] did, path by path.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Applied {
    /// Paths written or removed.
    pub applied: Vec<String>,
    /// Paths whose root content already was the staged content.
    pub already: Vec<String>,
}

/// Selects the changes `only` names (all when empty), refusing names that are not staged.
fn select<'a>(
    changes: &'a [StagedChange],
    only: &[String],
) -> Result<Vec<&'a StagedChange>, ApplyError> {
    if only.is_empty() {
        return Ok(changes.iter().collect());
    }
    let mut out = Vec::new();
    for wanted in only {
        let rel = confine::normalize(wanted).map_err(|e| ApplyError::NotStaged(e.to_string()))?;
        match changes.iter().find(|c| c.path == rel) {
            Some(change) => out.push(change),
            None => {
                return Err(ApplyError::NotStaged(format!(
                    "{wanted:?} is not among the run's staged changes ({}): pick paths that \
                     `corral runs diff` lists",
                    changes
                        .iter()
                        .map(|c| c.path.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
    }
    Ok(out)
}

/// The root's file at `rel` (`None`: absent), read through `dir`.
fn root_content(dir: &cap_std::fs::Dir, rel: &str) -> Result<Option<Vec<u8>>, ApplyError> {
    match confine::open_regular(dir, rel, rel) {
        Ok((mut file, _)) => {
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)
                .map_err(|e| ApplyError::Io(format!("cannot read {rel:?}: {e}")))?;
            Ok(Some(bytes))
        }
        Err(ToolError::NotFound(_)) => Ok(None),
        Err(error) => Err(ApplyError::Io(error.to_string())),
    }
}

/// Writes the selected staged changes into `root`: first every base is checked against the
/// root (any mismatch refuses the whole apply, listing the files), then each file is written
/// atomically (a temporary file in the same directory, renamed over the old one).
pub fn apply(
    root: &Path,
    changes: &[StagedChange],
    only: &[String],
) -> Result<Applied, ApplyError> {
    let dir = cap_std::fs::Dir::open_ambient_dir(root, cap_std::ambient_authority())
        .map_err(|e| ApplyError::Io(format!("cannot open the root {}: {e}", root.display())))?;
    let selected = select(changes, only)?;
    let mut conflicts = Vec::new();
    let mut todo = Vec::new();
    let mut applied = Applied::default();
    for change in selected {
        let current = root_content(&dir, &change.path)?;
        let target = change.content.as_deref();
        if current.as_deref() == target {
            applied.already.push(change.path.clone());
            continue;
        }
        if current.as_deref().map(content_hash) != change.base {
            conflicts.push(change.path.clone());
            continue;
        }
        todo.push(change);
    }
    if !conflicts.is_empty() {
        return Err(ApplyError::Conflicts(conflicts));
    }
    for change in todo {
        let written = match &change.content {
            Some(content) => write_atomic(&dir, &change.path, content),
            None => dir.remove_file(&change.path),
        };
        if let Err(error) = written {
            let done = if applied.applied.is_empty() {
                "nothing was written".to_string()
            } else {
                format!("already written: {}", applied.applied.join(", "))
            };
            return Err(ApplyError::Io(format!(
                "cannot write {:?}: {error} ({done})",
                change.path
            )));
        }
        applied.applied.push(change.path.clone());
    }
    Ok(applied)
}

fn write_atomic(dir: &cap_std::fs::Dir, rel: &str, content: &[u8]) -> std::io::Result<()> {
    let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
    if !parent.is_empty() {
        dir.create_dir_all(parent)?;
    }
    let temp = if parent.is_empty() {
        format!(".{name}.corral-apply-{}", std::process::id())
    } else {
        format!("{parent}/.{name}.corral-apply-{}", std::process::id())
    };
    let result = (|| {
        let mut file = dir.create(&temp)?;
        file.write_all(content)?;
        file.sync_all()?;
        drop(file);
        dir.rename(&temp, dir, rel)
    })();
    if result.is_err() {
        let _ = dir.remove_file(&temp);
    }
    result
}

/// A unified diff of the changes against `root` (`a/` the root now, `b/` the staged content).
pub fn diff(root: &Path, changes: &[StagedChange]) -> Result<String, ApplyError> {
    let dir = cap_std::fs::Dir::open_ambient_dir(root, cap_std::ambient_authority())
        .map_err(|e| ApplyError::Io(format!("cannot open the root {}: {e}", root.display())))?;
    let mut out = String::new();
    for change in changes {
        let old = root_content(&dir, &change.path)?;
        let new = change.content.as_deref();
        if old.as_deref() == new {
            continue;
        }
        let path = &change.path;
        let _ = writeln!(out, "diff --corral a/{path} b/{path}");
        let old_name = if old.is_some() {
            format!("a/{path}")
        } else {
            "/dev/null".into()
        };
        let new_name = if new.is_some() {
            format!("b/{path}")
        } else {
            "/dev/null".into()
        };
        if old.as_deref().is_some_and(|b| b.contains(&0)) || new.is_some_and(|b| b.contains(&0)) {
            let _ = writeln!(out, "Binary files {old_name} and {new_name} differ");
            continue;
        }
        let a = String::from_utf8_lossy(old.as_deref().unwrap_or_default());
        let b = String::from_utf8_lossy(new.unwrap_or_default());
        let text = similar::TextDiff::configure()
            .algorithm(similar::Algorithm::Myers)
            .timeout(std::time::Duration::from_secs(2))
            .diff_lines(a.as_ref(), b.as_ref());
        let _ = writeln!(out, "--- {old_name}\n+++ {new_name}");
        for hunk in text.unified_diff().context_radius(3).iter_hunks() {
            let _ = write!(out, "{hunk}");
        }
    }
    Ok(out)
}
