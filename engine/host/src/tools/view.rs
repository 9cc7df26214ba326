//! The materialised view a jailed command sees: a copy of the root with the run's changeset
//! applied, in a temporary directory of the run's own.
//!
//! The copy is made on the first `run` and brought up to date (only the paths whose staged state
//! changed) before each later one. It holds every regular file of the root except `.git`,
//! ignored files included (a test may need `node_modules`); symlinks and special files are
//! left out, so nothing in the view points outside it. Its size is bounded by
//! `--max-view-bytes`. Its top directory is private to the jail (the engine's user, or the group
//! `nogroup` a root engine's jails run in); inside, files keep their executable bit.

use super::{ToolError, ToolRoot, confine};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The view of one run.
pub(super) struct View {
    dir: tempfile::TempDir,
    /// The changeset generation the view shows.
    generation: u64,
    /// What the view shows for each staged path, as last synced (`None`: removed).
    shown: BTreeMap<String, Option<Arc<[u8]>>>,
    /// Bytes the view holds, and each file's share of them.
    bytes: u64,
    sizes: std::collections::HashMap<String, u64>,
}

impl View {
    pub(super) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Counts `rel` as holding `bytes` now (instead of what it held before), under `max`.
    fn charge(&mut self, rel: &str, bytes: u64, max: u64) -> Result<(), ToolError> {
        let before = self.sizes.get(rel).copied().unwrap_or(0);
        let total = self.bytes - before + bytes;
        if total > max {
            return Err(view_limit(max));
        }
        self.bytes = total;
        self.sizes.insert(rel.to_string(), bytes);
        Ok(())
    }
}

fn view_limit(max: u64) -> ToolError {
    ToolError::Limit(format!(
        "the command view (a copy of the root with the run's changes) would take more than {max} \
         bytes: raise --max-view-bytes or run commands over a smaller root"
    ))
}

