//! Write Corral workflows in Rust.
//!
//! A workflow is a WebAssembly component of the world `corral:workflow/workflow` (see
//! `wit/workflow.wit`): it exports `run(args-json) -> result<string, string>` and reaches the
//! outside world only through the Corral host's `agents`, `tools`, `progress` and `budget`
//! interfaces. This crate wraps those interfaces in an async API and supplies the small
//! single-threaded executor that drives it:
//!
//! ```no_run
//! use guest_sdk::{AgentOptions, Error, agent, parallel, phase};
//! use serde_json::{Value, json};
//!
//! async fn audit(args: Value) -> Result<Value, Error> {
//!     phase("Scan");
//!     let files = guest_sdk::tools::glob(args["glob"].as_str().unwrap_or("**/*.rs"))?;
//!     let calls = files.iter().map(|file| {
//!         agent(format!("Review {file}"), AgentOptions::new().label(file.as_str()))
//!     });
//!     let reviews = parallel(calls).await?;
//!     let texts: Vec<String> = reviews.into_iter().filter_map(|r| r.ok()).map(|o| o.text).collect();
//!     Ok(json!({ "reviews": texts }))
//! }
//!
//! guest_sdk::workflow!(audit);
//! ```
//!
//! Build a workflow crate (`crate-type = ["cdylib"]`) with
//! `cargo build --target wasm32-wasip2`; the resulting `.wasm` file is the component.
//!
//! # How concurrency works
//!
//! The guest is single-threaded. An [`agent`] future asks the host to start its call the first
//! time it is polled, so every call inside [`parallel`] or a [`pipeline`] starts at once; the host
//! runs them under the run's concurrency cap. When the workflow cannot make progress, the executor
//! blocks in the host's `agents.wait`, which hands back every call that has finished, and resumes
//! exactly the tasks waiting for them. Futures of this crate must be driven by that executor (the
//! [`workflow!`] macro or [`block_on`]); any other async runtime would never see their completions.
//!
//! # Architecture invariant
//!
//! The SDK knows nothing about the engine: it speaks only the WIT contract.

// Lets the wit-bindgen runtime path `::guest_sdk::...` resolve inside this crate as well as in
// the workflow crates that expand the export macro.
extern crate self as guest_sdk;

mod agent;
pub mod budget;
mod combinators;
mod error;
mod executor;
mod progress;
pub mod tools;

#[cfg(test)]
mod tests;

/// Bindings generated from `wit/workflow.wit`.
///
/// They are public only because the [`workflow!`] macro expands, in the workflow's crate, to
/// wit-bindgen's export macro, which names these items. Workflows should use the typed API of
/// this crate instead.
#[doc(hidden)]
// wit-bindgen's generated glue lowers and lifts values across the component ABI with raw
// pointers; that code is generated from the WIT contract, not written by hand.
#[allow(unsafe_code, missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "workflow",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_workflow",
        default_bindings_module: "::guest_sdk::bindings",
        runtime_path: "::guest_sdk::__private::wit_bindgen::rt",
    });
}

pub use agent::{
    AgentCall, AgentError, AgentOptions, AgentOutput, Effort, Usage, agent, agent_blocking,
    host_parallel,
};
pub use combinators::{MAX_FANOUT, Pipeline, parallel, pipeline};
pub use error::Error;
pub use executor::block_on;
pub use progress::{log, phase};
pub use serde_json;

/// Exports an async function as the workflow's `run` entry point.
///
/// The function takes the run's arguments (`serde_json::Value::Null` when the run has none) and
/// returns `Result<T, guest_sdk::Error>` where `T: serde::Serialize` (usually
/// `serde_json::Value`). The macro drives it to completion with the SDK's executor, serialises
/// the `Ok` value as the run's JSON result, and turns an `Err` into the run's error message.
///
/// ```no_run
/// async fn main_flow(args: serde_json::Value) -> Result<serde_json::Value, guest_sdk::Error> {
///     guest_sdk::log("hello");
///     Ok(args)
/// }
/// guest_sdk::workflow!(main_flow);
/// ```
///
/// Use it once per crate, at module level.
#[macro_export]
macro_rules! workflow {
    ($main:path) => {
        #[doc(hidden)]
        struct __CorralWorkflow;

        impl $crate::__private::Guest for __CorralWorkflow {
            fn run(
                args_json: ::std::string::String,
            ) -> ::core::result::Result<::std::string::String, ::std::string::String> {
                $crate::__private::run_workflow(&args_json, $main)
            }
        }

        $crate::bindings::__export_workflow!(__CorralWorkflow with_types_in $crate::bindings);
    };
}

/// Support for the [`workflow!`] macro; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::Guest;
    pub use wit_bindgen;

    use crate::{Error, block_on};
    use serde::Serialize;
    use std::future::Future;

    /// Parses the arguments, runs the workflow's main function to completion and serialises its
    /// result, mapping every failure to the message the host reports.
    pub fn run_workflow<F, Fut, T>(args_json: &str, main: F) -> Result<String, String>
    where
        F: FnOnce(serde_json::Value) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
        T: Serialize,
    {
        let args = if args_json.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(args_json)
                .map_err(|e| format!("the run's arguments are not valid JSON: {e}"))?
        };
        let output = block_on(main(args))
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        serde_json::to_string(&output)
            .map_err(|e| format!("the workflow's result cannot be serialised as JSON: {e}"))
    }
}
