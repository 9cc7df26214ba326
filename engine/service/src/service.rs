//! [`RunService`]: the one home of a run's lifecycle. Front ends (the CLI, the server) build a
//! [`RunSpec`] and call `plan`, `start`, `stop`, `resume`, `list`, `show`; the service resolves
//! the workflow by hash, opens the root, builds the provider from the parsed config, checks the
//! plan against the budget, records the run in the store, prices it, and sends the
//! run-started/run-finished events.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_host::config::{CorralConfig, ProviderKind};
use corral_host::events::{EventSink, RunEvent};
use corral_host::limits::{MAX_MEMORY_CEILING, MAX_SCHEMA_ATTEMPTS_CEILING};
use corral_host::provider::Provider;
use corral_host::provider::anthropic::AnthropicProvider;
use corral_host::provider::openai::OpenAiProvider;
use corral_host::provider::sim::SimProvider;
use corral_host::record::{ReplayPlan, ReusePolicy};
use corral_host::scheduler::CallJournal;
use corral_host::tools::ToolRoot;
use corral_host::{RunError, RunLimits, RunOptions, RunReport, Runtime, Script, Workflow};
use corral_store::{
    CallTranscript, NewRun, RunDetail, RunFilter, RunFinish, RunStatus, RunStore, RunSummary,
    StoreError, StoredWorkflow, WorkflowBody,
};
use tokio::sync::{broadcast, watch};

use crate::error::ServiceError;
use crate::plan::{Plan, PlanSink, price_of};
use crate::sha256_hex;
use crate::spec::{RootRef, RunSpec, ScriptRef, WorkflowRef};
use crate::tenancy::{Admission, RunSlot, Tenancy, Tenant};

mod changes;
mod policy;

/// A script runtime component the front end bundles (such as the JavaScript runtime). The
/// service knows it only by hash and by the file extensions and content types it runs.
#[derive(Debug, Clone)]
pub struct BundledRuntime {
    /// Its name, for messages.
    pub name: &'static str,
    /// The component.
    pub bytes: &'static [u8],
    /// SHA-256 of `bytes`, hex (checked when the front end is built).
    pub hash: &'static str,
    /// Script file extensions it runs (without the dot).
    pub extensions: &'static [&'static str],
    /// Upload content types it runs.
    pub content_types: &'static [&'static str],
}

/// What a service is made of; built by a front end.
pub struct ServiceConfig {
    /// The process's wasmtime runtime.
    pub runtime: Arc<Runtime>,
    /// Where runs are kept (`None`: nothing is recorded, runs cannot be listed or resumed).
    pub store: Option<Arc<dyn RunStore>>,
    /// The parsed `corral.toml`.
    pub config: CorralConfig,
    /// The provider environment (keys, base URLs), read by the front end.
    pub env: BTreeMap<String, String>,
    /// Bundled script runtimes.
    pub bundled: Vec<BundledRuntime>,
    /// Tenants, for a server (`None`: local runs only).
    pub tenancy: Option<Arc<Tenancy>>,
}

/// Which provider answers a run, for the front end to announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderInfo {
    /// Its name.
    pub name: String,
    /// Whether it is the simulated provider.
    pub simulated: bool,
    /// Its endpoint (`None` for the simulator).
    pub base_url: Option<String>,
    /// The model of calls that name none.
    pub default_model: String,
}

/// How to start a run.
#[derive(Default)]
pub struct StartOptions {
    /// Where the run's events go, besides the store.
    pub sinks: Vec<Arc<dyn EventSink>>,
    /// Run even when the plan's estimate exceeds the budget (the budget still stops it).
    pub force: bool,
    /// Do not record the run (it then cannot be listed, stopped from elsewhere or resumed).
    pub unrecorded: bool,
    /// Budgets and slots shared with other runs (tenant quotas, the server's slot pool).
    pub shared: corral_host::Shared,
}

/// A run that was started.
pub struct RunHandle {
    /// Its id in the store (`None` when unrecorded).
    pub id: Option<String>,
    /// Who answers it.
    pub provider: ProviderInfo,
    /// The plan it was checked against, when it has a budget.
    pub plan: Option<Plan>,
    /// The run it resumes.
    pub resumed_from: Option<String>,
    /// Its token budget.
    pub budget: Option<u64>,
    task: tokio::task::JoinHandle<RunOutcome>,
}

impl RunHandle {
    /// Waits for the run to end.
    pub async fn finish(self) -> RunOutcome {
        match self.task.await {
            Ok(outcome) => outcome,
            Err(error) => RunOutcome {
                id: self.id,
                report: not_run(
                    RunError::Host(format!("the run's task failed: {error}")),
                    self.budget,
                ),
                cost: 0.0,
            },
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// Its id.
    pub id: Option<String>,
    /// What the host reported.
    pub report: RunReport,
    /// What it cost, in dollars, at the configured prices.
    pub cost: f64,
}

/// Runs a process knows about, live: how to stop them and who listens to their events.
struct LiveRun {
    stop: watch::Sender<bool>,
    events: broadcast::Sender<(u64, Arc<str>)>,
    agents: Arc<corral_host::AgentStops>,
}

struct Inner {
    runtime: Arc<Runtime>,
    store: Option<Arc<dyn RunStore>>,
    config: CorralConfig,
    env: BTreeMap<String, String>,
    bundled: Vec<BundledRuntime>,
    tenancy: Option<Arc<Tenancy>>,
    live: Mutex<HashMap<String, LiveRun>>,
    stop_poller: std::sync::atomic::AtomicBool,
    changes: broadcast::Sender<RunChange>,
}

/// A run changed status: it was recorded (queued or running), admitted, or ended. The
/// dashboard's run list follows these (`GET /v1/events`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunChange {
    /// The run's tenant (`None`: a local run).
    pub tenant: Option<String>,
    /// The run.
    pub id: String,
    /// Its status now.
    pub status: RunStatus,
}

/// The run service. Cheap to clone; every clone is the same service.
#[derive(Clone)]
pub struct RunService {
    inner: Arc<Inner>,
}

/// How often a run checks the store for a stop request made by another process.
const STOP_POLL: Duration = Duration::from_millis(250);
/// Events a slow subscriber may fall behind before it reads the rest from the store.
const LIVE_EVENT_BUFFER: usize = 4096;

impl RunService {
    /// A service over `config`.
    pub fn new(config: ServiceConfig) -> Self {
        RunService {
            inner: Arc::new(Inner {
                runtime: config.runtime,
                store: config.store,
                config: config.config,
                env: config.env,
                bundled: config.bundled,
                tenancy: config.tenancy,
                live: Mutex::new(HashMap::new()),
                stop_poller: std::sync::atomic::AtomicBool::new(false),
                changes: broadcast::channel(LIVE_EVENT_BUFFER).0,
            }),
        }
    }

