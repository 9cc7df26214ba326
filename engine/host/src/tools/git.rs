//! Read-only git over the root's repository, through `gix` (never the `git` binary).
//!
//! Object access goes through gix's object database; working-tree files are read through the
//! root's `cap_std::fs::Dir`, exactly like `read`, so a symlink in the working tree cannot make a
//! diff or status read outside the root. Revision arguments are restricted to plain revision
//! syntax (no `rev:path`, no ranges inside a revision), and path arguments are normalised like
//! every other path before they are looked up in a tree.

use super::clock::Call;
use super::{Commit, StatusEntry, ToolError, ToolRoot, confine, output_limit};
use gix::ObjectId;
use gix::objs::tree::EntryKind;
use similar::{Algorithm, TextDiff};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io::Read as _;
use std::time::Duration;

/// How long one file's diff may compute before similar falls back to a coarser (still correct)
/// diff; guards against quadratic inputs.
const DIFF_TIMEOUT: Duration = Duration::from_secs(2);

/// Bytes inspected for a NUL to call a file binary, as git does.
const BINARY_PROBE: usize = 8000;

/// Deepest tree nesting a git call follows; deeper trees are refused (a depth bomb would
/// otherwise exhaust the thread's stack or the host's memory).
pub(super) const MAX_TREE_DEPTH: usize = 256;

/// Largest object gix allocates for a git call (a tree of about 300,000 entries), whatever its
/// kind: set as `gitoxide.objects.allocLimit`, so a larger object is refused before it is
/// inflated (blobs over `--max-read-bytes` and commits over [`MAX_COMMIT_BYTES`] are refused by
/// their header before that).
pub(super) const MAX_TREE_BYTES: u64 = 16 << 20;

/// Largest commit object a git call inflates (its message included).
pub(super) const MAX_COMMIT_BYTES: u64 = 1 << 20;

/// Longest entry name in a tree (what file systems allow), and longest path built from them.
pub(super) const MAX_NAME_BYTES: usize = 255;
pub(super) const MAX_PATH_BYTES: usize = 4096;

/// Path bytes one git call may build (tree walks hold every path they list).
pub(super) const MAX_WALK_PATH_BYTES: usize = 64 << 20;

/// Bytes of the delta-base cache of one git call (git's default is 96 MiB).
const DELTA_BASE_CACHE: usize = 32 << 20;

/// Files in a `.git` directory that point git at objects or refs elsewhere: Corral refuses a
/// repository that has one rather than follow it out of the root.
const POINTER_FILES: [(&str, &str); 3] = [
    (
        ".git/commondir",
        "shares its refs and objects with another repository (a linked worktree's metadata)",
    ),
    (
        ".git/objects/info/alternates",
        "borrows objects from another repository (a clone made with --shared or --reference): \
         run `git repack -a -d` and delete the file",
    ),
    (
        ".git/objects/info/http-alternates",
        "borrows objects from another repository over HTTP: delete the file",
    ),
];

/// Counts what one git call visits against `--max-git-entries`, and checks the call's time.
struct Visits<'c, 'a> {
    call: &'c Call<'a>,
    left: usize,
    max: usize,
    /// Path bytes the call may still build.
    path_bytes: usize,
}

impl<'c, 'a> Visits<'c, 'a> {
    fn new(root: &ToolRoot, call: &'c Call<'a>) -> Self {
        let max = root.limits().max_git_entries;
        Visits {
            call,
            left: max,
            max,
            path_bytes: MAX_WALK_PATH_BYTES,
        }
    }

    /// Counts a path the walk builds: at most [`MAX_PATH_BYTES`] long, and
    /// [`MAX_WALK_PATH_BYTES`] in all.
    fn path(&mut self, path: &str) -> Result<(), ToolError> {
        if path.len() > MAX_PATH_BYTES {
            let shown: String = path.chars().take(100).collect();
            return Err(ToolError::Limit(format!(
                "the repository holds a path longer than {MAX_PATH_BYTES} bytes ({shown:?}…): \
                 Corral does not walk it"
            )));
        }
        self.path_bytes = self.path_bytes.checked_sub(path.len()).ok_or_else(|| {
            ToolError::Limit(format!(
                "the git call builds more than {MAX_WALK_PATH_BYTES} bytes of paths: narrow it to \
                 a path or fewer commits"
            ))
        })?;
        Ok(())
    }

    fn take(&mut self, entries: usize) -> Result<(), ToolError> {
        self.call.check()?;
        self.left = self.left.checked_sub(entries).ok_or_else(|| {
            ToolError::Limit(format!(
                "the git call visits more than {} tree entries (--max-git-entries): narrow it to \
                 a path or fewer commits, or raise --max-git-entries",
                self.max
            ))
        })?;
        Ok(())
    }
}

/// A non-tree entry of a tree: what a path holds at one revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    id: ObjectId,
    kind: EntryKind,
}

/// The content of one side of a file diff.
enum Content {
    Bytes(Vec<u8>),
    /// Larger than `max_read_bytes`; only the size is shown.
    TooLarge(u64),
}

/// One side of a changed path: an object (read when rendered) or working-tree content.
enum Side {
    Object(Entry),
    Work(EntryKind, Content),
}

/// One changed path; `None` is "absent on that side".
struct Change {
    path: String,
    old: Option<Side>,
    new: Option<Side>,
}

/// What the working tree holds at a tracked path, compared to a base entry.
enum WorkState {
    Missing,
    Unchanged,
    Changed(EntryKind, Content),
}

/// The index entries (stage 0, or the first stage of a conflict) by path, with the index's
/// timestamp for the racy-git check.
struct IndexView {
    entries: HashMap<String, IndexEntry>,
    /// Index file timestamp in unix seconds: entries modified at or after it are "racy" and must
    /// be hashed, not trusted by their stat data.
    timestamp: i64,
}

