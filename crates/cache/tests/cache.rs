//! The cache through `Upstream` and the simulated provider: hits and misses, policy,
//! Cache-Control, TTL on paused time, the byte bound, tenant isolation, never storing errors or
//! cut streams, JSON ↔ SSE replay, settle hooks and purge.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use http::StatusCode;
use http_body_util::BodyExt;
use rampart_cache::{CacheConfig, CacheLayer, CacheRule};
use rampart_core::SettleHooks;
use rampart_mock::Fault;
use serde_json::{Value, json};

#[tokio::test]
async fn second_identical_request_is_a_hit_with_the_same_answer() {
    let s = setup(CacheLayer::default());
    let b = body("m1", "hello");
    let resp = call(&s.svc, req(&b, "acme")).await.unwrap();
    assert_eq!(status(&resp), "miss");
    assert_eq!(resp.headers()["x-rampart-model"], "m1");
    let first = bytes(resp).await;

    let resp = call(&s.svc, req(&b, "acme")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(status(&resp), "hit");
    assert_eq!(resp.headers()["x-rampart-cost-usd"], "0");
    assert_eq!(resp.headers()["x-rampart-model"], "m1");
    assert_eq!(resp.headers()["x-rampart-provider"], "sim");
    assert_eq!(resp.headers()["content-type"], "application/json");
    let second = bytes(resp).await;
    assert_eq!(first, second, "a JSON fill replays the provider's bytes");
    let v: Value = serde_json::from_slice(&second).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(s.mock.calls("m1"), 1);
    assert_eq!(s.handle.len(), 1);
    assert!(s.handle.weighted_size() > 0);
}

#[tokio::test]
async fn key_ignores_spelling_but_not_content() {
    let s = setup(CacheLayer::default());
    let a = r#"{"model":"m1","messages":[{"role":"user","content":"x"}],"temperature":0,"max_tokens":5,"top_p":1,"x_custom":{"b":100,"a":[0.5]}}"#;
    let b = "{ \"x_custom\": {\"a\": [5e-1], \"b\": 1e2}, \"top_p\": 1.0, \"max_tokens\" : 5, \"temperature\" : 0.0,\n \"messages\":[{\"content\":\"x\",\"role\":\"user\"}], \"model\":\"m1\", \"user\":\"u-42\", \"stream\": false }";
    let mk = |s: &'static str| {
        let mut r = http::Request::post("/v1/chat/completions")
            .body(rampart_core::Body::from(s))
            .unwrap();
        r.extensions_mut().insert(rampart_core::Tenant::new("t"));
        r
    };
    assert_eq!(roundtrip(&s.svc, mk(a)).await.0, "miss");
    assert_eq!(roundtrip(&s.svc, mk(b)).await.0, "hit");
    let c = r#"{"model":"m1","messages":[{"role":"user","content":"x"}],"temperature":0,"max_tokens":6}"#;
    assert_eq!(roundtrip(&s.svc, mk(c)).await.0, "miss");
    let d = r#"{"model":"m1","messages":[{"role":"user","content":"x"}],"temperature":0,"max_tokens":5,"seed":1}"#;
    assert_eq!(roundtrip(&s.svc, mk(d)).await.0, "miss");
    assert_eq!(s.mock.calls("m1"), 3);
}

#[tokio::test]
async fn tenants_are_isolated_unless_a_namespace_is_shared() {
    let s = setup(CacheLayer::default());
    let b = body("m1", "secret");
    assert_eq!(roundtrip(&s.svc, req(&b, "a")).await.0, "miss");
    assert_eq!(roundtrip(&s.svc, req(&b, "b")).await.0, "miss");
    assert_eq!(roundtrip(&s.svc, req(&b, "a")).await.0, "hit");
    assert_eq!(s.mock.calls("m1"), 2);

    let s = setup(CacheLayer::builder().namespace("shared").build().unwrap());
    assert_eq!(roundtrip(&s.svc, req(&b, "a")).await.0, "miss");
    assert_eq!(roundtrip(&s.svc, req(&b, "b")).await.0, "hit");
}

