//! The single-threaded executor that drives a workflow's futures over `agents.start`/`wait`.
//!
//! Every started agent call has a slot in a thread-local table, keyed by its host call id. An
//! [`AgentCall`](crate::AgentCall) parks its waker in its slot; [`block_on`] polls the root
//! future and, when nothing was woken, blocks in the host's `agents.wait` for all pending ids,
//! stores every outcome it gets back in its slot and wakes the waiting tasks.
//!
//! The host is behind the [`AgentHost`] trait so that the executor's logic can be tested
//! without wasm, against a fake host.

use crate::agent::{self, AgentError, AgentOptions, AgentOutput};
use crate::bindings::corral::workflow::agents as wit;
use crate::error::Error;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

/// The host's id of a started agent call.
pub(crate) type CallId = u64;

/// The outcome of one agent call.
pub(crate) type Outcome = Result<AgentOutput, AgentError>;

/// The agent operations the executor needs from the host.
pub(crate) trait AgentHost {
    /// `agents.start`.
    fn start(&self, prompt: &str, options: &AgentOptions) -> Result<CallId, AgentError>;
    /// `agents.wait`: blocks until one of `ids` finished, returns every finished one.
    fn wait(&self, ids: &[CallId]) -> Vec<(CallId, Outcome)>;
    /// `agents.cancel`.
    fn cancel(&self, id: CallId);
}

/// The real host, through the WIT imports.
struct WitHost;

impl AgentHost for WitHost {
    fn start(&self, prompt: &str, options: &AgentOptions) -> Result<CallId, AgentError> {
        wit::start(prompt, &options.to_wit()).map_err(AgentError::from_wit)
    }

    fn wait(&self, ids: &[CallId]) -> Vec<(CallId, Outcome)> {
        wit::wait(ids)
            .into_iter()
            .map(|completion| (completion.id, agent::outcome_from_wit(completion.outcome)))
            .collect()
    }

    fn cancel(&self, id: CallId) {
        wit::cancel(id);
    }
}

enum Slot {
    /// Started, outcome not known yet; the waker of the task awaiting it, once polled.
    Pending(Option<Waker>),
    /// Finished; waiting to be taken by its future.
    Done(Outcome),
}

struct Runtime {
    host: Rc<dyn AgentHost>,
    /// Started calls whose outcome has not been taken yet. Ordered so that `wait` sees ids in a
    /// stable order.
    calls: BTreeMap<CallId, Slot>,
    /// Calls cancelled because their future was dropped. They are included in later waits so
    /// the host can forget them; their outcomes are discarded.
    abandoned: Vec<CallId>,
}

thread_local! {
    static RUNTIME: RefCell<Runtime> = RefCell::new(Runtime {
        host: Rc::new(WitHost),
        calls: BTreeMap::new(),
        abandoned: Vec::new(),
    });
}

fn host() -> Rc<dyn AgentHost> {
    RUNTIME.with(|rt| rt.borrow().host.clone())
}

/// Replaces the host (tests use a fake one); returns the previous host.
#[cfg(test)]
pub(crate) fn set_host(host: Rc<dyn AgentHost>) -> Rc<dyn AgentHost> {
    RUNTIME.with(|rt| std::mem::replace(&mut rt.borrow_mut().host, host))
}

/// Starts a call on the host and gives it a slot.
pub(crate) fn start_call(prompt: &str, options: &AgentOptions) -> Result<CallId, AgentError> {
    // The host is called without holding the table borrowed.
    let id = host().start(prompt, options)?;
    RUNTIME.with(|rt| rt.borrow_mut().calls.insert(id, Slot::Pending(None)));
    Ok(id)
}

