//! Builds the guest components the tests run, once per test process.
//!
//! Every guest crate — the test guests under `tests/guests/` and every Rust workflow crate under
//! `workflows/` — is built with one `cargo build --profile guest --target wasm32-wasip2` the
//! first time a test asks for a guest; later calls (from any test thread) reuse the result.
//!
//! The build uses the workspace's own target directory: cargo releases its build-directory lock
//! before it runs test binaries, so a nested `cargo build` from inside `cargo test` does not
//! deadlock (checked with cargo 1.95). It waits, like any cargo command, while another cargo
//! process holds the lock.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The guest crates under `tests/guests/` (each crate is named like its folder).
pub const TEST_GUESTS: &[&str] = &["probe", "forbidden", "compat-0-1-0"];

/// The target triple guests are built for.
pub const GUEST_TARGET: &str = "wasm32-wasip2";

/// The cargo profile guests are built with (declared in the root `Cargo.toml`).
pub const GUEST_PROFILE: &str = "guest";

/// The workspace root (the parent of the `tests` crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives inside the workspace")
        .to_path_buf()
}

/// The target directory guests are built in: `$CARGO_TARGET_DIR` when set (relative to the
/// workspace root), otherwise `<workspace>/target`.
pub fn guest_target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// The names of every guest crate: [`TEST_GUESTS`] and every crate folder under `workflows/`,
/// sorted. A table of tests can be checked against it so that every guest is used by a test.
pub fn guest_names() -> &'static [String] {
    static NAMES: OnceLock<Vec<String>> = OnceLock::new();
    NAMES.get_or_init(|| {
        let workflows = workspace_root().join("workflows");
        let entries = std::fs::read_dir(&workflows)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", workflows.display()));
        let mut names: Vec<String> = TEST_GUESTS.iter().map(|&n| n.to_owned()).collect();
        for entry in entries {
            let path = entry
                .unwrap_or_else(|e| panic!("cannot list {}: {e}", workflows.display()))
                .path();
            if path.join("Cargo.toml").is_file() {
                let name = path.file_name().expect("a directory entry has a name");
                names.push(name.to_string_lossy().into_owned());
            }
        }
        names.sort();
        names
    })
}

/// Builds every guest (once per process) and returns the directory holding the `.wasm` files.
///
/// # Panics
///
/// When the build fails, with cargo's stderr; every later call panics with the same message
/// instead of building again.
pub fn build_guests() -> &'static Path {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let target_dir = guest_target_dir();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = Command::new(&cargo);
        command
            .current_dir(workspace_root())
            .args([
                "build",
                "--profile",
                GUEST_PROFILE,
                "--target",
                GUEST_TARGET,
            ])
            .arg("--target-dir")
            .arg(&target_dir);
        for name in guest_names() {
            command.args(["-p", name]);
        }
        let output = command
            .output()
            .map_err(|e| format!("cannot run {}: {e}", Path::new(&cargo).display()))?;
        if !output.status.success() {
            return Err(format!(
                "building the guest components failed ({}); is the target installed \
                 (`rustup target add {GUEST_TARGET}`)?\ncommand: {command:?}\n\
                 --- cargo stderr ---\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(target_dir.join(GUEST_TARGET).join(GUEST_PROFILE))
    });
    match built {
        Ok(dir) => dir,
        Err(message) => panic!("{message}"),
    }
}

/// The path of a built guest component, such as `guest_path("probe")` for
/// `target/wasm32-wasip2/guest/probe.wasm`. Builds every guest first, once per process.
///
/// # Panics
///
/// When `name` is not one of [`guest_names`], or the build failed.
pub fn guest_path(name: &str) -> PathBuf {
    assert!(
        guest_names().iter().any(|n| n == name),
        "unknown guest {name:?}; the guests are {:?}",
        guest_names()
    );
    // Cargo names a cdylib after the crate's library name: dashes become underscores.
    let path = build_guests().join(format!("{}.wasm", name.replace('-', "_")));
    assert!(
        path.is_file(),
        "guest {name:?} was built but {} does not exist; is it a `crate-type = [\"cdylib\"]` crate?",
        path.display()
    );
    path
}

/// The componentize-py version the Python workflow is built with (`.ci/run` installs it).
pub const COMPONENTIZE_PY: &str = "0.25.1";

/// The componentize-js version the JavaScript component workflow is built with (pinned in
/// `workflows/js-component/package-lock.json`; `.ci/run` runs `npm ci` there).
pub const COMPONENTIZE_JS: &str = "0.23.0";

