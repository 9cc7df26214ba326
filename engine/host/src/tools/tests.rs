//! Tests of the tool root against real directories and real git repositories in temp dirs.
//!
//! Git repositories are created with the `git` binary (test setup only; the module never runs
//! it), with fixed identities and dates so that outputs are exact.

use super::*;
use std::fs;
use std::os::unix::fs::symlink;
use std::process::Command;
use tempfile::TempDir;

pub(super) fn write(dir: &Path, rel: &str, content: impl AsRef<[u8]>) {
    let path = dir.join(rel);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

/// A directory outside every root, holding a secret that must never be returned.
pub(super) fn outside() -> TempDir {
    let dir = TempDir::new().unwrap();
    write(dir.path(), "secret.txt", "TOP SECRET Hello\n");
    dir
}

/// A plain (non-git) root with ignored, hidden and binary files and symlinks in and out.
fn fixture(limits: ToolLimits) -> (TempDir, TempDir, ToolRoot) {
    let out = outside();
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    write(
        d,
        "src/main.rs",
        "fn main() {\n    println!(\"Hello\");\n}\n",
    );
    write(d, "src/lib.rs", "pub fn hello() {}\n// TODO: more\n");
    write(d, "README.md", "Hello world\nhello again\n");
    write(d, "docs/guide.md", "# Guide\nTODO write\n");
    write(d, ".gitignore", "target/\n*.log\n");
    write(d, "target/out.txt", "Hello from target\n");
    write(d, "debug.log", "Hello log\n");
    write(d, ".hidden/secret.txt", "Hello hidden\n");
    write(d, "bin.dat", b"Hello\0binary\n");
    symlink("src/main.rs", d.join("link_in")).unwrap();
    symlink(out.path().join("secret.txt"), d.join("link_out")).unwrap();
    symlink(out.path(), d.join("dir_out")).unwrap();
    symlink("../../secret.txt", d.join("src/rel_out")).unwrap();
    let root = ToolRoot::open(d, limits).unwrap();
    (dir, out, root)
}

pub(super) fn kind(err: &ToolError) -> &'static str {
    match err {
        ToolError::Denied(_) => "denied",
        ToolError::NotFound(_) => "not found",
        ToolError::InvalidInput(_) => "invalid input",
        ToolError::Limit(_) => "limit",
        ToolError::Io(_) => "io",
    }
}

fn matches(found: &[GrepMatch]) -> Vec<String> {
    found
        .iter()
        .map(|m| format!("{}:{}:{}", m.path, m.line, m.text))
        .collect()
}

#[test]
fn tool_root_is_send_sync_and_cheap_to_clone() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<ToolRoot>();
}

#[test]
fn defaults_are_the_documented_limits() {
    let limits = ToolLimits::default();
    assert_eq!(limits.max_read_bytes, 1 << 20);
    assert_eq!(limits.max_glob_results, 10_000);
    assert_eq!(limits.max_grep_matches, 1_000);
    assert_eq!(limits.max_output_bytes, 4 << 20);
}

#[test]
fn open_rejects_missing_roots_and_files() {
    let dir = TempDir::new().unwrap();
    let err = ToolRoot::open(&dir.path().join("nope"), ToolLimits::default()).unwrap_err();
    assert_eq!(kind(&err), "not found");
    write(dir.path(), "file", "x");
    let err = ToolRoot::open(&dir.path().join("file"), ToolLimits::default()).unwrap_err();
    assert_eq!(kind(&err), "invalid input");
    let root = ToolRoot::open(dir.path(), ToolLimits::default()).unwrap();
    assert_eq!(root.path(), fs::canonicalize(dir.path()).unwrap());
    assert_eq!(root.limits(), &ToolLimits::default());
}

#[test]
fn read_returns_file_contents() {
    let (_dir, _out, root) = fixture(ToolLimits::default());
    let main = "fn main() {\n    println!(\"Hello\");\n}\n";
    assert_eq!(root.read("src/main.rs").unwrap(), main);
    assert_eq!(root.read("./src/../src//main.rs").unwrap(), main);
    assert_eq!(root.read("link_in").unwrap(), main);
    // Ignore rules only affect walks; reading a named ignored file is allowed.
    assert_eq!(root.read("debug.log").unwrap(), "Hello log\n");
}

#[test]
fn read_is_lossy_utf8() {
    let (dir, _out, root) = fixture(ToolLimits::default());
    write(dir.path(), "latin1.txt", b"f\xffo");
    assert_eq!(root.read("latin1.txt").unwrap(), "f\u{fffd}o");
}

