//! Support for Corral's integration tests: building guest components once per test process,
//! fixtures, and the fake LLM servers.

pub mod guests;
pub mod support;