impl ToolRoot {
    /// The run's view, created or brought up to date; returns its path.
    pub(super) fn synced_view(&self) -> Result<PathBuf, ToolError> {
        let mut slot = self.view.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(self.copy_root()?);
        }
        let view = slot.as_mut().expect("created above");
        let changes = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        if view.generation == changes.generation() {
            return Ok(view.path().to_path_buf());
        }
        let wanted: BTreeMap<String, Option<Arc<[u8]>>> = changes
            .entries()
            .map(|(path, content)| (path.to_string(), content.cloned()))
            .collect();
        let generation = changes.generation();
        drop(changes);
        // Paths no longer staged show the root's file again.
        let reverted: Vec<String> = view
            .shown
            .keys()
            .filter(|path| !wanted.contains_key(*path))
            .cloned()
            .collect();
        for path in reverted {
            let room = self.inner.limits.max_view_bytes - view.bytes
                + view.sizes.get(&path).copied().unwrap_or(0);
            let content = self.root_file(&path, room)?;
            self.put(view, &path, content.as_deref())?;
        }
        for (path, content) in &wanted {
            if view.shown.get(path) != Some(content) {
                self.put(view, path, content.as_deref())?;
            }
        }
        view.shown = wanted;
        view.generation = generation;
        Ok(view.path().to_path_buf())
    }

    /// Writes `content` at `rel` in the view (`None`: removes it), with the root file's mode.
    fn put(&self, view: &mut View, rel: &str, content: Option<&[u8]>) -> Result<(), ToolError> {
        let target = view.path().join(rel);
        let failed = |error: std::io::Error| {
            ToolError::Io(format!(
                "cannot update the command view at {rel:?}: {error}"
            ))
        };
        match content {
            None => {
                view.charge(rel, 0, self.inner.limits.max_view_bytes)?;
                match std::fs::remove_file(&target) {
                    Ok(()) => Ok(()),
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(error) => Err(failed(error)),
                }
            }
            Some(bytes) => {
                view.charge(rel, bytes.len() as u64, self.inner.limits.max_view_bytes)?;
                if let Some(parent) = target.parent() {
                    create_dirs(view.path(), parent).map_err(failed)?;
                }
                std::fs::write(&target, bytes).map_err(failed)?;
                let executable = self
                    .inner
                    .dir
                    .symlink_metadata(rel)
                    .is_ok_and(|meta| meta.is_file() && is_executable_cap(&meta));
                set_mode(&target, if executable { 0o755 } else { 0o644 }).map_err(failed)
            }
        }
    }

    /// The root's regular file at `rel`, or `None`; more than `room` bytes is the view limit.
    fn root_file(&self, rel: &str, room: u64) -> Result<Option<Vec<u8>>, ToolError> {
        let bytes = confine::read_if_exists(&self.inner.dir, rel, room)?;
        if bytes.as_ref().is_some_and(|b| b.len() as u64 > room) {
            return Err(view_limit(self.inner.limits.max_view_bytes));
        }
        Ok(bytes)
    }

    /// Copies the root's regular files (not `.git`, not symlinks) into a new view.
    fn copy_root(&self) -> Result<View, ToolError> {
        let failed = |error: std::io::Error| {
            ToolError::Io(format!("cannot create the command view: {error}"))
        };
        let dir = tempfile::Builder::new()
            .prefix("corral-view-")
            .tempdir()
            .map_err(failed)?;
        private_to_jail(dir.path()).map_err(failed)?;
        let mut view = View {
            dir,
            generation: 0,
            shown: BTreeMap::new(),
            bytes: 0,
            sizes: std::collections::HashMap::new(),
        };
        let base = self.path().to_path_buf();
        let walk = ignore::WalkBuilder::new(&base)
            .standard_filters(false)
            .hidden(false)
            .follow_links(false)
            .filter_entry(|entry| entry.file_name() != ".git")
            .build();
        for entry in walk {
            let entry =
                entry.map_err(|error| ToolError::Io(format!("cannot walk the root: {error}")))?;
            let Some(kind) = entry.file_type() else {
                continue;
            };
            let Ok(rel) = entry.path().strip_prefix(&base) else {
                continue;
            };
            if rel.as_os_str().is_empty() {
                continue;
            }
            let target = view.path().join(rel);
            if kind.is_dir() {
                std::fs::create_dir(&target).map_err(failed)?;
                set_mode(&target, 0o755).map_err(failed)?;
            } else if kind.is_file() {
                let rel = confine::rel_string(rel);
                let max = self.inner.limits.max_view_bytes;
                // Refused before it is read when its size alone is over what is left.
                if entry
                    .metadata()
                    .is_ok_and(|meta| view.bytes.saturating_add(meta.len()) > max)
                {
                    return Err(view_limit(max));
                }
                // Through the capability, so a file swapped for a symlink is never followed out.
                let Some(bytes) = self.root_file(&rel, max - view.bytes)? else {
                    continue;
                };
                view.charge(&rel, bytes.len() as u64, max)?;
                std::fs::write(&target, &bytes).map_err(failed)?;
                let executable = entry.metadata().is_ok_and(|meta| is_executable(&meta));
                set_mode(&target, if executable { 0o755 } else { 0o644 }).map_err(failed)?;
            }
        }
        Ok(view)
    }
}

/// Makes the view's top directory reachable by the jail only: the engine's own user, or when the
/// engine is root the group `nogroup` its jails run in (each as a uid of its own). What is inside
/// may then be world-readable without being readable by anyone else.
#[cfg(unix)]
fn private_to_jail(dir: &Path) -> std::io::Result<()> {
    /// `nogroup`, the group a root engine's jails run in.
    const NOGROUP: u32 = 65534;
    // SAFETY: geteuid has no preconditions and cannot fail.
    #[allow(unsafe_code)]
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        std::os::unix::fs::chown(dir, None, Some(NOGROUP))?;
        return set_mode(dir, 0o750);
    }
    set_mode(dir, 0o700)
}

#[cfg(not(unix))]
fn private_to_jail(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

/// Creates `dir` and its missing ancestors below `top`, world-traversable.
fn create_dirs(top: &Path, dir: &Path) -> std::io::Result<()> {
    if dir == top || dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dirs(top, parent)?;
    }
    std::fs::create_dir(dir)?;
    set_mode(dir, 0o755)
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn set_mode(_path: &Path, _mode: u32) -> std::io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn is_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_meta: &std::fs::Metadata) -> bool {
    false
}

#[cfg(unix)]
fn is_executable_cap(meta: &cap_std::fs::Metadata) -> bool {
    use cap_std::fs::PermissionsExt as _;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable_cap(_meta: &cap_std::fs::Metadata) -> bool {
    false
}
