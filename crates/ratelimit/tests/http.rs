//! HTTP level: the core edge adapter + the layer + the in-process mock provider (tapped, so
//! responses carry `ResponseFacts`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use rampart_core::tap::tap_response;
use rampart_core::{Body, BoxChatService, BoxError, ChatRequest, Edge, EdgeConfig, Target};
use rampart_mock::{Answer, MockConfig, MockProvider};
use rampart_ratelimit::{Limits, RateLimitLayer};
use serde_json::Value;
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

const MODEL: &str = "gpt-4.1";

/// The mock as the gateway's upstream would present it: streams ask for usage upstream and the
/// extra chunk is hidden from a client that did not; every response is tapped.
fn upstream(mock: &MockProvider) -> BoxChatService {
    let svc = mock.service();
    BoxCloneSyncService::new(tower::service_fn(move |mut req: Request<Body>| {
        let svc = svc.clone();
        async move {
            let chat = rampart_core::chat_request(&req)
                .cloned()
                .ok_or("unparsed")?;
            let hide = chat.is_stream() && !chat.wants_stream_usage();
            if hide {
                let with_usage = Arc::new(chat.with_stream_usage());
                *req.body_mut() = Body::from_bytes(with_usage.to_bytes());
                req.extensions_mut().insert(with_usage);
            }
            let started = Instant::now();
            let resp = svc.oneshot(req).await?;
            let model = chat.model();
            Ok::<_, BoxError>(tap_response(
                resp,
                Target::new("mock", model),
                model.into(),
                started,
                hide,
            ))
        }
    }))
}

fn gateway(mock: &MockProvider, layer: RateLimitLayer) -> Edge<BoxChatService> {
    let stack = BoxCloneSyncService::new(layer.layer(upstream(mock)));
    Edge::new(stack, EdgeConfig::default())
}

fn chat_body(stream: bool, max_tokens: Option<u64>) -> String {
    let mut v = serde_json::json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say something about rate limits."}],
        "stream": stream,
    });
    if let Some(m) = max_tokens {
        v["max_tokens"] = m.into();
    }
    v.to_string()
}

async fn send(edge: &mut Edge<BoxChatService>, body: &str) -> Response<Body> {
    let req = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    ServiceExt::<Request<Body>>::ready(edge)
        .await
        .unwrap()
        .call(req)
        .await
        .unwrap()
}

async fn text(resp: Response<Body>) -> String {
    String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap()
}

fn h<'a>(resp: &'a Response<Body>, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("missing {name}"))
        .to_str()
        .unwrap()
}

fn estimate(body: &str, output: u64) -> u64 {
    let chat = ChatRequest::parse(body.to_owned().into()).unwrap();
    chat.estimate_prompt_tokens() + output
}

#[tokio::test(start_paused = true)]
async fn rpm_limit_over_http() {
    let mock = MockProvider::new(MockConfig::default());
    let mut edge = gateway(
        &mock,
        RateLimitLayer::new(Limits::none().requests_per_minute(3)),
    );
    let body = chat_body(false, Some(5));
    for remaining in ["2", "1", "0"] {
        let resp = send(&mut edge, &body).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(h(&resp, "x-ratelimit-limit-requests"), "3");
        assert_eq!(h(&resp, "x-ratelimit-remaining-requests"), remaining);
        text(resp).await;
    }
    let resp = send(&mut edge, &body).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(h(&resp, "retry-after"), "20");
    assert_eq!(h(&resp, "x-rampart-error-source"), "rate_limit");
    assert_eq!(h(&resp, "x-ratelimit-remaining-requests"), "0");
    assert_eq!(h(&resp, "x-ratelimit-reset-requests"), "1m0s");
    assert_eq!(h(&resp, "content-type"), "application/json");
    let err: Value = serde_json::from_str(&text(resp).await).unwrap();
    assert_eq!(err["error"]["code"], "rate_limit_exceeded");
    assert_eq!(err["error"]["type"], "requests");
    assert_eq!(err["error"]["param"], Value::Null);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("requests")
    );
    assert_eq!(mock.calls(MODEL), 3);

    tokio::time::advance(Duration::from_secs(20)).await;
    let resp = send(&mut edge, &body).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(mock.calls(MODEL), 4);
}

