//! Every limit a guest can run into, with its name (the CLI flag) and its default.
//!
//! A limit lives here so that the CLI, the docs and the tests agree on one name and one default.

use std::time::Duration;

use crate::tools::ToolLimits;

/// The most schema attempts a run may allow (each attempt is a paid request).
pub const MAX_SCHEMA_ATTEMPTS_CEILING: u32 = 50;

/// Limits of one run. All of them are enforced by the host, where the guest cannot lie.
///
/// Serialised (durations in milliseconds) as part of a run's spec; a missing field takes its
/// default, and an unknown one is an error.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RunLimits {
    /// `--max-concurrent`: agent calls in flight at once; further calls queue (FIFO).
    pub max_concurrent: usize,
    /// `--max-agents`: agent calls per run; the next `start` fails with `agent-limit`.
    pub max_agents: u64,
    /// `--budget-tokens`: total tokens the run may spend; `None` is unlimited.
    pub budget_tokens: Option<u64>,
    /// `--timeout`: wall-clock limit of the whole run.
    #[serde(rename = "timeout_ms", with = "millis")]
    pub timeout: Duration,
    /// `--max-cpu`: time the guest itself computes (time suspended waiting on agents does not count).
    #[serde(rename = "max_cpu_ms", with = "millis")]
    pub max_cpu: Duration,
    /// `--max-memory`: linear memory of the guest, in bytes.
    pub max_memory: usize,
    /// `--max-log-bytes`: bytes the guest may write to stdout/stderr and `log`.
    pub max_log_bytes: usize,
    /// `--max-batch`: calls in one `parallel` batch or ids in one `wait`.
    pub max_batch: usize,
    /// `--max-prompt-bytes`: bytes of one agent prompt, schema included.
    pub max_prompt_bytes: usize,
    /// `--max-run-prompt-bytes`: bytes of all agent prompts and schemas of the run together
    /// (what the host holds for queued calls and writes to the journal).
    pub max_run_prompt_bytes: usize,
    /// `--max-schema-bytes`: bytes of one output schema.
    pub max_schema_bytes: usize,
    /// `--max-schemas`: distinct output schemas one run may compile (each is kept for the run).
    pub max_schemas: usize,
    /// `--max-option-bytes`: bytes of one agent `label`, `phase` or `model`, and of one phase
    /// title.
    pub max_option_bytes: usize,
    /// `--max-output-tokens`: default and ceiling of an agent's output tokens per request.
    pub max_output_tokens: u32,
    /// `--schema-attempts` (or `[agents] schema_attempts` in corral.toml): answers a schema'd
    /// agent may hand in before it fails `schema-mismatch`, at most [`MAX_SCHEMA_ATTEMPTS_CEILING`].
    pub schema_attempts: u32,
    /// Limits of the read/glob/grep/git tools.
    pub tools: ToolLimits,
    /// What a workflow's embedded policy grants (`corral:policy`); by default everything.
    pub grants: Grants,
    /// `--allow-write[=GLOB,…]`: the paths the run may stage writes to (`**`: all); none by
    /// default, so every write is `denied`.
    pub allow_write: Vec<String>,
    /// `--allow-run=CMD,…`: the commands `tools.run` may run, matched exactly; none by default.
    pub allow_run: Vec<String>,
    /// Limits of each command `tools.run` runs.
    pub commands: crate::jail::CommandLimits,
}

/// Grants a workflow's policy narrows a run to. `None` restricts nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Grants {
    /// Tools agents and the workflow itself may use (`read`, `glob`, `grep`, `git`); a call
    /// asking for another fails `denied`.
    pub tools: Option<Vec<String>>,
    /// Models agent calls may name; a call naming another fails `denied`.
    pub models: Option<Vec<String>>,
}

impl Grants {
    /// Whether `tool` is granted.
    pub fn tool(&self, tool: &str) -> bool {
        self.tools
            .as_ref()
            .is_none_or(|tools| tools.iter().any(|t| t == tool))
    }

