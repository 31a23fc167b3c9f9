//! Single-flight on paused time: 50 concurrent identical misses make one upstream call, also
//! when the first client leaves; a failing call gives every waiter the error and stores
//! nothing; a waiter that times out goes upstream itself.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use http::StatusCode;
use http_body_util::BodyExt;
use rampart_cache::CacheLayer;
use rampart_mock::{Fault, Latency, MockConfig};
use serde_json::{Value, json};

fn slow() -> MockConfig {
    MockConfig {
        latency: Latency {
            base: Duration::from_millis(200),
            first_token: Duration::from_millis(50),
            chunk_gap: Duration::from_millis(10),
            ..Latency::ZERO
        },
        ..MockConfig::default()
    }
}

async fn fifty(s: &Setup, b: &Value) -> Vec<(String, u16, bytes::Bytes)> {
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let svc = s.svc.clone();
        let b = b.clone();
        tasks.push(tokio::spawn(
            async move { roundtrip(&svc, req(&b, "t")).await },
        ));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(start_paused = true)]
async fn fifty_identical_misses_make_one_call() {
    let s = setup_with(CacheLayer::default(), slow());
    let b = body("m1", "together");
    let results = fifty(&s, &b).await;
    assert_eq!(s.mock.calls("m1"), 1);
    let misses = results.iter().filter(|r| r.0 == "miss").count();
    let hits = results.iter().filter(|r| r.0 == "hit").count();
    assert_eq!((misses, hits), (1, 49));
    let first = &results[0].2;
    for r in &results {
        assert_eq!(r.1, 200);
        assert_eq!(&r.2, first, "every client gets the same JSON");
    }
    assert_eq!(s.handle.flights(), 0);
}

#[tokio::test(start_paused = true)]
async fn streamed_miss_is_shared_in_both_shapes() {
    let s = setup_with(CacheLayer::default(), slow());
    let mut sb = body("m1", "streams");
    sb["stream"] = json!(true);
    let jb = body("m1", "streams");
    let mut tasks = Vec::new();
    for i in 0..50 {
        let svc = s.svc.clone();
        let b = if i % 2 == 0 { sb.clone() } else { jb.clone() };
        tasks.push(tokio::spawn(
            async move { roundtrip(&svc, req(&b, "t")).await },
        ));
    }
    let mut texts = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let (_, code, body) = t.await.unwrap();
        assert_eq!(code, 200);
        let text = if i % 2 == 0 {
            sse_answer(&body).0
        } else {
            let v: Value = serde_json::from_slice(&body).unwrap();
            v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        texts.push(text);
    }
    assert_eq!(s.mock.calls("m1"), 1);
    assert!(texts.iter().all(|t| t == &texts[0] && !t.is_empty()));
}

