//! Latency on paused time: exact virtual durations.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

mod common;

use std::time::Duration;

use common::{call, chat, events, simple};
use http_body_util::BodyExt;
use rampart_mock::{Latency, MockConfig, MockProvider};
use serde_json::json;
use tokio::time::Instant;

const MS: Duration = Duration::from_millis(1);

fn latency(base: u64, first: u64, gap: u64) -> Latency {
    Latency {
        base: MS * base as u32,
        jitter: Duration::ZERO,
        first_token: MS * first as u32,
        chunk_gap: MS * gap as u32,
    }
}

#[tokio::test(start_paused = true)]
async fn base_latency_delays_the_headers_exactly() {
    let mock = MockProvider::new(MockConfig {
        latency: Latency::fixed(MS * 100),
        ..Default::default()
    });
    let start = Instant::now();
    let resp = call(&mock, chat(&simple("m", "x"))).await.unwrap();
    assert_eq!(start.elapsed(), MS * 100);
    resp.into_body().collect().await.unwrap();
    assert_eq!(start.elapsed(), MS * 100);
}

#[tokio::test(start_paused = true)]
async fn zero_latency_never_sleeps() {
    let mock = MockProvider::default();
    let start = Instant::now();
    for stream in [false, true] {
        let mut body = simple("m", "x");
        body["stream"] = json!(stream);
        let resp = call(&mock, chat(&body)).await.unwrap();
        resp.into_body().collect().await.unwrap();
    }
    // On paused time any sleep would have advanced the clock.
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn json_waits_for_the_whole_generation() {
    let mock = MockProvider::new(MockConfig {
        latency: latency(100, 50, 10),
        ..Default::default()
    });
    let mut body = simple("m", "x");
    body["max_tokens"] = json!(5);
    let start = Instant::now();
    let resp = call(&mock, chat(&body)).await.unwrap();
    // base + first_token + 4 gaps
    assert_eq!(start.elapsed(), MS * 190);
    resp.into_body().collect().await.unwrap();
    assert_eq!(start.elapsed(), MS * 190);
}

#[tokio::test(start_paused = true)]
async fn stream_chunks_arrive_on_schedule() {
    let mock = MockProvider::new(MockConfig {
        latency: latency(100, 50, 10),
        ..Default::default()
    });
    let mut body = simple("m", "x");
    body["stream"] = json!(true);
    body["max_tokens"] = json!(4);
    body["stream_options"] = json!({"include_usage": true});
    let start = Instant::now();
    let resp = call(&mock, chat(&body)).await.unwrap();
    assert_eq!(start.elapsed(), MS * 100);
    let mut body = resp.into_body();
    let mut times = Vec::new();
    let mut kinds = Vec::new();
    while let Some(frame) = body.frame().await {
        let data = frame.unwrap().into_data().unwrap();
        times.push(start.elapsed());
        kinds.push(events(&data).remove(0));
    }
    // role, 4 content, finish, usage, [DONE]
    assert_eq!(kinds.len(), 8);
    let expected: Vec<Duration> = [100, 150, 160, 170, 180, 180, 180, 180]
        .into_iter()
        .map(|ms| MS * ms)
        .collect();
    assert_eq!(times, expected);
}

#[tokio::test(start_paused = true)]
async fn jitter_stays_in_range() {
    let mock = MockProvider::new(MockConfig {
        latency: Latency {
            base: MS * 20,
            jitter: MS * 30,
            ..Latency::ZERO
        },
        ..Default::default()
    });
    let mut seen = std::collections::HashSet::new();
    for _ in 0..50 {
        let start = Instant::now();
        call(&mock, chat(&simple("m", "x"))).await.unwrap();
        let e = start.elapsed();
        assert!(e >= MS * 20 && e < MS * 50, "{e:?}");
        seen.insert(e);
    }
    assert!(seen.len() > 1, "jitter never varied");
}

#[tokio::test(start_paused = true)]
async fn latency_changes_at_runtime() {
    let mock = MockProvider::default();
    let start = Instant::now();
    call(&mock, chat(&simple("m", "x"))).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    mock.set_latency(Latency::fixed(MS * 250));
    assert_eq!(mock.latency().base, MS * 250);
    let start = Instant::now();
    call(&mock, chat(&simple("m", "x"))).await.unwrap();
    assert_eq!(start.elapsed(), MS * 250);
    mock.set_latency(Latency::ZERO);
    let start = Instant::now();
    call(&mock, chat(&simple("m", "x"))).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn concurrent_requests_sleep_independently() {
    let mock = MockProvider::new(MockConfig {
        latency: Latency::fixed(MS * 100),
        ..Default::default()
    });
    let start = Instant::now();
    let calls = (0..10).map(|_| call(&mock, chat(&simple("m", "x"))));
    for r in futures_util::future::join_all(calls).await {
        r.unwrap();
    }
    assert_eq!(start.elapsed(), MS * 100);
}
