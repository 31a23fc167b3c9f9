//! The layer's rules on paused time, around a `tower-test` mock upstream.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use http::{Request, Response, StatusCode};
use rampart_core::{Body, ChatRequest, Error, ErrorKind, Target, Tenant};
use rampart_ratelimit::{
    KeySource, Limits, MemoryStore, RateLimitLayer, RateLimitStore, ReservationId, StoreError,
    StoreFailure, TokenReservation,
};
use tokio::time::Instant;

fn spawn(layer: RateLimitLayer) -> (Svc, MockHandle) {
    tower_test::mock::spawn_layer(layer)
}

fn tokens(resp: &Resp) -> u64 {
    header(resp, "x-ratelimit-remaining-tokens")
        .parse()
        .unwrap()
}

fn tpm(n: u64) -> RateLimitLayer {
    RateLimitLayer::new(Limits::none().tokens_per_minute(n))
}

#[tokio::test(start_paused = true)]
async fn rpm_refuses_then_refills() {
    let (mut svc, mut h) = spawn(RateLimitLayer::new(Limits::none().requests_per_minute(2)));
    for remaining in ["1", "0"] {
        let r = ok(&mut svc, &mut h, req(None), json_response(10)).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "x-ratelimit-limit-requests"), "2");
        assert_eq!(header(&r, "x-ratelimit-remaining-requests"), remaining);
    }
    let e = refused(&mut svc, &mut h, req(None)).await;
    assert!(e.is_refusal());
    assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(e.error_type(), "requests");
    assert_eq!(e.code().unwrap(), "rate_limit_exceeded");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(30)));
    let resp = e.to_response();
    assert_eq!(header(&resp, "retry-after"), "30");
    assert_eq!(header(&resp, "x-ratelimit-limit-requests"), "2");
    assert_eq!(header(&resp, "x-ratelimit-remaining-requests"), "0");
    assert_eq!(header(&resp, "x-ratelimit-reset-requests"), "1m0s");
    assert_eq!(header(&resp, "x-rampart-error-source"), "rate_limit");

    // One request's worth refills in 30 s, not before.
    tokio::time::advance(Duration::from_millis(29_999)).await;
    refused(&mut svc, &mut h, req(None)).await;
    tokio::time::advance(Duration::from_millis(1)).await;
    let r = ok(&mut svc, &mut h, req(None), json_response(10)).await;
    assert_eq!(header(&r, "x-ratelimit-remaining-requests"), "0");
}

#[tokio::test(start_paused = true)]
async fn retry_after_rounds_up_to_whole_seconds() {
    let layer = RateLimitLayer::builder()
        .limits(Limits::none().requests_per_minute(7).request_burst(1))
        .build()
        .unwrap();
    let (mut svc, mut h) = spawn(layer);
    ok(&mut svc, &mut h, req(None), json_response(1)).await;
    let e = refused(&mut svc, &mut h, req(None)).await;
    // 60 s / 7 = 8.571428571.. s, rounded up to the nanosecond by the limiter.
    assert_eq!(e.retry_after(), Some(Duration::from_nanos(8_571_428_572)));
    let resp = e.to_response();
    assert_eq!(header(&resp, "retry-after"), "9");
    assert_eq!(header(&resp, "x-ratelimit-reset-requests"), "8.572s");
    assert!(
        e.message().contains("try again in 8.572s"),
        "{}",
        e.message()
    );
}

#[tokio::test(start_paused = true)]
async fn tpm_reserves_prompt_plus_max_tokens() {
    let (mut svc, mut h) = spawn(tpm(10_000));
    let b = body("m", "hello", Some(100));
    let r = roundtrip(&mut svc, &mut h, req(Some(100)), json_response(10))
        .await
        .unwrap();
    assert_eq!(tokens(&r), 10_000 - reserve_of(&b, 100));
    assert_eq!(header(&r, "x-ratelimit-limit-tokens"), "10000");
    // The reservation is charged while the body is unread.
    let r2 = roundtrip(&mut svc, &mut h, req(Some(100)), json_response(10))
        .await
        .unwrap();
    assert_eq!(tokens(&r2), 10_000 - 2 * reserve_of(&b, 100));
}

