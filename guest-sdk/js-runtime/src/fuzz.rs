//! Property tests (bounded fuzzing on stable Rust) of the script front end: the tokenizer and the
//! meta and import checks see every script before QuickJS does, so no input may make them panic,
//! loop, or hand QuickJS a body whose positions differ from the source. Each property runs a
//! fixed number of generated scripts on every `cargo test`; inputs that once found a bug are kept
//! as regression cases below.

use crate::frontend::prepare;
use crate::lexer::{position, tokenize};
use proptest::prelude::*;

/// Script-like text: JavaScript tokens, brackets, quotes, comments and templates in any order,
/// sometimes any characters at all.
fn script_like() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::collection::vec(
            prop_oneof![
                Just("export const meta = { name: 'x', description: 'y' }\n"),
                Just("export "),
                Just("import "),
                Just("import("),
                Just("require("),
                Just("const "),
                Just("meta"),
                Just(" = "),
                Just("{"),
                Just("}"),
                Just("("),
                Just(")"),
                Just("["),
                Just("]"),
                Just("'"),
                Just("\""),
                Just("`"),
                Just("${"),
                Just("/"),
                Just("/*"),
                Just("*/"),
                Just("//"),
                Just("\n"),
                Just("\r\n"),
                Just("\u{2028}"),
                Just("\\"),
                Just("\0"),
                Just("**"),
                Just("!"),
                Just("typeof "),
                Just("await agent('p')"),
                Just("return 1"),
                Just("x"),
                Just("1"),
                Just(";"),
                Just(","),
                Just("é"),
                Just("#!/usr/bin/env node\n"),
            ]
            .prop_map(str::to_string),
            0..40,
        )
        .prop_map(|parts| parts.concat()),
        1 => "\\PC{0,80}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_front_end_never_panics_and_keeps_positions(source in script_like()) {
        let lexed = tokenize(&source);
        for token in &lexed.tokens {
            prop_assert!(token.text(&source).len() <= source.len());
        }
        match prepare(&source) {
            Ok(prepared) => {
                // Byte for byte the same length and lines: QuickJS's positions are the source's.
                prop_assert_eq!(prepared.body.len(), source.len());
                prop_assert_eq!(prepared.body.matches('\n').count(), source.matches('\n').count());
                prop_assert!(!prepared.body.contains('\0'));
            }
            Err(errors) => {
                prop_assert!(!errors.is_empty());
                let end = position(&source, source.len());
                for error in errors {
                    prop_assert!(error.pos.line >= 1 && error.pos.line <= end.line, "{}", error);
                    prop_assert!(!error.message.is_empty());
                }
            }
        }
    }

    #[test]
    fn an_import_in_front_of_any_script_is_refused(source in script_like()) {
        let with_import = format!("import fs from 'fs'\n{source}");
        prop_assert!(prepare(&with_import).is_err());
        let with_require = format!("const fs = require('fs')\n{source}");
        prop_assert!(prepare(&with_require).is_err());
    }
}

/// Inputs that once found bugs (or that the audit tried), kept as fixed cases.
#[test]
fn regression_inputs() {
    let nested = "(".repeat(3000) + &")".repeat(3000);
    let cases = [
        // A NUL inside a string literal was refused without a line and column.
        ("const s = 'a\0b'", "1:13"),
        // Brackets nested past the parser's limit trapped the run.
        (nested.as_str(), "1:"),
        ("export const meta = { name: `a${1}` }", "1:"),
        (
            "export const meta = { name: 'x', description: 'y', ...o }",
            "1:",
        ),
        ("import('fs')", "1:1"),
    ];
    for (source, at) in cases {
        let errors = prepare(source).expect_err(source);
        let first = errors[0].to_string();
        assert!(first.starts_with(at), "{source:?}: {first}");
    }
}
