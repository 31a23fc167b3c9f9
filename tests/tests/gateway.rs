//! End-to-end: the gateway (built from its config) on loopback, called over HTTP, with
//! simulated providers behind it, in-process and over HTTP.

// Test code: a failed unwrap is a failed test, also in helpers outside #[test] functions.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use http::StatusCode;
use serde_json::json;

#[tokio::test]
async fn json_completion_through_the_default_config() {
    let gw = TestGateway::start(&fast_defaults()).await;
    let r = gw
        .post(
            "/v1/chat/completions",
            HELLO,
            &[("x-request-id", "req-123")],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("x-rampart-model"), Some("gpt-4.1"));
    assert_eq!(r.header("x-rampart-provider"), Some("openai-sim"));
    assert_eq!(r.header("x-request-id"), Some("req-123"));
    let v = r.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "gpt-4.1");
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!text.is_empty());
    // Usage is the simulated provider's exact count for this prompt and answer.
    let chat =
        rampart_core::ChatRequest::parse(bytes::Bytes::from_static(HELLO.as_bytes())).unwrap();
    assert_eq!(
        v["usage"]["prompt_tokens"].as_u64().unwrap(),
        rampart_mock::count_prompt_tokens(&chat)
    );
    let u = &v["usage"];
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
    );
    assert_eq!(gw.mock("openai-sim").calls("gpt-4.1"), 1);
    assert_eq!(gw.mock("anthropic-sim").total_calls(), 0);

    // A request id is made when the client sends none.
    let r = gw.post("/v1/chat/completions", HELLO, &[]).await;
    assert!(r.header("x-request-id").is_some_and(|id| id.len() >= 16));
}

#[tokio::test]
async fn streams_hide_usage_unless_asked() {
    let gw = TestGateway::start(&fast_defaults()).await;
    let body = json!({"model":"claude-sonnet-4.5","stream":true,"max_tokens":5,
        "messages":[{"role":"user","content":"Stream five words"}]});
    let r = gw.chat(body.clone()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/event-stream")
    );
    let data = sse_data(&r.body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<serde_json::Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| !c["choices"].as_array().unwrap().is_empty()),
        "no usage-only chunk when the client did not ask for it"
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text.split_whitespace().count(), 5);
    // The gateway asked upstream for usage all the same.
    let sent = gw.mock("anthropic-sim").last_request().unwrap();
    let sent: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(sent["stream_options"]["include_usage"], true);

    let mut asked = body;
    asked["stream_options"] = json!({"include_usage": true});
    let r = gw.chat(asked).await;
    let data = sse_data(&r.body);
    let usage: serde_json::Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
    assert_eq!(usage["usage"]["completion_tokens"], 5);
}

#[tokio::test]
async fn bad_requests_are_openai_shaped_400s() {
    let gw = TestGateway::start(&fast_defaults()).await;
    let r = gw
        .post("/v1/chat/completions", "{\"model\": \"gpt-4.1\", ", &[])
        .await;
    assert_eq!(r.status, 400);
    let v = r.json();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["code"], "invalid_json");
    assert!(v["error"]["message"].as_str().unwrap().contains("JSON"));
    assert_eq!(r.header("x-rampart-error-source"), Some("gateway"));

    let r = gw
        .post(
            "/v1/chat/completions",
            r#"{"messages":[{"role":"user","content":"x"}]}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "model");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'model'")
    );

    let r = gw
        .post("/v1/chat/completions", r#"{"model":"gpt-4.1"}"#, &[])
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "messages");

    let r = gw
        .post(
            "/v1/chat/completions",
            r#"{"model":"gpt-4.1","messages":[{"role":"user","content":"x"}],"max_tokens":"many"}"#,
            &[],
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["param"], "max_tokens");
}

