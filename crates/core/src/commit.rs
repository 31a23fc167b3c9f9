//! The streaming commit point: decide before the client sees a byte.
//!
//! [`commit_stream`] polls an SSE response until its first content-bearing chunk (non-empty
//! `content` or `refusal`, `tool_calls`, or a `finish_reason`), holding role-only and empty
//! chunks, bounded by a first-token timeout, the idle timeout and a byte cap. A failure before
//! that point is an [`Error`] the caller can act on (retry, next candidate), and the attempt's
//! completion handle is marked failed before the body is dropped. After it, the returned body
//! replays the held frames byte-for-byte, then the rest; a later failure becomes one SSE error
//! event and the end of the stream — never a silent clean end, never `[DONE]`.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::Response;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use serde::Deserialize;
use tokio::time::Instant;

use crate::body::{Body, BoxError};
use crate::error::{Error, ErrorKind};
use crate::facts::ResponseFacts;
use crate::openai::{ChunkChoice, ErrorBody, ErrorObject};
use crate::sse::split_lines;
use crate::tap::is_event_stream;

/// Bounds on waiting for the first content.
#[derive(Debug, Clone, Copy)]
pub struct CommitConfig {
    /// Longest wait, from the call, for the first content-bearing chunk.
    pub first_token_timeout: Duration,
    /// Longest silence between two frames before the first content.
    pub idle_timeout: Duration,
    /// Most bytes held before committing anyway.
    pub max_held_bytes: usize,
}

impl Default for CommitConfig {
    fn default() -> Self {
        Self {
            first_token_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(30),
            max_held_bytes: 64 * 1024,
        }
    }
}

#[derive(Deserialize)]
struct ChunkLite {
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

enum Seen {
    Nothing,
    Content,
    Error(String),
}

/// Lines of an SSE stream across frame boundaries.
#[derive(Default)]
struct Lines {
    partial: BytesMut,
    event_error: bool,
}

impl Lines {
    fn feed(&mut self, data: &[u8]) -> Seen {
        let mut partial = std::mem::take(&mut self.partial);
        let flow = split_lines(&mut partial, data, |line| match self.line(line) {
            Seen::Nothing => ControlFlow::Continue(()),
            seen => ControlFlow::Break(seen),
        });
        self.partial = partial;
        match flow {
            ControlFlow::Break(seen) => seen,
            ControlFlow::Continue(()) => Seen::Nothing,
        }
    }

    fn line(&mut self, line: &[u8]) -> Seen {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            self.event_error = false;
            return Seen::Nothing;
        }
        if let Some(ev) = line.strip_prefix(b"event:") {
            self.event_error = ev.trim_ascii_start().starts_with(b"error");
            return Seen::Nothing;
        }
        let Some(payload) = line.strip_prefix(b"data:") else {
            return Seen::Nothing;
        };
        let payload = payload.trim_ascii_start();
        if payload == b"[DONE]" {
            return Seen::Nothing;
        }
        match serde_json::from_slice::<ChunkLite>(payload) {
            Ok(c) if c.error.is_some() || self.event_error => Seen::Error(
                c.error
                    .as_ref()
                    .and_then(|e| e.get("message"))
                    .and_then(|m| m.as_str())
                    .unwrap_or("upstream sent an error event")
                    .to_owned(),
            ),
            Ok(c) if c.choices.iter().any(ChunkChoice::is_content_bearing) => Seen::Content,
            Ok(_) => Seen::Nothing,
            Err(_) if self.event_error => Seen::Error("upstream sent an error event".to_owned()),
            Err(_) => Seen::Nothing,
        }
    }
}

/// Holds a streamed response until its first content-bearing chunk; see the module docs.
/// Non-stream and non-2xx responses are returned unchanged.
pub async fn commit_stream(
    resp: Response<Body>,
    config: CommitConfig,
) -> Result<Response<Body>, Error> {
    if !resp.status().is_success() || !is_event_stream(resp.headers()) {
        return Ok(resp);
    }
    let (parts, mut body) = resp.into_parts();
    let facts = parts.extensions.get::<ResponseFacts>().cloned();
    let started = facts
        .as_ref()
        .map_or_else(Instant::now, |f| f.completion.started());
    let first_token_deadline = started + config.first_token_timeout;
    let fail = |reason: String, kind: ErrorKind| {
        if let Some(f) = &facts {
            f.completion.fail(reason.clone());
        }
        let message = match kind {
            ErrorKind::UpstreamTimeout => "The upstream sent no content in time.",
            _ => "The upstream stream failed before sending any content.",
        };
        Error::new(kind, message).with_cause(reason)
    };
    let mut held: VecDeque<Bytes> = VecDeque::new();
    let mut held_bytes = 0usize;
    let mut lines = Lines::default();
    loop {
        let deadline = first_token_deadline.min(Instant::now() + config.idle_timeout);
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return Err(fail(
                    "no content-bearing chunk before the deadline".to_owned(),
                    ErrorKind::UpstreamTimeout,
                ));
            }
            Ok(None) => {
                return Err(fail(
                    "the stream ended before any content".to_owned(),
                    ErrorKind::UpstreamBroken,
                ));
            }
            Ok(Some(Err(e))) => {
                return Err(fail(
                    format!("the stream failed: {e}"),
                    ErrorKind::UpstreamBroken,
                ));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let seen = lines.feed(&data);
        held_bytes += data.len();
        held.push_back(data);
        match seen {
            Seen::Error(msg) => return Err(fail(msg, ErrorKind::UpstreamBroken)),
            Seen::Content => break,
            Seen::Nothing if held_bytes >= config.max_held_bytes => break,
            Seen::Nothing => {}
        }
    }
    let body = Body::new(Committed {
        held,
        rest: body,
        ended: false,
    });
    Ok(Response::from_parts(parts, body))
}