    /// The same service, hosting `tenancy`'s tenants (before any run starts).
    pub fn with_tenancy(self, tenancy: Arc<Tenancy>) -> Self {
        let inner = Arc::try_unwrap(self.inner)
            .unwrap_or_else(|_| panic!("with_tenancy is called before the service is shared"));
        RunService {
            inner: Arc::new(Inner {
                tenancy: Some(tenancy),
                ..inner
            }),
        }
    }

    /// The parsed configuration (prices, providers).
    pub fn config(&self) -> &CorralConfig {
        &self.inner.config
    }

    /// The wasmtime runtime.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.inner.runtime
    }

    /// The tenants, when this service hosts them.
    pub fn tenancy(&self) -> Result<&Arc<Tenancy>, ServiceError> {
        self.inner
            .tenancy
            .as_ref()
            .ok_or_else(|| ServiceError::Invalid("this service hosts no tenants".to_string()))
    }

    /// The tenant a spec names, with the checks of what it may use.
    fn tenant_of(&self, spec: &RunSpec) -> Result<Option<Arc<Tenant>>, ServiceError> {
        let Some(name) = &spec.tenant else {
            return Ok(None);
        };
        let tenant = self
            .tenancy()?
            .tenant(name)?
            .ok_or_else(|| ServiceError::Invalid(format!("no tenant named '{name}'")))?;
        let settings = &tenant.settings;
        let provider = spec
            .provider
            .as_deref()
            .unwrap_or_else(|| self.inner.config.default_provider());
        let allowed = settings
            .providers
            .clone()
            .unwrap_or_else(|| vec!["sim".to_string()]);
        if !allowed.iter().any(|p| p == provider) {
            return Err(ServiceError::Invalid(format!(
                "provider '{provider}' is not one tenant {name} may use; it may use: {}",
                allowed.join(", ")
            )));
        }
        if let (Some(models), Some(model)) = (&settings.models, &spec.model)
            && !models.contains(model)
        {
            return Err(ServiceError::Invalid(format!(
                "model '{model}' is not one tenant {name} may use; it may use: {}",
                models.join(", ")
            )));
        }
        Ok(Some(tenant))
    }

    /// The store, when runs are recorded.
    pub fn store(&self) -> Result<&Arc<dyn RunStore>, ServiceError> {
        self.inner.store.as_ref().ok_or(ServiceError::NoStore)
    }

    /// The bundled runtime that runs scripts with `extension`, if any.
    pub fn runtime_for_extension(&self, extension: &str) -> Option<&BundledRuntime> {
        self.inner
            .bundled
            .iter()
            .find(|runtime| runtime.extensions.contains(&extension))
    }

    /// The bundled runtime that runs uploads of `content_type`, if any.
    pub fn runtime_for_content_type(&self, content_type: &str) -> Option<&BundledRuntime> {
        self.inner
            .bundled
            .iter()
            .find(|runtime| runtime.content_types.contains(&content_type))
    }

    /// Loads a bundled runtime.
    pub fn load_bundled(&self, bundled: &BundledRuntime) -> Result<Arc<Workflow>, ServiceError> {
        Ok(self
            .inner
            .runtime
            .load_hashed(bundled.name, bundled.bytes, bundled.hash)?)
    }

    /// Checks a component (it loads, its imports are allowed), stores it for `tenant`, and
    /// returns its hash.
    pub fn register_component(
        &self,
        tenant: Option<&str>,
        name: &str,
        bytes: Vec<u8>,
    ) -> Result<Arc<Workflow>, ServiceError> {
        // Checked on the bytes, before they are compiled: a changed byte is a refusal, not a
        // compile error.
        let seal = match corral_host::artifact::signed::seal(&bytes) {
            Ok(seal) => seal,
            Err(error) => {
                // Not a component at all: loading refuses it in its own words.
                self.inner.runtime.load(name, &bytes)?;
                return Err(ServiceError::Invalid(format!(
                    "{name} is not a valid component: {error}"
                )));
            }
        };
        self.check_trusted(tenant, name, seal.as_ref())?;
        let workflow = self.inner.runtime.load(name, &bytes)?;
        let bundled = self
            .inner
            .bundled
            .iter()
            .any(|runtime| runtime.hash == workflow.hash());
        if let (Some(store), false) = (&self.inner.store, bundled) {
            store.put_workflow(&StoredWorkflow {
                hash: workflow.hash().to_string(),
                name: name.to_string(),
                tenant: tenant.map(str::to_string),
                body: WorkflowBody::Component(bytes),
                created_ms: corral_host::record::now_ms(),
            })?;
        }
        Ok(workflow)
    }

    /// Checks a script with its runtime's front end (meta, imports, syntax), stores it for
    /// `tenant`, and returns its hash (of the source).
    pub async fn register_script(
        &self,
        tenant: Option<&str>,
        script: &ScriptRef,
        runtime: &Arc<Workflow>,
    ) -> Result<String, ServiceError> {
        self.check_script(runtime, script).await?;
        let hash = sha256_hex(script.source.as_bytes());
        if let Some(store) = &self.inner.store {
            store.put_workflow(&StoredWorkflow {
                hash: hash.clone(),
                name: script.name.clone(),
                tenant: tenant.map(str::to_string),
                body: WorkflowBody::Script {
                    source: script.source.clone(),
                    runtime: runtime.hash().to_string(),
                },
                created_ms: corral_host::record::now_ms(),
            })?;
        }
        Ok(hash)
    }

