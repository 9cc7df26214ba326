//! The token budget: reserve-then-settle, so that no fan-out, however wide, can overshoot it.
//!
//! Before a provider request is sent, its worst case (an upper bound of its prompt tokens plus its
//! maximum output tokens) is reserved. A request whose worst case does not fit in what remains is
//! refused without being sent. After the response, the reservation is settled to the actual usage.
//! A reservation that is dropped without being settled (a request cancelled mid-flight, whose cost
//! the provider may still charge) is charged in full, which keeps the guarantee honest.
//!
//! Requests of one run wait for each other instead of starving each other: a request whose worst
//! case does not fit while other requests are in flight waits for their settlement
//! ([`BudgetLedger::admit`]), in FIFO order, and is refused only when it cannot fit even with
//! nothing else in flight. A waiter only ever waits for requests already in flight, each of which
//! settles, so the head of the queue is admitted or refused once they have; those behind it then
//! move up. A request that would fit while others wait still queues behind them, so a large
//! request is never overtaken forever by a stream of small ones. A request may let the ledger
//! lower its output ceiling to what the budget can still cover, down to a floor it names.
//!
//! A run's ledger may have parents — ledgers shared with other runs, such as a tenant's daily
//! token quota. A reservation holds its worst case in the run's ledger and in every parent at
//! once (or in none), and settles in all of them, so no parent is overshot however many runs race.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Refusal: a request's worst case does not fit in the remaining budget.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error(
    "token budget exhausted: this request may need up to {needed} tokens but only {remaining} of {total} remain{}",
    match scope {
        None => " (raise --budget-tokens, or lower maxTokens)".to_string(),
        Some(scope) => format!(" in {scope}"),
    }
)]
pub struct BudgetExhausted {
    /// The request's worst case.
    pub needed: u64,
    /// What remained when it was refused.
    pub remaining: u64,
    /// The ledger's total budget.
    pub total: u64,
    /// Which shared ledger refused, in words (`None`: the run's own budget).
    pub scope: Option<String>,
}

#[derive(Debug, Default)]
struct LedgerState {
    spent: u64,
    reserved: u64,
    /// The smallest worst case this ledger refused.
    smallest_refused: Option<u64>,
    /// The largest worst case asked of this ledger (admitted or not).
    largest_ask: u64,
    /// Tickets of the requests waiting in [`BudgetLedger::admit`], first come first.
    waiting: VecDeque<u64>,
    next_ticket: u64,
}

/// What one request asks of a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    /// An upper bound of the request's input tokens.
    pub input: u64,
    /// Its output ceiling, in tokens.
    pub output: u64,
    /// When set, the ledger may lower the output ceiling to what the budget can still cover,
    /// but not below this floor.
    pub lowest_output: Option<u64>,
}

/// An admitted request: its reservation and the output ceiling it may use.
#[derive(Debug)]
pub struct Admitted {
    /// The tokens held for it.
    pub reservation: Reservation,
    /// Its output ceiling: the one asked for, or lower (never below the floor).
    pub output: u64,
}

/// What [`BudgetLedger::admit`] decides for the head of the queue.
enum Decision {
    Fit(u64),
    Wait,
    Refuse(BudgetExhausted),
}

/// A token budget: a run's, or one shared by many runs.
#[derive(Debug)]
pub struct BudgetLedger {
    total: Option<u64>,
    /// For a shared ledger: what it is and how it frees, for refusals.
    scope: Option<String>,
    parents: Vec<Arc<BudgetLedger>>,
    state: Mutex<LedgerState>,
    /// Woken whenever a reservation closes or the queue's head leaves.
    changed: Notify,
}

impl BudgetLedger {
    /// A ledger with `total` tokens, or unlimited.
    pub fn new(total: Option<u64>) -> Arc<Self> {
        Self::with_parents(total, Vec::new())
    }

