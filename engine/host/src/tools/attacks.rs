//! Attacks on the tool root from the content of the root itself: git metadata that points out of
//! the root, FIFOs and sparse or huge files where files are expected, regex and git bombs, and
//! calls that would outlive their run. Each case asserts the clear error, that no byte from
//! outside the root shows up in any answer or message, and that nothing hangs.

use super::tests::{T1, git, kind, outside, write};
use super::*;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::symlink;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use tempfile::TempDir;

/// Bytes of the outside secret: no answer or message may contain them.
const SECRET: &str = "TOP SECRET";

/// Runs `work` on a thread and fails the test if it has not finished within `seconds` (a FIFO
/// opened for reading would block it forever).
fn within<T: Send + 'static>(seconds: u64, work: impl FnOnce() -> T + Send + 'static) -> T {
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = send.send(work());
    });
    receive
        .recv_timeout(Duration::from_secs(seconds))
        .unwrap_or_else(|_| panic!("the tool call did not finish within {seconds}s"))
}

/// Makes a FIFO with coreutils' `mkfifo` (setup only; the crate has no unsafe code).
fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

/// Runs git with `input` on stdin, returning its trimmed stdout (setup only).
fn git_in(dir: &Path, args: &[&str], input: &str) -> String {
    let mut child = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "git {args:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// A repository outside every root whose HEAD holds `secret.txt` with the secret.
fn outside_repo() -> TempDir {
    let out = outside();
    git(out.path(), &["init", "-q"], T1);
    git(out.path(), &["add", "-A"], T1);
    git(
        out.path(),
        &["commit", "-q", "-m", "secret commit TOP SECRET"],
        T1,
    );
    out
}

/// A repository root with one committed file.
fn repo_root() -> TempDir {
    let dir = TempDir::new().unwrap();
    git(dir.path(), &["init", "-q"], T1);
    write(dir.path(), "a.txt", "inside\n");
    git(dir.path(), &["add", "-A"], T1);
    git(dir.path(), &["commit", "-q", "-m", "inside"], T1);
    dir
}

fn open(dir: &Path) -> ToolRoot {
    ToolRoot::open(dir, ToolLimits::default()).unwrap()
}

/// Every git call on `root` fails `denied` with a message containing `names`, and no answer or
/// message carries the outside secret.
fn assert_git_denied(root: &ToolRoot, names: &str) {
    let calls: [(&str, Result<String, ToolError>); 5] = [
        ("show file", root.git_show("HEAD", Some("secret.txt"))),
        ("show", root.git_show("HEAD", None)),
        ("log", root.git_log(None, None).map(|c| format!("{c:?}"))),
        ("diff", root.git_diff(None)),
        ("status", root.git_status().map(|s| format!("{s:?}"))),
    ];
    for (what, result) in calls {
        let error = result.expect_err(what);
        assert_eq!(kind(&error), "denied", "{what}: {error}");
        let message = error.to_string();
        assert!(message.contains(names), "{what}: {message}");
        assert!(!message.contains(SECRET), "{what}: {message}");
    }
}

#[test]
fn git_does_not_follow_a_gitdir_file_out_of_the_root() {
    let out = outside_repo();
    let dir = TempDir::new().unwrap();
    write(dir.path(), "secret.txt", "inside\n");
    write(
        dir.path(),
        ".git",
        format!("gitdir: {}\n", out.path().join(".git").display()),
    );
    assert_git_denied(&open(dir.path()), "is a file (a `gitdir:` pointer");
}

#[test]
fn git_refuses_a_real_linked_worktree() {
    let main = repo_root();
    let linked = TempDir::new().unwrap();
    let path = linked.path().join("wt");
    git(
        main.path(),
        &["worktree", "add", "-q", path.to_str().unwrap()],
        T1,
    );
    assert_git_denied(&open(&path), "linked worktree");
}

#[test]
fn git_does_not_follow_a_git_symlink() {
    let out = outside_repo();
    let dir = TempDir::new().unwrap();
    symlink(out.path().join(".git"), dir.path().join(".git")).unwrap();
    assert_git_denied(&open(dir.path()), "the root's .git is a symlink");
}

#[test]
fn git_refuses_alternates() {
    let out = outside_repo();
    let dir = repo_root();
    write(
        dir.path(),
        ".git/objects/info/alternates",
        format!("{}\n", out.path().join(".git/objects").display()),
    );
    let head = git(out.path(), &["rev-parse", "HEAD"], T1);
    // Point HEAD at the outside commit: only the alternates could make it readable.
    write(dir.path(), ".git/refs/heads/main", head);
    assert_git_denied(&open(dir.path()), ".git/objects/info/alternates");
    let dir = repo_root();
    write(
        dir.path(),
        ".git/objects/info/http-alternates",
        "http://x\n",
    );
    assert_git_denied(&open(dir.path()), "http-alternates");
}

#[test]
fn git_refuses_commondir() {
    let out = outside_repo();
    let dir = repo_root();
    write(
        dir.path(),
        ".git/commondir",
        format!("{}\n", out.path().join(".git").display()),
    );
    assert_git_denied(&open(dir.path()), ".git/commondir");
}

#[test]
fn git_refuses_symlinks_inside_git_metadata() {
    let out = outside_repo();
    let cases = [
        ("objects", out.path().join(".git/objects")),
        ("refs/heads/main", out.path().join(".git/refs/heads/main")),
        ("packed-refs", out.path().join("token.txt")),
        ("HEAD", out.path().join(".git/HEAD")),
        ("config", out.path().join(".git/config")),
        ("index", out.path().join(".git/index")),
    ];
    write(
        out.path(),
        "token.txt",
        "https://user:TOP SECRET TOKEN@host/repo\n",
    );
    for (inside, target) in cases {
        let dir = repo_root();
        let link = dir.path().join(".git").join(inside);
        if link.is_dir() {
            fs::remove_dir_all(&link).unwrap();
        } else if link.exists() {
            fs::remove_file(&link).unwrap();
        }
        symlink(&target, &link).unwrap();
        assert_git_denied(&open(dir.path()), &format!(".git/{inside} is a symlink"));
    }
}

#[test]
fn git_refuses_a_fifo_in_git_metadata_without_blocking() {
    for name in ["index", "packed-refs", "HEAD"] {
        let dir = repo_root();
        let path = dir.path().join(".git").join(name);
        fs::remove_file(&path).ok();
        mkfifo(&path);
        let root = open(dir.path());
        let error = within(10, move || root.git_status()).unwrap_err();
        assert_eq!(kind(&error), "denied", "{name}: {error}");
        assert!(error.to_string().contains("not a regular file"), "{error}");
    }
}

#[test]
fn git_ignores_config_includes_and_refuses_a_moved_worktree() {
    let out = outside_repo();
    // An include is never read: the repository works as if it were absent.
    write(out.path(), "evil.config", "[core]\n\tworktree = /\n");
    let dir = repo_root();
    let config = dir.path().join(".git/config");
    let mut text = fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "[include]\n\tpath = {}\n",
        out.path().join("evil.config").display()
    ));
    fs::write(&config, &text).unwrap();
    let root = open(dir.path());
    assert_eq!(root.git_show("HEAD", Some("a.txt")).unwrap(), "inside\n");
    assert!(root.git_status().unwrap().is_empty());
    // A worktree moved by the repository's own config is refused.
    let dir = repo_root();
    let config = dir.path().join(".git/config");
    let mut text = fs::read_to_string(&config).unwrap();
    text.push_str(&format!("[core]\n\tworktree = {}\n", out.path().display()));
    fs::write(&config, &text).unwrap();
    let error = open(dir.path()).git_status().unwrap_err();
    assert!(
        kind(&error) == "denied" || kind(&error) == "not found",
        "{error}"
    );
    assert!(!error.to_string().contains(SECRET), "{error}");
}

