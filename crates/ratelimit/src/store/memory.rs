//! The in-memory store: exact GCRA buckets in a sharded map, swept of idle keys.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rampart_core::{Clock, TokioClock};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{
    Admission, BucketStatus, Decision, LimitKind, Quota, Rate, RateLimitStore, Refusal,
    ReservationId, Snapshot, StoreError, StoreFuture,
};

/// Nanoseconds per minute: the cost of one unit in scaled time.
const NS_PER_MIN: u128 = 60_000_000_000;

/// The bit of a [`ReservationId`] that says the admission took a concurrency slot. The layer
/// already settles, refunds and releases each admission at most once, so the in-memory store
/// needs no more than this from the id.
const HOLDS_SLOT: u64 = 1;

/// The default store: per-key state in memory, local to the process.
///
/// - **Algorithm.** Each bucket is a GCRA ("virtual scheduling") bucket kept in exact integer
///   arithmetic: time is counted in nanoseconds × `per_minute`, so one unit costs exactly
///   60·10⁹ and refill is exact for any rate. Refunds move the theoretical arrival time back
///   (never past "now": a bucket is never fuller than its burst); overage moves it forward.
/// - **Memory.** Keys live in a sharded map. A key whose buckets are full and which has no
///   request in flight is indistinguishable from a key never seen, so it is dropped: each shard
///   is swept of such keys at most once per `sweep_interval` when a request touches it (and on
///   [`MemoryStore::sweep`]). Memory is therefore bounded by the keys active within the refill
///   horizon (`burst / rate`) plus one sweep interval, however many distinct keys pass.
/// - **Time** comes from a [`Clock`] (tokio's by default), so tests run on paused time.
/// - **Reservations.** Its [`ReservationId`]s only say whether a concurrency slot was taken:
///   settle, refund and release apply on every call (the layer makes each call at most once per
///   admission), and nothing is kept per admission.
pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    clock: Arc<dyn Clock>,
    epoch: Instant,
    sweep_ns: u128,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("shards", &self.shards.len())
            .field("keys", &self.len())
            .finish()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

/// Builds a [`MemoryStore`].
pub struct MemoryStoreBuilder {
    shards: usize,
    sweep_interval: Duration,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for MemoryStoreBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStoreBuilder")
            .field("shards", &self.shards)
            .field("sweep_interval", &self.sweep_interval)
            .finish()
    }
}

impl MemoryStoreBuilder {
    /// Number of shards (rounded up to a power of two, at least 1). Default 64.
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards;
        self
    }
    /// How often a shard is swept of idle keys. Default 10 s.
    pub fn sweep_interval(mut self, every: Duration) -> Self {
        self.sweep_interval = every;
        self
    }
    /// The clock (default: tokio's).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }
    /// Builds the store.
    pub fn build(self) -> MemoryStore {
        let n = self.shards.max(1).next_power_of_two();
        let epoch = self.clock.now();
        MemoryStore {
            shards: (0..n).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
            clock: self.clock,
            epoch,
            sweep_ns: self.sweep_interval.as_nanos(),
        }
    }
}

#[derive(Default)]
struct Shard {
    map: HashMap<Box<str>, KeyState>,
    last_sweep: u128,
}

impl Shard {
    fn maybe_sweep(&mut self, now: u128, every: u128) {
        if now.saturating_sub(self.last_sweep) >= every {
            self.sweep(now);
        }
    }
    fn sweep(&mut self, now: u128) {
        self.map.retain(|_, st| !st.is_idle(now));
        self.last_sweep = now;
    }
}

#[derive(Default)]
struct KeyState {
    requests: Bucket,
    tokens: Bucket,
    inflight: u32,
    generation: u64,
    notify: Option<Arc<Notify>>,
}

impl KeyState {
    fn is_idle(&self, now: u128) -> bool {
        self.inflight == 0
            && self.requests.is_full(now)
            && self.tokens.is_full(now)
            && self
                .notify
                .as_ref()
                .is_none_or(|n| Arc::strong_count(n) == 1)
    }

    fn snapshot(&self, now: u128, quota: &Quota) -> Snapshot {
        Snapshot {
            requests: quota.requests.map(|r| self.requests.status(now, &r)),
            tokens: quota.tokens.map(|r| self.tokens.status(now, &r)),
        }
    }

    fn changed(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        if let Some(n) = &self.notify {
            n.notify_waiters();
        }
    }

