//! The tools benchmark: Corral's read-only tools against the standard command-line tools on the
//! same tree, measured side by side in one process, alternated A B A B (BENCH.md).
//!
//! - `git.log({ path })` and `git.log()` over a 5000-commit history against `git log -- path` and
//!   `git log`;
//! - `grep` over a source tree against GNU `grep -rn`;
//! - `glob('**/*.rs')` against `find -name '*.rs'`;
//! - `git.status()` against `git status --porcelain`.
//!
//! Both sides produce the same fields (id, author, time, summary for logs). Corral's side is the
//! tool call in this process; the other side is the whole external process
//! (its start costs about a millisecond, which favours Corral slightly on the small cases).
//!
//! Run: `cargo bench -p tests --bench tools` (add `-- --quick` for fewer rounds).

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use corral_host::tools::{GrepOptions, ToolLimits, ToolRoot};
use tests::bench::{median, ms};

/// One measured operation: its name, Corral's side (the number of answers), the command line.
type Row<'a> = (&'static str, Box<dyn Fn() -> usize + 'a>, Vec<&'a str>);

const COMMITS: usize = 5000;
const FILES: usize = 200;

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let rounds = if quick { 3 } else { 11 };
    let dir = tempfile::tempdir().unwrap();
    build_repo(dir.path());
    let limits = ToolLimits {
        max_grep_matches: 1_000_000,
        max_output_bytes: 64 << 20,
        max_glob_results: 1_000_000,
        ..ToolLimits::default()
    };
    let root = ToolRoot::open(dir.path(), limits).unwrap();
    let path = "src/mod7/file7.rs";

    let rows: Vec<Row> = vec![
        (
            "git log -- path (5000 commits)",
            Box::new(|| root.git_log(Some(path), None).unwrap().len()),
            vec!["git", "log", "--format=%H %an <%ae> %at %s", "--", path],
        ),
        (
            "git log (5000 commits)",
            Box::new(|| root.git_log(None, None).unwrap().len()),
            vec!["git", "log", "--format=%H %an <%ae> %at %s"],
        ),
        (
            "grep 'fn f[0-9]+7'",
            Box::new(|| {
                root.grep("fn f[0-9]+7", &GrepOptions::default())
                    .unwrap()
                    .len()
            }),
            vec!["grep", "-rnE", "--exclude-dir=.git", "fn f[0-9]+7", "."],
        ),
        (
            "glob **/*.rs",
            Box::new(|| root.glob("**/*.rs").unwrap().len()),
            vec!["find", ".", "-name", "*.rs", "-not", "-path", "./.git/*"],
        ),
        (
            "git status",
            Box::new(|| root.git_status().unwrap().len()),
            vec!["git", "status", "--porcelain"],
        ),
    ];

    println!("corral tools benchmark ({rounds} rounds, medians; {COMMITS} commits, {FILES} files)");
    println!("| operation | corral | command line | ratio | target |");
    println!("|---|---|---|---|---|");
    for (name, corral, command) in &rows {
        // Warm both sides (page cache, gix's object cache is per call).
        corral();
        external(dir.path(), command);
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let began = Instant::now();
            std::hint::black_box(corral());
            ours.push(began.elapsed());
            theirs.push(external(dir.path(), command));
        }
        let (ours, theirs) = (median(&mut ours), median(&mut theirs));
        let ratio = ours.as_secs_f64() / theirs.as_secs_f64();
        let target = if name.starts_with("git log -- path") {
            "≤ 1.2×"
        } else {
            "—"
        };
        println!(
            "| {name} | {:.1} ms | {:.1} ms (`{}`) | {ratio:.2}× | {target} |",
            ms(ours),
            ms(theirs),
            command.join(" ")
        );
    }
}

fn external(dir: &Path, command: &[&str]) -> Duration {
    let began = Instant::now();
    let status = Command::new(command[0])
        .args(&command[1..])
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    let elapsed = began.elapsed();
    assert!(status.success(), "{command:?}");
    elapsed
}

/// A repository of `COMMITS` commits over `FILES` files in 20 directories, each commit changing
/// one file (so a path is touched by every `FILES`-th commit), written with `git fast-import`.
fn build_repo(dir: &Path) {
    let git = |args: &[&str]| {
        let status = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .status()
            .unwrap();
        assert!(status.success());
    };
    git(&["init", "-q", "-b", "main"]);
    let mut stream = Vec::new();
    let file = |i: usize| format!("src/mod{}/file{}.rs", i % 20, i % FILES);
    let body = |i: usize, round: usize| {
        (0..40)
            .map(|line| format!("pub fn f{line}{i}() -> u32 {{ {round} }}\n"))
            .collect::<String>()
    };
    for commit in 0..COMMITS {
        let time = 1_700_000_000 + commit * 60;
        let changed = commit % FILES;
        let _ = writeln!(stream, "commit refs/heads/main");
        let _ = writeln!(stream, "committer Bench <bench@example.com> {time} +0000");
        let message = format!("change {commit}");
        let _ = writeln!(stream, "data {}\n{message}", message.len());
        if commit == 0 {
            for i in 0..FILES {
                let text = body(i, 0);
                let _ = writeln!(
                    stream,
                    "M 100644 inline {}\ndata {}\n{text}",
                    file(i),
                    text.len()
                );
            }
        } else {
            let text = body(changed, commit);
            let _ = writeln!(
                stream,
                "M 100644 inline {}\ndata {}\n{text}",
                file(changed),
                text.len()
            );
        }
        let _ = writeln!(stream);
    }
    let mut child = Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(dir)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&stream).unwrap();
    assert!(child.wait().unwrap().success());
    git(&["reset", "-q", "--hard"]);
    git(&["gc", "-q"]);
}
