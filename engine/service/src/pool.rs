//! [`FairPool`]: the process-wide pool of agent slots, shared by tenants with weighted fair
//! queuing (stride scheduling).
//!
//! Each tenant has a *pass*; granting it a slot advances its pass by `1 / weight`. A freed slot
//! goes to the waiting tenant with the smallest pass, so over time each busy tenant gets slots in
//! proportion to its weight. A tenant that starts waiting has its pass raised to the pool's
//! virtual time (the pass of the last grant), so idling banks no credit — and, the other way,
//! a tenant with one agent is served at the next freed slot even behind another tenant's
//! thousand: its pass is the virtual time, the other's is ahead of it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// The process-wide slot pool.
#[derive(Debug)]
pub struct FairPool {
    state: Mutex<PoolState>,
    capacity: usize,
}

/// While draining (a server shutting down), no slot is granted: calls in flight finish, and
/// no new provider request starts.

#[derive(Debug, Default)]
struct PoolState {
    free: usize,
    draining: bool,
    /// The pass of the most recent grant.
    virtual_time: f64,
    tenants: HashMap<String, TenantQueue>,
}

#[derive(Debug, Default)]
struct TenantQueue {
    weight: f64,
    pass: f64,
    waiters: VecDeque<oneshot::Sender<PoolSlot>>,
    in_use: usize,
    busy: Duration,
    granted: u64,
}

/// Slot time and counts of one tenant, for metrics and benchmarks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TenantPoolStats {
    /// Slots it holds now.
    pub in_use: usize,
    /// Its agents waiting for a slot.
    pub waiting: usize,
    /// Slot time it has used (released slots).
    pub busy: Duration,
    /// Slots granted so far.
    pub granted: u64,
}

/// A slot of the pool; freed when dropped.
#[derive(Debug)]
pub struct PoolSlot {
    /// `None` once the slot was handed back without releasing (a waiter that went away).
    pool: Option<Arc<FairPool>>,
    tenant: String,
    since: Instant,
}

impl Drop for PoolSlot {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            pool.release(&self.tenant, self.since.elapsed());
        }
    }
}

impl FairPool {
    /// A pool of `capacity` slots (at least one).
    pub fn new(capacity: usize) -> Arc<Self> {
        let capacity = capacity.max(1);
        Arc::new(FairPool {
            state: Mutex::new(PoolState {
                free: capacity,
                ..PoolState::default()
            }),
            capacity,
        })
    }

    /// How many slots it has.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Waits for a slot for `tenant`, whose share is `weight` (at least 1).
    pub async fn acquire(self: &Arc<Self>, tenant: &str, weight: u32) -> PoolSlot {
        let weight = f64::from(weight.max(1));
        let receiver = {
            let mut state = self.lock();
            let waiting = state.tenants.values().any(|t| !t.waiters.is_empty());
            if state.free > 0 && !waiting && !state.draining {
                state.free -= 1;
                let now = state.virtual_time;
                let queue = state.tenants.entry(tenant.to_string()).or_default();
                queue.weight = weight;
                queue.pass = queue.pass.max(now) + 1.0 / weight;
                queue.in_use += 1;
                queue.granted += 1;
                return self.slot(tenant);
            }
            let now = state.virtual_time;
            let queue = state.tenants.entry(tenant.to_string()).or_default();
            queue.weight = weight;
            if queue.waiters.is_empty() {
                queue.pass = queue.pass.max(now);
            }
            let (sender, receiver) = oneshot::channel();
            queue.waiters.push_back(sender);
            receiver
        };
        match receiver.await {
            Ok(slot) => slot,
            // The pool never drops a waiter without a slot while it lives.
            Err(_) => self.slot(tenant),
        }
    }

    fn slot(self: &Arc<Self>, tenant: &str) -> PoolSlot {
        PoolSlot {
            pool: Some(Arc::clone(self)),
            tenant: tenant.to_string(),
            since: Instant::now(),
        }
    }

    fn release(self: &Arc<Self>, tenant: &str, held: Duration) {
        let mut state = self.lock();
        if let Some(queue) = state.tenants.get_mut(tenant) {
            queue.in_use = queue.in_use.saturating_sub(1);
            queue.busy += held;
        }
        loop {
            if state.draining {
                state.free += 1;
                return;
            }
            let next = state
                .tenants
                .iter()
                .filter(|(_, queue)| !queue.waiters.is_empty())
                .min_by(|a, b| a.1.pass.total_cmp(&b.1.pass))
                .map(|(name, _)| name.clone());
            let Some(name) = next else {
                state.free += 1;
                return;
            };
            let queue = state.tenants.get_mut(&name).expect("chosen from the map");
            let waiter = queue.waiters.pop_front().expect("chosen for its waiters");
            let start = queue.pass;
            queue.pass += 1.0 / queue.weight;
            queue.in_use += 1;
            queue.granted += 1;
            let slot = PoolSlot {
                pool: Some(Arc::clone(self)),
                tenant: name.clone(),
                since: Instant::now(),
            };
            match waiter.send(slot) {
                Ok(()) => {
                    state.virtual_time = state.virtual_time.max(start);
                    return;
                }
                Err(mut slot) => {
                    // The waiter went away (its call was cancelled): undo and try the next,
                    // without letting the returned slot release itself into this lock.
                    slot.pool = None;
                    queue.in_use -= 1;
                    queue.granted -= 1;
                    queue.pass = start;
                    continue;
                }
            }
        }
    }