#[test]
fn git_metadata_walk_is_bounded() {
    let dir = repo_root();
    let root = ToolRoot::open(
        dir.path(),
        ToolLimits {
            max_git_entries: 5,
            ..ToolLimits::default()
        },
    )
    .unwrap();
    let error = root.git_status().unwrap_err();
    assert_eq!(kind(&error), "limit", "{error}");
    assert!(
        error
            .to_string()
            .contains("the root's .git holds more than 5"),
        "{error}"
    );
    assert!(error.to_string().contains("--max-git-entries"), "{error}");
}

#[test]
fn git_reads_past_what_it_never_reads() {
    // Symlinked hooks, large LFS stores and sockets are common in `.git` and never read by the
    // git tools: the repository works.
    let out = outside();
    let dir = repo_root();
    fs::remove_dir_all(dir.path().join(".git/hooks")).ok();
    fs::create_dir_all(dir.path().join(".git/hooks")).unwrap();
    symlink(
        out.path().join("secret.txt"),
        dir.path().join(".git/hooks/pre-commit"),
    )
    .unwrap();
    mkfifo(&dir.path().join(".git/fsmonitor--daemon.ipc"));
    let root = open(dir.path());
    assert_eq!(root.git_show("HEAD", Some("a.txt")).unwrap(), "inside\n");
    // Other worktrees' refs are not names a guest may use.
    let error = root.git_show("worktrees/x/HEAD", None).unwrap_err();
    assert_eq!(kind(&error), "invalid input", "{error}");
}

