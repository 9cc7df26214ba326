//! Durable runs: the journal, resume after `kill -9`, `corral runs`, the `--events` stream, and
//! `corral plan` with the budget gate — through the real `corral` binary.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use corral_store::{Journal, RunFilter, RunStatus, RunStore};
use serde_json::Value;
use tests::fake_llm::{FakeLlm, Protocol};
use tests::guests::guest_path;
use tests::support::{corral, fixture_repo};

fn run(command: &mut Command) -> Output {
    command.output().expect("corral runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn with_fake<'a>(command: &'a mut Command, fake: &FakeLlm) -> &'a mut Command {
    command
        .env("ANTHROPIC_BASE_URL", fake.url())
        .env("ANTHROPIC_API_KEY", "test-key")
        .args(["--provider", "anthropic"])
}

/// The `probe fan-out call N` prompts a server received, from request index `from` on.
fn fanout_prompts(fake: &FakeLlm, from: usize) -> Vec<u64> {
    fake.received()[from..]
        .iter()
        .filter_map(|request| {
            let body = request.body.to_string();
            let at = body.find("probe fan-out call ")? + "probe fan-out call ".len();
            body[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .collect()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let began = Instant::now();
    while !done() {
        assert!(
            began.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn recent(limit: usize) -> RunFilter {
    RunFilter {
        limit,
        ..RunFilter::default()
    }
}

fn journal(data: &Path) -> Journal {
    Journal::open(&data.join("journal.db")).expect("the journal opens")
}

#[test]
fn a_run_killed_mid_fan_out_resumes_without_paying_for_completed_calls() {
    let fake = FakeLlm::start(Protocol::Anthropic, Some("test-key"));
    fake.set_latency(Duration::from_millis(40));
    let data = tempfile::tempdir().unwrap();
    let probe = guest_path("probe");
    let args = r#"{"mode": "fanout", "n": 200}"#;

    let mut child = with_fake(
        corral().args(["run", probe.to_str().unwrap(), "--args", args, "-q"]),
        &fake,
    )
    .args(["--data-dir", data.path().to_str().unwrap()])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    wait_for("60 answered requests", || fake.received().len() >= 60);
    child.kill().unwrap(); // SIGKILL: no chance to clean up.
    child.wait().unwrap();

    let journal = journal(data.path());
    let killed = journal.list_runs(&recent(1)).unwrap().remove(0);
    let completed: HashSet<u64> = journal
        .recorded_calls(&killed.id)
        .unwrap()
        .into_iter()
        .filter(|call| call.output.is_some())
        .map(|call| call.seq - 1) // call seq N carries prompt N-1
        .collect();
    assert!(
        completed.len() >= 40 && completed.len() < 200,
        "{} completed",
        completed.len()
    );
    let before = fake.received().len();

    let resumed = run(corral()
        .args([
            "runs",
            "resume",
            &killed.id[..8],
            "-q",
            "--data-dir",
            data.path().to_str().unwrap(),
        ])
        .env("ANTHROPIC_BASE_URL", fake.url())
        .env("ANTHROPIC_API_KEY", "test-key"));
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(
        stderr(&resumed).contains("from the journal"),
        "{}",
        stderr(&resumed)
    );
    let paid_again: Vec<u64> = fanout_prompts(&fake, before)
        .into_iter()
        .filter(|n| completed.contains(n))
        .collect();
    assert_eq!(
        paid_again,
        Vec::<u64>::new(),
        "completed calls must not be sent again"
    );
    assert_eq!(fanout_prompts(&fake, before).len(), 200 - completed.len());

    let uninterrupted = run(with_fake(
        corral().args([
            "run",
            probe.to_str().unwrap(),
            "--args",
            args,
            "-q",
            "--no-journal",
        ]),
        &fake,
    ));
    assert_eq!(stdout(&resumed), stdout(&uninterrupted));
    assert_eq!(
        serde_json::from_str::<Value>(&stdout(&resumed)).unwrap()["ok"],
        200
    );

    let runs = journal.list_runs(&recent(5)).unwrap();
    assert_eq!(runs[0].status, RunStatus::Succeeded);
    let detail = journal.run_detail(&runs[0].id).unwrap();
    assert_eq!(detail.resumed_from.as_deref(), Some(killed.id.as_str()));
    assert_eq!(
        detail.calls.iter().filter(|c| c.replayed).count(),
        completed.len()
    );
}

#[test]
fn a_changed_script_resumes_from_the_first_changed_call() {
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("steps.js");
    let steps = |third: &str| {
        format!(
            "export const meta = {{ name: 'steps', description: 'five sequential agents' }}\nconst out = []\nfor (const p of ['one', 'two', '{third}', 'four', 'five']) out.push(await agent(p))\nreturn out.length\n"
        )
    };
    std::fs::write(&script, steps("three")).unwrap();
    let data_dir = data.path().to_str().unwrap();
    let first = run(corral().args([
        "run",
        script.to_str().unwrap(),
        "-q",
        "--data-dir",
        data_dir,
    ]));
    assert!(first.status.success(), "{}", stderr(&first));
    std::fs::write(&script, steps("THREE")).unwrap();
    let journal = journal(data.path());
    let original = journal.list_runs(&recent(1)).unwrap().remove(0);

    // Without --script, a resume runs the script as recorded: every call is answered.
    let as_recorded =
        run(corral().args(["runs", "resume", &original.id, "-q", "--data-dir", data_dir]));
    assert!(as_recorded.status.success(), "{}", stderr(&as_recorded));
    let latest = journal.list_runs(&recent(1)).unwrap().remove(0);
    assert_eq!(latest.agents, 5);
    assert!(
        journal
            .run_detail(&latest.id)
            .unwrap()
            .calls
            .iter()
            .all(|c| c.replayed)
    );

    let resumed = run(corral().args([
        "runs",
        "resume",
        &original.id,
        "--script",
        script.to_str().unwrap(),
        "-q",
        "--data-dir",
        data_dir,
    ]));
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert_eq!(stdout(&resumed).trim(), "5");
    let latest = journal.list_runs(&recent(1)).unwrap().remove(0);
    let replayed: Vec<bool> = journal
        .run_detail(&latest.id)
        .unwrap()
        .calls
        .iter()
        .map(|c| c.replayed)
        .collect();
    assert_eq!(
        replayed,
        [true, true, false, false, false],
        "calls after the changed one run live"
    );
    let script_shown = run(corral().args([
        "runs",
        "show",
        &latest.id,
        "--script",
        "--data-dir",
        data_dir,
    ]));
    assert!(stdout(&script_shown).contains("'THREE'"));
}

#[test]
fn resuming_unknown_or_running_runs_is_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap();
    let probe = guest_path("probe");
    assert!(
        run(corral().args([
            "run",
            probe.to_str().unwrap(),
            "--args",
            r#"{"mode":"echo"}"#,
            "-q",
            "--data-dir",
            data_dir
        ]))
        .status
        .success()
    );
    let unknown = run(corral().args(["runs", "resume", "zzzzzzzz", "--data-dir", data_dir]));
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        stderr(&unknown).contains("no run with id 'zzzzzzzz'"),
        "{}",
        stderr(&unknown)
    );

    let mut child = corral()
        .args([
            "run",
            probe.to_str().unwrap(),
            "--args",
            r#"{"mode":"fanout","n":100}"#,
            "--sim-latency",
            "200ms",
            "--max-concurrent",
            "1",
            "-q",
            "--data-dir",
            data_dir,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let journal = journal(data.path());
    wait_for("the second run to start", || {
        journal
            .list_runs(&recent(5))
            .map(|r| r.len() == 2)
            .unwrap_or(false)
    });
    let id = journal.list_runs(&recent(1)).unwrap().remove(0).id;
    let busy = run(corral().args(["runs", "resume", &id, "--data-dir", data_dir]));
    assert_eq!(busy.status.code(), Some(2));
    assert!(
        stderr(&busy).contains("is still running in process"),
        "{}",
        stderr(&busy)
    );

    // And `runs stop` ends it with its own exit code and status.
    let stop = run(corral().args(["runs", "stop", &id, "--data-dir", data_dir]));
    assert!(stop.status.success(), "{}", stderr(&stop));
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(5));
    assert_eq!(
        journal.list_runs(&recent(1)).unwrap()[0].status,
        RunStatus::Stopped
    );
}

#[test]
fn the_events_stream_parses_and_matches_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let probe = guest_path("probe");
    let output = run(corral().args([
        "run",
        probe.to_str().unwrap(),
        "--args",
        r#"{"mode":"phases"}"#,
        "-q",
        "--no-journal",
        "--events",
        events.to_str().unwrap(),
    ]));
    assert!(output.status.success(), "{}", stderr(&output));
    let lines: Vec<Value> = std::fs::read_to_string(&events)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let kinds: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    assert_eq!(kinds.first(), Some(&"run_started"));
    assert_eq!(kinds.last(), Some(&"run_finished"));
    let count = |kind: &str| kinds.iter().filter(|k| **k == kind).count();
    let finished = lines.last().unwrap();
    assert_eq!(finished["ok"], true);
    assert_eq!(
        count("agent_queued") as u64,
        finished["agents"].as_u64().unwrap()
    );
    assert_eq!(count("agent_started"), count("agent_queued"));
    assert_eq!(count("agent_finished"), count("agent_queued"));
    assert!(count("phase") >= 2 && count("log") >= 2, "{kinds:?}");
    let spent: u64 = lines
        .iter()
        .filter(|l| l["event"] == "agent_finished")
        .map(|l| {
            l["usage"]["input_tokens"].as_u64().unwrap()
                + l["usage"]["output_tokens"].as_u64().unwrap()
        })
        .sum();
    assert_eq!(spent, finished["spent_tokens"].as_u64().unwrap());
}

#[test]
fn the_plan_counts_agents_per_phase_and_gates_the_budget() {
    let repo = fixture_repo();
    let audit = guest_path("audit-files");
    let root = repo.path().to_str().unwrap();
    let plan = run(corral().args(["plan", audit.to_str().unwrap(), "--root", root]));
    assert!(plan.status.success(), "{}", stderr(&plan));
    let text = stdout(&plan);
    for phase in ["Scan", "Verify", "Summarize", "total"] {
        assert!(text.contains(phase), "{text}");
    }
    let over = run(corral().args([
        "run",
        audit.to_str().unwrap(),
        "--root",
        root,
        "--budget-tokens",
        "50",
        "--no-journal",
    ]));
    assert_eq!(over.status.code(), Some(6), "{}", stderr(&over));
    assert!(
        stderr(&over).contains("over the --budget-tokens budget of 50")
            && stderr(&over).contains("--force"),
        "{}",
        stderr(&over)
    );
    let forced = run(corral().args([
        "run",
        audit.to_str().unwrap(),
        "--root",
        root,
        "--budget-tokens",
        "50",
        "--force",
        "--no-journal",
        "-q",
    ]));
    assert_ne!(forced.status.code(), Some(6));
}

#[test]
fn the_plan_estimate_is_within_30_percent_of_a_real_protocol_run() {
    let repo = fixture_repo();
    let audit = guest_path("audit-files");
    let root = repo.path().to_str().unwrap();
    let plan = run(corral().args(["plan", audit.to_str().unwrap(), "--root", root]));
    let total_line = stdout(&plan)
        .lines()
        .find(|l| l.starts_with("total"))
        .unwrap()
        .to_string();
    let estimate: f64 = total_line
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();

    let fake = FakeLlm::start(Protocol::Anthropic, Some("test-key"));
    let actual_run = run(with_fake(
        corral().args([
            "run",
            audit.to_str().unwrap(),
            "--root",
            root,
            "--no-journal",
            "-q",
        ]),
        &fake,
    ));
    assert!(actual_run.status.success(), "{}", stderr(&actual_run));
    let actual: u64 = fake
        .received()
        .iter()
        .map(|r| {
            [
                "input_tokens",
                "output_tokens",
                "cache_read_input_tokens",
                "cache_creation_input_tokens",
            ]
            .iter()
            .map(|k| r.usage[k].as_u64().unwrap_or(0))
            .sum::<u64>()
        })
        .sum();
    let ratio = estimate / actual as f64;
    assert!(
        (0.7..=1.3).contains(&ratio),
        "estimate {estimate} vs actual {actual} (ratio {ratio:.2})"
    );
}

#[test]
fn a_multi_turn_conversation_is_kept_as_the_calls_transcript() {
    let fake = FakeLlm::start(Protocol::Anthropic, Some("test-key"));
    fake.script([
        tests::fake_llm::Reply::tool("read", serde_json::json!({"path": "src/math.rs"})),
        tests::fake_llm::Reply::submit(serde_json::json!({"verdict": "fine"})),
    ]);
    let repo = fixture_repo();
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap();
    let args = r#"{"mode": "agent", "prompt": "is math.rs fine?", "schema": {"type": "object", "properties": {"verdict": {"type": "string"}}, "required": ["verdict"]}}"#;
    let probe = guest_path("probe");
    let output = run(with_fake(
        corral().args([
            "run",
            probe.to_str().unwrap(),
            "--root",
            repo.path().to_str().unwrap(),
            "--args",
            args,
            "-q",
            "--data-dir",
            data_dir,
        ]),
        &fake,
    ));
    assert!(output.status.success(), "{}", stderr(&output));
    let id = journal(data.path())
        .list_runs(&recent(1))
        .unwrap()
        .remove(0)
        .id;
    let shown = stdout(&run(corral().args([
        "runs",
        "show",
        &id,
        "--agent",
        "1",
        "--data-dir",
        data_dir,
    ])));
    assert!(shown.contains("--- prompt\nis math.rs fine?"), "{shown}");
    let transcript = &shown[shown.find("--- transcript\n").expect("a transcript") + 15..];
    let messages: Value =
        serde_json::from_str(transcript).unwrap_or_else(|e| panic!("{e}: {transcript}"));
    let kinds: Vec<&str> = messages
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| {
            m["content"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["type"].as_str().unwrap())
        })
        .collect();
    assert_eq!(kinds, ["text", "tool_use", "tool_result", "tool_use"]);
    assert!(
        transcript.contains("a.wrapping_add(b)"),
        "the tool result (the file) is in the transcript"
    );
}

#[test]
fn runs_stop_agent_stops_one_call_which_resolves_to_null_and_the_run_goes_on() {
    let data = tempfile::tempdir().unwrap();
    let data_dir = data.path().to_str().unwrap();
    let script = data.path().join("two.js");
    // The call is slow (60 s in the simulator); the script goes on once it resolves.
    std::fs::write(
        &script,
        "const first = await agent('slow one')\n\
         log('the script goes on')\n\
         return { first }",
    )
    .unwrap();
    // Compile the JS runtime into this process's cache first (in a debug build Cranelift can take
    // longer than the waits below), so that the run under test starts at once.
    let warm = run(corral().args(["check", script.to_str().unwrap()]));
    assert!(warm.status.success(), "{}", stderr(&warm));
    let child = corral()
        .args([
            "run",
            script.to_str().unwrap(),
            "--sim-latency",
            "60s",
            "-q",
        ])
        .args(["--data-dir", data_dir])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let journal = journal(data.path());
    wait_for("the first call to be journaled", || {
        journal
            .list_runs(&recent(1))
            .ok()
            .and_then(|runs| runs.into_iter().next())
            .and_then(|run| journal.run_detail(&run.id).ok())
            .is_some_and(|detail| detail.calls.len() == 1)
    });
    let id = journal.list_runs(&recent(1)).unwrap().remove(0).id;

    // No such agent: a clear error, and the run is untouched.
    let wrong = run(corral().args(["runs", "stop", &id, "--agent", "9", "--data-dir", data_dir]));
    assert_eq!(wrong.status.code(), Some(2), "{}", stderr(&wrong));
    assert!(
        stderr(&wrong).contains("agent #9 of run")
            && stderr(&wrong).contains("is not queued or running"),
        "{}",
        stderr(&wrong)
    );

    let stop = run(corral().args(["runs", "stop", &id, "--agent", "1", "--data-dir", data_dir]));
    assert!(stop.status.success(), "{}", stderr(&stop));
    assert!(
        stderr(&stop).contains("to stop agent #1 of run"),
        "{}",
        stderr(&stop)
    );
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        r#"{"first":null}"#
    );
    let detail = journal.run_detail(&id).unwrap();
    assert_eq!(detail.summary.status, RunStatus::Succeeded);
    assert_eq!(detail.calls[0].error_kind.as_deref(), Some("cancelled"));
    assert_eq!(detail.calls[0].status, corral_store::CallStatus::Failed);
}
