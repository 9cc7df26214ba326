//! The guest's tools, through the real component: confinement, errors, limits, git.

use serde_json::{Value, json};
use tests::support::{Run, fixture_repo, result, workflow};

async fn tool(
    root: Option<&std::path::Path>,
    tool: &str,
    args: Value,
    change: impl FnOnce(&mut corral_host::RunLimits),
) -> Value {
    let mut run = Run::new(json!({"mode": "tool", "tool": tool, "args": args})).limits(change);
    if let Some(root) = root {
        run = run.root(root);
    }
    result(&run.run(&workflow("probe")).await)
}

/// Lowers one limit of a run.
type LimitChange = fn(&mut corral_host::RunLimits);

fn error_kind(outcome: &Value) -> &str {
    outcome["error"]
        .as_str()
        .unwrap_or_else(|| panic!("expected an error: {outcome}"))
}

#[tokio::test]
async fn reads_stay_inside_the_root() {
    let repo = fixture_repo();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "secret").unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret.txt"),
        repo.path().join("link-out"),
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.path(), repo.path().join("dir-out")).unwrap();
    let root = Some(repo.path());

    let ok = tool(root, "read", json!({"path": "src/math.rs"}), |_| {}).await;
    assert!(ok["ok"].as_str().unwrap().contains("wrapping_add"), "{ok}");
    for escape in [
        "../secret.txt",
        "/etc/passwd",
        "src/../../x",
        "link-out",
        "dir-out/secret.txt",
    ] {
        let outcome = tool(root, "read", json!({"path": escape}), |_| {}).await;
        assert_eq!(error_kind(&outcome), "denied", "{escape}: {outcome}");
    }
    let missing = tool(root, "read", json!({"path": "src/nope.rs"}), |_| {}).await;
    assert_eq!(error_kind(&missing), "not-found");
}

#[tokio::test]
async fn without_a_root_there_are_no_files() {
    let outcome = tool(None, "glob", json!({"pattern": "**/*"}), |_| {}).await;
    assert_eq!(error_kind(&outcome), "denied");
    assert!(
        outcome["message"].as_str().unwrap().contains("--root"),
        "{outcome}"
    );
}

#[tokio::test]
async fn glob_and_grep_honour_gitignore() {
    let repo = fixture_repo();
    let files = tool(
        Some(repo.path()),
        "glob",
        json!({"pattern": "**/*.rs"}),
        |_| {},
    )
    .await;
    assert_eq!(files["ok"], json!(["src/main.rs", "src/math.rs"]));
    let hits = tool(
        Some(repo.path()),
        "grep",
        json!({"pattern": "todo", "ignore_case": true}),
        |_| {},
    )
    .await;
    assert_eq!(
        hits["ok"],
        json!([{"path": "src/math.rs", "line": 4, "text": "// TODO: overflow"}])
    );
}

#[tokio::test]
async fn tool_limits_are_hit_with_their_flag_named() {
    let repo = fixture_repo();
    let root = Some(repo.path());
    let cases: [(&str, Value, LimitChange, &str); 3] = [
        (
            "read",
            json!({"path": "src/main.rs"}),
            |l| l.tools.max_read_bytes = 10,
            "--max-read-bytes",
        ),
        (
            "glob",
            json!({"pattern": "**/*"}),
            |l| l.tools.max_glob_results = 2,
            "--max-glob-results",
        ),
        (
            "grep",
            json!({"pattern": "a"}),
            |l| l.tools.max_grep_matches = 1,
            "--max-grep-matches",
        ),
    ];
    for (name, args, change, flag) in cases {
        let outcome = tool(root, name, args, change).await;
        assert_eq!(error_kind(&outcome), "limit", "{name}: {outcome}");
        assert!(
            outcome["message"].as_str().unwrap().contains(flag),
            "{name}: {outcome}"
        );
    }
}

#[tokio::test]
async fn git_is_readable_and_read_only() {
    let repo = fixture_repo();
    let root = Some(repo.path());
    let log = tool(root, "git-log", json!({}), |_| {}).await;
    let summaries: Vec<&str> = log["ok"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["summary"].as_str().unwrap())
        .collect();
    assert_eq!(summaries, ["wrap on overflow", "first commit"]);
    let status = tool(root, "git-status", json!({}), |_| {}).await;
    assert_eq!(
        status["ok"],
        json!([{"path": "src/main.rs", "status": "modified"}])
    );
    let diff = tool(root, "git-diff", json!({}), |_| {}).await;
    let diff = diff["ok"].as_str().unwrap();
    assert!(
        diff.contains("-    let total = add(1, 2);")
            && diff.contains("+    let total = add(40, 2);"),
        "{diff}"
    );
    let old = tool(
        root,
        "git-show",
        json!({"rev": "HEAD~1", "path": "src/math.rs"}),
        |_| {},
    )
    .await;
    assert!(old["ok"].as_str().unwrap().contains("a + b"), "{old}");
    let bad = tool(root, "git-show", json!({"rev": "no-such-rev"}), |_| {}).await;
    assert_eq!(error_kind(&bad), "invalid-input");
}
