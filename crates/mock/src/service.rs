//! [`MockService`]: routing, authentication, faults and latency for one request.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use rampart_core::body::CollectError;
use rampart_core::openai::{ModelList, ModelObject};
use rampart_core::{Body, BoxError, ChatRequest, RequestError};
use tower_service::Service;

use crate::answer::Answer;
use crate::anthropic;
use crate::config::{Latency, MockApi, Stall};
use crate::provider::Inner;
use crate::respond::{self, ChunkEvents, Meta, SseStream};

/// Largest request body the mock reads (413 above it).
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// `created` of the models in `GET /v1/models`.
const MODELS_CREATED: u64 = 1_700_000_000;

/// The in-process mock provider: a
/// `Service<http::Request<Body>, Response = http::Response<Body>, Error = BoxError>`.
///
/// Always ready. Errors only for an injected `reset_before_headers` fault (an `io::Error` of kind
/// `ConnectionReset`); everything else, including injected statuses, is a response.
#[derive(Clone, Debug)]
pub struct MockService {
    inner: Arc<Inner>,
}

/// The future of [`MockService::call`].
pub type MockFuture = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

impl MockService {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        Self { inner }
    }
}

impl Service<Request<Body>> for MockService {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = MockFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> MockFuture {
        Box::pin(handle(self.inner.clone(), req))
    }
}

async fn handle(inner: Arc<Inner>, req: Request<Body>) -> Result<Response<Body>, BoxError> {
    let path = req.uri().path();
    let method = req.method();
    if inner.api == MockApi::Anthropic {
        if method == Method::POST && matches!(path, "/v1/messages" | "/messages") {
            return anthropic::messages(inner, req).await;
        }
        if method != Method::GET || !matches!(path, "/v1/models" | "/models") {
            return Ok(anthropic::error_response(
                StatusCode::NOT_FOUND,
                "not_found_error",
                format!("Not found ({method} {path})"),
            ));
        }
    }
    if method == Method::POST && matches!(path, "/v1/chat/completions" | "/chat/completions") {
        return chat(inner, req).await;
    }
    if method == Method::GET && matches!(path, "/v1/models" | "/models") {
        if let Some(denied) = check_key(&inner, req.headers()) {
            return Ok(denied);
        }
        return Ok(models(&inner));
    }
    Ok(respond::error_response(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        None,
        None,
        format!("Invalid URL ({} {})", method, path),
    ))
}

/// A 401 when the config requires a key and the request does not carry it.
fn check_key(inner: &Inner, headers: &HeaderMap) -> Option<Response<Body>> {
    let want = inner.require_api_key.as_deref()?;
    let got = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let message = match got {
        Some(k) if k == want => return None,
        Some(_) => "Incorrect API key provided.",
        None => {
            "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
        }
    };
    Some(respond::error_response(
        StatusCode::UNAUTHORIZED,
        "invalid_request_error",
        Some("invalid_api_key"),
        None,
        message,
    ))
}

fn models(inner: &Inner) -> Response<Body> {
    let list = ModelList {
        object: "list".into(),
        data: inner
            .models()
            .into_iter()
            .map(|id| ModelObject {
                id,
                object: "model".into(),
                created: MODELS_CREATED,
                owned_by: "rampart-mock".into(),
            })
            .collect(),
    };
    respond::json_response(Body::json(&list))
}

fn bad_request(e: &RequestError) -> Response<Body> {
    respond::error_response(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        Some(e.code()),
        e.param(),
        e.to_string(),
    )
}

pub(crate) async fn pause(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

pub(crate) fn head_delay(l: &Latency) -> Duration {
    // Whole milliseconds (tokio's timer resolution) when the jitter spans at least one, so that
    // the wait stays below `base + jitter` once the timer rounds it.
    let jitter = if l.jitter.is_zero() {
        Duration::ZERO
    } else if l.jitter >= Duration::from_millis(1) {
        let max = u64::try_from(l.jitter.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::random_range(0..max))
    } else {
        let max = u64::try_from(l.jitter.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::random_range(0..max))
    };
    l.base.saturating_add(jitter)
}

async fn chat(inner: Arc<Inner>, req: Request<Body>) -> Result<Response<Body>, BoxError> {
    let (parts, body) = req.into_parts();
    // A request parsed by the edge carries its (possibly rewritten) `ChatRequest`: use it as the
    // gateway's upstream would, without parsing again.
    let chat = match parts.extensions.get::<Arc<ChatRequest>>() {
        Some(chat) => {
            inner.record(&parts.headers, chat.to_bytes());
            chat.clone()
        }
        None => {
            let bytes = match body.collect_limited(MAX_BODY_BYTES).await {
                Ok(b) => b,
                Err(CollectError::TooLarge { limit }) => {
                    return Ok(respond::error_response(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "invalid_request_error",
                        Some("request_too_large"),
                        None,
                        format!("The request body is larger than the limit of {limit} bytes."),
                    ));
                }
                Err(CollectError::Read(e)) => {
                    return Ok(respond::error_response(
                        StatusCode::BAD_REQUEST,
                        "invalid_request_error",
                        Some("invalid_body"),
                        None,
                        format!("The request body could not be read: {e}"),
                    ));
                }
            };
            inner.record(&parts.headers, bytes.clone());
            match ChatRequest::parse(bytes) {
                Ok(c) => Arc::new(c),
                Err(e) => return Ok(bad_request(&e)),
            }
        }
    };
    let model = chat.model();
    inner.count(model);
    if let Some(denied) = check_key(&inner, &parts.headers) {
        return Ok(denied);
    }
    let fault = inner.fault_for(model);
    if let Some(f) = &fault
        && f.stall == Some(Stall::BeforeHeaders)
    {
        std::future::pending::<()>().await;
    }
    let latency = inner.latency();
    pause(head_delay(&latency)).await;
    let mut stop = None;
    if let Some(f) = &fault {
        if f.reset_before_headers {
            return Err(Box::new(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "rampart-mock: connection reset by fault injection",
            )));
        }
        if let Some(status) = f.status {
            return Ok(respond::fault_response(status, f.retry_after));
        }
        stop = f.body_stop();
    }
    let answer = match Answer::for_request(&chat, inner.output_tokens) {
        Ok(a) => a,
        Err(e) => return Ok(bad_request(&e)),
    };
    let meta = Meta {
        id: inner.next_id(),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        // Serialising a string cannot fail.
        model_json: serde_json::to_string(model).unwrap_or_else(|_| "\"\"".to_owned()),
    };
    if chat.is_stream() {
        let events = ChunkEvents::new(
            &meta,
            answer,
            chat.wants_stream_usage(),
            latency.first_token,
            latency.chunk_gap,
        );
        let stream = SseStream::new(events, stop);
        return Ok(respond::sse_response(stream.into_body()));
    }
    // A JSON answer is sent once generated: the time its stream would take.
    let gaps = u32::try_from(answer.tokens().saturating_sub(1)).unwrap_or(u32::MAX);
    pause(
        latency
            .first_token
            .saturating_add(latency.chunk_gap.saturating_mul(gaps)),
    )
    .await;
    let bytes = respond::json_body(&meta, &answer);
    let body = match stop {
        Some(stop) => respond::partial_json(bytes, stop),
        None => Body::from_bytes(bytes),
    };
    Ok(respond::json_response(body))
}
