//! `corral check`, `corral build`, `corral inspect`: scripts and components as artifacts.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use sha2::{Digest, Sha256};

use corral_host::artifact::{embed_script, list_sections};
use corral_host::events::NoEvents;
use corral_host::provider::sim::SimProvider;
use corral_host::{
    LoadError, RunError, RunLimits, RunOptions, Runtime, RuntimeConfig, Script, Workflow,
};

use super::EXIT_USAGE;
use super::run::{JS_RUNTIME, file_name, js_runtime};

#[derive(Args)]
pub struct CheckArgs {
    /// The script to check.
    script: PathBuf,
    /// Its script runtime component (default for .js: the bundled JavaScript runtime).
    #[arg(long, env = "CORRAL_RUNTIME")]
    runtime: Option<PathBuf>,
}

#[derive(Args)]
pub struct BuildArgs {
    /// The script to package.
    script: PathBuf,
    /// Where to write the component (default: the script's path with .wasm).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Its script runtime component (default for .js: the bundled JavaScript runtime).
    #[arg(long, env = "CORRAL_RUNTIME")]
    runtime: Option<PathBuf>,
    /// A policy manifest (policy.toml) to embed: the component's grants and limits.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Sign the component with this secret key (from `corral keys generate`).
    #[arg(long, value_name = "KEY")]
    sign: Option<PathBuf>,
}

#[derive(Args)]
pub struct InspectArgs {
    /// A component (.wasm) or a script (.js).
    workflow: PathBuf,
    /// Script runtime for a script (default for .js: the bundled JavaScript runtime).
    #[arg(long, env = "CORRAL_RUNTIME")]
    runtime: Option<PathBuf>,
    /// A public key (KEY.pub) to check the signature against; repeatable.
    #[arg(long = "trust", value_name = "KEY.pub")]
    trust: Vec<PathBuf>,
    /// Write the component's signature to FILE as a .minisig, for `minisign -V`.
    #[arg(long, value_name = "FILE")]
    minisig: Option<PathBuf>,
}

fn runtime() -> anyhow::Result<Runtime> {
    Ok(Runtime::new(RuntimeConfig::default())?)
}

/// A component refused for what it imports is still described: every import, the refused ones
/// marked with why. Exit code 2, as `corral run` of it.
fn refused_imports(error: anyhow::Error) -> anyhow::Result<ExitCode> {
    let Some(LoadError::ForbiddenImport {
        name,
        message,
        imports,
    }) = error.downcast_ref::<LoadError>()
    else {
        return Err(error);
    };
    out!("{name}");
    out!("refused:  {message}");
    out!("imports:");
    for import in imports {
        match corral_host::runtime::import_refusal(import) {
            None => out!("  {import}"),
            Some(why) => out!("  {import}    <- refused: {why}"),
        }
    }
    Ok(ExitCode::from(2))
}

/// Loads a component, or a script with its runtime (the bundled one for `.js`).
fn load_workflow(
    runtime: &Runtime,
    path: &Path,
    script_runtime: Option<&PathBuf>,
) -> anyhow::Result<(Arc<Workflow>, Option<Script>)> {
    if path.extension().is_some_and(|ext| ext == "wasm") {
        return Ok((runtime.load_file(path)?, None));
    }
    let bundled = js_runtime();
    let is_script = path
        .extension()
        .is_some_and(|ext| bundled.extensions.iter().any(|known| ext == *known));
    if script_runtime.is_none() && !is_script {
        bail!(
            "{} is neither a .wasm component nor a .js script; name its script runtime with --runtime (or CORRAL_RUNTIME)",
            path.display()
        );
    }
    let source =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let script = Script {
        name: file_name(path),
        source,
    };
    let workflow = match script_runtime {
        Some(component) => runtime.load_file(component)?,
        None => runtime.load_hashed(bundled.name, bundled.bytes, bundled.hash)?,
    };
    Ok((workflow, Some(script)))
}

/// Runs the script runtime's `load` only: every front-end check, no agent, no result.
fn check_script(
    runtime: &Runtime,
    workflow: &Workflow,
    script: &Script,
) -> anyhow::Result<Result<(), RunError>> {
    let tokio = super::tokio()?;
    let report = tokio.block_on(runtime.run(
        workflow,
        RunOptions {
            args_json: "null".to_string(),
            root: None,
            limits: RunLimits::default(),
            provider: Arc::new(SimProvider::default()),
            events: Arc::new(NoEvents),
            script: Some(script.clone()),
            journal: None,
            stop: None,
            shared: Default::default(),
            load_only: true,
        },
    ));
    Ok(report.outcome.map(|_| ()))
}

