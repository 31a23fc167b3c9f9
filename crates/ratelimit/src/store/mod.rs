//! Where limiter state lives: the [`RateLimitStore`] trait and the in-memory [`MemoryStore`].
//!
//! A store holds, per key, two token buckets (requests and tokens) and a concurrency counter. The
//! layer resolves the [`Quota`] for a request and asks the store to [`acquire`] it atomically:
//! every dimension passes and is charged, or nothing is charged and a [`Refusal`] says why. Token
//! reservations are later [`settle`]d to the real usage (refund or overage), and concurrency
//! permits are [`release`]d when the response body ends or is dropped.
//!
//! `acquire` returns a boxed future so that a remote store (Redis: one atomic script per decision)
//! implements the same trait; `settle`, `refund_request` and `release` are fire-and-forget because
//! they run inside completion callbacks and `Drop` (a remote store queues them; [`flush`] waits
//! for them).
//!
//! Every admission carries a [`ReservationId`] chosen by the store, and the layer names it in
//! every later call about that admission. The layer calls each of `settle` and `refund_request`
//! at most once per admission, and `release` exactly once, last, when the admission is over (the
//! response ended, failed or was dropped). A store shared between processes must also make them
//! idempotent by id (a retried write changes nothing); the Redis store does.
//!
//! A store that applies an outage policy of its own answers [`failure_policy`], and marks the
//! decisions it makes without its shared state as [`degraded`](Admission::degraded); the layer
//! then follows that policy and sets `x-rampart-degraded: ratelimit`.
//!
//! [`acquire`]: RateLimitStore::acquire
//! [`settle`]: RateLimitStore::settle
//! [`release`]: RateLimitStore::release
//! [`flush`]: RateLimitStore::flush
//! [`failure_policy`]: RateLimitStore::failure_policy

mod memory;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::StoreFailure;

pub use memory::{MemoryStore, MemoryStoreBuilder};

/// The future a store returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A rate: `per_minute` units refill continuously, at most `burst` can be spent at once.
///
/// The bucket starts full (`burst` units); it refills at `per_minute / 60` units per second up to
/// `burst`. Over any window of length `w`, at most `burst + per_minute * w / 60s` units are
/// admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    /// Units per minute (at least 1).
    pub per_minute: u64,
    /// Bucket size (at least 1).
    pub burst: u64,
}

impl Rate {
    /// A rate of `per_minute` with a burst of `burst` (both clamped to at least 1).
    pub fn new(per_minute: u64, burst: u64) -> Self {
        Self {
            per_minute: per_minute.max(1),
            burst: burst.max(1),
        }
    }
}

/// What one request may use under one key: the resolved limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Quota {
    /// Requests per minute (cost 1 per request); `None`: unlimited.
    pub requests: Option<Rate>,
    /// Tokens per minute (cost: the request's estimate, settled later); `None`: unlimited.
    pub tokens: Option<Rate>,
    /// Concurrent requests; `None`: unlimited.
    pub concurrency: Option<u32>,
}

impl Quota {
    /// Whether nothing is limited.
    pub fn is_unlimited(&self) -> bool {
        self.requests.is_none() && self.tokens.is_none() && self.concurrency.is_none()
    }
}

/// Which limit a decision is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// Requests per minute.
    Requests,
    /// Tokens per minute.
    Tokens,
    /// Concurrent requests.
    Concurrency,
}

impl LimitKind {
    /// OpenAI's error `type` for this limit: `requests` or `tokens` (concurrency counts as
    /// `requests`).
    pub fn error_type(self) -> &'static str {
        match self {
            Self::Requests | Self::Concurrency => "requests",
            Self::Tokens => "tokens",
        }
    }
}

/// The state of one bucket, for the `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketStatus {
    /// The limit per minute (`x-ratelimit-limit-*`).
    pub limit: u64,
    /// Units left now (`x-ratelimit-remaining-*`).
    pub remaining: u64,
    /// Time until the bucket is full again (`x-ratelimit-reset-*`).
    pub reset: Duration,
}

/// The state of a key's buckets after (or at) a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// The requests bucket, when limited.
    pub requests: Option<BucketStatus>,
    /// The tokens bucket, when limited.
    pub tokens: Option<BucketStatus>,
}

/// Why a request was not admitted. Nothing was charged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The limit that refused (the first of concurrency, requests, tokens that failed).
    pub kind: LimitKind,
    /// When the time-based limits would all admit the request; `None` when only the concurrency
    /// limit refused (no one knows when a slot frees).
    pub retry_after: Option<Duration>,
    /// The buckets as they are (nothing charged).
    pub snapshot: Snapshot,
    /// An opaque wake-up token for [`RateLimitStore::wait`] (the in-memory store's count of
    /// releases and refunds for the key, so that a wait never misses one).
    pub generation: u64,
    /// Decided without the store's shared state (a fallback policy applied): the layer marks the
    /// response `x-rampart-degraded: ratelimit`.
    pub degraded: bool,
}

/// Names one admission in the store that made it; the store chooses it, and its meaning is the
/// store's (the in-memory store notes whether a concurrency slot was taken; the Redis store
/// holds a random id, or marks an admission made by its local fallback).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ReservationId(pub u64);

/// An admission: what was charged is named by `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// The buckets after the charge.
    pub snapshot: Snapshot,
    /// The reservation, for `settle`, `refund_request` and `release`.
    pub id: ReservationId,
    /// Decided without the store's shared state (a fallback policy applied): the layer marks the
    /// response `x-rampart-degraded: ratelimit`.
    pub degraded: bool,
}

/// The store's answer to [`RateLimitStore::acquire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Admitted and charged: one request, the token estimate, and a concurrency slot when
    /// concurrency is limited (end it with [`RateLimitStore::release`]).
    Admitted(Admission),
    /// Refused; nothing was charged.
    Refused(Refusal),
}

