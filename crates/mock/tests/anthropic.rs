//! Anthropic mode: the Messages API wire format, answers, usage with the simulated prompt cache,
//! tool use, and the same faults and latency as the OpenAI mode.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use http::{Request, StatusCode};
use rampart_core::Body;
use rampart_mock::{Answer, Fault, Latency, MockApi, MockConfig, MockProvider};
use serde_json::{Value, json};
use tokio::time::Instant;

use common::{bytes, call, frames, json};

fn anthropic(config: MockConfig) -> MockProvider {
    MockProvider::new(MockConfig {
        api: MockApi::Anthropic,
        ..config
    })
}

fn messages(body: &Value) -> Request<Body> {
    Request::post("/v1/messages")
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01")
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn simple(max_tokens: u64) -> Value {
    json!({"model": "claude-mock", "max_tokens": max_tokens,
           "messages": [{"role": "user", "content": "hello"}]})
}

/// `(event type, data)` of every event of an Anthropic stream.
fn events(body: &[u8]) -> Vec<(String, Value)> {
    let text = std::str::from_utf8(body).unwrap();
    assert!(text.ends_with("\n\n"), "unterminated: {text:?}");
    text.split_terminator("\n\n")
        .map(|e| {
            let mut lines = e.lines();
            let kind = lines.next().unwrap().strip_prefix("event: ").unwrap();
            let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
            let data: Value = serde_json::from_str(data).unwrap();
            assert_eq!(data["type"], kind, "the data names its event");
            (kind.to_owned(), data)
        })
        .collect()
}

#[tokio::test]
async fn json_answer_in_the_messages_format() {
    let mock = anthropic(MockConfig::default());
    let resp = call(&mock, messages(&simple(5))).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v = json(resp).await;
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "claude-mock");
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    let text = v["content"][0]["text"].as_str().unwrap();
    assert_eq!(v["content"][0]["type"], "text");
    assert_eq!(text.split_whitespace().count(), 5);
    // Five words of a natural sixteen: cut at max_tokens.
    assert_eq!(v["stop_reason"], "max_tokens");
    // "hello": ceil(5 / 4) + 4 + 3, as in the OpenAI mode.
    assert_eq!(v["usage"]["input_tokens"], 9);
    assert_eq!(v["usage"]["output_tokens"], 5);
    assert_eq!(v["usage"]["cache_read_input_tokens"], 0);
    assert_eq!(mock.calls("claude-mock"), 1);

    // A max_tokens above the natural length: the whole answer, end_turn.
    let v = json(call(&mock, messages(&simple(4096))).await.unwrap()).await;
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"]["output_tokens"], 16);
}

#[tokio::test]
async fn the_answer_matches_the_openai_mode_for_the_same_conversation() {
    let mock = anthropic(MockConfig::default());
    let body = json!({"model": "m", "max_tokens": 7, "system": "be brief",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]});
    let v = json(call(&mock, messages(&body)).await.unwrap()).await;
    let chat = rampart_core::ChatRequest::parse(bytes::Bytes::from(
        json!({"model": "m", "max_tokens": 7, "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hello"}]})
        .to_string(),
    ))
    .unwrap();
    let a = Answer::for_request(&chat, 16).unwrap();
    assert_eq!(v["content"][0]["text"], a.text(0));
    assert_eq!(v["usage"]["input_tokens"], a.prompt_tokens());
}

#[tokio::test]
async fn stream_events_in_order() {
    let mock = anthropic(MockConfig::default());
    let mut body = simple(3);
    body["stream"] = json!(true);
    let resp = call(&mock, messages(&body)).await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let evs = events(&bytes(resp).await);
    let kinds: Vec<&str> = evs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(evs[0].1["message"]["usage"]["input_tokens"], 9);
    let text: String = evs
        .iter()
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    assert_eq!(text.split_whitespace().count(), 3);
    assert!(text.ends_with('.'));
    assert_eq!(evs[7].1["delta"]["stop_reason"], "max_tokens");
    assert_eq!(evs[7].1["usage"]["output_tokens"], 3);
}