#[test]
fn a_fifo_as_an_ignore_file_is_refused_without_blocking() {
    for (fifo, walks) in [
        (".gitignore", ["glob", "grep", "status"].as_slice()),
        (".ignore", ["glob", "grep"].as_slice()),
        ("sub/.gitignore", ["glob", "grep", "status"].as_slice()),
        (".git/info/exclude", ["glob", "grep", "status"].as_slice()),
    ] {
        let dir = repo_root();
        write(dir.path(), "sub/b.txt", "inside\n");
        let path = dir.path().join(fifo);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::remove_file(&path).ok();
        mkfifo(&path);
        for walk in walks {
            let root = open(dir.path());
            let walk = *walk;
            let error = within(10, move || match walk {
                "glob" => root.glob("**/*.txt").map(|_| ()),
                "grep" => root.grep("inside", &GrepOptions::default()).map(|_| ()),
                _ => root.git_status().map(|_| ()),
            })
            .expect_err(walk);
            assert_eq!(kind(&error), "denied", "{fifo} {walk}: {error}");
            assert!(
                error.to_string().contains("not a regular file"),
                "{fifo} {walk}: {error}"
            );
        }
    }
}

#[test]
fn an_ignore_file_symlinked_out_of_the_root_is_refused() {
    let out = outside();
    write(out.path(), "patterns", "*.txt\n");
    let dir = TempDir::new().unwrap();
    write(dir.path(), "a.txt", "inside\n");
    symlink(out.path().join("patterns"), dir.path().join(".gitignore")).unwrap();
    let root = open(dir.path());
    let error = root.glob("*.txt").unwrap_err();
    assert_eq!(kind(&error), "denied", "{error}");
    // One that stays inside the root is read like a regular file.
    let dir = TempDir::new().unwrap();
    write(dir.path(), "a.txt", "inside\n");
    write(dir.path(), "b.log", "log\n");
    write(dir.path(), "ignore-rules", "*.log\n");
    symlink("ignore-rules", dir.path().join(".gitignore")).unwrap();
    assert_eq!(open(dir.path()).glob("*.*").unwrap(), ["a.txt"]);
}

#[test]
fn fifos_where_files_are_expected_never_block() {
    let dir = repo_root();
    mkfifo(&dir.path().join("pipe.txt"));
    let root = open(dir.path());
    let error = within(10, {
        let root = root.clone();
        move || root.read("pipe.txt")
    })
    .unwrap_err();
    assert!(error.to_string().contains("not a regular file"), "{error}");
    // Walks list only regular files, and grep never opens the FIFO.
    let found = within(10, {
        let root = root.clone();
        move || root.glob("*.txt")
    })
    .unwrap();
    assert_eq!(found, ["a.txt"]);
    let matches = within(10, {
        let root = root.clone();
        move || root.grep("inside", &GrepOptions::default())
    })
    .unwrap();
    assert_eq!(matches.len(), 1);
    // A FIFO that replaced a tracked file is not read by status or diff either.
    fs::remove_file(dir.path().join("a.txt")).unwrap();
    mkfifo(&dir.path().join("a.txt"));
    let status = within(10, move || root.git_status()).unwrap();
    assert_eq!(status[0].path, "a.txt");
}