#[tokio::test]
async fn nondeterministic_requests_bypass_unless_configured() {
    let s = setup(CacheLayer::default());
    let no_temp = json!({"model":"m1","messages":[{"role":"user","content":"x"}]});
    let warm = json!({"model":"m1","messages":[{"role":"user","content":"x"}],"temperature":0.7});
    for b in [&no_temp, &warm, &no_temp] {
        let (st, code, _) = roundtrip(&s.svc, req(b, "t")).await;
        assert_eq!((st.as_str(), code), ("bypass", 200));
    }
    assert_eq!(s.mock.calls("m1"), 3);
    assert_eq!(s.handle.len(), 0);

    let s = setup(
        CacheLayer::builder()
            .cache_nondeterministic(true)
            .build()
            .unwrap(),
    );
    assert_eq!(roundtrip(&s.svc, req(&warm, "t")).await.0, "miss");
    assert_eq!(roundtrip(&s.svc, req(&warm, "t")).await.0, "hit");
}

#[tokio::test]
async fn rules_per_model_and_tenant() {
    let config: CacheConfig = toml::from_str(
        r#"
        enabled = false
        [models.m1]
        enabled = true
        [tenants.vip]
        enabled = false
        [tenants.creative]
        cache_nondeterministic = true
        "#,
    )
    .unwrap();
    let s = setup(CacheLayer::from_config(config).unwrap());
    let b1 = body("m1", "x");
    let b2 = body("m2", "x");
    assert_eq!(roundtrip(&s.svc, req(&b1, "t")).await.0, "miss");
    assert_eq!(roundtrip(&s.svc, req(&b1, "t")).await.0, "hit");
    assert_eq!(roundtrip(&s.svc, req(&b2, "t")).await.0, "bypass");
    assert_eq!(roundtrip(&s.svc, req(&b1, "vip")).await.0, "bypass");
    let warm = json!({"model":"m1","messages":[{"role":"user","content":"x"}],"temperature":1});
    assert_eq!(roundtrip(&s.svc, req(&warm, "t")).await.0, "bypass");
    assert_eq!(roundtrip(&s.svc, req(&warm, "creative")).await.0, "miss");
    assert_eq!(roundtrip(&s.svc, req(&warm, "creative")).await.0, "hit");
}

#[tokio::test]
async fn cache_control_directives() {
    let s = setup(CacheLayer::default());
    let b = body("m1", "cc");
    // no-store: neither read nor written.
    let (st, _, _) = roundtrip(&s.svc, req_with(&b, "t", &[("cache-control", "no-store")])).await;
    assert_eq!(st, "bypass");
    assert_eq!(s.handle.len(), 0);
    assert_eq!(roundtrip(&s.svc, req(&b, "t")).await.0, "miss");
    assert_eq!(roundtrip(&s.svc, req(&b, "t")).await.0, "hit");
    let (st, _, _) = roundtrip(&s.svc, req_with(&b, "t", &[("cache-control", "No-Store")])).await;
    assert_eq!(st, "bypass");
    // no-cache: skips the read, refreshes the entry.
    let (st, _, fresh) =
        roundtrip(&s.svc, req_with(&b, "t", &[("cache-control", "no-cache")])).await;
    assert_eq!(st, "miss");
    assert_eq!(s.mock.calls("m1"), 4);
    let fresh: Value = serde_json::from_slice(&fresh).unwrap();
    let resp = call(&s.svc, req(&b, "t")).await.unwrap();
    assert_eq!(status(&resp), "hit");
    let v: Value = json_body(resp).await;
    assert_eq!(
        v["id"], fresh["id"],
        "the refreshed answer replaced the entry"
    );
    // max-age=0 never accepts an entry.
    let (st, _, _) = roundtrip(&s.svc, req_with(&b, "t", &[("cache-control", "max-age=0")])).await;
    assert_eq!(st, "miss");
}

