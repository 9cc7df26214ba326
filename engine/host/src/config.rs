//! `corral.toml`: which providers exist, where they live, which environment variable holds each
//! key, model aliases, and prices.
//!
//! Without a file, three providers exist: `sim`, `anthropic` and `openai`. A file's
//! `[providers.NAME]` table either changes one of them (only the fields it names) or adds a new
//! one (then `kind` is required), such as a local vLLM, llama.cpp or Ollama server:
//!
//! ```toml
//! default_provider = "local"
//!
//! [providers.local]
//! kind = "openai"
//! base_url = "http://127.0.0.1:8000/v1"
//! api_key_env = ""            # the server needs no key
//! model = "qwen2.5-coder-32b"
//! structured_output = "response_format"
//!
//! [prices."claude-sonnet-4-6"]
//! input = 3.0                 # dollars per million tokens
//! output = 15.0
//! cache_write = 3.75
//! cache_read = 0.30
//! ```
//!
//! A base URL comes from the file, else from `ANTHROPIC_BASE_URL` / `OPENAI_BASE_URL` (the
//! variables the official SDKs read), else the public endpoint. Keys are only ever read from the
//! environment, never from the file, and never leave the host.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::limits::parse_duration;
pub use crate::provider::settings::{
    MaxTokensField, ProviderKind, ProviderSettings, StructuredOutput,
};
use crate::provider::{ApiKey, RetryPolicy, Usage};

/// The file `corral run` reads when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_FILE: &str = "corral.toml";

/// A configuration problem, naming the file and the field.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The file is not valid TOML or has unknown or mistyped fields.
    #[error("{path} is not a valid corral.toml: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why, with the line.
        message: String,
    },
    /// A provider name that is neither built in nor configured.
    #[error("unknown provider '{name}': the providers are {known}")]
    UnknownProvider {
        /// The name asked for.
        name: String,
        /// The names that exist, comma-separated.
        known: String,
    },
    /// A field's value is wrong.
    #[error("provider '{provider}': {message}")]
    Invalid {
        /// The provider.
        provider: String,
        /// What is wrong.
        message: String,
    },
    /// The provider needs a key and its variable is not set.
    #[error(
        "provider '{provider}' needs an API key: set {variable} (or name another variable with api_key_env in corral.toml; an empty api_key_env means no key)"
    )]
    MissingKey {
        /// The provider.
        provider: String,
        /// The environment variable that should hold the key.
        variable: String,
    },
}

/// Dollars per million tokens of one model.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Uncached input.
    pub input: f64,
    /// Output.
    pub output: f64,
    /// Input written to the prompt cache (defaults to `input`).
    pub cache_write: Option<f64>,
    /// Input read from the prompt cache (defaults to `input`).
    pub cache_read: Option<f64>,
}

impl Price {
    /// What `usage` costs, in dollars.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let per_token =
            |tokens: u64, dollars_per_million: f64| tokens as f64 * dollars_per_million / 1e6;
        per_token(usage.input_tokens, self.input)
            + per_token(usage.output_tokens, self.output)
            + per_token(
                usage.cache_write_tokens,
                self.cache_write.unwrap_or(self.input),
            )
            + per_token(
                usage.cache_read_tokens,
                self.cache_read.unwrap_or(self.input),
            )
    }
}

/// One `[providers.NAME]` table as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderTable {
    /// `sim`, `anthropic` or `openai`.
    pub kind: Option<ProviderKind>,
    /// Endpoint root: `https://api.anthropic.com`, or an OpenAI-compatible `.../v1`.
    pub base_url: Option<String>,
    /// The environment variable holding the key (`""`: the provider needs none).
    pub api_key_env: Option<String>,
    /// The default model (an alias or an id).
    pub model: Option<String>,
    /// Model aliases (`haiku`, `sonnet`, `opus`, or any name) → model ids.
    #[serde(default)]
    pub models: BTreeMap<String, String>,
    /// Time one request may take, e.g. `5m`.
    pub timeout: Option<String>,
    /// Retries of a transient failure.
    pub max_retries: Option<u32>,
    /// Longest `retry-after` honoured, e.g. `60s`.
    pub max_retry_after: Option<String>,
    /// Mark shared prefixes cacheable and send the first of a group of siblings first.
    pub prompt_cache: Option<bool>,
    /// Model id prefixes that accept an effort setting; for others it is ignored with a warning.
    pub effort_models: Option<Vec<String>>,
    /// OpenAI-compatible only: how schema answers are asked for.
    pub structured_output: Option<StructuredOutput>,
    /// OpenAI-compatible only: the output-limit field.
    pub max_tokens_field: Option<MaxTokensField>,
    /// Anthropic only: the `anthropic-version` header.
    pub anthropic_version: Option<String>,
}

/// A `corral.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorralConfig {
    /// The provider used when `--provider` is not given (default `sim`).
    pub default_provider: Option<String>,
    /// Provider tables by name.
    #[serde(default)]
    pub providers: BTreeMap<String, ProviderTable>,
    /// Prices by model id.
    #[serde(default)]
    pub prices: BTreeMap<String, Price>,
    /// `[tenants.NAME]` tables, for `corral serve`; the run service reads them (the host
    /// knows no tenants).
    #[serde(default)]
    pub tenants: BTreeMap<String, toml::Table>,
    /// `[agents]`: defaults of agent settings that a flag overrides.
    #[serde(default)]
    pub agents: AgentDefaults,
}