fn script_only(
    path: &Path,
    runtime_path: Option<&PathBuf>,
    runtime: &Runtime,
) -> anyhow::Result<(Arc<Workflow>, Script)> {
    if path.extension().is_some_and(|ext| ext == "wasm") {
        bail!(
            "{} is a component; `corral check` and `corral build` take a script (.js)",
            path.display()
        );
    }
    let (workflow, script) = load_workflow(runtime, path, runtime_path)?;
    Ok((workflow, script.expect("a non-.wasm workflow is a script")))
}

pub fn check(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let runtime = runtime()?;
    let (workflow, script) = script_only(&args.script, args.runtime.as_ref(), &runtime)?;
    match check_script(&runtime, &workflow, &script)? {
        Ok(()) => {
            eprintln!("{}: ok", script.name);
            Ok(ExitCode::SUCCESS)
        }
        Err(RunError::Script(message)) => {
            eprintln!("{message}");
            Ok(ExitCode::from(EXIT_USAGE))
        }
        Err(other) => {
            eprintln!("error: {other}");
            Ok(ExitCode::from(EXIT_USAGE))
        }
    }
}

pub fn build(args: BuildArgs) -> anyhow::Result<ExitCode> {
    let runtime = runtime()?;
    let (workflow, script) = script_only(&args.script, args.runtime.as_ref(), &runtime)?;
    if let Err(error) = check_script(&runtime, &workflow, &script)? {
        eprintln!(
            "{}",
            match error {
                RunError::Script(message) => message,
                other => format!("error: {other}"),
            }
        );
        eprintln!("error: {} was not built: fix the script first", script.name);
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    let runtime_bytes = match &args.runtime {
        Some(path) => {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
        }
        None => JS_RUNTIME.to_vec(),
    };
    let component = super::sign::seal(
        &embed_script(&runtime_bytes, &script)?,
        args.policy.as_deref(),
        args.sign.as_deref(),
    )?;
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| args.script.with_extension("wasm"));
    std::fs::write(&output, &component)
        .with_context(|| format!("cannot write {}", output.display()))?;
    eprintln!(
        "built {} ({} bytes: the script runtime and {}{}{}; sha256 {})",
        output.display(),
        component.len(),
        script.name,
        if args.policy.is_some() {
            ", its policy"
        } else {
            ""
        },
        if args.sign.is_some() { ", signed" } else { "" },
        hex(&Sha256::digest(&component))
    );
    Ok(ExitCode::SUCCESS)
}