#[tokio::test]
async fn deep_nesting_is_refused_and_the_server_stays_up() {
    let gw = TestGateway::start(&fast_defaults()).await;
    for body in [
        "[".repeat(10_000) + &"]".repeat(10_000),
        format!(
            r#"{{"model":"gpt-4.1","messages":[{}{}]}}"#,
            "{\"a\":".repeat(10_000),
            "}".repeat(10_000)
        ),
        format!(
            r#"{{"model":"gpt-4.1","messages":[{{"role":"user","content":"x"}}],"extra":{}{}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        ),
    ] {
        let r = gw.post("/v1/chat/completions", body, &[]).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    }
    let r = gw.get("/health", &[]).await;
    assert_eq!(r.status, 200);
    let r = gw.post("/v1/chat/completions", HELLO, &[]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn unknown_model_lists_the_configured_ones() {
    let gw = TestGateway::start(&fast_defaults()).await;
    let r = gw
        .chat(json!({"model":"gpt-9","messages":[{"role":"user","content":"x"}]}))
        .await;
    assert_eq!(r.status, 404);
    let v = r.json();
    assert_eq!(v["error"]["code"], "model_not_found");
    let msg = v["error"]["message"].as_str().unwrap();
    for m in [
        "deepseek-v3.2",
        "gemini-2.5-flash",
        "gpt-4.1",
        "claude-sonnet-4.5",
    ] {
        assert!(msg.contains(m), "{msg}");
    }
    let total: u64 = gw.mocks.values().map(|m| m.total_calls()).sum();
    assert_eq!(total, 0, "no provider was called");
}

#[tokio::test]
async fn oversized_bodies_get_413_with_and_without_content_length() {
    let config = fast_defaults().replace("max_body_bytes = 4194304", "max_body_bytes = 1024");
    let gw = TestGateway::start(&config).await;
    let big = format!(
        r#"{{"model":"gpt-4.1","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(4096)
    );
    let r = gw.post("/v1/chat/completions", big.clone(), &[]).await;
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["code"], "request_too_large");

    // Chunked transfer encoding: no Content-Length to check up front.
    let chunks = futures_util::stream::iter(
        big.into_bytes()
            .chunks(512)
            .map(|c| {
                Ok::<_, std::convert::Infallible>(http_body::Frame::data(
                    bytes::Bytes::copy_from_slice(c),
                ))
            })
            .collect::<Vec<_>>(),
    );
    let body = http_body_util::StreamBody::new(chunks);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::StreamBody<_>>();
    let req = http::Request::post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    assert!(req.headers().get("content-length").is_none());
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 413);
    assert_eq!(gw.mock("openai-sim").total_calls(), 0);
}

const KEYED: &str = r#"
[[virtual_keys]]
tenant = "acme"
key_sha256 = "KEYHASH"
"#;

#[tokio::test]
async fn virtual_keys_gate_every_route_but_health() {
    let hash = rampart_core::VirtualKeys::digest("sk-rampart-acme-1");
    let config = fast_defaults() + &KEYED.replace("KEYHASH", &hash);
    let gw = TestGateway::start(&config).await;

    let r = gw.post("/v1/chat/completions", HELLO, &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");

    let r = gw
        .post(
            "/v1/chat/completions",
            HELLO,
            &[("authorization", "Bearer sk-wrong-secret-value")],
        )
        .await;
    assert_eq!(r.status, 401);
    assert!(!r.text().contains("sk-wrong-secret-value"));
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");

    let r = gw
        .post(
            "/v1/chat/completions",
            HELLO,
            &[("authorization", "Bearer sk-rampart-acme-1")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    let r = gw.get("/v1/models", &[]).await;
    assert_eq!(r.status, 401);
    let r = gw
        .get(
            "/v1/models",
            &[("authorization", "Bearer sk-rampart-acme-1")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 4);
    assert_eq!(gw.get("/health", &[]).await.status, 200);
    assert_eq!(gw.mock("openai-sim").calls("gpt-4.1"), 1);
}

#[tokio::test]
async fn models_health_and_unknown_routes() {
    let gw = TestGateway::start(&fast_defaults()).await;
    let r = gw.get("/v1/models", &[]).await;
    let v = r.json();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "deepseek-v3.2",
            "gemini-2.5-flash",
            "gpt-4.1",
            "claude-sonnet-4.5"
        ]
    );
    assert_eq!(gw.get("/health", &[]).await.json()["status"], "ok");
    let r = gw.get("/v1/nope", &[]).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "unknown_url");
    let r = gw.get("/v1/chat/completions", &[]).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
}

fn http_provider(name: &str, base_url: &str, extra: &str) -> String {
    format!(
        r#"
[[providers]]
name = "{name}"
kind = "openai"
base_url = "{base_url}"
{extra}

[[models]]
name = "remote-model"
provider = "{name}"
upstream_name = "upstream-model-v1"
"#
    )
}

#[tokio::test]
async fn http_provider_gets_the_provider_key_unknown_fields_and_mapped_model() {
    let mock = rampart_mock::MockProvider::new(rampart_mock::MockConfig {
        require_api_key: Some("sk-provider-secret-0001".into()),
        ..Default::default()
    });
    let server = mock.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let config = http_provider(
        "remote",
        &server.base_url(),
        "api_key_env = \"RAMPART_TEST_KEY_FORWARD\"",
    );
    let gw = TestGateway::start_with_secrets(
        parse_config(&config),
        &[("RAMPART_TEST_KEY_FORWARD", "sk-provider-secret-0001")],
    )
    .await;
    let body = r#"{"model":"remote-model","messages":[{"role":"user","content":"hi"}],"x_vendor_flag":{"deep":[1,2,{"k":"v"}]},"logit_bias":{"50256":-100}}"#;
    let r = gw
        .post(
            "/v1/chat/completions",
            body,
            &[
                ("authorization", "Bearer client-key-must-not-leak"),
                ("cookie", "session=abc"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-rampart-model"), Some("remote-model"));
    assert_eq!(r.header("x-rampart-provider"), Some("remote"));
    assert!(r.headers.get("set-cookie").is_none());
    let sent = mock.last_request().unwrap();
    assert_eq!(
        sent.headers.get("authorization").unwrap(),
        "Bearer sk-provider-secret-0001"
    );
    assert!(sent.headers.get("cookie").is_none());
    let sent: serde_json::Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(sent["model"], "upstream-model-v1");
    assert_eq!(sent["x_vendor_flag"], json!({"deep":[1,2,{"k":"v"}]}));
    assert_eq!(sent["logit_bias"], json!({"50256":-100}));
    assert!(!r.text().contains("sk-provider-secret"));
    assert_eq!(mock.calls("upstream-model-v1"), 1);
}

#[tokio::test]
async fn refused_connection_is_a_502_without_the_url() {
    let addr = closed_port().await;
    let base = format!("http://{addr}/v1");
    let gw = TestGateway::start(&http_provider("down", &base, "")).await;
    let r = gw
        .chat(json!({"model":"remote-model","messages":[{"role":"user","content":"x"}]}))
        .await;
    assert_eq!(r.status, 502);
    assert_eq!(r.header("x-rampart-error-source"), Some("upstream"));
    let v = r.json();
    assert_eq!(v["error"]["code"], "upstream_error");
    let text = r.text();
    assert!(!text.contains(&addr.port().to_string()), "{text}");
    assert!(!text.contains("127.0.0.1"), "{text}");
    assert!(!text.contains("http://"), "{text}");
}

async fn raw_error_upstream(status_line: &str, body: &str) -> std::net::SocketAddr {
    let response = format!(
        "HTTP/1.1 {status_line}\r\ncontent-type: application/json\r\nset-cookie: acct=1\r\nopenai-organization: org-secret\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    raw_upstream(Box::leak(response.into_boxed_str())).await
}

async fn keyed_gateway(addr: std::net::SocketAddr) -> TestGateway {
    let base = format!("http://{addr}/v1");
    TestGateway::start_with_secrets(
        parse_config(&http_provider(
            "flaky",
            &base,
            "api_key_env = \"RAMPART_TEST_KEY_500\"",
        )),
        &[("RAMPART_TEST_KEY_500", "sk-provider-secret-0500")],
    )
    .await
}

const SECRETS: [&str; 4] = [
    "sk-provider-secret-0500",
    "10.0.0.7",
    "127.0.0.1",
    "http://",
];

#[tokio::test]
async fn upstream_4xx_passes_through_sanitised() {
    // The classic: a provider echoing the key it was given, with its own URLs.
    let addr = raw_error_upstream(
        "401 Unauthorized",
        r#"{"error":{"message":"Incorrect API key provided: sk-provider-secret-0500 (see http://10.0.0.7:9000/docs from 127.0.0.1)","type":"invalid_request_error","code":"invalid_api_key"}}"#,
    )
    .await;
    let gw = keyed_gateway(addr).await;
    let r = gw
        .chat(json!({"model":"remote-model","messages":[{"role":"user","content":"x"}]}))
        .await;
    // Not retried, not failed over: the upstream's status and code, cleaned.
    assert_eq!(r.status, 401);
    assert_eq!(r.header("x-rampart-error-source"), Some("upstream"));
    assert_eq!(r.header("x-rampart-attempts"), Some("1"));
    assert!(r.headers.get("set-cookie").is_none());
    assert!(r.headers.get("openai-organization").is_none());
    let v = r.json();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["code"], "invalid_api_key");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.starts_with("Incorrect API key provided"), "{msg}");
    for secret in SECRETS {
        assert!(!r.text().contains(secret), "{secret} leaked: {}", r.text());
    }
}

#[tokio::test]
async fn upstream_5xx_after_retries_is_an_openai_error_without_secrets() {
    let addr = raw_error_upstream(
        "500 Internal Server Error",
        r#"{"error":{"message":"backend http://10.0.0.7:9000/x failed for key sk-provider-secret-0500 on 127.0.0.1","type":"server_error","code":"internal_failure"}}"#,
    )
    .await;
    let gw = keyed_gateway(addr).await;
    let r = gw
        .chat(json!({"model":"remote-model","messages":[{"role":"user","content":"x"}]}))
        .await;
    // Retried on the only candidate (3 attempts), then the upstream's status.
    assert_eq!(r.status, 500);
    assert_eq!(r.header("x-rampart-error-source"), Some("upstream"));
    assert_eq!(r.header("x-rampart-attempts"), Some("3"));
    assert!(r.headers.get("set-cookie").is_none());
    let v = r.json();
    assert_eq!(v["error"]["code"], "upstream_error");
    assert!(v["error"]["message"].as_str().unwrap().contains('3'), "{v}");
    for secret in SECRETS {
        assert!(!r.text().contains(secret), "{secret} leaked: {}", r.text());
    }
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let addr = raw_upstream(
        "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://169.254.169.254/latest/meta-data\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    ).await;
    let gw = TestGateway::start(&http_provider("redir", &format!("http://{addr}/v1"), "")).await;
    let r = gw
        .chat(json!({"model":"remote-model","messages":[{"role":"user","content":"x"}]}))
        .await;
    assert_eq!(r.status, 502);
    assert!(r.headers.get("location").is_none());
    assert!(!r.text().contains("169.254"));
}

#[tokio::test]
async fn link_local_base_urls_are_refused_at_start() {
    let config = parse_config(&http_provider("meta", "http://169.254.169.254/v1", ""));
    let err = full_gateway::build(config).err().expect("refused");
    assert!(err.contains("meta") && err.contains("link-local"), "{err}");
}

fn parse_config(s: &str) -> full_gateway::GatewayConfig {
    full_gateway::GatewayConfig::parse(s, "test").unwrap()
}

#[tokio::test]
async fn upstream_faults_map_to_openai_errors() {
    let gw = TestGateway::start(&single_attempt()).await;
    let mock = gw.mock("gemini-sim");
    mock.set_fault(
        None,
        rampart_mock::Fault {
            status: Some(StatusCode::TOO_MANY_REQUESTS),
            retry_after: Some(Duration::from_secs(7)),
            failure_rate: 1.0,
            ..Default::default()
        },
    );
    let r = gw
        .chat(json!({"model":"gemini-2.5-flash","messages":[{"role":"user","content":"x"}]}))
        .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("7"));
    assert_eq!(r.header("x-rampart-error-source"), Some("upstream"));
    assert!(r.json()["error"]["message"].is_string());
    // The target now cools down until the provider's Retry-After: refused without a call.
    let r = gw
        .chat(json!({"model":"gemini-2.5-flash","messages":[{"role":"user","content":"x"}]}))
        .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("x-rampart-error-source"), Some("circuit_breaker"));
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=7).contains(&wait), "{wait}");
    assert_eq!(mock.calls("gemini-2.5-flash"), 1);
    gw.breakers.reset("gemini-sim/gemini-2.5-flash");

    mock.set_fault(
        None,
        rampart_mock::Fault {
            reset_before_headers: true,
            failure_rate: 1.0,
            ..Default::default()
        },
    );
    let r = gw
        .chat(json!({"model":"gemini-2.5-flash","messages":[{"role":"user","content":"x"}]}))
        .await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"]["code"], "upstream_error");
    mock.clear_faults();
    let r = gw
        .chat(json!({"model":"gemini-2.5-flash","messages":[{"role":"user","content":"x"}]}))
        .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn body_that_never_arrives_is_a_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = fast_defaults().replace(
        "body_read_timeout = \"30s\"",
        "body_read_timeout = \"300ms\"",
    );
    let gw = TestGateway::start(&config).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n{\"model\":")
        .await
        .unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(read.is_ok(), "the server answered");
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"), "{text}");
}

#[tokio::test]
async fn headers_that_never_complete_close_the_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let config = fast_defaults().replace(
        "header_read_timeout = \"10s\"",
        "header_read_timeout = \"300ms\"",
    );
    let gw = TestGateway::start(&config).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the server closed the connection");
    // hyper may or may not write a 408 before closing; either way nothing reached the stack.
    assert!(out.is_empty() || String::from_utf8_lossy(&out).starts_with("HTTP/1.1 408"));
    assert_eq!(gw.mock("openai-sim").total_calls(), 0);
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_stream_finish() {
    let mut gw = TestGateway::start(&fast_defaults()).await;
    gw.mock("openai-sim").set_latency(rampart_mock::Latency {
        chunk_gap: Duration::from_millis(20),
        ..Default::default()
    });
    let url = gw.url("/v1/chat/completions");
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let req = http::Request::post(url)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            json!({"model":"gpt-4.1","stream":true,"max_tokens":20,"messages":[{"role":"user","content":"long"}]}).to_string(),
        )))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    // Headers are in and the stream is running: ask the server to stop.
    let server = gw.begin_shutdown();
    use http_body_util::BodyExt;
    let body = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .expect("stream finished within the grace period")
        .expect("stream completed without error")
        .to_bytes();
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server stopped")
        .unwrap();
    // New connections are refused once it has stopped.
    assert!(tokio::net::TcpStream::connect(gw.addr).await.is_err());
}

