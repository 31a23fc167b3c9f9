//! The native Anthropic provider end to end: `full_gateway` over loopback with
//! `claude-sonnet-4.5` served by the simulated provider in Anthropic mode, clients speaking
//! chat completions only. Fallback chains mixing it with OpenAI-compatible providers, the
//! breaker, cost with prompt caching, and an HTTP provider of kind `anthropic`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{TestGateway, fast_defaults, sse_data};
use http::StatusCode;
use rampart_mock::Fault;
use serde_json::{Value, json};

/// `text` with the `anthropic-sim` provider switched to the Messages API.
fn anthropic_mode(text: &str) -> String {
    let from = "name = \"anthropic-sim\"\nkind = \"mock\"";
    assert!(text.contains(from), "the defaults name anthropic-sim");
    text.replace(
        from,
        "name = \"anthropic-sim\"\nkind = \"mock\"\nmock = { api = \"anthropic\" }",
    )
}

/// The embedded defaults (no latency) with `claude-sonnet-4.5` served natively.
fn defaults() -> String {
    anthropic_mode(&fast_defaults())
}

/// Each model served by its own target only, once.
fn single_attempt() -> String {
    anthropic_mode(&common::single_attempt())
}

fn ask(model: &str, prompt: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": prompt}]})
}

fn chunks(body: &[u8]) -> (Vec<Value>, bool) {
    let data = sse_data(body);
    let done = data.last().is_some_and(|d| d == "[DONE]");
    let chunks = data
        .iter()
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    (chunks, done)
}

