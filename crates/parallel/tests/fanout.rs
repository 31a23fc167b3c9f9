//! FanOutLayer on paused time: strategies, partial and total failure, deadline, streams, the
//! request header, and cancellation of the calls that lost.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Behaviour, Sim, body_json, body_string, header, request};
use http::HeaderValue;
use rampart_core::{BoxError, Price, error_response};
use rampart_parallel::{FanOutConfig, FanOutLayer};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

fn fan_out(toml_text: &str) -> FanOutLayer {
    let config: FanOutConfig = toml::from_str(toml_text).unwrap();
    FanOutLayer::from_config(config).unwrap()
}

const TRIO: &str = r#"
    deadline = "10s"
    routes.trio = { models = ["a", "b", "c"], strategy = "all" }
    routes.race = { models = ["a", "b", "c"], strategy = "fastest" }
    routes.thrift = { models = ["a", "b", "c"], strategy = "cheapest" }
"#;

async fn error_json(e: BoxError) -> (u16, http::HeaderMap, serde_json::Value) {
    let resp = error_response(&e);
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, body_json(resp).await)
}

#[tokio::test(start_paused = true)]
async fn all_merges_every_success_in_configured_order_and_lists_the_failure() {
    // c answers first, a last; b fails.
    let sim = Sim::new(&[
        ("a", Behaviour::after(300).cost("0.000100")),
        ("b", Behaviour::failing(500, 10).cost("0.000000")),
        ("c", Behaviour::after(100).cost("0.000023")),
    ]);
    let svc = fan_out(TRIO).layer(sim.service());
    let t0 = Instant::now();
    let resp = svc.oneshot(request("trio", false)).await.unwrap();
    assert_eq!(
        t0.elapsed(),
        Duration::from_millis(300),
        "waits for every call"
    );
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-rampart-models-called"), "a,b,c");
    assert_eq!(header(&resp, "x-rampart-route"), "fanout:trio:all");
    assert_eq!(header(&resp, "x-rampart-model"), "trio");
    // Every call is charged: 100 + 0 + 23 micro-dollars.
    assert_eq!(header(&resp, "x-rampart-cost-usd"), "0.000123");
    let v = body_json(resp).await;
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "trio");
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2);
    assert_eq!(choices[0]["index"], 0);
    assert_eq!(choices[0]["x_rampart_model"], "a");
    assert_eq!(choices[0]["message"]["content"], "answer from a");
    assert_eq!(choices[1]["index"], 1);
    assert_eq!(choices[1]["x_rampart_model"], "c");
    assert_eq!(v["usage"]["prompt_tokens"], 20);
    assert_eq!(v["usage"]["total_tokens"], 30);
    let calls = v["x_rampart_fanout"].as_array().unwrap();
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[0]["model"], "a");
    assert_eq!(calls[0]["status"], 200);
    assert_eq!(calls[0]["cost_usd"], "0.000100");
    assert_eq!(calls[1]["model"], "b");
    assert_eq!(calls[1]["status"], 500);
    assert_eq!(calls[1]["error"]["code"], "sim_500");
    assert_eq!(calls[2]["model"], "c");
    for m in ["a", "b", "c"] {
        assert_eq!(sim.counts(m).started, 1, "{m}");
        assert_eq!(sim.counts(m).cancelled, 0, "{m}");
    }
}

#[tokio::test(start_paused = true)]
async fn fastest_returns_the_first_success_and_cancels_the_rest() {
    let sim = Sim::new(&[
        ("a", Behaviour::after(900)),
        ("b", Behaviour::failing(503, 5)),
        ("c", Behaviour::after(200).cost("0.000042")),
    ]);
    let svc = fan_out(TRIO).layer(sim.service());
    let t0 = Instant::now();
    let resp = svc.oneshot(request("race", false)).await.unwrap();
    assert_eq!(t0.elapsed(), Duration::from_millis(200));
    assert_eq!(header(&resp, "x-rampart-route"), "fanout:race:fastest");
    assert_eq!(header(&resp, "x-rampart-models-called"), "a,b,c");
    assert_eq!(header(&resp, "x-rampart-cost-usd"), "0.000042");
    assert_eq!(body_json(resp).await["model"], "c");
    assert_eq!(sim.counts("a").cancelled, 1, "the slow call was dropped");
    assert_eq!(sim.counts("b").completed, 1);
}

#[tokio::test(start_paused = true)]
async fn cheapest_waits_for_every_answer_and_picks_the_lowest_cost() {
    let sim = Sim::new(&[
        ("a", Behaviour::after(10).cost("0.000300")),
        ("b", Behaviour::after(500).cost("0.000020")),
        ("c", Behaviour::failing(429, 1).cost("0.000000")),
    ]);
    let svc = fan_out(TRIO).layer(sim.service());
    let t0 = Instant::now();
    let resp = svc.oneshot(request("thrift", false)).await.unwrap();
    assert_eq!(t0.elapsed(), Duration::from_millis(500));
    assert_eq!(header(&resp, "x-rampart-route"), "fanout:thrift:cheapest");
    // The answer is b's; the cost is every call's.
    assert_eq!(header(&resp, "x-rampart-cost-usd"), "0.000320");
    assert_eq!(body_json(resp).await["model"], "b");
}