    /// Runs a script runtime's front-end checks on `script` without running it.
    pub async fn check_script(
        &self,
        runtime: &Arc<Workflow>,
        script: &ScriptRef,
    ) -> Result<(), ServiceError> {
        let report = self
            .inner
            .runtime
            .run(
                runtime,
                RunOptions {
                    args_json: "null".to_string(),
                    root: None,
                    limits: RunLimits::default(),
                    provider: Arc::new(SimProvider::default()),
                    events: Arc::new(corral_host::events::NoEvents),
                    script: Some(Script {
                        name: script.name.clone(),
                        source: script.source.clone(),
                    }),
                    journal: None,
                    stop: None,
                    shared: Default::default(),
                    load_only: true,
                },
            )
            .await;
        match report.outcome {
            Ok(_) => Ok(()),
            Err(RunError::Script(message)) => Err(ServiceError::Script(message)),
            Err(other) => Err(ServiceError::Invalid(other.to_string())),
        }
    }

    /// The workflow `hash` of `tenant` (or a local one), as a run names it.
    pub fn stored_workflow(
        &self,
        tenant: Option<&str>,
        hash: &str,
    ) -> Result<WorkflowRef, ServiceError> {
        let unknown = || ServiceError::UnknownWorkflow(hash.to_string());
        let stored = self.store()?.workflow(tenant, hash)?.ok_or_else(unknown)?;
        Ok(match stored.body {
            WorkflowBody::Component(_) => WorkflowRef {
                name: stored.name,
                component: stored.hash,
                script: None,
            },
            WorkflowBody::Script { source, runtime } => WorkflowRef {
                name: stored.name.clone(),
                component: runtime,
                script: Some(ScriptRef {
                    name: stored.name,
                    source,
                }),
            },
        })
    }

    /// The compiled component `hash`: already loaded, bundled, or from the store.
    fn component(
        &self,
        tenant: Option<&str>,
        name: &str,
        hash: &str,
    ) -> Result<Arc<Workflow>, ServiceError> {
        if let Some(workflow) = self.inner.runtime.loaded(hash) {
            return Ok(workflow);
        }
        if let Some(bundled) = self.inner.bundled.iter().find(|b| b.hash == hash) {
            return self.load_bundled(bundled);
        }
        let store = self.store()?;
        match store.workflow(tenant, hash)? {
            Some(StoredWorkflow {
                body: WorkflowBody::Component(bytes),
                ..
            }) => Ok(self.inner.runtime.load(name, &bytes)?),
            _ => Err(ServiceError::UnknownWorkflow(hash.to_string())),
        }
    }

    /// Resolves everything a spec names, without running anything.
    fn prepare(&self, spec: &RunSpec) -> Result<Prepared, ServiceError> {
        let tenant = self.tenant_of(spec)?;
        validate_limits(&spec.limits)?;
        if let Some(tenant) = &tenant {
            // Here, not only where a front end takes the request: a resumed or recovered run
            // meets its tenant's settings as they are now.
            tenant.check_commands(&spec.limits.allow_run)?;
        }
        // No arguments stay none (the script's `args` is then undefined), unlike `null`.
        let args_json = if spec.args.trim().is_empty() {
            String::new()
        } else {
            serde_json::from_str::<serde_json::Value>(&spec.args)
                .map_err(|error| {
                    ServiceError::Invalid(format!(
                        "the run's arguments are not valid JSON ({error}): {}",
                        spec.args
                    ))
                })?
                .to_string()
        };
        let workflow = self.component(
            spec.tenant.as_deref(),
            &spec.workflow.name,
            &spec.workflow.component,
        )?;
        let script = spec.workflow.script.as_ref().map(|script| Script {
            name: script.name.clone(),
            source: script.source.clone(),
        });
        let root = match &spec.root {
            None => None,
            Some(RootRef::Path(dir)) => Some(
                ToolRoot::open(dir, spec.limits.tools.clone()).map_err(|error| {
                    ServiceError::Invalid(format!("cannot use the root {}: {error}", dir.display()))
                })?,
            ),
            Some(RootRef::Named(name)) => {
                let dir = tenant
                    .as_ref()
                    .and_then(|tenant| tenant.settings.roots.get(name))
                    .ok_or_else(|| {
                        let known: Vec<&str> = tenant
                            .iter()
                            .flat_map(|t| t.settings.roots.keys().map(String::as_str))
                            .collect();
                        ServiceError::Invalid(format!(
                            "unknown root '{name}': name one the operator configured for the tenant ({})",
                            if known.is_empty() { "it has none".to_string() } else { known.join(", ") }
                        ))
                    })?;
                // The operator's path stays the operator's: the message names the root only.
                Some(ToolRoot::open(dir, spec.limits.tools.clone()).map_err(|_| {
                    ServiceError::Invalid(format!(
                        "the root '{name}' cannot be opened on this server: ask the operator to check it"
                    ))
                })?)
            }
        };
        Ok(Prepared {
            workflow,
            script,
            root,
            args_json,
            tenant,
        })
    }

    /// The provider a spec names, built from the config and the front end's environment.
    pub fn provider(
        &self,
        spec: &RunSpec,
    ) -> Result<(Arc<dyn Provider>, ProviderInfo), ServiceError> {
        let config = &self.inner.config;
        let name = spec
            .provider
            .as_deref()
            .unwrap_or_else(|| config.default_provider());
        let env = |variable: &str| self.inner.env.get(variable).cloned();
        let settings = config.provider_settings(name, spec.model.as_deref(), &env)?;
        let provider: Arc<dyn Provider> = match settings.kind {
            ProviderKind::Sim => {
                let latency = Duration::from_millis(spec.sim_latency_ms.unwrap_or_default());
                let provider = Arc::new(SimProvider::new(latency));
                let info = ProviderInfo {
                    name: name.to_string(),
                    simulated: true,
                    base_url: None,
                    default_model: provider.resolve_model(None),
                };
                return Ok((provider, info));
            }
            ProviderKind::Anthropic => {
                Arc::new(AnthropicProvider::new(settings.clone()).map_err(|message| {
                    ServiceError::Provider {
                        name: name.to_string(),
                        message,
                    }
                })?)
            }
            ProviderKind::OpenAi => {
                Arc::new(OpenAiProvider::new(settings.clone()).map_err(|message| {
                    ServiceError::Provider {
                        name: name.to_string(),
                        message,
                    }
                })?)
            }
        };
        let info = ProviderInfo {
            name: name.to_string(),
            simulated: false,
            base_url: Some(settings.base_url.clone()),
            default_model: settings.resolve_model(None),
        };
        Ok((provider, info))
    }