    fn decide(&mut self, now: u128, quota: &Quota, tokens: u64) -> Decision {
        if let Some(r) = &quota.requests {
            self.requests.align(now, r);
        }
        if let Some(r) = &quota.tokens {
            self.tokens.align(now, r);
        }
        let busy = quota.concurrency.is_some_and(|max| self.inflight >= max);
        let too_big = quota.tokens.is_some_and(|r| tokens > r.burst);
        let req_wait = quota
            .requests
            .map_or(0, |r| self.requests.wait_ns(now, &r, 1));
        let tok_wait = match quota.tokens {
            Some(r) if !too_big => self.tokens.wait_ns(now, &r, tokens),
            _ => 0,
        };
        if busy || too_big || req_wait > 0 || tok_wait > 0 {
            let kind = if busy {
                LimitKind::Concurrency
            } else if req_wait > 0 {
                LimitKind::Requests
            } else {
                LimitKind::Tokens
            };
            let wait = req_wait.max(tok_wait);
            return Decision::Refused(Refusal {
                kind,
                retry_after: (wait > 0 && !too_big).then(|| nanos(wait)),
                snapshot: self.snapshot(now, quota),
                generation: self.generation,
                degraded: false,
            });
        }
        if let Some(r) = &quota.requests {
            self.requests.charge(now, r, 1);
        }
        if let Some(r) = &quota.tokens {
            self.tokens.charge(now, r, tokens);
        }
        let mut id = 0;
        if quota.concurrency.is_some() {
            self.inflight = self.inflight.saturating_add(1);
            id |= HOLDS_SLOT;
        }
        Decision::Admitted(Admission {
            snapshot: self.snapshot(now, quota),
            id: ReservationId(id),
            degraded: false,
        })
    }
}

