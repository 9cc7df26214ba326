//! `corral:workflow/tools`: read/glob/grep/git over the run's [`ToolRoot`](crate::tools::ToolRoot).
//!
//! Tool work runs on tokio's blocking pool (a grep over a large tree must not stall other runs),
//! and the time it takes is host time, not the guest's CPU time.

use std::time::Instant;

use super::RunState;
use super::bindings::corral::workflow::tools::{
    Change, CommandOutput, Commit, GrepMatch, GrepOptions, Host, StatusEntry, ToolError,
};
use crate::jail::{self, CommandRequest, JailError};
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

    async fn write(
        &mut self,
        path: String,
        text: String,
    ) -> wasmtime::Result<Result<(), ToolError>> {
        self.with_root("write", move |root| root.write(&path, &text))
            .await
    }

    async fn edit(
        &mut self,
        path: String,
        old_text: String,
        new_text: String,
    ) -> wasmtime::Result<Result<(), ToolError>> {
        self.with_root("write", move |root| root.edit(&path, &old_text, &new_text))
            .await
    }

    async fn remove(&mut self, path: String) -> wasmtime::Result<Result<(), ToolError>> {
        self.with_root("write", move |root| root.remove(&path))
            .await
    }

    async fn revert(&mut self, path: String) -> wasmtime::Result<Result<(), ToolError>> {
        self.with_root("write", move |root| root.revert(&path))
            .await
    }

    async fn changes(&mut self) -> wasmtime::Result<Vec<Change>> {
        let Some(root) = &self.tools else {
            return Ok(Vec::new());
        };
        Ok(root
            .changes()
            .into_iter()
            .map(|change| Change {
                path: change.path,
                kind: change.kind.as_str().to_string(),
                bytes: change.bytes,
            })
            .collect())
    }

    async fn run(
        &mut self,
        command: String,
        args: Vec<String>,
        timeout_ms: Option<u32>,
    ) -> wasmtime::Result<Result<CommandOutput, ToolError>> {
        self.run_command(command, args, timeout_ms).await
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

impl RunState {
    /// `tools.run`: the grant, the view, then the jail.
    async fn run_command(
        &mut self,
        command: String,
        args: Vec<String>,
        timeout_ms: Option<u32>,
    ) -> wasmtime::Result<Result<CommandOutput, ToolError>> {
        if !self.limits.grants.tool("run") {
            return Ok(Err(ToolError::Denied(
                "the tool 'run' is not granted by the workflow's policy manifest (grants.tools)"
                    .to_string(),
            )));
        }
        if !self.limits.allow_run.contains(&command) {
            let granted = if self.limits.allow_run.is_empty() {
                "this run grants no commands".to_string()
            } else {
                format!(
                    "this run grants only --allow-run={}",
                    self.limits.allow_run.join(",")
                )
            };
            return Ok(Err(ToolError::Denied(format!(
                "running {command:?} is denied: {granted}: start the run with \
                 --allow-run={command} (commands are matched exactly; there is no shell)"
            ))));
        }
        // The view is synced on the blocking pool, through the same root checks as reads.
        let view = self.with_root("run", |root| root.command_view()).await?;
        let view = match view {
            Ok(view) => view,
            Err(error) => return Ok(Err(error)),
        };
        let request = CommandRequest {
            program: command,
            args,
            timeout: timeout_ms.map(|ms| std::time::Duration::from_millis(u64::from(ms))),
        };
        let began = Instant::now();
        // When the run ends this future is dropped, which kills the jail (kill on drop).
        let outcome = jail::run(
            &view,
            &request,
            &self.limits.commands,
            std::future::pending(),
        )
        .await;
        self.cpu.add_suspended(began.elapsed());
        Ok(match outcome {
            Ok(output) => Ok(CommandOutput {
                code: output.code,
                stdout: output.stdout,
                stderr: output.stderr,
            }),
            Err(JailError::NotFound(m)) => Err(ToolError::NotFound(m)),
            Err(JailError::Limit(m)) => Err(ToolError::Limit(m)),
            Err(JailError::InvalidInput(m)) => Err(ToolError::InvalidInput(m)),
            Err(JailError::Unavailable(m) | JailError::Io(m)) => Err(ToolError::Io(m)),
        })
    }
}

pub(super) fn to_wit_error(error: tools::ToolError) -> ToolError {
    use tools::ToolError as E;
    match error {
        E::Denied(m) => ToolError::Denied(m),
        E::NotFound(m) => ToolError::NotFound(m),
        E::InvalidInput(m) => ToolError::InvalidInput(m),
        E::Limit(m) => ToolError::Limit(m),
        E::Io(m) => ToolError::Io(m),
    }
}
