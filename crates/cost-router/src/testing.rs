//! The behavioural suite every [`BudgetStore`] must pass (feature `testing`): one suite, run
//! against the in-memory store here and against shared stores (Redis) in their own crates.
//!
//! Each case takes a fresh, empty store and panics on a failed expectation. No case depends on
//! wall-clock time (periods are passed explicitly), so the suite runs as is against a real
//! server. [`budget_store_suite!`](crate::budget_store_suite) expands to one `#[tokio::test]`
//! per case:
//!
//! ```ignore
//! async fn make() -> (Arc<dyn BudgetStore>, ()) {
//!     (Arc::new(MemoryBudgetStore::new()), ())
//! }
//! rampart_cost_router::budget_store_suite!(make);
//! ```
//!
//! The factory returns the store and a guard kept alive for the case (e.g. a test server).
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use rampart_core::MicroUsd;

use crate::budget::{
    BudgetStore, Periods, ReservationId, ReserveOutcome, ScopeLimit, ScopeSpend, Window,
};

/// 2024-01-31T12:00:00Z.
pub const JAN_31: u64 = 1_706_702_400;

/// The periods of `secs` after the epoch.
pub fn at(secs: u64) -> Periods {
    Periods::at(UNIX_EPOCH + Duration::from_secs(secs))
}

/// A scope limit.
pub fn scope(name: &str, daily: Option<MicroUsd>, monthly: Option<MicroUsd>) -> ScopeLimit {
    ScopeLimit {
        scope: name.into(),
        daily,
        monthly,
    }
}

async fn reserve(
    store: &dyn BudgetStore,
    id: ReservationId,
    scopes: &[ScopeLimit],
    amount: MicroUsd,
    p: Periods,
) -> ReserveOutcome {
    let reply = store.reserve(id, scopes, amount, p).await.unwrap();
    assert!(
        !reply.degraded,
        "a healthy store answers from its shared state"
    );
    reply.outcome
}

async fn settle(
    store: &dyn BudgetStore,
    id: ReservationId,
    scopes: &[&str],
    p: Periods,
    actual: MicroUsd,
) {
    let scopes: Vec<Arc<str>> = scopes.iter().map(|s| Arc::from(*s)).collect();
    store.settle(id, &scopes, p, actual).await.unwrap();
}

async fn spend(store: &dyn BudgetStore, s: &str, p: Periods) -> ScopeSpend {
    store.spend(s, p).await.unwrap()
}

