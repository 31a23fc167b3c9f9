//! Spend budgets: the [`BudgetStore`] trait, calendar [`Periods`], the injectable
//! [`WallClock`], and the reservation a request holds until its response ends.
//!
//! A request reserves its estimated cost in every scope that limits it (its tenant, and
//! `global` when configured) atomically: either every window has room for
//! `spent + reserved + estimate`, or nothing is reserved. After the response, the reservation is
//! settled: released, and the real cost added to `spent`. So concurrent requests can overshoot a
//! limit only by how much their real costs exceed their estimates — never by the reservations in
//! flight, which are counted before admitting anyone else.
//!
//! Every reservation has a [`ReservationId`] chosen by the caller: reserving an id twice
//! reserves once, and settling it twice settles once, so a networked store can retry both.

mod memory;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use rampart_core::MicroUsd;

pub use memory::MemoryBudgetStore;

use crate::config::StoreFailure;

/// Identifies one reservation from its reserve to its settle (random; chosen by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReservationId(pub u128);

impl ReservationId {
    /// A fresh random id.
    pub fn random() -> Self {
        Self(rand::random())
    }
}

impl fmt::Display for ReservationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// A source of wall-clock time for calendar boundaries. Closures `Fn() -> SystemTime` are
/// clocks.
pub trait WallClock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> SystemTime;
}

impl<F> WallClock for F
where
    F: Fn() -> SystemTime + Send + Sync + 'static,
{
    fn now(&self) -> SystemTime {
        self()
    }
}

/// `SystemTime::now()`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The UTC calendar day and month an instant falls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Periods {
    /// Days since 1970-01-01 (UTC).
    pub day: u64,
    /// `year * 12 + (month - 1)` (UTC).
    pub month: u64,
}

impl Periods {
    /// The periods of `t` (instants before 1970 count as 1970-01-01).
    pub fn at(t: SystemTime) -> Self {
        let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let day = secs / 86_400;
        let (year, month) = civil_from_days(day as i64);
        Self {
            day,
            month: (year.max(0) as u64) * 12 + u64::from(month - 1),
        }
    }
}

/// Howard Hinnant's `civil_from_days`: (year, month 1..=12) of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m as u32)
}

/// A budget window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    /// The UTC calendar day.
    Day,
    /// The UTC calendar month.
    Month,
}

impl Window {
    /// `day` or `month`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Month => "month",
        }
    }
}

/// The limits of one scope (`tenant:<id>` or `global`), in micro-dollars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeLimit {
    /// The scope key.
    pub scope: Arc<str>,
    /// Per UTC day.
    pub daily: Option<MicroUsd>,
    /// Per UTC month.
    pub monthly: Option<MicroUsd>,
}

/// The answer to a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveOutcome {
    /// Reserved in every scope.
    Reserved,
    /// Nothing reserved: a window has no room.
    Refused {
        /// The first scope without room.
        scope: Arc<str>,
        /// Its window.
        window: Window,
        /// The least room left over every limited window of every scope.
        remaining: MicroUsd,
    },
}

/// A store's answer to a reservation: the outcome, and whether the store reached it without
/// its shared state (a networked store answering under its outage policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveReply {
    /// Reserved or refused.
    pub outcome: ReserveOutcome,
    /// Decided without the shared state (e.g. from a per-replica fallback, or admitted without
    /// a reservation): the layer marks the response `x-rampart-degraded: budget`.
    pub degraded: bool,
}

impl ReserveReply {
    /// An outcome decided on the store's own state.
    pub fn shared(outcome: ReserveOutcome) -> Self {
        Self {
            outcome,
            degraded: false,
        }
    }

    /// An outcome decided without the shared state.
    pub fn degraded(outcome: ReserveOutcome) -> Self {
        Self {
            outcome,
            degraded: true,
        }
    }
}

/// Spend and reservations of one scope in the current periods.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScopeSpend {
    /// Settled spend today.
    pub day_spent: MicroUsd,
    /// Reserved today by requests in flight.
    pub day_reserved: MicroUsd,
    /// Settled spend this month.
    pub month_spent: MicroUsd,
    /// Reserved this month by requests in flight.
    pub month_reserved: MicroUsd,
}

/// A budget store failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("budget store: {0}")]
pub struct StoreError(pub String);

