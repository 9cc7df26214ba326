//! Support for Corral's integration tests: building guest components once per test process,
//! fixtures, the fake LLM servers, a test `corral serve` and a headless Chromium.

pub mod bench;
pub mod browser;
pub mod fake_llm;
pub mod guests;
pub mod server;
pub mod support;
