//! Tenants: who may call the server (API tokens), what each may use (roots, providers, models)
//! and how much (quotas), enforced on the host.
//!
//! A tenant is declared in `corral.toml` (`[tenants.NAME]`, for declarative setups) or added with
//! `corral tenants add` (kept in the store); the file wins where both name one. Quotas:
//!
//! | quota | what it bounds | over it |
//! |---|---|---|
//! | `runs` | runs running at once | the run queues |
//! | `queued_runs` | runs waiting to start | 429 |
//! | `agents_in_flight` | agent calls in flight across all its runs | the call waits |
//! | `agents_per_run` | agents of one run (the run's `max_agents` default and ceiling) | 429 |
//! | `budget_per_run` | tokens of one run (the run's budget default and ceiling) | 429 |
//! | `tokens_per_day`, `tokens_per_month` | tokens across all its runs, per UTC day / month | 429, or `budget-exhausted` for a call |
//! | `weight` | its share of the server's slot pool | — |
//!
//! The token quotas are ledgers shared by all the tenant's runs, reserve-then-settle like a run's
//! budget, so racing runs never overshoot them. They start from what the store says the tenant
//! used in the current day and month.
//!
//! Grants a run asks for in its limits meet the tenant's settings too: `allow_write` only stages
//! (the root changes when a writer applies the run), so any tenant may ask for it; `allow_run`
//! names commands, and each must be in the tenant's `commands` (none by default).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use corral_host::budget::BudgetLedger;
use corral_host::config::CorralConfig;
use corral_host::record::now_ms;
use corral_host::scheduler::{SharedSlot, SlotGate};
use corral_store::{RunStore, StoreError, TenantRow, TokenRow};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore};

use crate::pool::FairPool;
use crate::sha256_hex;

/// A tenant's quotas. Every field has a default; the defaults are the ones documented.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Quota {
    /// Runs running at once.
    pub runs: u64,
    /// Runs waiting for a free run slot.
    pub queued_runs: u64,
    /// Agent calls in flight across all the tenant's runs.
    pub agents_in_flight: u64,
    /// Agents per run.
    pub agents_per_run: u64,
    /// Tokens per run.
    pub budget_per_run: u64,
    /// Tokens per UTC day, across runs.
    pub tokens_per_day: u64,
    /// Tokens per UTC calendar month, across runs.
    pub tokens_per_month: u64,
    /// Share of the server's slot pool, relative to other tenants.
    pub weight: u32,
}

impl Default for Quota {
    fn default() -> Self {
        Quota {
            runs: 4,
            queued_runs: 100,
            agents_in_flight: 16,
            agents_per_run: 1000,
            budget_per_run: 2_000_000,
            tokens_per_day: 5_000_000,
            tokens_per_month: 100_000_000,
            weight: 1,
        }
    }
}

/// A token declared in the config file (its hash: the secret itself never is).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigToken {
    /// SHA-256 (hex) of the token.
    pub sha256: String,
    /// Whether it may only read.
    #[serde(default)]
    pub read_only: bool,
}

/// What a tenant may use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantSettings {
    /// Its quotas.
    pub quota: Quota,
    /// Roots by name → directories on this machine (a run names a root by name only).
    pub roots: BTreeMap<String, PathBuf>,
    /// Providers its runs may use (default: only `sim`).
    pub providers: Option<Vec<String>>,
    /// Models its runs may name (default: any the provider knows).
    pub models: Option<Vec<String>>,
    /// Tokens declared in the config file.
    pub tokens: Vec<ConfigToken>,
    /// Public keys (minisign's base64 key line) whose signatures it trusts; when any is set,
    /// the tenant's workflows must be signed by one of them (see "Signed workflows").
    pub trusted_keys: Vec<String>,
    /// Commands its runs may be granted (`allow_run`), matched exactly by name; none by
    /// default, so a run that asks for any is refused. Each runs in the jail.
    pub commands: Vec<String>,
}

