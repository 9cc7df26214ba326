//! A test guest driven by its arguments, `{"mode": ..., ...}`, so that integration tests can hit
//! every host limit and capability from one component.
//!
//! Modes (other keys of the arguments are the mode's parameters):
//! - `echo`: returns the arguments.
//! - `fanout` `{n, schema?, max_tokens?, label?, model?, ...}`: starts `n` agent calls at once
//!   with the SDK's `parallel` (start/wait) and returns
//!   `{"ok": count, "errors": {"<kind>": count}, "max_id": highest call id or null}`.
//! - `host-parallel` `{n, ...}`: the same through the host's `agents.parallel` (`max_id` null).
//! - `agent` `{prompt?, blocking?, ...options}`: one call (with `agents.call` when `blocking`);
//!   returns `{"ok": output}` or `{"error": kind, "message": ...}`.
//! - `spin`: computes forever.
//! - `membomb`: allocates and touches 1 MiB blocks forever, keeping them all.
//! - `tool` `{tool, args}`: one tool call (`read`, `glob`, `grep`, `git-log`, `git-show`,
//!   `git-diff`, `git-status`); returns `{"ok": result}` or `{"error": kind, "message": ...}`.
//! - `fail` `{message}`: fails with that message.
//! - `panic`: panics.
//! - `budget`: returns `{total, spent, remaining}` (null when the run has no budget).
//! - `stdout` `{bytes}`: prints exactly that many bytes to stdout.
//! - `cancel`: starts three calls, cancels the second, waits for all; returns
//!   `{"outcomes": [kind or "ok", ...]}`.
//! - `deadlock`: awaits a future that is not an agent call and never completes.
//! - `phases`: starts phases, logs, and runs agent calls in them.
//!
//! Agent options read from the arguments: `label`, `phase`, `model`, `effort`, `schema` (`true`
//! for a small built-in schema, or a schema object), `tools`, `max_tokens`, `max_turns`,
//! `timeout_ms`. In `fanout` and `host-parallel` a `label` gets `-<index>` appended.

use guest_sdk::tools::{self, GrepOptions, ToolError};
use guest_sdk::{
    AgentError, AgentOptions, AgentOutput, Effort, Error, agent, agent_blocking, budget,
    host_parallel, log, parallel, phase,
};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::io::Write;

guest_sdk::workflow!(probe);

async fn probe(args: Value) -> Result<Value, Error> {
    let mode = args["mode"]
        .as_str()
        .ok_or("probe: the arguments need a string \"mode\"")?;
    match mode {
        "echo" => Ok(args),
        "fanout" => fanout(&args).await,
        "host-parallel" => host_fanout(&args),
        "agent" => single_agent(&args).await,
        "spin" => spin(),
        "membomb" => membomb(),
        "tool" => tool(&args),
        "fail" => Err(Error::new(
            args["message"]
                .as_str()
                .unwrap_or("probe failed on purpose"),
        )),
        "panic" => panic!("probe panicked on purpose"),
        "budget" => Ok(json!({
            "total": budget::total(),
            "spent": budget::spent(),
            "remaining": budget::remaining(),
        })),
        "stdout" => stdout(&args),
        "cancel" => cancel().await,
        "deadlock" => {
            std::future::pending::<()>().await;
            Err(Error::new("probe: a pending future completed"))
        }
        "phases" => phases().await,
        "network" => network(&args),
        "resources" => resources(&args),
        "http" => http(&args),
        "entropy" => Ok(entropy()),
        other => Err(Error::new(format!("probe: unknown mode {other:?}"))),
    }
}

/// A small schema whose instances the simulated provider can produce.
fn default_schema() -> Value {
    json!({
        "type": "object",
        "properties": {"answer": {"type": "string"}, "score": {"type": "integer"}},
        "required": ["answer"],
    })
}

fn u32_arg(args: &Value, key: &str) -> Result<Option<u32>, Error> {
    match &args[key] {
        Value::Null => Ok(None),
        value => value
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| Error::new(format!("probe: {key:?} must be a u32"))),
    }
}

