//! One sub-agent: a conversation with a model that may use read-only tools over the run's root
//! and, when a schema is given, must finish by calling a submit tool whose input validates.
//!
//! Every provider request is reserved against the budget before it is sent (see
//! [`crate::budget`]), so an agent can never overshoot the run's budget either. Every attempt is
//! reserved and settled on its own: retries of transient failures (with backoff and jitter,
//! honouring a capped `retry-after`, see [`RetryPolicy`]) pay for what each attempt cost.
//!
//! A request's worst case is its output ceiling plus an upper bound of its input tokens: the
//! input's bytes for an agent's first request (a token is at least a byte), and for later ones
//! the input tokens the provider reported for the previous request plus the bytes added since
//! (the answer and the tool results), whichever is smaller. A call that names no `maxTokens` lets
//! the budget lower its output ceiling to what remains, down to [`MIN_OUTPUT_TOKENS`].
//!
//! With a provider that keeps a prompt cache, siblings sharing a prompt prefix take turns through
//! [`SharedPrefixes`], so that one writes the cache and the others read it.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::budget::{Ask, BudgetLedger};
use crate::provider::{
    Block, CacheHints, ChatRequest, ChatResponse, Effort, Message, Provider, ProviderError,
    RetryPolicy, Role, Spent, StopReason, ToolSpec, Usage,
};
use crate::schema::OutputSchema;
use crate::tools::{GrepOptions, ToolError, ToolRoot, WriteSession, Written};

mod shared_prefix;

pub use shared_prefix::{CacheTurn, MIN_SHARED_PREFIX_BYTES, SharedPrefixes, WriterTurn};

/// Name of the tool a schema'd agent calls to hand in its answer (the providers name it too).
pub use crate::provider::SUBMIT_TOOL;
/// Tools an agent gets when its call names none: the read-only ones.
pub const AGENT_TOOLS: [&str; 4] = ["read", "glob", "grep", "git"];
/// Tools an agent gets only when its call names them and the run grants them: `write` and
/// `edit` stage into the run's changeset (`--allow-write`), `run` runs an allow-listed command in
/// the jail (`--allow-run`).
pub const AGENT_WRITE_TOOLS: [&str; 3] = ["write", "edit", "run"];
/// How many answers a schema'd agent may hand in before the call fails with `schema-mismatch`,
/// unless the run says otherwise (`--schema-attempts`).
pub const MAX_SCHEMA_ATTEMPTS: u32 = 5;
/// The lowest output ceiling the budget may lower a request to, for a call that names no
/// `maxTokens`: below it an answer would be cut off too early to be worth paying for, so the
/// request is refused (`budget-exhausted`) instead.
pub const MIN_OUTPUT_TOKENS: u32 = 1024;
/// Default conversation turns of one agent.
pub const DEFAULT_MAX_TURNS: u32 = 24;
/// Siblings coordinate their first requests only when what they share (system prompt, tools and
/// a shared prompt prefix) is at least this long: about 1024 tokens, the smallest prefix the
/// providers cache. Below it, waiting for a writer would only add latency.
pub const MIN_CACHEABLE_BYTES: u64 = 4096;

const PREAMBLE: &str = "You are a sub-agent running non-interactively inside an automated workflow. \
Nobody will answer questions or read intermediate remarks: do the task with the tools you have, \
then reply with the requested content only.";

/// What one agent call asks for.
#[derive(Debug, Clone)]
pub struct AgentRequest {
    /// The task.
    pub prompt: String,
    /// Display name.
    pub label: Option<String>,
    /// Progress group.
    pub phase: Option<String>,
    /// Model alias or id (`None`: the provider's default).
    pub model: Option<String>,
    /// Reasoning effort.
    pub effort: Option<Effort>,
    /// Output schema, when the answer must be JSON.
    pub schema: Option<Arc<OutputSchema>>,
    /// Tools granted (`None`: all of [`AGENT_TOOLS`]).
    pub tools: Option<Vec<String>>,
    /// Output tokens per provider request.
    pub max_tokens: u32,
    /// When set (the call named no `maxTokens`), the budget may lower `max_tokens` of a request
    /// to what it can still cover, down to this floor.
    pub output_floor: Option<u32>,
    /// Conversation turns.
    pub max_turns: u32,
    /// Wall-clock limit of the call.
    pub timeout: Option<Duration>,
    /// Whether the call writes into an overlay of its own (`isolation: 'worktree'`) instead of
    /// the run's changeset.
    pub isolated: bool,
}