#[tokio::test(start_paused = true)]
async fn tpm_uses_the_per_model_output_estimate_without_max_tokens() {
    let layer = RateLimitLayer::builder()
        .limits(Limits::none().tokens_per_minute(10_000))
        .output_tokens("big", 500)
        .build()
        .unwrap();
    let (mut svc, mut h) = spawn(layer);
    let big = body("big", "hello", None);
    let r = roundtrip(&mut svc, &mut h, req_for(Some("a"), &big), json_response(1))
        .await
        .unwrap();
    assert_eq!(tokens(&r), 10_000 - reserve_of(&big, 500));
    // Other models: the default of 256.
    let other = body("other", "hello", None);
    let r = roundtrip(
        &mut svc,
        &mut h,
        req_for(Some("b"), &other),
        json_response(1),
    )
    .await
    .unwrap();
    assert_eq!(tokens(&r), 10_000 - reserve_of(&other, 256));
}

#[tokio::test(start_paused = true)]
async fn json_settle_refunds_and_charges_overage() {
    let (mut svc, mut h) = spawn(tpm(10_000));
    let reserve = reserve_of(&body("m", "hello", Some(100)), 100);
    // Refund: used 10 of the reservation.
    ok(&mut svc, &mut h, req(Some(100)), json_response(10)).await;
    let r = ok(&mut svc, &mut h, req(Some(100)), json_response(reserve)).await;
    assert_eq!(tokens(&r), 10_000 - 10 - reserve);
    // Overage: used 1,000 more than reserved.
    let r = ok(
        &mut svc,
        &mut h,
        req(Some(100)),
        json_response(reserve + 1000),
    )
    .await;
    assert_eq!(tokens(&r), 10_000 - 10 - reserve - reserve);
    let r = ok(&mut svc, &mut h, req(Some(100)), json_response(reserve)).await;
    assert_eq!(
        tokens(&r),
        10_000 - 10 - reserve - (reserve + 1000) - reserve
    );
}

#[tokio::test(start_paused = true)]
async fn stream_settles_to_its_usage_chunk() {
    let (mut svc, mut h) = spawn(tpm(10_000));
    let reserve = reserve_of(&body("m", "hello", Some(100)), 100);
    let (resp, tx) = sse_response();
    let r = roundtrip(&mut svc, &mut h, req(Some(100)), resp)
        .await
        .unwrap();
    for chunk in [
        CONTENT_CHUNK,
        FINISH_CHUNK,
        sse_usage(40),
        "data: [DONE]\n\n",
    ] {
        tx.send(chunk).await.unwrap();
    }
    drop(tx);
    drain(r).await;
    let r = roundtrip(&mut svc, &mut h, req(Some(100)), json_response(1))
        .await
        .unwrap();
    assert_eq!(tokens(&r), 10_000 - 40 - reserve);
}

#[tokio::test(start_paused = true)]
async fn stream_cut_before_usage_keeps_its_reservation() {
    let (mut svc, mut h) = spawn(tpm(10_000));
    let reserve = reserve_of(&body("m", "hello", Some(100)), 100);
    let (resp, tx) = sse_response();
    let r = roundtrip(&mut svc, &mut h, req(Some(100)), resp)
        .await
        .unwrap();
    tx.send(CONTENT_CHUNK).await.unwrap();
    drop(tx);
    drain(r).await;
    let r = roundtrip(&mut svc, &mut h, req(Some(100)), json_response(1))
        .await
        .unwrap();
    assert_eq!(tokens(&r), 10_000 - 2 * reserve);
}

#[tokio::test(start_paused = true)]
async fn no_response_facts_keeps_the_reservation() {
    let (mut svc, mut h) = spawn(tpm(10_000));
    let reserve = reserve_of(&body("m", "hello", Some(100)), 100);
    ok(
        &mut svc,
        &mut h,
        req(Some(100)),
        Response::new(Body::from("{}")),
    )
    .await;
    let r = roundtrip(&mut svc, &mut h, req(Some(100)), json_response(1))
        .await
        .unwrap();
    assert_eq!(tokens(&r), 10_000 - 2 * reserve);
}

#[tokio::test(start_paused = true)]
async fn cache_settle_hook_settles_to_zero_once() {
    let (mut svc, mut h) = spawn(tpm(10_000));
    let reserve = reserve_of(&body("m", "hello", Some(100)), 100);
    let r = roundtrip_with(&mut svc, &mut h, req(Some(100)), |upstream| {
        let res = upstream.extensions().get::<TokenReservation>().unwrap();
        assert_eq!(res.reserved(), reserve);
        assert!(res.settle(0));
        assert!(!res.settle(7));
        assert!(res.is_settled());
        json_response(50)
    })
    .await
    .unwrap();
    drain(r).await;
    // The hit cost nothing; the completion's usage (50) was not applied on top.
    let r = roundtrip(&mut svc, &mut h, req(Some(100)), json_response(1))
        .await
        .unwrap();
    assert_eq!(tokens(&r), 10_000 - reserve);
}