/// Agent options from the arguments; `index` numbers the label in fan-outs.
fn options(args: &Value, index: Option<usize>) -> Result<AgentOptions, Error> {
    let mut options = AgentOptions::new();
    if let Some(label) = args["label"].as_str() {
        options = options.label(match index {
            Some(i) => format!("{label}-{i}"),
            None => label.to_owned(),
        });
    }
    if let Some(phase) = args["phase"].as_str() {
        options = options.phase(phase);
    }
    if let Some(model) = args["model"].as_str() {
        options = options.model(model);
    }
    if let Some(effort) = args["effort"].as_str() {
        options = options.effort(
            Effort::parse(effort).ok_or_else(|| format!("probe: unknown effort {effort:?}"))?,
        );
    }
    match &args["schema"] {
        Value::Null | Value::Bool(false) => {}
        Value::Bool(true) => options = options.schema(default_schema()),
        schema => options = options.schema(schema.clone()),
    }
    if let Some(tools) = args["tools"].as_array() {
        options = options.tools(tools.iter().filter_map(Value::as_str));
    }
    if let Some(n) = u32_arg(args, "max_tokens")? {
        options = options.max_tokens(n);
    }
    if let Some(n) = u32_arg(args, "max_turns")? {
        options = options.max_turns(n);
    }
    if let Some(n) = u32_arg(args, "timeout_ms")? {
        options = options.timeout_ms(n);
    }
    Ok(options)
}

fn count(args: &Value) -> Result<usize, Error> {
    args["n"]
        .as_u64()
        .map(|n| n as usize)
        .ok_or_else(|| Error::new("probe: \"n\" must be a non-negative integer"))
}

fn output_json(output: &AgentOutput) -> Value {
    serde_json::to_value(output).unwrap_or(Value::Null)
}

fn outcome_json(outcome: &Result<AgentOutput, AgentError>) -> Value {
    match outcome {
        Ok(output) => json!({ "ok": output_json(output) }),
        Err(error) => json!({ "error": error.kind(), "message": error.message() }),
    }
}

fn summary<'a>(
    outcomes: impl IntoIterator<Item = &'a Result<AgentOutput, AgentError>>,
    max_id: Option<u64>,
) -> Value {
    let mut ok = 0;
    let mut errors: BTreeMap<&str, u64> = BTreeMap::new();
    for outcome in outcomes {
        match outcome {
            Ok(_) => ok += 1,
            Err(error) => *errors.entry(error.kind()).or_default() += 1,
        }
    }
    json!({ "ok": ok, "errors": errors, "max_id": max_id })
}

