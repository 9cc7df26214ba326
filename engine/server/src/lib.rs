//! `corral serve`: the multi-tenant HTTP API over the run service (axum, on the tokio runtime that
//! runs the runs). A thin front end: every request authenticates a tenant, turns its body into a
//! [`RunSpec`] or a query, asks the [`RunService`], and renders the answer. The store, quotas,
//! fair sharing and recovery all live in the service.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequestParts, MatchedPath, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use corral_host::RunLimits;
use corral_host::record::ReusePolicy;
use corral_service::tenancy::{AuthError, Caller};
use corral_service::{RootRef, RunService, RunSpec, ScriptRef, StartOptions, WorkflowRef};
use corral_store::{RunFilter, RunStatus};
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use tokio::net::TcpListener;

mod dashboard;
mod error;
mod metrics;
mod views;

pub use error::ApiError;
use metrics::Metrics;

/// The OpenAPI document of `/v1`, served at `/v1/openapi.json` (a test keeps it true).
pub const OPENAPI: &str = include_str!("openapi.json");

/// Every route the server has, as (method, path); the OpenAPI document names exactly these.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/v1/openapi.json"),
    ("GET", "/v1/events"),
    ("PUT", "/v1/workflows"),
    ("GET", "/v1/workflows"),
    ("GET", "/v1/workflows/{hash}"),
    ("POST", "/v1/runs"),
    ("GET", "/v1/runs"),
    ("GET", "/v1/runs/{id}"),
    ("GET", "/v1/runs/{id}/agents"),
    ("GET", "/v1/runs/{id}/agents/{n}"),
    ("GET", "/v1/runs/{id}/result"),
    ("GET", "/v1/runs/{id}/events"),
    ("GET", "/v1/runs/{id}/diff"),
    ("POST", "/v1/runs/{id}/apply"),
    ("POST", "/v1/runs/{id}/stop"),
    ("POST", "/v1/runs/{id}/agents/{n}/stop"),
    ("POST", "/v1/runs/{id}/resume"),
    ("GET", "/v1/usage"),
];

/// How the server behaves; each limit has a `corral serve` flag of the same name.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// `--max-body-bytes`: the largest request body (an uploaded component included).
    pub max_body_bytes: usize,
    /// `--shutdown-grace`: how long in-flight provider requests may finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// `--max-page`: the most runs one `GET /v1/runs` lists.
    pub max_page: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_body_bytes: 64 << 20,
            shutdown_grace: Duration::from_secs(10),
            max_page: 500,
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    service: RunService,
    options: Arc<ServerOptions>,
    metrics: Arc<Metrics>,
    draining: Arc<AtomicBool>,
    /// Held while a run's changes are applied: an apply checks every file's base, then writes,
    /// so two applies racing over one file would each pass the check and the second overwrite
    /// the first without a conflict.
    applying: Arc<tokio::sync::Mutex<()>>,
}

/// The API's routes over `service`.
pub fn router(service: RunService, options: ServerOptions) -> (Router, Arc<AtomicBool>) {
    let draining = Arc::new(AtomicBool::new(false));
    let state = AppState {
        service,
        options: Arc::new(options.clone()),
        metrics: Arc::new(Metrics::default()),
        draining: Arc::clone(&draining),
        applying: Arc::default(),
    };
    let router = Router::new()
        .merge(dashboard::routes())
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/events", get(run_changes))
        .route("/v1/workflows", put(upload_workflow).get(list_workflows))
        .route("/v1/workflows/{hash}", get(get_workflow))
        .route("/v1/runs", post(submit_run).get(list_runs))
        .route("/v1/runs/{id}", get(get_run))
        .route("/v1/runs/{id}/agents", get(list_agents))
        .route("/v1/runs/{id}/agents/{n}", get(get_agent))
        .route("/v1/runs/{id}/result", get(get_result))
        .route("/v1/runs/{id}/events", get(run_events))
        .route("/v1/runs/{id}/diff", get(get_diff))
        .route("/v1/runs/{id}/apply", post(apply_changes))
        .route("/v1/runs/{id}/stop", post(stop_run))
        .route("/v1/runs/{id}/agents/{n}/stop", post(stop_agent))
        .route("/v1/runs/{id}/resume", post(resume_run))
        .route("/v1/usage", get(usage))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), track))
        .fallback(not_found)
        // Bodies are read (and limited, with a JSON 413) by `body`.
        .layer(DefaultBodyLimit::disable())
        .with_state(state);
    (router, draining)
}

