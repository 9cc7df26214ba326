//! `corral runs watch`: the live per-phase view of a run another process (through the journal)
//! or a server (through its event stream) is running — through the real `corral` binary, with a
//! real `corral run` or `corral serve` running the run, and a real pseudo-terminal (util-linux
//! `script`) for the keys.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral_store::{Journal, RunFilter, RunStatus, RunStore};
use serde_json::json;
use tests::server::{TestServer, corral_ok, tenant_with_token};
use tests::support::{corral, wait_until};

/// Two phases: a fan-out of 12 agents, then one.
const WATCHED: &str = "export const meta = { name: 'watched', description: 'a fan-out, then a summary', phases: [{ title: 'Scan' }, { title: 'Summarize' }] }
phase('Scan')
log('scanning 12 files')
const found = await parallel(Array.from({ length: 12 }, (_, i) => () => agent(`scan file ${i}`, { label: `file ${i}` })))
phase('Summarize')
await agent(`summarize ${found.length} scans`)
log('all done')
return found.length
";

fn run(command: &mut Command) -> Output {
    command.output().expect("corral runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn journal(data: &Path) -> Journal {
    Journal::open(&data.join("journal.db")).expect("the journal opens")
}

/// The newest run of the journal in `data`, once there is one.
fn newest_run(data: &Path) -> String {
    let journal = journal(data);
    let newest = || {
        journal
            .list_runs(&RunFilter {
                limit: 1,
                ..RunFilter::default()
            })
            .ok()
            .and_then(|runs| runs.into_iter().next())
    };
    wait_until("the run to be journaled", || newest().is_some());
    newest().unwrap().id
}

fn status(data: &Path, id: &str) -> RunStatus {
    journal(data).run_summary(id).unwrap().unwrap().status
}

/// Writes the script to `dir` and compiles the JavaScript runtime into this process's cache
/// (in a debug build Cranelift can take longer than a run), so that the runs under test start at
/// once.
fn script_in(dir: &Path) -> String {
    let script = dir.join("watched.js");
    std::fs::write(&script, WATCHED).unwrap();
    let warm = run(corral().args(["check", script.to_str().unwrap()]));
    assert!(warm.status.success(), "{}", text(&warm.stderr));
    script.to_str().unwrap().to_string()
}

/// `corral run` of the script in the background: `latency` per agent, two at a time.
fn start_run(script: &str, data: &Path, latency: &str) -> Child {
    corral()
        .args([
            "run",
            script,
            "--sim-latency",
            latency,
            "--max-concurrent",
            "2",
        ])
        .arg("--data-dir")
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// A per-phase line of the view: (phase, done, running, queued, failed).
fn counts(line: &str) -> Option<(String, u64, u64, u64, u64)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        [
            phase,
            done,
            "done",
            running,
            "running",
            queued,
            "queued",
            failed,
            "failed",
            ..,
        ] => Some((
            phase.to_string(),
            done.parse().ok()?,
            running.parse().ok()?,
            queued.parse().ok()?,
            failed.parse().ok()?,
        )),
        _ => None,
    }
}

/// What a plain-lines watch of a whole run of [`WATCHED`] shows: exit code 0, the phases and log
/// lines, counts while agents were in flight, the final per-phase lines and the summary.
fn assert_watched_live(watch: &Output, id: &str) {
    let stdout = text(&watch.stdout);
    assert_eq!(
        watch.status.code(),
        Some(0),
        "{stdout}{}",
        text(&watch.stderr)
    );
    assert!(
        stdout.contains(&format!("corral: watching run {id}")),
        "{stdout}"
    );
    for line in [
        "== Scan",
        "   scanning 12 files",
        "== Summarize",
        "   all done",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "no line {line:?}:\n{stdout}"
        );
    }
    let lines: Vec<(String, u64, u64, u64, u64)> = stdout.lines().filter_map(counts).collect();
    assert!(
        lines
            .iter()
            .any(|(_, _, running, queued, _)| running + queued > 0),
        "no counts while agents were in flight:\n{stdout}"
    );
    // The view ends with the recorded per-phase report, then the summary.
    let last: Vec<&str> = stdout.lines().rev().take(3).collect();
    assert_eq!(
        counts(last[2]),
        Some(("Scan".into(), 12, 0, 0, 0)),
        "{stdout}"
    );
    assert_eq!(
        counts(last[1]),
        Some(("Summarize".into(), 1, 0, 0, 0)),
        "{stdout}"
    );
    assert!(
        last[0].starts_with(&format!("corral: run {id} succeeded: 13 agents, ")),
        "{stdout}"
    );
    assert!(last[0].contains(" tokens, $"), "{stdout}");
}

