//! Where a run's events go on the command line: plain progress lines, a live per-phase view on a
//! terminal, and the `--events` JSON Lines stream.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use corral_host::config::CorralConfig;
use corral_host::events::{EventSink, RunEvent};
use corral_host::provider::Usage;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Phases and log lines as plain lines on stderr (when stderr is not a terminal).
pub struct PlainLines;

impl EventSink for PlainLines {
    fn event(&self, event: &RunEvent) {
        let line = match event {
            RunEvent::Phase { title } => format!("== {title}"),
            RunEvent::Log { message } => format!("   {message}"),
            RunEvent::AgentFinished {
                id,
                error: Some(kind),
                ..
            } => format!("   agent #{id} failed: {kind}"),
            _ => return,
        };
        eprintln!("{line}");
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
        }
    }
}

/// Tallies events per phase, prices them, and (on a terminal) draws one line per phase.
pub struct Tally {
    config: CorralConfig,
    started: Instant,
    state: Mutex<TallyState>,
    view: Option<MultiProgress>,
}

#[derive(Default)]
struct TallyState {
    phases: BTreeMap<String, PhaseTally>,
    order: Vec<String>,
    bars: BTreeMap<String, ProgressBar>,
}

impl Tally {
    /// A tally; `live` draws the per-phase view on stderr.
    pub fn new(config: CorralConfig, live: bool) -> Arc<Self> {
        let view =
            live.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10)));
        Arc::new(Tally {
            config,
            started: Instant::now(),
            state: Mutex::new(TallyState::default()),
            view,
        })
    }

    /// Totals per phase, in the order phases appeared.
    pub fn phases(&self) -> Vec<(String, PhaseTally)> {
        let state = self.lock();
        state
            .order
            .iter()
            .map(|name| (name.clone(), state.phases[name].clone()))
            .collect()
    }

    /// Removes the live view (before the summary is printed).
    pub fn finish(&self) {
        let state = self.lock();
        for bar in state.bars.values() {
            bar.finish();
        }
        if let Some(view) = &self.view {
            let _ = view.clear();
        }
    }

    /// Writes a log line above the live view, or plainly.
    fn println(&self, line: &str) {
        match &self.view {
            Some(view) => {
                let _ = view.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TallyState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn phase_entry<'a>(&self, state: &'a mut TallyState, phase: &str) -> &'a mut PhaseTally {
        if !state.phases.contains_key(phase) {
            state.order.push(phase.to_string());
            if let Some(view) = &self.view {
                let bar = view.add(ProgressBar::new_spinner());
                bar.set_style(ProgressStyle::with_template("{msg}").expect("a valid template"));
                state.bars.insert(phase.to_string(), bar);
            }
        }
        state.phases.entry(phase.to_string()).or_default()
    }

    fn redraw(&self, state: &TallyState, phase: &str) {
        if let (Some(bar), Some(tally)) = (state.bars.get(phase), state.phases.get(phase)) {
            bar.set_message(phase_line(phase, tally, self.started.elapsed()));
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
        "{name:<20} {:>4} done {:>3} running {:>4} queued {:>3} failed  {:>9} tok in {:>8} out {:>9} cache-r {:>8} cache-w  ${:.4}  {:.1}s",
        tally.done,
        tally.running,
        tally.queued,
        tally.failed,
        tally.usage.input_tokens,
        tally.usage.output_tokens,
        tally.usage.cache_read_tokens,
        tally.usage.cache_write_tokens,
        tally.cost,
        elapsed.as_secs_f64(),
    )
}

impl EventSink for Tally {
    fn event(&self, event: &RunEvent) {
        let mut state = self.lock();
        let phase = match event {
            RunEvent::Phase { title } => {
                self.phase_entry(&mut state, title);
                title.clone()
            }
            RunEvent::RunStarted { .. } | RunEvent::RunFinished { .. } => return,
            RunEvent::Log { message } => {
                // Without the live view, `PlainLines` prints log lines (or nothing, with -q).
                drop(state);
                if self.view.is_some() {
                    self.println(&format!("   {message}"));
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
                usage,
                model,
                replayed,
            } => {
                let phase = phase.clone().unwrap_or_default();
                let cost = self
                    .config
                    .price(model)
                    .map_or(0.0, |price| price.cost(usage));
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
                tally.cost += cost;
                if let Some(kind) = error
                    && self.view.is_some()
                {
                    let line = format!("   agent #{id} failed: {kind}");
                    drop(state);
                    self.println(&line);
                    state = self.lock();
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