struct IndexEntry {
    id: ObjectId,
    size: u32,
    mtime_secs: u32,
    mtime_nsecs: u32,
}

fn not_repo() -> ToolError {
    ToolError::NotFound("the root is not a git repository".into())
}

/// A repository error, without gix's own text: that can quote bytes of the files it parsed and
/// the host path of the root, neither of which a guest may see.
fn git_error(_err: impl std::fmt::Display) -> ToolError {
    ToolError::Io(
        "git: the repository could not be read (a damaged or unsupported object, ref or index; \
         `git fsck` in the root tells which)"
            .into(),
    )
}

/// Whether the root's `.git` is a directory of its own (not a file or a symlink).
pub(super) fn is_plain_git_dir(root: &ToolRoot) -> bool {
    root.inner
        .dir
        .symlink_metadata(".git")
        .is_ok_and(|meta| meta.is_dir())
}

fn denied_repo(detail: String) -> ToolError {
    ToolError::Denied(format!(
        "{detail}; Corral reads only a repository stored in the root's own .git directory, so \
         the git tools are refused for this root"
    ))
}

/// Checks that everything git would read is stored under the root: `.git` is a directory, and
/// nothing in it is a symlink, a FIFO, a socket, a device or a pointer file to another
/// repository. The walk goes through the root's capability, so it never leaves the root itself,
/// and no byte of any file is read, so no message can quote one.
fn check_git_dir(root: &ToolRoot) -> Result<(), ToolError> {
    let dir = &root.inner.dir;
    let meta = match dir.symlink_metadata(".git") {
        Ok(meta) => meta,
        Err(_) => return Err(not_repo()),
    };
    if meta.file_type().is_symlink() {
        return Err(denied_repo(
            "the root's .git is a symlink, which may point outside the root: replace it with the \
             repository itself, or run with --root at the checkout it belongs to"
                .into(),
        ));
    }
    if meta.is_file() {
        return Err(denied_repo(
            "the root's .git is a file (a `gitdir:` pointer, as a linked worktree made by `git \
             worktree add` or a submodule checkout has), and Corral does not follow it out of \
             the root: run with --root at the main checkout, or clone the repository into a \
             directory of its own"
                .into(),
        ));
    }
    if !meta.is_dir() {
        return Err(denied_repo(
            "the root's .git is not a directory (a FIFO, socket or device)".into(),
        ));
    }
    let max = root.limits().max_git_entries;
    let mut seen = 0usize;
    let top = dir
        .read_dir(".git")
        .map_err(|err| ToolError::Io(format!("git: cannot list .git: {}", err.kind())))?;
    let mut pending = Vec::new();
    for entry in top {
        let entry =
            entry.map_err(|err| ToolError::Io(format!("git: cannot list .git: {}", err.kind())))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let path = std::path::Path::new(".git").join(name.as_ref());
        let read = READ_DIRS.contains(&name.as_ref())
            || READ_FILES.contains(&name.as_ref())
            || is_pseudo_ref(&name);
        if read {
            seen += 1;
            if check_git_entry(dir, &entry, &path)? {
                pending.push(path);
            }
        }
        // Anything else (hooks, lfs, modules, worktrees, an fsmonitor socket) is never read.
    }
    while let Some(here) = pending.pop() {
        let entries = dir.read_dir(&here).map_err(|err| {
            ToolError::Io(format!(
                "git: cannot list {}: {}",
                here.display(),
                err.kind()
            ))
        })?;
        for entry in entries {
            let entry = entry.map_err(|err| {
                ToolError::Io(format!(
                    "git: cannot list {}: {}",
                    here.display(),
                    err.kind()
                ))
            })?;
            seen += 1;
            if seen > max {
                return Err(ToolError::Limit(format!(
                    "the root's .git holds more than {max} entries that git reads \
                     (--max-git-entries): run `git gc` to pack loose objects, or raise \
                     --max-git-entries"
                )));
            }
            let path = here.join(entry.file_name());
            if check_git_entry(dir, &entry, &path)? {
                pending.push(path);
            }
        }
    }
    Ok(())
}

/// The directories of `.git` that gix reads for the git tools.
const READ_DIRS: [&str; 4] = ["refs", "objects", "info", "logs"];

/// The files at the top of `.git` that gix reads, besides pseudo-refs (`HEAD`, `ORIG_HEAD`, ...).
const READ_FILES: [&str; 5] = ["config", "packed-refs", "index", "shallow", "commondir"];

/// Largest index file the git tools read (an index holds about 100 bytes per tracked file).
const MAX_INDEX_BYTES: u64 = 64 << 20;

/// Whether a top-level name is one git resolves as a pseudo-ref (`HEAD`, `FETCH_HEAD`).
fn is_pseudo_ref(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
}

/// Checks one entry of `.git` that git may read; true when it is a directory to descend into.
fn check_git_entry(
    dir: &cap_std::fs::Dir,
    entry: &cap_std::fs::DirEntry,
    path: &std::path::Path,
) -> Result<bool, ToolError> {
    let kind = entry.file_type().map_err(|err| {
        ToolError::Io(format!(
            "git: cannot inspect {}: {}",
            path.display(),
            err.kind()
        ))
    })?;
    if kind.is_dir() {
        return Ok(true);
    }
    if kind.is_symlink() {
        return Err(denied_repo(format!(
            "{} is a symlink, which may point outside the root",
            path.display()
        )));
    }
    if !kind.is_file() {
        return Err(denied_repo(format!(
            "{} is not a regular file (a FIFO, socket or device), which git cannot read without \
             blocking",
            path.display()
        )));
    }
    if let Some((_, why)) = POINTER_FILES
        .iter()
        .find(|(name, _)| std::path::Path::new(name) == path)
    {
        return Err(denied_repo(format!(
            "the repository {why} ({})",
            path.display()
        )));
    }
    if path == std::path::Path::new(".git/index") {
        let size = dir.metadata(path).map_or(0, |meta| meta.len());
        if size > MAX_INDEX_BYTES {
            return Err(ToolError::Limit(format!(
                "the root's .git/index is {size} bytes, over the {MAX_INDEX_BYTES}-byte limit \
                 of the git tools"
            )));
        }
    }
    Ok(false)
}