/// Serves the API on `listener` until `shutdown` resolves; then stops accepting, lets in-flight
/// runs work for the grace period (every call that completes is journaled), flushes the store and
/// returns. Runs still going stay recorded as running; the next start resumes them.
pub async fn serve(
    service: RunService,
    listener: TcpListener,
    options: ServerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = options.shutdown_grace;
    let (router, draining) = router(service.clone(), options);
    let stop_accepting = Arc::new(tokio::sync::Notify::new());
    let stopped = Arc::clone(&stop_accepting);
    let server = tokio::spawn(
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { stopped.notified().await })
            .into_future(),
    );
    tokio::select! {
        () = shutdown => {}
        // The server failing (it does not, short of the runtime going away) ends the process too.
        result = server => return result.map_err(std::io::Error::other)?,
    }
    draining.store(true, Ordering::SeqCst);
    stop_accepting.notify_one();
    service.drain();
    let deadline = Instant::now() + grace;
    while service.agents_in_flight() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if let Ok(store) = service.store() {
        let _ = store.flush();
    }
    Ok(())
}

/// Authenticates `Authorization: Bearer TOKEN`.
struct Auth(Caller);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim);
        let tenancy = state.service.tenancy()?;
        tenancy.authenticate(token).map(Auth).map_err(|error| {
            let hint = match error {
                AuthError::Missing | AuthError::Invalid => {
                    "create a token with `corral tokens create TENANT`"
                }
                AuthError::Expired | AuthError::Revoked => "ask the operator for a new token",
            };
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", error.to_string()).hint(hint)
        })
    }
}

impl Auth {
    fn tenant(&self) -> &str {
        &self.0.tenant.name
    }

    /// Refuses a read-only token.
    fn writer(&self) -> Result<&str, ApiError> {
        if self.0.read_only {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "read_only",
                "this token is read-only: it cannot upload, submit, stop, resume or apply",
            )
            .hint("use a token created without --read-only"));
        }
        Ok(self.tenant())
    }
}

async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().to_string();
    let began = Instant::now();
    let response = next.run(request).await;
    state
        .metrics
        .observe(&method, &route, response.status().as_u16(), began.elapsed());
    response
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        .hint("see /v1/openapi.json for the API")
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.draining.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    match state.service.store().and_then(|store| Ok(store.flush()?)) {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n")).into_response(),
    }
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    match metrics::render(&state.service, &state.metrics) {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// How much of an oversized body is still read (and dropped) so that the client, which is still
/// sending, gets the 413 instead of a reset connection.
const DRAIN_BYTES: usize = 64 << 20;

/// Reads a request body of at most `limit` bytes.
async fn body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    use futures_util::StreamExt;
    let mut stream = body.into_data_stream();
    let (mut bytes, mut seen) = (Vec::new(), 0usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|error| {
            ApiError::bad_request("bad_body", format!("cannot read the request body: {error}"))
        })?;
        seen = seen.saturating_add(chunk.len());
        if seen > limit.saturating_add(DRAIN_BYTES) {
            break;
        }
        if seen <= limit {
            bytes.extend_from_slice(&chunk);
        }
    }
    if seen > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is over the server's limit of {limit} bytes"),
        )
        .hint("send less, or ask the operator to raise `corral serve --max-body-bytes`"));
    }
    Ok(Bytes::from(bytes))
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| {
            value
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default()
}

/// [`json_body`], or the default when the body is empty (an optional request body).
fn optional_json_body<T: serde::de::DeserializeOwned + Default>(
    headers: &HeaderMap,
    bytes: &[u8],
) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return Ok(T::default());
    }
    json_body(headers, bytes)
}

fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    bytes: &[u8],
) -> Result<T, ApiError> {
    let kind = content_type(headers);
    if kind != "application/json" {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("the body must be JSON, not '{kind}'"),
        )
        .hint("send Content-Type: application/json"));
    }
    serde_json::from_slice(bytes).map_err(|error| {
        ApiError::bad_request(
            "invalid_json",
            format!("the body is not a valid request: {error}"),
        )
        .hint("see /v1/openapi.json for the fields")
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadQuery {
    name: Option<String>,
}

async fn upload_workflow(
    State(state): State<AppState>,
    auth: Auth,
    query: Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    raw: Body,
) -> Result<Response, ApiError> {
    let tenant = auth.writer()?.to_string();
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let bytes = body(raw, state.options.max_body_bytes).await?;
    let kind = content_type(&headers);
    let service = &state.service;
    let (hash, name, what) = if kind == "application/wasm" {
        let name = query.name.unwrap_or_else(|| "workflow.wasm".to_string());
        let workflow = service.register_component(Some(&tenant), &name, bytes.to_vec())?;
        (workflow.hash().to_string(), name, "component")
    } else if let Some(bundled) = service.runtime_for_content_type(&kind).cloned() {
        let source = String::from_utf8(bytes.to_vec()).map_err(|_| {
            ApiError::bad_request("invalid_script", "the script is not valid UTF-8")
        })?;
        let name = query
            .name
            .unwrap_or_else(|| format!("workflow.{}", bundled.extensions[0]));
        let runtime = service.load_bundled(&bundled)?;
        let script = ScriptRef {
            name: name.clone(),
            source,
        };
        let hash = service
            .register_script(Some(&tenant), &script, &runtime)
            .await?;
        (hash, name, "script")
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("cannot take a workflow of type '{kind}'"),
        )
        .hint("send a component as application/wasm or a script as application/javascript"));
    };
    Ok((
        StatusCode::CREATED,
        Json(json!({"hash": hash, "name": name, "kind": what})),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkflowsQuery {
    limit: Option<usize>,
}

async fn list_workflows(
    State(state): State<AppState>,
    auth: Auth,
    query: Result<Query<WorkflowsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let limit = query.limit.unwrap_or(100).clamp(1, state.options.max_page);
    let workflows = state.service.workflows(Some(auth.tenant()), limit)?;
    Ok(Json(json!({
        "workflows": workflows.iter().map(views::workflow).collect::<Vec<_>>(),
    })))
}

async fn get_workflow(
    State(state): State<AppState>,
    auth: Auth,
    Path(hash): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let workflow = state.service.stored_workflow(Some(auth.tenant()), &hash)?;
    Ok(Json(json!({
        "hash": hash,
        "name": workflow.name,
        "kind": if workflow.script.is_some() { "script" } else { "component" },
        "runtime": workflow.script.as_ref().map(|_| &workflow.component),
    })))
}

/// `POST /v1/runs`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunRequest {
    /// The hash of an uploaded workflow.
    workflow: Option<String>,
    /// Or a script, inline.
    script: Option<String>,
    /// The script's file name (for messages).
    script_name: Option<String>,
    /// `None` when absent; `"args": null` is `Some(Value::Null)`.
    #[serde(default, deserialize_with = "present")]
    args: Option<Value>,
    root: Option<String>,
    #[serde(default)]
    limits: Option<serde_json::Map<String, Value>>,
    provider: Option<String>,
    model: Option<String>,
    budget_tokens: Option<u64>,
    sim_latency_ms: Option<u64>,
    #[serde(default)]
    force: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubmitQuery {
    #[serde(default)]
    plan: bool,
}

/// The most a run may ask for, whatever its tenant's quotas: a request past these is absurd.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
const MAX_CONCURRENT: usize = 1024;

async fn submit_run(
    State(state): State<AppState>,
    auth: Auth,
    query: Result<Query<SubmitQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    raw: Body,
) -> Result<Response, ApiError> {
    let tenant_name = auth.writer()?.to_string();
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let bytes = body(raw, state.options.max_body_bytes).await?;
    let request: RunRequest = json_body(&headers, &bytes)?;
    let service = &state.service;
    let workflow = match (&request.workflow, &request.script) {
        (Some(hash), None) => service.stored_workflow(Some(&tenant_name), hash)?,
        (None, Some(source)) => {
            let bundled = service
                .runtime_for_extension("js")
                .cloned()
                .ok_or_else(|| ApiError::bad_request("invalid", "this server runs no scripts"))?;
            let runtime = service.load_bundled(&bundled)?;
            let script = ScriptRef {
                name: request
                    .script_name
                    .clone()
                    .unwrap_or_else(|| "script.js".to_string()),
                source: source.clone(),
            };
            service.check_script(&runtime, &script).await?;
            WorkflowRef {
                name: script.name.clone(),
                component: runtime.hash().to_string(),
                script: Some(script),
            }
        }
        _ => {
            return Err(ApiError::bad_request(
                "invalid",
                "name exactly one of `workflow` (an uploaded workflow's hash) and `script` (a script's source)",
            ));
        }
    };
    let explicit_agents = request
        .limits
        .as_ref()
        .and_then(|l| l.get("max_agents"))
        .and_then(Value::as_u64);
    let mut limits: RunLimits = match &request.limits {
        Some(map) => serde_json::from_value(Value::Object(map.clone())).map_err(|error| {
            ApiError::bad_request("invalid_limits", format!("limits: {error}")).hint(
                "limits take the names of RunLimits, durations in ms (timeout_ms, max_cpu_ms)",
            )
        })?,
        None => RunLimits::default(),
    };
    if limits.timeout > MAX_TIMEOUT || limits.max_concurrent > MAX_CONCURRENT {
        return Err(ApiError::bad_request(
            "invalid_limits",
            format!(
                "limits out of range: timeout_ms at most {}, max_concurrent at most {MAX_CONCURRENT}",
                MAX_TIMEOUT.as_millis()
            ),
        ));
    }
    // A tenant may lower the limits that protect the host, never raise them.
    let above = limits.above(&RunLimits::default());
    if !above.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_limits",
            format!(
                "limits above what this server grants a run: {}",
                above.join(", ")
            ),
        )
        .hint("leave these limits out to get the server's values, or lower them"));
    }
    // `allow_write` only stages: the root changes when a writer applies the run. Commands run
    // only when the operator allowed them for the tenant.
    auth.0
        .tenant
        .check_commands(&limits.allow_run)
        .map_err(corral_service::ServiceError::from)?;
    let tenancy = service.tenancy()?;
    let (max_agents, budget) = tenancy
        .fit_run(&auth.0.tenant, explicit_agents, request.budget_tokens)
        .map_err(corral_service::ServiceError::Quota)?;
    limits.max_agents = max_agents;
    limits.budget_tokens = Some(budget);
    limits.max_concurrent = limits
        .max_concurrent
        .min(auth.0.tenant.quota().agents_in_flight.max(1) as usize);
    let spec = RunSpec {
        workflow,
        args: request
            .args
            .as_ref()
            .map_or_else(String::new, Value::to_string),
        root: request.root.clone().map(RootRef::Named),
        limits,
        provider: request.provider.clone(),
        model: request.model.clone(),
        sim_latency_ms: request.sim_latency_ms,
        tenant: Some(tenant_name),
        resumed_from: None,
    };
    if query.plan {
        let plan = service.plan(&spec).await?;
        let mut answer = serde_json::to_value(&plan).unwrap_or_default();
        if let Some(object) = answer.as_object_mut() {
            // Why its agents would wait for each other's budget, if they would.
            object.insert("contention".into(), json!(plan.contention()));
        }
        return Ok(Json(json!({"plan": answer})).into_response());
    }
    // The plan is checked against a budget the request names; the tenant's default budget still
    // stops the run, but does not cost every submission a dry run.
    let force = request.force || request.budget_tokens.is_none();
    let handle = service
        .start(
            spec,
            StartOptions {
                force,
                ..StartOptions::default()
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(json!({"id": handle.id}))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    limit: Option<usize>,
    before: Option<String>,
}

async fn list_runs(
    State(state): State<AppState>,
    auth: Auth,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let status = match query.status.as_deref() {
        None => None,
        Some(name) => Some(RunStatus::parse(name).ok_or_else(|| {
            ApiError::bad_request("invalid_query", format!("unknown status '{name}'"))
                .hint("use queued, running, succeeded, failed or stopped")
        })?),
    };
    let limit = query.limit.unwrap_or(50).clamp(1, state.options.max_page);
    if let Some(before) = &query.before {
        // Paging from a run the caller cannot see is paging from nothing.
        state.service.resolve(Some(auth.tenant()), before)?;
    }
    let runs = state.service.list(&RunFilter {
        tenant: Some(auth.tenant().to_string()),
        status,
        limit,
        before: query.before.clone(),
    })?;
    let next = (runs.len() == limit)
        .then(|| runs.last().map(|run| run.id.clone()))
        .flatten();
    Ok(Json(json!({
        "runs": runs.iter().map(views::summary).collect::<Vec<_>>(),
        "next": next,
    })))
}

async fn get_run(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let detail = state.service.show(Some(auth.tenant()), &id)?;
    Ok(Json(views::detail(&detail, state.service.config())))
}

async fn list_agents(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let detail = state.service.show(Some(auth.tenant()), &id)?;
    let config = state.service.config();
    Ok(Json(json!({
        "agents": detail.calls.iter().map(|c| views::call(c, config)).collect::<Vec<_>>(),
    })))
}

async fn get_agent(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, n)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let detail = state.service.show(Some(auth.tenant()), &id)?;
    let seq: u64 = n
        .parse()
        .map_err(|_| ApiError::bad_request("invalid", format!("'{n}' is not an agent number")))?;
    let call = detail
        .calls
        .iter()
        .find(|call| call.seq == seq)
        .ok_or_else(|| ApiError::not_found("agent", &n))?;
    let transcript = state.service.transcript(Some(auth.tenant()), &id, seq)?;
    Ok(Json(views::call_full(
        call,
        transcript.as_ref(),
        state.service.config(),
    )))
}

async fn get_result(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let detail = finished(&state.service, auth.tenant(), &id, "no result")?;
    let status = detail.summary.status;
    let result = detail
        .result
        .as_deref()
        .map(|text| serde_json::from_str::<Value>(text).unwrap_or(Value::String(text.into())));
    Ok(
        Json(json!({"id": id, "status": status, "result": result, "error": detail.error}))
            .into_response(),
    )
}

/// Run `id` of `tenant`, refused (409) while it is queued or running: it has no `lacks` yet.
fn finished(
    service: &RunService,
    tenant: &str,
    id: &str,
    lacks: &str,
) -> Result<corral_store::RunDetail, ApiError> {
    let detail = service.show(Some(tenant), id)?;
    let status = detail.summary.status;
    if !status.is_final() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_finished",
            format!("run {id} is {status}: it has {lacks} yet"),
        )
        .hint(format!(
            "follow GET /v1/runs/{id}/events until run_finished"
        )));
    }
    Ok(detail)
}