/// Replays held frames, then the rest; a failure after the commit point ends the stream with
/// one SSE error event.
struct Committed {
    held: VecDeque<Bytes>,
    rest: Body,
    ended: bool,
}

/// The SSE error event that ends a committed stream whose upstream failed.
pub fn sse_error_event(message: &str) -> Bytes {
    let body = ErrorBody {
        error: ErrorObject {
            message: message.to_owned(),
            kind: "server_error".to_owned(),
            param: None,
            code: Some("upstream_error".to_owned()),
        },
    };
    let json = serde_json::to_string(&body).unwrap_or_else(|_| "{}".to_owned());
    Bytes::from(format!("data: {json}\n\n"))
}

impl http_body::Body for Committed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(b) = self.held.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        if self.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.rest).poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => {
                tracing::warn!(error = %e, "upstream stream failed after the commit point");
                self.ended = true;
                Poll::Ready(Some(Ok(Frame::data(sse_error_event(
                    "The upstream stream failed mid-way; the answer is incomplete.",
                )))))
            }
            Poll::Ready(None) => {
                self.ended = true;
                Poll::Ready(None)
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_empty() && (self.ended || self.rest.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::{Outcome, Target};
    use crate::tap::tap_response;
    use std::sync::Arc;
    use tokio::sync::mpsc;

    type Tx = mpsc::Sender<Result<Frame<Bytes>, BoxError>>;

    fn streamed() -> (Tx, Response<Body>) {
        let (tx, rx) = mpsc::channel(16);
        let stream =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|f| (f, rx)) },
            );
        let resp = Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::new(http_body_util::StreamBody::new(stream)))
            .unwrap();
        let resp = tap_response(
            resp,
            Target::new("p", "m"),
            Arc::from("m"),
            Instant::now(),
            false,
        );
        (tx, resp)
    }

    fn chunk(delta: &str, finish: &str) -> Bytes {
        Bytes::from(format!(
            "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}]}}\n\n"
        ))
    }

    async fn send(tx: &Tx, b: Bytes) {
        tx.send(Ok(Frame::data(b))).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn holds_role_chunk_then_replays_byte_for_byte() {
        let (tx, resp) = streamed();
        let role = chunk(r#"{"role":"assistant","content":""}"#, "null");
        let hi = chunk(r#"{"content":"Hi"}"#, "null");
        send(&tx, role.clone()).await;
        // Split the content chunk across two frames.
        send(&tx, hi.slice(..30)).await;
        send(&tx, hi.slice(30..)).await;
        let committed = commit_stream(resp, CommitConfig::default()).await.unwrap();
        let last = chunk("{}", "\"stop\"");
        send(&tx, last.clone()).await;
        send(&tx, Bytes::from_static(b"data: [DONE]\n\n")).await;
        drop(tx);
        let facts = committed
            .extensions()
            .get::<ResponseFacts>()
            .cloned()
            .unwrap();
        let out = committed.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            out,
            [role, hi, last, Bytes::from_static(b"data: [DONE]\n\n")].concat()
        );
        assert_eq!(
            facts.completion.report().unwrap().outcome,
            Outcome::Complete
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failure_before_content_is_an_error_and_marks_the_attempt() {
        let (tx, resp) = streamed();
        let facts = resp.extensions().get::<ResponseFacts>().cloned().unwrap();
        send(&tx, chunk(r#"{"role":"assistant"}"#, "null")).await;
        tx.send(Err("reset".into())).await.unwrap();
        let err = commit_stream(resp, CommitConfig::default())
            .await
            .unwrap_err();
        assert_eq!(err.status(), 502);
        assert!(matches!(
            facts.completion.report().unwrap().outcome,
            Outcome::UpstreamError(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn first_token_timeout_on_paused_time() {
        let (tx, resp) = streamed();
        let facts = resp.extensions().get::<ResponseFacts>().cloned().unwrap();
        send(&tx, chunk(r#"{"role":"assistant"}"#, "null")).await;
        let cfg = CommitConfig {
            first_token_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            max_held_bytes: 1 << 20,
        };
        let start = Instant::now();
        let err = commit_stream(resp, cfg).await.unwrap_err();
        assert_eq!(err.status(), 504);
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert!(matches!(
            facts.completion.report().unwrap().outcome,
            Outcome::UpstreamError(_)
        ));
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn failure_after_commit_ends_with_one_error_event_and_no_done() {
        let (tx, resp) = streamed();
        send(&tx, chunk(r#"{"content":"Hi"}"#, "null")).await;
        let committed = commit_stream(resp, CommitConfig::default()).await.unwrap();
        send(&tx, chunk(r#"{"content":" there"}"#, "null")).await;
        tx.send(Err("reset".into())).await.unwrap();
        let out = committed.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(text.ends_with("\n\n"));
        assert_eq!(text.matches("\"error\"").count(), 1);
        assert!(!text.contains("[DONE]"));
        assert!(text.contains("there"));
    }

    #[tokio::test(start_paused = true)]
    async fn error_event_before_content_is_an_error() {
        let (tx, resp) = streamed();
        send(
            &tx,
            Bytes::from_static(b"data: {\"error\":{\"message\":\"overloaded\"}}\n\n"),
        )
        .await;
        let err = commit_stream(resp, CommitConfig::default())
            .await
            .unwrap_err();
        assert_eq!(err.status(), 502);
        drop(tx);
    }
}