#[tokio::test(start_paused = true)]
async fn core_settle_hooks_for_layers_that_cannot_name_this_crate() {
    let (mut svc, mut h) = spawn(tpm(10_000));
    let reserve = reserve_of(&body("m", "hello", Some(100)), 100);
    let r = roundtrip_with(&mut svc, &mut h, req(Some(100)), |upstream| {
        let hooks = upstream
            .extensions()
            .get::<rampart_core::SettleHooks>()
            .unwrap();
        assert_eq!(hooks.settle_all(0), 1);
        assert_eq!(hooks.settle_all(3), 0);
        json_response(50)
    })
    .await
    .unwrap();
    drain(r).await;
    let r = roundtrip(&mut svc, &mut h, req(Some(100)), json_response(1))
        .await
        .unwrap();
    assert_eq!(tokens(&r), 10_000 - reserve);
}

#[tokio::test(start_paused = true)]
async fn oversized_request_is_refused_at_once_without_retry_after() {
    let (mut svc, mut h) = spawn(tpm(100));
    let e = refused(&mut svc, &mut h, req(Some(500))).await;
    assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(e.error_type(), "tokens");
    assert!(e.is_refusal());
    assert_eq!(e.retry_after(), None);
    assert!(e.message().contains("Request too large"), "{}", e.message());
    let resp = e.to_response();
    assert!(resp.headers().get("retry-after").is_none());
    assert_eq!(header(&resp, "x-ratelimit-limit-tokens"), "100");
    assert_eq!(header(&resp, "x-ratelimit-remaining-tokens"), "100");
    // A request that fits is still admitted.
    ok(&mut svc, &mut h, req(Some(10)), json_response(1)).await;
}

#[tokio::test(start_paused = true)]
async fn tokens_refusal_has_type_tokens_and_waits_for_refill() {
    let (mut svc, mut h) = spawn(tpm(600));
    let reserve = reserve_of(&body("m", "hello", Some(250)), 250);
    let r = roundtrip(&mut svc, &mut h, req(Some(250)), json_response(1))
        .await
        .unwrap();
    let r2 = roundtrip(&mut svc, &mut h, req(Some(250)), json_response(1))
        .await
        .unwrap();
    let e = refused(&mut svc, &mut h, req(Some(250))).await;
    assert_eq!(e.error_type(), "tokens");
    // 600 per minute = 10 per second.
    let missing = reserve - (600 - 2 * reserve);
    assert_eq!(e.retry_after(), Some(Duration::from_millis(missing * 100)));
    drop((r, r2));
}

#[tokio::test(start_paused = true)]
async fn concurrency_permit_held_until_the_body_ends() {
    let (mut svc, mut h) = spawn(RateLimitLayer::new(Limits::none().concurrency(1)));
    let (resp, tx) = sse_response();
    let r = roundtrip(&mut svc, &mut h, req(None), resp).await.unwrap();
    let e = refused(&mut svc, &mut h, req(None)).await;
    assert_eq!(e.error_type(), "requests");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
    assert!(e.message().contains("concurrent"));
    tx.send(FINISH_CHUNK).await.unwrap();
    tx.send("data: [DONE]\n\n").await.unwrap();
    drop(tx);
    drain(r).await;
    ok(&mut svc, &mut h, req(None), json_response(1)).await;
}

#[tokio::test(start_paused = true)]
async fn concurrency_permit_released_when_the_body_is_dropped() {
    let (mut svc, mut h) = spawn(RateLimitLayer::new(Limits::none().concurrency(1)));
    let (resp, _tx) = sse_response();
    let r = roundtrip(&mut svc, &mut h, req(None), resp).await.unwrap();
    refused(&mut svc, &mut h, req(None)).await;
    drop(r); // client disconnect
    ok(&mut svc, &mut h, req(None), json_response(1)).await;
}