#[tokio::test]
async fn tools_are_called_with_streamed_json_input() {
    let mock = anthropic(MockConfig::default());
    let tools = json!([{"name": "lookup", "input_schema": {"type": "object"}},
                       {"name": "other", "input_schema": {"type": "object"}}]);
    // Auto: text, then a call to the first tool.
    let body = json!({"model": "m", "max_tokens": 4, "tools": tools,
        "messages": [{"role": "user", "content": "find it"}]});
    let v = json(call(&mock, messages(&body)).await.unwrap()).await;
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(v["content"][0]["type"], "text");
    assert_eq!(v["content"][1]["type"], "tool_use");
    assert_eq!(v["content"][1]["name"], "lookup");
    assert_eq!(v["content"][1]["input"]["text"], v["content"][0]["text"]);

    // Forced to a named tool, streamed: only the tool block, its input in fragments.
    let mut body = body;
    body["tool_choice"] = json!({"type": "tool", "name": "other"});
    body["stream"] = json!(true);
    let evs = events(&bytes(call(&mock, messages(&body)).await.unwrap()).await);
    let start = evs
        .iter()
        .find(|(k, _)| k == "content_block_start")
        .unwrap();
    assert_eq!(start.1["content_block"]["type"], "tool_use");
    assert_eq!(start.1["content_block"]["name"], "other");
    let pieces: Vec<&str> = evs
        .iter()
        .filter_map(|(_, d)| d["delta"]["partial_json"].as_str())
        .collect();
    assert_eq!(pieces.len(), 3);
    let input: Value = serde_json::from_str(&pieces.concat()).unwrap();
    assert_eq!(
        input["text"].as_str().unwrap().split_whitespace().count(),
        4
    );
    assert!(evs.iter().all(|(_, d)| d["delta"]["type"] != "text_delta"));

    // tool_choice none: plain text.
    let body = json!({"model": "m", "max_tokens": 4, "tools": tools,
        "tool_choice": {"type": "none"}, "messages": [{"role": "user", "content": "x"}]});
    let v = json(call(&mock, messages(&body)).await.unwrap()).await;
    assert_eq!(v["stop_reason"], "max_tokens");
    assert_eq!(v["content"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn prompt_cache_writes_then_reads_the_marked_prefix() {
    let mock = anthropic(MockConfig::default());
    let system = "a long system prompt worth caching";
    let body = |q: &str| {
        json!({"model": "m", "max_tokens": 2,
            "system": [{"type": "text", "text": system, "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": q}]})
    };
    let prefix = (system.chars().count() as u64).div_ceil(4) + 4;
    let first = json(call(&mock, messages(&body("one"))).await.unwrap()).await;
    assert_eq!(first["usage"]["cache_creation_input_tokens"], prefix);
    assert_eq!(first["usage"]["cache_read_input_tokens"], 0);
    let second = json(call(&mock, messages(&body("two!"))).await.unwrap()).await;
    assert_eq!(second["usage"]["cache_creation_input_tokens"], 0);
    assert_eq!(second["usage"]["cache_read_input_tokens"], prefix);
    // input_tokens are the tokens after the breakpoint: "two!" = 1 + 4, plus 3.
    assert_eq!(second["usage"]["input_tokens"], 8);
}

#[tokio::test]
async fn bad_requests_get_anthropic_errors() {
    let mock = anthropic(MockConfig {
        require_api_key: Some("sk-ant-test".into()),
        ..Default::default()
    });
    // No key.
    let resp = call(&mock, messages(&simple(2))).await.unwrap();
    assert_eq!(resp.status(), 401);
    let v = json(resp).await;
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "authentication_error");
    // The key in x-api-key, but no anthropic-version.
    let req = Request::post("/v1/messages")
        .header("x-api-key", "sk-ant-test")
        .body(Body::from(simple(2).to_string()))
        .unwrap();
    let resp = call(&mock, req).await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(json(resp).await["error"]["type"], "invalid_request_error");
    // No max_tokens.
    let mut req = messages(&json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}));
    req.headers_mut()
        .insert("x-api-key", "sk-ant-test".parse().unwrap());
    let resp = call(&mock, req).await.unwrap();
    assert_eq!(resp.status(), 400);
    assert!(
        json(resp).await["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens")
    );
    // The chat-completions route does not exist in this mode.
    let resp = call(&mock, common::chat(&common::simple("m", "x")))
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(json(resp).await["error"]["type"], "not_found_error");
}