fn content(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

#[tokio::test]
async fn json_answer_from_an_anthropic_provider_looks_like_openai() {
    let gw = TestGateway::start(&defaults()).await;
    let mut body = ask("claude-sonnet-4.5", "Say hello to the gateway");
    body["max_tokens"] = json!(6);
    body["messages"]
        .as_array_mut()
        .unwrap()
        .insert(0, json!({"role": "system", "content": "Be brief."}));
    let r = gw.chat(body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-rampart-provider"), Some("anthropic-sim"));
    assert_eq!(r.header("x-rampart-model"), Some("claude-sonnet-4.5"));
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(text.split_whitespace().count(), 6);
    assert_eq!(v["usage"]["completion_tokens"], 6);
    // "Be brief." = 3 + 4, "Say hello to the gateway" = 6 + 4, plus 3.
    assert_eq!(v["usage"]["prompt_tokens"], 20);
    let sent = gw.mock("anthropic-sim").last_request().unwrap();
    assert_eq!(sent.headers["anthropic-version"], "2023-06-01");
    let sent = sent.json().unwrap();
    assert_eq!(sent["system"], "Be brief.");
    assert_eq!(sent["max_tokens"], 6);
}

#[tokio::test]
async fn streams_from_an_anthropic_provider_are_chat_completion_chunks() {
    let gw = TestGateway::start(&defaults()).await;
    let mut body = ask("claude-sonnet-4.5", "Stream to me");
    body["stream"] = json!(true);
    body["max_tokens"] = json!(5);
    let r = gw.chat(body.clone()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let (cs, done) = chunks(&r.body);
    assert!(done, "{}", r.text());
    assert!(cs.iter().all(|c| c["object"] == "chat.completion.chunk"));
    assert!(
        cs.iter().all(|c| c.get("usage").is_none()),
        "usage only when asked"
    );
    assert_eq!(cs[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(content(&cs).split_whitespace().count(), 5);
    assert_eq!(cs.last().unwrap()["choices"][0]["finish_reason"], "length");

    body["stream_options"] = json!({"include_usage": true});
    body["messages"][0]["content"] = json!("Stream to me, with usage");
    let r = gw.chat(body).await;
    let (cs, done) = chunks(&r.body);
    assert!(done);
    let last = cs.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], 5);
    assert_eq!(
        last["usage"]["total_tokens"],
        last["usage"]["prompt_tokens"].as_u64().unwrap() + 5
    );
}

#[tokio::test]
async fn tool_calls_round_trip_through_the_messages_api() {
    let gw = TestGateway::start(&defaults()).await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let body = json!({"model": "claude-sonnet-4.5", "stream": true, "max_tokens": 4,
        "tools": tools, "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "messages": [{"role": "user", "content": "Weather in Paris?"}]});
    let r = gw.chat(body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let (cs, done) = chunks(&r.body);
    assert!(done);
    let calls: Vec<&Value> = cs
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array())
        .flatten()
        .collect();
    let id = calls[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    let args: String = calls
        .iter()
        .filter_map(|c| c["function"]["arguments"].as_str())
        .collect();
    let args: Value = serde_json::from_str(&args).unwrap();
    assert_eq!(args["text"].as_str().unwrap().split_whitespace().count(), 4);
    assert_eq!(
        cs.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );

    // The client answers the call; the provider gets a tool_result for the same id.
    let follow = json!({"model": "claude-sonnet-4.5", "max_tokens": 3,
        "tools": tools,
        "tool_choice": "none",
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": id, "type": "function",
                "function": {"name": "get_weather", "arguments": args.to_string()}}]},
            {"role": "tool", "tool_call_id": id, "content": "18 C"}]});
    let r = gw.chat(follow).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["choices"][0]["finish_reason"], "length");
    let sent = gw
        .mock("anthropic-sim")
        .last_request()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(sent["messages"][1]["content"][0]["type"], "tool_use");
    assert_eq!(sent["messages"][1]["content"][0]["input"], args);
    assert_eq!(
        sent["messages"][2]["content"][0],
        json!({"type": "tool_result", "tool_use_id": id, "content": "18 C"})
    );
}

#[tokio::test]
async fn prompt_cache_reads_are_priced_as_cached_input() {
    let gw = TestGateway::start(&defaults()).await;
    let system = "You are the contract assistant. ".repeat(40);
    let ask = |q: &str| {
        json!({"model": "claude-sonnet-4.5", "max_tokens": 5, "messages": [
            {"role": "system", "content": [{"type": "text", "text": system,
                                            "cache_control": {"type": "ephemeral"}}]},
            {"role": "user", "content": q}]})
    };
    let prefix = (system.chars().count() as u64).div_ceil(4) + 4;
    let sonnet = rampart_core::Price {
        input: 3.0,
        cached_input: Some(0.3),
        output: 15.0,
    };
    let first = gw.chat(ask("What is the term?")).await;
    assert_eq!(first.status, 200, "{}", first.text());
    let u = &first.json()["usage"];
    assert_eq!(u["cache_creation_input_tokens"], prefix);
    assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 0);
    let second = gw.chat(ask("Who signed it?")).await;
    let v = second.json();
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], prefix);
    // "Who signed it?" = 4 + 4, plus 3, after the cached prefix.
    assert_eq!(v["usage"]["prompt_tokens"], prefix + 11);
    // The cached prefix at 0.30, the rest at 3.00, the output at 15.00 (µUSD, rounded up).
    let micros = ((prefix as f64 * 0.3 + 11.0 * 3.0 + 5.0 * 15.0) * 1e6).round() / 1e6;
    let want = rampart_core::pricing::format_usd(micros.ceil() as u64);
    assert_eq!(second.header("x-rampart-cost-usd"), Some(want.as_str()));
    let usage: rampart_core::Usage = serde_json::from_value(v["usage"].clone()).unwrap();
    assert_eq!(want, rampart_core::pricing::format_usd(sonnet.cost(&usage)));
}

