//! JSON answers: shape, usage arithmetic, determinism, routes, bad input and authentication.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{bytes, call, chat, json, simple};
use http::{Request, StatusCode};
use rampart_core::openai::ChatCompletion;
use rampart_core::{Body, ChatRequest};
use rampart_mock::{Answer, MockConfig, MockProvider, count_prompt_tokens};
use serde_json::json;

fn parsed(v: &serde_json::Value) -> ChatRequest {
    ChatRequest::parse(Bytes::from(v.to_string())).unwrap()
}

#[tokio::test]
async fn json_answer_and_usage_arithmetic() {
    let mock = MockProvider::default();
    let body = json!({
        "model": "gpt-4.1-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},          // 14 chars -> 4 + 4
            {"role": "user", "content": "Say something about Tower."} // 26 chars -> 7 + 4
        ]
    });
    let resp = call(&mock, chat(&body)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let raw = bytes(resp).await;
    // The core wire type reads it.
    let typed: ChatCompletion = serde_json::from_slice(&raw).unwrap();
    assert_eq!(typed.object, "chat.completion");
    assert_eq!(typed.model, "gpt-4.1-mini");
    assert!(typed.id.starts_with("chatcmpl-mock-"), "{}", typed.id);
    assert!(typed.created > 1_600_000_000);
    assert_eq!(typed.choices.len(), 1);
    let choice = &typed.choices[0];
    assert_eq!(choice.message.role, "assistant");
    assert_eq!(choice.finish_reason.as_deref(), Some("stop"));
    let text = choice.message.text().into_owned();
    assert_eq!(text.split_whitespace().count(), 16);
    assert!(text.ends_with('.'));

    let usage = typed.usage.unwrap();
    let prompt = (4 + 4) + (7 + 4) + 3;
    assert_eq!(usage.prompt_tokens, prompt);
    assert_eq!(count_prompt_tokens(&parsed(&body)), prompt);
    assert_eq!(usage.completion_tokens, 16);
    assert_eq!(usage.total_tokens, prompt + 16);
    assert_eq!(usage.cached_tokens(), 0);
    assert_eq!(usage.reasoning_tokens(), 0);
    let v: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(
        v["usage"]["completion_tokens_details"]["reasoning_tokens"],
        0
    );

    // Answer predicts all of it.
    let a = Answer::for_request(&parsed(&body), 16).unwrap();
    assert_eq!(a.text(0), text);
    assert_eq!(a.usage(), usage);
}

#[tokio::test]
async fn ids_count_up() {
    let mock = MockProvider::default();
    let a = json(call(&mock, chat(&simple("m", "x"))).await.unwrap()).await;
    let b = json(call(&mock, chat(&simple("m", "x"))).await.unwrap()).await;
    assert_eq!(a["id"], "chatcmpl-mock-1");
    assert_eq!(b["id"], "chatcmpl-mock-2");
}

#[tokio::test]
async fn max_tokens_sets_the_length_and_finish_reason() {
    let mock = MockProvider::default();
    let mut body = simple("m", "hello");
    body["max_tokens"] = json!(7);
    let v = json(call(&mock, chat(&body)).await.unwrap()).await;
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(text.split_whitespace().count(), 7);
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 7);

    // max_completion_tokens wins over max_tokens.
    body["max_completion_tokens"] = json!(3);
    let v = json(call(&mock, chat(&body)).await.unwrap()).await;
    assert_eq!(v["usage"]["completion_tokens"], 3);

    // Zero tokens: empty content.
    let mut body = simple("m", "hello");
    body["max_tokens"] = json!(0);
    let v = json(call(&mock, chat(&body)).await.unwrap()).await;
    assert_eq!(v["choices"][0]["message"]["content"], "");
    assert_eq!(v["usage"]["completion_tokens"], 0);
    assert_eq!(v["usage"]["total_tokens"], v["usage"]["prompt_tokens"]);
}

#[tokio::test]
async fn output_tokens_config_is_the_default_length() {
    let mock = MockProvider::new(MockConfig {
        output_tokens: Some(40),
        ..Default::default()
    });
    let v = json(call(&mock, chat(&simple("m", "hi"))).await.unwrap()).await;
    assert_eq!(v["usage"]["completion_tokens"], 40);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(text.split_whitespace().count(), 40);
}

#[tokio::test]
async fn answers_are_deterministic_and_depend_on_prompt_and_model() {
    let mock = MockProvider::default();
    let content = |v: serde_json::Value| {
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let a1 = content(json(call(&mock, chat(&simple("m", "alpha"))).await.unwrap()).await);
    let a2 = content(json(call(&mock, chat(&simple("m", "alpha"))).await.unwrap()).await);
    let b = content(json(call(&mock, chat(&simple("m", "beta"))).await.unwrap()).await);
    let c = content(json(call(&mock, chat(&simple("other", "alpha"))).await.unwrap()).await);
    assert_eq!(a1, a2);
    assert_ne!(a1, b);
    assert_ne!(a1, c);
    // Another provider instance says the same.
    let other = MockProvider::default();
    let a3 = content(json(call(&other, chat(&simple("m", "alpha"))).await.unwrap()).await);
    assert_eq!(a1, a3);
}

#[tokio::test]
async fn unicode_and_content_parts_count_chars() {
    let mock = MockProvider::default();
    let body = json!({"model": "m", "messages": [
        {"role": "user", "content": "héllo wörld ✓"},  // 13 chars -> 4 + 4
        {"role": "user", "content": [{"type": "text", "text": "abc"}, {"type": "text", "text": "de"}]}, // "abc\nde" = 6 -> 2 + 4
        {"role": "assistant", "tool_calls": []} // no text -> 0 + 4
    ]});
    let v = json(call(&mock, chat(&body)).await.unwrap()).await;
    assert_eq!(v["usage"]["prompt_tokens"], 8 + 6 + 4 + 3);
    assert_eq!(count_prompt_tokens(&parsed(&body)), 21);
}

#[tokio::test]
async fn n_choices_multiply_completion_tokens() {
    let mock = MockProvider::default();
    let mut body = simple("m", "hi");
    body["n"] = json!(3);
    body["max_tokens"] = json!(4);
    let v = json(call(&mock, chat(&body)).await.unwrap()).await;
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert_eq!(
            c["message"]["content"]
                .as_str()
                .unwrap()
                .split_whitespace()
                .count(),
            4
        );
    }
    assert_eq!(v["usage"]["completion_tokens"], 12);
    body["n"] = json!(500);
    let resp = call(&mock, chat(&body)).await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(json(resp).await["error"]["param"], "n");
}

