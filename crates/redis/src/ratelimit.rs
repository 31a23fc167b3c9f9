//! The Redis rate-limit store: [`RedisRateLimitStore`], a [`RateLimitStore`] shared by every
//! gateway replica.
//!
//! - **One round trip per decision.** [`acquire`](RateLimitStore::acquire) runs one Lua script
//!   (`EVALSHA`) that decides every dimension of the key — requests per minute, tokens per minute,
//!   concurrency — all or nothing, on the Redis server's clock (`TIME`), never a replica's. The
//!   algorithm is the in-memory store's GCRA, with microsecond time.
//! - **Keys** (under `<prefix>:v1:rl`, or `<prefix>:v1:rl:<scope>` for a
//!   [`scoped`](RedisRateLimitStore::scoped) store): `{<key>}:b` (both buckets, a hash),
//!   `{<key>}:c` (the concurrency slots: reservation id → lease expiry) and `{<key>}:r` (the
//!   reservation records that make settles idempotent). One hash tag per rate-limit key, so a decision touches one
//!   Redis Cluster slot; the key is percent-encoded (or hashed when long) so that no tenant id or
//!   header value can break out of its tag. Every key has a TTL: the buckets until they are full
//!   again (a full bucket is the same as no key), the sets until the last lease ends.
//! - **Reservations.** Every admission gets a random reservation id. A concurrency slot is a
//!   member of the slot set, scored by its lease expiry and purged by the script when the lease
//!   ends, so a replica that dies mid-request leaks nothing for longer than the lease. Settle,
//!   request refund and release consume the reservation's records: each takes effect at most once
//!   per reservation id, however often it is sent. They are written in the background, in order,
//!   batched into pipelines, and retried after an outage.
//! - **Outage policy** ([`OutagePolicy`], one per store, the single source of truth): while Redis
//!   is unavailable (error, timeout, or the shared breaker open), `local_fallback` decides in a
//!   per-replica [`MemoryStore`] at `local_fraction` of every configured limit, `fail_open`
//!   admits, `fail_closed` refuses with 503 `state_store_unavailable`. Whatever is admitted or
//!   refused with 429 meanwhile is marked `x-rampart-degraded: ratelimit`; the gauge and the
//!   transition logs come from [`RedisState`]. A reservation made locally is settled locally, one made in Redis is settled
//!   in Redis (best effort when Redis is down in between). Recovery is automatic.

mod keys;
mod worker;

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rampart_ratelimit::store::StoreFuture;
use rampart_ratelimit::{
    Admission, BucketStatus, Decision, LimitKind, MemoryStore, Quota, Rate, RateLimitStore,
    Refusal, ReservationId, Snapshot, StoreError, StoreFailure,
};
use redis::Script;
use serde::Deserialize;
use tokio::time::Instant;

pub use keys::MAX_PLAIN as MAX_PLAIN_KEY;

use crate::{ConfigError, OutagePolicy, RedisState};
use worker::{Op, OpKind, Queue};

/// The store's name in metrics (`rampart_store_degraded{store="ratelimit"}`) and keys.
pub const STORE_NAME: &str = "ratelimit";

/// The bit of a [`ReservationId`] that marks a reservation made in the local fallback store.
const LOCAL: u64 = 1 << 63;

/// Operations kept for Redis while it is unavailable, at most.
const QUEUE_CAPACITY: usize = 100_000;

/// Settings of the Redis rate-limit store.
///
/// ```toml
/// outage_policy = "local_fallback"   # or "fail_open", "fail_closed"
/// local_fraction = 0.5        # each replica's share of every limit while Redis is down
/// lease = "10m"               # longest a concurrency slot outlives a replica that never frees it
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisRateLimitConfig {
    /// What decisions do while Redis is unavailable. Default `local_fallback`.
    pub outage_policy: OutagePolicy,
    /// Under `local_fallback`: the fraction of each configured limit (rate, burst, concurrency)
    /// that every replica enforces on its own, rounded down, at least 1. With N replicas behind a
    /// balancer, `1 / N` keeps the total at the configured limit. Default 0.5.
    pub local_fraction: f64,
    /// How long a concurrency slot and a reservation's records live without a release: the
    /// longest a dead replica's requests hold slots, and the longest response whose slot is
    /// kept. Default 10 minutes.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
}

impl Default for RedisRateLimitConfig {
    fn default() -> Self {
        Self {
            outage_policy: OutagePolicy::LocalFallback,
            local_fraction: 0.5,
            lease: Duration::from_secs(600),
        }
    }
}

