//! Tool time: what every tool call of a run costs in host time, against `--max-tool-time`, and
//! how a call learns that it must stop (its share of tool time is used up, or the run ended).
//!
//! Tool calls run on blocking threads that nothing can pre-empt, so they stop themselves: every
//! loop over root content (walk entries, grep read chunks, git tree entries and commits) calls
//! [`Call::check`], which costs one clock read. A call may use what is left of the run's tool
//! time when it starts; concurrent calls each see that rest, so the run's total can exceed the
//! limit by at most the time of the calls already in flight when it ran out.

use super::ToolError;
use crate::limits::format_duration;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The run's tool-time account, shared by every call on one [`ToolRoot`](super::ToolRoot).
#[derive(Debug)]
pub(super) struct ToolClock {
    max: Duration,
    /// Nanoseconds used by finished calls.
    spent: AtomicU64,
    /// Set when the run ends: calls still running stop at their next check.
    ended: AtomicBool,
}

impl ToolClock {
    pub(super) fn new(max: Duration) -> Self {
        ToolClock {
            max,
            spent: AtomicU64::new(0),
            ended: AtomicBool::new(false),
        }
    }

    /// Tool time used so far by finished calls.
    pub(super) fn spent(&self) -> Duration {
        Duration::from_nanos(self.spent.load(Ordering::Relaxed))
    }

    /// Stops every call in flight at its next check and refuses new ones.
    pub(super) fn end(&self) {
        self.ended.store(true, Ordering::Relaxed);
    }

    /// Starts a call named `what` (for messages), refusing it when no tool time is left.
    pub(super) fn begin(&self, what: &'static str) -> Result<Call<'_>, ToolError> {
        let started = Instant::now();
        let left = self.max.saturating_sub(self.spent());
        let call = Call {
            clock: self,
            what,
            started,
            deadline: started.checked_add(left),
        };
        call.check()?;
        Ok(call)
    }
}

/// One tool call in progress; its time is added to the run's account when it is dropped.
pub(super) struct Call<'a> {
    clock: &'a ToolClock,
    what: &'static str,
    started: Instant,
    /// `None`: beyond what `Instant` can represent, i.e. never.
    deadline: Option<Instant>,
}

impl Call<'_> {
    /// Fails once the run has ended or this call has used the run's remaining tool time.
    pub(super) fn check(&self) -> Result<(), ToolError> {
        if self.clock.ended.load(Ordering::Relaxed) {
            return Err(ToolError::Limit(format!(
                "the {} was stopped because the run has ended",
                self.what
            )));
        }
        if self
            .deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            return Err(ToolError::Limit(format!(
                "the {} ran out of tool time: this run's tool calls may take {} in all \
                 (--max-tool-time); narrow the call (a smaller glob, a simpler pattern, a path) or \
                 raise --max-tool-time",
                self.what,
                format_duration(self.clock.max)
            )));
        }
        Ok(())
    }

    /// An I/O error that carries a failed [`Call::check`], for readers inside a search.
    pub(super) fn check_io(&self) -> std::io::Result<()> {
        self.check().map_err(std::io::Error::other)
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        let nanos = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.clock.spent.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// A reader that fails with the call's limit error once the call must stop.
pub(super) struct Checked<'c, 'a, R> {
    pub(super) inner: R,
    pub(super) call: &'c Call<'a>,
}

impl<R: std::io::Read> std::io::Read for Checked<'_, '_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.call.check_io()?;
        self.inner.read(buf)
    }
}