/// The `[agents]` table of a `corral.toml`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentDefaults {
    /// Answers a schema'd agent may hand in (`--schema-attempts`).
    pub schema_attempts: Option<u32>,
}

impl ProviderSettings {
    /// Settings for a provider of `kind` at `base_url` with the built-in defaults of its kind
    /// (the constructor tests and benchmarks use to point a provider at a local server).
    pub fn new(name: &str, kind: ProviderKind, base_url: &str, api_key: Option<ApiKey>) -> Self {
        let defaults = builtin(kind);
        ProviderSettings {
            name: name.to_string(),
            kind,
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key,
            default_model: defaults.model.unwrap_or_default(),
            models: defaults.models,
            retry: RetryPolicy::default(),
            prompt_cache: defaults.prompt_cache.unwrap_or(false),
            effort_models: defaults.effort_models.unwrap_or_default(),
            structured_output: StructuredOutput::default(),
            max_tokens_field: defaults.max_tokens_field.unwrap_or_default(),
            anthropic_version: defaults.anthropic_version.unwrap_or_default(),
        }
    }
}

/// The built-in table of a provider kind.
fn builtin(kind: ProviderKind) -> ProviderTable {
    let aliases = |pairs: [(&str, &str); 3]| {
        pairs
            .iter()
            .map(|(a, m)| (a.to_string(), m.to_string()))
            .collect()
    };
    match kind {
        ProviderKind::Sim => ProviderTable {
            kind: Some(kind),
            ..ProviderTable::default()
        },
        ProviderKind::Anthropic => ProviderTable {
            kind: Some(kind),
            base_url: Some("https://api.anthropic.com".to_string()),
            api_key_env: Some("ANTHROPIC_API_KEY".to_string()),
            model: Some("sonnet".to_string()),
            models: aliases([
                ("haiku", "claude-haiku-4-5"),
                ("sonnet", "claude-sonnet-4-6"),
                ("opus", "claude-opus-4-7"),
            ]),
            prompt_cache: Some(true),
            effort_models: Some(
                [
                    "claude-opus-4-5",
                    "claude-opus-4-6",
                    "claude-opus-4-7",
                    "claude-opus-4-8",
                    "claude-sonnet-4-6",
                    "claude-opus-5",
                    "claude-sonnet-5",
                ]
                .map(String::from)
                .to_vec(),
            ),
            anthropic_version: Some("2023-06-01".to_string()),
            ..ProviderTable::default()
        },
        ProviderKind::OpenAi => ProviderTable {
            kind: Some(kind),
            base_url: Some("https://api.openai.com/v1".to_string()),
            api_key_env: Some("OPENAI_API_KEY".to_string()),
            model: Some("sonnet".to_string()),
            models: aliases([
                ("haiku", "gpt-5-mini"),
                ("sonnet", "gpt-5"),
                ("opus", "gpt-5"),
            ]),
            prompt_cache: Some(true),
            effort_models: Some(["o1", "o3", "o4", "gpt-5"].map(String::from).to_vec()),
            max_tokens_field: Some(MaxTokensField::MaxCompletionTokens),
            ..ProviderTable::default()
        },
    }
}

/// The environment variable that moves a kind's base URL, as the official SDKs name it.
fn base_url_variable(kind: ProviderKind) -> Option<&'static str> {
    match kind {
        ProviderKind::Anthropic => Some("ANTHROPIC_BASE_URL"),
        ProviderKind::OpenAi => Some("OPENAI_BASE_URL"),
        ProviderKind::Sim => None,
    }
}

/// Built-in prices (dollars per million tokens) of the built-in aliases' models.
fn builtin_prices() -> BTreeMap<String, Price> {
    let price = |input: f64, output: f64, write: f64, read: f64| Price {
        input,
        output,
        cache_write: Some(input * write),
        cache_read: Some(input * read),
    };
    [
        ("claude-haiku-4-5", price(1.0, 5.0, 1.25, 0.1)),
        ("claude-sonnet-4-6", price(3.0, 15.0, 1.25, 0.1)),
        ("claude-opus-4-7", price(5.0, 25.0, 1.25, 0.1)),
        ("gpt-5-mini", price(0.25, 2.0, 1.0, 0.1)),
        ("gpt-5", price(1.25, 10.0, 1.0, 0.1)),
    ]
    .into_iter()
    .map(|(model, price)| (model.to_string(), price))
    .collect()
}

