//! A workflow's policy manifest (`policy.toml`): what the file itself says it may do. `corral
//! build --policy` and `corral sign --policy` embed it (as canonical JSON, so the same manifest
//! always gives the same bytes) in the `corral:policy` section; a run takes it as an upper bound:
//! every limit is the smallest of the manifest's and the run's, and a grant the manifest lacks is
//! denied whatever the flags say.
//!
//! ```toml
//! [grants]
//! tools = ["read", "grep"]        # agent (and workflow) tools; absent: none
//! providers = ["sim", "anthropic"] # absent: only sim
//! models = ["sonnet"]             # models calls and --model may name; absent: any
//!
//! [limits]                        # each absent limit is the run's own
//! max_agents = 50
//! max_concurrent = 4
//! budget_tokens = 200000
//! max_cpu = "30s"
//! max_memory = "128MiB"
//! timeout = "10m"
//! max_output_tokens = 4096
//! max_log_bytes = "1MiB"
//! max_tool_time = "1m"
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::agent_loop::AGENT_TOOLS;

/// Tools a manifest can grant besides the agents' ones: staging writes (`write`, `edit`,
/// `remove`, `revert`) and running allow-listed commands. The run's own grants
/// (`--allow-write`, `--allow-run`) still apply.
pub const SCRIPT_TOOLS: [&str; 2] = ["write", "run"];
use crate::limits::{RunLimits, format_duration, format_size, parse_duration, parse_size};

/// A parsed, checked manifest. Its JSON (durations in milliseconds, sizes in bytes) is what the
/// `corral:policy` section holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// What the workflow may use.
    #[serde(default)]
    pub grants: PolicyGrants,
    /// Upper bounds of the run's limits.
    #[serde(default)]
    pub limits: PolicyLimits,
}

/// What a manifest grants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyGrants {
    /// Tools the workflow and its agents may use (absent: none).
    #[serde(default)]
    pub tools: Vec<String>,
    /// Providers a run may use (absent: only `sim`, as for a tenant).
    #[serde(default)]
    pub providers: Option<Vec<String>>,
    /// Models agent calls and `--model` may name (absent: any).
    #[serde(default)]
    pub models: Option<Vec<String>>,
}

/// A manifest's limits; `None` leaves the run's own.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyLimits {
    /// `--max-agents`.
    pub max_agents: Option<u64>,
    /// `--max-concurrent`.
    pub max_concurrent: Option<usize>,
    /// `--budget-tokens`.
    pub budget_tokens: Option<u64>,
    /// `--max-cpu`, in milliseconds.
    pub max_cpu_ms: Option<u64>,
    /// `--max-memory`, in bytes.
    pub max_memory: Option<usize>,
    /// `--timeout`, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// `--max-output-tokens`.
    pub max_output_tokens: Option<u32>,
    /// `--max-log-bytes`.
    pub max_log_bytes: Option<usize>,
    /// `--max-tool-time`, in milliseconds.
    pub max_tool_time_ms: Option<u64>,
}

/// Why a manifest is refused, or refuses a run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The file is not a valid manifest.
    #[error("{file} is not a valid policy manifest: {reason}")]
    Invalid {
        /// The file.
        file: String,
        /// What is wrong (an unknown field is named).
        reason: String,
    },
    /// The run asks for something the manifest does not grant.
    #[error(
        "{what} '{name}' is not granted by the workflow's policy manifest ({section}); it grants: {granted}"
    )]
    NotGranted {
        /// `provider` or `model`.
        what: &'static str,
        /// What was asked for.
        name: String,
        /// Where in the manifest it would be granted.
        section: &'static str,
        /// What it grants.
        granted: String,
    },
}

/// `policy.toml` as written: durations and sizes as text (`"30s"`, `"128MiB"`) or numbers.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    grants: PolicyGrants,
    #[serde(default)]
    limits: LimitsFile,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct LimitsFile {
    max_agents: Option<u64>,
    max_concurrent: Option<usize>,
    budget_tokens: Option<u64>,
    max_cpu: Option<Amount>,
    max_memory: Option<Amount>,
    timeout: Option<Amount>,
    max_output_tokens: Option<u32>,
    max_log_bytes: Option<Amount>,
    max_tool_time: Option<Amount>,
}

