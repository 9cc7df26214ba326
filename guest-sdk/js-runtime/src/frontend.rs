//! Checks a workflow script before QuickJS sees it (SCRIPT-API rules 1 and 3) and prepares the
//! text QuickJS compiles.
//!
//! - `export const meta = { ... }` may be the first statement. Its value must be a pure literal
//!   (no variables, calls, spreads or interpolated templates); it is read here into JSON and its
//!   fields are checked. The `export` keyword is then blanked out, so the script still defines a
//!   `meta` constant and every line and column stays where it was.
//! - `import` declarations, `import()`, `import.meta`, `require(...)` and any other `export` are
//!   refused.
//! - So are what QuickJS cannot be handed: a NUL character (the source reaches it as a C string)
//!   and brackets nested past [`lexer::MAX_NESTING`] (its parser would exhaust the native stack).
//!
//! Every error names the line and column and says how to fix the script, because the reader is
//! often an LLM that has to repair it.

use std::fmt;

use serde_json::{Map, Value};

use crate::lexer::{self, Kind, Pos, Token};

/// A problem in a script found before it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckError {
    /// Where the problem is.
    pub pos: Pos,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pos, self.message)
    }
}

/// A script that passed the front-end checks.
#[derive(Debug)]
pub struct Prepared {
    /// The source with `export` of the meta statement (and a leading `#!` line) blanked out,
    /// byte for byte the same length and line structure as the original.
    pub body: String,
    /// The meta literal as JSON, when the script has one.
    pub meta: Option<Value>,
    /// A lexical problem the tokenizer met. It is reported only if QuickJS also fails to compile
    /// the script, because the tokenizer can misjudge a `/`.
    pub lex_error: Option<CheckError>,
}

/// At most this many problems are reported at once.
const MAX_ERRORS: usize = 10;

/// Checks `source` and prepares it for compilation. On failure, returns every problem found (up
/// to a small cap), in source order.
pub fn prepare(source: &str) -> Result<Prepared, Vec<CheckError>> {
    let lexed = lexer::tokenize(source);
    let tokens = &lexed.tokens;
    let mut errors = Vec::new();
    let mut body = source.to_owned();
    let mut meta = None;

    if let Some(e) = lexed.error.as_ref().filter(|e| e.refused) {
        errors.push(CheckError {
            pos: e.pos,
            message: e.message.clone(),
        });
    }
    if let Some(e) = nul_error(source, tokens) {
        errors.push(e);
    }

    if source.starts_with("#!") {
        // QuickJS accepts a hashbang only at the very start of a script, and the script is
        // compiled inside a function: turn the line into a comment.
        body.replace_range(0..2, "//");
    }

    let meta_export = tokens.first().filter(|t| t.is_ident(source, "export"));
    let mut skip_export_at = None;
    if let Some(export) = meta_export {
        match read_meta(source, tokens, lexed.error.as_ref()) {
            Ok(value) => {
                meta = Some(value);
                skip_export_at = Some(export.start);
                body.replace_range(export.start..export.end, "      ");
            }
            Err(e) => {
                errors.push(e);
                skip_export_at = Some(export.start);
            }
        }
    }

    for (i, token) in tokens.iter().enumerate() {
        if token.kind != Kind::Ident {
            continue;
        }
        let prev = i.checked_sub(1).map(|p| &tokens[p]);
        let next = tokens.get(i + 1);
        // `x.import`, `x?.require`, and object keys such as `{ import: 1 }` are names, not uses.
        let is_member = prev.is_some_and(|p| p.is_punct(source, ".") || p.is_punct(source, "?."));
        let is_key = next.is_some_and(|n| n.is_punct(source, ":"))
            && prev.is_some_and(|p| p.is_punct(source, "{") || p.is_punct(source, ","));
        if is_member || is_key {
            continue;
        }
        let next_is = |p: &str| next.is_some_and(|n| n.is_punct(source, p));
        let message = match token.text(source) {
            "import" if next_is("(") => {
                "dynamic `import()` is not supported: a workflow is one self-contained script; \
                 copy the code you need into it"
            }
            "import" if next_is(".") => {
                "`import.meta` is not supported: a workflow script is not a module; pass values \
                 through `args`"
            }
            "import" => {
                "`import` is not supported: a workflow is one self-contained script; remove the \
                 import and copy the code you need into it (agent, parallel, pipeline, phase, \
                 log, budget, tools and args are globals)"
            }
            "require" if next_is("(") => {
                "`require()` is not supported: a workflow is one self-contained script; remove \
                 it and copy the code you need into it (there is no filesystem, process or \
                 network API)"
            }
            "export" if skip_export_at != Some(token.start) => {
                if tokens[i + 1..].len() >= 2
                    && next.is_some_and(|n| n.is_ident(source, "const"))
                    && tokens[i + 2].is_ident(source, "meta")
                {
                    "`export const meta = { ... }` must be the first statement of the script: \
                     move it to the top"
                } else {
                    "`export` is not supported: only `export const meta = { ... }`, as the first \
                     statement, may be exported; the workflow's result is the value of a \
                     top-level `return`"
                }
            }
            _ => continue,
        };
        errors.push(CheckError {
            pos: token.pos,
            message: message.to_owned(),
        });
    }

    if errors.is_empty() {
        let lex_error = lexed.error.map(|e| CheckError {
            pos: e.pos,
            message: e.message,
        });
        Ok(Prepared {
            body,
            meta,
            lex_error,
        })
    } else {
        errors.sort_by_key(|e| e.pos);
        errors.dedup();
        errors.truncate(MAX_ERRORS);
        Err(errors)
    }
}

