//! `grep`: a ripgrep-style search of the files under the root.

use super::changes::Overlay;
use super::clock::{Call, Checked};
use super::walk::{self, Mode, Pattern};
use super::{GrepMatch, GrepOptions, ToolError, ToolRoot, confine, output_limit};
use grep_regex::RegexMatcherBuilder;
use grep_searcher::{BinaryDetection, Searcher, SearcherBuilder, Sink, SinkMatch};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

/// Largest compiled program of a grep pattern (the regex crate's `size_limit`): a pattern like
/// `a{1000}{1000}` is refused instead of compiled into gigabytes.
pub(super) const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Largest lazy-DFA cache of one grep (the regex crate's `dfa_size_limit`). Past it the regex
/// engine falls back to slower matching, which tool time bounds.
pub(super) const DFA_SIZE_LIMIT: usize = 8 << 20;

/// Collects the matches of one file into reusable buffers, so that a file without matches costs
/// no allocation.
struct FileMatches {
    /// (line number, range of the line in `text`) per match.
    lines: Vec<(u64, Range<usize>)>,
    text: Vec<u8>,
    /// Stop the file after this many matches.
    room: usize,
    /// The file turned out to be binary: its matches are dropped.
    binary: bool,
}

impl FileMatches {
    fn reset(&mut self, room: usize) {
        self.lines.clear();
        self.text.clear();
        self.room = room;
        self.binary = false;
    }
}

impl Sink for &mut FileMatches {
    type Error = std::io::Error;

    fn matched(&mut self, _searcher: &Searcher, mat: &SinkMatch<'_>) -> Result<bool, Self::Error> {
        let mut bytes = mat.bytes();
        while let Some(rest) = bytes
            .strip_suffix(b"\n")
            .or_else(|| bytes.strip_suffix(b"\r"))
        {
            bytes = rest;
        }
        let start = self.text.len();
        self.text.extend_from_slice(bytes);
        self.lines
            .push((mat.line_number().unwrap_or(0), start..self.text.len()));
        Ok(self.lines.len() < self.room)
    }

    fn binary_data(
        &mut self,
        _searcher: &Searcher,
        _binary_byte_offset: u64,
    ) -> Result<bool, Self::Error> {
        self.binary = true;
        Ok(false)
    }
}

/// Implements [`ToolRoot::grep`].
pub(super) fn grep(
    root: &ToolRoot,
    call: &Call,
    pattern: &str,
    options: &GrepOptions,
) -> Result<Vec<GrepMatch>, ToolError> {
    let limits = root.limits();
    if pattern.contains('\0') {
        return Err(ToolError::InvalidInput(format!(
            "grep pattern {pattern:?} contains a NUL byte: remove it"
        )));
    }
    let matcher = RegexMatcherBuilder::new()
        .case_insensitive(options.ignore_case)
        // Matches never span lines, which also enables the fast line-oriented search.
        .line_terminator(Some(b'\n'))
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(DFA_SIZE_LIMIT)
        .build(pattern)
        .map_err(|err| {
            let text = err.to_string();
            if text.contains("size limit") {
                ToolError::Limit(format!(
                    "grep pattern {pattern:?} compiles to more than {REGEX_SIZE_LIMIT} bytes: use \
                     a simpler pattern (fewer or smaller repetitions)"
                ))
            } else {
                ToolError::InvalidInput(format!(
                    "invalid grep pattern {pattern:?}: {text}: fix the regular expression (Rust regex syntax)"
                ))
            }
        })?;
    let filter = options
        .glob
        .as_deref()
        .map(Pattern::file_filter)
        .transpose()?;
    // With an explicit max_matches the answer is silently cut there; without, more matches than
    // the host limit is an error, so that the guest knows the answer is incomplete.
    let (cap, overflow_is_error) = match options.max_matches {
        Some(n) => ((n as usize).min(limits.max_grep_matches), false),
        None => (limits.max_grep_matches, true),
    };
    let mut out: Vec<GrepMatch> = Vec::new();
    if cap == 0 && !overflow_is_error {
        return Ok(out);
    }
    // A line longer than the read limit is not held in memory: the file is skipped.
    let line_limit = usize::try_from(limits.max_read_bytes)
        .unwrap_or(usize::MAX)
        .max(64 << 10);
    let mut searcher = SearcherBuilder::new()
        .line_number(true)
        .binary_detection(BinaryDetection::quit(0))
        .heap_limit(Some(line_limit))
        .build();
    let mut found = FileMatches {
        lines: Vec::new(),
        text: Vec::new(),
        room: 0,
        binary: false,
    };
    let mut out_bytes = 0usize;
    let base = root.path();
    // Staged files the walk does not meet (new files, and files the root has lost since) are
    // searched after it; hidden paths are left out as the walk leaves them out.
    let remaining: RefCell<BTreeMap<String, Arc<[u8]>>> = RefCell::new({
        let staged = root.changes.lock().unwrap_or_else(|e| e.into_inner());
        staged
            .entries()
            .filter_map(|(path, content)| Some((path, content?)))
            .filter(|(path, _)| !walk::is_hidden(path))
            .filter(|(path, _)| filter.as_ref().is_none_or(|f| f.is_match(Path::new(path))))
            .map(|(path, content)| (path.to_string(), Arc::clone(content)))
            .collect()
    });
    let walked = walk::walker(root, call, Mode::Search, filter.as_ref()).map(|entry| {
        entry.map(|entry| {
            let rel = entry.path().strip_prefix(base).ok()?;
            if !entry.file_type().is_some_and(|t| t.is_file()) {
                return None;
            }
            if filter.as_ref().is_some_and(|f| !f.is_match(rel)) {
                return None;
            }
            let rel = rel.to_str()?.to_string();
            remaining.borrow_mut().remove(&rel);
            Some(match root.overlay(&rel) {
                Overlay::Root => Source::File(rel),
                Overlay::Staged(content) => Source::Staged(rel, content),
                Overlay::Removed => return None,
            })
        })
    });
    let rest = std::iter::from_fn(|| {
        let (path, content) = remaining.borrow_mut().pop_first()?;
        Some(Ok(Some(Source::Staged(path, content))))
    });
    let sources = walked.chain(rest);
    'files: for source in sources {
        let Some(source) = source? else {
            continue;
        };
        // One more than the room left, to tell "exactly at the limit" from "over it".
        found.reset(cap - out.len() + usize::from(overflow_is_error));
        let (rel_str, searched) = match &source {
            Source::File(rel) => {
                // Opening through the capability keeps a file swapped for a symlink after the
                // walk inside, and a file swapped for a FIFO is refused without blocking.
                let Ok((file, _)) = confine::open_regular(&root.inner.dir, rel, rel) else {
                    continue;
                };
                let reader = Checked {
                    inner: file.into_std(),
                    call,
                };
                (
                    rel.as_str(),
                    searcher.search_reader(&matcher, reader, &mut found),
                )
            }
            Source::Staged(rel, content) => (
                rel.as_str(),
                searcher.search_slice(&matcher, content, &mut found),
            ),
        };
        if searched.is_err() {
            // The call ran out of time (reported as such), or the file could not be searched
            // (unreadable, or a line over the limit): skipped, as ripgrep does.
            call.check()?;
            continue;
        }
        if found.binary {
            continue;
        }
        if found.lines.is_empty() {
            continue;
        }
        let path = rel_str.to_string();
        for (line, range) in &found.lines {
            if out.len() == cap {
                if overflow_is_error {
                    return Err(ToolError::Limit(format!(
                        "grep {pattern:?} has more than {cap} matches: narrow the pattern or the \
                         glob, pass max_matches, or raise --max-grep-matches"
                    )));
                }
                break 'files;
            }
            let text = String::from_utf8_lossy(&found.text[range.clone()]).into_owned();
            // Counted as the `path:line:text\n` lines a human would see.
            out_bytes += path.len() + text.len() + decimal_len(*line) + 3;
            if out_bytes > limits.max_output_bytes {
                return Err(output_limit(
                    "grep answer",
                    limits.max_output_bytes,
                    "narrow the pattern or the glob, pass max_matches",
                ));
            }
            out.push(GrepMatch {
                path: path.clone(),
                line: u32::try_from(*line).unwrap_or(u32::MAX),
                text,
            });
        }
        if out.len() == cap && !overflow_is_error {
            break;
        }
    }
    // The walk visits `a/b` before `a.b`; answers are sorted by path string, then line.
    out.sort_by(|a, b| a.path.cmp(&b.path).then(a.line.cmp(&b.line)));
    Ok(out)
}

/// What one grep searches: a file of the root, or a file's staged content.
enum Source {
    File(String),
    Staged(String, Arc<[u8]>),
}

fn decimal_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 10 {
        n /= 10;
        len += 1;
    }
    len
}
