//! Workflows that change code: staged writes, the jail for commands, review and apply, the
//! 0.1.0 compatibility rule — through the real JavaScript runtime and the real `corral` binary.

use std::path::Path;

use serde_json::{Value, json};
use tests::fake_llm::{FakeLlm, Protocol, Reply};
use tests::support::{Run, Said, corral_in, fixture_repo, js_runtime, result, workflow};

/// The id of the run a `corral run` or `corral runs resume` announced on stderr.
fn run_id(said: &Said) -> String {
    said.stderr
        .lines()
        .find_map(|line| line.strip_prefix("corral: run ")?.split_whitespace().next())
        .unwrap_or_else(|| panic!("no run id in: {}", said.stderr))
        .to_string()
}

/// Runs `source` as a script over `root` with `change` applied to its limits.
async fn script(
    root: &Path,
    source: &str,
    change: impl FnOnce(&mut corral_host::RunLimits),
) -> corral_host::RunReport {
    Run::new(Value::Null)
        .script("changes.js", source)
        .root(root)
        .limits(change)
        .run(&js_runtime())
        .await
}

fn grant_all(limits: &mut corral_host::RunLimits) {
    limits.allow_write = vec!["**".to_string()];
}

/// The JavaScript that calls `call` and returns `{ ok }` or `{ code, message }`.
fn attempt(call: &str) -> String {
    format!(
        "try {{ return {{ ok: {call} ?? null }} }} catch (e) {{ return {{ code: e.code, message: e.message }} }}"
    )
}

fn read(root: &Path, path: &str) -> String {
    std::fs::read_to_string(root.join(path)).unwrap()
}

#[tokio::test]
async fn writes_are_staged_where_the_run_reads_them_and_the_root_never_changes() {
    let repo = fixture_repo();
    let root = repo.path();
    let before_math = read(root, "src/math.rs");
    let report = script(
        root,
        "tools.write('src/new.rs', 'pub fn fresh() {}\\n')\n\
         tools.edit('src/math.rs', 'a.wrapping_add(b)', 'a.checked_add(b).unwrap()')\n\
         tools.remove('README.md')\n\
         let gone; try { tools.read('README.md') } catch (e) { gone = e.code }\n\
         return {\n\
           read: tools.read('src/math.rs'),\n\
           glob: tools.glob('**/*'),\n\
           grep: tools.grep('checked_add|fresh').map((m) => m.path),\n\
           gone,\n\
           changes: tools.changes(),\n\
         }",
        grant_all,
    )
    .await;
    let out = result(&report);
    assert!(
        out["read"].as_str().unwrap().contains("a.checked_add(b)"),
        "{out}"
    );
    assert_eq!(
        out["glob"],
        json!(["src/main.rs", "src/math.rs", "src/new.rs"])
    );
    assert_eq!(out["grep"], json!(["src/math.rs", "src/new.rs"]));
    assert_eq!(out["gone"], "not-found");
    assert_eq!(
        out["changes"],
        json!([
            { "path": "README.md", "kind": "removed", "bytes": 0 },
            { "path": "src/math.rs", "kind": "modified", "bytes": before_math.len() - "a.wrapping_add(b)".len() + "a.checked_add(b).unwrap()".len() },
            { "path": "src/new.rs", "kind": "added", "bytes": 18 },
        ])
    );
    // Nothing reached the root.
    assert_eq!(read(root, "src/math.rs"), before_math);
    assert!(root.join("README.md").exists());
    assert!(!root.join("src/new.rs").exists());
    // The report carries the changeset with the root's content hashes as bases.
    let paths: Vec<(&str, bool, bool)> = report
        .changes
        .iter()
        .map(|c| (c.path.as_str(), c.base.is_some(), c.content.is_some()))
        .collect();
    assert_eq!(
        paths,
        [
            ("README.md", true, false),
            ("src/math.rs", true, true),
            ("src/new.rs", false, true)
        ]
    );
    assert_eq!(
        report.changes[1].base.as_deref(),
        Some(corral_host::tools::content_hash(before_math.as_bytes()).as_str())
    );
}

#[tokio::test]
async fn writes_need_the_grant_and_stay_inside_it() {
    let repo = fixture_repo();
    let root = repo.path();
    let denied = result(&script(root, &attempt("tools.write('src/a.rs', 'x')"), |_| {}).await);
    assert_eq!(denied["code"], "denied", "{denied}");
    assert!(
        denied["message"]
            .as_str()
            .unwrap()
            .contains("--allow-write"),
        "{denied}"
    );
    let outside = result(
        &script(root, &attempt("tools.write('README.md', 'x')"), |limits| {
            limits.allow_write = vec!["src/**".to_string()];
        })
        .await,
    );
    assert_eq!(outside["code"], "denied", "{outside}");
    assert!(
        outside["message"]
            .as_str()
            .unwrap()
            .contains("--allow-write=src/**"),
        "{outside}"
    );
    let inside = script(root, "tools.write('src/a.rs', 'x'); return 1", |limits| {
        limits.allow_write = vec!["src/**".to_string()];
    })
    .await;
    assert_eq!(result(&inside), json!(1));
    assert_eq!(inside.changes.len(), 1);
}