/// Refuses the first NUL character of `source`: QuickJS is handed the script as a C string, which
/// would end there.
fn nul_error(source: &str, tokens: &[Token]) -> Option<CheckError> {
    let at = source.find('\0')?;
    let inside = tokens
        .iter()
        .find(|t| t.start <= at && at < t.end)
        .map(|t| &t.kind);
    let message = match inside {
        Some(Kind::Str(_)) => {
            "a NUL character (U+0000) is inside this string literal, and the runtime cannot \
             compile a script that contains one: write it as the escape `\\u0000` instead"
        }
        Some(Kind::Template { .. } | Kind::TemplateRest) => {
            "a NUL character (U+0000) is inside this template literal, and the runtime cannot \
             compile a script that contains one: write it as the escape `\\u0000` instead"
        }
        Some(Kind::Regex) => {
            "a NUL character (U+0000) is inside this regular expression, and the runtime cannot \
             compile a script that contains one: write it as the escape `\\x00` instead"
        }
        _ => {
            "the script contains a NUL character (U+0000) here, and the runtime cannot compile a \
             script that contains one: remove it (inside a string, write the escape `\\u0000`)"
        }
    };
    Some(CheckError {
        pos: lexer::position(source, at),
        message: message.to_owned(),
    })
}

/// Reads `export const meta = <literal>` from the start of `tokens` and checks its fields.
fn read_meta(
    source: &str,
    tokens: &[Token],
    lex_error: Option<&lexer::LexError>,
) -> Result<Value, CheckError> {
    let export = &tokens[0];
    let shape_error = || CheckError {
        pos: export.pos,
        message: "only `export const meta = { ... }` may be exported, as the first statement; \
                  remove `export` from anything else"
            .to_owned(),
    };
    if !(tokens.len() > 3
        && tokens[1].is_ident(source, "const")
        && tokens[2].is_ident(source, "meta")
        && tokens[3].is_punct(source, "="))
    {
        return Err(shape_error());
    }
    let mut reader = LiteralReader {
        source,
        tokens,
        next: 4,
        lex_error,
    };
    let open = reader.peek()?;
    if !open.is_punct(source, "{") {
        return Err(CheckError {
            pos: open.pos,
            message: "meta must be an object literal: `export const meta = { name: '...', \
                      description: '...' }`"
                .to_owned(),
        });
    }
    let value = reader.value()?;
    // The literal must end the statement: `{ ... }.name` or `{ ... } + x` would not be a literal.
    if let Some(after) = tokens.get(reader.next) {
        let ends = after.is_punct(source, ";")
            || (after.newline_before && !matches!(after.kind, Kind::Punct | Kind::TemplateRest));
        if !ends {
            return Err(CheckError {
                pos: after.pos,
                message: "meta must be a pure literal, and the statement must end after it: put \
                          a `;` after the closing `}` of meta"
                    .to_owned(),
            });
        }
    } else if let Some(e) = lex_error {
        return Err(CheckError {
            pos: e.pos,
            message: e.message.clone(),
        });
    }
    check_meta_fields(&value, open.pos)?;
    Ok(value)
}

