//! Corral's run service: the one home of a run's lifecycle, under every front end.
//!
//! A front end (the `corral` CLI, the HTTP server) turns its input into a [`RunSpec`] — the
//! complete, serialisable description of a run — and drives a [`RunService`], which owns
//! everything else: resolving the workflow by hash, opening the root, building the provider from
//! the parsed config, checking the plan against the budget, recording the run in the store
//! ([`corral_store::RunStore`]), pricing it, and the run-started/run-finished events. Resume reads
//! the stored spec, never an argv or a working directory; nothing here reads the environment.

mod error;
pub mod plan;
pub mod pool;
pub mod report;
mod service;
pub mod spec;
pub mod tenancy;

pub use error::{ErrorKind, ServiceError};
pub use plan::{ModelPlan, PhasePlan, Plan};
pub use service::{
    BundledRuntime, EventFeed, Fanout, ProviderInfo, RunChange, RunHandle, RunOutcome, RunService,
    ServiceConfig, StartOptions, StopAnswer,
};
pub use spec::{RootRef, RunSpec, ScriptRef, WorkflowRef};

/// SHA-256 of `bytes`, hex: content hashes of workflows, hashes of API tokens.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
