//! Progress reporting.

use crate::bindings::corral::workflow::progress as wit;

/// Starts a progress group; later agent calls belong to it unless their options name another
/// phase.
pub fn phase(title: &str) {
    wit::phase(title);
}

/// Writes a line to the run's progress log.
pub fn log(message: &str) {
    wit::log(message);
}