#[tokio::test]
async fn writes_cannot_leave_the_root_or_touch_git_links_or_hard_links() {
    let repo = fixture_repo();
    let root = repo.path();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("target.txt"), "outside").unwrap();
    std::os::unix::fs::symlink(outside.path().join("target.txt"), root.join("link.txt")).unwrap();
    std::os::unix::fs::symlink(outside.path(), root.join("dir-out")).unwrap();
    std::os::unix::fs::symlink("src", root.join("src-link")).unwrap();
    std::fs::hard_link(root.join("src/main.rs"), root.join("hard.rs")).unwrap();
    for (path, code) in [
        ("../escape.txt", "denied"),
        ("/tmp/escape.txt", "denied"),
        ("src/../../escape.txt", "denied"),
        (".git/config", "denied"),
        (".git/hooks/pre-commit", "denied"),
        ("sub/.GIT/config", "denied"),
        ("link.txt", "denied"),
        ("dir-out/target.txt", "denied"),
        ("src-link/main.rs", "denied"),
        ("hard.rs", "denied"),
        ("src", "invalid-input"),
        ("src/main.rs/x", "invalid-input"),
    ] {
        let report = script(
            root,
            &format!(
                "let write, remove, edit\n\
                 try {{ tools.write({path:?}, 'x') }} catch (e) {{ write = e.code }}\n\
                 try {{ tools.remove({path:?}) }} catch (e) {{ remove = e.code }}\n\
                 try {{ tools.edit({path:?}, 'a', 'b') }} catch (e) {{ edit = e.code }}\n\
                 return [write, remove, edit]"
            ),
            grant_all,
        )
        .await;
        assert_eq!(result(&report), json!([code, code, code]), "{path}");
        assert!(report.changes.is_empty(), "{path}: {:?}", report.changes);
    }
    assert_eq!(read(outside.path(), "target.txt"), "outside");
    // A repository's metadata is never rewritten, even through a run that may write anything.
    assert!(
        !std::fs::read_to_string(root.join(".git/config"))
            .unwrap()
            .contains('x')
    );
}

#[tokio::test]
async fn edit_needs_exactly_one_occurrence_and_a_failed_call_loses_nothing() {
    let repo = fixture_repo();
    let root = repo.path();
    let report = script(
        root,
        "tools.write('notes.txt', 'one two two\\n')\n\
         const codes = []\n\
         for (const old of ['three', 'two', '']) {\n\
           try { tools.edit('notes.txt', old, 'x') } catch (e) { codes.push([e.code, e.message]) }\n\
         }\n\
         tools.edit('notes.txt', 'one', '1')\n\
         return { codes, text: tools.read('notes.txt') }",
        grant_all,
    )
    .await;
    let out = result(&report);
    assert_eq!(out["text"], "1 two two\n");
    let codes = out["codes"].as_array().unwrap();
    assert_eq!(codes.len(), 3, "{out}");
    for code in codes {
        assert_eq!(code[0], "invalid-input", "{out}");
    }
    assert!(
        codes[0][1].as_str().unwrap().contains("does not occur"),
        "{out}"
    );
    assert!(
        codes[1][1].as_str().unwrap().contains("occurs 2 times"),
        "{out}"
    );
}

#[tokio::test]
async fn staging_limits_are_hit_with_their_flag_named_and_keep_what_was_staged() {
    let repo = fixture_repo();
    let root = repo.path();
    type Change = fn(&mut corral_host::RunLimits);
    let cases: [(&str, Change, &str); 3] = [
        (
            "tools.write('b.txt', 'x'.repeat(2000))",
            |l| {
                grant_all(l);
                l.tools.max_write_bytes = 1000;
            },
            "--max-write-bytes",
        ),
        (
            "tools.write('b.txt', 'x'.repeat(600))",
            |l| {
                grant_all(l);
                l.tools.max_staged_bytes = 1000;
            },
            "--max-staged-bytes",
        ),
        (
            "tools.write('b.txt', 'x')",
            |l| {
                grant_all(l);
                l.tools.max_staged_files = 1;
            },
            "--max-staged-files",
        ),
    ];
    for (call, change, flag) in cases {
        let report = script(
            root,
            &format!(
                "tools.write('a.txt', 'y'.repeat(500))\n\
                 let error; try {{ {call} }} catch (e) {{ error = [e.code, e.message] }}\n\
                 return {{ error, kept: tools.read('a.txt').length }}"
            ),
            change,
        )
        .await;
        let out = result(&report);
        assert_eq!(out["error"][0], "limit", "{flag}: {out}");
        assert!(out["error"][1].as_str().unwrap().contains(flag), "{out}");
        assert_eq!(out["kept"], 500, "{flag}: {out}");
        assert_eq!(report.changes.len(), 1, "{flag}");
    }
}

#[tokio::test]
async fn replacing_and_reverting_give_their_bytes_back() {
    let repo = fixture_repo();
    let report = script(
        repo.path(),
        "tools.write('a.txt', 'x'.repeat(600)); tools.write('a.txt', 'y'.repeat(600))\n\
         tools.revert('a.txt'); tools.write('b.txt', 'z'.repeat(900)); return tools.changes()",
        |l| {
            grant_all(l);
            l.tools.max_staged_bytes = 1000;
        },
    )
    .await;
    assert_eq!(
        result(&report),
        json!([{ "path": "b.txt", "kind": "added", "bytes": 900 }])
    );
}