impl AgentRequest {
    /// A plain request for `prompt` with the default limits and no options.
    pub fn new(prompt: impl Into<String>) -> Self {
        AgentRequest {
            prompt: prompt.into(),
            label: None,
            phase: None,
            model: None,
            effort: None,
            schema: None,
            tools: None,
            max_tokens: crate::limits::RunLimits::default().max_output_tokens,
            output_floor: Some(MIN_OUTPUT_TOKENS),
            max_turns: DEFAULT_MAX_TURNS,
            timeout: None,
            isolated: false,
        }
    }
}

/// What a finished agent call produced.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentOutput {
    /// Final text (for a schema: the instance as JSON text).
    pub text: String,
    /// The validated instance, for a schema.
    pub json: Option<Value>,
    /// Tokens used by every request of the call.
    pub usage: Usage,
    /// The model that answered.
    pub model: String,
    /// What the call wrote into the run's changeset (journaled: a replayed call stages it again).
    pub changes: Vec<Written>,
}

/// Why an agent call failed; mirrors the WIT `agent-error` variant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentError {
    /// The budget cannot cover the next request; it was not sent.
    #[error("{0}")]
    BudgetExhausted(String),
    /// The run's agent cap is reached.
    #[error("{0}")]
    AgentLimit(String),
    /// The answers never matched the schema.
    #[error("{0}")]
    SchemaMismatch(String),
    /// The provider failed.
    #[error("{0}")]
    Provider(String),
    /// The call ran out of time or turns.
    #[error("{0}")]
    Timeout(String),
    /// The call was cancelled.
    #[error("{0}")]
    Cancelled(String),
    /// The call asked for something not granted.
    #[error("{0}")]
    Denied(String),
    /// The call's options are invalid.
    #[error("{0}")]
    InvalidInput(String),
}

impl AgentError {
    /// Stable kebab-case name of the failure kind, as in the WIT variant.
    pub fn kind(&self) -> &'static str {
        match self {
            AgentError::BudgetExhausted(_) => "budget-exhausted",
            AgentError::AgentLimit(_) => "agent-limit",
            AgentError::SchemaMismatch(_) => "schema-mismatch",
            AgentError::Provider(_) => "provider",
            AgentError::Timeout(_) => "timeout",
            AgentError::Cancelled(_) => "cancelled",
            AgentError::Denied(_) => "denied",
            AgentError::InvalidInput(_) => "invalid-input",
        }
    }
}

/// What every agent of a run shares.
#[derive(Clone)]
pub struct AgentContext {
    /// Who answers.
    pub provider: Arc<dyn Provider>,
    /// The run's budget.
    pub ledger: Arc<BudgetLedger>,
    /// The run's root, if it has one.
    pub tools: Option<ToolRoot>,
    /// Where the host's own warnings about the run go (a provider that over-reports usage).
    pub events: Arc<dyn crate::events::EventSink>,
    /// Answers a schema'd agent may hand in before it fails `schema-mismatch`.
    pub schema_attempts: u32,
    /// Where a provider's usage limit pauses the run (`None`: the call fails `provider`).
    pub pause: Option<Arc<Pause>>,
    /// The commands agents granted `run` may run, and their limits (`--allow-run`).
    pub commands: Arc<Commands>,
}

/// The commands of a run (`--allow-run`) and the limits each one runs under.
#[derive(Debug, Clone, Default)]
pub struct Commands {
    /// Command names, matched exactly.
    pub allow: Vec<String>,
    /// Limits of each command.
    pub limits: crate::jail::CommandLimits,
}

/// A run's pause: the first agent whose provider says the account's usage or spend limit is
/// reached pauses the whole run, with the provider's message.
#[derive(Debug, Default)]
pub struct Pause {
    reason: std::sync::OnceLock<String>,
    notify: tokio::sync::Notify,
}

impl Pause {
    /// Pauses the run for `reason` (the first reason wins).
    pub fn pause(&self, reason: String) {
        if self.reason.set(reason).is_ok() {
            self.notify.notify_waiters();
        }
    }

