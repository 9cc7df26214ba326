//! The per-run agent scheduler: the concurrency cap (FIFO queue), the agent cap, and the table
//! of calls the guest has started but not yet collected.
//!
//! Calls run as tokio tasks. The guest starts them without blocking and later collects every
//! finished one with a single `wait`, so a fan-out of hundreds costs a handful of host round trips.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, mpsc};
use tokio::task::AbortHandle;

use crate::agent_loop::{
    AgentContext, AgentError, AgentOutput, AgentRequest, Conversation, SharedPrefixes,
    run_agent_recorded, transcript_json,
};
use crate::events::{EventSink, RunEvent};
use crate::provider::Usage;
use crate::record::{CallRecorder, ReplayPlan, describe_call, now_ms};

/// The outcome of one agent call.
pub type AgentOutcome = Result<AgentOutput, AgentError>;

/// Counters of a run's agent calls.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentStats {
    /// Calls accepted.
    pub started: u64,
    /// Calls that succeeded.
    pub succeeded: u64,
    /// Calls that failed, by error kind.
    pub failed: HashMap<&'static str, u64>,
    /// Calls refused at start (agent cap, invalid options).
    pub refused: u64,
    /// Calls answered from the journal of the run being resumed (not paid again).
    pub replayed: u64,
    /// Tokens used by all calls.
    pub usage: Usage,
    /// Tokens used by the calls of each phase (calls without a phase under "").
    pub usage_by_phase: std::collections::BTreeMap<String, Usage>,
    /// The most calls that held a concurrency slot at once.
    pub peak_in_flight: usize,
}

impl AgentStats {
    /// Calls that failed, all kinds together.
    pub fn failed_total(&self) -> u64 {
        self.failed.values().sum()
    }
}

/// Schedules one run's agent calls.
pub struct AgentScheduler {
    context: AgentContext,
    slots: Arc<Semaphore>,
    max_agents: u64,
    next_id: u64,
    /// Calls queued or running, shared with [`AgentStopper`]s.
    running: Running,
    /// Calls an [`AgentStopper`] stopped, for the guest's next look.
    stopped: mpsc::UnboundedReceiver<u64>,
    stop_sender: mpsc::UnboundedSender<u64>,
    finished: HashMap<u64, AgentOutcome>,
    sender: mpsc::UnboundedSender<(u64, AgentOutcome)>,
    receiver: mpsc::UnboundedReceiver<(u64, AgentOutcome)>,
    stats: Arc<Mutex<AgentStats>>,
    in_flight: Arc<AtomicUsize>,
    events: Arc<dyn EventSink>,
    /// Sibling calls sharing a prompt prefix take turns writing the provider's prompt cache.
    prefixes: Arc<SharedPrefixes>,
    /// Where calls are recorded, and which recorded answers a resumed run reuses.
    journal: Option<CallJournal>,
    /// Slots shared with other runs, if any.
    gate: Option<Arc<dyn SlotGate>>,
    /// Isolated calls not yet collected: the changeset generation each one's overlay started
    /// from (what keeping its changes is checked against).
    isolated: HashMap<u64, u64>,
}

/// A slot held in a pool shared with other runs; released when dropped.
pub type SharedSlot = Box<dyn Send>;

/// Slots shared with other runs — a process-wide pool, a tenant's agents in flight. A call
/// that has its run's slot waits here before it is sent, and holds what it gets until it ends.
pub trait SlotGate: Send + Sync + 'static {
    /// Waits for a shared slot.
    fn acquire(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = SharedSlot> + Send>>;
}

/// Each call queued or running: its task, and its phase (for the event of a call stopped).
type Running = Arc<Mutex<HashMap<u64, (AbortHandle, Option<String>)>>>;

/// Stops one call of a run from outside it (`corral runs stop ID --agent N`): the call ends at
/// once as cancelled, and the guest sees it as it would see its own `cancel`.
#[derive(Clone)]
pub struct AgentStopper {
    running: Running,
    stopped: mpsc::UnboundedSender<u64>,
}

impl AgentStopper {
    /// Stops call `id`; `false` when it is not queued or running (unknown, or finished).
    pub fn stop(&self, id: u64) -> bool {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let Some((task, _)) = running.get(&id) else {
            return false;
        };
        task.abort();
        // The scheduler lives as long as the run; if it is gone, nothing waits for this call.
        let _ = self.stopped.send(id);
        true
    }
}