    /// Dry-runs a spec on the simulated provider: agents, tokens and cost per phase. Costs are
    /// at the prices of the provider the run would use (the default real one for `sim`).
    pub async fn plan(&self, spec: &RunSpec) -> Result<Plan, ServiceError> {
        let spec = &self.bounded(spec.clone())?;
        let prepared = self.prepare(spec)?;
        let _slot = self.dry_run_slot(&prepared)?;
        self.plan_prepared(spec, &prepared).await
    }

    /// A run slot of the spec's tenant for a dry run, if it has a tenant: a plan costs the host
    /// what a run does, so it counts against the tenant's `runs` quota while it runs. It never
    /// queues: with no slot free now, it is refused.
    fn dry_run_slot(&self, prepared: &Prepared) -> Result<Option<RunSlot>, ServiceError> {
        let Some(tenant) = &prepared.tenant else {
            return Ok(None);
        };
        self.tenancy()?
            .admit_now(tenant)
            .map(Some)
            .map_err(ServiceError::Quota)
    }

    async fn plan_prepared(
        &self,
        spec: &RunSpec,
        prepared: &Prepared,
    ) -> Result<Plan, ServiceError> {
        let sink = Arc::new(PlanSink::default());
        let limits = RunLimits {
            budget_tokens: None,
            ..spec.limits.clone()
        };
        let report = self
            .inner
            .runtime
            .run(
                &prepared.workflow,
                RunOptions {
                    args_json: prepared.args_json.clone(),
                    root: prepared.root.clone(),
                    limits,
                    provider: Arc::new(SimProvider::default()),
                    events: sink.clone(),
                    script: prepared.script.clone(),
                    journal: None,
                    stop: None,
                    shared: Default::default(),
                    load_only: false,
                },
            )
            .await;
        let config = &self.inner.config;
        let name = spec
            .provider
            .clone()
            .unwrap_or_else(|| config.default_provider().to_string());
        let name = if name == "sim" {
            "anthropic".to_string()
        } else {
            name
        };
        // Pricing needs model ids, not credentials: stand in for a missing key.
        let env = |variable: &str| {
            self.inner
                .env
                .get(variable)
                .cloned()
                .or_else(|| variable.ends_with("_KEY").then(|| "plan".to_string()))
        };
        let settings = config
            .provider_settings(&name, spec.model.as_deref(), &env)
            .ok();
        let price = |model: &str, usage: &corral_host::provider::Usage| -> Option<f64> {
            let settings = settings.as_ref()?;
            let requested = (model != "default").then_some(model);
            let id = settings.resolve_model(requested);
            config.price(&id).map(|price| price.cost(usage))
        };
        let mut plan = sink.plan(
            report.agents.started,
            report.agents.usage.total(),
            name,
            &price,
            report.outcome.err().map(|error| error.to_string()),
        );
        plan.largest_request = report.largest_request_tokens;
        plan.max_concurrent = spec.limits.max_concurrent;
        plan.budget = spec.limits.budget_tokens;
        Ok(plan)
    }

    /// Starts a run: checks the plan against the budget (unless forced), records the run, and
    /// runs it on the current tokio runtime. Returns once it is under way.
    pub async fn start(
        &self,
        spec: RunSpec,
        options: StartOptions,
    ) -> Result<RunHandle, ServiceError> {
        self.launch(spec, options, None).await
    }

