//! [`RedisBudgetStore`]: spend budgets shared by every gateway replica.
//!
//! One Lua script per decision (reserve, settle), atomic across every scope and window it
//! touches, one round trip. Keys (all under one hash tag, so one cluster slot):
//!
//! - `<base>:budget:{budget}:s:<h>` — a hash per scope (`h`: 128 bits of the blake3 hash of the
//!   scope name, so no tenant id can shape a key): the day and month windows (`d`/`ds`/`dr`,
//!   `m`/`ms`/`mr`: period, spent, reserved) and one field per open reservation;
//! - `<base>:budget:{budget}:x:<h>` — the open reservations' ids by expiry (Redis server time);
//!   every script first releases up to 100 expired ones, so a replica that dies never holds
//!   budget for longer than `reservation_ttl`;
//! - `<base>:budget:{budget}:t:<id>` — a tombstone per settled reservation (`tombstone_ttl`): a
//!   second settle (a retry) or a late reserve of the same id changes nothing.
//!
//! The scope keys live 32 days past their last write plus `reservation_ttl` (a month window
//! never outlives that), tombstones `tombstone_ttl`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rampart_core::MicroUsd;
use rampart_cost_router::{
    BudgetStore, MemoryBudgetStore, Periods, ReservationId, ReserveOutcome, ReserveReply,
    ScopeLimit, ScopeSpend, StoreError, StoreFuture, Window,
};
use redis::Script;
use serde::Deserialize;
use tokio::time::Instant;

use crate::{ConfigError, OutagePolicy, RedisState, Unavailable};

/// The name of the store in metrics (`rampart_store_degraded{store="budget"}`) and headers.
pub const BUDGET_STORE: &str = "budget";

/// Amounts and limits above this (about 9 billion USD in micro-dollars) are clamped: the
/// scripts compare them as Lua numbers, exact up to 2^53.
pub const MAX_AMOUNT: MicroUsd = (1 << 53) - 1;

/// Settles waiting for Redis to come back; more are dropped (counted).
const MAX_PENDING_SETTLES: usize = 100_000;

/// How the Redis budget store behaves (`[state.budgets]`, say).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisBudgetConfig {
    /// While Redis is unavailable: `local_fallback` (default; a per-replica in-memory budget
    /// at `local_fraction` of every limit), `fail_open` (admit without a reservation) or
    /// `fail_closed` (refuse with 503 `state_store_unavailable`).
    pub outage_policy: OutagePolicy,
    /// The share of each limit a replica may spend on its own while Redis is unavailable
    /// (`local_fallback`), in `0..=1`. Default 0.5.
    pub local_fraction: f64,
    /// How long a reservation is held at most: one whose request has not settled by then (its
    /// replica died, or lost Redis) is released. Longer than the longest request. Default 15 min.
    #[serde(with = "humantime_serde")]
    pub reservation_ttl: Duration,
    /// How long a settle that could not reach Redis is retried in the background. Default 60 s.
    #[serde(with = "humantime_serde")]
    pub settle_retry: Duration,
}

impl Default for RedisBudgetConfig {
    fn default() -> Self {
        Self {
            outage_policy: OutagePolicy::LocalFallback,
            local_fraction: 0.5,
            reservation_ttl: Duration::from_secs(15 * 60),
            settle_retry: Duration::from_secs(60),
        }
    }
}

impl RedisBudgetConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.local_fraction) {
            return Err(ConfigError(
                "budgets.local_fraction must be between 0 and 1".to_owned(),
            ));
        }
        if self.reservation_ttl < Duration::from_secs(1) {
            return Err(ConfigError(
                "budgets.reservation_ttl must be at least 1s".to_owned(),
            ));
        }
        Ok(())
    }

    /// Tombstones outlive every retry of a settle.
    fn tombstone_ttl(&self) -> Duration {
        self.settle_retry * 2 + Duration::from_secs(60)
    }

    fn key_ttl(&self) -> Duration {
        Duration::from_secs(32 * 86_400) + self.reservation_ttl
    }
}

/// A settle waiting for Redis.
struct Pending {
    id: ReservationId,
    scopes: Vec<Arc<str>>,
    at: Periods,
    actual: MicroUsd,
    /// Only release a reservation that may have run late (see `settle.lua`).
    cancel: bool,
    since: Instant,
}

