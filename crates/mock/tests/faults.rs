//! Fault injection: statuses with retry headers, resets, cuts, stalls, failure rates and scopes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

mod common;

use std::time::Duration;

use common::{bytes, call, chat, events, frames, json, simple};
use http::StatusCode;
use http_body_util::BodyExt;
use rampart_mock::{Fault, Latency, MockConfig, MockProvider, Stall};
use serde_json::{Value, json};
use tokio::time::{Instant, timeout};

fn stream_body(model: &str, tokens: u64) -> Value {
    let mut b = simple(model, "x");
    b["stream"] = json!(true);
    b["max_tokens"] = json!(tokens);
    b
}

#[tokio::test]
async fn status_429_with_retry_after_headers() {
    let mock = MockProvider::default();
    mock.set_fault(None, Fault::rate_limited(Duration::from_millis(1500)));
    let resp = call(&mock, chat(&simple("m", "x"))).await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "2");
    assert_eq!(resp.headers()["retry-after-ms"], "1500");
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v = json(resp).await;
    assert_eq!(v["error"]["type"], "requests");
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert_eq!(v["error"]["param"], Value::Null);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Rate limit")
    );
    // Counted before the fault.
    assert_eq!(mock.calls("m"), 1);
}

#[tokio::test]
async fn status_529_503_500_bodies_and_headers() {
    let mock = MockProvider::default();
    mock.set_fault(
        None,
        Fault::overloaded().with_retry_after(Duration::from_secs(3)),
    );
    let resp = call(&mock, chat(&simple("m", "x"))).await.unwrap();
    assert_eq!(resp.status().as_u16(), 529);
    assert_eq!(resp.headers()["retry-after"], "3");
    assert_eq!(resp.headers()["retry-after-ms"], "3000");
    let v = json(resp).await;
    assert_eq!(v["error"]["type"], "overloaded_error");
    assert_eq!(v["error"]["code"], "overloaded");

    mock.set_fault(
        None,
        Fault::status_code(StatusCode::SERVICE_UNAVAILABLE)
            .with_retry_after(Duration::from_millis(1)),
    );
    let resp = call(&mock, chat(&simple("m", "x"))).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(resp.headers()["retry-after-ms"], "1");
    assert_eq!(json(resp).await["error"]["type"], "server_error");

    mock.set_fault(None, Fault::status_code(StatusCode::INTERNAL_SERVER_ERROR));
    let resp = call(&mock, chat(&simple("m", "x"))).await.unwrap();
    assert_eq!(resp.status(), 500);
    assert!(resp.headers().get("retry-after").is_none());
    assert!(resp.headers().get("retry-after-ms").is_none());
    let v = json(resp).await;
    assert_eq!(v["error"]["type"], "server_error");
    assert_eq!(v["error"]["code"], Value::Null);

    // A status fault answers streams with the same JSON error, not an event stream.
    let resp = call(&mock, chat(&stream_body("m", 3))).await.unwrap();
    assert_eq!(resp.status(), 500);
    assert_eq!(resp.headers()["content-type"], "application/json");
}

#[tokio::test]
async fn reset_is_a_connection_reset_error() {
    let mock = MockProvider::default();
    mock.set_fault(None, Fault::reset());
    let err = call(&mock, chat(&simple("m", "x"))).await.unwrap_err();
    let io = err.downcast_ref::<std::io::Error>().expect("an io::Error");
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionReset);
    assert_eq!(mock.calls("m"), 1);
}

#[tokio::test]
async fn cut_after_n_chunks_breaks_the_stream_without_done() {
    let mock = MockProvider::default();
    mock.set_fault(None, Fault::cut_after(3));
    let resp = call(&mock, chat(&stream_body("m", 10))).await.unwrap();
    assert_eq!(resp.status(), 200);
    let (got, err) = frames(resp).await;
    assert_eq!(got.len(), 3);
    let err = err.expect("a body error");
    assert!(err.to_string().contains("cut"), "{err}");
    let all = got.concat();
    let evs = events(&all);
    assert_eq!(evs.len(), 3);
    assert!(!evs.contains(&"[DONE]".to_owned()));

    // Cutting after more events than there are: everything but [DONE], then the error.
    mock.set_fault(None, Fault::cut_after(1000));
    let (got, err) = frames(call(&mock, chat(&stream_body("m", 2))).await.unwrap()).await;
    assert!(err.is_some());
    let evs = events(&got.concat());
    assert_eq!(evs.len(), 4); // role, 2 content, finish
    assert!(!evs.contains(&"[DONE]".to_owned()));

    // Cut at 0: the error comes first.
    mock.set_fault(None, Fault::cut_after(0));
    let (got, err) = frames(call(&mock, chat(&stream_body("m", 2))).await.unwrap()).await;
    assert!(got.is_empty() && err.is_some());
}

#[tokio::test]
async fn cut_json_fails_mid_body() {
    let mock = MockProvider::default();
    let full = bytes(call(&mock, chat(&simple("m", "x"))).await.unwrap()).await;
    mock.set_fault(None, Fault::cut_after(1));
    let resp = call(&mock, chat(&simple("m", "x"))).await.unwrap();
    assert_eq!(resp.status(), 200);
    let (got, err) = frames(resp).await;
    assert!(err.is_some());
    let got = got.concat();
    assert!(!got.is_empty() && got.len() < full.len());
    assert!(serde_json::from_slice::<Value>(&got).is_err());
}

