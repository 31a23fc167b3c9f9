//! The state machine through the layer, on paused time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{ErrKind, KEY, Reply, Scripted, config, req, req_for};
use http::StatusCode;
use rampart_circuit_breaker::{
    BreakerHandle, BreakerState, CircuitBreaker, CircuitBreakerConfig, CircuitBreakerLayer,
};
use rampart_core::error::find_error;
use rampart_core::{
    Body, BoxError, Completion, CompletionReport, ErrorKind, Outcome, error_response,
};
use tokio::time::advance;
use tower::{Layer, ServiceExt};

fn setup(c: CircuitBreakerConfig) -> (CircuitBreaker<Scripted>, Scripted, BreakerHandle) {
    let layer = CircuitBreakerLayer::from_config(c).unwrap();
    let inner = Scripted::default();
    let handle = layer.handle();
    (layer.layer(inner.clone()), inner, handle)
}

async fn send(
    svc: &CircuitBreaker<Scripted>,
    reply: Reply,
) -> Result<http::Response<Body>, BoxError> {
    svc.clone().oneshot(req(reply)).await
}

/// Asserts a refusal by the breaker and returns its `Retry-After` in seconds.
fn refused(result: Result<http::Response<Body>, BoxError>) -> u64 {
    let err = result.expect_err("expected a refusal");
    let e = find_error(&err).expect("a typed error");
    assert!(matches!(e.kind(), ErrorKind::CircuitOpen { .. }), "{e:?}");
    assert!(e.is_refusal());
    let resp = error_response(&err);
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["x-rampart-error-source"], "circuit_breaker");
    resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn state(h: &BreakerHandle) -> BreakerState {
    h.state(KEY).unwrap()
}

