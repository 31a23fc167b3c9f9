//! One `request` span per chat request, and the JSON log line that closes it: the span's fields
//! (tenant, model, provider, route, cache status, attempts, tokens, cost, outcome) as the gateway
//! saw them, and never a key or prompt text.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::Router;
use full_gateway::GatewayConfig;
use full_gateway::observe::{LogFormat, fmt_layer};
use http::Request;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use tracing_subscriber::layer::SubscriberExt;

/// Log output captured in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

/// The embedded defaults without simulated latency, with one virtual key (tenant `acme`).
fn config() -> GatewayConfig {
    let mut toml: String = full_gateway::config::EMBEDDED_DEFAULTS
        .lines()
        .filter(|l| !l.starts_with("mock = "))
        .collect::<Vec<_>>()
        .join("\n");
    toml.push_str(&format!(
        "\n[[virtual_keys]]\ntenant = \"acme\"\nkey_sha256 = \"{}\"\n",
        rampart_core::VirtualKeys::digest("sk-log-acme")
    ));
    GatewayConfig::parse(&toml, "test").unwrap()
}

async fn call(router: &Router, body: &str, key: &str, id: &str) -> (u16, String) {
    let req = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .header("x-request-id", id)
        .body(axum::body::Body::from(body.to_owned()))
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The `span` object of the `request finished` line of request `id`.
fn finished(lines: &[Value], id: &str) -> Value {
    let line = lines
        .iter()
        .find(|l| l["fields"]["message"] == "request finished" && l["span"]["request_id"] == id)
        .unwrap_or_else(|| panic!("no `request finished` line for {id}: {lines:#?}"));
    assert_eq!(line["level"], "INFO");
    assert!(line["fields"]["duration_us"].as_u64().is_some(), "{line}");
    assert_eq!(line["span"]["name"], "request");
    line["span"].clone()
}

#[tokio::test]
async fn json_log_lines_carry_the_request_span_fields() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(fmt_layer(LogFormat::Json, false, move || writer.clone()));
    // A current-thread runtime: the gateway's tasks run on this thread, under this subscriber.
    let _guard = tracing::subscriber::set_default(subscriber);
    let router = full_gateway::build(config()).unwrap().router;

    // A JSON answer (deterministic: a cache miss), a stream, a refusal.
    let (status, _) = call(
        &router,
        r#"{"model":"gpt-4.1","max_tokens":7,"temperature":0,"messages":[{"role":"user","content":"very private prompt"}]}"#,
        "sk-log-acme",
        "req-json",
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = call(
        &router,
        r#"{"model":"gemini-2.5-flash","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"stream please"}]}"#,
        "sk-log-acme",
        "req-stream",
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.contains("[DONE]"));
    let (status, _) = call(
        &router,
        r#"{"model":"gpt-4.1","messages":[{"role":"user","content":"x"}]}"#,
        "sk-not-a-key",
        "req-denied",
    )
    .await;
    assert_eq!(status, 401);

    let text = logs.text();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();

    let json = finished(&lines, "req-json");
    assert_eq!(json["tenant"], "acme", "{json}");
    assert_eq!(json["model"], "gpt-4.1");
    assert_eq!(json["provider"], "openai-sim");
    assert_eq!(json["route"], "explicit");
    assert_eq!(json["status"], 200);
    assert_eq!(json["stream"], false);
    assert_eq!(json["cache"], "miss");
    assert_eq!(json["attempts"], 1);
    assert_eq!(json["outcome"], "complete");
    assert_eq!(json["completion_tokens"], 7);
    let prompt = json["prompt_tokens"].as_u64().unwrap();
    assert!(prompt > 0);
    assert_eq!(json["cached_tokens"], 0);
    // gpt-4.1: $2 / $8 per million input / output tokens.
    let cost = json["cost_usd"].as_f64().unwrap();
    let expected = (prompt as f64 * 2.0 + 7.0 * 8.0) / 1e6;
    assert!((cost - expected).abs() < 1.5e-6, "{cost} vs {expected}");

    let stream = finished(&lines, "req-stream");
    assert_eq!(stream["tenant"], "acme", "{stream}");
    assert_eq!(stream["model"], "gemini-2.5-flash");
    assert_eq!(stream["provider"], "gemini-sim");
    assert_eq!(stream["stream"], true);
    assert_eq!(stream["cache"], "bypass");
    assert_eq!(stream["outcome"], "complete");
    assert_eq!(stream["completion_tokens"], 5);
    // A stream's cost is known only at its end, from the catalog's price ($0.30 / $2.50).
    let prompt = stream["prompt_tokens"].as_u64().unwrap();
    let cost = stream["cost_usd"].as_f64().unwrap();
    let expected = (prompt as f64 * 0.30 + 5.0 * 2.50) / 1e6;
    assert!((cost - expected).abs() < 1.5e-6, "{cost} vs {expected}");

    let denied = finished(&lines, "req-denied");
    assert_eq!(denied["status"], 401);
    assert_eq!(denied["error_source"], "gateway");
    assert!(denied.get("tenant").is_none(), "{denied}");
    assert!(denied.get("model").is_none(), "{denied}");

    assert!(!text.contains("sk-log-acme") && !text.contains("sk-not-a-key"));
    assert!(!text.contains("very private prompt"));
}

#[tokio::test]
async fn text_log_lines_show_the_span_fields_in_braces() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(fmt_layer(LogFormat::Text, false, move || writer.clone()));
    let _guard = tracing::subscriber::set_default(subscriber);
    let router = full_gateway::build(config()).unwrap().router;
    let (status, _) = call(
        &router,
        r#"{"model":"deepseek-v3.2","max_tokens":3,"messages":[{"role":"user","content":"x"}]}"#,
        "sk-log-acme",
        "req-text",
    )
    .await;
    assert_eq!(status, 200);
    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains("request finished"))
        .unwrap_or_else(|| panic!("{text}"));
    for part in [
        "request{",
        "request_id=\"req-text\"",
        "tenant=\"acme\"",
        "model=\"deepseek-v3.2\"",
        "completion_tokens=3",
    ] {
        assert!(line.contains(part), "{part} in {line}");
    }
}

#[tokio::test]
async fn a_filter_that_disables_the_span_records_nothing() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("warn"))
        .with(fmt_layer(LogFormat::Json, false, move || writer.clone()));
    let _guard = tracing::subscriber::set_default(subscriber);
    let router = full_gateway::build(config()).unwrap().router;
    let (status, _) = call(
        &router,
        r#"{"model":"deepseek-v3.2","max_tokens":3,"messages":[{"role":"user","content":"x"}]}"#,
        "sk-log-acme",
        "req-quiet",
    )
    .await;
    assert_eq!(status, 200);
    assert!(!logs.text().contains("request finished"), "{}", logs.text());
}
