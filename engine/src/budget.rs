//! The token budget: reserve-then-settle, so that no fan-out, however wide, can overshoot it.
//!
//! Before a provider request is sent, its worst case (an upper bound of its prompt tokens plus its
//! maximum output tokens) is reserved. A request whose worst case does not fit in what remains is
//! refused without being sent. After the response, the reservation is settled to the actual usage.
//! A reservation that is dropped without being settled (a request cancelled mid-flight, whose cost
//! the provider may still charge) is charged in full, which keeps the guarantee honest.

use std::sync::{Arc, Mutex};

/// Refusal: a request's worst case does not fit in the remaining budget.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error(
    "token budget exhausted: this request may need up to {needed} tokens but only {remaining} of {total} remain (raise --budget-tokens, or lower maxTokens)"
)]
pub struct BudgetExhausted {
    /// The request's worst case.
    pub needed: u64,
    /// What remained when it was refused.
    pub remaining: u64,
    /// The run's total budget.
    pub total: u64,
}

#[derive(Debug, Default)]
struct LedgerState {
    spent: u64,
    reserved: u64,
}

/// A run's token budget.
#[derive(Debug)]
pub struct BudgetLedger {
    total: Option<u64>,
    state: Mutex<LedgerState>,
}

impl BudgetLedger {
    /// A ledger with `total` tokens, or unlimited.
    pub fn new(total: Option<u64>) -> Arc<Self> {
        Arc::new(BudgetLedger {
            total,
            state: Mutex::new(LedgerState::default()),
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

    /// Reserves `worst_case` tokens, or refuses when they do not fit.
    pub fn reserve(self: &Arc<Self>, worst_case: u64) -> Result<Reservation, BudgetExhausted> {
        let mut state = self.lock();
        if let Some(total) = self.total {
            let remaining = total.saturating_sub(state.spent + state.reserved);
            if worst_case > remaining {
                return Err(BudgetExhausted {
                    needed: worst_case,
                    remaining,
                    total,
                });
            }
        }
        state.reserved += worst_case;
        Ok(Reservation {
            ledger: Arc::clone(self),
            amount: worst_case,
            open: true,
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
}

impl Reservation {
    /// The reserved worst case.
    pub fn amount(&self) -> u64 {
        self.amount
    }

    /// The request completed: charge what it actually used and free the rest.
    pub fn settle(mut self, actual: u64) {
        self.close(actual);
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
                total: 100
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
    fn no_budget_means_unlimited() {
        let ledger = BudgetLedger::new(None);
        ledger.reserve(u64::MAX / 2).unwrap().settle(5);
        assert_eq!(ledger.remaining(), None);
        assert_eq!(ledger.spent(), 5);
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