#[test]
fn watch_follows_a_run_of_another_process_to_its_end() {
    let data = tempfile::tempdir().unwrap();
    let script = script_in(data.path());
    let mut child = start_run(&script, data.path(), "600ms");
    let id = newest_run(data.path());

    let watch = run(corral()
        .args(["runs", "watch", &id, "--data-dir"])
        .arg(data.path()));
    assert_watched_live(&watch, &id);
    assert!(child.wait().unwrap().success());

    // A finished run: its report and summary at once.
    let again = run(corral()
        .args(["runs", "watch", &id[..6], "--data-dir"])
        .arg(data.path()));
    let stdout = text(&again.stdout);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert!(!stdout.contains("watching"), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert_eq!(counts(lines[0]), Some(("Scan".into(), 12, 0, 0, 0)));
    assert!(lines[2].starts_with(&format!("corral: run {id} succeeded: 13 agents, ")));

    // An unknown run: the same error as `corral runs show`.
    let unknown = run(corral()
        .args(["runs", "watch", "zzzzzzzz", "--data-dir"])
        .arg(data.path()));
    let show = run(corral()
        .args(["runs", "show", "zzzzzzzz", "--data-dir"])
        .arg(data.path()));
    assert_eq!(unknown.status.code(), Some(2));
    assert!(
        text(&unknown.stderr).contains("no run with id 'zzzzzzzz'"),
        "{}",
        text(&unknown.stderr)
    );
    assert_eq!(text(&unknown.stderr), text(&show.stderr));
}

#[test]
fn watch_follows_a_servers_run_and_names_a_refused_token() {
    let data = tempfile::tempdir().unwrap();
    let token = tenant_with_token(data.path(), "acme", &[]);
    let server = TestServer::start(data.path(), &[], &[]);
    let api = server.client(&token);
    let hash = api.upload_script("watched.js", WATCHED);
    let id = api.submit(&json!({
        "workflow": hash,
        "limits": {"max_concurrent": 2},
        "sim_latency_ms": 600,
    }));

    // The token from the environment; no journal here (the watch reads the server only).
    let elsewhere = tempfile::tempdir().unwrap();
    let watch = run(corral()
        .args(["runs", "watch", &id, "--server", &server.url, "--data-dir"])
        .arg(elsewhere.path())
        .env("CORRAL_TOKEN", &token));
    assert_watched_live(&watch, &id);
    assert_eq!(
        api.get(&format!("/v1/runs/{id}")).json["status"],
        "succeeded"
    );

    let wrong = run(corral().args([
        "runs",
        "watch",
        &id,
        "--server",
        &server.url,
        "--token",
        "crl_000000000000_nope",
    ]));
    let stderr = text(&wrong.stderr);
    assert_eq!(wrong.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the server refused the token: invalid token")
            && stderr.contains("`corral tokens create TENANT`"),
        "{stderr}"
    );

    let unknown = run(corral().args([
        "runs",
        "watch",
        "zzzzzzzzzzzz",
        "--server",
        &server.url,
        "--token",
        &token,
    ]));
    let stderr = text(&unknown.stderr);
    assert_eq!(unknown.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the server has no run zzzzzzzzzzzz"),
        "{stderr}"
    );

    let tokenless = run(corral()
        .args(["runs", "watch", &id, "--server", &server.url])
        .env_remove("CORRAL_TOKEN"));
    assert_eq!(tokenless.status.code(), Some(2));
    assert!(text(&tokenless.stderr).contains("--server needs the API token"));
}

/// `corral ARGS` on a pseudo-terminal (`script`), then `stty -a` on the same terminal: its
/// output so far, and a way to type.
struct OnTerminal {
    child: Child,
    output: Arc<Mutex<String>>,
}

impl OnTerminal {
    fn start(args: &[&str]) -> OnTerminal {
        let base = corral();
        let quote = |text: &str| format!("'{}'", text.replace('\'', r"'\''"));
        let mut line = quote(base.get_program().to_str().unwrap());
        for arg in args {
            line.push(' ');
            line.push_str(&quote(arg));
        }
        line.push_str("; echo watch-exit=$?; stty -a");
        let mut command = Command::new("script");
        for (name, value) in base.get_envs() {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        let mut child = command
            .args(["-qfec", &line, "/dev/null"])
            .env("TERM", "xterm")
            .env("SHELL", "/bin/sh")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("util-linux `script` runs");
        let mut stdout = child.stdout.take().unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        let seen = Arc::clone(&output);
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut buffer) {
                seen.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        });
        OnTerminal { child, output }
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    fn wait_for(&self, text: &str) {
        wait_until(&format!("{text:?} on the terminal"), || {
            self.output().contains(text)
        });
    }

    fn press(&mut self, key: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(key.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for the watch and `stty` to end; asserts the watch exited 0 and left the terminal
    /// as it found it (line editing and echo on); answers the output.
    fn finish(mut self) -> String {
        self.wait_for("watch-exit=");
        let began = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(began.elapsed() < Duration::from_secs(60), "script runs on");
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(self.child.stdin.take());
        std::thread::sleep(Duration::from_millis(100));
        let output = self.output();
        assert!(output.contains("watch-exit=0"), "{output}");
        let settings = output.split("watch-exit=0").nth(1).unwrap();
        let words: Vec<&str> = settings.split([' ', ';', '\r', '\n']).collect();
        for on in ["icanon", "echo"] {
            assert!(
                words.contains(&on) && !words.contains(&format!("-{on}").as_str()),
                "the terminal is left without {on}: {settings}"
            );
        }
        output
    }
}

#[test]
fn on_a_terminal_q_quits_the_view_and_s_stops_the_run() {
    let data = tempfile::tempdir().unwrap();
    let script = script_in(data.path());
    // Slow agents: the run goes on until it is stopped.
    let mut child = start_run(&script, data.path(), "10s");
    let id = newest_run(data.path());
    let watch = [
        "runs",
        "watch",
        &id,
        "--data-dir",
        data.path().to_str().unwrap(),
    ];

    // `q`: the view ends, exit 0, the run goes on.
    let mut terminal = OnTerminal::start(&watch);
    terminal.wait_for("s stops it, q quits the view");
    terminal.press("q");
    let output = terminal.finish();
    assert!(
        output.contains(&format!("corral: stopped watching run {id}; it goes on")),
        "{output}"
    );
    assert_eq!(status(data.path(), &id), RunStatus::Running);
    assert!(child.try_wait().unwrap().is_none(), "the run goes on");

    // `s`: the run is stopped (as `corral runs stop` does), the view follows it to its end.
    let mut terminal = OnTerminal::start(&watch);
    terminal.wait_for("s stops it, q quits the view");
    terminal.press("s");
    let output = terminal.finish();
    assert!(output.contains("stopping…"), "{output}");
    assert!(output.contains(&format!("to stop run {id}")), "{output}");
    assert!(
        output.contains(&format!("corral: run {id} stopped")),
        "{output}"
    );
    assert_eq!(child.wait().unwrap().code(), Some(5));
    assert_eq!(status(data.path(), &id), RunStatus::Stopped);
}

#[test]
fn on_a_terminal_s_stops_a_servers_run_when_the_token_may() {
    let data = tempfile::tempdir().unwrap();
    let token = tenant_with_token(data.path(), "acme", &[]);
    let reader = corral_ok(data.path(), &["tokens", "create", "acme", "--read-only"])
        .trim()
        .to_string();
    let server = TestServer::start(data.path(), &[], &[]);
    let api = server.client(&token);
    let hash = api.upload_script("watched.js", WATCHED);
    let id = api.submit(&json!({
        "workflow": hash,
        "limits": {"max_concurrent": 2},
        "sim_latency_ms": 10_000,
    }));

    // A read-only token may watch but not stop: the view says so and goes on.
    let mut terminal = OnTerminal::start(&[
        "runs",
        "watch",
        &id,
        "--server",
        &server.url,
        "--token",
        &reader,
    ]);
    terminal.wait_for("s stops it, q quits the view");
    terminal.press("s");
    terminal.wait_for(&format!("cannot stop run {id}: the server answered 403"));
    terminal.press("q");
    let output = terminal.finish();
    assert!(output.contains("stopped watching run"), "{output}");
    assert_eq!(api.get(&format!("/v1/runs/{id}")).json["status"], "running");

    let mut terminal = OnTerminal::start(&[
        "runs",
        "watch",
        &id,
        "--server",
        &server.url,
        "--token",
        &token,
    ]);
    terminal.wait_for("s stops it, q quits the view");
    terminal.press("s");
    let output = terminal.finish();
    assert!(output.contains("stopping…"), "{output}");
    assert!(
        output.contains(&format!("the server is stopping run {id}")),
        "{output}"
    );
    assert!(
        output.contains(&format!("corral: run {id} stopped")),
        "{output}"
    );
    assert_eq!(api.wait(&id)["status"], "stopped");
}
