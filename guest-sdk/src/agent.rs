//! Sub-agent calls: options, outputs, errors and the [`AgentCall`] future.

use crate::bindings::corral::workflow::agents as wit;
use crate::executor::{self, CallId};
use serde::Serialize;
use serde_json::Value;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// How hard the model should think; mapped to provider parameters where supported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effort {
    /// Minimal thinking.
    Low,
    /// Moderate thinking.
    Medium,
    /// Thorough thinking.
    High,
    /// More than `High`.
    XHigh,
    /// The most the provider allows.
    Max,
}

impl Effort {
    /// The WIT name of the level (`low`, `medium`, `high`, `xhigh`, `max`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::XHigh => "xhigh",
            Self::Max => "max",
        }
    }

    /// Parses a WIT name as returned by [`Effort::as_str`].
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "low" => Self::Low,
            "medium" => Self::Medium,
            "high" => Self::High,
            "xhigh" => Self::XHigh,
            "max" => Self::Max,
            _ => return None,
        })
    }
}

/// Options of one agent call. Every option is unset by default, which means the host default.
///
/// ```
/// use guest_sdk::{AgentOptions, Effort};
/// let options = AgentOptions::new()
///     .label("review main.rs")
///     .model("haiku")
///     .effort(Effort::Low)
///     .schema(serde_json::json!({"type": "object"}))
///     .tools(["read", "grep"])
///     .max_tokens(2000);
/// assert_eq!(options.model.as_deref(), Some("haiku"));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentOptions {
    /// Short human-readable name shown in progress and the journal.
    pub label: Option<String>,
    /// Progress group; defaults to the phase most recently started with [`phase`](crate::phase).
    pub phase: Option<String>,
    /// A model alias (`haiku`, `sonnet`, `opus`) or a provider model id.
    pub model: Option<String>,
    /// How hard the model should think.
    pub effort: Option<Effort>,
    /// A JSON Schema whose root is an object; the agent must return a (host-validated) instance.
    pub schema: Option<Value>,
    /// Allow-list of tool names the agent may use (`read`, `glob`, `grep`, `git`).
    pub tools: Option<Vec<String>>,
    /// Maximum output tokens per provider request.
    pub max_tokens: Option<u32>,
    /// Maximum conversation turns.
    pub max_turns: Option<u32>,
    /// Wall-clock limit of the whole call, in milliseconds.
    pub timeout_ms: Option<u32>,
}

impl AgentOptions {
    /// Options with every field unset (host defaults).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the label shown in progress and the journal.
    #[must_use]
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Sets the progress group, overriding the current phase.
    #[must_use]
    pub fn phase(mut self, phase: impl Into<String>) -> Self {
        self.phase = Some(phase.into());
        self
    }

    /// Sets the model alias or provider model id.
    #[must_use]
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Sets the thinking effort.
    #[must_use]
    pub fn effort(mut self, effort: Effort) -> Self {
        self.effort = Some(effort);
        self
    }

    /// Requires the agent to return an instance of this JSON Schema (whose root is an object);
    /// the instance is then in [`AgentOutput::json`].
    #[must_use]
    pub fn schema(mut self, schema: Value) -> Self {
        self.schema = Some(schema);
        self
    }

    /// Restricts the tools the agent may use.
    #[must_use]
    pub fn tools<I, S>(mut self, tools: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tools = Some(tools.into_iter().map(Into::into).collect());
        self
    }

    /// Sets the maximum output tokens per provider request.
    #[must_use]
    pub fn max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }

    /// Sets the maximum number of conversation turns.
    #[must_use]
    pub fn max_turns(mut self, max_turns: u32) -> Self {
        self.max_turns = Some(max_turns);
        self
    }

    /// Sets the wall-clock limit of the whole call, in milliseconds.
    #[must_use]
    pub fn timeout_ms(mut self, timeout_ms: u32) -> Self {
        self.timeout_ms = Some(timeout_ms);
        self
    }

    pub(crate) fn to_wit(&self) -> wit::AgentOptions {
        wit::AgentOptions {
            label: self.label.clone(),
            phase: self.phase.clone(),
            model: self.model.clone(),
            effort: self.effort.map(|effort| match effort {
                Effort::Low => wit::Effort::Low,
                Effort::Medium => wit::Effort::Medium,
                Effort::High => wit::Effort::High,
                Effort::XHigh => wit::Effort::Xhigh,
                Effort::Max => wit::Effort::Max,
            }),
            schema: self.schema.as_ref().map(Value::to_string),
            tools: self.tools.clone(),
            max_tokens: self.max_tokens,
            max_turns: self.max_turns,
            timeout_ms: self.timeout_ms,
        }
    }
}

