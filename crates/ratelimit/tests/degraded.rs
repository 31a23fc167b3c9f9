//! A store that decides without its shared state marks its decisions degraded, and a store with
//! an outage policy of its own overrides the layer's `on_store_error`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::*;
use http::StatusCode;
use rampart_ratelimit::store::StoreFuture;
use rampart_ratelimit::{
    Decision, Limits, MemoryStore, Quota, Rate, RateLimitLayer, RateLimitStore, Refusal,
    ReservationId, StoreError, StoreFailure,
};

/// Decides in a memory store and marks every decision degraded (as a Redis store under
/// `local_fallback` does while Redis is down).
struct Fallback(MemoryStore);

impl RateLimitStore for Fallback {
    fn acquire<'a>(
        &'a self,
        key: &'a str,
        quota: &'a Quota,
        tokens: u64,
    ) -> StoreFuture<'a, Result<Decision, StoreError>> {
        let d = match self.0.acquire_now(key, quota, tokens) {
            Decision::Admitted(mut a) => {
                a.degraded = true;
                Decision::Admitted(a)
            }
            Decision::Refused(r) => Decision::Refused(Refusal {
                degraded: true,
                ..r
            }),
        };
        Box::pin(std::future::ready(Ok(d)))
    }
    fn settle(&self, key: &str, id: ReservationId, rate: &Rate, reserved: u64, actual: u64) {
        self.0.settle(key, id, rate, reserved, actual);
    }
    fn refund_request(&self, key: &str, id: ReservationId, rate: &Rate) {
        self.0.refund_request(key, id, rate);
    }
    fn release(&self, key: &str, id: ReservationId) {
        self.0.release(key, id);
    }
}

#[tokio::test(start_paused = true)]
async fn degraded_decisions_are_marked_on_success_and_on_refusal() {
    let layer = RateLimitLayer::builder()
        .limits(Limits::none().requests_per_minute(1).concurrency(1))
        .store(Fallback(MemoryStore::new()))
        .build()
        .unwrap();
    let (mut svc, mut h) = tower_test::mock::spawn_layer(layer);
    let r = ok(&mut svc, &mut h, req(None), json_response(1)).await;
    assert_eq!(header(&r, "x-rampart-degraded"), "ratelimit");
    assert_eq!(header(&r, "x-ratelimit-remaining-requests"), "0");
    let e = refused(&mut svc, &mut h, req(None)).await;
    assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&e.to_response(), "x-rampart-degraded"), "ratelimit");
}

/// Always fails, with a policy of its own.
struct Down(Option<StoreFailure>);

impl RateLimitStore for Down {
    fn acquire<'a>(
        &'a self,
        _: &'a str,
        _: &'a Quota,
        _: u64,
    ) -> StoreFuture<'a, Result<Decision, StoreError>> {
        Box::pin(std::future::ready(Err(StoreError("down".into()))))
    }
    fn settle(&self, _: &str, _: ReservationId, _: &Rate, _: u64, _: u64) {}
    fn refund_request(&self, _: &str, _: ReservationId, _: &Rate) {}
    fn release(&self, _: &str, _: ReservationId) {}
    fn failure_policy(&self) -> Option<StoreFailure> {
        self.0
    }
}

#[tokio::test(start_paused = true)]
async fn the_stores_own_policy_wins_over_the_layers() {
    // The layer says fail_open (the default); the store says fail_closed.
    let layer = RateLimitLayer::builder()
        .limits(Limits::none().requests_per_minute(1))
        .store(Down(Some(StoreFailure::FailClosed)))
        .build()
        .unwrap();
    let (mut svc, mut h) = tower_test::mock::spawn_layer(layer);
    let e = refused(&mut svc, &mut h, req(None)).await;
    assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(e.code().unwrap(), "state_store_unavailable");

    // The layer says fail_closed; the store says fail_open.
    let layer = RateLimitLayer::builder()
        .limits(Limits::none().requests_per_minute(1))
        .on_store_error(StoreFailure::FailClosed)
        .store(Down(Some(StoreFailure::FailOpen)))
        .build()
        .unwrap();
    let (mut svc, mut h) = tower_test::mock::spawn_layer(layer);
    let r = ok(&mut svc, &mut h, req(None), json_response(1)).await;
    assert_eq!(header(&r, "x-rampart-degraded"), "ratelimit");

    // No policy of its own: the layer's applies.
    let layer = RateLimitLayer::builder()
        .limits(Limits::none().requests_per_minute(1))
        .on_store_error(StoreFailure::FailClosed)
        .store(Arc::new(Down(None)))
        .build()
        .unwrap();
    let (mut svc, mut h) = tower_test::mock::spawn_layer(layer);
    let e = refused(&mut svc, &mut h, req(None)).await;
    assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
}
