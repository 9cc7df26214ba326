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
use std::sync::{Arc, Mutex};

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

    /// Whether any path may be written.
    pub fn grants_any(&self) -> bool {
        self.globs.is_some()
    }

    /// Why `rel` may not be written, if it may not.
    pub(super) fn check(&self, shown: &str, rel: &str) -> Result<(), ToolError> {
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
    /// The generation at which each path ever staged last changed (reverts included): what an
    /// agent's write is checked against, so that concurrent edits never interleave silently.
    changed_at: std::collections::HashMap<String, u64>,
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

    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// The generation at which `rel` last changed in this changeset (0: never).
    fn version(&self, rel: &str) -> u64 {
        self.changed_at.get(rel).copied().unwrap_or(0)
    }

    fn bump(&mut self, rel: &str) {
        self.generation += 1;
        self.changed_at.insert(rel.to_string(), self.generation);
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
        self.stage(path, &rel, Some(text.as_bytes().into()), None)
            .map(drop)
    }

    /// Replaces the one occurrence of `old` in `path` (as this run sees it) by `new`.
    pub fn edit(&self, path: &str, old: &str, new: &str) -> Result<(), ToolError> {
        let _call = self.clock.begin("edit")?;
        let rel = self.writable(path)?;
        let version = self.version(&rel);
        self.edit_at(path, &rel, old, new, version).map(drop)
    }

    /// [`ToolRoot::edit`] of the normalised `rel`, staged only if the path is still at
    /// `version` (another writer in between is a conflict, never a silent interleaving).
    fn edit_at(
        &self,
        path: &str,
        rel: &str,
        old: &str,
        new: &str,
        version: u64,
    ) -> Result<u64, ToolError> {
        if old.is_empty() {
            return Err(ToolError::InvalidInput(format!(
                "edit of {path:?}: the text to replace is empty: give the exact text to replace \
                 (use write to replace the whole file)"
            )));
        }
        let Ok(current) = String::from_utf8(self.current(path, rel)?.to_vec()) else {
            return Err(ToolError::InvalidInput(format!(
                "edit of {path:?}: the file is not UTF-8 text, and edits work on text: write its \
                 whole new content instead"
            )));
        };
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
        self.stage(path, rel, Some(edited.as_bytes().into()), Some(version))
    }

    /// Stages the removal of `path`, which must exist as this run sees it.
    pub fn remove(&self, path: &str) -> Result<(), ToolError> {
        let _call = self.clock.begin("remove")?;
        let rel = self.writable(path)?;
        match self.overlay(&rel) {
            Overlay::Staged(_) => {}
            Overlay::Removed => return Err(removed(path)),
            // Its metadata is enough: a file too large to read can still be removed.
            Overlay::Root => {
                confine::open_regular(&self.inner.dir, path, &rel)?;
            }
        }
        self.stage(path, &rel, None, None).map(drop)
    }

    /// Drops what is staged for `path`; the root's content shows again. Nothing staged is fine.
    pub fn revert(&self, path: &str) -> Result<(), ToolError> {
        let _call = self.clock.begin("revert")?;
        let rel = confine::normalize(path)?;
        let mut changes = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = changes.entries.remove(&rel) {
            changes.bytes -= old.content.map_or(0, |c| c.len() as u64);
            changes.bump(&rel);
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

    /// The version of `rel` in the changeset (see [`Changeset::version`]).
    fn version(&self, rel: &str) -> u64 {
        self.changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .version(rel)
    }

    /// A writer session for one agent call: its reads and writes are checked against what other
    /// writers did since it started (see [`WriteSession`]).
    pub fn session(&self) -> WriteSession {
        WriteSession {
            started: self
                .changes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .generation,
            seen: Default::default(),
            written: Default::default(),
        }
    }

    /// Reads `path` for an agent, remembering the version it saw.
    pub fn read_in(&self, session: &WriteSession, path: &str) -> Result<String, ToolError> {
        let version = confine::normalize(path).map(|rel| (self.version(&rel), rel));
        let text = self.read(path)?;
        if let Ok((version, rel)) = version {
            session.saw(&rel, version);
        }
        Ok(text)
    }

    /// Writes `path` for an agent: a conflict if another writer changed it since the agent
    /// started and the agent has not read it since.
    pub fn write_in(
        &self,
        session: &WriteSession,
        path: &str,
        text: &str,
    ) -> Result<(), ToolError> {
        let _call = self.clock.begin("write")?;
        let rel = self.writable(path)?;
        let version = session.check(path, &rel, self.version(&rel))?;
        let content: Arc<[u8]> = text.as_bytes().into();
        let now = self.stage(path, &rel, Some(Arc::clone(&content)), Some(version))?;
        session.wrote(&rel, now, Some(content));
        Ok(())
    }

    /// Edits `path` for an agent, under the same conflict rule as [`ToolRoot::write_in`].
    pub fn edit_in(
        &self,
        session: &WriteSession,
        path: &str,
        old: &str,
        new: &str,
    ) -> Result<(), ToolError> {
        let _call = self.clock.begin("edit")?;
        let rel = self.writable(path)?;
        let version = session.check(path, &rel, self.version(&rel))?;
        let now = self.edit_at(path, &rel, old, new, version)?;
        let content = match self.overlay(&rel) {
            Overlay::Staged(content) => Some(content),
            _ => None,
        };
        session.wrote(&rel, now, content);
        Ok(())
    }

    /// The changeset's generation: bumped by every change.
    pub fn generation(&self) -> u64 {
        self.changes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .generation
    }

    /// A copy of this run's root whose changeset starts as the run's does now and then goes its
    /// own way (an isolated agent's overlay), with the generation it starts from.
    pub fn isolated(&self) -> (ToolRoot, u64) {
        let changes = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        let copy = Changeset {
            entries: changes.entries.clone(),
            bytes: changes.bytes,
            generation: changes.generation,
            changed_at: changes.changed_at.clone(),
        };
        let generation = changes.generation;
        drop(changes);
        (
            ToolRoot {
                inner: Arc::clone(&self.inner),
                clock: Arc::clone(&self.clock),
                changes: Arc::new(Mutex::new(copy)),
                write_grant: Arc::clone(&self.write_grant),
                view: Arc::default(),
                read_hashes: Arc::clone(&self.read_hashes),
            },
            generation,
        )
    }

    /// What `written` (an isolated call's changes) would do to the run's changeset now, and a
    /// unified diff of it against what the run sees.
    pub fn preview(&self, written: &[Written]) -> (Vec<Change>, String) {
        let mut files = Vec::new();
        let mut diff = String::new();
        for change in written {
            let rel = change.path.as_str();
            let now = match self.overlay(rel) {
                Overlay::Staged(content) => Some(content.to_vec()),
                Overlay::Removed => None,
                Overlay::Root => self.read_bytes(rel, rel).ok(),
            };
            let kind = match (&now, &change.content) {
                (_, None) => ChangeKind::Removed,
                (None, Some(_)) => ChangeKind::Added,
                (Some(_), Some(_)) => ChangeKind::Modified,
            };
            files.push(Change {
                path: change.path.clone(),
                kind,
                bytes: change.content.as_ref().map_or(0, |c| c.len() as u64),
            });
            unified(
                &mut diff,
                rel,
                now.as_deref(),
                change.content.as_deref().map(str::as_bytes),
            );
        }
        (files, diff)
    }

    /// Stages an isolated call's changes into this (the run's) changeset, all or none: a path
    /// changed here after generation `since` is a conflict.
    pub fn keep(&self, written: &[Written], since: u64) -> Result<Vec<String>, ToolError> {
        let changed: Vec<&str> = {
            let changes = self.changes.lock().unwrap_or_else(|e| e.into_inner());
            written
                .iter()
                .map(|w| w.path.as_str())
                .filter(|path| changes.version(path) > since)
                .collect()
        };
        if !changed.is_empty() {
            return Err(ToolError::InvalidInput(format!(
                "conflict: the run's changes to {} were made after the isolated agent started, \
                 so its changes were not kept (they still wait): drop them, or run the agent \
                 again on the current files",
                changed.join(", ")
            )));
        }
        self.restage(written)?;
        Ok(written.iter().map(|w| w.path.clone()).collect())
    }

    /// Stages again what a recorded agent call wrote (a replayed call's changes), under the same
    /// path rules and limits as any write.
    pub fn restage(&self, written: &[Written]) -> Result<(), ToolError> {
        for change in written {
            let rel = self.writable(&change.path)?;
            let content = change.content.as_deref().map(|text| text.as_bytes().into());
            self.stage(&change.path, &rel, content, None)?;
        }
        Ok(())
    }

    /// The content of `path` as this run sees it: staged, or the root's (remembered as read).
    fn current(&self, shown: &str, rel: &str) -> Result<Arc<[u8]>, ToolError> {
        match self.overlay(rel) {
            Overlay::Staged(content) => Ok(content),
            Overlay::Removed => Err(removed(shown)),
            Overlay::Root => {
                let bytes = self.read_bytes(shown, rel)?;
                self.served(rel, &bytes);
                Ok(bytes.into())
            }
        }
    }

    /// Remembers the hash of the root's content of `rel` the first time the run reads it: a
    /// later write of the path is based on what the run read, so a root that changed in
    /// between is a conflict, not an edit silently undone at apply time.
    /// A run that may not write pays nothing for this: its reads are never a write's base.
    pub(super) fn served(&self, rel: &str, bytes: &[u8]) {
        if !self.write_grant.grants_any() {
            return;
        }
        let lock = || self.read_hashes.lock().unwrap_or_else(|e| e.into_inner());
        if lock().contains_key(rel) {
            return;
        }
        // Hashed outside the lock, so that agents reading other files are not held up.
        let hash: [u8; 32] = Sha256::digest(bytes).into();
        lock().entry(rel.to_string()).or_insert(hash);
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
                return Err(ToolError::InvalidInput(format!(
                    "cannot write {path:?}: it is a FIFO, socket or device, not a regular file"
                )));
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

    /// Stages `content` (`None`: removal) for `rel`, under the staging limits. With `expect`,
    /// only if the path's version still is that (else a conflict), checked under the same lock.
    fn stage(
        &self,
        shown: &str,
        rel: &str,
        content: Option<Arc<[u8]>>,
        expect: Option<u64>,
    ) -> Result<u64, ToolError> {
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
            None => {
                let base = self.root_hash(shown, rel)?;
                let read = self
                    .read_hashes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(rel)
                    .copied();
                if let Some(read) = read
                    && base != Some(read)
                {
                    return Err(ToolError::InvalidInput(format!(
                        "conflict: {shown:?} changed in the root after this run read it: read it \
                         again and redo the change on its current content"
                    )));
                }
                base
            }
        };
        let mut changes = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        let old_size = changes
            .entries
            .get(rel)
            .and_then(|s| s.content.as_ref())
            .map_or(0, |c| c.len() as u64);
        let is_new = !changes.entries.contains_key(rel);
        if content.is_some() && is_new {
            // A staged file cannot be a directory of another staged file, or the reverse.
            let parent_staged = rel
                .match_indices('/')
                .map(|(at, _)| &rel[..at])
                .find(|prefix| {
                    changes
                        .entries
                        .get(*prefix)
                        .is_some_and(|s| s.content.is_some())
                });
            let below = format!("{rel}/");
            let child_staged = changes
                .entries
                .range(below.clone()..)
                .take_while(|(path, _)| path.starts_with(&below))
                .find(|(_, s)| s.content.is_some())
                .map(|(path, _)| path.clone());
            if let Some(clash) = parent_staged.map(str::to_string).or(child_staged) {
                return Err(ToolError::InvalidInput(format!(
                    "cannot write {shown:?}: the run has staged {clash:?}, and a path cannot be \
                     both a file and a directory: revert one of them"
                )));
            }
        }
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
        if let Some(expected) = expect
            && changes.version(rel) != expected
        {
            return Err(conflict(shown));
        }
        changes.bytes = total;
        changes.bump(rel);
        if base.is_none() && content.is_none() {
            // Removing a file this run added leaves nothing to record.
            changes.entries.remove(rel);
        } else {
            changes
                .entries
                .insert(rel.to_string(), Staged { content, base });
        }
        Ok(changes.generation)
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

/// What one agent call wrote: the last content it staged per path (`None`: removed), journaled
/// with the call so that a replayed call stages the same changes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Written {
    /// Root-relative path with `/` separators.
    pub path: String,
    /// The text the call left there; `None`: it removed the file.
    pub content: Option<String>,
}

/// One agent call's view of the changeset: when it started, the version of each path it read
/// or wrote, and what it wrote. A write to a path another writer changed after the call started
/// is refused unless the call has read the path's current version: two agents editing the same
/// file never interleave silently; the second is told to read the file again.
#[derive(Debug, Default)]
pub struct WriteSession {
    started: u64,
    seen: Mutex<std::collections::HashMap<String, u64>>,
    written: Mutex<BTreeMap<String, Option<Arc<[u8]>>>>,
}

impl WriteSession {
    fn saw(&self, rel: &str, version: u64) {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(rel.to_string(), version);
    }

    /// The version a write of `rel` may replace, or the conflict.
    fn check(&self, shown: &str, rel: &str, current: u64) -> Result<u64, ToolError> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if current > self.started && seen.get(rel) != Some(&current) {
            return Err(conflict(shown));
        }
        Ok(current)
    }

    fn wrote(&self, rel: &str, version: u64, content: Option<Arc<[u8]>>) {
        self.saw(rel, version);
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(rel.to_string(), content);
    }

    /// What the call wrote, for the journal.
    pub fn written(&self) -> Vec<Written> {
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(path, content)| Written {
                path: path.clone(),
                content: content
                    .as_ref()
                    .map(|c| String::from_utf8_lossy(c).into_owned()),
            })
            .collect()
    }
}

fn conflict(shown: &str) -> ToolError {
    ToolError::InvalidInput(format!(
        "conflict: {shown:?} was changed by another writer of this run after you last read it: \
         read it again, then redo your change on its current content"
    ))
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
    /// A path may not be written now (the root changed under it: a symlink, a file in the way).
    #[error("{0}")]
    Refused(String),
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
pub(super) fn select<'a>(
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
    confine::read_if_exists(dir, rel, u64::MAX - 1)
        .map_err(|error| ApplyError::Io(error.to_string()))
}

/// Writes the selected staged changes into `root`. First every path is checked again (the path
/// rules of writes and the run's `grant`; every directory on the way must be a real directory,
/// not a symlink, and the file itself not a symlink) and every base is compared with the root:
/// any mismatch refuses the whole apply, listing the files. Then each file is written
/// atomically (a new temporary file in the same directory, renamed over the old one, keeping the
/// old file's permissions).
pub fn apply(
    root: &Path,
    changes: &[StagedChange],
    only: &[String],
    grant: &WriteGrant,
) -> Result<Applied, ApplyError> {
    let dir = cap_std::fs::Dir::open_ambient_dir(root, cap_std::ambient_authority())
        .map_err(|e| ApplyError::Io(format!("cannot open the root {}: {e}", root.display())))?;
    let selected = select(changes, only)?;
    let mut conflicts = Vec::new();
    let mut todo = Vec::new();
    let mut applied = Applied::default();
    for change in selected {
        check_target(&dir, &change.path, grant)?;
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
            None => parent_of(&dir, &change.path, false)
                .and_then(|(parent, name)| parent.remove_file(name)),
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

/// Checks a stored path again: normalised, not into `.git`, inside the grant.
pub(super) fn check_path(path: &str, grant: &WriteGrant) -> Result<(), ApplyError> {
    let refuse =
        |why: String| ApplyError::Refused(format!("{path:?}: {why} (nothing was applied)"));
    let rel = confine::normalize(path).map_err(|e| refuse(e.to_string()))?;
    if rel != path || rel.is_empty() {
        return Err(refuse(
            "not a normalised path relative to the root".to_string(),
        ));
    }
    if rel.split('/').any(|part| part.eq_ignore_ascii_case(".git")) {
        return Err(refuse("it is inside a .git directory".to_string()));
    }
    grant.check(path, &rel).map_err(|e| refuse(e.to_string()))
}

/// Checks a stored path again before it is written: [`check_path`], and no symlink on the way
/// or at the end (the root may have changed since the run).
fn check_target(dir: &cap_std::fs::Dir, path: &str, grant: &WriteGrant) -> Result<(), ApplyError> {
    check_path(path, grant)?;
    let refuse =
        |why: String| ApplyError::Refused(format!("{path:?}: {why} (nothing was applied)"));
    let rel = path;
    let parts: Vec<&str> = rel.split('/').collect();
    for depth in 1..=parts.len() {
        let prefix = parts[..depth].join("/");
        match dir.symlink_metadata(&prefix) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(refuse(format!(
                    "{prefix:?} is now a symlink in the root, and applying never writes through one"
                )));
            }
            Ok(meta) if depth < parts.len() && !meta.is_dir() => {
                return Err(refuse(format!(
                    "{prefix:?} is now a file in the root, not a directory"
                )));
            }
            Ok(meta) if depth == parts.len() && meta.is_dir() => {
                return Err(refuse("it is now a directory in the root".to_string()));
            }
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => break,
            Err(error) => return Err(ApplyError::Io(format!("cannot check {prefix:?}: {error}"))),
        }
    }
    Ok(())
}

/// The directory holding `rel`, opened one real directory at a time (never through a symlink),
/// creating missing ones when `create`; and the file's name in it.
fn parent_of<'a>(
    dir: &cap_std::fs::Dir,
    rel: &'a str,
    create: bool,
) -> std::io::Result<(cap_std::fs::Dir, &'a str)> {
    let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
    let mut current = dir.try_clone()?;
    for part in parent.split('/').filter(|p| !p.is_empty()) {
        match current.symlink_metadata(part) {
            Ok(meta) if meta.is_dir() && !meta.file_type().is_symlink() => {}
            Ok(_) => {
                return Err(std::io::Error::other(format!(
                    "{part:?} on the way to {rel:?} is not a directory"
                )));
            }
            Err(error) if create && error.kind() == std::io::ErrorKind::NotFound => {
                current.create_dir(part)?;
            }
            Err(error) => return Err(error),
        }
        current = current.open_dir(part)?;
    }
    Ok((current, name))
}