#[tokio::test(start_paused = true)]
async fn concurrency_permit_released_when_the_future_is_dropped() {
    let (mut svc, mut h) = spawn(RateLimitLayer::new(Limits::none().concurrency(1)));
    tokio_test::assert_ready_ok!(svc.poll_ready());
    let task = tokio::spawn(svc.call(req(None)));
    let (_upstream_req, _send) = h.next_request().await.unwrap();
    refused(&mut svc, &mut h, req(None)).await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    ok(&mut svc, &mut h, req(None), json_response(1)).await;
}

#[tokio::test(start_paused = true)]
async fn concurrency_permit_released_on_inner_error_and_refusal_refunds_tokens() {
    let layer = RateLimitLayer::new(Limits::none().concurrency(1).tokens_per_minute(10_000));
    let (mut svc, mut h) = spawn(layer);
    let reserve = reserve_of(&body("m", "hello", Some(100)), 100);
    // A refusal from below (an open breaker): nothing reached the upstream, all refunded.
    tokio_test::assert_ready_ok!(svc.poll_ready());
    let task = tokio::spawn(svc.call(req(Some(100))));
    let (_r, send) = h.next_request().await.unwrap();
    send.send_error(Error::circuit_open("p/m", Duration::from_secs(5)));
    let err = task.await.unwrap().unwrap_err();
    assert_eq!(downcast(err).status(), StatusCode::SERVICE_UNAVAILABLE);
    // Another error: the reservation stays, the slot is freed.
    tokio_test::assert_ready_ok!(svc.poll_ready());
    let task = tokio::spawn(svc.call(req(Some(100))));
    let (_r, send) = h.next_request().await.unwrap();
    send.send_error("connection reset");
    assert!(task.await.unwrap().is_err());
    let r = ok(&mut svc, &mut h, req(Some(100)), json_response(reserve)).await;
    assert_eq!(tokens(&r), 10_000 - 2 * reserve);
}

#[tokio::test(start_paused = true)]
async fn without_response_facts_the_body_holds_the_permit() {
    let (mut svc, mut h) = spawn(RateLimitLayer::new(Limits::none().concurrency(1)));
    let (resp, tx) = untapped_response();
    let r = roundtrip(&mut svc, &mut h, req(None), resp).await.unwrap();
    refused(&mut svc, &mut h, req(None)).await;
    tx.send("{}").await.unwrap();
    drop(tx);
    drain(r).await;
    // A buffered body: released once it has been read.
    let r = roundtrip(&mut svc, &mut h, req(None), Response::new(Body::from("{}")))
        .await
        .unwrap();
    refused(&mut svc, &mut h, req(None)).await;
    drain(r).await;
    ok(&mut svc, &mut h, req(None), json_response(1)).await;
}