#[tokio::test]
async fn an_open_breaker_stops_calls_to_a_failing_target_only() {
    let gw = TestGateway::start(&single_attempt()).await;
    let openai = gw.mock("openai-sim");
    openai.set_fault(
        Some("gpt-4.1"),
        rampart_mock::Fault::status_code(StatusCode::INTERNAL_SERVER_ERROR),
    );
    let ask = |model: &str| json!({"model": model, "messages":[{"role":"user","content":"x"}]});
    // Five failures in a row (the default config) trip the breaker for openai-sim/gpt-4.1.
    for _ in 0..5 {
        let r = gw.chat(ask("gpt-4.1")).await;
        assert_eq!(r.status, 500);
        assert_eq!(r.header("x-rampart-error-source"), Some("upstream"));
    }
    assert_eq!(openai.calls("gpt-4.1"), 5);
    for _ in 0..20 {
        let r = gw.chat(ask("gpt-4.1")).await;
        assert_eq!(r.status, 503);
        assert_eq!(r.header("x-rampart-error-source"), Some("circuit_breaker"));
        let v = r.json();
        assert_eq!(v["error"]["code"], "upstream_unavailable");
        let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=10).contains(&wait), "{wait}");
    }
    // The upstream call count stopped growing while the breaker is open.
    assert_eq!(openai.calls("gpt-4.1"), 5);
    assert_eq!(
        gw.breakers.state("openai-sim/gpt-4.1"),
        Some(rampart_circuit_breaker::BreakerState::Open)
    );
    // Other targets are untouched.
    let r = gw.chat(ask("claude-sonnet-4.5")).await;
    assert_eq!(r.status, 200);
    // An operator reset lets traffic through again.
    openai.clear_faults();
    gw.breakers.reset("openai-sim/gpt-4.1");
    assert_eq!(gw.chat(ask("gpt-4.1")).await.status, 200);
    assert_eq!(openai.calls("gpt-4.1"), 6);
}

