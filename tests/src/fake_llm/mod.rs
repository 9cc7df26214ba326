//! Fake LLM servers on 127.0.0.1 that speak the Anthropic Messages API and OpenAI-compatible
//! Chat Completions, for tests, benchmarks and an offline demo (`fake-llm` binary).
//!
//! A server validates every request against the documented shape and rejects a malformed one
//! the way the real provider does (status and error body). What it answers is scripted per test
//! ([`FakeLlm::script`]): text, tool calls, schema submissions, rate limits with `retry-after`,
//! overload, server errors, spend limits, garbage, slow answers. Unscripted requests get an
//! automatic answer: a valid instance of the submit tool's schema when one is offered, else text.
//! Every request is recorded ([`FakeLlm::received`]) so tests can check it field by field.
//!
//! Prompt caching is simulated: tokens are counted as bytes / 4, and a request reports cache
//! reads only for a prefix that an earlier answered request wrote — at `cache_control`
//! breakpoints for Anthropic, automatically on 128-token steps from 1024 tokens for OpenAI.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use corral_host::config::{ProviderKind, ProviderSettings};
use corral_host::provider::anthropic::AnthropicProvider;
use corral_host::provider::openai::OpenAiProvider;
use corral_host::provider::{ApiKey, Provider, RetryPolicy};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::oneshot;

mod anthropic;
mod openai;

/// Smallest cacheable prefix, in tokens, as the providers document it.
pub const MIN_CACHE_TOKENS: u64 = 1024;

/// Which protocol a fake server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Anthropic Messages API at `/v1/messages`.
    Anthropic,
    /// OpenAI Chat Completions at `/v1/chat/completions`.
    OpenAi,
}

/// A failure the server can be scripted to answer with, in the protocol's own format.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// 429 rate limit, with this `retry-after` header if given.
    RateLimited {
        /// The `retry-after` value.
        retry_after: Option<String>,
    },
    /// Overload: Anthropic's 529 `overloaded_error`, OpenAI's 503.
    Overloaded,
    /// 500.
    ServerError,
    /// 429 because money ran out (Anthropic `enforced_spend_limit_reached`, OpenAI
    /// `insufficient_quota`): not worth retrying.
    SpendLimit,
    /// 400 with this message.
    BadRequest(String),
}

/// What the server does with one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A submit-tool call with a valid instance of its schema when offered (or JSON text when the
    /// request asks for `response_format`), else a short text.
    Auto,
    /// A final text answer.
    Text(String),
    /// A call of `name` with `input`.
    ToolUse {
        /// The tool.
        name: String,
        /// Its input.
        input: Value,
    },
    /// A final text that repeats everything the request carried except the authentication
    /// header: every other header and the whole body.
    EchoRequest,
    /// A final text that repeats the authentication header's value (a hostile server).
    EchoKey,
    /// An error answer.
    Fail(Failure),
    /// A 200 answer whose body is not JSON.
    Garbage,
    /// Wait, then answer.
    Delay(Duration, Box<Reply>),
}

impl Reply {
    /// A call of the submit tool.
    pub fn submit(input: Value) -> Self {
        Reply::ToolUse {
            name: "submit".to_string(),
            input,
        }
    }

    /// A call of any tool.
    pub fn tool(name: &str, input: Value) -> Self {
        Reply::ToolUse {
            name: name.to_string(),
            input,
        }
    }

    /// A final text answer.
    pub fn text(text: &str) -> Self {
        Reply::Text(text.to_string())
    }

    /// A 429 with `retry-after: <seconds>`.
    pub fn rate_limited(seconds: u32) -> Self {
        Reply::Fail(Failure::RateLimited {
            retry_after: Some(seconds.to_string()),
        })
    }

    /// This reply after `delay`.
    pub fn delayed(self, delay: Duration) -> Self {
        Reply::Delay(delay, Box::new(self))
    }
}

/// One request the server received, and what it answered.
#[derive(Debug, Clone)]
pub struct Received {
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Headers, names lowercased.
    pub headers: BTreeMap<String, String>,
    /// The body as JSON (`Null` when it was not JSON).
    pub body: Value,
    /// The status answered.
    pub status: u16,
    /// The usage reported (`Null` for error answers).
    pub usage: Value,
}

struct State {
    protocol: Protocol,
    key: Option<String>,
    script: Mutex<VecDeque<Reply>>,
    /// Replies for requests whose body contains a text, before the queue: every such request.
    matching: Mutex<Vec<(String, Reply)>>,
    received: Mutex<Vec<Received>>,
    /// Hashes of prefixes written to the simulated prompt cache.
    cache: Mutex<HashSet<u64>>,
    counter: AtomicU64,
    /// How long every answer takes.
    latency: Mutex<Duration>,
}

/// A running fake server; stops when dropped.
pub struct FakeLlm {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeLlm {
    /// Starts a server for `protocol` on a free port of 127.0.0.1 (or `port`), requiring `key`
    /// (if given) in the protocol's authentication header.
    pub fn start(protocol: Protocol, key: Option<&str>) -> Self {
        FakeLlm::start_on(protocol, key, 0).expect("the fake LLM server binds 127.0.0.1")
    }

