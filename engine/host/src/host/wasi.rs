//! The WASI subset a workflow may import: what guest language runtimes need and is harmless.
//!
//! Linked: cli (environment — empty —, exit, stdio captured into the run log, terminal queries),
//! clocks, random, io, filesystem types/preopens with no preopened directory (so a guest's libc
//! starts but no file exists), and sockets with every use denied: the standard toolchains
//! (componentize-py's CPython, wasi-libc) import `wasi:sockets` whether or not the workflow uses
//! the network, so it is linked, and every operation fails inside the guest with
//! `access-denied` (creating a TCP or UDP socket) or `permanent-resolver-failure` (a name
//! lookup) before any host socket exists. `wasi:http` (which componentize-js links) likewise:
//! building a request works, sending it answers `http-request-denied`, and no client exists in
//! the host to send it with. Not linked: anything else; a component that imports it is refused
//! at load time (see [`check_imports`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use wasmtime::component::Linker;
use wasmtime_wasi::cli::StdoutStream;
use wasmtime_wasi::p2::bindings::{cli, clocks, filesystem, random};
use wasmtime_wasi::{Deterministic, HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder};

use super::RunState;

/// WASI interfaces (without version) a component may import.
pub(crate) const ALLOWED_WASI: &[&str] = &[
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/wall-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    // Linked deny-all (see the module documentation).
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
    "wasi:sockets/ip-name-lookup",
    "wasi:http/types",
    "wasi:http/outgoing-handler",
];

/// The wasi:http context of a run.
pub(crate) fn http_ctx() -> wasmtime_wasi_http::WasiHttpCtx {
    let mut ctx = wasmtime_wasi_http::WasiHttpCtx::new();
    ctx.set_field_size_limit(crate::limits::MAX_HTTP_FIELD_BYTES);
    ctx
}

/// Denies every outgoing HTTP request.
pub(crate) struct DenyHttp;

/// What the error of an outgoing request's body or response settles to.
type Settled = Box<dyn std::future::Future<Output = wasmtime_wasi_http::Result<()>> + Send>;

/// The response `send_request` answers: here, always the denial.
type Answer = Box<
    dyn std::future::Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<wasmtime_wasi_http::WasiBody>,
                Settled,
            )>,
        > + Send,
>;

