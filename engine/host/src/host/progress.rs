//! `corral:workflow/progress`: phases and log lines.

use super::RunState;
use super::bindings::corral::workflow::progress::Host;
use crate::events::RunEvent;

impl Host for RunState {
    fn phase(&mut self, title: String) -> wasmtime::Result<()> {
        self.log.charge(title.len())?;
        self.events.event(&RunEvent::Phase {
            title: title.clone(),
        });
        self.phase = Some(title);
        Ok(())
    }

    fn log(&mut self, message: String) -> wasmtime::Result<()> {
        self.log.charge(message.len())?;
        for line in message.lines() {
            self.events.event(&RunEvent::Log {
                message: line.to_string(),
            });
        }
        Ok(())
    }
}
