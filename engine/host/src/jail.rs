//! The jail `tools.run` runs one host command in: bubblewrap (`bwrap`) over a read-only view.
//!
//! Inside the jail the command sees:
//! - `/work`: the view, read-only, and the working directory;
//! - `/usr`, and `/bin`, `/sbin`, `/lib`, `/lib64`, `/lib32` where the host has them (as
//!   symlinks on merged-/usr hosts), read-only;
//! - `/etc` with only the dynamic linker's files and Debian's alternatives from the host, plus a
//!   generated `passwd`, `group` and `hosts` naming the jail's user and `localhost`: nothing
//!   secret;
//! - `/tmp`, the only writable place: a tmpfs of `--max-command-scratch` bytes, also `HOME` and
//!   `TMPDIR`;
//! - its own `/proc` (a new pid namespace) and a minimal read-only `/dev`.
//!
//! Everything else, the jail's root included, is read-only. Every namespace is new: no network
//! but a loopback of its own, no other process visible, no further user namespaces, a hostname
//! of its own. The environment is cleared but for `PATH`, `HOME`, `TMPDIR`, `LANG` (and `PWD`),
//! and no descriptor of the engine but stdout and stderr reaches the command.
//!
//! Time, output and the jail's total memory are watched here: past any of them the whole jail is
//! killed and the call fails with [`JailError::Limit`]. Processes, scratch bytes and each
//! process's address space are enforced by the kernel (rlimits and the tmpfs size): the command
//! sees `EAGAIN`, `ENOSPC`, `EFBIG` or `ENOMEM` and fails on its own.
//!
//! Memory has two fences, both at `--max-command-memory`. `RLIMIT_AS` is per process: one huge
//! allocation fails at once, but many processes could each fill nearly the limit. So the resident
//! memory of the whole jail (every process in bwrap's process tree, bwrap included, summed from
//! `/proc/PID/statm`) is sampled every 20 ms (`MEMORY_SAMPLE_EVERY`), and past the limit the
//! jail is killed. It is a sample: a burst between two samples overshoots by what the jail's
//! processes can touch in one interval plus the moment the kill takes (measured: up to 40 MiB on
//! a 2-core VM touching 1.5 GiB/s; proportionally more where memory is faster). Pages shared
//! between its processes (their libraries, say) count once per process, so otherwise the bound
//! errs on the safe side. Memory the jail holds without mapping it is not counted: the files of
//! its scratch `/tmp` (bounded by `--max-command-scratch`), memfds kept unmapped (each bounded by
//! `RLIMIT_FSIZE`, as many as its descriptors) and System V segments kept detached (bounded by
//! the jail's own IPC namespace's defaults only). All of it is freed with the jail.
//!
//! Why a uid of its own when the engine is root: the kernel never applies `RLIMIT_NPROC` to root,
//! and a jail built by root keeps root's authority over the host's files. So when root, the child
//! becomes an unused uid (one per jail, from `0x40000000` up, spread by process id) in group
//! `nogroup` before it executes bwrap, which then builds the jail in a user namespace as it does
//! for any unprivileged user; `RLIMIT_NPROC` then counts that jail's tasks alone. When the engine
//! is not root the jail runs as the engine's user, and `RLIMIT_NPROC` counts every task of that
//! user on the host: the limit set is the user's current count plus the command's allowance, so
//! jails running at once share the headroom, and when other tasks of the user exit later their
//! share becomes headroom a jail may take. The total memory bound holds however many processes
//! there are.
//!
//! Nothing of the jail outlives [`run`]: its processes live in a pid namespace whose init dies
//! with bwrap (`--die-with-parent`), taking them all along, and bwrap's process group is killed on
//! every path out of `run` but the command's own end, dropping the future included.

use std::ffi::OsString;
use std::io::{self, Write as _};
use std::os::fd::{AsRawFd as _, RawFd};
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};

use crate::limits::{format_duration, format_size};

/// `PATH` inside the jail: where a command name is looked up.
const JAIL_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// `nogroup`: the group a root engine's jails run in (each jail as a uid of its own).
const NOGROUP: u32 = 65534;
/// Tasks bubblewrap adds of its own: `bwrap` itself and the init of the pid namespace.
const BWRAP_TASKS: u64 = 2;
/// Top-level directories bound (or, when symlinks, recreated) where the host has them.
const HOST_DIRS: [&str; 5] = ["/bin", "/sbin", "/lib", "/lib64", "/lib32"];
/// The host's `/etc` entries the jail sees: what dynamic linking and `/usr/bin/*` links need.
const HOST_ETC: [&str; 4] = [
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
];
/// How long a killed jail's processes may take to go (they hold its pipes until they are gone).
const DRAIN_TIME: Duration = Duration::from_secs(5);
/// How often the jail's total resident memory is sampled.
const MEMORY_SAMPLE_EVERY: Duration = Duration::from_millis(20);
/// Processes a memory sample looks at, at most: a bound on one walk of `/proc` should pids be
/// reused under it (a jail has `--max-command-processes`, plus what other tasks leave free).
const MAX_SAMPLED: usize = 1 << 14;

/// Limits of one jailed command; each has a CLI flag of the same name (kebab-case with --).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommandLimits {
    /// `--max-command-time`: wall-clock limit of one command (a call's `timeoutMs` may only lower
    /// it).
    #[serde(rename = "max_command_time_ms", with = "crate::limits::millis")]
    pub max_command_time: Duration,
    /// `--max-command-memory`: memory of the jail, bytes. Each process's address space is capped
    /// at it (`RLIMIT_AS`), so one huge allocation fails at once; and the resident memory of all
    /// the jail's processes together is sampled every 20 ms: past it the jail is killed. A burst
    /// between two samples can overshoot by what the jail can touch in one interval (the module
    /// doc has measurements, and what is not counted).
    pub max_command_memory: u64,
    /// `--max-command-processes`: processes and threads the command may add, itself included
    /// (`RLIMIT_NPROC`, counted for the jail's uid when it starts; tasks of the uid exiting later
    /// leave this jail more).
    pub max_command_processes: u64,
    /// `--max-command-output`: bytes of stdout and stderr together; past it the command is killed.
    pub max_command_output: usize,
    /// `--max-command-scratch`: bytes of the writable scratch `/tmp` (the tmpfs size, and
    /// `RLIMIT_FSIZE`).
    pub max_command_scratch: u64,
}

