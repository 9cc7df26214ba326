//! Which script a `workflow()` call runs (SCRIPT-API rules 12 and 16), read from the run's root
//! through the host's tools (the runtime has no filesystem) and checked like any script.
//!
//! - `workflow({ scriptPath })`, and a string with a `/`, name a path relative to the root.
//! - Any other string is a name. It is looked for, in this order, as the file `<name>.js` (or
//!   `<name>` when it already ends in `.js`) in each of [`WORKFLOW_DIRS`]; then as the
//!   `meta.name` of a script directly in one of them (in that order, each directory's files
//!   sorted, the first match wins); then, for a name that ends in `.js`, as a file at the root.

use super::*;

/// The directories of the root where saved workflows are looked up by name, first to last.
pub(super) const WORKFLOW_DIRS: [&str; 3] = [".corral/workflows", ".claude/workflows", "workflows"];

/// What a `workflow()` call asked for.
pub(super) enum Target {
    /// `workflow(name)`.
    Name(String),
    /// `workflow('dir/file.js')` (`object: false`) or `workflow({ scriptPath })`.
    Path { path: String, object: bool },
}

impl Target {
    /// The call as messages show it.
    pub(super) fn call(&self) -> String {
        match self {
            Target::Name(name)
            | Target::Path {
                path: name,
                object: false,
            } => {
                format!("workflow({name:?})")
            }
            Target::Path { path, object: true } => format!("workflow({{ scriptPath: {path:?} }})"),
        }
    }
}

/// A script found and checked, ready to start.
pub(super) struct Found {
    /// Its path in the root.
    pub(super) path: String,
    pub(super) source: String,
    pub(super) prepared: Prepared,
}

/// Finds the script `target` names and checks it; throws a `ToolError` (the root refused a
/// read) or a `WorkflowError` (`not-found`, `invalid-script`) otherwise.
pub(super) fn resolve(ctx: &Ctx<'_>, host: &dyn Host, target: &Target) -> rquickjs::Result<Found> {
    let what = target.call();
    let name = match target {
        Target::Path { path, .. } => {
            let source = host.read(path).map_err(|e| tool_error(ctx, &what, e))?;
            return checked(ctx, &what, path.clone(), source);
        }
        Target::Name(name) => name,
    };
    let has_extension = [".js", ".mjs", ".cjs"]
        .iter()
        .any(|ext| name.ends_with(ext));
    let file = if has_extension {
        name.clone()
    } else {
        format!("{name}.js")
    };
    // By file name.
    for dir in WORKFLOW_DIRS {
        let path = format!("{dir}/{file}");
        if let Some(source) = read_if_present(ctx, host, &what, &path)? {
            return checked(ctx, &what, path, source);
        }
    }
    // By `meta.name`: scripts that cannot be read or do not pass the checks are not it.
    for dir in WORKFLOW_DIRS {
        let scripts = match host.glob(&format!("{dir}/*.js")) {
            Ok(paths) => paths,
            Err(ToolError::NotFound(_)) => continue,
            Err(e) => return Err(tool_error(ctx, &what, e)),
        };
        for path in scripts {
            let Ok(source) = host.read(&path) else {
                continue;
            };
            let Ok(prepared) = frontend::prepare(&source) else {
                continue;
            };
            let meta_name = prepared.meta.as_ref().and_then(|meta| meta.get("name"));
            if meta_name.and_then(serde_json::Value::as_str) == Some(name.as_str()) {
                return Ok(Found {
                    path,
                    source,
                    prepared,
                });
            }
        }
    }
    // A file at the root, as `workflow('x.js')` has always found it.
    if has_extension && let Some(source) = read_if_present(ctx, host, &what, name)? {
        return checked(ctx, &what, name.clone(), source);
    }
    let mut looked: Vec<String> = WORKFLOW_DIRS
        .iter()
        .map(|dir| format!("{dir}/{file}"))
        .collect();
    looked.push(format!(
        "a script whose meta.name is {name:?} in {}",
        WORKFLOW_DIRS.map(|dir| format!("{dir}/")).join(", ")
    ));
    if has_extension {
        looked.push(name.clone());
    }
    Err(throw_host_error(
        ctx,
        "WorkflowError",
        "not-found",
        &format!(
            "{what}: no such workflow in the run's root (looked for {}); save it in one of those \
             directories, or pass {{ scriptPath: 'path/from/the/root.js' }}",
            looked.join(", ")
        ),
    ))
}

/// The text of `path`, or `None` when the root has no such file; any other refusal throws.
fn read_if_present(
    ctx: &Ctx<'_>,
    host: &dyn Host,
    what: &str,
    path: &str,
) -> rquickjs::Result<Option<String>> {
    match host.read(path) {
        Ok(source) => Ok(Some(source)),
        Err(ToolError::NotFound(_)) => Ok(None),
        Err(e) => Err(tool_error(ctx, what, e)),
    }
}

/// Runs the front-end checks on a script `workflow()` found.
fn checked(ctx: &Ctx<'_>, what: &str, path: String, source: String) -> rquickjs::Result<Found> {
    let prepared = frontend::prepare(&source).map_err(|errors| {
        throw_host_error(
            ctx,
            "WorkflowError",
            "invalid-script",
            &format!(
                "{what}: the workflow cannot run; fix it and try again:\n{}",
                check_errors(&path, &errors)
            ),
        )
    })?;
    Ok(Found {
        path,
        source,
        prepared,
    })
}
