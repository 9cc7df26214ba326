//! `corral:workflow/tools`: read/glob/grep/git over the run's [`ToolRoot`](crate::tools::ToolRoot).
//!
//! Tool work runs on tokio's blocking pool (a grep over a large tree must not stall other runs),
//! and the time it takes is host time, not the guest's CPU time.

use std::time::Instant;

use super::RunState;
use super::bindings::corral::workflow::tools::{
    Commit, GrepMatch, GrepOptions, Host, StatusEntry, ToolError,
};
use crate::tools::{self, ToolRoot};

impl RunState {
    async fn with_root<T: Send + 'static>(
        &mut self,
        tool: &str,
        work: impl FnOnce(&ToolRoot) -> Result<T, tools::ToolError> + Send + 'static,
    ) -> wasmtime::Result<Result<T, ToolError>> {
        if !self.limits.grants.tool(tool) {
            return Ok(Err(ToolError::Denied(format!(
                "the tool '{tool}' is not granted by the workflow's policy manifest (grants.tools)"
            ))));
        }
        let Some(root) = self.tools.clone() else {
            return Ok(Err(ToolError::Denied(
                "this run has no root directory, so there are no files (pass --root DIR to grant one)".to_string(),
            )));
        };
        let began = Instant::now();
        let result = tokio::task::spawn_blocking(move || work(&root)).await;
        self.cpu.add_suspended(began.elapsed());
        // A panic inside a tool is a host bug: end this run, not the process.
        let result = result.map_err(|error| wasmtime::format_err!("tool call failed: {error}"))?;
        Ok(result.map_err(to_wit_error))
    }
}

impl Host for RunState {
    async fn read(&mut self, path: String) -> wasmtime::Result<Result<String, ToolError>> {
        self.with_root("read", move |root| root.read(&path)).await
    }

    async fn glob(&mut self, pattern: String) -> wasmtime::Result<Result<Vec<String>, ToolError>> {
        self.with_root("glob", move |root| root.glob(&pattern))
            .await
    }

    async fn grep(
        &mut self,
        pattern: String,
        options: GrepOptions,
    ) -> wasmtime::Result<Result<Vec<GrepMatch>, ToolError>> {
        self.with_root("grep", move |root| {
            let options = tools::GrepOptions {
                glob: options.glob,
                ignore_case: options.ignore_case,
                max_matches: options.max_matches,
            };
            let matches = root.grep(&pattern, &options)?;
            Ok(matches
                .into_iter()
                .map(|m| GrepMatch {
                    path: m.path,
                    line: m.line,
                    text: m.text,
                })
                .collect())
        })
        .await
    }

    async fn git_log(
        &mut self,
        path: Option<String>,
        max: Option<u32>,
    ) -> wasmtime::Result<Result<Vec<Commit>, ToolError>> {
        self.with_root("git", move |root| {
            let commits = root.git_log(path.as_deref(), max)?;
            Ok(commits
                .into_iter()
                .map(|c| Commit {
                    id: c.id,
                    author: c.author,
                    time: c.time,
                    summary: c.summary,
                })
                .collect())
        })
        .await
    }

    async fn git_show(
        &mut self,
        rev: String,
        path: Option<String>,
    ) -> wasmtime::Result<Result<String, ToolError>> {
        self.with_root("git", move |root| root.git_show(&rev, path.as_deref()))
            .await
    }

    async fn git_diff(
        &mut self,
        range: Option<String>,
    ) -> wasmtime::Result<Result<String, ToolError>> {
        self.with_root("git", move |root| root.git_diff(range.as_deref()))
            .await
    }

    async fn git_status(&mut self) -> wasmtime::Result<Result<Vec<StatusEntry>, ToolError>> {
        self.with_root("git", |root| {
            let entries = root.git_status()?;
            Ok(entries
                .into_iter()
                .map(|e| StatusEntry {
                    path: e.path,
                    status: e.status,
                })
                .collect())
        })
        .await
    }
}

fn to_wit_error(error: tools::ToolError) -> ToolError {
    use tools::ToolError as E;
    match error {
        E::Denied(m) => ToolError::Denied(m),
        E::NotFound(m) => ToolError::NotFound(m),
        E::InvalidInput(m) => ToolError::InvalidInput(m),
        E::Limit(m) => ToolError::Limit(m),
        E::Io(m) => ToolError::Io(m),
    }
}
