//! Support for Corral's integration tests: building guest components once per test process,
//! fixtures, and the fake LLM servers.

pub mod bench;
pub mod fake_llm;
pub mod guests;
pub mod server;
pub mod support;
