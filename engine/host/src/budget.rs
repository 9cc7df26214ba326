//! The token budget: reserve-then-settle, so that no fan-out, however wide, can overshoot it.
//!
//! Before a provider request is sent, its worst case (an upper bound of its prompt tokens plus its
//! maximum output tokens) is reserved. A request whose worst case does not fit in what remains is
//! refused without being sent. After the response, the reservation is settled to the actual usage.
//! A reservation that is dropped without being settled (a request cancelled mid-flight, whose cost
//! the provider may still charge) is charged in full, which keeps the guarantee honest.
//!
//! A run's ledger may have parents — ledgers shared with other runs, such as a tenant's daily
//! token quota. A reservation holds its worst case in the run's ledger and in every parent at
//! once (or in none), and settles in all of them, so no parent is overshot however many runs race.

use std::sync::{Arc, Mutex};

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
}

/// A token budget: a run's, or one shared by many runs.
#[derive(Debug)]
pub struct BudgetLedger {
    total: Option<u64>,
    /// For a shared ledger: what it is and how it frees, for refusals.
    scope: Option<String>,
    parents: Vec<Arc<BudgetLedger>>,
    state: Mutex<LedgerState>,
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

    fn lock(&self) -> std::sync::MutexGuard<'_, LedgerState> {
        // A poisoned ledger only means another thread panicked mid-update of two integers; the
        // numbers are still the best record we have.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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
}
