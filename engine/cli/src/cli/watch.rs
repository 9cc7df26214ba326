//! `corral runs watch`: the live per-phase view of a run that another process or a server is
//! running.
//!
//! The run's events come from the journal, read every [`POLL`] (the journal is the only channel
//! to another `corral` process), or from a server's `GET /v1/runs/{id}/events` stream
//! (Server-Sent Events, resumed with `Last-Event-ID` when the connection drops). Either way they
//! are the `--events` objects, turned back into [`RunEvent`]s and fed to the same [`Tally`] that
//! draws `corral run`'s progress. The view ends when the run does — its `run_finished` event, or
//! a final status — with the recorded per-phase report and a one-line summary, and exits 0
//! whatever the run's status: the watch succeeded. On a terminal (stdin and stdout), `s` stops the
//! run and `q` quits the view; elsewhere the view is plain lines, for logs.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow};
use clap::Args;
use corral_host::config::CorralConfig;
use corral_host::events::{EventSink, RunEvent};
use corral_service::{RunService, StopAnswer};
use corral_store::RunStatus;
use serde_json::Value;
use tokio::sync::mpsc;

use super::progress::{PhaseTally, Progress, Stream, Tally, cost_cell, phase_line};
use super::run::{ServiceArgs, service_failure};

/// How often the journal is read for new events and the run's status.
const POLL: Duration = Duration::from_millis(200);
/// Events read from the journal at a time.
const PAGE: usize = 1000;
/// Plain lines: how often each phase whose counts changed gets a line.
const PLAIN_COUNTS: Duration = Duration::from_secs(2);
/// The server sends a keep-alive comment every 15 s: a stream silent for this long is dead.
const SILENT: Duration = Duration::from_secs(45);
/// How long a lost server may stay unreachable before the watch gives up.
const GIVE_UP: Duration = Duration::from_secs(60);

#[derive(Args)]
pub struct WatchArgs {
    #[command(flatten)]
    journal: ServiceArgs,
    /// The run's id (in the local journal, an unambiguous prefix of it too).
    id: String,
    /// Watch a run of this Corral server (`corral serve`), e.g. http://127.0.0.1:8080, instead of
    /// one in the local journal.
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// The API token of the run's tenant, for --server (`corral tokens create TENANT`).
    #[arg(long, env = "CORRAL_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

pub fn watch(args: WatchArgs) -> anyhow::Result<ExitCode> {
    let tokio = super::tokio()?;
    match &args.server {
        None => {
            let service = super::runs::open(&args.journal)?;
            // The same answer as `corral runs show` for an unknown or ambiguous id.
            let id = match service.resolve(None, &args.id) {
                Ok(id) => id,
                Err(error) => return service_failure(error),
            };
            let config = service.config().clone();
            tokio.block_on(watch_run(Local { service, id }, config))
        }
        Some(url) => {
            let token = args.token.clone().ok_or_else(|| {
                anyhow!(
                    "--server needs the API token of the run's tenant: pass --token or set \
                     CORRAL_TOKEN (create one with `corral tokens create TENANT`)"
                )
            })?;
            let config = CorralConfig::discover(args.journal.config.as_deref())?;
            let server = Server::new(url, token, &args.id)?;
            tokio.block_on(watch_run(server, config))
        }
    }
}

/// A run as recorded: what the view starts from and ends with.
struct Report {
    id: String,
    status: RunStatus,
    started_ms: i64,
    simulated: bool,
    /// Phases with calls, in order, with their time.
    phases: Vec<(String, PhaseTally, Duration)>,
    agents: u64,
    tokens: u64,
    cost: f64,
    unpriced: BTreeSet<String>,
    error: Option<String>,
}

impl Report {
    /// `corral: run ID succeeded: 8 agents, 4120 tokens, $0.0123`.
    fn summary(&self) -> String {
        let error = match &self.error {
            Some(error) => format!(" ({})", first_line(error, 200)),
            None => String::new(),
        };
        format!(
            "corral: run {} {}{error}: {} agents, {} tokens, {}",
            self.id,
            self.status,
            self.agents,
            self.tokens,
            cost_cell(self.cost, &self.unpriced)
        )
    }