async fn trip(svc: &CircuitBreaker<Scripted>, h: &BreakerHandle) {
    for _ in 0..10 {
        if h.state(KEY) == Some(BreakerState::Open) {
            return;
        }
        let _ = send(svc, Reply::status(500)).await;
    }
    assert_eq!(state(h), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn trips_on_failure_rate_once_min_calls_are_reached() {
    let (svc, inner, h) = setup(config());
    for _ in 0..3 {
        assert_eq!(send(&svc, Reply::status(500)).await.unwrap().status(), 500);
    }
    // 3 failures out of 3, but min_calls is 4.
    assert_eq!(state(&h), BreakerState::Closed);
    send(&svc, Reply::ok()).await.unwrap();
    // 3 / 4 ≥ 0.5.
    assert_eq!(state(&h), BreakerState::Open);
    assert_eq!(h.get(KEY).unwrap().consecutive_opens, 1);
    assert_eq!(inner.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn below_the_rate_does_not_trip() {
    let (svc, _, h) = setup(CircuitBreakerConfig {
        failure_rate_threshold: 0.7,
        ..config()
    });
    for failure in [true, false, true, false, true, false] {
        let reply = if failure {
            Reply::status(500)
        } else {
            Reply::ok()
        };
        let _ = send(&svc, reply).await;
    }
    assert_eq!(state(&h), BreakerState::Closed);
    let snap = h.get(KEY).unwrap();
    assert_eq!((snap.calls, snap.failures), (6, 3));
}

#[tokio::test(start_paused = true)]
async fn old_calls_slide_out_of_the_window() {
    let (svc, _, h) = setup(config());
    for _ in 0..3 {
        let _ = send(&svc, Reply::status(500)).await;
    }
    advance(Duration::from_secs(11)).await;
    assert_eq!(h.get(KEY).unwrap().calls, 0);
    let _ = send(&svc, Reply::status(500)).await;
    assert_eq!(state(&h), BreakerState::Closed);
    assert_eq!(h.get(KEY).unwrap().calls, 1);
}

#[tokio::test(start_paused = true)]
async fn trips_on_consecutive_failures() {
    let (svc, _, h) = setup(CircuitBreakerConfig {
        min_calls: 1_000,
        consecutive_failures: 3,
        ..config()
    });
    for s in [500, 500, 200, 500, 500] {
        let reply = if s == 200 {
            Reply::ok()
        } else {
            Reply::status(s)
        };
        let _ = send(&svc, reply).await;
    }
    assert_eq!(state(&h), BreakerState::Closed);
    assert_eq!(h.get(KEY).unwrap().consecutive_failures, 2);
    // Ignored outcomes neither break nor extend the streak.
    let _ = send(&svc, Reply::status(404)).await;
    assert_eq!(h.get(KEY).unwrap().consecutive_failures, 2);
    let _ = send(&svc, Reply::Err(ErrKind::Connect)).await;
    assert_eq!(state(&h), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn slow_call_rate_trips_on_time_to_first_byte() {
    let c = CircuitBreakerConfig {
        slow_call_threshold: Some(Duration::from_secs(2)),
        slow_call_rate_threshold: 0.5,
        ..config()
    };
    let (svc, _, h) = setup(c);
    let slow = || Reply::slow(Duration::from_secs(3));
    send(&svc, slow()).await.unwrap();
    send(&svc, Reply::ok()).await.unwrap();
    send(&svc, slow()).await.unwrap();
    assert_eq!(state(&h), BreakerState::Closed);
    assert_eq!(h.get(KEY).unwrap().slow_calls, 2);
    send(&svc, Reply::ok()).await.unwrap();
    assert_eq!(state(&h), BreakerState::Open);

    // Without a threshold, slowness is not counted.
    let (svc, _, h) = setup(config());
    for _ in 0..6 {
        send(&svc, slow()).await.unwrap();
    }
    assert_eq!(state(&h), BreakerState::Closed);
    assert_eq!(h.get(KEY).unwrap().slow_calls, 0);
}

#[tokio::test(start_paused = true)]
async fn client_errors_cancellations_and_refusals_are_ignored() {
    let (svc, inner, h) = setup(CircuitBreakerConfig {
        min_calls: 1,
        consecutive_failures: 1,
        ..config()
    });
    let replies = [
        Reply::status(400),
        Reply::status(401),
        Reply::status(404),
        Reply::status(413),
        Reply::status(422),
        Reply::ended(Outcome::ClientGone),
        Reply::ended(Outcome::Abandoned),
        Reply::Err(ErrKind::Refusal),
        Reply::Err(ErrKind::BadRequest),
    ];
    let n = replies.len();
    for reply in replies {
        let _ = send(&svc, reply).await;
    }
    assert_eq!(inner.calls(), n);
    assert_eq!(state(&h), BreakerState::Closed);
    let snap = h.get(KEY).unwrap();
    assert_eq!((snap.calls, snap.failures), (0, 0));
    // The refusal of an inner layer is passed through untouched.
    let err = send(&svc, Reply::Err(ErrKind::Refusal)).await.unwrap_err();
    assert_eq!(error_response(&err).status(), 429);
}

#[tokio::test(start_paused = true)]
async fn every_kind_of_failure_counts() {
    let (svc, _, h) = setup(CircuitBreakerConfig {
        min_calls: 1,
        consecutive_failures: 1,
        ..config()
    });
    let replies = [
        Reply::Err(ErrKind::Connect),
        Reply::Err(ErrKind::Timeout),
        Reply::Err(ErrKind::Io),
        Reply::status(500),
        Reply::status(502),
        Reply::status(503),
        Reply::status(504),
        Reply::status(529),
        Reply::ended(Outcome::Cut),
        Reply::ended(Outcome::UpstreamError("boom".into())),
    ];
    for (i, reply) in replies.into_iter().enumerate() {
        let model = format!("m{i}");
        let _ = svc.clone().oneshot(req_for("p", &model, reply)).await;
        assert_eq!(
            h.state(&format!("p/{model}")),
            Some(BreakerState::Open),
            "case {i}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn rate_limit_cooldown_honours_retry_after() {
    let (svc, inner, h) = setup(CircuitBreakerConfig {
        min_calls: 1,
        consecutive_failures: 1,
        ..config()
    });
    let resp = send(&svc, Reply::Status(429, Some(7))).await.unwrap();
    assert_eq!(resp.status(), 429);
    // Not a failure, and the state stays closed…
    assert_eq!(state(&h), BreakerState::Closed);
    let snap = h.get(KEY).unwrap();
    assert_eq!((snap.calls, snap.failures), (0, 0));
    assert_eq!(snap.cooldown_left, Some(Duration::from_secs(7)));
    // …but requests are refused like open, without reaching the upstream.
    advance(Duration::from_millis(2_500)).await;
    let result = send(&svc, Reply::ok()).await;
    let message = find_error(result.as_ref().unwrap_err())
        .unwrap()
        .message()
        .to_owned();
    assert!(
        message.contains("slow down"),
        "a cooldown says why: {message}"
    );
    assert_eq!(refused(result), 5);
    assert_eq!(inner.calls(), 1);
    advance(Duration::from_millis(4_500)).await;
    send(&svc, Reply::ok()).await.unwrap();
    assert_eq!(inner.calls(), 2);
    assert_eq!(h.get(KEY).unwrap().cooldown_left, None);
}

#[tokio::test(start_paused = true)]
async fn rate_limit_cooldown_is_capped_and_defaulted() {
    let (svc, _, h) = setup(CircuitBreakerConfig {
        rate_limit_cooldown_max: Duration::from_secs(30),
        rate_limit_cooldown: Duration::from_secs(2),
        ..config()
    });
    let _ = send(&svc, Reply::Status(429, Some(3_600))).await;
    assert_eq!(refused(send(&svc, Reply::ok()).await), 30);
    advance(Duration::from_secs(30)).await;
    send(&svc, Reply::ok()).await.unwrap();
    // No Retry-After: the default cooldown.
    let _ = send(&svc, Reply::Status(429, None)).await;
    assert_eq!(refused(send(&svc, Reply::ok()).await), 2);
    advance(Duration::from_secs(2)).await;
    send(&svc, Reply::ok()).await.unwrap();
    assert_eq!(state(&h), BreakerState::Closed);

    // A cap of zero turns cooldowns off.
    let (svc, _, _) = setup(CircuitBreakerConfig {
        rate_limit_cooldown_max: Duration::ZERO,
        ..config()
    });
    let _ = send(&svc, Reply::Status(429, Some(10))).await;
    send(&svc, Reply::ok()).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn open_refuses_at_once_without_touching_the_inner_service() {
    let layer = CircuitBreakerLayer::from_config(CircuitBreakerConfig {
        min_calls: 1,
        consecutive_failures: 1,
        ..config()
    })
    .unwrap();
    let h = layer.handle();
    let (mut svc, mut upstream) =
        tower_test::mock::spawn_layer::<http::Request<Body>, http::Response<Body>, _>(layer);

    tokio_test::assert_ready_ok!(svc.poll_ready());
    let fut = svc.call(req(Reply::ok()));
    let (_, send_response) = upstream.next_request().await.unwrap();
    send_response.send_response(
        http::Response::builder()
            .status(502)
            .body(Body::empty())
            .unwrap(),
    );
    assert_eq!(fut.await.unwrap().status(), 502);
    assert_eq!(state(&h), BreakerState::Open);

    advance(Duration::from_millis(2_500)).await;
    tokio_test::assert_ready_ok!(svc.poll_ready());
    let mut fut = tokio_test::task::spawn(svc.call(req(Reply::ok())));
    // Ready at once, and the upstream never saw the request.
    let result = tokio_test::assert_ready!(fut.poll());
    tokio_test::assert_pending!(upstream.poll_request());
    // 7.5 s left, rounded up.
    assert_eq!(refused(result), 8);
    let err = {
        tokio_test::assert_ready_ok!(svc.poll_ready());
        svc.call(req(Reply::ok())).await.unwrap_err()
    };
    let resp = error_response(&err);
    assert_eq!(resp.headers()["retry-after"], "8");
    assert!(format!("{err}").contains("p/m"));
}

#[tokio::test(start_paused = true)]
async fn poll_ready_only_forwards() {
    let layer = CircuitBreakerLayer::default();
    let (mut svc, mut upstream) =
        tower_test::mock::spawn_layer::<http::Request<Body>, http::Response<Body>, _>(layer);
    upstream.allow(0);
    tokio_test::assert_pending!(svc.poll_ready());
    upstream.allow(1);
    tokio_test::assert_ready_ok!(svc.poll_ready());
}

#[tokio::test(start_paused = true)]
async fn open_time_grows_is_capped_and_resets_after_a_clean_close() {
    let (svc, _, h) = setup(CircuitBreakerConfig {
        min_calls: 1,
        consecutive_failures: 1,
        half_open_probes: 1,
        ..config()
    });
    trip(&svc, &h).await;
    assert_eq!(refused(send(&svc, Reply::ok()).await), 10);
    // base × 2, then base × 3 capped at 25 s.
    for expected in [20, 25, 25] {
        advance(Duration::from_secs(25)).await;
        assert_eq!(state(&h), BreakerState::HalfOpen);
        let _ = send(&svc, Reply::status(503)).await;
        assert_eq!(state(&h), BreakerState::Open);
        assert_eq!(refused(send(&svc, Reply::ok()).await), expected);
    }
    assert_eq!(h.get(KEY).unwrap().consecutive_opens, 4);
    advance(Duration::from_secs(25)).await;
    send(&svc, Reply::ok()).await.unwrap();
    assert_eq!(state(&h), BreakerState::Closed);
    assert_eq!(h.get(KEY).unwrap().consecutive_opens, 0);
    // The next open starts again from the base.
    trip(&svc, &h).await;
    assert_eq!(refused(send(&svc, Reply::ok()).await), 10);
}

#[tokio::test(start_paused = true)]
async fn jitter_stays_within_its_bounds() {
    let (svc, _, h) = setup(CircuitBreakerConfig {
        min_calls: 1,
        consecutive_failures: 1,
        jitter: 0.5,
        ..config()
    });
    let mut seen = Vec::new();
    for _ in 0..50 {
        h.reset(KEY);
        trip(&svc, &h).await;
        let left = h.get(KEY).unwrap().open_left.unwrap();
        assert!(
            left >= Duration::from_secs(5) && left <= Duration::from_secs(10),
            "{left:?}"
        );
        seen.push(left);
    }
    seen.sort();
    seen.dedup();
    assert!(seen.len() > 1, "jitter never varied");
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_exactly_n_probes() {
    let (svc, inner, h) = setup(CircuitBreakerConfig {
        half_open_probes: 3,
        ..config()
    });
    trip(&svc, &h).await;
    advance(Duration::from_secs(10)).await;
    let before = inner.calls();
    let probes: Vec<Completion> = (0..3).map(|_| Completion::new()).collect();
    for c in &probes {
        send(&svc, Reply::OkWith(c.clone(), Duration::from_millis(5)))
            .await
            .unwrap();
    }
    assert_eq!(inner.calls(), before + 3);
    assert_eq!(state(&h), BreakerState::HalfOpen);
    assert_eq!(h.get(KEY).unwrap().probes_in_flight, 3);
    // Every permit taken: refused until a probe deadline (5 s) at the latest.
    assert_eq!(refused(send(&svc, Reply::ok()).await), 5);
    probes[0].resolve(CompletionReport::bare(Outcome::Complete));
    // One success and two in flight: still no room.
    refused(send(&svc, Reply::ok()).await);
    assert_eq!(inner.calls(), before + 3);
    probes[1].resolve(CompletionReport::bare(Outcome::Complete));
    assert_eq!(state(&h), BreakerState::HalfOpen);
    probes[2].resolve(CompletionReport::bare(Outcome::Complete));
    assert_eq!(state(&h), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn dropped_probe_future_frees_its_permit() {
    let (svc, inner, h) = setup(CircuitBreakerConfig {
        half_open_probes: 1,
        ..config()
    });
    trip(&svc, &h).await;
    advance(Duration::from_secs(10)).await;
    let mut probe = tokio_test::task::spawn(svc.clone().oneshot(req(Reply::Hang)));
    tokio_test::assert_pending!(probe.poll());
    assert_eq!(h.get(KEY).unwrap().probes_in_flight, 1);
    refused(send(&svc, Reply::ok()).await);
    let before = inner.calls();
    drop(probe);
    assert_eq!(h.get(KEY).unwrap().probes_in_flight, 0);
    assert_eq!(state(&h), BreakerState::HalfOpen);
    // The permit is back: the next request is the probe, and closes the breaker.
    send(&svc, Reply::ok()).await.unwrap();
    assert_eq!(inner.calls(), before + 1);
    assert_eq!(state(&h), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn ignored_probe_outcomes_free_their_permit() {
    let (svc, _, h) = setup(CircuitBreakerConfig {
        half_open_probes: 1,
        ..config()
    });
    trip(&svc, &h).await;
    advance(Duration::from_secs(10)).await;
    let _ = send(&svc, Reply::status(400)).await;
    let _ = send(&svc, Reply::ended(Outcome::ClientGone)).await;
    assert_eq!(state(&h), BreakerState::HalfOpen);
    assert_eq!(h.get(KEY).unwrap().probes_in_flight, 0);
    send(&svc, Reply::ok()).await.unwrap();
    assert_eq!(state(&h), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn hung_probe_sends_the_breaker_back_to_open() {
    let (svc, _, h) = setup(CircuitBreakerConfig {
        half_open_probes: 1,
        ..config()
    });
    trip(&svc, &h).await;
    advance(Duration::from_secs(10)).await;
    let hung = Completion::new();
    send(&svc, Reply::OkWith(hung.clone(), Duration::from_millis(1)))
        .await
        .unwrap();
    advance(Duration::from_millis(4_999)).await;
    assert_eq!(state(&h), BreakerState::HalfOpen);
    advance(Duration::from_millis(1)).await;
    // No request needed: the deadline is checked on every read and every call.
    assert_eq!(state(&h), BreakerState::Open);
    // The longer open time: base × 2.
    assert_eq!(refused(send(&svc, Reply::ok()).await), 20);
    // The hung probe ending late changes nothing.
    hung.resolve(CompletionReport::bare(Outcome::Complete));
    assert_eq!(state(&h), BreakerState::Open);
    assert_eq!(h.get(KEY).unwrap().consecutive_opens, 2);
}

#[tokio::test(start_paused = true)]
async fn hung_probe_detected_by_the_next_call() {
    let (svc, inner, h) = setup(CircuitBreakerConfig {
        half_open_probes: 1,
        ..config()
    });
    trip(&svc, &h).await;
    advance(Duration::from_secs(10)).await;
    let mut probe = tokio_test::task::spawn(svc.clone().oneshot(req(Reply::Hang)));
    tokio_test::assert_pending!(probe.poll());
    advance(Duration::from_secs(6)).await;
    let before = inner.calls();
    assert_eq!(refused(send(&svc, Reply::ok()).await), 20);
    assert_eq!(inner.calls(), before);
    drop(probe);
    assert_eq!(state(&h), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn all_probes_succeed_closes_with_a_fresh_window() {
    let (svc, _, h) = setup(config());
    trip(&svc, &h).await;
    advance(Duration::from_secs(10)).await;
    send(&svc, Reply::ok()).await.unwrap();
    assert_eq!(state(&h), BreakerState::HalfOpen);
    send(&svc, Reply::ok()).await.unwrap();
    assert_eq!(state(&h), BreakerState::Closed);
    let snap = h.get(KEY).unwrap();
    assert_eq!(
        (snap.calls, snap.failures, snap.consecutive_opens),
        (0, 0, 0)
    );
    // A fresh window: three failures are under min_calls again.
    for _ in 0..3 {
        let _ = send(&svc, Reply::status(500)).await;
    }
    assert_eq!(state(&h), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn probe_failure_reopens_with_a_longer_open_time() {
    let (svc, _, h) = setup(config());
    trip(&svc, &h).await;
    advance(Duration::from_secs(10)).await;
    send(&svc, Reply::ok()).await.unwrap();
    let _ = send(&svc, Reply::Err(ErrKind::Timeout)).await;
    assert_eq!(state(&h), BreakerState::Open);
    assert_eq!(h.get(KEY).unwrap().open_left, Some(Duration::from_secs(20)));
}

#[tokio::test(start_paused = true)]
async fn slow_probe_reopens() {
    let (svc, _, h) = setup(CircuitBreakerConfig {
        slow_call_threshold: Some(Duration::from_secs(1)),
        half_open_probes: 1,
        ..config()
    });
    trip(&svc, &h).await;
    advance(Duration::from_secs(10)).await;
    send(&svc, Reply::slow(Duration::from_secs(2)))
        .await
        .unwrap();
    assert_eq!(state(&h), BreakerState::Open);
}

#[tokio::test(start_paused = true)]
async fn outcomes_from_before_a_transition_are_ignored() {
    let (svc, _, h) = setup(config());
    let late = Completion::new();
    send(&svc, Reply::OkWith(late.clone(), Duration::ZERO))
        .await
        .unwrap();
    trip(&svc, &h).await;
    late.resolve(CompletionReport::bare(Outcome::Cut));
    assert_eq!(h.get(KEY).unwrap().consecutive_opens, 1);
    assert_eq!(h.get(KEY).unwrap().open_left, Some(Duration::from_secs(10)));
}

#[tokio::test(start_paused = true)]
async fn operators_force_open_reset_and_disable() {
    let (svc, inner, h) = setup(CircuitBreakerConfig {
        min_calls: 1,
        consecutive_failures: 1,
        ..config()
    });
    assert_eq!(h.state(KEY), None);
    assert!(h.is_empty());
    h.force_open(KEY);
    assert_eq!(state(&h), BreakerState::ForcedOpen);
    assert_eq!(refused(send(&svc, Reply::ok()).await), 10);
    advance(Duration::from_secs(3_600)).await;
    assert_eq!(state(&h), BreakerState::ForcedOpen);
    refused(send(&svc, Reply::ok()).await);
    assert_eq!(inner.calls(), 0);

    h.reset(KEY);
    assert_eq!(state(&h), BreakerState::Closed);
    send(&svc, Reply::ok()).await.unwrap();

    h.disable(KEY);
    for _ in 0..5 {
        assert_eq!(send(&svc, Reply::status(500)).await.unwrap().status(), 500);
    }
    let _ = send(&svc, Reply::Status(429, Some(60))).await;
    send(&svc, Reply::ok()).await.unwrap();
    assert_eq!(state(&h), BreakerState::Disabled);
    assert_eq!(h.get(KEY).unwrap().calls, 0);

    h.force_open(KEY);
    refused(send(&svc, Reply::ok()).await);
    h.reset(KEY);
    // Reset also clears an open breaker's growth.
    trip(&svc, &h).await;
    h.reset(KEY);
    assert_eq!(h.get(KEY).unwrap().consecutive_opens, 0);

    h.force_open("other/model");
    let keys: Vec<_> = h.snapshot().into_iter().map(|s| (s.key, s.state)).collect();
    assert_eq!(
        keys,
        vec![
            ("other/model".to_owned(), BreakerState::ForcedOpen),
            (KEY.to_owned(), BreakerState::Closed)
        ]
    );
    assert_eq!(h.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn keys_past_max_keys_pass_untracked() {
    let (svc, inner, h) = setup(CircuitBreakerConfig {
        min_calls: 1,
        consecutive_failures: 1,
        max_keys: 2,
        ..config()
    });
    for model in ["a", "b"] {
        let _ = svc.clone().oneshot(req_for("p", model, Reply::ok())).await;
    }
    for _ in 0..5 {
        let resp = svc
            .clone()
            .oneshot(req_for("p", "c", Reply::status(500)))
            .await
            .unwrap();
        assert_eq!(resp.status(), 500);
    }
    assert_eq!(inner.calls(), 7);
    assert_eq!(h.len(), 2);
    assert_eq!(h.state("p/c"), None);
    // Operators may still act on any key.
    h.force_open("p/c");
    refused(svc.clone().oneshot(req_for("p", "c", Reply::ok())).await);
}

#[tokio::test(start_paused = true)]
async fn clones_and_layer_calls_share_state() {
    let layer = CircuitBreakerLayer::from_config(CircuitBreakerConfig {
        min_calls: 1,
        consecutive_failures: 1,
        ..config()
    })
    .unwrap();
    let a = layer.layer(Scripted::default());
    let b = layer.clone().layer(Scripted::default());
    let _ = a.clone().oneshot(req(Reply::status(500))).await;
    refused(b.clone().oneshot(req(Reply::ok())).await);
    assert_eq!(a.handle().state(KEY), Some(BreakerState::Open));
    assert_eq!(b.get_ref().calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn keys_come_from_target_then_model_then_default() {
    let (svc, _, h) = setup(config());
    let _ = svc
        .clone()
        .oneshot(req_for("openai", "gpt-4.1", Reply::ok()))
        .await;
    let _ = svc.clone().oneshot(common::chat("mock-small", false)).await;
    let _ = svc.clone().oneshot(http::Request::new(Body::empty())).await;
    let keys: Vec<_> = h.snapshot().into_iter().map(|s| s.key).collect();
    assert_eq!(keys, ["default", "mock-small", "openai/gpt-4.1"]);

    let layer = CircuitBreakerLayer::builder()
        .key_extractor(|r: &http::Request<Body>| {
            r.headers()
                .get("x-pool")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        })
        .build()
        .unwrap();
    let svc = layer.layer(Scripted::default());
    let mut r = req(Reply::ok());
    r.headers_mut().insert("x-pool", "blue".parse().unwrap());
    svc.clone().oneshot(r).await.unwrap();
    assert_eq!(layer.handle().state("blue"), Some(BreakerState::Closed));
    assert_eq!(layer.handle().state(KEY), None);
}

#[test]
fn services_are_clone_send_sync_and_futures_send() {
    fn assert_service<T: Clone + Send + Sync + 'static>(_: &T) {}
    fn assert_send<T: Send>(_: &T) {}
    let svc = CircuitBreakerLayer::default().layer(Scripted::default());
    assert_service(&svc);
    assert_service(&CircuitBreakerLayer::default());
    assert_service(&svc.handle());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let fut = svc.oneshot(req(Reply::ok()));
    assert_send(&fut);
}
