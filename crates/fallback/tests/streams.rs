//! Streams through the simulated provider behind the real `Upstream` (responses carry
//! `ResponseFacts` and taps): the commit point decides whether a failure may fall back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{body_string, header, request, stream_request};
use rampart_core::{Candidate, Target};
use rampart_fallback::{FallbackBuilder, FallbackLayer};
use rampart_mock::{Fault, MockConfig, MockProvider, Stall};
use rampart_upstream::{Timeouts, Upstream};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

struct Setup {
    upstream: Upstream,
    one: MockProvider,
    two: MockProvider,
}

fn setup() -> Setup {
    let one = MockProvider::new(MockConfig::default());
    let two = MockProvider::new(MockConfig::default());
    let upstream = Upstream::builder()
        .service_provider("one", one.service(), Timeouts::default())
        .service_provider("two", two.service(), Timeouts::default())
        .model("a", "one", Some("a-upstream"))
        .model("b", "two", None)
        .build()
        .unwrap();
    Setup { upstream, one, two }
}

fn builder() -> FallbackBuilder {
    FallbackLayer::builder()
        .chain("a", ["b"])
        .jitter(|c: Duration| c)
        .resolver(|m: &str| match m {
            "a" => Some(Candidate::new(Target::new("one", "a"))),
            "b" => Some(Candidate::new(Target::new("two", "b"))),
            _ => None,
        })
}

fn events(text: &str) -> Vec<&str> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn cut_before_the_first_content_falls_back_to_the_next_candidate() {
    let s = setup();
    // The role chunk, then the body breaks.
    s.one.set_fault(Some("a-upstream"), Fault::cut_after(1));
    let layer = builder().build().unwrap();
    let resp = layer
        .layer(s.upstream.clone())
        .oneshot(stream_request("a"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-rampart-attempts"), "2");
    assert_eq!(header(&resp, "x-rampart-model"), "b");
    assert_eq!(header(&resp, "x-rampart-provider"), "two");
    let text = body_string(resp).await;
    // The second candidate's whole stream, and nothing of the first.
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(!text.contains("\"error\""), "{text}");
    assert_eq!(text.matches("\"role\":\"assistant\"").count(), 1, "{text}");
    assert!(text.contains("\"model\":\"b\""), "{text}");
    assert!(!text.contains("a-upstream"), "{text}");
    assert_eq!(s.one.calls("a-upstream"), 1);
    assert_eq!(s.two.calls("b"), 1);
    // The second candidate was asked for its own model.
    assert_eq!(s.two.last_request().unwrap().json().unwrap()["model"], "b");
}

#[tokio::test(start_paused = true)]
async fn failure_after_the_first_content_ends_with_one_error_event_and_no_done() {
    let s = setup();
    // Role chunk and two content chunks, then the body breaks.
    s.one.set_fault(Some("a-upstream"), Fault::cut_after(3));
    let layer = builder().build().unwrap();
    let resp = layer
        .layer(s.upstream.clone())
        .oneshot(stream_request("a"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-rampart-attempts"), "1");
    assert_eq!(header(&resp, "x-rampart-model"), "a");
    let text = body_string(resp).await;
    let ev = events(&text);
    assert_eq!(ev.len(), 4, "{text}");
    assert!(ev[3].contains("\"error\""), "{text}");
    assert_eq!(text.matches("\"error\"").count(), 1, "{text}");
    assert!(!text.contains("[DONE]"), "{text}");
    // No second answer spliced in.
    assert_eq!(s.two.calls("b"), 0);
    assert_eq!(text.matches("\"role\":\"assistant\"").count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_stream_silent_before_its_first_token_falls_back_after_the_first_token_timeout() {
    let s = setup();
    s.one
        .set_fault(Some("a-upstream"), Fault::stalled(Stall::AfterChunks(1)));
    let layer = builder()
        .first_token_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let start = Instant::now();
    let resp = layer
        .layer(s.upstream.clone())
        .oneshot(stream_request("a"))
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert_eq!(header(&resp, "x-rampart-model"), "b");
    let text = body_string(resp).await;
    assert!(text.ends_with("data: [DONE]\n\n"));
}

#[tokio::test(start_paused = true)]
async fn first_token_wait_is_bounded_by_the_deadline() {
    let s = setup();
    s.one.set_fault(None, Fault::stalled(Stall::AfterChunks(1)));
    s.two.set_fault(None, Fault::stalled(Stall::AfterChunks(1)));
    let layer = builder()
        .first_token_timeout(Duration::from_secs(60))
        .deadline(Duration::from_secs(8))
        .build()
        .unwrap();
    let start = Instant::now();
    let err = layer
        .layer(s.upstream.clone())
        .oneshot(stream_request("a"))
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(8));
    let resp = rampart_core::error_response(&err);
    assert_eq!(resp.status(), 504);
    assert_eq!(header(&resp, "x-rampart-attempts"), "1");
    assert_eq!(s.two.calls("b"), 0);
}

#[tokio::test(start_paused = true)]
async fn json_errors_through_the_upstream_fall_back_with_the_model_rewritten() {
    let s = setup();
    s.one.set_fault(
        Some("a-upstream"),
        Fault::status_code(http::StatusCode::SERVICE_UNAVAILABLE),
    );
    let layer = builder().build().unwrap();
    let resp = layer
        .layer(s.upstream.clone())
        .oneshot(request("a"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-rampart-attempts"), "2");
    assert_eq!(header(&resp, "x-rampart-model"), "b");
    assert_eq!(header(&resp, "x-rampart-provider"), "two");
    let json: serde_json::Value = serde_json::from_str(&body_string(resp).await).unwrap();
    assert_eq!(json["model"], "b");
    assert_eq!(s.one.calls("a-upstream"), 1);

    // Rate limited first candidate: next one at once; both rate limited: 429, smallest
    // Retry-After, after one wait on the last when it fits.
    s.one.set_fault(
        Some("a-upstream"),
        Fault::rate_limited(Duration::from_secs(40)),
    );
    s.two
        .set_fault(Some("b"), Fault::rate_limited(Duration::from_secs(3)));
    let start = Instant::now();
    let resp = layer
        .layer(s.upstream.clone())
        .oneshot(request("a"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(header(&resp, "retry-after"), "3");
    assert_eq!(header(&resp, "x-rampart-attempts"), "3");
    assert_eq!(start.elapsed(), Duration::from_secs(3));
}
