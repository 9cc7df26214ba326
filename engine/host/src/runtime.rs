//! The process lifetime: one wasmtime `Engine` (component model, async, pooling allocator, epoch
//! interruption), one `Linker` with the capabilities, and the caches of compiled workflows.
//!
//! Compiled components are cached on disk by the SHA-256 of their bytes (plus the engine's
//! compatibility hash), so a second process running the same component does no Cranelift work,
//! and in memory as ready-to-instantiate `InstancePre`s, so a second run in one process only
//! instantiates.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, ComponentExportIndex, InstancePre, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::host::{self, RunState, WorkflowPre};
use crate::limits::{
    MAX_CORE_INSTANCES, MAX_MEMORIES_PER_COMPONENT, MAX_MEMORY_CEILING, MAX_TABLES_PER_COMPONENT,
};

/// How often the epoch advances; the granularity of CPU-limit checks and async yields.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The export a script runtime (such as the JavaScript runtime) provides. wasmtime looks export
/// names up semver-compatibly, so this finds the `script` of any 0.1.x runtime (today's bundled
/// one exports `@0.1.1`).
pub const SCRIPT_EXPORT: &str = "corral:workflow/script@0.1.0";

/// Process-wide settings.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Where compiled components are cached; `None` disables the disk cache.
    pub cache_dir: Option<PathBuf>,
    /// How many runs may be instantiated at once in this process.
    pub max_live_runs: u32,
    /// `--max-core-instances`: the core instances one component may create (see
    /// [`crate::limits::MAX_CORE_INSTANCES`]).
    pub max_core_instances: u32,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            cache_dir: default_cache_dir(),
            max_live_runs: 256,
            max_core_instances: crate::limits::MAX_CORE_INSTANCES,
        }
    }
}

/// `$CORRAL_CACHE_DIR`, else `$XDG_CACHE_HOME/corral`, else `~/.cache/corral`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("CORRAL_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(dir).join("corral"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache").join("corral"))
}

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The bytes are not a valid component.
    #[error("{name} is not a valid WebAssembly component: {message}")]
    Invalid {
        /// The workflow's name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The component imports something Corral does not provide.
    #[error("{name} is refused: {message}")]
    ForbiddenImport {
        /// The workflow's name.
        name: String,
        /// Which import, and how to fix it.
        message: String,
        /// Everything the component imports (`corral inspect` lists them, marking the refused).
        imports: Vec<String>,
    },
    /// The component needs more instances, memories or tables than a run may have.
    #[error("{name} is refused: {message}")]
    TooLarge {
        /// The workflow's name.
        name: String,
        /// Which limit, and the flag that raises it.
        message: String,
    },
    /// The component does not export what a workflow must.
    #[error("{name} is not a Corral workflow: {message}")]
    NotAWorkflow {
        /// The workflow's name.
        name: String,
        /// What is missing.
        message: String,
    },
}

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the wasmtime engine: {0}")]
pub struct RuntimeError(String);

/// A loaded workflow: compiled, checked, ready to instantiate.
pub struct Workflow {
    pub(crate) name: String,
    pub(crate) hash: String,
    pub(crate) instance_pre: InstancePre<RunState>,
    pub(crate) script_load: Option<ComponentExportIndex>,
    pub(crate) imports: Vec<String>,
    pub(crate) exports: Vec<String>,
    pub(crate) compiled_from_cache: bool,
    pub(crate) embedded_script: Option<crate::artifact::Script>,
    pub(crate) policy: Option<crate::artifact::policy::Policy>,
    pub(crate) seal: Option<crate::artifact::signed::Seal>,
    pub(crate) size: usize,
}

impl Workflow {
    /// The name it was loaded under (usually the file name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// SHA-256 of the component's bytes, hex.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Whether the component is a script runtime that needs `load(source)` before `run`.
    pub fn is_script_runtime(&self) -> bool {
        self.script_load.is_some()
    }

    /// The component's imports.
    pub fn imports(&self) -> &[String] {
        &self.imports
    }

    /// The component's exports.
    pub fn exports(&self) -> &[String] {
        &self.exports
    }

    /// The script packaged into the component by `corral build`, if any.
    pub fn embedded_script(&self) -> Option<&crate::artifact::Script> {
        self.embedded_script.as_ref()
    }

    /// The policy manifest embedded by `corral build --policy` or `corral sign`, if any.
    pub fn policy(&self) -> Option<&crate::artifact::policy::Policy> {
        self.policy.as_ref()
    }

    /// The component's signature, if it is signed (read, not yet checked against any key).
    pub fn seal(&self) -> Option<&crate::artifact::signed::Seal> {
        self.seal.as_ref()
    }

    /// Checks the signature against `trusted` keys: the signer's key id when it verifies.
    pub fn verify(
        &self,
        trusted: &[crate::artifact::minisign::PublicKey],
    ) -> Result<crate::artifact::minisign::KeyId, crate::artifact::signed::SignatureError> {
        crate::artifact::signed::check_signature(self.seal.as_ref(), trusted)
    }