/// Checks (once per root) and opens the repository whose working tree is the root itself.
pub(super) fn repo(root: &ToolRoot) -> Result<gix::Repository, ToolError> {
    let shared = root.inner.repo.get_or_init(|| {
        check_git_dir(root)?;
        // `isolated`: no global or system config, no includes, no environment overrides; and
        // `open`, not `discover`, so a repository above the root is never used.
        // A delta-base cache like git's own (`core.deltaBaseCacheLimit`), so that walking many
        // revisions of the same trees does not re-inflate their delta chains.
        let options = gix::open::Options::isolated().config_overrides([
            format!("core.deltaBaseCacheLimit={DELTA_BASE_CACHE}"),
            // No object larger than a tree may be is ever allocated, whatever its kind.
            format!("gitoxide.objects.allocLimit={MAX_TREE_BYTES}"),
        ]);
        let opened = gix::open_opts(root.path(), options).map_err(|_| not_repo())?;
        let canonical = |dir: &std::path::Path| std::fs::canonicalize(dir).ok();
        let Some(workdir) = opened.workdir() else {
            return Err(not_repo());
        };
        let git_dir = Some(root.path().join(".git"));
        if canonical(workdir).as_deref() != Some(root.path())
            || canonical(opened.git_dir()) != git_dir
            || canonical(opened.common_dir()) != git_dir
        {
            return Err(denied_repo(
                "the repository's configuration moves its working tree or metadata elsewhere \
                 (core.worktree)"
                    .into(),
            ));
        }
        Ok(opened.into_sync())
    });
    let mut local = shared.as_ref().map_err(Clone::clone)?.to_thread_local();
    local.object_cache_size_if_unset(16 * 1024 * 1024);
    Ok(local)
}

/// Accepts plain revisions only: ids, ref names, `HEAD~2`, `main^2`, `@{1}`.
fn check_rev(rev: &str) -> Result<(), ToolError> {
    let hint = "give a commit id, a branch or tag name, or e.g. \"HEAD~1\"";
    if rev.is_empty() {
        return Err(ToolError::InvalidInput(format!(
            "the revision is empty: {hint}"
        )));
    }
    let bad = rev.len() > 256
        || rev.contains(['\0', ':', '\\', ' ', '\t', '\n', '\r'])
        || rev.contains("..")
        || rev.starts_with(['-', '/'])
        // Names of other worktrees' refs (`worktrees/<name>/HEAD`, `main-worktree/HEAD`).
        || rev.starts_with("worktrees/")
        || rev.starts_with("main-worktree/");
    if bad {
        return Err(ToolError::InvalidInput(format!(
            "invalid revision {rev:?}: {hint}"
        )));
    }
    Ok(())
}

fn resolve_commit<'r>(repo: &'r gix::Repository, rev: &str) -> Result<gix::Commit<'r>, ToolError> {
    check_rev(rev)?;
    // gix's parse errors describe its internals, so the message only says what to give instead.
    let unknown = || {
        ToolError::InvalidInput(format!(
            "unknown revision {rev:?}: give a commit id, a branch or tag name, or e.g. \"HEAD~1\""
        ))
    };
    let id = repo.rev_parse_single(rev).map_err(|_| unknown())?;
    // A full hex id parses without the object existing, so a missing object is "unknown" too.
    repo.find_header(id).map_err(|_| unknown())?;
    check_size(repo, id.detach(), MAX_COMMIT_BYTES, "the object")?;
    let object = id.object().map_err(|_| unknown())?;
    let kind = object.kind;
    object.peel_to_commit().map_err(|_| {
        ToolError::InvalidInput(format!(
            "revision {rev:?} names a {kind}, not a commit: give a commit id, a branch or tag name"
        ))
    })
}

fn head_commit(repo: &gix::Repository) -> Result<Option<gix::Commit<'_>>, ToolError> {
    let head = repo.head().map_err(git_error)?;
    if head.is_unborn() {
        return Ok(None);
    }
    let id = repo.head_id().map_err(git_error)?.detach();
    find_commit(repo, id).map(Some)
}

/// Fails when object `id` is larger than `max` bytes, before it is inflated.
fn check_size(repo: &gix::Repository, id: ObjectId, max: u64, what: &str) -> Result<(), ToolError> {
    let size = repo.find_header(id).map_err(git_error)?.size();
    if size > max {
        return Err(ToolError::Limit(format!(
            "{what} {id} is {size} bytes, over the {max}-byte limit of the git tools: the \
             repository holds an object too large to read"
        )));
    }
    Ok(())
}

/// Finds a commit, refusing one larger than [`MAX_COMMIT_BYTES`] before it is inflated.
fn find_commit(repo: &gix::Repository, id: ObjectId) -> Result<gix::Commit<'_>, ToolError> {
    check_size(repo, id, MAX_COMMIT_BYTES, "commit")?;
    repo.find_commit(id).map_err(git_error)
}

fn tree_id(commit: &gix::Commit<'_>) -> Result<ObjectId, ToolError> {
    commit.tree_id().map(|id| id.detach()).map_err(git_error)
}