impl Default for CommandLimits {
    fn default() -> Self {
        Self {
            max_command_time: Duration::from_secs(60),
            max_command_memory: 4 << 30,
            max_command_processes: 64,
            max_command_output: 1 << 20,
            max_command_scratch: 64 << 20,
        }
    }
}

/// One command to run in the jail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRequest {
    /// A command name, looked up on the jail's `PATH`; never a path.
    pub program: String,
    /// Its arguments, passed as they are (no shell).
    pub args: Vec<String>,
    /// The call's `timeoutMs`: lowers `--max-command-time`, never raises it.
    pub timeout: Option<Duration>,
}

/// What a command that ran to its end left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    /// Exit status; 128 + the signal number when killed by a signal.
    pub code: i32,
    /// Standard output (lossy UTF-8).
    pub stdout: String,
    /// Standard error (lossy UTF-8).
    pub stderr: String,
}

/// Why a command did not run to its end. The message names the problem and the fix.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum JailError {
    /// bubblewrap is missing or cannot build the jail on this host.
    #[error("{0}")]
    Unavailable(String),
    /// The program is not installed inside the jail.
    #[error("{0}")]
    NotFound(String),
    /// The command hit the time, output or total memory limit, or the run ended: the whole jail
    /// was killed.
    #[error("{0}")]
    Limit(String),
    /// The request is malformed: an empty program, a path, a NUL byte.
    #[error("{0}")]
    InvalidInput(String),
    /// An I/O error the caller cannot fix by changing the request.
    #[error("{0}")]
    Io(String),
}

/// Runs `request` in a jail over `view` (mounted read-only at `/work`, the working directory).
///
/// When the engine runs as root the jail runs as uid 65534, so the caller must make the view
/// readable by it: directories `0755` and files `0644`, under directories it can traverse.
/// `stop` resolving (the run ended) kills the jail and fails with [`JailError::Limit`].
pub async fn run(
    view: &Path,
    request: &CommandRequest,
    limits: &CommandLimits,
    stop: impl Future<Output = ()>,
) -> Result<CommandOutput, JailError> {
    check(request)?;
    let program = &request.program;
    let (time, over_time) = deadline(request, limits);
    let finished = Jail::spawn(view, request, limits)?
        .finish(limits, time, stop)
        .await;
    let (status, out, err) = finished.map_err(|stop| stop.error(program, &over_time, limits))?;
    let code = (status.code())
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(-1);
    let stderr = String::from_utf8_lossy(&err).into_owned();
    // bwrap reports its own failures (exit 1, before the command ran) on stderr, prefixed. A
    // command printing the same only misleads itself.
    if code == 1
        && out.is_empty()
        && let Some(message) = stderr.strip_prefix("bwrap: ")
    {
        return Err(bwrap_failed(program, message.lines().next().unwrap_or("")));
    }
    let stdout = String::from_utf8_lossy(&out).into_owned();
    Ok(CommandOutput {
        code,
        stdout,
        stderr,
    })
}

/// Refuses requests bwrap would misread or that name no command on `PATH`.
fn check(request: &CommandRequest) -> Result<(), JailError> {
    let program = &request.program;
    if program.contains('\0') || request.args.iter().any(|arg| arg.contains('\0')) {
        return Err(JailError::InvalidInput(format!(
            "command '{}' has a NUL byte in its name or arguments: remove it",
            program.escape_debug()
        )));
    }
    if program.is_empty() || program.contains('/') {
        return Err(JailError::InvalidInput(format!(
            "'{program}' is not a command name: give a command name found on PATH \
             ({JAIL_PATH}), such as `node` or `python3`"
        )));
    }
    if request
        .timeout
        .is_some_and(|timeout| timeout < Duration::from_millis(1))
    {
        return Err(JailError::InvalidInput(
            "timeoutMs must be at least 1: give the milliseconds the command may run, or leave \
             timeoutMs out to allow --max-command-time"
                .into(),
        ));
    }
    Ok(())
}

/// How long the command may run, and what it is told when it runs out.
fn deadline(request: &CommandRequest, limits: &CommandLimits) -> (Duration, String) {
    let program = &request.program;
    let max = format_duration(limits.max_command_time);
    match request.timeout {
        Some(timeout) if timeout < limits.max_command_time => (
            timeout,
            format!(
                "command '{program}' did not finish within the call's timeoutMs ({}) and was \
                 killed: pass a larger timeoutMs, up to --max-command-time ({max})",
                format_duration(timeout)
            ),
        ),
        _ => (
            limits.max_command_time,
            format!(
                "command '{program}' did not finish within --max-command-time ({max}) and was \
                 killed: raise --max-command-time, or run less at once"
            ),
        ),
    }
}

/// A started jail: bwrap, and the pipes of the command inside.
struct Jail {
    child: Child,
    stdout: ChildStdout,
    stderr: ChildStderr,
}

