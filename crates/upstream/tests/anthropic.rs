//! The native Anthropic provider: golden translation fixtures (written by hand from the Messages
//! API reference) for requests, answers and streams; error mapping; and `Upstream` end to end
//! against the simulated provider in Anthropic mode, in process and over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use rampart_core::commit::{CommitConfig, commit_stream};
use rampart_core::{Body, ChatRequest, Outcome, ResponseFacts, Verdict};
use rampart_mock::{Fault, MockApi, MockConfig, MockProvider};
use rampart_upstream::anthropic::{
    StreamTranslator, translate_error, translate_request, translate_response,
};
use rampart_upstream::{AnthropicConfig, ProviderConfig, Timeouts, Upstream};
use serde_json::{Value, json};
use tower::ServiceExt;

const MODEL: &str = "claude-sonnet-4-5-20250929";
const CREATED: u64 = 1_700_000_000;

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/anthropic/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn parse(body: &str) -> ChatRequest {
    ChatRequest::parse(Bytes::from(body.to_owned())).unwrap()
}

fn translate(body: &str) -> Result<Value, rampart_core::Error> {
    let bytes = translate_request(&parse(body), MODEL, &AnthropicConfig::default())?;
    Ok(serde_json::from_slice(&bytes).unwrap())
}

#[test]
fn golden_requests() {
    for case in ["text", "images", "tools", "multiturn"] {
        let got = translate(&fixture(&format!("request_{case}.openai.json"))).unwrap();
        let want = fixture_json(&format!("request_{case}.anthropic.json"));
        assert_eq!(
            got,
            want,
            "request_{case}:\n{}",
            serde_json::to_string_pretty(&got).unwrap()
        );
    }
}

#[test]
fn max_tokens_is_always_sent() {
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let config = AnthropicConfig {
        default_max_tokens: 777,
        ..Default::default()
    };
    let got: Value =
        serde_json::from_slice(&translate_request(&parse(body), "m", &config).unwrap()).unwrap();
    assert_eq!(got["max_tokens"], 777);
    // max_completion_tokens wins over max_tokens.
    let body = r#"{"model":"m","max_tokens":5,"max_completion_tokens":9,"messages":[{"role":"user","content":"hi"}]}"#;
    assert_eq!(translate(body).unwrap()["max_tokens"], 9);
}