#[test]
fn read_denies_escapes() {
    let (_dir, _out, root) = fixture(ToolLimits::default());
    for path in [
        "../x",
        "/etc/passwd",
        "sub/../../x",
        "src/../../secret.txt",
        "link_out",
        "dir_out/secret.txt",
        "src/rel_out",
    ] {
        let err = root.read(path).unwrap_err();
        assert_eq!(kind(&err), "denied", "{path}: {err}");
        let message = err.to_string();
        assert!(message.contains(&format!("{path:?}")), "{message}");
        assert!(message.contains("relative to the root"), "{message}");
        assert!(!message.contains("TOP SECRET"));
    }
}

#[test]
fn read_reports_bad_input() {
    let (_dir, _out, root) = fixture(ToolLimits::default());
    let cases = [
        ("", "invalid input"),
        ("src/\0main.rs", "invalid input"),
        ("src", "invalid input"),
        (".", "invalid input"),
        ("missing.txt", "not found"),
        ("src/main.rs/x", "not found"),
    ];
    for (path, expected) in cases {
        let err = root.read(path).unwrap_err();
        assert_eq!(kind(&err), expected, "{path:?}: {err}");
    }
    assert_eq!(
        root.read("missing.txt").unwrap_err(),
        ToolError::NotFound(
            "\"missing.txt\" does not exist under the root: check the path, e.g. with glob".into()
        )
    );
    assert_eq!(
        root.read("src").unwrap_err().to_string(),
        "\"src\" is a directory, not a file: use glob to list the files in it"
    );
}

#[test]
fn read_limit_is_enforced() {
    let limits = ToolLimits {
        max_read_bytes: 10,
        ..ToolLimits::default()
    };
    let (dir, _out, root) = fixture(limits);
    assert_eq!(
        root.read("README.md").unwrap_err(),
        ToolError::Limit(
            "\"README.md\" is 24 bytes, over the read limit of 10 bytes: raise --max-read-bytes \
             or read a smaller file"
                .into()
        )
    );
    write(dir.path(), "ten.txt", "0123456789");
    assert_eq!(root.read("ten.txt").unwrap(), "0123456789");
}

#[test]
fn glob_lists_sorted_visible_files() {
    let (_dir, _out, root) = fixture(ToolLimits::default());
    assert_eq!(root.glob("**/*.rs").unwrap(), ["src/lib.rs", "src/main.rs"]);
    assert_eq!(root.glob("*").unwrap(), ["README.md", "bin.dat"]);
    assert_eq!(
        root.glob("**").unwrap(),
        [
            "README.md",
            "bin.dat",
            "docs/guide.md",
            "src/lib.rs",
            "src/main.rs"
        ]
    );
    assert_eq!(
        root.glob("src/*.rs").unwrap(),
        ["src/lib.rs", "src/main.rs"]
    );
    assert_eq!(root.glob("./docs/guide.md").unwrap(), ["docs/guide.md"]);
    assert_eq!(root.glob("{docs,src}/*.md").unwrap(), ["docs/guide.md"]);
    // `*` does not cross directories.
    assert_eq!(root.glob("*.rs").unwrap(), Vec::<String>::new());
}

#[test]
fn glob_honours_ignore_files_and_skips_hidden_and_symlinks() {
    let (dir, _out, root) = fixture(ToolLimits::default());
    assert!(root.glob("target/**").unwrap().is_empty());
    assert!(root.glob("**/*.log").unwrap().is_empty());
    // Hidden entries are skipped unless the pattern names their directory literally.
    assert!(
        root.glob("*/*.txt")
            .unwrap()
            .iter()
            .all(|p| !p.starts_with('.'))
    );
    assert!(root.glob("**/secret.txt").unwrap().is_empty());
    assert_eq!(root.glob(".hidden/*").unwrap(), [".hidden/secret.txt"]);
    assert!(root.glob(".hidden/**/.*").unwrap().is_empty());
    assert!(root.glob("dir_out/**").unwrap().is_empty());
    assert!(root.glob("link_*").unwrap().is_empty());
    write(dir.path(), ".ignore", "docs/\n");
    assert!(root.glob("docs/*").unwrap().is_empty());
    // `.git` is never walked, even named.
    write(dir.path(), ".git/config", "[core]\n");
    assert!(root.glob(".git/*").unwrap().is_empty());
    assert!(root.glob(".git/**").unwrap().is_empty());
}