#[tokio::test(start_paused = true)]
async fn stall_before_headers_times_out() {
    let mock = MockProvider::default();
    mock.set_fault(None, Fault::stalled(Stall::BeforeHeaders));
    let start = Instant::now();
    let r = timeout(
        Duration::from_secs(30),
        call(&mock, chat(&simple("m", "x"))),
    )
    .await;
    assert!(r.is_err(), "expected a timeout");
    assert_eq!(start.elapsed(), Duration::from_secs(30));
    assert_eq!(mock.calls("m"), 1);
}

#[tokio::test(start_paused = true)]
async fn stall_after_chunks_hangs_the_stream() {
    let mock = MockProvider::default();
    mock.set_fault(None, Fault::stalled(Stall::AfterChunks(2)));
    let resp = call(&mock, chat(&stream_body("m", 10))).await.unwrap();
    let mut body = resp.into_body();
    for _ in 0..2 {
        body.frame().await.unwrap().unwrap();
    }
    let start = Instant::now();
    assert!(timeout(Duration::from_secs(5), body.frame()).await.is_err());
    assert_eq!(start.elapsed(), Duration::from_secs(5));

    // JSON: half a body, then nothing.
    let resp = call(&mock, chat(&simple("m", "x"))).await.unwrap();
    let mut body = resp.into_body();
    assert!(
        !body
            .frame()
            .await
            .unwrap()
            .unwrap()
            .into_data()
            .unwrap()
            .is_empty()
    );
    assert!(timeout(Duration::from_secs(5), body.frame()).await.is_err());
}

#[tokio::test]
async fn failure_rate_zero_and_one_always_fire() {
    let mock = MockProvider::default();
    for rate in [0.0, 1.0] {
        mock.set_fault(
            None,
            Fault::status_code(StatusCode::BAD_GATEWAY).with_failure_rate(rate),
        );
        for _ in 0..50 {
            let resp = call(&mock, chat(&simple("m", "x"))).await.unwrap();
            assert_eq!(resp.status(), 502, "rate {rate}");
        }
    }
}

#[tokio::test]
async fn failure_rate_between_fires_sometimes() {
    let mock = MockProvider::default();
    mock.set_fault(
        None,
        Fault::status_code(StatusCode::BAD_GATEWAY).with_failure_rate(0.5),
    );
    let mut failed = 0;
    for _ in 0..400 {
        let resp = call(&mock, chat(&simple("m", "x"))).await.unwrap();
        if resp.status() == 502 {
            failed += 1;
        } else {
            assert_eq!(resp.status(), 200);
        }
    }
    // Binomial(400, 0.5): this range holds with overwhelming probability.
    assert!((100..=300).contains(&failed), "{failed}");
    assert_eq!(mock.total_calls(), 400);
}

#[tokio::test]
async fn per_model_fault_wins_and_faults_clear() {
    let mock = MockProvider::default();
    mock.set_fault(None, Fault::status_code(StatusCode::SERVICE_UNAVAILABLE));
    mock.set_fault(Some("a"), Fault::rate_limited(Duration::from_secs(1)));
    let status = |m: &'static str| {
        let mock = mock.clone();
        async move {
            call(&mock, chat(&simple(m, "x")))
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(status("a").await, 429);
    assert_eq!(status("b").await, 503);

    // A per-model fault that does nothing still shadows the global one.
    mock.set_fault(Some("c"), Fault::default());
    assert_eq!(status("c").await, 200);

    mock.clear_fault(None);
    assert_eq!(status("b").await, 200);
    assert_eq!(status("a").await, 429);
    mock.clear_fault(Some("a"));
    assert_eq!(status("a").await, 200);

    mock.set_fault(Some("a"), Fault::reset());
    mock.set_fault(None, Fault::reset());
    mock.clear_faults();
    assert_eq!(status("a").await, 200);
    assert_eq!(status("b").await, 200);
}

#[tokio::test(start_paused = true)]
async fn fault_answers_come_after_the_base_latency() {
    let mock = MockProvider::new(MockConfig {
        latency: Latency::fixed(Duration::from_millis(80)),
        ..Default::default()
    });
    mock.set_fault(None, Fault::rate_limited(Duration::from_secs(1)));
    let start = Instant::now();
    let resp = call(&mock, chat(&simple("m", "x"))).await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(start.elapsed(), Duration::from_millis(80));
}

#[tokio::test]
async fn error_event_ends_a_stream_without_done_and_spares_json() {
    let mock = MockProvider::default();
    mock.set_fault(None, Fault::error_event_after(3));
    let resp = call(&mock, chat(&stream_body("m", 5))).await.unwrap();
    assert_eq!(resp.status(), 200);
    let evs = events(&bytes(resp).await);
    // The role chunk, two words, then the error event; no [DONE].
    assert_eq!(evs.len(), 4);
    let err: Value = serde_json::from_str(&evs[3]).unwrap();
    assert_eq!(err["error"]["type"], "server_error");
    assert!(!evs.iter().any(|e| e == "[DONE]"));
    // A JSON answer is whole.
    let v = json(call(&mock, chat(&simple("m", "x"))).await.unwrap()).await;
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
}
