//! Walking the root like ripgrep does, and glob patterns over root-relative paths.

use super::clock::Call;
use super::{ToolError, ToolRoot, confine, git};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// A compiled glob pattern plus the literal directory prefix it is confined to, so that walks can
/// skip directories that cannot contain a match (`src/**/*.rs` only walks `src`).
pub(super) struct Pattern {
    matcher: globset::GlobMatcher,
    /// Leading literal directory components, joined by `/` (empty: no pruning).
    prefix: String,
    /// How deep a match can be, when the pattern has no `**` (`*.rs` only matches at the top).
    depth: Option<usize>,
}

impl Pattern {
    /// Compiles `pattern`; `*` and `?` do not match `/`, `**` matches across directories.
    pub(super) fn new(pattern: &str) -> Result<Pattern, ToolError> {
        Self::build(pattern, false)
    }

    /// Like [`Pattern::new`], but a pattern without `/` matches the file name at any depth, as
    /// ripgrep's `--glob` does (`*.rs` is `**/*.rs`).
    pub(super) fn file_filter(pattern: &str) -> Result<Pattern, ToolError> {
        Self::build(pattern, true)
    }

    fn build(pattern: &str, any_depth: bool) -> Result<Pattern, ToolError> {
        if pattern.is_empty() {
            return Err(ToolError::InvalidInput(
                "the glob pattern is empty: give a pattern relative to the root, e.g. \"**/*.rs\""
                    .into(),
            ));
        }
        if pattern.contains('\0') {
            return Err(ToolError::InvalidInput(format!(
                "glob pattern {pattern:?} contains a NUL byte: remove it"
            )));
        }
        if confine::is_absolute(pattern) {
            return Err(ToolError::Denied(format!(
                "glob pattern {pattern:?} is absolute: patterns must be relative to the root"
            )));
        }
        if pattern.split('/').any(|part| part == "..") {
            return Err(ToolError::Denied(format!(
                "glob pattern {pattern:?} leads outside the root: patterns must be relative to the \
                 root and may not contain '..'"
            )));
        }
        let mut trimmed = pattern;
        while let Some(rest) = trimmed.strip_prefix("./") {
            trimmed = rest;
        }
        let anywhere;
        if any_depth && !trimmed.contains('/') {
            anywhere = format!("**/{trimmed}");
            trimmed = &anywhere;
        }
        let glob = globset::GlobBuilder::new(trimmed)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|err| {
                ToolError::InvalidInput(format!(
                    "invalid glob pattern {pattern:?}: {}: fix the pattern, e.g. \"src/**/*.rs\"",
                    err.kind()
                ))
            })?;
        let mut dirs: Vec<&str> = trimmed.split('/').collect();
        dirs.pop(); // The last component names files, never a directory to descend into.
        let literal = dirs
            .iter()
            .take_while(|part| {
                !part.is_empty()
                    && **part != "."
                    && !part.contains(['*', '?', '[', ']', '{', '}', '\\'])
            })
            .copied()
            .collect::<Vec<_>>()
            .join("/");
        // Without `**` a match has as many components as the pattern, except that a character
        // class (`[!x]`) may match a `/`: then no pruning.
        let depth =
            (!trimmed.contains("**") && !trimmed.contains('[')).then(|| trimmed.split('/').count());
        Ok(Pattern {
            matcher: glob.compile_matcher(),
            prefix: literal,
            depth,
        })
    }

    /// Whether a root-relative file path matches.
    pub(super) fn is_match(&self, rel: &Path) -> bool {
        self.matcher.is_match(rel)
    }
}

/// Whether a root-relative path has a hidden component (`.x`), which walks skip.
pub(super) fn is_hidden(path: &str) -> bool {
    path.split('/').any(|part| part.starts_with('.'))
}

/// Whether `prefix` equals `path` or names one of its ancestor directories.
fn is_dir_prefix(prefix: &str, path: &str) -> bool {
    prefix.is_empty()
        || (path.starts_with(prefix)
            && (path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/'))
}

/// How a walk treats ignore files and hidden entries.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Like ripgrep: `.gitignore`, `.ignore` and `.git/info/exclude` honoured, hidden files skipped.
    Search,
    /// Like `git status`: only git's ignore rules; hidden files included, `.git` skipped.
    Git,
}

/// The ignore files the walker reads in a directory, by mode.
fn ignore_files(mode: Mode) -> &'static [&'static str] {
    match mode {
        Mode::Search => &[".gitignore", ".ignore"],
        Mode::Git => &[".gitignore"],
    }
}