impl TenantSettings {
    /// Checks what the settings say beyond their types: every `commands` entry is a command
    /// name, as `allow_run` takes it (a path could never match one).
    pub fn validate(&self) -> Result<(), String> {
        match self
            .commands
            .iter()
            .find(|command| command.is_empty() || command.contains(['/', '\0']))
        {
            Some(bad) => Err(format!(
                "commands names {bad:?}, which is not a command name: list names found on PATH, \
                 such as node or python3"
            )),
            None => Ok(()),
        }
    }

    /// Checks a run's `allow_run` against `commands`: every command must be listed.
    pub fn check_commands(
        &self,
        tenant: &str,
        allow_run: &[String],
    ) -> Result<(), CommandsRefused> {
        let mut refused: Vec<String> = Vec::new();
        for command in allow_run {
            if !self.commands.contains(command) && !refused.contains(command) {
                refused.push(command.clone());
            }
        }
        if refused.is_empty() {
            return Ok(());
        }
        Err(CommandsRefused {
            tenant: tenant.to_string(),
            refused,
            allowed: self.commands.clone(),
        })
    }
}

/// A run asks for commands (`allow_run`) that its tenant's `commands` setting does not list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "allow_run asks for {}, which tenant {tenant} may not run: its `commands` setting allows {}; \
     leave {} out of allow_run, or have the operator add {} to `commands` in [tenants.{tenant}] \
     of corral.toml",
    refused.join(", "),
    if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") },
    if refused.len() == 1 { "it" } else { "them" },
    if refused.len() == 1 { "it" } else { "them" }
)]
pub struct CommandsRefused {
    /// The tenant.
    pub tenant: String,
    /// The commands asked for and not allowed, in the order asked.
    pub refused: Vec<String>,
    /// What the tenant's `commands` allows.
    pub allowed: Vec<String>,
}

/// A tenant quota that a request would exceed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("quota {quota} of tenant {tenant} is used up: {used} of {limit}{}", frees.as_ref().map(|f| format!("; {f}")).unwrap_or_default())]
pub struct QuotaExceeded {
    /// The tenant.
    pub tenant: String,
    /// The quota's name (as in `corral.toml`).
    pub quota: &'static str,
    /// What is in use (or asked for).
    pub used: u64,
    /// The quota.
    pub limit: u64,
    /// When it frees, in words.
    pub frees: Option<String>,
}

/// Why a request could not be authenticated (always answered 401, with the reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error(
        "missing bearer token: send `Authorization: Bearer TOKEN` (create one with `corral tokens create TENANT`)"
    )]
    Missing,
    /// The token is not known.
    #[error("invalid token")]
    Invalid,
    /// The token expired.
    #[error("the token expired: create a new one with `corral tokens create`")]
    Expired,
    /// The token was revoked.
    #[error("the token was revoked")]
    Revoked,
}

/// Who is calling.
#[derive(Clone)]
pub struct Caller {
    /// The tenant.
    pub tenant: Arc<Tenant>,
    /// Whether the token may only read.
    pub read_only: bool,
}

/// One tenant's settings and live counters.
pub struct Tenant {
    /// Its name.
    pub name: String,
    /// What it may use.
    pub settings: TenantSettings,
    runs: Mutex<RunCounts>,
    /// Freed run slots wake queued runs.
    run_freed: Notify,
    agents: Arc<Semaphore>,
    day: Mutex<Window>,
    month: Mutex<Window>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct RunCounts {
    running: u64,
    queued: u64,
}

/// A token ledger for one calendar window.
struct Window {
    key: i64,
    ledger: Arc<BudgetLedger>,
}

/// The tenant's counts, for `/v1/usage` and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Quota name → (in use, limit).
    pub quotas: BTreeMap<&'static str, UsageLine>,
}

/// One quota's use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsageLine {
    /// In use.
    pub used: u64,
    /// The quota.
    pub limit: u64,
}

