//! Corral's host: runs sandboxed workflow components under host-enforced caps and budgets.
//!
//! Lifetimes are kept apart: [`Runtime`] lives as long as the process (wasmtime engine, linker,
//! caches); a [`Workflow`] is one compiled, checked component; a run (one `Store`, one
//! [`scheduler::AgentScheduler`], one [`budget::BudgetLedger`]) lives inside [`Runtime::run`].

pub mod agent_loop;
pub mod artifact;
pub mod budget;
pub mod config;
pub mod events;
mod host;
pub mod jail;
pub mod limits;
pub mod provider;
pub mod record;
pub mod run;
pub mod runtime;
pub mod scheduler;
pub mod schema;
pub mod tools;

pub use artifact::Script;
pub use limits::{LimitExceeded, RunLimits};
pub use run::{AgentStops, RunError, RunOptions, RunReport, Shared, StopSignal};
pub use runtime::{LoadError, Runtime, RuntimeConfig, Workflow};