impl Jail {
    fn spawn(
        view: &Path,
        request: &CommandRequest,
        limits: &CommandLimits,
    ) -> Result<Jail, JailError> {
        let view = std::fs::canonicalize(view)
            .ok()
            .filter(|path| path.is_dir())
            .ok_or_else(|| {
                JailError::Io(format!("the view {} is not a directory", view.display()))
            })?;
        #[allow(unsafe_code)] // Reading the process's credentials.
        // SAFETY: these calls only read the process's credentials and cannot fail.
        let (euid, uid, gid) = unsafe { (libc::geteuid(), libc::getuid(), libc::getgid()) };
        let (uid, gid) = if euid == 0 {
            (jail_uid(), NOGROUP)
        } else {
            (uid, gid)
        };
        let etc = generated_etc(uid, gid)
            .map_err(|err| JailError::Io(format!("cannot prepare the jail's /etc: {err}")))?;
        let fds: Vec<(&str, RawFd)> = etc
            .iter()
            .map(|(dest, pipe)| (*dest, pipe.as_raw_fd()))
            .collect();

        let mut command = Command::new("bwrap");
        command
            .args(bwrap_args(&view, limits, &fds))
            .arg("--")
            .arg(&request.program)
            .args(&request.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        // Reading /proc is in-memory, quick enough for the runtime's thread.
        let nproc = tasks_of(uid).saturating_add(BWRAP_TASKS);
        install_pre_exec(
            &mut command,
            ChildSetup {
                drop_to: (euid == 0).then_some((uid, gid)),
                nproc: nproc.saturating_add(limits.max_command_processes),
                memory: limits.max_command_memory,
                file_size: limits.max_command_scratch,
                keep: fds.iter().map(|(_, fd)| *fd).collect(),
            },
        );
        let mut child = command.spawn().map_err(spawn_failed)?;
        drop(etc);
        match (child.stdout.take(), child.stderr.take()) {
            (Some(stdout), Some(stderr)) => Ok(Jail {
                child,
                stdout,
                stderr,
            }),
            _ => Err(JailError::Io("bwrap was started without its pipes".into())),
        }
    }

    /// Waits for the command's end: its exit status, stdout and stderr. On any other outcome
    /// the jail is killed.
    async fn finish(
        mut self,
        limits: &CommandLimits,
        time: Duration,
        stop: impl Future<Output = ()>,
    ) -> Result<(ExitStatus, Vec<u8>, Vec<u8>), Stop> {
        let cap = limits.max_command_output;
        let total = AtomicUsize::new(0);
        // Taken before `wait` below reaps bwrap: until then its pid cannot be reused.
        let bwrap = self.child.id();
        let finished = async {
            let (out, err) = tokio::try_join!(
                read_capped(&mut self.stdout, &total, cap),
                read_capped(&mut self.stderr, &total, cap),
            )?;
            Ok((self.child.wait().await.map_err(Stop::Io)?, out, err))
        };
        let end = tokio::select! {
            finished = finished => finished,
            () = tokio::time::sleep(time) => Err(Stop::Time),
            used = over_memory(bwrap, limits.max_command_memory) => Err(Stop::Memory(used)),
            () = stop => Err(Stop::RunEnded),
        };
        if end.is_err() {
            self.kill().await;
        }
        end
    }

    /// Kills the jail, reaps bwrap, and waits (a bounded time) until its processes are gone.
    async fn kill(&mut self) {
        self.kill_group();
        let _ = self.child.kill().await;
        // The pid namespace's processes die a moment after bwrap; until then they hold its pipes.
        let drained = async { tokio::join!(drain(&mut self.stdout), drain(&mut self.stderr)) };
        let _ = tokio::time::timeout(DRAIN_TIME, drained).await;
    }

    /// SIGKILLs bwrap's process group, unless bwrap is reaped already.
    #[allow(unsafe_code)] // Signalling a process group.
    fn kill_group(&self) {
        let Some(pgid) = self
            .child
            .id()
            .and_then(|id| libc::pid_t::try_from(id).ok())
        else {
            return;
        };
        // SAFETY: a plain syscall; the group is bwrap's own (`process_group(0)`), and bwrap is
        // not reaped yet, so its id cannot have been reused.
        unsafe { libc::killpg(pgid, libc::SIGKILL) };
    }
}

/// Dropped unfinished (the caller's future was dropped), the jail is killed all the same; bwrap
/// is then reaped by tokio.
impl Drop for Jail {
    fn drop(&mut self) {
        self.kill_group();
    }
}

/// The jail's generated `/etc` files, each as a pipe bwrap reads it from (`--ro-bind-data`).
fn generated_etc(uid: u32, gid: u32) -> io::Result<Vec<(&'static str, io::PipeReader)>> {
    let passwd = format!("corral:x:{uid}:{gid}:Corral jail:/tmp:/usr/sbin/nologin\n");
    let files = [
        ("/etc/passwd", passwd),
        ("/etc/group", format!("corral:x:{gid}:\n")),
        ("/etc/hosts", "127.0.0.1 localhost\n::1 localhost\n".into()),
    ];
    let pipe = |(dest, text): (&'static str, String)| {
        let (reader, mut writer) = io::pipe()?;
        // Far below a pipe's buffer, so this never blocks; dropping the writer ends the file.
        writer.write_all(text.as_bytes())?;
        Ok((dest, reader))
    };
    files.into_iter().map(pipe).collect()
}

/// Resolves, with the bytes seen, once the jail rooted at `bwrap` holds more than `limit` bytes
/// resident; it samples every [`MEMORY_SAMPLE_EVERY`].
async fn over_memory(bwrap: Option<u32>, limit: u64) -> u64 {
    let Some(bwrap) = bwrap else {
        return std::future::pending().await;
    };
    let page = page_size();
    let mut every = tokio::time::interval(MEMORY_SAMPLE_EVERY);
    // A late sample is taken once, not caught up on.
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let pids = if children_listed() {
            // At most a few reads per task of the jail: quick enough for the runtime's thread.
            jail_pids(bwrap)
        } else {
            // A read of every process on the host: not on the runtime's thread.
            let scan = tokio::task::spawn_blocking(move || jail_pids_by_scan(bwrap));
            scan.await.unwrap_or_default()
        };
        let used = resident(&pids, page);
        if used > limit {
            return used;
        }
    }
}

