//! `corral serve`, `corral tenants`, `corral tokens`: the server and its tenants.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use corral_host::config::CorralConfig;
use corral_host::record::now_ms;
use corral_service::tenancy::{Quota, Tenancy, TenantSettings, add_tenant, new_token};
use corral_store::{RunStore, format_time};

use super::run::{Dur, ServiceArgs, Size, data_dir, open_journal, service};

fn server_defaults() -> corral_server::ServerOptions {
    corral_server::ServerOptions::default()
}

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free one; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[command(flatten)]
    service: ServiceArgs,
    /// Agent calls in flight at once across all tenants (the shared slot pool).
    #[arg(long, default_value_t = 64)]
    max_agents_in_flight: usize,
    /// The largest request body (an uploaded component included).
    #[arg(long, default_value_t = Size(server_defaults().max_body_bytes))]
    max_body_bytes: Size,
    /// How long in-flight provider requests may finish after SIGTERM or SIGINT.
    #[arg(long, default_value_t = Dur(server_defaults().shutdown_grace))]
    shutdown_grace: Dur,
    /// Runs that may be instantiated at once in this process.
    #[arg(long, default_value_t = 1024)]
    max_live_runs: u32,
}

pub fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let dir = data_dir(&args.service)?;
    let store = open_journal(&dir)?;
    let config = CorralConfig::discover(args.service.config.as_deref())?;
    let tenancy = Tenancy::new(&config, Arc::clone(&store), args.max_agents_in_flight)
        .map_err(anyhow::Error::msg)?;
    let service =
        service(&args.service, Some(store), args.max_live_runs)?.with_tenancy(Arc::new(tenancy));
    let tokio = super::tokio()?;
    tokio.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let address = listener.local_addr()?;
        let resumed = service.recover().await?;
        if !resumed.is_empty() {
            eprintln!(
                "corral: resumed {} interrupted run(s) from the journal",
                resumed.len()
            );
        }
        eprintln!(
            "corral: serving on http://{address} (journal {})",
            dir.join("journal.db").display()
        );
        let options = corral_server::ServerOptions {
            max_body_bytes: args.max_body_bytes.0,
            shutdown_grace: args.shutdown_grace.0,
            ..corral_server::ServerOptions::default()
        };
        corral_server::serve(service, listener, options, shutdown_signal()).await?;
        eprintln!("corral: stopped; unfinished runs resume at the next start");
        Ok(ExitCode::SUCCESS)
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the server runs until killed.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    eprintln!("corral: shutting down: no new requests; in-flight calls get the grace period");
}

#[derive(Subcommand)]
pub enum TenantsCommand {
    /// Add a tenant (or change one's quotas, roots and providers).
    Add(TenantAddArgs),
    /// The tenants, from corral.toml and the journal.
    List(TenantListArgs),
}

fn quota_defaults() -> Quota {
    Quota::default()
}

#[derive(Args)]
pub struct TenantAddArgs {
    /// The tenant's name (a-z, 0-9, '-', '_').
    name: String,
    #[command(flatten)]
    service: ServiceArgs,
    /// Runs running at once.
    #[arg(long, default_value_t = quota_defaults().runs)]
    runs: u64,
    /// Runs waiting to start.
    #[arg(long, default_value_t = quota_defaults().queued_runs)]
    queued_runs: u64,
    /// Agent calls in flight across all its runs.
    #[arg(long, default_value_t = quota_defaults().agents_in_flight)]
    agents_in_flight: u64,
    /// Agents per run.
    #[arg(long, default_value_t = quota_defaults().agents_per_run)]
    agents_per_run: u64,
    /// Tokens per run.
    #[arg(long, default_value_t = quota_defaults().budget_per_run)]
    budget_per_run: u64,
    /// Tokens per UTC day.
    #[arg(long, default_value_t = quota_defaults().tokens_per_day)]
    tokens_per_day: u64,
    /// Tokens per UTC month.
    #[arg(long, default_value_t = quota_defaults().tokens_per_month)]
    tokens_per_month: u64,
    /// Share of the server's slot pool.
    #[arg(long, default_value_t = quota_defaults().weight)]
    weight: u32,
    /// A root its runs may name: NAME=DIR (repeatable).
    #[arg(long = "root", value_name = "NAME=DIR")]
    roots: Vec<String>,
    /// A provider its runs may use (repeatable; default: only sim).
    #[arg(long = "provider", value_name = "NAME")]
    providers: Vec<String>,
}

#[derive(Args)]
pub struct TenantListArgs {
    #[command(flatten)]
    service: ServiceArgs,
}

fn store(args: &ServiceArgs) -> anyhow::Result<Arc<dyn RunStore>> {
    open_journal(&data_dir(args)?)
}