/// Whether the walker may read the ignore file `rel` (root-relative): absent, or a regular file
/// that stays inside the root. Anything else (a FIFO would block the walk, a symlink out would
/// feed it bytes from outside the root) is refused by name.
fn check_ignore_file(root: &ToolRoot, rel: &str) -> Result<(), ToolError> {
    let max = root.limits().max_read_bytes;
    let size_ok = |size: u64| {
        if size > max {
            return Err(ToolError::Limit(format!(
                "the ignore file {rel:?} is {size} bytes, over the read limit of {max} bytes, so \
                 Corral does not read it: shorten it, or raise --max-read-bytes"
            )));
        }
        Ok(())
    };
    match root.inner.dir.symlink_metadata(rel) {
        Err(_) => return Ok(()),
        Ok(meta) if meta.is_file() => return size_ok(meta.len()),
        Ok(_) => {}
    }
    // A symlink is fine while it resolves (inside the root) to a regular file.
    match root.inner.dir.metadata(rel) {
        Ok(meta) if meta.is_file() => size_ok(meta.len()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        _ => Err(ToolError::Denied(format!(
            "the ignore file {rel:?} is not a regular file inside the root (a FIFO, socket, \
             device, directory, or a symlink out of the root), so Corral does not read it and \
             cannot walk its directory: replace it with a regular file or remove it"
        ))),
    }
}

/// A walk over the root: [`ignore::Walk`] plus the checks Corral adds. Yields entries, skipping
/// unreadable ones; fails on an ignore file it may not read, on a path too long for the OS, and
/// when the call must stop.
pub(super) struct Walk<'c, 'a> {
    inner: ignore::Walk,
    call: &'c Call<'a>,
    /// The first ignore file the walk refused (set inside `filter_entry`).
    refused: Arc<Mutex<Option<ToolError>>>,
    failed: bool,
}

impl Iterator for Walk<'_, '_> {
    type Item = Result<ignore::DirEntry, ToolError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            // Before stepping: a refused root ignore file must stop the walk before the walker
            // opens it.
            if let Some(error) = self.take_refused().or_else(|| self.call.check().err()) {
                return self.fail(error);
            }
            let next = self.inner.next();
            // `filter_entry` may have refused a directory's ignore file during the step.
            if let Some(error) = self.take_refused() {
                return self.fail(error);
            }
            match next? {
                Ok(entry) => return Some(Ok(entry)),
                Err(err) => match too_long(&err) {
                    Some(error) => return self.fail(error),
                    // Unreadable entries (permission denied, vanished) are skipped, as ripgrep
                    // does.
                    None => continue,
                },
            }
        }
    }
}

impl Walk<'_, '_> {
    fn take_refused(&self) -> Option<ToolError> {
        self.refused.lock().ok().and_then(|mut slot| slot.take())
    }

    fn fail(&mut self, error: ToolError) -> Option<Result<ignore::DirEntry, ToolError>> {
        self.failed = true;
        Some(Err(error))
    }
}

/// A walk error for a path longer than the OS allows: an answer without it would be silently
/// incomplete.
fn too_long(err: &ignore::Error) -> Option<ToolError> {
    let io = err.io_error()?;
    let path_too_long = io.raw_os_error() == Some(libc::ENAMETOOLONG)
        || io.kind() == std::io::ErrorKind::InvalidFilename;
    path_too_long.then(|| {
        ToolError::Limit(
            "a path under the root is longer than the operating system allows (ENAMETOOLONG), so \
             the walk cannot list everything: narrow the pattern to avoid the deep directory, or \
             shorten the paths under the root"
                .into(),
        )
    })
}