/// Implements [`ToolRoot::git_log`].
pub(super) fn log(
    root: &ToolRoot,
    call: &Call,
    path: Option<&str>,
    max: Option<u32>,
) -> Result<Vec<Commit>, ToolError> {
    let repo = repo(root)?;
    let rel = path
        .map(confine::normalize)
        .transpose()?
        .filter(|p| !p.is_empty());
    let mut lookup = rel.as_deref().map(PathLookup::new);
    let max = max.map_or(usize::MAX, |m| m as usize);
    let max_output = root.limits().max_output_bytes;
    let mut visits = Visits::new(root, call);
    let mut out = Vec::new();
    let Some(head) = head_commit(&repo)? else {
        return Ok(out);
    };
    if max == 0 {
        return Ok(out);
    }
    let walk = repo
        .rev_walk([head.id])
        .sorting(gix::revision::walk::Sorting::ByCommitTime(
            gix::traverse::commit::simple::CommitTimeOrder::NewestFirst,
        ))
        .all()
        .map_err(git_error)?;
    // With a path, most commits are skipped: their root trees come from the commit-graph when
    // the repository has one (as git does), so a skipped commit is never inflated.
    let graph = lookup.as_ref().and_then(|_| repo.commit_graph().ok());
    let tree_of = |id: ObjectId| -> Result<ObjectId, ToolError> {
        if let Some(commit) = graph.as_ref().and_then(|graph| graph.commit_by_id(id)) {
            return Ok(commit.root_tree_id().to_owned());
        }
        tree_id(&find_commit(&repo, id)?)
    };
    let mut bytes = 0usize;
    for info in walk {
        call.check()?;
        let info = info.map_err(git_error)?;
        if let Some(lookup) = &mut lookup {
            let here = lookup.at(&repo, &mut visits, Some(tree_of(info.id)?))?;
            let parent_tree = match info.parent_ids.first() {
                Some(parent) => Some(tree_of(*parent)?),
                None => None,
            };
            if here == lookup.at(&repo, &mut visits, parent_tree)? {
                continue;
            }
        }
        check_size(&repo, info.id, MAX_COMMIT_BYTES, "commit")?;
        let commit = info.object().map_err(git_error)?;
        let author = commit.author().map_err(git_error)?;
        let entry = Commit {
            id: commit.id.to_string(),
            author: format!("{} <{}>", author.name, author.email),
            time: author.seconds(),
            summary: commit.message().map_err(git_error)?.summary().to_string(),
        };
        bytes += entry.id.len() + entry.author.len() + entry.summary.len() + 24;
        if bytes > max_output {
            return Err(output_limit(
                "git log",
                max_output,
                "pass a smaller max or a path",
            ));
        }
        out.push(entry);
        if out.len() == max {
            break;
        }
    }
    Ok(out)
}

/// What one path is in many trees, remembered by tree id at every level of the path: a commit
/// that did not touch the path's top directory costs one lookup in a tree seen before.
struct PathLookup {
    parts: Vec<String>,
    /// (depth, tree id) to what the rest of the path is in that tree.
    known: HashMap<(usize, ObjectId), Option<(ObjectId, EntryKind)>>,
}

/// Remembered lookups before the memory of a [`PathLookup`] starts over.
const PATH_LOOKUP_MEMORY: usize = 1 << 16;

impl PathLookup {
    fn new(rel: &str) -> Self {
        PathLookup {
            parts: rel.split('/').map(str::to_string).collect(),
            known: HashMap::new(),
        }
    }

    /// What the path is in `tree`: `None` if absent.
    fn at(
        &mut self,
        repo: &gix::Repository,
        visits: &mut Visits,
        tree: Option<ObjectId>,
    ) -> Result<Option<(ObjectId, EntryKind)>, ToolError> {
        let Some(tree) = tree else { return Ok(None) };
        self.below(repo, visits, tree, 0)
    }

    fn below(
        &mut self,
        repo: &gix::Repository,
        visits: &mut Visits,
        tree: ObjectId,
        depth: usize,
    ) -> Result<Option<(ObjectId, EntryKind)>, ToolError> {
        if let Some(known) = self.known.get(&(depth, tree)) {
            return Ok(*known);
        }
        visits.take(1)?;
        let object = find_tree(repo, tree)?;
        let found = object
            .find_entry(self.parts[depth].as_str())
            .map(|entry| (entry.object_id(), entry.mode().kind()));
        let result = match found {
            Some((id, EntryKind::Tree)) if depth + 1 < self.parts.len() => {
                self.below(repo, visits, id, depth + 1)?
            }
            Some(_) if depth + 1 < self.parts.len() => None,
            other => other,
        };
        if self.known.len() >= PATH_LOOKUP_MEMORY {
            self.known.clear();
        }
        self.known.insert((depth, tree), result);
        Ok(result)
    }
}

/// Finds a tree object (gix refuses one larger than [`MAX_TREE_BYTES`] before inflating it).
fn find_tree(repo: &gix::Repository, id: ObjectId) -> Result<gix::Tree<'_>, ToolError> {
    // gix itself refuses to allocate an object over MAX_TREE_BYTES (`gitoxide.objects.allocLimit`).
    repo.find_tree(id).map_err(git_error)
}

/// What `rel` (a normalised path, files or directories) is in the tree `tree`: `None` if absent.
fn entry_at(
    repo: &gix::Repository,
    visits: &mut Visits,
    tree: Option<ObjectId>,
    rel: &str,
) -> Result<Option<(ObjectId, EntryKind)>, ToolError> {
    PathLookup::new(rel).at(repo, visits, tree)
}

