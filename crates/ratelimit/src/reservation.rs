//! What an admission leaves behind: the shared [`Ticket`], the token reservation handle
//! ([`TokenReservation`]) and the end-of-admission [`Permit`].
//!
//! One ticket per admission names it in the store ([`ReservationId`]) and makes every later
//! store call about it happen at most once: the token settle, the request refund and the
//! release, which is last — after it, a settle or refund does nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::store::{Quota, Rate, RateLimitStore, ReservationId};

const SETTLED: u8 = 1;
const REFUNDED: u8 = 2;
const RELEASED: u8 = 4;

/// One admission, shared by its permit, its token reservation and its request unit.
pub(crate) struct Ticket {
    store: Arc<dyn RateLimitStore>,
    key: Arc<str>,
    id: ReservationId,
    requests: Option<Rate>,
    tokens: Option<Rate>,
    reserved: u64,
    state: AtomicU8,
}

impl Ticket {
    pub(crate) fn new(
        store: Arc<dyn RateLimitStore>,
        key: Arc<str>,
        id: ReservationId,
        quota: &Quota,
        reserved: u64,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            key,
            id,
            requests: quota.requests,
            tokens: quota.tokens,
            reserved,
            state: AtomicU8::new(0),
        })
    }

    /// Sets `bit`; `true` when this call set it and the admission is not over.
    fn mark(&self, bit: u8) -> bool {
        self.state.fetch_or(bit, Ordering::AcqRel) & (bit | RELEASED) == 0
    }

    /// Settles the token reservation to `actual` (first call only).
    fn settle(&self, actual: u64) -> bool {
        let Some(rate) = &self.tokens else {
            return false;
        };
        if !self.mark(SETTLED) {
            return false;
        }
        if actual != self.reserved {
            self.store
                .settle(&self.key, self.id, rate, self.reserved, actual);
        }
        true
    }

    /// Gives the request unit back (first call only).
    pub(crate) fn refund_request(&self) {
        if let Some(rate) = &self.requests
            && self.mark(REFUNDED)
        {
            self.store.refund_request(&self.key, self.id, rate);
        }
    }

    /// Ends the admission (first call only).
    fn release(&self) {
        if self.state.fetch_or(RELEASED, Ordering::AcqRel) & RELEASED == 0 {
            self.store.release(&self.key, self.id);
        }
    }
}

/// The tokens a request reserved, put in the request extensions before the inner service is
/// called (when the key has a tokens-per-minute limit).
///
/// Settling is idempotent: the first [`settle`](Self::settle) (or [`keep`](Self::keep)) wins and
/// every later call does nothing, as does a settle after the admission ended (the response was
/// over). The layer settles it to the response's `usage.total_tokens` when the body ends; a
/// layer below that knows better settles first — the cache settles a hit to zero with
/// `settle(0)`. Cheap to clone; every clone is the same reservation.
#[derive(Clone)]
pub struct TokenReservation {
    ticket: Arc<Ticket>,
}

impl std::fmt::Debug for TokenReservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReservation")
            .field("key", &self.ticket.key)
            .field("reserved", &self.ticket.reserved)
            .field("settled", &self.is_settled())
            .finish()
    }
}

impl TokenReservation {
    pub(crate) fn new(ticket: Arc<Ticket>) -> Self {
        Self { ticket }
    }

    /// Tokens reserved before the call.
    pub fn reserved(&self) -> u64 {
        self.ticket.reserved
    }

    /// The rate-limit key charged.
    pub fn key(&self) -> &str {
        &self.ticket.key
    }

    /// The store's id of the admission.
    pub fn id(&self) -> ReservationId {
        self.ticket.id
    }

    /// Settles to `actual` tokens: refunds the unused part of the reservation or charges the
    /// overage. Returns `false` (and does nothing) if already settled or the admission is over.
    pub fn settle(&self, actual: u64) -> bool {
        self.ticket.settle(actual)
    }

    /// Settles to the reservation itself (no refund, no overage). Returns `false` if already
    /// settled or the admission is over.
    pub fn keep(&self) -> bool {
        self.ticket.mark(SETTLED)
    }

    /// Whether it has been settled.
    pub fn is_settled(&self) -> bool {
        self.ticket.state.load(Ordering::Acquire) & SETTLED != 0
    }

    /// This reservation as core's [`SettleHook`](rampart_core::SettleHook), for layers that must
    /// not depend on this crate (the cache finds it in the request's
    /// [`SettleHooks`](rampart_core::SettleHooks)); calling it is [`TokenReservation::settle`]
    /// (first settle wins).
    pub fn settle_hook(&self) -> rampart_core::SettleHook {
        let this = self.clone();
        Arc::new(move |tokens| this.settle(tokens))
    }
}

/// The admission itself: ends it (releasing any concurrency slot) when dropped.
pub(crate) struct Permit {
    ticket: Arc<Ticket>,
}

impl Permit {
    pub(crate) fn new(ticket: Arc<Ticket>) -> Self {
        Self { ticket }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.ticket.release();
    }
}