#[test]
fn glob_prunes_by_literal_prefix_without_missing_files() {
    let dir = TempDir::new().unwrap();
    for rel in ["src/a/b/c.rs", "src/d.rs", "srcx/e.rs", "other/src/f.rs"] {
        write(dir.path(), rel, "x\n");
    }
    let root = ToolRoot::open(dir.path(), ToolLimits::default()).unwrap();
    assert_eq!(
        root.glob("src/**/*.rs").unwrap(),
        ["src/a/b/c.rs", "src/d.rs"]
    );
    assert_eq!(root.glob("src/a/**").unwrap(), ["src/a/b/c.rs"]);
    assert_eq!(root.glob("src/a/b/c.rs").unwrap(), ["src/a/b/c.rs"]);
    assert_eq!(
        root.glob("**/src/*.rs").unwrap(),
        ["other/src/f.rs", "src/d.rs"]
    );
    assert_eq!(root.glob("src*/*.rs").unwrap(), ["src/d.rs", "srcx/e.rs"]);
    assert_eq!(root.glob("src/?.rs").unwrap(), ["src/d.rs"]);
}

#[test]
fn glob_rejects_bad_patterns() {
    let (_dir, _out, root) = fixture(ToolLimits::default());
    let cases = [
        ("", "invalid input"),
        ("a[", "invalid input"),
        ("{a", "invalid input"),
        ("x\0", "invalid input"),
        ("/etc/*", "denied"),
        ("../*", "denied"),
        ("src/../../*", "denied"),
    ];
    for (pattern, expected) in cases {
        let err = root.glob(pattern).unwrap_err();
        assert_eq!(kind(&err), expected, "{pattern:?}: {err}");
    }
    let message = root.glob("a[").unwrap_err().to_string();
    assert!(
        message.starts_with("invalid glob pattern \"a[\": "),
        "{message}"
    );
    assert!(message.contains("unclosed character class"), "{message}");
}

#[test]
fn glob_limit_is_enforced() {
    let limits = ToolLimits {
        max_glob_results: 4,
        ..ToolLimits::default()
    };
    let (_dir, _out, root) = fixture(limits.clone());
    assert_eq!(
        root.glob("**").unwrap_err(),
        ToolError::Limit(
            "glob \"**\" matches more than 4 files: narrow the pattern or raise --max-glob-results"
                .into()
        )
    );
    let exact = ToolLimits {
        max_glob_results: 5,
        ..limits
    };
    let (_dir, _out, root) = fixture(exact);
    assert_eq!(root.glob("**").unwrap().len(), 5);
}

#[test]
fn grep_finds_lines_in_visible_text_files() {
    let (_dir, _out, root) = fixture(ToolLimits::default());
    let found = root.grep("Hello", &GrepOptions::default()).unwrap();
    assert_eq!(
        matches(&found),
        [
            "README.md:1:Hello world",
            "src/main.rs:2:    println!(\"Hello\");"
        ]
    );
    assert_eq!(
        found[0],
        GrepMatch {
            path: "README.md".into(),
            line: 1,
            text: "Hello world".into()
        }
    );
    let found = root.grep("hello", &GrepOptions::default()).unwrap();
    assert_eq!(
        matches(&found),
        ["README.md:2:hello again", "src/lib.rs:1:pub fn hello() {}"]
    );
}

#[test]
fn grep_ignore_case_and_glob_filter() {
    let (_dir, _out, root) = fixture(ToolLimits::default());
    let options = GrepOptions {
        ignore_case: true,
        ..GrepOptions::default()
    };
    assert_eq!(
        matches(&root.grep("hello", &options).unwrap()),
        [
            "README.md:1:Hello world",
            "README.md:2:hello again",
            "src/lib.rs:1:pub fn hello() {}",
            "src/main.rs:2:    println!(\"Hello\");"
        ]
    );
    let options = GrepOptions {
        glob: Some("**/*.md".into()),
        ..GrepOptions::default()
    };
    assert_eq!(
        matches(&root.grep("TODO", &options).unwrap()),
        ["docs/guide.md:2:TODO write"]
    );
    // Without a '/', the glob matches file names at any depth, like ripgrep's --glob.
    let options = GrepOptions {
        glob: Some("*.md".into()),
        ..GrepOptions::default()
    };
    assert_eq!(
        matches(&root.grep("TODO", &options).unwrap()),
        ["docs/guide.md:2:TODO write"]
    );
    let options = GrepOptions {
        glob: Some("src/*".into()),
        ..GrepOptions::default()
    };
    assert_eq!(
        matches(&root.grep("TODO", &options).unwrap()),
        ["src/lib.rs:2:// TODO: more"]
    );
}

