//! Where a run's events go on the command line: progress on stderr (on stdout for `corral runs
//! watch`) — plain lines, or a live view on a terminal — and the `--events` JSON Lines stream.
//!
//! Failed agent calls are collapsed by kind, so that a fan-out whose budget ran out reports one
//! line per kind rather than one per call. On a terminal each kind has one line, redrawn in place.
//! In plain lines (logs, pipes) the first failure of a kind is printed in full; after it a line
//! `N agents failed: KIND (first #ID: message)` is printed when the count reaches 10, 100, 1000, …, and
//! for every kind whose count grew since its last line at each phase change and at the end. That
//! is at most a few lines per kind and phase, however many calls fail.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral_host::config::CorralConfig;
use corral_host::events::{EventSink, RunEvent};
use corral_host::provider::Usage;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// None (`-q`): only the summary.
    Quiet,
    /// Plain lines, for logs and pipes: phases, log lines, failures collapsed by kind.
    Lines,
    /// One line per phase and per failure kind, redrawn in place (on a terminal).
    Live,
}

/// Which standard stream progress is written to: stderr for `corral run` (its result goes to
/// stdout), stdout for `corral runs watch` (the view is its output).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard error.
    Stderr,
    /// Standard output.
    Stdout,
}

impl Stream {
    /// Writes one line, ignoring a closed stream (`corral runs watch ID | head`).
    pub fn line(self, line: impl std::fmt::Display) {
        let _ = match self {
            Stream::Stderr => writeln!(std::io::stderr(), "{line}"),
            Stream::Stdout => writeln!(std::io::stdout(), "{line}"),
        };
    }

    /// Whether the stream is a terminal.
    pub fn is_terminal(self) -> bool {
        use std::io::IsTerminal;
        match self {
            Stream::Stderr => std::io::stderr().is_terminal(),
            Stream::Stdout => std::io::stdout().is_terminal(),
        }
    }
}

/// Per-phase counters, tokens and cost: what the live view shows and the summary reports.
#[derive(Debug, Default, Clone)]
pub struct PhaseTally {
    /// Calls queued but without a slot.
    pub queued: u64,
    /// Calls holding a slot.
    pub running: u64,
    /// Calls finished well.
    pub done: u64,
    /// Calls that failed.
    pub failed: u64,
    /// Tokens.
    pub usage: Usage,
    /// Dollars, where prices are known.
    pub cost: f64,
    /// Models that answered calls but have no price: their cost is not in `cost`.
    pub unpriced: BTreeSet<String>,
}

impl From<&corral_service::report::PhaseTotals> for PhaseTally {
    /// A recorded run's phase, as the live view counts one.
    fn from(phase: &corral_service::report::PhaseTotals) -> Self {
        PhaseTally {
            queued: phase.queued,
            running: phase.running,
            done: phase.done,
            failed: phase.failed,
            usage: phase.usage,
            cost: phase.cost,
            unpriced: phase.unpriced.clone(),
        }
    }
}

/// The failed agent calls of one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failures {
    /// The error kind (`budget-exhausted`, `timeout`, …).
    pub kind: String,
    /// How many calls failed so.
    pub count: u64,
    /// The id of the first of them.
    pub first: u64,
    /// What the first of them said.
    pub message: String,
    /// `count` when a line about this kind was last printed (plain lines).
    printed: u64,
}

impl Failures {
    /// `764 agents failed: budget-exhausted (first #232: token budget exhausted: …)`.
    pub fn line(&self) -> String {
        let agents = if self.count == 1 { "agent" } else { "agents" };
        format!(
            "{} {agents} failed: {} (first #{}: {})",
            self.count,
            self.kind,
            self.first,
            short(&self.message)
        )
    }
}

/// A failure message cut to one readable line.
fn short(message: &str) -> String {
    const MAX: usize = 160;
    let line = message.lines().next().unwrap_or_default();
    if line.chars().count() <= MAX && !message.contains('\n') {
        return line.to_string();
    }
    let cut: String = line.chars().take(MAX).collect();
    format!("{cut}…")
}