pub fn tenants(command: TenantsCommand) -> anyhow::Result<ExitCode> {
    match command {
        TenantsCommand::Add(args) => {
            let mut roots = std::collections::BTreeMap::new();
            for root in &args.roots {
                let Some((name, dir)) = root.split_once('=') else {
                    bail!("--root {root}: write it as NAME=DIR");
                };
                let dir = PathBuf::from(dir);
                if !dir.is_dir() {
                    bail!("--root {root}: {} is not a directory", dir.display());
                }
                roots.insert(name.to_string(), std::path::absolute(dir)?);
            }
            let settings = TenantSettings {
                quota: Quota {
                    runs: args.runs,
                    queued_runs: args.queued_runs,
                    agents_in_flight: args.agents_in_flight,
                    agents_per_run: args.agents_per_run,
                    budget_per_run: args.budget_per_run,
                    tokens_per_day: args.tokens_per_day,
                    tokens_per_month: args.tokens_per_month,
                    weight: args.weight,
                },
                roots,
                providers: (!args.providers.is_empty()).then(|| args.providers.clone()),
                ..TenantSettings::default()
            };
            add_tenant(store(&args.service)?.as_ref(), &args.name, &settings)
                .map_err(anyhow::Error::msg)?;
            eprintln!(
                "corral: tenant {} added; give it a token with `corral tokens create {}`",
                args.name, args.name
            );
            Ok(ExitCode::SUCCESS)
        }
        TenantsCommand::List(args) => {
            let store = store(&args.service)?;
            let config = CorralConfig::discover(args.service.config.as_deref())?;
            let tenancy =
                Tenancy::new(&config, Arc::clone(&store), 1).map_err(anyhow::Error::msg)?;
            out!(
                "{:<20} {:>5} {:>7} {:>7} {:>12} {:>14}  roots",
                "tenant",
                "runs",
                "queued",
                "agents",
                "tokens/day",
                "tokens/month"
            );
            for name in tenancy.names()? {
                let Some(tenant) = tenancy.tenant(&name)? else {
                    continue;
                };
                let quota = tenant.quota();
                let roots: Vec<&str> = tenant.settings.roots.keys().map(String::as_str).collect();
                out!(
                    "{:<20} {:>5} {:>7} {:>7} {:>12} {:>14}  {}",
                    name,
                    quota.runs,
                    quota.queued_runs,
                    quota.agents_in_flight,
                    quota.tokens_per_day,
                    quota.tokens_per_month,
                    roots.join(", ")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(Subcommand)]
pub enum TokensCommand {
    /// Create an API token for a tenant (printed once; only its hash is kept).
    Create(TokenCreateArgs),
    /// The tokens (ids, tenants, state; never the secrets).
    List(TenantListArgs),
    /// Revoke a token by id.
    Revoke(TokenRevokeArgs),
}

#[derive(Args)]
pub struct TokenCreateArgs {
    /// The tenant.
    tenant: String,
    #[command(flatten)]
    service: ServiceArgs,
    /// The token may only read (list, show, events, usage).
    #[arg(long)]
    read_only: bool,
    /// It expires after this long, e.g. 30d is written 720h.
    #[arg(long)]
    expires: Option<Dur>,
}

#[derive(Args)]
pub struct TokenRevokeArgs {
    /// The token's id (from `corral tokens list`).
    id: String,
    #[command(flatten)]
    service: ServiceArgs,
}

pub fn tokens(command: TokensCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokensCommand::Create(args) => {
            let store = store(&args.service)?;
            let config = CorralConfig::discover(args.service.config.as_deref())?;
            let tenancy =
                Tenancy::new(&config, Arc::clone(&store), 1).map_err(anyhow::Error::msg)?;
            if tenancy.tenant(&args.tenant)?.is_none() {
                bail!(
                    "no tenant named '{}': add it first with `corral tenants add {}`",
                    args.tenant,
                    args.tenant
                );
            }
            let expires = args
                .expires
                .map(|d| now_ms().saturating_add(d.0.as_millis() as i64));
            let (row, secret) = new_token(&args.tenant, args.read_only, expires)?;
            store.put_token(&row)?;
            eprintln!(
                "corral: token {} for tenant {}{}{} (shown once: keep it now)",
                row.id,
                args.tenant,
                if args.read_only { ", read-only" } else { "" },
                expires.map_or(String::new(), |at| format!(
                    ", expires {} UTC",
                    format_time(at)
                ))
            );
            out!("{secret}");
            Ok(ExitCode::SUCCESS)
        }
        TokensCommand::List(args) => {
            let store = store(&args.service)?;
            out!(
                "{:<14} {:<20} {:<10} {:<8} {:<20}",
                "id",
                "tenant",
                "access",
                "state",
                "expires (UTC)"
            );
            for token in store.tokens()? {
                let state = if token.revoked {
                    "revoked"
                } else if token.expires_ms.is_some_and(|at| at <= now_ms()) {
                    "expired"
                } else {
                    "active"
                };
                out!(
                    "{:<14} {:<20} {:<10} {:<8} {:<20}",
                    token.id,
                    token.tenant,
                    if token.read_only {
                        "read-only"
                    } else {
                        "read-write"
                    },
                    state,
                    token.expires_ms.map_or("-".to_string(), format_time)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        TokensCommand::Revoke(args) => {
            let store = store(&args.service)?;
            if !store.revoke_token(&args.id)? {
                bail!("no token with id '{}' (see `corral tokens list`)", args.id);
            }
            eprintln!("corral: token {} revoked", args.id);
            Ok(ExitCode::SUCCESS)
        }
    }
}