/// `GET /v1/runs/{id}/diff`: a unified diff of what the run staged against its root as the root
/// is now (empty when every change is in the root already, or it staged none).
async fn get_diff(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    // A run's changeset is recorded when it ends.
    finished(&state.service, auth.tenant(), &id, "no recorded changes")?;
    let diff = state.service.diff(Some(auth.tenant()), &id)?;
    Ok(([(header::CONTENT_TYPE, "text/x-diff; charset=utf-8")], diff).into_response())
}

/// `POST /v1/runs/{id}/apply`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ApplyRequest {
    /// Only these staged paths; all of them when empty or absent.
    #[serde(default)]
    paths: Vec<String>,
}

/// `POST /v1/runs/{id}/apply`: writes what the run staged (or the paths named) into its root,
/// all or nothing: a file the root changed since the run staged it refuses the whole apply.
async fn apply_changes(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
    raw: Body,
) -> Result<Json<corral_host::tools::Applied>, ApiError> {
    let tenant = auth.writer()?.to_string();
    let bytes = body(raw, state.options.max_body_bytes).await?;
    let request: ApplyRequest = optional_json_body(&headers, &bytes)?;
    finished(&state.service, &tenant, &id, "no recorded changes")?;
    let _applying = state.applying.lock().await;
    Ok(Json(state.service.apply(
        Some(&tenant),
        &id,
        &request.paths,
    )?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    after: Option<u64>,
}

/// Events per read from the store while catching up.
const EVENT_PAGE: usize = 1000;

async fn run_events(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let after = match headers.get("last-event-id") {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                ApiError::bad_request("invalid", "Last-Event-ID must be an event number")
            })?,
        None => query.after.unwrap_or(0),
    };
    let feed = state.service.events(Some(auth.tenant()), &id, after)?;
    let service = state.service.clone();
    let run = feed.id.clone();
    let stream = futures_util::stream::unfold(
        (
            std::collections::VecDeque::from(feed.stored),
            feed.live,
            after,
        ),
        move |(mut pending, mut live, mut last)| {
            let (service, run) = (service.clone(), run.clone());
            async move {
                loop {
                    if let Some((seq, json)) = pending.pop_front() {
                        if seq <= last {
                            continue;
                        }
                        last = seq;
                        let event = Event::default().id(seq.to_string()).data(json);
                        return Some((Ok::<_, Infallible>(event), (pending, live, last)));
                    }
                    let receiver = live.as_mut()?;
                    match receiver.recv().await {
                        Ok((seq, json)) if seq > last => {
                            pending.push_back((seq, json.to_string()));
                        }
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            // Fell behind: read what was missed from the store.
                            pending.extend(service.stored_events(&run, last, EVENT_PAGE).ok()?);
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                            // The run ended: the rest is in the store.
                            pending
                                .extend(service.stored_events(&run, last, usize::MAX >> 1).ok()?);
                            live = None;
                        }
                    }
                }
            }
        },
    );
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// `GET /v1/events`: the caller's runs as they change status (recorded, admitted, ended), for a
/// live list of runs. Only changes from the moment of the request: read `GET /v1/runs` after
/// subscribing to catch up.
async fn run_changes(State(state): State<AppState>, auth: Auth) -> Response {
    let tenant = auth.tenant().to_string();
    let changes = state.service.run_changes();
    let stream = futures_util::stream::unfold(changes, move |mut changes| {
        let tenant = tenant.clone();
        async move {
            loop {
                match changes.recv().await {
                    Ok(change) if change.tenant.as_deref() == Some(tenant.as_str()) => {
                        let data = json!({
                            "event": "run_changed",
                            "id": change.id,
                            "status": change.status,
                        });
                        let event = Event::default().data(data.to_string());
                        return Some((Ok::<_, Infallible>(event), changes));
                    }
                    Ok(_) => {}
                    // Fell behind: say so, so that the client reads the list again.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        let event = Event::default().data(r#"{"event":"lagged"}"#);
                        return Some((Ok(event), changes));
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

async fn stop_run(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = auth.writer()?;
    state.service.stop(Some(tenant), &id)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "stopping": true})),
    )
        .into_response())
}

async fn stop_agent(
    State(state): State<AppState>,
    auth: Auth,
    Path((id, n)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let tenant = auth.writer()?;
    let seq: u64 = n
        .parse()
        .map_err(|_| ApiError::bad_request("invalid", format!("'{n}' is not an agent number")))?;
    state.service.stop_agent(Some(tenant), &id, seq)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "agent": seq, "stopping": true})),
    )
        .into_response())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ResumeRequest {
    #[serde(default)]
    reuse: Option<String>,
}