    /// Size of the component in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether the compiled code came from the disk cache (no Cranelift work).
    pub fn compiled_from_cache(&self) -> bool {
        self.compiled_from_cache
    }
}

/// Native stack of one run's wasm code (wasmtime's default is 512 KiB).
pub const WASM_STACK: usize = 4 << 20;

/// One per process: the engine, the linker and the caches.
pub struct Runtime {
    pub(crate) engine: Engine,
    linker: Linker<RunState>,
    cache_dir: Option<PathBuf>,
    loaded: Mutex<HashMap<String, Arc<Workflow>>>,
    ticker_stop: Arc<AtomicBool>,
    max_core_instances: u32,
}

impl Runtime {
    /// Starts the engine and the epoch ticker.
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let mut wasm = Config::new();
        wasm.wasm_component_model(true);
        wasm.epoch_interruption(true);
        // Room for the deepest recursion a script runtime allows itself (QuickJS checks its
        // own shadow stack, which this native stack must outlast), so that deep recursion is a
        // catchable error inside the guest rather than a trap. Stack pages are touched only as
        // deep as a run goes.
        wasm.max_wasm_stack(WASM_STACK);
        wasm.async_stack_size(WASM_STACK + (1 << 20));
        let live = config.max_live_runs.max(1);
        let core_instances = config.max_core_instances.max(1);
        let mut pool = PoolingAllocationConfig::default();
        // Every live run gets the whole per-component shape, so a component that loads (these
        // are checked when it is compiled or read from the cache) always fits once it has a run
        // slot: running out of core instances mid-run cannot happen. Core instances are counters
        // only; memories and tables are reserved address space.
        pool.total_component_instances(live)
            .max_core_instances_per_component(core_instances)
            .total_core_instances(live.saturating_mul(core_instances))
            .max_memories_per_component(MAX_MEMORIES_PER_COMPONENT)
            .total_memories(live * MAX_MEMORIES_PER_COMPONENT)
            .max_tables_per_component(MAX_TABLES_PER_COMPONENT)
            .total_tables(live * MAX_TABLES_PER_COMPONENT)
            .total_stacks(live)
            .max_memory_size(MAX_MEMORY_CEILING);
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm).map_err(|error| RuntimeError(format!("{error:#}")))?;
        let mut linker = Linker::new(&engine);
        host::add_to_linker(&mut linker).map_err(|error| RuntimeError(format!("{error:#}")))?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&ticker_stop);
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("corral-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|error| RuntimeError(format!("cannot start the epoch thread: {error}")))?;

        Ok(Runtime {
            engine,
            linker,
            cache_dir: config.cache_dir,
            loaded: Mutex::new(HashMap::new()),
            ticker_stop,
            max_core_instances: core_instances,
        })
    }

    /// The workflow with SHA-256 `hash`, if this process has loaded it.
    pub fn loaded(&self, hash: &str) -> Option<Arc<Workflow>> {
        self.lock_loaded().get(hash).cloned()
    }

    /// Loads a component file.
    pub fn load_file(&self, path: &Path) -> Result<Arc<Workflow>, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        self.load(&name, &bytes)
    }

    /// Loads a component from bytes: compile (or take from the caches), check its imports, and
    /// prepare it for instantiation.
    pub fn load(&self, name: &str, bytes: &[u8]) -> Result<Arc<Workflow>, LoadError> {
        let hash = hex(&Sha256::digest(bytes));
        self.load_hashed(name, bytes, &hash)
    }

    /// [`Runtime::load`] for bytes whose SHA-256 (hex) is already known — a bundled component
    /// whose hash is checked at build time — which saves hashing a large component at every start.
    pub fn load_hashed(
        &self,
        name: &str,
        bytes: &[u8],
        hash: &str,
    ) -> Result<Arc<Workflow>, LoadError> {
        let hash = hash.to_string();
        if let Some(workflow) = self.lock_loaded().get(&hash) {
            return Ok(Arc::clone(workflow));
        }
        check_component_header(name, bytes)?;
        let embedded_script =
            crate::artifact::embedded_script(bytes).map_err(|error| LoadError::Invalid {
                name: name.to_string(),
                message: error.to_string(),
            })?;
        let invalid = |error: crate::artifact::ArtifactError| LoadError::Invalid {
            name: name.to_string(),
            message: error.to_string(),
        };
        let policy = crate::artifact::signed::embedded_policy(bytes).map_err(invalid)?;
        let seal = crate::artifact::signed::seal(bytes).map_err(invalid)?;
        // Compile without Corral's sections (script, policy, signature), so every built script
        // shares its runtime's code and signing a component keeps its cache entry.
        let code = crate::artifact::code(bytes).map_err(invalid)?;
        let code_hash = match &code {
            std::borrow::Cow::Borrowed(_) => hash.clone(),
            std::borrow::Cow::Owned(stripped) => sha256_hex(stripped),
        };
        let code = code.as_ref();
        let (component, compiled_from_cache) = self.compile(name, code, &code_hash)?;

        let ty = component.component_type();
        let imports: Vec<String> = ty
            .imports(&self.engine)
            .map(|(import, _)| import.to_string())
            .collect();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(export, _)| export.to_string())
            .collect();
        host::wasi::check_imports(imports.iter().map(String::as_str)).map_err(|message| {
            LoadError::ForbiddenImport {
                name: name.to_string(),
                message,
                imports: imports.clone(),
            }
        })?;
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|error| {
            LoadError::ForbiddenImport {
                name: name.to_string(),
                message: format!("{error:#}"),
                imports: imports.clone(),
            }
        })?;
        WorkflowPre::new(instance_pre.clone()).map_err(|error| LoadError::NotAWorkflow {
            name: name.to_string(),
            message: format!("it must export `run: func(args-json: string) -> result<string, string>` (world corral:workflow/workflow): {error:#}"),
        })?;
        let script_load = component
            .get_export_index(None, SCRIPT_EXPORT)
            .and_then(|script| component.get_export_index(Some(&script), "load"));

        let workflow = Arc::new(Workflow {
            name: name.to_string(),
            hash: hash.clone(),
            instance_pre,
            script_load,
            imports,
            exports,
            compiled_from_cache,
            embedded_script,
            policy,
            seal,
            size: bytes.len(),
        });
        self.lock_loaded().insert(hash, Arc::clone(&workflow));
        Ok(workflow)
    }

    fn compile(
        &self,
        name: &str,
        bytes: &[u8],
        hash: &str,
    ) -> Result<(Component, bool), LoadError> {
        let cached = self
            .cache_dir
            .as_ref()
            .map(|dir| dir.join(format!("{hash}-{}.cwasm", self.engine_fingerprint())));
        if let Some(path) = &cached
            && path.exists()
            && let Some(component) = self.deserialize_cached(path)
        {
            return Ok((component, true));
        }
        let component = Component::new(&self.engine, bytes).map_err(|error| {
            let message = format!("{error:#}");
            // wasmtime checks the pool's per-component shape when it compiles a component.
            if message.contains("pooling allocator") {
                return LoadError::TooLarge {
                    name: name.to_string(),
                    message: format!(
                        "{message}. A workflow may create at most {} core instances \
                         (--max-core-instances, default {MAX_CORE_INSTANCES}), \
                         {MAX_MEMORIES_PER_COMPONENT} memories and {MAX_TABLES_PER_COMPONENT} \
                         tables: raise --max-core-instances, or build the workflow smaller",
                        self.max_core_instances
                    ),
                };
            }
            LoadError::Invalid {
                name: name.to_string(),
                message,
            }
        })?;
        if let Some(path) = cached {
            // The cache is an optimisation: failing to write it must not fail the run.
            let _ = write_cache(&path, &component);
        }
        Ok((component, false))
    }

    #[allow(unsafe_code)]
    fn deserialize_cached(&self, path: &Path) -> Option<Component> {
        // SAFETY: the file lives in Corral's private cache directory and was produced by
        // `Component::serialize` of an engine with the same compatibility fingerprint (it is part
        // of the file name); wasmtime additionally checks the header's version and settings.
        // A file that fails to load is ignored and recompiled.
        unsafe { Component::deserialize_file(&self.engine, path) }.ok()
    }

    fn engine_fingerprint(&self) -> String {
        let mut hasher = std::hash::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        format!("{:016x}", hasher.finish())
    }

    fn lock_loaded(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Workflow>>> {
        self.loaded.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// Why a workflow may not import `import`, in a few words for a list of imports (`None`: it
/// may). The load error carries the whole message of the first refused import.
pub fn import_refusal(import: &str) -> Option<String> {
    host::wasi::Refusal::of(import).map(|refusal| refusal.short())
}

fn check_component_header(name: &str, bytes: &[u8]) -> Result<(), LoadError> {
    let invalid = |message: &str| LoadError::Invalid {
        name: name.to_string(),
        message: message.to_string(),
    };
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(invalid(
            "the file does not start with the WebAssembly magic bytes",
        ));
    }
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(invalid(
            "it is a core WebAssembly module, not a component; build it for the wasm32-wasip2 target (or wrap it with `wasm-tools component new`)",
        ));
    }
    Ok(())
}

fn write_cache(path: &Path, component: &Component) -> std::io::Result<()> {
    let bytes = component
        .serialize()
        .map_err(|error| std::io::Error::other(format!("{error:#}")))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Write then rename, so a concurrent reader never sees half a file.
    let partial = path.with_extension(format!("{}.partial", std::process::id()));
    std::fs::write(&partial, bytes)?;
    std::fs::rename(&partial, path)
}

/// SHA-256 of `bytes`, hex.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