#[tokio::test(start_paused = true)]
async fn cheapest_without_reported_costs_prices_the_usage() {
    let sim = Sim::new(&[("a", Behaviour::after(1)), ("b", Behaviour::after(2))]);
    let layer = fan_out(r#"routes.duo = { models = ["a", "b"], strategy = "cheapest" }"#).pricer(
        |m: &str| {
            Some(match m {
                "a" => Price {
                    input: 5.0,
                    cached_input: None,
                    output: 5.0,
                },
                _ => Price {
                    input: 1.0,
                    cached_input: None,
                    output: 1.0,
                },
            })
        },
    );
    let resp = layer
        .layer(sim.service())
        .oneshot(request("duo", false))
        .await
        .unwrap();
    assert_eq!(body_json(resp).await["model"], "b");
}

#[tokio::test(start_paused = true)]
async fn every_failure_is_one_error_listing_each_model() {
    let sim = Sim::new(&[
        ("a", Behaviour::failing(500, 10)),
        ("b", Behaviour::failing(429, 10)),
        ("c", Behaviour::stalled()),
    ]);
    let svc = fan_out(TRIO).layer(sim.service());
    let t0 = Instant::now();
    let err = svc.oneshot(request("trio", false)).await.unwrap_err();
    // c never answers: the deadline ends the fan-out.
    assert_eq!(t0.elapsed(), Duration::from_secs(10));
    assert_eq!(sim.counts("c").cancelled, 1);
    let (status, headers, v) = error_json(err).await;
    assert_eq!(status, 502);
    assert_eq!(headers["x-rampart-error-source"], "upstream");
    assert_eq!(headers["x-rampart-models-called"], "a,b,c");
    assert_eq!(headers["retry-after"], "2");
    assert_eq!(v["error"]["code"], "upstream_error");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("a: 500 sim_500 (a failed)"), "{msg}");
    assert!(msg.contains("b: 429 sim_429 (b failed)"), "{msg}");
    assert!(msg.contains("c: 504 upstream_timeout"), "{msg}");
}

#[tokio::test(start_paused = true)]
async fn failures_of_one_kind_keep_their_status() {
    let sim = Sim::new(&[
        ("a", Behaviour::failing(429, 10)),
        ("b", Behaviour::failing(429, 20)),
    ]);
    let svc = fan_out(r#"routes.duo = { models = ["a", "b"], strategy = "fastest" }"#)
        .layer(sim.service());
    let err = svc.oneshot(request("duo", false)).await.unwrap_err();
    let (status, headers, v) = error_json(err).await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "2");
    assert_eq!(v["error"]["code"], "sim_429");
}