    /// Whether `model` may be named.
    pub fn model(&self, model: &str) -> bool {
        self.models
            .as_ref()
            .is_none_or(|models| models.iter().any(|m| m == model))
    }
}

impl Default for RunLimits {
    fn default() -> Self {
        RunLimits {
            max_concurrent: 16,
            max_agents: 1000,
            budget_tokens: None,
            timeout: Duration::from_secs(30 * 60),
            max_cpu: Duration::from_secs(60),
            max_memory: 256 << 20,
            max_log_bytes: 1 << 20,
            max_batch: 4096,
            max_prompt_bytes: 1 << 20,
            max_run_prompt_bytes: 64 << 20,
            max_schema_bytes: 64 << 10,
            max_schemas: 64,
            max_option_bytes: 1 << 10,
            max_output_tokens: 8192,
            schema_attempts: crate::agent_loop::MAX_SCHEMA_ATTEMPTS,
            tools: ToolLimits::default(),
            grants: Grants::default(),
            allow_write: Vec::new(),
            allow_run: Vec::new(),
            commands: crate::jail::CommandLimits::default(),
        }
    }
}

impl RunLimits {
    /// The host-protecting limits of `self` that are above `ceiling`, as `name (at most X)`
    /// with the serialised names (`tools.` for tool limits, durations in ms), sorted: what a
    /// tenant may not raise. Every numeric limit is compared, so a limit added later is covered
    /// too, except those quotas govern instead: the agent cap, the budget, the concurrency and
    /// the timeout.
    pub fn above(&self, ceiling: &RunLimits) -> Vec<String> {
        const BY_QUOTA: [&str; 4] = [
            "max_agents",
            "budget_tokens",
            "max_concurrent",
            "timeout_ms",
        ];
        fn flatten(value: serde_json::Value, prefix: &str, out: &mut Vec<(String, u64)>) {
            if let serde_json::Value::Object(fields) = value {
                for (name, value) in fields {
                    match value.as_u64() {
                        Some(number) => out.push((format!("{prefix}{name}"), number)),
                        None => flatten(value, &format!("{prefix}{name}."), out),
                    }
                }
            }
        }
        let numbers = |limits: &RunLimits| {
            let mut out = Vec::new();
            flatten(
                serde_json::to_value(limits).unwrap_or_default(),
                "",
                &mut out,
            );
            out
        };
        let ceiling: std::collections::HashMap<String, u64> =
            numbers(ceiling).into_iter().collect();
        let mut above: Vec<String> = numbers(self)
            .into_iter()
            .filter(|(name, _)| !BY_QUOTA.contains(&name.as_str()))
            .filter_map(|(name, value)| {
                let max = *ceiling.get(&name)?;
                (value > max).then(|| format!("{name} (at most {max})"))
            })
            .collect();
        above.sort();
        above
    }
}

/// What each event a guest's output makes costs against `--max-log-bytes` beyond its text (a
/// `phase` call, and every line of `log` or of stdout/stderr): the event and journal row cost the
/// host something even when the text is empty.
pub const PROGRESS_CALL_BYTES: usize = 32;

/// The largest `--max-memory` the process can grant; the pooling allocator reserves address
/// space for it up front.
pub const MAX_MEMORY_CEILING: usize = 4 << 30;

/// `--max-core-instances`: the core wasm instances one workflow component may create. A Rust
/// guest has a few, the bundled JavaScript runtime a few, a componentize-js guest about 4 and a
/// componentize-py (CPython) guest about 14 (38 with `--stub-wasi`). The pool counts this many
/// per live run, so a component that loads always fits once it has a run slot; one with more is
/// refused at load, naming this limit.
pub const MAX_CORE_INSTANCES: u32 = 64;
/// The linear memories one workflow component may define (the pool reserves this many per run).
pub const MAX_MEMORIES_PER_COMPONENT: u32 = 2;
/// The tables one workflow component may define (the pool reserves this many per run).
pub const MAX_TABLES_PER_COMPONENT: u32 = 8;