#[test]
fn untranslatable_requests_are_400s_naming_the_field() {
    let cases = [
        (r#""n":2"#, r#"[{"role":"user","content":"x"}]"#, "n"),
        (
            r#""x":0"#,
            r#"[{"role":"function","name":"f","content":"x"}]"#,
            "messages[0].role",
        ),
        (
            r#""x":0"#,
            r#"[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"AA==","format":"wav"}}]}]"#,
            "messages[0].content[0]",
        ),
        (
            r#""x":0"#,
            r#"[{"role":"user","content":[{"type":"image_url","image_url":{"url":"ftp://x/y.png"}}]}]"#,
            "messages[0].content[0]",
        ),
        (
            r#""x":0"#,
            r#"[{"role":"assistant","tool_calls":[{"id":"a","type":"function","function":{"name":"f","arguments":"{not json"}}]}]"#,
            "messages[0].tool_calls[0]",
        ),
        (
            r#""x":0"#,
            r#"[{"role":"tool","content":"result without an id"}]"#,
            "messages[0].tool_call_id",
        ),
        (
            r#""tools":[{"type":"custom","custom":{"name":"c"}}]"#,
            r#"[{"role":"user","content":"x"}]"#,
            "tools[0]",
        ),
        (
            r#""tool_choice":"sometimes""#,
            r#"[{"role":"user","content":"x"}]"#,
            "tool_choice",
        ),
        (r#""stop":5"#, r#"[{"role":"user","content":"x"}]"#, "stop"),
    ];
    for (extra, messages, param) in cases {
        let body = format!(r#"{{"model":"m",{extra},"messages":{messages}}}"#);
        let err = translate(&body).unwrap_err();
        assert_eq!(err.status(), 400, "{body}");
        assert_eq!(err.to_response().status(), 400);
        assert_eq!(err.body().error.param.as_deref(), Some(param), "{body}");
        assert_eq!(err.body().error.code.as_deref(), Some("invalid_value"));
    }
}

#[test]
fn tool_choice_variants_and_parallel_calls() {
    let tools = r#"[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]"#;
    let req = |extra: &str| {
        translate(&format!(
            r#"{{"model":"m","tools":{tools},{extra}"messages":[{{"role":"user","content":"x"}}]}}"#
        ))
        .unwrap()
    };
    assert_eq!(
        req(r#""tool_choice":"auto","#)["tool_choice"],
        json!({"type":"auto"})
    );
    assert_eq!(
        req(r#""tool_choice":"none","#)["tool_choice"],
        json!({"type":"none"})
    );
    assert_eq!(req("")["tool_choice"], Value::Null, "absent stays absent");
    assert_eq!(
        req(r#""parallel_tool_calls":false,"#)["tool_choice"],
        json!({"type":"auto","disable_parallel_tool_use":true})
    );
    // `none` takes no parallel flag.
    assert_eq!(
        req(r#""tool_choice":"none","parallel_tool_calls":false,"#)["tool_choice"],
        json!({"type":"none"})
    );
    assert_eq!(
        req(r#""parallel_tool_calls":true,"#)["tool_choice"],
        Value::Null
    );
}

#[test]
fn golden_responses() {
    for case in ["text", "tools", "tool_only", "cache"] {
        let body = fixture(&format!("response_{case}.anthropic.json"));
        let got: Value =
            serde_json::from_slice(&translate_response(body.as_bytes(), CREATED).unwrap()).unwrap();
        let want = fixture_json(&format!("response_{case}.openai.json"));
        assert_eq!(
            got,
            want,
            "response_{case}:\n{}",
            serde_json::to_string_pretty(&got).unwrap()
        );
    }
    assert!(translate_response(b"<html>oops</html>", CREATED).is_err());
}

#[test]
fn cached_reads_are_priced_as_cached_input() {
    let body = fixture("response_cache.anthropic.json");
    let v: Value =
        serde_json::from_slice(&translate_response(body.as_bytes(), CREATED).unwrap()).unwrap();
    let usage: rampart_core::Usage = serde_json::from_value(v["usage"].clone()).unwrap();
    let sonnet = rampart_core::Price {
        input: 3.0,
        cached_input: Some(0.3),
        output: 15.0,
    };
    // (21 + 188) × 3.00 + 2048 × 0.30 + 8 × 15.00 = 627 + 614.4 + 120 = 1361.4 → 1362 µUSD.
    assert_eq!(sonnet.cost(&usage), 1362);
}

/// Feeds `sse` to a translator in pieces of `step` bytes; returns the output.
fn run_stream(sse: &str, step: usize) -> (String, bool) {
    let mut t = StreamTranslator::new(CREATED);
    let mut out = BytesMut::new();
    for piece in sse.as_bytes().chunks(step) {
        t.feed(piece, &mut out);
    }
    t.finish(&mut out);
    (String::from_utf8(out.to_vec()).unwrap(), t.is_done())
}

fn data_lines(out: &str) -> Vec<String> {
    assert!(out.ends_with("\n\n"), "{out}");
    out.split_terminator("\n\n")
        .map(|e| e.strip_prefix("data: ").unwrap().to_owned())
        .collect()
}

#[test]
fn stream_reassembles_text_and_tool_call_arguments() {
    let sse = fixture("stream_text_and_tool.anthropic.sse");
    let (whole, done) = run_stream(&sse, usize::MAX);
    assert!(done);
    // However the bytes are split, the output is the same.
    for step in [1, 7, 64] {
        assert_eq!(run_stream(&sse, step).0, whole, "step {step}");
    }
    // CRLF line ends too.
    assert_eq!(run_stream(&sse.replace('\n', "\r\n"), 5).0, whole);

    let data = data_lines(&whole);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], "msg_014p7gG3wDgGV9EUtLvnow3U");
        assert_eq!(c["model"], MODEL);
        assert_eq!(c["created"], CREATED);
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        text,
        "Okay, let me check the weather for San Francisco, CA:"
    );

    // Reassemble tool calls as an OpenAI client does: by index, appending arguments.
    let mut calls: Vec<(String, String, String)> = Vec::new();
    for c in &chunks {
        for tc in c["choices"][0]["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let i = tc["index"].as_u64().unwrap() as usize;
            if i == calls.len() {
                calls.push(Default::default());
            }
            let call = &mut calls[i];
            if let Some(id) = tc["id"].as_str() {
                call.0 = id.to_owned();
                call.1 = tc["function"]["name"].as_str().unwrap().to_owned();
            }
            call.2
                .push_str(tc["function"]["arguments"].as_str().unwrap());
        }
    }
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].0, "toolu_01T1x1fJ34qAmk2tNTrN7Up6");
    assert_eq!(calls[0].1, "get_weather");
    let args: Value = serde_json::from_str(&calls[0].2).unwrap();
    assert_eq!(
        args,
        json!({"location": "San Francisco, CA", "unit": "fahrenheit"})
    );
    // A tool called without arguments gets "{}".
    assert_eq!(
        calls[1],
        ("toolu_01NoArgs".into(), "get_time".into(), "{}".into())
    );

    let finishes: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finishes, ["tool_calls"]);
    let usage = &chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["prompt_tokens"], 572);
    assert_eq!(
        usage["usage"]["prompt_tokens_details"]["cached_tokens"],
        100
    );
    assert_eq!(usage["usage"]["completion_tokens"], 89);
    assert_eq!(usage["usage"]["total_tokens"], 661);
}

#[test]
fn an_error_event_ends_the_stream_with_an_openai_error() {
    let (out, done) = run_stream(&fixture("stream_error.anthropic.sse"), 3);
    assert!(done);
    let data = data_lines(&out);
    assert!(!data.iter().any(|d| d == "[DONE]"));
    assert!(!out.contains("never seen"), "nothing after the error");
    let err: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(
        err,
        json!({"error": {"message": "Overloaded", "type": "server_error", "param": null,
                         "code": "overloaded_error"}})
    );
    // An `event: error` whose data is unreadable is still an error.
    let (out, done) = run_stream("event: error\ndata: {oops\n\n", 100);
    assert!(done);
    assert!(out.contains("\"error\""), "{out}");
    // Unknown events and pings are skipped.
    let (out, done) = run_stream(
        "event: ping\ndata: {\"type\":\"ping\"}\n\nevent: future\ndata: {\"type\":\"future_event\",\"x\":1}\n\n",
        4,
    );
    assert!(!done);
    assert_eq!(out, "");
}

#[test]
fn error_bodies_map_to_openai_errors() {
    let body = |kind: &str, message: &str| {
        json!({"type": "error", "error": {"type": kind, "message": message}}).to_string()
    };
    let cases = [
        (
            529,
            "overloaded_error",
            "Overloaded",
            "server_error",
            "overloaded_error",
        ),
        (
            429,
            "rate_limit_error",
            "Slow down",
            "requests",
            "rate_limit_exceeded",
        ),
        (
            400,
            "invalid_request_error",
            "messages: roles must alternate",
            "invalid_request_error",
            "invalid_request_error",
        ),
        (
            400,
            "invalid_request_error",
            "prompt is too long: 210000 tokens > 200000 maximum",
            "invalid_request_error",
            "context_length_exceeded",
        ),
        (
            401,
            "authentication_error",
            "invalid x-api-key",
            "invalid_request_error",
            "invalid_api_key",
        ),
        (
            403,
            "permission_error",
            "no",
            "invalid_request_error",
            "permission_error",
        ),
        (
            404,
            "not_found_error",
            "model: x",
            "invalid_request_error",
            "not_found_error",
        ),
        (
            500,
            "api_error",
            "Internal server error",
            "server_error",
            "api_error",
        ),
    ];
    for (status, kind, message, want_type, want_code) in cases {
        let status = StatusCode::from_u16(status).unwrap();
        let e = translate_error(status, body(kind, message).as_bytes()).unwrap();
        assert_eq!(e.error.kind, want_type, "{kind}");
        assert_eq!(e.error.code.as_deref(), Some(want_code), "{kind}");
        assert_eq!(e.error.message, message);
    }
    // Not an Anthropic body: left to the generic sanitiser.
    assert!(translate_error(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>").is_none());
}

// ---- Upstream end to end against the simulated provider in Anthropic mode ----

fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(1),
        first_byte: Duration::from_secs(10),
        idle: Duration::from_secs(5),
        total: Duration::from_secs(60),
    }
}

fn claude_mock() -> MockProvider {
    MockProvider::new(MockConfig {
        api: MockApi::Anthropic,
        ..Default::default()
    })
}

fn in_process(mock: &MockProvider) -> Upstream {
    Upstream::builder()
        .anthropic_service_provider(
            "anthropic",
            mock.service(),
            timeouts(),
            AnthropicConfig::default(),
        )
        .model("claude", "anthropic", Some("claude-mock-v1"))
        .build()
        .unwrap()
}

fn chat(body: Value) -> Request<Body> {
    Request::post("/v1/chat/completions")
        .body(Body::from(body.to_string()))
        .unwrap()
}

async fn call(u: &Upstream, body: Value) -> Response<Body> {
    u.clone().oneshot(chat(body)).await.unwrap()
}

#[tokio::test]
async fn json_answer_through_upstream() {
    let mock = claude_mock();
    let up = in_process(&mock);
    let resp = call(
        &up,
        json!({"model":"claude","max_tokens":5,"messages":[{"role":"system","content":"brief"},{"role":"user","content":"hello"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.headers()["x-rampart-provider"], "anthropic");
    assert_eq!(resp.headers()["x-rampart-model"], "claude");
    let facts = resp.extensions().get::<ResponseFacts>().cloned().unwrap();
    assert!(!facts.stream);
    assert_eq!(&*facts.upstream_model, "claude-mock-v1");
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "claude-mock-v1");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(text.split_whitespace().count(), 5);
    let report = facts.completion.report().unwrap();
    assert_eq!(report.outcome, Outcome::Complete);
    assert_eq!(report.finish_reason.as_deref(), Some("length"));
    let usage = report.usage.clone().unwrap();
    assert_eq!(usage.completion_tokens, 5);
    assert_eq!(
        usage.prompt_tokens,
        v["usage"]["prompt_tokens"].as_u64().unwrap()
    );

    // What the provider received: the Messages API body and headers.
    let sent = mock.last_request().unwrap();
    assert_eq!(sent.headers["anthropic-version"], "2023-06-01");
    let sent = sent.json().unwrap();
    assert_eq!(sent["model"], "claude-mock-v1");
    assert_eq!(sent["system"], "brief");
    assert_eq!(sent["max_tokens"], 5);
    assert_eq!(mock.calls("claude-mock-v1"), 1);
}

async fn sse_chunks(resp: Response<Body>) -> Vec<String> {
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    data_lines(std::str::from_utf8(&body).unwrap())
}

#[tokio::test]
async fn streams_through_upstream_with_usage_only_when_asked() {
    let mock = claude_mock();
    let up = in_process(&mock);
    let body = json!({"model":"claude","stream":true,"max_tokens":4,
        "messages":[{"role":"user","content":"hello"}]});
    let resp = call(&up, body.clone()).await;
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let facts = resp.extensions().get::<ResponseFacts>().cloned().unwrap();
    assert!(facts.stream);
    let data = sse_chunks(resp).await;
    assert_eq!(data.last().unwrap(), "[DONE]");
    assert!(!data.iter().any(|d| d.contains("\"usage\"")), "{data:?}");
    let report = facts.completion.report().unwrap();
    assert!(report.is_complete_answer(true));
    assert_eq!(report.usage.as_ref().unwrap().completion_tokens, 4);

    let mut with_usage = body;
    with_usage["stream_options"] = json!({"include_usage": true});
    let data = sse_chunks(call(&up, with_usage).await).await;
    let last: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], 4);
    let text: String = data[..data.len() - 2]
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text.split_whitespace().count(), 4);
}

#[tokio::test]
async fn tool_calls_stream_through_upstream() {
    let mock = claude_mock();
    let up = in_process(&mock);
    let body = json!({"model":"claude","stream":true,"max_tokens":3,
        "tools":[{"type":"function","function":{"name":"lookup","parameters":{"type":"object"}}}],
        "tool_choice":"required",
        "messages":[{"role":"user","content":"hello"}]});
    let data = sse_chunks(call(&up, body).await).await;
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let args: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    let args: Value = serde_json::from_str(&args).unwrap();
    assert_eq!(args["text"].as_str().unwrap().split_whitespace().count(), 3);
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "tool_calls")
    );
    let sent = mock.last_request().unwrap().json().unwrap();
    assert_eq!(sent["tool_choice"], json!({"type":"any"}));
}