const DAY_MS: i64 = 86_400_000;

/// A run is refused (429) when fewer tokens than this remain of its tenant's day or month — or
/// fewer than the smallest request that quota already refused: its calls could only fail.
pub const MIN_ADMISSION_TOKENS: u64 = 1024;

/// The first UTC day (since the epoch) of `day`'s calendar month.
fn month_start(day: i64) -> i64 {
    // `YYYY-MM-DD…`: step back by the day of the month.
    let date = corral_store::format_time(day * DAY_MS);
    let day_of_month: i64 = date[8..10].parse().unwrap_or(1);
    day - (day_of_month - 1)
}

/// Which token quota a ledger is.
#[derive(Clone, Copy)]
enum Period {
    Day,
    Month,
}

impl Period {
    fn quota(self) -> &'static str {
        match self {
            Period::Day => "tokens_per_day",
            Period::Month => "tokens_per_month",
        }
    }

    fn frees(self) -> &'static str {
        match self {
            Period::Day => "it frees at 00:00 UTC",
            Period::Month => "it frees on the 1st of next month, 00:00 UTC",
        }
    }

    /// The first day of the period containing `today`.
    fn first_day(self, today: i64) -> i64 {
        match self {
            Period::Day => today,
            Period::Month => month_start(today),
        }
    }
}

impl Tenant {
    fn new(
        name: String,
        settings: TenantSettings,
        store: &dyn RunStore,
    ) -> Result<Self, StoreError> {
        let today = now_ms().div_euclid(DAY_MS);
        let quota = &settings.quota;
        let day = window(store, &name, Period::Day, today, quota.tokens_per_day)?;
        let month = window(store, &name, Period::Month, today, quota.tokens_per_month)?;
        Ok(Tenant {
            agents: Arc::new(Semaphore::new(quota.agents_in_flight.max(1) as usize)),
            name,
            settings,
            runs: Mutex::new(RunCounts::default()),
            run_freed: Notify::new(),
            day: Mutex::new(day),
            month: Mutex::new(month),
        })
    }

    /// The tenant's quotas.
    pub fn quota(&self) -> &Quota {
        &self.settings.quota
    }

    /// Checks a run's `allow_run` against the tenant's `commands`.
    pub fn check_commands(&self, allow_run: &[String]) -> Result<(), CommandsRefused> {
        self.settings.check_commands(&self.name, allow_run)
    }

    /// The day and month ledgers in force now (rolled over at UTC midnight / month start).
    fn ledgers(&self, store: &dyn RunStore) -> Result<Vec<Arc<BudgetLedger>>, StoreError> {
        let today = now_ms().div_euclid(DAY_MS);
        let quota = &self.settings.quota;
        let mut ledgers = Vec::with_capacity(2);
        for (slot, period, limit) in [
            (&self.day, Period::Day, quota.tokens_per_day),
            (&self.month, Period::Month, quota.tokens_per_month),
        ] {
            let mut current = slot.lock().unwrap_or_else(|p| p.into_inner());
            if current.key != period.first_day(today) {
                *current = window(store, &self.name, period, today, limit)?;
            }
            ledgers.push(Arc::clone(&current.ledger));
        }
        Ok(ledgers)
    }

    /// What the tenant uses against each quota.
    pub fn usage(&self, store: &dyn RunStore) -> Result<Usage, StoreError> {
        let quota = &self.settings.quota;
        let counts = *self.runs.lock().unwrap_or_else(|p| p.into_inner());
        let ledgers = self.ledgers(store)?;
        let used = |ledger: &BudgetLedger| ledger.spent() + ledger.reserved();
        let in_flight = quota.agents_in_flight.max(1) - self.agents.available_permits() as u64;
        let line = |used: u64, limit: u64| UsageLine { used, limit };
        Ok(Usage {
            quotas: BTreeMap::from([
                ("runs", line(counts.running, quota.runs)),
                ("queued_runs", line(counts.queued, quota.queued_runs)),
                ("agents_in_flight", line(in_flight, quota.agents_in_flight)),
                ("agents_per_run", line(0, quota.agents_per_run)),
                ("budget_per_run", line(0, quota.budget_per_run)),
                (
                    "tokens_per_day",
                    line(used(&ledgers[0]), quota.tokens_per_day),
                ),
                (
                    "tokens_per_month",
                    line(used(&ledgers[1]), quota.tokens_per_month),
                ),
            ]),
        })
    }

