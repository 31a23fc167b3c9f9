//! The token reservation handle ([`TokenReservation`]) and the concurrency permit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::store::{Rate, RateLimitStore};

/// The tokens a request reserved, put in the request extensions before the inner service is
/// called (when the key has a tokens-per-minute limit).
///
/// Settling is idempotent: the first [`settle`](Self::settle) (or [`keep`](Self::keep)) wins and
/// every later call does nothing. The layer settles it to the response's `usage.total_tokens`
/// when the body ends; a layer below that knows better settles first — the cache settles a hit
/// to zero with `settle(0)`. Cheap to clone; every clone is the same reservation.
#[derive(Clone)]
pub struct TokenReservation {
    inner: Arc<ReservationInner>,
}

struct ReservationInner {
    settled: AtomicBool,
    reserved: u64,
    key: Arc<str>,
    rate: Rate,
    store: Arc<dyn RateLimitStore>,
}

impl std::fmt::Debug for TokenReservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReservation")
            .field("key", &self.inner.key)
            .field("reserved", &self.inner.reserved)
            .field("settled", &self.is_settled())
            .finish()
    }
}

impl TokenReservation {
    pub(crate) fn new(
        store: Arc<dyn RateLimitStore>,
        key: Arc<str>,
        rate: Rate,
        reserved: u64,
    ) -> Self {
        Self {
            inner: Arc::new(ReservationInner {
                settled: AtomicBool::new(false),
                reserved,
                key,
                rate,
                store,
            }),
        }
    }

    /// Tokens reserved before the call.
    pub fn reserved(&self) -> u64 {
        self.inner.reserved
    }

    /// The rate-limit key charged.
    pub fn key(&self) -> &str {
        &self.inner.key
    }

    /// Settles to `actual` tokens: refunds the unused part of the reservation or charges the
    /// overage. Returns `false` (and does nothing) if already settled.
    pub fn settle(&self, actual: u64) -> bool {
        if self.inner.settled.swap(true, Ordering::AcqRel) {
            return false;
        }
        let i = &self.inner;
        i.store.settle(&i.key, &i.rate, i.reserved, actual);
        true
    }

    /// Settles to the reservation itself (no refund, no overage). Returns `false` if already
    /// settled.
    pub fn keep(&self) -> bool {
        !self.inner.settled.swap(true, Ordering::AcqRel)
    }

    /// Whether it has been settled.
    pub fn is_settled(&self) -> bool {
        self.inner.settled.load(Ordering::Acquire)
    }
}

impl TokenReservation {
    /// This reservation as core's [`SettleHook`](rampart_core::SettleHook), for layers that must
    /// not depend on this crate (the cache finds it in the request's
    /// [`SettleHooks`](rampart_core::SettleHooks)); calling it is [`TokenReservation::settle`]
    /// (first settle wins).
    pub fn settle_hook(&self) -> rampart_core::SettleHook {
        let this = self.clone();
        Arc::new(move |tokens| this.settle(tokens))
    }
}

/// A concurrency slot; released when dropped.
pub(crate) struct Permit {
    store: Arc<dyn RateLimitStore>,
    key: Arc<str>,
}

impl Permit {
    pub(crate) fn new(store: Arc<dyn RateLimitStore>, key: Arc<str>) -> Self {
        Self { store, key }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.store.release(&self.key);
    }
}
