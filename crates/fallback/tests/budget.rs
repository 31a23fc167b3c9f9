//! The retry budget bounds upstream calls under a failing upstream: no retry storms.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use rampart_fallback::FallbackLayer;
use tower::{Layer, ServiceExt};

#[tokio::test(start_paused = true)]
async fn budget_bounds_upstream_calls_under_a_failing_upstream() {
    let (svc, log) = scripted(|_, _| Reply::Status(503, None));
    // Defaults: ratio 0.2, 10 per second over 10 s; three attempts per request.
    let layer = FallbackLayer::builder()
        .chain("a", ["b", "c"])
        .jitter(|_: Duration| Duration::ZERO)
        .build()
        .unwrap();
    let svc = layer.layer(svc);
    let requests = 2_000u32;
    let mut single_attempt = 0;
    for _ in 0..requests {
        let err = svc.clone().oneshot(request("a")).await.unwrap_err();
        let resp = rampart_core::error_response(&err);
        assert_eq!(resp.status(), 503);
        if resp.headers()["x-rampart-attempts"] == "1" {
            single_attempt += 1;
        }
    }
    let calls = log.len() as f64;
    assert!(
        calls <= 1.3 * f64::from(requests),
        "{calls} upstream calls for {requests} requests"
    );
    // Without a budget it would be 3 × requests; the budget let the reserve and 20 % through.
    assert!(calls >= f64::from(requests) * 1.2, "{calls}");
    assert!(single_attempt > 1_000, "{single_attempt}");
}

#[tokio::test(start_paused = true)]
async fn budget_refills_as_the_window_slides() {
    let (svc, log) = scripted(|_, _| Reply::Status(500, None));
    let layer = FallbackLayer::builder()
        .budget(0.0, 1.0, Duration::from_secs(2))
        .jitter(|_: Duration| Duration::ZERO)
        .build()
        .unwrap();
    let svc = layer.layer(svc);
    // Reserve of 2 retries: the first request uses both.
    svc.clone().oneshot(request("a")).await.unwrap_err();
    assert_eq!(log.len(), 3);
    svc.clone().oneshot(request("a")).await.unwrap_err();
    assert_eq!(log.len(), 4);
    tokio::time::advance(Duration::from_secs(2)).await;
    svc.clone().oneshot(request("a")).await.unwrap_err();
    assert_eq!(log.len(), 7);
}