#[tokio::test]
async fn a_stream_cut_mid_way_counts_against_the_breaker_at_its_end() {
    let config = single_attempt().replace("consecutive_failures = 5", "consecutive_failures = 2");
    let gw = TestGateway::start(&config).await;
    let mock = gw.mock("deepseek-sim");
    mock.set_fault(None, rampart_mock::Fault::cut_after(3));
    let body = json!({"model":"deepseek-v3.2","stream":true,"max_tokens":10,"messages":[{"role":"user","content":"x"}]});
    for _ in 0..2 {
        // Headers say 200; the body breaks after three events.
        let resp = gw.post("/v1/chat/completions", body.to_string(), &[]).await;
        assert_eq!(resp.status, 200);
        // Committed at the first content chunk: the break ends the stream with one SSE error
        // event and no [DONE] (never a silent clean end).
        assert!(!resp.body_error);
        let data = sse_data(&resp.body);
        let last: serde_json::Value = serde_json::from_str(data.last().unwrap()).unwrap();
        assert_eq!(last["error"]["code"], "upstream_error");
        assert!(!resp.text().contains("[DONE]"));
    }
    let r = gw.chat(body).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(mock.calls("deepseek-v3.2"), 2);
}

fn with_tenant_limits(limits: &str) -> String {
    fast_defaults().replace(
        "limits = { requests_per_minute = 600, tokens_per_minute = 2000000, concurrency = 64 }",
        limits,
    )
}

