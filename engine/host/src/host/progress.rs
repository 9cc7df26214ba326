//! `corral:workflow/progress`: phases and log lines.

use super::RunState;
use super::bindings::corral::workflow::progress::Host;
use crate::events::RunEvent;
use crate::limits::{LimitExceeded, PROGRESS_CALL_BYTES};

impl Host for RunState {
    fn phase(&mut self, title: String) -> wasmtime::Result<()> {
        let limit = self.limits.max_option_bytes;
        if title.len() > limit {
            return Err(LimitExceeded::Option {
                what: "phase title",
                size: title.len(),
                limit,
            }
            .into());
        }
        self.log.charge(title.len() + PROGRESS_CALL_BYTES)?;
        self.events.event(&RunEvent::Phase {
            title: title.clone(),
        });
        self.phase = Some(title);
        Ok(())
    }

    fn log(&mut self, message: String) -> wasmtime::Result<()> {
        let lines = message.lines().count().max(1);
        self.log
            .charge(message.len() + lines * PROGRESS_CALL_BYTES)?;
        for line in message.lines() {
            self.events.event(&RunEvent::Log {
                message: line.to_string(),
            });
        }
        Ok(())
    }
}