async fn resume_run(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
    raw: Body,
) -> Result<Response, ApiError> {
    let tenant = auth.writer()?.to_string();
    let bytes = body(raw, state.options.max_body_bytes).await?;
    let request: ResumeRequest = optional_json_body(&headers, &bytes)?;
    let reuse = match request.reuse.as_deref() {
        None | Some("prefix") => ReusePolicy::Prefix,
        Some("all") => ReusePolicy::All,
        Some(other) => {
            return Err(ApiError::bad_request(
                "invalid",
                format!("unknown reuse '{other}': use prefix or all"),
            ));
        }
    };
    let handle = state
        .service
        .resume(Some(&tenant), &id, reuse, None, StartOptions::default())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": handle.id, "resumes": id})),
    )
        .into_response())
}

async fn usage(State(state): State<AppState>, auth: Auth) -> Result<Json<Value>, ApiError> {
    let store = state.service.store()?;
    let usage = auth
        .0
        .tenant
        .usage(store.as_ref())
        .map_err(corral_service::ServiceError::from)?;
    let quotas: HashMap<&str, Value> = usage
        .quotas
        .iter()
        .map(|(name, line)| (*name, json!({"used": line.used, "limit": line.limit})))
        .collect();
    Ok(Json(json!({"tenant": auth.tenant(), "quotas": quotas})))
}

/// A field that is present, `null` included (absent fields take the default, `None`).
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}