pub fn inspect(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let runtime = runtime()?;
    let (workflow, script) = match load_workflow(&runtime, &args.workflow, args.runtime.as_ref()) {
        Ok(loaded) => loaded,
        Err(error) => return refused_imports(error),
    };
    let script = script.or_else(|| workflow.embedded_script().cloned());
    let bytes = if args.workflow.extension().is_some_and(|ext| ext == "wasm") {
        std::fs::read(&args.workflow)
            .with_context(|| format!("cannot read {}", args.workflow.display()))?
    } else {
        match &args.runtime {
            Some(path) => std::fs::read(path)?,
            None => JS_RUNTIME.to_vec(),
        }
    };
    let kind = match (workflow.is_script_runtime(), &script) {
        (false, _) => "workflow component",
        (true, Some(_)) if workflow.embedded_script().is_some() => {
            "built script (script runtime + embedded script)"
        }
        (true, Some(_)) => "script (run by a script runtime)",
        (true, None) => "script runtime (needs a script)",
    };
    out!("{}", file_name(&args.workflow));
    out!("kind:     {kind}");
    out!(
        "world:    corral:workflow/{}",
        if workflow.is_script_runtime() {
            "script-runtime"
        } else {
            "workflow"
        }
    );
    out!("size:     {} bytes", workflow.size());
    out!("sha256:   {}", workflow.hash());
    out!("imports:");
    for import in workflow.imports() {
        out!("  {import}");
    }
    out!("exports:");
    for export in workflow.exports() {
        out!("  {export}");
    }
    let custom: Vec<String> = list_sections(&bytes)?
        .into_iter()
        .filter_map(|section| {
            section
                .name
                .map(|name| format!("{name} ({} bytes)", section.size))
        })
        .collect();
    if !custom.is_empty() {
        out!("custom sections: {}", custom.join(", "));
    }
    let trusted = super::sign::read_trusted(&args.trust)?;
    for line in super::sign::describe(&workflow, &trusted) {
        out!("{line}");
    }
    if let Some(path) = &args.minisig {
        super::sign::export_signature(&workflow, path)?;
        eprintln!(
            "wrote {}: `head -c {} {} > signed.part && minisign -V -p KEY.pub -m signed.part -x {}` checks it",
            path.display(),
            workflow.seal().map_or(0, |seal| seal.signed_len),
            args.workflow.display(),
            path.display()
        );
    }
    if let Some(script) = &script {
        out!(
            "script:   {} ({} lines, sha256 {})",
            script.name,
            script.source.lines().count(),
            hex(&Sha256::digest(script.source.as_bytes()))
        );
        match check_script(&runtime, &workflow, script)? {
            Ok(()) => out!("check:    ok"),
            Err(error) => out!("check:    {error}"),
        }
        if let Some(literal) = meta_literal(&script.source) {
            out!("meta:     {}", collapsed(literal));
            let meta = literal::parse(literal);
            let field = |key: &str| meta.as_ref()?.get(key)?.as_str();
            if let Some(when) = field("whenToUse") {
                out!("whenToUse: {}", collapsed(when));
            }
            let phases = meta
                .as_ref()
                .and_then(|m| m.get("phases")?.as_array().cloned());
            if let Some(phases) = phases.filter(|p| !p.is_empty()) {
                let shown: Vec<String> = phases
                    .iter()
                    .filter_map(|phase| {
                        let title = phase.get("title")?.as_str()?;
                        Some(match phase.get("model").and_then(|m| m.as_str()) {
                            Some(model) => format!("{title} (model {model})"),
                            None => title.to_owned(),
                        })
                    })
                    .collect();
                out!("phases:   {}", shown.join(", "));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `text` on one line, runs of whitespace as one space.
fn collapsed(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The text of `export const meta = {...}` at the top of a script, as written (the runtime
/// validates it; this only shows it).
fn meta_literal(source: &str) -> Option<&str> {
    let start = source.find("export const meta")?;
    let open = start + source[start..].find('{')?;
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (offset, c) in source[open..].char_indices() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '\'' | '"' | '`' => quote = Some(c),
                '{' | '[' => depth += 1,
                '}' | ']' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(&source[open..open + offset + 1]);
                    }
                }
                _ => {}
            },
        }
    }
    None
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a meta literal (JavaScript: unquoted keys, `'`/`"`/`` ` `` strings, trailing commas,
/// comments) into JSON, for showing its fields. The runtime is what checks meta; anything this
/// does not understand is simply not shown.
mod literal {
    use serde_json::{Map, Value};

    /// The literal's value, or `None` when it is not a pure literal this reader understands.
    pub fn parse(text: &str) -> Option<Value> {
        let mut reader = Reader {
            chars: text.chars().collect(),
            at: 0,
        };
        let value = reader.value()?;
        reader.skip_space();
        (reader.at == reader.chars.len()).then_some(value)
    }

    struct Reader {
        chars: Vec<char>,
        at: usize,
    }

    impl Reader {
        fn peek(&self) -> Option<char> {
            self.chars.get(self.at).copied()
        }

        fn next(&mut self) -> Option<char> {
            let c = self.peek()?;
            self.at += 1;
            Some(c)
        }

        fn skip_space(&mut self) {
            loop {
                match (self.peek(), self.chars.get(self.at + 1)) {
                    (Some(c), _) if c.is_whitespace() => self.at += 1,
                    (Some('/'), Some('/')) => {
                        while self.peek().is_some_and(|c| c != '\n') {
                            self.at += 1;
                        }
                    }
                    (Some('/'), Some('*')) => {
                        self.at += 2;
                        while self.peek().is_some() && !self.eat_str("*/") {
                            self.at += 1;
                        }
                    }
                    _ => return,
                }
            }
        }

        fn eat_str(&mut self, s: &str) -> bool {
            let n = s.chars().count();
            let found = self.chars.len() >= self.at + n
                && self.chars[self.at..self.at + n]
                    .iter()
                    .copied()
                    .eq(s.chars());
            if found {
                self.at += n;
            }
            found
        }

        fn value(&mut self) -> Option<Value> {
            self.skip_space();
            match self.peek()? {
                '{' => self.object(),
                '[' => self.array(),
                q @ ('\'' | '"' | '`') => {
                    self.at += 1;
                    self.string(q).map(Value::String)
                }
                _ => {
                    let word = self.word();
                    match word.as_str() {
                        "true" => Some(Value::Bool(true)),
                        "false" => Some(Value::Bool(false)),
                        "null" => Some(Value::Null),
                        _ => serde_json::from_str::<serde_json::Number>(&word.replace('_', ""))
                            .ok()
                            .map(Value::Number),
                    }
                }
            }
        }

        /// An identifier, keyword or number.
        fn word(&mut self) -> String {
            let start = self.at;
            while self
                .peek()
                .is_some_and(|c| c.is_alphanumeric() || "_$.+-".contains(c))
            {
                self.at += 1;
            }
            self.chars[start..self.at].iter().collect()
        }

        fn object(&mut self) -> Option<Value> {
            self.at += 1;
            let mut map = Map::new();
            loop {
                self.skip_space();
                let key = match self.peek()? {
                    '}' => {
                        self.at += 1;
                        return Some(Value::Object(map));
                    }
                    q @ ('\'' | '"') => {
                        self.at += 1;
                        self.string(q)?
                    }
                    _ => Some(self.word()).filter(|w| !w.is_empty())?,
                };
                self.skip_space();
                (self.next()? == ':').then_some(())?;
                let value = self.value()?;
                map.insert(key, value);
                self.skip_space();
                match self.next()? {
                    ',' => {}
                    '}' => return Some(Value::Object(map)),
                    _ => return None,
                }
            }
        }

        fn array(&mut self) -> Option<Value> {
            self.at += 1;
            let mut items = Vec::new();
            loop {
                self.skip_space();
                if self.peek()? == ']' {
                    self.at += 1;
                    return Some(Value::Array(items));
                }
                items.push(self.value()?);
                self.skip_space();
                match self.next()? {
                    ',' => {}
                    ']' => return Some(Value::Array(items)),
                    _ => return None,
                }
            }
        }

        /// The rest of a string opened by `quote`, escapes decoded.
        fn string(&mut self, quote: char) -> Option<String> {
            let mut out = String::new();
            loop {
                let c = self.next()?;
                match c {
                    c if c == quote => return Some(out),
                    '$' if quote == '`' && self.peek() == Some('{') => return None,
                    '\\' => match self.next()? {
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        'b' => out.push('\u{8}'),
                        'f' => out.push('\u{c}'),
                        'v' => out.push('\u{b}'),
                        '0' => out.push('\0'),
                        '\n' => {}
                        'x' => out.push(self.hex_digits(2)?),
                        'u' if self.peek() == Some('{') => {
                            self.at += 1;
                            let start = self.at;
                            while self.peek().is_some_and(|c| c != '}') {
                                self.at += 1;
                            }
                            let digits: String = self.chars[start..self.at].iter().collect();
                            self.at += 1;
                            out.push(char::from_u32(u32::from_str_radix(&digits, 16).ok()?)?);
                        }
                        'u' => out.push(self.hex_digits(4)?),
                        other => out.push(other),
                    },
                    c => out.push(c),
                }
            }
        }

        fn hex_digits(&mut self, n: usize) -> Option<char> {
            let digits: String = self.chars.get(self.at..self.at + n)?.iter().collect();
            self.at += n;
            char::from_u32(u32::from_str_radix(&digits, 16).ok()?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{literal, meta_literal};
    use serde_json::json;

    #[test]
    fn meta_literals_are_read_as_json() {
        let source = "export const meta = {\n  name: 'x}', // a comment\n  \"description\": \"d \\\"q\\\"\",\n  \
                      whenToUse: `when\\u0021 \\x41`, /* c */ n: -1.5e2,\n  phases: [{ title: 'A', model: 'haiku' }, \
                      { title: 'B', }, ],\n}\nreturn 1";
        assert_eq!(
            literal::parse(meta_literal(source).unwrap()),
            Some(json!({
                "name": "x}",
                "description": "d \"q\"",
                "whenToUse": "when! A",
                "n": -150.0,
                "phases": [{ "title": "A", "model": "haiku" }, { "title": "B" }],
            }))
        );
        assert_eq!(literal::parse("{ a: `${x}` }"), None);
        assert_eq!(literal::parse("{ a: b }"), None);
        assert_eq!(literal::parse("{ a: 1 } + 2"), None);
    }

    #[test]
    fn meta_literals_are_found_whole() {
        let source =
            "export const meta = {\n  name: 'x}',\n  phases: [{ title: 'A' }],\n}\nreturn 1";
        assert_eq!(
            super::collapsed(meta_literal(source).unwrap()),
            "{ name: 'x}', phases: [{ title: 'A' }], }"
        );
        assert_eq!(meta_literal("return 1"), None);
    }
}