#[tokio::test]
async fn a_path_is_a_file_or_a_directory_and_edits_need_text() {
    let repo = fixture_repo();
    let root = repo.path();
    std::fs::write(root.join("latin1.txt"), b"caf\xe9 au lait\n").unwrap();
    let report = script(
        root,
        "tools.write('a', 'file')\n\
         let clash, under, latin\n\
         try { tools.write('a/b', 'x') } catch (e) { clash = [e.code, e.message] }\n\
         tools.write('d/e', 'x')\n\
         try { tools.write('d', 'x') } catch (e) { under = e.code }\n\
         try { tools.edit('latin1.txt', 'au', 'with') } catch (e) { latin = [e.code, e.message] }\n\
         return { clash, under, latin, changes: tools.changes().map((c) => c.path) }",
        grant_all,
    )
    .await;
    let out = result(&report);
    assert_eq!(out["clash"][0], "invalid-input", "{out}");
    assert!(
        out["clash"][1]
            .as_str()
            .unwrap()
            .contains("both a file and a directory"),
        "{out}"
    );
    assert_eq!(out["under"], "invalid-input", "{out}");
    assert_eq!(out["latin"][0], "invalid-input", "{out}");
    assert!(
        out["latin"][1].as_str().unwrap().contains("not UTF-8"),
        "{out}"
    );
    assert_eq!(out["changes"], json!(["a", "d/e"]));
}

/// A simulated provider that changes the root while it answers: someone editing files during a
/// run, at a known moment.
struct Meddler {
    sim: corral_host::provider::sim::SimProvider,
    meddle: Box<dyn Fn() + Send + Sync>,
}

impl corral_host::provider::Provider for Meddler {
    fn name(&self) -> &str {
        "sim"
    }

    fn resolve_model(&self, requested: Option<&str>) -> String {
        self.sim.resolve_model(requested)
    }

    fn complete<'a>(
        &'a self,
        request: &'a corral_host::provider::ChatRequest,
    ) -> corral_host::provider::BoxFuture<
        'a,
        Result<corral_host::provider::ChatResponse, corral_host::provider::ProviderError>,
    > {
        (self.meddle)();
        self.sim.complete(request)
    }
}

fn meddler(meddle: impl Fn() + Send + Sync + 'static) -> std::sync::Arc<Meddler> {
    std::sync::Arc::new(Meddler {
        sim: corral_host::provider::sim::SimProvider::default(),
        meddle: Box::new(meddle),
    })
}

#[tokio::test]
async fn a_staged_file_the_root_gains_later_is_listed_and_searched_once() {
    let repo = fixture_repo();
    let root = repo.path().to_path_buf();
    let gained = root.join("gained.txt");
    let report = Run::new(Value::Null)
        .script(
            "gain.js",
            "tools.write('gained.txt', 'needle\\n'); await agent('wait'); \
             return [tools.glob('*.txt'), tools.grep('needle').length]",
        )
        .root(&root)
        .provider(meddler(move || {
            std::fs::write(&gained, "needle\n").unwrap()
        }))
        .limits(grant_all)
        .run(&js_runtime())
        .await;
    assert_eq!(result(&report), json!([["gained.txt"], 1]));
}

#[tokio::test]
async fn a_write_based_on_an_old_read_of_a_file_the_root_changed_is_a_conflict() {
    let repo = fixture_repo();
    let root = repo.path().to_path_buf();
    let readme = root.join("README.md");
    let report = Run::new(Value::Null)
        .script(
            "stale.js",
            &format!(
                "const old = tools.read('README.md'); await agent('think'); {}",
                attempt("tools.write('README.md', old + 'more\\n')")
            ),
        )
        .root(&root)
        .provider(meddler(move || {
            std::fs::write(&readme, "# edited by hand\n").unwrap();
        }))
        .limits(grant_all)
        .run(&js_runtime())
        .await;
    let out = result(&report);
    assert_eq!(out["code"], "invalid-input", "{out}");
    assert!(
        out["message"].as_str().unwrap().contains("conflict"),
        "{out}"
    );
    assert!(report.changes.is_empty());
}

