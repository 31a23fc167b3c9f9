//! `GET /metrics` after a known mix of traffic: every family the gateway promises is there, with
//! the values that traffic must produce. This file is its own test binary (its own process and
//! global metrics recorder), and it runs one test, so the counts are exact.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;

use common::{TestGateway, no_fallbacks};
use http::StatusCode;
use serde_json::json;

/// One sample of the Prometheus text format: name, labels, value.
struct Series {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse(text: &str) -> Vec<Series> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (head, value) = line.rsplit_once(' ').expect("name and value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
        let (name, labels) = match head.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (head, ""),
        };
        let mut map = BTreeMap::new();
        // Label values here never contain `",` (model, provider, route and tenant names).
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once("=\"").expect("label");
            map.insert(k.to_owned(), v.trim_end_matches('"').to_owned());
        }
        out.push(Series {
            name: name.to_owned(),
            labels: map,
            value,
        });
    }
    out
}

/// The sum of every series of `name` whose labels include `labels`; `None` when there is none.
fn value(all: &[Series], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = all
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

fn config() -> String {
    let acme = rampart_core::VirtualKeys::digest("sk-obs-acme");
    let tight = rampart_core::VirtualKeys::digest("sk-obs-tight");
    let mut c = no_fallbacks()
        // One request per minute on deepseek, so the per-target limiter refuses the second.
        .replace(
            "limits = { requests_per_minute = 2000, tokens_per_minute = 4000000 }",
            "limits = { requests_per_minute = 1 }",
        )
        // gpt-4.1 falls back to claude.
        .replace(
            "name = \"gpt-4.1\"\n",
            "name = \"gpt-4.1\"\nfallbacks = [\"claude-sonnet-4.5\"]\n",
        );
    c.push_str(&format!(
        r#"
[[virtual_keys]]
tenant = "acme"
key_sha256 = "{acme}"

[[virtual_keys]]
tenant = "tight"
key_sha256 = "{tight}"

[router]
budgets.tenants.tight = {{ daily_usd = 0.000001, action = "refuse" }}
"#
    ));
    c
}

#[tokio::test]
async fn metrics_after_traffic_have_every_family_and_the_right_values() {
    let gw = TestGateway::start(&config()).await;
    let chat = |body: serde_json::Value, key: &'static [(&'static str, &'static str)]| {
        let gw = &gw;
        async move { gw.post("/v1/chat/completions", body.to_string(), key).await }
    };
    const ACME: &[(&str, &str)] = &[("authorization", "Bearer sk-obs-acme")];
    const TIGHT: &[(&str, &str)] = &[("authorization", "Bearer sk-obs-tight")];
    const NOBODY: &[(&str, &str)] = &[("authorization", "Bearer sk-obs-unknown")];

    // Two JSON answers from gemini (no temperature: the cache bypasses them): 4 tokens each.
    for _ in 0..2 {
        let r = chat(
            json!({"model":"gemini-2.5-flash","max_tokens":4,"messages":[{"role":"user","content":"secret prompt text"}]}),
            ACME,
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-rampart-cache"), Some("bypass"));
    }
    // A deterministic deepseek request: a miss (3 tokens), then a hit (no upstream call).
    let det = json!({"model":"deepseek-v3.2","max_tokens":3,"temperature":0,"messages":[{"role":"user","content":"cache me"}]});
    let r = chat(det.clone(), ACME).await;
    assert_eq!(r.header("x-rampart-cache"), Some("miss"), "{}", r.text());
    let r = chat(det, ACME).await;
    assert_eq!(r.header("x-rampart-cache"), Some("hit"));
    // deepseek again, not cacheable: its per-target limit (1/min) refuses it.
    let r = chat(
        json!({"model":"deepseek-v3.2","max_tokens":3,"temperature":0.5,"messages":[{"role":"user","content":"x"}]}),
        ACME,
    )
    .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.text());
    // A stream from gemini: 5 tokens, usage known at the end.
    let r = chat(
        json!({"model":"gemini-2.5-flash","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"stream"}]}),
        ACME,
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("[DONE]"));
    // gpt-4.1 fails (503); claude answers: one failed attempt, then 6 tokens.
    gw.mock("openai-sim").set_fault(
        Some("gpt-4.1"),
        rampart_mock::Fault::status_code(StatusCode::SERVICE_UNAVAILABLE),
    );
    let r = chat(
        json!({"model":"gpt-4.1","max_tokens":6,"messages":[{"role":"user","content":"fall back"}]}),
        ACME,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-rampart-model"), Some("claude-sonnet-4.5"));
    // The tight tenant's budget refuses.
    let r = chat(
        json!({"model":"gemini-2.5-flash","max_tokens":4,"messages":[{"role":"user","content":"x"}]}),
        TIGHT,
    )
    .await;
    assert_eq!(
        r.header("x-rampart-error-source"),
        Some("budget"),
        "{}",
        r.text()
    );
    // An unknown key.
    let r = chat(
        json!({"model":"gemini-2.5-flash","messages":[{"role":"user","content":"x"}]}),
        NOBODY,
    )
    .await;
    assert_eq!(r.status, 401);
    // An operator forces gpt-4.1's breaker open.
    gw.breakers.force_open("openai-sim/gpt-4.1");

    // A stream's observers run when the server has polled its body to the end, which may be
    // just after the client read the last byte: wait for the ninth request's sample.
    let mut text = String::new();
    for _ in 0..200 {
        let r = gw.get("/metrics", &[]).await;
        assert_eq!(r.status, 200);
        text = r.text();
        if value(&parse(&text), "rampart_overhead_seconds_count", &[]) == Some(9.0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let all = parse(&text);
    let v = |name: &str, labels: &[(&str, &str)]| value(&all, name, labels);
    let gemini = [("model", "gemini-2.5-flash"), ("provider", "gemini-sim")];

    // Requests by route, model, provider and status.
    let req = |model: &str, provider: &str, status: &str| {
        v(
            "rampart_requests_total",
            &[
                ("route", "explicit"),
                ("model", model),
                ("provider", provider),
                ("status", status),
            ],
        )
    };
    assert_eq!(
        req("gemini-2.5-flash", "gemini-sim", "200"),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        req("deepseek-v3.2", "deepseek-sim", "200"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        req("claude-sonnet-4.5", "anthropic-sim", "200"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(req("none", "none", "401"), Some(1.0), "{text}");
    assert_eq!(
        v("rampart_requests_total", &[("status", "429")]),
        Some(2.0),
        "rate limit and budget: {text}"
    );
    assert_eq!(v("rampart_requests_total", &[]), Some(9.0), "{text}");

    // Latency histograms: total, upstream ttfb, upstream time, the gateway's own overhead.
    assert_eq!(
        v("rampart_request_duration_seconds_count", &gemini),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        v("rampart_upstream_ttfb_seconds_count", &gemini),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        v("rampart_upstream_duration_seconds_count", &gemini),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        v("rampart_overhead_seconds_count", &[]),
        Some(9.0),
        "every request has an overhead sample: {text}"
    );
    let total = v("rampart_request_duration_seconds_sum", &gemini).unwrap();
    let upstream = v("rampart_upstream_duration_seconds_sum", &gemini).unwrap();
    let overhead = v("rampart_overhead_seconds_sum", &gemini).unwrap();
    assert!(total > 0.0 && upstream > 0.0 && overhead >= 0.0, "{text}");
    assert!(
        (total - upstream - overhead).abs() < 1e-3,
        "overhead = total - upstream: {total} {upstream} {overhead}"
    );
    assert!(
        text.contains("# HELP rampart_overhead_seconds"),
        "families are described: {text}"
    );
    assert!(
        text.contains("rampart_request_duration_seconds_bucket{model=\"gemini-2.5-flash\",provider=\"gemini-sim\",le=\"0.00005\"}"),
        "buckets start at 50 µs: {text}"
    );

    // Tokens: completion tokens are exactly what was asked (4 + 4 + 3 + 5 + 6; the hit and the
    // refusals cost none).
    assert_eq!(
        v("rampart_tokens_total", &[("kind", "completion")]),
        Some(22.0),
        "{text}"
    );
    assert!(v("rampart_tokens_total", &[("kind", "prompt")]).unwrap() > 0.0);
    assert!(v("rampart_tokens_total", &[("kind", "cached")]).is_some());

    // Cost by tenant and model; none for the refused tenant.
    assert!(
        v(
            "rampart_cost_microdollars_total",
            &[("tenant", "acme"), ("model", "gemini-2.5-flash")]
        )
        .unwrap_or(0.0)
            > 0.0,
        "{text}"
    );
    assert!(
        v(
            "rampart_cost_microdollars_total",
            &[("model", "claude-sonnet-4.5")]
        )
        .unwrap_or(0.0)
            > 0.0,
        "{text}"
    );
    assert_eq!(
        v("rampart_cost_microdollars_total", &[("tenant", "tight")]),
        None,
        "{text}"
    );

    // Cache: one hit, one miss, the rest bypassed.
    assert_eq!(
        v("rampart_cache_requests_total", &[("status", "hit")]),
        Some(1.0)
    );
    assert_eq!(
        v("rampart_cache_requests_total", &[("status", "miss")]),
        Some(1.0)
    );
    assert!(v("rampart_cache_requests_total", &[("status", "bypass")]).unwrap() >= 5.0);

    // Refusals by scope, budget refusals, fallback attempts.
    assert_eq!(
        v("rampart_ratelimit_rejections_total", &[("scope", "target")]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        v("rampart_budget_rejections_total", &[("action", "refuse")]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        v("rampart_fallback_attempts_total", &[("outcome", "failure")]),
        Some(1.0),
        "{text}"
    );
    assert!(
        v("rampart_fallback_attempts_total", &[("outcome", "success")]).unwrap() >= 1.0,
        "{text}"
    );

    // Breaker state per target (3 = forced open) and its transitions.
    assert_eq!(
        v("rampart_breaker_state", &[("target", "openai-sim/gpt-4.1")]),
        Some(3.0),
        "{text}"
    );
    assert!(
        v(
            "rampart_breaker_transitions_total",
            &[("target", "openai-sim/gpt-4.1")]
        )
        .unwrap_or(0.0)
            >= 1.0,
        "{text}"
    );

    // Bounded labels: no prompt text, no key.
    assert!(!text.contains("secret prompt"));
    assert!(!text.contains("sk-obs"));
}