#[tokio::test(start_paused = true)]
async fn ttl_and_max_age_on_paused_time() {
    let s = setup(
        CacheLayer::builder()
            .ttl(Duration::from_secs(60))
            .max_ttl(Duration::from_secs(120))
            .build()
            .unwrap(),
    );
    let b = body("m1", "ttl");
    assert_eq!(roundtrip(&s.svc, req(&b, "t")).await.0, "miss");
    tokio::time::advance(Duration::from_secs(30)).await;
    let resp = call(&s.svc, req(&b, "t")).await.unwrap();
    assert_eq!(status(&resp), "hit");
    assert_eq!(resp.headers()["age"], "30");
    // Younger than 20 s only: refreshed.
    let (st, _, _) = roundtrip(
        &s.svc,
        req_with(&b, "t", &[("cache-control", "max-age=20")]),
    )
    .await;
    assert_eq!(st, "miss");
    assert_eq!(s.mock.calls("m1"), 2);
    tokio::time::advance(Duration::from_secs(10)).await;
    let (st, _, _) = roundtrip(
        &s.svc,
        req_with(&b, "t", &[("cache-control", "max-age=20")]),
    )
    .await;
    assert_eq!(st, "hit");
    tokio::time::advance(Duration::from_secs(51)).await;
    assert_eq!(roundtrip(&s.svc, req(&b, "t")).await.0, "miss", "expired");

    // Per-request TTL, capped at max_ttl.
    let short = body("m1", "short");
    let (st, _, _) = roundtrip(
        &s.svc,
        req_with(&short, "t", &[("x-rampart-cache-ttl", "5")]),
    )
    .await;
    assert_eq!(st, "miss");
    tokio::time::advance(Duration::from_secs(4)).await;
    assert_eq!(roundtrip(&s.svc, req(&short, "t")).await.0, "hit");
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(roundtrip(&s.svc, req(&short, "t")).await.0, "miss");

    let long = body("m1", "long");
    let (st, _, _) = roundtrip(
        &s.svc,
        req_with(&long, "t", &[("x-rampart-cache-ttl", "100000")]),
    )
    .await;
    assert_eq!(st, "miss");
    tokio::time::advance(Duration::from_secs(119)).await;
    assert_eq!(roundtrip(&s.svc, req(&long, "t")).await.0, "hit");
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(roundtrip(&s.svc, req(&long, "t")).await.0, "miss", "capped");

    // TTL 0: answered, never stored.
    let zero = body("m1", "zero");
    let (st, _, _) = roundtrip(
        &s.svc,
        req_with(&zero, "t", &[("x-rampart-cache-ttl", "0")]),
    )
    .await;
    assert_eq!(st, "miss");
    assert_eq!(roundtrip(&s.svc, req(&zero, "t")).await.0, "miss");
}

#[tokio::test]
async fn bounded_by_bytes() {
    let max = 40_000;
    let s = setup(CacheLayer::builder().max_bytes(max).build().unwrap());
    for i in 0..100 {
        let b = body("m1", &format!("prompt number {i} {}", "pad ".repeat(100)));
        assert_eq!(roundtrip(&s.svc, req(&b, "t")).await.0, "miss");
    }
    assert!(
        s.handle.weighted_size() <= max,
        "{}",
        s.handle.weighted_size()
    );
    assert!(
        s.handle.len() < 100 && !s.handle.is_empty(),
        "{}",
        s.handle.len()
    );
    // The most recent entry is still there.
    let b = body("m1", &format!("prompt number 99 {}", "pad ".repeat(100)));
    assert_eq!(roundtrip(&s.svc, req(&b, "t")).await.0, "hit");

    // An entry above max_entry_bytes is answered but not stored.
    let s = setup(CacheLayer::builder().max_entry_bytes(100).build().unwrap());
    let b = body("m1", "big");
    assert_eq!(roundtrip(&s.svc, req(&b, "t")).await.0, "miss");
    assert_eq!(roundtrip(&s.svc, req(&b, "t")).await.0, "miss");
    assert_eq!(s.handle.len(), 0);
}

#[tokio::test]
async fn upstream_errors_are_never_stored() {
    let s = setup(CacheLayer::default());
    s.mock
        .set_fault(None, Fault::status_code(StatusCode::INTERNAL_SERVER_ERROR));
    let b = body("m1", "err");
    let (st, code, err_body) = roundtrip(&s.svc, req(&b, "t")).await;
    assert_eq!((st.as_str(), code), ("miss", 500));
    let v: Value = serde_json::from_slice(&err_body).unwrap();
    assert!(v["error"]["message"].is_string());
    assert_eq!(s.handle.len(), 0);
    let (_, code, _) = roundtrip(&s.svc, req(&b, "t")).await;
    assert_eq!(code, 500);
    s.mock.clear_faults();
    assert_eq!(roundtrip(&s.svc, req(&b, "t")).await.0, "miss");
    assert_eq!(roundtrip(&s.svc, req(&b, "t")).await.0, "hit");
    assert_eq!(s.mock.calls("m1"), 3);

    // A 4xx too.
    s.mock
        .set_fault(None, Fault::status_code(StatusCode::BAD_REQUEST));
    let b = body("m1", "bad");
    let (_, code, _) = roundtrip(&s.svc, req(&b, "t")).await;
    assert_eq!(code, 400);
    assert_eq!(s.handle.len(), 1);
}

