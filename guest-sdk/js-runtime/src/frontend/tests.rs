use serde_json::json;

use super::*;

fn errors(source: &str) -> Vec<String> {
    match prepare(source) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

fn first_error(source: &str) -> String {
    errors(source)
        .into_iter()
        .next()
        .expect("the script should be refused")
}

#[test]
fn meta_is_read_and_its_export_blanked() {
    let source = "export const meta = {\n  name: 'review',\n  description: \"Reviews\",\n  \
                  phases: [{ title: `Find` }, { title: 'Verify', model: 'haiku', }],\n  n: -1.5, ok: true, none: null,\n};\nreturn 1";
    let prepared = prepare(source).unwrap();
    assert_eq!(
        prepared.meta,
        Some(json!({
            "name": "review", "description": "Reviews",
            "phases": [{ "title": "Find" }, { "title": "Verify", "model": "haiku" }],
            "n": -1.5, "ok": true, "none": null,
        }))
    );
    assert!(prepared.body.starts_with("       const meta = {"));
    assert_eq!(prepared.body.len(), source.len());
    assert_eq!(&prepared.body[6..], &source[6..]);
}

#[test]
fn meta_without_semicolon_before_a_statement() {
    let source = "export const meta = { name: 'a', description: 'b' }\nconst x = await agent('hi')\nreturn x";
    assert!(prepare(source).unwrap().meta.is_some());
}

#[test]
fn script_without_meta() {
    let prepared = prepare("// comment\nreturn 42").unwrap();
    assert_eq!(prepared.meta, None);
    assert_eq!(prepared.body, "// comment\nreturn 42");
}

#[test]
fn meta_refuses_non_literals() {
    let cases = [
        (
            "export const meta = { name: NAME, description: 'd' }",
            "1:29: `NAME` is a variable",
        ),
        (
            "export const meta = { name: f(), description: 'd' }",
            "1:29: `f` is a variable",
        ),
        (
            "export const meta = { ...base, name: 'n', description: 'd' }",
            "1:23: a spread",
        ),
        (
            "export const meta = { name: `n${x}`, description: 'd' }",
            "1:29: a template with `${}`",
        ),
        (
            "export const meta = { [k]: 1, name: 'n', description: 'd' }",
            "1:23: a computed key",
        ),
        (
            "export const meta = { name, description: 'd' }",
            "1:23: `name` needs a value",
        ),
        (
            "export const meta = { name: 'n', description: 'd' }.x",
            "1:52: meta must be a pure literal",
        ),
        (
            "export const meta = base",
            "1:21: meta must be an object literal",
        ),
        (
            "export const meta = { name: 'n', description: 'd' + 'e' }",
            "1:51: `+` is not allowed",
        ),
    ];
    for (source, expected) in cases {
        let error = first_error(source);
        assert!(
            error.starts_with(expected),
            "{source}\n  got: {error}\n  expected: {expected}"
        );
    }
}

#[test]
fn meta_requires_name_and_description() {
    assert!(
        first_error("export const meta = { description: 'd' }")
            .starts_with("1:21: meta.name is required")
    );
    assert!(
        first_error("export const meta = { name: 'n' }")
            .starts_with("1:21: meta.description is required")
    );
    assert!(
        first_error("export const meta = { name: '', description: 'd' }")
            .contains("meta.name must not be empty")
    );
    assert!(
        first_error("export const meta = { name: 1, description: 'd' }")
            .contains("meta.name must be a string")
    );
    assert!(
        first_error("export const meta = { name: 'n', description: 'd', phases: [{}] }")
            .contains("meta.phases[0].title is required")
    );
    assert!(
        first_error("export const meta = { name: 'n', description: 'd', phases: {} }")
            .contains("meta.phases must be an array")
    );
    assert!(
        first_error("export const meta = { name: 'n', description: 'd', whenToUse: 3 }")
            .contains("meta.whenToUse must be a string")
    );
}

#[test]
fn meta_must_come_first() {
    let error = first_error("const x = 1\nexport const meta = { name: 'n', description: 'd' }");
    assert!(
        error.starts_with("2:1: `export const meta = { ... }` must be the first statement"),
        "{error}"
    );
}

#[test]
fn other_exports_are_refused() {
    assert!(
        first_error("export const meta = { name: 'n', description: 'd' }\nexport default 1")
            .starts_with("2:1: `export` is not supported")
    );
    assert!(first_error("export function f() {}").starts_with("1:1: only `export const meta"));
}

#[test]
fn imports_and_require_are_refused_with_positions() {
    let source = "import fs from 'fs'\nconst m = await import('x')\n  const r = require('y')\nconst u = import.meta.url";
    let errors = errors(source);
    assert_eq!(errors.len(), 4, "{errors:?}");
    assert!(errors[0].starts_with("1:1: `import` is not supported"));
    assert!(errors[1].starts_with("2:17: dynamic `import()` is not supported"));
    assert!(errors[2].starts_with("3:13: `require()` is not supported"));
    assert!(errors[3].starts_with("4:11: `import.meta` is not supported"));
}

#[test]
fn names_in_strings_comments_templates_regexes_and_keys_are_fine() {
    let source = r#"
// import x from 'y'
/* require('z') */
const s = "import('a')" + 'require("b")'
const t = `import ${ `nested ${ "require('c')" }` } export`
const r = /import\(/g.test(s) ? 1 / 2 : s.length / 3 / 4
const o = { import: 1, require: 2, export: 3 }
o.import; o.require('x'); o?.import
return [s, t, r, o]
"#;
    assert_eq!(errors(source), Vec::<String>::new());
}

#[test]
fn columns_count_bytes_like_quickjs() {
    let error = first_error("const é = 'ü'; require('x')");
    assert!(error.starts_with("1:18:"), "{error}");
}

#[test]
fn hashbang_becomes_a_comment() {
    let prepared = prepare("#!/usr/bin/env corral\nreturn 1").unwrap();
    assert_eq!(prepared.body, "///usr/bin/env corral\nreturn 1");
}

#[test]
fn lexical_problems_are_kept_as_hints() {
    let prepared = prepare("foo()\n})\n").unwrap();
    let hint = prepared.lex_error.unwrap();
    assert_eq!(hint.pos, Pos { line: 2, column: 1 });
    assert!(
        hint.message.starts_with("unmatched `}`"),
        "{}",
        hint.message
    );

    let prepared = prepare("const a = [1, 2\nreturn a").unwrap();
    assert!(
        prepared
            .lex_error
            .unwrap()
            .message
            .contains("`[` is never closed")
    );
}

#[test]
fn string_escapes_in_meta() {
    let prepared =
        prepare(r#"export const meta = { name: 'a\'b', description: "\u00e9\x41\u{1F600}\n" }"#)
            .unwrap();
    assert_eq!(prepared.meta.unwrap()["description"], json!("éA😀\n"));
}

#[test]
fn typescript_is_recognised() {
    assert_eq!(
        typescript_hint("const x: number = 1"),
        Some(Pos { line: 1, column: 8 })
    );
    assert_eq!(
        typescript_hint("let a = 1\ninterface Foo { a: string }"),
        Some(Pos { line: 2, column: 1 })
    );
    assert_eq!(
        typescript_hint("type T = { a: string }"),
        Some(Pos { line: 1, column: 1 })
    );
    assert_eq!(
        typescript_hint("const v = x as const"),
        Some(Pos {
            line: 1,
            column: 13
        })
    );
    assert_eq!(
        typescript_hint("function f(a): string { }"),
        Some(Pos {
            line: 1,
            column: 14
        })
    );
    assert_eq!(
        typescript_hint("function f(a: string) { }"),
        Some(Pos {
            line: 1,
            column: 13
        })
    );
    assert_eq!(typescript_hint("const x = { a: 1 }; f(a ? b : c)"), None);
}

#[test]
fn nesting_past_the_limit_is_refused_not_hinted() {
    let nested = |n: usize| format!("return {}1{}", "[".repeat(n), "]".repeat(n));
    assert_eq!(
        errors(&nested(crate::lexer::MAX_NESTING)),
        Vec::<String>::new()
    );
    let error = first_error(&nested(crate::lexer::MAX_NESTING + 1));
    assert!(
        error.starts_with(
            "1:108: brackets and prefix operators nest more than 100 deep here, the most the \
             workflow runtime compiles (MAX_NESTING)"
        ),
        "{error}"
    );
    // Prefix operators and `**` in a row count as levels, before brackets and inside them.
    assert!(!errors(&format!("return {}1", "!".repeat(101))).is_empty());
    let chained = format!("return {}{}1", "- ".repeat(60), "(".repeat(41));
    assert!(first_error(&chained).starts_with("1:168: brackets and prefix operators nest"));
    assert!(!errors(&format!("return 2{}", "**2".repeat(101))).is_empty());
    assert!(!errors(&format!("return {}1", "typeof ".repeat(101))).is_empty());
    // Binary operators between operands do not chain; closing a bracket ends its level.
    assert_eq!(
        errors(&format!("return 1{}", " - -1".repeat(500))),
        Vec::<String>::new()
    );
    assert_eq!(errors(&"f(g(h(!!x)));\n".repeat(500)), Vec::<String>::new());
}

#[test]
fn a_nul_character_is_refused_where_it_is() {
    assert!(first_error("const a = 1\nconst s = 'x\0y'").starts_with(
        "2:13: a NUL character (U+0000) is inside this string literal, and the runtime cannot \
         compile a script that contains one: write it as the escape `\\u0000` instead"
    ));
    assert!(
        first_error("`a${b}\0`")
            .starts_with("1:7: a NUL character (U+0000) is inside this template")
    );
    assert!(
        first_error("/a\0/.test(s)")
            .starts_with("1:3: a NUL character (U+0000) is inside this regular expression")
    );
    assert!(first_error("// \0\r\nx").starts_with("1:4: the script contains a NUL character"));
    assert!(first_error("x\r\n\0").starts_with("2:1: the script contains a NUL character"));
}