/// Bytes of a memory page.
#[allow(unsafe_code)] // Reading a system constant.
fn page_size() -> u64 {
    // SAFETY: `sysconf` only reads a constant of the system.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(page)
        .ok()
        .filter(|&page| page > 0)
        .unwrap_or(4096)
}

/// Whether the kernel lists each task's children (`/proc/PID/task/TID/children`, Linux 4.2 and
/// later with `CONFIG_PROC_CHILDREN`).
fn children_listed() -> bool {
    static LISTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *LISTED.get_or_init(|| Path::new("/proc/thread-self/children").exists())
}

/// The processes of the tree rooted at `root`, `root` first, found through the children lists of
/// each of their tasks (a thread's children are listed under that thread).
///
/// Processes come and go during the walk: one that exits drops out, one started meanwhile may be
/// missed until the next sample. A pid that exits and is reused between being listed and being
/// read would count a stranger (pids are not reused that fast in practice; it errs towards
/// killing).
fn jail_pids(root: u32) -> Vec<u32> {
    let mut pids = vec![root];
    let mut seen = std::collections::HashSet::from([root]);
    let mut next = 0;
    while let Some(&pid) = pids.get(next) {
        next += 1;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Ok(children) = std::fs::read_to_string(task.path().join("children")) else {
                continue;
            };
            let children = children.split_whitespace().filter_map(|c| c.parse().ok());
            pids.extend(children.filter(|&child| seen.insert(child)));
        }
        if pids.len() >= MAX_SAMPLED {
            break;
        }
    }
    pids
}

/// The processes of the tree rooted at `root`, `root` first, from every process's parent
/// (`/proc/*/stat`): for kernels without children lists. It reads all of `/proc`: blocking.
fn jail_pids_by_scan(root: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![root];
    };
    let parent = |entry: std::fs::DirEntry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
        // `pid (comm) state ppid …`, where comm may hold anything, `)` included.
        let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
        Some((ppid.parse::<u32>().ok()?, pid))
    };
    let mut children: Vec<(u32, u32)> = entries.flatten().filter_map(parent).collect();
    children.sort_unstable();
    let mut pids = vec![root];
    let mut next = 0;
    while let Some(&pid) = pids.get(next) {
        next += 1;
        let start = children.partition_point(|&(ppid, _)| ppid < pid);
        let of_pid = children[start..]
            .iter()
            .take_while(|&&(ppid, _)| ppid == pid);
        pids.extend(of_pid.map(|&(_, child)| child));
        if pids.len() >= MAX_SAMPLED {
            break;
        }
    }
    pids
}

/// Resident bytes of `pids` together (`/proc/PID/statm`'s second field, in pages); a process
/// gone meanwhile counts 0.
fn resident(pids: &[u32], page: u64) -> u64 {
    let of = |pid: &u32| {
        let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
        statm.split_whitespace().nth(1)?.parse::<u64>().ok()
    };
    pids.iter().filter_map(of).fold(0, |sum, pages| {
        sum.saturating_add(pages.saturating_mul(page))
    })
}

/// bwrap's arguments up to the command (the module doc describes the layout); `etc` holds the
/// generated files' destinations and descriptors.
fn bwrap_args(view: &Path, limits: &CommandLimits, etc: &[(&str, RawFd)]) -> Vec<OsString> {
    let words = |text: &str| {
        text.split_whitespace()
            .map(OsString::from)
            .collect::<Vec<_>>()
    };
    let mut args = words(&format!(
        "--unshare-all --unshare-user --disable-userns --die-with-parent --new-session \
         --clearenv --setenv PATH {JAIL_PATH} --setenv HOME /tmp --setenv TMPDIR /tmp \
         --setenv LANG C.UTF-8 --hostname corral --ro-bind /usr /usr"
    ));
    for dir in HOST_DIRS {
        match std::fs::read_link(dir) {
            Ok(target) => args.extend(["--symlink".into(), target.into(), dir.into()]),
            Err(_) if Path::new(dir).is_dir() => {
                args.extend(words(&format!("--ro-bind {dir} {dir}")))
            }
            Err(_) => {}
        }
    }
    args.extend(words("--perms 0755 --dir /etc"));
    for entry in HOST_ETC {
        args.extend(words(&format!("--ro-bind-try {entry} {entry}")));
    }
    for (dest, fd) in etc {
        args.extend(words(&format!("--perms 0644 --ro-bind-data {fd} {dest}")));
    }
    // A tmpfs of size 0 would be unbounded.
    let scratch = limits.max_command_scratch.max(4096);
    args.extend(words(&format!(
        "--proc /proc --dev /dev --remount-ro /dev --size {scratch} --tmpfs /tmp"
    )));
    args.extend(["--ro-bind".into(), view.into(), "/work".into()]);
    args.extend(words("--chdir /work --remount-ro /"));
    args
}

/// The first uid a root engine's jails run as (far above any real account's).
const JAIL_UID_BASE: u32 = 0x4000_0000;

/// A uid of its own for one jail of a root engine, so that `RLIMIT_NPROC` counts that jail's
/// tasks alone: jails running at once (in this process, or in another Corral's, whose uids are
/// spread by process id) never share a process allowance. The group stays `nogroup`, which may
/// enter the views.
fn jail_uid() -> u32 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let sequence = (NEXT.fetch_add(1, Ordering::Relaxed) % 4096) as u32;
    let process = std::process::id() % 0x3_0000;
    JAIL_UID_BASE + (process << 12) + sequence
}

