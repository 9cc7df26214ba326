//! Walking the root like ripgrep does, and glob patterns over root-relative paths.

use super::{ToolError, ToolRoot, confine};
use std::path::Path;

/// A compiled glob pattern plus the literal directory prefix it is confined to, so that walks can
/// skip directories that cannot contain a match (`src/**/*.rs` only walks `src`).
pub(super) struct Pattern {
    matcher: globset::GlobMatcher,
    /// Leading literal directory components, joined by `/` (empty: no pruning).
    prefix: String,
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
        Ok(Pattern {
            matcher: glob.compile_matcher(),
            prefix: literal,
        })
    }

    /// Whether a root-relative file path matches.
    pub(super) fn is_match(&self, rel: &Path) -> bool {
        self.matcher.is_match(rel)
    }
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

/// A sequential walker over the root that never follows symlinks (so it never leaves the root),
/// never reads ignore files above the root, and yields entries in a deterministic order.
pub(super) fn walker(root: &ToolRoot, mode: Mode, pattern: Option<&Pattern>) -> ignore::Walk {
    let base = root.path().to_path_buf();
    let mut builder = ignore::WalkBuilder::new(&base);
    builder
        .follow_links(false)
        .parents(false)
        .git_global(false)
        .git_ignore(true)
        .git_exclude(true)
        .require_git(false)
        .ignore(mode == Mode::Search)
        .hidden(mode == Mode::Search)
        .sort_by_file_name(|a, b| a.cmp(b));
    let prefix = pattern.map(|p| p.prefix.clone()).filter(|p| !p.is_empty());
    if mode == Mode::Git || prefix.is_some() {
        builder.filter_entry(move |entry| {
            // Git never lists its own `.git` (a directory, or a file in linked worktrees).
            if mode == Mode::Git && entry.depth() > 0 && entry.file_name() == ".git" {
                return false;
            }
            if !entry.file_type().is_some_and(|t| t.is_dir()) {
                return true;
            }
            match (&prefix, entry.path().strip_prefix(&base)) {
                // Descend only into ancestors of the prefix, the prefix itself, and below it.
                (Some(prefix), Ok(rel)) => rel
                    .to_str()
                    .is_some_and(|rel| is_dir_prefix(rel, prefix) || is_dir_prefix(prefix, rel)),
                _ => true,
            }
        });
    }
    builder.build()
}

/// Implements [`ToolRoot::glob`].
pub(super) fn glob(root: &ToolRoot, pattern: &str) -> Result<Vec<String>, ToolError> {
    let compiled = Pattern::new(pattern)?;
    let max = root.limits().max_glob_results;
    let base = root.path();
    let mut out = Vec::new();
    for entry in walker(root, Mode::Search, Some(&compiled)) {
        let Ok(entry) = entry else { continue };
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let Ok(rel) = entry.path().strip_prefix(base) else {
            continue;
        };
        if compiled.is_match(rel) {
            if out.len() == max {
                return Err(ToolError::Limit(format!(
                    "glob {pattern:?} matches more than {max} files: narrow the pattern or raise \
                     --max-glob-results"
                )));
            }
            out.push(confine::rel_string(rel));
        }
    }
    out.sort_unstable();
    Ok(out)
}
