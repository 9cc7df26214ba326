//! The one place that talks HTTP: posting a JSON request and sorting the outcome into an answer,
//! a transient failure (retried by the agent loop) or a fatal one.
//!
//! API keys live here. They go into one request header and nowhere else; whatever the provider
//! answers (text, tool inputs, error messages) has every occurrence of the key replaced before it
//! leaves this module, so that not even a provider that echoes its headers can show a guest a key.

use std::collections::HashSet;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::retry::parse_retry_after;
use super::{ProviderError, Spent};

/// How much of an error body is quoted in a message.
const MAX_QUOTED_BYTES: usize = 600;

/// An API key. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key; refuses one that cannot be sent as a header value.
    pub fn new(key: impl Into<String>) -> Result<Self, String> {
        let key = key.into().trim().to_string();
        if key.is_empty() {
            return Err("the API key is empty".to_string());
        }
        if HeaderValue::from_str(&key).is_err() {
            return Err(
                "the API key contains characters that cannot be sent in an HTTP header".to_string(),
            );
        }
        Ok(ApiKey(key))
    }

    /// The key itself, for the one header that carries it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// `text` with every occurrence of the key replaced.
    pub fn redact(&self, text: &str) -> String {
        text.replace(&self.0, "[redacted]")
    }

    /// `value` with every occurrence of the key in its strings (and keys) replaced.
    pub fn redact_json(&self, value: Value) -> Value {
        match value {
            Value::String(text) if text.contains(&self.0) => Value::String(self.redact(&text)),
            Value::Array(items) => Value::Array(
                items
                    .into_iter()
                    .map(|item| self.redact_json(item))
                    .collect(),
            ),
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(key, item)| (self.redact(&key), self.redact_json(item)))
                    .collect(),
            ),
            other => other,
        }
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

/// An HTTP client for one provider.
pub(crate) struct HttpClient {
    client: reqwest::Client,
    provider: &'static str,
    key: Option<ApiKey>,
}

impl HttpClient {
    /// A client for `provider` that authenticates with `key` (if any).
    pub(crate) fn new(provider: &'static str, key: Option<ApiKey>) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .user_agent(concat!("corral/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| format!("cannot create the HTTP client: {error}"))?;
        Ok(HttpClient {
            client,
            provider,
            key,
        })
    }

    /// The key, for the provider to build its auth header.
    pub(crate) fn key(&self) -> Option<&ApiKey> {
        self.key.as_ref()
    }

    /// Text from the provider, safe to hand on.
    pub(crate) fn redact(&self, text: &str) -> String {
        match &self.key {
            Some(key) => key.redact(text),
            None => text.to_string(),
        }
    }

    /// A JSON value from the provider, safe to hand on.
    pub(crate) fn redact_json(&self, value: Value) -> Value {
        match &self.key {
            Some(key) => key.redact_json(value),
            None => value,
        }
    }

    /// Posts `body` to `url` and returns the parsed JSON answer of a 2xx response.
    pub(crate) async fn post_json(
        &self,
        url: &str,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: &Value,
    ) -> Result<Value, ProviderError> {
        let mut request = self.client.post(url).json(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return Err(self.transport_error(url, &error)),
        };
        let status = response.status();
        let headers = response.headers().clone();
        let text = match response.text().await {
            Ok(text) => text,
            Err(error) => return Err(self.transport_error(url, &error)),
        };
        if status.is_success() {
            return serde_json::from_str(&text).map_err(|error| ProviderError::Transient {
                provider: self.provider.to_string(),
                message: format!(
                    "the answer is not valid JSON ({error}): {}",
                    self.quote(&text)
                ),
                retry_after: None,
                spent: Spent::Unknown,
            });
        }
        Err(self.status_error(status, &headers, &text))
    }

    fn transport_error(&self, url: &str, error: &reqwest::Error) -> ProviderError {
        // A refused connection never reached the provider; anything later might have been billed.
        let spent = if error.is_connect() {
            Spent::Nothing
        } else {
            Spent::Unknown
        };
        let what = if error.is_connect() {
            "cannot connect to"
        } else {
            "the request failed at"
        };
        ProviderError::Transient {
            provider: self.provider.to_string(),
            message: self.redact(&format!("{what} {url}: {}", error_chain(error))),
            retry_after: None,
            spent,
        }
    }

    fn status_error(&self, status: StatusCode, headers: &HeaderMap, text: &str) -> ProviderError {
        let detail = ErrorDetail::parse(text);
        let message = match &detail.message {
            Some(message) => format!("HTTP {status}: {}", self.quote(message)),
            None if text.trim().is_empty() => format!("HTTP {status}"),
            None => format!("HTTP {status}: {}", self.quote(text)),
        };
        let provider = self.provider.to_string();
        let code = status.as_u16();
        if code == 429 && detail.is_spend_limit() {
            let message =
                format!("{message} (a spend limit or quota is exhausted; retrying will not help)");
            return ProviderError::UsageLimit { provider, message };
        }
        if matches!(code, 408 | 409 | 429 | 529) || status.is_server_error() {
            return ProviderError::Transient {
                provider,
                message,
                retry_after: retry_after(headers),
                spent: Spent::Nothing,
            };
        }
        ProviderError::Fatal {
            provider,
            message,
            spent: Spent::Nothing,
        }
    }

    /// A redacted, length-limited quote of provider text.
    fn quote(&self, text: &str) -> String {
        let text = self.redact(text.trim());
        if text.len() <= MAX_QUOTED_BYTES {
            return text;
        }
        let mut end = MAX_QUOTED_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &text[..end])
    }
}

