//! Property tests (bounded fuzzing on stable Rust) of everything in the tool root that parses
//! guest input: path confinement, glob patterns and grep patterns. Each property runs a fixed
//! number of generated cases on every `cargo test`; inputs that once found a bug are kept as
//! regression cases next to them.

use super::tests::{kind, outside, write};
use super::*;
use proptest::prelude::*;
use tempfile::TempDir;

/// Path-like strings: mostly components, dots, slashes and separators, sometimes anything.
fn path_like() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::collection::vec(
            prop_oneof![
                Just("..".to_string()),
                Just(".".to_string()),
                Just("".to_string()),
                Just("a".to_string()),
                Just("src".to_string()),
                Just("link_out".to_string()),
                Just("dir_out".to_string()),
                Just("\\".to_string()),
                Just("C:".to_string()),
                "[a-z.]{1,4}",
            ],
            0..8,
        )
        .prop_map(|parts| parts.join("/")),
        1 => ".{0,24}",
    ]
}

/// Glob-like strings built from glob syntax and path pieces.
fn glob_like() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("**".to_string()),
            Just("*".to_string()),
            Just("?".to_string()),
            Just("/".to_string()),
            Just("..".to_string()),
            Just("[a-z]".to_string()),
            Just("{a,b}".to_string()),
            Just("[".to_string()),
            Just("{".to_string()),
            Just("\\".to_string()),
            "[a-z.]{1,3}",
        ],
        0..10,
    )
    .prop_map(|parts| parts.concat())
}

/// Regex-like strings from regex syntax, including repetition that multiplies.
fn regex_like() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("a".to_string()),
            Just("[ab]".to_string()),
            Just("(".to_string()),
            Just(")".to_string()),
            Just("|".to_string()),
            Just("*".to_string()),
            Just("+".to_string()),
            Just("{1000}".to_string()),
            Just("{3,}".to_string()),
            Just("\\w".to_string()),
            Just("\\p{L}".to_string()),
            Just("(?i)".to_string()),
            Just("^".to_string()),
            Just("$".to_string()),
            Just("\\".to_string()),
            ".{1,2}",
        ],
        0..10,
    )
    .prop_map(|parts| parts.concat())
}

/// A root with text files and symlinks out; answers must never contain the outside secret.
fn root() -> (TempDir, TempDir, ToolRoot) {
    let out = outside();
    let dir = TempDir::new().unwrap();
    write(dir.path(), "a/b.txt", "hello a\n");
    write(dir.path(), "src/main.rs", "fn main() {}\n");
    std::os::unix::fs::symlink(out.path().join("secret.txt"), dir.path().join("link_out")).unwrap();
    std::os::unix::fs::symlink(out.path(), dir.path().join("dir_out")).unwrap();
    let root = ToolRoot::open(dir.path(), ToolLimits::default()).unwrap();
    (dir, out, root)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn normalised_paths_never_climb_or_start_absolute(path in path_like()) {
        if let Ok(rel) = confine::normalize(&path) {
            prop_assert!(!rel.starts_with('/'), "{rel}");
            prop_assert!(rel.split('/').all(|part| part != ".." && part != "."), "{rel}");
            prop_assert!(!rel.contains("//"), "{rel}");
        }
    }

    #[test]
    fn reads_never_return_outside_bytes(path in path_like()) {
        let (_dir, _out, root) = root();
        match root.read(&path) {
            Ok(text) => prop_assert!(!text.contains("TOP SECRET"), "{path:?}"),
            Err(error) => prop_assert!(!error.to_string().contains("TOP SECRET"), "{error}"),
        }
    }

    #[test]
    fn glob_patterns_never_panic_or_escape(pattern in glob_like()) {
        let (_dir, _out, root) = root();
        match root.glob(&pattern) {
            Ok(paths) => {
                for path in paths {
                    prop_assert!(!path.starts_with("link_out") && !path.starts_with("dir_out"), "{path}");
                    prop_assert!(!path.contains(".."), "{path}");
                }
            }
            Err(error) => {
                prop_assert!(
                    ["invalid input", "denied"].contains(&kind(&error)),
                    "{pattern:?}: {error}"
                );
            }
        }
    }

    #[test]
    fn grep_patterns_never_panic_and_stay_bounded(pattern in regex_like(), glob in proptest::option::of(glob_like())) {
        let (_dir, _out, root) = root();
        let options = GrepOptions { glob, ..GrepOptions::default() };
        match root.grep(&pattern, &options) {
            Ok(found) => {
                for m in found {
                    prop_assert!(!m.text.contains("TOP SECRET"), "{pattern:?}");
                }
            }
            Err(error) => {
                prop_assert!(
                    ["invalid input", "denied", "limit"].contains(&kind(&error)),
                    "{pattern:?}: {error}"
                );
            }
        }
    }
}

/// Inputs that found bugs (or that the audit tried), kept as fixed cases.
#[test]
fn regression_inputs() {
    let (_dir, _out, root) = root();
    // The audit: a trailing slash read a file.
    assert!(root.read("a/b.txt/").is_err());
    // Separators and drive prefixes of other platforms are never absolute escapes here.
    for path in [
        "\\etc\\passwd",
        "C:/x",
        "a/../../x",
        "./../x",
        "dir_out/secret.txt",
    ] {
        let error = root.read(path).unwrap_err();
        assert!(!error.to_string().contains("TOP SECRET"), "{path}: {error}");
    }
    for pattern in ["[", "{a,", "**/../x", "/abs/*", "\\"] {
        assert!(root.glob(pattern).is_err(), "{pattern}");
    }
    for pattern in ["a{1000}{1000}", "(", "\\p{Unknown}", "\\"] {
        assert!(
            root.grep(pattern, &GrepOptions::default()).is_err(),
            "{pattern}"
        );
    }
}