    /// Stops granting slots, for good: calls in flight finish, waiting ones never start.
    pub fn drain(&self) {
        self.lock().draining = true;
    }

    /// Slots held now, across tenants.
    pub fn in_use(&self) -> usize {
        self.capacity - self.lock().free.min(self.capacity)
    }

    /// Per-tenant counts and slot time.
    pub fn stats(&self) -> HashMap<String, TenantPoolStats> {
        self.lock()
            .tenants
            .iter()
            .map(|(name, queue)| {
                (
                    name.clone(),
                    TenantPoolStats {
                        in_use: queue.in_use,
                        waiting: queue.waiters.len(),
                        busy: queue.busy,
                        granted: queue.granted,
                    },
                )
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_tenant_with_one_agent_is_served_at_the_next_free_slot() {
        let pool = FairPool::new(2);
        let a1 = pool.acquire("a", 1).await;
        let _a2 = pool.acquire("a", 1).await;
        // A queues 100 more.
        let mut waiting_a = Vec::new();
        for _ in 0..100 {
            let pool = Arc::clone(&pool);
            waiting_a.push(tokio::spawn(async move { pool.acquire("a", 1).await }));
        }
        tokio::task::yield_now().await;
        while pool.stats()["a"].waiting < 100 {
            tokio::task::yield_now().await;
        }
        let b = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move { pool.acquire("b", 1).await })
        };
        while pool.stats().get("b").is_none_or(|s| s.waiting == 0) {
            tokio::task::yield_now().await;
        }
        drop(a1);
        let b = b.await.unwrap();
        assert_eq!(pool.stats()["b"].in_use, 1);
        assert_eq!(pool.stats()["a"].waiting, 100);
        drop(b);
        for task in waiting_a {
            task.abort();
        }
    }

    #[tokio::test]
    async fn busy_tenants_share_slots_by_weight() {
        let pool = FairPool::new(1);
        let first = pool.acquire("light", 1).await;
        let (mut heavy, mut light) = (Vec::new(), Vec::new());
        for _ in 0..300 {
            let p = Arc::clone(&pool);
            heavy.push(tokio::spawn(
                async move { drop(p.acquire("heavy", 3).await) },
            ));
            let p = Arc::clone(&pool);
            light.push(tokio::spawn(
                async move { drop(p.acquire("light", 1).await) },
            ));
        }
        while pool.stats().values().map(|s| s.waiting).sum::<usize>() < 600 {
            tokio::task::yield_now().await;
        }
        drop(first);
        // While both are busy, the weight-3 tenant gets three quarters of the grants.
        while pool.stats().values().map(|s| s.granted).sum::<u64>() < 201 {
            tokio::task::yield_now().await;
        }
        let stats = pool.stats();
        let (h, l) = (stats["heavy"].granted, stats["light"].granted - 1);
        let share = h as f64 / (h + l) as f64;
        assert!(
            l < 300 && h < 300,
            "one tenant ran dry: heavy {h}, light {l}"
        );
        assert!((0.72..=0.78).contains(&share), "heavy {h}, light {l}");
        for task in heavy.into_iter().chain(light) {
            task.abort();
        }
    }

    #[tokio::test]
    async fn a_draining_pool_lets_calls_finish_and_starts_none() {
        let pool = FairPool::new(2);
        let held = pool.acquire("a", 1).await;
        let waiting = {
            let p = Arc::clone(&pool);
            tokio::spawn(async move { p.acquire("a", 1).await })
        };
        let _other = pool.acquire("a", 1).await;
        while pool.stats()["a"].waiting == 0 {
            tokio::task::yield_now().await;
        }
        pool.drain();
        assert_eq!(pool.in_use(), 2);
        drop(held);
        assert_eq!(pool.in_use(), 1);
        let late = tokio::time::timeout(Duration::from_millis(50), pool.acquire("b", 1)).await;
        assert!(late.is_err(), "a draining pool granted a slot");
        assert!(!waiting.is_finished());
        waiting.abort();
    }

    #[tokio::test]
    async fn a_cancelled_waiter_does_not_lose_the_slot() {
        let pool = FairPool::new(1);
        let held = pool.acquire("a", 1).await;
        let gone = {
            let p = Arc::clone(&pool);
            tokio::spawn(async move { p.acquire("a", 1).await })
        };
        while pool.stats()["a"].waiting == 0 {
            tokio::task::yield_now().await;
        }
        gone.abort();
        let _ = gone.await;
        drop(held);
        let again = tokio::time::timeout(Duration::from_secs(5), pool.acquire("b", 1)).await;
        assert!(again.is_ok(), "the slot was lost");
    }
}