/// A [`RateLimitStore`] in Redis, shared by every replica; see the [module docs](self).
pub struct RedisRateLimitStore {
    state: RedisState,
    base: String,
    config: RedisRateLimitConfig,
    lease_ms: u64,
    admit: Script,
    local: MemoryStore,
    ids: RandomState,
    counter: AtomicU64,
    queue: Queue,
}

impl std::fmt::Debug for RedisRateLimitStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRateLimitStore")
            .field("base", &self.base)
            .field("config", &self.config)
            .field("redis_up", &self.state.is_up())
            .finish_non_exhaustive()
    }
}

impl RedisRateLimitStore {
    /// A store on `state` (shared with the other Redis stores of the process), its keys under
    /// `<prefix>:v1:rl`. Registers the store for the `rampart_store_degraded{store="ratelimit"}`
    /// gauge and starts its background writer on the current Tokio runtime (outside one it fails
    /// with a [`ConfigError`]).
    ///
    /// Two limiters that must not share buckets (a gateway's per-tenant and per-target limiters,
    /// whose keys could coincide) each take a store of their own [`scoped`](Self::scoped).
    pub fn new(state: RedisState, config: RedisRateLimitConfig) -> Result<Self, ConfigError> {
        Self::build(state, config, None)
    }

    /// A store whose keys live under `<prefix>:v1:rl:<scope>`, apart from every other scope's:
    /// one per limiter (e.g. `tenant`, `target`). `scope` is ASCII letters, digits, `_` or `-`.
    pub fn scoped(
        state: RedisState,
        config: RedisRateLimitConfig,
        scope: &str,
    ) -> Result<Self, ConfigError> {
        if scope.is_empty()
            || !scope
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(ConfigError(format!(
                "ratelimit: scope {scope:?} must be non-empty ASCII letters, digits, '_' or '-'"
            )));
        }
        Self::build(state, config, Some(scope))
    }

    fn build(
        state: RedisState,
        config: RedisRateLimitConfig,
        scope: Option<&str>,
    ) -> Result<Self, ConfigError> {
        if !(config.local_fraction > 0.0 && config.local_fraction <= 1.0) {
            return Err(ConfigError(
                "ratelimit: local_fraction must be greater than 0 and at most 1".to_owned(),
            ));
        }
        if config.lease < Duration::from_millis(1) {
            return Err(ConfigError(
                "ratelimit: lease must be at least 1ms".to_owned(),
            ));
        }
        let ops = Arc::new(Script::new(include_str!("ratelimit/ops.lua")));
        let queue =
            Queue::start(state.clone(), ops, config.lease, QUEUE_CAPACITY).ok_or_else(|| {
                ConfigError("ratelimit: the store must be built inside a Tokio runtime".to_owned())
            })?;
        state.register_store(STORE_NAME);
        Ok(Self {
            base: match scope {
                Some(scope) => format!("{}:rl:{scope}", state.key_base()),
                None => format!("{}:rl", state.key_base()),
            },
            lease_ms: u64::try_from(config.lease.as_millis()).unwrap_or(u64::MAX),
            state,
            config,
            admit: Script::new(include_str!("ratelimit/admit.lua")),
            local: MemoryStore::new(),
            ids: RandomState::new(),
            counter: AtomicU64::new(0),
            queue,
        })
    }

    /// The settings.
    pub fn config(&self) -> &RedisRateLimitConfig {
        &self.config
    }

    /// The Redis keys of rate-limit key `key`: buckets (hash), concurrency slots (sorted set) and
    /// reservation records (sorted set). All three share one hash tag.
    pub fn redis_keys(&self, key: &str) -> [String; 3] {
        keys::keys(&self.base, key)
    }

    /// The per-replica store that decides under `local_fallback`.
    pub fn local_store(&self) -> &MemoryStore {
        &self.local
    }

    fn next_id(&self) -> u64 {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.ids.hash_one(n) & !LOCAL
    }

    /// The quota a replica enforces alone under `local_fallback`.
    fn local_quota(&self, quota: &Quota) -> Quota {
        let f = self.config.local_fraction;
        // Rounded down, at least 1: N replicas never admit more than the configured total.
        let part = |n: u64| ((n as f64 * f).floor() as u64).max(1);
        Quota {
            requests: quota
                .requests
                .map(|r| Rate::new(part(r.per_minute), part(r.burst))),
            tokens: quota
                .tokens
                .map(|r| Rate::new(part(r.per_minute), part(r.burst))),
            concurrency: quota
                .concurrency
                .map(|c| u32::try_from(part(u64::from(c))).unwrap_or(c)),
        }
    }

    fn push(&self, kind: OpKind, key: &str, id: u64, args: OpArgs) {
        self.queue.push(Op {
            kind,
            keys: self.redis_keys(key),
            id: format!("{id:x}"),
            rpm: args.rpm,
            tpm: args.tpm,
            reserved: args.reserved,
            actual: args.actual,
            at: Instant::now(),
        });
    }

    async fn run_script(
        &self,
        mode: &'static str,
        key: &str,
        id: u64,
        quota: &Quota,
        tokens: u64,
    ) -> Result<Reply, crate::Unavailable> {
        let [b, c, r] = self.redis_keys(key);
        let mut inv = self.admit.prepare_invoke();
        inv.key(b)
            .key(c)
            .key(r)
            .arg(mode)
            .arg(format!("{id:x}"))
            .arg(tokens)
            .arg(quota.requests.map_or(0, |r| r.per_minute))
            .arg(quota.requests.map_or(0, |r| r.burst))
            .arg(quota.tokens.map_or(0, |r| r.per_minute))
            .arg(quota.tokens.map_or(0, |r| r.burst))
            .arg(quota.concurrency.unwrap_or(0))
            .arg(self.lease_ms);
        let v: Vec<i64> = self
            .state
            .call(|mut conn| async move { inv.invoke_async(&mut conn).await })
            .await?;
        Reply::parse(&v).ok_or_else(|| crate::Unavailable("malformed script reply".into()))
    }

    fn unavailable(&self, e: &crate::Unavailable) -> StoreError {
        StoreError(format!(
            "redis {} ({})",
            e.0,
            self.config.outage_policy.as_str()
        ))
    }
}

