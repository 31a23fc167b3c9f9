//! Helpers shared by the integration tests.
#![allow(dead_code)]

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use rampart_core::{Body, BoxError};
use rampart_mock::MockProvider;
use serde_json::Value;
use tower::ServiceExt;

/// A chat-completions request with `body` as JSON.
pub fn chat(body: &Value) -> Request<Body> {
    Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

/// A simple request body for `model` with one user message.
pub fn simple(model: &str, prompt: &str) -> Value {
    serde_json::json!({"model": model, "messages": [{"role": "user", "content": prompt}]})
}

/// Calls the in-process service once.
pub async fn call(mock: &MockProvider, req: Request<Body>) -> Result<Response<Body>, BoxError> {
    mock.service().oneshot(req).await
}

/// Reads a whole body.
pub async fn bytes(resp: Response<Body>) -> Bytes {
    resp.into_body().collect().await.unwrap().to_bytes()
}

/// Reads a whole body as JSON.
pub async fn json(resp: Response<Body>) -> Value {
    serde_json::from_slice(&bytes(resp).await).unwrap()
}

/// Reads a body frame by frame until it ends or fails: (frames, the error if any).
pub async fn frames(resp: Response<Body>) -> (Vec<Bytes>, Option<BoxError>) {
    let mut body = resp.into_body();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Ok(d) = f.into_data() {
                    out.push(d);
                }
            }
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

/// Splits an SSE body into the payloads of its `data:` events.
pub fn events(body: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(body).unwrap();
    assert!(
        text.is_empty() || text.ends_with("\n\n"),
        "unterminated event: {text:?}"
    );
    text.split_terminator("\n\n")
        .map(|e| {
            e.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {e:?}"))
                .to_owned()
        })
        .collect()
}

/// The concatenated `delta.content` of choice 0 of parsed chunks.
pub fn streamed_content(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"].as_array())
        .flatten()
        .filter(|c| c["index"] == 0)
        .filter_map(|c| c["delta"]["content"].as_str())
        .collect()
}