/// Tasks (threads) whose real uid is `uid`, as `RLIMIT_NPROC` counts them.
fn tasks_of(uid: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let uid = uid.to_string();
    // Processes that exit meanwhile simply drop out of the count.
    let status =
        |entry: std::fs::DirEntry| std::fs::read_to_string(entry.path().join("status")).ok();
    let tasks = |status: String| {
        let field = |name| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name)?.split_whitespace().next())
        };
        let threads = field("Threads:").and_then(|n| n.parse().ok()).unwrap_or(1);
        (field("Uid:") == Some(uid.as_str())).then_some(threads)
    };
    entries.flatten().filter_map(status).filter_map(tasks).sum()
}

/// What the child does between fork and exec, prepared before the fork: nothing is allocated
/// there.
#[derive(Debug)]
struct ChildSetup {
    /// The uid and gid a root engine's child becomes before bwrap runs.
    drop_to: Option<(u32, u32)>,
    nproc: u64,
    memory: u64,
    file_size: u64,
    /// The generated `/etc` files' pipes, which bwrap must inherit.
    keep: Vec<RawFd>,
}

#[allow(unsafe_code)] // `pre_exec` is unsafe; the hook is `ChildSetup::apply`.
fn install_pre_exec(command: &mut Command, setup: ChildSetup) {
    // SAFETY: the hook runs in the forked child, where only async-signal-safe calls are sound:
    // `apply` makes raw syscalls on values it owns, takes no lock and allocates nothing
    // (`io::Error::last_os_error` only reads errno).
    unsafe { command.pre_exec(move || setup.apply()) };
}

impl ChildSetup {
    #[allow(unsafe_code)] // libc calls between fork and exec.
    fn apply(&self) -> io::Result<()> {
        let check = |ret| {
            (ret != -1)
                .then_some(())
                .ok_or_else(io::Error::last_os_error)
        };
        let both = |value| libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        // SAFETY: plain syscalls whose pointer arguments point at locals or are null (setgroups
        // with a count of 0).
        unsafe {
            if let Some((uid, gid)) = self.drop_to {
                check(libc::setgroups(0, std::ptr::null()))?;
                check(libc::setgid(gid))?;
                check(libc::setuid(uid))?;
            }
            let limits = [
                (libc::RLIMIT_NPROC, self.nproc),
                (libc::RLIMIT_AS, self.memory),
                (libc::RLIMIT_FSIZE, self.file_size),
                (libc::RLIMIT_CORE, 0),
            ];
            for (resource, value) in limits {
                let mut current = both(0);
                check(libc::getrlimit(resource, &mut current))?;
                // The hard limit too, so the command cannot raise it; never above the hard limit
                // in force, which an unprivileged process cannot raise.
                check(libc::setrlimit(
                    resource,
                    &both(value.min(current.rlim_max)),
                ))?;
            }
            // Descriptors the engine inherited without close-on-exec must not reach the jail.
            let (first, last) = (3 as libc::c_uint, libc::c_uint::MAX);
            if libc::syscall(
                libc::SYS_close_range,
                first,
                last,
                libc::CLOSE_RANGE_CLOEXEC,
            ) != 0
            {
                // Kernels before 5.11: mark them one by one.
                let mut open = both(0);
                check(libc::getrlimit(libc::RLIMIT_NOFILE, &mut open))?;
                for fd in 3..open.rlim_cur.min(1 << 16) as RawFd {
                    let flags = libc::fcntl(fd, libc::F_GETFD);
                    if flags >= 0 {
                        check(libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC))?;
                    }
                }
            }
            for &fd in &self.keep {
                check(libc::fcntl(fd, libc::F_SETFD, 0))?;
            }
        }
        Ok(())
    }
}

/// Why the command was stopped before its end.
enum Stop {
    Output,
    Time,
    /// The jail's total resident bytes, as sampled.
    Memory(u64),
    RunEnded,
    Io(io::Error),
}

impl Stop {
    /// What the caller is told; `over_time` is the message for running out of time.
    fn error(self, program: &str, over_time: &str, limits: &CommandLimits) -> JailError {
        match self {
            Stop::Output => JailError::Limit(format!(
                "command '{program}' wrote more than --max-command-output ({}) to stdout and \
                 stderr together and was killed: raise --max-command-output, or make the command \
                 quieter (fewer tests at once, less verbose output)",
                format_size(limits.max_command_output)
            )),
            Stop::Time => JailError::Limit(over_time.to_owned()),
            Stop::Memory(used) => JailError::Limit(format!(
                "command '{program}' and its processes together held more than \
                 --max-command-memory ({}) of memory ({} MiB resident when sampled) and were \
                 killed: raise --max-command-memory, or run less at once (fewer parallel jobs or \
                 workers)",
                format_size(usize::try_from(limits.max_command_memory).unwrap_or(usize::MAX)),
                used >> 20
            )),
            Stop::RunEnded => JailError::Limit(format!(
                "the run ended while command '{program}' was running: it was killed"
            )),
            Stop::Io(err) => JailError::Io(format!(
                "cannot read the output of command '{program}': {err}"
            )),
        }
    }
}

/// Reads `pipe` to its end, failing once all pipes together (`total`) carried more than `cap`.
async fn read_capped(
    pipe: &mut (impl AsyncRead + Unpin),
    total: &AtomicUsize,
    cap: usize,
) -> Result<Vec<u8>, Stop> {
    let mut data = Vec::new();
    let mut buf = [0; 8192];
    loop {
        let n = read_some(pipe, &mut buf).await.map_err(Stop::Io)?;
        if n == 0 {
            return Ok(data);
        }
        if total.fetch_add(n, Ordering::Relaxed).saturating_add(n) > cap {
            return Err(Stop::Output);
        }
        data.extend_from_slice(&buf[..n]);
    }
}

