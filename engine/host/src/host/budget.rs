//! `corral:workflow/budget`: the run's token budget, read-only.

use super::RunState;
use super::bindings::corral::workflow::budget::Host;

impl Host for RunState {
    fn total(&mut self) -> wasmtime::Result<Option<u64>> {
        Ok(self.ledger.total())
    }

    fn spent(&mut self) -> wasmtime::Result<u64> {
        Ok(self.ledger.spent())
    }

    fn remaining(&mut self) -> wasmtime::Result<Option<u64>> {
        Ok(self.ledger.remaining())
    }
}