/// The wait a response asks for: `retry-after-ms` (OpenAI), else `retry-after`.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    if let Some(ms) = header("retry-after-ms").and_then(|ms| ms.trim().parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms.min(86_400_000.0) / 1000.0));
    }
    header("retry-after").and_then(|value| parse_retry_after(value, SystemTime::now()))
}

/// What an error body says, in either provider's format: Anthropic's
/// `{"type": "error", "error": {"type", "message", "details": {"error_code"}}}` or OpenAI's
/// `{"error": {"message", "type", "code", "param"}}`.
#[derive(Debug, Default)]
struct ErrorDetail {
    kind: Option<String>,
    code: Option<String>,
    message: Option<String>,
}

impl ErrorDetail {
    fn parse(text: &str) -> Self {
        let Ok(body) = serde_json::from_str::<Value>(text) else {
            return ErrorDetail::default();
        };
        let error = &body["error"];
        let string = |value: &Value| value.as_str().map(str::to_string);
        let kind = string(&error["type"]);
        let code = string(&error["code"]).or_else(|| string(&error["details"]["error_code"]));
        let message = string(&error["message"])
            .or_else(|| string(&body["message"]))
            .map(|message| match &kind {
                Some(kind) => format!("{kind}: {message}"),
                None => message,
            });
        ErrorDetail {
            kind,
            code,
            message,
        }
    }

    /// A 429 that waiting does not fix: money or quota ran out.
    fn is_spend_limit(&self) -> bool {
        const SPEND_LIMITS: [&str; 6] = [
            "enforced_spend_limit_reached",
            "insufficient_quota",
            "credit_balance_exhausted",
            "organization_spend_limit_exceeded",
            "project_spend_limit_exceeded",
            "organization_usage_limit_exceeded",
        ];
        [&self.kind, &self.code]
            .into_iter()
            .flatten()
            .any(|value| SPEND_LIMITS.contains(&value.as_str()))
    }
}

/// An error with its sources, which is where reqwest says what actually happened.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Warnings that are worth saying once per process, not once per agent.
#[derive(Debug, Default)]
pub(crate) struct WarnOnce {
    said: Mutex<HashSet<String>>,
}

impl WarnOnce {
    /// Prints `message` to stderr unless it was printed before; returns whether it printed.
    pub(crate) fn warn(&self, message: String) -> bool {
        let mut said = self.said.lock().unwrap_or_else(|p| p.into_inner());
        if said.contains(&message) {
            return false;
        }
        eprintln!("corral: warning: {message}");
        said.insert(message);
        true
    }

    /// Every warning printed so far.
    pub(crate) fn said(&self) -> Vec<String> {
        let said = self.said.lock().unwrap_or_else(|p| p.into_inner());
        let mut said: Vec<String> = said.iter().cloned().collect();
        said.sort();
        said
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_redacted_everywhere_and_never_printed() {
        let key = ApiKey::new("sk-secret-123").unwrap();
        assert_eq!(format!("{key:?}"), "ApiKey([redacted])");
        assert_eq!(
            key.redact("a sk-secret-123 b sk-secret-123"),
            "a [redacted] b [redacted]"
        );
        let value = json!({"x": ["sk-secret-123"], "sk-secret-123": 1, "n": 2});
        assert!(!key.redact_json(value).to_string().contains("sk-secret"));
        assert!(ApiKey::new("bad\nkey").is_err());
        assert!(ApiKey::new("  ").is_err());
    }

    #[test]
    fn error_bodies_of_both_providers_are_understood() {
        let anthropic = r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down","details":{"error_code":"enforced_spend_limit_reached"}}}"#;
        let detail = ErrorDetail::parse(anthropic);
        assert_eq!(
            detail.message.as_deref(),
            Some("rate_limit_error: slow down")
        );
        assert!(detail.is_spend_limit());
        let openai = r#"{"error":{"message":"quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
        assert!(ErrorDetail::parse(openai).is_spend_limit());
        let rate = r#"{"error":{"message":"rate","type":"requests","code":"rate_limit_exceeded"}}"#;
        assert!(!ErrorDetail::parse(rate).is_spend_limit());
    }

    #[test]
    fn statuses_are_sorted_into_transient_and_fatal() {
        let client = HttpClient::new("p", Some(ApiKey::new("k3y-value").unwrap())).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("3"));
        let limited = client.status_error(
            StatusCode::TOO_MANY_REQUESTS,
            &headers,
            r#"{"error":{"message":"k3y-value"}}"#,
        );
        let ProviderError::Transient {
            retry_after,
            message,
            ..
        } = limited
        else {
            panic!("429 is transient")
        };
        assert_eq!(retry_after, Some(Duration::from_secs(3)));
        assert!(!message.contains("k3y-value"), "{message}");
        let overloaded =
            client.status_error(StatusCode::from_u16(529).unwrap(), &HeaderMap::new(), "");
        assert!(matches!(overloaded, ProviderError::Transient { .. }));
        assert!(matches!(
            client.status_error(StatusCode::BAD_GATEWAY, &HeaderMap::new(), ""),
            ProviderError::Transient { .. }
        ));
        assert!(matches!(
            client.status_error(StatusCode::BAD_REQUEST, &HeaderMap::new(), ""),
            ProviderError::Fatal { .. }
        ));
        assert!(matches!(
            client.status_error(StatusCode::UNAUTHORIZED, &HeaderMap::new(), ""),
            ProviderError::Fatal { .. }
        ));
        let spend = r#"{"error":{"type":"insufficient_quota","message":"no money"}}"#;
        assert!(matches!(
            client.status_error(StatusCode::TOO_MANY_REQUESTS, &headers, spend),
            ProviderError::UsageLimit { .. }
        ));
        let mut ms = HeaderMap::new();
        ms.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(super::retry_after(&ms), Some(Duration::from_millis(250)));
    }
}