    /// Resolves with the reason once the run is paused.
    pub async fn paused(&self) -> String {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(reason) = self.reason.get() {
                return reason.clone();
            }
            notified.await;
        }
    }
}

/// What an agent call did, kept however it ended: its conversation and every token it was
/// charged (a failed call's schema retries and billed provider errors included).
#[derive(Debug, Clone, Default)]
pub struct Conversation {
    /// The messages as they stood when the call ended.
    pub messages: Vec<Message>,
    /// What the call's requests were charged.
    pub spend: Spend,
}

/// What one agent's requests were charged, and what the last answer says about the next
/// request's input.
#[derive(Debug, Clone, Default)]
pub struct Spend {
    /// Tokens charged so far.
    pub usage: Usage,
    /// The input bytes of the last answered request and the input tokens the provider reported
    /// for it (cache reads and writes included).
    known: Option<(u64, u64)>,
}

impl Spend {
    /// An upper bound of the input tokens of a request of `bytes` input bytes in the same
    /// conversation: the bytes, or the last request's reported tokens plus the bytes added since.
    fn input_bound(&self, bytes: u64) -> u64 {
        match self.known {
            Some((before, tokens)) if bytes >= before => bytes.min(tokens + (bytes - before)),
            _ => bytes,
        }
    }
}

/// Checks a tool allow-list against what agents can be granted.
pub fn check_tool_grant(tools: &[String]) -> Result<(), AgentError> {
    match tools.iter().find(|tool| {
        !AGENT_TOOLS.contains(&tool.as_str()) && !AGENT_WRITE_TOOLS.contains(&tool.as_str())
    }) {
        Some(unknown) => Err(AgentError::Denied(format!(
            "unknown agent tool '{unknown}': agents may use {}, {}",
            AGENT_TOOLS.join(", "),
            AGENT_WRITE_TOOLS.join(", ")
        ))),
        None => Ok(()),
    }
}

/// Runs one agent call to completion, on its own (it shares no prefix turns with siblings).
pub async fn run_agent(
    context: &AgentContext,
    request: &AgentRequest,
) -> Result<AgentOutput, AgentError> {
    run_agent_sharing(context, request, &Arc::new(SharedPrefixes::default())).await
}

/// Runs one agent call to completion, taking turns with its siblings in `prefixes` (see
/// [`SharedPrefixes`]); the request should have been registered there with
/// [`SharedPrefixes::register_request`] when it was started.
pub async fn run_agent_sharing(
    context: &AgentContext,
    request: &AgentRequest,
    prefixes: &Arc<SharedPrefixes>,
) -> Result<AgentOutput, AgentError> {
    run_agent_recorded(context, request, prefixes).await.0
}

/// [`run_agent_sharing`], also handing back the conversation as it stood when the call ended
/// (finished, failed or timed out) and what it was charged, for the journal and the report.
pub async fn run_agent_recorded(
    context: &AgentContext,
    request: &AgentRequest,
    prefixes: &Arc<SharedPrefixes>,
) -> (Result<AgentOutput, AgentError>, Conversation) {
    let mut transcript = Conversation::default();
    let session = Arc::new(
        context
            .tools
            .as_ref()
            .map(ToolRoot::session)
            .unwrap_or_default(),
    );
    let work = converse(context, request, prefixes, &mut transcript, &session);
    let mut outcome = match request.timeout {
        Some(limit) => tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
            Err(AgentError::Timeout(format!(
                "the agent did not finish within its time limit of {} ms (raise timeoutMs)",
                limit.as_millis()
            )))
        }),
        None => work.await,
    };
    if let Ok(output) = &mut outcome {
        output.changes = session.written();
    }
    (outcome, transcript)
}

/// A conversation as JSON text: `[{"role", "content": [{"type": "text" | "tool_use" |
/// "tool_result", ...}]}]`, the shape `corral runs show --agent` prints.
pub fn transcript_json(messages: &[Message]) -> String {
    let messages: Vec<Value> = messages
        .iter()
        .map(|message| {
            let content: Vec<Value> = message
                .content
                .iter()
                .map(|block| match block {
                    Block::Text(text) => json!({"type": "text", "text": text}),
                    Block::ToolUse { id, name, input } => {
                        json!({"type": "tool_use", "id": id, "name": name, "input": input})
                    }
                    Block::ToolResult { id, content, is_error } => {
                        json!({"type": "tool_result", "id": id, "content": content, "is_error": is_error})
                    }
                })
                .collect();
            let role = match message.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            json!({"role": role, "content": content})
        })
        .collect();
    serde_json::to_string_pretty(&messages).unwrap_or_default()
}