    /// A run's ledger whose reservations also hold in every one of `parents`.
    pub fn with_parents(total: Option<u64>, parents: Vec<Arc<BudgetLedger>>) -> Arc<Self> {
        Arc::new(BudgetLedger {
            total,
            scope: None,
            parents,
            state: Mutex::new(LedgerState::default()),
            changed: Notify::new(),
        })
    }

    /// A ledger shared by many runs, `scope` saying in words what it is (for refusals), with
    /// `spent` already used.
    pub fn shared(total: u64, spent: u64, scope: impl Into<String>) -> Arc<Self> {
        Arc::new(BudgetLedger {
            total: Some(total),
            scope: Some(scope.into()),
            parents: Vec::new(),
            state: Mutex::new(LedgerState {
                spent,
                ..LedgerState::default()
            }),
            changed: Notify::new(),
        })
    }

    /// The total budget, if any.
    pub fn total(&self) -> Option<u64> {
        self.total
    }

    /// Tokens settled so far.
    pub fn spent(&self) -> u64 {
        self.lock().spent
    }

    /// The smallest request worst case this ledger has refused, if any: with less than that
    /// left, no request like the ones already made can fit.
    pub fn smallest_refused(&self) -> Option<u64> {
        self.lock().smallest_refused
    }

    /// The largest request worst case asked of this ledger so far.
    pub fn largest_ask(&self) -> u64 {
        self.lock().largest_ask
    }

