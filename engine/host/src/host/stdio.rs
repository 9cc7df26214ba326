//! The guest's stdout/stderr and `log` lines: forwarded line by line to the run's events, and
//! counted against `--max-log-bytes` so that a chatty guest cannot fill the host's memory.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

use crate::events::{EventSink, RunEvent};
use crate::limits::{LimitExceeded, PROGRESS_CALL_BYTES};

struct LogShared {
    limit: usize,
    used: usize,
    events: Arc<dyn EventSink>,
    /// The last lines written, kept to explain a trap (a Rust panic message goes to stderr).
    tail: Vec<String>,
}

/// How many recent lines a run keeps to explain how it ended.
const TAIL_LINES: usize = 20;

/// A run's log accounting, shared by `log`, stdout and stderr.
#[derive(Clone)]
pub(crate) struct LogBuffer {
    shared: Arc<Mutex<LogShared>>,
}

impl LogBuffer {
    pub(crate) fn new(limit: usize, events: Arc<dyn EventSink>) -> Self {
        LogBuffer {
            shared: Arc::new(Mutex::new(LogShared {
                limit,
                used: 0,
                events,
                tail: Vec::new(),
            })),
        }
    }

    /// Charges `bytes` of text that become `events` events (phase calls, log lines, output
    /// lines), each costing [`PROGRESS_CALL_BYTES`] on top; past the limit, the run ends with a
    /// trap naming it.
    pub(crate) fn charge(&self, bytes: usize, events: usize) -> Result<(), LimitExceeded> {
        let cost = bytes.saturating_add(events.saturating_mul(PROGRESS_CALL_BYTES));
        let mut shared = self.lock();
        if shared.used.saturating_add(cost) > shared.limit {
            return Err(LimitExceeded::Log(shared.limit));
        }
        shared.used += cost;
        Ok(())
    }

    /// The most recent lines the guest wrote.
    pub(crate) fn tail(&self) -> Vec<String> {
        self.lock().tail.clone()
    }

    /// A stream for the guest's stdout or stderr.
    pub(crate) fn stream(&self) -> GuestOutput {
        GuestOutput {
            log: self.clone(),
            partial: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn emit(&self, line: &[u8]) {
        let message = String::from_utf8_lossy(line)
            .trim_end_matches('\r')
            .to_string();
        let mut shared = self.lock();
        if shared.tail.len() == TAIL_LINES {
            shared.tail.remove(0);
        }
        shared.tail.push(message.clone());
        let events = Arc::clone(&shared.events);
        drop(shared);
        events.event(&RunEvent::Log { message });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogShared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One of the guest's output streams.
#[derive(Clone)]
pub(crate) struct GuestOutput {
    log: LogBuffer,
    partial: Arc<Mutex<Vec<u8>>>,
}

impl GuestOutput {
    fn accept(&self, bytes: &[u8]) -> Result<(), LimitExceeded> {
        // Every complete line becomes an event.
        let lines = bytes.iter().filter(|b| **b == b'\n').count();
        self.log.charge(bytes.len(), lines)?;
        let mut partial = self.partial.lock().unwrap_or_else(|p| p.into_inner());
        partial.extend_from_slice(bytes);
        while let Some(end) = partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = partial.drain(..=end).collect();
            self.log.emit(&line[..line.len() - 1]);
        }
        Ok(())
    }

    /// Emits a last line that had no newline.
    pub(crate) fn finish(&self) {
        let mut partial = self.partial.lock().unwrap_or_else(|p| p.into_inner());
        if !partial.is_empty() {
            let line = std::mem::take(&mut *partial);
            drop(partial);
            self.log.emit(&line);
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.accept(&bytes)
            .map_err(|limit| StreamError::Trap(limit.into()))
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        // Always writable; the limit is enforced (with a clear trap) in `write`.
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(
            self.accept(buf)
                .map(|()| buf.len())
                .map_err(std::io::Error::other),
        )
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
