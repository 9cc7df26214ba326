//! Audits the root's source files with agents, verifies every finding with a cheaper model, and
//! summarises what is real.
//!
//! Arguments (all optional): `{"glob": "**/*.rs", "max_files": 50}`.
//!
//! Each file goes through a two-stage pipeline, with no barrier between files:
//! 1. *Scan*: read the file and ask an agent for findings (`{title, severity, line}`);
//! 2. *Verify*: check every finding concurrently with a `haiku` agent (`{real, reason}`).
//!
//! Then *Summarize*: one agent writes a summary of the verified findings. The result is
//! `{files, skipped, findings, summary}`: the paths audited, the files that could not be
//! audited (with why), the verified findings and the summary text.

use guest_sdk::{AgentOptions, Error, agent, log, parallel, phase, pipeline, tools};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::cell::Cell;

guest_sdk::workflow!(audit_files);

/// Files longer than this are cut before being shown to the agent.
const MAX_SOURCE_CHARS: usize = 60_000;

/// One finding as the scanning agent reports it.
#[derive(Debug, Clone, Deserialize, Serialize)]
struct Finding {
    title: String,
    severity: String,
    line: serde_json::Number,
}

/// The verifying agent's verdict on one finding.
#[derive(Debug, Deserialize)]
struct Verdict {
    real: bool,
    reason: String,
}

/// A finding that survived verification.
#[derive(Debug, Serialize)]
struct VerifiedFinding {
    file: String,
    title: String,
    severity: String,
    line: serde_json::Number,
    reason: String,
}

fn findings_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "findings": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "title": {"type": "string"},
                        "severity": {"type": "string", "enum": ["low", "medium", "high"]},
                        "line": {"type": "integer"}
                    },
                    "required": ["title", "severity", "line"]
                }
            }
        },
        "required": ["findings"]
    })
}

fn verdict_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "real": {"type": "boolean"},
            "reason": {"type": "string"}
        },
        "required": ["real", "reason"]
    })
}

/// The workflow's arguments, with their defaults.
struct Args {
    glob: String,
    max_files: usize,
}

impl Args {
    fn parse(args: &Value) -> Result<Self, Error> {
        let glob = match &args["glob"] {
            Value::Null => "**/*.rs".to_owned(),
            Value::String(glob) => glob.clone(),
            other => {
                return Err(Error::new(format!(
                    "\"glob\" must be a string, not {other}"
                )));
            }
        };
        let max_files = match &args["max_files"] {
            Value::Null => 50,
            value => value.as_u64().map(|n| n as usize).ok_or_else(|| {
                Error::new(format!(
                    "\"max_files\" must be a non-negative integer, not {value}"
                ))
            })?,
        };
        Ok(Self { glob, max_files })
    }
}

/// The file's text with 1-based line numbers, cut at [`MAX_SOURCE_CHARS`].
fn numbered(source: &str) -> String {
    let mut out = String::new();
    for (index, line) in source.lines().enumerate() {
        if out.len() + line.len() > MAX_SOURCE_CHARS {
            out.push_str("... (the rest of the file is cut)\n");
            break;
        }
        out.push_str(&format!("{:>5} | {line}\n", index + 1));
    }
    out
}

async fn scan(path: String) -> Result<Vec<Finding>, Error> {
    let source =
        tools::read(&path).map_err(|e| Error::from(e).context(format!("reading {path}")))?;
    let prompt = format!(
        "Audit the source file `{path}` for bugs, security problems and risky code. Report each \
         problem with a short title, a severity (low, medium or high) and the line it is on. \
         Report nothing rather than guess.\n\n{}",
        numbered(&source)
    );
    let output = agent(
        prompt,
        AgentOptions::new()
            .label(format!("scan {path}"))
            .phase("Scan")
            .schema(findings_schema()),
    )
    .await
    .map_err(|e| Error::from(e).context(format!("scanning {path}")))?;
    let instance = output.json.unwrap_or(Value::Null);
    let findings: Vec<Finding> = serde_json::from_value(instance["findings"].clone())?;
    log(&format!("scanned {path}: {} findings", findings.len()));
    Ok(findings)
}

async fn verify(path: String, findings: Vec<Finding>) -> Result<Vec<VerifiedFinding>, Error> {
    let checks = findings.iter().enumerate().map(|(index, finding)| {
        let prompt = format!(
            "A reviewer reported this problem in `{path}` at line {}: \"{}\" (severity {}). \
             Read the file and decide whether the problem is real. Answer with `real` and a \
             one-sentence `reason`.",
            finding.line, finding.title, finding.severity
        );
        agent(
            prompt,
            AgentOptions::new()
                .label(format!("verify {path} #{}", index + 1))
                .phase("Verify")
                .model("haiku")
                .tools(["read"])
                .schema(verdict_schema()),
        )
    });
    let verdicts = parallel(checks).await?;
    let total = findings.len();
    let mut verified = Vec::new();
    for (finding, verdict) in findings.into_iter().zip(verdicts) {
        let verdict = verdict.map_err(Error::from).and_then(|output| {
            Ok(serde_json::from_value::<Verdict>(
                output.json.unwrap_or(Value::Null),
            )?)
        });
        let verdict = match verdict {
            Ok(verdict) => verdict,
            Err(error) => {
                log(&format!(
                    "could not verify \"{}\" in {path}: {error}",
                    finding.title
                ));
                continue;
            }
        };
        if verdict.real {
            verified.push(VerifiedFinding {
                file: path.clone(),
                title: finding.title,
                severity: finding.severity,
                line: finding.line,
                reason: verdict.reason,
            });
        }
    }
    log(&format!(
        "verified {path}: {} of {total} findings are real",
        verified.len()
    ));
    Ok(verified)
}

async fn audit_files(args: Value) -> Result<Value, Error> {
    let args = Args::parse(&args)?;

    phase("Scan");
    let mut files = tools::glob(&args.glob)?;
    if files.len() > args.max_files {
        log(&format!(
            "{} files match {}; auditing the first {}",
            files.len(),
            args.glob,
            args.max_files
        ));
        files.truncate(args.max_files);
    }
    log(&format!("auditing {} files", files.len()));

    // Files reach verification at different times; the phase is announced once, when the first
    // one does. Every agent names its phase explicitly, so scans still running stay in "Scan".
    let verifying = Cell::new(false);
    let results = pipeline(files.clone())
        .stage(|path, _, _| scan(path))
        .stage(|findings, path, _| {
            if !verifying.replace(true) {
                phase("Verify");
            }
            verify(path, findings)
        })
        .run_results()
        .await?;

    let mut audited = Vec::new();
    let mut findings = Vec::new();
    let mut skipped = Vec::new();
    for (path, result) in files.iter().zip(results) {
        match result {
            Ok(verified) => {
                audited.push(path);
                findings.extend(verified);
            }
            Err(error) => {
                log(&format!("skipped {path}: {error}"));
                skipped.push(json!({ "file": path, "error": error.message() }));
            }
        }
    }

    phase("Summarize");
    let report = serde_json::to_string_pretty(&findings)?;
    let summary = agent(
        format!(
            "Summarise this audit of {} files for the maintainers in a few sentences: what is \
             most urgent, and which areas look healthy. Verified findings (JSON):\n{report}",
            audited.len()
        ),
        AgentOptions::new().label("summary").phase("Summarize"),
    )
    .await?;
    log(&format!("{} verified findings", findings.len()));

    Ok(json!({
        "files": audited,
        "skipped": skipped,
        "findings": findings,
        "summary": summary.text,
    }))
}
