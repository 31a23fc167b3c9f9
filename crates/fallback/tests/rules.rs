//! The fallback rules on paused time, against a scripted inner service: candidates, triggers,
//! backoff (delays asserted exactly), Retry-After, 429s, refusals, deadline, attempts, context
//! length, headers and abandoned attempts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use http::{Request, Response};
use rampart_core::{
    Body, BoxError, Error, ErrorKind, Outcome, Target, error::find_error, error_response,
};
use rampart_fallback::{FallbackBuilder, FallbackLayer, FullJitter, Jitter, backoff_ceiling};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

const MS: Duration = Duration::from_millis(1);

/// Base 100 ms, cap 10 s, no jitter (every delay is its ceiling).
fn builder() -> FallbackBuilder {
    FallbackLayer::builder()
        .backoff(100 * MS, Duration::from_secs(10))
        .jitter(|c: Duration| c)
}

async fn call(
    layer: &FallbackLayer,
    svc: Svc,
    req: Request<Body>,
) -> Result<Response<Body>, BoxError> {
    layer.layer(svc).oneshot(req).await
}

fn kind(e: &BoxError) -> ErrorKind {
    find_error(e).expect("a core error").kind().clone()
}

#[tokio::test(start_paused = true)]
async fn route_decision_candidates_are_tried_in_order_without_delay() {
    let (svc, log) = scripted(|m, _| match m {
        "a" => Reply::Status(500, None),
        "b" => Reply::Err(io_error()),
        _ => Reply::Ok,
    });
    let layer = builder().build().unwrap();
    let start = Instant::now();
    let resp = call(
        &layer,
        svc,
        decided("a", &[("a", None), ("b", None), ("c", None)]),
    )
    .await
    .unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "moving to another candidate never sleeps"
    );
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-rampart-attempts"), "3");
    assert_eq!(header(&resp, "x-rampart-model"), "c");
    assert_eq!(log.models(), ["a", "b", "c"]);
    // Each attempt carries the candidate's target and the rewritten model.
    let targets: Vec<_> = log.calls().into_iter().map(|c| c.target.unwrap()).collect();
    assert_eq!(
        targets,
        [
            Target::new("p", "a"),
            Target::new("p", "b"),
            Target::new("p", "c")
        ]
    );
    assert!(body_string(resp).await.contains("hi from c"));
}