impl wasmtime_wasi_http::WasiHttpHooks for DenyHttp {
    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _settled: Settled,
    ) -> Answer {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

/// The version of `corral:workflow` this host provides (`wit/workflow.wit`). Versions within
/// 0.1 only add functions, so a component built against any earlier `0.1.x` runs, and one built
/// against a later `0.1.x` runs when it imports only functions this host has (wasmtime links
/// `@0.1.0` imports to the `@0.1.1` instances: semver-compatible names).
pub(crate) const CORRAL_WORKFLOW_VERSION: &str = "0.1.1";

/// Corral interfaces (without version) a component may import.
pub(crate) const ALLOWED_CORRAL: &[&str] = &[
    "corral:workflow/types",
    "corral:workflow/agents",
    "corral:workflow/tools",
    "corral:workflow/progress",
    "corral:workflow/budget",
];

/// Where every run's virtual wall clock starts: 2025-01-01T00:00:00Z.
pub(crate) const VIRTUAL_EPOCH: Duration = Duration::from_secs(1_735_689_600);

/// The WASI context of one run: stdio captured, an empty environment, and clocks and random
/// numbers that are virtual and seeded from `seed`, so that replaying a run (same workflow, same
/// arguments) shows the guest the same times and the same random bytes.
pub(crate) fn run_ctx(
    seed: u64,
    stdout: impl StdoutStream + 'static,
    stderr: impl StdoutStream + 'static,
) -> WasiCtx {
    let mut builder = WasiCtxBuilder::new();
    builder
        .stdout(stdout)
        .stderr(stderr)
        .wall_clock(VirtualClock::default())
        .monotonic_clock(VirtualClock::default())
        .secure_random(Deterministic::new(random_bytes(seed, 4096)))
        .insecure_random(Deterministic::new(random_bytes(seed ^ 0x5bd1_e995, 4096)))
        .insecure_random_seed(u128::from(seed) << 64 | u128::from(seed.rotate_left(17)))
        // No network, whatever the guest asks: these are wasmtime's defaults too, said here so
        // that a change of defaults cannot open it.
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .socket_addr_check(|_, _| Box::pin(async { false }));
    builder.build()
}

/// A clock that advances one microsecond per reading, from [`VIRTUAL_EPOCH`] (wall) or zero
/// (monotonic): time moves forward, deterministically.
#[derive(Default)]
struct VirtualClock {
    readings: AtomicU64,
}

impl VirtualClock {
    fn tick(&self) -> u64 {
        self.readings.fetch_add(1, Ordering::Relaxed) + 1
    }
}

impl HostWallClock for VirtualClock {
    fn resolution(&self) -> Duration {
        Duration::from_micros(1)
    }

    fn now(&self) -> Duration {
        VIRTUAL_EPOCH + Duration::from_micros(self.tick())
    }
}

impl HostMonotonicClock for VirtualClock {
    fn resolution(&self) -> u64 {
        1_000
    }

    fn now(&self) -> u64 {
        self.tick() * 1_000
    }
}

/// `count` bytes of SplitMix64 output from `seed`.
fn random_bytes(seed: u64, count: usize) -> Vec<u8> {
    let mut state = seed;
    let mut bytes = Vec::with_capacity(count + 8);
    while bytes.len() < count {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        bytes.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    bytes.truncate(count);
    bytes
}

/// Why one import is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// An interface Corral does not provide at all.
    Unknown,
    /// `corral:workflow` at a version this host does not run (`wanted`, e.g. `0.2.0`).
    Version { wanted: String },
}

impl Refusal {
    /// Why `import` may not be imported (`None`: it may).
    pub(crate) fn of(import: &str) -> Option<Self> {
        let (unversioned, version) = import.split_once('@').unwrap_or((import, ""));
        if unversioned.starts_with("corral:workflow/") && !same_minor(version) {
            return Some(Self::Version {
                wanted: version.to_string(),
            });
        }
        if !ALLOWED_WASI.contains(&unversioned) && !ALLOWED_CORRAL.contains(&unversioned) {
            return Some(Self::Unknown);
        }
        None
    }

    /// A few words, for a list of imports.
    pub(crate) fn short(&self) -> String {
        match self {
            Self::Unknown => "Corral does not provide it".to_string(),
            Self::Version { .. } => {
                format!("this Corral provides corral:workflow@{CORRAL_WORKFLOW_VERSION}")
            }
        }
    }

    /// The whole message: what is wrong with `import`, and what to do.
    pub(crate) fn message(&self, import: &str) -> String {
        match self {
            Self::Version { wanted } => format!(
                "the component imports `{import}`, but this Corral provides corral:workflow@{CORRAL_WORKFLOW_VERSION}: the component was built against another version of Corral's WIT. Rebuild it against this Corral's `wit/` (any 0.1.x runs here), or run it with a Corral that provides {wanted}"
            ),
            Self::Unknown => format!(
                "the component imports `{import}`, which Corral does not provide: a workflow may import only corral:workflow/{{agents,tools,progress,budget}} and the WASI subset (cli, clocks, random, io; filesystem without any directory; sockets and HTTP, every use denied). Remove that import (no processes) and rebuild"
            ),
        }
    }
}

/// Refuses a component whose imports leave the allowed set, naming the first offending import.
pub(crate) fn check_imports<'a>(imports: impl IntoIterator<Item = &'a str>) -> Result<(), String> {
    for name in imports {
        if let Some(refusal) = Refusal::of(name) {
            return Err(refusal.message(name));
        }
    }
    Ok(())
}

/// Whether `version` (of a `corral:workflow` import) is a 0.1.x this host runs; 0.x versions
/// are compatible within a minor version only, as in Cargo.
fn same_minor(version: &str) -> bool {
    let minor = CORRAL_WORKFLOW_VERSION
        .rsplit_once('.')
        .map_or(CORRAL_WORKFLOW_VERSION, |(minor, _)| minor);
    version
        .strip_prefix(minor)
        .and_then(|rest| rest.strip_prefix('.'))
        .is_some_and(|patch| patch.starts_with(|c: char| c.is_ascii_digit()))
}