#[test]
fn grep_skips_binary_files_even_when_the_nul_comes_late() {
    let (dir, _out, root) = fixture(ToolLimits::default());
    let mut late = b"Needle first\n".to_vec();
    late.extend(std::iter::repeat_n(b"filler line\n".as_slice(), 20_000).flatten());
    late.extend_from_slice(b"\0Needle after\n");
    write(dir.path(), "late.bin", late);
    write(dir.path(), "text.txt", "a Needle\n");
    assert_eq!(
        matches(&root.grep("Needle", &GrepOptions::default()).unwrap()),
        ["text.txt:1:a Needle"]
    );
}

#[test]
fn grep_strips_crlf_and_reports_line_numbers() {
    let (dir, _out, root) = fixture(ToolLimits::default());
    write(dir.path(), "crlf.txt", "one\r\ntwo needle\r\nthree\r\n");
    assert_eq!(
        matches(&root.grep("needle", &GrepOptions::default()).unwrap()),
        ["crlf.txt:2:two needle"]
    );
}

#[test]
fn grep_max_matches_truncates_without_error() {
    let limits = ToolLimits {
        max_grep_matches: 2,
        ..ToolLimits::default()
    };
    let (_dir, _out, root) = fixture(limits);
    let options = |max| GrepOptions {
        ignore_case: true,
        max_matches: Some(max),
        ..GrepOptions::default()
    };
    assert_eq!(
        matches(&root.grep("hello", &options(1)).unwrap()),
        ["README.md:1:Hello world"]
    );
    assert!(root.grep("hello", &options(0)).unwrap().is_empty());
    // Clamped to the host limit, not an error.
    assert_eq!(
        matches(&root.grep("hello", &options(100)).unwrap()),
        ["README.md:1:Hello world", "README.md:2:hello again"]
    );
}

#[test]
fn grep_limit_without_max_matches_is_an_error() {
    let limits = ToolLimits {
        max_grep_matches: 3,
        ..ToolLimits::default()
    };
    let (_dir, _out, root) = fixture(limits.clone());
    let options = GrepOptions {
        ignore_case: true,
        ..GrepOptions::default()
    };
    assert_eq!(
        root.grep("hello", &options).unwrap_err(),
        ToolError::Limit(
            "grep \"hello\" has more than 3 matches: narrow the pattern or the glob, pass \
             max_matches, or raise --max-grep-matches"
                .into()
        )
    );
    // Exactly at the limit is fine.
    let (_dir, _out, root) = fixture(ToolLimits {
        max_grep_matches: 4,
        ..limits
    });
    assert_eq!(root.grep("hello", &options).unwrap().len(), 4);
}

#[test]
fn grep_output_limit_is_enforced() {
    let limits = ToolLimits {
        max_output_bytes: 30,
        ..ToolLimits::default()
    };
    let (_dir, _out, root) = fixture(limits);
    // "README.md:1:Hello world\n" is 24 bytes: fits; the second line does not.
    assert_eq!(
        root.grep("Hello w", &GrepOptions::default()).unwrap().len(),
        1
    );
    let err = root.grep("Hello", &GrepOptions::default()).unwrap_err();
    assert_eq!(kind(&err), "limit");
    assert!(err.to_string().contains("--max-output-bytes"), "{err}");
    assert!(err.to_string().contains("30 bytes"), "{err}");
}

#[test]
fn grep_rejects_bad_patterns() {
    let (_dir, _out, root) = fixture(ToolLimits::default());
    let err = root.grep("(", &GrepOptions::default()).unwrap_err();
    assert_eq!(kind(&err), "invalid input");
    assert!(
        err.to_string().starts_with("invalid grep pattern \"(\": "),
        "{err}"
    );
    let bad_glob = GrepOptions {
        glob: Some("[".into()),
        ..GrepOptions::default()
    };
    assert_eq!(
        kind(&root.grep("x", &bad_glob).unwrap_err()),
        "invalid input"
    );
    let escaping_glob = GrepOptions {
        glob: Some("../**".into()),
        ..GrepOptions::default()
    };
    assert_eq!(kind(&root.grep("x", &escaping_glob).unwrap_err()), "denied");
}

// ---------------------------------------------------------------------------------------------
// git

pub(super) const T1: i64 = 1_700_000_000;
const T2: i64 = 1_700_000_100;
const T3: i64 = 1_700_000_200;