#[tokio::test]
async fn status_faults_are_anthropic_errors_with_retry_after() {
    let mock = anthropic(MockConfig::default());
    mock.set_fault(None, Fault::overloaded());
    let resp = call(&mock, messages(&simple(2))).await.unwrap();
    assert_eq!(resp.status().as_u16(), 529);
    let v = json(resp).await;
    assert_eq!(
        v,
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );
    mock.set_fault(None, Fault::rate_limited(Duration::from_millis(1500)));
    let resp = call(&mock, messages(&simple(2))).await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(resp.headers()["retry-after"], "2");
    assert_eq!(json(resp).await["error"]["type"], "rate_limit_error");
    mock.set_fault(None, Fault::reset());
    assert!(call(&mock, messages(&simple(2))).await.is_err());
}

#[tokio::test]
async fn stream_faults_cut_or_send_an_error_event() {
    let mock = anthropic(MockConfig::default());
    let mut body = simple(6);
    body["stream"] = json!(true);
    mock.set_fault(None, Fault::cut_after(4));
    let (got, err) = frames(call(&mock, messages(&body)).await.unwrap()).await;
    assert_eq!(got.len(), 4);
    assert!(err.is_some());

    mock.set_fault(None, Fault::error_event_after(5));
    let resp = call(&mock, messages(&body)).await.unwrap();
    let evs = events(&bytes(resp).await);
    assert_eq!(evs.len(), 6);
    assert_eq!(evs[5].0, "error");
    assert_eq!(evs[5].1["error"]["type"], "overloaded_error");
    assert!(evs.iter().all(|(k, _)| k != "message_stop"));

    // Past the end: the fault comes just before message_stop.
    mock.set_fault(None, Fault::error_event_after(1000));
    let evs = events(&bytes(call(&mock, messages(&body)).await.unwrap()).await);
    assert_eq!(evs.last().unwrap().0, "error");
    assert_eq!(evs[evs.len() - 2].0, "message_delta");
}

#[tokio::test(start_paused = true)]
async fn latency_applies_as_in_the_openai_mode() {
    let mock = anthropic(MockConfig::default());
    mock.set_latency(Latency {
        base: Duration::from_millis(100),
        first_token: Duration::from_millis(50),
        chunk_gap: Duration::from_millis(10),
        ..Latency::ZERO
    });
    let start = Instant::now();
    let resp = call(&mock, messages(&simple(4))).await.unwrap();
    // Headers once the answer is generated: 100 + 50 + 3 × 10.
    assert_eq!(start.elapsed(), Duration::from_millis(180));
    let _ = bytes(resp).await;

    let mut body = simple(4);
    body["stream"] = json!(true);
    let start = Instant::now();
    let resp = call(&mock, messages(&body)).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    let _ = bytes(resp).await;
    assert_eq!(start.elapsed(), Duration::from_millis(180));
}

#[tokio::test]
async fn served_over_http_too() {
    let mock = anthropic(MockConfig::default());
    let server = mock.serve_local().await.unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let req = Request::post(format!("{}/messages", server.base_url()))
        .header("anthropic-version", "2023-06-01")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            simple(3).to_string(),
        )))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["usage"]["output_tokens"], 3);
}
