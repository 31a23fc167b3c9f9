//! Through the edge adapter: the client sees the OpenAI-shaped 503.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use rampart_circuit_breaker::{BreakerState, CircuitBreakerConfig, CircuitBreakerLayer};
use rampart_core::{Body, Edge, EdgeConfig};
use rampart_mock::{Fault, MockConfig, MockProvider};
use tower::{Layer, ServiceExt};

fn request() -> Request<Body> {
    Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from(
            r#"{"model":"mock-small","messages":[{"role":"user","content":"hi"}]}"#,
        ))
        .unwrap()
}

async fn json(resp: http::Response<Body>) -> serde_json::Value {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test(start_paused = true)]
async fn open_breaker_is_a_503_with_retry_after_and_openai_error() {
    let mock = MockProvider::new(MockConfig::default());
    mock.set_fault(
        Some("mock-small"),
        Fault::status_code(StatusCode::BAD_GATEWAY),
    );
    let layer = CircuitBreakerLayer::from_config(CircuitBreakerConfig {
        min_calls: 1,
        consecutive_failures: 1,
        half_open_probes: 1,
        open_base: Duration::from_secs(30),
        jitter: 0.0,
        ..CircuitBreakerConfig::default()
    })
    .unwrap();
    let handle = layer.handle();
    let edge = Edge::new(layer.layer(mock.service()), EdgeConfig::default());

    let resp = edge.clone().oneshot(request()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(handle.state("mock-small"), Some(BreakerState::Open));

    tokio::time::advance(Duration::from_millis(10_200)).await;
    let resp = edge.clone().oneshot(request()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "20");
    assert_eq!(resp.headers()["x-rampart-error-source"], "circuit_breaker");
    let body = json(resp).await;
    assert_eq!(body["error"]["code"], "upstream_unavailable");
    assert_eq!(body["error"]["type"], "server_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("mock-small")
    );
    assert_eq!(mock.calls("mock-small"), 1);

    // After the open time, one probe goes through and closes the breaker once its body ends.
    tokio::time::advance(Duration::from_secs(20)).await;
    mock.clear_faults();
    let resp = edge.clone().oneshot(request()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = json(resp).await;
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(handle.state("mock-small"), Some(BreakerState::Closed));
}
