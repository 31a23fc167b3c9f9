//! `Upstream` against in-process simulated providers: target selection, model mapping, stream
//! usage handling, response facts, and every timeout on paused time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use rampart_core::{Body, BoxError, ErrorKind, Outcome, ResponseFacts, Target};
use rampart_mock::{Fault, Latency, MockConfig, MockProvider, Stall};
use rampart_upstream::{Timeouts, Upstream};
use tokio::time::Instant;
use tower::ServiceExt;

fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(1),
        first_byte: Duration::from_secs(10),
        idle: Duration::from_secs(5),
        total: Duration::from_secs(60),
    }
}

struct Setup {
    upstream: Upstream,
    a: MockProvider,
    b: MockProvider,
}

fn setup(t: Timeouts) -> Setup {
    let a = MockProvider::new(MockConfig::default());
    let b = MockProvider::new(MockConfig::default());
    let upstream = Upstream::builder()
        .service_provider("prov-a", a.service(), t)
        .service_provider("prov-b", b.service(), t)
        .model("alpha", "prov-a", Some("alpha-2025"))
        .model("beta", "prov-b", None)
        .build()
        .unwrap();
    Setup { upstream, a, b }
}

fn chat(body: &str) -> Request<Body> {
    Request::post("/v1/chat/completions")
        .body(Body::from_bytes(Bytes::copy_from_slice(body.as_bytes())))
        .unwrap()
}

async fn call(u: &Upstream, req: Request<Body>) -> Result<Response<Body>, BoxError> {
    u.clone().oneshot(req).await
}