/// Whether a plain-lines count of failures is worth a line of its own: 10, 100, 1000, …
fn milestone(count: u64) -> bool {
    count >= 10 && 10u64.pow(count.ilog10()) == count
}

/// A cost as the report shows it: `$0.0123`; `≥$0.0123` when some calls' models have no price;
/// `—` when they all have none (or the priced ones cost less than shows).
pub fn cost_cell(cost: f64, unpriced: &BTreeSet<String>) -> String {
    match (unpriced.is_empty(), shows(cost)) {
        (true, _) => format!("${cost:.4}"),
        (false, true) => format!("≥${cost:.4}"),
        (false, false) => "—".to_string(),
    }
}

/// Whether `cost` is at least the $0.0001 a cost is shown to.
pub fn shows(cost: f64) -> bool {
    (cost * 1e4).round() >= 1.0
}

/// Tallies events per phase, prices them, collapses failures by kind, and shows progress.
pub struct Tally {
    config: CorralConfig,
    started: Instant,
    progress: Progress,
    stream: Stream,
    /// The simulated provider buys nothing: its models' missing prices are no unknown cost.
    simulated: AtomicBool,
    state: Mutex<TallyState>,
    view: Option<MultiProgress>,
}

#[derive(Default)]
struct TallyState {
    phases: BTreeMap<String, PhaseTally>,
    order: Vec<String>,
    bars: BTreeMap<String, ProgressBar>,
    /// In order of first appearance.
    failures: Vec<Failures>,
    failure_bars: Vec<ProgressBar>,
    unpriced: BTreeSet<String>,
    /// Plain lines: each phase's counts when [`Tally::print_counts`] last printed them.
    counted: BTreeMap<String, (u64, u64, u64, u64)>,
}

impl Tally {
    /// A tally showing `progress` on stderr, of a run starting now.
    pub fn new(config: CorralConfig, progress: Progress) -> Arc<Self> {
        Tally::on(Stream::Stderr, config, progress, Instant::now())
    }

    /// A tally showing `progress` on `stream`, of a run that started at `started` (phase lines
    /// show the time since).
    pub fn on(
        stream: Stream,
        config: CorralConfig,
        progress: Progress,
        started: Instant,
    ) -> Arc<Self> {
        let view = (progress == Progress::Live).then(|| {
            MultiProgress::with_draw_target(match stream {
                Stream::Stderr => ProgressDrawTarget::stderr_with_hz(10),
                Stream::Stdout => ProgressDrawTarget::stdout_with_hz(10),
            })
        });
        Arc::new(Tally {
            config,
            started,
            progress,
            stream,
            simulated: AtomicBool::new(false),
            state: Mutex::new(TallyState::default()),
            view,
        })
    }

    /// Time since the run started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Prints a line of its own: above the live view, or as a plain line (also when quiet).
    pub fn say(&self, line: &str) {
        match &self.view {
            Some(view) => {
                let _ = view.println(line);
            }
            None => self.stream.line(line),
        }
    }

    /// Plain lines: one line per phase whose counts changed since its last such line (call it
    /// every few seconds, so that logs show a run advancing without a line per agent).
    pub fn print_counts(&self) {
        if self.progress != Progress::Lines {
            return;
        }
        let mut state = self.lock();
        let state = &mut *state;
        for name in &state.order {
            let tally = &state.phases[name];
            let counts = (tally.done, tally.running, tally.queued, tally.failed);
            if state.counted.get(name) != Some(&counts) {
                state.counted.insert(name.clone(), counts);
                self.stream
                    .line(phase_line(name, &self.shown(tally), self.elapsed()));
            }
        }
    }

    /// Tells whether the simulated provider answers the run.
    pub fn set_simulated(&self, simulated: bool) {
        self.simulated.store(simulated, Ordering::Relaxed);
    }