#[tokio::test(start_paused = true)]
async fn static_chain_resolved_by_the_resolver() {
    let (svc, log) = scripted(|m, _| match m {
        "gpt-4.1" => Reply::Status(503, None),
        _ => Reply::Ok,
    });
    let layer = builder()
        .chain("gpt-4.1", ["claude-sonnet-4.5", "deepseek-v3.2"])
        .resolver(|m: &str| {
            let provider = match m {
                "gpt-4.1" => "openai",
                "claude-sonnet-4.5" => "anthropic",
                "deepseek-v3.2" => "deepseek",
                _ => return None,
            };
            Some(rampart_core::Candidate::new(Target::new(provider, m)))
        })
        .build()
        .unwrap();
    let resp = call(&layer, svc, request("gpt-4.1")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-rampart-model"), "claude-sonnet-4.5");
    assert_eq!(header(&resp, "x-rampart-attempts"), "2");
    let calls = log.calls();
    assert_eq!(log.models(), ["gpt-4.1", "claude-sonnet-4.5"]);
    assert_eq!(
        calls[1].target,
        Some(Target::new("anthropic", "claude-sonnet-4.5"))
    );
}

#[tokio::test(start_paused = true)]
async fn the_layer_reuses_the_same_state_for_from_config_plus_resolver() {
    let config: rampart_fallback::FallbackConfig = toml::from_str(
        r#"
        max_attempts = 2
        [chains]
        "a" = ["b"]
        "#,
    )
    .unwrap();
    let layer = FallbackLayer::from_config(config)
        .unwrap()
        .resolver(resolver(&["a", "b"]));
    let (svc, log) = scripted(|m, _| {
        if m == "a" {
            Reply::Status(502, None)
        } else {
            Reply::Ok
        }
    });
    let resp = call(&layer, svc, request("a")).await.unwrap();
    assert_eq!(header(&resp, "x-rampart-model"), "b");
    assert_eq!(log.calls()[1].target, Some(Target::new("p", "b")));
}

#[tokio::test(start_paused = true)]
async fn unknown_model_goes_to_the_inner_once_without_a_target() {
    let (svc, log) = scripted(|_, _| {
        Reply::Body(
            404,
            r#"{"error":{"message":"no such model","type":"invalid_request_error","param":"model","code":"model_not_found"}}"#,
        )
    });
    let layer = builder().build().unwrap();
    let mut req = request("mystery");
    // A stale target from elsewhere is not forwarded for an untargeted candidate.
    req.extensions_mut().insert(Target::new("x", "y"));
    let resp = call(&layer, svc.clone(), req).await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(header(&resp, "x-rampart-attempts"), "1");
    assert_eq!(log.len(), 1);

    // Without any target at all: no Target extension reaches the inner.
    let resp = call(&layer, svc, request("mystery")).await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(log.calls()[1].target, None);
}

#[tokio::test(start_paused = true)]
async fn a_400_is_neither_retried_nor_failed_over() {
    let (svc, log) = scripted(|m, _| match m {
        "a" => Reply::Body(
            400,
            r#"{"error":{"message":"bad","type":"invalid_request_error","param":null,"code":"invalid_value"}}"#,
        ),
        _ => Reply::Ok,
    });
    let layer = builder().chain("a", ["b"]).build().unwrap();
    let resp = call(&layer, svc, request("a")).await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(header(&resp, "x-rampart-attempts"), "1");
    assert_eq!(header(&resp, "x-rampart-model"), "a");
    assert_eq!(log.models(), ["a"]);
    assert!(body_string(resp).await.contains("invalid_value"));

    // Also for other 4xx (401, 404, 422) and a single candidate.
    for status in [401, 404, 422] {
        let (svc, log) = scripted(move |_, _| Reply::Status(status, None));
        let resp = call(&layer, svc, request("solo")).await.unwrap();
        assert_eq!(resp.status(), status);
        assert_eq!(log.len(), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn same_candidate_retries_back_off_exponentially() {
    let (svc, log) = scripted(|_, n| {
        if n < 2 {
            Reply::Status(500, None)
        } else {
            Reply::Ok
        }
    });
    let layer = builder().build().unwrap();
    let start = Instant::now();
    let resp = call(&layer, svc, request("solo")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-rampart-attempts"), "3");
    // Ceilings 100 ms then 200 ms (no jitter).
    assert_eq!(start.elapsed(), 300 * MS);
    let at: Vec<Duration> = log.calls().iter().map(|c| c.at - start).collect();
    assert_eq!(at, [Duration::ZERO, 100 * MS, 300 * MS]);
}

#[tokio::test(start_paused = true)]
async fn backoff_is_capped() {
    let (svc, _log) = scripted(|_, n| {
        if n < 3 {
            Reply::Status(503, None)
        } else {
            Reply::Ok
        }
    });
    let layer = builder()
        .backoff(100 * MS, 250 * MS)
        .max_attempts(4)
        .build()
        .unwrap();
    let start = Instant::now();
    call(&layer, svc, request("solo")).await.unwrap();
    // 100 + min(200, 250) + min(400, 250)
    assert_eq!(start.elapsed(), 550 * MS);
}

#[tokio::test(start_paused = true)]
async fn full_jitter_is_injectable_and_exact_with_a_seed() {
    let (svc, _log) = scripted(|_, n| {
        if n < 2 {
            Reply::Status(502, None)
        } else {
            Reply::Ok
        }
    });
    let layer = FallbackLayer::builder()
        .backoff(100 * MS, Duration::from_secs(10))
        .jitter(FullJitter::seeded(42))
        .build()
        .unwrap();
    let reference = FullJitter::seeded(42);
    let base = 100 * MS;
    let cap = Duration::from_secs(10);
    let expected = reference.jitter(backoff_ceiling(base, cap, 0))
        + reference.jitter(backoff_ceiling(base, cap, 1));
    assert!(expected <= 300 * MS);
    let start = Instant::now();
    call(&layer, svc, request("solo")).await.unwrap();
    assert_eq!(start.elapsed(), expected);
}

#[tokio::test(start_paused = true)]
async fn backoff_is_never_shorter_than_retry_after() {
    let (svc, _log) = scripted(|_, n| {
        if n == 0 {
            Reply::Status(503, Some(1500 * MS))
        } else {
            Reply::Ok
        }
    });
    let layer = builder().build().unwrap();
    let start = Instant::now();
    let resp = call(&layer, svc, request("solo")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(start.elapsed(), 1500 * MS);
}

#[tokio::test(start_paused = true)]
async fn retries_per_candidate_before_moving_on() {
    let (svc, log) = scripted(|m, _| {
        if m == "a" {
            Reply::Status(500, None)
        } else {
            Reply::Ok
        }
    });
    let layer = builder()
        .retries_per_candidate(1)
        .chain("a", ["b"])
        .build()
        .unwrap();
    let start = Instant::now();
    let resp = call(&layer, svc, request("a")).await.unwrap();
    assert_eq!(log.models(), ["a", "a", "b"]);
    assert_eq!(start.elapsed(), 100 * MS);
    assert_eq!(header(&resp, "x-rampart-attempts"), "3");
    assert_eq!(header(&resp, "x-rampart-model"), "b");
}

#[tokio::test(start_paused = true)]
async fn a_retry_wait_that_does_not_fit_moves_to_the_next_candidate_at_once() {
    // `a` asks for 30 s; the deadline is 10 s: no retry on `a`, but `b` needs no wait.
    let (svc, log) = scripted(|m, _| {
        if m == "a" {
            Reply::Status(503, Some(Duration::from_secs(30)))
        } else {
            Reply::Ok
        }
    });
    let layer = builder()
        .retries_per_candidate(1)
        .deadline(Duration::from_secs(10))
        .chain("a", ["b"])
        .build()
        .unwrap();
    let start = Instant::now();
    let resp = call(&layer, svc, request("a")).await.unwrap();
    assert_eq!(log.models(), ["a", "b"]);
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(header(&resp, "x-rampart-attempts"), "2");
    assert_eq!(header(&resp, "x-rampart-model"), "b");
}

#[tokio::test(start_paused = true)]
async fn max_attempts_bounds_the_attempts_and_all_failed_names_them() {
    let (svc, log) = scripted(|_, _| Reply::Status(500, None));
    let layer = builder().max_attempts(4).build().unwrap();
    let start = Instant::now();
    let err = call(&layer, svc, request("solo")).await.unwrap_err();
    assert_eq!(log.len(), 4);
    assert_eq!(start.elapsed(), (100 + 200 + 400) * MS);
    assert_eq!(
        kind(&err),
        ErrorKind::AllCandidatesFailed {
            status: http::StatusCode::INTERNAL_SERVER_ERROR,
            attempts: 4
        }
    );
    let resp = error_response(&err);
    assert_eq!(resp.status(), 500);
    assert_eq!(header(&resp, "x-rampart-attempts"), "4");
    assert_eq!(header(&resp, "x-rampart-model"), "solo");
    assert_eq!(header(&resp, "x-rampart-error-source"), "upstream");
    let body: serde_json::Value = serde_json::from_str(&body_string(resp).await).unwrap();
    assert_eq!(body["error"]["code"], "upstream_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("4 upstream attempts")
    );
}

#[tokio::test(start_paused = true)]
async fn all_failed_is_502_for_connection_errors_and_hides_urls() {
    let (svc, log) = scripted(|_, _| Reply::Err(io_error()));
    let layer = builder().chain("a", ["b"]).build().unwrap();
    let start = Instant::now();
    let err = call(&layer, svc, request("a")).await.unwrap_err();
    // a, then b (the last) and one retry of b.
    assert_eq!(log.models(), ["a", "b", "b"]);
    assert_eq!(start.elapsed(), 100 * MS);
    assert_eq!(
        kind(&err),
        ErrorKind::AllCandidatesFailed {
            status: http::StatusCode::BAD_GATEWAY,
            attempts: 3
        }
    );
    let resp = error_response(&err);
    assert_eq!(resp.status(), 502);
    assert_eq!(header(&resp, "x-rampart-attempts"), "3");
    let text = body_string(resp).await;
    assert!(!text.contains("secret.internal"), "{text}");
    assert!(!text.contains("https://"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn deadline_bounds_a_hanging_attempt() {
    let (svc, log) = scripted(|_, _| Reply::Pending);
    let layer = builder()
        .deadline(Duration::from_secs(5))
        .chain("a", ["b"])
        .build()
        .unwrap();
    let start = Instant::now();
    let err = call(&layer, svc, request("a")).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert_eq!(log.models(), ["a"]);
    assert_eq!(
        kind(&err),
        ErrorKind::AllCandidatesFailed {
            status: http::StatusCode::GATEWAY_TIMEOUT,
            attempts: 1
        }
    );
    assert_eq!(header(&error_response(&err), "x-rampart-attempts"), "1");
}

#[tokio::test(start_paused = true)]
async fn no_sleep_past_the_deadline() {
    // The upstream asks for 2 s; only 1 s is left: answer at once.
    let (svc, log) = scripted(|_, _| Reply::Status(503, Some(Duration::from_secs(2))));
    let layer = builder().deadline(Duration::from_secs(1)).build().unwrap();
    let start = Instant::now();
    let err = call(&layer, svc, request("solo")).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(log.len(), 1);
    let resp = error_response(&err);
    assert_eq!(resp.status(), 503);
    assert_eq!(header(&resp, "retry-after"), "2");

    // Backoff (100, 200, 400 ms) within a 450 ms deadline: the third attempt would start at
    // 300 ms, a fourth at 700 ms, so max_attempts 5 stops at 3 attempts.
    let (svc, log) = scripted(|_, _| Reply::Status(500, None));
    let layer = builder()
        .deadline(450 * MS)
        .max_attempts(5)
        .build()
        .unwrap();
    let start = Instant::now();
    call(&layer, svc, request("solo")).await.unwrap_err();
    assert_eq!(log.len(), 3);
    assert_eq!(start.elapsed(), 300 * MS);
}

fn refusing(inner: Svc, refuse: &'static [(&'static str, u64, bool)]) -> Svc {
    // (model, retry after secs, circuit (true) or rate limit (false))
    let svc = tower::service_fn(move |req: Request<Body>| {
        let inner = inner.clone();
        async move {
            let model = req
                .extensions()
                .get::<Target>()
                .map(|t| t.model.to_string());
            if let Some((m, ra, circuit)) =
                refuse.iter().find(|(m, _, _)| Some(*m) == model.as_deref())
            {
                let ra = Duration::from_secs(*ra);
                let e = if *circuit {
                    Error::circuit_open(format!("p/{m}"), ra)
                } else {
                    Error::rate_limited("requests", "target", "slow down", ra)
                };
                return Err::<Response<Body>, BoxError>(e.into());
            }
            inner.oneshot(req).await
        }
    });
    tower::util::BoxCloneSyncService::new(svc)
}

#[tokio::test(start_paused = true)]
async fn refused_candidates_are_skipped_at_no_cost() {
    let (svc, log) = scripted(|_, _| Reply::Ok);
    let svc = refusing(svc, &[("a", 30, true)]);
    let layer = builder().max_attempts(1).build().unwrap();
    let balance = layer.budget().balance();
    let start = Instant::now();
    let resp = call(&layer, svc, decided("a", &[("a", None), ("b", None)]))
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(resp.status(), 200);
    // max_attempts = 1 still allows b: the refusal was no attempt.
    assert_eq!(header(&resp, "x-rampart-attempts"), "1");
    assert_eq!(header(&resp, "x-rampart-model"), "b");
    assert_eq!(log.models(), ["b"]);
    // One deposit, no withdrawal.
    assert!(layer.budget().balance() > balance);
}

#[tokio::test(start_paused = true)]
async fn refusal_after_a_failure_costs_no_budget() {
    let (svc, log) = scripted(|m, _| {
        if m == "a" {
            Reply::Status(500, None)
        } else {
            Reply::Ok
        }
    });
    let svc = refusing(svc, &[("b", 5, true)]);
    // A budget of exactly one retry.
    let layer = builder()
        .budget(0.0, 1.0, Duration::from_secs(1))
        .build()
        .unwrap();
    let resp = call(
        &layer,
        svc,
        decided("a", &[("a", None), ("b", None), ("c", None)]),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(log.models(), ["a", "c"]);
    assert_eq!(header(&resp, "x-rampart-attempts"), "2");
}

#[tokio::test(start_paused = true)]
async fn every_candidate_refused_returns_the_smallest_retry_after_refusal() {
    let (svc, log) = scripted(|_, _| Reply::Ok);
    let svc = refusing(svc, &[("a", 30, true), ("b", 5, false), ("c", 60, true)]);
    let layer = builder().build().unwrap();
    let start = Instant::now();
    let err = call(
        &layer,
        svc,
        decided("a", &[("a", None), ("b", None), ("c", None)]),
    )
    .await
    .unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(log.len(), 0);
    assert!(matches!(kind(&err), ErrorKind::RateLimited { .. }));
    let resp = error_response(&err);
    assert_eq!(resp.status(), 429);
    assert_eq!(header(&resp, "retry-after"), "5");
    assert_eq!(header(&resp, "x-rampart-attempts"), "0");
}

#[tokio::test(start_paused = true)]
async fn a_circuit_breaker_forced_open_is_skipped() {
    use rampart_circuit_breaker::CircuitBreakerLayer;
    let (svc, log) = scripted(|_, _| Reply::Ok);
    let breaker = CircuitBreakerLayer::default();
    breaker.handle().force_open("p/a");
    let svc = tower::util::BoxCloneSyncService::new(breaker.layer(svc));
    let layer = builder().build().unwrap();
    let start = Instant::now();
    let resp = call(
        &layer,
        svc.clone(),
        decided("a", &[("a", None), ("b", None)]),
    )
    .await
    .unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(header(&resp, "x-rampart-model"), "b");
    assert_eq!(header(&resp, "x-rampart-attempts"), "1");
    assert_eq!(log.models(), ["b"]);

    // Only the open candidate: its refusal is the answer, unchanged but for the header.
    let err = call(&layer, svc, decided("a", &[("a", None)]))
        .await
        .unwrap_err();
    let resp = error_response(&err);
    assert_eq!(resp.status(), 503);
    assert_eq!(header(&resp, "x-rampart-error-source"), "circuit_breaker");
    assert_eq!(header(&resp, "x-rampart-attempts"), "0");
}

#[tokio::test(start_paused = true)]
async fn a_429_moves_to_the_next_candidate_without_sleeping() {
    let (svc, log) = scripted(|m, _| {
        if m == "a" {
            Reply::Status(429, Some(Duration::from_secs(10)))
        } else {
            Reply::Ok
        }
    });
    let layer = builder().build().unwrap();
    let start = Instant::now();
    let resp = call(&layer, svc, decided("a", &[("a", None), ("b", None)]))
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-rampart-attempts"), "2");
    assert_eq!(log.models(), ["a", "b"]);
}

#[tokio::test(start_paused = true)]
async fn the_last_candidate_sleeps_when_its_retry_after_fits() {
    let (svc, log) = scripted(|m, n| match (m, n) {
        ("a", _) => Reply::Status(429, Some(Duration::from_secs(10))),
        ("b", 0) => Reply::Status(429, Some(Duration::from_secs(2))),
        _ => Reply::Ok,
    });
    let layer = builder().build().unwrap();
    let start = Instant::now();
    let resp = call(&layer, svc, decided("a", &[("a", None), ("b", None)]))
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(log.models(), ["a", "b", "b"]);
    assert_eq!(header(&resp, "x-rampart-attempts"), "3");
    assert_eq!(header(&resp, "x-rampart-model"), "b");
}

#[tokio::test(start_paused = true)]
async fn a_429_that_does_not_fit_returns_429_with_the_smallest_retry_after() {
    let (svc, log) = scripted(|m, _| match m {
        "a" => Reply::Status(429, Some(Duration::from_secs(20))),
        _ => Reply::Status(429, Some(Duration::from_secs(60))),
    });
    let layer = builder().deadline(Duration::from_secs(30)).build().unwrap();
    let start = Instant::now();
    let resp = call(&layer, svc, decided("a", &[("a", None), ("b", None)]))
        .await
        .unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(log.models(), ["a", "b"]);
    assert_eq!(resp.status(), 429);
    assert_eq!(header(&resp, "retry-after"), "20");
    assert_eq!(header(&resp, "retry-after-ms"), "20000");
    assert_eq!(header(&resp, "x-rampart-attempts"), "2");
    assert_eq!(header(&resp, "x-rampart-model"), "b");

    // Attempts exhausted on the last candidate: no sleep either.
    let (svc, log) = scripted(|_, _| Reply::Status(429, Some(Duration::from_secs(1))));
    let layer = builder().max_attempts(2).build().unwrap();
    let start = Instant::now();
    let resp = call(&layer, svc, request("solo")).await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(log.len(), 2);
    assert_eq!(start.elapsed(), Duration::from_secs(1));
}

const CONTEXT: &str = r#"{"error":{"message":"This model's maximum context length is 128000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;

#[tokio::test(start_paused = true)]
async fn context_length_moves_only_to_a_larger_window() {
    let (svc, log) = scripted(|m, _| match m {
        "a" => Reply::Body(400, CONTEXT),
        _ => Reply::Ok,
    });
    let layer = builder().context_length_fallback(true).build().unwrap();
    let resp = call(
        &layer,
        svc.clone(),
        decided(
            "a",
            &[
                ("a", Some(128_000)),
                ("b", Some(64_000)),
                ("c", Some(200_000)),
            ],
        ),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(log.models(), ["a", "c"], "b's window is smaller: skipped");
    assert_eq!(header(&resp, "x-rampart-model"), "c");
    assert_eq!(header(&resp, "x-rampart-attempts"), "2");

    // No larger window: the 400 is the answer, body intact.
    let resp = call(
        &layer,
        svc.clone(),
        decided("a", &[("a", Some(128_000)), ("b", Some(64_000))]),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(header(&resp, "x-rampart-attempts"), "1");
    assert_eq!(body_string(resp).await, CONTEXT);

    // Turned off: never moves.
    let off = builder().build().unwrap();
    let resp = call(
        &off,
        svc,
        decided("a", &[("a", Some(128_000)), ("c", Some(200_000))]),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(log.count("c"), 1);
}

#[tokio::test(start_paused = true)]
async fn context_length_then_failure_of_the_larger_model() {
    let (svc, _log) = scripted(|m, _| match m {
        "a" => Reply::Body(400, CONTEXT),
        _ => Reply::Status(503, None),
    });
    let layer = builder()
        .context_length_fallback(true)
        .max_attempts(2)
        .build()
        .unwrap();
    let err = call(
        &layer,
        svc,
        decided("a", &[("a", Some(1000)), ("b", Some(2000))]),
    )
    .await
    .unwrap_err();
    assert_eq!(
        kind(&err),
        ErrorKind::AllCandidatesFailed {
            status: http::StatusCode::SERVICE_UNAVAILABLE,
            attempts: 2
        }
    );
}

#[tokio::test(start_paused = true)]
async fn discarded_attempts_are_marked_abandoned() {
    let (svc, log) = scripted(|m, _| match m {
        "a" => Reply::Status(500, None),
        "b" => Reply::Status(429, Some(Duration::from_secs(1))),
        _ => Reply::Ok,
    });
    let layer = builder().build().unwrap();
    let resp = call(
        &layer,
        svc,
        decided("a", &[("a", None), ("b", None), ("c", None)]),
    )
    .await
    .unwrap();
    let calls = log.calls();
    for c in &calls[..2] {
        let report = c.completion.as_ref().unwrap().report().expect("resolved");
        assert_eq!(report.outcome, Outcome::Abandoned, "{}", c.model);
    }
    // The served one resolves when its body ends.
    let served = calls[2].completion.clone().unwrap();
    assert!(served.report().is_none());
    body_string(resp).await;
    assert_eq!(served.report().unwrap().outcome, Outcome::Complete);
}

#[tokio::test(start_paused = true)]
async fn requests_without_the_edge_adapter_are_parsed_once() {
    let (svc, log) = scripted(|_, _| Reply::Ok);
    let layer = builder().build().unwrap();
    let req = Request::post("/v1/chat/completions")
        .body(Body::from(
            r#"{"model":"raw","messages":[{"role":"user","content":"x"}]}"#,
        ))
        .unwrap();
    let resp = call(&layer, svc.clone(), req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(log.models(), ["raw"]);

    let req = Request::post("/").body(Body::from("{nope")).unwrap();
    let err = call(&layer, svc, req).await.unwrap_err();
    let resp = error_response(&err);
    assert_eq!(resp.status(), 400);
    assert_eq!(header(&resp, "x-rampart-attempts"), "0");
}

#[tokio::test(start_paused = true)]
async fn gateway_errors_from_the_inner_are_returned_with_headers() {
    let (svc, log) = scripted(|_, _| Reply::Err(Error::model_not_found("zzz", ["a"]).into()));
    let layer = builder().chain("zzz", ["a"]).build().unwrap();
    let err = call(&layer, svc, request("zzz")).await.unwrap_err();
    assert_eq!(log.len(), 1);
    let resp = error_response(&err);
    assert_eq!(resp.status(), 404);
    assert_eq!(header(&resp, "x-rampart-attempts"), "1");
}

#[test]
fn the_service_is_clone_send_sync_and_its_future_send() {
    fn assert_service<T: Clone + Send + Sync + 'static>(_: &T) {}
    fn assert_send<T: Send>(_: &T) {}
    let (svc, _log) = scripted(|_, _| Reply::Ok);
    let mut fallback = FallbackLayer::default().layer(svc);
    assert_service(&fallback);
    assert_service(&FallbackLayer::default());
    let fut = tower::Service::call(&mut fallback, request("a"));
    assert_send(&fut);
}