    /// Starts a server on `port` of 127.0.0.1 (0: any free port).
    pub fn start_on(protocol: Protocol, key: Option<&str>, port: u16) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            protocol,
            key: key.map(str::to_string),
            script: Mutex::new(VecDeque::new()),
            matching: Mutex::new(Vec::new()),
            received: Mutex::new(Vec::new()),
            cache: Mutex::new(HashSet::new()),
            counter: AtomicU64::new(0),
            latency: Mutex::new(Duration::ZERO),
        });
        let (stop, stopped) = oneshot::channel();
        let serving = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name(format!("fake-llm-{}", addr.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime");
                runtime.block_on(serve(listener, serving, stopped));
            })?;
        Ok(FakeLlm {
            addr,
            state,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL a provider is configured with: `http://127.0.0.1:PORT` for Anthropic
    /// (requests go to `/v1/messages`), `http://127.0.0.1:PORT/v1` for OpenAI.
    pub fn url(&self) -> String {
        match self.state.protocol {
            Protocol::Anthropic => format!("http://{}", self.addr),
            Protocol::OpenAi => format!("http://{}/v1", self.addr),
        }
    }

    /// Queues replies for the next requests, in order; later requests get [`Reply::Auto`].
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        lock(&self.state.script).extend(replies);
    }

    /// Answers every request whose body contains `text` (as JSON text) with `reply`, before the
    /// queue of [`FakeLlm::script`]: for concurrent calls, whose order of arrival is not fixed.
    pub fn script_matching(&self, text: &str, reply: Reply) {
        lock(&self.state.matching).push((text.to_string(), reply));
    }

    /// Makes every later answer take `latency` (as a real model does), on top of scripted delays.
    pub fn set_latency(&self, latency: Duration) {
        *lock(&self.state.latency) = latency;
    }

    /// Every request received so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.state.received).clone()
    }

    /// Provider settings pointing at this server, with its key and a fast retry policy.
    pub fn settings(&self) -> ProviderSettings {
        let (name, kind) = match self.state.protocol {
            Protocol::Anthropic => ("anthropic", ProviderKind::Anthropic),
            Protocol::OpenAi => ("openai", ProviderKind::OpenAi),
        };
        let key = self
            .state
            .key
            .as_deref()
            .map(|key| ApiKey::new(key).expect("a valid key"));
        let mut settings = ProviderSettings::new(name, kind, &self.url(), key);
        settings.retry = RetryPolicy {
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(40),
            max_retry_after: Duration::from_secs(2),
            request_timeout: Duration::from_secs(20),
            ..RetryPolicy::default()
        };
        settings
    }

    /// A provider for `settings` (usually [`settings`](Self::settings), adjusted).
    pub fn provider_with(settings: ProviderSettings) -> Arc<dyn Provider> {
        match settings.kind {
            ProviderKind::Anthropic => {
                Arc::new(AnthropicProvider::new(settings).expect("a valid provider"))
            }
            ProviderKind::OpenAi => {
                Arc::new(OpenAiProvider::new(settings).expect("a valid provider"))
            }
            ProviderKind::Sim => panic!("a fake server is not the simulated provider"),
        }
    }

    /// A provider pointing at this server.
    pub fn provider(&self) -> Arc<dyn Provider> {
        FakeLlm::provider_with(self.settings())
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

async fn serve(
    listener: std::net::TcpListener,
    state: Arc<State>,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    let service = service_fn(move |request| handle(Arc::clone(&state), request));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
            _ = &mut stopped => return,
        }
    }
}

/// An answer before it is put on the wire.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    usage: Value,
}

impl Answer {
    fn json(status: u16, body: Value) -> Self {
        Answer {
            status,
            headers: Vec::new(),
            body: body.to_string(),
            usage: Value::Null,
        }
    }
}