/// Runs the `git` binary (setup only) with a fixed identity, date and no user configuration.
pub(super) fn git(dir: &Path, args: &[&str], time: i64) -> String {
    let output = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=Alice",
            "-c",
            "user.email=alice@example.com",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "core.autocrlf=false",
        ])
        .args(args)
        .env("GIT_AUTHOR_DATE", format!("{time} +0000"))
        .env("GIT_COMMITTER_DATE", format!("{time} +0000"))
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .output()
        .expect("the git binary is needed to set up git tests");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Three commits, then a dirty working tree:
/// - first: `a.txt`, `src/lib.rs`, `.gitignore`
/// - second: `a.txt` changed, `b.txt` added (message with a body)
/// - third: `b.txt` deleted, `src/c.rs` added
/// - working tree: `a.txt` modified, `src/lib.rs` deleted, `new.txt` staged, untracked `u.txt`,
///   `.env` and a symlink out, ignored `x.log`.
fn repo_fixture(limits: ToolLimits) -> (TempDir, TempDir, ToolRoot) {
    let out = outside();
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    git(d, &["init", "-q"], T1);
    write(d, "a.txt", "one\ntwo\nthree\n");
    write(d, "src/lib.rs", "fn a() {}\n");
    write(d, ".gitignore", "*.log\n");
    git(d, &["add", "-A"], T1);
    git(d, &["commit", "-q", "-m", "first"], T1);
    write(d, "a.txt", "one\n2\nthree\n");
    write(d, "b.txt", "bee\n");
    git(d, &["add", "-A"], T2);
    git(d, &["commit", "-q", "-m", "second\n\nbody line"], T2);
    fs::remove_file(d.join("b.txt")).unwrap();
    write(d, "src/c.rs", "fn c() {}\n");
    git(d, &["add", "-A"], T3);
    git(d, &["commit", "-q", "-m", "third"], T3);
    write(d, "a.txt", "one\n2\nthree\nfour\n");
    fs::remove_file(d.join("src/lib.rs")).unwrap();
    write(d, "new.txt", "new\n");
    git(d, &["add", "new.txt"], T3);
    write(d, "u.txt", "u\n");
    write(d, ".env", "s\n");
    write(d, "x.log", "ignored\n");
    symlink(out.path().join("secret.txt"), d.join("link-out")).unwrap();
    let root = ToolRoot::open(d, limits).unwrap();
    (dir, out, root)
}