/// A duration or size: text with a unit, or a bare number (seconds, bytes).
#[derive(Deserialize)]
#[serde(untagged)]
enum Amount {
    Number(u64),
    Text(String),
}

impl Amount {
    fn millis(self, field: &str) -> Result<u64, String> {
        let duration = match self {
            Amount::Number(seconds) => Duration::from_secs(seconds),
            Amount::Text(text) => parse_duration(&text).map_err(|e| format!("{field}: {e}"))?,
        };
        Ok(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
    }

    fn bytes(self, field: &str) -> Result<usize, String> {
        match self {
            Amount::Number(bytes) => Ok(usize::try_from(bytes).unwrap_or(usize::MAX)),
            Amount::Text(text) => parse_size(&text).map_err(|e| format!("{field}: {e}")),
        }
    }
}

impl Policy {
    /// Parses and checks `policy.toml` text; `file` names it in errors.
    pub fn from_toml(file: &str, text: &str) -> Result<Self, PolicyError> {
        let invalid = |reason: String| PolicyError::Invalid {
            file: file.to_string(),
            reason,
        };
        let raw: PolicyFile = toml::from_str(text).map_err(|e| invalid(e.message().to_string()))?;
        let l = raw.limits;
        let millis = |amount: Option<Amount>, field| amount.map(|a| a.millis(field)).transpose();
        let bytes = |amount: Option<Amount>, field| amount.map(|a| a.bytes(field)).transpose();
        let policy = Policy {
            grants: raw.grants,
            limits: PolicyLimits {
                max_agents: l.max_agents,
                max_concurrent: l.max_concurrent,
                budget_tokens: l.budget_tokens,
                max_cpu_ms: millis(l.max_cpu, "max_cpu").map_err(invalid)?,
                max_memory: bytes(l.max_memory, "max_memory").map_err(invalid)?,
                timeout_ms: millis(l.timeout, "timeout").map_err(invalid)?,
                max_output_tokens: l.max_output_tokens,
                max_log_bytes: bytes(l.max_log_bytes, "max_log_bytes").map_err(invalid)?,
                max_tool_time_ms: millis(l.max_tool_time, "max_tool_time").map_err(invalid)?,
            },
        };
        policy.check().map_err(invalid)?;
        Ok(policy)
    }

    /// Reads the JSON of a `corral:policy` section.
    pub fn from_section(payload: &[u8]) -> Result<Self, String> {
        let policy: Policy = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
        policy.check()?;
        Ok(policy)
    }

    /// The canonical JSON a `corral:policy` section holds.
    pub fn to_section(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a policy serialises")
    }

    fn check(&self) -> Result<(), String> {
        if let Some(tool) = self.grants.tools.iter().find(|tool| {
            !AGENT_TOOLS.contains(&tool.as_str()) && !SCRIPT_TOOLS.contains(&tool.as_str())
        }) {
            return Err(format!(
                "grants.tools: unknown tool '{tool}' (the tools are {}, {})",
                AGENT_TOOLS.join(", "),
                SCRIPT_TOOLS.join(", ")
            ));
        }
        let l = &self.limits;
        let zero = [
            ("max_agents", l.max_agents == Some(0)),
            ("max_concurrent", l.max_concurrent == Some(0)),
            ("max_cpu", l.max_cpu_ms == Some(0)),
            ("timeout", l.timeout_ms == Some(0)),
            ("max_output_tokens", l.max_output_tokens == Some(0)),
            ("max_tool_time", l.max_tool_time_ms == Some(0)),
        ];
        match zero.iter().find(|(_, is_zero)| *is_zero) {
            Some((name, _)) => Err(format!("limits.{name} must be greater than zero")),
            None => Ok(()),
        }
    }