async fn fanout(args: &Value) -> Result<Value, Error> {
    let n = count(args)?;
    let calls = (0..n)
        .map(|i| {
            let options = options(args, Some(i))?;
            Ok(async move {
                let mut call = agent(format!("probe fan-out call {i}"), options);
                let outcome = (&mut call).await;
                (call.id(), outcome)
            })
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let results = parallel(calls).await?;
    let max_id = results.iter().filter_map(|(id, _)| *id).max();
    Ok(summary(results.iter().map(|(_, outcome)| outcome), max_id))
}

fn host_fanout(args: &Value) -> Result<Value, Error> {
    let n = count(args)?;
    let requests = (0..n)
        .map(|i| {
            Ok((
                format!("probe host-parallel call {i}"),
                options(args, Some(i))?,
            ))
        })
        .collect::<Result<Vec<_>, Error>>()?;
    let outcomes = host_parallel(requests);
    Ok(summary(&outcomes, None))
}

async fn single_agent(args: &Value) -> Result<Value, Error> {
    let prompt = args["prompt"].as_str().unwrap_or("probe agent call");
    let options = options(args, None)?;
    let outcome = if args["blocking"].as_bool() == Some(true) {
        agent_blocking(prompt, &options)
    } else {
        agent(prompt, options).await
    };
    Ok(outcome_json(&outcome))
}

fn spin() -> Result<Value, Error> {
    let mut counter: u64 = 0;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}

fn membomb() -> Result<Value, Error> {
    const MIB: usize = 1 << 20;
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = vec![0u8; MIB];
        // Writing every page makes the memory resident even where zeroed pages are lazy.
        for byte in block.iter_mut().step_by(4096) {
            *byte = 1;
        }
        hoard.push(black_box(block));
        black_box(&hoard);
    }
}

fn tool(args: &Value) -> Result<Value, Error> {
    let name = args["tool"]
        .as_str()
        .ok_or("probe: tool mode needs a string \"tool\"")?;
    let params = &args["args"];
    let text = |key: &str| -> Result<String, Error> {
        params[key]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::new(format!("probe: tool {name} needs a string {key:?}")))
    };
    let optional = |key: &str| params[key].as_str().map(str::to_owned);
    let result: Result<Value, ToolError> = match name {
        "read" => tools::read(&text("path")?).map(Value::from),
        "glob" => tools::glob(&text("pattern")?).map(Value::from),
        "grep" => {
            let mut options = GrepOptions::new().ignore_case(params["ignore_case"] == true);
            if let Some(glob) = optional("glob") {
                options = options.glob(glob);
            }
            if let Some(max) = u32_arg(params, "max_matches")? {
                options = options.max_matches(max);
            }
            tools::grep(&text("pattern")?, options).map(|m| json!(m))
        }
        "git-log" => {
            tools::git_log(optional("path").as_deref(), u32_arg(params, "max")?).map(|c| json!(c))
        }
        "git-show" => tools::git_show(&text("rev")?, optional("path").as_deref()).map(Value::from),
        "git-diff" => tools::git_diff(optional("range").as_deref()).map(Value::from),
        "git-status" => tools::git_status().map(|s| json!(s)),
        other => return Err(Error::new(format!("probe: unknown tool {other:?}"))),
    };
    Ok(match result {
        Ok(value) => json!({ "ok": value }),
        Err(error) => json!({ "error": error.kind(), "message": error.message() }),
    })
}

fn stdout(args: &Value) -> Result<Value, Error> {
    let bytes = args["bytes"]
        .as_u64()
        .ok_or("probe: stdout mode needs an integer \"bytes\"")?;
    // Lines of 80 bytes, the last one possibly shorter, so the total is exact.
    let line = [b'x'; 79].iter().chain(b"\n").copied().collect::<Vec<u8>>();
    let mut out = std::io::stdout().lock();
    let mut written: u64 = 0;
    while written < bytes {
        let len = (bytes - written).min(line.len() as u64) as usize;
        if let Err(error) = out.write_all(&line[..len]) {
            return Ok(json!({ "written": written, "error": error.to_string() }));
        }
        written += len as u64;
    }
    if let Err(error) = out.flush() {
        return Ok(json!({ "written": written, "error": error.to_string() }));
    }
    Ok(json!({ "written": written }))
}

async fn cancel() -> Result<Value, Error> {
    let mut calls: Vec<_> = (0..3)
        .map(|i| agent(format!("probe cancel call {i}"), AgentOptions::new()))
        .collect();
    // The second call is cancelled right after it starts, before the third one starts, to leave
    // the host as little time as possible to finish it first.
    calls[0].start();
    calls[1].start();
    calls[1].cancel();
    calls[2].start();
    let outcomes = parallel(calls).await?;
    let kinds: Vec<&str> = outcomes
        .iter()
        .map(|outcome| match outcome {
            Ok(_) => "ok",
            Err(error) => error.kind(),
        })
        .collect();
    Ok(json!({ "outcomes": kinds }))
}