#[tokio::test]
async fn an_error_event_is_an_upstream_failure_for_the_completion() {
    let mock = claude_mock();
    let up = in_process(&mock);
    let body = json!({"model":"claude","stream":true,"max_tokens":6,
        "messages":[{"role":"user","content":"hello"}]});
    // After the role chunk and two words.
    mock.set_fault(None, Fault::error_event_after(5));
    let resp = call(&up, body.clone()).await;
    let facts = resp.extensions().get::<ResponseFacts>().cloned().unwrap();
    let data = sse_chunks(resp).await;
    assert!(!data.iter().any(|d| d == "[DONE]"));
    assert!(data.last().unwrap().contains("overloaded_error"));
    let report = facts.completion.report().unwrap();
    assert_eq!(report.outcome, Outcome::UpstreamError("Overloaded".into()));
    assert_eq!(rampart_core::classify_report(&report), Verdict::Failure);

    // Before any content: the commit point turns it into an error a fallback acts on.
    mock.set_fault(None, Fault::error_event_after(1));
    let resp = call(&up, body).await;
    let facts = resp.extensions().get::<ResponseFacts>().cloned().unwrap();
    let err = commit_stream(resp, CommitConfig::default())
        .await
        .unwrap_err();
    assert_eq!(err.status(), 502);
    assert!(matches!(
        facts.completion.report().unwrap().outcome,
        Outcome::UpstreamError(_)
    ));
}