/// Token usage of one agent call, summed over every provider request it made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Uncached input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens read from the provider's cache.
    pub cache_read_tokens: u64,
    /// Input tokens written to the provider's cache.
    pub cache_write_tokens: u64,
}

impl Usage {
    /// All tokens of every kind.
    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens
    }
}

/// What a finished agent call produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentOutput {
    /// The agent's final text (with a schema: the JSON text of the validated instance).
    pub text: String,
    /// The validated instance, when the call had a schema.
    pub json: Option<Value>,
    /// Tokens the call used.
    pub usage: Usage,
    /// The provider model id that answered.
    pub model: String,
}

/// Why an agent call did not produce output; mirrors the WIT `agent-error` variant. Each case
/// carries the host's human-readable reason.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AgentError {
    /// The token budget cannot cover the call's worst case; nothing was sent.
    BudgetExhausted(String),
    /// The run's agent cap is reached.
    AgentLimit(String),
    /// The model's output never matched the schema within the allowed attempts.
    SchemaMismatch(String),
    /// The provider failed (after retries).
    Provider(String),
    /// The call exceeded its time limit.
    Timeout(String),
    /// The call was cancelled by the workflow or because the run ended.
    Cancelled(String),
    /// The call asked for something the run does not grant (a tool, a model).
    Denied(String),
    /// The call's options are invalid (an unparsable or unsatisfiable schema, an unknown id).
    InvalidInput(String),
}

impl AgentError {
    /// The stable kebab-case name of the case, as in the WIT contract (`"agent-limit"`).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BudgetExhausted(_) => "budget-exhausted",
            Self::AgentLimit(_) => "agent-limit",
            Self::SchemaMismatch(_) => "schema-mismatch",
            Self::Provider(_) => "provider",
            Self::Timeout(_) => "timeout",
            Self::Cancelled(_) => "cancelled",
            Self::Denied(_) => "denied",
            Self::InvalidInput(_) => "invalid-input",
        }
    }

    /// The host's reason.
    pub fn message(&self) -> &str {
        match self {
            Self::BudgetExhausted(m)
            | Self::AgentLimit(m)
            | Self::SchemaMismatch(m)
            | Self::Provider(m)
            | Self::Timeout(m)
            | Self::Cancelled(m)
            | Self::Denied(m)
            | Self::InvalidInput(m) => m,
        }
    }

    pub(crate) fn from_wit(error: wit::AgentError) -> Self {
        match error {
            wit::AgentError::BudgetExhausted(m) => Self::BudgetExhausted(m),
            wit::AgentError::AgentLimit(m) => Self::AgentLimit(m),
            wit::AgentError::SchemaMismatch(m) => Self::SchemaMismatch(m),
            wit::AgentError::Provider(m) => Self::Provider(m),
            wit::AgentError::Timeout(m) => Self::Timeout(m),
            wit::AgentError::Cancelled(m) => Self::Cancelled(m),
            wit::AgentError::Denied(m) => Self::Denied(m),
            wit::AgentError::InvalidInput(m) => Self::InvalidInput(m),
        }
    }
}

impl fmt::Display for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind(), self.message())
    }
}

impl std::error::Error for AgentError {}

/// Converts a host outcome into the SDK's types.
pub(crate) fn outcome_from_wit(
    outcome: Result<wit::AgentOutput, wit::AgentError>,
) -> Result<AgentOutput, AgentError> {
    let output = outcome.map_err(AgentError::from_wit)?;
    let json = match output.json {
        None => None,
        // The host validated the instance, so this only fails if the host is broken; report it
        // as a provider failure rather than losing the text silently.
        Some(text) => Some(serde_json::from_str(&text).map_err(|e| {
            AgentError::Provider(format!(
                "the host returned invalid JSON for the instance: {e}"
            ))
        })?),
    };
    Ok(AgentOutput {
        text: output.text,
        json,
        usage: Usage {
            input_tokens: output.usage.input_tokens,
            output_tokens: output.usage.output_tokens,
            cache_read_tokens: output.usage.cache_read_tokens,
            cache_write_tokens: output.usage.cache_write_tokens,
        },
        model: output.model,
    })
}

