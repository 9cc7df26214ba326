//! `corral:workflow/progress`: phases and log lines.

use super::RunState;
use super::bindings::corral::workflow::progress::Host;
use crate::events::RunEvent;
use crate::limits::LimitExceeded;

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
        self.log.charge(title.len(), 1)?;
        self.events.event(&RunEvent::Phase {
            title: title.clone(),
        });
        self.phase = Some(title);
        Ok(())
    }

    fn log(&mut self, message: String) -> wasmtime::Result<()> {
        // Even an empty message is a call that costs one event.
        self.log
            .charge(message.len(), message.lines().count().max(1))?;
        for line in message.lines() {
            self.events.event(&RunEvent::Log {
                message: line.to_string(),
            });
        }
        Ok(())
    }
}