#[tokio::test]
async fn the_command_view_is_bounded_and_keeps_executable_bits() {
    let repo = fixture_repo();
    let root = repo.path();
    std::fs::write(root.join("check.sh"), "#!/bin/sh\necho checked\n").unwrap();
    std::fs::set_permissions(
        root.join("check.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let allow = |l: &mut corral_host::RunLimits| {
        grant_all(l);
        l.allow_run = vec!["sh".to_string()];
    };
    let report = script(
        root,
        "tools.edit('check.sh', 'checked', 'edited')\n\
         return tools.run('sh', ['-c', 'test -x check.sh && ./check.sh'])",
        allow,
    )
    .await;
    assert_eq!(result(&report)["stdout"], "edited\n");
    let limited = script(root, &attempt("tools.run('sh', ['-c', 'true'])"), |l| {
        allow(l);
        l.tools.max_view_bytes = 64;
    })
    .await;
    let out = result(&limited);
    assert_eq!(out["code"], "limit", "{out}");
    assert!(
        out["message"]
            .as_str()
            .unwrap()
            .contains("--max-view-bytes"),
        "{out}"
    );
    // Applying keeps the executable bit too.
    let applied = corral_host::tools::apply(
        root,
        &report.changes,
        &[],
        &corral_host::tools::WriteGrant::parse(&["**".to_string()]).unwrap(),
    )
    .unwrap();
    assert_eq!(applied.applied, ["check.sh"]);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(root.join("check.sh"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o755);
}

#[tokio::test]
async fn apply_never_writes_through_a_symlink_planted_after_the_run() {
    let repo = fixture_repo();
    let root = repo.path();
    let report = script(
        root,
        "tools.write('hooks/pre-commit', '#!/bin/sh\\necho pwned\\n'); tools.write('src/lib.rs', 'x'); return 1",
        grant_all,
    )
    .await;
    assert_eq!(report.changes.len(), 2);
    // Between the run and the apply, `hooks` becomes a symlink into the repository's metadata.
    std::os::unix::fs::symlink(".git/hooks", root.join("hooks")).unwrap();
    let grant = corral_host::tools::WriteGrant::parse(&["**".to_string()]).unwrap();
    let refused = corral_host::tools::apply(root, &report.changes, &[], &grant).unwrap_err();
    assert!(refused.to_string().contains("symlink"), "{refused}");
    assert!(!root.join(".git/hooks/pre-commit").exists());
    assert!(
        !root.join("src/lib.rs").exists(),
        "a refused apply wrote another file"
    );
    // A grant narrower than what was staged is checked again at apply time.
    std::fs::remove_file(root.join("hooks")).unwrap();
    let narrow = corral_host::tools::WriteGrant::parse(&["src/**".to_string()]).unwrap();
    let outside = corral_host::tools::apply(root, &report.changes, &[], &narrow).unwrap_err();
    assert!(outside.to_string().contains("--allow-write"), "{outside}");
}

#[tokio::test]
async fn agents_write_through_their_tools_only_under_the_grant() {
    let repo = fixture_repo();
    let root = repo.path();
    let fake = FakeLlm::start(Protocol::Anthropic, Some("test-key"));
    fake.script([
        Reply::tool(
            "write",
            json!({ "path": "src/new.rs", "content": "pub fn new() {}\n" }),
        ),
        Reply::text("done"),
    ]);
    let source = "const text = await agent('add a module', { tools: ['read', 'write', 'edit'] })\n\
                  return [text, tools.read('src/new.rs'), tools.changes().map((c) => c.path)]";
    let report = Run::new(Value::Null)
        .script("agent-writes.js", source)
        .root(root)
        .provider(fake.provider())
        .limits(grant_all)
        .run(&js_runtime())
        .await;
    assert_eq!(
        result(&report),
        json!(["done", "pub fn new() {}\n", ["src/new.rs"]])
    );
    assert!(!root.join("src/new.rs").exists());
    // The write tool is offered only when named, and only under the grant.
    let offered: Vec<String> = fake.received()[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tool| tool["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(offered, ["read", "write", "edit"]);
    let denied = result(
        &Run::new(Value::Null)
            .script(
                "denied.js",
                &attempt("await agent('x', { tools: ['write'] })"),
            )
            .root(root)
            .provider(fake.provider())
            .run(&js_runtime())
            .await,
    );
    assert_eq!(denied["code"], "denied", "{denied}");
    assert!(
        denied["message"]
            .as_str()
            .unwrap()
            .contains("--allow-write"),
        "{denied}"
    );
}

#[tokio::test]
async fn two_agents_editing_one_file_conflict_instead_of_interleaving() {
    let repo = fixture_repo();
    let root = repo.path();
    let fake = FakeLlm::start(Protocol::Anthropic, Some("test-key"));
    // Both first answers are in flight at once, so both agents started before either edit.
    fake.set_latency(std::time::Duration::from_millis(300));
    let edit = json!({ "path": "src/math.rs", "old_text": "a.wrapping_add(b)", "new_text": "a.checked_add(b).unwrap()" });
    fake.script([
        Reply::tool("edit", edit.clone()),
        Reply::tool("edit", edit),
        Reply::text("done"),
        Reply::text("done"),
    ]);
    let source = "const [a, b] = await parallel([\n\
                    () => agent('edit one', { tools: ['read', 'edit'] }),\n\
                    () => agent('edit two', { tools: ['read', 'edit'] }),\n\
                  ])\n\
                  return [a, b, tools.read('src/math.rs')]";
    let report = Run::new(Value::Null)
        .script("conflict.js", source)
        .root(root)
        .provider(fake.provider())
        .limits(grant_all)
        .run(&js_runtime())
        .await;
    let out = result(&report);
    assert_eq!(out[0], "done");
    assert_eq!(out[1], "done");
    let math = out[2].as_str().unwrap();
    assert_eq!(math.matches("checked_add").count(), 1, "{math}");
    let conflicts = fake
        .received()
        .iter()
        .filter(|request| request.body.to_string().contains("conflict:"))
        .count();
    assert_eq!(
        conflicts, 1,
        "exactly one agent is told to read the file again"
    );
}

#[tokio::test]
async fn an_isolated_agents_changes_wait_to_be_kept_or_dropped() {
    let repo = fixture_repo();
    let root = repo.path();
    let fake = FakeLlm::start(Protocol::Anthropic, Some("test-key"));
    fake.script([
        Reply::tool("write", json!({ "path": "a.txt", "content": "from a\n" })),
        Reply::text("a done"),
        Reply::tool("write", json!({ "path": "b.txt", "content": "from b\n" })),
        Reply::text("b done"),
        Reply::tool("write", json!({ "path": "c.txt", "content": "from c\n" })),
        Reply::text("c done"),
    ]);
    let source = "tools.write('base.txt', 'base')\n\
        const a = await agent('a', { isolation: 'worktree', tools: ['read', 'write'] })\n\
        const before = tools.changes().map((c) => c.path)\n\
        const kept = a.changes.keep()\n\
        const b = await agent('b', { isolation: 'worktree', tools: ['write'] })\n\
        b.changes.drop()\n\
        const c = await agent('c', { isolation: 'worktree', tools: ['write'] })\n\
        tools.write('c.txt', 'the script got there first')\n\
        let conflict; try { c.changes.keep() } catch (e) { conflict = [e.code, e.message] }\n\
        c.changes.drop()\n\
        return { result: a.result, files: a.changes.files, diff: a.changes.diff, before, kept, conflict,\n\
                 after: tools.changes().map((c) => c.path), c: tools.read('c.txt') }";
    let report = Run::new(Value::Null)
        .script("isolated.js", source)
        .root(root)
        .provider(fake.provider())
        .limits(grant_all)
        .run(&js_runtime())
        .await;
    let out = result(&report);
    assert_eq!(out["result"], "a done");
    assert_eq!(out["before"], json!(["base.txt"]), "{out}");
    assert_eq!(
        out["files"],
        json!([{ "path": "a.txt", "kind": "added", "bytes": 7 }])
    );
    assert!(out["diff"].as_str().unwrap().contains("+from a"), "{out}");
    assert_eq!(out["kept"], json!(["a.txt"]));
    assert_eq!(out["conflict"][0], "invalid-input", "{out}");
    assert!(
        out["conflict"][1].as_str().unwrap().contains("conflict"),
        "{out}"
    );
    assert_eq!(out["after"], json!(["a.txt", "base.txt", "c.txt"]));
    assert_eq!(out["c"], "the script got there first");
    // Isolation needs the write grant.
    let denied = result(
        &Run::new(Value::Null)
            .script(
                "denied.js",
                &attempt("await agent('x', { isolation: 'worktree' })"),
            )
            .root(root)
            .provider(fake.provider())
            .run(&js_runtime())
            .await,
    );
    assert_eq!(denied["code"], "denied", "{denied}");
}

#[test]
fn a_replayed_agent_call_stages_what_it_wrote_again() {
    let repo = fixture_repo();
    let root = repo.path();
    let data = tempfile::tempdir().unwrap();
    let fake = FakeLlm::start(Protocol::Anthropic, Some("test-key"));
    fake.script([
        Reply::tool(
            "write",
            json!({ "path": "src/agent.rs", "content": "// by the agent\n" }),
        ),
        Reply::text("written"),
    ]);
    let env = [
        ("ANTHROPIC_BASE_URL", fake.url()),
        ("ANTHROPIC_API_KEY", "test-key".to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    std::fs::write(
        root.join("agentic.js"),
        "await agent('write it', { tools: ['write'] }); throw new Error('boom')",
    )
    .unwrap();
    let failed = corral_in(
        root,
        data.path(),
        &env,
        &[
            "run",
            "agentic.js",
            "--root",
            ".",
            "--allow-write",
            "--provider",
            "anthropic",
        ],
    );
    assert_ne!(failed.code, Some(0), "{}", failed.stderr);
    let id = run_id(&failed);
    let sent = fake.received().len();
    assert_eq!(sent, 2);
    let fixed = root.join("fixed.js");
    std::fs::write(
        &fixed,
        "await agent('write it', { tools: ['write'] }); return tools.changes().map((c) => c.path)",
    )
    .unwrap();
    let resumed = corral_in(
        root,
        data.path(),
        &env,
        &["runs", "resume", &id, "--script", fixed.to_str().unwrap()],
    );
    assert_eq!(resumed.code, Some(0), "{}", resumed.stderr);
    assert_eq!(resumed.stdout.trim(), r#"["src/agent.rs"]"#);
    assert_eq!(
        fake.received().len(),
        sent,
        "the replayed call was sent again"
    );
}

#[tokio::test]
async fn revert_shows_the_root_again() {
    let repo = fixture_repo();
    let root = repo.path();
    let report = script(
        root,
        "tools.write('README.md', 'changed')\n\
         tools.write('fresh.txt', 'new')\n\
         tools.revert('README.md'); tools.revert('fresh.txt'); tools.revert('never-staged.txt')\n\
         return [tools.read('README.md'), tools.glob('*.txt'), tools.changes()]",
        grant_all,
    )
    .await;
    assert_eq!(result(&report), json!(["# fixture\n", [], []]));
    assert!(report.changes.is_empty());
}

#[tokio::test]
async fn commands_run_in_a_jail_over_the_root_with_the_changes() {
    let repo = fixture_repo();
    let root = repo.path();
    let allow = |l: &mut corral_host::RunLimits| {
        grant_all(l);
        l.allow_run = vec!["sh".to_string(), "cat".to_string()];
    };
    let report = script(
        root,
        "tools.write('src/math.rs', 'staged content\\n')\n\
         tools.remove('README.md')\n\
         const seen = tools.run('sh', ['-c', 'cat src/math.rs; test -e README.md && echo readme; test -e .git && echo git; echo $HOME; exit 3'])\n\
         tools.revert('src/math.rs')\n\
         const after = tools.run('cat', ['src/math.rs'])\n\
         const write = tools.run('sh', ['-c', 'echo x > src/math.rs || echo refused; echo y > /tmp/scratch && echo scratch'])\n\
         return { seen, after: after.stdout, write: write.stdout }",
        allow,
    )
    .await;
    let out = result(&report);
    assert_eq!(out["seen"]["code"], 3, "{out}");
    assert_eq!(out["seen"]["stdout"], "staged content\n/tmp\n", "{out}");
    assert!(
        out["after"].as_str().unwrap().contains("wrapping_add"),
        "{out}"
    );
    assert_eq!(out["write"], "refused\nscratch\n", "{out}");
    assert!(read(root, "src/math.rs").contains("wrapping_add"));

    // Unlisted commands, and any command without the grant, are denied; there is no shell.
    for (source, change) in [
        (
            "tools.run('node', ['-e', '1'])",
            allow as fn(&mut corral_host::RunLimits),
        ),
        ("tools.run('/bin/sh', ['-c', 'true'])", allow),
        ("tools.run('sh', ['-c', 'true'])", grant_all),
    ] {
        let out = result(&script(root, &attempt(source), change).await);
        assert_eq!(out["code"], "denied", "{source}: {out}");
        assert!(
            out["message"].as_str().unwrap().contains("--allow-run"),
            "{out}"
        );
    }
}

#[tokio::test]
async fn a_jailed_command_has_no_network_and_bounded_time() {
    let repo = fixture_repo();
    let root = repo.path();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let report = script(
        root,
        &format!(
            "const net = tools.run('node', ['-e', `require('net').connect({port}, '127.0.0.1').on('connect', () => {{ console.log('connected'); process.exit(0) }}).on('error', (e) => {{ console.log(e.code); process.exit(7) }})`])\n\
             let slow; try {{ tools.run('sh', ['-c', 'sleep 30'], {{ timeoutMs: 300 }}) }} catch (e) {{ slow = [e.code, e.message] }}\n\
             return {{ net, slow }}"
        ),
        |l| l.allow_run = vec!["node".to_string(), "sh".to_string()],
    )
    .await;
    let out = result(&report);
    assert_eq!(out["net"]["code"], 7, "{out}");
    assert!(
        out["net"]["stdout"]
            .as_str()
            .unwrap()
            .contains("ECONNREFUSED")
            || out["net"]["stdout"]
                .as_str()
                .unwrap()
                .contains("ENETUNREACH"),
        "{out}"
    );
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the jail reached the host's listener"
    );
    assert_eq!(out["slow"][0], "limit", "{out}");
    assert!(
        out["slow"][1].as_str().unwrap().contains("timeoutMs"),
        "{out}"
    );
}

#[tokio::test]
async fn a_component_built_against_0_1_0_runs_on_this_host() {
    let repo = fixture_repo();
    std::fs::write(repo.path().join("README.md"), "# hello compat\n").unwrap();
    let report = Run::new(Value::Null)
        .root(repo.path())
        .run(&workflow("compat-0-1-0"))
        .await;
    let out = result(&report);
    assert_eq!(out["read"], "# hello compat\n");
    assert_eq!(out["grep"], 1);
    assert!(
        out["agent"].as_str().is_some_and(|text| !text.is_empty()),
        "{out}"
    );
}

/// A small Node project: three modules, each with its own `node --test` file.
fn node_project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let write = |path: &str, text: &str| {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    for (name, body, test) in [
        (
            "add",
            "var add = function (a, b) { return a + b }\nmodule.exports = { add: add }\n",
            "assert.strictEqual(m.add(2, 3), 5)",
        ),
        (
            "greet",
            "var greet = function (name) { return 'hello, ' + name }\nmodule.exports = { greet: greet }\n",
            "assert.strictEqual(m.greet('ada'), 'hello, ada')",
        ),
        (
            "mul",
            "var mul = function (a, b) { return a * b }\nmodule.exports = { mul: mul }\n",
            "assert.strictEqual(m.mul(2, 3), 6)",
        ),
    ] {
        write(&format!("src/{name}.js"), body);
        write(
            &format!("src/{name}.test.js"),
            &format!(
                "const test = require('node:test')\nconst assert = require('node:assert')\nconst m = require('./{name}.js')\ntest('{name}', () => {{ {test} }})\n"
            ),
        );
    }
    dir
}

#[test]
fn migrate_keeps_the_rewrites_whose_tests_pass_and_apply_writes_exactly_those() {
    let project = node_project();
    let root = project.path();
    let data = tempfile::tempdir().unwrap();
    let originals: Vec<(String, String)> = ["add", "greet", "mul"]
        .iter()
        .map(|name| {
            let path = format!("src/{name}.js");
            let text = read(root, &path);
            (path, text)
        })
        .collect();
    let add = "const add = (a, b) => a + b\nmodule.exports = { add }\n";
    // The greet rewrite breaks its test: a missing comma.
    let greet = "const greet = (name) => `hello ${name}`\nmodule.exports = { greet }\n";
    let mul = "const mul = (a, b) => a * b\nmodule.exports = { mul }\n";
    let fake = FakeLlm::start(Protocol::Anthropic, Some("test-key"));
    for (file, code) in [("add", add), ("greet", greet), ("mul", mul)] {
        fake.script_matching(
            &format!("The file is src/{file}.js."),
            Reply::submit(json!({ "code": code })),
        );
    }
    let migrate = tests::guests::workspace_root().join("workflows/migrate.js");
    let env = [
        ("ANTHROPIC_BASE_URL", fake.url()),
        ("ANTHROPIC_API_KEY", "test-key".to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let said = corral_in(
        root,
        data.path(),
        &env,
        &[
            "run",
            migrate.to_str().unwrap(),
            "--root",
            ".",
            "--provider",
            "anthropic",
            "--allow-write=src/**",
            "--allow-run=node",
        ],
    );
    assert_eq!(said.code, Some(0), "{}", said.stderr);
    let out: Value = serde_json::from_str(said.stdout.trim()).unwrap();
    assert_eq!(
        out["rows"],
        json!([
            { "file": "src/add.js", "test": "src/add.test.js", "testsPassed": true, "kept": true },
            { "file": "src/greet.js", "test": "src/greet.test.js", "testsPassed": false, "kept": false },
            { "file": "src/mul.js", "test": "src/mul.test.js", "testsPassed": true, "kept": true },
        ]),
        "{out}\n{}",
        said.stderr
    );
    assert_eq!(out["kept"], json!(["src/add.js", "src/mul.js"]));
    // The run changed nothing in the root.
    for (path, text) in &originals {
        assert_eq!(&read(root, path), text, "{path} changed before apply");
    }
    let id = run_id(&said);
    assert!(
        said.stderr.contains(&format!("corral runs apply {id}")),
        "{}",
        said.stderr
    );
    let shown = corral_in(root, data.path(), &[], &["runs", "show", &id]);
    assert!(
        shown.stdout.contains("grants: write src/**  run node"),
        "{}",
        shown.stdout
    );
    assert!(
        shown.stdout.contains("changes: 2 staged"),
        "{}",
        shown.stdout
    );

    let diff = corral_in(root, data.path(), &[], &["runs", "diff", &id]);
    assert_eq!(diff.code, Some(0), "{}", diff.stderr);
    assert!(diff.stdout.contains("+++ b/src/add.js"), "{}", diff.stdout);
    assert!(diff.stdout.contains("+++ b/src/mul.js"), "{}", diff.stdout);
    assert!(
        diff.stdout.contains("+const add = (a, b) => a + b"),
        "{}",
        diff.stdout
    );
    assert!(!diff.stdout.contains("greet"), "{}", diff.stdout);
    assert!(!diff.stdout.contains("\x1b["), "not a terminal: no colour");

    let applied = corral_in(root, data.path(), &[], &["runs", "apply", &id]);
    assert_eq!(applied.code, Some(0), "{}", applied.stderr);
    assert_eq!(read(root, "src/add.js"), add);
    assert_eq!(read(root, "src/mul.js"), mul);
    assert_eq!(read(root, "src/greet.js"), originals[1].1);
    // Applying again writes nothing and says so.
    let again = corral_in(root, data.path(), &[], &["runs", "apply", &id]);
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert!(
        again.stderr.contains("already in the root"),
        "{}",
        again.stderr
    );
    assert!(again.stderr.contains("0 files written"), "{}", again.stderr);
}

#[test]
fn apply_refuses_files_the_root_changed_and_keeps_the_changes_for_later() {
    let repo = fixture_repo();
    let root = repo.path();
    let data = tempfile::tempdir().unwrap();
    let script = root.join("edit.js");
    std::fs::write(
        &script,
        "tools.write('src/math.rs', 'staged math\\n'); tools.write('docs/new.md', 'new doc\\n'); return tools.changes().length",
    )
    .unwrap();
    let said = corral_in(
        root,
        data.path(),
        &[],
        &["run", "edit.js", "--root", ".", "--allow-write"],
    );
    assert_eq!(said.code, Some(0), "{}", said.stderr);
    let id = run_id(&said);
    // Someone edits the file after the run staged its change.
    std::fs::write(root.join("src/math.rs"), "edited by hand\n").unwrap();
    let refused = corral_in(root, data.path(), &[], &["runs", "apply", &id]);
    assert_ne!(refused.code, Some(0));
    assert!(refused.stderr.contains("src/math.rs"), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("nothing was applied"),
        "{}",
        refused.stderr
    );
    assert_eq!(read(root, "src/math.rs"), "edited by hand\n");
    assert!(
        !root.join("docs/new.md").exists(),
        "a refused apply wrote a file"
    );
    // The other file can still be applied on its own, into a directory that did not exist.
    let unknown = corral_in(
        root,
        data.path(),
        &[],
        &["runs", "apply", &id, "--path", "nope.txt"],
    );
    assert_ne!(unknown.code, Some(0));
    assert!(
        unknown
            .stderr
            .contains("not among the run's staged changes"),
        "{}",
        unknown.stderr
    );
    let partial = corral_in(
        root,
        data.path(),
        &[],
        &["runs", "apply", &id, "--path", "docs/new.md"],
    );
    assert_eq!(partial.code, Some(0), "{}", partial.stderr);
    assert_eq!(read(root, "docs/new.md"), "new doc\n");
    // --apply applies on success.
    let applied = corral_in(
        root,
        data.path(),
        &[],
        &["run", "edit.js", "--root", ".", "--allow-write", "--apply"],
    );
    assert_eq!(applied.code, Some(0), "{}", applied.stderr);
    assert_eq!(read(root, "src/math.rs"), "staged math\n");
    // No leftover temporary files from the atomic writes.
    let leftovers: Vec<_> = std::fs::read_dir(root.join("src"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("corral-apply"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_resumed_run_keeps_its_staged_writes_and_its_grants() {
    let repo = fixture_repo();
    let root = repo.path();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(
        root.join("flaky.js"),
        "tools.write('src/math.rs', 'staged\\n'); await agent('one call'); throw new Error('boom')",
    )
    .unwrap();
    let failed = corral_in(
        root,
        data.path(),
        &[],
        &["run", "flaky.js", "--root", ".", "--allow-write=src/**"],
    );
    assert_ne!(failed.code, Some(0));
    let id = run_id(&failed);
    // A failed run's changeset is recorded too.
    let failed_diff = corral_in(root, data.path(), &[], &["runs", "diff", &id]);
    assert!(
        failed_diff.stdout.contains("+staged"),
        "{}",
        failed_diff.stdout
    );
    let fixed = root.join("fixed.js");
    std::fs::write(
        &fixed,
        "tools.write('src/math.rs', 'staged\\n'); await agent('one call'); return tools.changes().map((c) => c.path)",
    )
    .unwrap();
    let resumed = corral_in(
        root,
        data.path(),
        &[],
        &["runs", "resume", &id, "--script", fixed.to_str().unwrap()],
    );
    assert_eq!(resumed.code, Some(0), "{}", resumed.stderr);
    assert_eq!(resumed.stdout.trim(), r#"["src/math.rs"]"#);
    assert!(
        resumed.stderr.contains("from the journal"),
        "{}",
        resumed.stderr
    );
    let new_id = run_id(&resumed);
    let diff = corral_in(root, data.path(), &[], &["runs", "diff", &new_id]);
    assert!(diff.stdout.contains("+staged"), "{}", diff.stdout);
    let shown = corral_in(root, data.path(), &[], &["runs", "show", &new_id]);
    assert!(
        shown.stdout.contains("grants: write src/**  run none"),
        "{}",
        shown.stdout
    );
}

#[test]
fn bad_grants_are_refused_before_the_run_starts() {
    let repo = fixture_repo();
    let root = repo.path();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(root.join("noop.js"), "return 1").unwrap();
    for (flag, expected) in [
        (
            "--allow-write=/etc/**",
            "not a pattern relative to the root",
        ),
        ("--allow-write=[", "is invalid"),
        ("--allow-run=/bin/sh", "not a command name"),
    ] {
        let said = corral_in(
            root,
            data.path(),
            &[],
            &["run", "noop.js", "--root", ".", flag],
        );
        assert_ne!(said.code, Some(0), "{flag}");
        assert!(said.stderr.contains(expected), "{flag}: {}", said.stderr);
    }
}

/// `git ARGS` in `dir`, its stdout.
fn git_out(dir: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new("git")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn apply_to_a_branch_commits_on_the_runs_base_and_leaves_the_working_tree_alone() {
    let repo = fixture_repo();
    let root = repo.path();
    let data = tempfile::tempdir().unwrap();
    let head = git_out(root, &["rev-parse", "HEAD"]).trim().to_string();
    let status_before = git_out(root, &["status", "--porcelain"]);
    let math_before = read(root, "src/math.rs");
    std::fs::write(
        data.path().join("edit.js"),
        "tools.write('src/math.rs', 'on the branch\\n'); tools.write('docs/new.md', 'new\\n'); \
         tools.remove('README.md'); return 1",
    )
    .unwrap();
    let script = data.path().join("edit.js");
    let said = corral_in(
        root,
        data.path(),
        &[],
        &[
            "run",
            script.to_str().unwrap(),
            "--root",
            ".",
            "--allow-write",
        ],
    );
    assert_eq!(said.code, Some(0), "{}", said.stderr);
    let id = run_id(&said);
    // Someone commits meanwhile: the branch still starts from the run's base.
    std::fs::write(root.join("later.txt"), "later\n").unwrap();
    tests::support::git(root, &["add", "later.txt"]);
    tests::support::git(root, &["commit", "-q", "-m", "later"]);
    let later_head = git_out(root, &["rev-parse", "HEAD"]).trim().to_string();

    let applied = corral_in(
        root,
        data.path(),
        &[],
        &["runs", "apply", &id, "--branch", "corral/fix"],
    );
    assert_eq!(applied.code, Some(0), "{}", applied.stderr);
    assert!(
        applied.stderr.contains("on the new branch corral/fix"),
        "{}",
        applied.stderr
    );
    assert_eq!(
        git_out(root, &["show", "corral/fix:src/math.rs"]),
        "on the branch\n"
    );
    assert_eq!(git_out(root, &["show", "corral/fix:docs/new.md"]), "new\n");
    assert!(
        git_out(root, &["ls-tree", "-r", "--name-only", "corral/fix"])
            .lines()
            .all(|path| path != "README.md" && path != "later.txt")
    );
    assert_eq!(git_out(root, &["rev-parse", "corral/fix^"]).trim(), head);
    // The working tree, the index and HEAD are as they were.
    assert_eq!(git_out(root, &["rev-parse", "HEAD"]).trim(), later_head);
    assert_eq!(git_out(root, &["status", "--porcelain"]), status_before);
    assert_eq!(read(root, "src/math.rs"), math_before);
    // The same name again is refused, naming the fix.
    let again = corral_in(
        root,
        data.path(),
        &[],
        &["runs", "apply", &id, "--branch", "corral/fix"],
    );
    assert_ne!(again.code, Some(0));
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    let bad = corral_in(
        root,
        data.path(),
        &[],
        &["runs", "apply", &id, "--branch", "bad..name"],
    );
    assert_ne!(bad.code, Some(0));
    assert!(
        bad.stderr.contains("not a valid branch name"),
        "{}",
        bad.stderr
    );

    // A root that is no repository has no base to branch from.
    let plain = tempfile::tempdir().unwrap();
    let said = corral_in(
        plain.path(),
        data.path(),
        &[],
        &[
            "run",
            script.to_str().unwrap(),
            "--root",
            ".",
            "--allow-write",
        ],
    );
    assert_ne!(
        said.code,
        Some(0),
        "README.md is missing there, so remove fails"
    );
    std::fs::write(plain.path().join("README.md"), "x").unwrap();
    let said = corral_in(
        plain.path(),
        data.path(),
        &[],
        &[
            "run",
            script.to_str().unwrap(),
            "--root",
            ".",
            "--allow-write",
        ],
    );
    assert_eq!(said.code, Some(0), "{}", said.stderr);
    let plain_id = run_id(&said);
    let refused = corral_in(
        plain.path(),
        data.path(),
        &[],
        &["runs", "apply", &plain_id, "--branch", "x"],
    );
    assert_ne!(refused.code, Some(0));
    assert!(
        refused.stderr.contains("no base commit"),
        "{}",
        refused.stderr
    );
}