/// A sequential walker over the root that never follows symlinks (so it never leaves the root),
/// never reads ignore files above the root or outside it, and yields entries in a deterministic
/// order. Ignore files are git's (`.gitignore`, and the root repository's `.git/info/exclude`)
/// and, when searching, `.ignore`; nested repositories' `info/exclude` files are not read.
pub(super) fn walker<'c, 'a>(
    root: &ToolRoot,
    call: &'c Call<'a>,
    mode: Mode,
    pattern: Option<&Pattern>,
) -> Walk<'c, 'a> {
    let refused: Arc<Mutex<Option<ToolError>>> = Arc::new(Mutex::new(None));
    let base = root.path().to_path_buf();
    let mut builder = ignore::WalkBuilder::new(&base);
    builder
        .follow_links(false)
        .parents(false)
        .git_global(false)
        .git_ignore(true)
        // The ignore crate would follow a `.git` file's `gitdir:` pointer anywhere to find
        // `info/exclude`; the root repository's exclude file is added below after a check.
        .git_exclude(false)
        .require_git(false)
        .ignore(mode == Mode::Search)
        // Hidden entries are skipped below, where the pattern's literal prefix is known.
        .hidden(false)
        .max_depth(pattern.and_then(|p| p.depth))
        .sort_by_file_name(|a, b| a.cmp(b));
    let mut first = ignore_files(mode)
        .iter()
        .map(|name| check_ignore_file(root, name))
        .find_map(Result::err);
    if first.is_none() && git::is_plain_git_dir(root) {
        match check_ignore_file(root, ".git/info/exclude") {
            Ok(()) => {
                if root
                    .inner
                    .dir
                    .symlink_metadata(".git/info/exclude")
                    .is_ok_and(|m| m.is_file())
                {
                    let _ = builder.add_ignore(base.join(".git/info/exclude"));
                }
            }
            Err(error) => first = Some(error),
        }
    }
    if let Some(error) = first {
        *refused.lock().expect("fresh lock") = Some(error);
    }
    let prefix = pattern.map(|p| p.prefix.clone()).filter(|p| !p.is_empty());
    let filter_root = root.clone();
    let filter_refused = Arc::clone(&refused);
    builder.filter_entry(move |entry| {
        // Git never lists its own `.git` (a directory, or a file in linked worktrees), and
        // neither does a search, whatever the pattern says.
        if entry.depth() > 0 && entry.file_name() == ".git" {
            return false;
        }
        let rel = entry
            .path()
            .strip_prefix(&base)
            .ok()
            .and_then(|rel| rel.to_str());
        // A search skips hidden entries, as ripgrep does, except the directories a pattern
        // names literally (`.corral/workflows/*.js` walks `.corral/workflows`, and nothing
        // else hidden).
        if mode == Mode::Search
            && entry.depth() > 0
            && entry.file_name().as_encoded_bytes().first() == Some(&b'.')
        {
            let named = entry.file_type().is_some_and(|t| t.is_dir())
                && rel
                    .zip(prefix.as_deref())
                    .is_some_and(|(rel, prefix)| is_dir_prefix(rel, prefix));
            if !named {
                return false;
            }
        }
        if !entry.file_type().is_some_and(|t| t.is_dir()) {
            return true;
        }
        let Some(rel) = rel else {
            return true;
        };
        if let Some(prefix) = &prefix {
            // Descend only into ancestors of the prefix, the prefix itself, and below it.
            if !(is_dir_prefix(rel, prefix) || is_dir_prefix(prefix, rel)) {
                return false;
            }
        }
        // The walker reads this directory's ignore files when it enters it: check them first.
        for name in ignore_files(mode) {
            if let Err(error) = check_ignore_file(&filter_root, &format!("{rel}/{name}")) {
                if let Ok(mut slot) = filter_refused.lock() {
                    slot.get_or_insert(error);
                }
                return false;
            }
        }
        true
    });
    Walk {
        inner: builder.build(),
        call,
        refused,
        failed: false,
    }
}

/// Implements [`ToolRoot::glob`].
pub(super) fn glob(root: &ToolRoot, call: &Call, pattern: &str) -> Result<Vec<String>, ToolError> {
    let compiled = Pattern::new(pattern)?;
    let max = root.limits().max_glob_results;
    let too_many = || {
        ToolError::Limit(format!(
            "glob {pattern:?} matches more than {max} files: narrow the pattern or raise \
             --max-glob-results"
        ))
    };
    let base = root.path();
    let mut out = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for entry in walker(root, call, Mode::Search, Some(&compiled)) {
        let entry = entry?;
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let Ok(rel) = entry.path().strip_prefix(base) else {
            continue;
        };
        if compiled.is_match(rel) {
            let path = confine::rel_string(rel);
            seen.insert(path.clone());
            if matches!(root.overlay(&path), super::changes::Overlay::Removed) {
                continue;
            }
            if out.len() == max {
                return Err(too_many());
            }
            out.push(path);
        }
    }
    // Staged files the walk did not meet: new ones, and ones the root has lost since.
    let staged = root.changes.lock().unwrap_or_else(|e| e.into_inner());
    for (path, content) in staged.entries() {
        if content.is_some()
            && !seen.contains(path)
            && !is_hidden(path)
            && compiled.is_match(Path::new(path))
        {
            if out.len() == max {
                return Err(too_many());
            }
            out.push(path.to_string());
        }
    }
    drop(staged);
    out.sort_unstable();
    Ok(out)
}