    fn print(&self, stream: Stream) {
        for (name, tally, elapsed) in &self.phases {
            stream.line(phase_line(name, tally, *elapsed));
        }
        stream.line(self.summary());
    }
}

/// The first line of `text`, at most `width` characters.
fn first_line(text: &str, width: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    if line.chars().count() <= width && !text.trim_end().contains('\n') {
        line.to_string()
    } else {
        format!("{}…", line.chars().take(width).collect::<String>())
    }
}

/// What the view learns while it follows a run.
enum Feed {
    /// The run's next event.
    Event(RunEvent),
    /// A line to show (a lost connection, say).
    Note(String),
    /// The run is over: everything it recorded has been sent.
    Over,
    /// Following failed for good.
    Failed(anyhow::Error),
}

/// Where the watched run is: the local journal, or a server.
trait Source {
    /// The run as it stands.
    async fn report(&self) -> anyhow::Result<Report>;
    /// Asks whoever runs the run to stop it, and says what happened.
    async fn stop(&self) -> String;
    /// Follows the run's events, from the first, until it is over.
    fn follow(&self) -> mpsc::Receiver<Feed>;
}

async fn watch_run(source: impl Source, config: CorralConfig) -> anyhow::Result<ExitCode> {
    let stream = Stream::Stdout;
    let report = source.report().await?;
    if report.status.is_final() {
        report.print(stream);
        return Ok(ExitCode::SUCCESS);
    }
    let mut view = View::new(stream, config, &report);
    let mut keys = (std::io::stdin().is_terminal() && std::io::stdout().is_terminal())
        .then(Keys::start)
        .flatten();
    view.tally.say(&match keys {
        Some(_) => format!(
            "corral: watching run {} — s stops it, q quits the view (the run goes on)",
            report.id
        ),
        None => format!("corral: watching run {} ({})", report.id, report.status),
    });
    let mut feed = source.follow();
    let mut counts = tokio::time::interval(PLAIN_COUNTS);
    let mut stopping = false;
    loop {
        tokio::select! {
            message = feed.recv() => match message {
                Some(Feed::Event(event)) => {
                    if !view.show(&event) {
                        break;
                    }
                }
                Some(Feed::Note(line)) => view.tally.say(&line),
                Some(Feed::Failed(error)) => {
                    view.tally.finish();
                    return Err(error);
                }
                // Over without a `run_finished` (interrupted, say).
                Some(Feed::Over) | None => break,
            },
            key = Keys::next(&mut keys) => match key {
                Some('s') if !stopping => {
                    stopping = true;
                    view.tally.say("stopping…");
                    view.tally.say(&format!("   ({})", source.stop().await));
                    Keys::go_on(&keys);
                }
                Some('q') => {
                    drop(keys);
                    view.quit(&report.id);
                    return Ok(ExitCode::SUCCESS);
                }
                Some(_) => Keys::go_on(&keys),
                // No more keys (the terminal went away): watch on without them.
                None => keys = None,
            },
            _ = counts.tick() => view.tally.print_counts(),
        }
    }
    view.tally.finish();
    drop(keys);
    source.report().await?.print(stream);
    Ok(ExitCode::SUCCESS)
}

/// The live view of one run: a [`Tally`] fed its events, a new one when the run starts over.
struct View {
    tally: Arc<Tally>,
    stream: Stream,
    config: CorralConfig,
    progress: Progress,
    started: Instant,
    simulated: bool,
    /// Whether `run_started` was seen.
    began: bool,
}

impl View {
    fn new(stream: Stream, config: CorralConfig, report: &Report) -> View {
        let progress = if stream.is_terminal() {
            Progress::Live
        } else {
            Progress::Lines
        };
        let mut view = View {
            tally: Tally::new(config.clone(), Progress::Quiet),
            stream,
            config,
            progress,
            started: instant_of(report.started_ms),
            simulated: report.simulated,
            began: false,
        };
        view.tally = view.fresh();
        view
    }