/// Checks the fields of a meta object; `pos` is where its literal starts.
fn check_meta_fields(meta: &Value, pos: Pos) -> Result<(), CheckError> {
    let fail = |message: String| Err(CheckError { pos, message });
    let Some(object) = meta.as_object() else {
        return fail("meta must be an object literal".to_owned());
    };
    for (field, what) in [
        ("name", "a short kebab-case name, such as 'review-changes'"),
        ("description", "one sentence saying what the workflow does"),
    ] {
        match object.get(field) {
            Some(Value::String(s)) if !s.trim().is_empty() => {}
            Some(Value::String(_)) => {
                return fail(format!("meta.{field} must not be empty: write {what}"));
            }
            Some(_) => return fail(format!("meta.{field} must be a string: {what}")),
            None => {
                return fail(format!(
                    "meta.{field} is required: meta needs `name` (a short kebab-case name) and \
                     `description` (one sentence saying what the workflow does)"
                ));
            }
        }
    }
    if let Some(when) = object.get("whenToUse")
        && !when.is_string()
    {
        return fail("meta.whenToUse must be a string".to_owned());
    }
    if let Some(phases) = object.get("phases") {
        let Some(phases) = phases.as_array() else {
            return fail("meta.phases must be an array of `{ title, detail?, model? }`".to_owned());
        };
        for (i, phase) in phases.iter().enumerate() {
            let Some(phase) = phase.as_object() else {
                return fail(format!(
                    "meta.phases[{i}] must be an object `{{ title, detail?, model? }}`"
                ));
            };
            match phase.get("title") {
                Some(Value::String(t)) if !t.trim().is_empty() => {}
                _ => {
                    return fail(format!(
                        "meta.phases[{i}].title is required and must be a non-empty string"
                    ));
                }
            }
            for key in ["detail", "model"] {
                if phase.get(key).is_some_and(|v| !v.is_string()) {
                    return fail(format!("meta.phases[{i}].{key} must be a string"));
                }
            }
        }
    }
    Ok(())
}

/// Reads a pure literal (objects, arrays, strings, numbers, booleans, null, templates without
/// substitutions) from a token stream.
struct LiteralReader<'a> {
    source: &'a str,
    tokens: &'a [Token],
    next: usize,
    lex_error: Option<&'a lexer::LexError>,
}

/// Why something is not allowed in meta, appended to the error that names it.
const PURE_LITERAL: &str = "meta must be a pure literal: write every value out (no variables, \
                            calls, spreads, computed keys or `${}` in templates)";

impl<'a> LiteralReader<'a> {
    fn peek(&self) -> Result<&'a Token, CheckError> {
        match self.tokens.get(self.next) {
            Some(t) => Ok(t),
            None => Err(match self.lex_error {
                Some(e) => CheckError {
                    pos: e.pos,
                    message: e.message.clone(),
                },
                None => {
                    let pos = self
                        .tokens
                        .last()
                        .map_or(Pos { line: 1, column: 1 }, |t| t.pos);
                    CheckError {
                        pos,
                        message: "meta is not finished: the script ends inside it".to_owned(),
                    }
                }
            }),
        }
    }

    fn take(&mut self) -> Result<&'a Token, CheckError> {
        let t = self.peek()?;
        self.next += 1;
        Ok(t)
    }

    fn unexpected(&self, token: &Token) -> CheckError {
        let text = token.text(self.source);
        let what = match token.kind {
            Kind::Ident => format!("`{text}` is a variable or expression"),
            Kind::Template { .. } => "a template with `${}` substitutions".to_owned(),
            _ if text == "..." => "a spread (`...`)".to_owned(),
            _ if text == "[" => "a computed key".to_owned(),
            _ => format!("`{text}` is not allowed here"),
        };
        CheckError {
            pos: token.pos,
            message: format!("{what}: {PURE_LITERAL}"),
        }
    }

    fn expect(&mut self, p: &str) -> Result<(), CheckError> {
        let t = self.take()?;
        if t.is_punct(self.source, p) {
            Ok(())
        } else {
            Err(self.unexpected(t))
        }
    }

    fn value(&mut self) -> Result<Value, CheckError> {
        let t = self.take()?;
        let source = self.source;
        match &t.kind {
            Kind::Str(Some(s)) => Ok(Value::String(s.clone())),
            Kind::Template {
                cooked: Some(s),
                has_substitution: false,
            } => Ok(Value::String(s.clone())),
            Kind::Number(Some(n)) => Ok(number(*n)),
            Kind::Punct if t.text(source) == "-" || t.text(source) == "+" => {
                let sign = if t.text(source) == "-" { -1.0 } else { 1.0 };
                let n = self.take()?;
                match n.kind {
                    Kind::Number(Some(v)) => Ok(number(sign * v)),
                    _ => Err(self.unexpected(n)),
                }
            }
            Kind::Ident => match t.text(source) {
                "true" => Ok(Value::Bool(true)),
                "false" => Ok(Value::Bool(false)),
                "null" => Ok(Value::Null),
                _ => Err(self.unexpected(t)),
            },
            Kind::Punct if t.text(source) == "{" => self.object(),
            Kind::Punct if t.text(source) == "[" => self.array(),
            _ => Err(self.unexpected(t)),
        }
    }

    fn object(&mut self) -> Result<Value, CheckError> {
        let mut map = Map::new();
        loop {
            let key = self.take()?;
            let source = self.source;
            let name = match &key.kind {
                Kind::Punct if key.text(source) == "}" => return Ok(Value::Object(map)),
                Kind::Ident => key.text(source).to_owned(),
                Kind::Str(Some(s)) => s.clone(),
                Kind::Number(Some(n)) => number(*n).to_string(),
                _ => return Err(self.unexpected(key)),
            };
            let colon = self.peek()?;
            if !colon.is_punct(source, ":") {
                // `{ name }` (shorthand) and `{ f() {} }` (a method) name variables or code.
                return Err(CheckError {
                    pos: key.pos,
                    message: format!("`{name}` needs a value (`{name}: ...`): {PURE_LITERAL}"),
                });
            }
            self.next += 1;
            let value = self.value()?;
            map.insert(name, value);
            let sep = self.take()?;
            if sep.is_punct(source, "}") {
                return Ok(Value::Object(map));
            }
            if !sep.is_punct(source, ",") {
                return Err(self.unexpected(sep));
            }
        }
    }

    fn array(&mut self) -> Result<Value, CheckError> {
        let mut items = Vec::new();
        loop {
            if self.peek()?.is_punct(self.source, "]") {
                self.next += 1;
                return Ok(Value::Array(items));
            }
            items.push(self.value()?);
            let sep = self.peek()?;
            if sep.is_punct(self.source, "]") {
                continue;
            }
            self.expect(",")?;
        }
    }
}