async fn phases() -> Result<Value, Error> {
    let mut outcomes = Map::new();
    phase("Gather");
    log("probe: gathering");
    let gathered = agent("probe phase gather", AgentOptions::new().label("gather")).await;
    outcomes.insert("gather".into(), outcome_json(&gathered));

    phase("Check");
    log("probe: checking twice");
    let checks = parallel([
        agent("probe phase check 0", AgentOptions::new().label("check-0")),
        agent("probe phase check 1", AgentOptions::new().label("check-1")),
    ])
    .await?;
    for (i, check) in checks.iter().enumerate() {
        outcomes.insert(format!("check-{i}"), outcome_json(check));
    }

    // An explicit phase in the options overrides the current one.
    let explicit = agent(
        "probe phase explicit",
        AgentOptions::new().label("explicit").phase("Explicit"),
    )
    .await;
    outcomes.insert("explicit".into(), outcome_json(&explicit));
    log("probe: done");
    Ok(json!({ "phases": ["Gather", "Check"], "outcomes": outcomes }))
}

/// What the guest can observe of time and randomness: the host makes both virtual and seeded per
/// run, so two runs of the same workflow and arguments see the same values.
fn entropy() -> Value {
    use std::hash::{BuildHasher, RandomState};
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let hashed = RandomState::new().hash_one("corral");
    json!({
        "wall_micros": wall,
        "random_hash": hashed.to_string(),
        "env_vars": std::env::vars().count(),
        "cli_args": std::env::args().count(),
    })
}

/// Tries the network every way the standard library offers (connect to `addr`, listen, UDP, a
/// name lookup) and reports how each attempt failed, as `Kind: message` (or `"succeeded"`).
fn network(args: &Value) -> Result<Value, Error> {
    use std::net::{TcpListener, TcpStream, ToSocketAddrs, UdpSocket};
    let addr = args["addr"]
        .as_str()
        .ok_or("probe: network needs \"addr\" (host:port)")?;
    let said = |result: std::io::Result<()>| match result {
        Ok(()) => "succeeded".to_string(),
        Err(error) => format!("{:?}: {error}", error.kind()),
    };
    Ok(json!({
        "connect": said(TcpStream::connect(addr).map(drop)),
        "listen": said(TcpListener::bind("127.0.0.1:0").map(drop)),
        "udp": said(UdpSocket::bind("127.0.0.1:0").and_then(|s| s.send_to(b"x", addr)).map(drop)),
        "lookup": said(("localhost", 80).to_socket_addrs().map(drop)),
    }))
}

/// Holds `n` WASI resources at once (network handles, which cost the host a table entry each
/// and the guest nothing), to hit the host's limit on them.
fn resources(args: &Value) -> Result<Value, Error> {
    let n = args["n"].as_u64().ok_or("probe: resources needs \"n\"")?;
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(wasi::sockets::instance_network::instance_network());
    }
    Ok(json!({"held": held.len()}))
}

/// Sends an HTTP request to `authority` through wasi:http and reports how it ended; then, with
/// `header_bytes`, builds a header of that size.
fn http(args: &Value) -> Result<Value, Error> {
    use wasi::http::outgoing_handler;
    use wasi::http::types::{Fields, OutgoingRequest, Scheme};
    let authority = args["authority"]
        .as_str()
        .ok_or("probe: http needs \"authority\" (host:port)")?;
    let request = OutgoingRequest::new(Fields::new());
    request
        .set_scheme(Some(&Scheme::Http))
        .map_err(|()| "probe: set_scheme")?;
    request
        .set_authority(Some(authority))
        .map_err(|()| "probe: set_authority")?;
    request
        .set_path_with_query(Some("/"))
        .map_err(|()| "probe: set_path_with_query")?;
    let send = match outgoing_handler::handle(request, None) {
        Err(code) => format!("refused: {code:?}"),
        Ok(response) => {
            response.subscribe().block();
            match response.get() {
                Some(Ok(Ok(_))) => "succeeded".to_string(),
                Some(Ok(Err(code))) => format!("failed: {code:?}"),
                Some(Err(())) => "taken twice".to_string(),
                None => "pending".to_string(),
            }
        }
    };
    if let Some(bytes) = args["header_bytes"].as_u64() {
        let value = vec![b'x'; usize::try_from(bytes).unwrap_or(usize::MAX)];
        if let Err(error) = Fields::new().append("x-big", &value) {
            return Ok(json!({"send": send, "header": format!("{error:?}")}));
        }
    }
    Ok(json!({"send": send, "header": "accepted"}))
}