pub(crate) fn add_to_linker(linker: &mut Linker<RunState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::cli::WasiCli;
    use wasmtime_wasi::clocks::WasiClocks;
    use wasmtime_wasi::filesystem::WasiFilesystem;
    use wasmtime_wasi::random::WasiRandom;

    wasmtime_wasi_io::add_to_linker_async(linker)?;
    let l = linker;
    clocks::wall_clock::add_to_linker::<RunState, WasiClocks>(
        l,
        <RunState as wasmtime_wasi::clocks::WasiClocksView>::clocks,
    )?;
    clocks::monotonic_clock::add_to_linker::<RunState, WasiClocks>(
        l,
        <RunState as wasmtime_wasi::clocks::WasiClocksView>::clocks,
    )?;
    random::random::add_to_linker::<RunState, WasiRandom>(l, |t| t.wasi.random())?;
    random::insecure::add_to_linker::<RunState, WasiRandom>(l, |t| t.wasi.random())?;
    random::insecure_seed::add_to_linker::<RunState, WasiRandom>(l, |t| t.wasi.random())?;
    cli::exit::add_to_linker::<RunState, WasiCli>(
        l,
        <RunState as wasmtime_wasi::cli::WasiCliView>::cli,
    )?;
    cli::environment::add_to_linker::<RunState, WasiCli>(
        l,
        <RunState as wasmtime_wasi::cli::WasiCliView>::cli,
    )?;
    cli::stdin::add_to_linker::<RunState, WasiCli>(
        l,
        <RunState as wasmtime_wasi::cli::WasiCliView>::cli,
    )?;
    cli::stdout::add_to_linker::<RunState, WasiCli>(
        l,
        <RunState as wasmtime_wasi::cli::WasiCliView>::cli,
    )?;
    cli::stderr::add_to_linker::<RunState, WasiCli>(
        l,
        <RunState as wasmtime_wasi::cli::WasiCliView>::cli,
    )?;
    cli::terminal_input::add_to_linker::<RunState, WasiCli>(
        l,
        <RunState as wasmtime_wasi::cli::WasiCliView>::cli,
    )?;
    cli::terminal_output::add_to_linker::<RunState, WasiCli>(
        l,
        <RunState as wasmtime_wasi::cli::WasiCliView>::cli,
    )?;
    cli::terminal_stdin::add_to_linker::<RunState, WasiCli>(
        l,
        <RunState as wasmtime_wasi::cli::WasiCliView>::cli,
    )?;
    cli::terminal_stdout::add_to_linker::<RunState, WasiCli>(
        l,
        <RunState as wasmtime_wasi::cli::WasiCliView>::cli,
    )?;
    cli::terminal_stderr::add_to_linker::<RunState, WasiCli>(
        l,
        <RunState as wasmtime_wasi::cli::WasiCliView>::cli,
    )?;
    filesystem::types::add_to_linker::<RunState, WasiFilesystem>(
        l,
        <RunState as wasmtime_wasi::filesystem::WasiFilesystemView>::filesystem,
    )?;
    filesystem::preopens::add_to_linker::<RunState, WasiFilesystem>(
        l,
        <RunState as wasmtime_wasi::filesystem::WasiFilesystemView>::filesystem,
    )?;
    // HTTP, every request denied by `DenyHttp`.
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(l)?;
    // Sockets, every use denied by `run_ctx`.
    {
        use wasmtime_wasi::p2::bindings::sockets;
        use wasmtime_wasi::sockets::{WasiSockets, WasiSocketsView};
        let view = <RunState as WasiSocketsView>::sockets;
        sockets::tcp::add_to_linker::<RunState, WasiSockets>(l, view)?;
        sockets::tcp_create_socket::add_to_linker::<RunState, WasiSockets>(l, view)?;
        sockets::udp::add_to_linker::<RunState, WasiSockets>(l, view)?;
        sockets::udp_create_socket::add_to_linker::<RunState, WasiSockets>(l, view)?;
        sockets::instance_network::add_to_linker::<RunState, WasiSockets>(l, view)?;
        sockets::ip_name_lookup::add_to_linker::<RunState, WasiSockets>(l, view)?;
        sockets::network::add_to_linker::<RunState, WasiSockets>(
            l,
            &sockets::network::LinkOptions::default(),
            view,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_imports;

    #[test]
    fn allowed_imports_pass_with_any_version() {
        check_imports([
            "wasi:cli/stdout@0.2.6",
            "corral:workflow/agents@0.1.0",
            "wasi:filesystem/preopens@0.2.0",
        ])
        .unwrap();
    }

    #[test]
    fn virtual_clocks_move_forward_from_the_virtual_epoch() {
        let clock = super::VirtualClock::default();
        let first = wasmtime_wasi::HostWallClock::now(&clock);
        let second = wasmtime_wasi::HostWallClock::now(&clock);
        assert!(first > super::VIRTUAL_EPOCH && second > first);
    }

    #[test]
    fn random_bytes_depend_only_on_the_seed() {
        assert_eq!(super::random_bytes(7, 64), super::random_bytes(7, 64));
        assert_ne!(super::random_bytes(7, 64), super::random_bytes(8, 64));
    }

    #[test]
    fn forbidden_imports_are_named() {
        let error =
            check_imports(["wasi:cli/stdout@0.2.6", "wasi:keyvalue/store@0.2.0"]).unwrap_err();
        assert!(error.contains("`wasi:keyvalue/store@0.2.0`"), "{error}");
        assert!(check_imports(["wasi:http/outgoing-handler@0.2.10"]).is_ok());
        assert!(check_imports(["wasi:sockets/tcp@0.2.9", "wasi:sockets/network@0.2.9"]).is_ok());
        // An interface of Corral's package that this version does not have.
        let error = check_imports(["corral:workflow/shell@0.1.0"]).unwrap_err();
        assert!(error.contains("does not provide"), "{error}");
    }

    #[test]
    fn another_version_of_corrals_wit_is_named_with_ours() {
        for version in ["0.1.0", "0.1.1", "0.1.3"] {
            check_imports([format!("corral:workflow/progress@{version}").as_str()]).unwrap();
        }
        for version in ["0.2.0", "1.0.0", "0.10.0", ""] {
            let import = if version.is_empty() {
                "corral:workflow/progress".to_string()
            } else {
                format!("corral:workflow/progress@{version}")
            };
            let error = check_imports([import.as_str()]).unwrap_err();
            assert!(error.contains(&format!("`{import}`")), "{error}");
            assert!(
                error.contains("this Corral provides corral:workflow@0.1.1"),
                "{error}"
            );
        }
    }

    #[test]
    fn refusals_say_why_in_a_few_words() {
        use super::Refusal;
        assert_eq!(Refusal::of("wasi:cli/stdout@0.2.6"), None);
        let unknown = Refusal::of("wasi:keyvalue/store@0.2.0").unwrap();
        assert_eq!(unknown.short(), "Corral does not provide it");
        let version = Refusal::of("corral:workflow/agents@0.2.0").unwrap();
        assert_eq!(
            version,
            Refusal::Version {
                wanted: "0.2.0".into()
            }
        );
        assert_eq!(
            version.short(),
            "this Corral provides corral:workflow@0.1.1"
        );
        assert!(
            version
                .message("corral:workflow/agents@0.2.0")
                .ends_with("or run it with a Corral that provides 0.2.0")
        );
    }

    #[test]
    fn the_provided_version_is_the_one_in_wit() {
        let wit = include_str!("../../../../wit/workflow.wit");
        let package = wit
            .lines()
            .find_map(|line| line.trim().strip_prefix("package corral:workflow@"))
            .expect("wit/workflow.wit declares package corral:workflow@…");
        assert_eq!(
            package.trim_end_matches(';'),
            super::CORRAL_WORKFLOW_VERSION
        );
    }
}