    /// Totals per phase, in the order phases appeared.
    pub fn phases(&self) -> Vec<(String, PhaseTally)> {
        let state = self.lock();
        state
            .order
            .iter()
            .map(|name| (name.clone(), self.shown(&state.phases[name])))
            .collect()
    }

    /// The failed calls by kind, in order of first appearance.
    pub fn failures(&self) -> Vec<Failures> {
        self.lock().failures.clone()
    }

    /// Models that answered calls of the run but have no price.
    pub fn unpriced(&self) -> BTreeSet<String> {
        if self.simulated.load(Ordering::Relaxed) {
            return BTreeSet::new();
        }
        self.lock().unpriced.clone()
    }

    /// Ends the progress (before the summary is printed): removes the live view, or prints the
    /// failure counts that grew since their last line.
    pub fn finish(&self) {
        let mut state = self.lock();
        for bar in state.bars.values().chain(&state.failure_bars) {
            bar.finish();
        }
        if let Some(view) = &self.view {
            let _ = view.clear();
        }
        self.print_failure_counts(&mut state);
    }

    /// A phase's tally as shown: under the simulated provider no model's price is missing.
    fn shown(&self, tally: &PhaseTally) -> PhaseTally {
        let mut tally = tally.clone();
        if self.simulated.load(Ordering::Relaxed) {
            tally.unpriced.clear();
        }
        tally
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TallyState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn phase_entry<'a>(&self, state: &'a mut TallyState, phase: &str) -> &'a mut PhaseTally {
        if !state.phases.contains_key(phase) {
            state.order.push(phase.to_string());
            if let Some(view) = &self.view {
                // Phases above the failure lines.
                let bar = match state.failure_bars.first() {
                    Some(first) => view.insert_before(first, ProgressBar::new_spinner()),
                    None => view.add(ProgressBar::new_spinner()),
                };
                bar.set_style(ProgressStyle::with_template("{msg}").expect("a valid template"));
                state.bars.insert(phase.to_string(), bar);
            }
        }
        state.phases.entry(phase.to_string()).or_default()
    }

    fn redraw(&self, state: &TallyState, phase: &str) {
        if let (Some(bar), Some(tally)) = (state.bars.get(phase), state.phases.get(phase)) {
            bar.set_message(phase_line(
                phase,
                &self.shown(tally),
                self.started.elapsed(),
            ));
        }
    }

    /// Counts a failed call and shows it: its kind's live line, or a plain line when it is the
    /// first of its kind or its count reaches a milestone.
    fn failed(&self, state: &mut TallyState, id: u64, kind: &str, message: &str) {
        let at = match state.failures.iter().position(|f| f.kind == kind) {
            Some(at) => {
                state.failures[at].count += 1;
                at
            }
            None => {
                state.failures.push(Failures {
                    kind: kind.to_string(),
                    count: 1,
                    first: id,
                    message: message.to_string(),
                    printed: 0,
                });
                if let Some(view) = &self.view {
                    let bar = view.add(ProgressBar::new_spinner());
                    bar.set_style(
                        ProgressStyle::with_template("   {msg}").expect("a valid template"),
                    );
                    state.failure_bars.push(bar);
                }
                state.failures.len() - 1
            }
        };
        let failures = &mut state.failures[at];
        match self.progress {
            Progress::Quiet => {}
            Progress::Live => state.failure_bars[at].set_message(failures.line()),
            Progress::Lines if failures.count == 1 => {
                failures.printed = 1;
                self.stream.line(format_args!(
                    "   agent #{id} failed: {kind} (the first; more {kind} failures are counted, not listed): {}",
                    short(message)
                ));
            }
            Progress::Lines if milestone(failures.count) => {
                failures.printed = failures.count;
                self.stream.line(format_args!("   {}", failures.line()));
            }
            Progress::Lines => {}
        }
    }

    /// Plain lines: one line per failure kind whose count grew since its last line.
    fn print_failure_counts(&self, state: &mut TallyState) {
        if self.progress != Progress::Lines {
            return;
        }
        for failures in &mut state.failures {
            if failures.count > failures.printed {
                failures.printed = failures.count;
                self.stream.line(format_args!("   {}", failures.line()));
            }
        }
    }
}