#[tokio::test]
async fn model_mapping_and_facts() {
    let s = setup(timeouts());
    let resp = call(
        &s.upstream,
        chat(r#"{"model":"alpha","messages":[{"role":"user","content":"hi"}]}"#),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let facts = resp.extensions().get::<ResponseFacts>().cloned().unwrap();
    assert_eq!(facts.target, Target::new("prov-a", "alpha"));
    assert_eq!(&*facts.upstream_model, "alpha-2025");
    assert!(!facts.stream);
    assert_eq!(resp.headers()["x-rampart-model"], "alpha");
    assert_eq!(resp.headers()["x-rampart-provider"], "prov-a");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        v["model"], "alpha-2025",
        "the provider saw its own model name"
    );
    let report = facts.completion.report().unwrap();
    assert_eq!(report.outcome, Outcome::Complete);
    assert_eq!(
        report.usage.as_ref().unwrap().total_tokens,
        v["usage"]["total_tokens"].as_u64().unwrap()
    );
    assert_eq!(s.a.calls("alpha-2025"), 1);
}

#[tokio::test]
async fn a_target_extension_overrides_the_requested_model() {
    let s = setup(timeouts());
    let mut req = chat(r#"{"model":"alpha","messages":[{"role":"user","content":"hi"}]}"#);
    req.extensions_mut().insert(Target::new("prov-b", "beta"));
    let resp = call(&s.upstream, req).await.unwrap();
    assert_eq!(resp.headers()["x-rampart-model"], "beta");
    assert_eq!(s.b.calls("beta"), 1);
    assert_eq!(s.a.total_calls(), 0);

    let mut req = chat(r#"{"model":"alpha","messages":[{"role":"user","content":"hi"}]}"#);
    req.extensions_mut().insert(Target::new("nowhere", "beta"));
    let err = call(&s.upstream, req).await.unwrap_err();
    let err = rampart_core::error::find_error(&err).unwrap();
    assert_eq!(err.status(), 404);
}

#[tokio::test]
async fn unknown_model_is_404_listing_models() {
    let s = setup(timeouts());
    let err = call(
        &s.upstream,
        chat(r#"{"model":"gamma","messages":[{"role":"user","content":"hi"}]}"#),
    )
    .await
    .unwrap_err();
    let err = rampart_core::error::find_error(&err).unwrap();
    assert_eq!(err.status(), 404);
    assert!(err.message().contains("alpha, beta"), "{}", err.message());
}

#[tokio::test]
async fn streams_ask_for_usage_and_hide_it_again() {
    let s = setup(timeouts());
    let resp = call(
        &s.upstream,
        chat(r#"{"model":"beta","stream":true,"max_tokens":3,"messages":[{"role":"user","content":"hi"}]}"#),
    )
    .await
    .unwrap();
    let facts = resp.extensions().get::<ResponseFacts>().cloned().unwrap();
    assert!(facts.stream);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        !text.contains("\"prompt_tokens\""),
        "usage chunk hidden: {text}"
    );
    assert!(text.ends_with("data: [DONE]\n\n"));
    let sent = s.b.last_request().unwrap().json().unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);
    // The completion still knows the usage.
    let report = facts.completion.report().unwrap();
    assert_eq!(report.usage.as_ref().unwrap().completion_tokens, 3);
    assert!(report.is_complete_answer(true));
}

#[tokio::test]
async fn a_cut_stream_ends_as_upstream_error() {
    let s = setup(timeouts());
    s.b.set_fault(None, Fault::cut_after(3));
    let resp = call(
        &s.upstream,
        chat(r#"{"model":"beta","stream":true,"max_tokens":8,"messages":[{"role":"user","content":"hi"}]}"#),
    )
    .await
    .unwrap();
    let facts = resp.extensions().get::<ResponseFacts>().cloned().unwrap();
    assert!(resp.into_body().collect().await.is_err());
    assert!(matches!(
        facts.completion.report().unwrap().outcome,
        Outcome::UpstreamError(_)
    ));
}

#[tokio::test(start_paused = true)]
async fn first_byte_timeout() {
    let s = setup(timeouts());
    s.a.set_fault(None, Fault::stalled(Stall::BeforeHeaders));
    let start = Instant::now();
    let err = call(
        &s.upstream,
        chat(r#"{"model":"alpha","messages":[{"role":"user","content":"hi"}]}"#),
    )
    .await
    .unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    let err = rampart_core::error::find_error(&err).unwrap();
    assert_eq!(err.kind(), &ErrorKind::UpstreamTimeout);
    assert_eq!(err.status(), 504);
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_between_chunks() {
    let s = setup(timeouts());
    s.b.set_fault(None, Fault::stalled(Stall::AfterChunks(2)));
    let resp = call(
        &s.upstream,
        chat(r#"{"model":"beta","stream":true,"max_tokens":8,"messages":[{"role":"user","content":"hi"}]}"#),
    )
    .await
    .unwrap();
    let facts = resp.extensions().get::<ResponseFacts>().cloned().unwrap();
    let start = Instant::now();
    let err = resp.into_body().collect().await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert!(err.to_string().contains("no data"), "{err}");
    assert!(matches!(
        facts.completion.report().unwrap().outcome,
        Outcome::UpstreamError(_)
    ));
}

#[tokio::test(start_paused = true)]
async fn total_timeout_caps_a_slow_but_steady_stream() {
    let t = Timeouts {
        total: Duration::from_secs(3),
        ..timeouts()
    };
    let s = setup(t);
    // A chunk every second: never idle for 5 s, but 20 chunks take longer than 3 s.
    s.b.set_latency(Latency {
        chunk_gap: Duration::from_secs(1),
        ..Default::default()
    });
    let start = Instant::now();
    let resp = call(
        &s.upstream,
        chat(r#"{"model":"beta","stream":true,"max_tokens":20,"messages":[{"role":"user","content":"hi"}]}"#),
    )
    .await
    .unwrap();
    let err = resp.into_body().collect().await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert!(err.to_string().contains("total timeout"), "{err}");
}

#[tokio::test]
async fn error_statuses_stay_responses_with_retry_after() {
    let s = setup(timeouts());
    s.a.set_fault(None, Fault::rate_limited(Duration::from_millis(2500)));
    let resp = call(
        &s.upstream,
        chat(r#"{"model":"alpha","messages":[{"role":"user","content":"hi"}]}"#),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "3");
    assert_eq!(resp.headers()["retry-after-ms"], "2500");
    assert_eq!(resp.headers()["x-rampart-error-source"], "upstream");
    assert_eq!(
        rampart_core::classify_status(resp.status(), resp.headers()),
        rampart_core::Verdict::RateLimited {
            retry_after: Some(Duration::from_millis(2500))
        }
    );
    let facts = resp.extensions().get::<ResponseFacts>().cloned().unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(v["error"]["message"].is_string());
    assert!(matches!(
        facts.completion.report().unwrap().outcome,
        Outcome::UpstreamError(_)
    ));

    s.a.set_fault(None, Fault::reset());
    let err = call(
        &s.upstream,
        chat(r#"{"model":"alpha","messages":[{"role":"user","content":"hi"}]}"#),
    )
    .await
    .unwrap_err();
    assert_eq!(
        rampart_core::classify_error(&err),
        rampart_core::Verdict::Failure
    );
}
