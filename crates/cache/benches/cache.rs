//! Key computation for a 1 KB and a 100 KB request, and the JSON hit path through the layer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use rampart_cache::{CacheLayer, KeyRules};
use rampart_core::{Body, BoxError, ChatRequest, Tenant};
use tower::{Layer, Service, ServiceExt};

fn main() {
    divan::main();
}

/// A request of about `size` bytes: a system prompt and user turns.
fn request(size: usize) -> ChatRequest {
    let turn = "Explain how a circuit breaker protects an upstream service, with an example. ";
    let mut messages = vec![serde_json::json!({"role":"system","content":"You are terse."})];
    let mut len = 0;
    while len < size {
        let text = turn.repeat(4);
        len += text.len() + 40;
        messages.push(serde_json::json!({"role":"user","content":[{"type":"text","text":text}]}));
    }
    let v = serde_json::json!({
        "model": "gpt-4.1", "messages": messages, "temperature": 0, "max_tokens": 256,
        "top_p": 1.0, "seed": 7, "stop": ["\n\n"], "user": "bench",
    });
    ChatRequest::parse(Bytes::from(v.to_string())).unwrap()
}

#[divan::bench(args = [1_000, 100_000])]
fn key(bencher: divan::Bencher, size: usize) {
    let chat = request(size);
    let rules = KeyRules::default();
    bencher
        .counter(divan::counter::BytesCount::new(chat.raw().len()))
        .bench_local(|| rules.canonicalize(divan::black_box(&chat), None).unwrap());
}

#[divan::bench]
fn hit_json(bencher: divan::Bencher) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answer = Bytes::from_static(
        br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4.1","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there."},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}"#,
    );
    let inner = tower::service_fn(move |_req: Request<Body>| {
        let answer = answer.clone();
        async move {
            let mut resp = Response::new(Body::from_bytes(answer));
            resp.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            Ok::<_, BoxError>(resp)
        }
    });
    let layer = CacheLayer::default();
    let handle = layer.handle();
    let mut svc = layer.layer(inner);
    let chat = Arc::new(request(1_000));
    let make = || {
        let mut r = Request::post("/v1/chat/completions")
            .body(Body::from_bytes(chat.raw().clone()))
            .unwrap();
        r.extensions_mut().insert(chat.clone());
        r.extensions_mut().insert(Tenant::new("bench"));
        r
    };
    rt.block_on(async {
        let resp = svc.ready().await.unwrap().call(make()).await.unwrap();
        assert_eq!(resp.headers()["x-rampart-cache"], "miss");
        drop(resp);
        // Let the fill task store the entry.
        while handle.is_empty() {
            tokio::task::yield_now().await;
        }
        let resp = svc.ready().await.unwrap().call(make()).await.unwrap();
        assert_eq!(resp.headers()["x-rampart-cache"], "hit");
    });
    bencher.with_inputs(make).bench_local_values(|r| {
        rt.block_on(async {
            let resp = svc.ready().await.unwrap().call(r).await.unwrap();
            divan::black_box(resp)
        })
    });
}

/// Baseline on the same machine: parsing the same body into a `serde_json::Value`.
#[divan::bench(args = [1_000, 100_000])]
fn baseline_parse_value(bencher: divan::Bencher, size: usize) {
    let chat = request(size);
    bencher
        .counter(divan::counter::BytesCount::new(chat.raw().len()))
        .bench_local(|| {
            serde_json::from_slice::<serde_json::Value>(divan::black_box(chat.raw())).unwrap()
        });
}