    fn fresh(&self) -> Arc<Tally> {
        let tally = Tally::on(
            self.stream,
            self.config.clone(),
            self.progress,
            self.started,
        );
        tally.set_simulated(self.simulated);
        tally
    }

    /// Shows `event`; `false` once it is the run's last.
    fn show(&mut self, event: &RunEvent) -> bool {
        if let RunEvent::RunStarted { .. } = event {
            // Resumed in place (a server restarted): it starts over, with the same id.
            if self.began {
                self.tally.finish();
                self.tally = self.fresh();
            }
            self.began = true;
        }
        self.tally.event(event);
        !matches!(event, RunEvent::RunFinished { .. })
    }

    /// `q`: the counts so far, and how to come back.
    fn quit(self, id: &str) {
        self.tally.finish();
        for (name, tally) in self.tally.phases() {
            self.stream
                .line(phase_line(&name, &tally, self.tally.elapsed()));
        }
        self.stream.line(format_args!(
            "corral: stopped watching run {id}; it goes on (`corral runs watch {id}` watches it \
             again)"
        ));
    }
}

/// Now, in ms since the Unix epoch.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The moment `ms` (since the Unix epoch) was, as an `Instant` (now, if it is in the future).
fn instant_of(ms: i64) -> Instant {
    let ago = Duration::from_millis((now_ms() - ms).max(0) as u64);
    Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
}

/// Keys pressed on the terminal, read by a thread (`console` reads one key at a time, blocking).
/// The thread waits after each key until the view handles it, so that a `q` never leaves it
/// inside a read with the terminal raw; the terminal's settings are restored on drop, for a
/// view that ends while the thread waits in a read.
struct Keys {
    keys: mpsc::UnboundedReceiver<char>,
    go_on: std::sync::mpsc::Sender<()>,
    _terminal: Terminal,
}

impl Keys {
    fn start() -> Option<Keys> {
        let terminal = Terminal::save();
        let (key_sender, keys) = mpsc::unbounded_channel();
        let (go_on, handled) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("corral-keys".into())
            .spawn(move || {
                let term = console::Term::stdout();
                loop {
                    match term.read_key() {
                        Ok(console::Key::Char(key)) => {
                            if key_sender.send(key.to_ascii_lowercase()).is_err()
                                || handled.recv().is_err()
                            {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            })
            .ok()?;
        Some(Keys {
            keys,
            go_on,
            _terminal: terminal,
        })
    }

    /// The next key, or `None` once there are none; never, without a terminal.
    async fn next(keys: &mut Option<Keys>) -> Option<char> {
        match keys {
            Some(keys) => keys.keys.recv().await,
            None => std::future::pending().await,
        }
    }

    /// Lets the thread read the next key.
    fn go_on(keys: &Option<Keys>) {
        if let Some(keys) = keys {
            let _ = keys.go_on.send(());
        }
    }
}

/// The terminal's settings when the view began, put back on drop.
struct Terminal(#[cfg(unix)] Option<rustix::termios::Termios>);

impl Terminal {
    fn save() -> Terminal {
        Terminal(
            #[cfg(unix)]
            rustix::termios::tcgetattr(std::io::stdin()).ok(),
        )
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(settings) = &self.0 {
            let _ = rustix::termios::tcsetattr(
                std::io::stdin(),
                rustix::termios::OptionalActions::Now,
                settings,
            );
        }
    }
}

/// A run in the local journal, run by another process.
struct Local {
    service: RunService,
    id: String,
}

impl Source for Local {
    async fn report(&self) -> anyhow::Result<Report> {
        let detail = self.service.show(None, &self.id)?;
        let (phases, all) = super::runs::recorded_phases(&detail, self.service.config());
        let run = &detail.summary;
        Ok(Report {
            id: run.id.clone(),
            status: run.status,
            started_ms: run.started_ms,
            simulated: detail.provider == "sim",
            phases,
            agents: detail.calls.len() as u64,
            tokens: run.tokens.total(),
            cost: run.cost,
            unpriced: all.unpriced,
            error: detail.error.clone(),
        })
    }

    async fn stop(&self) -> String {
        match self.service.stop(None, &self.id) {
            Ok(StopAnswer::Asked { id, pid }) => {
                format!("asked process {pid} to stop run {id}; it stops within a second")
            }
            Ok(StopAnswer::Stopping(id)) => format!("run {id} is stopping"),
            Err(error) => format!("cannot stop run {}: {error}", self.id),
        }
    }

    fn follow(&self) -> mpsc::Receiver<Feed> {
        let (feed, receiver) = mpsc::channel(PAGE);
        let (service, id) = (self.service.clone(), self.id.clone());
        tokio::spawn(async move {
            if let Err(error) = follow_journal(&service, &id, &feed).await {
                let _ = feed.send(Feed::Failed(error)).await;
            }
        });
        receiver
    }
}

/// Sends run `id`'s journaled events, read every [`POLL`], until its status is final. (These
/// reads are small pages of a local SQLite file in WAL mode, beside the writer: quick enough for
/// the async task itself.)
async fn follow_journal(
    service: &RunService,
    id: &str,
    feed: &mpsc::Sender<Feed>,
) -> anyhow::Result<()> {
    let store = service.store()?;
    let mut after = 0;
    let mut poll = tokio::time::interval(POLL);
    loop {
        poll.tick().await;
        // The status first: once it is final every event before `run_finished` is stored (the
        // run's end waits for its writes), so the reads below get them all.
        let summary = store
            .run_summary(id)?
            .ok_or_else(|| anyhow!("run {id} is gone from the journal"))?;
        let over = service.effective_status(&summary).is_final();
        loop {
            let page = store.events_after(id, after, PAGE)?;
            let full = page.len() == PAGE;
            for (seq, json) in page {
                after = seq;
                let event = serde_json::from_str(&json)
                    .ok()
                    .and_then(|v| parse_event(&v));
                if let Some(event) = event
                    && feed.send(Feed::Event(event)).await.is_err()
                {
                    return Ok(());
                }
            }
            if !full {
                break;
            }
        }
        if over {
            let _ = feed.send(Feed::Over).await;
            return Ok(());
        }
    }
}

/// A run on a Corral server, reached over its HTTP API with a tenant's token.
#[derive(Clone)]
struct Server {
    client: reqwest::Client,
    /// `http://host:port`, without a trailing slash.
    base: String,
    token: String,
    id: String,
}

/// Why a request to the server failed.
enum Failure {
    /// It refused (a 4xx answer): trying again will not help.
    Refused(anyhow::Error),
    /// It could not be reached, or broke off: try again.
    Lost(anyhow::Error),
}

/// How one event stream ended.
enum Streamed {
    /// With `run_finished`.
    Finished,
    /// Before it.
    Ended,
}

impl Server {
    fn new(url: &str, token: String, id: &str) -> anyhow::Result<Server> {
        let url = url.trim_end_matches('/');
        let base = if url.contains("://") {
            url.to_string()
        } else {
            format!("http://{url}")
        };
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("cannot set up the HTTP client")?;
        Ok(Server {
            client,
            base,
            token,
            id: id.to_string(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1/runs/{}{path}", self.base, self.id)
    }

    /// The answer to `request` when it is a success, else why not.
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, Failure> {
        let response = request.bearer_auth(&self.token).send().await.map_err(|e| {
            Failure::Lost(anyhow!(
                "cannot reach the Corral server at {}: {e} (is `corral serve` running there?)",
                self.base
            ))
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let message = body["message"].as_str().unwrap_or("").to_string();
        let hint = body["hint"].as_str().map(str::to_string);
        let error = match status.as_u16() {
            401 => anyhow!(
                "the server refused the token: {message}; {} (and pass it with --token or \
                 CORRAL_TOKEN)",
                hint.unwrap_or_else(|| "create one with `corral tokens create TENANT`".into())
            ),
            404 => anyhow!(
                "the server has no run {} that this token's tenant can see ({message}): check the \
                 id and the token (`GET /v1/runs` lists the tenant's runs)",
                self.id
            ),
            code => anyhow!(
                "the server answered {code}: {message}{}",
                hint.map_or(String::new(), |hint| format!(" ({hint})"))
            ),
        };
        Err(if status.is_server_error() {
            Failure::Lost(error)
        } else {
            Failure::Refused(error)
        })
    }

    /// `GET /v1/runs/{id}`.
    async fn detail(&self) -> Result<Value, Failure> {
        let request = self
            .client
            .get(self.url(""))
            .timeout(Duration::from_secs(30));
        let response = self.send(request).await?;
        response
            .json()
            .await
            .map_err(|e| Failure::Lost(anyhow!("the server's answer is not JSON: {e}")))
    }

    /// Reads the event stream after event `last` (updated as events come) until it ends.
    async fn stream(&self, last: &mut u64, feed: &mpsc::Sender<Feed>) -> Result<Streamed, Failure> {
        let mut request = self.client.get(self.url("/events"));
        if *last > 0 {
            request = request.header("last-event-id", last.to_string());
        }
        let mut response = self.send(request).await?;
        let mut parser = SseParser::default();
        loop {
            let chunk = match tokio::time::timeout(SILENT, response.chunk()).await {
                Ok(Ok(Some(chunk))) => chunk,
                Ok(Ok(None)) => return Ok(Streamed::Ended),
                Ok(Err(error)) => {
                    return Err(Failure::Lost(anyhow!(
                        "the event stream broke off: {error}"
                    )));
                }
                Err(_) => {
                    return Err(Failure::Lost(anyhow!(
                        "the event stream was silent for {}s",
                        SILENT.as_secs()
                    )));
                }
            };
            for message in parser.push(&chunk) {
                let Some(seq) = message.id.as_deref().and_then(|id| id.trim().parse().ok()) else {
                    continue;
                };
                if seq <= *last {
                    continue;
                }
                *last = seq;
                let event = serde_json::from_str(&message.data)
                    .ok()
                    .and_then(|v| parse_event(&v));
                let Some(event) = event else { continue };
                let finished = matches!(event, RunEvent::RunFinished { .. });
                if feed.send(Feed::Event(event)).await.is_err() || finished {
                    return Ok(Streamed::Finished);
                }
            }
        }
    }
}

fn refused_or_lost(failure: Failure) -> anyhow::Error {
    match failure {
        Failure::Refused(error) | Failure::Lost(error) => error,
    }
}

/// The run's status in a `GET /v1/runs/{id}` answer.
fn status_of(detail: &Value) -> anyhow::Result<RunStatus> {
    serde_json::from_value(detail["status"].clone())
        .map_err(|_| anyhow!("the server answered a run without a status I know: {detail}"))
}

impl Source for Server {
    async fn report(&self) -> anyhow::Result<Report> {
        let detail = self.detail().await.map_err(refused_or_lost)?;
        let status = status_of(&detail)?;
        let started_ms = detail["started"]
            .as_str()
            .and_then(parse_time)
            .unwrap_or_else(now_ms);
        let wall = Duration::from_millis(detail["duration_ms"].as_u64().unwrap_or(0));
        let phases = detail["phases"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|phase| {
                let count = |key: &str| phase[key].as_u64().unwrap_or(0);
                let tokens = &phase["tokens"];
                let tally = PhaseTally {
                    queued: count("queued"),
                    running: count("running"),
                    done: count("done"),
                    failed: count("failed"),
                    usage: corral_host::provider::Usage {
                        input_tokens: tokens["input"].as_u64().unwrap_or(0),
                        output_tokens: tokens["output"].as_u64().unwrap_or(0),
                        cache_read_tokens: tokens["cache_read"].as_u64().unwrap_or(0),
                        cache_write_tokens: tokens["cache_write"].as_u64().unwrap_or(0),
                    },
                    cost: phase["cost"].as_f64().unwrap_or(0.0),
                    unpriced: BTreeSet::new(),
                };
                let name = phase["name"].as_str().unwrap_or_default().to_string();
                (name, tally, wall)
            })
            // Phases without a call have no line in the report (as in `corral runs show`).
            .filter(|(_, t, _)| t.done + t.running + t.queued + t.failed > 0)
            .collect();
        Ok(Report {
            id: detail["id"].as_str().unwrap_or(&self.id).to_string(),
            status,
            started_ms,
            simulated: detail["provider"] == "sim",
            phases,
            agents: detail["counts"]["agents"].as_u64().unwrap_or(0),
            tokens: detail["tokens"]["total"].as_u64().unwrap_or(0),
            cost: detail["cost"].as_f64().unwrap_or(0.0),
            unpriced: BTreeSet::new(),
            error: detail["error"].as_str().map(str::to_string),
        })
    }

    async fn stop(&self) -> String {
        match self.send(self.client.post(self.url("/stop"))).await {
            Ok(_) => format!("the server is stopping run {}", self.id),
            Err(failure) => format!("cannot stop run {}: {}", self.id, refused_or_lost(failure)),
        }
    }

    fn follow(&self) -> mpsc::Receiver<Feed> {
        let (feed, receiver) = mpsc::channel(PAGE);
        let server = self.clone();
        tokio::spawn(async move {
            let over = match follow_server(&server, &feed).await {
                Ok(()) => Feed::Over,
                Err(error) => Feed::Failed(error),
            };
            let _ = feed.send(over).await;
        });
        receiver
    }
}

/// Sends the server's events of the run until `run_finished`, reconnecting after the last event
/// seen when the stream ends or breaks off first; a run that ends without one (interrupted) ends
/// it once its status is final.
async fn follow_server(server: &Server, feed: &mpsc::Sender<Feed>) -> anyhow::Result<()> {
    let mut last = 0;
    // Since when the server cannot be reached.
    let mut lost: Option<Instant> = None;
    let mut pause = POLL;
    loop {
        let before = last;
        let failure = match server.stream(&mut last, feed).await {
            Ok(Streamed::Finished) => return Ok(()),
            Err(Failure::Refused(error)) => return Err(error),
            Err(Failure::Lost(error)) => Some(error),
            // Is it over without a `run_finished`? Then read the stored rest once more.
            Ok(Streamed::Ended) => match server.detail().await {
                Ok(detail) if status_of(&detail)?.is_final() => {
                    return match server.stream(&mut last, feed).await {
                        Err(Failure::Refused(error)) => Err(error),
                        _ => Ok(()),
                    };
                }
                Ok(_) => None,
                Err(Failure::Refused(error)) => return Err(error),
                Err(Failure::Lost(error)) => Some(error),
            },
        };
        match failure {
            None => {
                lost = None;
                // A stream that ends at once, again and again (a run not started yet), is
                // asked for less and less often.
                pause = if last > before {
                    POLL
                } else {
                    (pause * 2).min(Duration::from_secs(2))
                };
            }
            Some(error) => {
                let since = match lost {
                    Some(since) => since,
                    None => {
                        let _ = feed
                            .send(Feed::Note(format!("corral: {error:#}; reconnecting…")))
                            .await;
                        *lost.insert(Instant::now())
                    }
                };
                if since.elapsed() > GIVE_UP {
                    return Err(error.context(format!(
                        "gave up after {}s without the server",
                        GIVE_UP.as_secs()
                    )));
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
        tokio::time::sleep(pause).await;
    }
}

/// `2025-01-31T12:00:00Z` (the API's times, to the second) as ms since the Unix epoch.
fn parse_time(text: &str) -> Option<i64> {
    let (date, time) = text.strip_suffix('Z')?.split_once('T')?;
    let numbers = |text: &str, separator: char| -> Option<[i64; 3]> {
        let mut parts = text.splitn(3, separator).map(|p| p.parse::<i64>().ok());
        Some([parts.next()??, parts.next()??, parts.next()??])
    };
    let [year, month, day] = numbers(date, '-')?;
    let [hour, minute, second] = numbers(time, ':')?;
    // Days since 1970-01-01 from a civil date (Howard Hinnant's algorithm).
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hour * 3600 + minute * 60 + second) * 1000)
}

/// One `--events` object (see [`RunEvent::to_json`]) back as the event; `None` for an event this
/// `corral` does not know (a newer server's) or a malformed one, which the view skips.
fn parse_event(value: &Value) -> Option<RunEvent> {
    let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_string);
    let number = |key: &str| value.get(key).and_then(Value::as_u64);
    Some(match value.get("event")?.as_str()? {
        "run_started" => RunEvent::RunStarted {
            run_id: text("run_id"),
            workflow: text("workflow")?,
            workflow_hash: text("workflow_hash")?,
            resumed_from: text("resumed_from"),
        },
        "run_finished" => RunEvent::RunFinished {
            ok: value.get("ok")?.as_bool()?,
            error: text("error"),
            agents: number("agents")?,
            spent_tokens: number("spent_tokens")?,
            cost: value.get("cost")?.as_f64()?,
        },
        "phase" => RunEvent::Phase {
            title: text("title")?,
        },
        "log" => RunEvent::Log {
            message: text("message")?,
        },
        "agent_queued" => RunEvent::AgentQueued {
            id: number("id")?,
            label: text("label"),
            phase: text("phase"),
        },
        "agent_started" => RunEvent::AgentStarted {
            id: number("id")?,
            phase: text("phase"),
        },
        "agent_finished" => RunEvent::AgentFinished {
            id: number("id")?,
            phase: text("phase"),
            error: text("error"),
            message: text("message"),
            usage: serde_json::from_value(value.get("usage")?.clone()).ok()?,
            model: text("model").unwrap_or_default(),
            replayed: value.get("replayed").and_then(Value::as_bool) == Some(true),
        },
        _ => return None,
    })
}

/// One Server-Sent Events message: its `id:` (the last one seen) and its `data:` lines.
#[derive(Debug, PartialEq, Eq)]
struct SseMessage {
    id: Option<String>,
    data: String,
}

/// Parses a Server-Sent Events stream as it comes, in chunks that may split lines (and UTF-8
/// characters) anywhere.
#[derive(Default)]
struct SseParser {
    pending: Vec<u8>,
    id: Option<String>,
    data: Option<String>,
}

impl SseParser {
    /// Takes the next chunk; answers the messages it completes.
    fn push(&mut self, chunk: &[u8]) -> Vec<SseMessage> {
        self.pending.extend_from_slice(chunk);
        let mut messages = Vec::new();
        let mut start = 0;
        while let Some(end) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let mut line = &self.pending[start..start + end];
            start += end + 1;
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            let line = String::from_utf8_lossy(line);
            if line.is_empty() {
                if let Some(data) = self.data.take() {
                    messages.push(SseMessage {
                        id: self.id.clone(),
                        data,
                    });
                }
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (&*line, ""),
            };
            match field {
                "data" => match &mut self.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => self.data = Some(value.to_string()),
                },
                "id" => self.id = Some(value.to_string()),
                // Comments (keep-alives: `:`), `event:`, `retry:`.
                _ => {}
            }
        }
        self.pending.drain(..start);
        messages
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_host::provider::Usage;

    #[test]
    fn every_event_reads_back_from_its_json() {
        let usage = Usage {
            input_tokens: 12,
            output_tokens: 3,
            cache_read_tokens: 4,
            cache_write_tokens: 5,
        };
        let events = [
            RunEvent::RunStarted {
                run_id: Some("abc".into()),
                workflow: "fan.js".into(),
                workflow_hash: "00ff".into(),
                resumed_from: None,
            },
            RunEvent::Phase {
                title: "Scan".into(),
            },
            RunEvent::Log {
                message: "45 files".into(),
            },
            RunEvent::AgentQueued {
                id: 1,
                label: Some("file 1".into()),
                phase: Some("Scan".into()),
            },
            RunEvent::AgentStarted { id: 1, phase: None },
            RunEvent::AgentFinished {
                id: 1,
                phase: Some("Scan".into()),
                error: Some("timeout".into()),
                message: Some("took too long".into()),
                usage,
                model: "claude-haiku".into(),
                replayed: true,
            },
            RunEvent::RunFinished {
                ok: false,
                error: Some("stopped".into()),
                agents: 7,
                spent_tokens: 1234,
                cost: 0.5,
            },
        ];
        for event in events {
            assert_eq!(parse_event(&event.to_json()), Some(event));
        }
        let newer = serde_json::json!({"event": "agent_paused", "id": 1});
        assert_eq!(parse_event(&newer), None);
    }

    #[test]
    fn server_sent_events_parse_across_any_chunk_boundaries() {
        let stream = ": keep-alive\n\nid: 1\ndata: {\"event\":\"log\",\"message\":\"é\"}\n\n\
                      id:2\r\ndata: one\r\ndata: two\r\n\r\nevent: x\nretry: 5\n\n";
        let expected = vec![
            SseMessage {
                id: Some("1".into()),
                data: "{\"event\":\"log\",\"message\":\"é\"}".into(),
            },
            SseMessage {
                id: Some("2".into()),
                data: "one\ntwo".into(),
            },
        ];
        for size in 1..stream.len() {
            let mut parser = SseParser::default();
            let got: Vec<SseMessage> = stream
                .as_bytes()
                .chunks(size)
                .flat_map(|chunk| parser.push(chunk))
                .collect();
            assert_eq!(got, expected, "chunks of {size}");
        }
    }

    #[test]
    fn api_times_read_back() {
        for ms in [
            0,
            86_399_000,
            951_782_400_000,
            1_767_225_599_000,
            4_107_542_400_000,
        ] {
            let text = format!("{}Z", corral_store::format_time(ms).replace(' ', "T"));
            assert_eq!(parse_time(&text), Some(ms), "{text}");
        }
        assert_eq!(parse_time("yesterday"), None);
    }

    /// A server whose first event stream breaks off after event 1: the watch reconnects with
    /// `Last-Event-ID: 1` and reads the rest, up to `run_finished`.
    #[test]
    fn a_dropped_event_stream_resumes_after_the_last_event() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
            let seen = requests.clone();
            tokio::spawn(async move {
                loop {
                    let (mut socket, _) = listener.accept().await.unwrap();
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if socket.read(&mut byte).await.unwrap() == 0 {
                            break;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).to_lowercase();
                    seen.lock().unwrap().push(head.clone());
                    let body = if !head.starts_with("get /v1/runs/r1/events") {
                        r#"{"id":"r1","status":"running"}"#.to_string()
                    } else if head.contains("last-event-id: 1\r\n") {
                        let finished = RunEvent::RunFinished {
                            ok: true,
                            error: None,
                            agents: 1,
                            spent_tokens: 9,
                            cost: 0.0,
                        };
                        format!("id: 2\ndata: {}\n\n", finished.to_json())
                    } else {
                        let log = RunEvent::Log {
                            message: "first".into(),
                        };
                        format!("id: 1\ndata: {}\n\n", log.to_json())
                    };
                    // No length: the body ends when the connection closes.
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n{body}"
                    );
                    socket.write_all(answer.as_bytes()).await.unwrap();
                    socket.shutdown().await.unwrap();
                }
            });
            let server = Server::new(&url, "crl_test".into(), "r1").unwrap();
            let mut feed = server.follow();
            let mut got = Vec::new();
            loop {
                match feed.recv().await {
                    Some(Feed::Event(event)) => got.push(event),
                    Some(Feed::Over) | None => break,
                    Some(Feed::Note(note)) => panic!("unexpected note: {note}"),
                    Some(Feed::Failed(error)) => panic!("{error:#}"),
                }
            }
            assert!(matches!(&got[..], [RunEvent::Log { .. }, RunEvent::RunFinished { .. }]));
            let requests = requests.lock().unwrap();
            let streams: Vec<&String> = requests
                .iter()
                .filter(|r| r.starts_with("get /v1/runs/r1/events"))
                .collect();
            assert_eq!(streams.len(), 2, "{requests:?}");
            assert!(!streams[0].contains("last-event-id"));
            assert!(streams[1].contains("last-event-id: 1\r\n"));
            assert!(requests.iter().all(|r| r.contains("authorization: bearer crl_test")));
        });
    }
}