#[tokio::test]
async fn a_fallback_chain_mixes_openai_compatible_and_anthropic_providers() {
    let gw = TestGateway::start(&defaults()).await;
    let openai = gw.mock("openai-sim");
    let claude = gw.mock("anthropic-sim");

    // gpt-4.1 fails: its chain goes on to claude-sonnet-4.5 over the Messages API.
    openai.set_fault(
        Some("gpt-4.1"),
        Fault::status_code(StatusCode::SERVICE_UNAVAILABLE),
    );
    let r = gw.chat(ask("gpt-4.1", "Fall over to Claude")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-rampart-attempts"), Some("2"));
    assert_eq!(r.header("x-rampart-provider"), Some("anthropic-sim"));
    assert_eq!(r.header("x-rampart-model"), Some("claude-sonnet-4.5"));
    assert!(r.json()["id"].as_str().unwrap().starts_with("msg_"));
    openai.clear_faults();

    // Claude is overloaded (529): its chain goes on to gpt-4.1.
    claude.set_fault(None, Fault::overloaded());
    let r = gw.chat(ask("claude-sonnet-4.5", "Fall over to GPT")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-rampart-attempts"), Some("2"));
    assert_eq!(r.header("x-rampart-provider"), Some("openai-sim"));
    assert!(r.json()["id"].as_str().unwrap().starts_with("chatcmpl-"));

    // A Claude stream that fails before its first content falls back cleanly.
    claude.set_fault(None, Fault::error_event_after(1));
    let mut body = ask("claude-sonnet-4.5", "Stream, then fall over");
    body["stream"] = json!(true);
    body["max_tokens"] = json!(4);
    let r = gw.chat(body).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-rampart-attempts"), Some("2"));
    let (cs, done) = chunks(&r.body);
    assert!(done, "{}", r.text());
    assert!(
        cs.iter().all(|c| c["model"] == "gpt-4.1"),
        "one answer, all from the fallback"
    );
    assert_eq!(content(&cs).split_whitespace().count(), 4);
}

#[tokio::test]
async fn an_error_event_after_content_ends_the_stream_without_done() {
    let gw = TestGateway::start(&defaults()).await;
    // message_start, block start, ping, two words: then the error event.
    gw.mock("anthropic-sim")
        .set_fault(None, Fault::error_event_after(5));
    let mut body = ask("claude-sonnet-4.5", "Break mid-way");
    body["stream"] = json!(true);
    body["max_tokens"] = json!(8);
    let r = gw.chat(body).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-rampart-attempts"),
        Some("1"),
        "committed: no retry"
    );
    let (cs, done) = chunks(&r.body);
    assert!(!done, "never a clean end: {}", r.text());
    assert_eq!(content(&cs).split_whitespace().count(), 2);
    let last = cs.last().unwrap();
    assert_eq!(last["error"]["code"], "overloaded_error");
}

#[tokio::test]
async fn overloaded_trips_the_breaker_and_rate_limits_keep_retry_after() {
    let gw = TestGateway::start(&single_attempt()).await;
    let claude = gw.mock("anthropic-sim");
    claude.set_fault(None, Fault::overloaded());
    // Five failures in a row (the default config) open the breaker.
    for i in 0..5 {
        let r = gw.chat(ask("claude-sonnet-4.5", "x")).await;
        assert_eq!(r.status.as_u16(), 529, "attempt {i}: {}", r.text());
        assert_eq!(r.header("x-rampart-error-source"), Some("upstream"));
        // The fallback layer reports a failed 5xx as every candidate failing, with its status.
        assert_eq!(r.json()["error"]["code"], "upstream_error");
    }
    let r = gw.chat(ask("claude-sonnet-4.5", "x")).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-rampart-error-source"), Some("circuit_breaker"));
    assert_eq!(claude.calls("claude-sonnet-4.5"), 5);
    gw.breakers.reset("anthropic-sim/claude-sonnet-4.5");

    // invalid_request_error: the client's problem, its status and no breaker failure.
    claude.set_fault(None, Fault::status_code(StatusCode::BAD_REQUEST));
    let r = gw.chat(ask("claude-sonnet-4.5", "z")).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    assert_eq!(r.header("x-rampart-error-source"), Some("upstream"));
    // More than the five that open the breaker on failures: 400s are not failures.
    for _ in 0..5 {
        let r = gw.chat(ask("claude-sonnet-4.5", "still allowed")).await;
        assert_eq!(r.status, 400);
    }

    // 429 rate_limit_error: an OpenAI-shaped 429 with the provider's retry-after.
    claude.set_fault(None, Fault::rate_limited(std::time::Duration::from_secs(7)));
    let r = gw.chat(ask("claude-sonnet-4.5", "y")).await;
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.header("retry-after"), Some("7"));
    let v = r.json();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert!(!v["error"]["message"].as_str().unwrap().is_empty());

    // The breaker cools the target down until the provider's retry-after.
    let r = gw.chat(ask("claude-sonnet-4.5", "too soon")).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-rampart-error-source"), Some("circuit_breaker"));
}