    /// `limits` bounded by the manifest: each limit the smaller, and the grants narrowed.
    pub fn bound(&self, limits: &RunLimits) -> RunLimits {
        let l = &self.limits;
        let ms = |ms: Option<u64>, own: Duration| {
            ms.map_or(own, |ms| own.min(Duration::from_millis(ms)))
        };
        let mut out = limits.clone();
        out.max_agents = l
            .max_agents
            .map_or(out.max_agents, |v| v.min(out.max_agents));
        out.max_concurrent = l
            .max_concurrent
            .map_or(out.max_concurrent, |v| v.min(out.max_concurrent));
        out.budget_tokens = match (l.budget_tokens, out.budget_tokens) {
            (Some(own), Some(run)) => Some(own.min(run)),
            (own, run) => own.or(run),
        };
        out.max_cpu = ms(l.max_cpu_ms, out.max_cpu);
        out.timeout = ms(l.timeout_ms, out.timeout);
        out.tools.max_tool_time = ms(l.max_tool_time_ms, out.tools.max_tool_time);
        out.max_memory = l
            .max_memory
            .map_or(out.max_memory, |v| v.min(out.max_memory));
        out.max_log_bytes = l
            .max_log_bytes
            .map_or(out.max_log_bytes, |v| v.min(out.max_log_bytes));
        out.max_output_tokens = l
            .max_output_tokens
            .map_or(out.max_output_tokens, |v| v.min(out.max_output_tokens));
        out.grants.tools = Some(intersect(&self.grants.tools, out.grants.tools.as_deref()));
        if let Some(models) = &self.grants.models {
            out.grants.models = Some(intersect(models, out.grants.models.as_deref()));
        }
        out
    }

    /// Checks a run's provider and default model against the grants, before the run starts.
    pub fn check_provider(&self, provider: &str, model: Option<&str>) -> Result<(), PolicyError> {
        let providers = self
            .grants
            .providers
            .clone()
            .unwrap_or_else(|| vec!["sim".to_string()]);
        if !providers.iter().any(|p| p == provider) {
            return Err(PolicyError::NotGranted {
                what: "provider",
                name: provider.to_string(),
                section: "grants.providers",
                granted: providers.join(", "),
            });
        }
        if let (Some(models), Some(model)) = (&self.grants.models, model)
            && !models.iter().any(|m| m == model)
        {
            return Err(PolicyError::NotGranted {
                what: "model",
                name: model.to_string(),
                section: "grants.models",
                granted: models.join(", "),
            });
        }
        Ok(())
    }

