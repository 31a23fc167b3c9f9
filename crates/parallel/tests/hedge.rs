//! HedgeLayer on paused time: the delay, the winner, cancellation of the loser, percentile
//! delays, streams, and the retry budget under a failing upstream.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Behaviour, Sim, body_json, body_string, header, routed};
use rampart_core::Target;
use rampart_parallel::{HedgeBudget, HedgeConfig, HedgeLayer, HedgePolicy};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

fn fixed(ms: u64) -> HedgePolicy {
    HedgePolicy {
        delay: Duration::from_millis(ms),
        ..HedgePolicy::default()
    }
}

fn layer(policy: HedgePolicy) -> HedgeLayer {
    HedgeLayer::with_policy(policy).unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_hedge_starts_after_the_delay_wins_and_the_primary_is_cancelled() {
    let sim = Sim::new(&[
        ("a", Behaviour::after(10_000)),
        ("b", Behaviour::after(100)),
    ]);
    let svc = layer(fixed(500)).layer(sim.service());
    let t0 = Instant::now();
    let resp = svc.oneshot(routed(&["a", "b"], false)).await.unwrap();
    // The hedge started at 500 ms and answered 100 ms later.
    assert_eq!(t0.elapsed(), Duration::from_millis(600));
    let starts = sim.starts();
    assert_eq!(starts.len(), 2);
    assert_eq!(starts[0].0, "a");
    assert_eq!(starts[1].0, "b");
    assert_eq!(starts[1].1 - starts[0].1, Duration::from_millis(500));
    assert_eq!(header(&resp, "x-rampart-models-called"), "a,b");
    let v = body_json(resp).await;
    assert_eq!(v["model"], "b");
    // The primary's call was dropped: its connection closed before an answer.
    assert_eq!(
        sim.counts("a"),
        common::Counts {
            started: 1,
            completed: 0,
            cancelled: 1
        }
    );
    assert_eq!(sim.counts("b").completed, 1);
}

#[tokio::test(start_paused = true)]
async fn no_hedge_when_the_primary_answers_before_the_delay() {
    let sim = Sim::new(&[("a", Behaviour::after(499)), ("b", Behaviour::after(1))]);
    let svc = layer(fixed(500)).layer(sim.service());
    let resp = svc.oneshot(routed(&["a", "b"], false)).await.unwrap();
    assert_eq!(header(&resp, "x-rampart-models-called"), "a");
    assert_eq!(sim.counts("b").started, 0);
    assert_eq!(body_json(resp).await["model"], "a");
}

#[tokio::test(start_paused = true)]
async fn the_primary_can_still_win_after_a_hedge_started() {
    let sim = Sim::new(&[("a", Behaviour::after(700)), ("b", Behaviour::after(2_000))]);
    let hedge = layer(fixed(500));
    let svc = hedge.clone().layer(sim.service());
    let t0 = Instant::now();
    let resp = svc.oneshot(routed(&["a", "b"], false)).await.unwrap();
    assert_eq!(t0.elapsed(), Duration::from_millis(700));
    assert_eq!(header(&resp, "x-rampart-models-called"), "a,b");
    assert_eq!(body_json(resp).await["model"], "a");
    assert_eq!(sim.counts("b").cancelled, 1);
    assert_eq!(sim.counts("a").completed, 1);
    // The winner's time was observed for its target.
    assert_eq!(hedge.samples(&Target::new("p-a", "a"), false), 1);
}

#[tokio::test(start_paused = true)]
async fn up_to_max_hedges_each_after_the_delay() {
    let sim = Sim::new(&[
        ("a", Behaviour::after(10_000)),
        ("b", Behaviour::after(10_000)),
        ("c", Behaviour::after(10_000)),
        ("d", Behaviour::after(10)),
    ]);
    let svc = layer(HedgePolicy {
        max_hedges: 2,
        ..fixed(100)
    })
    .layer(sim.service());
    let t0 = Instant::now();
    let resp = svc
        .oneshot(routed(&["a", "b", "c", "d"], false))
        .await
        .unwrap();
    // a at 0, b at 100 ms, c at 200 ms; d is never tried; a wins at 10 s.
    assert_eq!(header(&resp, "x-rampart-models-called"), "a,b,c");
    assert_eq!(sim.counts("d").started, 0);
    assert_eq!(t0.elapsed(), Duration::from_secs(10));
    let starts: Vec<Duration> = sim.starts().iter().map(|(_, at)| *at - t0).collect();
    assert_eq!(starts, [0, 100, 200].map(Duration::from_millis).to_vec());
    assert_eq!(sim.counts("b").cancelled + sim.counts("c").cancelled, 2);
}

#[tokio::test(start_paused = true)]
async fn a_stream_wins_with_its_first_content_chunk_and_the_other_stream_is_dropped() {
    // Both send their head at once; a's first content comes after 5 s, b's after 100 ms.
    let sim = Sim::new(&[
        ("a", Behaviour::after(0).first_token(5_000)),
        ("b", Behaviour::after(0).first_token(100)),
    ]);
    let svc = layer(fixed(300)).layer(sim.service());
    let t0 = Instant::now();
    let resp = svc.oneshot(routed(&["a", "b"], true)).await.unwrap();
    assert_eq!(t0.elapsed(), Duration::from_millis(400));
    assert_eq!(header(&resp, "x-rampart-models-called"), "a,b");
    let text = body_string(resp).await;
    assert!(text.contains("from b"), "{text}");
    assert!(!text.contains("from a"), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"));
    // a had sent its head and role chunk: its stream was dropped before content.
    assert_eq!(sim.counts("a").cancelled, 1);
    assert_eq!(sim.counts("b").completed, 1);
}

#[tokio::test(start_paused = true)]
async fn a_fast_failure_is_returned_without_a_hedge() {
    let sim = Sim::new(&[
        ("a", Behaviour::failing(503, 10)),
        ("b", Behaviour::after(1)),
    ]);
    let svc = layer(fixed(500)).layer(sim.service());
    let resp = svc.oneshot(routed(&["a", "b"], false)).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(header(&resp, "x-rampart-models-called"), "a");
    assert_eq!(sim.counts("b").started, 0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_hedge_waits_for_the_primary_and_every_failure_answers_with_the_primary() {
    let sim = Sim::new(&[
        ("a", Behaviour::after(1_000)),
        ("b", Behaviour::failing(500, 10)),
    ]);
    let svc = layer(fixed(100)).layer(sim.service());
    let resp = svc
        .clone()
        .oneshot(routed(&["a", "b"], false))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(body_json(resp).await["model"], "a");

    sim.set("a", Behaviour::failing(502, 1_000));
    let resp = svc.oneshot(routed(&["a", "b"], false)).await.unwrap();
    assert_eq!(resp.status(), 502, "the primary's answer");
    assert_eq!(header(&resp, "x-rampart-models-called"), "a,b");
}

#[tokio::test(start_paused = true)]
async fn requests_without_a_policy_or_a_second_candidate_pass_through() {
    let sim = Sim::new(&[("a", Behaviour::after(10_000)), ("b", Behaviour::after(1))]);
    // A policy for another model only.
    let config: HedgeConfig = toml::from_str(
        r#"
        models."x" = { delay = "100ms" }
        "#,
    )
    .unwrap();
    let svc = HedgeLayer::from_config(config)
        .unwrap()
        .layer(sim.service());
    let resp = svc.oneshot(routed(&["a", "b"], false)).await.unwrap();
    assert!(resp.headers().get("x-rampart-models-called").is_none());
    assert_eq!(sim.counts("b").started, 0);
    // One candidate: nothing to hedge to.
    let svc = layer(fixed(100)).layer(sim.service());
    let resp = svc.oneshot(routed(&["a"], false)).await.unwrap();
    assert!(resp.headers().get("x-rampart-models-called").is_none());
    assert_eq!(sim.total_started(), 2);
}

#[tokio::test(start_paused = true)]
async fn route_and_model_policies_are_matched() {
    let sim = Sim::new(&[("a", Behaviour::after(10_000)), ("b", Behaviour::after(1))]);
    let config: HedgeConfig = toml::from_str(
        r#"
        routes.explicit = { delay = "300ms" }
        models."a" = { delay = "2s" }
        "#,
    )
    .unwrap();
    let svc = HedgeLayer::from_config(config)
        .unwrap()
        .layer(sim.service());
    let t0 = Instant::now();
    let resp = svc.oneshot(routed(&["a", "b"], false)).await.unwrap();
    // The route's policy wins over the model's.
    assert_eq!(t0.elapsed(), Duration::from_millis(301));
    assert_eq!(body_json(resp).await["model"], "b");
}

#[tokio::test(start_paused = true)]
async fn a_percentile_delay_follows_the_observed_time_to_first_byte() {
    let sim = Sim::new(&[("a", Behaviour::after(200)), ("b", Behaviour::after(10))]);
    let policy = HedgePolicy {
        delay: Duration::from_secs(2),
        percentile: Some(90.0),
        min_delay: Duration::from_millis(50),
        min_samples: 10,
        max_hedges: 1,
    };
    let hedge = layer(policy);
    let svc = hedge.clone().layer(sim.service());
    let a = Target::new("p-a", "a");
    // Too little data: the fallback delay (2 s), so a answers alone.
    assert_eq!(hedge.delay(&policy, &a, false), Duration::from_secs(2));
    for _ in 0..10 {
        let resp = svc
            .clone()
            .oneshot(routed(&["a", "b"], false))
            .await
            .unwrap();
        assert_eq!(header(&resp, "x-rampart-models-called"), "a");
    }
    assert_eq!(
        hedge.observed(&a, false, 90.0, 10),
        Some(Duration::from_millis(200))
    );
    assert_eq!(hedge.delay(&policy, &a, false), Duration::from_millis(200));
    // Now a gets slow: the hedge starts at the observed p90 (200 ms).
    sim.set("a", Behaviour::after(5_000));
    let t0 = Instant::now();
    let resp = svc
        .clone()
        .oneshot(routed(&["a", "b"], false))
        .await
        .unwrap();
    assert_eq!(t0.elapsed(), Duration::from_millis(210));
    assert_eq!(header(&resp, "x-rampart-models-called"), "a,b");
    // The floor applies to very fast targets.
    let fast = HedgePolicy {
        min_delay: Duration::from_millis(500),
        ..policy
    };
    assert_eq!(hedge.delay(&fast, &a, false), Duration::from_millis(500));
}

#[tokio::test(start_paused = true)]
async fn under_a_failing_upstream_hedges_stay_within_the_retry_budget() {
    // Every call fails, slowly: each request would hedge.
    let sim = Sim::new(&[
        ("a", Behaviour::failing(503, 1_000)),
        ("b", Behaviour::failing(503, 1_000)),
    ]);
    let config = HedgeConfig {
        default: Some(fixed(100)),
        budget: HedgeBudget {
            ratio: 0.1,
            min_per_second: 0.1,
            ttl: Duration::from_secs(10),
        },
        ..HedgeConfig::default()
    };
    let hedge = HedgeLayer::from_config(config).unwrap();
    let svc = hedge.clone().layer(sim.service());
    let requests = 50u64;
    let calls = (0..requests).map(|_| svc.clone().oneshot(routed(&["a", "b"], false)));
    let answers = futures_util::future::join_all(calls).await;
    for a in answers {
        assert_eq!(a.unwrap().status(), 503);
    }
    let hedges = sim.counts("b").started;
    // 10 % of 50 requests plus a reserve of 0.1/s × 10 s: 6 hedges, not 50.
    assert_eq!(hedges, 6);
    assert_eq!(sim.total_started(), requests + hedges);
    assert!(sim.total_started() <= (requests as f64 * 1.1 + 1.0) as u64);
    assert!(hedge.budget().balance() < 1.0);
}