#[tokio::test(start_paused = true)]
async fn the_call_survives_the_first_client_leaving() {
    let s = setup_with(CacheLayer::default(), slow());
    let b = body("m1", "leaving");
    // The first client gives up before the answer.
    let svc = s.svc.clone();
    let b1 = b.clone();
    let first = tokio::spawn(async move { roundtrip(&svc, req(&b1, "t")).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(s.handle.flights(), 1);
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    let results = fifty(&s, &b).await;
    assert!(results.iter().all(|r| r.0 == "hit" && r.1 == 200));
    assert_eq!(s.mock.calls("m1"), 1);
    assert_eq!(s.handle.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_stream_whose_client_leaves_mid_way_still_fills() {
    let s = setup_with(CacheLayer::default(), slow());
    let mut sb = body("m1", "mid-way");
    sb["stream"] = json!(true);
    let resp = call(&s.svc, req(&sb, "t")).await.unwrap();
    assert_eq!(status(&resp), "miss");
    let mut body = resp.into_body();
    let _ = body.frame().await.unwrap().unwrap();
    drop(body);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(s.handle.len(), 1);
    let (st, _, _) = roundtrip(&s.svc, req(&sb, "t")).await;
    assert_eq!(st, "hit");
    assert_eq!(s.mock.calls("m1"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failing_call_fails_every_waiter_and_stores_nothing() {
    let s = setup_with(CacheLayer::default(), slow());
    s.mock
        .set_fault(None, Fault::status_code(StatusCode::SERVICE_UNAVAILABLE));
    let b = body("m1", "failing");
    let results = fifty(&s, &b).await;
    assert_eq!(s.mock.calls("m1"), 1);
    let first: Value = serde_json::from_slice(&results[0].2).unwrap();
    assert!(first["error"].is_object());
    for r in &results {
        assert_eq!((r.0.as_str(), r.1), ("miss", 503));
        assert_eq!(r.2, results[0].2, "the same error body");
    }
    assert_eq!(s.handle.len(), 0);
    // The next request goes upstream again.
    s.mock.clear_faults();
    assert_eq!(roundtrip(&s.svc, req(&b, "t")).await.0, "miss");
    assert_eq!(s.mock.calls("m1"), 2);
}

#[tokio::test(start_paused = true)]
async fn a_cut_shared_stream_fails_every_waiter() {
    let s = setup_with(CacheLayer::default(), slow());
    s.mock.set_fault(None, Fault::cut_after(3));
    let mut sb = body("m1", "cut");
    sb["stream"] = json!(true);
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let svc = s.svc.clone();
        let b = sb.clone();
        tasks.push(tokio::spawn(async move {
            let resp = call(&svc, req(&b, "t")).await.unwrap();
            let code = resp.status().as_u16();
            (code, resp.into_body().collect().await.is_ok())
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    assert_eq!(s.mock.calls("m1"), 1);
    // The leader saw the broken stream; the waiters a 502.
    assert_eq!(outcomes.iter().filter(|o| **o == (200, false)).count(), 1);
    assert_eq!(outcomes.iter().filter(|o| **o == (502, true)).count(), 9);
    assert_eq!(s.handle.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_inner_error_reaches_every_waiter() {
    let s = setup_with(CacheLayer::default(), slow());
    s.mock.set_fault(None, Fault::reset());
    let b = body("m1", "reset");
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let svc = s.svc.clone();
        let b = b.clone();
        tasks.push(tokio::spawn(async move { call(&svc, req(&b, "t")).await }));
    }
    let mut errors = 0;
    let mut responses = 0;
    for t in tasks {
        match t.await.unwrap() {
            Err(_) => errors += 1,
            Ok(resp) => {
                assert_eq!(resp.status(), 502);
                assert_eq!(status(&resp), "miss");
                responses += 1;
            }
        }
    }
    assert_eq!((errors, responses), (1, 4));
    assert_eq!(s.mock.calls("m1"), 1);
}

#[tokio::test(start_paused = true)]
async fn waiters_give_up_after_the_flight_timeout() {
    let mut config = slow();
    config.latency.base = Duration::from_secs(10);
    let s = setup_with(
        CacheLayer::builder()
            .flight_timeout(Duration::from_secs(1))
            .build()
            .unwrap(),
        config,
    );
    let b = body("m1", "patience");
    let svc = s.svc.clone();
    let b1 = b.clone();
    let leader = tokio::spawn(async move { roundtrip(&svc, req(&b1, "t")).await });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let started = tokio::time::Instant::now();
    let (st, code, _) = roundtrip(&s.svc, req(&b, "t")).await;
    assert_eq!((st.as_str(), code), ("miss", 200));
    // Waited 1 s, then made its own call (10 s and a bit).
    assert!(started.elapsed() >= Duration::from_secs(11));
    assert_eq!(s.mock.calls("m1"), 2);
    assert_eq!(leader.await.unwrap().0, "miss");
}

#[tokio::test(start_paused = true)]
async fn single_flight_can_be_turned_off() {
    let s = setup_with(
        CacheLayer::builder().single_flight(false).build().unwrap(),
        slow(),
    );
    let b = body("m1", "alone");
    let results = fifty(&s, &b).await;
    assert!(results.iter().all(|r| r.0 == "miss"));
    assert_eq!(s.mock.calls("m1"), 50);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_stops_reading_is_cut_and_the_fill_goes_on() {
    use http_body_util::BodyExt;
    let s = setup(rampart_cache::CacheLayer::default());
    let mut b = body("m1", "a long answer please");
    b["stream"] = serde_json::json!(true);
    b["max_tokens"] = serde_json::json!(600);
    // The client takes the response head and then reads nothing.
    let stalled = call(&s.svc, req(&b, "t")).await.unwrap();
    // The fill waits for room at most the stall window, then finishes and stores the answer.
    tokio::time::sleep(rampart_cache::CLIENT_STALL + std::time::Duration::from_secs(1)).await;
    let (status, _, _) = roundtrip(&s.svc, req(&b, "t")).await;
    assert_eq!(status, "hit");
    assert_eq!(s.mock.calls("m1"), 1);
    // The stalled client gets what was buffered, then an error: never a silent clean end.
    let result = stalled.into_body().collect().await;
    assert!(result.is_err(), "a cut answer must not look complete");
}