    /// Requests waiting for others to settle.
    pub fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }

    /// Tokens reserved by requests in flight.
    pub fn reserved(&self) -> u64 {
        self.lock().reserved
    }

    /// What new requests may still reserve: total − spent − reserved (`None` without a budget).
    pub fn remaining(&self) -> Option<u64> {
        let state = self.lock();
        self.total
            .map(|total| total.saturating_sub(state.spent + state.reserved))
    }

    /// Reserves `worst_case` tokens here and in every parent, or refuses (holding nothing)
    /// when they do not fit in one of them.
    pub fn reserve(self: &Arc<Self>, worst_case: u64) -> Result<Reservation, BudgetExhausted> {
        let mut parents = Vec::with_capacity(self.parents.len());
        for parent in &self.parents {
            // On refusal the parent reservations taken so far are released as they drop.
            match parent.reserve(worst_case) {
                Ok(reservation) => parents.push(reservation),
                Err(refused) => {
                    parents.into_iter().for_each(Reservation::release);
                    return Err(refused);
                }
            }
        }
        let mut state = self.lock();
        if let Some(total) = self.total {
            let remaining = total.saturating_sub(state.spent + state.reserved);
            if worst_case > remaining {
                state.smallest_refused = Some(
                    state
                        .smallest_refused
                        .map_or(worst_case, |s| s.min(worst_case)),
                );
                drop(state);
                parents.into_iter().for_each(Reservation::release);
                return Err(BudgetExhausted {
                    needed: worst_case,
                    remaining,
                    total,
                    scope: self.scope.clone(),
                });
            }
        }
        state.reserved += worst_case;
        Ok(Reservation {
            ledger: Arc::clone(self),
            amount: worst_case,
            open: true,
            parents,
        })
    }

    /// Admits a request: reserves its worst case (with its output ceiling lowered to fit, if it
    /// allows that) once it fits, waiting in FIFO order while requests in flight hold what it
    /// needs. Refuses it when it cannot fit even with nothing else in flight, or when a parent
    /// cannot hold it (parents, shared with other runs, are not waited for).
    pub async fn admit(self: &Arc<Self>, ask: Ask) -> Result<Admitted, BudgetExhausted> {
        let ticket = {
            let mut state = self.lock();
            state.largest_ask = state.largest_ask.max(ask.input + ask.output);
            if state.waiting.is_empty() {
                match self.decide(&mut state, ask) {
                    Decision::Fit(output) => return self.grant(&mut state, ask, output),
                    Decision::Refuse(refused) => return Err(refused),
                    Decision::Wait => {}
                }
            }
            let ticket = state.next_ticket;
            state.next_ticket += 1;
            state.waiting.push_back(ticket);
            ticket
        };
        // Leaves the queue however the wait ends, including by being dropped (a cancelled call).
        let queued = Queued {
            ledger: self,
            ticket,
        };
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.lock();
                if state.waiting.front() == Some(&ticket) {
                    let decided = match self.decide(&mut state, ask) {
                        Decision::Wait => None,
                        Decision::Fit(output) => Some(self.grant(&mut state, ask, output)),
                        Decision::Refuse(refused) => Some(Err(refused)),
                    };
                    if let Some(decided) = decided {
                        drop(state);
                        drop(queued);
                        return decided;
                    }
                }
            }
            notified.await;
        }
    }

    /// Whether the head of the queue fits now, must wait for requests in flight, or can never
    /// fit (spent only grows).
    fn decide(&self, state: &mut LedgerState, ask: Ask) -> Decision {
        let Some(total) = self.total else {
            return Decision::Fit(ask.output);
        };
        // What is left once everything in flight has settled (at best, for nothing).
        let unsettled = total.saturating_sub(state.spent);
        let output = match ask.lowest_output {
            Some(floor) => ask
                .output
                .min(unsettled.saturating_sub(ask.input))
                .max(floor.min(ask.output)),
            None => ask.output,
        };
        let needed = ask.input + output;
        let remaining = unsettled.saturating_sub(state.reserved);
        if needed <= remaining {
            Decision::Fit(output)
        } else if needed <= unsettled && state.reserved > 0 {
            Decision::Wait
        } else {
            state.smallest_refused = Some(state.smallest_refused.map_or(needed, |s| s.min(needed)));
            Decision::Refuse(BudgetExhausted {
                needed,
                remaining,
                total,
                scope: self.scope.clone(),
            })
        }
    }

    /// Reserves an admitted request here (the state is locked) and in every parent.
    fn grant(
        self: &Arc<Self>,
        state: &mut LedgerState,
        ask: Ask,
        output: u64,
    ) -> Result<Admitted, BudgetExhausted> {
        let needed = ask.input + output;
        let mut parents = Vec::with_capacity(self.parents.len());
        for parent in &self.parents {
            match parent.reserve(needed) {
                Ok(reservation) => parents.push(reservation),
                Err(refused) => {
                    parents.into_iter().for_each(Reservation::release);
                    return Err(refused);
                }
            }
        }
        state.reserved += needed;
        Ok(Admitted {
            reservation: Reservation {
                ledger: Arc::clone(self),
                amount: needed,
                open: true,
                parents,
            },
            output,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LedgerState> {
        // A poisoned ledger only means another thread panicked mid-update of two integers; the
        // numbers are still the best record we have.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A place in a ledger's queue; leaving it (admitted, refused or dropped) lets the next move up.
struct Queued<'a> {
    ledger: &'a BudgetLedger,
    ticket: u64,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        let mut state = self.ledger.lock();
        if let Some(at) = state.waiting.iter().position(|&t| t == self.ticket) {
            state.waiting.remove(at);
        }
        drop(state);
        self.ledger.changed.notify_waiters();
    }
}

/// Tokens held for one request in flight.
#[derive(Debug)]
pub struct Reservation {
    ledger: Arc<BudgetLedger>,
    amount: u64,
    open: bool,
    /// The same amount held in the ledger's parents.
    parents: Vec<Reservation>,
}

impl Reservation {
    /// The reserved worst case.
    pub fn amount(&self) -> u64 {
        self.amount
    }

    /// The request completed: charge what it actually used and free the rest. A provider that
    /// reports more than the worst case is charged the worst case (a real upper bound), so
    /// `spent ≤ total` holds whatever it claims.
    pub fn settle(mut self, actual: u64) {
        let charge = actual.min(self.amount);
        self.close(charge);
    }

    /// The request was never sent: free the whole reservation.
    pub fn release(mut self) {
        self.close(0);
    }

    fn close(&mut self, charge: u64) {
        if !self.open {
            return;
        }
        self.open = false;
        for parent in &mut self.parents {
            parent.close(charge);
        }
        let mut state = self.ledger.lock();
        state.reserved -= self.amount;
        state.spent += charge;
        drop(state);
        self.ledger.changed.notify_waiters();
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // Dropped unsettled: the request may have been sent and billed, so charge the worst case.
        let amount = self.amount;
        self.close(amount);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_refuses_what_does_not_fit() {
        let ledger = BudgetLedger::new(Some(100));
        let a = ledger.reserve(60).unwrap();
        let refused = ledger.reserve(41).unwrap_err();
        assert_eq!(
            refused,
            BudgetExhausted {
                needed: 41,
                remaining: 40,
                total: 100,
                scope: None,
            }
        );
        assert_eq!(ledger.remaining(), Some(40));
        a.settle(10);
        assert_eq!(ledger.spent(), 10);
        assert_eq!(ledger.remaining(), Some(90));
    }

    #[test]
    fn released_reservations_cost_nothing_and_dropped_ones_cost_everything() {
        let ledger = BudgetLedger::new(Some(100));
        ledger.reserve(30).unwrap().release();
        assert_eq!(ledger.spent(), 0);
        drop(ledger.reserve(30).unwrap());
        assert_eq!(ledger.spent(), 30);
        assert_eq!(ledger.reserved(), 0);
    }

    #[test]
    fn settling_more_than_the_reservation_charges_the_reservation() {
        let ledger = BudgetLedger::new(Some(100));
        ledger.reserve(40).unwrap().settle(20_000_000);
        assert_eq!(ledger.spent(), 40);
    }

    #[test]
    fn no_budget_means_unlimited() {
        let ledger = BudgetLedger::new(None);
        ledger.reserve(u64::MAX / 2).unwrap().settle(5);
        assert_eq!(ledger.remaining(), None);
        assert_eq!(ledger.spent(), 5);
    }

    #[test]
    fn a_shared_parent_is_never_overshot_by_runs_racing() {
        let tenant = BudgetLedger::shared(1_000, 100, "tenant acme's tokens_per_day quota");
        let runs: Vec<_> = (0..8)
            .map(|_| BudgetLedger::with_parents(Some(400), vec![Arc::clone(&tenant)]))
            .collect();
        std::thread::scope(|scope| {
            for run in &runs {
                scope.spawn(move || {
                    while let Ok(reservation) = run.reserve(9) {
                        reservation.settle(9);
                    }
                });
            }
        });
        assert!(tenant.spent() <= 1_000, "{}", tenant.spent());
        assert!(tenant.spent() > 1_000 - 9);
        assert_eq!(
            runs.iter().map(|r| r.spent()).sum::<u64>() + 100,
            tenant.spent()
        );
        let refused = runs[0].reserve(9).unwrap_err();
        assert!(
            refused
                .to_string()
                .ends_with("in tenant acme's tokens_per_day quota"),
            "{refused}"
        );
        // A refusal by the run's own budget holds nothing in the parent.
        let small = BudgetLedger::with_parents(Some(5), vec![BudgetLedger::shared(100, 0, "t")]);
        assert!(small.reserve(6).is_err());
        assert_eq!(small.parents[0].reserved(), 0);
    }

    #[test]
    fn concurrent_reservations_never_overshoot() {
        let ledger = BudgetLedger::new(Some(10_000));
        std::thread::scope(|scope| {
            for _ in 0..8 {
                let ledger = &ledger;
                scope.spawn(move || {
                    while let Ok(reservation) = ledger.reserve(7) {
                        reservation.settle(7);
                    }
                });
            }
        });
        assert!(ledger.spent() <= 10_000);
        assert!(ledger.spent() > 10_000 - 7);
    }

    fn ask(input: u64, output: u64) -> Ask {
        Ask {
            input,
            output,
            lowest_output: None,
        }
    }

    /// Polls `future` once: `Some` when it is ready already.
    fn now<F: std::future::Future>(future: F) -> Option<F::Output> {
        let mut future = std::pin::pin!(future);
        let waker = std::task::Waker::noop();
        match future
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker))
        {
            std::task::Poll::Ready(output) => Some(output),
            std::task::Poll::Pending => None,
        }
    }

    #[tokio::test]
    async fn a_request_waits_for_those_in_flight_instead_of_failing() {
        let ledger = BudgetLedger::new(Some(100));
        let first = ledger.admit(ask(40, 20)).await.unwrap();
        let second = tokio::spawn({
            let ledger = Arc::clone(&ledger);
            async move { ledger.admit(ask(50, 20)).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(ledger.waiting(), 1, "70 does not fit next to 60 in flight");
        first.reservation.settle(10);
        let second = second.await.unwrap().unwrap();
        assert_eq!(second.output, 20);
        assert_eq!((ledger.spent(), ledger.reserved()), (10, 70));
        assert_eq!(ledger.waiting(), 0);
    }

    #[tokio::test]
    async fn a_request_that_cannot_fit_even_alone_is_refused_at_once() {
        let ledger = BudgetLedger::new(Some(100));
        let held = ledger.admit(ask(30, 30)).await.unwrap();
        let refused = ledger.admit(ask(90, 20)).await.unwrap_err();
        assert_eq!((refused.needed, refused.remaining), (110, 40));
        // Nothing in flight and still too big: refused, not waiting forever.
        held.reservation.settle(60);
        let refused = ledger.admit(ask(30, 20)).await.unwrap_err();
        assert_eq!((refused.needed, refused.remaining), (50, 40));
        assert_eq!(ledger.smallest_refused(), Some(50));
        assert_eq!(ledger.largest_ask(), 110);
    }

    #[tokio::test]
    async fn waiters_are_served_first_come_first_served_and_a_refused_head_lets_the_next_go() {
        let ledger = BudgetLedger::new(Some(100));
        let held = ledger.admit(ask(50, 10)).await.unwrap();
        // The head needs 80: it waits, since 60 in flight may settle for less.
        let mut big = std::pin::pin!(ledger.admit(ask(70, 10)));
        assert!(now(big.as_mut()).is_none());
        // 30 would fit now, but it queues behind the head rather than overtaking it.
        let mut small = std::pin::pin!(ledger.admit(ask(20, 10)));
        assert!(now(small.as_mut()).is_none());
        assert_eq!(ledger.waiting(), 2);
        // Settled at 30: 70 remain, so the head can never fit and is refused; the next fits.
        held.reservation.settle(30);
        let refused = now(big.as_mut()).unwrap().unwrap_err();
        assert_eq!(refused.needed, 80);
        let small = now(small.as_mut()).unwrap().unwrap();
        assert_eq!(small.reservation.amount(), 30);
        assert_eq!(ledger.waiting(), 0);
    }

    #[tokio::test]
    async fn a_waiter_that_is_dropped_leaves_the_queue() {
        let ledger = BudgetLedger::new(Some(100));
        let held = ledger.admit(ask(60, 10)).await.unwrap();
        {
            let mut cancelled = std::pin::pin!(ledger.admit(ask(60, 10)));
            assert!(now(cancelled.as_mut()).is_none());
            assert_eq!(ledger.waiting(), 1);
        }
        assert_eq!(ledger.waiting(), 0);
        // The next request is not stuck behind a ticket nobody holds.
        assert_eq!(ledger.admit(ask(20, 10)).await.unwrap().output, 10);
        drop(held);
    }

    #[tokio::test]
    async fn an_output_ceiling_may_be_lowered_to_what_remains_but_not_below_its_floor() {
        let ledger = BudgetLedger::new(Some(5_000));
        let lowerable = |input| Ask {
            input,
            output: 8_192,
            lowest_output: Some(1_024),
        };
        let first = ledger.admit(lowerable(600)).await.unwrap();
        assert_eq!(first.output, 4_400);
        assert_eq!(first.reservation.amount(), 5_000);
        first.reservation.settle(639);
        let second = ledger.admit(lowerable(600)).await.unwrap();
        assert_eq!(second.output, 5_000 - 639 - 600);
        second.reservation.settle(3_000);
        // 1361 left: 600 of input and the floor of 1024 do not fit, with nothing in flight.
        let refused = ledger.admit(lowerable(600)).await.unwrap_err();
        assert_eq!(refused.needed, 1_624);
        // A ceiling the call named is never lowered.
        assert!(ledger.admit(ask(100, 8_192)).await.is_err());
        assert_eq!(ledger.admit(ask(100, 1_000)).await.unwrap().output, 1_000);
    }

    #[tokio::test]
    async fn a_lowered_request_waits_for_more_rather_than_shrinking_to_what_is_free_now() {
        let ledger = BudgetLedger::new(Some(10_000));
        let held = ledger.admit(ask(1_000, 5_000)).await.unwrap();
        let waiter = tokio::spawn({
            let ledger = Arc::clone(&ledger);
            async move {
                ledger
                    .admit(Ask {
                        input: 1_000,
                        output: 8_192,
                        lowest_output: Some(1_024),
                    })
                    .await
            }
        });
        tokio::task::yield_now().await;
        assert_eq!(ledger.waiting(), 1);
        held.reservation.settle(2_000);
        let admitted = waiter.await.unwrap().unwrap();
        assert_eq!(admitted.output, 7_000);
    }

    #[tokio::test]
    async fn a_parent_that_cannot_hold_a_request_refuses_it_without_a_wait() {
        let tenant = BudgetLedger::shared(100, 50, "tenant t's tokens_per_day quota");
        let run = BudgetLedger::with_parents(Some(1_000), vec![Arc::clone(&tenant)]);
        let refused = run.admit(ask(40, 20)).await.unwrap_err();
        assert!(
            refused
                .to_string()
                .ends_with("in tenant t's tokens_per_day quota")
        );
        assert_eq!(
            (run.reserved(), tenant.reserved(), run.waiting()),
            (0, 0, 0)
        );
        let admitted = run.admit(ask(30, 20)).await.unwrap();
        assert_eq!(tenant.reserved(), 50);
        admitted.reservation.settle(5);
        assert_eq!((run.spent(), tenant.spent()), (5, 55));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_thousand_wide_fan_out_under_a_tight_budget_ends_within_it_without_deadlock() {
        let ledger = BudgetLedger::new(Some(20_000));
        let tasks: Vec<_> = (0..1_000u64)
            .map(|i| {
                let ledger = Arc::clone(&ledger);
                tokio::spawn(async move {
                    let mut spent = 0;
                    // Up to three requests per agent, each costing a fraction of its worst case.
                    for turn in 0..3 {
                        let input = 300 + (i * 37 + turn * 11) % 900;
                        let admitted = ledger
                            .admit(Ask {
                                input,
                                output: 4_096,
                                lowest_output: Some(256),
                            })
                            .await;
                        let Ok(admitted) = admitted else {
                            return spent;
                        };
                        tokio::task::yield_now().await;
                        let cost = input / 3 + admitted.output / 8;
                        admitted.reservation.settle(cost);
                        spent += cost;
                    }
                    spent
                })
            })
            .collect();
        let mut spent = 0;
        for task in tasks {
            spent += task.await.unwrap();
        }
        assert!(ledger.spent() <= 20_000, "{}", ledger.spent());
        assert_eq!(spent, ledger.spent());
        assert_eq!((ledger.reserved(), ledger.waiting()), (0, 0));
        // Refused only at the end: what remains cannot hold the smallest request.
        assert!(
            ledger.remaining().unwrap() < 300 + 256,
            "{:?}",
            ledger.remaining()
        );
    }
}