/// The group of siblings `request` belongs to: agents of a run with the same model, system
/// prompt and tools, whose requests can share a cached prefix.
pub fn prefix_group(context: &AgentContext, request: &AgentRequest) -> u64 {
    let mut hasher = DefaultHasher::new();
    request.model.hash(&mut hasher);
    system_prompt(request).hash(&mut hasher);
    for tool in tool_specs(context, request) {
        tool.name.hash(&mut hasher);
        tool.description.hash(&mut hasher);
        tool.input_schema.to_string().hash(&mut hasher);
    }
    hasher.finish()
}

impl SharedPrefixes {
    /// Records a started agent call, if its provider keeps a prompt cache.
    pub fn register_request(&self, context: &AgentContext, request: &AgentRequest) {
        if context.provider.prompt_cache() {
            self.register(prefix_group(context, request), &request.prompt);
        }
    }
}

async fn converse(
    context: &AgentContext,
    request: &AgentRequest,
    prefixes: &Arc<SharedPrefixes>,
    conversation: &mut Conversation,
    session: &Arc<WriteSession>,
) -> Result<AgentOutput, AgentError> {
    let Conversation { messages, spend } = conversation;
    let attempts = context.schema_attempts.max(1);
    let model = context.provider.resolve_model(request.model.as_deref());
    let tools = tool_specs(context, request);
    let system = system_prompt(request);
    let caching = context.provider.prompt_cache();
    let group = prefix_group(context, request);
    let shared = if caching {
        prefixes.shared_len(group, &request.prompt)
    } else {
        0
    };
    // A shared prefix goes in a block of its own, so that the provider can mark where it ends.
    let first = if shared > 0 {
        vec![
            Block::Text(request.prompt[..shared].to_string()),
            Block::Text(request.prompt[shared..].to_string()),
        ]
    } else {
        vec![Block::Text(request.prompt.clone())]
    };
    messages.clear();
    messages.push(Message {
        role: Role::User,
        content: first,
    });
    // Force the submit tool when it is the only tool: the answer can be nothing else.
    let force_tool =
        (request.schema.is_some() && tools.len() == 1).then(|| SUBMIT_TOOL.to_string());
    let mut schema_attempts = 0;
    let mut last_schema_error = String::new();

    for turn in 0..request.max_turns {
        let chat = ChatRequest {
            model: model.clone(),
            system: system.clone(),
            messages: messages.clone(),
            tools: tools.clone(),
            force_tool: force_tool.clone(),
            max_tokens: request.max_tokens,
            effort: request.effort,
            cache: CacheHints {
                system: caching,
                shared_prefix: shared > 0,
                conversation: caching && turn > 0,
            },
        };
        let response = if turn == 0 && caching {
            let prefix = &request.prompt[..shared];
            send_first(context, &chat, request, spend, prefixes, group, prefix).await?
        } else {
            send(context, &chat, request, spend).await?
        };
        let answered_model = response.model.clone();
        let tool_uses: Vec<(String, String, Value)> = response
            .content
            .iter()
            .filter_map(|block| match block {
                Block::ToolUse { id, name, input } => {
                    Some((id.clone(), name.clone(), input.clone()))
                }
                _ => None,
            })
            .collect();
        let text: String = response
            .content
            .iter()
            .filter_map(|block| match block {
                Block::Text(text) => Some(text.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("");
        messages.push(Message {
            role: Role::Assistant,
            content: response.content,
        });

        if tool_uses.is_empty() {
            let Some(schema) = &request.schema else {
                return Ok(AgentOutput {
                    text,
                    json: None,
                    usage: spend.usage,
                    model: answered_model,
                    changes: Vec::new(),
                });
            };
            // The model answered in prose: accept it if it is a valid instance, otherwise ask again.
            let verdict = serde_json::from_str::<Value>(text.trim())
                .map_err(|error| format!("the answer is not JSON ({error})"))
                .and_then(|value| schema.validate(&value).map(|()| value));
            match verdict {
                Ok(value) => return Ok(schema_output(value, spend.usage, answered_model)),
                Err(error) => {
                    schema_attempts += 1;
                    last_schema_error = error;
                    if schema_attempts >= attempts {
                        break;
                    }
                    messages.push(Message::user_text(format!(
                        "Your answer must be JSON that matches the schema: call the `{SUBMIT_TOOL}` tool with it (or, without such a tool, reply with the JSON only). Problem: {last_schema_error}"
                    )));
                    continue;
                }
            }
        }

        if response.stop == StopReason::MaxTokens && request.schema.is_none() && !text.is_empty() {
            return Ok(AgentOutput {
                text,
                json: None,
                usage: spend.usage,
                model: answered_model,
                changes: Vec::new(),
            });
        }

        let mut results = Vec::with_capacity(tool_uses.len());
        for (id, name, input) in tool_uses {
            if name == SUBMIT_TOOL
                && let Some(schema) = &request.schema
            {
                match schema.validate(&input) {
                    Ok(()) => return Ok(schema_output(input, spend.usage, answered_model)),
                    Err(error) => {
                        schema_attempts += 1;
                        last_schema_error = error.clone();
                        results.push(Block::ToolResult {
                            id,
                            content: format!("Invalid: {error}. Fix these problems and call `{SUBMIT_TOOL}` again."),
                            is_error: true,
                        });
                    }
                }
                continue;
            }
            let (content, is_error) = match run_tool(context, request, session, &name, &input).await
            {
                Ok(output) => (output, false),
                Err(error) => (error, true),
            };
            results.push(Block::ToolResult {
                id,
                content,
                is_error,
            });
        }
        if schema_attempts >= attempts {
            break;
        }
        messages.push(Message {
            role: Role::User,
            content: results,
        });
    }

    if schema_attempts >= attempts {
        return Err(AgentError::SchemaMismatch(format!(
            "the agent's output did not match the schema after {attempts} attempts (raise --schema-attempts); last error: {last_schema_error}"
        )));
    }
    Err(AgentError::Timeout(format!(
        "the agent used all {} turns without a final answer (raise maxTurns, or ask for less)",
        request.max_turns
    )))
}

fn schema_output(value: Value, usage: Usage, model: String) -> AgentOutput {
    AgentOutput {
        text: value.to_string(),
        json: Some(value),
        usage,
        model,
        changes: Vec::new(),
    }
}

/// Sends the first request of an agent whose provider keeps a prompt cache: when what it shares
/// with its siblings is long enough to be cached, it waits for its turn, so that one sibling
/// writes the shared prefix and the others read it.
async fn send_first(
    context: &AgentContext,
    chat: &ChatRequest,
    request: &AgentRequest,
    spend: &mut Spend,
    prefixes: &Arc<SharedPrefixes>,
    group: u64,
    prefix: &str,
) -> Result<ChatResponse, AgentError> {
    let tools_bytes: u64 = chat
        .tools
        .iter()
        .map(|tool| {
            (tool.name.len() + tool.description.len()) as u64 + json_bytes(&tool.input_schema)
        })
        .sum();
    let shared_bytes = chat.system.len() as u64 + tools_bytes + prefix.len() as u64;
    if shared_bytes < MIN_CACHEABLE_BYTES {
        return send(context, chat, request, spend).await;
    }
    let max_wait = context.provider.retry_policy().request_timeout;
    match prefixes.take_turn(group, prefix, max_wait).await {
        CacheTurn::Writer(turn) => {
            let response = send(context, chat, request, spend).await?;
            turn.written();
            Ok(response)
        }
        CacheTurn::Reader => send(context, chat, request, spend).await,
    }
}

fn json_bytes(value: &Value) -> u64 {
    serde_json::to_vec(value).map_or(0, |bytes| bytes.len() as u64)
}

/// Sends one request: for every attempt, have the budget admit its worst case (waiting for
/// requests in flight, perhaps with a lower output ceiling), send, settle what it cost; retry
/// transient failures with backoff (see [`RetryPolicy`]); give up on an attempt that takes
/// longer than the policy's request timeout.
async fn send(
    context: &AgentContext,
    chat: &ChatRequest,
    request: &AgentRequest,
    spend: &mut Spend,
) -> Result<ChatResponse, AgentError> {
    let policy: RetryPolicy = context.provider.retry_policy();
    let bytes = chat.input_bytes();
    let input = spend.input_bound(bytes);
    let mut retry = 0;
    loop {
        let admitted = context
            .ledger
            .admit(Ask {
                input,
                output: u64::from(chat.max_tokens),
                lowest_output: request.output_floor.map(u64::from),
            })
            .await
            .map_err(|refusal| AgentError::BudgetExhausted(refusal.to_string()))?;
        let reservation = admitted.reservation;
        let worst_case = reservation.amount();
        // The ledger lowers a ceiling only within u32 (it never raises one).
        let output = u32::try_from(admitted.output).unwrap_or(chat.max_tokens);
        let lowered;
        let chat = if output < chat.max_tokens {
            lowered = ChatRequest {
                max_tokens: output,
                ..chat.clone()
            };
            &lowered
        } else {
            chat
        };
        let (outcome, timed_out) =
            match tokio::time::timeout(policy.request_timeout, context.provider.complete(chat))
                .await
            {
                Ok(outcome) => (outcome, false),
                Err(_) => {
                    let error = ProviderError::Transient {
                        provider: context.provider.name().to_string(),
                        message: format!(
                            "no answer within the request timeout of {}",
                            seconds(policy.request_timeout)
                        ),
                        retry_after: None,
                        spent: Spent::Unknown,
                    };
                    (Err(error), true)
                }
            };
        let error = match outcome {
            Ok(mut response) => {
                // The worst case is an upper bound (see the module's comment): a claim above it
                // is charged at the bound, and the claim is kept in a warning.
                let claimed = response.usage;
                response.usage = claimed.clamped(input, u64::from(chat.max_tokens));
                if response.usage != claimed {
                    over_reported(context, &claimed, &response.usage, worst_case);
                }
                reservation.settle(response.usage.total());
                spend.usage.add(&response.usage);
                let reported = response.usage.total() - response.usage.output_tokens;
                if reported > 0 {
                    spend.known = Some((bytes, reported));
                }
                return Ok(response);
            }
            Err(error) => error,
        };
        match error.spent() {
            // Refused requests are not billed by the providers we speak to.
            Spent::Nothing => reservation.release(),
            // The provider may have billed it without saying how much: keep the worst case charged.
            Spent::Unknown => {
                let amount = reservation.amount();
                reservation.settle(amount);
                spend.usage.add(&Usage {
                    input_tokens: input,
                    output_tokens: u64::from(chat.max_tokens),
                    ..Usage::default()
                });
            }
            Spent::Tokens(claimed) => {
                let spent = claimed.clamped(input, u64::from(chat.max_tokens));
                if spent != claimed {
                    over_reported(context, &claimed, &spent, worst_case);
                }
                reservation.settle(spent.total());
                spend.usage.add(&spent);
            }
        }
        let attempts = retry + 1;
        match error {
            ProviderError::Transient { retry_after, .. } if retry < policy.max_retries => {
                retry += 1;
                tokio::time::sleep(policy.delay(retry, retry_after)).await;
            }
            ProviderError::Transient { message, .. } if timed_out => {
                return Err(AgentError::Timeout(format!(
                    "{}: {message}, {attempts} attempts (raise timeout in corral.toml)",
                    context.provider.name()
                )));
            }
            ProviderError::Transient { .. } => {
                return Err(AgentError::Provider(format!(
                    "{error}; gave up after {attempts} attempts"
                )));
            }
            ProviderError::Fatal { .. } => return Err(AgentError::Provider(error.to_string())),
            ProviderError::UsageLimit { .. } => match &context.pause {
                // The run pauses; this call never ends, so the resumed run sends it again.
                Some(pause) => {
                    pause.pause(error.to_string());
                    return std::future::pending().await;
                }
                None => return Err(AgentError::Provider(error.to_string())),
            },
        }
    }
}

/// Keeps a provider's over-reported usage claim in a warning of the run.
fn over_reported(context: &AgentContext, claimed: &Usage, charged: &Usage, worst_case: u64) {
    context.events.event(&crate::events::RunEvent::Log {
        message: format!(
            "corral: warning: {} reported {} tokens ({claimed:?}) for a request whose worst case \
             is {worst_case}; charged {} instead",
            context.provider.name(),
            claimed.total(),
            charged.total()
        ),
    });
}

fn seconds(duration: Duration) -> String {
    if duration.subsec_millis() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

fn system_prompt(request: &AgentRequest) -> String {
    match &request.schema {
        Some(_) => format!(
            "{PREAMBLE}\nWhen you are done, call the `{SUBMIT_TOOL}` tool exactly once with your answer as its input; it must match the tool's input schema."
        ),
        None => PREAMBLE.to_string(),
    }
}

fn granted<'a>(request: &'a AgentRequest) -> impl Iterator<Item = &'static str> + 'a {
    let named = move |tool: &&str| {
        request
            .tools
            .as_ref()
            .is_some_and(|allowed| allowed.iter().any(|a| a == tool))
    };
    AGENT_TOOLS
        .into_iter()
        .filter(move |tool| request.tools.is_none() || named(tool))
        .chain(AGENT_WRITE_TOOLS.into_iter().filter(named))
}

fn tool_specs(context: &AgentContext, request: &AgentRequest) -> Vec<ToolSpec> {
    let mut specs = Vec::new();
    if context.tools.is_some() {
        for tool in granted(request) {
            specs.push(tool_spec(tool));
        }
    }
    if let Some(schema) = &request.schema {
        specs.push(ToolSpec {
            name: SUBMIT_TOOL.to_string(),
            description: "Hand in your final answer. The input must match this schema.".to_string(),
            input_schema: schema.source().clone(),
        });
    }
    specs
}

fn tool_spec(name: &str) -> ToolSpec {
    let (description, input_schema) = match name {
        "read" => (
            "Read a text file of the repository. Paths are relative to the repository root.",
            json!({"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}),
        ),
        "glob" => (
            "List files matching a glob pattern such as src/**/*.rs (honours .gitignore).",
            json!({"type": "object", "properties": {"pattern": {"type": "string"}}, "required": ["pattern"]}),
        ),
        "grep" => (
            "Search file contents with a regular expression; returns path:line:text lines.",
            json!({"type": "object", "properties": {
                "pattern": {"type": "string"}, "glob": {"type": "string"},
                "ignore_case": {"type": "boolean"}, "max_matches": {"type": "integer", "minimum": 1}
            }, "required": ["pattern"]}),
        ),
        "write" => (
            "Write a file of the repository (its whole new content). Changes are staged for review; \
             if another writer changed the file after you started, read it again first.",
            json!({"type": "object", "properties": {"path": {"type": "string"}, "content": {"type": "string"}}, "required": ["path", "content"]}),
        ),
        "edit" => (
            "Replace the one occurrence of old_text in a file by new_text (old_text must occur exactly once).",
            json!({"type": "object", "properties": {
                "path": {"type": "string"}, "old_text": {"type": "string"}, "new_text": {"type": "string"}
            }, "required": ["path", "old_text", "new_text"]}),
        ),
        "run" => (
            "Run an allowed command (no shell) with arguments in a sandbox over the repository with \
             the staged changes; returns its exit code, stdout and stderr.",
            json!({"type": "object", "properties": {
                "command": {"type": "string"}, "args": {"type": "array", "items": {"type": "string"}},
                "timeout_ms": {"type": "integer", "minimum": 1}
            }, "required": ["command"]}),
        ),
        _ => (
            "Read-only git: command is log, show, diff or status.",
            json!({"type": "object", "properties": {
                "command": {"enum": ["log", "show", "diff", "status"]},
                "rev": {"type": "string"}, "path": {"type": "string"}, "range": {"type": "string"},
                "max": {"type": "integer", "minimum": 1}
            }, "required": ["command"]}),
        ),
    };
    ToolSpec {
        name: name.to_string(),
        description: description.to_string(),
        input_schema,
    }
}

async fn run_tool(
    context: &AgentContext,
    request: &AgentRequest,
    session: &Arc<WriteSession>,
    name: &str,
    input: &Value,
) -> Result<String, String> {
    if !granted(request).any(|tool| tool == name) {
        return Err(format!("tool '{name}' is not available to this agent"));
    }
    let Some(root) = context.tools.clone() else {
        return Err(
            "this run has no root directory, so there are no files to use tools on".to_string(),
        );
    };
    if name == "run" {
        return run_command(context, root, input).await;
    }
    let name = name.to_string();
    let input = input.clone();
    let session = Arc::clone(session);
    tokio::task::spawn_blocking(move || {
        call_tool(&root, &session, &name, &input).map_err(|error| error.to_string())
    })
    .await
    .map_err(|error| format!("tool failed: {error}"))?
}

/// The agent's `run` tool: an allow-listed command in the jail over the root and the changeset.
async fn run_command(
    context: &AgentContext,
    root: ToolRoot,
    input: &Value,
) -> Result<String, String> {
    let Some(command) = input.get("command").and_then(Value::as_str) else {
        return Err("missing string field 'command'".to_string());
    };
    if !context
        .commands
        .allow
        .iter()
        .any(|allowed| allowed == command)
    {
        return Err(format!(
            "the command '{command}' is not allowed; this run allows: {}",
            if context.commands.allow.is_empty() {
                "none".to_string()
            } else {
                context.commands.allow.join(", ")
            }
        ));
    }
    let args = match input.get("args") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or("'args' must be an array of strings")?,
        Some(_) => return Err("'args' must be an array of strings".to_string()),
    };
    let timeout = input
        .get("timeout_ms")
        .and_then(Value::as_u64)
        .map(Duration::from_millis);
    let view = tokio::task::spawn_blocking(move || root.command_view())
        .await
        .map_err(|error| format!("tool failed: {error}"))?
        .map_err(|error| error.to_string())?;
    let request = crate::jail::CommandRequest {
        program: command.to_string(),
        args,
        timeout,
    };
    let output = crate::jail::run(
        &view,
        &request,
        &context.commands.limits,
        std::future::pending(),
    )
    .await
    .map_err(|error| error.to_string())?;
    Ok(format!(
        "exit code {}\n--- stdout\n{}\n--- stderr\n{}",
        output.code, output.stdout, output.stderr
    ))
}

fn call_tool(
    root: &ToolRoot,
    session: &WriteSession,
    name: &str,
    input: &Value,
) -> Result<String, ToolError> {
    let text = |key: &str| input.get(key).and_then(Value::as_str);
    let required = |key: &str| {
        text(key).ok_or_else(|| ToolError::InvalidInput(format!("missing string field '{key}'")))
    };
    match name {
        "read" => root.read_in(session, required("path")?),
        "write" => {
            let path = required("path")?;
            root.write_in(session, path, required("content")?)?;
            Ok(format!("staged the new content of {path}"))
        }
        "edit" => {
            let path = required("path")?;
            root.edit_in(session, path, required("old_text")?, required("new_text")?)?;
            Ok(format!("staged the edit of {path}"))
        }
        "glob" => Ok(root.glob(required("pattern")?)?.join("\n")),
        "grep" => {
            let options = GrepOptions {
                glob: text("glob").map(str::to_string),
                ignore_case: input
                    .get("ignore_case")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                max_matches: input
                    .get("max_matches")
                    .and_then(Value::as_u64)
                    .map(|n| n.min(u64::from(u32::MAX)) as u32),
            };
            let matches = root.grep(required("pattern")?, &options)?;
            Ok(matches
                .iter()
                .map(|m| format!("{}:{}:{}", m.path, m.line, m.text))
                .collect::<Vec<_>>()
                .join("\n"))
        }
        "git" => match required("command")? {
            "log" => {
                let max = input
                    .get("max")
                    .and_then(Value::as_u64)
                    .map(|n| n.min(u64::from(u32::MAX)) as u32);
                let commits = root.git_log(text("path"), max)?;
                Ok(commits
                    .iter()
                    .map(|c| format!("{} {} {}", &c.id[..c.id.len().min(12)], c.author, c.summary))
                    .collect::<Vec<_>>()
                    .join("\n"))
            }
            "show" => root.git_show(text("rev").unwrap_or("HEAD"), text("path")),
            "diff" => root.git_diff(text("range")),
            "status" => {
                let entries = root.git_status()?;
                Ok(entries
                    .iter()
                    .map(|e| format!("{} {}", e.status, e.path))
                    .collect::<Vec<_>>()
                    .join("\n"))
            }
            other => Err(ToolError::InvalidInput(format!(
                "unknown git command '{other}': use log, show, diff or status"
            ))),
        },
        other => Err(ToolError::InvalidInput(format!("unknown tool '{other}'"))),
    }
}

#[cfg(test)]
mod tests;