/// A JSON number for `n`, integral when it is one.
fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}

/// Whether a script that QuickJS refused looks like TypeScript, judging by its tokens. Returns
/// where, to add a hint to QuickJS's syntax error.
pub fn typescript_hint(source: &str) -> Option<Pos> {
    let tokens = lexer::tokenize(source).tokens;
    for (i, t) in tokens.iter().enumerate() {
        let next = tokens.get(i + 1);
        let after = tokens.get(i + 2);
        let ident_next = next.is_some_and(|n| n.kind == Kind::Ident);
        let statement_start = i == 0
            || t.newline_before
            || tokens[i - 1].is_punct(source, ";")
            || tokens[i - 1].is_punct(source, "}")
            || tokens[i - 1].is_punct(source, "{");
        let hit = match t.text(source) {
            // `const x: T`, `let x: T`: the annotation's `:` is where to look.
            "const" | "let" | "var" if t.kind == Kind::Ident => {
                if ident_next && after.is_some_and(|a| a.is_punct(source, ":")) {
                    return after.map(|a| a.pos);
                }
                false
            }
            // `(x: T` — a parameter's type; `(label: ...` is never JavaScript.
            "(" if t.kind == Kind::Punct => {
                if ident_next
                    && after.is_some_and(|a| a.is_punct(source, ":"))
                    && tokens.get(i + 3).is_some_and(|b| b.kind == Kind::Ident)
                {
                    return after.map(|a| a.pos);
                }
                false
            }
            // `interface Foo {`, `type Foo =`, `enum Foo {`
            "interface" | "enum" if t.kind == Kind::Ident && statement_start => ident_next,
            "type" if t.kind == Kind::Ident && statement_start => {
                ident_next
                    && after.is_some_and(|a| a.is_punct(source, "=") || a.is_punct(source, "<"))
            }
            // `x as const`, `x as string`
            "as" if t.kind == Kind::Ident && i > 0 => {
                ident_next
                    && matches!(tokens[i - 1].kind, Kind::Ident | Kind::Punct)
                    && !tokens[i - 1].is_punct(source, "{")
                    && !tokens[i - 1].is_punct(source, ",")
            }
            // `): Promise<T> {` — a return type
            ")" if t.kind == Kind::Punct => {
                if next.is_some_and(|n| n.is_punct(source, ":"))
                    && after.is_some_and(|a| a.kind == Kind::Ident)
                    && tokens
                        .get(i + 3)
                        .is_some_and(|b| b.is_punct(source, "{") || b.is_punct(source, "<"))
                {
                    return next.map(|n| n.pos);
                }
                false
            }
            _ => false,
        };
        if hit {
            return Some(t.pos);
        }
    }
    None
}

#[cfg(test)]
mod tests;