fn nanos(ns: u128) -> Duration {
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

/// One GCRA bucket. `tat` is the theoretical arrival time in scaled time (ns × `per_minute`);
/// the bucket is full when `tat <= now`.
#[derive(Default, Clone, Copy)]
struct Bucket {
    tat: u128,
    per_minute: u64,
}

impl Bucket {
    /// Rescales the state when the rate changed (config reload, override), keeping the debt.
    fn align(&mut self, now: u128, rate: &Rate) {
        let new = u128::from(rate.per_minute.max(1));
        let old = u128::from(self.per_minute);
        if old == new {
            return;
        }
        let debt_ns = if old == 0 {
            0
        } else {
            self.tat.saturating_sub(now * old).div_ceil(old)
        };
        self.tat = now * new + debt_ns * new;
        self.per_minute = rate.per_minute.max(1);
    }

    fn scaled_now(&self, now: u128) -> u128 {
        now * u128::from(self.per_minute)
    }

    fn debt(&self, now: u128) -> u128 {
        self.tat.saturating_sub(self.scaled_now(now))
    }

    fn is_full(&self, now: u128) -> bool {
        self.tat <= self.scaled_now(now)
    }

    /// Nanoseconds until `cost` fits (0: now).
    fn wait_ns(&self, now: u128, rate: &Rate, cost: u64) -> u128 {
        let need = self.debt(now) + u128::from(cost) * NS_PER_MIN;
        let cap = u128::from(rate.burst) * NS_PER_MIN;
        if need <= cap {
            0
        } else {
            (need - cap).div_ceil(u128::from(self.per_minute.max(1)))
        }
    }

    fn charge(&mut self, now: u128, rate: &Rate, cost: u64) {
        self.align(now, rate);
        self.tat = self.tat.max(self.scaled_now(now)) + u128::from(cost) * NS_PER_MIN;
    }

    fn refund(&mut self, now: u128, rate: &Rate, amount: u64) {
        self.align(now, rate);
        let s = self.scaled_now(now);
        self.tat = self
            .tat
            .max(s)
            .saturating_sub(u128::from(amount) * NS_PER_MIN)
            .max(s);
    }

    fn status(&self, now: u128, rate: &Rate) -> BucketStatus {
        let debt = self.debt(now);
        let cap = u128::from(rate.burst) * NS_PER_MIN;
        BucketStatus {
            limit: rate.per_minute,
            remaining: u64::try_from(cap.saturating_sub(debt) / NS_PER_MIN).unwrap_or(u64::MAX),
            reset: nanos(debt.div_ceil(u128::from(self.per_minute.max(1)))),
        }
    }
}

impl MemoryStore {
    /// A store with 64 shards, a 10 s sweep interval and tokio's clock.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// A builder.
    pub fn builder() -> MemoryStoreBuilder {
        MemoryStoreBuilder {
            shards: 64,
            sweep_interval: Duration::from_secs(10),
            clock: Arc::new(TokioClock),
        }
    }

    /// Keys currently held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).map.len()).sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every idle key now (full buckets, nothing in flight).
    pub fn sweep(&self) {
        let now = self.now();
        for s in self.shards.iter() {
            lock(s).sweep(now);
        }
    }

    fn now(&self) -> u128 {
        self.clock
            .now()
            .saturating_duration_since(self.epoch)
            .as_nanos()
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, Shard> {
        let h = self.hasher.hash_one(key);
        // The shard count is a power of two.
        let idx = (h as usize) & (self.shards.len() - 1);
        lock(&self.shards[idx])
    }

    /// The decision, synchronously (what [`RateLimitStore::acquire`] resolves to).
    pub fn acquire_now(&self, key: &str, quota: &Quota, tokens: u64) -> Decision {
        let now = self.now();
        let mut shard = self.shard(key);
        shard.maybe_sweep(now, self.sweep_ns);
        if let Some(st) = shard.map.get_mut(key) {
            return st.decide(now, quota, tokens);
        }
        let mut st = KeyState::default();
        let d = st.decide(now, quota, tokens);
        // A refusal of a fresh key (oversized request) leaves nothing worth keeping.
        if matches!(d, Decision::Admitted(_)) {
            shard.map.insert(key.into(), st);
        }
        d
    }

    /// The buckets of `key` at `quota`'s rates, charging nothing (what
    /// [`RateLimitStore::peek`] resolves to).
    pub fn peek_now(&self, key: &str, quota: &Quota) -> Snapshot {
        let now = self.now();
        let mut shard = self.shard(key);
        match shard.map.get_mut(key) {
            Some(st) => {
                if let Some(r) = &quota.requests {
                    st.requests.align(now, r);
                }
                if let Some(r) = &quota.tokens {
                    st.tokens.align(now, r);
                }
                st.snapshot(now, quota)
            }
            None => KeyState::default().snapshot(now, quota),
        }
    }
}

fn lock(m: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // Every update leaves the shard consistent, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RateLimitStore for MemoryStore {
    fn acquire<'a>(
        &'a self,
        key: &'a str,
        quota: &'a Quota,
        tokens: u64,
    ) -> StoreFuture<'a, Result<Decision, StoreError>> {
        Box::pin(std::future::ready(Ok(self.acquire_now(key, quota, tokens))))
    }

    fn try_acquire(
        &self,
        key: &str,
        quota: &Quota,
        tokens: u64,
    ) -> Option<Result<Decision, StoreError>> {
        Some(Ok(self.acquire_now(key, quota, tokens)))
    }

    fn peek<'a>(
        &'a self,
        key: &'a str,
        quota: &'a Quota,
    ) -> StoreFuture<'a, Result<Snapshot, StoreError>> {
        Box::pin(std::future::ready(Ok(self.peek_now(key, quota))))
    }

    fn settle(&self, key: &str, _id: ReservationId, rate: &Rate, reserved: u64, actual: u64) {
        if reserved == actual {
            return;
        }
        let now = self.now();
        let mut shard = self.shard(key);
        if actual < reserved {
            // A key that was swept is full: a refund to it changes nothing.
            if let Some(st) = shard.map.get_mut(key) {
                st.tokens.refund(now, rate, reserved - actual);
                st.changed();
            }
        } else {
            let st = shard.map.entry(key.into()).or_default();
            st.tokens.charge(now, rate, actual - reserved);
        }
    }

    fn refund_request(&self, key: &str, _id: ReservationId, rate: &Rate) {
        let now = self.now();
        let mut shard = self.shard(key);
        // A key that was swept is full: a refund to it changes nothing.
        if let Some(st) = shard.map.get_mut(key) {
            st.requests.refund(now, rate, 1);
            st.changed();
        }
    }

    fn release(&self, key: &str, id: ReservationId) {
        if id.0 & HOLDS_SLOT == 0 {
            return;
        }
        let mut shard = self.shard(key);
        if let Some(st) = shard.map.get_mut(key) {
            st.inflight = st.inflight.saturating_sub(1);
            st.changed();
        }
    }

    fn wait<'a>(
        &'a self,
        key: &'a str,
        refusal: &'a Refusal,
        until: Instant,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let notified = {
                let mut shard = self.shard(key);
                let Some(st) = shard.map.get_mut(key) else {
                    return;
                };
                if st.generation != refusal.generation {
                    return;
                }
                let notify = st.notify.get_or_insert_with(Default::default).clone();
                let mut notified = Box::pin(notify.notified_owned());
                // Registered under the shard lock: a release after this point wakes us.
                notified.as_mut().enable();
                notified
            };
            let _ = tokio::time::timeout_at(until, notified).await;
        })
    }
}