#[test]
fn open_regular_refuses_a_fifo_without_blocking() {
    let dir = TempDir::new().unwrap();
    mkfifo(&dir.path().join("pipe"));
    let cap = cap_std::fs::Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).unwrap();
    let error = within(10, move || confine::open_regular(&cap, "pipe", "pipe")).unwrap_err();
    assert!(error.to_string().contains("not a regular file"), "{error}");
}

#[test]
fn sparse_and_huge_files_are_refused_or_skipped_without_being_read() {
    let dir = TempDir::new().unwrap();
    // A 1 TiB sparse file: refused by size before any byte is read, and grep quits at its
    // first NUL as binary.
    let file = fs::File::create(dir.path().join("huge.bin")).unwrap();
    file.set_len(1 << 40).unwrap();
    // A 3 MiB single line: longer than the read limit, so grep skips it instead of holding it.
    write(dir.path(), "line.txt", "a".repeat(3 << 20) + "needle\n");
    write(dir.path(), "small.txt", "needle\n");
    let root = open(dir.path());
    let error = root.read("huge.bin").unwrap_err();
    assert_eq!(kind(&error), "limit", "{error}");
    let matches = within(30, move || root.grep("needle", &GrepOptions::default())).unwrap();
    let paths: Vec<&str> = matches.iter().map(|m| m.path.as_str()).collect();
    assert_eq!(paths, ["small.txt"]);
}

#[test]
fn regex_bombs_are_refused_or_stopped() {
    let dir = TempDir::new().unwrap();
    write(dir.path(), "a.txt", "aaaa\n");
    let root = open(dir.path());
    for bomb in ["a{1000}{1000}", "(?:a{100}){100}{100}", "\\w{500}{500}"] {
        let error = root.grep(bomb, &GrepOptions::default()).unwrap_err();
        assert_eq!(kind(&error), "limit", "{bomb}: {error}");
        assert!(error.to_string().contains("simpler pattern"), "{error}");
    }
}

#[test]
fn a_slow_search_stops_at_the_tool_time_limit() {
    let dir = TempDir::new().unwrap();
    let line = "ab".repeat(40) + "\n";
    for i in 0..40 {
        write(dir.path(), &format!("f{i}.txt"), line.repeat(5_000));
    }
    // 40 files of 400 KB: however fast the machine, more than a millisecond of work.
    let root = ToolRoot::open(
        dir.path(),
        ToolLimits {
            max_tool_time: Duration::from_millis(1),
            ..ToolLimits::default()
        },
    )
    .unwrap();
    let error = root
        .grep("a[ab]{30}c", &GrepOptions::default())
        .unwrap_err();
    assert_eq!(kind(&error), "limit", "{error}");
    assert!(error.to_string().contains("--max-tool-time"), "{error}");
    // The run's tool time is used up: every later call is refused at once.
    assert!(root.tool_time() >= Duration::from_millis(1));
    let error = root.read("f0.txt").unwrap_err();
    assert!(
        error.to_string().contains("ran out of tool time"),
        "{error}"
    );
}

#[test]
fn calls_stop_when_the_run_ends() {
    let dir = repo_root();
    let root = open(dir.path());
    root.end();
    for error in [
        root.read("a.txt").unwrap_err(),
        root.glob("*").unwrap_err(),
        root.git_status().unwrap_err(),
    ] {
        assert!(error.to_string().contains("the run has ended"), "{error}");
    }
}