/// Implements [`ToolRoot::git_show`].
pub(super) fn show(
    root: &ToolRoot,
    call: &Call,
    rev: &str,
    path: Option<&str>,
) -> Result<String, ToolError> {
    let repo = repo(root)?;
    let commit = resolve_commit(&repo, rev)?;
    let limits = root.limits();
    let mut visits = Visits::new(root, call);
    if let Some(path) = path {
        let rel = confine::normalize(path)?;
        if rel.is_empty() {
            return Err(ToolError::InvalidInput(format!(
                "{path:?} is the root directory: give a file path to show"
            )));
        }
        let entry =
            entry_at(&repo, &mut visits, Some(tree_id(&commit)?), &rel)?.ok_or_else(|| {
                ToolError::NotFound(format!(
                    "{path:?} does not exist at revision {rev:?}: check the path, e.g. with git_log"
                ))
            })?;
        return match entry.1 {
            EntryKind::Tree => Err(ToolError::InvalidInput(format!(
                "{path:?} is a directory at revision {rev:?}: give a file path"
            ))),
            EntryKind::Commit => Err(ToolError::InvalidInput(format!(
                "{path:?} is a submodule at revision {rev:?}: give a file path"
            ))),
            _ => match blob(&repo, entry.0, limits.max_read_bytes)? {
                Content::Bytes(bytes) => Ok(confine::lossy(bytes)),
                Content::TooLarge(size) => Err(super::read_limit(
                    &format!("{path} at {rev}"),
                    size,
                    limits.max_read_bytes,
                )),
            },
        };
    }

    let mut out = String::new();
    let author = commit.author().map_err(git_error)?;
    let time = author.time().map_err(git_error)?;
    let parents: Vec<ObjectId> = commit.parent_ids().map(|id| id.detach()).collect();
    let _ = writeln!(out, "commit {}", commit.id);
    if parents.len() > 1 {
        let short: Vec<String> = parents
            .iter()
            .map(|p| p.to_hex_with_len(7).to_string())
            .collect();
        let _ = writeln!(out, "Merge: {}", short.join(" "));
    }
    let _ = writeln!(out, "Author: {} <{}>", author.name, author.email);
    let _ = writeln!(
        out,
        "Date:   {}",
        time.format_or_unix(gix::date::time::format::DEFAULT)
    );
    out.push('\n');
    let message = commit.message_raw().map_err(git_error)?;
    for line in confine::lossy(message.to_vec()).trim_end().lines() {
        if line.is_empty() {
            out.push('\n');
        } else {
            let _ = writeln!(out, "    {line}");
        }
    }
    let old = match parents.first() {
        Some(parent) => Some(tree_id(&find_commit(&repo, *parent)?)?),
        None => None,
    };
    let mut changes = Vec::new();
    tree_changes(
        &repo,
        &mut visits,
        old,
        Some(tree_id(&commit)?),
        "",
        &mut changes,
    )?;
    if !changes.is_empty() {
        out.push('\n');
    }
    render_changes(&repo, root, call, changes, out, "git show answer")
}

/// Implements [`ToolRoot::git_diff`].
pub(super) fn diff(root: &ToolRoot, call: &Call, range: Option<&str>) -> Result<String, ToolError> {
    let repo = repo(root)?;
    let mut visits = Visits::new(root, call);
    let out = String::new();
    let range = range.map(str::trim).filter(|r| !r.is_empty());
    if let Some(range) = range {
        if range.contains("...") {
            return Err(ToolError::InvalidInput(format!(
                "range {range:?} uses '...', which is not supported: use \"a..b\" (tree a against \
                 tree b) or a single revision (against the working tree)"
            )));
        }
        if let Some((a, b)) = range.split_once("..") {
            let tree_of = |rev: &str| -> Result<ObjectId, ToolError> {
                let rev = if rev.is_empty() { "HEAD" } else { rev };
                tree_id(&resolve_commit(&repo, rev)?)
            };
            let (a, b) = (tree_of(a)?, tree_of(b)?);
            let mut changes = Vec::new();
            tree_changes(&repo, &mut visits, Some(a), Some(b), "", &mut changes)?;
            return render_changes(&repo, root, call, changes, out, "diff");
        }
        let base = tree_id(&resolve_commit(&repo, range)?)?;
        let changes = worktree_changes(root, &repo, &mut visits, Some(base))?;
        return render_changes(&repo, root, call, changes, out, "diff");
    }
    let base = match head_commit(&repo)? {
        Some(head) => Some(tree_id(&head)?),
        None => None,
    };
    let changes = worktree_changes(root, &repo, &mut visits, base)?;
    render_changes(&repo, root, call, changes, out, "diff")
}