fn rev_list(dir: &Path) -> Vec<String> {
    git(dir, &["rev-list", "HEAD"], T3)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn git_log_lists_commits_newest_first() {
    let (dir, _out, root) = repo_fixture(ToolLimits::default());
    let ids = rev_list(dir.path());
    let log = root.git_log(None, None).unwrap();
    let expected: Vec<Commit> = [(T3, "third"), (T2, "second"), (T1, "first")]
        .iter()
        .zip(&ids)
        .map(|((time, summary), id)| Commit {
            id: id.clone(),
            author: "Alice <alice@example.com>".into(),
            time: *time,
            summary: (*summary).into(),
        })
        .collect();
    assert_eq!(log, expected);
    assert_eq!(root.git_log(None, Some(1)).unwrap(), expected[..1]);
    assert!(root.git_log(None, Some(0)).unwrap().is_empty());
}

#[test]
fn git_log_with_path_lists_commits_touching_it() {
    let (_dir, _out, root) = repo_fixture(ToolLimits::default());
    let summaries = |path: &str| -> Vec<String> {
        root.git_log(Some(path), None)
            .unwrap()
            .into_iter()
            .map(|c| c.summary)
            .collect()
    };
    assert_eq!(summaries("b.txt"), ["third", "second"]);
    assert_eq!(summaries("a.txt"), ["second", "first"]);
    assert_eq!(summaries("src"), ["third", "first"]);
    assert_eq!(summaries("./src/c.rs"), ["third"]);
    assert!(summaries("nope.txt").is_empty());
    assert_eq!(
        root.git_log(Some("b.txt"), Some(1)).unwrap()[0].summary,
        "third"
    );
    assert_eq!(
        kind(&root.git_log(Some("../x"), None).unwrap_err()),
        "denied"
    );
    assert_eq!(
        kind(&root.git_log(Some("/etc"), None).unwrap_err()),
        "denied"
    );
}

#[test]
fn git_show_commit_has_header_message_and_patch() {
    let (dir, _out, root) = repo_fixture(ToolLimits::default());
    let ids = rev_list(dir.path());
    let expected = format!(
        "commit {}
Author: Alice <alice@example.com>
Date:   Tue Nov 14 22:15:00 2023 +0000

    second

    body line

diff --git a/a.txt b/a.txt
--- a/a.txt
+++ b/a.txt
@@ -1,3 +1,3 @@
 one
-two
+2
 three
diff --git a/b.txt b/b.txt
new file mode 100644
--- /dev/null
+++ b/b.txt
@@ -0,0 +1 @@
+bee
",
        ids[1]
    );
    assert_eq!(root.git_show("HEAD~1", None).unwrap(), expected);
    assert_eq!(root.git_show(&ids[1], None).unwrap(), expected);
    assert_eq!(root.git_show(&ids[1][..10], None).unwrap(), expected);
    assert_eq!(root.git_show("main~1", None).unwrap(), expected);

    let first = root.git_show("HEAD~2", None).unwrap();
    assert!(
        first.ends_with(
            "    first

diff --git a/.gitignore b/.gitignore
new file mode 100644
--- /dev/null
+++ b/.gitignore
@@ -0,0 +1 @@
+*.log
diff --git a/a.txt b/a.txt
new file mode 100644
--- /dev/null
+++ b/a.txt
@@ -0,0 +1,3 @@
+one
+two
+three
diff --git a/src/lib.rs b/src/lib.rs
new file mode 100644
--- /dev/null
+++ b/src/lib.rs
@@ -0,0 +1 @@
+fn a() {}
"
        ),
        "{first}"
    );
}

#[test]
fn git_show_with_path_returns_file_content() {
    let (_dir, _out, root) = repo_fixture(ToolLimits::default());
    assert_eq!(
        root.git_show("HEAD~1", Some("a.txt")).unwrap(),
        "one\n2\nthree\n"
    );
    assert_eq!(
        root.git_show("HEAD~2", Some("./a.txt")).unwrap(),
        "one\ntwo\nthree\n"
    );
    assert_eq!(
        root.git_show("HEAD", Some("src/c.rs")).unwrap(),
        "fn c() {}\n"
    );
    let cases = [
        ("HEAD", "b.txt", "not found"),
        ("HEAD", "src", "invalid input"),
        ("HEAD", ".", "invalid input"),
        ("HEAD", "", "invalid input"),
        ("HEAD", "../a.txt", "denied"),
        ("HEAD", "/etc/passwd", "denied"),
        ("HEAD", "link-out", "not found"),
    ];
    for (rev, path, expected) in cases {
        let err = root.git_show(rev, Some(path)).unwrap_err();
        assert_eq!(kind(&err), expected, "{rev} {path:?}: {err}");
    }
}

#[test]
fn git_rejects_bad_revisions() {
    let (dir, _out, root) = repo_fixture(ToolLimits::default());
    for rev in [
        "",
        "nope",
        "HEAD:a.txt",
        ":/first",
        "../../etc/passwd",
        "refs/../../x",
        "/etc/passwd",
        "--all",
        "HEAD~9",
        "0000000000000000000000000000000000000000",
    ] {
        let err = root.git_show(rev, None).unwrap_err();
        assert_eq!(kind(&err), "invalid input", "{rev:?}: {err}");
    }
    assert_eq!(
        root.git_show("nope", None).unwrap_err().to_string(),
        "unknown revision \"nope\": give a commit id, a branch or tag name, or e.g. \"HEAD~1\""
    );
    let tree = git(dir.path(), &["rev-parse", "HEAD^{tree}"], T3);
    assert_eq!(
        root.git_show(tree.trim(), None).unwrap_err().to_string(),
        format!(
            "revision {:?} names a tree, not a commit: give a commit id, a branch or tag name",
            tree.trim()
        )
    );
    assert_eq!(
        kind(&root.git_diff(Some("nope..HEAD")).unwrap_err()),
        "invalid input"
    );
    assert_eq!(
        kind(&root.git_diff(Some("HEAD...HEAD~1")).unwrap_err()),
        "invalid input"
    );
}

#[test]
fn git_diff_between_trees() {
    let (_dir, _out, root) = repo_fixture(ToolLimits::default());
    let expected = "diff --git a/b.txt b/b.txt
deleted file mode 100644
--- a/b.txt
+++ /dev/null
@@ -1 +0,0 @@
-bee
diff --git a/src/c.rs b/src/c.rs
new file mode 100644
--- /dev/null
+++ b/src/c.rs
@@ -0,0 +1 @@
+fn c() {}
";
    assert_eq!(root.git_diff(Some("HEAD~1..HEAD")).unwrap(), expected);
    assert_eq!(root.git_diff(Some("HEAD~1..")).unwrap(), expected);
    assert_eq!(root.git_diff(Some("HEAD..HEAD")).unwrap(), "");
}

#[test]
fn git_diff_head_against_working_tree() {
    let (_dir, _out, root) = repo_fixture(ToolLimits::default());
    let expected = "diff --git a/a.txt b/a.txt
--- a/a.txt
+++ b/a.txt
@@ -1,3 +1,4 @@
 one
 2
 three
+four
diff --git a/new.txt b/new.txt
new file mode 100644
--- /dev/null
+++ b/new.txt
@@ -0,0 +1 @@
+new
diff --git a/src/lib.rs b/src/lib.rs
deleted file mode 100644
--- a/src/lib.rs
+++ /dev/null
@@ -1 +0,0 @@
-fn a() {}
";
    assert_eq!(root.git_diff(None).unwrap(), expected);
    assert_eq!(root.git_diff(Some("HEAD")).unwrap(), expected);
}

#[test]
fn git_diff_revision_against_working_tree() {
    let (_dir, _out, root) = repo_fixture(ToolLimits::default());
    let diff = root.git_diff(Some("HEAD~1")).unwrap();
    let headers: Vec<&str> = diff
        .lines()
        .filter(|l| l.starts_with("diff --git"))
        .collect();
    assert_eq!(
        headers,
        [
            "diff --git a/a.txt b/a.txt",
            "diff --git a/b.txt b/b.txt",
            "diff --git a/new.txt b/new.txt",
            "diff --git a/src/c.rs b/src/c.rs",
            "diff --git a/src/lib.rs b/src/lib.rs",
        ]
    );
    assert!(diff.contains("+four\n"));
    assert!(diff.contains("deleted file mode 100644\n--- a/b.txt\n"));
}

#[test]
fn git_status_lists_changes_and_untracked_files() {
    let (_dir, _out, root) = repo_fixture(ToolLimits::default());
    let status: Vec<(String, String)> = root
        .git_status()
        .unwrap()
        .into_iter()
        .map(|e| (e.path, e.status))
        .collect();
    let expected = [
        (".env", "untracked"),
        ("a.txt", "modified"),
        ("link-out", "untracked"),
        ("new.txt", "added"),
        ("src/lib.rs", "deleted"),
        ("u.txt", "untracked"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(p, s)| ((*p).into(), (*s).into()))
        .collect();
    assert_eq!(status, expected);
}

#[test]
fn git_status_of_a_clean_tree_is_empty_even_for_racy_files() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    git(d, &["init", "-q"], T1);
    write(d, "a.txt", "same size\n");
    git(d, &["add", "-A"], T1);
    git(d, &["commit", "-q", "-m", "one"], T1);
    let root = ToolRoot::open(d, ToolLimits::default()).unwrap();
    assert_eq!(root.git_status().unwrap(), []);
    assert_eq!(root.git_diff(None).unwrap(), "");
    // Same size, written right after the index: only hashing can tell.
    write(d, "a.txt", "SAME SIZE\n");
    assert_eq!(
        root.git_status().unwrap(),
        [StatusEntry {
            path: "a.txt".into(),
            status: "modified".into()
        }]
    );
}

#[test]
fn git_working_tree_reads_stay_inside_the_root() {
    let out = outside();
    write(out.path(), "sub/f.txt", "TOP SECRET in dir\n");
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    git(d, &["init", "-q"], T1);
    write(d, "secret.txt", "inside\n");
    write(d, "sub/f.txt", "inside too\n");
    git(d, &["add", "-A"], T1);
    git(d, &["commit", "-q", "-m", "one"], T1);
    // Replace a tracked file and a tracked directory by symlinks leading out of the root.
    fs::remove_file(d.join("secret.txt")).unwrap();
    symlink(out.path().join("secret.txt"), d.join("secret.txt")).unwrap();
    fs::remove_dir_all(d.join("sub")).unwrap();
    symlink(out.path().join("sub"), d.join("sub")).unwrap();
    let root = ToolRoot::open(d, ToolLimits::default()).unwrap();
    let diff = root.git_diff(None).unwrap();
    assert!(!diff.contains("TOP SECRET"), "{diff}");
    // The symlink is shown as git shows it: the file deleted, a symlink (its target) added.
    let link = format!(
        "diff --git a/secret.txt b/secret.txt
deleted file mode 100644
--- a/secret.txt
+++ /dev/null
@@ -1 +0,0 @@
-inside
diff --git a/secret.txt b/secret.txt
new file mode 120000
--- /dev/null
+++ b/secret.txt
@@ -0,0 +1 @@
+{}
\\ No newline at end of file
",
        out.path().join("secret.txt").display()
    );
    assert!(diff.starts_with(&link), "{diff}");
    assert!(
        diff.contains("deleted file mode 100644\n--- a/sub/f.txt\n"),
        "{diff}"
    );
    let status: Vec<(String, String)> = root
        .git_status()
        .unwrap()
        .into_iter()
        .map(|e| (e.path, e.status))
        .collect();
    assert_eq!(
        status,
        [
            ("secret.txt".to_string(), "modified".to_string()),
            ("sub".into(), "untracked".into()),
            ("sub/f.txt".into(), "deleted".into()),
        ]
    );
}

#[test]
fn git_needs_a_repository_at_the_root() {
    let (_dir, _out, root) = fixture(ToolLimits::default());
    let not_repo = ToolError::NotFound("the root is not a git repository".into());
    assert_eq!(root.git_log(None, None).unwrap_err(), not_repo);
    assert_eq!(root.git_show("HEAD", None).unwrap_err(), not_repo);
    assert_eq!(root.git_diff(None).unwrap_err(), not_repo);
    assert_eq!(root.git_status().unwrap_err(), not_repo);
    // A subdirectory of a repository is not a repository: nothing above the root is used.
    let (repo_dir, _out, _root) = repo_fixture(ToolLimits::default());
    let sub = ToolRoot::open(&repo_dir.path().join("src"), ToolLimits::default()).unwrap();
    assert_eq!(sub.git_log(None, None).unwrap_err(), not_repo);
}

#[test]
fn git_unborn_repository_has_no_history() {
    let dir = TempDir::new().unwrap();
    git(dir.path(), &["init", "-q"], T1);
    write(dir.path(), "a.txt", "a\n");
    let root = ToolRoot::open(dir.path(), ToolLimits::default()).unwrap();
    assert_eq!(root.git_log(None, None).unwrap(), []);
    assert_eq!(
        root.git_status().unwrap(),
        [StatusEntry {
            path: "a.txt".into(),
            status: "untracked".into()
        }]
    );
    assert_eq!(root.git_diff(None).unwrap(), "");
    assert_eq!(
        kind(&root.git_show("HEAD", None).unwrap_err()),
        "invalid input"
    );
}

#[test]
fn git_output_limit_is_enforced() {
    let limits = ToolLimits {
        max_output_bytes: 95,
        ..ToolLimits::default()
    };
    let (_dir, _out, root) = repo_fixture(limits);
    let errors = [
        root.git_log(None, None).unwrap_err(),
        root.git_show("HEAD", None).unwrap_err(),
        root.git_diff(None).unwrap_err(),
        root.git_diff(Some("HEAD~2..HEAD")).unwrap_err(),
        root.git_status().unwrap_err(),
    ];
    for err in errors {
        assert_eq!(kind(&err), "limit", "{err}");
        assert!(err.to_string().contains("--max-output-bytes"), "{err}");
    }
    // A small answer still fits.
    assert_eq!(root.git_log(None, Some(1)).unwrap().len(), 1);
}

#[test]
fn git_read_limit_applies_to_file_contents() {
    let limits = ToolLimits {
        max_read_bytes: 5,
        ..ToolLimits::default()
    };
    let (_dir, _out, root) = repo_fixture(limits);
    let err = root.git_show("HEAD", Some("a.txt")).unwrap_err();
    assert_eq!(kind(&err), "limit");
    assert!(err.to_string().contains("--max-read-bytes"), "{err}");
    assert_eq!(
        root.git_show("HEAD", Some("src/c.rs"))
            .unwrap_err()
            .to_string(),
        "\"src/c.rs at HEAD\" is 10 bytes, over the read limit of 5 bytes: raise --max-read-bytes or read a smaller file"
    );
    // Diffs name files too large to show instead of failing.
    let diff = root.git_diff(None).unwrap();
    assert!(
        diff.starts_with(
            "diff --git a/a.txt b/a.txt\n(not shown: 17 bytes, over the read limit of 5 bytes; \
             raise --max-read-bytes to see it)\n"
        ),
        "{diff}"
    );
}