/// Writes a tree of `width` entries named `prefix0..` all pointing at `id` (of `mode`), returning
/// its id.
fn mktree(dir: &Path, mode: &str, kind: &str, id: &str, prefix: &str, width: usize) -> String {
    let lines: String = (0..width)
        .map(|i| format!("{mode} {kind} {id}\t{prefix}{i}\n"))
        .collect();
    git_in(dir, &["mktree"], &lines)
}

fn commit_tree(dir: &Path, tree: &str) {
    let commit = git_in(
        dir,
        &[
            "-c",
            "user.name=A",
            "-c",
            "user.email=a@example.com",
            "commit-tree",
            tree,
            "-m",
            "bomb",
        ],
        "",
    );
    git_in(dir, &["update-ref", "HEAD", &commit], "");
}

#[test]
fn a_git_bomb_is_bounded_by_the_entry_limit() {
    let dir = TempDir::new().unwrap();
    git(dir.path(), &["init", "-q"], T1);
    let blob = git_in(dir.path(), &["hash-object", "-w", "--stdin"], "x\n");
    // Ten levels of ten entries: 10^10 paths from about 1 KiB of objects.
    let mut tree = mktree(dir.path(), "100644", "blob", &blob, "f", 10);
    for _ in 0..9 {
        tree = mktree(dir.path(), "040000", "tree", &tree, "d", 10);
    }
    commit_tree(dir.path(), &tree);
    let root = ToolRoot::open(
        dir.path(),
        ToolLimits {
            max_git_entries: 10_000,
            ..ToolLimits::default()
        },
    )
    .unwrap();
    let root2 = root.clone();
    let errors = within(30, move || {
        [
            root2.git_status().map(|_| ()).unwrap_err(),
            root2.git_show("HEAD", None).map(|_| ()).unwrap_err(),
            root2.git_diff(None).map(|_| ()).unwrap_err(),
        ]
    });
    for error in errors {
        assert_eq!(kind(&error), "limit", "{error}");
        assert!(error.to_string().contains("--max-git-entries"), "{error}");
    }
    // A lookup by path visits one entry per level and still works.
    let path = format!("{}f3", "d1/".repeat(9));
    assert_eq!(root.git_show("HEAD", Some(&path)).unwrap(), "x\n");
}

#[test]
fn a_tree_nested_too_deep_is_refused() {
    let dir = TempDir::new().unwrap();
    git(dir.path(), &["init", "-q"], T1);
    let blob = git_in(dir.path(), &["hash-object", "-w", "--stdin"], "x\n");
    let mut tree = mktree(dir.path(), "100644", "blob", &blob, "f", 1);
    for _ in 0..(git::MAX_TREE_DEPTH + 5) {
        tree = mktree(dir.path(), "040000", "tree", &tree, "d", 1);
    }
    commit_tree(dir.path(), &tree);
    let root = open(dir.path());
    let root2 = root.clone();
    let errors = within(30, move || {
        [
            root2.git_status().map(|_| ()).unwrap_err(),
            root2.git_show("HEAD", None).map(|_| ()).unwrap_err(),
        ]
    });
    for error in errors {
        assert_eq!(kind(&error), "limit", "{error}");
        assert!(error.to_string().contains("nest deeper than"), "{error}");
    }
}

#[test]
fn a_file_path_with_a_trailing_slash_is_not_read() {
    let dir = TempDir::new().unwrap();
    write(dir.path(), "a.txt", "inside\n");
    let error = open(dir.path()).read("a.txt/").unwrap_err();
    assert_eq!(kind(&error), "not found", "{error}");
    assert!(
        error.to_string().contains("drop the trailing '/'"),
        "{error}"
    );
    assert_eq!(open(dir.path()).read("./a.txt").unwrap(), "inside\n");
}