/// A store could not decide (e.g. a shared store is unreachable).
#[derive(Debug, thiserror::Error)]
#[error("rate limit store unavailable: {0}")]
pub struct StoreError(pub String);

/// The state store behind a [`RateLimitLayer`](crate::RateLimitLayer).
///
/// Implementations keep, per key, a requests bucket, a tokens bucket and a concurrency count, and
/// decide atomically. `acquire` must be all-or-nothing, and a dropped `acquire` future must
/// not leave a charge behind (for the in-memory store it completes in one poll; a remote store
/// undoes a decision whose answer was lost).
pub trait RateLimitStore: Send + Sync + 'static {
    /// Admits one request of `tokens` estimated tokens under `key` and `quota`, charging every
    /// limited dimension, or refuses without charging anything.
    fn acquire<'a>(
        &'a self,
        key: &'a str,
        quota: &'a Quota,
        tokens: u64,
    ) -> StoreFuture<'a, Result<Decision, StoreError>>;

    /// The decision, synchronously, when the store can make it without I/O (the in-memory store
    /// always can); `None` (the default) sends the layer to [`acquire`](Self::acquire). Same
    /// contract as `acquire`.
    fn try_acquire(
        &self,
        key: &str,
        quota: &Quota,
        tokens: u64,
    ) -> Option<Result<Decision, StoreError>> {
        let _ = (key, quota, tokens);
        None
    }

    /// The buckets of `key` at `quota`'s rates, charging nothing (the headers of a request
    /// refused before it reached the store). The default asks [`acquire`](Self::acquire) for a
    /// zero-token decision on the tokens bucket alone, which charges nothing.
    fn peek<'a>(
        &'a self,
        key: &'a str,
        quota: &'a Quota,
    ) -> StoreFuture<'a, Result<Snapshot, StoreError>> {
        Box::pin(async move {
            let probe = Quota {
                requests: None,
                tokens: quota.tokens,
                concurrency: None,
            };
            Ok(match self.acquire(key, &probe, 0).await? {
                Decision::Admitted(a) => a.snapshot,
                Decision::Refused(r) => r.snapshot,
            })
        })
    }

    /// Settles the token reservation of admission `id` (of `reserved` tokens, at `rate`) to
    /// `actual` tokens: refunds the difference, or charges the overage.
    fn settle(&self, key: &str, id: ReservationId, rate: &Rate, reserved: u64, actual: u64);

    /// Gives back the one request admission `id` charged to the requests bucket (`rate` is that
    /// bucket's rate): the request never reached an upstream (refused or failed inside the
    /// gateway below this limiter).
    fn refund_request(&self, key: &str, id: ReservationId, rate: &Rate);

    /// Ends admission `id`: frees its concurrency slot if it took one. Called once per
    /// admission, after any settle or refund of it.
    fn release(&self, key: &str, id: ReservationId);

    /// Resolves when capacity for `key` may have changed since `refusal` (a slot released, tokens
    /// refunded), or at `until`, whichever comes first. Used by queue mode; the default waits
    /// for `until`, capped at 50 ms so that remote stores are polled.
    fn wait<'a>(
        &'a self,
        key: &'a str,
        refusal: &'a Refusal,
        until: Instant,
    ) -> StoreFuture<'a, ()> {
        let _ = (key, refusal);
        let cap = Instant::now() + Duration::from_millis(50);
        Box::pin(tokio::time::sleep_until(until.min(cap)))
    }

    /// Resolves once every `settle`, `refund_request` and `release` issued before the call has
    /// taken effect (or been given up). The default resolves at once: the in-memory store
    /// applies them on the spot. For tests and graceful shutdown; bound it with a timeout.
    fn flush(&self) -> StoreFuture<'_, ()> {
        Box::pin(std::future::ready(()))
    }

    /// The outage policy this store applies itself, if any: when `Some`, the layer follows it
    /// for this store's errors instead of its own `on_store_error`, so that the store's
    /// configuration is the single source of truth. Default `None`.
    fn failure_policy(&self) -> Option<StoreFailure> {
        None
    }
}

impl<T: RateLimitStore + ?Sized> RateLimitStore for std::sync::Arc<T> {
    fn acquire<'a>(
        &'a self,
        key: &'a str,
        quota: &'a Quota,
        tokens: u64,
    ) -> StoreFuture<'a, Result<Decision, StoreError>> {
        (**self).acquire(key, quota, tokens)
    }
    fn try_acquire(
        &self,
        key: &str,
        quota: &Quota,
        tokens: u64,
    ) -> Option<Result<Decision, StoreError>> {
        (**self).try_acquire(key, quota, tokens)
    }
    fn peek<'a>(
        &'a self,
        key: &'a str,
        quota: &'a Quota,
    ) -> StoreFuture<'a, Result<Snapshot, StoreError>> {
        (**self).peek(key, quota)
    }
    fn settle(&self, key: &str, id: ReservationId, rate: &Rate, reserved: u64, actual: u64) {
        (**self).settle(key, id, rate, reserved, actual);
    }
    fn refund_request(&self, key: &str, id: ReservationId, rate: &Rate) {
        (**self).refund_request(key, id, rate);
    }
    fn release(&self, key: &str, id: ReservationId) {
        (**self).release(key, id);
    }
    fn wait<'a>(
        &'a self,
        key: &'a str,
        refusal: &'a Refusal,
        until: Instant,
    ) -> StoreFuture<'a, ()> {
        (**self).wait(key, refusal, until)
    }
    fn flush(&self) -> StoreFuture<'_, ()> {
        (**self).flush()
    }
    fn failure_policy(&self) -> Option<StoreFailure> {
        (**self).failure_policy()
    }
}