#[tokio::test]
async fn bad_input_is_an_openai_400_and_is_not_counted() {
    let mock = MockProvider::default();
    let req = Request::post("/v1/chat/completions")
        .body(Body::from("{nope"))
        .unwrap();
    let resp = call(&mock, req).await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let v = json(resp).await;
    assert_eq!(v["error"]["code"], "invalid_json");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"].is_string());
    assert!(v["error"].get("param").is_some());

    let resp = call(&mock, chat(&json!({"model": "m"}))).await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(json(resp).await["error"]["param"], "messages");

    // Messages that do not type.
    let resp = call(&mock, chat(&json!({"model": "m", "messages": [1, 2]})))
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(json(resp).await["error"]["param"], "messages");

    // The last one parsed (it has a model): counted; the others not.
    assert_eq!(mock.total_calls(), 1);
    // Every chat request is recorded, even a bad one.
    assert_eq!(
        mock.last_request().unwrap().body,
        r#"{"messages":[1,2],"model":"m"}"#
    );
}

#[tokio::test]
async fn other_routes_are_404_and_models_are_listed() {
    let mock = MockProvider::default();
    let resp = call(
        &mock,
        Request::get("/v1/chat/completions")
            .body(Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 404);
    let v = json(resp).await;
    assert_eq!(
        v["error"]["message"],
        "Invalid URL (GET /v1/chat/completions)"
    );
    assert_eq!(v["error"]["type"], "invalid_request_error");

    let resp = call(
        &mock,
        Request::post("/v1/embeddings").body(Body::empty()).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 404);

    // Both chat paths work.
    let req = Request::post("/chat/completions")
        .body(Body::from(simple("seen-model", "x").to_string()))
        .unwrap();
    assert_eq!(call(&mock, req).await.unwrap().status(), 200);

    let resp = call(
        &mock,
        Request::get("/v1/models").body(Body::empty()).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let v = json(resp).await;
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    for m in rampart_mock::DEFAULT_MODELS {
        assert!(ids.contains(&m), "{ids:?}");
    }
    assert!(ids.contains(&"seen-model"));
    assert_eq!(v["data"][0]["object"], "model");
}

#[tokio::test]
async fn api_key_is_required_when_configured() {
    let mock = MockProvider::new(MockConfig {
        require_api_key: Some("sk-mock".into()),
        ..Default::default()
    });
    let resp = call(&mock, chat(&simple("m", "x"))).await.unwrap();
    assert_eq!(resp.status(), 401);
    let v = json(resp).await;
    assert_eq!(v["error"]["code"], "invalid_api_key");
    assert_eq!(v["error"]["type"], "invalid_request_error");

    let mut req = chat(&simple("m", "x"));
    req.headers_mut()
        .insert("authorization", "Bearer wrong".parse().unwrap());
    let resp = call(&mock, req).await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(!json(resp).await.to_string().contains("wrong"));

    let mut req = chat(&simple("m", "x"));
    req.headers_mut()
        .insert("authorization", "Bearer sk-mock".parse().unwrap());
    assert_eq!(call(&mock, req).await.unwrap().status(), 200);

    let resp = call(
        &mock,
        Request::get("/v1/models").body(Body::empty()).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 401);
    // Received (and counted) even when refused.
    assert_eq!(mock.calls("m"), 3);
}

#[tokio::test]
async fn a_parsed_request_extension_is_answered_as_rewritten() {
    let mock = MockProvider::default();
    let original = simple("alias", "x");
    let chat_req = parsed(&original).with_model("real-model");
    let mut req = Request::post("/v1/chat/completions")
        .body(Body::from(original.to_string()))
        .unwrap();
    req.extensions_mut().insert(Arc::new(chat_req.clone()));
    let v = json(call(&mock, req).await.unwrap()).await;
    assert_eq!(v["model"], "real-model");
    assert_eq!(mock.calls("real-model"), 1);
    assert_eq!(mock.calls("alias"), 0);
    assert_eq!(mock.last_request().unwrap().body, chat_req.to_bytes());
}

#[tokio::test]
async fn config_deserialises_with_humantime_durations() {
    let c: MockConfig = serde_json::from_value(json!({
        "latency": {"base": "20ms", "chunk_gap": "1s 5ms"},
        "output_tokens": 8
    }))
    .unwrap();
    assert_eq!(c.latency.base, std::time::Duration::from_millis(20));
    assert_eq!(c.latency.chunk_gap, std::time::Duration::from_millis(1005));
    assert_eq!(c.latency.jitter, std::time::Duration::ZERO);
    assert_eq!(c.output_tokens, Some(8));
    assert_eq!(c.require_api_key, None);
    let empty: MockConfig = serde_json::from_value(json!({})).unwrap();
    assert!(empty.latency.is_zero());
}