/// Starts an agent call when first polled and resolves to its outcome.
///
/// ```no_run
/// # async fn example() -> Result<(), guest_sdk::Error> {
/// use guest_sdk::{AgentOptions, agent};
/// let review = agent("Review src/lib.rs", AgentOptions::new().model("haiku")).await?;
/// guest_sdk::log(&review.text);
/// # Ok(()) }
/// ```
///
/// Nothing is sent until the future is polled (or [`AgentCall::start`] is called), so building
/// many calls and handing them to [`parallel`](crate::parallel) starts them all at once. A call
/// the host refuses synchronously (`agent-limit`, `invalid-input`, `budget-exhausted`) resolves to
/// that error.
pub fn agent(prompt: impl Into<String>, options: AgentOptions) -> AgentCall {
    AgentCall {
        state: CallState::Unstarted {
            prompt: prompt.into(),
            options,
        },
    }
}

/// Starts one agent call and blocks the whole workflow until it finishes (the host's `call`).
///
/// Prefer [`agent`], which lets other calls run meanwhile.
pub fn agent_blocking(prompt: &str, options: &AgentOptions) -> Result<AgentOutput, AgentError> {
    outcome_from_wit(wit::call(prompt, &options.to_wit()))
}

/// Runs a batch of agent calls with the host's `parallel` (under the run's caps) and blocks the
/// workflow until all have finished; outcomes are in request order.
///
/// [`parallel`](crate::parallel) over [`agent`] futures does the same from the guest side and
/// lets the workflow react to each completion; this one hands the whole batch to the host.
pub fn host_parallel<I, S>(requests: I) -> Vec<Result<AgentOutput, AgentError>>
where
    I: IntoIterator<Item = (S, AgentOptions)>,
    S: Into<String>,
{
    let requests: Vec<wit::AgentRequest> = requests
        .into_iter()
        .map(|(prompt, options)| wit::AgentRequest {
            prompt: prompt.into(),
            options: options.to_wit(),
        })
        .collect();
    wit::parallel(&requests)
        .into_iter()
        .map(outcome_from_wit)
        .collect()
}

/// An agent call; a future resolving to its outcome. Created by [`agent`].
///
/// Dropping a call that is still running cancels it on the host.
#[derive(Debug)]
#[must_use = "an agent call does nothing until it is awaited or started"]
pub struct AgentCall {
    state: CallState,
}

#[derive(Debug)]
enum CallState {
    Unstarted {
        prompt: String,
        options: AgentOptions,
    },
    /// Refused before reaching the host, or by the host's `start`; returned on the next poll.
    Failed(AgentError),
    Running(CallId),
    /// The outcome was handed out; the id is kept for [`AgentCall::id`].
    Finished(Option<CallId>),
}

impl AgentCall {
    /// Starts the call now instead of on first poll. Does nothing if it already started.
    ///
    /// A synchronous refusal by the host is kept and returned when the call is awaited.
    pub fn start(&mut self) {
        if let CallState::Unstarted { prompt, options } = &self.state {
            self.state = match executor::start_call(prompt, options) {
                Ok(id) => CallState::Running(id),
                Err(error) => CallState::Failed(error),
            };
        }
    }

    /// The host's id of the call, once it has started successfully.
    pub fn id(&self) -> Option<u64> {
        match self.state {
            CallState::Running(id) => Some(id),
            CallState::Finished(id) => id,
            CallState::Unstarted { .. } | CallState::Failed(_) => None,
        }
    }

    /// Cancels the call. A call not started yet never starts and resolves to `cancelled`; a
    /// running call resolves to `cancelled` unless it finished before the host saw the request.
    pub fn cancel(&mut self) {
        match &self.state {
            CallState::Unstarted { .. } => {
                self.state = CallState::Failed(AgentError::Cancelled(
                    "cancelled by the workflow before it started".to_owned(),
                ));
            }
            CallState::Running(id) => executor::cancel_call(*id),
            CallState::Failed(_) | CallState::Finished(_) => {}
        }
    }
}

impl Future for AgentCall {
    type Output = Result<AgentOutput, AgentError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.start();
        match std::mem::replace(&mut this.state, CallState::Finished(None)) {
            CallState::Failed(error) => Poll::Ready(Err(error)),
            CallState::Running(id) => match executor::poll_call(id, cx.waker()) {
                Some(outcome) => {
                    this.state = CallState::Finished(Some(id));
                    Poll::Ready(outcome)
                }
                None => {
                    this.state = CallState::Running(id);
                    Poll::Pending
                }
            },
            CallState::Finished(_) => panic!("an agent call was polled after it completed"),
            CallState::Unstarted { .. } => unreachable!("start() leaves no call unstarted"),
        }
    }
}

impl Drop for AgentCall {
    fn drop(&mut self) {
        if let CallState::Running(id) = self.state {
            executor::abandon_call(id);
        }
    }
}