/// A run's journal, as the scheduler uses it.
pub struct CallJournal {
    /// Where this run's calls are recorded.
    pub recorder: Arc<dyn CallRecorder>,
    /// Recorded answers that may stand in for calls (when resuming).
    pub replay: Option<ReplayPlan>,
}

impl AgentScheduler {
    /// A scheduler allowing `max_concurrent` calls at once and `max_agents` per run.
    pub fn new(
        context: AgentContext,
        max_concurrent: usize,
        max_agents: u64,
        events: Arc<dyn EventSink>,
    ) -> Self {
        let (sender, receiver) = mpsc::unbounded_channel();
        let (stop_sender, stopped) = mpsc::unbounded_channel();
        AgentScheduler {
            context,
            slots: Arc::new(Semaphore::new(max_concurrent.max(1))),
            max_agents,
            next_id: 1,
            running: Arc::default(),
            stopped,
            stop_sender,
            finished: HashMap::new(),
            isolated: HashMap::new(),
            sender,
            receiver,
            stats: Arc::new(Mutex::new(AgentStats::default())),
            in_flight: Arc::new(AtomicUsize::new(0)),
            events,
            prefixes: Arc::new(SharedPrefixes::default()),
            journal: None,
            gate: None,
        }
    }

    /// Makes every call also wait for a slot of `gate` (after its run's own slot).
    pub fn with_gate(mut self, gate: Arc<dyn SlotGate>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Records every call in `journal`, and answers calls from its replay plan where it allows.
    pub fn with_journal(mut self, journal: CallJournal) -> Self {
        self.journal = Some(journal);
        self
    }

    /// Counters so far.
    pub fn stats(&self) -> AgentStats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Calls started and not yet collected by `wait`.
    pub fn outstanding(&self) -> usize {
        self.lock_running().len() + self.finished.len()
    }

    /// Refuses (and counts as refused) a call when the run has started its `--max-agents`
    /// already; checked before any work on the request.
    pub fn check_room(&self) -> Result<(), AgentError> {
        let mut stats = self.lock_stats();
        if stats.started >= self.max_agents {
            stats.refused += 1;
            return Err(AgentError::AgentLimit(format!(
                "agent limit reached: this run may start at most {} agents (raise --max-agents)",
                self.max_agents
            )));
        }
        Ok(())
    }

    /// For an isolated call, the changeset generation its overlay started from; once.
    pub fn take_isolation(&mut self, id: u64) -> Option<u64> {
        self.isolated.remove(&id)
    }

    /// Accepts a call and queues it; fails at once past the agent cap.
    pub fn start(&mut self, request: AgentRequest) -> Result<u64, AgentError> {
        self.check_room()?;
        self.lock_stats().started += 1;
        let id = self.next_id;
        self.next_id += 1;
        self.events.event(&RunEvent::AgentQueued {
            id,
            label: request.label.clone(),
            phase: request.phase.clone(),
        });
        let journal = self.journal.as_mut().map(|record| {
            let model = self
                .context
                .provider
                .resolve_model(request.model.as_deref());
            let described = describe_call(&request, &model);
            let replayed = record
                .replay
                .as_mut()
                .and_then(|plan| plan.answer(id, &described.0));
            match &replayed {
                Some(output) => record
                    .recorder
                    .call_replayed(id, described, &request, &model, output),
                None => record.recorder.call_queued(id, described, &request, &model),
            }
            (Arc::clone(&record.recorder), replayed)
        });
        let journal = match journal {
            Some((_, Some(output))) => {
                // Answered from the journal: nothing is sent and nothing is paid again, and what
                // the call wrote is staged again.
                // An isolated call's changes wait for the script to keep them, as they did.
                let restaged = match &self.context.tools {
                    Some(root) if request.isolated => {
                        self.isolated.insert(id, root.generation());
                        Ok(())
                    }
                    Some(root) if !output.changes.is_empty() => root.restage(&output.changes),
                    _ => Ok(()),
                };
                let outcome: AgentOutcome = match restaged {
                    Ok(()) => Ok(output),
                    Err(error) => Err(AgentError::Denied(format!(
                        "the recorded answer's changes cannot be staged again: {error}"
                    ))),
                };
                {
                    let mut stats = self.lock_stats();
                    stats.succeeded += 1;
                    stats.replayed += 1;
                }
                self.events.event(&RunEvent::AgentFinished {
                    id,
                    phase: request.phase.clone(),
                    error: None,
                    message: None,
                    usage: Usage::default(),
                    model: outcome
                        .as_ref()
                        .map(|o| o.model.clone())
                        .unwrap_or_default(),
                    replayed: true,
                });
                self.finished.insert(id, outcome);
                return Ok(id);
            }
            Some((recorder, None)) => Some(recorder),
            None => None,
        };

        self.prefixes.register_request(&self.context, &request);
        let phase = request.phase.clone();
        let prefixes = Arc::clone(&self.prefixes);
        let mut context = self.context.clone();
        if request.isolated
            && let Some(root) = &self.context.tools
        {
            // Its own overlay, starting from the run's changeset as it is now.
            let (overlay, since) = root.isolated();
            context.tools = Some(overlay);
            self.isolated.insert(id, since);
        }
        let slots = Arc::clone(&self.slots);
        let sender = self.sender.clone();
        let stats = Arc::clone(&self.stats);
        let in_flight = Arc::clone(&self.in_flight);
        let events = Arc::clone(&self.events);
        let gate = self.gate.clone();
        let task = tokio::spawn(async move {
            // The semaphore is never closed, so acquiring only waits for a slot (FIFO).
            let Ok(_slot) = slots.acquire_owned().await else {
                return;
            };
            let _shared = match &gate {
                Some(gate) => Some(gate.acquire().await),
                None => None,
            };
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            let _in_flight = Decrement(in_flight);
            {
                let mut stats = stats.lock().unwrap_or_else(|p| p.into_inner());
                stats.peak_in_flight = stats.peak_in_flight.max(now);
            }
            events.event(&RunEvent::AgentStarted {
                id,
                phase: request.phase.clone(),
            });
            let started_ms = journal.as_ref().map(|_| now_ms());
            // A panic inside the agent (a host bug) fails this call at once instead of leaving
            // the run waiting for an outcome that never comes.
            let (outcome, conversation) =
                CatchPanic(Box::pin(run_agent_recorded(&context, &request, &prefixes)))
                    .await
                    .unwrap_or_else(|message| {
                        (
                            Err(AgentError::Provider(format!(
                                "the agent failed inside the host ({message}); this is a bug in \
                                 Corral, please report it with the workflow"
                            ))),
                            Conversation::default(),
                        )
                    });
            // Every token the call was charged, whether it succeeded or not.
            let usage = conversation.spend.usage;
            if let Some(recorder) = &journal {
                // A one-turn conversation is the prompt and the result, both recorded already;
                // longer ones (tools, schema corrections) are kept in full.
                let messages = &conversation.messages;
                let transcript = (messages.len() > 2).then(|| transcript_json(messages));
                recorder.call_finished(id, &outcome, &usage, false, started_ms, transcript);
            }
            {
                let mut stats = stats.lock().unwrap_or_else(|p| p.into_inner());
                stats.usage.add(&usage);
                let phase = request.phase.clone().unwrap_or_default();
                stats.usage_by_phase.entry(phase).or_default().add(&usage);
                match &outcome {
                    Ok(_) => stats.succeeded += 1,
                    Err(error) => *stats.failed.entry(error.kind()).or_default() += 1,
                }
            }
            events.event(&RunEvent::AgentFinished {
                id,
                phase: request.phase.clone(),
                error: outcome.as_ref().err().map(|e| e.kind().to_string()),
                message: outcome.as_ref().err().map(ToString::to_string),
                usage,
                // A failed call is priced as the model it asked for.
                model: match &outcome {
                    Ok(output) => output.model.clone(),
                    Err(_) => context.provider.resolve_model(request.model.as_deref()),
                },
                replayed: false,
            });
            // The receiver lives as long as the run; if the run is gone nobody needs this outcome.
            let _ = sender.send((id, outcome));
        });
        self.lock_running().insert(id, (task.abort_handle(), phase));
        Ok(id)
    }

    /// Waits until at least one of `ids` has finished, then returns every finished one of them.
    /// Unknown or already collected ids come back at once as `invalid-input`.
    pub async fn wait(&mut self, ids: &[u64]) -> Vec<(u64, AgentOutcome)> {
        let mut done = Vec::new();
        if ids.is_empty() {
            return done;
        }
        self.drain();
        loop {
            for &id in ids {
                if let Some(outcome) = self.finished.remove(&id) {
                    done.push((id, outcome));
                } else if !self.lock_running().contains_key(&id)
                    && !done.iter().any(|(seen, _)| *seen == id)
                {
                    done.push((
                        id,
                        Err(AgentError::InvalidInput(format!(
                            "unknown agent call id {id}: it was never started or was already collected"
                        ))),
                    ));
                }
            }
            if !done.is_empty() {
                return done;
            }
            tokio::select! {
                finished = self.receiver.recv() => match finished {
                    Some((id, outcome)) => self.record(id, outcome),
                    // Unreachable while `self.sender` lives; return rather than spin.
                    None => return done,
                },
                Some(id) = self.stopped.recv() => self.stopped_from_outside(id),
            }
            self.drain();
        }
    }

    /// Cancels a queued or running call; a finished call keeps its outcome.
    pub fn cancel(&mut self, id: u64) {
        self.drain();
        let task = self.lock_running().remove(&id);
        if let Some((task, _)) = task {
            task.abort();
            *self.lock_stats().failed.entry("cancelled").or_default() += 1;
            self.finished.insert(
                id,
                Err(AgentError::Cancelled(
                    "the agent call was cancelled by the workflow".to_string(),
                )),
            );
        }
    }

    /// Aborts every call still queued or running (the run is over).
    pub fn shutdown(&mut self) {
        for (_, (task, _)) in self.lock_running().drain() {
            task.abort();
        }
    }

    /// A handle that stops single calls of this run from outside it.
    pub fn stopper(&self) -> AgentStopper {
        AgentStopper {
            running: Arc::clone(&self.running),
            stopped: self.stop_sender.clone(),
        }
    }

    fn drain(&mut self) {
        while let Ok((id, outcome)) = self.receiver.try_recv() {
            self.record(id, outcome);
        }
        while let Ok(id) = self.stopped.try_recv() {
            self.stopped_from_outside(id);
        }
    }

    fn record(&mut self, id: u64, outcome: AgentOutcome) {
        // A call cancelled after it finished but before we saw it keeps the cancelled outcome
        // the guest was already promised only if it was removed from `running` by `cancel`.
        let known = self.lock_running().remove(&id).is_some();
        if known {
            self.finished.insert(id, outcome);
        }
    }

    /// A call an [`AgentStopper`] stopped (its task is aborted) ends as cancelled, recorded as
    /// such, unless its own outcome arrived first.
    fn stopped_from_outside(&mut self, id: u64) {
        let Some((_, phase)) = self.lock_running().remove(&id) else {
            return;
        };
        let error = AgentError::Cancelled(
            "the agent call was stopped (`corral runs stop --agent`)".to_string(),
        );
        *self.lock_stats().failed.entry(error.kind()).or_default() += 1;
        self.events.event(&RunEvent::AgentFinished {
            id,
            phase,
            error: Some(error.kind().to_string()),
            message: Some(error.to_string()),
            usage: Usage::default(),
            model: String::new(),
            replayed: false,
        });
        let outcome = Err(error);
        if let Some(journal) = &self.journal {
            journal
                .recorder
                .call_finished(id, &outcome, &Usage::default(), false, None, None);
        }
        self.finished.insert(id, outcome);
    }

    fn lock_running(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, (AbortHandle, Option<String>)>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_stats(&self) -> std::sync::MutexGuard<'_, AgentStats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for AgentScheduler {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Decrement(Arc<AtomicUsize>);

impl Drop for Decrement {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests;

/// A future that turns a panic while polling it into an error carrying the panic's message.
struct CatchPanic<F>(std::pin::Pin<Box<F>>);

impl<F: std::future::Future> std::future::Future for CatchPanic<F> {
    type Output = Result<F::Output, String>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(poll) => poll.map(Ok),
            Err(payload) => {
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|text| (*text).to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".to_string());
                std::task::Poll::Ready(Err(message))
            }
        }
    }
}
