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
use corral_host::{RunError, RunLimits, RunOptions, Runtime, RuntimeConfig, Script, Workflow};

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
}

#[derive(Args)]
pub struct InspectArgs {
    /// A component (.wasm) or a script (.js).
    workflow: PathBuf,
    /// Script runtime for a script (default for .js: the bundled JavaScript runtime).
    #[arg(long, env = "CORRAL_RUNTIME")]
    runtime: Option<PathBuf>,
}

fn runtime() -> anyhow::Result<Runtime> {
    Ok(Runtime::new(RuntimeConfig::default())?)
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
    let component = embed_script(&runtime_bytes, &script)?;
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| args.script.with_extension("wasm"));
    std::fs::write(&output, &component)
        .with_context(|| format!("cannot write {}", output.display()))?;
    eprintln!(
        "built {} ({} bytes: the script runtime and {}; sha256 {})",
        output.display(),
        component.len(),
        script.name,
        hex(&Sha256::digest(&component))
    );
    Ok(ExitCode::SUCCESS)
}

pub fn inspect(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let runtime = runtime()?;
    let (workflow, script) = load_workflow(&runtime, &args.workflow, args.runtime.as_ref())?;
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
        if let Some(meta) = meta_literal(&script.source) {
            out!("meta:     {meta}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The text of `export const meta = {...}` at the top of a script, as written (the runtime
/// validates it; this only shows it).
fn meta_literal(source: &str) -> Option<String> {
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
                        let text = &source[open..open + offset + 1];
                        return Some(text.split_whitespace().collect::<Vec<_>>().join(" "));
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

#[cfg(test)]
mod tests {
    use super::meta_literal;

    #[test]
    fn meta_literals_are_found_whole() {
        let source =
            "export const meta = {\n  name: 'x}',\n  phases: [{ title: 'A' }],\n}\nreturn 1";
        assert_eq!(
            meta_literal(source).unwrap(),
            "{ name: 'x}', phases: [{ title: 'A' }], }"
        );
        assert_eq!(meta_literal("return 1"), None);
    }
}
