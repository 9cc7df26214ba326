//! [`RunSpec`]: the complete, serialisable description of a run. Every front end builds one;
//! the store keeps it; resume reads it back. Nothing below the front ends reads an argv, a
//! working directory or the environment.

use std::path::PathBuf;

use corral_host::RunLimits;
use serde::{Deserialize, Serialize};

/// Everything a run needs, and nothing of the process that asked for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// Which workflow runs.
    pub workflow: WorkflowRef,
    /// The run's arguments as JSON text (empty when none were given, which is not `null`).
    #[serde(default)]
    pub args: String,
    /// The directory the tools may read; `None` means no files at all.
    #[serde(default)]
    pub root: Option<RootRef>,
    /// The run's limits (the effective ones: already capped by any tenant quota).
    #[serde(default)]
    pub limits: RunLimits,
    /// Who answers agent calls: a provider name (`sim`, `anthropic`, `openai`, or one from the
    /// config); `None` is the config's default.
    #[serde(default)]
    pub provider: Option<String>,
    /// Default model of calls that name none.
    #[serde(default)]
    pub model: Option<String>,
    /// Latency of each simulated provider request, in milliseconds.
    #[serde(default)]
    pub sim_latency_ms: Option<u64>,
    /// The tenant that owns the run (`None`: a local run).
    #[serde(default)]
    pub tenant: Option<String>,
    /// The run this one resumes.
    #[serde(default)]
    pub resumed_from: Option<String>,
}

/// A workflow by content: the hash of its component and, for a script, the script itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowRef {
    /// A display name (the file name).
    pub name: String,
    /// SHA-256 of the component that runs (for a script: of its runtime).
    pub component: String,
    /// The script, when the component is a script runtime.
    #[serde(default)]
    pub script: Option<ScriptRef>,
}

/// A script handed to a script runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptRef {
    /// File name, for error messages.
    pub name: String,
    /// The source.
    pub source: String,
}

/// Where a run's tools may read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RootRef {
    /// A directory on this machine (the CLI: an absolute path).
    Path(PathBuf),
    /// A root the operator named for the run's tenant (the server: never a host path).
    Named(String),
}

impl RootRef {
    /// How the root is shown (and recorded).
    pub fn display(&self) -> String {
        match self {
            RootRef::Path(path) => path.display().to_string(),
            RootRef::Named(name) => format!("@{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_round_trips_and_defaults_what_is_missing() {
        let spec = RunSpec {
            workflow: WorkflowRef {
                name: "audit.js".into(),
                component: "ab".repeat(32),
                script: Some(ScriptRef {
                    name: "audit.js".into(),
                    source: "return 1".into(),
                }),
            },
            args: r#"{"glob":"*.rs"}"#.into(),
            root: Some(RootRef::Named("repo".into())),
            limits: RunLimits {
                max_agents: 7,
                ..RunLimits::default()
            },
            provider: Some("sim".into()),
            model: None,
            sim_latency_ms: Some(50),
            tenant: Some("acme".into()),
            resumed_from: None,
        };
        let text = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<RunSpec>(&text).unwrap(), spec);
        let minimal: RunSpec =
            serde_json::from_str(r#"{"workflow": {"name": "w.wasm", "component": "00"}}"#).unwrap();
        assert_eq!(minimal.args, "");
        assert_eq!(minimal.limits, RunLimits::default());
        let error = serde_json::from_str::<RunSpec>(
            r#"{"workflow": {"name": "w", "component": "00"}, "argz": 1}"#,
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("unknown field `argz`"),
            "{error}"
        );
    }
}
