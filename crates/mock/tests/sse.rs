//! SSE streams: role chunk, content chunks, finish chunk, usage chunk only when asked, `[DONE]`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // helpers outside #[test] fns

mod common;

use bytes::Bytes;
use common::{bytes, call, chat, events, frames, json, simple, streamed_content};
use rampart_core::ChatRequest;
use rampart_core::openai::ChatCompletionChunk;
use rampart_mock::{Answer, MockProvider};
use serde_json::{Value, json};

fn chunks(evs: &[String]) -> Vec<Value> {
    evs.iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

#[tokio::test]
async fn stream_shape_without_usage() {
    let mock = MockProvider::default();
    let mut body = simple("mock-small", "tell me a story");
    body["stream"] = json!(true);
    body["max_tokens"] = json!(5);
    let resp = call(&mock, chat(&body)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let (frames, err) = frames(resp).await;
    assert!(err.is_none());
    // One event per frame.
    for f in &frames {
        assert!(f.starts_with(b"data: ") && f.ends_with(b"\n\n"), "{f:?}");
        assert_eq!(events(f).len(), 1);
    }
    let all: Vec<u8> = frames.concat();
    let evs = events(&all);
    // role + 5 content + finish + [DONE]
    assert_eq!(evs.len(), 8, "{evs:#?}");
    assert_eq!(evs.last().unwrap(), "[DONE]");
    let cs = chunks(&evs);
    for c in &cs {
        // Every chunk reads as the core wire type, without a usage member.
        let typed: ChatCompletionChunk = serde_json::from_value(c.clone()).unwrap();
        assert_eq!(typed.object, "chat.completion.chunk");
        assert_eq!(typed.model, "mock-small");
        assert!(c.get("usage").is_none(), "{c}");
        assert_eq!(c["id"], cs[0]["id"]);
    }
    assert_eq!(cs[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(cs[0]["choices"][0]["delta"]["content"], "");
    assert_eq!(cs[0]["choices"][0]["finish_reason"], Value::Null);
    for c in &cs[1..6] {
        let content = c["choices"][0]["delta"]["content"].as_str().unwrap();
        assert_eq!(content.split_whitespace().count(), 1, "{content:?}");
        assert!(c["choices"][0]["delta"].get("role").is_none());
        assert_eq!(c["choices"][0]["finish_reason"], Value::Null);
    }
    let finish = &cs[6];
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    assert_eq!(finish["choices"][0]["finish_reason"], "length");

    // The stream says what the JSON answer says.
    let mut plain = body.clone();
    plain["stream"] = json!(false);
    let v = json(call(&mock, chat(&plain)).await.unwrap()).await;
    assert_eq!(
        streamed_content(&cs),
        v["choices"][0]["message"]["content"].as_str().unwrap()
    );
    assert!(streamed_content(&cs).ends_with('.'));
}

#[tokio::test]
async fn usage_chunk_only_when_asked() {
    let mock = MockProvider::default();
    let mut body = simple("m", "hi there");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let resp = call(&mock, chat(&body)).await.unwrap();
    let evs = events(&bytes(resp).await);
    // role + 16 content + finish + usage + [DONE]
    assert_eq!(evs.len(), 20);
    assert_eq!(evs[19], "[DONE]");
    let cs = chunks(&evs);
    for c in &cs[..cs.len() - 1] {
        assert_eq!(c["usage"], Value::Null, "{c}");
        assert!(c.get("usage").is_some());
    }
    let usage_chunk = cs.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    let chat_req = ChatRequest::parse(Bytes::from(body.to_string())).unwrap();
    let expected = Answer::for_request(&chat_req, 16).unwrap().usage();
    let typed: ChatCompletionChunk = serde_json::from_value(usage_chunk.clone()).unwrap();
    assert_eq!(typed.usage.unwrap(), expected);
    assert_eq!(usage_chunk["usage"]["prompt_tokens"], 2 + 4 + 3);
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 16);
    assert_eq!(usage_chunk["usage"]["total_tokens"], 2 + 4 + 3 + 16);
    assert_eq!(cs[cs.len() - 2]["choices"][0]["finish_reason"], "stop");

    // include_usage: false is the same as absent.
    body["stream_options"] = json!({"include_usage": false});
    let evs = events(&bytes(call(&mock, chat(&body)).await.unwrap()).await);
    assert_eq!(evs.len(), 19);
    assert!(chunks(&evs).iter().all(|c| c.get("usage").is_none()));
}

#[tokio::test]
async fn several_choices_stream_interleaved() {
    let mock = MockProvider::default();
    let mut body = simple("m", "hi");
    body["stream"] = json!(true);
    body["n"] = json!(2);
    body["max_tokens"] = json!(3);
    let evs = events(&bytes(call(&mock, chat(&body)).await.unwrap()).await);
    // 2 roles + 2×3 content + 2 finish + [DONE]
    assert_eq!(evs.len(), 11);
    let cs = chunks(&evs);
    let idx: Vec<u64> = cs
        .iter()
        .map(|c| c["choices"][0]["index"].as_u64().unwrap())
        .collect();
    assert_eq!(idx, [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]);
    let mut plain = body.clone();
    plain["stream"] = json!(false);
    let v = json(call(&mock, chat(&plain)).await.unwrap()).await;
    for i in 0..2u64 {
        let streamed: String = cs
            .iter()
            .filter(|c| c["choices"][0]["index"] == i)
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(
            streamed,
            v["choices"][i as usize]["message"]["content"]
                .as_str()
                .unwrap()
        );
    }
}

#[tokio::test]
async fn zero_tokens_stream_still_finishes() {
    let mock = MockProvider::default();
    let mut body = simple("m", "hi");
    body["stream"] = json!(true);
    body["max_tokens"] = json!(0);
    let evs = events(&bytes(call(&mock, chat(&body)).await.unwrap()).await);
    assert_eq!(evs.len(), 3);
    let cs = chunks(&evs);
    assert_eq!(cs[1]["choices"][0]["finish_reason"], "length");
    assert_eq!(evs[2], "[DONE]");
}

#[tokio::test]
async fn model_names_are_escaped() {
    let mock = MockProvider::default();
    let mut body = simple("we\"ird\\model\n", "hi");
    body["stream"] = json!(true);
    let evs = events(&bytes(call(&mock, chat(&body)).await.unwrap()).await);
    for c in chunks(&evs) {
        assert_eq!(c["model"], "we\"ird\\model\n");
    }
    body["stream"] = json!(false);
    let v = json(call(&mock, chat(&body)).await.unwrap()).await;
    assert_eq!(v["model"], "we\"ird\\model\n");
}
