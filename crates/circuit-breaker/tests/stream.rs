//! Outcomes recorded when the body ends, with the simulated provider.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{chat, config};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use rampart_circuit_breaker::{BreakerState, CircuitBreakerConfig, CircuitBreakerLayer};
use rampart_core::error::find_error;
use rampart_core::tap::tap_response;
use rampart_core::{Body, BoxError, ErrorKind, Target, chat_request};
use rampart_mock::{Fault, MockConfig, MockProvider, Stall};
use tokio::time::{Instant, advance};
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceExt};

type Svc = BoxCloneSyncService<Request<Body>, Response<Body>, BoxError>;

/// The mock behind the core tap, as the upstream service would attach facts.
fn tapped(mock: &MockProvider) -> Svc {
    let svc = mock.service();
    BoxCloneSyncService::new(tower::service_fn(move |req: Request<Body>| {
        let started = Instant::now();
        let model = chat_request(&req)
            .map(|c| c.model().to_owned())
            .unwrap_or_default();
        let fut = svc.clone().oneshot(req);
        async move {
            let resp = fut.await?;
            Ok::<_, BoxError>(tap_response(
                resp,
                Target::new("mock", model.clone()),
                model.into(),
                started,
                false,
            ))
        }
    }))
}

fn strict() -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        min_calls: 1,
        consecutive_failures: 1,
        half_open_probes: 1,
        ..config()
    }
}

const MODEL: &str = "mock-small";

async fn stream_cut_is_recorded_at_body_end(svc: Svc, layer: &CircuitBreakerLayer) {
    let h = layer.handle();
    let svc = layer.layer(svc);
    let resp = svc.clone().oneshot(chat(MODEL, true)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // Headers are in: nothing recorded yet.
    let snap = h.get(MODEL).unwrap();
    assert_eq!((snap.state, snap.calls), (BreakerState::Closed, 0));
    let body = resp.into_body().collect().await;
    assert!(body.is_err(), "the mock cuts the stream with a body error");
    // The body ended broken: a failure, which trips the breaker.
    assert_eq!(h.state(MODEL), Some(BreakerState::Open));
    let err = svc.clone().oneshot(chat(MODEL, true)).await.unwrap_err();
    assert!(matches!(
        find_error(&err).unwrap().kind(),
        ErrorKind::CircuitOpen { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn stream_cut_mid_way_is_a_failure_recorded_when_the_body_ends() {
    let mock = MockProvider::new(MockConfig::default());
    mock.set_fault(Some(MODEL), Fault::cut_after(2));
    let layer = CircuitBreakerLayer::from_config(strict()).unwrap();
    stream_cut_is_recorded_at_body_end(tapped(&mock), &layer).await;
    assert_eq!(mock.calls(MODEL), 1);
}

#[tokio::test(start_paused = true)]
async fn a_foreign_service_without_facts_is_tapped_by_the_layer() {
    let mock = MockProvider::new(MockConfig::default());
    mock.set_fault(Some(MODEL), Fault::cut_after(2));
    let layer = CircuitBreakerLayer::from_config(strict()).unwrap();
    stream_cut_is_recorded_at_body_end(BoxCloneSyncService::new(mock.service()), &layer).await;
}

#[tokio::test(start_paused = true)]
async fn a_complete_stream_is_a_success_recorded_when_the_body_ends() {
    let mock = MockProvider::new(MockConfig::default());
    let layer = CircuitBreakerLayer::from_config(strict()).unwrap();
    let h = layer.handle();
    let svc = layer.layer(tapped(&mock));
    for stream in [true, false] {
        let resp = svc.clone().oneshot(chat(MODEL, stream)).await.unwrap();
        let before = h.get(MODEL).unwrap().calls;
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(!body.is_empty());
        let snap = h.get(MODEL).unwrap();
        assert_eq!((snap.calls, snap.failures), (before + 1, 0));
    }
    assert_eq!(h.state(MODEL), Some(BreakerState::Closed));
}

#[tokio::test(start_paused = true)]
async fn a_client_leaving_mid_stream_is_ignored() {
    let mock = MockProvider::new(MockConfig::default());
    mock.set_fault(Some(MODEL), Fault::stalled(Stall::AfterChunks(2)));
    let layer = CircuitBreakerLayer::from_config(strict()).unwrap();
    let h = layer.handle();
    let svc = layer.layer(tapped(&mock));
    let resp = svc.clone().oneshot(chat(MODEL, true)).await.unwrap();
    let mut body = resp.into_body();
    body.frame().await.unwrap().unwrap();
    drop(body);
    let snap = h.get(MODEL).unwrap();
    assert_eq!((snap.state, snap.calls), (BreakerState::Closed, 0));
}

#[tokio::test(start_paused = true)]
async fn dropped_probe_body_frees_its_permit() {
    let mock = MockProvider::new(MockConfig::default());
    let layer = CircuitBreakerLayer::from_config(strict()).unwrap();
    let h = layer.handle();
    let svc = layer.layer(tapped(&mock));

    mock.set_fault(Some(MODEL), Fault::status_code(StatusCode::BAD_GATEWAY));
    let _ = svc.clone().oneshot(chat(MODEL, true)).await.unwrap();
    assert_eq!(h.state(MODEL), Some(BreakerState::Open));

    advance(Duration::from_secs(10)).await;
    mock.set_fault(Some(MODEL), Fault::stalled(Stall::AfterChunks(1)));
    let probe = svc.clone().oneshot(chat(MODEL, true)).await.unwrap();
    assert_eq!(probe.status(), StatusCode::OK);
    assert_eq!(h.get(MODEL).unwrap().probes_in_flight, 1);
    // The only permit is taken.
    assert!(svc.clone().oneshot(chat(MODEL, true)).await.is_err());
    let calls = mock.calls(MODEL);

    drop(probe);
    assert_eq!(h.get(MODEL).unwrap().probes_in_flight, 0);
    assert_eq!(h.state(MODEL), Some(BreakerState::HalfOpen));

    mock.clear_faults();
    let resp = svc.clone().oneshot(chat(MODEL, true)).await.unwrap();
    assert_eq!(mock.calls(MODEL), calls + 1);
    resp.into_body().collect().await.unwrap();
    assert_eq!(h.state(MODEL), Some(BreakerState::Closed));
}