    fn exceeded(
        &self,
        quota: &'static str,
        used: u64,
        limit: u64,
        frees: Option<&str>,
    ) -> QuotaExceeded {
        QuotaExceeded {
            tenant: self.name.clone(),
            quota,
            used,
            limit,
            frees: frees.map(str::to_string),
        }
    }
}

fn window(
    store: &dyn RunStore,
    tenant: &str,
    period: Period,
    today: i64,
    limit: u64,
) -> Result<Window, StoreError> {
    let first = period.first_day(today);
    let spent = store.tenant_tokens_since(tenant, first * DAY_MS)?;
    Ok(Window {
        key: first,
        ledger: BudgetLedger::shared(
            limit,
            spent,
            format!(
                "tenant {tenant}'s {} quota ({})",
                period.quota(),
                period.frees()
            ),
        ),
    })
}

/// The server's tenants, their tokens and the shared slot pool.
pub struct Tenancy {
    store: Arc<dyn RunStore>,
    declared: BTreeMap<String, TenantSettings>,
    tenants: Mutex<BTreeMap<String, Arc<Tenant>>>,
    pool: Arc<FairPool>,
}

/// A run's place among its tenant's running runs; frees the place when dropped.
pub struct RunSlot {
    tenant: Arc<Tenant>,
}

impl Drop for RunSlot {
    fn drop(&mut self) {
        let mut counts = self.tenant.runs.lock().unwrap_or_else(|p| p.into_inner());
        counts.running = counts.running.saturating_sub(1);
        drop(counts);
        self.tenant.run_freed.notify_waiters();
    }
}

/// A run waiting for a place; leaves the queue when dropped.
pub struct QueueTicket {
    tenant: Arc<Tenant>,
    waiting: bool,
}

impl Drop for QueueTicket {
    fn drop(&mut self) {
        if self.waiting {
            let mut counts = self.tenant.runs.lock().unwrap_or_else(|p| p.into_inner());
            counts.queued = counts.queued.saturating_sub(1);
        }
    }
}

impl QueueTicket {
    /// Waits until the tenant may run one more run, and takes the place.
    pub async fn admitted(mut self) -> RunSlot {
        loop {
            // Registered before the check, so a slot freed in between still wakes us.
            let freed = self.tenant.run_freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut counts = self.tenant.runs.lock().unwrap_or_else(|p| p.into_inner());
                if counts.running < self.tenant.settings.quota.runs {
                    counts.running += 1;
                    counts.queued = counts.queued.saturating_sub(1);
                    self.waiting = false;
                    return RunSlot {
                        tenant: Arc::clone(&self.tenant),
                    };
                }
            }
            freed.await;
        }
    }
}

/// How a run was admitted.
pub enum Admission {
    /// It may start now.
    Now(RunSlot),
    /// It waits for a place.
    Queued(QueueTicket),
}

/// A tenant's agent slot: its own `agents_in_flight` permit and one of the server's pool.
struct TenantGate {
    tenant: Arc<Tenant>,
    pool: Arc<FairPool>,
}