struct Inner {
    state: RedisState,
    config: RedisBudgetConfig,
    /// `<base>:budget:{budget}:`
    prefix: String,
    reserve: Script,
    settle: Script,
    spend: Script,
    /// The per-replica budget of `local_fallback`.
    local: MemoryBudgetStore,
    pending: Mutex<VecDeque<Pending>>,
    draining: AtomicBool,
}

/// Budgets in Redis, shared by every replica (see the module docs for keys and atomicity).
///
/// Implements [`BudgetStore`]; give it to `CostRouterLayer::builder().budget_store(..)`. Its
/// [`OutagePolicy`] is the single source of truth while Redis is unavailable: `local_fallback`
/// and `fail_open` answer with a degraded [`ReserveReply`] (the layer marks the response
/// `x-rampart-degraded: budget`), `fail_closed` fails the reservation and declares
/// [`error_policy`](BudgetStore::error_policy) `fail_closed`, which the layer follows whatever
/// its own `on_store_error`. Nothing has to be set on the layer.
#[derive(Clone)]
pub struct RedisBudgetStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisBudgetStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBudgetStore")
            .field("prefix", &self.inner.prefix)
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

fn script(body: &str) -> Script {
    Script::new(&format!("{}\n{body}", include_str!("budget/common.lua")))
}