/// The Python workflow `workflows/python/app.py`, built into a component by componentize-py, as
/// its README says, once per test process (see [`toolchain_build`]).
///
/// # Panics
///
/// When componentize-py is missing or the build fails, saying how to install it.
pub fn python_workflow() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let source = workspace_root().join("workflows/python");
        toolchain_build("python", &source, &["app.py"], COMPONENTIZE_PY, |work, wit, out| {
            let tool = componentize_py();
            let mut command = Command::new(&tool);
            command
                .current_dir(work)
                .arg("-d")
                .arg(wit)
                .args(["-w", "workflow", "componentize", "app", "-o"])
                .arg(out);
            (command, format!(
                "install it with `python3 -m pip install componentize-py=={COMPONENTIZE_PY}` (.ci/run does)"
            ))
        })
    });
    match built {
        Ok(path) => path.clone(),
        Err(message) => panic!("{message}"),
    }
}

/// The JavaScript workflow `workflows/js-component/workflow.js`, built into a component by
/// componentize-js (StarlingMonkey), as its README says, once per test process (see
/// [`toolchain_build`]). The tool is the one `npm ci` installed beside it.
///
/// # Panics
///
/// When componentize-js is not installed or the build fails, saying how to install it.
pub fn js_component_workflow() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let source = workspace_root().join("workflows/js-component");
        let tool = source.join("node_modules/.bin/componentize-js");
        let install = format!(
            "componentize-js {COMPONENTIZE_JS} is installed by `npm ci` in {} (.ci/run does)",
            source.display()
        );
        let inputs = ["workflow.js", "package.json", "package-lock.json"];
        toolchain_build(
            "js-component",
            &source,
            &inputs,
            COMPONENTIZE_JS,
            |work, wit, out| {
                let mut command = Command::new(&tool);
                command
                    .current_dir(work)
                    .arg("--wit")
                    .arg(wit)
                    .args(["--world-name", "workflow", "-o"])
                    .arg(out)
                    .arg("workflow.js");
                (command, install)
            },
        )
    });
    match built {
        Ok(path) => path.clone(),
        Err(message) => panic!("{message}"),
    }
}

/// Builds a workflow with another language's toolchain. The build is kept under the target
/// directory, named by a hash of the inputs, the WIT files and the tool's version, so that an
/// unchanged workflow is not built again by the next test run (these toolchains' output is not
/// byte-reproducible, so a rebuild would also miss the compiled-component cache). It builds from
/// a copy of `inputs` so that nothing the tool leaves behind (`__pycache__`) lands in the source
/// tree. `command` gets the copy's directory, the WIT directory and the output path, and returns
/// the command to run and what to tell a user who does not have the tool.
fn toolchain_build(
    name: &str,
    source: &Path,
    inputs: &[&str],
    tool_version: &str,
    command: impl FnOnce(&Path, &Path, &Path) -> (Command, String),
) -> Result<PathBuf, String> {
    use sha2::{Digest, Sha256};
    let wit = workspace_root().join("wit");
    let mut hasher = Sha256::new();
    hasher.update(tool_version);
    let mut files: Vec<PathBuf> = inputs.iter().map(|input| source.join(input)).collect();
    let mut wits: Vec<PathBuf> = std::fs::read_dir(&wit)
        .map_err(|e| format!("cannot list {}: {e}", wit.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "wit"))
        .collect();
    wits.sort();
    files.extend(wits);
    for file in &files {
        let bytes =
            std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        hasher.update(&bytes);
    }
    let digest: String = hasher.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = guest_target_dir().join(name);
    let out = dir.join(format!("{name}-workflow-{digest}.wasm"));
    if out.is_file() {
        return Ok(out);
    }
    // Named by process as well: two test processes may build the same inputs at once.
    let process = std::process::id();
    let work = dir.join(format!("src-{digest}-{process}"));
    std::fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
    for input in inputs {
        std::fs::copy(source.join(input), work.join(input))
            .map_err(|e| format!("cannot copy {input} to {}: {e}", work.display()))?;
    }
    let partial = dir.join(format!("{name}-workflow-{digest}.wasm.{process}.partial"));
    let (mut command, install) = command(&work, &wit, &partial);
    let program = command.get_program().to_owned();
    let output = command
        .output()
        .map_err(|e| format!("cannot run {}: {e}; {install}", program.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} failed ({}):\n{}{}",
            program.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    std::fs::rename(&partial, &out).map_err(|e| format!("cannot keep the build: {e}"))?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(out)
}

/// `componentize-py` where pip installs scripts for `python3`, else on the `PATH`.
fn componentize_py() -> PathBuf {
    let scripts = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    match scripts.map(|dir| dir.join("componentize-py")) {
        Some(path) if path.is_file() => path,
        _ => PathBuf::from("componentize-py"),
    }
}