/// The WASI resources (streams, pollables, sockets' network handles, …) one run may hold in the
/// host at once. Each costs host memory outside the guest's `--max-memory`; language runtimes
/// hold a handful. Creating one more ends the run ([`LimitExceeded::HostResources`]).
pub const MAX_HOST_RESOURCES: usize = 10_000;

/// The most the headers (or trailers) of one wasi:http `fields` may take in host memory.
/// Requests are denied anyway; this bounds what building one costs the host. Past it the run
/// ends ([`LimitExceeded::HttpFields`]).
pub const MAX_HTTP_FIELD_BYTES: usize = 16 << 10;

/// A run ended because it hit one of its limits. Carried inside a trap, so the run's result can
/// name the limit that ended it.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum LimitExceeded {
    /// The guest computed longer than `--max-cpu`.
    #[error(
        "guest CPU limit exceeded: the workflow computed for more than {0:?} (raise --max-cpu, or find the loop that never ends)"
    )]
    Cpu(Duration),
    /// The run took longer than `--timeout`.
    #[error("run timeout exceeded: the run took longer than {0:?} (raise --timeout)")]
    Timeout(Duration),
    /// The guest asked for more memory than `--max-memory`.
    #[error(
        "guest memory limit exceeded: the workflow tried to grow its memory to {requested} bytes, over the limit of {limit} bytes (raise --max-memory, or keep less data in the workflow)"
    )]
    Memory {
        /// Bytes the guest asked for.
        requested: usize,
        /// The limit.
        limit: usize,
    },
    /// The guest tried to create more tables, instances or table elements than allowed.
    #[error("guest resource limit exceeded: {0}")]
    Resource(String),
    /// The guest held [`MAX_HOST_RESOURCES`] WASI resources and asked for one more.
    #[error(
        "host resource limit exceeded: the workflow holds {0} WASI resources (streams, pollables, network handles) at once, the most a run may; drop the ones it no longer needs"
    )]
    HostResources(usize),
    /// The guest built wasi:http headers over [`MAX_HTTP_FIELD_BYTES`], or with more fields
    /// than wasi:http allows.
    #[error(
        "HTTP header limit exceeded: the workflow built wasi:http headers over the host's limit ({0} bytes, or too many fields); requests are denied in any case, so build smaller headers, or none"
    )]
    HttpFields(usize),
    /// The guest passed more entries in one `parallel` or `wait` than `--max-batch`.
    #[error(
        "batch limit exceeded: the workflow passed {size} entries in one {what}, over the limit of {limit} (split the batch, or raise --max-batch)"
    )]
    Batch {
        /// `parallel` or `wait`.
        what: &'static str,
        /// Entries passed.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A phase title longer than `--max-option-bytes`.
    #[error(
        "option limit exceeded: the workflow passed a {what} of {size} bytes, over the limit of {limit} bytes (shorten it, or raise --max-option-bytes)"
    )]
    Option {
        /// What the string was.
        what: &'static str,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The guest wrote more than `--max-log-bytes`.
    #[error(
        "log limit exceeded: the workflow wrote more than {0} bytes of output and log lines (raise --max-log-bytes)"
    )]
    Log(usize),
}

/// Durations as whole milliseconds in a serialised spec.
pub(crate) mod millis {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let ms: u64 = serde::Deserialize::deserialize(d)?;
        Ok(Duration::from_millis(ms))
    }
}

