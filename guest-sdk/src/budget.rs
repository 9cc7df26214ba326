//! The run's token budget, as the host accounts it.

use crate::bindings::corral::workflow::budget as wit;

/// The total budget in tokens, or `None` when the run has no budget.
pub fn total() -> Option<u64> {
    wit::total()
}

/// Tokens spent so far (settled usage of finished provider requests).
pub fn spent() -> u64 {
    wit::spent()
}

/// Tokens still available to new requests (total − spent − reserved), or `None` when the run
/// has no budget.
pub fn remaining() -> Option<u64> {
    wit::remaining()
}