/// 128 bits of the blake3 hash of `name`, in hex: a key part no input can shape.
pub(crate) fn hashed(name: &str) -> String {
    let h = blake3::hash(name.as_bytes());
    let mut first = [0u8; 16];
    first.copy_from_slice(&h.as_bytes()[..16]);
    format!("{:032x}", u128::from_be_bytes(first))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisBudgetStore {
    /// A store on `state` (registered as `budget` for the degraded gauge).
    pub fn new(state: RedisState, config: RedisBudgetConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        state.register_store(BUDGET_STORE);
        let prefix = format!("{}:budget:{{budget}}:", state.key_base());
        Ok(Self {
            inner: Arc::new(Inner {
                state,
                config,
                prefix,
                reserve: script(include_str!("budget/reserve.lua")),
                settle: script(include_str!("budget/settle.lua")),
                spend: script(include_str!("budget/spend.lua")),
                local: MemoryBudgetStore::new(),
                pending: Mutex::new(VecDeque::new()),
                draining: AtomicBool::new(false),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &RedisBudgetConfig {
        &self.inner.config
    }

    /// Settles waiting for Redis to come back.
    pub fn pending_settles(&self) -> usize {
        self.inner.lock_pending().len()
    }

    /// The per-replica fallback budget (`local_fallback`), for inspection.
    pub fn local(&self) -> &MemoryBudgetStore {
        &self.inner.local
    }
}

impl Inner {
    fn lock_pending(&self) -> std::sync::MutexGuard<'_, VecDeque<Pending>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn scope_keys(&self, scope: &str) -> [String; 2] {
        let h = hashed(scope);
        [
            format!("{}s:{h}", self.prefix),
            format!("{}x:{h}", self.prefix),
        ]
    }

    fn tombstone(&self, id: ReservationId) -> String {
        format!("{}t:{id}", self.prefix)
    }

    async fn reserve(
        self: &Arc<Self>,
        id: ReservationId,
        scopes: Vec<ScopeLimit>,
        amount: MicroUsd,
        at: Periods,
    ) -> Result<ReserveReply, StoreError> {
        let amount = amount.min(MAX_AMOUNT);
        let limit =
            |l: Option<MicroUsd>| l.map_or(String::new(), |v| v.min(MAX_AMOUNT).to_string());
        let mut keys = vec![self.tombstone(id)];
        let mut limits = Vec::with_capacity(scopes.len() * 2);
        for s in &scopes {
            keys.extend(self.scope_keys(&s.scope));
            limits.push(limit(s.daily));
            limits.push(limit(s.monthly));
        }
        let this = self.clone();
        let answer = self
            .state
            .call(move |mut conn| async move {
                let mut inv = this.reserve.prepare_invoke();
                for k in &keys {
                    inv.key(k);
                }
                inv.arg(id.to_string())
                    .arg(amount)
                    .arg(at.day)
                    .arg(at.month)
                    .arg(millis(this.config.reservation_ttl))
                    .arg(millis(this.config.key_ttl()));
                for l in &limits {
                    inv.arg(l);
                }
                inv.invoke_async::<(u8, usize, String, u64)>(&mut conn)
                    .await
            })
            .await;
        match answer {
            Ok((0, ..)) => Ok(ReserveReply::shared(ReserveOutcome::Reserved)),
            Ok((_, index, window, remaining)) => {
                let scope = scopes
                    .get(index.saturating_sub(1))
                    .map(|s| s.scope.clone())
                    .ok_or_else(|| StoreError("reserve: bad answer from redis".to_owned()))?;
                let window = if window == "m" {
                    Window::Month
                } else {
                    Window::Day
                };
                Ok(ReserveReply::shared(ReserveOutcome::Refused {
                    scope,
                    window,
                    remaining,
                }))
            }
            Err(e) => self.reserve_unavailable(e, id, scopes, amount, at),
        }
    }

    /// The outage policy, when a reservation could not be made in Redis.
    fn reserve_unavailable(
        self: &Arc<Self>,
        e: Unavailable,
        id: ReservationId,
        scopes: Vec<ScopeLimit>,
        amount: MicroUsd,
        at: Periods,
    ) -> Result<ReserveReply, StoreError> {
        // A call that timed out may still run when Redis answers again; one refused by the
        // breaker never left. A reservation the layer will not settle is cancelled later.
        let maybe_sent = !e.never_sent();
        let keys = || scopes.iter().map(|s| s.scope.clone()).collect::<Vec<_>>();
        match self.config.outage_policy {
            OutagePolicy::FailOpen => Ok(ReserveReply::degraded(ReserveOutcome::Reserved)),
            OutagePolicy::FailClosed => {
                if maybe_sent {
                    self.defer_settle(id, keys(), at, 0, true);
                }
                Err(StoreError(e.to_string()))
            }
            OutagePolicy::LocalFallback => {
                let fraction = self.config.local_fraction;
                let share = |l: Option<MicroUsd>| l.map(|v| (v as f64 * fraction).floor() as u64);
                let local: Vec<ScopeLimit> = scopes
                    .iter()
                    .map(|s| ScopeLimit {
                        scope: s.scope.clone(),
                        daily: share(s.daily),
                        monthly: share(s.monthly),
                    })
                    .collect();
                let outcome = match self.local.reserve(id, &local, amount, at).into_ready() {
                    Ok(Ok(reply)) => reply.outcome,
                    Ok(Err(e)) => return Err(e),
                    Err(_) => return Err(StoreError("local budget did not answer".to_owned())),
                };
                if maybe_sent && outcome != ReserveOutcome::Reserved {
                    self.defer_settle(id, keys(), at, 0, true);
                }
                Ok(ReserveReply::degraded(outcome))
            }
        }
    }

    /// One settle in Redis.
    async fn settle_shared(
        self: &Arc<Self>,
        id: ReservationId,
        scopes: &[Arc<str>],
        at: Periods,
        actual: MicroUsd,
        cancel: bool,
    ) -> Result<(), Unavailable> {
        let mut keys = vec![self.tombstone(id)];
        for s in scopes {
            keys.extend(self.scope_keys(s));
        }
        let this = self.clone();
        let actual = actual.min(MAX_AMOUNT);
        self.state
            .call(move |mut conn| async move {
                let mut inv = this.settle.prepare_invoke();
                for k in &keys {
                    inv.key(k);
                }
                inv.arg(id.to_string())
                    .arg(actual)
                    .arg(at.day)
                    .arg(at.month)
                    .arg(millis(this.config.tombstone_ttl()))
                    .arg(millis(this.config.key_ttl()))
                    .arg(if cancel { "1" } else { "0" });
                inv.invoke_async::<u8>(&mut conn).await
            })
            .await
            .map(|_| ())
    }

    /// Queues a settle (or a cancel) for when Redis answers again (idempotent, so a settle
    /// that did run before its answer was lost is harmless to repeat).
    fn defer_settle(
        self: &Arc<Self>,
        id: ReservationId,
        scopes: Vec<Arc<str>>,
        at: Periods,
        actual: MicroUsd,
        cancel: bool,
    ) {
        {
            let mut q = self.lock_pending();
            if q.len() >= MAX_PENDING_SETTLES {
                metrics::counter!("rampart_redis_budget_settles_dropped_total").increment(1);
                tracing::warn!("budget settle dropped: too many waiting for redis");
                return;
            }
            q.push_back(Pending {
                id,
                scopes,
                at,
                actual,
                cancel,
                since: Instant::now(),
            });
        }
        self.start_draining();
    }

    fn start_draining(self: &Arc<Self>) {
        if self.draining.swap(true, Ordering::AcqRel) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(self.clone().drain());
            }
            Err(_) => self.draining.store(false, Ordering::Release),
        }
    }

    /// Sends waiting settles, oldest first, until none is left; retried while Redis is
    /// unavailable, dropped (counted) after `settle_retry`.
    async fn drain(self: Arc<Self>) {
        let pause = (self.state.config().breaker_cooldown / 4)
            .clamp(Duration::from_millis(20), Duration::from_millis(500));
        loop {
            let next = {
                let q = self.lock_pending();
                q.front()
                    .map(|p| (p.id, p.scopes.clone(), p.at, p.actual, p.cancel, p.since))
            };
            let Some((id, scopes, at, actual, cancel, since)) = next else {
                self.draining.store(false, Ordering::Release);
                // A settle queued after the check but before the flag went down.
                if self.lock_pending().is_empty() || self.draining.swap(true, Ordering::AcqRel) {
                    return;
                }
                continue;
            };
            if since.elapsed() > self.config.settle_retry {
                self.lock_pending().pop_front();
                metrics::counter!("rampart_redis_budget_settles_dropped_total").increment(1);
                tracing::warn!(%id, "budget settle dropped: redis unavailable for too long");
                continue;
            }
            match self.settle_shared(id, &scopes, at, actual, cancel).await {
                Ok(()) => {
                    self.lock_pending().pop_front();
                }
                Err(_) => tokio::time::sleep(pause).await,
            }
        }
    }
}

impl BudgetStore for RedisBudgetStore {
    fn reserve(
        &self,
        id: ReservationId,
        scopes: &[ScopeLimit],
        amount: MicroUsd,
        at: Periods,
    ) -> StoreFuture<Result<ReserveReply, StoreError>> {
        let inner = self.inner.clone();
        let scopes = scopes.to_vec();
        StoreFuture::Boxed(Box::pin(async move {
            inner.reserve(id, scopes, amount, at).await
        }))
    }

    fn settle(
        &self,
        id: ReservationId,
        scopes: &[Arc<str>],
        at: Periods,
        actual: MicroUsd,
    ) -> StoreFuture<Result<(), StoreError>> {
        // Made while Redis was unavailable: settled here, and (below) in Redis too, so the
        // shared budget counts what was spent meanwhile once Redis is back.
        if self.inner.local.holds(id) {
            let _ = self.inner.local.settle(id, scopes, at, actual).into_ready();
        }
        let inner = self.inner.clone();
        let scopes = scopes.to_vec();
        StoreFuture::Boxed(Box::pin(async move {
            if inner
                .settle_shared(id, &scopes, at, actual, false)
                .await
                .is_err()
            {
                tracing::debug!(%id, "budget settle deferred until redis answers");
                inner.defer_settle(id, scopes, at, actual, false);
            }
            Ok(())
        }))
    }

    fn spend(&self, scope: &str, at: Periods) -> StoreFuture<Result<ScopeSpend, StoreError>> {
        let inner = self.inner.clone();
        let keys = inner.scope_keys(scope);
        StoreFuture::Boxed(Box::pin(async move {
            let this = inner.clone();
            let v = inner
                .state
                .call(move |mut conn| async move {
                    this.spend
                        .key(&keys[0])
                        .key(&keys[1])
                        .arg(at.day)
                        .arg(at.month)
                        .invoke_async::<(u64, u64, u64, u64)>(&mut conn)
                        .await
                })
                .await
                .map_err(|e| StoreError(e.to_string()))?;
            Ok(ScopeSpend {
                day_spent: v.0,
                day_reserved: v.1,
                month_spent: v.2,
                month_reserved: v.3,
            })
        }))
    }

    fn error_policy(&self) -> Option<rampart_cost_router::StoreFailure> {
        // Reservations fail only under `fail_closed`; the other policies answer degraded.
        Some(rampart_cost_router::StoreFailure::FailClosed)
    }
}
