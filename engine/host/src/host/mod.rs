//! The host side of `wit/`: one module per capability, each an `impl Host` over [`RunState`].
//!
//! The generated bindings stay private to this module tree; the rest of the engine talks in its
//! own types (`AgentRequest`, `ToolRoot`, ...).

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime::{ResourceLimiter, StoreLimits};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::budget::BudgetLedger;
use crate::events::EventSink;
use crate::limits::{LimitExceeded, RunLimits};
use crate::scheduler::AgentScheduler;
use crate::tools::ToolRoot;

mod agents;
mod budget;
mod progress;
pub(crate) mod stdio;
mod tools;
pub(crate) mod wasi;

#[allow(missing_docs, unsafe_code, clippy::all)]
pub(crate) mod bindings {
    // Generated code; `unsafe` inside is wasmtime's lifting/lowering machinery.
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "workflow",
        imports: {
            "corral:workflow/agents.wait": async | trappable,
            "corral:workflow/agents.call": async | trappable,
            "corral:workflow/agents.parallel": async | trappable,
            "corral:workflow/agents.isolated-changes": async | trappable,
            "corral:workflow/agents.keep-changes": async | trappable,
            "corral:workflow/tools": async | trappable,
            default: trappable,
        },
        exports: { default: async },
    });
}

pub(crate) use bindings::Workflow;
pub(crate) use bindings::WorkflowPre;

/// Everything one run's `Store` holds.
pub(crate) struct RunState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: RunLimiter,
    pub(crate) limits: RunLimits,
    pub(crate) scheduler: AgentScheduler,
    pub(crate) ledger: Arc<BudgetLedger>,
    pub(crate) tools: Option<ToolRoot>,
    pub(crate) events: Arc<dyn EventSink>,
    pub(crate) phase: Option<String>,
    pub(crate) log: stdio::LogBuffer,
    pub(crate) cpu: CpuMeter,
    /// Compiled output schemas by their text: a fan-out usually sends one schema many times.
    pub(crate) schemas: std::collections::HashMap<String, Arc<crate::schema::OutputSchema>>,
    /// Prompt and schema bytes of the agent calls accepted so far (`--max-run-prompt-bytes`).
    pub(crate) prompt_bytes: usize,
    /// Finished isolated calls whose changes wait for `keep-changes` or `discard-changes`.
    pub(crate) isolated: agents::Isolated,
    /// wasi:http, every request denied (see `wasi.rs`).
    pub(crate) http: wasmtime_wasi_http::WasiHttpCtx,
    pub(crate) http_hooks: wasi::DenyHttp,
}

impl wasmtime_wasi_http::WasiHttpView for RunState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        // The same table as WASI's: HTTP bodies are wasi:io streams.
        wasmtime_wasi_http::WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

impl WasiView for RunState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wasmtime_wasi_io::IoView for RunState {
    fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }
}

/// Marker for `add_to_linker`: the capability host traits are implemented on `RunState` itself.
pub(crate) struct Capabilities;

impl HasData for Capabilities {
    type Data<'a> = &'a mut RunState;
}

/// Adds the Corral capabilities and the allowed WASI subset to a linker.
pub(crate) fn add_to_linker(linker: &mut Linker<RunState>) -> wasmtime::Result<()> {
    wasi::add_to_linker(linker)?;
    Workflow::add_to_linker::<RunState, Capabilities>(linker, |state| state)
}

/// Measures the time the guest computes, excluding the time it is suspended in host calls that
/// wait (agents) or do host work (tools). The epoch callback charges this against `--max-cpu`.
#[derive(Debug)]
pub(crate) struct CpuMeter {
    started: Instant,
    suspended: Duration,
}

impl CpuMeter {
    pub(crate) fn new() -> Self {
        CpuMeter {
            started: Instant::now(),
            suspended: Duration::ZERO,
        }
    }

    /// Records a span spent suspended in the host.
    pub(crate) fn add_suspended(&mut self, span: Duration) {
        self.suspended += span;
    }

    /// Time the guest has computed so far.
    pub(crate) fn guest_time(&self) -> Duration {
        self.started.elapsed().saturating_sub(self.suspended)
    }
}

/// Memory and table limits of one run; names the limit in the trap that ends the run.
pub(crate) struct RunLimiter {
    max_memory: usize,
    inner: StoreLimits,
}

impl RunLimiter {
    pub(crate) fn new(max_memory: usize) -> Self {
        let inner = wasmtime::StoreLimitsBuilder::new()
            .table_elements(1 << 20)
            .instances(64)
            .tables(64)
            .memories(16)
            .build();
        RunLimiter { max_memory, inner }
    }
}

impl ResourceLimiter for RunLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            return Err(LimitExceeded::Memory {
                requested: desired,
                limit: self.max_memory,
            }
            .into());
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if !self.inner.table_growing(current, desired, maximum)? {
            return Err(LimitExceeded::Resource(format!(
                "a table tried to grow to {desired} elements"
            ))
            .into());
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}