#[tokio::test]
async fn cut_streams_and_cut_json_are_never_stored() {
    let s = setup(CacheLayer::default());
    s.mock.set_fault(None, Fault::cut_after(3));
    let mut b = body("m1", "cut");
    b["stream"] = json!(true);
    for _ in 0..2 {
        let resp = call(&s.svc, req(&b, "t")).await.unwrap();
        assert_eq!(status(&resp), "miss");
        let r = resp.into_body().collect().await;
        assert!(r.is_err(), "the client sees the cut");
    }
    // JSON cut half-way.
    let j = body("m1", "cut");
    let resp = call(&s.svc, req(&j, "t")).await.unwrap();
    assert!(resp.into_body().collect().await.is_err());
    assert_eq!(s.handle.len(), 0);
    assert_eq!(s.mock.calls("m1"), 3);
    s.mock.clear_faults();
    assert_eq!(roundtrip(&s.svc, req(&b, "t")).await.0, "miss");
    assert_eq!(roundtrip(&s.svc, req(&j, "t")).await.0, "hit");
}

#[tokio::test]
async fn json_fill_replays_as_sse() {
    let s = setup(CacheLayer::default());
    let b = body("m1", "shapes");
    let miss = json_body(call(&s.svc, req(&b, "t")).await.unwrap()).await;
    let text = miss["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut sb = b.clone();
    sb["stream"] = json!(true);
    let resp = call(&s.svc, req(&sb, "t")).await.unwrap();
    assert_eq!(status(&resp), "hit");
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let body = bytes(resp).await;
    let evs = events(&body);
    let first: Value = serde_json::from_str(&evs[0]).unwrap();
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(first["id"], miss["id"]);
    assert_eq!(first["model"], miss["model"]);
    assert_eq!(first["created"], miss["created"]);
    assert_eq!(first["system_fingerprint"], miss["system_fingerprint"]);
    let (t, finish, usage) = sse_answer(&body);
    assert_eq!(t, text);
    assert_eq!(finish.as_deref(), Some("stop"));
    assert!(usage.is_none(), "no usage chunk unless asked");

    sb["stream_options"] = json!({"include_usage": true});
    let body = bytes(call(&s.svc, req(&sb, "t")).await.unwrap()).await;
    let (_, _, usage) = sse_answer(&body);
    assert_eq!(usage.unwrap(), miss["usage"]);
    let evs = events(&body);
    let last_chunk: Value = serde_json::from_str(&evs[evs.len() - 2]).unwrap();
    assert_eq!(last_chunk["choices"], json!([]), "usage chunk comes last");
    assert_eq!(s.mock.calls("m1"), 1);
}

#[tokio::test]
async fn sse_fill_replays_as_json_and_sse() {
    let s = setup(CacheLayer::default());
    let mut sb = body("m1", "streamed");
    sb["stream"] = json!(true);
    let resp = call(&s.svc, req(&sb, "t")).await.unwrap();
    assert_eq!(status(&resp), "miss");
    let streamed = bytes(resp).await;
    let (text, finish, usage) = sse_answer(&streamed);
    assert!(
        usage.is_none(),
        "upstream hid the usage chunk from this client"
    );

    let b = body("m1", "streamed");
    let resp = call(&s.svc, req(&b, "t")).await.unwrap();
    assert_eq!(status(&resp), "hit");
    let v = json_body(resp).await;
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], text.as_str());
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["finish_reason"], finish.unwrap().as_str());
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-mock-"));
    assert!(
        v["usage"]["total_tokens"].as_u64().unwrap() > 0,
        "usage comes from the response facts: {v}"
    );

    // SSE again, with usage.
    sb["stream_options"] = json!({"include_usage": true});
    let body = bytes(call(&s.svc, req(&sb, "t")).await.unwrap()).await;
    let (t2, _, usage) = sse_answer(&body);
    assert_eq!(t2, text);
    assert_eq!(usage.unwrap(), v["usage"]);
    assert_eq!(s.mock.calls("m1"), 1);
}