fn write_atomic(dir: &cap_std::fs::Dir, rel: &str, content: &[u8]) -> std::io::Result<()> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let (parent, name) = parent_of(dir, rel, true)?;
    // The old file's permissions (an executable stays executable).
    let permissions = match parent.symlink_metadata(name) {
        Ok(meta) if meta.is_file() => Some(meta.permissions()),
        _ => None,
    };
    let unique = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let temp = format!(
        ".{name}.corral-apply-{}-{unique}-{nanos}",
        std::process::id()
    );
    let result = (|| {
        // A new file, never an existing one (nor what a symlink of that name points to).
        let mut options = cap_std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        let mut file = parent.open_with(&temp, &options)?;
        file.write_all(content)?;
        if let Some(permissions) = permissions {
            file.set_permissions(permissions)?;
        }
        file.sync_all()?;
        drop(file);
        parent.rename(&temp, &parent, name)
    })();
    if result.is_err() {
        let _ = parent.remove_file(&temp);
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
        unified(
            &mut out,
            &change.path,
            old.as_deref(),
            change.content.as_deref(),
        );
    }
    Ok(out)
}

/// Appends the diff of `path` from `old` to `new` (`None`: no such file) to `out`; nothing when
/// they are the same.
fn unified(out: &mut String, path: &str, old: Option<&[u8]>, new: Option<&[u8]>) {
    if old == new {
        return;
    }
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
    let binary = |bytes: &[u8]| bytes.contains(&0) || std::str::from_utf8(bytes).is_err();
    if old.is_some_and(binary) || new.is_some_and(binary) {
        let _ = writeln!(out, "Binary files {old_name} and {new_name} differ");
        return;
    }
    super::git::text_patch(
        out,
        &old_name,
        &new_name,
        old.unwrap_or_default(),
        new.unwrap_or_default(),
    );
}