async fn handle(
    state: Arc<State>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let headers: BTreeMap<String, String> = request
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_lowercase(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let bytes = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let answer = answer(&state, &method, &path, &headers, &bytes, &body).await;
    lock(&state.received).push(Received {
        method,
        path,
        headers,
        body,
        status: answer.status,
        usage: answer.usage.clone(),
    });
    let mut response = Response::builder()
        .status(StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json");
    for (name, value) in &answer.headers {
        response = response.header(name, value);
    }
    Ok(response
        .body(Full::new(Bytes::from(answer.body)))
        .expect("a valid response"))
}

async fn answer(
    state: &State,
    method: &str,
    path: &str,
    headers: &BTreeMap<String, String>,
    bytes: &[u8],
    body: &Value,
) -> Answer {
    let protocol = state.protocol;
    let checked = match protocol {
        Protocol::Anthropic => {
            anthropic::check(method, path, headers, state.key.as_deref(), bytes, body)
        }
        Protocol::OpenAi => openai::check(method, path, headers, state.key.as_deref(), bytes, body),
    };
    if let Err(rejection) = checked {
        return rejection;
    }
    // A real server looks its cache up when it reads the prompt, long before it answers.
    let prompt = {
        let cache = lock(&state.cache);
        match protocol {
            Protocol::Anthropic => anthropic::prompt_usage(body, &cache),
            Protocol::OpenAi => openai::prompt_usage(body, &cache),
        }
    };
    let matched = {
        let matching = lock(&state.matching);
        let text = body.to_string();
        matching
            .iter()
            .find(|(needle, _)| text.contains(needle.as_str()))
            .map(|(_, reply)| reply.clone())
    };
    let mut reply = matched
        .or_else(|| lock(&state.script).pop_front())
        .unwrap_or(Reply::Auto);
    let latency = *lock(&state.latency);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    while let Reply::Delay(delay, then) = reply {
        tokio::time::sleep(delay).await;
        reply = *then;
    }
    let serial = state.counter.fetch_add(1, Ordering::SeqCst) + 1;
    let content = match reply {
        Reply::Fail(failure) => {
            return match protocol {
                Protocol::Anthropic => anthropic::failure(&failure),
                Protocol::OpenAi => openai::failure(&failure),
            };
        }
        Reply::Garbage => {
            return Answer {
                status: 200,
                headers: Vec::new(),
                body: "{\"id\": \"msg_tru".to_string(),
                usage: Value::Null,
            };
        }
        Reply::EchoRequest => {
            let auth = match protocol {
                Protocol::Anthropic => "x-api-key",
                Protocol::OpenAi => "authorization",
            };
            let shown: Vec<String> = headers
                .iter()
                .filter(|(name, _)| name.as_str() != auth)
                .map(|(name, value)| format!("{name}: {value}"))
                .collect();
            Content::Text(format!(
                "{}\n\n{}",
                shown.join("\n"),
                String::from_utf8_lossy(bytes)
            ))
        }
        Reply::EchoKey => {
            let value = match protocol {
                Protocol::Anthropic => headers.get("x-api-key"),
                Protocol::OpenAi => headers.get("authorization"),
            };
            Content::Text(format!(
                "the key you sent is {}",
                value.map_or("", String::as_str)
            ))
        }
        Reply::Text(text) => Content::Text(text),
        Reply::ToolUse { name, input } => Content::Tool { name, input },
        Reply::Auto => auto(protocol, body, serial),
        Reply::Delay(..) => unreachable!("delays are unwrapped above"),
    };
    lock(&state.cache).extend(prompt.writes);
    match protocol {
        Protocol::Anthropic => anthropic::respond(body, content, serial, prompt.usage),
        Protocol::OpenAi => openai::respond(body, content, serial, prompt.usage),
    }
}

/// The prompt side of a request's usage, and the cache entries its answer writes.
struct PromptUsage {
    usage: Value,
    writes: Vec<u64>,
}

/// What a successful answer says.
enum Content {
    Text(String),
    Tool { name: String, input: Value },
}

/// The automatic answer: submit a valid instance when the request offers the submit tool (or
/// asks for a JSON schema answer), else text.
fn auto(protocol: Protocol, body: &Value, serial: u64) -> Content {
    let tools = body["tools"].as_array().cloned().unwrap_or_default();
    let submit_schema = tools.iter().find_map(|tool| match protocol {
        Protocol::Anthropic => (tool["name"] == "submit").then(|| tool["input_schema"].clone()),
        Protocol::OpenAi => {
            (tool["function"]["name"] == "submit").then(|| tool["function"]["parameters"].clone())
        }
    });
    if let Some(schema) = submit_schema {
        return Content::Tool {
            name: "submit".to_string(),
            input: corral_host::schema::example_instance(&schema, serial, FAKE_ANSWER_BYTES)
                .unwrap_or(Value::Null),
        };
    }
    if protocol == Protocol::OpenAi && body["response_format"]["type"] == "json_schema" {
        let schema = &body["response_format"]["json_schema"]["schema"];
        let instance = corral_host::schema::example_instance(schema, serial, FAKE_ANSWER_BYTES)
            .unwrap_or(Value::Null);
        return Content::Text(instance.to_string());
    }
    Content::Text(format!("fake answer {serial}"))
}

/// Largest structured answer the fake generates.
const FAKE_ANSWER_BYTES: usize = 1 << 20;

/// Tokens of `bytes` bytes, as the fake counts them.
fn tokens(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(4)
}

/// Text of every kind of JSON value, for counting output tokens.
fn output_tokens(content: &Content, max_tokens: u64) -> u64 {
    let bytes = match content {
        Content::Text(text) => text.len(),
        Content::Tool { name, input } => name.len() + input.to_string().len(),
    };
    tokens(bytes).max(1).min(max_tokens.max(1))
}

/// A 400 in the shape of `protocol`.
fn invalid(protocol: Protocol, message: impl Into<String>) -> Answer {
    let message = message.into();
    match protocol {
        Protocol::Anthropic => anthropic::error(400, "invalid_request_error", &message, None),
        Protocol::OpenAi => Answer::json(
            400,
            json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}}),
        ),
    }
}