impl SlotGate for TenantGate {
    fn acquire(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = SharedSlot> + Send>> {
        let agents = Arc::clone(&self.tenant.agents);
        let pool = Arc::clone(&self.pool);
        let name = self.tenant.name.clone();
        let weight = self.tenant.settings.quota.weight;
        Box::pin(async move {
            let permit = agents.acquire_owned().await.ok();
            let slot = pool.acquire(&name, weight).await;
            Box::new((permit, slot)) as SharedSlot
        })
    }
}

impl Tenancy {
    /// The tenants of `config` and of `store`, sharing a pool of `slots` agent slots.
    pub fn new(
        config: &CorralConfig,
        store: Arc<dyn RunStore>,
        slots: usize,
    ) -> Result<Self, String> {
        let mut declared = BTreeMap::new();
        for (name, table) in &config.tenants {
            let settings: TenantSettings = toml::Value::Table(table.clone())
                .try_into()
                .map_err(|error| format!("corral.toml: [tenants.{name}]: {error}"))?;
            validate_name(name)?;
            settings
                .validate()
                .map_err(|error| format!("corral.toml: [tenants.{name}]: {error}"))?;
            declared.insert(name.clone(), settings);
        }
        Ok(Tenancy {
            store,
            declared,
            tenants: Mutex::new(BTreeMap::new()),
            pool: FairPool::new(slots),
        })
    }

    /// The shared slot pool.
    pub fn pool(&self) -> &Arc<FairPool> {
        &self.pool
    }

    /// The tenant `name`, from the config or the store.
    pub fn tenant(&self, name: &str) -> Result<Option<Arc<Tenant>>, StoreError> {
        if let Some(tenant) = self.lock().get(name) {
            return Ok(Some(Arc::clone(tenant)));
        }
        let settings = match self.declared.get(name) {
            Some(settings) => settings.clone(),
            None => {
                let Some(row) = self.store.tenants()?.into_iter().find(|t| t.name == name) else {
                    return Ok(None);
                };
                serde_json::from_str(&row.quota).map_err(|error| {
                    StoreError::Corrupt(format!("the settings of tenant {name}: {error}"))
                })?
            }
        };
        let tenant = Arc::new(Tenant::new(
            name.to_string(),
            settings,
            self.store.as_ref(),
        )?);
        let mut tenants = self.lock();
        Ok(Some(Arc::clone(
            tenants.entry(name.to_string()).or_insert(tenant),
        )))
    }

