//! Path arguments from the guest: validation, lexical normalisation, and error mapping.
//!
//! Normalisation is only the first fence: it turns `a/./b/../c` into `a/c` and refuses anything
//! that is absolute or climbs above the root. The second fence is `cap_std`, which resolves the
//! normalised path (including symlinks) strictly beneath the root directory.

use super::ToolError;
use std::io;

/// Validates a root-relative path and normalises it lexically to `a/b/c` form (`""` is the root).
pub(super) fn normalize(path: &str) -> Result<String, ToolError> {
    if path.is_empty() {
        return Err(ToolError::InvalidInput(
            "the path is empty: give a path relative to the root, e.g. \"src/main.rs\"".into(),
        ));
    }
    if path.contains('\0') {
        return Err(ToolError::InvalidInput(format!(
            "path {path:?} contains a NUL byte: remove it"
        )));
    }
    if is_absolute(path) {
        return Err(ToolError::Denied(format!(
            "path {path:?} is absolute: paths must be relative to the root"
        )));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(ToolError::Denied(format!(
                        "path {path:?} leads outside the root: paths must be relative to the root \
                         and may not climb above it with '..'"
                    )));
                }
            }
            _ => parts.push(part),
        }
    }
    Ok(parts.join("/"))
}

/// Whether a path or pattern is absolute on any platform a guest might assume.
pub(super) fn is_absolute(path: &str) -> bool {
    let as_path = std::path::Path::new(path);
    path.starts_with('/') || path.starts_with('\\') || as_path.has_root() || as_path.is_absolute()
}

/// The path to hand to `cap_std` for a normalised path (the root itself is `.`).
pub(super) fn as_dir_path(rel: &str) -> &str {
    if rel.is_empty() { "." } else { rel }
}

/// Opens a regular file under `dir` for reading, never blocking on what else a path can name.
///
/// The open itself is non-blocking (`O_NONBLOCK`, `O_NOCTTY`), so a FIFO, a tty or a device found
/// where a file was expected cannot hang the call even if it replaced a file after the caller's
/// metadata check; the opened handle's own type is then checked, so only a regular file is read.
/// Returns the file and its metadata (from the handle, so they describe the same file).
pub(super) fn open_regular(
    dir: &cap_std::fs::Dir,
    shown: &str,
    rel: &str,
) -> Result<(cap_std::fs::File, cap_std::fs::Metadata), ToolError> {
    let mut options = cap_std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use cap_std::fs::OpenOptionsExt as _;
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    let file = dir
        .open_with(rel, &options)
        .map_err(|err| io_error(shown, err))?;
    let meta = file.metadata().map_err(|err| io_error(shown, err))?;
    if meta.is_dir() {
        return Err(ToolError::InvalidInput(format!(
            "{shown:?} is a directory, not a file: use glob to list the files in it"
        )));
    }
    if !meta.is_file() {
        return Err(not_regular(shown));
    }
    Ok((file, meta))
}

/// The regular file at `rel` under `dir`, at most `max + 1` bytes of it (so a caller can tell
/// "over `max`"), or `None` when there is no such file.
pub(super) fn read_if_exists(
    dir: &cap_std::fs::Dir,
    rel: &str,
    max: u64,
) -> Result<Option<Vec<u8>>, ToolError> {
    use std::io::Read as _;
    match open_regular(dir, rel, rel) {
        Ok((file, _)) => {
            let mut bytes = Vec::new();
            file.take(max.saturating_add(1))
                .read_to_end(&mut bytes)
                .map_err(|error| io_error(rel, error))?;
            Ok(Some(bytes))
        }
        Err(ToolError::NotFound(_)) => Ok(None),
        Err(error) => Err(error),
    }
}

/// The error for a FIFO, socket or device where a file was expected.
pub(super) fn not_regular(shown: &str) -> ToolError {
    ToolError::InvalidInput(format!(
        "{shown:?} is not a regular file (a FIFO, socket or device): only regular files can be read"
    ))
}

/// Maps an I/O error on `shown` (the path as the guest wrote it) to a guest-facing error.
pub(super) fn io_error(shown: &str, err: io::Error) -> ToolError {
    match err.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => ToolError::NotFound(format!(
            "{shown:?} does not exist under the root: check the path, e.g. with glob"
        )),
        // cap-std reports an escape (a symlink out, or `..` through one) as PermissionDenied with
        // no OS error code; a real EACCES carries one.
        io::ErrorKind::PermissionDenied if err.raw_os_error().is_none() => {
            ToolError::Denied(format!(
                "path {shown:?} leads outside the root through a symlink: paths must be relative \
                 to the root and stay inside it"
            ))
        }
        io::ErrorKind::PermissionDenied => ToolError::Denied(format!(
            "permission denied for {shown:?}: the host may not read it"
        )),
        io::ErrorKind::IsADirectory => ToolError::InvalidInput(format!(
            "{shown:?} is a directory, not a file: use glob to list the files in it"
        )),
        _ => ToolError::Io(format!("cannot read {shown:?}: {err}")),
    }
}

/// Converts bytes to a `String`, replacing invalid UTF-8, without copying valid input.
pub(super) fn lossy(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(err) => String::from_utf8_lossy(err.as_bytes()).into_owned(),
    }
}

/// A root-relative walk path as a `/`-separated string.
pub(super) fn rel_string(rel: &std::path::Path) -> String {
    let text = rel.to_string_lossy();
    if cfg!(windows) {
        text.replace('\\', "/")
    } else {
        text.into_owned()
    }
}