#[tokio::test]
async fn error_statuses_keep_their_status_and_classification() {
    let mock = claude_mock();
    let up = in_process(&mock);
    let body = json!({"model":"claude","messages":[{"role":"user","content":"hello"}]});
    mock.set_fault(None, Fault::overloaded());
    let resp = call(&up, body.clone()).await;
    assert_eq!(resp.status().as_u16(), 529);
    assert_eq!(
        rampart_core::classify_status(resp.status(), resp.headers()),
        Verdict::Failure
    );
    assert_eq!(resp.headers()["x-rampart-error-source"], "upstream");
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["error"]["code"], "overloaded_error");
    assert_eq!(v["error"]["type"], "server_error");

    mock.set_fault(None, Fault::rate_limited(Duration::from_secs(3)));
    let resp = call(&up, body.clone()).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(
        rampart_core::classify_status(resp.status(), resp.headers()),
        Verdict::RateLimited {
            retry_after: Some(Duration::from_secs(3))
        }
    );
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");

    mock.set_fault(None, Fault::status_code(StatusCode::BAD_REQUEST));
    let resp = call(&up, body.clone()).await;
    assert_eq!(
        rampart_core::classify_status(resp.status(), resp.headers()),
        Verdict::Ignored
    );

    // A request that cannot be translated never reaches the provider.
    mock.clear_faults();
    let before = mock.total_calls();
    let err = up
        .clone()
        .oneshot(chat(
            json!({"model":"claude","n":3,"messages":[{"role":"user","content":"x"}]}),
        ))
        .await
        .unwrap_err();
    let err = rampart_core::error::find_error(&err).unwrap();
    assert_eq!(err.status(), 400);
    assert_eq!(mock.total_calls(), before);
}