#[tokio::test]
async fn multiple_choices_replay() {
    let s = setup(CacheLayer::default());
    let mut b = body("m1", "n");
    b["n"] = json!(2);
    b["stream"] = json!(true);
    let _ = bytes(call(&s.svc, req(&b, "t")).await.unwrap()).await;
    b["stream"] = json!(false);
    let v = json_body(call(&s.svc, req(&b, "t")).await.unwrap()).await;
    assert_eq!(v["choices"].as_array().unwrap().len(), 2);
    assert_eq!(v["choices"][1]["index"], 1);
    assert_eq!(s.mock.calls("m1"), 1);
}

#[tokio::test]
async fn a_hit_settles_reservations_to_zero() {
    let s = setup(CacheLayer::default());
    let b = body("m1", "settle");
    let (seen, hook) = counter();
    let mut r = req(&b, "t");
    SettleHooks::add_to(&mut r, hook.clone());
    assert_eq!(roundtrip(&s.svc, r).await.0, "miss");
    assert!(seen.lock().unwrap().is_empty(), "a miss settles nothing");
    let mut r = req(&b, "t");
    SettleHooks::add_to(&mut r, hook.clone());
    SettleHooks::add_to(&mut r, hook);
    assert_eq!(roundtrip(&s.svc, r).await.0, "hit");
    assert_eq!(*seen.lock().unwrap(), vec![0, 0]);
}

#[tokio::test]
async fn purge_by_tenant_and_all() {
    let s = setup(CacheLayer::default());
    let b = body("m1", "purge");
    for t in ["a", "b", "c"] {
        roundtrip(&s.svc, req(&b, t)).await;
    }
    assert_eq!(s.handle.len(), 3);
    s.handle.purge_tenant("a").await.unwrap();
    assert_eq!(s.handle.len(), 2);
    assert_eq!(roundtrip(&s.svc, req(&b, "a")).await.0, "miss");
    assert_eq!(roundtrip(&s.svc, req(&b, "b")).await.0, "hit");
    s.handle.purge_all().await.unwrap();
    assert!(s.handle.is_empty());
    assert_eq!(roundtrip(&s.svc, req(&b, "b")).await.0, "miss");
}

#[tokio::test]
async fn works_without_the_edge_adapter_or_a_tenant() {
    let s = setup(CacheLayer::default());
    let raw = r#"{"model":"m1","messages":[{"role":"user","content":"raw"}],"temperature":0}"#;
    let mk = || {
        http::Request::post("/v1/chat/completions")
            .body(rampart_core::Body::from(raw))
            .unwrap()
    };
    assert_eq!(roundtrip(&s.svc, mk()).await.0, "miss");
    assert_eq!(roundtrip(&s.svc, mk()).await.0, "hit");
    // Anonymous requests share the anonymous tenant's entries.
    assert_eq!(
        roundtrip(&s.svc, req(&serde_json::from_str(raw).unwrap(), "default"))
            .await
            .0,
        "hit"
    );
    // Malformed JSON is the core 400 error.
    let bad = http::Request::post("/")
        .body(rampart_core::Body::from("{nope"))
        .unwrap();
    let err = call(&s.svc, bad).await.unwrap_err();
    assert_eq!(rampart_core::error::find_error(&err).unwrap().status(), 400);
}

#[test]
fn config_from_toml_and_validation() {
    let c: CacheConfig = toml::from_str(
        r#"
        ttl = "30s"
        max_ttl = "1h"
        flight_timeout = "2s"
        namespace = "team"
        ignored_fields = ["user"]
        [models."gpt-4.1"]
        ttl = "5m"
        "#,
    )
    .unwrap();
    assert_eq!(c.ttl, Duration::from_secs(30));
    assert_eq!(c.models["gpt-4.1"].ttl, Some(Duration::from_secs(300)));
    assert_eq!(c.max_bytes, CacheConfig::default().max_bytes);
    assert!(toml::from_str::<CacheConfig>("tll = \"1s\"").is_err());
    let empty: CacheConfig = toml::from_str("").unwrap();
    assert_eq!(empty, CacheConfig::default());
    assert!(CacheLayer::builder().ttl(Duration::ZERO).build().is_err());
    assert!(CacheLayer::builder().max_bytes(0).build().is_err());
    assert!(
        CacheLayer::builder()
            .model("m", CacheRule::enabled().ttl(Duration::ZERO))
            .build()
            .is_err()
    );
    assert!(CacheLayer::builder().namespace("").build().is_err());
}