    /// The manifest as `policy.toml` text (what `corral inspect` shows).
    pub fn to_toml(&self) -> String {
        let list = |items: &[String]| {
            let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
            format!("[{}]", quoted.join(", "))
        };
        let mut out = String::from("[grants]\n");
        out.push_str(&format!("tools = {}\n", list(&self.grants.tools)));
        if let Some(providers) = &self.grants.providers {
            out.push_str(&format!("providers = {}\n", list(providers)));
        }
        if let Some(models) = &self.grants.models {
            out.push_str(&format!("models = {}\n", list(models)));
        }
        out.push_str("\n[limits]\n");
        let l = &self.limits;
        let dur = |ms: u64| format!("{:?}", format_duration(Duration::from_millis(ms)));
        let size = |bytes: usize| format!("{:?}", format_size(bytes));
        let fields = [
            ("max_agents", l.max_agents.map(|v| v.to_string())),
            ("max_concurrent", l.max_concurrent.map(|v| v.to_string())),
            ("budget_tokens", l.budget_tokens.map(|v| v.to_string())),
            ("max_cpu", l.max_cpu_ms.map(dur)),
            ("max_memory", l.max_memory.map(size)),
            ("timeout", l.timeout_ms.map(dur)),
            (
                "max_output_tokens",
                l.max_output_tokens.map(|v| v.to_string()),
            ),
            ("max_log_bytes", l.max_log_bytes.map(size)),
            ("max_tool_time", l.max_tool_time_ms.map(dur)),
        ];
        for (name, value) in fields {
            if let Some(value) = value {
                out.push_str(&format!("{name} = {value}\n"));
            }
        }
        out
    }
}

/// `own` narrowed to `run` when the run already restricts it.
fn intersect(own: &[String], run: Option<&[String]>) -> Vec<String> {
    own.iter()
        .filter(|item| run.is_none_or(|run| run.contains(item)))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
        [grants]
        tools = ["read", "grep"]
        providers = ["sim"]
        models = ["sonnet"]
        [limits]
        max_agents = 5
        budget_tokens = 1000
        max_cpu = "2s"
        max_memory = "64MiB"
        timeout = 30
    "#;

    #[test]
    fn a_manifest_bounds_every_limit_it_names_and_only_those() {
        let policy = Policy::from_toml("policy.toml", MANIFEST).unwrap();
        let run = RunLimits {
            max_agents: 3,
            max_concurrent: 7,
            ..RunLimits::default()
        };
        let bounded = policy.bound(&run);
        assert_eq!(bounded.max_agents, 3, "the run's own is smaller");
        assert_eq!(bounded.max_concurrent, 7, "the manifest does not name it");
        assert_eq!(
            bounded.budget_tokens,
            Some(1000),
            "unlimited becomes the manifest's"
        );
        assert_eq!(bounded.max_cpu, Duration::from_secs(2));
        assert_eq!(bounded.max_memory, 64 << 20);
        assert_eq!(bounded.timeout, Duration::from_secs(30));
        assert_eq!(
            bounded.grants.tools.as_deref(),
            Some(&["read".to_string(), "grep".to_string()][..])
        );
        assert!(!bounded.grants.tool("git"));
        assert!(bounded.grants.model("sonnet") && !bounded.grants.model("opus"));
        assert_eq!(
            policy.bound(&bounded),
            bounded,
            "bounding twice changes nothing"
        );
    }

    #[test]
    fn unknown_fields_and_bad_values_are_named() {
        let error = Policy::from_toml("p.toml", "[limits]\nmax_agent = 3").unwrap_err();
        assert!(error.to_string().contains("max_agent"), "{error}");
        let error = Policy::from_toml("p.toml", "[grant]\ntools = []").unwrap_err();
        assert!(error.to_string().contains("grant"), "{error}");
        let error = Policy::from_toml("p.toml", "[grants]\ntools = [\"shell\"]").unwrap_err();
        assert!(error.to_string().contains("'shell'"), "{error}");
        let error = Policy::from_toml("p.toml", "[limits]\nmax_cpu = \"2 weeks\"").unwrap_err();
        assert!(error.to_string().contains("max_cpu"), "{error}");
        let error = Policy::from_toml("p.toml", "[limits]\nmax_agents = 0").unwrap_err();
        assert!(error.to_string().contains("max_agents"), "{error}");
    }

    #[test]
    fn the_section_is_canonical_and_round_trips() {
        let policy = Policy::from_toml("policy.toml", MANIFEST).unwrap();
        let reordered = Policy::from_toml(
            "policy.toml",
            "[limits]\ntimeout = \"30s\"\nmax_memory = 67108864\nmax_cpu = \"2000ms\"\nbudget_tokens = 1000\nmax_agents = 5\n[grants]\nmodels = [\"sonnet\"]\nproviders = [\"sim\"]\ntools = [\"read\", \"grep\"]",
        )
        .unwrap();
        assert_eq!(policy.to_section(), reordered.to_section());
        assert_eq!(Policy::from_section(&policy.to_section()).unwrap(), policy);
        assert_eq!(
            Policy::from_toml("again", &policy.to_toml()).unwrap(),
            policy
        );
    }

    #[test]
    fn providers_and_models_must_be_granted() {
        let policy = Policy::from_toml("policy.toml", MANIFEST).unwrap();
        policy.check_provider("sim", Some("sonnet")).unwrap();
        policy.check_provider("sim", None).unwrap();
        let error = policy
            .check_provider("anthropic", None)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("provider 'anthropic'") && error.contains("policy manifest"),
            "{error}"
        );
        let error = policy
            .check_provider("sim", Some("opus"))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("model 'opus'") && error.contains("grants.models"),
            "{error}"
        );
        let none = Policy::default();
        assert!(
            none.check_provider("openai", None).is_err(),
            "absent providers grant only sim"
        );
        assert_eq!(none.bound(&RunLimits::default()).grants.tools, Some(vec![]));
    }
}