#[tokio::test(start_paused = true)]
async fn tpm_settles_to_the_providers_usage_for_json() {
    let mock = MockProvider::new(MockConfig::default());
    let mut edge = gateway(
        &mock,
        RateLimitLayer::new(Limits::none().tokens_per_minute(10_000)),
    );
    let body = chat_body(false, Some(5));
    let resp = send(&mut edge, &body).await;
    assert_eq!(
        h(&resp, "x-ratelimit-remaining-tokens"),
        (10_000 - estimate(&body, 5)).to_string()
    );
    let json: Value = serde_json::from_str(&text(resp).await).unwrap();
    let used = json["usage"]["total_tokens"].as_u64().unwrap();
    let resp = send(&mut edge, &body).await;
    assert_eq!(
        h(&resp, "x-ratelimit-remaining-tokens"),
        (10_000 - used - estimate(&body, 5)).to_string()
    );
}

#[tokio::test(start_paused = true)]
async fn tpm_settles_to_the_providers_usage_for_streams() {
    let mock = MockProvider::new(MockConfig::default());
    let mut edge = gateway(
        &mock,
        RateLimitLayer::new(Limits::none().tokens_per_minute(10_000)),
    );
    // No max_tokens: the default output estimate (256) is reserved.
    let body = chat_body(true, None);
    let resp = send(&mut edge, &body).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        h(&resp, "x-ratelimit-remaining-tokens"),
        (10_000 - estimate(&body, 256)).to_string()
    );
    let sse = text(resp).await;
    assert!(sse.ends_with("data: [DONE]\n\n"));
    // The client did not ask for usage: the upstream's usage chunk was hidden, but counted.
    assert!(!sse.contains("total_tokens"), "{sse}");
    let chat = ChatRequest::parse(body.clone().into()).unwrap();
    let used = Answer::for_request(&chat, rampart_mock::DEFAULT_OUTPUT_TOKENS)
        .unwrap()
        .usage()
        .total_tokens;
    let resp = send(&mut edge, &body).await;
    assert_eq!(
        h(&resp, "x-ratelimit-remaining-tokens"),
        (10_000 - used - estimate(&body, 256)).to_string()
    );
}

#[tokio::test(start_paused = true)]
async fn oversized_request_over_http() {
    let mock = MockProvider::new(MockConfig::default());
    let mut edge = gateway(
        &mock,
        RateLimitLayer::new(Limits::none().tokens_per_minute(100)),
    );
    let resp = send(&mut edge, &chat_body(false, Some(1000))).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().get("retry-after").is_none());
    assert_eq!(h(&resp, "x-ratelimit-limit-tokens"), "100");
    let err: Value = serde_json::from_str(&text(resp).await).unwrap();
    assert_eq!(err["error"]["type"], "tokens");
    assert_eq!(err["error"]["code"], "rate_limit_exceeded");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Request too large")
    );
    assert_eq!(mock.total_calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn concurrency_over_http_held_by_an_unread_stream() {
    let mock = MockProvider::new(MockConfig::default());
    let mut edge = gateway(&mock, RateLimitLayer::new(Limits::none().concurrency(1)));
    let body = chat_body(true, Some(3));
    let first = send(&mut edge, &body).await;
    assert_eq!(first.status(), StatusCode::OK);
    let resp = send(&mut edge, &body).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(h(&resp, "retry-after"), "1");
    assert_eq!(mock.calls(MODEL), 1);
    // Read to the end: the slot is free again.
    text(first).await;
    let second = send(&mut edge, &body).await;
    assert_eq!(second.status(), StatusCode::OK);
    // Client disconnect: dropping the body frees it too.
    drop(second);
    let third = send(&mut edge, &body).await;
    assert_eq!(third.status(), StatusCode::OK);
    assert_eq!(mock.calls(MODEL), 3);
}
