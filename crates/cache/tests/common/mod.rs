//! Helpers shared by the cache's integration tests.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use rampart_cache::{Cache, CacheHandle, CacheLayer};
use rampart_core::{Body, BoxError, Tenant};
use rampart_mock::{MockConfig, MockProvider};
use rampart_upstream::{Timeouts, Upstream};
use serde_json::{Value, json};
use tower::{Layer, ServiceExt};

pub fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_secs(1),
        first_byte: Duration::from_secs(60),
        idle: Duration::from_secs(60),
        total: Duration::from_secs(300),
    }
}

/// A cache in front of an upstream serving `m1` and `m2` from one simulated provider.
pub struct Setup {
    pub svc: Cache<Upstream>,
    pub mock: MockProvider,
    pub handle: CacheHandle,
}

pub fn setup(layer: CacheLayer) -> Setup {
    setup_with(layer, MockConfig::default())
}

pub fn setup_with(layer: CacheLayer, config: MockConfig) -> Setup {
    let mock = MockProvider::new(config);
    let upstream = Upstream::builder()
        .service_provider("sim", mock.service(), timeouts())
        .model("m1", "sim", None)
        .model("m2", "sim", None)
        .build()
        .unwrap();
    let handle = layer.handle();
    Setup {
        svc: layer.layer(upstream),
        mock,
        handle,
    }
}

/// A deterministic request body for `model`.
pub fn body(model: &str, prompt: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0})
}

pub fn req(body: &Value, tenant: &str) -> Request<Body> {
    let mut r = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    r.extensions_mut().insert(Tenant::new(tenant));
    r
}

pub fn req_with(body: &Value, tenant: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut r = req(body, tenant);
    for (k, v) in headers {
        r.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    r
}

pub async fn call(svc: &Cache<Upstream>, r: Request<Body>) -> Result<Response<Body>, BoxError> {
    svc.clone().oneshot(r).await
}

pub fn status(resp: &Response<Body>) -> &str {
    resp.headers()
        .get("x-rampart-cache")
        .map(|v| v.to_str().unwrap())
        .unwrap_or("<none>")
}

pub async fn bytes(resp: Response<Body>) -> Bytes {
    resp.into_body().collect().await.unwrap().to_bytes()
}

pub async fn json_body(resp: Response<Body>) -> Value {
    serde_json::from_slice(&bytes(resp).await).unwrap()
}

/// Calls and reads the whole body: (cache status, http status, body).
pub async fn roundtrip(svc: &Cache<Upstream>, r: Request<Body>) -> (String, u16, Bytes) {
    let resp = call(svc, r).await.unwrap();
    let s = status(&resp).to_owned();
    let code = resp.status().as_u16();
    (s, code, bytes(resp).await)
}

/// The payloads of an SSE body's `data:` events.
pub fn events(body: &[u8]) -> Vec<String> {
    std::str::from_utf8(body)
        .unwrap()
        .split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            e.trim()
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {e:?}"))
                .to_owned()
        })
        .collect()
}

/// The text of choice 0 of an SSE body, its finish reason, and its usage chunk if any.
pub fn sse_answer(body: &[u8]) -> (String, Option<String>, Option<Value>) {
    let evs = events(body);
    assert_eq!(evs.last().map(String::as_str), Some("[DONE]"), "{evs:?}");
    let mut text = String::new();
    let mut finish = None;
    let mut usage = None;
    for e in &evs[..evs.len() - 1] {
        let v: Value = serde_json::from_str(e).unwrap();
        assert_eq!(v["object"], "chat.completion.chunk");
        if let Some(c) = v["choices"].get(0) {
            if let Some(t) = c["delta"]["content"].as_str() {
                text.push_str(t);
            }
            if let Some(f) = c["finish_reason"].as_str() {
                finish = Some(f.to_owned());
            }
        }
        if !v["usage"].is_null() {
            usage = Some(v["usage"].clone());
        }
    }
    (text, finish, usage)
}

pub fn counter() -> (Arc<std::sync::Mutex<Vec<u64>>>, rampart_core::SettleHook) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let hook: rampart_core::SettleHook = Arc::new(move |n| {
        s.lock().unwrap().push(n);
        true
    });
    (seen, hook)
}
