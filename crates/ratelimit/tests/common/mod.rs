//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use rampart_core::error::find_error;
use rampart_core::tap::tap_response;
use rampart_core::{Body, BoxError, ChatRequest, Error, Target, Tenant};
use rampart_ratelimit::RateLimit;
use tokio::time::Instant;
use tower_test::mock::{Handle, Mock, Spawn};

pub type Req = Request<Body>;
pub type Resp = Response<Body>;
pub type Svc = Spawn<RateLimit<Mock<Req, Resp>>>;
pub type MockHandle = Handle<Req, Resp>;

/// A chat body for `model` with `content`, and `max_tokens` when given.
pub fn body(model: &str, content: &str, max_tokens: Option<u64>) -> String {
    let mut v = serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": content}],
    });
    if let Some(m) = max_tokens {
        v["max_tokens"] = m.into();
    }
    v.to_string()
}

pub fn parse(body: &str) -> Arc<ChatRequest> {
    Arc::new(ChatRequest::parse(Bytes::from(body.to_owned())).unwrap())
}

/// A parsed request (as the edge adapter would hand it on) for `tenant`.
pub fn req_for(tenant: Option<&str>, body: &str) -> Req {
    let chat = parse(body);
    let mut req = Request::post("/v1/chat/completions")
        .body(Body::from_bytes(chat.raw().clone()))
        .unwrap();
    req.extensions_mut().insert(chat);
    if let Some(t) = tenant {
        req.extensions_mut().insert(Tenant::new(t));
    }
    req
}

/// `req_for(Some("acme"), body("m", "hello", max_tokens))`.
pub fn req(max_tokens: Option<u64>) -> Req {
    req_for(Some("acme"), &body("m", "hello", max_tokens))
}

/// What the layer reserves for `body` with the default estimator and `output` output tokens.
pub fn reserve_of(body: &str, output: u64) -> u64 {
    parse(body).estimate_prompt_tokens() + output
}

pub const USAGE_CHUNK_PREFIX: &str = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":";
pub const CONTENT_CHUNK: &str = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n";
pub const FINISH_CHUNK: &str = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";

fn usage_json(total: u64) -> String {
    format!(
        "{{\"prompt_tokens\":{},\"completion_tokens\":{},\"total_tokens\":{total}}}",
        total / 2,
        total - total / 2
    )
}

/// A tapped JSON response (with `ResponseFacts`) reporting `total` tokens.
pub fn json_response(total: u64) -> Resp {
    let b = format!(
        "{{\"id\":\"x\",\"object\":\"chat.completion\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"message\":{{\"role\":\"assistant\",\"content\":\"hi\"}},\"finish_reason\":\"stop\"}}],\"usage\":{}}}",
        usage_json(total)
    );
    let resp = Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(b))
        .unwrap();
    tap_response(
        resp,
        Target::new("p", "m"),
        "m".into(),
        Instant::now(),
        false,
    )
}

/// A tapped SSE response fed by the returned sender (send `None`-terminated by dropping it).
pub fn sse_response() -> (Resp, tokio::sync::mpsc::Sender<&'static str>) {
    let (tx, rx) = tokio::sync::mpsc::channel::<&'static str>(16);
    let resp = Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::new(ChannelBody(rx)))
        .unwrap();
    (
        tap_response(
            resp,
            Target::new("p", "m"),
            "m".into(),
            Instant::now(),
            false,
        ),
        tx,
    )
}

/// A body fed by a channel: each message is one data frame; it ends when the sender drops.
pub struct ChannelBody(pub tokio::sync::mpsc::Receiver<&'static str>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        self.get_mut()
            .0
            .poll_recv(cx)
            .map(|m| m.map(|s| Ok(http_body::Frame::data(Bytes::from_static(s.as_bytes())))))
    }
}

pub fn sse_usage(total: u64) -> &'static str {
    Box::leak(format!("{USAGE_CHUNK_PREFIX}{}}}\n\n", usage_json(total)).into_boxed_str())
}

/// A plain response without `ResponseFacts` whose body ends when the sender is dropped.
pub fn untapped_response() -> (Resp, tokio::sync::mpsc::Sender<&'static str>) {
    let (tx, rx) = tokio::sync::mpsc::channel::<&'static str>(16);
    let resp = Response::builder()
        .status(StatusCode::OK)
        .body(Body::new(ChannelBody(rx)))
        .unwrap();
    (resp, tx)
}

/// Calls the service; answers the upstream request (if one arrives) with `respond(request)`.
pub async fn roundtrip_with(
    svc: &mut Svc,
    handle: &mut MockHandle,
    req: Req,
    respond: impl FnOnce(Req) -> Resp,
) -> Result<Resp, BoxError> {
    tokio_test::assert_ready_ok!(svc.poll_ready());
    let mut task = tokio::spawn(svc.call(req));
    tokio::select! {
        r = &mut task => r.unwrap(),
        next = handle.next_request() => {
            let (upstream_req, send) = next.unwrap();
            send.send_response(respond(upstream_req));
            task.await.unwrap()
        }
    }
}

/// Calls the service; answers the upstream request (if one arrives) with `resp`.
pub async fn roundtrip(
    svc: &mut Svc,
    handle: &mut MockHandle,
    req: Req,
    resp: Resp,
) -> Result<Resp, BoxError> {
    roundtrip_with(svc, handle, req, |_| resp).await
}

/// A successful round trip whose body is read to the end (so the settle and release happen).
pub async fn ok(svc: &mut Svc, handle: &mut MockHandle, req: Req, resp: Resp) -> Resp {
    let r = roundtrip(svc, handle, req, resp).await.unwrap();
    let (parts, body) = r.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    Response::from_parts(parts, Body::from_bytes(bytes))
}

/// Calls the service expecting a refusal without any upstream call.
pub async fn refused(svc: &mut Svc, handle: &mut MockHandle, req: Req) -> Error {
    tokio_test::assert_ready_ok!(svc.poll_ready());
    let err = svc.call(req).await.unwrap_err();
    assert!(handle.poll_request().is_pending(), "upstream was called");
    match find_error(&err) {
        Some(_) => {}
        None => panic!("not a core error: {err}"),
    }
    downcast(err)
}

pub fn downcast(err: BoxError) -> Error {
    *err.downcast::<Error>().unwrap()
}

pub fn header<'a>(resp: &'a Resp, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("missing {name}"))
        .to_str()
        .unwrap()
}

pub async fn drain(resp: Resp) -> Bytes {
    resp.into_body().collect().await.unwrap().to_bytes()
}