/// Takes the outcome of a call if it has finished; otherwise parks `waker` in its slot.
pub(crate) fn poll_call(id: CallId, waker: &Waker) -> Option<Outcome> {
    RUNTIME.with(|rt| {
        let mut rt = rt.borrow_mut();
        match rt.calls.get_mut(&id) {
            Some(Slot::Pending(parked)) => {
                if !parked.as_ref().is_some_and(|w| w.will_wake(waker)) {
                    *parked = Some(waker.clone());
                }
                None
            }
            Some(Slot::Done(_)) => match rt.calls.remove(&id) {
                Some(Slot::Done(outcome)) => Some(outcome),
                _ => unreachable!("the slot was just seen finished"),
            },
            None => Some(Err(AgentError::InvalidInput(format!(
                "agent call {id} is unknown to the SDK executor"
            )))),
        }
    })
}

/// Asks the host to cancel a call; its (cancelled) outcome still arrives through `wait`.
pub(crate) fn cancel_call(id: CallId) {
    host().cancel(id);
}

/// Forgets a call whose future was dropped, cancelling it on the host if it is still running.
pub(crate) fn abandon_call(id: CallId) {
    // `try_with`: a future may be dropped while the thread-local is being torn down.
    let Ok(Some(host)) = RUNTIME.try_with(|rt| {
        let mut rt = rt.try_borrow_mut().ok()?;
        match rt.calls.remove(&id) {
            Some(Slot::Pending(_)) => {
                rt.abandoned.push(id);
                Some(rt.host.clone())
            }
            Some(Slot::Done(_)) | None => None,
        }
    }) else {
        return;
    };
    host.cancel(id);
}

/// The root task's waker: records that something asked for the root to be polled again.
#[derive(Default)]
struct RootWake {
    woken: AtomicBool,
}

impl Wake for RootWake {
    fn wake(self: Arc<Self>) {
        self.woken.store(true, Ordering::Relaxed);
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Relaxed);
    }
}

/// The most calls one `agents.wait` asks about (the host refuses a wait over `--max-batch`,
/// 4096 by default, and the WIT world does not tell the guest its value).
pub const WAIT_BATCH: usize = 1024;

/// The message of the error returned when the workflow waits for something no agent call will
/// ever complete.
pub(crate) const DEADLOCK: &str =
    "workflow deadlocked: it awaits something that is not an agent call";

/// Runs a future to completion on the SDK's executor, blocking in the host's `agents.wait`
/// whenever the future waits for agent calls.
///
/// The [`workflow!`](crate::workflow) macro calls it for the main function; call it yourself
/// only in code that must block on SDK futures from a synchronous context.
///
/// # Errors
///
/// Fails with `workflow deadlocked: ...` when the future is pending, nothing has woken it and
/// no agent call is pending on the host, i.e. it awaits something that can never complete here
/// (the executor has no timers, I/O or threads).
pub fn block_on<F: Future>(future: F) -> Result<F::Output, Error> {
    let mut future = std::pin::pin!(future);
    let root = Arc::new(RootWake::default());
    let waker = Waker::from(root.clone());
    let mut cx = Context::from_waker(&waker);
    let mut poll = true;
    loop {
        if poll {
            root.woken.store(false, Ordering::Relaxed);
            if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                return Ok(output);
            }
            if root.woken.load(Ordering::Relaxed) {
                continue;
            }
        }
        let (mut ids, abandoned, host) = RUNTIME.with(|rt| {
            let rt = rt.borrow();
            let ids: Vec<CallId> = rt
                .calls
                .iter()
                .filter(|(_, slot)| matches!(slot, Slot::Pending(_)))
                .map(|(id, _)| *id)
                .collect();
            (ids, rt.abandoned.clone(), rt.host.clone())
        });
        if ids.is_empty() {
            return Err(Error::new(DEADLOCK));
        }
        ids.extend(abandoned);
        // The oldest pending calls only: the host runs calls first in, first out, so every call
        // that can finish next is among them, and one wait stays under the host's --max-batch.
        ids.truncate(WAIT_BATCH);
        let completions = host.wait(&ids);
        if completions.is_empty() {
            return Err(Error::new(format!(
                "the host's agents.wait returned no completion for {} pending calls",
                ids.len()
            )));
        }
        deliver(completions);
        poll = root.woken.load(Ordering::Relaxed);
    }
}