    async fn launch(
        &self,
        spec: RunSpec,
        options: StartOptions,
        resume: Option<Resumption>,
    ) -> Result<RunHandle, ServiceError> {
        let spec = self.bounded(spec)?;
        let prepared = self.prepare(&spec)?;
        let (provider, provider_info) = self.provider(&spec)?;
        // A tenant's budget check is a dry run: it runs in one of the tenant's run slots, taken
        // now and then kept by the run itself.
        let mut dry_run_slot = None;
        let plan = match spec.limits.budget_tokens {
            Some(budget) if resume.is_none() && !options.force => {
                dry_run_slot = self.dry_run_slot(&prepared)?;
                let plan = self.plan_prepared(&spec, &prepared).await?;
                if let Some(reason) = plan.unsound() {
                    return Err(ServiceError::Invalid(format!(
                        "cannot check the run against its budget: {reason}; fix the workflow, or \
                         start it without the check (--force, or \"force\": true)"
                    )));
                }
                if plan.tokens > budget {
                    return Err(ServiceError::OverBudget {
                        budget,
                        plan: Box::new(plan),
                    });
                }
                Some(plan)
            }
            _ => None,
        };
        let (admission, mut shared) = match &prepared.tenant {
            Some(tenant) => {
                let tenancy = self.tenancy()?;
                let admission = match dry_run_slot {
                    Some(slot) => Admission::Now(slot),
                    None => tenancy.admit(tenant).map_err(ServiceError::Quota)?,
                };
                (Some(admission), tenancy.shared(tenant)?)
            }
            None => (None, options.shared),
        };
        let status = match admission {
            Some(Admission::Queued(_)) => RunStatus::Queued,
            _ => RunStatus::Running,
        };
        let store = match (&self.inner.store, options.unrecorded) {
            (Some(store), false) => Some(Arc::clone(store)),
            _ => None,
        };
        let in_place = matches!(&resume, Some(r) if r.in_place.is_some());
        let (replay, same_id) = match resume {
            Some(resume) => (Some(resume.plan), resume.in_place),
            None => (None, None),
        };
        let (id, first_event) = match (&store, same_id) {
            (Some(store), Some(id)) => {
                store.set_status(&id, status)?;
                let last = store.last_event_seq(&id)?;
                (Some(id), last)
            }
            (Some(store), None) => {
                let new_run = NewRun {
                    workflow: spec.workflow.name.clone(),
                    workflow_hash: prepared.workflow.hash().to_string(),
                    script: spec.workflow.script.as_ref().map(|s| s.source.clone()),
                    args: prepared.args_json.clone(),
                    limits: serde_json::to_value(&spec.limits).unwrap_or_default(),
                    root: spec.root.as_ref().map(RootRef::display),
                    provider: provider_info.name.clone(),
                    resumed_from: spec.resumed_from.clone(),
                    tenant: spec.tenant.clone(),
                    spec: serde_json::to_string(&spec).unwrap_or_default(),
                    status,
                };
                // Waiting for the commit must not hold up the runtime's other tasks.
                let store = Arc::clone(store);
                let id = tokio::task::spawn_blocking(move || store.begin_run(new_run))
                    .await
                    .map_err(|error| {
                        ServiceError::Store(StoreError::WriterGone(error.to_string()))
                    })??;
                (Some(id), 0)
            }
            (None, _) => (None, 0),
        };

        let (stop_sender, stop_receiver) = watch::channel(false);
        let (live_events, _) = broadcast::channel(LIVE_EVENT_BUFFER);
        let agent_stops = Arc::new(corral_host::AgentStops::default());
        shared.agent_stops = Some(Arc::clone(&agent_stops));
        if let Some(id) = &id {
            self.lock_live().insert(
                id.clone(),
                LiveRun {
                    stop: stop_sender,
                    events: live_events.clone(),
                    agents: agent_stops,
                },
            );
            self.changed(&spec.tenant, id, status);
        }
        let cost = Arc::new(CostMeter::new(self.inner.config.clone()));
        let mut sinks = options.sinks;
        sinks.push(cost.clone());
        if let (Some(store), Some(id)) = (&store, &id) {
            sinks.push(Arc::new(StoreEvents {
                store: Arc::clone(store),
                run: id.clone(),
                seq: std::sync::atomic::AtomicU64::new(first_event),
                live: live_events,
            }));
        }
        let events: Arc<dyn EventSink> = Arc::new(Fanout(sinks));
        let journal = match (&store, &id) {
            (Some(store), Some(id)) => {
                let recorder = store.recorder(id);
                Some(CallJournal {
                    // Resumed in place, a replayed call keeps the row it already has.
                    recorder: if in_place {
                        Arc::new(KeepReplayed(recorder))
                    } else {
                        recorder
                    },
                    replay,
                })
            }
            _ => None,
        };
        let stops = id.as_ref().map(|_| stop_receiver);
        if let Some(store) = &store {
            self.start_stop_poller(store);
        }

        let service = self.clone();
        let run_id = id.clone();
        let workflow_name = spec.workflow.name.clone();
        let resumed_from = spec.resumed_from.clone();
        let budget = spec.limits.budget_tokens;
        let task = tokio::spawn(async move {
            let stop = |stops: &Option<watch::Receiver<bool>>| {
                stops.as_ref().map(|receiver| stop_signal(receiver.clone()))
            };
            events.event(&RunEvent::RunStarted {
                run_id: run_id.clone(),
                workflow: workflow_name,
                workflow_hash: prepared.workflow.hash().to_string(),
                resumed_from: spec.resumed_from.clone(),
            });
            // A queued run waits for its tenant's run slot (or a stop); it holds the slot to the end.
            let mut stopped_in_queue = false;
            let _run_slot = match admission {
                Some(Admission::Queued(ticket)) => {
                    let wait_stop = stop(&stops);
                    tokio::select! {
                        slot = ticket.admitted() => {
                            if let (Some(store), Some(id)) = (&store, &run_id) {
                                let _ = store.set_status(id, RunStatus::Running);
                                service.changed(&spec.tenant, id, RunStatus::Running);
                            }
                            Some(slot)
                        }
                        () = async move {
                            match wait_stop {
                                Some(signal) => signal.await,
                                None => std::future::pending().await,
                            }
                        } => {
                            stopped_in_queue = true;
                            None
                        }
                    }
                }
                Some(Admission::Now(slot)) => Some(slot),
                None => None,
            };
            let report = if stopped_in_queue {
                not_run(RunError::Stopped, budget)
            } else {
                service
                    .inner
                    .runtime
                    .run(
                        &prepared.workflow,
                        RunOptions {
                            args_json: prepared.args_json,
                            root: prepared.root,
                            limits: spec.limits.clone(),
                            provider,
                            events: Arc::clone(&events),
                            script: prepared.script,
                            journal,
                            stop: stop(&stops),
                            shared,
                            load_only: false,
                        },
                    )
                    .await
            };
            let cost = cost.total();
            if let (Some(store), Some(id)) = (&store, &run_id) {
                let (result, error) = match &report.outcome {
                    Ok(result) => (Some(result.clone()), None),
                    Err(error) => (None, Some(error.to_string())),
                };
                // The changeset first: a finished run's changes are there when it shows as
                // finished.
                if !report.changes.is_empty()
                    && let Err(error) =
                        store.put_changes(id, report.base_commit.as_deref(), &report.changes)
                {
                    events.event(&RunEvent::Log {
                        message: format!(
                            "corral: the run's staged changes could not be recorded: {error}"
                        ),
                    });
                }
                // The store is a record, not the run: failing to finish it must not fail it.
                let finished = store.finish_run(
                    id,
                    RunFinish {
                        status: final_status(&report.outcome),
                        result,
                        error,
                        agents: report.agents.started,
                        usage: report.agents.usage,
                        cost,
                    },
                );
                if let Err(error) = finished {
                    events.event(&RunEvent::Log {
                        message: format!("corral: the run's end could not be recorded: {error}"),
                    });
                }
            }
            events.event(&RunEvent::RunFinished {
                ok: report.outcome.is_ok(),
                error: report.outcome.as_ref().err().map(ToString::to_string),
                agents: report.agents.started,
                spent_tokens: report.spent_tokens,
                cost,
            });
            if let (Some(store), Some(id)) = (&store, &run_id) {
                let _ = store.flush();
                service.lock_live().remove(id);
                service.changed(&spec.tenant, id, final_status(&report.outcome));
            }
            RunOutcome {
                id: run_id,
                report,
                cost,
            }
        });
        Ok(RunHandle {
            id,
            provider: provider_info,
            plan,
            resumed_from,
            budget,
            task,
        })
    }

