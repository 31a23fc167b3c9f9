//! Half-open permits under real concurrency (multi-thread runtime, manual clock).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{KEY, ManualClock, Reply, Scripted, config, req};
use rampart_circuit_breaker::{BreakerState, CircuitBreakerLayer};
use rampart_core::error::find_error;
use rampart_core::{Completion, CompletionReport, ErrorKind, Outcome};
use tokio::sync::Barrier;
use tower::{Layer, ServiceExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_n_probes_among_many_concurrent_requests() {
    const PROBES: u32 = 3;
    const REQUESTS: usize = 64;
    let clock = ManualClock::default();
    let layer = CircuitBreakerLayer::builder()
        .config(config())
        .min_calls(1)
        .consecutive_failures(1)
        .half_open_probes(PROBES)
        .probe_timeout(Duration::from_secs(3_600))
        .clock({
            let clock = clock.clone();
            move || clock.now()
        })
        .build()
        .unwrap();
    let h = layer.handle();
    let inner = Scripted::default();
    let svc = layer.layer(inner.clone());

    for round in 0..3 {
        let _ = svc.clone().oneshot(req(Reply::status(500))).await;
        assert_eq!(h.state(KEY), Some(BreakerState::Open), "round {round}");
        clock.advance(Duration::from_secs(60));

        let before = inner.calls();
        // Probes end only when the test says so: their permits stay taken.
        let pending: Vec<Completion> = (0..REQUESTS).map(|_| Completion::new()).collect();
        let barrier = Arc::new(Barrier::new(REQUESTS));
        let tasks: Vec<_> = pending
            .iter()
            .map(|c| {
                let svc = svc.clone();
                let barrier = barrier.clone();
                let reply = Reply::OkWith(c.clone(), Duration::ZERO);
                tokio::spawn(async move {
                    barrier.wait().await;
                    svc.oneshot(req(reply)).await
                })
            })
            .collect();
        let mut admitted = 0;
        let mut refused = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => admitted += 1,
                Err(e) => {
                    assert!(matches!(
                        find_error(&e).unwrap().kind(),
                        ErrorKind::CircuitOpen { .. }
                    ));
                    refused += 1;
                }
            }
        }
        assert_eq!(admitted, PROBES as usize);
        assert_eq!(refused, REQUESTS - PROBES as usize);
        assert_eq!(inner.calls() - before, PROBES as usize);
        assert_eq!(h.get(KEY).unwrap().probes_in_flight, PROBES);
        assert_eq!(h.state(KEY), Some(BreakerState::HalfOpen));

        // End every probe (the refused requests' completions were never attached).
        for c in &pending {
            c.resolve(CompletionReport::bare(Outcome::Complete));
        }
        assert_eq!(h.state(KEY), Some(BreakerState::Closed));
    }
}