#[tokio::test(start_paused = true)]
async fn queue_mode_waits_for_the_refill() {
    let layer = RateLimitLayer::builder()
        .limits(Limits::none().requests_per_minute(60).request_burst(1))
        .queue(Duration::from_secs(5))
        .build()
        .unwrap();
    let (mut svc, mut h) = spawn(layer);
    ok(&mut svc, &mut h, req(None), json_response(1)).await;
    let start = Instant::now();
    ok(&mut svc, &mut h, req(None), json_response(1)).await;
    assert_eq!(start.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn queue_mode_refuses_at_once_when_the_refill_comes_too_late() {
    let layer = RateLimitLayer::builder()
        .limits(Limits::none().requests_per_minute(1))
        .queue(Duration::from_secs(5))
        .build()
        .unwrap();
    let (mut svc, mut h) = spawn(layer);
    ok(&mut svc, &mut h, req(None), json_response(1)).await;
    let start = Instant::now();
    let e = refused(&mut svc, &mut h, req(None)).await;
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(e.retry_after(), Some(Duration::from_secs(60)));
}

#[tokio::test(start_paused = true)]
async fn queue_mode_waits_for_a_release_and_gives_up_at_the_deadline() {
    let layer = RateLimitLayer::builder()
        .limits(Limits::none().concurrency(1))
        .queue(Duration::from_secs(10))
        .build()
        .unwrap();
    let (mut svc, mut h) = spawn(layer);
    let (resp, _tx) = sse_response();
    let held = roundtrip(&mut svc, &mut h, req(None), resp).await.unwrap();

    // Released after 2 s: the waiter goes in then.
    let start = Instant::now();
    tokio_test::assert_ready_ok!(svc.poll_ready());
    let waiter = tokio::spawn(svc.call(req(None)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(h.poll_request().is_pending());
    drop(held);
    let (_r, send) = h.next_request().await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    let (resp, _tx2) = sse_response();
    send.send_response(resp);
    let held = waiter.await.unwrap().unwrap();

    // Never released: refused at the deadline.
    let start = Instant::now();
    let e = refused(&mut svc, &mut h, req(None)).await;
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    assert_eq!(e.status(), StatusCode::TOO_MANY_REQUESTS);
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn queue_mode_is_cancel_safe() {
    let layer = RateLimitLayer::builder()
        .limits(Limits::none().concurrency(1).requests_per_minute(2))
        .queue(Duration::from_secs(10))
        .build()
        .unwrap();
    let (mut svc, mut h) = spawn(layer);
    let (resp, _tx) = sse_response();
    let held = roundtrip(&mut svc, &mut h, req(None), resp).await.unwrap();
    tokio_test::assert_ready_ok!(svc.poll_ready());
    let waiter = tokio::spawn(svc.call(req(None)));
    tokio::time::sleep(Duration::from_secs(1)).await;
    waiter.abort();
    assert!(waiter.await.unwrap_err().is_cancelled());
    drop(held);
    // The dropped waiter charged nothing: the second of two requests per minute goes in at once.
    let start = Instant::now();
    let r = ok(&mut svc, &mut h, req(None), json_response(1)).await;
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(header(&r, "x-ratelimit-remaining-requests"), "0");
}

#[tokio::test(start_paused = true)]
async fn success_headers_for_both_limits() {
    let layer = RateLimitLayer::new(
        Limits::none()
            .requests_per_minute(100)
            .tokens_per_minute(1000),
    );
    let (mut svc, mut h) = spawn(layer);
    let reserve = reserve_of(&body("m", "hello", Some(100)), 100);
    let r = roundtrip(&mut svc, &mut h, req(Some(100)), json_response(1))
        .await
        .unwrap();
    assert_eq!(header(&r, "x-ratelimit-limit-requests"), "100");
    assert_eq!(header(&r, "x-ratelimit-remaining-requests"), "99");
    assert_eq!(header(&r, "x-ratelimit-reset-requests"), "600ms");
    assert_eq!(header(&r, "x-ratelimit-limit-tokens"), "1000");
    assert_eq!(tokens(&r), 1000 - reserve);
    // 1000 per minute: `reserve` tokens take reserve × 60 ms.
    let reset = rampart_ratelimit::format_reset(Duration::from_millis(reserve * 60));
    assert_eq!(header(&r, "x-ratelimit-reset-tokens"), reset);
}

#[tokio::test(start_paused = true)]
async fn per_key_overrides() {
    let layer = RateLimitLayer::builder()
        .limits(Limits::none().requests_per_minute(1))
        .key_limits("vip", Limits::none().requests_per_minute(3))
        .build()
        .unwrap();
    let (mut svc, mut h) = spawn(layer);
    let acme = || req_for(Some("acme"), &body("m", "x", None));
    let vip = || req_for(Some("vip"), &body("m", "x", None));
    ok(&mut svc, &mut h, acme(), json_response(1)).await;
    refused(&mut svc, &mut h, acme()).await;
    for _ in 0..3 {
        ok(&mut svc, &mut h, vip(), json_response(1)).await;
    }
    refused(&mut svc, &mut h, vip()).await;
}

#[tokio::test(start_paused = true)]
async fn per_model_limits_for_a_target_limiter() {
    let layer = RateLimitLayer::builder()
        .scope("target")
        .key(KeySource::Target)
        .model_limits("gpt-4.1", Limits::none().requests_per_minute(2))
        .model_limits("claude-sonnet-4.5", Limits::none().requests_per_minute(1))
        .build()
        .unwrap();
    let (mut svc, mut h) = spawn(layer);
    let to = |provider: &str, model: &str| {
        let mut r = req_for(None, &body("auto", "x", None));
        r.extensions_mut().insert(Target::new(provider, model));
        r
    };
    for _ in 0..2 {
        ok(&mut svc, &mut h, to("openai", "gpt-4.1"), json_response(1)).await;
    }
    let e = refused(&mut svc, &mut h, to("openai", "gpt-4.1")).await;
    assert!(e.is_refusal());
    assert!(
        matches!(e.kind(), ErrorKind::RateLimited { scope, .. } if scope == "target"),
        "{:?}",
        e.kind()
    );
    ok(
        &mut svc,
        &mut h,
        to("anthropic", "claude-sonnet-4.5"),
        json_response(1),
    )
    .await;
    refused(&mut svc, &mut h, to("anthropic", "claude-sonnet-4.5")).await;
    // Without a Target extension, the request's model is the key and picks the override.
    ok(
        &mut svc,
        &mut h,
        req_for(None, &body("claude-sonnet-4.5", "x", None)),
        json_response(1),
    )
    .await;
    refused(
        &mut svc,
        &mut h,
        req_for(None, &body("claude-sonnet-4.5", "x", None)),
    )
    .await;
    // Models without limits are not limited.
    for _ in 0..5 {
        ok(&mut svc, &mut h, to("x", "other"), json_response(1)).await;
    }
}

async fn one_per_key(source: KeySource) -> (Svc, MockHandle) {
    let layer = RateLimitLayer::builder()
        .key(source)
        .limits(Limits::none().requests_per_minute(1))
        .build()
        .unwrap();
    spawn(layer)
}

#[tokio::test(start_paused = true)]
async fn tenant_key_defaults_to_default() {
    let (mut svc, mut h) = one_per_key(KeySource::Tenant).await;
    ok(
        &mut svc,
        &mut h,
        req_for(None, &body("m", "x", None)),
        json_response(1),
    )
    .await;
    refused(
        &mut svc,
        &mut h,
        req_for(Some("default"), &body("m", "x", None)),
    )
    .await;
    ok(
        &mut svc,
        &mut h,
        req_for(Some("other"), &body("m", "x", None)),
        json_response(1),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn tenant_model_key() {
    let (mut svc, mut h) = one_per_key(KeySource::TenantModel).await;
    ok(
        &mut svc,
        &mut h,
        req_for(Some("a"), &body("m1", "x", None)),
        json_response(1),
    )
    .await;
    ok(
        &mut svc,
        &mut h,
        req_for(Some("a"), &body("m2", "x", None)),
        json_response(1),
    )
    .await;
    ok(
        &mut svc,
        &mut h,
        req_for(Some("b"), &body("m1", "x", None)),
        json_response(1),
    )
    .await;
    refused(&mut svc, &mut h, req_for(Some("a"), &body("m1", "x", None))).await;
}

#[tokio::test(start_paused = true)]
async fn header_key() {
    let (mut svc, mut h) = one_per_key(KeySource::Header("x-user".into())).await;
    let with = |user: Option<&str>| {
        let mut r = req_for(None, &body("m", "x", None));
        if let Some(u) = user {
            r.headers_mut().insert("x-user", u.parse().unwrap());
        }
        r
    };
    ok(&mut svc, &mut h, with(Some("alice")), json_response(1)).await;
    ok(&mut svc, &mut h, with(Some("bob")), json_response(1)).await;
    refused(&mut svc, &mut h, with(Some("alice"))).await;
    ok(&mut svc, &mut h, with(None), json_response(1)).await;
    refused(&mut svc, &mut h, with(Some("default"))).await;
}

#[tokio::test(start_paused = true)]
async fn closure_key_extractor_and_unlimited_requests() {
    let layer = RateLimitLayer::builder()
        .key_extractor(|req: &Request<Body>, chat: &ChatRequest| {
            req.headers()
                .get("x-project")
                .map(|v| format!("{}:{}", v.to_str().unwrap_or("?"), chat.model()))
        })
        .limits(Limits::none().requests_per_minute(1))
        .build()
        .unwrap();
    let (mut svc, mut h) = spawn(layer);
    let with = |p: Option<&str>| {
        let mut r = req_for(None, &body("m", "x", None));
        if let Some(p) = p {
            r.headers_mut().insert("x-project", p.parse().unwrap());
        }
        r
    };
    ok(&mut svc, &mut h, with(Some("p1")), json_response(1)).await;
    refused(&mut svc, &mut h, with(Some("p1"))).await;
    // No key: not limited, and no headers.
    for _ in 0..3 {
        let r = ok(&mut svc, &mut h, with(None), json_response(1)).await;
        assert!(r.headers().get("x-ratelimit-remaining-requests").is_none());
    }
}

#[tokio::test(start_paused = true)]
async fn memory_stays_bounded_with_many_keys() {
    let store = Arc::new(
        MemoryStore::builder()
            .sweep_interval(Duration::from_secs(1))
            .build(),
    );
    let layer = RateLimitLayer::builder()
        .key(KeySource::Header("x-user".into()))
        .limits(
            Limits::none()
                .requests_per_minute(60)
                .tokens_per_minute(100_000),
        )
        .store(store.clone())
        .build()
        .unwrap();
    let (mut svc, mut h) = spawn(layer);
    let with = |user: String| {
        let mut r = req(Some(10));
        r.headers_mut().insert("x-user", user.parse().unwrap());
        r
    };
    for round in 0..3 {
        for i in 0..2000 {
            ok(
                &mut svc,
                &mut h,
                with(format!("u{round}-{i}")),
                json_response(5),
            )
            .await;
        }
        // Keys of earlier rounds were swept as new requests touched their shards.
        assert!(
            store.len() <= 2000 + 64,
            "round {round}: {} keys",
            store.len()
        );
        assert!(store.len() >= 2000);
        tokio::time::advance(Duration::from_secs(120)).await;
    }
    store.sweep();
    assert_eq!(store.len(), 0);
}

#[tokio::test(start_paused = true)]
async fn state_is_shared_by_clones_and_layer_calls() {
    let layer = RateLimitLayer::new(Limits::none().requests_per_minute(1));
    let (mut a, mut ha) = spawn(layer.clone());
    let (mut b, mut hb) = spawn(layer);
    ok(&mut a, &mut ha, req(None), json_response(1)).await;
    refused(&mut b, &mut hb, req(None)).await;
}

#[tokio::test(start_paused = true)]
async fn parses_the_body_when_used_without_the_edge() {
    let (mut svc, mut h) = spawn(tpm(10_000));
    let raw = body("m", "hello", Some(100));
    let unparsed = Request::post("/v1/chat/completions")
        .body(Body::from(raw.clone()))
        .unwrap();
    let r = roundtrip_with(&mut svc, &mut h, unparsed, |upstream| {
        assert!(rampart_core::chat_request(&upstream).is_some());
        assert!(upstream.extensions().get::<TokenReservation>().is_some());
        assert_eq!(upstream.body().as_bytes().unwrap(), raw.as_bytes());
        json_response(1)
    })
    .await
    .unwrap();
    assert_eq!(tokens(&r), 10_000 - reserve_of(&raw, 100));
    let bad = Request::post("/").body(Body::from("{nope")).unwrap();
    let e = refused(&mut svc, &mut h, bad).await;
    assert_eq!(e.status(), StatusCode::BAD_REQUEST);
}

struct DownStore;

impl RateLimitStore for DownStore {
    fn acquire<'a>(
        &'a self,
        _key: &'a str,
        _quota: &'a rampart_ratelimit::Quota,
        _tokens: u64,
    ) -> rampart_ratelimit::store::StoreFuture<'a, Result<rampart_ratelimit::Decision, StoreError>>
    {
        Box::pin(async { Err(StoreError("connection refused".into())) })
    }
    fn settle(&self, _: &str, _: ReservationId, _: &rampart_ratelimit::Rate, _: u64, _: u64) {}
    fn refund_request(&self, _: &str, _: ReservationId, _: &rampart_ratelimit::Rate) {}
    fn release(&self, _: &str, _: ReservationId) {}
}

#[tokio::test(start_paused = true)]
async fn store_failure_policies() {
    let open = RateLimitLayer::builder()
        .limits(Limits::none().requests_per_minute(1))
        .store(DownStore)
        .build()
        .unwrap();
    let (mut svc, mut h) = spawn(open);
    for _ in 0..3 {
        let r = ok(&mut svc, &mut h, req(None), json_response(1)).await;
        assert_eq!(header(&r, "x-rampart-degraded"), "ratelimit");
    }
    let closed = RateLimitLayer::builder()
        .limits(Limits::none().requests_per_minute(1))
        .store(DownStore)
        .on_store_error(StoreFailure::FailClosed)
        .build()
        .unwrap();
    let (mut svc, mut h) = spawn(closed);
    let e = refused(&mut svc, &mut h, req(None)).await;
    assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(e.code().unwrap(), "state_store_unavailable");
    assert_eq!(
        e.to_response().headers()["x-rampart-error-source"],
        "rate_limit"
    );
}

#[tokio::test(start_paused = true)]
async fn rejections_are_counted_by_scope() {
    use metrics::{
        Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };
    use std::sync::Mutex;

    #[derive(Default)]
    struct Rec(Mutex<Vec<String>>);
    impl Recorder for Rec {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            self.0
                .lock()
                .unwrap()
                .push(format!("{}{{{}}}", key.name(), labels.join(",")));
            Counter::noop()
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }

    let layer = RateLimitLayer::builder()
        .scope("target")
        .limits(Limits::none().requests_per_minute(1))
        .build()
        .unwrap();
    let (mut svc, mut h) = spawn(layer);
    ok(&mut svc, &mut h, req(None), json_response(1)).await;
    tokio_test::assert_ready_ok!(svc.poll_ready());
    let rec = Rec::default();
    let polled = metrics::with_local_recorder(&rec, || {
        let mut fut = tokio_test::task::spawn(svc.call(req(None)));
        fut.poll()
    });
    assert!(matches!(polled, std::task::Poll::Ready(Err(_))));
    assert_eq!(
        rec.0.lock().unwrap().as_slice(),
        ["rampart_ratelimit_rejections_total{scope=target}"]
    );
}

#[tokio::test(start_paused = true)]
async fn tenant_extension_is_what_new_keys_on() {
    let (mut svc, mut h) = spawn(RateLimitLayer::new(Limits::none().requests_per_minute(1)));
    let mut r = req_for(None, &body("m", "x", None));
    r.extensions_mut().insert(Tenant::new("t1"));
    ok(&mut svc, &mut h, r, json_response(1)).await;
    ok(
        &mut svc,
        &mut h,
        req_for(Some("t2"), &body("m", "x", None)),
        json_response(1),
    )
    .await;
    refused(&mut svc, &mut h, req_for(Some("t1"), &body("m", "x", None))).await;
}

#[tokio::test(start_paused = true)]
async fn refusals_below_give_the_request_back() {
    // An open breaker below refuses twice: no upstream call, so no request is spent.
    let (mut svc, mut h) = spawn(RateLimitLayer::new(Limits::none().requests_per_minute(2)));
    for _ in 0..2 {
        tokio_test::assert_ready_ok!(svc.poll_ready());
        let task = tokio::spawn(svc.call(req(None)));
        let (_r, send) = h.next_request().await.unwrap();
        send.send_error(Error::circuit_open("p/m", Duration::from_secs(5)));
        assert!(task.await.unwrap().is_err());
    }
    let r = ok(&mut svc, &mut h, req(None), json_response(1)).await;
    assert_eq!(header(&r, "x-ratelimit-remaining-requests"), "1");
    // An upstream failure did reach the provider: it stays spent.
    tokio_test::assert_ready_ok!(svc.poll_ready());
    let task = tokio::spawn(svc.call(req(None)));
    let (_r, send) = h.next_request().await.unwrap();
    send.send_error("connection reset");
    assert!(task.await.unwrap().is_err());
    refused(&mut svc, &mut h, req(None)).await;
}

#[tokio::test(start_paused = true)]
async fn the_gateways_own_errors_below_refund_the_tokens() {
    let (mut svc, mut h) = spawn(tpm(1000));
    // An unknown model answered by the router below: nothing reached a provider.
    tokio_test::assert_ready_ok!(svc.poll_ready());
    let task = tokio::spawn(svc.call(req(Some(600))));
    let (_r, send) = h.next_request().await.unwrap();
    send.send_error(Error::model_not_found("typo", ["m"]));
    let err = task.await.unwrap().unwrap_err();
    assert_eq!(downcast(err).status(), StatusCode::NOT_FOUND);
    // The same request again fits: the first one's 600+ tokens were given back.
    let r = ok(&mut svc, &mut h, req(Some(600)), json_response(1)).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn an_upstream_error_status_bills_no_tokens() {
    let (mut svc, mut h) = spawn(tpm(1000));
    let failed = {
        let resp = Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header("content-type", "application/json")
            .body(Body::from(
                r#"{"error":{"message":"overloaded","type":"server_error"}}"#,
            ))
            .unwrap();
        rampart_core::tap::tap_response(
            resp,
            Target::new("p", "m"),
            "m".into(),
            Instant::now(),
            false,
        )
    };
    let r = ok(&mut svc, &mut h, req(Some(600)), failed).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    drain(r).await;
    let r = ok(&mut svc, &mut h, req(Some(600)), json_response(1)).await;
    assert_eq!(r.status(), StatusCode::OK);
}
