//! What the layer tells the store about each admission: settle and refund at most once, release
//! exactly once and last, with the admission's reservation id.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use rampart_core::Error;
use rampart_ratelimit::store::StoreFuture;
use rampart_ratelimit::{
    Decision, Limits, MemoryStore, Quota, Rate, RateLimitLayer, RateLimitStore, ReservationId,
    StoreError, TokenReservation,
};

/// A memory store that gives every admission a distinct id and records every call after it.
#[derive(Default)]
struct Recorder {
    inner: MemoryStore,
    next: Mutex<u64>,
    calls: Mutex<Vec<(String, u64)>>,
}

impl Recorder {
    fn calls(&self) -> Vec<(String, u64)> {
        self.calls.lock().unwrap().clone()
    }
    fn log(&self, what: &str, id: ReservationId) {
        self.calls
            .lock()
            .unwrap()
            .push((what.to_owned(), id.0 >> 1));
    }
}

impl RateLimitStore for Recorder {
    fn acquire<'a>(
        &'a self,
        key: &'a str,
        quota: &'a Quota,
        tokens: u64,
    ) -> StoreFuture<'a, Result<Decision, StoreError>> {
        let d = match self.inner.acquire_now(key, quota, tokens) {
            Decision::Admitted(mut a) => {
                let mut n = self.next.lock().unwrap();
                *n += 1;
                // Keep the memory store's slot bit; number the admission above it.
                a.id = ReservationId(a.id.0 | (*n << 1));
                Decision::Admitted(a)
            }
            refused => refused,
        };
        Box::pin(std::future::ready(Ok(d)))
    }
    fn settle(&self, key: &str, id: ReservationId, rate: &Rate, reserved: u64, actual: u64) {
        self.log(&format!("settle {reserved}->{actual}"), id);
        self.inner.settle(key, id, rate, reserved, actual);
    }
    fn refund_request(&self, key: &str, id: ReservationId, rate: &Rate) {
        self.log("refund", id);
        self.inner.refund_request(key, id, rate);
    }
    fn release(&self, key: &str, id: ReservationId) {
        self.log("release", id);
        self.inner.release(key, id);
    }
}

fn layer(store: &Arc<Recorder>, limits: Limits) -> (Svc, MockHandle) {
    let layer = RateLimitLayer::builder()
        .limits(limits)
        .store(store.clone())
        .build()
        .unwrap();
    tower_test::mock::spawn_layer(layer)
}

fn all() -> Limits {
    Limits::none()
        .requests_per_minute(100)
        .tokens_per_minute(100_000)
        .concurrency(10)
}

#[tokio::test(start_paused = true)]
async fn a_completed_response_settles_then_releases_once() {
    let store = Arc::new(Recorder::default());
    let (mut svc, mut h) = layer(&store, all());
    let reserve = reserve_of(&body("m", "hello", Some(100)), 100);
    let mut held = None;
    let r = roundtrip_with(&mut svc, &mut h, req(Some(100)), |upstream| {
        held = Some(
            upstream
                .extensions()
                .get::<TokenReservation>()
                .unwrap()
                .clone(),
        );
        json_response(40)
    })
    .await
    .unwrap();
    assert!(store.calls().is_empty(), "nothing before the body ends");
    drain(r).await;
    assert_eq!(
        store.calls(),
        [
            (format!("settle {reserve}->40"), 1),
            ("release".to_owned(), 1)
        ]
    );
    // The admission is over: a late settle does nothing.
    let held = held.unwrap();
    assert_eq!(held.id(), ReservationId(1 << 1 | 1));
    assert!(!held.settle(0));
    assert!(!held.keep());
    assert_eq!(store.calls().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn without_slot_or_reservation_the_admission_ends_with_the_response_headers() {
    let store = Arc::new(Recorder::default());
    let (mut svc, mut h) = layer(&store, Limits::none().requests_per_minute(100));
    let (resp, _tx) = untapped_response();
    let r = roundtrip(&mut svc, &mut h, req(None), resp).await.unwrap();
    assert_eq!(store.calls(), [("release".to_owned(), 1)]);
    drop(r);
    assert_eq!(store.calls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_refusal_below_refunds_everything_then_releases() {
    let store = Arc::new(Recorder::default());
    let (mut svc, mut h) = layer(&store, all());
    let reserve = reserve_of(&body("m", "hello", Some(100)), 100);
    tokio_test::assert_ready_ok!(svc.poll_ready());
    let task = tokio::spawn(svc.call(req(Some(100))));
    let (_r, send) = h.next_request().await.unwrap();
    send.send_error(Error::circuit_open("p/m", Duration::from_secs(5)));
    assert!(task.await.unwrap().is_err());
    assert_eq!(
        store.calls(),
        [
            (format!("settle {reserve}->0"), 1),
            ("refund".to_owned(), 1),
            ("release".to_owned(), 1)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_dropped_call_only_releases() {
    let store = Arc::new(Recorder::default());
    let (mut svc, mut h) = layer(&store, all());
    tokio_test::assert_ready_ok!(svc.poll_ready());
    let task = tokio::spawn(svc.call(req(Some(100))));
    let (_r, _send) = h.next_request().await.unwrap();
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert_eq!(store.calls(), [("release".to_owned(), 1)]);
}

#[tokio::test(start_paused = true)]
async fn each_admission_is_named_by_its_own_id() {
    let store = Arc::new(Recorder::default());
    let (mut svc, mut h) = layer(&store, all());
    for _ in 0..3 {
        ok(&mut svc, &mut h, req(Some(10)), json_response(5)).await;
    }
    let released: Vec<u64> = store
        .calls()
        .into_iter()
        .filter(|(what, _)| what == "release")
        .map(|(_, id)| id)
        .collect();
    assert_eq!(released, [1, 2, 3]);
}