/// One read (without tokio's `io-util`).
async fn read_some(pipe: &mut (impl AsyncRead + Unpin), buf: &mut [u8]) -> io::Result<usize> {
    std::future::poll_fn(|cx| {
        let mut buf = ReadBuf::new(buf);
        ready!(Pin::new(&mut *pipe).poll_read(cx, &mut buf))?;
        Poll::Ready(Ok(buf.filled().len()))
    })
    .await
}

/// Reads and drops what is left in `pipe`, up to its end.
async fn drain(pipe: &mut (impl AsyncRead + Unpin)) {
    let mut buf = [0; 8192];
    while matches!(read_some(pipe, &mut buf).await, Ok(1..)) {}
}

fn spawn_failed(err: io::Error) -> JailError {
    match err.kind() {
        io::ErrorKind::NotFound => JailError::Unavailable(
            "tools.run needs bubblewrap (bwrap) on PATH: install it, e.g. \
             `apt-get install bubblewrap`"
                .into(),
        ),
        _ => JailError::Unavailable(format!("cannot start bubblewrap (bwrap): {err}")),
    }
}

/// Tells a program bwrap could not execute from a jail bwrap could not build.
fn bwrap_failed(program: &str, message: &str) -> JailError {
    if message.starts_with("execvp ") {
        if message.ends_with("No such file or directory") {
            return JailError::NotFound(format!(
                "command '{program}' is not installed on this host (looked up on the jail's \
                 PATH {JAIL_PATH}): install it, or use a command that is"
            ));
        }
        return JailError::Io(format!(
            "command '{program}' cannot be executed: bwrap: {message}"
        ));
    }
    JailError::Unavailable(format!(
        "bubblewrap cannot build the jail on this host: bwrap: {message}. If it cannot create \
         namespaces, unprivileged user namespaces are disabled: enable them (`sysctl \
         kernel.unprivileged_userns_clone=1`, or on Ubuntu 24.04 and later `sysctl \
         kernel.apparmor_restrict_unprivileged_userns=0`)"
    ))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    /// A view readable by uid 65534, as the caller must make it.
    fn view(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mode = |path: &Path, mode| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
            mode(&dir.path().join(name), 0o644);
        }
        mode(dir.path(), 0o755);
        dir
    }

    fn call(program: &str, args: &[&str]) -> CommandRequest {
        let args = args.iter().map(|arg| arg.to_string()).collect();
        let program = program.into();
        CommandRequest {
            program,
            args,
            timeout: None,
        }
    }

    /// Held by each test while its jails run: shared, or alone by the tests that need all of
    /// their `--max-command-processes`, since jails share the uid's `RLIMIT_NPROC` headroom (see
    /// the module doc). Never taken twice by one test: a waiting writer would block the second.
    static JAILS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

    /// Runs `call` over `view`, with the run never ending.
    async fn jailed_in(
        view: &Path,
        call: CommandRequest,
        limits: &CommandLimits,
    ) -> Result<CommandOutput, JailError> {
        let _shared = JAILS.read().await;
        run(view, &call, limits, std::future::pending()).await
    }

    /// Runs `call` over an empty view with no other test's jail running.
    async fn alone(
        call: CommandRequest,
        limits: &CommandLimits,
    ) -> Result<CommandOutput, JailError> {
        let _alone = JAILS.write().await;
        run(view(&[]).path(), &call, limits, std::future::pending()).await
    }

    /// Runs `call` over an empty view, with the run never ending.
    async fn jailed(
        call: CommandRequest,
        limits: &CommandLimits,
    ) -> Result<CommandOutput, JailError> {
        jailed_in(view(&[]).path(), call, limits).await
    }

    async fn sh(script: &str, limits: &CommandLimits) -> Result<CommandOutput, JailError> {
        jailed(call("sh", &["-c", script]), limits).await
    }

    fn limits() -> CommandLimits {
        CommandLimits::default()
    }

    fn assert_limit(result: Result<CommandOutput, JailError>, needle: &str) {
        assert!(
            matches!(&result, Err(JailError::Limit(m)) if m.contains(needle)),
            "{result:?}"
        );
    }

    /// Whether a process with exactly this command line runs anywhere on the host.
    fn running(cmdline: &[u8]) -> bool {
        let entries = std::fs::read_dir("/proc").unwrap().flatten();
        entries.into_iter().any(|entry| {
            std::fs::read(entry.path().join("cmdline")).is_ok_and(|line| line == cmdline)
        })
    }

    #[tokio::test]
    async fn output_and_exit_codes_come_back() {
        let out = jailed(call("echo", &["hello", "jail"]), &limits())
            .await
            .unwrap();
        assert_eq!(
            (out.code, &*out.stdout, &*out.stderr),
            (0, "hello jail\n", "")
        );
        let out = sh("echo out; echo err >&2; exit 7", &limits())
            .await
            .unwrap();
        assert_eq!(
            (out.code, &*out.stdout, &*out.stderr),
            (7, "out\n", "err\n")
        );
        // A command failing with exit 1 and no stdout is not mistaken for bwrap failing.
        assert_eq!(sh("exit 1", &limits()).await.unwrap().code, 1);
        assert_eq!(sh("kill -9 $$", &limits()).await.unwrap().code, 128 + 9);
    }

    #[tokio::test]
    async fn environment_is_cleared() {
        let jail = ["PATH", "HOME", "TMPDIR", "LANG", "PWD"];
        // `set_var` is unsafe with tests running in parallel: take a variable the test has anyway.
        let (name, _) = std::env::vars()
            .find(|(name, _)| !jail.contains(&&**name))
            .unwrap();
        let out = jailed(call("env", &[]), &limits()).await.unwrap();
        let mut seen: Vec<&str> = out.stdout.lines().collect();
        seen.sort_unstable();
        let path = "PATH=/usr/local/bin:/usr/bin:/bin";
        // bwrap's --chdir sets PWD.
        let expected = [
            "HOME=/tmp",
            "LANG=C.UTF-8",
            path,
            "PWD=/work",
            "TMPDIR=/tmp",
        ];
        assert_eq!(
            seen, expected,
            "{name} of the test process reached the jail"
        );
    }

    #[tokio::test]
    async fn fork_bomb_is_contained() {
        let limits = CommandLimits {
            max_command_processes: 16,
            ..limits()
        };
        // The inner shell dies at its first failed fork; the outer one counts with builtins only.
        let bomb =
            r#"i=0; while [ $i -lt 1000 ]; do sleep 300 & i=$((i+1)); echo $i > /tmp/n; done"#;
        let count = r#"sh -c "$1"; read -r n < /tmp/n; echo "$n""#;
        let out = alone(call("sh", &["-c", count, "sh", bomb]), &limits)
            .await
            .unwrap();
        let started: u64 = out.stdout.trim().parse().unwrap_or(0);
        // Slack for other tests' jails, which run as the same uid and share its count.
        assert!(started <= 16 + 32, "{started} sleeps started: {out:?}");
    }

    #[tokio::test]
    async fn time_limits_kill_the_whole_jail() {
        let spin = |marker: &str, timeout| CommandRequest {
            timeout: Some(Duration::from_secs(timeout)),
            ..call(
                "sh",
                &["-c", &format!("sleep {marker} & while :; do :; done")],
            )
        };
        let result = jailed(spin("3217", 1), &limits()).await;
        assert_limit(
            result,
            "timeoutMs (1s) and was killed: pass a larger timeoutMs, up to --max-command-time (1m)",
        );
        assert!(
            !running(b"sleep\x003217\x00"),
            "a process of the jail survived"
        );

        let limits = CommandLimits {
            max_command_time: Duration::from_secs(1),
            ..limits()
        };
        assert_limit(
            jailed(spin("3218", 60), &limits).await,
            "raise --max-command-time",
        );
        assert!(
            !running(b"sleep\x003218\x00"),
            "a process of the jail survived"
        );
    }

    #[tokio::test]
    async fn output_is_capped_over_both_streams() {
        let limits = CommandLimits {
            max_command_output: 64 << 10,
            ..limits()
        };
        let flag = "--max-command-output (64KiB)";
        assert_limit(jailed(call("yes", &[]), &limits).await, flag);
        assert_limit(
            sh(
                "head -c 40000 /dev/zero; head -c 40000 /dev/zero >&2",
                &limits,
            )
            .await,
            flag,
        );
        let out = sh("head -c 60000 /dev/zero", &limits).await.unwrap();
        assert_eq!(out.stdout.len(), 60000);
    }

    #[tokio::test]
    async fn only_the_scratch_is_writable_and_it_is_bounded() {
        let view = view(&[]);
        let limits = CommandLimits {
            max_command_scratch: 1 << 20,
            ..limits()
        };
        let script = r#"
            # On the empty tmpfs one file too large hits RLIMIT_FSIZE first (SIGXFSZ, 128 + 25);
            # files together too large fill the tmpfs (ENOSPC).
            head -c 2097152 /dev/zero > /tmp/big; echo "big: $?"; rm -f /tmp/big
            for f in /work/x /etc/x /x /dev/x /usr/x; do
                if echo x 2>/dev/null >"$f"; then echo "wrote $f"; fi
            done
            echo scratch > /tmp/ok && cat /tmp/ok
            head -c 700000 /dev/zero > /tmp/a && head -c 700000 /dev/zero > /tmp/b || echo "full"
        "#;
        let out = jailed_in(view.path(), call("sh", &["-c", script]), &limits).await;
        let out = out.unwrap();
        assert_eq!(out.stdout, "big: 153\nscratch\nfull\n", "{out:?}");
        assert!(!view.path().join("x").exists());
    }

    #[tokio::test]
    #[allow(unsafe_code)] // Making a descriptor without close-on-exec, as an embedder might.
    async fn no_descriptor_of_the_engine_reaches_the_jail() {
        // SAFETY: duplicating stderr has no memory effects; the copy is closed below.
        let leaky = unsafe { libc::dup(2) };
        assert!(leaky > 2);
        let out = jailed(call("ls", &["/proc/self/fd"]), &limits()).await;
        // SAFETY: `leaky` is ours and closed once.
        unsafe { libc::close(leaky) };
        // 3 is the directory `ls` reads.
        assert_eq!(out.unwrap().stdout, "0\n1\n2\n3\n");
    }

    #[tokio::test]
    async fn there_is_no_network() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let script = format!(
            "require('net').connect({port}, '127.0.0.1')
                .on('connect', () => {{ console.log('connected'); process.exit(0) }})
                .on('error', e => {{ console.log(e.code); process.exit(3) }})"
        );
        let out = jailed(call("node", &["-e", &script]), &limits())
            .await
            .unwrap();
        assert_eq!((out.code, &*out.stdout), (3, "ECONNREFUSED\n"), "{out:?}");
        assert_eq!(
            listener.accept().unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }

    #[tokio::test]
    async fn memory_is_limited_per_process() {
        // One allocation past RLIMIT_AS fails at once, before any of it is resident (so before
        // the total bound could see it).
        let script = "dd if=/dev/zero of=/dev/null bs=100000000 count=1 status=none && echo done";
        let small = CommandLimits {
            max_command_memory: 64 << 20,
            ..limits()
        };
        let out = sh(script, &small).await.unwrap();
        assert!(
            out.code != 0 && out.stderr.contains("memory exhausted"),
            "{out:?}"
        );
        let large = CommandLimits {
            max_command_memory: 1 << 30,
            ..small
        };
        assert_eq!(sh(script, &large).await.unwrap().stdout, "done\n");
    }

    /// A script starting `n` processes (`dd`) that each fill a buffer of `bytes`, every page
    /// written so all of it is resident, then block writing it to one `sleep secs` that never
    /// reads; after the sleep it prints `held`. `n` + 3 processes in all.
    fn holders(n: u32, bytes: u64, secs: u32) -> String {
        format!(
            "{{ i=0; while [ $i -lt {n} ]; do i=$((i+1)); \
             dd if=/dev/zero bs={bytes} count=1 status=none & done; wait; }} | sleep {secs}; \
             echo held"
        )
    }

    fn total_memory_limits() -> CommandLimits {
        CommandLimits {
            max_command_memory: 256 << 20,
            max_command_processes: 16,
            ..limits()
        }
    }

    #[tokio::test]
    async fn memory_is_bounded_in_total_over_all_processes() {
        // Each holder has 68 MiB of address space, under RLIMIT_AS; 8 of them hold 512 MiB.
        let script = holders(8, 64 << 20, 30);
        let started = std::time::Instant::now();
        let result = alone(call("sh", &["-c", &script]), &total_memory_limits()).await;
        let took = started.elapsed();
        assert_limit(result, "more than --max-command-memory (256MiB) of memory");
        assert!(took < Duration::from_secs(10), "killed only after {took:?}");
        let shell = format!("sh\0-c\0{script}\0");
        let dd = "dd\0if=/dev/zero\0bs=67108864\0count=1\0status=none\0";
        for cmdline in [&*shell, dd] {
            assert!(!running(cmdline.as_bytes()), "{cmdline:?} survived");
        }
    }

    #[tokio::test]
    async fn a_jail_under_its_total_memory_is_not_killed() {
        // 192 MiB held together for a second (50 samples), and a few MiB more of the processes'
        // own.
        let script = holders(3, 64 << 20, 1);
        let out = alone(call("sh", &["-c", &script]), &total_memory_limits()).await;
        assert_eq!(out.unwrap().stdout, "held\n");
    }

    #[test]
    fn jail_processes_are_found_with_and_without_children_lists() {
        let mut tree = std::process::Command::new("sh")
            .args(["-c", "sleep 3 & (sleep 3 & wait) & wait"])
            .spawn()
            .unwrap();
        let root = tree.id();
        // sh, the first sleep, the subshell and its sleep.
        let mut found = Vec::new();
        for _ in 0..100 {
            found = jail_pids(root);
            if found.len() == 4 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut scanned = jail_pids_by_scan(root);
        let _ = tree.kill();
        let _ = tree.wait();
        assert_eq!(
            (found.len(), found[0], scanned[0]),
            (4, root, root),
            "{found:?}"
        );
        found.sort_unstable();
        scanned.sort_unstable();
        assert_eq!(found, scanned);
        assert!(resident(&found, page_size()) > 4 * 4096);
    }

    #[tokio::test]
    async fn bad_requests_are_refused() {
        let result = jailed(call("corral-no-such-command", &[]), &limits()).await;
        assert!(
            matches!(&result, Err(JailError::NotFound(m)) if m.contains("not installed")),
            "{result:?}"
        );
        for (program, arg) in [("/bin/sh", "-c"), ("", "x"), ("sh\0", "x"), ("sh", "a\0b")] {
            let result = jailed(call(program, &[arg]), &limits()).await;
            assert!(
                matches!(result, Err(JailError::InvalidInput(_))),
                "{program:?}: {result:?}"
            );
        }
        let at_once = CommandRequest {
            timeout: Some(Duration::ZERO),
            ..call("true", &[])
        };
        let result = jailed(at_once, &limits()).await;
        assert!(
            matches!(&result, Err(JailError::InvalidInput(m)) if m.contains("timeoutMs must be at least 1")),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn the_view_is_the_readable_working_directory() {
        let view = view(&[("hello.txt", "from the view\n")]);
        let script = call("sh", &["-c", "pwd; cat hello.txt"]);
        let out = jailed_in(view.path(), script, &limits()).await.unwrap();
        assert_eq!(out.stdout, "/work\nfrom the view\n");
    }

    #[tokio::test]
    async fn the_run_ending_kills_the_command() {
        let limits = CommandLimits {
            max_command_time: Duration::from_secs(600),
            ..limits()
        };
        let _shared = JAILS.read().await;
        let stop = tokio::time::sleep(Duration::from_millis(200));
        let result = run(view(&[]).path(), &call("sleep", &["3219"]), &limits, stop).await;
        assert_limit(result, "the run ended");
        assert!(
            !running(b"sleep\x003219\x00"),
            "a process of the jail survived"
        );
    }

    #[tokio::test]
    async fn dropping_the_call_kills_the_command() {
        let view = view(&[]);
        let limits = limits();
        let _shared = JAILS.read().await;
        let (sleep, never) = (call("sleep", &["3220"]), std::future::pending());
        let sleep = run(view.path(), &sleep, &limits, never);
        let started = tokio::time::timeout(Duration::from_millis(500), sleep).await;
        assert!(started.is_err(), "the sleep ended on its own: {started:?}");
        // Nothing waits for the jail's processes here: give them (boundedly) the moment to go.
        for _ in 0..50 {
            if !running(b"sleep\x003220\x00") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("a process of the jail survived the dropped call");
    }

    #[test]
    fn limits_serialise_in_milliseconds_with_defaults() {
        let limits: CommandLimits =
            serde_json::from_str(r#"{"max_command_time_ms": 1500}"#).unwrap();
        let expected = CommandLimits {
            max_command_time: Duration::from_millis(1500),
            ..self::limits()
        };
        assert_eq!(limits, expected);
        assert!(serde_json::from_str::<CommandLimits>(r#"{"max_command_time": 1}"#).is_err());
    }
}
