//! Corral's integration tests: real guest components through the real engine.
//!
//! One test binary for the whole workspace (each `tests/*.rs` file would relink everything).

mod adversarial;
mod budget;
mod changes;
mod cli;
mod dashboard;
mod guests_used;
mod journal;
mod js_workflows;
mod languages;
mod limits;
mod pause;
mod providers;
mod reporting;
mod runs;
mod script_api;
mod script_format;
mod server;
mod signing;
mod tools;
mod watch;