#[tokio::test]
async fn tenant_request_limit_caps_upstream_calls() {
    let gw = TestGateway::start(&with_tenant_limits("limits = { requests_per_minute = 3 }")).await;
    for remaining in ["2", "1", "0"] {
        let r = gw.post("/v1/chat/completions", HELLO, &[]).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-ratelimit-limit-requests"), Some("3"));
        assert_eq!(r.header("x-ratelimit-remaining-requests"), Some(remaining));
    }
    for _ in 0..5 {
        let r = gw.post("/v1/chat/completions", HELLO, &[]).await;
        assert_eq!(r.status, 429);
        assert_eq!(r.header("x-rampart-error-source"), Some("rate_limit"));
        assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("0"));
        // One request every 20 s refills: Retry-After is whole seconds, rounded up.
        let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=20).contains(&wait), "{wait}");
        let v = r.json();
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
        assert_eq!(v["error"]["type"], "requests");
    }
    // The simulated provider saw exactly the admitted requests.
    assert_eq!(gw.mock("openai-sim").calls("gpt-4.1"), 3);
}

#[tokio::test]
async fn per_target_limits_mirror_each_provider() {
    let config = single_attempt().replace(
        "limits = { requests_per_minute = 500, tokens_per_minute = 800000 }",
        "limits = { requests_per_minute = 2 }",
    );
    let gw = TestGateway::start(&config).await;
    let ask = |model: &str| json!({"model": model, "messages":[{"role":"user","content":"x"}]});
    assert_eq!(gw.chat(ask("gpt-4.1")).await.status, 200);
    assert_eq!(gw.chat(ask("gpt-4.1")).await.status, 200);
    let r = gw.chat(ask("gpt-4.1")).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-rampart-error-source"), Some("rate_limit"));
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("target"),
        "{}",
        r.text()
    );
    // Other targets keep their own limits.
    assert_eq!(gw.chat(ask("claude-sonnet-4.5")).await.status, 200);
    assert_eq!(gw.mock("openai-sim").calls("gpt-4.1"), 2);
    assert_eq!(gw.mock("anthropic-sim").calls("claude-sonnet-4.5"), 1);
}

#[tokio::test]
async fn tenant_token_limit_reserves_and_settles() {
    let gw = TestGateway::start(&with_tenant_limits("limits = { tokens_per_minute = 1000 }")).await;
    // A request whose own estimate exceeds the whole burst is refused outright.
    let big =
        json!({"model":"gpt-4.1","max_tokens":5000,"messages":[{"role":"user","content":"x"}]});
    let r = gw.chat(big).await;
    assert_eq!(r.status, 429);
    assert!(
        r.header("retry-after").is_none(),
        "waiting would never help"
    );
    let v = r.json();
    assert_eq!(v["error"]["type"], "tokens");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too large"),
        "{v}"
    );
    assert_eq!(gw.mock("openai-sim").total_calls(), 0);

    // 600 tokens reserved (prompt estimate + max_tokens), settled to the real usage.
    let small =
        json!({"model":"gpt-4.1","max_tokens":600,"messages":[{"role":"user","content":"x"}]});
    let r = gw.chat(small.clone()).await;
    assert_eq!(r.status, 200);
    let used = r.json()["usage"]["total_tokens"].as_u64().unwrap();
    let remaining: u64 = r
        .header("x-ratelimit-remaining-tokens")
        .unwrap()
        .parse()
        .unwrap();
    assert!(remaining < 1000 - 600, "reserved up front: {remaining}");
    // The next one needs another 600+ while ~1000 - used are left: refused, type tokens.
    let r = gw.chat(small).await;
    assert_eq!(r.status, 429, "used {used}, {}", r.text());
    assert_eq!(r.json()["error"]["type"], "tokens");
    assert_eq!(gw.mock("openai-sim").calls("gpt-4.1"), 1);
}

#[tokio::test]
async fn tenant_concurrency_is_held_until_the_stream_ends() {
    let gw = TestGateway::start(&with_tenant_limits("limits = { concurrency = 1 }")).await;
    gw.mock("openai-sim").set_latency(rampart_mock::Latency {
        chunk_gap: Duration::from_millis(30),
        ..Default::default()
    });
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let stream = json!({"model":"gpt-4.1","stream":true,"max_tokens":10,"messages":[{"role":"user","content":"x"}]});
    let req = http::Request::post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            stream.to_string(),
        )))
        .unwrap();
    let first = client.request(req).await.unwrap();
    assert_eq!(first.status(), 200);
    // The first stream is still running: its permit is held.
    let r = gw
        .chat(json!({"model":"claude-sonnet-4.5","messages":[{"role":"user","content":"x"}]}))
        .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.json()["error"]["type"], "requests");
    use http_body_util::BodyExt;
    let body = first.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("[DONE]"));
    // Released at the end of the body.
    let mut status = 0;
    for _ in 0..50 {
        status = gw
            .chat(json!({"model":"claude-sonnet-4.5","messages":[{"role":"user","content":"x"}]}))
            .await
            .status
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(status, 200);
}