#[derive(Clone, Copy, Default)]
struct OpArgs {
    rpm: u64,
    tpm: u64,
    reserved: u64,
    actual: u64,
}

/// The admission script's answer.
struct Reply {
    admitted: bool,
    kind: i64,
    retry_us: i64,
    req_remaining: i64,
    req_reset_us: i64,
    tok_remaining: i64,
    tok_reset_us: i64,
}

impl Reply {
    fn parse(v: &[i64]) -> Option<Self> {
        match *v {
            [admitted, kind, retry_us, rr, rs, tr, ts] => Some(Self {
                admitted: admitted == 1,
                kind,
                retry_us,
                req_remaining: rr,
                req_reset_us: rs,
                tok_remaining: tr,
                tok_reset_us: ts,
            }),
            _ => None,
        }
    }

    fn snapshot(&self, quota: &Quota) -> Snapshot {
        let status = |rate: Rate, remaining: i64, reset_us: i64| BucketStatus {
            limit: rate.per_minute,
            remaining: u64::try_from(remaining).unwrap_or(0),
            reset: Duration::from_micros(u64::try_from(reset_us).unwrap_or(0)),
        };
        Snapshot {
            requests: quota
                .requests
                .map(|r| status(r, self.req_remaining, self.req_reset_us)),
            tokens: quota
                .tokens
                .map(|r| status(r, self.tok_remaining, self.tok_reset_us)),
        }
    }

    fn decision(&self, quota: &Quota, id: u64) -> Decision {
        let snapshot = self.snapshot(quota);
        if self.admitted {
            return Decision::Admitted(Admission {
                snapshot,
                id: ReservationId(id),
                degraded: false,
            });
        }
        Decision::Refused(Refusal {
            kind: match self.kind {
                1 => LimitKind::Requests,
                3 => LimitKind::Concurrency,
                _ => LimitKind::Tokens,
            },
            retry_after: u64::try_from(self.retry_us).ok().map(Duration::from_micros),
            snapshot,
            generation: 0,
            degraded: false,
        })
    }
}

/// Marks a local decision: degraded, and its id flagged local.
fn local_decision(d: Decision) -> Decision {
    match d {
        Decision::Admitted(a) => Decision::Admitted(Admission {
            id: ReservationId(a.id.0 | LOCAL),
            degraded: true,
            ..a
        }),
        Decision::Refused(r) => Decision::Refused(Refusal {
            degraded: true,
            ..r
        }),
    }
}