fn refused(o: &ReserveOutcome) -> (String, Window, MicroUsd) {
    match o {
        ReserveOutcome::Refused {
            scope,
            window,
            remaining,
        } => (scope.to_string(), *window, *remaining),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Reserving takes room in every window of every scope, or none; a refusal names the first
/// scope without room and the least room left over every limited window.
pub async fn reserves_in_every_scope_or_none(store: Arc<dyn BudgetStore>) {
    let store = &*store;
    let p = at(JAN_31);
    let scopes = [
        scope("tenant:a", Some(1000), None),
        scope("global", None, Some(1500)),
    ];
    let first = ReservationId::random();
    assert_eq!(
        reserve(store, first, &scopes, 600, p).await,
        ReserveOutcome::Reserved
    );
    // 600 reserved: 400 left in tenant:a.
    let o = reserve(store, ReservationId::random(), &scopes, 500, p).await;
    assert_eq!(refused(&o), ("tenant:a".to_owned(), Window::Day, 400));
    // Refused: nothing reserved anywhere.
    let g = spend(store, "global", p).await;
    assert_eq!((g.month_reserved, g.day_reserved), (600, 600));
    let a = spend(store, "tenant:a", p).await;
    assert_eq!((a.day_reserved, a.month_reserved), (600, 600));
    // Exactly the room left fits.
    assert_eq!(
        reserve(store, ReservationId::random(), &scopes, 400, p).await,
        ReserveOutcome::Reserved
    );
    assert_eq!(spend(store, "tenant:a", p).await.day_reserved, 1000);
    let o = reserve(store, ReservationId::random(), &scopes, 1, p).await;
    assert_eq!(refused(&o), ("tenant:a".to_owned(), Window::Day, 0));
    // The global month limit refuses another tenant, reporting the least room over every window.
    let other = [
        scope("tenant:b", Some(10_000), None),
        scope("global", None, Some(1500)),
    ];
    assert_eq!(
        reserve(store, ReservationId::random(), &other, 400, p).await,
        ReserveOutcome::Reserved
    );
    let o = reserve(store, ReservationId::random(), &other, 200, p).await;
    assert_eq!(refused(&o), ("global".to_owned(), Window::Month, 100));
    assert_eq!(spend(store, "tenant:b", p).await.day_reserved, 400);
}

/// Settling releases the reservation and adds the real cost, lower or higher than the estimate.
pub async fn settles_to_the_real_cost(store: Arc<dyn BudgetStore>) {
    let store = &*store;
    let p = at(JAN_31);
    let scopes = [
        scope("tenant:a", Some(1000), Some(5000)),
        scope("global", Some(10_000), None),
    ];
    let (r1, r2) = (ReservationId::random(), ReservationId::random());
    assert_eq!(
        reserve(store, r1, &scopes, 600, p).await,
        ReserveOutcome::Reserved
    );
    assert_eq!(
        reserve(store, r2, &scopes, 300, p).await,
        ReserveOutcome::Reserved
    );
    settle(store, r1, &["tenant:a", "global"], p, 450).await;
    let a = spend(store, "tenant:a", p).await;
    assert_eq!(
        (a.day_spent, a.day_reserved, a.month_spent, a.month_reserved),
        (450, 300, 450, 300)
    );
    // More than estimated: counted in full (the overshoot a reservation cannot prevent).
    settle(store, r2, &["tenant:a", "global"], p, 700).await;
    let a = spend(store, "tenant:a", p).await;
    assert_eq!((a.day_spent, a.day_reserved), (1150, 0));
    let g = spend(store, "global", p).await;
    assert_eq!(
        (g.day_spent, g.day_reserved, g.month_spent),
        (1150, 0, 1150)
    );
    // Over the limit now: refused with no room.
    let o = reserve(store, ReservationId::random(), &scopes, 1, p).await;
    assert_eq!(refused(&o), ("tenant:a".to_owned(), Window::Day, 0));
    // Settling to zero frees the whole reservation.
    let b = [scope("tenant:b", Some(100), None)];
    let r3 = ReservationId::random();
    assert_eq!(
        reserve(store, r3, &b, 100, p).await,
        ReserveOutcome::Reserved
    );
    settle(store, r3, &["tenant:b"], p, 0).await;
    assert_eq!(spend(store, "tenant:b", p).await, ScopeSpend::default());
    assert_eq!(
        reserve(store, ReservationId::random(), &b, 100, p).await,
        ReserveOutcome::Reserved
    );
}

/// A second settle of the same reservation changes nothing; nor does a second reserve.
pub async fn reserve_and_settle_are_idempotent(store: Arc<dyn BudgetStore>) {
    let store = &*store;
    let p = at(JAN_31);
    let scopes = [
        scope("tenant:a", Some(1000), None),
        scope("global", None, Some(10_000)),
    ];
    let id = ReservationId::random();
    assert_eq!(
        reserve(store, id, &scopes, 400, p).await,
        ReserveOutcome::Reserved
    );
    // The same id again (a retried call): still one reservation.
    assert_eq!(
        reserve(store, id, &scopes, 400, p).await,
        ReserveOutcome::Reserved
    );
    assert_eq!(spend(store, "tenant:a", p).await.day_reserved, 400);
    settle(store, id, &["tenant:a", "global"], p, 300).await;
    let once = spend(store, "tenant:a", p).await;
    assert_eq!((once.day_spent, once.day_reserved), (300, 0));
    for actual in [300, 999, 0] {
        settle(store, id, &["tenant:a", "global"], p, actual).await;
    }
    assert_eq!(spend(store, "tenant:a", p).await, once);
    let g = spend(store, "global", p).await;
    assert_eq!((g.month_spent, g.month_reserved), (300, 0));
    // Another reservation still settles normally.
    let other = ReservationId::random();
    assert_eq!(
        reserve(store, other, &scopes, 100, p).await,
        ReserveOutcome::Reserved
    );
    settle(store, other, &["tenant:a", "global"], p, 100).await;
    assert_eq!(spend(store, "tenant:a", p).await.day_spent, 400);
}

/// Day and month windows follow the periods passed in; a settle for a window that has rolled
/// over since is left out of the new window.
pub async fn windows_roll_over(store: Arc<dyn BudgetStore>) {
    let store = &*store;
    let s = [scope("tenant:a", Some(1000), Some(1500))];
    let day1 = at(JAN_31);
    let r = ReservationId::random();
    assert_eq!(
        reserve(store, r, &s, 1000, day1).await,
        ReserveOutcome::Reserved
    );
    settle(store, r, &["tenant:a"], day1, 1000).await;
    let o = reserve(store, ReservationId::random(), &s, 1, day1).await;
    assert_eq!(refused(&o).1, Window::Day);
    // Next day, next month (Feb 1): fresh.
    let day2 = at(JAN_31 + 86_400);
    assert_ne!(day1.month, day2.month);
    let late = ReservationId::random();
    assert_eq!(
        reserve(store, late, &s, 1000, day2).await,
        ReserveOutcome::Reserved
    );
    // A reservation of day 2 settles in day 2.
    settle(store, late, &["tenant:a"], day2, 900).await;
    let d2 = spend(store, "tenant:a", day2).await;
    assert_eq!(
        (d2.day_spent, d2.day_reserved, d2.month_spent),
        (900, 0, 900)
    );
    // Next day, same month: the day is fresh, the month is not.
    let day3 = at(JAN_31 + 2 * 86_400);
    assert_eq!(day2.month, day3.month);
    let r3 = ReservationId::random();
    let o = reserve(store, r3, &s, 700, day3).await;
    assert_eq!(refused(&o), ("tenant:a".to_owned(), Window::Month, 600));
    assert_eq!(
        reserve(store, r3, &s, 600, day3).await,
        ReserveOutcome::Reserved
    );
    let d3 = spend(store, "tenant:a", day3).await;
    assert_eq!(
        (
            d3.day_spent,
            d3.day_reserved,
            d3.month_spent,
            d3.month_reserved
        ),
        (0, 600, 900, 600)
    );
    // A reservation of day 3 settled after day 4 began: the month counts it, day 4 does not.
    let day4 = at(JAN_31 + 3 * 86_400);
    let r4 = ReservationId::random();
    assert_eq!(
        reserve(store, r4, &s, 0, day4).await,
        ReserveOutcome::Reserved
    );
    settle(store, r3, &["tenant:a"], day3, 500).await;
    let d4 = spend(store, "tenant:a", day4).await;
    assert_eq!(
        (
            d4.day_spent,
            d4.day_reserved,
            d4.month_spent,
            d4.month_reserved
        ),
        (0, 0, 1400, 0)
    );
}

/// Windows without a limit admit anything and still account; a scope never seen spends nothing.
pub async fn unlimited_windows_still_account(store: Arc<dyn BudgetStore>) {
    let store = &*store;
    let p = at(JAN_31);
    assert_eq!(
        spend(store, "tenant:nobody", p).await,
        ScopeSpend::default()
    );
    let s = [
        scope("tenant:a", None, None),
        scope("global", None, Some(u64::MAX / 4)),
    ];
    let id = ReservationId::random();
    assert_eq!(
        reserve(store, id, &s, 1_000_000_000, p).await,
        ReserveOutcome::Reserved
    );
    let a = spend(store, "tenant:a", p).await;
    assert_eq!(
        (a.day_reserved, a.month_reserved),
        (1_000_000_000, 1_000_000_000)
    );
    settle(store, id, &["tenant:a", "global"], p, 123_456_789).await;
    let a = spend(store, "tenant:a", p).await;
    assert_eq!(
        (a.day_spent, a.month_spent, a.day_reserved),
        (123_456_789, 123_456_789, 0)
    );
    // A zero-cost reservation is admitted even with no room left.
    let full = [scope("tenant:z", Some(0), Some(0))];
    assert_eq!(
        reserve(store, ReservationId::random(), &full, 0, p).await,
        ReserveOutcome::Reserved
    );
    let o = reserve(store, ReservationId::random(), &full, 1, p).await;
    assert_eq!(refused(&o), ("tenant:z".to_owned(), Window::Day, 0));
}

/// Scope names are opaque: names that look like key syntax, prefixes of each other, or are not
/// ASCII never share state.
pub async fn scopes_never_collide(store: Arc<dyn BudgetStore>) {
    let store = &*store;
    let p = at(JAN_31);
    let names = [
        "tenant:a",
        "tenant:a:",
        "tenant:a}",
        "tenant:a}:x",
        "tenant:{a}",
        "tenant:a:d",
        "tenant:a\n",
        "tenant:a*",
        "tenant:ä",
        "tenant:",
        "global",
        "tenant:global",
    ];
    for (i, name) in names.iter().enumerate() {
        let s = [scope(name, Some(1000), None)];
        let amount = 10 * (i as u64 + 1);
        let id = ReservationId::random();
        assert_eq!(
            reserve(store, id, &s, amount, p).await,
            ReserveOutcome::Reserved
        );
        settle(store, id, &[name], p, amount).await;
    }
    for (i, name) in names.iter().enumerate() {
        let got = spend(store, name, p).await;
        assert_eq!(got.day_spent, 10 * (i as u64 + 1), "scope {name:?}");
        assert_eq!(got.day_reserved, 0, "scope {name:?}");
    }
}

/// Many concurrent reservations against one limit never reserve more than the limit, and fill
/// it up to less than one request's worth.
pub async fn concurrent_reserves_never_oversubscribe(store: Arc<dyn BudgetStore>) {
    let p = at(JAN_31);
    let limit = 20_000;
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let s = [
                scope("tenant:x", Some(limit), None),
                scope("global", None, Some(10 * limit)),
            ];
            let mut granted = 0;
            for i in 0..80u64 {
                let amount = 1 + (t * 7 + i * 13) % 97;
                let reply = store
                    .reserve(ReservationId::random(), &s, amount, p)
                    .await
                    .unwrap();
                if reply.outcome == ReserveOutcome::Reserved {
                    granted += amount;
                }
            }
            granted
        }));
    }
    let mut granted = 0;
    for t in tasks {
        granted += t.await.unwrap();
    }
    assert!(granted <= limit, "{granted} > {limit}");
    let s = spend(&*store, "tenant:x", p).await;
    assert_eq!(s.day_reserved, granted);
    assert_eq!(spend(&*store, "global", p).await.month_reserved, granted);
    assert!(granted > limit - 97, "{granted}: the limit was not filled");
}

/// Expands to one `#[tokio::test]` per case of the suite; `$make` is an async function
/// returning `(Arc<dyn BudgetStore>, guard)` — a fresh, empty store for each case.
#[macro_export]
macro_rules! budget_store_suite {
    ($make:path) => {
        $crate::budget_store_suite!(@cases $make;
            reserves_in_every_scope_or_none,
            settles_to_the_real_cost,
            reserve_and_settle_are_idempotent,
            windows_roll_over,
            unlimited_windows_still_account,
            scopes_never_collide,
            concurrent_reserves_never_oversubscribe,
        );
    };
    (@cases $make:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (store, _guard) = $make().await;
                $crate::testing::$case(store).await;
            }
        )*
    };
}