#[tokio::test]
async fn metrics_are_scraped_in_prometheus_text() {
    // Per-target limit of one request so a refusal is recorded too.
    let config = single_attempt().replace(
        "limits = { requests_per_minute = 1000, tokens_per_minute = 2000000 }",
        "limits = { requests_per_minute = 1 }",
    );
    let gw = TestGateway::start(&config).await;
    let ask = json!({"model":"gemini-2.5-flash","max_tokens":4,"messages":[{"role":"user","content":"x"}]});
    assert_eq!(gw.chat(ask.clone()).await.status, 200);
    assert_eq!(gw.chat(ask).await.status, 429);
    let r = gw.get("/metrics", &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let text = r.text();
    let has = |needle: &str| text.lines().any(|l| l.starts_with(needle));
    assert!(
        has(
            "rampart_requests_total{route=\"explicit\",model=\"gemini-2.5-flash\",provider=\"gemini-sim\",status=\"200\"}"
        ),
        "{text}"
    );
    assert!(
        has(
            "rampart_requests_total{route=\"explicit\",model=\"none\",provider=\"none\",status=\"429\"}"
        ),
        "{text}"
    );
    assert!(
        has("rampart_ratelimit_rejections_total{scope=\"target\"}"),
        "{text}"
    );
    assert!(
        has("rampart_request_duration_seconds_bucket{model=\"gemini-2.5-flash\""),
        "{text}"
    );
    assert!(has("rampart_upstream_ttfb_seconds_bucket"), "{text}");
    assert!(has("rampart_tokens_total{kind=\"completion\"}"), "{text}");
    assert!(
        text.contains("rampart_breaker_state{target=\"gemini-sim/gemini-2.5-flash\"} 0")
            || !has("rampart_breaker_state"),
        "breaker gauges, when present, are per target: {text}"
    );
    // No prompt text or keys in labels.
    assert!(!text.contains("\"x\""));
}

#[tokio::test]
async fn a_failing_primary_falls_back_to_the_next_model() {
    let gw = TestGateway::start(&fast_defaults()).await;
    let openai = gw.mock("openai-sim");
    openai.set_fault(
        Some("gpt-4.1"),
        rampart_mock::Fault::status_code(StatusCode::SERVICE_UNAVAILABLE),
    );
    let r = gw.post("/v1/chat/completions", HELLO, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-rampart-attempts"), Some("2"));
    // gpt-4.1's chain is claude-sonnet-4.5, then deepseek-v3.2.
    assert_eq!(r.header("x-rampart-model"), Some("claude-sonnet-4.5"));
    assert_eq!(r.header("x-rampart-provider"), Some("anthropic-sim"));
    assert_eq!(r.json()["model"], "claude-sonnet-4.5");
    assert_eq!(openai.calls("gpt-4.1"), 1);
    assert_eq!(gw.mock("anthropic-sim").calls("claude-sonnet-4.5"), 1);

    // A 400 is the client's problem: neither retried nor failed over.
    openai.clear_faults();
    // A message without a role: the provider refuses it with a 400.
    let bad = json!({"model":"gpt-4.1","messages":[{"content":"x"}]});
    let before = gw.mock("anthropic-sim").total_calls();
    let r = gw.chat(bad).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.header("x-rampart-attempts"), Some("1"));
    assert_eq!(gw.mock("anthropic-sim").total_calls(), before);
}

#[tokio::test]
async fn a_stream_that_breaks_before_content_falls_back_cleanly() {
    let gw = TestGateway::start(&fast_defaults()).await;
    // The role chunk arrives, then the stream breaks: nothing the client would see yet.
    gw.mock("gemini-sim")
        .set_fault(None, rampart_mock::Fault::cut_after(1));
    let body = json!({"model":"gemini-2.5-flash","stream":true,"max_tokens":6,
        "messages":[{"role":"user","content":"x"}]});
    let r = gw.chat(body).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-rampart-attempts"), Some("2"));
    let data = sse_data(&r.body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<serde_json::Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    // One answer only, entirely from the fallback model.
    assert!(
        chunks.iter().all(|c| c["model"] == "deepseek-v3.2"),
        "{data:?}"
    );
    let roles = chunks
        .iter()
        .filter(|c| c["choices"][0]["delta"]["role"].is_string())
        .count();
    assert_eq!(roles, 1);
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text.split_whitespace().count(), 6);
}

#[tokio::test]
async fn deterministic_answers_are_cached_per_tenant_and_replayed_in_either_shape() {
    let a = rampart_core::VirtualKeys::digest("sk-tenant-a");
    let b = rampart_core::VirtualKeys::digest("sk-tenant-b");
    let config = fast_defaults()
        + &format!(
            "\n[[virtual_keys]]\ntenant = \"a\"\nkey_sha256 = \"{a}\"\n\n[[virtual_keys]]\ntenant = \"b\"\nkey_sha256 = \"{b}\"\n"
        );
    let gw = TestGateway::start(&config).await;
    let mock = gw.mock("deepseek-sim");
    let ask = json!({"model":"deepseek-v3.2","temperature":0,"max_tokens":5,
        "messages":[{"role":"user","content":"What is a gateway?"}]});
    let as_a = [("authorization", "Bearer sk-tenant-a")];
    let as_b = [("authorization", "Bearer sk-tenant-b")];

    let first = gw
        .post("/v1/chat/completions", ask.to_string(), &as_a)
        .await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-rampart-cache"), Some("miss"));
    // Same request, other spelling (key order, number spelling): a hit, no upstream call.
    let respelled = r#"{"messages":[{"content":"What is a gateway?","role":"user"}], "max_tokens":5,"temperature":0.0,"model":"deepseek-v3.2"}"#;
    let hit = gw.post("/v1/chat/completions", respelled, &as_a).await;
    assert_eq!(hit.status, 200);
    assert_eq!(hit.header("x-rampart-cache"), Some("hit"));
    assert_eq!(hit.header("x-rampart-cost-usd"), Some("0"));
    assert_eq!(
        hit.header("x-rampart-route"),
        first.header("x-rampart-route")
    );
    assert_eq!(hit.header("x-rampart-model"), Some("deepseek-v3.2"));
    assert_eq!(hit.json()["choices"], first.json()["choices"]);
    assert_eq!(mock.calls("deepseek-v3.2"), 1);

    // Replayed as SSE for a streaming client (usage chunk only when asked).
    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let r = gw
        .post("/v1/chat/completions", streamed.to_string(), &as_a)
        .await;
    assert_eq!(r.header("x-rampart-cache"), Some("hit"));
    let data = sse_data(&r.body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let text: String = data[..data.len() - 1]
        .iter()
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(
        text,
        first.json()["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
    );
    assert_eq!(mock.calls("deepseek-v3.2"), 1);

    // Another tenant never sees tenant a's entry.
    let r = gw
        .post("/v1/chat/completions", ask.to_string(), &as_b)
        .await;
    assert_eq!(r.header("x-rampart-cache"), Some("miss"));
    assert_eq!(mock.calls("deepseek-v3.2"), 2);

    // Non-deterministic requests bypass the cache; no-store too.
    let mut hot = ask.clone();
    hot["temperature"] = json!(0.7);
    let r = gw
        .post("/v1/chat/completions", hot.to_string(), &as_a)
        .await;
    assert_eq!(r.header("x-rampart-cache"), Some("bypass"));
    let r = gw
        .post(
            "/v1/chat/completions",
            ask.to_string(),
            &[as_a[0], ("cache-control", "no-store")],
        )
        .await;
    assert_eq!(r.header("x-rampart-cache"), Some("bypass"));
    assert_eq!(mock.calls("deepseek-v3.2"), 4);

    // A tenant purges its own entries.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let purge = http::Request::delete(gw.url("/v1/cache"))
        .header("authorization", "Bearer sk-tenant-a")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(client.request(purge).await.unwrap().status(), 200);
    let r = gw
        .post("/v1/chat/completions", ask.to_string(), &as_a)
        .await;
    assert_eq!(r.header("x-rampart-cache"), Some("miss"));
    // Tenant b's entry survived a's purge.
    let r = gw
        .post("/v1/chat/completions", ask.to_string(), &as_b)
        .await;
    assert_eq!(r.header("x-rampart-cache"), Some("hit"));
    assert_eq!(mock.calls("deepseek-v3.2"), 5);
}

#[tokio::test]
async fn a_cache_hit_costs_no_tokens_against_the_tenant_limit() {
    let gw = TestGateway::start(&with_tenant_limits("limits = { tokens_per_minute = 2000 }")).await;
    let ask = json!({"model":"deepseek-v3.2","temperature":0,"max_tokens":500,
        "messages":[{"role":"user","content":"cache me"}]});
    let r = gw.chat(ask.clone()).await;
    assert_eq!(r.header("x-rampart-cache"), Some("miss"));
    let used = r.json()["usage"]["total_tokens"].as_u64().unwrap();
    // Each request reserves ~520 tokens before the cache is consulted (the limiter is above it);
    // hits settle that to zero, so five of them pass where three charged requests would not.
    let mut seen = Vec::new();
    for _ in 0..5 {
        let r = gw.chat(ask.clone()).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-rampart-cache"), Some("hit"));
        // The header is taken at admission (the hit's own reservation still counted).
        seen.push(
            r.header("x-ratelimit-remaining-tokens")
                .unwrap()
                .parse::<u64>()
                .unwrap(),
        );
    }
    // Nothing accumulates: every hit sees the same budget left (refill only adds).
    assert!(seen.windows(2).all(|w| w[1] >= w[0]), "{seen:?}");
    assert!(seen[0] + used < 2000, "{seen:?}");
    assert_eq!(gw.mock("deepseek-sim").calls("deepseek-v3.2"), 1);
}

fn usage_cost(v: &serde_json::Value, price: rampart_core::Price) -> String {
    let usage: rampart_core::Usage = serde_json::from_value(v["usage"].clone()).unwrap();
    rampart_core::pricing::format_usd(price.cost(&usage))
}

#[tokio::test]
async fn auto_routes_by_tier_and_every_answer_carries_its_cost() {
    let gw = TestGateway::start(&fast_defaults()).await;
    let simple = json!({"model":"auto","messages":[{"role":"user","content":"What is the capital of France?"}]});
    let r = gw.chat(simple).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-rampart-route"), Some("auto:simple:cheapest"));
    assert_eq!(r.header("x-rampart-model"), Some("deepseek-v3.2"));
    let deepseek = rampart_core::Price {
        input: 0.28,
        cached_input: Some(0.028),
        output: 0.42,
    };
    assert_eq!(
        r.header("x-rampart-cost-usd").unwrap(),
        usage_cost(&r.json(), deepseek)
    );

    let hard = json!({"model":"auto","messages":[{"role":"user","content":
        "Prove step by step that the square root of 2 is irrational, then analyze the trade-offs of each proof technique and derive a general theorem."}]});
    let r = gw.chat(hard).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let route = r.header("x-rampart-route").unwrap();
    assert!(route.starts_with("auto:complex:"), "{route}");
    assert_eq!(
        r.header("x-rampart-model"),
        Some("gpt-4.1"),
        "the cheapest complex model"
    );
    let gpt = rampart_core::Price {
        input: 2.0,
        cached_input: Some(0.5),
        output: 8.0,
    };
    assert_eq!(
        r.header("x-rampart-cost-usd").unwrap(),
        usage_cost(&r.json(), gpt)
    );

    // An explicit model is served as asked.
    let r = gw.post("/v1/chat/completions", HELLO, &[]).await;
    assert_eq!(r.header("x-rampart-route"), Some("explicit"));
    assert_eq!(r.header("x-rampart-model"), Some("gpt-4.1"));

    // Streams carry route and model; their cost is counted at the end of the body.
    let before = gw.get("/v1/spend", &[]).await.json()["total_usd"]
        .as_str()
        .unwrap()
        .parse::<f64>()
        .unwrap();
    let stream = json!({"model":"auto","stream":true,"messages":[{"role":"user","content":"Name a color."}]});
    let r = gw.chat(stream).await;
    assert_eq!(r.header("x-rampart-route"), Some("auto:simple:cheapest"));
    assert_eq!(r.header("x-rampart-model"), Some("deepseek-v3.2"));
    assert!(sse_data(&r.body).last().is_some_and(|d| d == "[DONE]"));
    let mut after = before;
    for _ in 0..50 {
        after = gw.get("/v1/spend", &[]).await.json()["total_usd"]
            .as_str()
            .unwrap()
            .parse::<f64>()
            .unwrap();
        if after > before {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(after > before, "stream spend recorded: {before} -> {after}");
}

#[tokio::test]
async fn budgets_downgrade_or_refuse_per_tenant() {
    let a = rampart_core::VirtualKeys::digest("sk-frugal");
    let b = rampart_core::VirtualKeys::digest("sk-strict");
    // $0.001 a day each: one gpt-4.1 answer of 100 tokens (~$0.0008) fits, a second does not.
    let config = fast_defaults()
        + &format!(
            r#"
[router.budgets.tenants.frugal]
daily_usd = 0.001
action = "downgrade"

[router.budgets.tenants.strict]
daily_usd = 0.001
action = "refuse"
status = 402

[[virtual_keys]]
tenant = "frugal"
key_sha256 = "{a}"

[[virtual_keys]]
tenant = "strict"
key_sha256 = "{b}"
"#
        );
    let gw = TestGateway::start(&config).await;
    let ask = json!({"model":"gpt-4.1","max_tokens":100,"messages":[{"role":"user","content":"Write a haiku."}]}).to_string();
    let frugal = [("authorization", "Bearer sk-frugal")];
    let strict = [("authorization", "Bearer sk-strict")];

    let r = gw.post("/v1/chat/completions", ask.clone(), &frugal).await;
    assert_eq!(r.header("x-rampart-model"), Some("gpt-4.1"));
    let r = gw.post("/v1/chat/completions", ask.clone(), &frugal).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("x-rampart-model"),
        Some("deepseek-v3.2"),
        "downgraded to the cheapest model"
    );
    assert!(
        r.header("x-rampart-route")
            .unwrap()
            .ends_with(";downgraded=budget")
    );

    let r = gw.post("/v1/chat/completions", ask.clone(), &strict).await;
    assert_eq!(r.status, 200);
    let r = gw.post("/v1/chat/completions", ask, &strict).await;
    assert_eq!(r.status, 402);
    assert_eq!(r.header("x-rampart-error-source"), Some("budget"));
    assert_eq!(r.json()["error"]["code"], "budget_exceeded");

    // Each tenant sees its own spend only.
    let spent = gw.get("/v1/spend", &strict).await.json();
    assert_eq!(spent["tenant"], "strict");
    assert!(
        spent["today"]["spent_usd"]
            .as_str()
            .unwrap()
            .parse::<f64>()
            .unwrap()
            <= 0.001
    );
}

#[tokio::test]
async fn sighup_reload_applies_a_valid_file_and_refuses_a_broken_one() {
    let dir = std::env::temp_dir().join(format!("rampart-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gateway.toml");
    std::fs::write(&path, fast_defaults()).unwrap();
    let config = full_gateway::GatewayConfig::load(&path).unwrap();
    let gateway = full_gateway::build(config.clone()).unwrap();
    let routing = gateway.routing.clone();
    let price = |h: &rampart_cost_router::CostRouterHandle| {
        h.catalog().get("deepseek-v3.2").unwrap().price.output
    };
    assert_eq!(price(&routing), 0.42);

    // New prices take effect without rebuilding the stack.
    std::fs::write(
        &path,
        fast_defaults().replace(
            "price = { input = 0.28, cached_input = 0.028, output = 0.42 }",
            "price = { input = 0.27, cached_input = 0.07, output = 1.10 }",
        ),
    )
    .unwrap();
    let running = full_gateway::reload(&path, &config, &routing).unwrap();
    assert_eq!(price(&routing), 1.10);

    // A broken file is refused, naming the problem; the running config stays.
    std::fs::write(
        &path,
        fast_defaults().replace("tier = \"simple\"", "tier = \"trivial\""),
    )
    .unwrap();
    let err = full_gateway::reload(&path, &running, &routing).unwrap_err();
    assert!(
        err.contains("gateway.toml") && err.contains("trivial"),
        "{err}"
    );
    assert_eq!(price(&routing), 1.10);

    // Moving a model to another provider needs a restart (the upstream is not rebuilt).
    std::fs::write(
        &path,
        fast_defaults().replace("provider = \"deepseek-sim\"", "provider = \"gemini-sim\""),
    )
    .unwrap();
    let err = full_gateway::reload(&path, &running, &routing).unwrap_err();
    assert!(err.contains("restart"), "{err}");
}
