//! The edge adapter: reads the request body under a size limit and a deadline, parses it once
//! into an `Arc<ChatRequest>` request extension, calls the stack, and turns every error into the
//! OpenAI-shaped response (the single error mapping of [`crate::error`]).
//!
//! [`Edge`] accepts any request body type (hyper's `Incoming`, axum's `Body`), so the same adapter
//! mounts in an axum router (`route_service`) and in a plain hyper-util server (via
//! [`hyper_service`]).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, header};
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;
use tower_layer::Layer;
use tower_service::Service;

use crate::body::{Body, BoxError, CollectError};
use crate::error::{Error, ErrorKind, error_response};
use crate::openai::ChatRequest;

/// A boxed chat-completions stack: what the edge adapters wrap.
pub type BoxChatService = BoxCloneSyncService<Request<Body>, Response<Body>, BoxError>;

/// Limits the edge applies to request bodies.
#[derive(Debug, Clone, Copy)]
pub struct EdgeConfig {
    /// Largest accepted body in bytes (413 above it).
    pub max_body_bytes: usize,
    /// Time allowed to receive the whole body once headers are in (408 after it).
    pub body_timeout: Duration,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 * 1024 * 1024,
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// Builds [`Edge`] services.
#[derive(Debug, Clone, Copy, Default)]
pub struct EdgeLayer {
    config: EdgeConfig,
}

impl EdgeLayer {
    /// An edge layer with these limits.
    pub fn new(config: EdgeConfig) -> Self {
        Self { config }
    }
}

impl<S> Layer<S> for EdgeLayer {
    type Service = Edge<S>;
    fn layer(&self, inner: S) -> Edge<S> {
        Edge {
            inner,
            config: self.config,
        }
    }
}

/// The edge adapter service. Its error type is `Infallible`: every failure is a response.
#[derive(Debug, Clone)]
pub struct Edge<S> {
    inner: S,
    config: EdgeConfig,
}

impl<S> Edge<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, config: EdgeConfig) -> Self {
        Self { inner, config }
    }
}

/// Reads and parses a chat request body under `config`'s limits.
pub async fn read_chat_request(body: Body, config: EdgeConfig) -> Result<ChatRequest, Error> {
    let bytes = match tokio::time::timeout(
        config.body_timeout,
        body.collect_limited(config.max_body_bytes),
    )
    .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(CollectError::TooLarge { limit })) => {
            return Err(too_large(limit));
        }
        Ok(Err(CollectError::Read(e))) => {
            return Err(Error::invalid_request(
                "invalid_body",
                "The request body could not be read.",
            )
            .with_cause(e));
        }
        Err(_) => {
            return Err(Error::new(
                ErrorKind::RequestTimeout,
                format!(
                    "The request body was not received within {} seconds.",
                    config.body_timeout.as_secs_f64()
                ),
            ));
        }
    };
    Ok(ChatRequest::parse(bytes)?)
}

fn too_large(limit: usize) -> Error {
    Error::new(
        ErrorKind::RequestTooLarge,
        format!("The request body is larger than the limit of {limit} bytes."),
    )
}

/// The parsed request of `req`, if the edge (or [`ensure_chat_request`]) put one there.
pub fn chat_request<B>(req: &Request<B>) -> Option<&Arc<ChatRequest>> {
    req.extensions().get::<Arc<ChatRequest>>()
}

/// What a layer calls when it may run without the edge adapter: returns the parsed request,
/// parsing the body (and putting it back, buffered) only when the extension is missing.
pub async fn ensure_chat_request(
    req: Request<Body>,
    config: EdgeConfig,
) -> Result<(Request<Body>, Arc<ChatRequest>), Error> {
    if let Some(chat) = chat_request(&req).cloned() {
        return Ok((req, chat));
    }
    let (mut parts, body) = req.into_parts();
    let chat = Arc::new(read_chat_request(body, config).await?);
    parts.extensions.insert(chat.clone());
    Ok((
        Request::from_parts(parts, Body::from_bytes(chat.raw().clone())),
        chat,
    ))
}

impl<S, B> Service<Request<B>> for Edge<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Readiness of the inner stack is awaited per call (`oneshot`), so that its errors
        // become responses too.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let inner = self.inner.clone();
        let config = self.config;
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let declared = parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > config.max_body_bytes as u64) {
                return Ok(too_large(config.max_body_bytes).to_response());
            }
            let chat = match read_chat_request(Body::new(body), config).await {
                Ok(c) => Arc::new(c),
                Err(e) => return Ok(e.to_response()),
            };
            let body = Body::from_bytes(chat.raw().clone());
            parts.extensions.insert(chat);
            match inner.oneshot(Request::from_parts(parts, body)).await {
                Ok(resp) => Ok(resp),
                Err(e) => Ok(error_response(&e.into())),
            }
        })
    }
}

/// Adapts an [`Edge`] for `hyper_util`'s server (`serve_connection(io, hyper_service(edge))`).
pub fn hyper_service<S>(edge: Edge<S>) -> hyper_util::service::TowerToHyperService<Edge<S>> {
    hyper_util::service::TowerToHyperService::new(edge)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn echo_model() -> BoxChatService {
        BoxCloneSyncService::new(tower::service_fn(|req: Request<Body>| async move {
            let chat = chat_request(&req).cloned().ok_or("missing extension")?;
            Ok::<_, BoxError>(Response::new(Body::from(chat.model().to_owned())))
        }))
    }

    async fn call(edge: &mut Edge<BoxChatService>, body: &'static str) -> (u16, String) {
        let req = Request::post("/v1/chat/completions")
            .body(Body::from(body))
            .unwrap();
        let resp = edge.call(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn parses_once_and_maps_errors() {
        let mut edge = Edge::new(
            echo_model(),
            EdgeConfig {
                max_body_bytes: 200,
                body_timeout: Duration::from_secs(1),
            },
        );
        let (s, b) = call(
            &mut edge,
            r#"{"model":"m1","messages":[{"role":"user","content":"x"}]}"#,
        )
        .await;
        assert_eq!((s, b.as_str()), (200, "m1"));
        let (s, b) = call(&mut edge, "{nope").await;
        assert_eq!(s, 400);
        assert!(b.contains("invalid_json"), "{b}");
        let (s, b) = call(&mut edge, r#"{"model":"m1"}"#).await;
        assert_eq!(s, 400);
        assert!(b.contains("\"param\":\"messages\""), "{b}");
        let big: &'static str = Box::leak("x".repeat(300).into_boxed_str());
        let (s, b) = call(&mut edge, big).await;
        assert_eq!(s, 413);
        assert!(b.contains("request_too_large"));
    }

    #[tokio::test(start_paused = true)]
    async fn slow_body_is_a_408() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, BoxError>>(1);
        let stream =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|f| (f, rx)) },
            );
        let body = http_body_util::StreamBody::new(stream);
        let mut edge = Edge::new(echo_model(), EdgeConfig::default());
        let req = Request::post("/").body(body).unwrap();
        let resp = edge.call(req).await.unwrap();
        assert_eq!(resp.status(), 408);
        drop(tx);
    }

    #[tokio::test]
    async fn ensure_parses_when_missing() {
        let req = Request::post("/")
            .body(Body::from(
                r#"{"model":"a","messages":[{"role":"user","content":"x"}]}"#,
            ))
            .unwrap();
        let (req, chat) = ensure_chat_request(req, EdgeConfig::default())
            .await
            .unwrap();
        assert_eq!(chat.model(), "a");
        assert!(chat_request(&req).is_some());
        assert_eq!(req.body().as_bytes().unwrap(), chat.raw().as_ref());
    }
}