    /// Picks up the runs this store says are running or queued but whose process is gone (a
    /// restart after SIGTERM, a crash, `kill -9`): each resumes in place — the same id — with
    /// every completed call answered from the store, so nothing completed is paid again.
    pub async fn recover(&self) -> Result<Vec<RunHandle>, ServiceError> {
        let store = Arc::clone(self.store()?);
        let mut resumed = Vec::new();
        for run in store.unfinished_runs()? {
            if self.effective_status(&run) != RunStatus::Interrupted {
                continue;
            }
            let detail = store.run_detail(&run.id)?;
            let Some(spec) = detail
                .spec
                .as_deref()
                .and_then(|text| serde_json::from_str::<RunSpec>(text).ok())
            else {
                store.mark_abandoned(&run.id)?;
                continue;
            };
            // The unchanged prefix of keys: a call in flight at the stop runs again, every
            // completed one (before or after it) is answered from the store.
            let plan = ReplayPlan::new(store.recorded_calls(&run.id)?, ReusePolicy::Prefix);
            let options = StartOptions {
                force: true,
                ..StartOptions::default()
            };
            let resumption = Resumption {
                plan,
                in_place: Some(run.id.clone()),
            };
            match self.launch(spec, options, Some(resumption)).await {
                Ok(handle) => resumed.push(handle),
                Err(error) => {
                    let _ = store.finish_run(
                        &run.id,
                        RunFinish {
                            status: RunStatus::Failed,
                            result: None,
                            error: Some(format!("could not be resumed after a restart: {error}")),
                            agents: detail.calls.len() as u64,
                            usage: Default::default(),
                            cost: detail.summary.cost,
                        },
                    );
                }
            }
        }
        Ok(resumed)
    }

