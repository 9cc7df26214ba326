//! The `corral` command line: stdout carries the result, stderr the summary and errors, and the
//! exit code tells failure kinds apart. Error messages are snapshots: an LLM reads them and must
//! be able to act on them.

use expect_test::{Expect, expect};
use tests::guests::guest_path;
use tests::support::{corral, fixture_repo};

struct Outcome {
    code: i32,
    stdout: String,
    errors: String,
}

fn run(args: &[&str]) -> Outcome {
    let output = corral().args(args).output().expect("corral runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    Outcome {
        code: output.status.code().expect("corral exits normally"),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        // Progress and summary lines carry timings; the error lines are what users act on.
        errors: stderr
            .lines()
            .filter(|l| l.starts_with("error"))
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

fn probe(args: &str, extra: &[&str]) -> Outcome {
    let path = guest_path("probe");
    let mut all = vec!["run", path.to_str().unwrap(), "--args", args, "-q"];
    all.extend_from_slice(extra);
    run(&all)
}

fn check(outcome: &Outcome, code: i32, errors: Expect) {
    assert_eq!(
        outcome.code, code,
        "stdout: {}\nerrors: {}",
        outcome.stdout, outcome.errors
    );
    errors.assert_eq(&outcome.errors);
}

#[test]
fn success_prints_the_result_on_stdout() {
    let outcome = probe(r#"{"mode":"echo","n":1}"#, &[]);
    check(&outcome, 0, expect![""]);
    assert_eq!(outcome.stdout, "{\"mode\":\"echo\",\"n\":1}\n");
}

#[test]
fn the_example_workflow_runs_over_a_directory() {
    let repo = fixture_repo();
    let path = guest_path("audit-files");
    let outcome = run(&[
        "run",
        path.to_str().unwrap(),
        "--root",
        repo.path().to_str().unwrap(),
        "-q",
    ]);
    check(&outcome, 0, expect![""]);
    let result: serde_json::Value = serde_json::from_str(&outcome.stdout).unwrap();
    assert_eq!(
        result["files"],
        serde_json::json!(["src/main.rs", "src/math.rs"])
    );
}

#[test]
fn workflow_errors_exit_1() {
    check(
        &probe(r#"{"mode":"fail","message":"nothing to do"}"#, &[]),
        1,
        expect!["error: the workflow failed: nothing to do"],
    );
}

#[test]
fn limits_exit_3() {
    check(
        &probe(r#"{"mode":"spin"}"#, &["--max-cpu", "200ms"]),
        3,
        expect![
            "error: guest CPU limit exceeded: the workflow computed for more than 200ms (raise --max-cpu, or find the loop that never ends)"
        ],
    );
    check(
        &probe(
            r#"{"mode":"stdout","bytes":5000}"#,
            &["--max-log-bytes", "1KiB"],
        ),
        3,
        expect![
            "error: log limit exceeded: the workflow wrote more than 1024 bytes of output and log lines (raise --max-log-bytes)"
        ],
    );
}

#[test]
fn usage_errors_exit_2_and_say_how_to_fix_them() {
    check(
        &probe("{not json", &[]),
        2,
        expect![[
            r#"error: --args is not valid JSON: {not json: key must be a string at line 1 column 2"#
        ]],
    );
    check(
        &probe("{}", &["--timeout", "10 parsecs"]),
        2,
        expect![
            "error: invalid value '10 parsecs' for '--timeout <TIMEOUT>': invalid duration unit 'parsecs' in '10 parsecs': use ms, s, m or h"
        ],
    );
    check(
        &run(&["run", "missing.wasm"]),
        2,
        expect!["error: cannot read missing.wasm: No such file or directory (os error 2)"],
    );
    check(
        &run(&["run", "notes.txt"]),
        2,
        expect![
            "error: notes.txt is neither a .wasm component nor a .js script; name its script runtime with --runtime (or CORRAL_RUNTIME)"
        ],
    );
    check(
        &run(&["run", "missing.js"]),
        2,
        expect!["error: cannot read missing.js: No such file or directory (os error 2)"],
    );
    let forbidden = guest_path("forbidden");
    check(
        &run(&["run", forbidden.to_str().unwrap()]),
        2,
        expect![
            "error: forbidden.wasm is refused: the component imports `evil:net/sockets@0.1.0`, which Corral does not provide: a workflow may import only corral:workflow/{agents,tools,progress,budget} and the WASI subset (cli, clocks, random, io; filesystem without any directory; sockets and HTTP, every use denied). Remove that import (no processes) and rebuild"
        ],
    );
}

#[test]
fn inspect_lists_a_refused_components_imports_marking_the_refused_one() {
    let forbidden = guest_path("forbidden");
    let inspected = run(&["inspect", forbidden.to_str().unwrap()]);
    assert_eq!(inspected.code, 2, "{}", inspected.errors);
    let out = &inspected.stdout;
    assert!(
        out.starts_with("forbidden.wasm\nrefused:  the component imports `evil:net/sockets@0.1.0`"),
        "{out}"
    );
    let imports: Vec<&str> = out
        .lines()
        .skip_while(|line| *line != "imports:")
        .skip(1)
        .collect();
    let refused: Vec<&&str> = imports
        .iter()
        .filter(|l| l.contains("<- refused"))
        .collect();
    assert_eq!(
        refused,
        [&"  evil:net/sockets@0.1.0    <- refused: Corral does not provide it"],
        "{out}"
    );
    // The allowed ones are listed too, unmarked.
    assert!(
        imports.iter().any(|l| l.trim().starts_with("wasi:cli/")),
        "{out}"
    );
}

#[test]
fn a_component_beyond_the_instance_limit_is_refused_at_load_naming_the_flag() {
    let probe = guest_path("probe");
    let probe = probe.to_str().unwrap();
    let args = ["--args", r#"{"mode": "echo"}"#, "--no-cache"];
    let refused = run(&[&["run", probe, "--max-core-instances", "1"][..], &args[..]].concat());
    assert_eq!(refused.code, 2, "{}", refused.errors);
    let message = &refused.errors;
    assert!(
        message.starts_with("error: probe.wasm is refused: "),
        "{message}"
    );
    assert!(message.contains("core module instances"), "{message}");
    assert!(
        message.contains("at most 1 core instances (--max-core-instances, default 64)"),
        "{message}"
    );
    // The default shape runs it.
    let ran = run(&[&["run", probe][..], &args[..]].concat());
    assert_eq!(ran.code, 0, "{}", ran.errors);
}

#[test]
fn a_core_module_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("core.wasm");
    std::fs::write(&module, b"\0asm\x01\0\0\0").unwrap();
    check(
        &run(&["run", module.to_str().unwrap()]),
        2,
        expect![
            "error: core.wasm is not a valid WebAssembly component: it is a core WebAssembly module, not a component; build it for the wasm32-wasip2 target (or wrap it with `wasm-tools component new`)"
        ],
    );
}

#[test]
fn a_script_is_checked_built_into_one_component_run_and_inspected() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("hello.js");
    std::fs::write(
        &script,
        "export const meta = { name: 'hello', description: 'greets', phases: [{ title: 'Greet' }] }\nphase('Greet')\nreturn { answer: await agent(`hello ${args.who}`) !== null }\n",
    )
    .unwrap();
    let script = script.to_str().unwrap();
    check(&run(&["check", script]), 0, expect![""]);

    let built = dir.path().join("hello.wasm");
    check(
        &run(&["build", script, "-o", built.to_str().unwrap()]),
        0,
        expect![""],
    );
    let outcome = run(&[
        "run",
        built.to_str().unwrap(),
        "--args",
        r#"{"who":"corral"}"#,
        "-q",
        "--no-journal",
    ]);
    check(&outcome, 0, expect![""]);
    assert_eq!(outcome.stdout, "{\"answer\":true}\n");

    let inspected = corral()
        .args(["inspect", built.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&inspected.stdout);
    assert!(
        text.contains("kind:     built script (script runtime + embedded script)"),
        "{text}"
    );
    assert!(text.contains("script:   hello.js"), "{text}");
    assert!(
        text.contains(
            "meta:     { name: 'hello', description: 'greets', phases: [{ title: 'Greet' }] }"
        ),
        "{text}"
    );
    assert!(text.contains("check:    ok"), "{text}");
    for line in text
        .lines()
        .skip_while(|l| *l != "imports:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
    {
        let import = line.trim();
        assert!(
            import.starts_with("corral:workflow/") || import.starts_with("wasi:"),
            "unexpected import {import}"
        );
        assert!(
            !import.starts_with("wasi:sockets") && !import.starts_with("wasi:http"),
            "{import}"
        );
    }

    // A broken script is refused by check and by build, which then writes nothing.
    let broken = dir.path().join("broken.js");
    std::fs::write(
        &broken,
        "export const meta = { name: 'b', description: 'd' }\nconst x = require('fs')\nreturn x\n",
    )
    .unwrap();
    let refused = run(&["check", broken.to_str().unwrap()]);
    assert_eq!(refused.code, 2);
    let not_built = dir.path().join("broken.wasm");
    let refused = run(&[
        "build",
        broken.to_str().unwrap(),
        "-o",
        not_built.to_str().unwrap(),
    ]);
    assert_eq!(refused.code, 2);
    assert!(
        refused.errors.contains("broken.js was not built"),
        "{}",
        refused.errors
    );
    assert!(!not_built.exists());
}