/// A store's answer: ready at once (the in-memory store; no allocation) or a boxed future (a
/// networked store).
pub enum StoreFuture<T> {
    /// Known now.
    Ready(Option<T>),
    /// Still to come.
    Boxed(Pin<Box<dyn Future<Output = T> + Send>>),
}

impl<T> fmt::Debug for StoreFuture<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ready(_) => "StoreFuture::Ready",
            Self::Boxed(_) => "StoreFuture::Boxed",
        })
    }
}

impl<T> StoreFuture<T> {
    /// An answer known now.
    pub fn ready(value: T) -> Self {
        Self::Ready(Some(value))
    }

    /// The answer when known now, else the future back.
    pub fn into_ready(self) -> Result<T, Self> {
        match self {
            Self::Ready(Some(v)) => Ok(v),
            other => Err(other),
        }
    }
}

impl<T: Unpin> Future for StoreFuture<T> {
    type Output = T;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        match self.get_mut() {
            Self::Ready(v) => match v.take() {
                Some(v) => Poll::Ready(v),
                // Polled after completion: stay pending rather than panic.
                None => Poll::Pending,
            },
            Self::Boxed(f) => f.as_mut().poll(cx),
        }
    }
}

/// Where budget state lives. The in-memory [`MemoryBudgetStore`] is the default; a shared
/// (Redis) store implements the same three operations, each atomic.
pub trait BudgetStore: Send + Sync + 'static {
    /// Reserves `amount` under `id` in every window of every scope, or nothing when one has no
    /// room (`spent + reserved + amount > limit`). An id already reserved is not reserved again
    /// (the answer is `Reserved`).
    fn reserve(
        &self,
        id: ReservationId,
        scopes: &[ScopeLimit],
        amount: MicroUsd,
        at: Periods,
    ) -> StoreFuture<Result<ReserveReply, StoreError>>;

    /// Releases the reservation `id` made at `at` in `scopes` and adds `actual` to the spend of
    /// the same windows (a window that has rolled over since is left alone). Idempotent: a
    /// second settle of the same id changes nothing.
    fn settle(
        &self,
        id: ReservationId,
        scopes: &[Arc<str>],
        at: Periods,
        actual: MicroUsd,
    ) -> StoreFuture<Result<(), StoreError>>;

    /// Spend and reservations of `scope` in the periods `at`.
    fn spend(&self, scope: &str, at: Periods) -> StoreFuture<Result<ScopeSpend, StoreError>>;

    /// What the layer does when [`reserve`](Self::reserve) fails, when the store decides it
    /// itself (a store with an outage policy of its own); `None` (the default) leaves it to
    /// the layer's `budgets.on_store_error`.
    fn error_policy(&self) -> Option<StoreFailure> {
        None
    }
}

/// A reservation held until the response ends. Settled once: by the completion callback, or
/// on drop (keeping the whole reservation as spent).
pub(crate) struct Reservation {
    store: Arc<dyn BudgetStore>,
    id: ReservationId,
    scopes: Vec<Arc<str>>,
    at: Periods,
    amount: MicroUsd,
    done: AtomicBool,
}

impl Reservation {
    pub(crate) fn new(
        store: Arc<dyn BudgetStore>,
        id: ReservationId,
        scopes: Vec<Arc<str>>,
        at: Periods,
        amount: MicroUsd,
    ) -> Self {
        Self {
            store,
            id,
            scopes,
            at,
            amount,
            done: AtomicBool::new(false),
        }
    }

    /// Settles to `actual` (first call only).
    pub(crate) fn settle(&self, actual: MicroUsd) {
        if self.done.swap(true, Ordering::AcqRel) {
            return;
        }
        let fut = self.store.settle(self.id, &self.scopes, self.at, actual);
        match fut.into_ready() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "budget settle failed"),
            Err(fut) => match tokio::runtime::Handle::try_current() {
                Ok(h) => {
                    h.spawn(async move {
                        if let Err(e) = fut.await {
                            tracing::warn!(error = %e, "budget settle failed");
                        }
                    });
                }
                Err(_) => tracing::warn!("budget settle dropped: no runtime to run it on"),
            },
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // Never settled (the request was dropped mid-way): keep the reservation as spent.
        self.settle(self.amount);
    }
}