#[tokio::test]
async fn untranslatable_requests_are_400s_before_any_call() {
    let gw = TestGateway::start(&single_attempt()).await;
    let mut body = ask("claude-sonnet-4.5", "x");
    body["n"] = json!(2);
    let r = gw.chat(body).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "n");
    assert_eq!(gw.mock("anthropic-sim").total_calls(), 0);
}

fn http_anthropic(base_url: &str) -> String {
    format!(
        r#"
[[providers]]
name = "claude-http"
kind = "anthropic"
base_url = "{base_url}"
api_key_env = "RAMPART_TEST_ANTHROPIC_KEY"
anthropic = {{ version = "2023-06-01", default_max_tokens = 128 }}

[[providers]]
name = "openai-sim"
kind = "mock"

[[models]]
name = "claude"
provider = "claude-http"
upstream_name = "claude-sonnet-4-5"
fallbacks = ["gpt"]

[[models]]
name = "gpt"
provider = "openai-sim"
"#
    )
}

#[tokio::test]
async fn http_provider_of_kind_anthropic() {
    let mock = rampart_mock::MockProvider::new(rampart_mock::MockConfig {
        api: rampart_mock::MockApi::Anthropic,
        require_api_key: Some("sk-ant-provider-0001".into()),
        ..Default::default()
    });
    let server = mock.serve_local().await.unwrap();
    let config =
        full_gateway::GatewayConfig::parse(&http_anthropic(&server.base_url()), "test").unwrap();
    let gw = TestGateway::start_with_secrets(
        config,
        &[("RAMPART_TEST_ANTHROPIC_KEY", "sk-ant-provider-0001")],
    )
    .await;
    let r = gw
        .post(
            "/v1/chat/completions",
            ask("claude", "hello over HTTP").to_string(),
            &[("authorization", "Bearer client-key-must-not-leak")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-rampart-provider"), Some("claude-http"));
    assert_eq!(r.json()["model"], "claude-sonnet-4-5");
    let sent = mock.last_request().unwrap();
    assert_eq!(sent.headers["x-api-key"], "sk-ant-provider-0001");
    assert_eq!(sent.headers["anthropic-version"], "2023-06-01");
    assert!(sent.headers.get("authorization").is_none());
    assert_eq!(sent.json().unwrap()["max_tokens"], 128);

    // Streamed too.
    let mut body = ask("claude", "stream over HTTP");
    body["stream"] = json!(true);
    let r = gw.chat(body).await;
    let (cs, done) = chunks(&r.body);
    assert!(done, "{}", r.text());
    assert_eq!(content(&cs).split_whitespace().count(), 16);

    // The provider goes away: the chain falls back to the OpenAI-compatible mock.
    server.shutdown_and_wait().await;
    let r = gw.chat(ask("claude", "anyone there?")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-rampart-provider"), Some("openai-sim"));
}

#[test]
fn provider_config_is_validated() {
    let parse = |t: &str| full_gateway::GatewayConfig::parse(t, "test");
    let ok = http_anthropic("https://api.anthropic.com/v1");
    assert!(parse(&ok).is_ok());
    let err = parse(&ok.replace("base_url = \"https://api.anthropic.com/v1\"\n", ""))
        .unwrap_err()
        .to_string();
    assert!(err.contains("base_url"), "{err}");
    let err = parse(&ok.replace(
        "kind = \"mock\"",
        "kind = \"mock\"\nanthropic = { default_max_tokens = 5 }",
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("anthropic"), "{err}");
    let err = parse(&ok.replace("default_max_tokens = 128", "default_max_tokens = 0"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("default_max_tokens"), "{err}");
}

#[test]
fn the_example_config_builds() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/full_gateway/anthropic.toml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let config = full_gateway::GatewayConfig::parse(&text, "anthropic.toml").unwrap();
    let gw = full_gateway::build_with_secrets(config, |var| Some(format!("test-key-for-{var}")))
        .unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = gw.upstream.model_names().collect();
    assert!(names.contains(&"claude-sonnet-4.5"), "{names:?}");
}