impl CorralConfig {
    /// Parses the text of a `corral.toml` (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: error.to_string(),
        })
    }

    /// Reads `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            message: error.to_string(),
        })?;
        CorralConfig::parse(&text, path)
    }

    /// Reads `explicit` if given (it must exist), else [`DEFAULT_CONFIG_FILE`] in the current
    /// directory if it exists, else the built-in defaults.
    pub fn discover(explicit: Option<&Path>) -> Result<Self, ConfigError> {
        match explicit {
            Some(path) => CorralConfig::load(path),
            None if Path::new(DEFAULT_CONFIG_FILE).is_file() => {
                CorralConfig::load(Path::new(DEFAULT_CONFIG_FILE))
            }
            None => Ok(CorralConfig::default()),
        }
    }

    /// The provider to use when none is named.
    pub fn default_provider(&self) -> &str {
        self.default_provider.as_deref().unwrap_or("sim")
    }

    /// Every provider name, built in or configured.
    pub fn provider_names(&self) -> Vec<String> {
        let mut names: Vec<String> = ["anthropic", "openai", "sim"].map(String::from).to_vec();
        names.extend(
            self.providers
                .keys()
                .filter(|name| !names.contains(name))
                .cloned()
                .collect::<Vec<_>>(),
        );
        names.sort();
        names
    }

    /// The price of `model`, from the file or the built-in table.
    pub fn price(&self, model: &str) -> Option<Price> {
        self.prices
            .get(model)
            .copied()
            .or_else(|| builtin_prices().get(model).copied())
    }

    /// The settings of provider `name`, with `model` (e.g. `--model`) as its default model when
    /// given, reading keys and base URLs from the environment through `env`.
    pub fn provider_settings(
        &self,
        name: &str,
        model: Option<&str>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ProviderSettings, ConfigError> {
        let builtin_kind = match name {
            "sim" => Some(ProviderKind::Sim),
            "anthropic" => Some(ProviderKind::Anthropic),
            "openai" => Some(ProviderKind::OpenAi),
            _ => None,
        };
        let table = self.providers.get(name);
        let invalid = |message: String| ConfigError::Invalid {
            provider: name.to_string(),
            message,
        };
        let kind = match (table.and_then(|t| t.kind), builtin_kind) {
            (Some(kind), _) | (None, Some(kind)) => kind,
            (None, None) if table.is_some() => {
                return Err(invalid(
                    "set kind = \"anthropic\", \"openai\" or \"sim\"".to_string(),
                ));
            }
            (None, None) => {
                return Err(ConfigError::UnknownProvider {
                    name: name.to_string(),
                    known: self.provider_names().join(", "),
                });
            }
        };
        let mut base = builtin(kind);
        if builtin_kind.is_none() {
            // A provider of your own (a local server, a gateway) needs a key only when it names one.
            base.api_key_env = None;
        }
        let table = table.cloned().unwrap_or_default();

        let base_url = table
            .base_url
            .clone()
            .or_else(|| {
                base_url_variable(kind)
                    .and_then(env)
                    .filter(|url| !url.trim().is_empty())
            })
            .or(base.base_url)
            .unwrap_or_default();
        let base_url = base_url.trim().trim_end_matches('/').to_string();
        if kind != ProviderKind::Sim
            && !(base_url.starts_with("http://") || base_url.starts_with("https://"))
        {
            return Err(invalid(format!(
                "base_url '{base_url}' must start with http:// or https://"
            )));
        }

        let api_key = match table.api_key_env.clone().or(base.api_key_env) {
            Some(variable) if !variable.is_empty() && kind != ProviderKind::Sim => {
                let value = env(&variable).filter(|value| !value.trim().is_empty());
                let Some(value) = value else {
                    return Err(ConfigError::MissingKey {
                        provider: name.to_string(),
                        variable,
                    });
                };
                Some(
                    ApiKey::new(value)
                        .map_err(|message| invalid(format!("{variable}: {message}")))?,
                )
            }
            _ => None,
        };

        let duration = |field: &str, text: &Option<String>, default: Duration| match text {
            Some(text) => {
                parse_duration(text).map_err(|message| invalid(format!("{field}: {message}")))
            }
            None => Ok(default),
        };
        let defaults = RetryPolicy::default();
        let retry = RetryPolicy {
            max_retries: table.max_retries.unwrap_or(defaults.max_retries),
            request_timeout: duration("timeout", &table.timeout, defaults.request_timeout)?,
            max_retry_after: duration(
                "max_retry_after",
                &table.max_retry_after,
                defaults.max_retry_after,
            )?,
            ..defaults
        };
        if retry.request_timeout.is_zero() {
            return Err(invalid("timeout must be more than 0".to_string()));
        }

        let mut models = base.models;
        models.extend(table.models);
        let default_model = model
            .map(str::to_string)
            .or(table.model)
            .or(base.model)
            .unwrap_or_else(|| "default".to_string());
        Ok(ProviderSettings {
            name: name.to_string(),
            kind,
            base_url,
            api_key,
            default_model,
            models,
            retry,
            prompt_cache: table.prompt_cache.or(base.prompt_cache).unwrap_or(false),
            effort_models: table
                .effort_models
                .or(base.effort_models)
                .unwrap_or_default(),
            structured_output: table.structured_output.unwrap_or_default(),
            max_tokens_field: table
                .max_tokens_field
                .or(base.max_tokens_field)
                .unwrap_or_default(),
            anthropic_version: table
                .anthropic_version
                .or(base.anthropic_version)
                .unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests;