    /// Every tenant name, declared or stored.
    pub fn names(&self) -> Result<Vec<String>, StoreError> {
        let mut names: Vec<String> = self.declared.keys().cloned().collect();
        for row in self.store.tenants()? {
            if !names.contains(&row.name) {
                names.push(row.name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Who a bearer token belongs to.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Caller, AuthError> {
        let token = token.ok_or(AuthError::Missing)?;
        let hash = sha256_hex(token.as_bytes());
        for (name, settings) in &self.declared {
            if let Some(declared) = settings.tokens.iter().find(|t| t.sha256 == hash) {
                let tenant = self.tenant(name).ok().flatten().ok_or(AuthError::Invalid)?;
                return Ok(Caller {
                    tenant,
                    read_only: declared.read_only,
                });
            }
        }
        let row = self
            .store
            .token_by_hash(&hash)
            .ok()
            .flatten()
            .ok_or(AuthError::Invalid)?;
        if row.revoked {
            return Err(AuthError::Revoked);
        }
        if row.expires_ms.is_some_and(|at| at <= now_ms()) {
            return Err(AuthError::Expired);
        }
        let tenant = self
            .tenant(&row.tenant)
            .ok()
            .flatten()
            .ok_or(AuthError::Invalid)?;
        Ok(Caller {
            tenant,
            read_only: row.read_only,
        })
    }

    /// Checks a run's asks against the tenant's per-run quotas, filling in the defaults.
    pub fn fit_run(
        &self,
        tenant: &Tenant,
        max_agents: Option<u64>,
        budget: Option<u64>,
    ) -> Result<(u64, u64), QuotaExceeded> {
        let quota = &tenant.settings.quota;
        let agents = max_agents.unwrap_or(quota.agents_per_run);
        if agents > quota.agents_per_run {
            return Err(tenant.exceeded(
                "agents_per_run",
                agents,
                quota.agents_per_run,
                Some("ask for fewer agents per run"),
            ));
        }
        let budget = budget.unwrap_or(quota.budget_per_run);
        if budget > quota.budget_per_run {
            return Err(tenant.exceeded(
                "budget_per_run",
                budget,
                quota.budget_per_run,
                Some("ask for a smaller budget"),
            ));
        }
        Ok((agents, budget))
    }

    /// Admits a run: a place now, a place in the queue, or 429 when the queue is full or the
    /// day's or month's tokens are used up.
    pub fn admit(&self, tenant: &Arc<Tenant>) -> Result<Admission, QuotaExceeded> {
        let ledgers = tenant
            .ledgers(self.store.as_ref())
            .map_err(|error| tenant.exceeded("tokens_per_day", 0, 0, Some(&error.to_string())))?;
        for (ledger, period) in ledgers.iter().zip([Period::Day, Period::Month]) {
            let (quota, frees) = (period.quota(), period.frees());
            let total = ledger.total().unwrap_or(u64::MAX);
            // What is spent, not what is reserved: reservations in flight settle to less.
            let left = total.saturating_sub(ledger.spent());
            let no_call_fits = ledger.smallest_refused().is_some_and(|need| left < need);
            if left < MIN_ADMISSION_TOKENS.min(total) || no_call_fits {
                return Err(tenant.exceeded(quota, ledger.spent(), total, Some(frees)));
            }
        }
        let quota = &tenant.settings.quota;
        let mut counts = tenant.runs.lock().unwrap_or_else(|p| p.into_inner());
        if counts.running < quota.runs && counts.queued == 0 {
            counts.running += 1;
            return Ok(Admission::Now(RunSlot {
                tenant: Arc::clone(tenant),
            }));
        }
        if counts.queued >= quota.queued_runs {
            return Err(tenant.exceeded(
                "queued_runs",
                counts.queued,
                quota.queued_runs,
                Some("it frees when one of the tenant's runs finishes"),
            ));
        }
        counts.queued += 1;
        Ok(Admission::Queued(QueueTicket {
            tenant: Arc::clone(tenant),
            waiting: true,
        }))
    }

    /// Like [`Tenancy::admit`], but refuses instead of queueing: for dry runs (plans and
    /// budget checks), which answer a request that is waiting for them.
    pub fn admit_now(&self, tenant: &Arc<Tenant>) -> Result<RunSlot, QuotaExceeded> {
        match self.admit(tenant)? {
            Admission::Now(slot) => Ok(slot),
            Admission::Queued(ticket) => {
                drop(ticket);
                let quota = tenant.settings.quota.runs;
                Err(tenant.exceeded(
                    "runs",
                    quota,
                    quota,
                    Some(
                        "a dry run (a plan, or a budget check) needs a free run slot now: retry \
                         when one of the tenant's runs finishes, or start without the check",
                    ),
                ))
            }
        }
    }

    /// What a run of `tenant` shares with other runs: the day and month token ledgers, its
    /// agents-in-flight quota and the server's slot pool.
    pub fn shared(&self, tenant: &Arc<Tenant>) -> Result<corral_host::Shared, StoreError> {
        Ok(corral_host::Shared {
            budgets: tenant.ledgers(self.store.as_ref())?,
            slots: Some(Arc::new(TenantGate {
                tenant: Arc::clone(tenant),
                pool: Arc::clone(&self.pool),
            })),
            agent_stops: None,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Tenant>>> {
        self.tenants.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A tenant name: 1–64 of `a-z 0-9 - _`.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid tenant name '{name}': use 1 to 64 of a-z, 0-9, '-' and '_'"
        ))
    }
}

/// Adds (or updates) a tenant in the store.
pub fn add_tenant(
    store: &dyn RunStore,
    name: &str,
    settings: &TenantSettings,
) -> Result<(), String> {
    validate_name(name)?;
    settings.validate()?;
    let quota = serde_json::to_string(settings).map_err(|e| e.to_string())?;
    store
        .put_tenant(&TenantRow {
            name: name.to_string(),
            quota,
            created_ms: now_ms(),
        })
        .map_err(|e| e.to_string())
}

/// A new API token: (the row to store, the secret to print once).
pub fn new_token(
    tenant: &str,
    read_only: bool,
    expires_ms: Option<i64>,
) -> std::io::Result<(TokenRow, String)> {
    let id = random_hex(6)?;
    let secret = format!("crl_{id}_{}", random_hex(24)?);
    let row = TokenRow {
        id,
        tenant: tenant.to_string(),
        hash: sha256_hex(secret.as_bytes()),
        read_only,
        expires_ms,
        revoked: false,
        created_ms: now_ms(),
    };
    Ok((row, secret))
}

fn random_hex(bytes: usize) -> std::io::Result<String> {
    use std::io::Read;
    let mut buffer = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buffer)?;
    Ok(buffer.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_start_on_the_first() {
        // 2026-12-01 is day 20788 since the epoch; 2026-11-30 is in November.
        assert_eq!(month_start(20_788 + 15), 20_788);
        assert_eq!(month_start(20_788), 20_788);
        assert_eq!(month_start(20_787), 20_787 - 29);
    }

    #[test]
    fn tenant_settings_reject_unknown_fields_and_default_the_rest() {
        let settings: TenantSettings =
            toml::from_str("[quota]\nruns = 2\n[roots]\nrepo = \"/srv/repo\"").unwrap();
        assert_eq!(settings.quota.runs, 2);
        assert_eq!(settings.quota.queued_runs, Quota::default().queued_runs);
        assert_eq!(settings.roots["repo"], PathBuf::from("/srv/repo"));
        let error = toml::from_str::<TenantSettings>("[quota]\nrun = 2").unwrap_err();
        assert!(error.to_string().contains("unknown field `run`"), "{error}");
    }

    #[test]
    fn commands_are_none_by_default_and_each_asked_for_must_be_listed() {
        let none = TenantSettings::default();
        assert_eq!(none.check_commands("acme", &[]), Ok(()));
        let refused = none
            .check_commands("acme", &["sh".to_string()])
            .unwrap_err();
        assert_eq!(refused.refused, ["sh"]);
        let message = refused.to_string();
        for part in [
            "allow_run asks for sh",
            "`commands` setting allows none",
            "[tenants.acme]",
        ] {
            assert!(message.contains(part), "{part}: {message}");
        }

        let some: TenantSettings = toml::from_str("commands = [\"node\", \"npm\"]").unwrap();
        assert_eq!(some.check_commands("acme", &["node".to_string()]), Ok(()));
        let ask = ["node", "sh", "bash", "sh"].map(String::from);
        let refused = some.check_commands("acme", &ask).unwrap_err();
        assert_eq!(refused.refused, ["sh", "bash"]);
        assert!(
            refused
                .to_string()
                .contains("allows node, npm; leave them out"),
            "{refused}"
        );
        // Exact names: neither a prefix nor a path matches.
        for near in ["nod", "node2", "/usr/bin/node"] {
            assert!(
                some.check_commands("acme", &[near.to_string()]).is_err(),
                "{near}"
            );
        }
    }

    #[test]
    fn commands_must_be_names() {
        let path: TenantSettings = toml::from_str("commands = [\"/usr/bin/node\"]").unwrap();
        let error = path.validate().unwrap_err();
        assert!(error.contains("\"/usr/bin/node\""), "{error}");
        let empty: TenantSettings = toml::from_str("commands = [\"\"]").unwrap();
        assert!(empty.validate().is_err());
        let fine: TenantSettings = toml::from_str("commands = [\"python3\"]").unwrap();
        assert_eq!(fine.validate(), Ok(()));
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("acme-1").is_ok());
        for bad in ["", "Acme", "a b", "../x", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }
}