#[tokio::test]
async fn http_provider_sends_the_key_and_version_headers() {
    let mock = MockProvider::new(MockConfig {
        api: MockApi::Anthropic,
        require_api_key: Some("sk-ant-secret-0001".into()),
        ..Default::default()
    });
    let server = mock.serve_local().await.unwrap();
    let config: ProviderConfig = toml::from_str(&format!(
        r#"
        name = "claude-http"
        kind = "anthropic"
        base_url = "{}"
        anthropic = {{ version = "2023-06-01", default_max_tokens = 64 }}
        "#,
        server.base_url()
    ))
    .unwrap();
    let up = Upstream::builder()
        .provider(config)
        .api_key("claude-http", "sk-ant-secret-0001")
        .model("claude", "claude-http", None)
        .build()
        .unwrap();
    let resp = call(
        &up,
        json!({"model":"claude","messages":[{"role":"user","content":"hello"}]}),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let v: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    // No max_tokens from the client: the configured 64 is above the mock's natural 16 words.
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let sent = mock.last_request().unwrap();
    assert_eq!(sent.headers["x-api-key"], "sk-ant-secret-0001");
    assert_eq!(sent.headers["anthropic-version"], "2023-06-01");
    assert!(sent.headers.get("authorization").is_none());
    assert_eq!(sent.json().unwrap()["max_tokens"], 64);

    // A wrong key: the 401 comes back OpenAI-shaped, without the key.
    let up = Upstream::builder()
        .provider(
            toml::from_str(&format!(
                "name = \"c\"\nkind = \"anthropic\"\nbase_url = \"{}\"",
                server.base_url()
            ))
            .unwrap(),
        )
        .api_key("c", "sk-ant-wrong-key-999")
        .model("claude", "c", None)
        .build()
        .unwrap();
    let resp = call(
        &up,
        json!({"model":"claude","messages":[{"role":"user","content":"hello"}]}),
    )
    .await;
    assert_eq!(resp.status(), 401);
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["code"], "invalid_api_key");
    assert!(!text.contains("sk-ant-wrong"));
}

#[test]
fn bad_anthropic_settings_are_refused_at_build() {
    let bad = |anthropic: &str| {
        let config: ProviderConfig = toml::from_str(&format!(
            "name = \"c\"\nkind = \"anthropic\"\nbase_url = \"https://api.anthropic.com/v1\"\nanthropic = {anthropic}"
        ))
        .unwrap();
        Upstream::builder().provider(config).build().unwrap_err()
    };
    assert!(
        bad("{ default_max_tokens = 0 }")
            .to_string()
            .contains("default_max_tokens")
    );
    assert!(
        bad("{ version = \"2023\\n06\" }")
            .to_string()
            .contains("version")
    );
    assert!(
        toml::from_str::<ProviderConfig>(
            "name = \"c\"\nkind = \"anthropic\"\nbase_url = \"x\"\nanthropic = { versoin = \"1\" }"
        )
        .is_err(),
        "unknown settings are refused"
    );
}
