//! Corral's JavaScript runtime: a WebAssembly component (world `corral:workflow/script-runtime`)
//! that runs workflow scripts written in the format of `SCRIPT-API.md` on QuickJS-ng.
//!
//! The host calls `script.load(name, source)` once, then `run(args-json)`:
//!
//! - `load` checks the script without running it ([`frontend`]: the `meta` literal, no
//!   `import`/`require`), then compiles it with QuickJS as the body of an async function, so
//!   top-level `await` and a top-level `return` work. Errors name the line and column.
//! - `run` defines `args`, calls that function and drives the event loop ([`script`]):
//!   QuickJS jobs run until none is left; nested workflows asked for are started (each in a
//!   realm of its own) and those that finished are handed back; then, while agent calls are
//!   pending on the host, one `agents.wait` (about the oldest [`script::WAIT_BATCH`] of them)
//!   hands back the finished calls and their promises are settled; a script that still waits
//!   with nothing pending on the host is deadlocked. The returned value, as JSON, is the
//!   workflow's result; one with no JSON form (a function, a symbol) is an error.
//!
//! Architecture invariant: the runtime knows nothing about the engine; it reaches the host only
//! through the imports of the WIT world, behind the [`host::Host`] trait.

mod bytecode;
pub mod frontend;
#[cfg(test)]
mod fuzz;
pub mod heap;
pub mod host;
pub mod json;
pub mod lexer;
pub mod script;

/// Bindings generated from `wit/workflow.wit`.
#[allow(unsafe_code, missing_docs, dead_code, clippy::all)]
// SAFETY: the generated code is the canonical-ABI glue wit-bindgen emits for the world; it is
// not edited by hand.
mod bindings {
    wit_bindgen::generate!({ world: "script-runtime", path: "../../wit" });
}

/// The component's exports and [`host::Host`] over its imports. Only built for wasm32: on the
/// host target (unit tests) the exports' names would not link.
#[cfg(target_arch = "wasm32")]
mod component {
    use std::cell::RefCell;
    use std::rc::Rc;

    use crate::{bindings, host, script};
    use bindings::corral::workflow::{agents, budget, progress, tools};
    use bindings::exports::corral::workflow::script as script_export;

    /// The component: its exports forward to the one [`script::Workflow`] of this instance.
    struct Component;

    thread_local! {
        /// The script `load` compiled, for `run`. A component instance runs one script.
        static LOADED: RefCell<Option<script::Workflow>> = const { RefCell::new(None) };
    }

    impl script_export::Guest for Component {
        fn load(name: String, source: String) -> Result<(), String> {
            let workflow = script::Workflow::load(
                &name,
                &source,
                Rc::new(WitHost),
                script::Limits::default(),
            )?;
            LOADED.with(|loaded| *loaded.borrow_mut() = Some(workflow));
            Ok(())
        }
    }

    impl bindings::Guest for Component {
        fn run(args_json: String) -> Result<String, String> {
            LOADED.with(|loaded| match loaded.borrow().as_ref() {
                Some(workflow) => workflow.run(&args_json),
                None => Err(
                    "no script is loaded: the host must call `script.load` before `run`".to_owned(),
                ),
            })
        }
    }

    #[allow(unsafe_code)]
    mod export {
        // SAFETY: `export!` emits the `#[export_name]` entry points the component model calls; they
        // forward to the safe `Guest` impls above.
        use super::Component;
        crate::bindings::export!(Component with_types_in crate::bindings);
    }

    /// [`host::Host`] over the component's imports.
    struct WitHost;

    impl host::Host for WitHost {
        fn agent_start(
            &self,
            prompt: &str,
            options: &agents::AgentOptions,
        ) -> Result<agents::CallId, agents::AgentError> {
            agents::start(prompt, options)
        }

        fn agent_start_isolated(
            &self,
            prompt: &str,
            options: &agents::AgentOptions,
        ) -> Result<agents::CallId, agents::AgentError> {
            agents::start_isolated(prompt, options)
        }

        fn isolated_changes(
            &self,
            id: agents::CallId,
        ) -> Result<agents::Isolated, tools::ToolError> {
            agents::isolated_changes(id)
        }

        fn keep_changes(&self, id: agents::CallId) -> Result<Vec<String>, tools::ToolError> {
            agents::keep_changes(id)
        }

        fn discard_changes(&self, id: agents::CallId) {
            agents::discard_changes(id)
        }

        fn agent_wait(&self, ids: &[agents::CallId]) -> Vec<agents::Completion> {
            agents::wait(ids)
        }

        fn agent_cancel(&self, id: agents::CallId) {
            agents::cancel(id);
        }

        fn read(&self, path: &str) -> Result<String, tools::ToolError> {
            tools::read(path)
        }

        fn glob(&self, pattern: &str) -> Result<Vec<String>, tools::ToolError> {
            tools::glob(pattern)
        }

        fn grep(
            &self,
            pattern: &str,
            options: &tools::GrepOptions,
        ) -> Result<Vec<tools::GrepMatch>, tools::ToolError> {
            tools::grep(pattern, options)
        }

        fn git_log(
            &self,
            path: Option<&str>,
            max: Option<u32>,
        ) -> Result<Vec<tools::Commit>, tools::ToolError> {
            tools::git_log(path, max)
        }

        fn git_show(&self, rev: &str, path: Option<&str>) -> Result<String, tools::ToolError> {
            tools::git_show(rev, path)
        }

        fn git_diff(&self, range: Option<&str>) -> Result<String, tools::ToolError> {
            tools::git_diff(range)
        }

        fn git_status(&self) -> Result<Vec<tools::StatusEntry>, tools::ToolError> {
            tools::git_status()
        }

        fn write(&self, path: &str, text: &str) -> Result<(), tools::ToolError> {
            tools::write(path, text)
        }

        fn edit(&self, path: &str, old: &str, new: &str) -> Result<(), tools::ToolError> {
            tools::edit(path, old, new)
        }

        fn remove(&self, path: &str) -> Result<(), tools::ToolError> {
            tools::remove(path)
        }

        fn revert(&self, path: &str) -> Result<(), tools::ToolError> {
            tools::revert(path)
        }

        fn changes(&self) -> Vec<tools::Change> {
            tools::changes()
        }

        fn run(
            &self,
            command: &str,
            args: &[String],
            timeout_ms: Option<u32>,
        ) -> Result<tools::CommandOutput, tools::ToolError> {
            tools::run(command, args, timeout_ms)
        }

        fn phase(&self, title: &str) {
            progress::phase(title);
        }

        fn log(&self, message: &str) {
            progress::log(message);
        }

        fn budget_total(&self) -> Option<u64> {
            budget::total()
        }

        fn budget_spent(&self) -> u64 {
            budget::spent()
        }

        fn budget_remaining(&self) -> Option<u64> {
            budget::remaining()
        }
    }
}