    /// Once per service: a task that asks the store, every [`STOP_POLL`], which of this
    /// process's runs another process asked to stop (`corral runs stop`), and stops them. One
    /// query for all runs, however many there are.
    fn start_stop_poller(&self, store: &Arc<dyn RunStore>) {
        if self
            .inner
            .stop_poller
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let inner = Arc::downgrade(&self.inner);
        let store = Arc::clone(store);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(STOP_POLL).await;
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                // Nothing runs here: nothing to stop, nothing to ask.
                if inner
                    .live
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_empty()
                {
                    continue;
                }
                let asking = Arc::clone(&store);
                let Ok(Ok((ids, calls))) = tokio::task::spawn_blocking(move || {
                    Ok::<_, StoreError>((asking.stop_requests()?, asking.agent_stop_requests()?))
                })
                .await
                else {
                    continue;
                };
                let live = inner.live.lock().unwrap_or_else(|p| p.into_inner());
                for id in ids {
                    if let Some(run) = live.get(&id) {
                        let _ = run.stop.send(true);
                    }
                }
                for (id, seq) in calls {
                    if let Some(run) = live.get(&id) {
                        run.agents.stop(seq);
                    }
                }
            }
        });
    }

    /// Asks run `id` to stop: at once when this process runs it, else through the store (the
    /// process running it checks a few times a second).
    pub fn stop(&self, scope: Option<&str>, id: &str) -> Result<StopAnswer, ServiceError> {
        let id = self.resolve(scope, id)?;
        if let Some(live) = self.lock_live().get(&id) {
            let _ = live.stop.send(true);
            return Ok(StopAnswer::Stopping(id));
        }
        let store = self.store()?;
        let summary = store.run_detail(&id)?.summary;
        match self.effective_status(&summary) {
            RunStatus::Running | RunStatus::Queued => {
                store.request_stop(&id)?;
                Ok(StopAnswer::Asked {
                    id,
                    pid: summary.pid,
                })
            }
            RunStatus::Interrupted => {
                store.mark_abandoned(&id)?;
                Err(ServiceError::Interrupted {
                    id,
                    pid: summary.pid,
                })
            }
            status => Err(ServiceError::NotRunning { id, status }),
        }
    }

    /// Stops call `seq` of run `id` (it resolves to `null` in a script): at once when this
    /// process runs it, else through the store.
    pub fn stop_agent(
        &self,
        scope: Option<&str>,
        id: &str,
        seq: u64,
    ) -> Result<StopAnswer, ServiceError> {
        let id = self.resolve(scope, id)?;
        let not_running = |id: String| {
            ServiceError::Invalid(format!(
                "agent #{seq} of run {id} is not queued or running (it finished, or the run has \
                 no such agent): see `corral runs show {id}`"
            ))
        };
        let local = self
            .lock_live()
            .get(&id)
            .map(|live| Arc::clone(&live.agents));
        if let Some(agents) = local {
            return if agents.stop(seq) {
                Ok(StopAnswer::Stopping(id))
            } else {
                Err(not_running(id))
            };
        }
        let store = self.store()?;
        let summary = store.run_detail(&id)?.summary;
        match self.effective_status(&summary) {
            RunStatus::Running | RunStatus::Queued => {
                if store.request_agent_stop(&id, seq)? {
                    Ok(StopAnswer::Asked {
                        id,
                        pid: summary.pid,
                    })
                } else {
                    Err(not_running(id))
                }
            }
            RunStatus::Interrupted => Err(ServiceError::Interrupted {
                id,
                pid: summary.pid,
            }),
            status => Err(ServiceError::NotRunning { id, status }),
        }
    }

    /// Runs a recorded run again from its stored spec, answering its completed calls from the
    /// store (nothing completed is paid again). A resumed run can itself be resumed.
    /// `script` replaces the recorded script's source (a fixed script resumes: the calls up to
    /// the first one it changes are answered from the store).
    pub async fn resume(
        &self,
        scope: Option<&str>,
        id: &str,
        reuse: ReusePolicy,
        script: Option<String>,
        options: StartOptions,
    ) -> Result<RunHandle, ServiceError> {
        let id = self.resolve(scope, id)?;
        let store = Arc::clone(self.store()?);
        let detail = store.run_detail(&id)?;
        match self.effective_status(&detail.summary) {
            RunStatus::Running | RunStatus::Queued => {
                return Err(ServiceError::StillRunning {
                    id,
                    pid: detail.summary.pid,
                });
            }
            RunStatus::Interrupted => store.mark_abandoned(&id)?,
            _ => {}
        }
        let spec_text = detail
            .spec
            .ok_or_else(|| ServiceError::NotResumable(id.clone()))?;
        let mut spec: RunSpec = serde_json::from_str(&spec_text).map_err(|error| {
            ServiceError::Store(StoreError::Corrupt(format!(
                "the spec of run {id}: {error}"
            )))
        })?;
        spec.resumed_from = Some(id.clone());
        if let Some(source) = script {
            let recorded = spec.workflow.script.as_mut().ok_or_else(|| {
                ServiceError::Invalid(format!(
                    "run {id} ran a component, not a script: there is no script to replace"
                ))
            })?;
            recorded.source = source;
        }
        let plan = ReplayPlan::new(store.recorded_calls(&id)?, reuse);
        let resumption = Resumption {
            plan,
            in_place: None,
        };
        self.launch(spec, options, Some(resumption)).await
    }

    /// A full id that `scope` may see (a tenant sees only its own runs; `None` sees all).
    /// Another tenant's run answers exactly like an unknown one.
    pub fn resolve(&self, scope: Option<&str>, id: &str) -> Result<String, ServiceError> {
        let store = self.store()?;
        let id = match scope {
            // Tenants name runs by full id only.
            Some(_) => id.to_string(),
            None => store.resolve_id(id)?,
        };
        if let Some(tenant) = scope {
            // One index lookup either way: another tenant's run costs what an unknown one does.
            let owner = store.run_owner(&id)?.flatten();
            if owner.as_deref() != Some(tenant) {
                return Err(ServiceError::UnknownRun(id));
            }
        }
        Ok(id)
    }

    /// Runs, newest first, with their effective status.
    pub fn list(&self, filter: &RunFilter) -> Result<Vec<RunSummary>, ServiceError> {
        let mut runs = self.store()?.list_runs(filter)?;
        for run in &mut runs {
            run.status = self.settled_status(run)?;
        }
        Ok(runs)
    }

    /// One run with its calls, with its effective status.
    pub fn show(&self, scope: Option<&str>, id: &str) -> Result<RunDetail, ServiceError> {
        let id = self.resolve(scope, id)?;
        let mut detail = self.store()?.run_detail(&id)?;
        let status = self.settled_status(&detail.summary)?;
        if status.is_final() && !detail.summary.status.is_final() {
            // It finished between the read and the check: read what it finished with.
            detail = self.store()?.run_detail(&id)?;
        }
        detail.summary.status = status;
        Ok(detail)
    }

    /// [`RunService::effective_status`] of a row read from the store, re-read once when this
    /// process finished the run between the read and the check (it leaves the live table only
    /// after its final status is stored).
    fn settled_status(&self, run: &RunSummary) -> Result<RunStatus, ServiceError> {
        let status = self.effective_status(run);
        if status == RunStatus::Interrupted && run.pid == i64::from(std::process::id()) {
            // The summary row alone: `list` may do this for many rows.
            if let Some(again) = self.store()?.run_summary(&run.id)? {
                return Ok(self.effective_status(&again));
            }
        }
        Ok(status)
    }

    /// One call's prompt, options and transcript.
    pub fn transcript(
        &self,
        scope: Option<&str>,
        id: &str,
        seq: u64,
    ) -> Result<Option<CallTranscript>, ServiceError> {
        let id = self.resolve(scope, id)?;
        Ok(self.store()?.call_transcript(&id, seq)?)
    }

    /// Every run status change from now on, of every tenant (filter by [`RunChange::tenant`]).
    /// A subscriber that falls more than [`LIVE_EVENT_BUFFER`] behind is told it lagged.
    pub fn run_changes(&self) -> broadcast::Receiver<RunChange> {
        self.inner.changes.subscribe()
    }

    fn changed(&self, tenant: &Option<String>, id: &str, status: RunStatus) {
        // Nobody listening is fine.
        let _ = self.inner.changes.send(RunChange {
            tenant: tenant.clone(),
            id: id.to_string(),
            status,
        });
    }

    /// The workflows `tenant` (or the local user, with `None`) stored, newest first.
    pub fn workflows(
        &self,
        tenant: Option<&str>,
        limit: usize,
    ) -> Result<Vec<corral_store::WorkflowListing>, ServiceError> {
        Ok(self.store()?.workflows(tenant, limit)?)
    }

    /// Events of run `id` after `after` that are already stored, and a receiver of the ones
    /// still to come (`None` once the run is over). Subscribe, then read: nothing falls between.
    pub fn events(
        &self,
        scope: Option<&str>,
        id: &str,
        after: u64,
    ) -> Result<EventFeed, ServiceError> {
        let id = self.resolve(scope, id)?;
        let live = self
            .lock_live()
            .get(&id)
            .map(|live| live.events.subscribe());
        let store = self.store()?;
        store.flush()?;
        let stored = store.events_after(&id, after, usize::MAX >> 1)?;
        Ok(EventFeed { id, stored, live })
    }

    /// Stored events of run `id` after `after` (for a subscriber that fell behind).
    pub fn stored_events(
        &self,
        id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, ServiceError> {
        let store = self.store()?;
        store.flush()?;
        Ok(store.events_after(id, after, limit)?)
    }

    /// The status a run really has: one marked running whose process is gone was interrupted.
    pub fn effective_status(&self, run: &RunSummary) -> RunStatus {
        let here = i64::from(std::process::id());
        let alive = if run.pid == here {
            self.lock_live().contains_key(&run.id)
        } else {
            process_alive(run.pid)
        };
        match run.status {
            RunStatus::Running | RunStatus::Queued if !alive => RunStatus::Interrupted,
            status => status,
        }
    }

    /// Starts no new agent call from now on (a server shutting down); calls in flight finish.
    pub fn drain(&self) {
        if let Some(tenancy) = &self.inner.tenancy {
            tenancy.pool().drain();
        }
    }

    /// Agent calls holding a slot of the shared pool now.
    pub fn agents_in_flight(&self) -> usize {
        self.inner
            .tenancy
            .as_ref()
            .map_or(0, |tenancy| tenancy.pool().in_use())
    }

    /// How many runs this process is running.
    pub fn live_runs(&self) -> usize {
        self.lock_live().len()
    }

    /// Whether this process is running `id`.
    pub fn is_live(&self, id: &str) -> bool {
        self.lock_live().contains_key(id)
    }

    fn lock_live(&self) -> std::sync::MutexGuard<'_, HashMap<String, LiveRun>> {
        self.inner.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What `stop` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopAnswer {
    /// This process runs it; it is stopping now.
    Stopping(String),
    /// Another process runs it; it was asked through the store.
    Asked {
        /// The run.
        id: String,
        /// The process running it.
        pid: i64,
    },
}

/// A run's events: what is stored, then what comes.
pub struct EventFeed {
    /// The run.
    pub id: String,
    /// Stored events after the requested one, as (seq, JSON text).
    pub stored: Vec<(u64, String)>,
    /// Events still to come, while the run is live in this process.
    pub live: Option<broadcast::Receiver<(u64, Arc<str>)>>,
}

/// How a run resumes another: the answers it may reuse, and whether it keeps the run's id.
struct Resumption {
    plan: ReplayPlan,
    in_place: Option<String>,
}

/// Resumed in place, a replayed call already has its row: record nothing for it.
struct KeepReplayed(Arc<dyn corral_host::record::CallRecorder>);

impl corral_host::record::CallRecorder for KeepReplayed {
    fn call_queued(
        &self,
        seq: u64,
        described: (String, String),
        request: &corral_host::agent_loop::AgentRequest,
        model: &str,
    ) {
        self.0.call_queued(seq, described, request, model);
    }

    fn call_finished(
        &self,
        seq: u64,
        outcome: &Result<corral_host::agent_loop::AgentOutput, corral_host::agent_loop::AgentError>,
        usage: &corral_host::provider::Usage,
        replayed: bool,
        started_ms: Option<i64>,
        transcript: Option<String>,
    ) {
        self.0
            .call_finished(seq, outcome, usage, replayed, started_ms, transcript);
    }

    fn call_replayed(
        &self,
        _seq: u64,
        _described: (String, String),
        _request: &corral_host::agent_loop::AgentRequest,
        _model: &str,
        _output: &corral_host::agent_loop::AgentOutput,
    ) {
    }
}

/// The report of a run that never ran.
fn not_run(error: RunError, budget: Option<u64>) -> RunReport {
    RunReport {
        outcome: Err(error),
        agents: Default::default(),
        spent_tokens: 0,
        budget_tokens: budget,
        largest_request_tokens: 0,
        wall: Duration::ZERO,
        guest_cpu: Duration::ZERO,
        tool_time: Duration::ZERO,
        instantiate: Duration::ZERO,
        changes: Vec::new(),
        base_commit: None,
    }
}

struct Prepared {
    workflow: Arc<Workflow>,
    script: Option<Script>,
    root: Option<ToolRoot>,
    args_json: String,
    tenant: Option<Arc<Tenant>>,
}

fn validate_limits(limits: &RunLimits) -> Result<(), ServiceError> {
    corral_host::tools::WriteGrant::parse(&limits.allow_write).map_err(ServiceError::Invalid)?;
    if let Some(bad) = limits
        .allow_run
        .iter()
        .find(|command| command.is_empty() || command.contains(['/', '\0']))
    {
        return Err(ServiceError::Invalid(format!(
            "--allow-run names {bad:?}, which is not a command name: list names found on PATH, \
             such as node or python3"
        )));
    }
    if limits.max_concurrent == 0 {
        return Err(ServiceError::Invalid(
            "max_concurrent (--max-concurrent) must be at least 1".to_string(),
        ));
    }
    if limits.max_memory > MAX_MEMORY_CEILING {
        return Err(ServiceError::Invalid(format!(
            "max_memory (--max-memory) {} is over the ceiling of {MAX_MEMORY_CEILING} bytes",
            limits.max_memory
        )));
    }
    if !(1..=MAX_SCHEMA_ATTEMPTS_CEILING).contains(&limits.schema_attempts) {
        return Err(ServiceError::Invalid(format!(
            "schema_attempts (--schema-attempts) {} is outside 1..={MAX_SCHEMA_ATTEMPTS_CEILING}",
            limits.schema_attempts
        )));
    }
    if limits.timeout.is_zero() || limits.max_cpu.is_zero() {
        return Err(ServiceError::Invalid(
            "timeout and max_cpu (--timeout, --max-cpu) must be greater than zero".to_string(),
        ));
    }
    Ok(())
}

fn final_status(outcome: &Result<String, RunError>) -> RunStatus {
    match outcome {
        Ok(_) => RunStatus::Succeeded,
        Err(RunError::Stopped) => RunStatus::Stopped,
        Err(RunError::Paused(_)) => RunStatus::Paused,
        Err(_) => RunStatus::Failed,
    }
}

fn process_alive(pid: i64) -> bool {
    pid > 0 && std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Resolves once the run's stop watch says stop: asked in this process, or by another one
/// through the store (the service's stop poller forwards those).
fn stop_signal(mut local: watch::Receiver<bool>) -> corral_host::StopSignal {
    Box::pin(async move {
        // A closed channel means the service is gone: never stop for that.
        while local.changed().await.is_ok() {
            if *local.borrow() {
                return;
            }
        }
        std::future::pending::<()>().await;
    })
}

/// Sends every event to several sinks.
pub struct Fanout(pub Vec<Arc<dyn EventSink>>);

impl EventSink for Fanout {
    fn event(&self, event: &RunEvent) {
        for sink in &self.0 {
            sink.event(event);
        }
    }
}

/// Records a run's events in the store (numbered from 1) and hands them to live subscribers.
struct StoreEvents {
    store: Arc<dyn RunStore>,
    run: String,
    seq: std::sync::atomic::AtomicU64,
    live: broadcast::Sender<(u64, Arc<str>)>,
}

impl EventSink for StoreEvents {
    fn event(&self, event: &RunEvent) {
        match event {
            RunEvent::Phase { title } => self.store.phase(&self.run, title),
            RunEvent::Log { message } => self.store.log(&self.run, message),
            _ => {}
        }
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let json = event.to_json().to_string();
        // Nobody listening is fine.
        let _ = self.live.send((seq, Arc::from(json.as_str())));
        self.store.event(&self.run, seq, json);
    }
}

/// Prices every answered call by the model that answered (replayed answers cost nothing).
struct CostMeter {
    config: CorralConfig,
    total: Mutex<f64>,
}

impl CostMeter {
    fn new(config: CorralConfig) -> Self {
        CostMeter {
            config,
            total: Mutex::new(0.0),
        }
    }

    fn total(&self) -> f64 {
        *self.total.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl EventSink for CostMeter {
    fn event(&self, event: &RunEvent) {
        if let RunEvent::AgentFinished {
            usage,
            model,
            replayed: false,
            ..
        } = event
        {
            *self.total.lock().unwrap_or_else(|p| p.into_inner()) +=
                price_of(&self.config, model, usage);
        }
    }
}