/// Formats a duration the way [`parse_duration`] reads it (`30m`, `60s`, `250ms`).
pub fn format_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms.is_multiple_of(3_600_000) && ms > 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Formats a size the way [`parse_size`] reads it (`256MiB`, `4KiB`, `1000`).
pub fn format_size(bytes: usize) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes > 0 && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// The longest duration a flag takes.
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Parses a duration such as `500ms`, `30s`, `10m`, `2h` (a bare number means seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| {
        format!(
            "invalid duration '{text}': expected a number with a unit, like 500ms, 30s, 10m or 2h"
        )
    })?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "invalid duration unit '{other}' in '{text}': use ms, s, m or h"
            ));
        }
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(format!(
            "invalid duration '{text}': it must be greater than zero"
        ));
    }
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|duration| *duration <= MAX_DURATION)
        .ok_or_else(|| format!("invalid duration '{text}': the longest is 100 years (876000h)"))
}

/// Parses a size such as `256MiB`, `1GiB`, `64k`, `1048576` (bytes).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: usize = number.parse().map_err(|_| {
        format!("invalid size '{text}': expected a number with an optional unit, like 256MiB")
    })?;
    let multiplier: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "invalid size unit '{other}' in '{text}': use B, KiB, MiB or GiB"
            ));
        }
    };
    value
        .checked_mul(multiplier)
        .ok_or_else(|| format!("size '{text}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert!(
            parse_duration("10 parsecs")
                .unwrap_err()
                .contains("use ms, s, m or h")
        );
        assert!(parse_duration("0s").is_err());
        for huge in [
            "100000000000000000000000h",
            "9999999999999999999999999999",
            "1e400",
        ] {
            assert!(
                parse_duration(huge)
                    .unwrap_err()
                    .contains("invalid duration"),
                "{huge}"
            );
        }
    }

    #[test]
    fn formatted_limits_parse_back() {
        for duration in [
            Duration::from_secs(1800),
            Duration::from_secs(60),
            Duration::from_millis(250),
        ] {
            assert_eq!(
                parse_duration(&format_duration(duration)).unwrap(),
                duration
            );
        }
        assert_eq!(format_duration(Duration::from_secs(1800)), "30m");
        for size in [256 << 20, 1 << 30, 4096, 1000] {
            assert_eq!(parse_size(&format_size(size)).unwrap(), size);
        }
        assert_eq!(format_size(256 << 20), "256MiB");
    }

    #[test]
    fn limits_round_trip_through_json_and_missing_fields_take_defaults() {
        let limits = RunLimits {
            budget_tokens: Some(5),
            ..RunLimits::default()
        };
        let text = serde_json::to_string(&limits).unwrap();
        assert!(text.contains("\"timeout_ms\":1800000"), "{text}");
        assert_eq!(serde_json::from_str::<RunLimits>(&text).unwrap(), limits);
        let partial: RunLimits = serde_json::from_str(r#"{"max_agents": 3}"#).unwrap();
        assert_eq!(
            partial,
            RunLimits {
                max_agents: 3,
                ..RunLimits::default()
            }
        );
        let error = serde_json::from_str::<RunLimits>(r#"{"max_agent": 3}"#).unwrap_err();
        assert!(
            error.to_string().contains("unknown field `max_agent`"),
            "{error}"
        );
    }

    #[test]
    fn limits_above_a_ceiling_are_named() {
        let ceiling = RunLimits::default();
        assert!(ceiling.above(&ceiling).is_empty());
        let mut raised = RunLimits {
            max_memory: ceiling.max_memory + 1,
            max_cpu: ceiling.max_cpu * 2,
            // Quotas govern these, so they are not compared.
            max_agents: ceiling.max_agents * 10,
            timeout: ceiling.timeout * 10,
            ..RunLimits::default()
        };
        raised.tools.max_git_entries += 1;
        assert_eq!(
            raised.above(&ceiling),
            [
                "max_cpu_ms (at most 60000)",
                "max_memory (at most 268435456)",
                "tools.max_git_entries (at most 250000)",
            ]
        );
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(
            parse_size("12 bananas")
                .unwrap_err()
                .contains("use B, KiB, MiB or GiB")
        );
    }
}