fn is_local(id: ReservationId) -> bool {
    id.0 & LOCAL != 0
}

impl RateLimitStore for RedisRateLimitStore {
    fn acquire<'a>(
        &'a self,
        key: &'a str,
        quota: &'a Quota,
        tokens: u64,
    ) -> StoreFuture<'a, Result<Decision, StoreError>> {
        Box::pin(async move {
            let id = self.next_id();
            match self.run_script("a", key, id, quota, tokens).await {
                Ok(reply) => Ok(reply.decision(quota, id)),
                Err(e) => {
                    if !e.never_sent() {
                        // The script may have run and only its reply been lost: undo whatever
                        // it charged (nothing, if it never ran).
                        self.push(
                            OpKind::Cancel,
                            key,
                            id,
                            OpArgs {
                                rpm: quota.requests.map_or(0, |r| r.per_minute),
                                tpm: quota.tokens.map_or(0, |r| r.per_minute),
                                reserved: tokens,
                                actual: 0,
                            },
                        );
                    }
                    match self.config.outage_policy {
                        OutagePolicy::LocalFallback => Ok(local_decision(self.local.acquire_now(
                            key,
                            &self.local_quota(quota),
                            tokens,
                        ))),
                        OutagePolicy::FailOpen | OutagePolicy::FailClosed => {
                            Err(self.unavailable(&e))
                        }
                    }
                }
            }
        })
    }

    fn peek<'a>(
        &'a self,
        key: &'a str,
        quota: &'a Quota,
    ) -> StoreFuture<'a, Result<Snapshot, StoreError>> {
        Box::pin(async move {
            match self.run_script("p", key, 0, quota, 0).await {
                Ok(reply) => Ok(reply.snapshot(quota)),
                Err(e) => match self.config.outage_policy {
                    OutagePolicy::LocalFallback => {
                        Ok(self.local.peek_now(key, &self.local_quota(quota)))
                    }
                    OutagePolicy::FailOpen | OutagePolicy::FailClosed => Err(self.unavailable(&e)),
                },
            }
        })
    }

    fn settle(&self, key: &str, id: ReservationId, rate: &Rate, reserved: u64, actual: u64) {
        if is_local(id) {
            self.local
                .settle(key, id, &self.local_rate(rate), reserved, actual);
        } else if reserved != actual {
            self.push(
                OpKind::Settle,
                key,
                id.0,
                OpArgs {
                    tpm: rate.per_minute,
                    reserved,
                    actual,
                    ..OpArgs::default()
                },
            );
        }
    }

    fn refund_request(&self, key: &str, id: ReservationId, rate: &Rate) {
        if is_local(id) {
            self.local.refund_request(key, id, &self.local_rate(rate));
        } else {
            self.push(
                OpKind::Refund,
                key,
                id.0,
                OpArgs {
                    rpm: rate.per_minute,
                    ..OpArgs::default()
                },
            );
        }
    }

    fn release(&self, key: &str, id: ReservationId) {
        if is_local(id) {
            self.local.release(key, ReservationId(id.0 & !LOCAL));
        } else {
            self.push(OpKind::Release, key, id.0, OpArgs::default());
        }
    }

    fn wait<'a>(
        &'a self,
        key: &'a str,
        refusal: &'a Refusal,
        until: Instant,
    ) -> StoreFuture<'a, ()> {
        if refusal.degraded {
            // Refused by the local store: it wakes on its own releases.
            return self.local.wait(key, refusal, until);
        }
        // Redis sends no wake-ups: poll.
        let cap = Instant::now() + Duration::from_millis(50);
        Box::pin(tokio::time::sleep_until(until.min(cap)))
    }

    fn flush(&self) -> StoreFuture<'_, ()> {
        Box::pin(self.queue.flush())
    }

    fn failure_policy(&self) -> Option<StoreFailure> {
        match self.config.outage_policy {
            // Never fails: decides locally.
            OutagePolicy::LocalFallback => None,
            OutagePolicy::FailOpen => Some(StoreFailure::FailOpen),
            OutagePolicy::FailClosed => Some(StoreFailure::FailClosed),
        }
    }
}

impl RedisRateLimitStore {
    /// The local rate matching `rate` (the layer passes the configured one).
    fn local_rate(&self, rate: &Rate) -> Rate {
        let q = self.local_quota(&Quota {
            tokens: Some(*rate),
            ..Quota::default()
        });
        q.tokens.unwrap_or(*rate)
    }
}