/// Implements [`ToolRoot::git_status`].
pub(super) fn status(root: &ToolRoot, call: &Call) -> Result<Vec<StatusEntry>, ToolError> {
    let repo = repo(root)?;
    let mut visits = Visits::new(root, call);
    let base_tree = match head_commit(&repo)? {
        Some(head) => Some(tree_id(&head)?),
        None => None,
    };
    let base = flatten(&repo, &mut visits, base_tree)?;
    let index = index_view(&repo, &mut visits)?;
    let mut out = Vec::new();
    let tracked: BTreeSet<&String> = base.keys().chain(index.entries.keys()).collect();
    for path in tracked {
        call.check()?;
        let in_base = base.get(path.as_str()).copied();
        let status = match work_state(
            root,
            call,
            &repo,
            path,
            in_base,
            index.entries.get(path.as_str()),
            index.timestamp,
        )? {
            WorkState::Unchanged => continue,
            WorkState::Missing if in_base.is_none() => continue,
            WorkState::Missing => "deleted",
            WorkState::Changed(..) if in_base.is_none() => "added",
            WorkState::Changed(..) => "modified",
        };
        out.push(StatusEntry {
            path: path.clone(),
            status: status.into(),
        });
    }
    let base_path = root.path();
    for entry in super::walk::walker(root, call, super::walk::Mode::Git, None) {
        let entry = entry?;
        let Some(kind) = entry.file_type() else {
            continue;
        };
        if !(kind.is_file() || kind.is_symlink()) {
            continue;
        }
        let Ok(rel) = entry.path().strip_prefix(base_path) else {
            continue;
        };
        let rel = confine::rel_string(rel);
        if !base.contains_key(&rel) && !index.entries.contains_key(&rel) {
            out.push(StatusEntry {
                path: rel,
                status: "untracked".into(),
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    let max = root.limits().max_output_bytes;
    let bytes: usize = out.iter().map(|e| e.path.len() + e.status.len() + 2).sum();
    if bytes > max {
        return Err(output_limit(
            "git status",
            max,
            "clean up or ignore untracked files",
        ));
    }
    Ok(out)
}

/// All non-tree entries of a tree, by `/`-separated path (walked breadth-first, counted
/// against `--max-git-entries`, at most [`MAX_TREE_DEPTH`] deep).
fn flatten(
    repo: &gix::Repository,
    visits: &mut Visits,
    tree: Option<ObjectId>,
) -> Result<BTreeMap<String, Entry>, ToolError> {
    let mut out = BTreeMap::new();
    let Some(tree) = tree else { return Ok(out) };
    let mut pending = std::collections::VecDeque::from([(tree, String::new(), 0usize)]);
    while let Some((tree, prefix, depth)) = pending.pop_front() {
        if depth > MAX_TREE_DEPTH {
            return Err(too_deep(&prefix));
        }
        for (name, entry) in tree_level(repo, visits, Some(tree))? {
            let path = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            visits.path(&path)?;
            if entry.kind == EntryKind::Tree {
                pending.push_back((entry.id, path, depth + 1));
            } else {
                out.insert(path, entry);
            }
        }
    }
    Ok(out)
}

fn too_deep(path: &str) -> ToolError {
    let shown: String = path.chars().take(200).collect();
    ToolError::Limit(format!(
        "the repository's trees nest deeper than {MAX_TREE_DEPTH} directories (at {shown:?}…): \
         Corral does not walk them"
    ))
}

/// The entries directly in a tree (files and subtrees), by name.
fn tree_level(
    repo: &gix::Repository,
    visits: &mut Visits,
    tree: Option<ObjectId>,
) -> Result<BTreeMap<String, Entry>, ToolError> {
    let mut out = BTreeMap::new();
    let Some(tree) = tree else { return Ok(out) };
    let tree = find_tree(repo, tree)?;
    let decoded = tree.decode().map_err(git_error)?;
    visits.take(decoded.entries.len().max(1))?;
    for entry in decoded.entries.iter() {
        if entry.filename.len() > MAX_NAME_BYTES {
            return Err(ToolError::Limit(format!(
                "tree {} holds an entry name longer than {MAX_NAME_BYTES} bytes: Corral does not \
                 read it",
                tree.id
            )));
        }
        out.insert(
            entry.filename.to_string(),
            Entry {
                id: entry.oid.to_owned(),
                kind: entry.mode.kind(),
            },
        );
    }
    Ok(out)
}

/// Appends the changes between two trees, skipping identical subtrees without reading them.
fn tree_changes(
    repo: &gix::Repository,
    visits: &mut Visits,
    old: Option<ObjectId>,
    new: Option<ObjectId>,
    prefix: &str,
    out: &mut Vec<Change>,
) -> Result<(), ToolError> {
    if old == new {
        return Ok(());
    }
    if prefix.split('/').count() > MAX_TREE_DEPTH {
        return Err(too_deep(prefix));
    }
    let old = tree_level(repo, visits, old)?;
    let new = tree_level(repo, visits, new)?;
    let names: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for name in names {
        let (a, b) = (old.get(name).copied(), new.get(name).copied());
        if a == b {
            continue;
        }
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        visits.path(&path)?;
        let subtree = |e: Option<Entry>| e.filter(|e| e.kind == EntryKind::Tree).map(|e| e.id);
        let file = |e: Option<Entry>| e.filter(|e| e.kind != EntryKind::Tree);
        // A path can turn from a file into a directory: that is a deletion plus additions.
        if subtree(a).is_some() || subtree(b).is_some() {
            tree_changes(repo, visits, subtree(a), subtree(b), &path, out)?;
        }
        let (fa, fb) = (file(a), file(b));
        if fa.is_some() || fb.is_some() {
            out.push(Change {
                path,
                old: fa.map(Side::Object),
                new: fb.map(Side::Object),
            });
        }
    }
    Ok(())
}

/// Reads the index (an absent index is empty).
fn index_view(repo: &gix::Repository, visits: &mut Visits) -> Result<IndexView, ToolError> {
    let index = repo.index_or_empty().map_err(git_error)?;
    let state: &gix::index::State = &index;
    visits.take(state.entries().len())?;
    let mut entries = HashMap::with_capacity(state.entries().len());
    for entry in state.entries() {
        let path = entry.path(state).to_string();
        entries.entry(path).or_insert(IndexEntry {
            id: entry.id,
            size: entry.stat.size,
            mtime_secs: entry.stat.mtime.secs,
            mtime_nsecs: entry.stat.mtime.nsecs,
        });
    }
    Ok(IndexView {
        entries,
        timestamp: state.timestamp().unix_seconds(),
    })
}

/// Type and stat data of a working-tree path, without following a final symlink.
struct WorkMeta {
    kind: EntryKind,
    size: u64,
    mtime_secs: i64,
    mtime_nsecs: u32,
}

fn work_meta(root: &ToolRoot, rel: &str) -> Option<WorkMeta> {
    // Any failure (absent, or a parent directory that is now a symlink out of the root) counts as
    // absent, as it does for git, which never looks through symlinked directories.
    let meta = root.inner.dir.symlink_metadata(rel).ok()?;
    let kind = if meta.file_type().is_symlink() {
        EntryKind::Link
    } else if meta.is_file() {
        if is_executable(&meta) {
            EntryKind::BlobExecutable
        } else {
            EntryKind::Blob
        }
    } else {
        return None;
    };
    let (mtime_secs, mtime_nsecs) = mtime(&meta);
    Some(WorkMeta {
        kind,
        size: meta.len(),
        mtime_secs,
        mtime_nsecs,
    })
}

#[cfg(unix)]
fn is_executable(meta: &cap_std::fs::Metadata) -> bool {
    use cap_std::fs::PermissionsExt as _;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_meta: &cap_std::fs::Metadata) -> bool {
    false
}

fn mtime(meta: &cap_std::fs::Metadata) -> (i64, u32) {
    meta.modified()
        .ok()
        .and_then(|t| t.into_std().duration_since(std::time::UNIX_EPOCH).ok())
        .map_or((0, 0), |d| {
            (
                i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                d.subsec_nanos(),
            )
        })
}

/// Compares the working tree at tracked path `rel` with `base` (its entry in the base tree).
fn work_state(
    root: &ToolRoot,
    call: &Call,
    repo: &gix::Repository,
    rel: &str,
    base: Option<Entry>,
    index: Option<&IndexEntry>,
    index_time: i64,
) -> Result<WorkState, ToolError> {
    if base.is_some_and(|b| b.kind == EntryKind::Commit) {
        // Submodules are not looked into.
        return Ok(WorkState::Unchanged);
    }
    let Some(meta) = work_meta(root, rel) else {
        return Ok(WorkState::Missing);
    };
    if let (Some(base), Some(index)) = (base, index) {
        // The stat shortcut git uses: same size and mtime as when the index recorded the same
        // object as the base, and not modified in the same second the index was written.
        let same_stat = index.id == base.id
            && base.kind == meta.kind
            && u64::from(index.size) == (meta.size & u64::from(u32::MAX))
            && i64::from(index.mtime_secs) == meta.mtime_secs
            && index.mtime_nsecs == meta.mtime_nsecs
            && meta.mtime_secs < index_time;
        if same_stat {
            return Ok(WorkState::Unchanged);
        }
    }
    let max = root.limits().max_read_bytes;
    let hash_kind = repo.object_hash();
    let (content, id) = if meta.kind == EntryKind::Link {
        let target = root
            .inner
            .dir
            .read_link_contents(rel)
            .map_err(|err| confine::io_error(rel, err))?;
        let bytes = target.into_os_string().into_encoded_bytes();
        let id =
            gix::objs::compute_hash(hash_kind, gix::objs::Kind::Blob, &bytes).map_err(git_error)?;
        (Content::Bytes(bytes), id)
    } else {
        let file = match confine::open_regular(&root.inner.dir, rel, rel) {
            Ok((file, _)) => file,
            Err(ToolError::NotFound(_)) => return Ok(WorkState::Missing),
            Err(err) => return Err(err),
        };
        if meta.size > max {
            // Too large to show, but whether it changed is still known exactly, by streaming.
            // Checked: hashing a huge (or sparse) file stops with the call's time.
            let mut reader = super::clock::Checked {
                inner: file.take(meta.size),
                call,
            };
            let id = gix::objs::compute_stream_hash(
                hash_kind,
                gix::objs::Kind::Blob,
                &mut reader,
                meta.size,
                &mut gix::progress::Discard,
                &std::sync::atomic::AtomicBool::new(false),
            )
            .map_err(|err| call.check().err().unwrap_or_else(|| git_error(err)))?;
            (Content::TooLarge(meta.size), id)
        } else {
            let mut bytes = Vec::with_capacity(meta.size as usize);
            file.take(max + 1)
                .read_to_end(&mut bytes)
                .map_err(|err| confine::io_error(rel, err))?;
            if bytes.len() as u64 > max {
                (
                    Content::TooLarge(bytes.len() as u64),
                    ObjectId::null(hash_kind),
                )
            } else {
                let id = gix::objs::compute_hash(hash_kind, gix::objs::Kind::Blob, &bytes)
                    .map_err(git_error)?;
                (Content::Bytes(bytes), id)
            }
        }
    };
    if base.is_some_and(|b| b.id == id && b.kind == meta.kind) {
        return Ok(WorkState::Unchanged);
    }
    Ok(WorkState::Changed(meta.kind, content))
}

/// The changes from the tree `base` to the working tree, over the tracked paths (in `base` or in
/// the index).
fn worktree_changes(
    root: &ToolRoot,
    repo: &gix::Repository,
    visits: &mut Visits,
    base: Option<ObjectId>,
) -> Result<Vec<Change>, ToolError> {
    let base = flatten(repo, visits, base)?;
    let index = index_view(repo, visits)?;
    let tracked: BTreeSet<&String> = base.keys().chain(index.entries.keys()).collect();
    let mut out = Vec::new();
    for path in tracked {
        visits.call.check()?;
        let old = base.get(path.as_str()).copied();
        let state = work_state(
            root,
            visits.call,
            repo,
            path,
            old,
            index.entries.get(path.as_str()),
            index.timestamp,
        )?;
        let new = match state {
            WorkState::Unchanged => continue,
            WorkState::Missing if old.is_none() => continue,
            WorkState::Missing => None,
            WorkState::Changed(kind, content) => Some(Side::Work(kind, content)),
        };
        out.push(Change {
            path: path.clone(),
            old: old.map(Side::Object),
            new,
        });
    }
    Ok(out)
}

/// Reads an object's bytes, or only its size when it is larger than `max`.
fn blob(repo: &gix::Repository, id: ObjectId, max: u64) -> Result<Content, ToolError> {
    let size = repo.find_header(id).map_err(git_error)?.size();
    if size > max {
        return Ok(Content::TooLarge(size));
    }
    let object = repo.find_object(id).map_err(git_error)?;
    Ok(Content::Bytes(object.detach().data))
}

/// The content of one side, loading objects now.
fn side_content(
    repo: &gix::Repository,
    side: Side,
    max: u64,
) -> Result<(EntryKind, Content), ToolError> {
    match side {
        Side::Work(kind, content) => Ok((kind, content)),
        Side::Object(entry) if entry.kind == EntryKind::Commit => Ok((
            entry.kind,
            Content::Bytes(format!("Subproject commit {}\n", entry.id).into_bytes()),
        )),
        Side::Object(entry) => Ok((entry.kind, blob(repo, entry.id, max)?)),
    }
}

fn mode_of(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::Tree => "040000",
        EntryKind::Blob => "100644",
        EntryKind::BlobExecutable => "100755",
        EntryKind::Link => "120000",
        EntryKind::Commit => "160000",
    }
}

fn content_size(content: &Content) -> u64 {
    match content {
        Content::Bytes(bytes) => bytes.len() as u64,
        Content::TooLarge(size) => *size,
    }
}

fn is_binary(content: &Content) -> bool {
    match content {
        Content::Bytes(bytes) => bytes[..bytes.len().min(BINARY_PROBE)].contains(&0),
        Content::TooLarge(_) => false,
    }
}

/// Renders changes as a git-style unified diff appended to `out`, enforcing the output limit.
fn render_changes(
    repo: &gix::Repository,
    root: &ToolRoot,
    call: &Call,
    mut changes: Vec<Change>,
    mut out: String,
    what: &str,
) -> Result<String, ToolError> {
    let limits = root.limits();
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    for change in changes {
        call.check()?;
        let old = change
            .old
            .map(|side| side_content(repo, side, limits.max_read_bytes))
            .transpose()?;
        let new = change
            .new
            .map(|side| side_content(repo, side, limits.max_read_bytes))
            .transpose()?;
        render_one(&mut out, &change.path, old, new, limits.max_read_bytes);
        if out.len() > limits.max_output_bytes {
            break;
        }
    }
    if out.len() > limits.max_output_bytes {
        return Err(output_limit(
            what,
            limits.max_output_bytes,
            "narrow it to fewer commits or files",
        ));
    }
    Ok(out)
}

fn render_one(
    out: &mut String,
    path: &str,
    old: Option<(EntryKind, Content)>,
    new: Option<(EntryKind, Content)>,
    max_read: u64,
) {
    // Like git, a file that became a symlink (or the reverse) is a deletion plus an addition.
    if let (Some((a, _)), Some((b, _))) = (&old, &new)
        && (*a == EntryKind::Link) != (*b == EntryKind::Link)
    {
        render_one(out, path, old, None, max_read);
        render_one(out, path, None, new, max_read);
        return;
    }
    let _ = writeln!(out, "diff --git a/{path} b/{path}");
    match (&old, &new) {
        (None, Some((kind, _))) => {
            let _ = writeln!(out, "new file mode {}", mode_of(*kind));
        }
        (Some((kind, _)), None) => {
            let _ = writeln!(out, "deleted file mode {}", mode_of(*kind));
        }
        (Some((a, _)), Some((b, _))) if a != b => {
            let _ = writeln!(out, "old mode {}\nnew mode {}", mode_of(*a), mode_of(*b));
        }
        _ => {}
    }
    let empty = Content::Bytes(Vec::new());
    let old_content = old.as_ref().map_or(&empty, |(_, c)| c);
    let new_content = new.as_ref().map_or(&empty, |(_, c)| c);
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
    match (old_content, new_content) {
        (Content::TooLarge(_), _) | (_, Content::TooLarge(_)) => {
            let size = content_size(old_content).max(content_size(new_content));
            let _ = writeln!(
                out,
                "(not shown: {size} bytes, over the read limit of {max_read} bytes; raise \
                 --max-read-bytes to see it)"
            );
        }
        (Content::Bytes(a), Content::Bytes(b)) => {
            if a == b {
                return;
            }
            if is_binary(old_content) || is_binary(new_content) {
                let _ = writeln!(out, "Binary files {old_name} and {new_name} differ");
                return;
            }
            text_patch(out, &old_name, &new_name, a, b);
        }
    }
}

/// Appends the `---`/`+++` header and the unified hunks (3 lines of context) turning `a` into
/// `b` to `out`, bounded in time by [`DIFF_TIMEOUT`]. Shared by git diffs and changeset diffs.
pub(super) fn text_patch(out: &mut String, old_name: &str, new_name: &str, a: &[u8], b: &[u8]) {
    let a = String::from_utf8_lossy(a);
    let b = String::from_utf8_lossy(b);
    let diff = TextDiff::configure()
        .algorithm(Algorithm::Myers)
        .timeout(DIFF_TIMEOUT)
        .diff_lines(a.as_ref(), b.as_ref());
    let _ = writeln!(out, "--- {old_name}\n+++ {new_name}");
    for hunk in diff.unified_diff().context_radius(3).iter_hunks() {
        let _ = write!(out, "{hunk}");
    }
}
