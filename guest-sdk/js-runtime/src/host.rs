//! The capabilities a script reaches, as a trait: on wasm32 the Corral imports
//! ([`crate::WitHost`]); in unit tests a fake, so the whole JavaScript API can be tested on the
//! host target without building a component.

use crate::bindings::corral::workflow::agents::{
    AgentError, AgentOptions, CallId, Completion, Isolated,
};
use crate::bindings::corral::workflow::tools::{
    Change, CommandOutput, Commit, GrepMatch, GrepOptions, StatusEntry, ToolError,
};

/// Everything a running script can ask of the Corral host, one method per WIT function it uses.
/// The signatures mirror `wit/workflow.wit`; see there for the semantics.
pub trait Host {
    /// `agents.start`.
    fn agent_start(&self, prompt: &str, options: &AgentOptions) -> Result<CallId, AgentError>;
    /// `agents.wait`: every one of `ids` that has finished, blocking until at least one has.
    fn agent_wait(&self, ids: &[CallId]) -> Vec<Completion>;
    /// `agents.cancel`.
    fn agent_cancel(&self, id: CallId);
    /// `agents.start-isolated`.
    fn agent_start_isolated(
        &self,
        prompt: &str,
        options: &AgentOptions,
    ) -> Result<CallId, AgentError>;
    /// `agents.isolated-changes`.
    fn isolated_changes(&self, id: CallId) -> Result<Isolated, ToolError>;
    /// `agents.keep-changes`.
    fn keep_changes(&self, id: CallId) -> Result<Vec<String>, ToolError>;
    /// `agents.discard-changes`.
    fn discard_changes(&self, id: CallId);

    /// `tools.read`.
    fn read(&self, path: &str) -> Result<String, ToolError>;
    /// `tools.glob`.
    fn glob(&self, pattern: &str) -> Result<Vec<String>, ToolError>;
    /// `tools.grep`.
    fn grep(&self, pattern: &str, options: &GrepOptions) -> Result<Vec<GrepMatch>, ToolError>;
    /// `tools.git-log`.
    fn git_log(&self, path: Option<&str>, max: Option<u32>) -> Result<Vec<Commit>, ToolError>;
    /// `tools.git-show`.
    fn git_show(&self, rev: &str, path: Option<&str>) -> Result<String, ToolError>;
    /// `tools.git-diff`.
    fn git_diff(&self, range: Option<&str>) -> Result<String, ToolError>;
    /// `tools.git-status`.
    fn git_status(&self) -> Result<Vec<StatusEntry>, ToolError>;
    /// `tools.write`.
    fn write(&self, path: &str, text: &str) -> Result<(), ToolError>;
    /// `tools.edit`.
    fn edit(&self, path: &str, old: &str, new: &str) -> Result<(), ToolError>;
    /// `tools.remove`.
    fn remove(&self, path: &str) -> Result<(), ToolError>;
    /// `tools.revert`.
    fn revert(&self, path: &str) -> Result<(), ToolError>;
    /// `tools.changes`.
    fn changes(&self) -> Vec<Change>;
    /// `tools.run`.
    fn run(
        &self,
        command: &str,
        args: &[String],
        timeout_ms: Option<u32>,
    ) -> Result<CommandOutput, ToolError>;

    /// `progress.phase`.
    fn phase(&self, title: &str);
    /// `progress.log`.
    fn log(&self, message: &str);

    /// `budget.total`.
    fn budget_total(&self) -> Option<u64>;
    /// `budget.spent`.
    fn budget_spent(&self) -> u64;
    /// `budget.remaining`.
    fn budget_remaining(&self) -> Option<u64>;
}