#[tokio::test(start_paused = true)]
async fn the_deadline_returns_what_answered_in_time() {
    let sim = Sim::new(&[
        ("a", Behaviour::after(100)),
        ("b", Behaviour::after(60_000)),
    ]);
    let svc = fan_out(r#"routes.duo = { models = ["a", "b"], strategy = "all", deadline = "2s" }"#)
        .layer(sim.service());
    let t0 = Instant::now();
    let resp = svc.oneshot(request("duo", false)).await.unwrap();
    assert_eq!(t0.elapsed(), Duration::from_secs(2));
    let v = body_json(resp).await;
    assert_eq!(v["choices"].as_array().unwrap().len(), 1);
    assert_eq!(v["x_rampart_fanout"][1]["status"], 504);
    assert_eq!(sim.counts("b").cancelled, 1);
}

#[tokio::test(start_paused = true)]
async fn a_streamed_fastest_fan_out_streams_the_first_to_send_content() {
    // a's head comes first, but b's first content does.
    let sim = Sim::new(&[
        ("a", Behaviour::after(10).first_token(1_000)),
        ("b", Behaviour::after(50).first_token(100)),
    ]);
    let svc = fan_out(r#"routes.duo = { models = ["a", "b"] }"#).layer(sim.service());
    let t0 = Instant::now();
    let resp = svc.oneshot(request("duo", true)).await.unwrap();
    assert_eq!(t0.elapsed(), Duration::from_millis(150));
    assert_eq!(header(&resp, "x-rampart-route"), "fanout:duo:fastest");
    assert!(resp.headers().get("x-rampart-cost-usd").is_none());
    let text = body_string(resp).await;
    assert!(
        text.contains("from b") && text.ends_with("data: [DONE]\n\n"),
        "{text}"
    );
    assert_eq!(sim.counts("a").cancelled, 1);
}

#[tokio::test(start_paused = true)]
async fn all_and_cheapest_refuse_streams() {
    let sim = Sim::new(&[]);
    for route in ["trio", "thrift"] {
        let err = fan_out(TRIO)
            .layer(sim.service())
            .oneshot(request(route, true))
            .await
            .unwrap_err();
        let (status, _, v) = error_json(err).await;
        assert_eq!(status, 400);
        assert_eq!(v["error"]["code"], "unsupported_value");
        assert_eq!(v["error"]["param"], "stream");
    }
    assert_eq!(sim.total_started(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_header_fans_out_within_its_bounds_and_known_models() {
    let sim = Sim::new(&[("a", Behaviour::after(20)), ("b", Behaviour::after(10))]);
    let layer = fan_out(
        r#"
        header = { enabled = true, max_models = 2, strategy = "all" }
        "#,
    )
    .known_models(["a", "b", "c"])
    .unwrap();
    let svc = layer.layer(sim.service());
    let with = |v: &'static str| {
        let mut r = request("a", false);
        r.headers_mut()
            .insert("x-rampart-fanout", HeaderValue::from_static(v));
        r
    };
    let resp = svc.clone().oneshot(with("b, a,b")).await.unwrap();
    assert_eq!(header(&resp, "x-rampart-models-called"), "b,a");
    assert_eq!(header(&resp, "x-rampart-route"), "fanout:header:all");
    let v = body_json(resp).await;
    assert_eq!(v["choices"][0]["x_rampart_model"], "b");
    assert_eq!(v["choices"][1]["x_rampart_model"], "a");

    // The strategy header overrides.
    let mut r = with("a,b");
    r.headers_mut().insert(
        "x-rampart-fanout-strategy",
        HeaderValue::from_static("fastest"),
    );
    let resp = svc.clone().oneshot(r).await.unwrap();
    assert_eq!(body_json(resp).await["model"], "b");

    let (status, _, v) = error_json(svc.clone().oneshot(with("a,b,c")).await.unwrap_err()).await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["code"], "invalid_header");
    let (status, _, v) = error_json(svc.clone().oneshot(with("a,zz")).await.unwrap_err()).await;
    assert_eq!(status, 404);
    assert_eq!(v["error"]["code"], "model_not_found");
    let mut r = with("a,b");
    r.headers_mut().insert(
        "x-rampart-fanout-strategy",
        HeaderValue::from_static("best"),
    );
    let (status, _, _) = error_json(svc.oneshot(r).await.unwrap_err()).await;
    assert_eq!(status, 400);
}

#[tokio::test(start_paused = true)]
async fn without_the_header_enabled_or_a_route_requests_pass_through() {
    let sim = Sim::new(&[("a", Behaviour::after(1))]);
    let svc = fan_out(TRIO).layer(sim.service());
    let mut r = request("a", false);
    r.headers_mut()
        .insert("x-rampart-fanout", HeaderValue::from_static("a,b"));
    let resp = svc.oneshot(r).await.unwrap();
    assert!(resp.headers().get("x-rampart-models-called").is_none());
    assert_eq!(sim.total_started(), 1);
}

#[tokio::test(start_paused = true)]
async fn calls_do_not_inherit_the_fan_out_headers_or_settle_hooks() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let inner = tower::service_fn(move |req: http::Request<rampart_core::Body>| {
        let s = s.clone();
        async move {
            s.lock().unwrap().push(
                req.headers().get("x-rampart-fanout").is_some()
                    || req
                        .extensions()
                        .get::<rampart_core::SettleHooks>()
                        .is_some(),
            );
            let model = rampart_core::chat_request(&req).unwrap().model().to_owned();
            Ok::<_, BoxError>(
                http::Response::builder()
                    .header("content-type", "application/json")
                    .body(rampart_core::Body::from(common::answer_json(&model)))
                    .unwrap(),
            )
        }
    });
    let layer = fan_out(r#"header = { enabled = true, strategy = "all" }"#);
    let mut r = request("a", false);
    r.headers_mut()
        .insert("x-rampart-fanout", HeaderValue::from_static("a,b"));
    // A limiter above left its settle hook: no call may settle the whole reservation.
    rampart_core::SettleHooks::add_to(&mut r, std::sync::Arc::new(|_| true));
    let resp = layer.layer(inner).oneshot(r).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(*seen.lock().unwrap(), vec![false, false]);
}

#[test]
fn configuration_errors_name_the_key() {
    let bad = |t: &str| {
        let c: FanOutConfig = toml::from_str(t).unwrap();
        FanOutLayer::from_config(c).unwrap_err().to_string()
    };
    assert!(bad(r#"routes.x = { models = ["a"] }"#).starts_with("routes.x.models:"));
    assert!(bad(r#"routes.x = { models = ["a", "a"] }"#).starts_with("routes.x.models[1]:"));
    assert!(bad(r#"header = { max_models = 9 }"#).starts_with("header.max_models:"));
    let e = fan_out(r#"routes.x = { models = ["a", "q"] }"#)
        .known_models(["a", "b"])
        .unwrap_err();
    assert!(e.to_string().starts_with("routes.x.models[1]:"), "{e}");
    assert!(
        toml::from_str::<FanOutConfig>(r#"routes.x = { models = ["a","b"], strategy = "best" }"#)
            .is_err()
    );
}