#[test]
fn a_path_longer_than_the_os_allows_fails_the_walk_instead_of_vanishing() {
    let dir = TempDir::new().unwrap();
    write(dir.path(), "a.txt", "inside\n");
    // Directories are created relative to their parent's handle, so the full path may exceed
    // PATH_MAX.
    let component = "d".repeat(200);
    let mut here =
        cap_std::fs::Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority()).unwrap();
    for _ in 0..25 {
        here.create_dir(&component).unwrap();
        here = here.open_dir(&component).unwrap();
    }
    here.write("deep.txt", "deep\n").unwrap();
    let error = open(dir.path()).glob("**/*.txt").unwrap_err();
    assert_eq!(kind(&error), "limit", "{error}");
    assert!(error.to_string().contains("ENAMETOOLONG"), "{error}");
    // A pattern that avoids the deep directory still works.
    assert_eq!(open(dir.path()).glob("*.txt").unwrap(), ["a.txt"]);
}

#[test]
fn a_huge_sparse_tracked_file_stops_with_the_call() {
    let dir = repo_root();
    // A 1 TiB sparse file where a small tracked file was: its hash would stream all of it.
    let file = fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("a.txt"))
        .unwrap();
    file.set_len(1 << 40).unwrap();
    let root = ToolRoot::open(
        dir.path(),
        ToolLimits {
            max_tool_time: Duration::from_millis(200),
            ..ToolLimits::default()
        },
    )
    .unwrap();
    let error = within(60, move || root.git_status()).unwrap_err();
    assert!(error.to_string().contains("--max-tool-time"), "{error}");
}

#[test]
fn long_names_large_commits_and_large_ignore_files_are_refused() {
    // A tree entry name of 300 bytes.
    let dir = TempDir::new().unwrap();
    git(dir.path(), &["init", "-q"], T1);
    let blob = git_in(dir.path(), &["hash-object", "-w", "--stdin"], "x\n");
    let name = "n".repeat(300);
    let tree = git_in(
        dir.path(),
        &["mktree"],
        &format!("100644 blob {blob}\t{name}\n"),
    );
    commit_tree(dir.path(), &tree);
    let error = open(dir.path()).git_status().unwrap_err();
    assert!(
        error.to_string().contains("longer than 255 bytes"),
        "{error}"
    );
    // A commit whose message is 2 MiB.
    let dir = repo_root();
    let tree = git_in(dir.path(), &["write-tree"], "");
    let message = "m".repeat(2 << 20);
    let commit = git_in(
        dir.path(),
        &[
            "-c",
            "user.name=A",
            "-c",
            "user.email=a@example.com",
            "commit-tree",
            &tree,
        ],
        &message,
    );
    git_in(dir.path(), &["update-ref", "HEAD", &commit], "");
    let root = open(dir.path());
    for error in [
        root.git_log(None, None).map(|_| ()).unwrap_err(),
        root.git_show("HEAD", None).map(|_| ()).unwrap_err(),
    ] {
        assert_eq!(kind(&error), "limit", "{error}");
        assert!(error.to_string().contains("1048576-byte limit"), "{error}");
    }
    // An ignore file over the read limit.
    let dir = TempDir::new().unwrap();
    write(dir.path(), "a.txt", "inside\n");
    write(dir.path(), ".gitignore", "x\n".repeat(1 << 20));
    let error = open(dir.path()).glob("*").unwrap_err();
    assert_eq!(kind(&error), "limit", "{error}");
    assert!(error.to_string().contains("--max-read-bytes"), "{error}");
}

#[test]
fn a_tree_object_over_the_allocation_limit_is_never_inflated() {
    // 500,000 entries of 36 bytes: a tree object of about 17 MiB.
    let dir = TempDir::new().unwrap();
    git(dir.path(), &["init", "-q"], T1);
    let blob = git_in(dir.path(), &["hash-object", "-w", "--stdin"], "x\n");
    let lines: String = (0..500_000)
        .map(|i| format!("100644 blob {blob}\tf{i:07}\n"))
        .collect();
    let tree = git_in(dir.path(), &["mktree"], &lines);
    commit_tree(dir.path(), &tree);
    let root = open(dir.path());
    let error = root.git_show("HEAD", Some("f0000001")).unwrap_err();
    assert_eq!(kind(&error), "io", "{error}");
    assert!(error.to_string().contains("could not be read"), "{error}");
}