#[test]
fn services_are_clone_send_sync_with_send_futures() {
    fn check<T: Clone + Send + Sync + 'static>(_: &T) {}
    fn future_is_send<F: std::future::Future + Send>(_: &F) {}
    let s = setup(CacheLayer::default());
    check(&s.svc);
    check(&CacheLayer::default());
    check(&s.handle);
    let mut svc = s.svc.clone();
    let fut = tower::Service::call(&mut svc, req(&body("m1", "x"), "t"));
    future_is_send(&fut);
}

#[tokio::test]
async fn routing_hints_are_part_of_the_key() {
    let s = setup(CacheLayer::default());
    let b = body("m1", "hint me");
    let (status, _, _) =
        roundtrip(&s.svc, req_with(&b, "t", &[("x-rampart-priority", "low")])).await;
    assert_eq!(status, "miss");
    let (status, _, _) =
        roundtrip(&s.svc, req_with(&b, "t", &[("x-rampart-priority", "low")])).await;
    assert_eq!(status, "hit");
    // Another priority may route to another model: not the same answer.
    let (status, _, _) =
        roundtrip(&s.svc, req_with(&b, "t", &[("x-rampart-priority", "high")])).await;
    assert_eq!(status, "miss");
    let (status, _, _) =
        roundtrip(&s.svc, req_with(&b, "t", &[("x-rampart-max-price", "1")])).await;
    assert_eq!(status, "miss");
    // No hints at all is its own key.
    let (status, _, _) = roundtrip(&s.svc, req(&b, "t")).await;
    assert_eq!(status, "miss");
    assert_eq!(s.mock.calls("m1"), 4);
}

#[tokio::test]
async fn a_budget_downgraded_answer_is_served_but_not_kept() {
    use rampart_core::{Body, BoxError};
    use tower::{Layer, ServiceExt};
    let layer = CacheLayer::default();
    let mock = rampart_mock::MockProvider::new(Default::default());
    let upstream = rampart_upstream::Upstream::builder()
        .service_provider("sim", mock.service(), timeouts())
        .model("m2", "sim", None)
        .build()
        .unwrap();
    // A router below that downgraded this request for budget.
    let downgrading = tower::service_fn(move |r: http::Request<Body>| {
        let upstream = upstream.clone();
        async move {
            let mut resp = upstream.oneshot(r).await?;
            resp.headers_mut().insert(
                "x-rampart-route",
                http::HeaderValue::from_static("explicit;downgraded=budget"),
            );
            Ok::<_, BoxError>(resp)
        }
    });
    let svc = layer.layer(downgrading);
    let b = body("m2", "downgrade me");
    for _ in 0..2 {
        let resp = svc.clone().oneshot(req(&b, "t")).await.unwrap();
        assert_eq!(resp.headers()["x-rampart-cache"], "miss");
        resp.into_body().collect().await.unwrap();
    }
    assert_eq!(mock.calls("m2"), 2);
}

#[tokio::test]
async fn a_shared_namespace_never_hands_one_tenants_error_to_another() {
    use rampart_core::{Body, BoxError, Error, ErrorKind, Tenant};
    use std::sync::Arc;
    use tower::{Layer, ServiceExt};
    let layer = CacheLayer::builder().namespace("shared").build().unwrap();
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    let svc = layer.layer(tower::service_fn(move |r: http::Request<Body>| {
        let g = g.clone();
        async move {
            let tenant = r.extensions().get::<Tenant>().cloned().unwrap();
            if tenant.id() == "acme" {
                g.notified().await;
                return Err::<http::Response<Body>, BoxError>(Box::new(Error::new(
                    ErrorKind::BudgetExceeded {
                        status: StatusCode::TOO_MANY_REQUESTS,
                    },
                    "Tenant 'acme' is out of budget",
                )));
            }
            Ok(http::Response::builder()
                .status(StatusCode::SERVICE_UNAVAILABLE)
                .body(Body::from("{}"))
                .unwrap())
        }
    }));
    let b = body("m1", "shared");
    let a = tokio::spawn(svc.clone().oneshot(req(&b, "acme")));
    // Let acme's call become the flight's leader, then globex joins it.
    while layer.handle().flights() == 0 {
        tokio::task::yield_now().await;
    }
    let waiter = tokio::spawn(svc.clone().oneshot(req(&b, "globex")));
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    gate.notify_one();
    assert!(a.await.unwrap().is_err());
    // globex went upstream itself: its own answer, not acme's budget error.
    let resp = waiter.await.unwrap().unwrap();
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(!text.contains("acme"), "{text}");
}