/// Stores each outcome in its slot and wakes the tasks waiting for them.
fn deliver(completions: Vec<(CallId, Outcome)>) {
    let wakers: Vec<Waker> = RUNTIME.with(|rt| {
        let mut rt = rt.borrow_mut();
        let mut wakers = Vec::new();
        for (id, outcome) in completions {
            match rt.calls.get_mut(&id) {
                Some(slot @ Slot::Pending(_)) => {
                    if let Slot::Pending(Some(waker)) = std::mem::replace(slot, Slot::Done(outcome))
                    {
                        wakers.push(waker);
                    }
                }
                // A duplicate completion: the first one wins.
                Some(Slot::Done(_)) => {}
                None => rt.abandoned.retain(|abandoned| *abandoned != id),
            }
        }
        wakers
    });
    // Woken outside the borrow: a waker may run arbitrary code.
    for waker in wakers {
        waker.wake();
    }
}

/// Polls many futures concurrently on the current task; resolves to their outputs in order.
///
/// Each child has its own waker, so a completion re-polls only the child that waits for it.
pub(crate) struct JoinAll<F: Future> {
    children: Vec<Option<std::pin::Pin<Box<F>>>>,
    outputs: Vec<Option<F::Output>>,
    wakers: Vec<Waker>,
    remaining: usize,
    shared: Arc<JoinShared>,
}

struct JoinShared {
    /// Children to poll on the next poll of the join, and whether each is already listed.
    ready: Mutex<(Vec<usize>, Vec<bool>)>,
    /// The waker of the task polling the join.
    parent: Mutex<Option<Waker>>,
}

struct ChildWake {
    index: usize,
    shared: Arc<JoinShared>,
}

impl Wake for ChildWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        {
            let mut ready = lock(&self.shared.ready);
            let (list, listed) = &mut *ready;
            if !listed[self.index] {
                listed[self.index] = true;
                list.push(self.index);
            }
        }
        if let Some(parent) = lock(&self.shared.parent).as_ref() {
            parent.wake_by_ref();
        }
    }
}

/// Locks a mutex, ignoring poisoning: the executor is single-threaded and a panic ends the run.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<F: Future> JoinAll<F> {
    pub(crate) fn new(futures: Vec<F>) -> Self {
        let len = futures.len();
        let shared = Arc::new(JoinShared {
            ready: Mutex::new(((0..len).collect(), vec![true; len])),
            parent: Mutex::new(None),
        });
        let wakers = (0..len)
            .map(|index| {
                Waker::from(Arc::new(ChildWake {
                    index,
                    shared: shared.clone(),
                }))
            })
            .collect();
        Self {
            children: futures.into_iter().map(|f| Some(Box::pin(f))).collect(),
            outputs: (0..len).map(|_| None).collect(),
            wakers,
            remaining: len,
            shared,
        }
    }
}

// The children are boxed and never moved out of their box, so the join itself may move.
impl<F: Future> Unpin for JoinAll<F> {}

impl<F: Future> Future for JoinAll<F> {
    type Output = Vec<F::Output>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        {
            let mut parent = lock(&this.shared.parent);
            if !parent.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *parent = Some(cx.waker().clone());
            }
        }
        let ready = {
            let mut ready = lock(&this.shared.ready);
            let (list, listed) = &mut *ready;
            for &index in list.iter() {
                listed[index] = false;
            }
            std::mem::take(list)
        };
        // A child woken while this loop runs is listed again and polled on the next poll; its
        // waker also wakes the parent, so that poll happens.
        for index in ready {
            let Some(child) = this.children[index].as_mut() else {
                continue;
            };
            let mut child_cx = Context::from_waker(&this.wakers[index]);
            if let Poll::Ready(output) = child.as_mut().poll(&mut child_cx) {
                this.outputs[index] = Some(output);
                this.children[index] = None;
                this.remaining -= 1;
            }
        }
        if this.remaining == 0 {
            Poll::Ready(
                this.outputs
                    .iter_mut()
                    .map(|o| o.take().expect("every child has finished"))
                    .collect(),
            )
        } else {
            Poll::Pending
        }
    }
}
