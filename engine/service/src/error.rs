//! [`ServiceError`]: every way a run-service request fails, with what to do about it. Front ends
//! map the kinds to exit codes and HTTP statuses ([`ServiceError::kind`]).

use corral_host::LoadError;
use corral_host::config::ConfigError;
use corral_store::{RunStatus, StoreError};

use crate::plan::Plan;

/// What kind of failure a [`ServiceError`] is, for front ends to map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is wrong: fix it (exit 2, HTTP 400/422).
    Invalid,
    /// Something named does not exist (HTTP 404).
    NotFound,
    /// The request conflicts with the run's state (HTTP 409).
    Conflict,
    /// The plan exceeds the budget (exit 6, HTTP 422).
    OverBudget,
    /// A quota is used up (HTTP 429).
    Quota,
    /// The host or the store failed (exit 4, HTTP 500/503).
    Host,
}

/// Why a run-service request failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is invalid (arguments, limits, roots).
    #[error("{0}")]
    Invalid(String),
    /// A script failed its runtime's checks (the message names file:line:column).
    #[error("{0}")]
    Script(String),
    /// A component failed to load or its imports are refused.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The configuration does not allow what was asked (unknown provider, missing key).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A provider could not be set up.
    #[error("provider '{name}': {message}")]
    Provider {
        /// The provider.
        name: String,
        /// Why.
        message: String,
    },
    /// The plan's estimate exceeds the run's budget.
    #[error(
        "the plan estimates {} tokens ({} agents), over the budget of {budget} tokens: raise the budget, make the workflow smaller, or force the run (the budget still stops it)",
        plan.tokens, plan.agents
    )]
    OverBudget {
        /// The budget.
        budget: u64,
        /// The plan.
        plan: Box<Plan>,
    },
    /// No workflow has this hash (for this tenant).
    #[error("no workflow with hash '{0}': upload it first (PUT /v1/workflows)")]
    UnknownWorkflow(String),
    /// No run has this id (for this tenant).
    #[error("no run with id '{0}'")]
    UnknownRun(String),
    /// The run is still running somewhere.
    #[error("run {id} is still running in process {pid}: stop it first (`corral runs stop {id}`)")]
    StillRunning {
        /// The run.
        id: String,
        /// Its process.
        pid: i64,
    },
    /// The run is not running.
    #[error("run {id} is not running (it {status})")]
    NotRunning {
        /// The run.
        id: String,
        /// How it ended.
        status: RunStatus,
    },
    /// The run's process is gone.
    #[error(
        "run {id} was interrupted (its process {pid} is gone); resume it with `corral runs resume {id}`"
    )]
    Interrupted {
        /// The run.
        id: String,
        /// Its process.
        pid: i64,
    },
    /// The run was recorded without a spec (by an older corral).
    #[error(
        "run {0} was recorded by an older corral without a run spec, so it cannot be resumed; run the workflow again"
    )]
    NotResumable(String),
    /// The service has no store (`--no-journal`).
    #[error("runs are not recorded here (no store), so they cannot be listed, stopped or resumed")]
    NoStore,
    /// The store failed.
    #[error(transparent)]
    Store(StoreError),
    /// A tenant quota is used up.
    #[error("{0}")]
    Quota(crate::tenancy::QuotaExceeded),
    /// A run asks for commands its tenant may not run.
    #[error(transparent)]
    Commands(#[from] crate::tenancy::CommandsRefused),
    /// A run's changes cannot be applied (the root changed, an unknown path, a failed write).
    #[error("{0}")]
    Apply(#[from] corral_host::tools::ApplyError),
}

impl From<StoreError> for ServiceError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::UnknownRun(id) => ServiceError::UnknownRun(id),
            other => ServiceError::Store(other),
        }
    }
}

impl ServiceError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ServiceError::Invalid(_)
            | ServiceError::Script(_)
            | ServiceError::Load(_)
            | ServiceError::Config(_)
            | ServiceError::Provider { .. }
            | ServiceError::NotResumable(_)
            | ServiceError::Commands(_) => ErrorKind::Invalid,
            ServiceError::Store(StoreError::AmbiguousRun(_)) => ErrorKind::Invalid,
            ServiceError::OverBudget { .. } => ErrorKind::OverBudget,
            ServiceError::UnknownWorkflow(_) | ServiceError::UnknownRun(_) => ErrorKind::NotFound,
            ServiceError::StillRunning { .. }
            | ServiceError::NotRunning { .. }
            | ServiceError::Interrupted { .. } => ErrorKind::Conflict,
            ServiceError::Quota(_) => ErrorKind::Quota,
            ServiceError::Apply(
                corral_host::tools::ApplyError::Conflicts(_)
                | corral_host::tools::ApplyError::Refused(_),
            ) => ErrorKind::Conflict,
            ServiceError::Apply(corral_host::tools::ApplyError::NotStaged(_)) => ErrorKind::Invalid,
            ServiceError::Apply(corral_host::tools::ApplyError::Io(_)) => ErrorKind::Host,
            ServiceError::NoStore | ServiceError::Store(_) => ErrorKind::Host,
        }
    }
}