/// One line of the per-phase view and report.
pub fn phase_line(phase: &str, tally: &PhaseTally, elapsed: Duration) -> String {
    let name = if phase.is_empty() {
        "(no phase)"
    } else {
        phase
    };
    format!(
        "{name:<20} {:>4} done {:>3} running {:>4} queued {:>3} failed  {:>9} tok in {:>8} out {:>9} cache-r {:>8} cache-w  {:>7}  {:.1}s",
        tally.done,
        tally.running,
        tally.queued,
        tally.failed,
        tally.usage.input_tokens,
        tally.usage.output_tokens,
        tally.usage.cache_read_tokens,
        tally.usage.cache_write_tokens,
        cost_cell(tally.cost, &tally.unpriced),
        elapsed.as_secs_f64(),
    )
}

impl EventSink for Tally {
    fn event(&self, event: &RunEvent) {
        let mut state = self.lock();
        let phase = match event {
            RunEvent::Phase { title } => {
                if self.progress == Progress::Lines {
                    // Failures so far belong above the new phase's heading.
                    self.print_failure_counts(&mut state);
                    self.stream.line(format_args!("== {title}"));
                }
                self.phase_entry(&mut state, title);
                title.clone()
            }
            RunEvent::RunStarted { .. } | RunEvent::RunFinished { .. } => return,
            RunEvent::Log { message } => {
                match (&self.view, self.progress) {
                    (Some(view), _) => {
                        drop(state);
                        let _ = view.println(format!("   {message}"));
                    }
                    (None, Progress::Lines) => self.stream.line(format_args!("   {message}")),
                    (None, _) => {}
                }
                return;
            }
            RunEvent::AgentQueued { phase, .. } => {
                let phase = phase.clone().unwrap_or_default();
                self.phase_entry(&mut state, &phase).queued += 1;
                phase
            }
            RunEvent::AgentStarted { phase, .. } => {
                let phase = phase.clone().unwrap_or_default();
                let tally = self.phase_entry(&mut state, &phase);
                tally.queued = tally.queued.saturating_sub(1);
                tally.running += 1;
                phase
            }
            RunEvent::AgentFinished {
                id,
                phase,
                error,
                message,
                usage,
                model,
                replayed,
            } => {
                let phase = phase.clone().unwrap_or_default();
                // A replayed call was not paid again.
                let price = (!model.is_empty() && !*replayed).then(|| self.config.price(model));
                let tally = self.phase_entry(&mut state, &phase);
                if *replayed {
                    tally.queued = tally.queued.saturating_sub(1);
                } else {
                    tally.running = tally.running.saturating_sub(1);
                }
                match error {
                    None => tally.done += 1,
                    Some(_) => tally.failed += 1,
                }
                tally.usage.add(usage);
                match price {
                    Some(Some(price)) => tally.cost += price.cost(usage),
                    Some(None) => {
                        tally.unpriced.insert(model.clone());
                        state.unpriced.insert(model.clone());
                    }
                    None => {}
                }
                if let Some(kind) = error {
                    self.failed(
                        &mut state,
                        *id,
                        kind,
                        message.as_deref().unwrap_or_default(),
                    );
                }
                phase
            }
        };
        self.redraw(&state, &phase);
    }
}

/// The `--events` stream: one JSON object per line, flushed per event.
pub struct JsonLines {
    out: Mutex<Box<dyn Write + Send>>,
    started: Instant,
}

impl JsonLines {
    /// Writes to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        JsonLines {
            out: Mutex::new(out),
            started: Instant::now(),
        }
    }

    fn write(&self, mut value: serde_json::Value) {
        value["elapsed_ms"] = serde_json::json!(self.started.elapsed().as_millis() as u64);
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(out, "{value}");
        let _ = out.flush();
    }
}

impl EventSink for JsonLines {
    fn event(&self, event: &RunEvent) {
        self.write(event.to_json());
    }
}
